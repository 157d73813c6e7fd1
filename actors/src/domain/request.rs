//! What an agent asks for ([`NewApproval`]) and its validation: required fields, length bounds
//! and the input limits, checked before anything reaches the store.

use super::{InputLimits, json_depth};

/// What an agent asks for. Validated by [`NewApproval::validate`] before it reaches the store.
#[derive(Debug, Clone)]
pub struct NewApproval {
    pub session_id: String,
    pub tool_name: String,
    /// The tool input exactly as the agent sent it, as JSON text.
    pub tool_input: String,
    pub reason: Option<String>,
    /// Free-form label the agent gives itself (e.g. "claude-code").
    pub agent: Option<String>,
    /// The authenticated caller (agent token name); scopes idempotency keys and cancels.
    pub requested_by: String,
    pub idempotency_key: Option<String>,
    pub timeout: std::time::Duration,
    /// An upper bound on the deadline whatever a policy rule says: a hook that holds the
    /// request for `agents.hook_wait` sets it, so the approval never outlives its waiter.
    pub max_timeout: Option<std::time::Duration>,
    /// The idempotency key names a request only while its approval is pending: once that one
    /// ended, the same key asks again (a hook without a tool call id asking about the same
    /// input later).
    pub idempotent_while_pending: bool,
    /// The agent's working directory, when it says (hooks forward Claude Code's `cwd`): only
    /// the risk detectors read it (`outside_workdir`); it is not stored.
    pub cwd: Option<String>,
}

/// Limits on the text fields; they keep records and notifications bounded.
pub const MAX_SHORT_FIELD: usize = 256;
pub const MAX_REASON: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {problem}")]
pub struct ValidationError {
    pub field: &'static str,
    pub problem: String,
    /// The stable error code clients see (`invalid_request`, `tool_input_too_deep`, ...).
    pub code: &'static str,
}

impl NewApproval {
    pub fn validate(&self, limits: &InputLimits) -> Result<(), ValidationError> {
        if self.tool_input.len() > limits.max_bytes {
            return Err(ValidationError {
                field: "tool_input",
                problem: format!(
                    "is {} bytes long; at most {} are allowed (server.max_tool_input_bytes)",
                    self.tool_input.len(),
                    limits.max_bytes
                ),
                code: "tool_input_too_large",
            });
        }
        let depth = json_depth(&self.tool_input);
        if depth > limits.max_depth {
            return Err(ValidationError {
                field: "tool_input",
                problem: format!(
                    "nests {depth} levels deep; at most {} are allowed (server.max_input_depth)",
                    limits.max_depth
                ),
                code: "tool_input_too_deep",
            });
        }
        required("session_id", &self.session_id)?;
        required("tool_name", &self.tool_name)?;
        bounded("session_id", &self.session_id, MAX_SHORT_FIELD)?;
        bounded("tool_name", &self.tool_name, MAX_SHORT_FIELD)?;
        if let Some(reason) = &self.reason {
            bounded("reason", reason, MAX_REASON)?;
        }
        if let Some(agent) = &self.agent {
            bounded("agent", agent, MAX_SHORT_FIELD)?;
        }
        if let Some(cwd) = &self.cwd {
            bounded("cwd", cwd, MAX_REASON)?;
        }
        if let Some(key) = &self.idempotency_key {
            required("idempotency_key", key)?;
            bounded("idempotency_key", key, MAX_SHORT_FIELD)?;
        }
        Ok(())
    }
}

fn required(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if value.trim().is_empty() {
        return Err(ValidationError {
            field,
            problem: "must not be empty".into(),
            code: "invalid_request",
        });
    }
    Ok(())
}

fn bounded(field: &'static str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.len() > max {
        return Err(ValidationError {
            field,
            problem: format!("is {} bytes long; at most {max} are allowed", value.len()),
            code: "invalid_request",
        });
    }
    Ok(())
}

#[cfg(test)]
impl NewApproval {
    /// A plain request for unit tests: `Bash` with `{}` in session `s`, by `ci`, for a minute.
    pub fn sample() -> Self {
        NewApproval {
            session_id: "s".into(),
            tool_name: "Bash".into(),
            tool_input: "{}".into(),
            reason: None,
            agent: None,
            requested_by: "ci".into(),
            idempotency_key: None,
            timeout: std::time::Duration::from_secs(60),
            max_timeout: None,
            idempotent_while_pending: false,
            cwd: None,
        }
    }
}
