//! The JSON shape of an approval on the wire. Times are RFC 3339 (UTC); `tool_input` is
//! returned byte for byte as the agent sent it.

use approval_gate_actors::domain::{Actor, Approval};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Shared by the server (which writes it) and the CLI (which reads it); unknown fields are
/// ignored when reading, so an older CLI works with a newer service.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApprovalView {
    pub id: String,
    pub status: String,
    pub session_id: String,
    pub tool_name: String,
    #[schema(value_type = Object)]
    pub tool_input: Box<RawValue>,
    pub reason: Option<String>,
    pub agent: Option<String>,
    #[serde(default)]
    pub requested_by: String,
    pub created_at: String,
    pub expires_at: String,
    pub decided_at: Option<String>,
    /// The operator token's name, the Telegram user, the agent, or `system` for timeouts.
    pub decided_by: Option<String>,
    /// The same, structured: `{"kind": "operator"|"telegram"|"agent"|"system"|"policy"|"grant", ...}`.
    #[schema(value_type = Option<Object>)]
    #[serde(default)]
    pub decider: Option<serde_json::Value>,
    pub comment: Option<String>,
    /// How dangerous the request looks, assessed when it was created: `low`, `medium`, `high`
    /// or `critical`, and why (policy rules' `risk`, the built-in detectors).
    #[serde(default)]
    pub risk: RiskView,
    /// Distinct operators who must approve (a policy rule's `approvals_required`; 1 for most).
    #[serde(default = "one")]
    pub approvals_required: u8,
    /// The approvals counted so far towards `approvals_required` (empty when one suffices).
    #[serde(default)]
    pub approvals: Vec<VoteView>,
    /// Where its rule sent it (`telegram:<chat>`, `email:<address>`); empty: the defaults.
    #[serde(default)]
    pub route: Vec<String>,
    /// `[[escalation]]` steps fired so far, and the recipients they added.
    #[serde(default)]
    pub escalations: u8,
    #[serde(default)]
    pub escalated_to: Vec<String>,
    /// List rows only, when `tool_input` is longer than `server.list_preview_bytes`: then
    /// `tool_input` is `null`, this holds its first bytes (cut at a character boundary) and
    /// `tool_input_bytes` its full length; `GET /api/approvals/{id}` has the whole input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_input_preview: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_input_bytes: Option<usize>,
}

fn one() -> u8 {
    1
}

#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RiskView {
    /// `low`, `medium`, `high` or `critical`.
    #[schema(example = "high")]
    pub level: String,
    pub reasons: Vec<RiskReasonView>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RiskReasonView {
    /// `detector:<name>` (e.g. `detector:sudo`) or `rule:<policy rule>`.
    #[schema(example = "detector:recursive_delete")]
    pub source: String,
    pub level: String,
    /// What was seen, for the operator.
    #[schema(example = "deletes files recursively")]
    pub detail: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VoteView {
    /// As in `decided_by`.
    pub by: String,
    #[schema(value_type = Object)]
    pub decider: serde_json::Value,
    pub at: String,
    pub comment: Option<String>,
}

impl From<&approval_gate_actors::domain::Risk> for RiskView {
    fn from(risk: &approval_gate_actors::domain::Risk) -> Self {
        RiskView {
            level: risk.level.as_str().into(),
            reasons: risk
                .reasons
                .iter()
                .map(|reason| RiskReasonView {
                    source: reason.source.clone(),
                    level: reason.level.as_str().into(),
                    detail: reason.detail.clone(),
                })
                .collect(),
        }
    }
}

impl ApprovalView {
    /// A list row: the whole view, but a `tool_input` over `limit` bytes becomes a preview, so
    /// a page of large inputs stays small.
    pub fn row(approval: &Approval, limit: usize) -> Self {
        let mut view = Self::from(approval);
        let input = &approval.tool_input;
        if input.len() > limit {
            let mut end = limit;
            while !input.is_char_boundary(end) {
                end -= 1;
            }
            view.tool_input = RawValue::from_string("null".into()).unwrap_or_default();
            view.tool_input_preview = Some(format!("{}…", &input[..end]));
            view.tool_input_bytes = Some(input.len());
        }
        view
    }
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn decided_by(actor: &Actor) -> (String, serde_json::Value) {
    use serde_json::json;
    match actor {
        Actor::Operator(name) => (name.clone(), json!({ "kind": "operator", "name": name })),
        Actor::Telegram { user_id, username } => (
            match username {
                Some(username) => format!("telegram:@{username}"),
                None => format!("telegram:{user_id}"),
            },
            json!({ "kind": "telegram", "user_id": user_id, "username": username }),
        ),
        Actor::Agent(name) => (name.clone(), json!({ "kind": "agent", "name": name })),
        Actor::System => ("system".into(), json!({ "kind": "system" })),
        Actor::Policy(name) => (
            format!("policy:{name}"),
            json!({ "kind": "policy", "rule": name }),
        ),
        Actor::Escalation(step) => (
            format!("escalation:{step}"),
            json!({ "kind": "escalation", "step": step }),
        ),
        Actor::Grant {
            granted_by,
            grant_id,
        } => (
            format!("grant:{granted_by}"),
            json!({ "kind": "grant", "granted_by": granted_by, "grant_id": grant_id }),
        ),
    }
}

impl From<&Approval> for ApprovalView {
    fn from(a: &Approval) -> Self {
        // Stored input was validated as JSON on the way in; `null` only guards a damaged record.
        let tool_input = RawValue::from_string(a.tool_input.clone()).unwrap_or_default();
        let (decided_by, decider) = a.decided_by.as_ref().map(decided_by).unzip();
        ApprovalView {
            id: a.id.to_string(),
            status: a.status.as_str().to_string(),
            session_id: a.session_id.clone(),
            tool_name: a.tool_name.clone(),
            tool_input,
            reason: a.reason.clone(),
            agent: a.agent.clone(),
            requested_by: a.requested_by.clone(),
            created_at: rfc3339(a.created_at),
            expires_at: rfc3339(a.expires_at),
            decided_at: a.decided_at.map(rfc3339),
            decided_by,
            decider,
            comment: a.comment.clone(),
            risk: RiskView::from(&a.risk),
            approvals_required: a.approvals_required,
            approvals: a
                .votes
                .iter()
                .map(|vote| {
                    let (by, decider) = self::decided_by(&vote.actor);
                    VoteView {
                        by,
                        decider,
                        at: rfc3339(approval_gate_actors::store::millis(vote.at_ms)),
                        comment: vote.comment.clone(),
                    }
                })
                .collect(),
            route: a.route.iter().map(ToString::to_string).collect(),
            escalations: a.escalations,
            escalated_to: a.escalated_to.iter().map(ToString::to_string).collect(),
            tool_input_preview: None,
            tool_input_bytes: None,
        }
    }
}
