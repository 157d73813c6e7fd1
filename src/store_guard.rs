//! The process's answer to a store that cannot commit. sled 0.34 does not recover from an I/O
//! error in-process: its error is sticky, and a failed log write can leave every later flush
//! waiting for good (seen here: a full disk, freed again, and every write still hung). A
//! restart reopens sled, which recovers from its log, and nothing acknowledged is lost. So once
//! the store has not committed for `store.restart_after` without a break (every commit failing,
//! or one hanging past `store.commit_stall`), the service shuts down gracefully (held hooks and
//! long polls are answered) and exits with status 75 (EX_TEMPFAIL), for its supervisor (systemd
//! `Restart=on-failure`, a Docker restart policy) to start it again.
//!
//! This module only watches, through the registry's health ping (which also probes the store,
//! so a recovered disk resets the clock); the shutdown itself is `startup`'s.

use std::time::{Duration, Instant};

use approval_gate_actors::supervision::Ping;
use approval_gate_actors::system::Actors;

/// Exit status of a service that stopped because its store could not commit (EX_TEMPFAIL).
pub const EXIT_STORE_FAILING: u8 = 75;

/// Resolves once the store has not been committing for `limit` without a break; never when
/// `limit` is zero (the setting's "stay up and report it").
pub async fn failing_for(actors: Actors, limit: Duration) {
    if limit.is_zero() {
        return std::future::pending().await;
    }
    let every = (limit / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(every);
    let mut failing_since: Option<Instant> = None;
    loop {
        ticker.tick().await;
        // An unanswered ping says nothing about the store (the watchdog handles a wedged
        // registry): keep the clock as it is.
        let Ok(health) = actors.registry.send(Ping).timeout(every).await else {
            continue;
        };
        if health.detail["store_committing"] != false {
            failing_since = None;
            continue;
        }
        let since = *failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= limit {
            return;
        }
    }
}
