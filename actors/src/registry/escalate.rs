//! Escalation steps (`[[escalation]]`): armed in the sweeper beside the deadline, fired when
//! due, once each. Firing is a change like any other (one durable write with its history entry
//! and its notifications), counted in the approval's `escalations`, so a restart re-arms only
//! the steps still to come and a step two instances both fire lands once (on a shared store the
//! write is made only over the record it was made from).

use actix::prelude::*;
use futures_util::FutureExt;

use super::commit::{Answer, Kind, Pending, answer};
use super::verdict::ended_event;
use super::{ApprovalRegistry, NAME, RegistryError};
use crate::domain::{Actor, Approval, AuditEvent, Decision, EscalationStep, next_due_ms};
use crate::supervision::guarded;
use crate::sweeper::Arm;

impl ApprovalRegistry {
    /// The sweeper's arm for `approval`'s next escalation step, if one is due before its
    /// deadline.
    pub(super) fn escalation_arm(&self, approval: &Approval) -> Option<Arm> {
        next_due_ms(approval, &self.settings.escalation).map(|deadline_ms| Arm {
            id: approval.id,
            deadline_ms,
        })
    }

    /// The sweeper says `approval`'s step due at `due_ms` is due: fire it, unless it already
    /// fired (or the steps changed and none is due now; the next one is armed instead).
    pub(super) fn escalate(
        &mut self,
        approval: Approval,
        due_ms: i64,
        ctx: &mut Context<Self>,
    ) -> Answer<()> {
        let Some(next_ms) = next_due_ms(&approval, &self.settings.escalation) else {
            return answer(Ok(()));
        };
        if next_ms > self.clock.now_ms() {
            if next_ms != due_ms {
                self.sweeper.do_send(Arm {
                    id: approval.id,
                    deadline_ms: next_ms,
                });
            }
            return answer(Ok(()));
        }
        let id = approval.id;
        let prepared = guarded(NAME, ctx, || self.prepare_escalation(approval));
        let finished = match prepared {
            Ok(Ok(pending)) => self.finish(pending, ctx),
            Ok(Err(error)) => return answer(Err(error)),
            Err(failed) => return answer(Err(failed.into())),
        };
        async move {
            match finished.await {
                Ok(approval) => {
                    tracing::info!(approval_id = %id, step = approval.escalations, status = %approval.status, "escalation step fired");
                    Ok(())
                }
                // Another instance fired it (or decided the approval) first.
                Err(RegistryError::Conflict(_) | RegistryError::NotFound(_)) => Ok(()),
                Err(error) => Err(error),
            }
        }
        .boxed_local()
    }

    /// The change a step makes: counted, its recipients added, on the history; the last step
    /// may also end the approval.
    fn prepare_escalation(&mut self, previous: Approval) -> Result<Pending, RegistryError> {
        let number = previous.escalations.saturating_add(1);
        let step: EscalationStep = self
            .settings
            .escalation
            .get(usize::from(previous.escalations))
            .cloned()
            .ok_or(RegistryError::Conflict(Box::new(previous.clone())))?;
        let now = self.clock.now();
        let mut approval = previous.clone();
        approval.escalations = number;
        approval.next_escalation_ms = next_due_ms(&approval, &self.settings.escalation);
        for target in step.targets() {
            if !approval.escalated_to.contains(&target) {
                approval.escalated_to.push(target);
            }
        }
        let waited = humantime::format_duration(step.after);
        let mut told: Vec<String> = step.notify.clone();
        if step.repost {
            told.push("re-posted".into());
        }
        let mut events = vec![
            AuditEvent::at(self.clock.now_ms(), "escalated")
                .by(Actor::Escalation(number))
                .saying(format!(
                    "step {number}: no decision after {waited}{}",
                    if told.is_empty() {
                        String::new()
                    } else {
                        format!("; {}", told.join(", "))
                    }
                )),
        ];
        let Some(decide) = step.decide else {
            return self.write(
                approval,
                Some(previous),
                Kind::Escalated,
                None,
                None,
                &events,
            );
        };
        let decision = Decision {
            outcome: decide.outcome(),
            actor: Actor::Escalation(number),
            comment: Some(format!(
                "escalation step {number}: no decision after {waited}"
            )),
        };
        if approval.apply(decision, now).is_err() {
            return Err(RegistryError::Conflict(Box::new(previous)));
        }
        events.push(ended_event(&approval));
        let cause = format!("escalation-{}", approval.id);
        self.write(
            approval,
            Some(previous),
            Kind::Ended,
            Some(&cause),
            None,
            &events,
        )
    }
}
