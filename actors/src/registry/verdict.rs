//! What a new request gets before any human sees it: the policy's verdict, a live session
//! grant, and the history entries that record them. Decisions only; writing is `commit.rs`.

use crate::domain::{Actor, Approval, AuditEvent, Decision, Outcome, Risk, RiskLevel};
use crate::policy::{Action as PolicyAction, Verdict};

use super::ApprovalRegistry;

/// The history entry of a new approval: who asked, with which agent label. Not stored: the
/// record says all of it, so reading the history derives it (one sled insert less per create,
/// `docs/benchmarks.md`). Stores written before that hold it as an entry of their own.
pub(super) fn created_event(approval: &Approval) -> AuditEvent {
    let event = AuditEvent::at(approval.created_at.timestamp_millis(), "created")
        .by(Actor::Agent(approval.requested_by.clone()));
    match &approval.agent {
        Some(label) => event.saying(format!("agent {label}")),
        None => event,
    }
}

/// An approval's history: its `created` entry, derived from the record, then what is stored
/// (a store written before `created` was derived holds it already: not repeated).
pub(super) fn history(approval: &Approval, stored: Vec<AuditEvent>) -> Vec<AuditEvent> {
    if stored.iter().any(|event| event.kind == "created") {
        return stored;
    }
    std::iter::once(created_event(approval))
        .chain(stored)
        .collect()
}

/// The history entry of an ending: its status as the kind, who decided, their comment, at the
/// time the record says it was decided (the registry's clock, shared across instances).
pub(super) fn ended_event(approval: &Approval) -> AuditEvent {
    let at = approval.decided_at.unwrap_or(approval.created_at);
    let mut event = AuditEvent::at(at.timestamp_millis(), approval.status.as_str());
    if let Some(by) = &approval.decided_by {
        event = event.by(by);
    }
    match &approval.comment {
        Some(comment) => event.saying(comment.clone()),
        None => event,
    }
}

/// The history entry of a rule that matched, whatever it decided.
pub(super) fn policy_event(verdict: &Verdict, at_ms: i64) -> Option<AuditEvent> {
    let rule = verdict.rule.as_ref()?;
    let action = match verdict.action {
        PolicyAction::Allow => "allow",
        PolicyAction::Deny => "deny",
        PolicyAction::Escalate => "escalate",
    };
    Some(
        AuditEvent::at(at_ms, "policy_applied")
            .by(Actor::Policy(rule.clone()))
            .saying(format!("rule `{rule}`: {action}")),
    )
}

/// The history entry of a risk above `low`: its level and why.
pub(super) fn risk_event(risk: &Risk, at_ms: i64) -> Option<AuditEvent> {
    (risk.level > RiskLevel::Low).then(|| {
        AuditEvent::at(at_ms, "risk_assessed").saying(format!("{}: {}", risk.level, risk.summary()))
    })
}

/// Whether approving at `risk` needs a comment (`policy.require_comment_at`). A session grant
/// never answers such a request: it would approve it with no comment at all.
pub(super) fn needs_comment(threshold: Option<RiskLevel>, risk: &Risk) -> bool {
    threshold.is_some_and(|at| risk.level >= at)
}

/// Whether a session grant may answer a request the policy gave `verdict`: only when no rule
/// spoke. A grant is keyed by (agent, session, tool), not by what the operator saw: "Allow for
/// this session" on `Bash: ls` must not approve the `terraform apply` a rule escalates.
pub(super) fn grants_may_answer(verdict: &Verdict) -> bool {
    verdict.rule.is_none()
}

/// An allow or deny rule decides at once; escalation (or no rule) leaves it to grants and humans.
pub(super) fn policy_decision(verdict: Verdict) -> Option<Decision> {
    match (verdict.action, verdict.rule) {
        (PolicyAction::Allow, Some(rule)) => Some(Decision {
            outcome: Outcome::Approve,
            comment: Some(format!("allowed by policy rule `{rule}`")),
            actor: Actor::Policy(rule),
        }),
        (PolicyAction::Deny, Some(rule)) => Some(Decision {
            outcome: Outcome::Reject,
            comment: Some(format!("denied by policy rule `{rule}`")),
            actor: Actor::Policy(rule),
        }),
        _ => None,
    }
}

impl ApprovalRegistry {
    /// An approval by a live session grant covering this request, if there is one.
    pub(super) fn granted(&self, approval: &Approval) -> Option<Decision> {
        let now_ms = approval.created_at.timestamp_millis();
        let grant = self.grants.values().find(|g| {
            g.covers(
                &approval.requested_by,
                &approval.session_id,
                &approval.tool_name,
                now_ms,
            )
        })?;
        Some(Decision {
            outcome: Outcome::Approve,
            actor: Actor::Grant {
                granted_by: grant.granted_by.clone(),
                grant_id: grant.id.clone(),
            },
            comment: Some(format!(
                "allowed by session grant {} from {} until {}",
                grant.id,
                grant.granted_by,
                crate::store::millis(grant.expires_at_ms).to_rfc3339()
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ApprovalId, NewApproval};

    #[test]
    fn the_created_entry_is_derived_from_the_record_once() {
        let new = NewApproval {
            agent: Some("claude-code".into()),
            ..NewApproval::sample()
        };
        let approval = Approval::create(ApprovalId::new(), new, chrono::Utc::now());
        let delivered = AuditEvent::now("delivered").on("file");
        let derived = history(&approval, vec![delivered.clone()]);
        assert_eq!(derived.len(), 2);
        assert_eq!(derived[0].kind, "created");
        assert_eq!(derived[0].at_ms, approval.created_at.timestamp_millis());
        assert_eq!(
            derived[0].actor.as_deref(),
            Some(format!("agent:{}", approval.requested_by).as_str())
        );
        assert_eq!(derived[0].detail.as_deref(), Some("agent claude-code"));
        assert_eq!(derived[1], delivered);
        // A store written before the entry was derived holds it: not repeated.
        let stored = vec![created_event(&approval), delivered];
        assert_eq!(history(&approval, stored.clone()), stored);
    }
}
