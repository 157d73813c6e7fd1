//! `GET /console/events`: the pending approvals, live, as server-sent events.
//!
//! Every connection starts with a `snapshot` event (every pending approval, oldest deadline
//! first), then sends `pending` and `ended` events as the registry's feed announces durable
//! changes. A reconnect (the browser's EventSource reconnects by itself, after a dropped
//! connection or a server restart) starts with a new snapshot, which replaces what the page
//! holds: nothing that happened while it was away is missed, whatever the gap. A watcher that
//! falls behind the feed gets a new snapshot too. On a store several instances share, approvals
//! created on another instance are not on this instance's feed: the stream compares the pending
//! list with what it has sent every [`SHARED_RECHECK`]. Owns nothing beyond its connection.

use std::collections::HashSet;
use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{HttpResponse, web};
use approval_gate_actors::domain::{Approval, ApprovalId, Status};
use approval_gate_actors::feed::FeedEvent;
use approval_gate_actors::registry::List;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

use super::super::AppState;
use super::super::auth::OperatorCaller;
use super::super::error::ApiError;
use super::super::view::ApprovalView;

/// Most pending approvals a snapshot holds (the page says when there are more).
const SNAPSHOT_MAX: usize = 10_000;
/// Inputs up to this size are sent whole (a Bash command, a small file); larger ones as a
/// preview the page completes on "Show all" (`server.list_preview_bytes`, if that is larger).
const WHOLE_INPUT_BYTES: usize = 16 * 1024;
/// How often a stream on a shared store re-reads the pending list (creates on other instances).
pub const SHARED_RECHECK: Duration = Duration::from_secs(2);

#[derive(Serialize)]
struct Snapshot {
    server_time: String,
    approvals: Vec<ApprovalView>,
    /// More are pending than the snapshot holds.
    truncated: bool,
}

pub(super) async fn stream(
    state: web::Data<AppState>,
    _caller: OperatorCaller,
) -> Result<HttpResponse, ApiError> {
    // Subscribe before the snapshot is read: a change between the two is sent twice (harmless:
    // the page keys approvals by id), never lost.
    let feed = state.actors.feed.subscribe();
    let first = pending(&state).await?;
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    actix_web::rt::spawn(run(state, feed, first, tx));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        let bytes = rx.recv().await?;
        Some((Ok::<_, actix_web::Error>(bytes), rx))
    });
    let mut response = HttpResponse::Ok();
    super::secure(&mut response);
    Ok(response
        .content_type("text/event-stream")
        // Proxies that buffer (nginx) would hold events back.
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body))
}

/// Every pending approval, oldest deadline first (the order the page shows).
async fn pending(state: &AppState) -> Result<(Vec<Approval>, bool), ApiError> {
    let mut all = Vec::new();
    let mut before: Option<ApprovalId> = None;
    loop {
        let page = state
            .actors
            .registry
            .send(List {
                status: Some(Status::Pending),
                before,
                limit: 1000,
            })
            .await??;
        let done = page.len() < 1000;
        before = page.last().map(|a| a.id);
        all.extend(page);
        if done || all.len() >= SNAPSHOT_MAX {
            let truncated = !done;
            all.truncate(SNAPSHOT_MAX);
            all.sort_by_key(|a| (a.expires_at, a.id));
            return Ok((all, truncated));
        }
    }
}

fn event(name: &str, id: u64, data: &impl Serialize) -> Bytes {
    let json = serde_json::to_string(data).unwrap_or_else(|_| "null".into());
    Bytes::from(format!("id: {id}\nevent: {name}\ndata: {json}\n\n"))
}

struct Connection {
    state: web::Data<AppState>,
    tx: mpsc::Sender<Bytes>,
    /// Pending approvals sent, by id: what the page holds.
    sent: HashSet<ApprovalId>,
    next_id: u64,
    preview: usize,
}

impl Connection {
    /// `false` once the browser is gone.
    async fn send(&mut self, name: &str, data: &impl Serialize) -> bool {
        self.next_id += 1;
        self.tx.send(event(name, self.next_id, data)).await.is_ok()
    }

    async fn snapshot(&mut self, (approvals, truncated): (Vec<Approval>, bool)) -> bool {
        self.sent = approvals.iter().map(|a| a.id).collect();
        let rows = approvals
            .iter()
            .map(|a| ApprovalView::row(a, self.preview))
            .collect();
        let snapshot = Snapshot {
            // The time deadlines are reckoned by (the database's on a shared store): the page
            // counts down by it, whatever this host's clock says.
            server_time: self
                .state
                .actors
                .clock
                .now()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            approvals: rows,
            truncated,
        };
        self.send("snapshot", &snapshot).await
    }

    async fn change(&mut self, change: FeedEvent) -> bool {
        match change {
            FeedEvent::Pending(approval) => {
                self.sent.insert(approval.id);
                let row = ApprovalView::row(&approval, self.preview);
                self.send("pending", &row).await
            }
            FeedEvent::Ended(approval) => {
                self.sent.remove(&approval.id);
                let view = ApprovalView::from(approval.as_ref());
                self.send("ended", &view).await
            }
        }
    }

    /// A shared store: send what changed in the pending list since it was last sent.
    async fn recheck(&mut self) -> bool {
        let Ok((now, _)) = pending(&self.state).await else {
            return true;
        };
        let current: HashSet<ApprovalId> = now.iter().map(|a| a.id).collect();
        let gone: Vec<ApprovalId> = self.sent.difference(&current).copied().collect();
        for approval in now {
            if !self.sent.contains(&approval.id)
                && !self.change(FeedEvent::Pending(approval.into())).await
            {
                return false;
            }
        }
        for id in gone {
            let ended = self
                .state
                .actors
                .registry
                .send(approval_gate_actors::registry::Get(id))
                .await;
            if let Ok(Ok(approval)) = ended
                && approval.status.is_terminal()
                && !self.change(FeedEvent::Ended(approval.into())).await
            {
                return false;
            }
        }
        true
    }
}

async fn run(
    state: web::Data<AppState>,
    mut feed: broadcast::Receiver<FeedEvent>,
    first: (Vec<Approval>, bool),
    tx: mpsc::Sender<Bytes>,
) {
    let settings = state.settings();
    // Several instances share a PostgreSQL store; creations on the others are not on our feed.
    let shared = settings.store.backend == crate::settings::StoreBackend::Postgres;
    let mut stopping = state.stopping.clone();
    let mut keepalive = tokio::time::interval(settings.console.keepalive);
    keepalive.tick().await;
    let mut recheck = tokio::time::interval(SHARED_RECHECK);
    recheck.tick().await;
    let mut connection = Connection {
        preview: settings.server.list_preview_bytes.max(WHOLE_INPUT_BYTES),
        state,
        tx,
        sent: HashSet::new(),
        next_id: 0,
    };
    // Reconnect quickly after a restart: the browser waits this long (ms) before retrying.
    if connection
        .tx
        .send(Bytes::from_static(b"retry: 1000\n\n"))
        .await
        .is_err()
        || !connection.snapshot(first).await
    {
        return;
    }
    loop {
        let alive = tokio::select! {
            change = feed.recv() => match change {
                Ok(change) => connection.change(change).await,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "a console stream fell behind; sending a new snapshot");
                    match pending(&connection.state).await {
                        Ok(now) => connection.snapshot(now).await,
                        Err(_) => false,
                    }
                }
                Err(broadcast::error::RecvError::Closed) => false,
            },
            _ = keepalive.tick() => connection.tx.send(Bytes::from_static(b": keepalive\n\n")).await.is_ok(),
            _ = recheck.tick(), if shared => connection.recheck().await,
            // Shutting down: end the stream so the browser reconnects to whoever serves next.
            _ = stopping.changed() => false,
        };
        if !alive {
            return;
        }
    }
}
