//! An approval's history entries: what happened, when, by whom. Pure data; the store keeps them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One entry of an approval's append-only history (`GET /api/approvals/{id}/events`): what
/// happened, when, and who or what did it. `kind` is one of a closed set (see `EventKind`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub at_ms: i64,
    pub kind: String,
    /// Who did it, in [`Actor`]'s display form, when someone did.
    pub actor: Option<String>,
    /// The channel a notification event concerns (`telegram`, `email`, ...).
    pub channel: Option<String>,
    pub detail: Option<String>,
}

impl AuditEvent {
    /// Tests only: the service stamps every entry by its clock ([`crate::clock::Clock`], the
    /// database's on a shared store) with [`at`](Self::at), never by the host's.
    #[cfg(test)]
    pub fn now(kind: &str) -> Self {
        Self::at(chrono::Utc::now().timestamp_millis(), kind)
    }

    /// An entry for something that happened at `at_ms` (ms since the epoch), not now.
    pub fn at(at_ms: i64, kind: &str) -> Self {
        Self {
            at_ms,
            kind: kind.into(),
            actor: None,
            channel: None,
            detail: None,
        }
    }

    pub fn by(mut self, actor: impl fmt::Display) -> Self {
        self.actor = Some(actor.to_string());
        self
    }

    pub fn on(mut self, channel: &str) -> Self {
        self.channel = Some(channel.into());
        self
    }

    pub fn saying(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}
