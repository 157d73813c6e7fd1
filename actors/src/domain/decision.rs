//! Who or what ends an approval, and how: the structured actor (operator, Telegram user, agent,
//! clock, policy rule, session grant) and the outcome, carried together as a [`Decision`] by
//! every source so one compare-and-set in the registry decides them all.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Status;

/// Who or what ended an approval. Kept structured (not just a display string) so later audit
/// trails and policy rules can tell an operator from a Telegram user from the clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Actor {
    /// An operator token, by its configured name.
    Operator(String),
    /// A Telegram user who tapped a button.
    Telegram {
        user_id: i64,
        username: Option<String>,
    },
    /// The agent that asked, cancelling its own request.
    Agent(String),
    /// The timeout sweeper.
    System,
    /// A `[[policy.rules]]` entry, by its name: decided without a human.
    Policy(String),
    /// A session grant an operator gave earlier ("allow this tool for this session").
    Grant {
        /// Who granted it (an operator token name or a Telegram user, as displayed).
        granted_by: String,
        grant_id: String,
    },
    /// An `[[escalation]]` step with `decide` (1-based step number). Last: records written
    /// before it existed keep their variant numbers.
    Escalation(u8),
}

impl Actor {
    /// A person deciding: an operator token or a Telegram user (not a rule, grant, timeout or
    /// the agent itself). Only people are asked for comments and counted towards a quorum.
    pub fn is_person(&self) -> bool {
        matches!(self, Actor::Operator(_) | Actor::Telegram { .. })
    }

    /// Whether two deciders are the same person for a quorum: an operator token by its name,
    /// a Telegram user by their id (a username can change). A person with both an operator
    /// token and a Telegram account counts as two: the service cannot tell they are one.
    pub fn same_person(&self, other: &Actor) -> bool {
        match (self, other) {
            (Actor::Operator(a), Actor::Operator(b)) => a == b,
            (Actor::Telegram { user_id: a, .. }, Actor::Telegram { user_id: b, .. }) => a == b,
            _ => false,
        }
    }

    /// How a person is named in "1 of 2 approved (alice, @bob)".
    pub fn short_name(&self) -> String {
        match self {
            Actor::Operator(name) => name.clone(),
            Actor::Telegram {
                username: Some(username),
                ..
            } => format!("@{username}"),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Operator(name) => write!(f, "operator:{name}"),
            Actor::Telegram {
                user_id,
                username: Some(username),
            } => write!(f, "telegram:@{username} ({user_id})"),
            Actor::Telegram {
                user_id,
                username: None,
            } => write!(f, "telegram:{user_id}"),
            Actor::Agent(name) => write!(f, "agent:{name}"),
            Actor::System => f.write_str("system"),
            Actor::Policy(name) => write!(f, "policy:{name}"),
            Actor::Grant { granted_by, .. } => write!(f, "grant:{granted_by}"),
            Actor::Escalation(step) => write!(f, "escalation:{step}"),
        }
    }
}

/// The ways an approval can end; each maps to exactly one terminal [`Status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Approve,
    Reject,
    Timeout,
    Cancel,
}

impl Outcome {
    pub fn status(self) -> Status {
        match self {
            Outcome::Approve => Status::Approved,
            Outcome::Reject => Status::Rejected,
            Outcome::Timeout => Status::TimedOut,
            Outcome::Cancel => Status::Cancelled,
        }
    }
}

/// A request to end an approval, from whichever source. Timeout, cancel and operator decisions
/// all travel as a `Decision` so they share one compare-and-set in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub outcome: Outcome,
    pub actor: Actor,
    pub comment: Option<String>,
}
