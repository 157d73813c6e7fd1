//! Session grants: "allow this tool in this session for a while". Pure data and its one rule.

use serde::{Deserialize, Serialize};

/// "Allow this tool for this session": later requests of `tool_name` in `session_id` by the
/// same agent token are approved at once until `expires_at`, unless revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// A ULID, as text.
    pub id: String,
    pub session_id: String,
    pub tool_name: String,
    /// The agent token whose requests it covers.
    pub requested_by: String,
    /// Who granted it, as [`Actor`]'s display form (`operator:alice`, `telegram:@bob (42)`).
    pub granted_by: String,
    /// The approval whose decision created it.
    pub approval_id: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

impl Grant {
    pub fn covers(
        &self,
        requested_by: &str,
        session_id: &str,
        tool_name: &str,
        now_ms: i64,
    ) -> bool {
        self.requested_by == requested_by
            && self.session_id == session_id
            && self.tool_name == tool_name
            && now_ms < self.expires_at_ms
    }
}
