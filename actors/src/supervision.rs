//! What every supervised actor shares: the health ping, the restart counter, the panic guard and
//! the fault-injection message used to prove restarts work.
//!
//! actix's `Supervisor` restarts an actor that *stops*, but a panic inside a handler unwinds the
//! supervisor's own future and the actor silently disappears. [`guarded`] catches the panic at the
//! handler boundary and turns it into a stop, so the supervisor calls `restarting()` and the actor
//! reloads its state. Nothing here touches another actor's state.

use std::panic::{AssertUnwindSafe, catch_unwind};

use actix::prelude::*;
use serde::Serialize;

/// Ask an actor whether it is alive and how it is doing.
#[derive(Message)]
#[rtype(result = "ActorHealth")]
pub struct Ping;

/// An actor's own account of its health, answered to [`Ping`].
#[derive(Debug, Clone, Serialize)]
pub struct ActorHealth {
    pub actor: &'static str,
    /// `healthy`, or `degraded` with a reason in `detail` (e.g. Telegram unreachable).
    pub status: HealthStatus,
    pub restarts: u64,
    /// Actor-specific facts (queue sizes, breaker state, ...).
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Healthy,
    Degraded,
    Unhealthy,
}

/// Make the receiving actor's handler panic. Only sent when fault injection is enabled in the
/// configuration; it exists so tests and operators can prove supervision restarts actors.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

/// A handler body failed; the actor has been told to stop and will be restarted.
#[derive(Debug, Clone, thiserror::Error)]
#[error("actor {actor} failed while handling a message and is restarting")]
pub struct HandlerFailed {
    pub actor: &'static str,
}

/// Run a handler body, converting a panic into a stop so the supervisor restarts the actor.
pub fn guarded<A, R>(
    actor: &'static str,
    ctx: &mut Context<A>,
    body: impl FnOnce() -> R,
) -> Result<R, HandlerFailed>
where
    A: Actor<Context = Context<A>>,
{
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => Ok(value),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            tracing::error!(actor, panic = %message, "actor handler panicked; restarting it");
            ctx.stop();
            Err(HandlerFailed { actor })
        }
    }
}

/// Counts restarts of one actor; lives in the actor, which the supervisor keeps across restarts.
#[derive(Debug, Default, Clone, Copy)]
pub struct Restarts(u64);

impl Restarts {
    pub fn record(&mut self, actor: &'static str) -> u64 {
        self.0 += 1;
        tracing::warn!(
            actor,
            restarts = self.0,
            "actor restarted by its supervisor"
        );
        self.0
    }

    pub fn count(self) -> u64 {
        self.0
    }
}
