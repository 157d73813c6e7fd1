//! The ApprovalRegistry's message handlers: thin shells that run the registry's own methods
//! inside the panic guard and turn their results into replies. Replies that wait for a commit
//! are plain futures (`ResponseFuture`), so they outlive a restart of this actor.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::prelude::*;
use futures_util::FutureExt;

use super::commit::answer;
use super::*;
use crate::supervision::{self, ActorHealth, HealthStatus, Ping, guarded};
use crate::sweeper::Expire;

/// How often the retention pass takes its next slice (more often while it has work).
const RETENTION_EVERY: Duration = Duration::from_secs(60);

impl Actor for ApprovalRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
        supervision::guarded_with(NAME, self, ctx, |act, ctx| {
            act.load();
            if act.store.shared() {
                super::remote::start(ctx);
            }
            if act.settings.retention.is_some() {
                supervision::run_later(ctx, NAME, Duration::ZERO, |act, _| act.retention_pass());
                supervision::run_interval(ctx, NAME, RETENTION_EVERY, |act, _| {
                    act.retention_pass()
                });
            }
        });
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
    type Result = ResponseFuture<Result<Created, RegistryError>>;

    fn handle(&mut self, msg: Create, ctx: &mut Context<Self>) -> Self::Result {
        self.create(msg.new, msg.request_id, ctx)
    }
}

impl Handler<Get> for ApprovalRegistry {
    type Result = ResponseFuture<Result<Approval, RegistryError>>;

    fn handle(&mut self, Get(id): Get, ctx: &mut Context<Self>) -> Self::Result {
        match guarded(NAME, ctx, || self.store.get(id)) {
            Ok(Ok(Some(approval))) => self.when_committed([id], Ok(approval)),
            Ok(Ok(None)) => answer(Err(RegistryError::NotFound(id))),
            Ok(Err(error)) => answer(Err(error.into())),
            Err(failed) => answer(Err(failed.into())),
        }
    }
}

impl Handler<List> for ApprovalRegistry {
    type Result = ResponseFuture<Result<Vec<Approval>, RegistryError>>;

    fn handle(&mut self, msg: List, ctx: &mut Context<Self>) -> Self::Result {
        match guarded(NAME, ctx, || {
            self.store.list(msg.status, msg.before, msg.limit)
        }) {
            Ok(Ok(page)) => {
                let ids: Vec<ApprovalId> = page.iter().map(|a| a.id).collect();
                self.when_committed(ids, Ok(page))
            }
            Ok(Err(error)) => answer(Err(error.into())),
            Err(failed) => answer(Err(failed.into())),
        }
    }
}

impl Handler<Decide> for ApprovalRegistry {
    type Result = ResponseFuture<Result<Approval, RegistryError>>;

    fn handle(&mut self, msg: Decide, ctx: &mut Context<Self>) -> Self::Result {
        self.decide(msg.id, msg.decision, msg.request_id, msg.grant_for, ctx)
    }
}

impl Handler<Reconfigure> for ApprovalRegistry {
    type Result = ();

    fn handle(&mut self, Reconfigure(settings): Reconfigure, _: &mut Context<Self>) {
        tracing::info!(
            actor = NAME,
            rules = settings.policy.len(),
            "registry reconfigured"
        );
        self.settings = settings;
    }
}

impl Handler<Backup> for ApprovalRegistry {
    type Result = ResponseFuture<Result<crate::store::backup::BackupStats, RegistryError>>;

    fn handle(&mut self, Backup(path): Backup, _: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        async move {
            // A large store takes a while to write: never on the registry's thread.
            match tokio::task::spawn_blocking(move || store.backup(&path)).await {
                Ok(result) => result.map_err(RegistryError::from),
                Err(_) => Err(RegistryError::Store("the backup task failed".into())),
            }
        }
        .boxed_local()
    }
}

impl Handler<History> for ApprovalRegistry {
    type Result = ResponseFuture<Result<Vec<crate::domain::AuditEvent>, RegistryError>>;

    fn handle(&mut self, History(id): History, ctx: &mut Context<Self>) -> Self::Result {
        let read = guarded(NAME, ctx, || {
            let Some(approval) = self.store.get(id)? else {
                return Ok::<_, crate::store::StoreError>(None);
            };
            let stored = self.store.events(id)?;
            Ok(Some(super::verdict::history(&approval, stored)))
        });
        match read {
            Ok(Ok(Some(events))) => self.when_committed([id], Ok(events)),
            Ok(Ok(None)) => answer(Err(RegistryError::NotFound(id))),
            Ok(Err(error)) => answer(Err(RegistryError::from(error))),
            Err(failed) => answer(Err(failed.into())),
        }
    }
}

impl Handler<ReadMeta> for ApprovalRegistry {
    type Result = Result<Option<Vec<u8>>, RegistryError>;

    fn handle(&mut self, ReadMeta(key): ReadMeta, ctx: &mut Context<Self>) -> Self::Result {
        guarded(NAME, ctx, || self.queues.meta_get(&key))?.map_err(RegistryError::from)
    }
}

impl Handler<InitMeta> for ApprovalRegistry {
    type Result = Result<Vec<u8>, RegistryError>;

    fn handle(&mut self, msg: InitMeta, ctx: &mut Context<Self>) -> Self::Result {
        guarded(NAME, ctx, || self.queues.meta_init(&msg.key, &msg.value))?
            .map_err(RegistryError::from)
    }
}

impl Handler<ListGrants> for ApprovalRegistry {
    type Result = MessageResult<ListGrants>;

    fn handle(&mut self, _: ListGrants, _: &mut Context<Self>) -> Self::Result {
        let now_ms = self.clock.now_ms();
        let mut live: Vec<crate::domain::Grant> = self
            .grants
            .values()
            .filter(|g| g.expires_at_ms > now_ms)
            .cloned()
            .collect();
        live.sort_by_key(|g| g.expires_at_ms);
        MessageResult(live)
    }
}

impl Handler<RevokeGrant> for ApprovalRegistry {
    type Result = ResponseFuture<Result<Option<crate::domain::Grant>, RegistryError>>;

    fn handle(&mut self, RevokeGrant(id): RevokeGrant, ctx: &mut Context<Self>) -> Self::Result {
        let removed = guarded(NAME, ctx, || {
            let grant = self.grants.remove(&id)?;
            self.store.remove_grant(&id);
            Some((grant, self.store.commit()))
        });
        let me = ctx.address();
        match removed {
            Ok(Some((grant, commit))) => async move {
                if let Err(error) = commit.wait().await {
                    // Not revoked: live again, in memory and in the store, before the 503, so
                    // a retry finds it and a restart does not disagree with what was answered.
                    let _ = me.send(RestoreGrant(grant)).await;
                    return Err(error.into());
                }
                tracing::info!(actor = NAME, grant_id = %grant.id, "session grant revoked");
                Ok(Some(grant))
            }
            .boxed_local(),
            Ok(None) => answer(Ok(None)),
            Err(failed) => answer(Err(failed.into())),
        }
    }
}

/// A revoked grant whose removal could not be committed: live again.
#[derive(Message)]
#[rtype(result = "()")]
struct RestoreGrant(crate::domain::Grant);

impl Handler<RestoreGrant> for ApprovalRegistry {
    type Result = ();

    fn handle(&mut self, RestoreGrant(grant): RestoreGrant, ctx: &mut Context<Self>) {
        let _ = guarded(NAME, ctx, || {
            if let Err(error) = self.store.restore_grant(&grant) {
                tracing::error!(actor = NAME, grant_id = %grant.id, %error, "cannot put back a grant whose revocation failed");
            }
            tracing::warn!(actor = NAME, grant_id = %grant.id, "revoking a session grant failed to commit; the grant stays live");
            self.grants.insert(grant.id.clone(), grant);
        });
    }
}

impl Handler<Expire> for ApprovalRegistry {
    /// `Err` tells the sweeper to keep the deadline and try again.
    type Result = ResponseFuture<Result<(), RegistryError>>;

    fn handle(&mut self, msg: Expire, ctx: &mut Context<Self>) -> Self::Result {
        let decision = match guarded(NAME, ctx, || self.store.get(msg.id)) {
            // Armed before the deadline: an escalation step.
            Ok(Ok(Some(approval)))
                if approval.status == Status::Pending
                    && msg.deadline_ms < self.deadline_ms(&approval) =>
            {
                return self.escalate(approval, msg.deadline_ms, ctx);
            }
            Ok(Ok(Some(approval))) if approval.status == Status::Pending => {
                self.decision_for_timeout(&approval, msg.deadline_ms)
            }
            // Already ended or gone: nothing to do, and the sweeper may drop the deadline.
            Ok(Ok(_)) => return answer(Ok(())),
            Ok(Err(error)) => return answer(Err(error.into())),
            Err(failed) => return answer(Err(failed.into())),
        };
        // No request caused a timeout: its correlation id names the sweeper's deadline instead.
        let cause = Some(format!("timeout-{}", msg.id));
        let decided = self.decide(msg.id, decision, cause, None, ctx);
        async move {
            match decided.await {
                Ok(_) | Err(RegistryError::Conflict(_)) | Err(RegistryError::NotFound(_)) => Ok(()),
                Err(error) => Err(error),
            }
        }
        .boxed_local()
    }
}

impl Handler<Wait> for ApprovalRegistry {
    type Result = ResponseFuture<Result<WaitReply, RegistryError>>;

    fn handle(&mut self, Wait(id): Wait, ctx: &mut Context<Self>) -> Self::Result {
        let approval = match guarded(NAME, ctx, || self.store.get(id)) {
            Ok(Ok(Some(approval))) => approval,
            Ok(Ok(None)) => return answer(Err(RegistryError::NotFound(id))),
            Ok(Err(error)) => return answer(Err(error.into())),
            Err(failed) => return answer(Err(failed.into())),
        };
        if approval.status.is_terminal() {
            return self.when_committed([id], Ok(WaitReply::Ready(Box::new(approval))));
        }
        let (waiter, receiver) = match self.waiters.add(
            id,
            &approval.requested_by,
            self.settings.max_waiters,
            self.settings.max_waiters_per_agent,
        ) {
            Ok(registered) => registered,
            Err(super::waiters::Full::All(limit)) => {
                return answer(Err(RegistryError::TooManyWaiters { limit }));
            }
            Err(super::waiters::Full::Agent(limit)) => {
                return answer(Err(RegistryError::TooManyWaitersForAgent { limit }));
            }
        };
        self.publish_waiters();
        answer(Ok(WaitReply::Pending(WaitTicket {
            id,
            current: Box::new(approval),
            waiter,
            receiver,
        })))
    }
}

impl Handler<Unwait> for ApprovalRegistry {
    type Result = ();

    fn handle(&mut self, msg: Unwait, ctx: &mut Context<Self>) {
        let _ = guarded(NAME, ctx, || {
            if self.waiters.remove(msg.id, msg.waiter) {
                self.publish_waiters();
            }
        });
    }
}

impl Handler<Abandon> for ApprovalRegistry {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Abandon, ctx: &mut Context<Self>) -> Self::Result {
        let still_held = guarded(NAME, ctx, || {
            if let Some(unwait) = msg.unwait
                && self.waiters.remove(unwait.id, unwait.waiter)
            {
                self.publish_waiters();
            }
            self.waiters.anyone_waits_for(msg.id)
        });
        if still_held.unwrap_or(true) {
            return Box::pin(async {});
        }
        let decided = self.decide(msg.id, msg.decision, None, None, ctx);
        Box::pin(async move {
            // A decision that won first, or a store failure (the deadline still ends it), is
            // nothing the agent that hung up can be told.
            let _ = decided.await;
        })
    }
}

impl Handler<DeadLetters> for ApprovalRegistry {
    type Result = Result<Vec<crate::store::DeadLetter>, RegistryError>;

    fn handle(&mut self, msg: DeadLetters, ctx: &mut Context<Self>) -> Self::Result {
        let queues = self.queues.clone();
        Ok(guarded(NAME, ctx, || {
            queues.dead_letters(msg.after, msg.limit)
        })??)
    }
}

impl Handler<Requeue> for ApprovalRegistry {
    type Result = ResponseFuture<Result<Option<(crate::store::Channel, u64)>, RegistryError>>;

    fn handle(&mut self, Requeue(id): Requeue, ctx: &mut Context<Self>) -> Self::Result {
        let queues = self.queues.clone();
        let requeued = match guarded(NAME, ctx, || queues.requeue(id)) {
            Ok(Ok(Some(requeued))) => requeued,
            Ok(Ok(None)) => return answer(Ok(None)),
            Ok(Err(error)) => return answer(Err(error.into())),
            Err(failed) => return answer(Err(failed.into())),
        };
        tracing::info!(
            actor = NAME,
            dead_letter = id,
            channel = requeued.0.as_str(),
            "dead letter requeued"
        );
        // The requeue wrote straight to the queue trees: a full commit makes it durable.
        let commit = queues.commit();
        let notifiers = self.notifiers.clone();
        async move {
            if let Err(error) = commit.wait().await {
                // The entry is back in its queue in sled; it is durable, and its notifier is
                // woken, once the store commits again. The operator hears of the failure now.
                let durable = queues.until_durable();
                actix::spawn(async move {
                    durable.await;
                    notifiers.wake(&[requeued], true, None, None);
                });
                return Err(error.into());
            }
            notifiers.wake(&[requeued], true, None, None);
            Ok(Some(requeued))
        }
        .boxed_local()
    }
}

impl Handler<RequeueChannel> for ApprovalRegistry {
    type Result = ResponseFuture<Result<usize, RegistryError>>;

    fn handle(
        &mut self,
        RequeueChannel(channel): RequeueChannel,
        _: &mut Context<Self>,
    ) -> Self::Result {
        let queues = self.queues.clone();
        let notifiers = self.notifiers.clone();
        async move {
            // Thousands of sled writes after a long outage: never on the registry's thread.
            let walker = queues.clone();
            let requeued = tokio::task::spawn_blocking(move || walker.requeue_channel(channel))
                .await
                .map_err(|_| RegistryError::Store("the requeue task failed".into()))??;
            tracing::info!(
                actor = NAME,
                channel = channel.as_str(),
                count = requeued.len(),
                "dead letters requeued"
            );
            let count = requeued.len();
            // The requeues wrote straight to the queue trees: a full commit makes them durable.
            if let Err(error) = queues.commit().wait().await {
                // Back in their queue in sled: woken once the store commits again.
                let durable = queues.until_durable();
                actix::spawn(async move {
                    durable.await;
                    notifiers.wake(&requeued, true, None, None);
                });
                return Err(error.into());
            }
            notifiers.wake(&requeued, true, None, None);
            Ok(count)
        }
        .boxed_local()
    }
}

impl Handler<FailCommits> for ApprovalRegistry {
    type Result = ();

    fn handle(&mut self, FailCommits { count, fault }: FailCommits, _: &mut Context<Self>) {
        tracing::warn!(
            actor = NAME,
            count,
            ?fault,
            "fault injection: the next store commits will fail"
        );
        self.store.inject_fault(count, fault);
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
        let queues = self.queues.clone();
        MessageResult(RegistryStats {
            counts,
            oldest_pending_ms: self.store.oldest_pending_ms().ok().flatten(),
            oldest_queued_ms: crate::store::Channel::ALL
                .into_iter()
                .map(|channel| (channel, queues.oldest_ms(channel).ok().flatten()))
                .collect(),
            waiters: self.waiters.len(),
            dead_letters: queues.dead_letter_count(),
            store: self.store.diagnostics(),
        })
    }
}

impl Handler<Ping> for ApprovalRegistry {
    type Result = MessageResult<Ping>;

    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Self::Result {
        let committing = self.store.committing();
        if !committing {
            // Probe the store with a real write, so health recovers once the disk does even
            // if nothing is written meanwhile; the probe's outcome shows on the next ping.
            let probe = self.store.probe();
            actix::spawn(async move {
                let _ = probe.wait().await;
            });
        }
        let status = if self.load_error.is_some() || !committing {
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
                "store_committing": committing,
                // A commit under way for long is a disk that hangs (`store.commit_stall`).
                "store_commit_running_ms": self.store.commit_running_ms(),
                "dead_letters": self.queues.dead_letter_count(),
                "database": self.store.health(),
            }),
        })
    }
}

crate::supervision::crash_handler!(ApprovalRegistry, NAME);
