//! ApprovalRegistry: owns the approval store and the state machine, and wakes long-poll waiters.
//!
//! Every change goes through this one actor, so "compare-and-set" is simply read, check,
//! write inside one handler: a tap racing a deadline racing a cancel has exactly one winner.
//!
//! The write path (`commit.rs`): the change and one queue entry per channel that must hear of it
//! are one staged change (one journal record); the reply waits for the group commit (journal
//! fdatasync); only then
//! are notifiers woken, waiters woken, counts and deadlines updated. If the commit fails the
//! change is reverted and the caller gets 503, so nothing anyone sees claims it happened. Replies
//! are futures that do not depend on this actor surviving: a registry restart mid-commit still
//! answers the caller with the truth. Answers that reveal a change still on its way to disk (a
//! read, a 409 naming the winner) wait for that commit too.
//!
//! It never touches the deadline index or a notifier's state; it asks by message.

mod changes;
mod commit;
mod escalate;
mod handlers;
mod messages;
mod remote;
mod unsettled;
mod verdict;
mod waiters;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

pub use messages::*;
pub use remote::RemoteChange;
use waiters::Waiters;

use crate::domain::{Approval, ApprovalId, Decision, Grant, Status, next_due_ms};
use crate::metrics::Metric;
use crate::notification::Wake;
use crate::store::{ApprovalStore, Channel, Queues};
use crate::supervision::Restarts;
use crate::sweeper::{Arm, Rearm, TimeoutSweeper};

pub const NAME: &str = "approval_registry";

#[derive(Debug, Clone)]
pub struct RegistrySettings {
    pub max_waiters: usize,
    /// Long polls one agent token may hold at once (`server.max_waiters_per_agent`).
    pub max_waiters_per_agent: usize,
    pub grace_period: Duration,
    /// Ended approvals older than this are removed in the background; `None` keeps them.
    pub retention: Option<Duration>,
    /// Which requests need a human at all (`[[policy.rules]]`).
    pub policy: Arc<crate::policy::Policy>,
    /// The built-in risk detectors that are on (`[risk.detectors]`).
    pub risk: Arc<crate::risk::Assessor>,
    /// `[[escalation]]`: steps for approvals nobody decides.
    pub escalation: Arc<Vec<crate::domain::EscalationStep>>,
    /// Approving at or above this level needs a comment (`policy.require_comment_at`).
    pub require_comment_at: Option<crate::domain::RiskLevel>,
    /// The longest session grant an operator may give.
    pub max_grant: Duration,
    /// Bounds on `tool_input` for every create (REST, hooks, MCP).
    pub input_limits: crate::domain::InputLimits,
    /// Most pending approvals per agent token; 0 = no cap.
    pub max_pending_per_agent: u64,
    /// Keep a span per pending approval (only worth it when spans are exported: each one held
    /// costs memory for as long as the approval waits).
    pub trace_approvals: bool,
    /// Called on the registry's thread after it loads the store (a walk of every pending
    /// approval, which leaves its buffers freed): the binary's hook to hand freed memory back
    /// to the OS (`src/memory.rs`); the actors know no allocator.
    pub return_freed_memory: fn(),
}

/// Which channels hear of each change, and how to wake their notifiers.
#[derive(Clone, Default)]
pub struct Notifiers {
    pub channels: Vec<Channel>,
    pub wake: HashMap<Channel, Recipient<Wake>>,
}

impl Notifiers {
    /// Tell every notifier its queue may hold entries it was not told of (written by another
    /// instance on a shared store): it reads its queue's front again.
    pub fn nudge(&self) {
        for (&channel, notifier) in &self.wake {
            notifier.do_send(Wake {
                channel,
                confirmed: Vec::new(),
                withdrawn: Vec::new(),
                entry: None,
                span: None,
            });
        }
    }

    /// Tell each channel's notifier which of its entries are durable or withdrawn.
    pub fn wake(
        &self,
        queued: &[(Channel, u64)],
        confirmed: bool,
        entry: Option<&Arc<crate::store::QueueEntry>>,
        span: Option<&tracing::Span>,
    ) {
        for &(channel, seq) in queued {
            if let Some(notifier) = self.wake.get(&channel) {
                let (confirmed, withdrawn) = if confirmed {
                    (vec![seq], Vec::new())
                } else {
                    (Vec::new(), vec![seq])
                };
                notifier.do_send(Wake {
                    channel,
                    confirmed,
                    withdrawn,
                    entry: entry.cloned(),
                    span: span.cloned(),
                });
            }
        }
    }
}

pub struct ApprovalRegistry {
    store: Arc<dyn ApprovalStore>,
    /// The notifiers' queues, for the operators' dead-letter admin (sled's own handle).
    queues: Queues,
    settings: RegistrySettings,
    waiters: Waiters,
    counts: HashMap<Status, u64>,
    /// Approvals changed but not yet settled, so answers revealing them wait (`unsettled.rs`).
    unsettled: unsettled::Unsettled,
    /// Bumped on every (re)start: a commit that finishes after a restart was already counted by
    /// the reload.
    generation: u64,
    started_at_ms: i64,
    sweeper: Addr<TimeoutSweeper>,
    notifiers: Arc<Notifiers>,
    metrics: Recipient<Metric>,
    restarts: Restarts,
    load_error: Option<String>,
    ids: ulid::Generator,
    /// Session grants by id, loaded at start; expired ones are dropped by the retention pass.
    grants: HashMap<String, Grant>,
    /// Pending approvals per agent token (creates count as soon as they are written), for
    /// `max_pending_per_agent`.
    pending_by_agent: HashMap<String, u64>,
    /// A span per pending approval, from its creation to its end (traces; in memory only).
    spans: HashMap<ApprovalId, tracing::Span>,
    /// A recount waits for the changes in flight to settle (`remote.rs`).
    recount_wanted: bool,
    /// Durable changes of the pending set, for watchers (the console's live stream).
    feed: crate::feed::Feed,
    /// The time deadlines, grants and stored timestamps follow: the store's ([`crate::clock`]).
    clock: crate::clock::Clock,
}

/// When the sweeper expires an approval: `expires_at` plus the grace period.
fn deadline_ms(approval: &Approval, grace: Duration) -> i64 {
    let grace = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    approval.expires_at.timestamp_millis().saturating_add(grace)
}

impl ApprovalRegistry {
    pub fn new(
        store: Arc<dyn ApprovalStore>,
        queues: Queues,
        settings: RegistrySettings,
        sweeper: Addr<TimeoutSweeper>,
        notifiers: Notifiers,
        metrics: Recipient<Metric>,
        feed: crate::feed::Feed,
    ) -> Self {
        let clock = store.clock();
        // On the clock deadlines are on: it tells a timeout from an approval that expired
        // while no instance of this process was running.
        let started_at_ms = clock.now_ms();
        Self {
            feed,
            clock,
            store,
            queues,
            settings,
            waiters: Waiters::default(),
            counts: HashMap::new(),
            unsettled: unsettled::Unsettled::default(),
            generation: 0,
            started_at_ms,
            sweeper,
            notifiers: Arc::new(notifiers),
            metrics,
            restarts: Restarts::default(),
            load_error: None,
            ids: ulid::Generator::new(),
            grants: HashMap::new(),
            pending_by_agent: HashMap::new(),
            spans: HashMap::new(),
            recount_wanted: false,
        }
    }

    fn deadline_ms(&self, approval: &Approval) -> i64 {
        deadline_ms(approval, self.settings.grace_period)
    }

    /// Rebuild the in-memory view from sled (index keys for counts, pending records only) and
    /// make sure every pending deadline is armed.
    fn load(&mut self) {
        self.generation += 1;
        let mut arms = Vec::new();
        let grace = self.settings.grace_period;
        let escalation = Arc::clone(&self.settings.escalation);
        let escalation = escalation.as_slice();
        let mut by_agent: HashMap<String, u64> = HashMap::new();
        let loaded = self.store.count_by_status().and_then(|counts| {
            self.counts = counts;
            self.store.for_each_pending(&mut |approval| {
                *by_agent.entry(approval.requested_by.clone()).or_insert(0) += 1;
                arms.push(Arm {
                    id: approval.id,
                    deadline_ms: deadline_ms(&approval, grace),
                });
                arms.extend(next_due_ms(&approval, escalation).map(|deadline_ms| Arm {
                    id: approval.id,
                    deadline_ms,
                }));
            })
        });
        let loaded = loaded.and_then(|()| {
            self.grants = self
                .store
                .grants()?
                .into_iter()
                .map(|g| (g.id.clone(), g))
                .collect();
            Ok(())
        });
        self.pending_by_agent = by_agent;
        self.load_error = loaded.err().map(|e| e.to_string());
        if let Some(error) = &self.load_error {
            tracing::error!(actor = NAME, %error, "cannot load approvals from the store");
        }
        tracing::info!(
            pending = arms.len(),
            total = self.counts.values().sum::<u64>(),
            "approval registry loaded"
        );
        self.sweeper.do_send(Rearm(arms));
        self.publish_pending();
        self.settings.risk.prepare();
        (self.settings.return_freed_memory)();
    }

    /// Re-read the counts after a change whose fate was settled across a restart.
    fn recount(&mut self) {
        match self.store.count_by_status() {
            Ok(counts) => self.counts = counts,
            Err(error) => tracing::error!(actor = NAME, %error, "cannot recount approvals"),
        }
        self.publish_pending();
    }

    fn publish_pending(&self) {
        let pending = self.counts.get(&Status::Pending).copied().unwrap_or(0);
        self.metrics
            .do_send(Metric::PendingApprovals(pending as i64));
    }

    fn publish_waiters(&self) {
        self.metrics
            .do_send(Metric::Waiters(self.waiters.len() as i64));
    }

    fn count(&mut self, from: Option<Status>, to: Status) {
        if let Some(n) = from.and_then(|from| self.counts.get_mut(&from)) {
            *n = n.saturating_sub(1);
        }
        *self.counts.entry(to).or_insert(0) += 1;
        self.publish_pending();
    }

    /// Refuse a create past the agent's cap on pending approvals.
    fn check_pending_cap(&self, agent: &str) -> Result<(), RegistryError> {
        let limit = self.settings.max_pending_per_agent;
        let pending = self.pending_by_agent.get(agent).copied().unwrap_or(0);
        if limit > 0 && pending >= limit {
            return Err(RegistryError::TooManyPending { limit });
        }
        Ok(())
    }

    fn pending_changed(&mut self, agent: &str, up: bool) {
        if up {
            *self.pending_by_agent.entry(agent.to_string()).or_insert(0) += 1;
        } else if let Some(n) = self.pending_by_agent.get_mut(agent) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.pending_by_agent.remove(agent);
            }
        }
    }

    fn arm(&self, approval: &Approval) {
        self.sweeper.do_send(Arm {
            id: approval.id,
            deadline_ms: self.deadline_ms(approval),
        });
        if let Some(step) = self.escalation_arm(approval) {
            self.sweeper.do_send(step);
        }
    }

    fn timeout_comment(&self, approval: &Approval, deadline_ms: i64) -> String {
        if deadline_ms < self.started_at_ms {
            format!(
                "expired while approval-gate was not running (deadline {})",
                crate::store::millis(deadline_ms).to_rfc3339()
            )
        } else {
            let waited = (approval.expires_at - approval.created_at)
                .to_std()
                .unwrap_or_default();
            format!(
                "no decision within {}",
                humantime::format_duration(Duration::from_secs(waited.as_secs()))
            )
        }
    }

    /// Forget grants that expired (they already stopped applying at their expiry).
    fn drop_expired_grants(&mut self) {
        let now_ms = self.clock.now_ms();
        let expired: Vec<String> = self
            .grants
            .values()
            .filter(|g| g.expires_at_ms <= now_ms)
            .map(|g| g.id.clone())
            .collect();
        for id in expired {
            self.grants.remove(&id);
            self.store.remove_grant(&id);
        }
    }

    /// Remove a slice of ended approvals past retention; runs on a timer in small steps so it
    /// never holds the registry for long.
    fn retention_pass(&mut self) {
        self.drop_expired_grants();
        let Some(retention) = self.settings.retention else {
            return;
        };
        let cutoff = self.clock.now_ms() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        match self.store.remove_ended_before(cutoff, 1000) {
            Ok(removed) if !removed.is_empty() => {
                for status in &removed {
                    if let Some(n) = self.counts.get_mut(status) {
                        *n = n.saturating_sub(1);
                    }
                }
                tracing::info!(
                    actor = NAME,
                    removed = removed.len(),
                    "retention removed ended approvals"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::error!(actor = NAME, %error, "retention pass failed"),
        }
    }

    fn decision_for_timeout(&self, approval: &Approval, deadline_ms: i64) -> Decision {
        Decision {
            outcome: crate::domain::Outcome::Timeout,
            actor: crate::domain::Actor::System,
            comment: Some(self.timeout_comment(approval, deadline_ms)),
        }
    }
}
