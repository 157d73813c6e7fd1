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

/// Make the receiving actor panic. Only sent when fault injection is enabled in the
/// configuration; it exists so tests and operators can prove supervision restarts actors.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub struct Crash {
    /// Panic inside a timer callback (scheduled with [`run_later`], like every actor timer)
    /// instead of inside the handler.
    pub in_timer: bool,
}

/// Implements [`Crash`] for an actor: the handler (or a timer it schedules) panics inside the
/// guard, which is exactly the failure supervision must survive.
macro_rules! crash_handler {
    ($actor:ty, $name:expr) => {
        impl actix::Handler<$crate::supervision::Crash> for $actor {
            type Result = ();

            fn handle(
                &mut self,
                crash: $crate::supervision::Crash,
                ctx: &mut actix::Context<Self>,
            ) {
                if crash.in_timer {
                    $crate::supervision::run_later(
                        ctx,
                        $name,
                        std::time::Duration::ZERO,
                        |_, _| panic!("fault injection: crash requested in a timer"),
                    );
                    return;
                }
                let _ = $crate::supervision::guarded($name, ctx, || {
                    panic!("fault injection: crash requested")
                });
            }
        }
    };
}
pub(crate) use crash_handler;

/// A handler body failed; the actor has been told to stop and will be restarted.
#[derive(Debug, Clone, thiserror::Error)]
#[error("actor {actor} failed while handling a message and is restarting")]
pub struct HandlerFailed {
    pub actor: &'static str,
}

/// What a caught panic says (its `&str` or `String` payload), for the log or the error it
/// becomes.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
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
            let message = panic_message(&*panic);
            tracing::error!(actor, panic = %message, "actor handler panicked; restarting it");
            ctx.stop();
            Err(HandlerFailed { actor })
        }
    }
}

/// [`guarded`] for code that runs when an actor's own future completes (`.map(|r, act, ctx|
/// ...)`): such code runs outside any handler, so a panic there needs the same treatment.
pub fn guarded_with<A>(
    actor: &'static str,
    act: &mut A,
    ctx: &mut Context<A>,
    body: impl FnOnce(&mut A, &mut Context<A>),
) where
    A: Actor<Context = Context<A>>,
{
    if catch_unwind(AssertUnwindSafe(|| body(act, ctx))).is_err() {
        tracing::error!(
            actor,
            "actor panicked while finishing an operation; restarting it"
        );
        ctx.stop();
    }
}

/// `ctx.run_later` with the callback under the panic guard: every actor timer goes through here,
/// so a panic in one restarts the actor instead of silently killing it.
pub fn run_later<A>(
    ctx: &mut Context<A>,
    actor: &'static str,
    delay: std::time::Duration,
    body: impl FnOnce(&mut A, &mut Context<A>) + 'static,
) -> SpawnHandle
where
    A: Actor<Context = Context<A>>,
{
    ctx.run_later(delay, move |act, ctx| guarded_with(actor, act, ctx, body))
}

/// `ctx.run_interval` with every tick under the panic guard.
pub fn run_interval<A>(
    ctx: &mut Context<A>,
    actor: &'static str,
    every: std::time::Duration,
    mut body: impl FnMut(&mut A, &mut Context<A>) + 'static,
) -> SpawnHandle
where
    A: Actor<Context = Context<A>>,
{
    ctx.run_interval(every, move |act, ctx| {
        guarded_with(actor, act, ctx, |act, ctx| body(act, ctx))
    })
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
