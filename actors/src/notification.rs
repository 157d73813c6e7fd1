//! What operators are told about: one approval at one moment of its life.
//!
//! The registry writes a notification into each channel's durable queue in the same transaction
//! as the change, then [`Wake`]s the channel's notifier once the commit is on disk. A snapshot,
//! so notifiers never read registry state themselves.

use std::time::{Duration, Instant};

use actix::Message;
use serde::Serialize;

use crate::domain::{Approval, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A new approval waits for a decision.
    Created,
    /// The approval ended (decided, timed out or cancelled); see its status.
    Ended,
    /// The approval is still pending but changed as operators see it: an approval counted
    /// towards its quorum ("1 of 2 approved by alice").
    Updated,
    /// An `[[escalation]]` step fired: nobody decided in time; its recipients are told (and,
    /// with `repost`, the first chat gets a fresh copy).
    Escalated,
}

impl Event {
    /// Whether this announces a newer state of an approval already announced (an edit in
    /// Telegram rather than a new message).
    pub fn is_change(self) -> bool {
        matches!(self, Event::Ended | Event::Updated)
    }
}

#[derive(Debug, Clone)]
pub struct Notification {
    pub event: Event,
    pub approval: Approval,
    /// The request that caused this notification, for log correlation.
    pub request_id: Option<String>,
}

impl Notification {
    /// A short label for logs and files: `created`, `approved`, `timed_out`, ...
    pub fn kind(&self) -> &'static str {
        match self.event {
            Event::Created => "created",
            Event::Ended => self.approval.status.as_str(),
            Event::Updated => "approval_counted",
            Event::Escalated => "escalated",
        }
    }

    pub fn is_pending(&self) -> bool {
        self.approval.status == Status::Pending
    }
}

/// How an operator can decide without Telegram; rendered into console lines and emails.
#[derive(Debug, Clone)]
pub struct OperatorHints {
    /// Base URL of this service as operators reach it, e.g. `http://127.0.0.1:5284`.
    pub public_url: String,
}

impl OperatorHints {
    pub fn cli(&self, approval: &Approval) -> String {
        format!(
            "approval-gate approvals approve {id}   (or: approval-gate approvals reject {id} --comment TEXT)",
            id = approval.id
        )
    }

    pub fn curl(&self, approval: &Approval) -> String {
        format!(
            "curl -X POST {url}/api/approvals/{id}/decision -H \"Authorization: Bearer $APPROVAL_GATE_OPERATOR_TOKEN\" -H 'Content-Type: application/json' -d '{{\"decision\":\"approve\"}}'",
            url = self.public_url.trim_end_matches('/'),
            id = approval.id
        )
    }
}

/// Tell a notifier that entries of its queue changed: `confirmed` are now durable and may be
/// delivered; `withdrawn` were removed because their commit failed. Sent only after the commit
/// (or the revert), so a notifier never announces what is not on disk.
#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Wake {
    pub channel: crate::store::Channel,
    pub confirmed: Vec<u64>,
    pub withdrawn: Vec<u64>,
    /// The confirmed entries' content, as written: notifiers deliver it without reading it
    /// back from sled (sled stays the copy replayed after a restart). It also tells Telegram
    /// that an approval ended, so a first message still queued is posted already decided.
    pub entry: Option<std::sync::Arc<crate::store::QueueEntry>>,
    /// The approval's span (creation to end), so a notifier's calls about it are its children
    /// in a trace. In memory only: after a restart the calls are traced without it.
    pub span: Option<tracing::Span>,
}

/// Fault injection (`debug.fault_injection`): a notifier ignores its next this many wake-ups,
/// as one that lost them would. Proves that health reports what that leaves stuck.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct LoseWakes(pub u32);

/// Notifications waiting this long behind a queue entry their notifier was never woken for are
/// stuck, and its health says so. A confirmation (a [`Wake`]) follows its commit within
/// milliseconds and a store that cannot commit is reported by the registry's own health, so
/// only a lost wake-up (a bug) leaves a queue there; without this the notifier looked healthy
/// while operators heard nothing.
pub const STUCK_AFTER: Duration = Duration::from_secs(10);

/// What a notifier's queue waits behind (an entry it was never woken for) and since when, and
/// whether that was logged: the stuck check the Telegram gateway (keyed by the entry's seq) and
/// each fallback lane (`()`: its front) share. A wait of [`STUCK_AFTER`] or more is stuck.
#[derive(Debug, Clone, Copy)]
pub struct Blocked<K> {
    on: Option<(K, Instant)>,
    logged: bool,
}

impl<K> Default for Blocked<K> {
    fn default() -> Self {
        Self {
            on: None,
            logged: false,
        }
    }
}

impl<K: Copy + PartialEq> Blocked<K> {
    /// Note what the queue waits behind now (the first time is kept while it stays the same), or
    /// that nothing holds it.
    pub fn note(&mut self, on: Option<K>) {
        match (on, self.on) {
            (Some(key), Some((held, _))) if key == held => {}
            (Some(key), _) => {
                *self = Self {
                    on: Some((key, Instant::now())),
                    logged: false,
                }
            }
            (None, _) => *self = Self::default(),
        }
    }

    /// What the queue waits behind, if anything.
    pub fn on(&self) -> Option<K> {
        self.on.map(|(key, _)| key)
    }

    /// What it has waited behind and for how long, once that is [`STUCK_AFTER`] or more.
    pub fn stuck(&self) -> Option<(K, Duration)> {
        let (key, since) = self.on?;
        let waited = since.elapsed();
        (waited >= STUCK_AFTER).then_some((key, waited))
    }

    /// True the first time it is found stuck, so the caller logs it once.
    pub fn first_report(&mut self) -> bool {
        let first = self.stuck().is_some() && !self.logged;
        self.logged |= first;
        first
    }
}

/// On a shared store, how often the instance that delivers (the holder of the poller's lease)
/// counts its queues for `/metrics` and `/health`. Between counts its gauges follow its own
/// wake-ups and deliveries; the count adds what other instances queued. Each count reads every
/// entry of the queue (and the index entries of those delivered but not yet vacuumed): with a
/// backlog, counting on every 250 ms tick cost the database more than the deliveries did.
pub const LEADER_COUNT_EVERY: Duration = Duration::from_secs(1);

/// How often an instance that does not deliver counts: it only reports the size.
pub const FOLLOWER_COUNT_EVERY: Duration = Duration::from_secs(5);

/// When a notifier on a shared store counts its queue again: at most every
/// [`LEADER_COUNT_EVERY`] while it leads and every [`FOLLOWER_COUNT_EVERY`] while it follows
/// (so an instance that takes the lead counts within a second).
#[derive(Debug, Default)]
pub struct CountPacer {
    last: Option<Instant>,
}

impl CountPacer {
    /// Whether to count now; if so, the count is taken as done now.
    pub fn due(&mut self, leading: bool) -> bool {
        let every = if leading {
            LEADER_COUNT_EVERY
        } else {
            FOLLOWER_COUNT_EVERY
        };
        let due = self.last.is_none_or(|at| at.elapsed() >= every);
        if due {
            self.last = Some(Instant::now());
        }
        due
    }
}

#[cfg(test)]
mod count_pacer_tests {
    use super::*;

    #[test]
    fn a_leader_counts_every_second_and_a_follower_every_five() {
        let mut pacer = CountPacer::default();
        assert!(pacer.due(false), "the first count is at once");
        assert!(!pacer.due(false), "a follower waits for its period");
        assert!(!pacer.due(true), "so does a leader");
        pacer.last = Instant::now().checked_sub(LEADER_COUNT_EVERY);
        assert!(pacer.due(true), "a second later the leader counts");
        pacer.last = Instant::now().checked_sub(LEADER_COUNT_EVERY);
        assert!(!pacer.due(false), "the follower does not");
        pacer.last = Instant::now().checked_sub(FOLLOWER_COUNT_EVERY);
        assert!(pacer.due(false), "five seconds later the follower counts");
    }
}
