//! The changes the registry makes, each built as a [`Change`](crate::store::Change) and sent
//! through the write path in `commit`: create (input limits, idempotency, policy and grants),
//! decide (timeout, cancel and operator decisions alike; the first decision wins by
//! compare-and-set on the pending record). Which Telegram messages show an approval is the
//! gateway's message log, not the registry's: recording one costs no commit here.

use actix::prelude::*;
use futures_util::future::FutureExt;

use super::commit::{Answer, Kind, Pending, answer};
use super::verdict::{
    ended_event, grants_may_answer, needs_comment, policy_decision, policy_event, risk_event,
};
use super::{ApprovalRegistry, Created, NAME, RegistryError};
use crate::domain::{
    Actor, Approval, ApprovalId, AuditEvent, Decision, Grant, NewApproval, Outcome, Status,
    ValidationError, Vote,
};
use crate::supervision::guarded;

impl ApprovalRegistry {
    pub(super) fn prepare_create(
        &mut self,
        new: NewApproval,
        request_id: Option<&str>,
    ) -> Result<Result<Pending, Approval>, RegistryError> {
        new.validate(&self.settings.input_limits)?;
        if let Some(key) = &new.idempotency_key
            && let Some(id) = self.store.find_idempotent(&new.requested_by, key)?
            && let Some(approval) = self.store.get(id)?
            && !(new.idempotent_while_pending && approval.status.is_terminal())
        {
            return Ok(Err(approval));
        }
        let verdict = self.settings.policy.evaluate(&new);
        let risk = self
            .settings
            .risk
            .assess(&new, verdict.rule.as_deref().zip(verdict.risk));
        let mut new = new;
        if let Some(timeout) = verdict.timeout {
            new.timeout = timeout;
        }
        if let Some(cap) = new.max_timeout {
            new.timeout = new.timeout.min(cap);
        }
        let now = self.clock.now();
        let mut approval = Approval::create(ApprovalId::next(&mut self.ids), new, now);
        approval.approvals_required = verdict.approvals_required;
        approval.route = verdict.route.clone();
        approval.next_escalation_ms =
            crate::domain::next_due_ms(&approval, &self.settings.escalation);
        // `created` is derived from the record when the history is read (`History`).
        let now_ms = now.timestamp_millis();
        let mut events: Vec<AuditEvent> = policy_event(&verdict, now_ms).into_iter().collect();
        events.extend(risk_event(&risk, now_ms));
        let grants_apply =
            grants_may_answer(&verdict) && !needs_comment(self.settings.require_comment_at, &risk);
        approval.risk = risk;
        let decision = policy_decision(verdict)
            .or_else(|| grants_apply.then(|| self.granted_now(&approval)).flatten());
        if let Some(decision) = decision {
            // Decided before anyone saw it: one write, no notifications, no deadline.
            if let Actor::Grant { grant_id, .. } = &decision.actor {
                events.push(
                    AuditEvent::at(now_ms, "grant_applied")
                        .by(&decision.actor)
                        .saying(format!("session grant {grant_id}")),
                );
            }
            let _ = approval.apply(decision, now);
            events.push(ended_event(&approval));
            let pending = self.write(approval, None, Kind::Resolved, request_id, None, &events)?;
            return Ok(Ok(pending));
        }
        self.check_pending_cap(&approval.requested_by)?;
        let pending = self.write(approval, None, Kind::Created, request_id, None, &events)?;
        self.pending_changed(&pending.applied.approval.requested_by, true);
        // Arm now: an expiry of an approval whose commit then fails finds nothing to do.
        self.arm(&pending.applied.approval);
        Ok(Ok(pending))
    }

    pub(super) fn create(
        &mut self,
        new: NewApproval,
        request_id: Option<String>,
        ctx: &mut Context<Self>,
    ) -> Answer<Created> {
        let prepared = match guarded(NAME, ctx, || {
            self.prepare_create(new, request_id.as_deref())
        }) {
            Ok(Ok(prepared)) => prepared,
            Ok(Err(error)) => return answer(Err(error)),
            Err(failed) => return answer(Err(failed.into())),
        };
        match prepared {
            // A repeat of an idempotent create: the original may still be on its way to disk.
            Err(approval) => {
                let created = Created {
                    approval,
                    created: false,
                };
                let id = created.approval.id;
                self.when_committed([id], Ok(created))
            }
            Ok(pending) => {
                let approval = &pending.applied.approval;
                // At debug: the HTTP request's own line names the approval it created.
                tracing::debug!(
                    approval_id = %approval.id,
                    request_id = request_id.as_deref().unwrap_or("-"),
                    tool = %approval.tool_name,
                    session = %approval.session_id,
                    "approval created"
                );
                let finish = self.finish(pending, ctx);
                async move {
                    match finish.await {
                        Ok(approval) => Ok(Created {
                            approval,
                            created: true,
                        }),
                        // Lost: the key was taken meanwhile (another instance): the original.
                        Err(RegistryError::Conflict(original)) => Ok(Created {
                            approval: *original,
                            created: false,
                        }),
                        Err(error) => Err(error),
                    }
                }
                .boxed_local()
            }
        }
    }

    fn prepare_decide(
        &mut self,
        id: ApprovalId,
        decision: Decision,
        request_id: Option<&str>,
        grant_for: Option<std::time::Duration>,
    ) -> Result<Pending, RegistryError> {
        let previous = self.store.get(id)?.ok_or(RegistryError::NotFound(id))?;
        let mut approval = previous.clone();
        let now = self.clock.now();
        // The deadline holds in the transition itself, not only when the sweeper gets round to
        // it: past `expires_at + grace` a pending approval can only time out.
        let decision = self.decision_at(&previous, decision, now);
        if previous.status == Status::Pending
            && decision.outcome == Outcome::Approve
            && decision.actor.is_person()
        {
            self.check_comment(&previous, &decision)?;
            if previous.approvals_required > 1 {
                if grant_for.is_some() {
                    return Err(RegistryError::Invalid(ValidationError {
                        field: "grant",
                        problem: format!(
                            "cannot be given on an approval that needs {} approvals: each \
                             request it covers would skip the second operator",
                            previous.approvals_required
                        ),
                        code: "grant_not_allowed",
                    }));
                }
                return self.prepare_vote(previous, decision, now, request_id);
            }
        }
        let granted_by = decision.actor.to_string();
        let approves = decision.outcome == Outcome::Approve;
        if approval.apply(decision, now).is_err() {
            return Err(RegistryError::Conflict(Box::new(approval)));
        }
        let grant = grant_for.filter(|_| approves).map(|duration| {
            let duration = duration.min(self.settings.max_grant);
            let created_at_ms = now.timestamp_millis();
            Grant {
                id: ulid::Ulid::new().to_string(),
                session_id: approval.session_id.clone(),
                tool_name: approval.tool_name.clone(),
                requested_by: approval.requested_by.clone(),
                granted_by: granted_by.clone(),
                approval_id: approval.id.to_string(),
                created_at_ms,
                expires_at_ms: created_at_ms
                    .saturating_add(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)),
            }
        });
        let mut events = vec![ended_event(&approval)];
        if let Some(grant) = &grant {
            events.push(
                AuditEvent::at(grant.created_at_ms, "grant_created")
                    .by(&grant.granted_by)
                    .saying(format!(
                        "grant {} for {} in session {} until {}",
                        grant.id,
                        grant.tool_name,
                        grant.session_id,
                        crate::store::millis(grant.expires_at_ms).to_rfc3339()
                    )),
            );
        }
        self.write(
            approval,
            Some(previous),
            Kind::Ended,
            request_id,
            grant,
            &events,
        )
    }

    /// `policy.require_comment_at`: approving a request at or above it needs a comment.
    fn check_comment(&self, approval: &Approval, decision: &Decision) -> Result<(), RegistryError> {
        let commented = decision
            .comment
            .as_deref()
            .is_some_and(|comment| !comment.trim().is_empty());
        if commented || !needs_comment(self.settings.require_comment_at, &approval.risk) {
            return Ok(());
        }
        Err(RegistryError::CommentRequired {
            level: approval.risk.level,
        })
    }

    /// One operator's approval of an approval that needs several: counted (the approval stays
    /// pending, operators are told "1 of 2"), or the last one needed (it is approved). The same
    /// person never counts twice.
    fn prepare_vote(
        &mut self,
        previous: Approval,
        decision: Decision,
        now: chrono::DateTime<chrono::Utc>,
        request_id: Option<&str>,
    ) -> Result<Pending, RegistryError> {
        if previous
            .votes
            .iter()
            .any(|vote| vote.actor.same_person(&decision.actor))
        {
            return Err(RegistryError::AlreadyCounted(Box::new(previous)));
        }
        let mut approval = previous.clone();
        approval.votes.push(Vote {
            actor: decision.actor.clone(),
            at_ms: now.timestamp_millis(),
            comment: decision.comment.clone(),
        });
        let counted = AuditEvent::at(now.timestamp_millis(), "approval_counted")
            .by(&decision.actor)
            .saying(match &decision.comment {
                Some(comment) => format!(
                    "{} of {}: {comment}",
                    approval.votes.len(),
                    approval.approvals_required
                ),
                None => format!(
                    "{} of {}",
                    approval.votes.len(),
                    approval.approvals_required
                ),
            });
        if approval.votes.len() < usize::from(approval.approvals_required) {
            tracing::info!(approval_id = %approval.id, by = %decision.actor, counted = approval.votes.len(), required = approval.approvals_required, "approval counted");
            return self.write(
                approval,
                Some(previous),
                Kind::Voted,
                request_id,
                None,
                &[counted],
            );
        }
        let _ = approval.apply(decision, now);
        let events = [counted, ended_event(&approval)];
        self.write(
            approval,
            Some(previous),
            Kind::Ended,
            request_id,
            None,
            &events,
        )
    }

    /// `decision`, or the timeout that replaces it when it comes after the deadline.
    fn decision_at(
        &self,
        approval: &Approval,
        decision: Decision,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Decision {
        let deadline_ms = self.deadline_ms(approval);
        if approval.status.is_terminal()
            || decision.outcome == Outcome::Timeout
            || now.timestamp_millis() < deadline_ms
        {
            return decision;
        }
        tracing::info!(approval_id = %approval.id, decided_by = %decision.actor, "a decision came after the deadline; the approval times out instead");
        self.decision_for_timeout(approval, deadline_ms)
    }

    pub(super) fn decide(
        &mut self,
        id: ApprovalId,
        decision: Decision,
        request_id: Option<String>,
        grant_for: Option<std::time::Duration>,
        ctx: &mut Context<Self>,
    ) -> Answer<Approval> {
        let outcome = decision.outcome;
        // Kept for a retry: a vote that lost a race on a shared store is counted again on the
        // record as the other instance left it.
        let again = super::Decide {
            id,
            decision: decision.clone(),
            request_id: request_id.clone(),
            grant_for,
        };
        let prepared = guarded(NAME, ctx, || {
            self.prepare_decide(id, decision, request_id.as_deref(), grant_for)
        });
        match prepared {
            Ok(Ok(pending)) => {
                let approval = &pending.applied.approval;
                tracing::info!(
                    approval_id = %id,
                    request_id = request_id.as_deref().unwrap_or("-"),
                    status = %approval.status,
                    decided_by = %approval.decided_by.as_ref().map(ToString::to_string).unwrap_or_default(),
                    "approval ended"
                );
                let late = outcome != Outcome::Timeout
                    && approval.status == crate::domain::Status::TimedOut;
                let quorum = approval.approvals_required > 1;
                let finished = self.finish(pending, ctx);
                if !late && quorum {
                    return retry_lost_vote(finished, again, ctx.address());
                }
                if !late {
                    return finished;
                }
                // The deadline won: the late decider is told who did, like any loser.
                FutureExt::boxed_local(async move {
                    finished
                        .await
                        .and_then(|winner| Err(RegistryError::Conflict(Box::new(winner))))
                })
            }
            // "Already decided by X" only once X's decision is on disk.
            Ok(Err(conflict @ RegistryError::Conflict(_))) => {
                self.when_committed([id], Err(conflict))
            }
            Ok(Err(error)) => answer(Err(error)),
            Err(failed) => answer(Err(failed.into())),
        }
    }
}

/// A change of an approval that needs several approvals is written only over the record it was
/// made from: on a shared store another instance's vote can get there first, and the loser is
/// told `Conflict` with the approval still pending. That is no conflict for the operator: their
/// approval is counted again on the record as it is now (each lost race means another vote
/// landed, and votes are bounded by the quorum, so this ends).
fn retry_lost_vote(
    finished: Answer<Approval>,
    again: super::Decide,
    registry: Addr<ApprovalRegistry>,
) -> Answer<Approval> {
    async move {
        match finished.await {
            Err(RegistryError::Conflict(current)) if !current.status.is_terminal() => registry
                .send(again)
                .await
                .unwrap_or(Err(RegistryError::Restarting)),
            other => other,
        }
    }
    .boxed_local()
}
