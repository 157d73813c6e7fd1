//! TimeoutSweeper: owns the deadline index and tells the registry when an approval's time is up.
//!
//! The index is an ordered set of (deadline ms, approval id) in memory, so the earliest deadline
//! is the first entry. It is derived state: every pending record carries its deadline, and the
//! registry re-arms all of them (`Rearm`) whenever it loads, so keeping a copy on disk would cost
//! two sled writes per approval for nothing. The set lives in the actor value, which the
//! supervisor keeps across restarts. The sweeper sleeps until the first entry's instant (not
//! merely until the next `check_interval` tick) and each wake-up walks only the expired prefix:
//! O(expired), not O(pending). It never changes an approval itself; it sends [`Expire`] and the
//! registry's compare-and-set decides whether the timeout wins.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use actix::prelude::*;

use crate::domain::ApprovalId;
use crate::metrics::Metric;
use crate::supervision::{self, ActorHealth, HealthStatus, Ping, Restarts, guarded};

/// How soon a failed expiry is tried again.
const RETRY_EXPIRE: Duration = Duration::from_secs(1);

/// Most expiries sent to the registry and not yet answered. Each is a future in this actor's
/// context, and actix polls every one of them whenever any is woken: a wave of a million
/// deadlines sent at once made that quadratic and starved the registry (same arbiter) for
/// minutes. The group commit batches what is in flight, so a small window costs nothing.
const MAX_IN_FLIGHT: usize = 64;

pub const NAME: &str = "timeout_sweeper";

/// Watch this approval's deadline (milliseconds since the epoch, grace period included).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Arm {
    pub id: ApprovalId,
    pub deadline_ms: i64,
}

/// Stop watching a deadline (the approval ended some other way).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Disarm {
    pub id: ApprovalId,
    pub deadline_ms: i64,
}

/// Start-up reconciliation: make sure every pending approval has its deadline armed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Rearm(pub Vec<Arm>);

/// Sent to the registry: this approval's deadline has passed. An error answer (the store could
/// not commit the timeout) keeps the deadline armed and the expiry is retried.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "Result<(), crate::registry::RegistryError>")]
pub struct Expire {
    pub id: ApprovalId,
    pub deadline_ms: i64,
}

/// Tells the sweeper where to send [`Expire`]; the registry is started after the sweeper.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect(pub Recipient<Expire>);

pub struct TimeoutSweeper {
    deadlines: BTreeSet<(i64, ApprovalId)>,
    check_interval: Duration,
    registry: Option<Recipient<Expire>>,
    /// The instant the current wake-up timer is set for, if any.
    next_wake: Option<(i64, SpawnHandle)>,
    /// Expiries sent but not yet confirmed, so a tick does not resend them.
    in_flight: HashSet<ApprovalId>,
    metrics: Recipient<Metric>,
    restarts: Restarts,
    /// Fault injection: deadlines still to ignore (a sweeper that lost them, or lags far
    /// behind); the registry's own deadline check must then hold.
    lose_arms: u32,
    /// Deadlines are on the store's clock ([`crate::clock`]), as the registry sets them.
    clock: crate::clock::Clock,
}

impl TimeoutSweeper {
    pub fn new(
        check_interval: Duration,
        metrics: Recipient<Metric>,
        clock: crate::clock::Clock,
    ) -> Self {
        Self {
            deadlines: BTreeSet::new(),
            check_interval,
            registry: None,
            next_wake: None,
            in_flight: HashSet::new(),
            metrics,
            restarts: Restarts::default(),
            lose_arms: 0,
            clock,
        }
    }

    fn arm(&mut self, arm: Arm) {
        self.deadlines.insert((arm.deadline_ms, arm.id));
    }

    fn disarm(&mut self, id: ApprovalId, deadline_ms: i64) {
        self.deadlines.remove(&(deadline_ms, id));
    }

    /// Send an expiry for every deadline at or before now; then sleep until the next one.
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        if let Some((_, handle)) = self.next_wake.take() {
            ctx.cancel_future(handle);
        }
        let Some(registry) = self.registry.clone() else {
            return;
        };
        let now = self.clock.now_ms();
        let room = MAX_IN_FLIGHT.saturating_sub(self.in_flight.len());
        let due: Vec<(i64, ApprovalId)> = self
            .deadlines
            .iter()
            .take_while(|(deadline_ms, _)| *deadline_ms <= now)
            .filter(|(_, id)| !self.in_flight.contains(id))
            .take(room)
            .copied()
            .collect();
        for (deadline_ms, id) in due {
            self.in_flight.insert(id);
            registry
                .send(Expire { id, deadline_ms })
                .into_actor(self)
                .map(move |result, act, ctx| {
                    supervision::guarded_with(NAME, act, ctx, |act, ctx| {
                        act.expired(id, deadline_ms, result, ctx)
                    })
                })
                .spawn(ctx);
        }
        // A full window is refilled as its expiries are answered (`expired`), not by a timer
        // that would fire at once for a deadline already past.
        if self.in_flight.len() < MAX_IN_FLIGHT {
            self.schedule_next(ctx);
        }
    }

    fn expired(
        &mut self,
        id: ApprovalId,
        deadline_ms: i64,
        result: Result<Result<(), crate::registry::RegistryError>, MailboxError>,
        ctx: &mut Context<Self>,
    ) {
        self.in_flight.remove(&id);
        match result {
            // The approval is no longer pending whichever way it ended; the window has room
            // for the next one due.
            Ok(Ok(())) => {
                self.disarm(id, deadline_ms);
                if self
                    .deadlines
                    .first()
                    .is_some_and(|(first, _)| *first <= self.clock.now_ms())
                {
                    self.sweep(ctx);
                }
            }
            // The timeout could not be recorded (store failing): keep the deadline, retry.
            Ok(Err(error)) => {
                tracing::warn!(actor = NAME, approval_id = %id, request_id = %format_args!("timeout-{id}"), %error, "timeout not recorded; retrying");
                self.schedule(ctx, self.clock.now_ms() + RETRY_EXPIRE.as_millis() as i64);
            }
            // The registry is restarting; try again shortly.
            Err(_) => self.schedule(ctx, self.clock.now_ms() + 100),
        }
    }

    fn schedule_next(&mut self, ctx: &mut Context<Self>) {
        let next = self
            .deadlines
            .iter()
            .find(|(_, id)| !self.in_flight.contains(id))
            .copied();
        if let Some((deadline_ms, _)) = next {
            self.schedule(ctx, deadline_ms);
        }
    }

    /// Make sure a wake-up happens no later than `at_ms`.
    fn schedule(&mut self, ctx: &mut Context<Self>, at_ms: i64) {
        if let Some((current, handle)) = self.next_wake {
            if current <= at_ms {
                return;
            }
            ctx.cancel_future(handle);
        }
        let delay = Duration::from_millis((at_ms - self.clock.now_ms()).max(0) as u64);
        let handle = supervision::run_later(ctx, NAME, delay, |act, ctx| act.sweep(ctx));
        self.next_wake = Some((at_ms, handle));
    }

    fn start_timers(&mut self, ctx: &mut Context<Self>) {
        self.next_wake = None;
        self.in_flight.clear();
        // The precise timer does the work; the interval is a safety net in case a wake-up is
        // lost (clock jumps, a failed registry call).
        supervision::run_interval(ctx, NAME, self.check_interval, |act, ctx| act.sweep(ctx));
        supervision::run_later(ctx, NAME, Duration::ZERO, |act, ctx| act.sweep(ctx));
    }
}

impl Actor for TimeoutSweeper {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
        supervision::guarded_with(NAME, self, ctx, |act, ctx| act.start_timers(ctx));
    }
}

impl Supervised for TimeoutSweeper {
    fn restarting(&mut self, _: &mut Context<Self>) {
        // The deadline set lives in this value and survives; `started` re-arms the timers.
        self.restarts.record(NAME);
        self.metrics.do_send(Metric::ActorRestarted { actor: NAME });
    }
}

impl Handler<Connect> for TimeoutSweeper {
    type Result = ();

    fn handle(&mut self, Connect(registry): Connect, ctx: &mut Context<Self>) {
        self.registry = Some(registry);
        supervision::guarded_with(NAME, self, ctx, |act, ctx| act.sweep(ctx));
    }
}

impl Handler<Arm> for TimeoutSweeper {
    type Result = ();

    fn handle(&mut self, arm: Arm, ctx: &mut Context<Self>) {
        if self.lose_arms > 0 {
            self.lose_arms -= 1;
            tracing::warn!(actor = NAME, approval_id = %arm.id, "fault injection: deadline not armed");
            return;
        }
        if guarded(NAME, ctx, || self.arm(arm)).is_ok() {
            self.schedule(ctx, arm.deadline_ms);
        }
    }
}

impl Handler<crate::notification::LoseWakes> for TimeoutSweeper {
    type Result = ();

    fn handle(&mut self, lose: crate::notification::LoseWakes, _: &mut Context<Self>) {
        self.lose_arms = lose.0;
    }
}

impl Handler<Rearm> for TimeoutSweeper {
    type Result = ();

    fn handle(&mut self, Rearm(arms): Rearm, ctx: &mut Context<Self>) {
        supervision::guarded_with(NAME, self, ctx, |act, ctx| act.rearm(arms, ctx));
    }
}

impl TimeoutSweeper {
    fn rearm(&mut self, arms: Vec<Arm>, ctx: &mut Context<Self>) {
        let mut earliest = None;
        for arm in arms {
            self.arm(arm);
            earliest = Some(earliest.map_or(arm.deadline_ms, |e: i64| e.min(arm.deadline_ms)));
        }
        if let Some(at) = earliest {
            self.schedule(ctx, at);
        }
    }
}

impl Handler<Disarm> for TimeoutSweeper {
    type Result = ();

    fn handle(&mut self, disarm: Disarm, ctx: &mut Context<Self>) {
        let _ = guarded(NAME, ctx, || self.disarm(disarm.id, disarm.deadline_ms));
    }
}

impl Handler<Ping> for TimeoutSweeper {
    type Result = MessageResult<Ping>;

    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Self::Result {
        MessageResult(ActorHealth {
            actor: NAME,
            status: HealthStatus::Healthy,
            restarts: self.restarts.count(),
            detail: serde_json::json!({
                "next_wake_at": self.next_wake.map(|(at, _)| crate::store::millis(at).to_rfc3339()),
                "in_flight": self.in_flight.len(),
                "armed": self.deadlines.len(),
            }),
        })
    }
}

crate::supervision::crash_handler!(TimeoutSweeper, NAME);
