//! Wake-ups across instances: a dedicated connection LISTENing for the changes other instances
//! commit, so that a long poll on instance B learns of a decision made on instance A promptly.
//!
//! Owns that one connection and nothing else. LISTEN is per session, so it cannot share the
//! pool (nor pass through a transaction-pooling proxy). A NOTIFY sent while the connection is
//! down is gone for good, so every (re)connection is announced with [`Wake::Resync`]: whoever
//! waits must then re-read what it waits for instead of trusting that it missed nothing. The
//! same happens when the receiver falls behind and the queue fills: a missed wake-up costs a
//! re-read, never a waiter left hanging until its timeout.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

/// What the listener tells its receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// Another instance committed a change; the payload says which (an approval id).
    Changed(String),
    /// Wake-ups may have been missed (a (re)connection, or the queue was full): re-read.
    Resync,
}

/// Wake-ups queued for a slow receiver before they are folded into one [`Wake::Resync`].
const QUEUE: usize = 1024;
/// How long the listener waits before reconnecting, at first and at most.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// The `application_name` of the listening session (`pg_stat_activity` shows it).
pub const APPLICATION_NAME: &str = "approval-gate-listen";

/// Starts listening on `channel` on the database `config` points at, over `tls` (both as
/// [`super::connect_config`] makes them); runs until the receiver is dropped. `channel` must be
/// a plain identifier (it is ours, never user input).
pub fn spawn(
    mut config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    channel: &'static str,
) -> mpsc::Receiver<Wake> {
    config.application_name(APPLICATION_NAME);
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        let mut retry = RETRY_FIRST;
        let mut sender = Sender { tx, lost: false };
        while !sender.tx.is_closed() {
            match listen_once(&config, tls.clone(), channel, &mut sender, &mut retry).await {
                Ok(()) => tracing::warn!(channel, "the LISTEN connection closed; reconnecting"),
                Err(error) => {
                    tracing::warn!(channel, %error, "the LISTEN connection failed; reconnecting")
                }
            }
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(RETRY_MAX);
        }
    });
    rx
}

/// One connection's life: connect, LISTEN, announce a resync, forward notifications until the
/// connection ends.
async fn listen_once(
    config: &tokio_postgres::Config,
    tls: MakeRustlsConnect,
    channel: &'static str,
    sender: &mut Sender,
    retry: &mut Duration,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tls).await?;
    let (messages_tx, mut messages) = mpsc::unbounded_channel();
    // The connection is driven by this stream: it yields notifications and ends with the
    // connection. Client calls below need it driven, so it runs beside them.
    let driver = tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = stream.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if messages_tx.send(n.payload().to_string()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    });
    client.batch_execute(&format!("LISTEN {channel}")).await?;
    *retry = RETRY_FIRST;
    tracing::info!(channel, "listening for other instances' changes");
    sender.send(Wake::Resync);
    let room = sender.tx.clone();
    loop {
        tokio::select! {
            // A resync owed since the queue was full goes out as soon as there is room, even
            // if no further notification comes to carry it.
            permit = room.reserve(), if sender.lost => match permit {
                Ok(permit) => {
                    permit.send(Wake::Resync);
                    sender.lost = false;
                }
                Err(_) => break,
            },
            payload = messages.recv() => {
                let Some(payload) = payload else { break };
                if !sender.send(Wake::Changed(payload)) {
                    break;
                }
            }
        }
    }
    drop(client);
    driver.await.unwrap_or(Ok(()))
}

/// The receiving end's queue, folding what does not fit into one resync.
struct Sender {
    tx: mpsc::Sender<Wake>,
    /// A wake-up was dropped on a full queue: a resync is owed before the next one.
    lost: bool,
}

impl Sender {
    /// `false` once the receiver is gone.
    fn send(&mut self, wake: Wake) -> bool {
        if self.lost {
            match self.tx.try_send(Wake::Resync) {
                Ok(()) => self.lost = false,
                Err(mpsc::error::TrySendError::Full(_)) => return true,
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
        }
        match self.tx.try_send(wake) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lost = true;
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}
