//! The ApprovalRegistry's message handlers: thin shells that run the registry's own methods
//! inside the panic guard and turn their results into replies.

use std::collections::BTreeMap;

use actix::prelude::*;

use super::*;
use crate::domain::{Actor as DecidedBy, Decision, Outcome, Status};
use crate::supervision::{ActorHealth, HealthStatus, Ping, guarded};
use crate::sweeper::Expire;

impl Actor for ApprovalRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
        self.load();
    }
}

impl Supervised for ApprovalRegistry {
    fn restarting(&mut self, _: &mut Context<Self>) {
        // Waiters are dropped: their long polls see the channel close and re-read the state.
        self.waiters.clear();
        self.publish_waiters();
        self.restarts.record(NAME);
        self.metrics.do_send(Metric::ActorRestarted { actor: NAME });
    }
}

impl Handler<Create> for ApprovalRegistry {
    type Result = Reply<Created>;

    fn handle(&mut self, msg: Create, ctx: &mut Context<Self>) -> Self::Result {
        let request_id = msg.request_id.clone();
        let (created, commit) = match guarded(NAME, ctx, || self.prepare_create(msg)) {
            Ok(Ok(prepared)) => prepared,
            Ok(Err(error)) => return ready(Err(error)),
            Err(failed) => return ready(Err(failed.into())),
        };
        let fresh = created.created;
        if fresh {
            tracing::info!(
                approval_id = %created.approval.id,
                request_id = request_id.as_deref().unwrap_or("-"),
                tool = %created.approval.tool_name,
                session = %created.approval.session_id,
                "approval created"
            );
        }
        let event = fresh.then_some(Event::Created);
        let approval = created.approval;
        let finish = self.after_commit(approval, commit, event, request_id);
        Box::pin(finish.map(move |result, _, _| {
            result.map(|approval| Created {
                approval,
                created: fresh,
            })
        }))
    }
}

impl Handler<Get> for ApprovalRegistry {
    type Result = Reply<Approval>;

    fn handle(&mut self, Get(id): Get, ctx: &mut Context<Self>) -> Self::Result {
        match guarded(NAME, ctx, || self.store.get(id)) {
            Ok(Ok(Some(approval))) => self.read(approval),
            Ok(Ok(None)) => ready(Err(RegistryError::NotFound(id))),
            Ok(Err(error)) => ready(Err(error.into())),
            Err(failed) => ready(Err(failed.into())),
        }
    }
}

impl Handler<List> for ApprovalRegistry {
    type Result = Result<Vec<Approval>, RegistryError>;

    fn handle(&mut self, msg: List, ctx: &mut Context<Self>) -> Self::Result {
        Ok(guarded(NAME, ctx, || {
            self.store.list(msg.status, msg.before, msg.limit)
        })??)
    }
}

impl Handler<Decide> for ApprovalRegistry {
    type Result = Reply<Approval>;

    fn handle(&mut self, msg: Decide, ctx: &mut Context<Self>) -> Self::Result {
        self.decide(msg, ctx)
    }
}

impl Handler<Expire> for ApprovalRegistry {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Expire, ctx: &mut Context<Self>) -> Self::Result {
        let comment = match self.store.get(msg.id) {
            Ok(Some(approval)) if approval.status == Status::Pending => {
                self.timeout_comment(&approval, msg.deadline_ms)
            }
            // Already ended or gone: nothing to do, and the sweeper may drop the deadline.
            _ => return Box::pin(fut::ready(())),
        };
        let decide = Decide {
            id: msg.id,
            decision: Decision {
                outcome: Outcome::Timeout,
                actor: DecidedBy::System,
                comment: Some(comment),
            },
            request_id: None,
        };
        Box::pin(self.decide(decide, ctx).map(|_, _, _| ()))
    }
}

impl Handler<Wait> for ApprovalRegistry {
    type Result = Reply<WaitReply>;

    fn handle(&mut self, Wait(id): Wait, ctx: &mut Context<Self>) -> Self::Result {
        let approval = match guarded(NAME, ctx, || self.store.get(id)) {
            Ok(Ok(Some(approval))) => approval,
            Ok(Ok(None)) => return ready(Err(RegistryError::NotFound(id))),
            Ok(Err(error)) => return ready(Err(error.into())),
            Err(failed) => return ready(Err(failed.into())),
        };
        if approval.status.is_terminal() {
            return Box::pin(
                self.read(approval).map(|result, _, _| {
                    result.map(|approval| WaitReply::Ready(Box::new(approval)))
                }),
            );
        }
        let limit = self.settings.max_waiters;
        let Some((waiter, receiver)) = self.waiters.add(id, limit) else {
            return ready(Err(RegistryError::TooManyWaiters { limit }));
        };
        self.publish_waiters();
        ready(Ok(WaitReply::Pending(WaitTicket {
            id,
            waiter,
            receiver,
        })))
    }
}

impl Handler<Unwait> for ApprovalRegistry {
    type Result = ();

    fn handle(&mut self, msg: Unwait, _: &mut Context<Self>) {
        if self.waiters.remove(msg.id, msg.waiter) {
            self.publish_waiters();
        }
    }
}

impl Handler<AttachMessage> for ApprovalRegistry {
    type Result = Reply<Approval>;

    fn handle(&mut self, msg: AttachMessage, ctx: &mut Context<Self>) -> Self::Result {
        let prepared = guarded(
            NAME,
            ctx,
            || -> Result<(Approval, Commit), RegistryError> {
                let mut approval = self
                    .store
                    .get(msg.id)?
                    .ok_or(RegistryError::NotFound(msg.id))?;
                if !approval.telegram_messages.contains(&msg.message) {
                    approval.telegram_messages.push(msg.message);
                }
                let commit = self.write(&approval)?;
                Ok((approval, commit))
            },
        );
        match prepared {
            Ok(Ok((approval, commit))) => self.after_commit(approval, commit, None, None),
            Ok(Err(error)) => ready(Err(error)),
            Err(failed) => ready(Err(failed.into())),
        }
    }
}

impl Handler<Unannounced> for ApprovalRegistry {
    type Result = Result<Vec<Approval>, RegistryError>;

    fn handle(&mut self, _: Unannounced, ctx: &mut Context<Self>) -> Self::Result {
        let mut found = Vec::new();
        guarded(NAME, ctx, || {
            self.store.for_each(&mut |approval| {
                if approval.status == Status::Pending && approval.telegram_messages.is_empty() {
                    found.push(approval);
                }
            })
        })??;
        Ok(found)
    }
}

impl Handler<Stats> for ApprovalRegistry {
    type Result = MessageResult<Stats>;

    fn handle(&mut self, _: Stats, _: &mut Context<Self>) -> Self::Result {
        let counts: BTreeMap<&'static str, u64> = Status::ALL
            .into_iter()
            .map(|status| {
                (
                    status.as_str(),
                    self.counts.get(&status).copied().unwrap_or(0),
                )
            })
            .collect();
        MessageResult(RegistryStats {
            counts,
            waiters: self.waiters.len(),
            store: self.store.diagnostics(),
        })
    }
}

impl Handler<Ping> for ApprovalRegistry {
    type Result = MessageResult<Ping>;

    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Self::Result {
        let status = if self.load_error.is_some() {
            HealthStatus::Unhealthy
        } else {
            HealthStatus::Healthy
        };
        MessageResult(ActorHealth {
            actor: NAME,
            status,
            restarts: self.restarts.count(),
            detail: serde_json::json!({
                "pending": self.counts.get(&Status::Pending).copied().unwrap_or(0),
                "waiters": self.waiters.len(),
                "load_error": self.load_error,
            }),
        })
    }
}

crate::supervision::crash_handler!(ApprovalRegistry, NAME);
