//! Escalation: what happens to an approval nobody decides. `[[escalation]]` steps, each after a
//! delay from the approval's creation: tell further recipients, re-post to the first chat, and
//! on the last step perhaps decide. Pure: the registry fires steps (durably, once each, counted
//! in the approval's `escalations`) and the notifiers deliver what a step adds.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Approval, Outcome, Target};

/// One `[[escalation]]` entry as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationStep {
    /// Since the approval was created.
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    /// Further recipients: `telegram:<chat name>`, `email:<address>`.
    #[serde(default)]
    pub notify: Vec<String>,
    /// Post the approval again in the chat it was first posted to (a fresh message at the
    /// bottom of the chat, with buttons).
    #[serde(default)]
    pub repost: bool,
    /// The last step only: end the approval with this outcome instead of waiting for the
    /// timeout.
    #[serde(default)]
    pub decide: Option<StepDecision>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepDecision {
    Approve,
    Reject,
}

impl StepDecision {
    pub fn outcome(self) -> Outcome {
        match self {
            StepDecision::Approve => Outcome::Approve,
            StepDecision::Reject => Outcome::Reject,
        }
    }
}

impl EscalationStep {
    pub fn targets(&self) -> Vec<Target> {
        self.notify.iter().filter_map(|t| t.parse().ok()).collect()
    }
}

/// When `approval`'s next step is due (ms since the epoch), if it has one before its deadline.
pub fn next_due_ms(approval: &Approval, steps: &[EscalationStep]) -> Option<i64> {
    let step = steps.get(usize::from(approval.escalations))?;
    let due = approval
        .created_at
        .timestamp_millis()
        .saturating_add(i64::try_from(step.after.as_millis()).unwrap_or(i64::MAX));
    (due < approval.expires_at.timestamp_millis()).then_some(due)
}

/// Checks the steps as a whole: increasing delays, a decision only on the last one, targets
/// that parse. The error names the step (1-based) and what is wrong.
pub fn check_steps(steps: &[EscalationStep]) -> Result<(), (usize, String)> {
    let mut previous = Duration::ZERO;
    for (i, step) in steps.iter().enumerate() {
        let number = i + 1;
        if step.after <= previous {
            return Err((
                number,
                "`after` must be longer than the step before's (and than 0)".into(),
            ));
        }
        previous = step.after;
        if step.decide.is_some() && number != steps.len() {
            return Err((number, "only the last step may `decide`".into()));
        }
        if step.notify.is_empty() && !step.repost && step.decide.is_none() {
            return Err((
                number,
                "does nothing: give `notify`, `repost` or `decide`".into(),
            ));
        }
        super::route::parse_targets(&step.notify).map_err(|problem| (number, problem))?;
    }
    if steps.len() > usize::from(u8::MAX) {
        return Err((steps.len(), "at most 255 steps".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(after: u64) -> EscalationStep {
        EscalationStep {
            after: Duration::from_secs(after),
            notify: vec!["telegram:oncall".into()],
            repost: false,
            decide: None,
        }
    }

    #[test]
    fn steps_must_grow_and_only_the_last_decides() {
        assert_eq!(check_steps(&[step(60), step(120)]), Ok(()));
        assert_eq!(check_steps(&[step(120), step(60)]).map_err(|e| e.0), Err(2));
        let mut deciding = step(60);
        deciding.decide = Some(StepDecision::Reject);
        assert_eq!(
            check_steps(&[deciding.clone(), step(120)]).map_err(|e| e.0),
            Err(1)
        );
        assert_eq!(check_steps(&[step(30), deciding]), Ok(()));
        let mut bad = step(10);
        bad.notify = vec!["pager:x".into()];
        assert!(check_steps(&[bad]).is_err());
    }

    #[test]
    fn the_next_step_is_due_only_before_the_deadline() {
        let mut approval = Approval::create(
            super::super::ApprovalId::new(),
            super::super::NewApproval::sample(),
            chrono::Utc::now(),
        );
        let steps = [step(10), step(30), step(90)];
        let created = approval.created_at.timestamp_millis();
        assert_eq!(next_due_ms(&approval, &steps), Some(created + 10_000));
        approval.escalations = 1;
        assert_eq!(next_due_ms(&approval, &steps), Some(created + 30_000));
        approval.escalations = 2;
        assert_eq!(
            next_due_ms(&approval, &steps),
            None,
            "after its 60 s deadline"
        );
        approval.escalations = 3;
        assert_eq!(next_due_ms(&approval, &steps), None);
    }
}
