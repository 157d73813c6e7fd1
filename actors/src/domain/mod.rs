//! The approval itself: ids, statuses and the one state transition rule. What an agent asks
//! for is in `request`, who or what decides in `decision`, history entries in `history`.
//!
//! Pure types with no I/O. Everything here is validated on construction, so the actors and the
//! HTTP layer can trust what they hold. Nothing in this module knows about sled, actix or HTTP.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

mod decision;
mod escalation;
mod grant;
mod history;
mod limits;
mod request;
mod risk;
mod route;

pub use decision::{Actor, Decision, Outcome};
pub use escalation::{EscalationStep, StepDecision, check_steps, next_due_ms};
pub use grant::Grant;
pub use history::AuditEvent;
pub use limits::{InputLimits, json_depth};
pub use request::{MAX_REASON, MAX_SHORT_FIELD, NewApproval, ValidationError};
pub use risk::{Risk, RiskLevel, RiskReason};
pub use route::{DEFAULT_CHAT, Target, parse_targets, valid_name as valid_chat_name};

/// Identifier of one approval: a ULID, so ids sort by creation time (the list endpoint relies
/// on that for "newest first" pagination without a secondary index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApprovalId(Ulid);

impl ApprovalId {
    pub fn new() -> Self {
        Self(Ulid::new())
    }

    /// The next id from a monotonic generator: ids made in the same millisecond still sort in
    /// creation order (plain `Ulid::new()` would order them randomly within the millisecond).
    pub fn next(generator: &mut ulid::Generator) -> Self {
        generator
            .generate()
            .map(Self)
            .unwrap_or_else(|_| Self::new())
    }

    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_bytes()
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(Ulid::from_bytes(bytes))
    }

    /// From a stored key; `None` unless it is 16 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(Self::from_bytes(bytes.try_into().ok()?))
    }
}

impl Default for ApprovalId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ApprovalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ApprovalId {
    type Err = ulid::DecodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ulid::from_string(s).map(Self)
    }
}

/// Where an approval is in its life. Only `Pending` may change; every other state is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Approved,
    Rejected,
    TimedOut,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Pending,
        Status::Approved,
        Status::Rejected,
        Status::TimedOut,
        Status::Cancelled,
    ];

    pub fn is_terminal(self) -> bool {
        self != Status::Pending
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Rejected => "rejected",
            Status::TimedOut => "timed_out",
            Status::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown status `{s}` (expected pending, approved, rejected, timed_out or cancelled)"))
    }
}

/// One approval as the service knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub id: ApprovalId,
    pub status: Status,
    pub session_id: String,
    pub tool_name: String,
    pub tool_input: String,
    pub reason: Option<String>,
    pub agent: Option<String>,
    pub requested_by: String,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decided_by: Option<Actor>,
    pub comment: Option<String>,
    /// How dangerous it looks, assessed once at creation (`crate::risk`).
    pub risk: Risk,
    /// Distinct operators who must approve before it is approved (a policy rule's
    /// `approvals_required`; 1 for everything else).
    pub approvals_required: u8,
    /// Approvals counted so far while fewer than `approvals_required` (empty for one-person
    /// approvals: the decision itself is the approval).
    pub votes: Vec<Vote>,
    /// Where a policy rule sent it (`notify`), in place of the default chat and email
    /// recipients; empty: the defaults.
    pub route: Vec<Target>,
    /// Escalation steps fired so far (`[[escalation]]`), each once.
    pub escalations: u8,
    /// Recipients the fired steps added, in the order they were told.
    pub escalated_to: Vec<Target>,
    /// When its next escalation step is due (ms), as the registry computed it at its last
    /// write: what a shared store's instances look for when the one that armed it is gone.
    /// The steps as configured stay the authority when a step fires.
    pub next_escalation_ms: Option<i64>,
}

/// One operator's approval towards a quorum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub actor: Actor,
    pub at_ms: i64,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TelegramMessageRef {
    pub chat_id: i64,
    pub message_id: i32,
}

/// Why a transition did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionError {
    /// The approval had already ended; carries the winner so callers can report it.
    AlreadyTerminal,
}

impl Approval {
    pub fn create(id: ApprovalId, new: NewApproval, now: DateTime<Utc>) -> Self {
        let timeout = chrono::Duration::from_std(new.timeout).unwrap_or(chrono::Duration::MAX);
        Approval {
            id,
            status: Status::Pending,
            session_id: new.session_id,
            tool_name: new.tool_name,
            tool_input: new.tool_input,
            reason: new.reason,
            agent: new.agent,
            requested_by: new.requested_by,
            idempotency_key: new.idempotency_key,
            created_at: now,
            expires_at: now
                .checked_add_signed(timeout)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
            decided_at: None,
            decided_by: None,
            comment: None,
            risk: Risk::default(),
            approvals_required: 1,
            votes: Vec::new(),
            route: Vec::new(),
            escalations: 0,
            escalated_to: Vec::new(),
            next_escalation_ms: None,
        }
    }

    /// The Telegram chats (by name) that announce it: its route's, or the default chat.
    pub fn chats(&self) -> Vec<&str> {
        let routed: Vec<&str> = self
            .route
            .iter()
            .filter_map(Target::telegram_chat)
            .collect();
        if routed.is_empty() {
            vec![DEFAULT_CHAT]
        } else {
            routed
        }
    }

    /// The single transition rule: only a pending approval may end, and it ends once.
    pub fn apply(&mut self, decision: Decision, now: DateTime<Utc>) -> Result<(), TransitionError> {
        if self.status.is_terminal() {
            return Err(TransitionError::AlreadyTerminal);
        }
        self.status = decision.outcome.status();
        self.decided_at = Some(now);
        self.decided_by = Some(decision.actor);
        self.comment = decision.comment;
        Ok(())
    }

    /// "1 of 2 approved (alice)": the quorum as operators read it.
    pub fn quorum_line(&self) -> String {
        let names: Vec<String> = self.votes.iter().map(|v| v.actor.short_name()).collect();
        let counted = if self.status == Status::Approved {
            self.votes.len().max(1)
        } else {
            self.votes.len()
        };
        match names.is_empty() {
            true => format!("0 of {} approved", self.approvals_required),
            false => format!(
                "{counted} of {} approved ({})",
                self.approvals_required,
                names.join(", ")
            ),
        }
    }

    pub fn time_to_decision(&self) -> Option<std::time::Duration> {
        self.decided_at
            .and_then(|at| (at - self.created_at).to_std().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Approval {
        let new = NewApproval {
            session_id: "s".into(),
            tool_name: "Bash".into(),
            tool_input: "{}".into(),
            reason: None,
            agent: None,
            requested_by: "agent".into(),
            idempotency_key: None,
            timeout: std::time::Duration::from_secs(60),
            max_timeout: None,
            idempotent_while_pending: false,
            cwd: None,
        };
        Approval::create(ApprovalId::new(), new, Utc::now())
    }

    #[test]
    fn first_decision_wins_and_terminal_states_never_change() {
        let mut approval = sample();
        let approve = Decision {
            outcome: Outcome::Approve,
            actor: Actor::Operator("alice".into()),
            comment: None,
        };
        approval
            .apply(approve, Utc::now())
            .expect("pending approval accepts a decision");
        let timeout = Decision {
            outcome: Outcome::Timeout,
            actor: Actor::System,
            comment: None,
        };
        assert_eq!(
            approval.apply(timeout, Utc::now()),
            Err(TransitionError::AlreadyTerminal)
        );
        assert_eq!(approval.status, Status::Approved);
        assert_eq!(approval.decided_by, Some(Actor::Operator("alice".into())));
    }

    #[test]
    fn json_depth_skips_strings() {
        assert_eq!(json_depth("1"), 0);
        assert_eq!(json_depth(r#"{"a":[1,{"b":"[[[["}]}"#), 3);
        assert_eq!(json_depth(r#"["\\\"[["]"#), 1);
        assert_eq!(json_depth(&"[".repeat(5000)), 5000);
    }

    #[test]
    fn status_round_trips_through_its_name() {
        for status in Status::ALL {
            assert_eq!(status.as_str().parse::<Status>(), Ok(status));
        }
        assert!("done".parse::<Status>().is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let mut new = NewApproval {
            session_id: " ".into(),
            tool_name: "Bash".into(),
            tool_input: "{}".into(),
            reason: None,
            agent: None,
            requested_by: "agent".into(),
            idempotency_key: None,
            timeout: std::time::Duration::from_secs(1),
            max_timeout: None,
            idempotent_while_pending: false,
            cwd: None,
        };
        assert_eq!(
            new.validate(&InputLimits::default()).map_err(|e| e.field),
            Err("session_id")
        );
        new.session_id = "s".into();
        new.reason = Some("x".repeat(MAX_REASON + 1));
        assert_eq!(
            new.validate(&InputLimits::default()).map_err(|e| e.field),
            Err("reason")
        );
    }
}
