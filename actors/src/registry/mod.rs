//! ApprovalRegistry: owns the approval store and the state machine, and wakes long-poll waiters.
//!
//! Every change goes through this one actor, so "compare-and-set" is simply read, check,
//! write inside one handler: a tap racing a deadline racing a cancel has exactly one winner.
//! A change is acknowledged (reply, waiters woken, notifiers told) only after the group commit
//! has put it on disk. The registry never touches the deadline index or the outbox; it asks the
//! sweeper and the notifiers by message.

mod handlers;
mod messages;
mod waiters;

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;

pub use messages::*;
use waiters::Waiters;

use crate::domain::{Approval, ApprovalId, Decision, Status};
use crate::metrics::Metric;
use crate::notification::{Event, Notification, Notify};
use crate::store::{ApprovalStore, Commit, SledStore};
use crate::supervision::{Restarts, guarded, guarded_with};
use crate::sweeper::{Arm, Disarm, Rearm, TimeoutSweeper};

pub const NAME: &str = "approval_registry";

#[derive(Debug, Clone)]
pub struct RegistrySettings {
    pub max_waiters: usize,
    pub grace_period: Duration,
}

pub struct ApprovalRegistry {
    store: SledStore,
    settings: RegistrySettings,
    waiters: Waiters,
    counts: HashMap<Status, u64>,
    /// Approvals changed but not yet confirmed on disk, so reads of them wait for the flush.
    unflushed: HashMap<ApprovalId, u32>,
    started_at_ms: i64,
    sweeper: Addr<TimeoutSweeper>,
    notifiers: Vec<Recipient<Notify>>,
    metrics: Recipient<Metric>,
    restarts: Restarts,
    load_error: Option<String>,
    ids: ulid::Generator,
}

type Reply<T> = ResponseActFuture<ApprovalRegistry, Result<T, RegistryError>>;

fn ready<T: 'static>(value: Result<T, RegistryError>) -> Reply<T> {
    Box::pin(fut::ready(value))
}

/// Millisecond precision, the precision records are stored with, so a record read back equals
/// the one just written.
fn now() -> chrono::DateTime<Utc> {
    crate::store::millis(Utc::now().timestamp_millis())
}

/// When the sweeper expires an approval: `expires_at` plus the grace period.
fn deadline_ms(approval: &Approval, grace: Duration) -> i64 {
    let grace = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
    approval.expires_at.timestamp_millis().saturating_add(grace)
}

impl ApprovalRegistry {
    pub fn new(
        store: SledStore,
        settings: RegistrySettings,
        sweeper: Addr<TimeoutSweeper>,
        notifiers: Vec<Recipient<Notify>>,
        metrics: Recipient<Metric>,
    ) -> Self {
        Self {
            store,
            settings,
            waiters: Waiters::default(),
            counts: HashMap::new(),
            unflushed: HashMap::new(),
            started_at_ms: Utc::now().timestamp_millis(),
            sweeper,
            notifiers,
            metrics,
            restarts: Restarts::default(),
            load_error: None,
            ids: ulid::Generator::new(),
        }
    }

    fn deadline_ms(&self, approval: &Approval) -> i64 {
        deadline_ms(approval, self.settings.grace_period)
    }

    /// Rebuild the in-memory view from sled and make sure every pending deadline is armed.
    fn load(&mut self) {
        self.counts.clear();
        self.unflushed.clear();
        let mut arms = Vec::new();
        let mut counts = HashMap::new();
        let grace = self.settings.grace_period;
        let result = self.store.for_each(&mut |approval| {
            *counts.entry(approval.status).or_insert(0u64) += 1;
            if approval.status == Status::Pending {
                arms.push(Arm {
                    id: approval.id,
                    deadline_ms: deadline_ms(&approval, grace),
                });
            }
        });
        self.counts = counts;
        self.load_error = result.err().map(|e| e.to_string());
        if let Some(error) = &self.load_error {
            tracing::error!(actor = NAME, %error, "cannot load approvals from the store");
        }
        tracing::info!(
            pending = arms.len(),
            total = self.counts.values().sum::<u64>(),
            "approval registry loaded"
        );
        self.sweeper.do_send(Rearm(arms));
        self.publish_pending();
    }

    fn publish_pending(&self) {
        let pending = self.counts.get(&Status::Pending).copied().unwrap_or(0);
        self.metrics
            .do_send(Metric::PendingApprovals(pending as i64));
    }

    fn publish_waiters(&self) {
        self.metrics
            .do_send(Metric::Waiters(self.waiters.len() as i64));
    }

    fn count(&mut self, from: Option<Status>, to: Status) {
        if let Some(n) = from.and_then(|from| self.counts.get_mut(&from)) {
            *n = n.saturating_sub(1);
        }
        *self.counts.entry(to).or_insert(0) += 1;
        self.publish_pending();
    }

    fn write(&mut self, approval: &Approval) -> Result<Commit, RegistryError> {
        self.store.put(approval)?;
        *self.unflushed.entry(approval.id).or_insert(0) += 1;
        Ok(self.store.commit())
    }

    fn flushed(&mut self, id: ApprovalId) {
        if let Some(n) = self.unflushed.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.unflushed.remove(&id);
            }
        }
    }

    fn prepare_create(&mut self, msg: Create) -> Result<(Created, Commit), RegistryError> {
        msg.new.validate()?;
        if let Some(key) = &msg.new.idempotency_key
            && let Some(id) = self.store.find_idempotent(&msg.new.requested_by, key)?
            && let Some(approval) = self.store.get(id)?
        {
            // The original may still be on its way to disk; answer after it is.
            let created = Created {
                approval,
                created: false,
            };
            return Ok((created, self.store.commit()));
        }
        let approval = Approval::create(ApprovalId::next(&mut self.ids), msg.new, now());
        let commit = self.write(&approval)?;
        self.count(None, Status::Pending);
        self.sweeper.do_send(Arm {
            id: approval.id,
            deadline_ms: self.deadline_ms(&approval),
        });
        Ok((
            Created {
                approval,
                created: true,
            },
            commit,
        ))
    }

    fn prepare_decide(
        &mut self,
        id: ApprovalId,
        decision: Decision,
    ) -> Result<(Approval, Commit), RegistryError> {
        let mut approval = self.store.get(id)?.ok_or(RegistryError::NotFound(id))?;
        if approval.apply(decision, now()).is_err() {
            return Err(RegistryError::Conflict(Box::new(approval)));
        }
        let commit = self.write(&approval)?;
        self.count(Some(Status::Pending), approval.status);
        self.sweeper.do_send(Disarm {
            id,
            deadline_ms: self.deadline_ms(&approval),
        });
        Ok((approval, commit))
    }

    /// After a change is durable: tell everyone who needs to know.
    fn announce(&mut self, event: Event, approval: &Approval, request_id: Option<String>) {
        match event {
            Event::Created => self.metrics.do_send(Metric::ApprovalCreated),
            Event::Ended => {
                let woken = self.waiters.wake(approval);
                if woken > 0 {
                    self.publish_waiters();
                }
                self.metrics.do_send(Metric::ApprovalEnded {
                    outcome: approval.status.as_str(),
                    seconds: approval.time_to_decision().map_or(0.0, |d| d.as_secs_f64()),
                });
            }
        }
        let notification = Notification {
            event,
            approval: approval.clone(),
            request_id,
        };
        for notifier in &self.notifiers {
            notifier.do_send(Notify(notification.clone()));
        }
    }

    /// Run `commit`, then finish on the actor: mark flushed and announce on success.
    fn after_commit(
        &mut self,
        approval: Approval,
        commit: Commit,
        event: Option<Event>,
        request_id: Option<String>,
    ) -> Reply<Approval> {
        Box::pin(async move { commit.wait().await }.into_actor(self).map(
            move |result, act, ctx| {
                act.flushed(approval.id);
                result?;
                if let Some(event) = event {
                    // The change is durable whatever happens here: a panic while telling
                    // others restarts the registry but still answers the caller.
                    let approval = &approval;
                    guarded_with(NAME, act, ctx, |act, _| {
                        act.announce(event, approval, request_id)
                    });
                }
                Ok(approval)
            },
        ))
    }

    fn decide(&mut self, msg: Decide, ctx: &mut Context<Self>) -> Reply<Approval> {
        let id = msg.id;
        match guarded(NAME, ctx, || self.prepare_decide(id, msg.decision)) {
            Ok(Ok((approval, commit))) => {
                tracing::info!(
                    approval_id = %id,
                    request_id = msg.request_id.as_deref().unwrap_or("-"),
                    status = %approval.status,
                    decided_by = %approval.decided_by.as_ref().map(ToString::to_string).unwrap_or_default(),
                    "approval ended"
                );
                self.after_commit(approval, commit, Some(Event::Ended), msg.request_id)
            }
            Ok(Err(error)) => ready(Err(error)),
            Err(failed) => ready(Err(failed.into())),
        }
    }

    /// Answer a read, waiting for the flush first if the approval changed moments ago.
    fn read(&mut self, approval: Approval) -> Reply<Approval> {
        if self.unflushed.contains_key(&approval.id) {
            let commit = self.store.commit();
            Box::pin(
                async move { commit.wait().await.map(|()| approval) }
                    .into_actor(self)
                    .map(|result, _, _| result.map_err(RegistryError::from)),
            )
        } else {
            ready(Ok(approval))
        }
    }

    fn timeout_comment(&self, approval: &Approval, deadline_ms: i64) -> String {
        if deadline_ms < self.started_at_ms {
            format!(
                "expired while approval-gate was not running (deadline {})",
                crate::store::millis(deadline_ms).to_rfc3339()
            )
        } else {
            let waited = (approval.expires_at - approval.created_at)
                .to_std()
                .unwrap_or_default();
            format!(
                "no decision within {}",
                humantime::format_duration(Duration::from_secs(waited.as_secs()))
            )
        }
    }
}
