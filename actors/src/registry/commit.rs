//! The registry's write path: write a change and its queue entries as one staged change, wait for
//! the group commit, then settle it on the actor ([`Settle`]): announce it if it is durable,
//! revert it if it is not.

use actix::prelude::*;
use futures_util::future::{FutureExt, LocalBoxFuture};

use super::{ApprovalRegistry, NAME, RegistryError};
use std::sync::Arc;

use crate::domain::{Approval, ApprovalId, AuditEvent, Grant, Status};
use crate::feed::FeedEvent;
use crate::metrics::Metric;
use crate::notification::Event;
use crate::store::{Change, Landed, Landing, Written};
use crate::supervision::guarded;

/// What kind of change a write is; decides who hears of it once it is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A new pending approval: operators are told.
    Created,
    /// A pending approval ended: operators are told, waiters woken.
    Ended,
    /// A new approval decided at once by policy or a grant: nobody needs telling.
    Resolved,
    /// An approval counted towards a pending approval's quorum: operators are told (the
    /// Telegram message shows "1 of 2"), nobody is woken.
    Voted,
    /// An escalation step fired on a pending approval: its recipients are told.
    Escalated,
}

impl Kind {
    fn event(self) -> Option<Event> {
        match self {
            Kind::Created => Some(Event::Created),
            Kind::Ended => Some(Event::Ended),
            Kind::Voted => Some(Event::Updated),
            Kind::Escalated => Some(Event::Escalated),
            Kind::Resolved => None,
        }
    }
}

/// A change as written to sled: enough to announce it or to revert it.
pub(super) struct Applied {
    /// The approval's span: new for a creation, the open one for an ending.
    span: Option<tracing::Span>,
    pub(super) approval: Approval,
    previous: Option<Approval>,
    kind: Kind,
    grant: Option<Grant>,
    written: Written,
}

/// A change written and waiting to land.
pub(super) struct Pending {
    pub(super) applied: Applied,
    landing: Landing,
}

/// What became of a change, as the registry settles it.
enum Fate {
    Durable,
    /// The commit failed: revert.
    Failed,
    /// Another writer got there first (PostgreSQL): nothing was written, nothing to revert;
    /// the approval as stored now.
    Lost(Box<Approval>),
}

/// Sent by a commit future to the registry once the commit's fate is known.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Settle {
    generation: u64,
    fate: Fate,
    applied: Applied,
}

pub(super) type Answer<T> = LocalBoxFuture<'static, Result<T, RegistryError>>;

pub(super) fn answer<T: 'static>(value: Result<T, RegistryError>) -> Answer<T> {
    FutureExt::boxed_local(futures_util::future::ready(value))
}

impl ApprovalRegistry {
    pub(super) fn write(
        &mut self,
        approval: Approval,
        previous: Option<Approval>,
        kind: Kind,
        request_id: Option<&str>,
        grant: Option<Grant>,
        events: &[AuditEvent],
    ) -> Result<Pending, RegistryError> {
        let event = kind.event();
        let notifiers = self.notifiers.clone();
        let channels = if event.is_some() {
            notifiers.channels.as_slice()
        } else {
            &[]
        };
        let (written, landing) = self.store.write(&Change {
            approval: &approval,
            previous: previous.as_ref(),
            event,
            channels,
            request_id,
            grant: grant.as_ref(),
            events,
        })?;
        self.unsettled.written(approval.id);
        let span = match kind {
            Kind::Created if self.settings.trace_approvals => Some(tracing::info_span!(
                parent: None,
                "approval",
                approval_id = %approval.id,
                tool = %approval.tool_name,
                session = %approval.session_id,
                requested_by = %approval.requested_by,
            )),
            Kind::Ended | Kind::Voted | Kind::Escalated => self.spans.get(&approval.id).cloned(),
            Kind::Created | Kind::Resolved => None,
        };
        Ok(Pending {
            applied: Applied {
                span,
                approval,
                previous,
                kind,
                grant,
                written,
            },
            landing,
        })
    }

    /// The reply to a write: resolves after the commit, whatever happens to this actor meanwhile.
    pub(super) fn finish(&self, pending: Pending, ctx: &mut Context<Self>) -> Answer<Approval> {
        let me = ctx.address();
        let notifiers = self.notifiers.clone();
        let generation = self.generation;
        async move {
            let Pending {
                mut applied,
                landing,
            } = pending;
            let (fate, result) = match landing.wait().await {
                Ok(Landed::Durable(queued)) => {
                    if !queued.is_empty() {
                        applied.written.queued = queued;
                    }
                    (Fate::Durable, Ok(applied.approval.clone()))
                }
                // The winner, as any loser of a race is told (a repeated create: the original).
                Ok(Landed::Lost(current)) => (
                    Fate::Lost(current.clone()),
                    Err(RegistryError::Conflict(current)),
                ),
                Err(error) => (Fate::Failed, Err(RegistryError::from(error))),
            };
            if matches!(fate, Fate::Durable) {
                // Notifiers may now deliver these entries: they are on disk.
                notifiers.wake(
                    &applied.written.queued,
                    true,
                    applied.written.entry.as_ref(),
                    applied.span.as_ref(),
                );
            }
            // `do_send` queues before we answer, so anything the caller does next is handled
            // after the settlement (a retry after a 503 sees the reverted state).
            me.do_send(Settle {
                generation,
                fate,
                applied,
            });
            result
        }
        .boxed_local()
    }

    /// An answer that reveals `value` about approvals with a change still unsettled waits for
    /// those changes to settle, and is `503` (a store error) if one of them failed: `value`
    /// then shows a state that has been reverted (`unsettled.rs`).
    pub(super) fn when_committed<T: 'static>(
        &mut self,
        ids: impl IntoIterator<Item = ApprovalId>,
        value: Result<T, RegistryError>,
    ) -> Answer<T> {
        let Some(settled) = self.unsettled.wait(ids) else {
            return answer(value);
        };
        async move {
            if !settled.await {
                return Err(RegistryError::Store(
                    "a change to this approval could not be committed and was undone; retry".into(),
                ));
            }
            value
        }
        .boxed_local()
    }

    /// The commit's fate is known: announce a durable change, revert one that is not.
    fn settle(&mut self, settle: Settle) {
        let Settle {
            generation,
            fate,
            applied:
                Applied {
                    span,
                    approval,
                    previous,
                    kind,
                    grant,
                    written,
                },
        } = settle;
        let event = kind.event();
        let request_id = written
            .entry
            .as_ref()
            .and_then(|entry| entry.request_id.clone())
            .unwrap_or_else(|| "-".into());
        let current = generation == self.generation;
        if let Fate::Lost(stored) = fate {
            // Nothing was written. A create counted and armed in advance is taken back; an
            // ending another instance made is applied here as that instance's change.
            if matches!(kind, Kind::Created | Kind::Resolved) && current {
                if kind == Kind::Created {
                    self.pending_changed(&approval.requested_by, false);
                }
                self.sweeper.do_send(crate::sweeper::Disarm {
                    id: approval.id,
                    deadline_ms: self.deadline_ms(&approval),
                });
            }
            self.unsettled.settled(approval.id, true);
            if kind == Kind::Ended {
                self.ended_elsewhere(*stored, false);
            }
            return;
        }
        if matches!(fate, Fate::Failed) {
            let change = Change {
                approval: &approval,
                previous: previous.as_ref(),
                event,
                channels: &[],
                request_id: None,
                grant: grant.as_ref(),
                events: &[],
            };
            if let Err(error) = self.store.revert(&change, &written) {
                tracing::error!(actor = NAME, approval_id = %approval.id, request_id, %error, "cannot revert a change whose commit failed");
            }
            self.notifiers.wake(&written.queued, false, None, None);
            if kind == Kind::Created && current {
                self.pending_changed(&approval.requested_by, false);
            }
            tracing::warn!(actor = NAME, approval_id = %approval.id, request_id, "commit failed; the change was reverted and the caller told 503");
            if !current {
                // The reload after a restart counted the change we just reverted.
                self.recount();
            }
            // Only now, with the revert applied, may a waiting read be answered (503).
            self.unsettled.settled(approval.id, false);
            return;
        }
        self.unsettled.settled(approval.id, true);
        for (channel, _) in &written.queued {
            self.metrics.do_send(Metric::Queue {
                channel: channel.as_str(),
                event: "enqueued",
                count: 1,
            });
        }
        if let Some(grant) = grant {
            tracing::info!(actor = NAME, grant_id = %grant.id, session = %grant.session_id, tool = %grant.tool_name, granted_by = %grant.granted_by, "session grant created");
            self.grants.insert(grant.id.clone(), grant);
        }
        match kind {
            Kind::Created => {
                if current {
                    self.count(None, Status::Pending);
                }
                if let Some(span) = span {
                    self.spans.insert(approval.id, span);
                }
                self.metrics.do_send(Metric::ApprovalCreated);
                self.feed.publish(FeedEvent::Pending(Arc::new(approval)));
            }
            Kind::Voted => {
                self.feed.publish(FeedEvent::Pending(Arc::new(approval)));
            }
            Kind::Escalated => {
                // The next step, now that this one is on disk.
                if let Some(next) = self.escalation_arm(&approval) {
                    self.sweeper.do_send(next);
                }
                self.feed.publish(FeedEvent::Pending(Arc::new(approval)));
            }
            Kind::Resolved => {
                if current {
                    self.count(None, approval.status);
                }
                self.metrics.do_send(Metric::ApprovalCreated);
                self.metrics.do_send(Metric::ApprovalEnded {
                    outcome: approval.status.as_str(),
                    seconds: 0.0,
                });
            }
            Kind::Ended => {
                // The span ends when its last holder (a notifier's final call) lets go.
                if let Some(span) = self.spans.remove(&approval.id) {
                    span.in_scope(|| {
                        tracing::info!(approval_id = %approval.id, request_id, status = %approval.status, "approval ended");
                    });
                }
                if current {
                    self.count(Some(Status::Pending), approval.status);
                    self.pending_changed(&approval.requested_by, false);
                }
                self.sweeper.do_send(crate::sweeper::Disarm {
                    id: approval.id,
                    deadline_ms: self.deadline_ms(&approval),
                });
                if self.waiters.wake(&approval) > 0 {
                    self.publish_waiters();
                }
                self.metrics.do_send(Metric::ApprovalEnded {
                    outcome: approval.status.as_str(),
                    seconds: approval.time_to_decision().map_or(0.0, |d| d.as_secs_f64()),
                });
                self.feed.publish(FeedEvent::Ended(Arc::new(approval)));
            }
        }
    }
}

impl Handler<Settle> for ApprovalRegistry {
    type Result = ();

    fn handle(&mut self, settle: Settle, ctx: &mut Context<Self>) {
        let _ = guarded(NAME, ctx, || {
            self.settle(settle);
            if self.recount_wanted {
                self.recount_when_settled();
            }
        });
    }
}
