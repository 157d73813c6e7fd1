//! The agents' hook contracts: what Claude Code, Codex and Gemini CLI send a hook, and the exact
//! JSON each expects back. Shared by the HTTP hooks (`http::hooks`) and the command hooks
//! (`approval-gate hook`), so both speak each agent's dialect identically.
//!
//! Pure: parsing and rendering only. Whether to allow is decided elsewhere (policy, grants,
//! operators); this module never talks to the registry or the network.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// An agent CLI whose hooks the gate answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Agent {
    #[value(name = "claude-code")]
    ClaudeCode,
    Codex,
    Gemini,
}

/// The hook event being answered; it decides the output shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Event {
    /// Claude Code `PreToolUse`: allow, deny or ask.
    #[value(name = "pre-tool-use")]
    PreToolUse,
    /// Claude Code or Codex `PermissionRequest`: allow or deny (no answer = the agent's prompt).
    #[value(name = "permission-request")]
    PermissionRequest,
    /// Gemini CLI `BeforeTool`: allow or deny.
    #[value(name = "before-tool")]
    BeforeTool,
}

impl Agent {
    /// Whether "no decision" (the gate's `ask`) puts the call in front of a person. Claude
    /// Code shows its own permission dialog. Gemini CLI treats an answer without a decision as
    /// an allow (and its own `ask` hangs a headless `gemini -p`); Codex hands it to its
    /// automatic reviewer, a model. For those two, `ask` would let the call run unapproved.
    pub fn asks_a_person(self) -> bool {
        matches!(self, Agent::ClaudeCode)
    }

    /// The label stored as the approval's `agent`, shown to operators.
    pub fn label(self) -> &'static str {
        match self {
            Agent::ClaudeCode => "claude-code",
            Agent::Codex => "codex",
            Agent::Gemini => "gemini-cli",
        }
    }

    /// The path segment of its HTTP hook routes.
    pub fn path(self) -> &'static str {
        match self {
            Agent::ClaudeCode => "claude-code",
            Agent::Codex => "codex",
            Agent::Gemini => "gemini",
        }
    }

    /// The events this agent's hooks are answered for.
    pub fn supports(self, event: Event) -> bool {
        matches!(
            (self, event),
            (
                Agent::ClaudeCode,
                Event::PreToolUse | Event::PermissionRequest
            ) | (Agent::Codex, Event::PermissionRequest)
                | (Agent::Gemini, Event::BeforeTool)
        )
    }

    /// The event when none is given: the input's `hook_event_name`, else the agent's usual one.
    pub fn event_from(self, hook_event_name: Option<&str>) -> Event {
        match (self, hook_event_name) {
            (Agent::ClaudeCode, Some("PermissionRequest")) => Event::PermissionRequest,
            (Agent::ClaudeCode, _) => Event::PreToolUse,
            (Agent::Codex, _) => Event::PermissionRequest,
            (Agent::Gemini, _) => Event::BeforeTool,
        }
    }
}

impl Event {
    pub fn path(self) -> &'static str {
        match self {
            Event::PreToolUse => "pre-tool-use",
            Event::PermissionRequest => "permission-request",
            Event::BeforeTool => "before-tool",
        }
    }

    fn hook_event_name(self) -> &'static str {
        match self {
            Event::PreToolUse => "PreToolUse",
            Event::PermissionRequest => "PermissionRequest",
            Event::BeforeTool => "BeforeTool",
        }
    }
}

/// The fields of a hook's input the gate uses; anything else is ignored. Field names are
/// shared by all three agents (Claude Code's names, which Codex and Gemini CLI adopted).
#[derive(Debug, Deserialize)]
pub struct HookInput {
    pub session_id: String,
    pub tool_name: String,
    pub tool_input: Box<RawValue>,
    /// Claude Code PreToolUse only: one id per tool call.
    pub tool_use_id: Option<String>,
    pub hook_event_name: Option<String>,
    pub cwd: Option<String>,
    pub permission_mode: Option<String>,
    /// Set when a subagent made the call (Claude Code, Codex).
    pub agent_id: Option<String>,
    pub agent_type: Option<String>,
    /// Codex: the turn the call belongs to.
    pub turn_id: Option<String>,
    /// Gemini CLI: the MCP server of an MCP tool.
    pub mcp_context: Option<Value>,
}

impl HookInput {
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(body).map_err(|e| format!("the hook input is not valid: {e}"))
    }

    /// What an operator needs to judge the call besides the tool and its input: the agent,
    /// the event, where it runs and in which permission mode.
    pub fn context(&self, agent: Agent, event: Event) -> String {
        let mut parts = vec![format!("{} {}", agent.label(), event.hook_event_name())];
        if let Some(cwd) = self.cwd.as_deref().filter(|c| !c.is_empty()) {
            parts.push(format!("cwd {cwd}"));
        }
        if let Some(mode) = self.permission_mode.as_deref().filter(|m| !m.is_empty()) {
            parts.push(format!("permission mode {mode}"));
        }
        match (self.agent_type.as_deref(), self.agent_id.as_deref()) {
            (Some(kind), Some(id)) => parts.push(format!("subagent {kind} ({id})")),
            (Some(kind), None) => parts.push(format!("subagent {kind}")),
            (None, Some(id)) => parts.push(format!("subagent {id}")),
            (None, None) => {}
        }
        if let Some(server) = self
            .mcp_context
            .as_ref()
            .and_then(|c| c.get("server_name"))
            .and_then(Value::as_str)
        {
            parts.push(format!("MCP server {server}"));
        }
        parts.join(" · ")
    }
}

/// What the hook answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow(String),
    Deny(String),
    /// Hand the question to the agent's own permission prompt.
    Ask(String),
}

impl Verdict {
    pub fn reason(&self) -> &str {
        match self {
            Verdict::Allow(r) | Verdict::Deny(r) | Verdict::Ask(r) => r,
        }
    }
}

/// The JSON the agent expects for `verdict` on `event`.
///
/// - Claude Code PreToolUse: `hookSpecificOutput.permissionDecision` allow | deny | ask.
/// - PermissionRequest (Claude Code and Codex): `hookSpecificOutput.decision.behavior` allow |
///   deny; "ask" is no decision at all, so the agent shows its own prompt. Never
///   `updatedInput`, `updatedPermissions` or `interrupt`: Codex fails closed on them.
/// - Gemini BeforeTool: `decision` allow | deny with `reason`; "ask" is no decision.
pub fn render(event: Event, verdict: &Verdict) -> Value {
    match (event, verdict) {
        (Event::PreToolUse, verdict) => {
            let decision = match verdict {
                Verdict::Allow(_) => "allow",
                Verdict::Deny(_) => "deny",
                Verdict::Ask(_) => "ask",
            };
            json!({"hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": decision,
                "permissionDecisionReason": verdict.reason(),
            }})
        }
        (Event::PermissionRequest, Verdict::Allow(_)) => json!({"hookSpecificOutput": {
            "hookEventName": "PermissionRequest",
            "decision": {"behavior": "allow"},
        }}),
        (Event::PermissionRequest, Verdict::Deny(reason)) => json!({"hookSpecificOutput": {
            "hookEventName": "PermissionRequest",
            "decision": {"behavior": "deny", "message": reason},
        }}),
        (Event::BeforeTool, Verdict::Allow(_)) => json!({"decision": "allow"}),
        (Event::BeforeTool, Verdict::Deny(reason)) => {
            json!({"decision": "deny", "reason": reason})
        }
        (Event::PermissionRequest | Event::BeforeTool, Verdict::Ask(reason)) => {
            json!({"systemMessage": reason})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_request_never_carries_reserved_fields() {
        for verdict in [
            Verdict::Allow("ok".into()),
            Verdict::Deny("no".into()),
            Verdict::Ask("?".into()),
        ] {
            let text = render(Event::PermissionRequest, &verdict).to_string();
            for reserved in ["updatedInput", "updatedPermissions", "interrupt"] {
                assert!(!text.contains(reserved), "{text}");
            }
        }
    }

    #[test]
    fn default_events_follow_the_input() {
        assert_eq!(
            Agent::ClaudeCode.event_from(Some("PermissionRequest")),
            Event::PermissionRequest
        );
        assert_eq!(
            Agent::ClaudeCode.event_from(Some("PreToolUse")),
            Event::PreToolUse
        );
        assert_eq!(Agent::Gemini.event_from(None), Event::BeforeTool);
        assert!(!Agent::Codex.supports(Event::PreToolUse));
    }
}
