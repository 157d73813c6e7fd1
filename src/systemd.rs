//! systemd integration (`Type=notify`): READY=1 once the listener is bound and the store loaded,
//! WATCHDOG=1 every half `WatchdogSec` while the registry answers its ping (a wedged service
//! stops petting the watchdog and systemd restarts it), STOPPING=1 when shutdown begins.
//! Does nothing when not started by systemd (no `NOTIFY_SOCKET`).

use std::time::Duration;

use approval_gate_actors::system::Actors;
use sd_notify::NotifyState;

fn send(state: NotifyState) {
    if let Err(error) = sd_notify::notify(false, &[state]) {
        tracing::warn!(%error, "cannot notify systemd");
    }
}

/// READY=1 once the registry answers (it answers only after loading the store), run
/// `after_ready`, then feed the watchdog.
pub async fn ready_then_watchdog(actors: Actors, after_ready: Option<fn()>) {
    loop {
        let registry = approval_gate_actors::registry::NAME;
        let pings = actors.ping_all(Duration::from_secs(5)).await;
        if pings
            .iter()
            .any(|(name, answer)| *name == registry && answer.is_some())
        {
            break;
        }
    }
    send(NotifyState::Ready);
    if let Some(then) = after_ready {
        then();
    }
    watchdog(actors).await;
}

pub fn stopping() {
    send(NotifyState::Stopping);
}

/// `WATCHDOG_USEC`, unless `WATCHDOG_PID` names another process (sd_watchdog_enabled(3): an
/// absent `WATCHDOG_PID` does not disable it, unlike the sd-notify crate's helper).
fn watchdog_usec() -> Option<u64> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then_some(usec)
}

/// Pet the watchdog while the service is healthy enough to answer; runs until the process ends.
async fn watchdog(actors: Actors) {
    let Some(usec) = watchdog_usec() else {
        return;
    };
    let every = Duration::from_micros(usec / 2);
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        let registry = approval_gate_actors::registry::NAME;
        let answered = actors
            .ping_all(every)
            .await
            .into_iter()
            .any(|(name, answer)| name == registry && answer.is_some());
        if answered {
            send(NotifyState::Watchdog);
        } else {
            tracing::error!(
                "the registry did not answer its ping; not petting the systemd watchdog"
            );
        }
    }
}
