//! The messages the ApprovalRegistry answers, and its error type.

use std::collections::BTreeMap;

use actix::Message;
use tokio::sync::oneshot;

use crate::domain::{Approval, ApprovalId, Decision, NewApproval, Status, ValidationError};
use crate::store::StoreDiagnostics;

#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    #[error("no approval with id {0}")]
    NotFound(ApprovalId),
    /// The approval had already ended; carries it so callers can show who won.
    #[error("approval {} is already {}", .0.id, .0.status)]
    Conflict(Box<Approval>),
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    #[error("too many long polls are waiting (limit {limit})")]
    TooManyWaiters { limit: usize },
    #[error("too many long polls are waiting for this agent token (limit {limit})")]
    TooManyWaitersForAgent { limit: usize },
    #[error("this agent already has {limit} pending approvals")]
    TooManyPending { limit: u64 },
    /// `policy.require_comment_at`: approving at this level needs a comment.
    #[error("approving a {level}-risk request needs a comment (policy.require_comment_at)")]
    CommentRequired { level: crate::domain::RiskLevel },
    /// This operator's approval is already counted towards the approval's quorum.
    #[error("your approval of {} is already counted ({}); another operator must approve", .0.id, .0.quorum_line())]
    AlreadyCounted(Box<Approval>),
    #[error("the store failed: {0}")]
    Store(String),
    #[error("the registry failed while handling the request and is restarting")]
    Restarting,
}

impl From<crate::store::StoreError> for RegistryError {
    fn from(error: crate::store::StoreError) -> Self {
        RegistryError::Store(error.to_string())
    }
}

impl From<crate::supervision::HandlerFailed> for RegistryError {
    fn from(_: crate::supervision::HandlerFailed) -> Self {
        RegistryError::Restarting
    }
}

/// Create an approval (or return the one with the same idempotency key). Answers only once the
/// record is on disk.
#[derive(Message)]
#[rtype(result = "Result<Created, RegistryError>")]
pub struct Create {
    pub new: NewApproval,
    pub request_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Created {
    pub approval: Approval,
    /// `false` when an earlier request with the same idempotency key already created it.
    pub created: bool,
}

#[derive(Message)]
#[rtype(result = "Result<Approval, RegistryError>")]
pub struct Get(pub ApprovalId);

/// Newest first; `before` is the cursor (the last id of the previous page).
#[derive(Message)]
#[rtype(result = "Result<Vec<Approval>, RegistryError>")]
pub struct List {
    pub status: Option<Status>,
    pub before: Option<ApprovalId>,
    pub limit: usize,
}

/// End a pending approval: operator decision, Telegram tap or agent cancel. The first one wins;
/// later ones get [`RegistryError::Conflict`] with the winner.
#[derive(Message)]
#[rtype(result = "Result<Approval, RegistryError>")]
pub struct Decide {
    pub id: ApprovalId,
    pub decision: Decision,
    pub request_id: Option<String>,
    /// With an approval: also allow this tool in this session for this long (capped by
    /// `agents.max_grant`), as one durable change with the decision.
    pub grant_for: Option<std::time::Duration>,
}

/// Live session grants, soonest to expire first.
#[derive(Message)]
#[rtype(result = "Vec<crate::domain::Grant>")]
pub struct ListGrants;

/// Revoke a grant; answers the grant once its removal is durable, `None` if there is none.
#[derive(Message)]
#[rtype(result = "Result<Option<crate::domain::Grant>, RegistryError>")]
pub struct RevokeGrant(pub String);

/// Register interest in an approval's end.
#[derive(Message)]
#[rtype(result = "Result<WaitReply, RegistryError>")]
pub struct Wait(pub ApprovalId);

pub enum WaitReply {
    /// Already ended (or the registry answers with the current state at once).
    Ready(Box<Approval>),
    /// Still pending; the ticket carries the state at registration, the last word if nothing
    /// else can be learnt later.
    /// Still pending: the receiver gets the approval when it ends. Drop the ticket's guard
    /// (see [`WaitTicket::cancel_message`]) when giving up so the waiter is freed.
    Pending(WaitTicket),
}

pub struct WaitTicket {
    pub id: ApprovalId,
    pub current: Box<Approval>,
    pub waiter: u64,
    pub receiver: oneshot::Receiver<Approval>,
}

impl WaitTicket {
    pub fn cancel_message(&self) -> Unwait {
        Unwait {
            id: self.id,
            waiter: self.waiter,
        }
    }
}

/// The long poll that registered `waiter` is gone (answered, timed out or hung up).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Unwait {
    pub id: ApprovalId,
    pub waiter: u64,
}

/// A hold gave up without an answer (its agent hung up): forget its waiter, and cancel the
/// approval with `decision` only if nobody else waits for it. Two identical calls without a
/// `tool_use_id` share one approval; one agent's hang-up must not cancel the other's.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Abandon {
    pub unwait: Option<Unwait>,
    pub id: ApprovalId,
    pub decision: Decision,
}

/// Counts and store facts for diagnostics.
#[derive(Message)]
#[rtype(result = "RegistryStats")]
pub struct Stats;

#[derive(Debug, Clone)]
pub struct RegistryStats {
    pub counts: BTreeMap<&'static str, u64>,
    /// Creation time (ms) of the oldest pending approval.
    pub oldest_pending_ms: Option<i64>,
    /// Per channel: when the change announced by its oldest queued notification happened (ms).
    pub oldest_queued_ms: Vec<(crate::store::Channel, Option<i64>)>,
    pub waiters: usize,
    pub dead_letters: i64,
    pub store: StoreDiagnostics,
}

/// Dead letters, oldest first, strictly after the id `after` (the cursor).
#[derive(Message)]
#[rtype(result = "Result<Vec<crate::store::DeadLetter>, RegistryError>")]
pub struct DeadLetters {
    pub after: u64,
    pub limit: usize,
}

/// Put a dead letter back on its channel's queue; answers the channel and the new sequence
/// number once that is durable (`NotFound`-like `None` if there is no such letter).
#[derive(Message)]
#[rtype(result = "Result<Option<(crate::store::Channel, u64)>, RegistryError>")]
pub struct Requeue(pub u64);

/// Put every dead letter of one channel back on its queue (after an outage that outlasted
/// `fallback.dead_letter_after`); answers how many, once that is durable. One full commit for
/// all of them.
#[derive(Message)]
#[rtype(result = "Result<usize, RegistryError>")]
pub struct RequeueChannel(pub crate::store::Channel);

/// Fault injection: the next `count` store commits fail, panic or stall
/// ([`crate::store::CommitFault`]).
#[derive(Message)]
#[rtype(result = "()")]
pub struct FailCommits {
    pub count: u32,
    pub fault: crate::store::CommitFault,
}

/// Read one of the store's small key-value records (`meta`): the front door keeps its own
/// durable state there (console sign-ins), through the registry, which owns the store.
#[derive(Message)]
#[rtype(result = "Result<Option<Vec<u8>>, RegistryError>")]
pub struct ReadMeta(pub String);

/// Store a key-value record unless one is stored under `key` already; answers the value now
/// stored, once it is durable (shared by every instance on a shared store).
#[derive(Message)]
#[rtype(result = "Result<Vec<u8>, RegistryError>")]
pub struct InitMeta {
    pub key: String,
    pub value: Vec<u8>,
}

/// An approval's history, oldest first (`NotFound` if there is no such approval).
#[derive(Message)]
#[rtype(result = "Result<Vec<crate::domain::AuditEvent>, RegistryError>")]
pub struct History(pub ApprovalId);

/// New settings from a configuration reload (policy, limits, grants, waiters, retention).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconfigure(pub super::RegistrySettings);

/// Write a consistent backup of the store to a file (off the actor's thread).
#[derive(Message)]
#[rtype(result = "Result<crate::store::backup::BackupStats, RegistryError>")]
pub struct Backup(pub std::path::PathBuf);
