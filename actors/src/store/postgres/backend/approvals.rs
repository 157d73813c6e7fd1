//! [`ApprovalStore`] on PostgreSQL: a change is one transaction (`postgres/approvals.rs` holds
//! its SQL), spawned on the database runtime; reads are single statements. Nothing is staged in
//! memory, so there is nothing to revert: a transaction that failed left nothing behind, and
//! one that lost its race wrote nothing (`Landed::Lost`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::creates::CreateJob;
use super::{PgStore, client, db_error, note};
use crate::domain::{Approval, ApprovalId, AuditEvent, Grant, Status};
use crate::store::backup::BackupStats;
use crate::store::postgres::approvals::{self as sql, Decided, Notice};
use crate::store::{
    ApprovalStore, Change, Commit, CommitFault, Landed, Landing, QueueEntry, StoreDiagnostics,
    StoreError, Written, codec, queue,
};

pub(super) fn status_of(code: i16) -> Option<Status> {
    Status::ALL
        .into_iter()
        .find(|s| i16::from(crate::store::status_code(*s)) == code)
}

pub(super) fn decode(record: &[u8]) -> Result<Approval, StoreError> {
    codec::decode(record).map_err(|source| StoreError::Corrupt {
        key: "approval".into(),
        source,
    })
}

/// A commit that has already resolved (PostgreSQL commits each change in its transaction).
pub(super) fn resolved(result: Result<(), String>) -> Commit {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let _ = tx.send(result.map_err(|e| Arc::new(std::io::Error::other(e))));
    Commit(rx)
}

impl PgStore {
    /// The registry's side of a change under way on the database runtime.
    fn landing(rx: tokio::sync::oneshot::Receiver<Result<Landed, StoreError>>) -> Landing {
        Landing::new(async move {
            rx.await.unwrap_or_else(|_| {
                Err(StoreError::Postgres("the database runtime stopped".into()))
            })
        })
    }

    /// The notices a change queues: one entry per channel, encoded once.
    fn notices(change: &Change<'_>) -> Result<(Vec<Notice>, Option<Arc<QueueEntry>>), StoreError> {
        let Some(event) = change.event else {
            return Ok((Vec::new(), None));
        };
        let entry = QueueEntry {
            event,
            approval: change.approval.clone(),
            request_id: change.request_id.map(str::to_string),
            only: None,
        };
        let bytes = queue::encode(&entry)?;
        let notices = change
            .channels
            .iter()
            .map(|channel| Notice {
                channel: i16::from(channel.byte()),
                entry: bytes.clone(),
            })
            .collect();
        Ok((notices, Some(Arc::new(entry))))
    }
}

/// The outbox rows a change wrote, as the registry wakes notifiers with them.
pub(super) fn channels(
    queued: sql::Queued,
) -> Result<Vec<(crate::store::Channel, u64)>, StoreError> {
    queued
        .into_iter()
        .map(|(code, seq)| {
            let channel = u8::try_from(code)
                .ok()
                .and_then(crate::store::Channel::from_byte)
                .ok_or_else(|| StoreError::Postgres(format!("unknown channel {code}")))?;
            Ok((channel, u64::try_from(seq).unwrap_or(0)))
        })
        .collect()
}

impl ApprovalStore for PgStore {
    fn write(&self, change: &Change<'_>) -> Result<(Written, Landing), StoreError> {
        let (notices, entry) = Self::notices(change)?;
        let written = Written {
            entry,
            ..Written::default()
        };
        if self.inner.faults.load(Ordering::Relaxed) > 0 {
            self.inner.faults.fetch_sub(1, Ordering::Relaxed);
            let landing = Landing::new(async {
                Err(StoreError::Flush(Arc::new(std::io::Error::other(
                    "injected commit fault",
                ))))
            });
            return Ok((written, landing));
        }
        let approval = change.approval.clone();
        let events = change.events.to_vec();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let started = std::time::Instant::now();
        let Some(previous) = change.previous.cloned() else {
            // A create joins the next group commit (`creates.rs`).
            let job = CreateJob {
                approval,
                events,
                notices,
                started,
                reply: tx,
            };
            if let Err(refused) = self.inner.creates.send(job) {
                let _ = refused.0.reply.send(Err(StoreError::Postgres(
                    "the database runtime stopped".into(),
                )));
            }
            return Ok((written, Self::landing(rx)));
        };
        let pool = self.pool();
        let grant = change.grant.cloned();
        let origin = self.inner.settings.instance.clone();
        let inner = Arc::clone(&self.inner);
        self.inner.handle.spawn(async move {
            let result = async {
                let mut client = client(&pool).await?;
                let decided = sql::end_change(
                    &mut client,
                    &approval,
                    Some(&previous),
                    &events,
                    &notices,
                    grant.as_ref(),
                    &origin,
                )
                .await
                .map_err(db_error)?;
                Ok(match decided {
                    (Decided::Won(_), queued) => Landed::Durable(channels(queued)?),
                    (Decided::AlreadyEnded(current), _) => Landed::Lost(Box::new(current)),
                    (Decided::Missing, _) => Landed::Lost(Box::new(approval)),
                })
            }
            .await;
            note(&inner, &result, started.elapsed());
            super::timed(&inner, started);
            let _ = tx.send(result);
        });
        Ok((written, Self::landing(rx)))
    }
    /// Nothing to undo: a failed transaction left nothing behind.
    fn revert(&self, _: &Change<'_>, _: &Written) -> Result<(), StoreError> {
        Ok(())
    }

    fn due(&self, before_ms: i64, limit: usize) -> Result<Vec<ApprovalId>, StoreError> {
        self.due_ids(before_ms, limit)
    }

    fn due_steps(&self, before_ms: i64, limit: usize) -> Result<Vec<ApprovalId>, StoreError> {
        self.due_step_ids(before_ms, limit)
    }

    fn shared(&self) -> bool {
        true
    }

    fn clock(&self) -> crate::clock::Clock {
        self.inner.clock.clone()
    }

    fn health(&self) -> Option<serde_json::Value> {
        let status = self.inner.pool.status();
        Some(serde_json::json!({
            "backend": "postgres",
            "reachable": self.committing(),
            "pool": {
                "size": status.size,
                "available": status.available,
                "waiting": status.waiting,
                "max": status.max_size,
            },
            "failures": self.inner.failures.load(Ordering::Relaxed),
            "last_error": self.inner.last_error.lock().ok().and_then(|e| e.clone()),
            "telegram_poller": self.leader_report(),
            "clock_offset_ms": self.inner.clock.offset_ms(),
        }))
    }

    fn get(&self, id: ApprovalId) -> Result<Option<Approval>, StoreError> {
        let pool = self.pool();
        self.run(async move {
            let client = client(&pool).await?;
            sql::read(&client, id).await.map_err(db_error)
        })
    }

    fn find_idempotent(&self, agent: &str, key: &str) -> Result<Option<ApprovalId>, StoreError> {
        self.idempotent_id(agent, key)
    }

    fn list(
        &self,
        status: Option<Status>,
        before: Option<ApprovalId>,
        limit: usize,
    ) -> Result<Vec<Approval>, StoreError> {
        self.list_page(status, before, limit)
    }

    fn count_by_status(&self) -> Result<HashMap<Status, u64>, StoreError> {
        self.counts()
    }

    fn oldest_pending_ms(&self) -> Result<Option<i64>, StoreError> {
        self.oldest_pending()
    }

    fn for_each_pending(&self, visit: &mut dyn FnMut(Approval)) -> Result<(), StoreError> {
        self.visit_pending(visit)
    }

    fn remove_ended_before(&self, cutoff_ms: i64, limit: usize) -> Result<Vec<Status>, StoreError> {
        self.remove_ended(cutoff_ms, limit)
    }

    /// Every change committed in its own transaction: nothing waits here.
    fn commit(&self) -> Commit {
        resolved(Ok(()))
    }

    /// A round trip, in the background: the health ping that asks for it never waits on a
    /// database that does not answer.
    fn probe(&self) -> Commit {
        let pool = self.pool();
        let inner = Arc::clone(&self.inner);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner.handle.spawn(async move {
            let started = std::time::Instant::now();
            let probed = super::round_trip(pool).await;
            note(&inner, &probed, started.elapsed());
            let _ = tx.send(probed.map_err(|e| Arc::new(std::io::Error::other(e.to_string()))));
        });
        Commit(rx)
    }

    fn diagnostics(&self) -> StoreDiagnostics {
        let status = self.inner.pool.status();
        let pool = self.pool();
        let size = self.run(async move {
            let row = client(&pool)
                .await?
                .query_one("SELECT pg_database_size(current_database())", &[])
                .await
                .map_err(db_error)?;
            Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
        });
        StoreDiagnostics {
            path: PathBuf::from("postgres"),
            size_on_disk: size.unwrap_or(0),
            last_flush_ms: 0,
            committing: self.committing(),
            commit_failures: self.inner.failures.load(Ordering::Relaxed),
            last_sync_us: 0,
            commits: Default::default(),
            commit_running_ms: None,
            dead_letters: 0,
            queue_entries_unspilled: 0,
            replayed: Default::default(),
            postgres: Some(serde_json::json!({
                "pool_size": status.size,
                "pool_available": status.available,
                "pool_waiting": status.waiting,
                "pool_max": status.max_size,
                "last_error": self.inner.last_error.lock().ok().and_then(|e| e.clone()),
                "telegram_poller": self.leader_report(),
            })),
            database: Some(crate::store::DatabaseStats {
                reachable: self.committing(),
                pool_busy: status.size.saturating_sub(status.available),
                pool_idle: status.available,
                pool_waiting: status.waiting,
                statements: self.inner.statements.load(Ordering::Relaxed),
                statement_seconds: self.inner.statement_us.load(Ordering::Relaxed) as f64 / 1e6,
                notify_lag_seconds: self.inner.notify_lag_us.load(Ordering::Relaxed) as f64 / 1e6,
                clock_offset_seconds: self.inner.clock.offset_ms() as f64 / 1e3,
                leader: self.inner.leading.load(Ordering::Relaxed),
            }),
        }
    }

    fn grants(&self) -> Result<Vec<Grant>, StoreError> {
        self.all_grants()
    }

    fn remove_grant(&self, id: &str) {
        let pool = self.pool();
        let id = id.to_string();
        let removed = self.run_write(async move {
            client(&pool)
                .await?
                .execute("DELETE FROM grants WHERE id = $1", &[&id])
                .await
                .map_err(db_error)?;
            Ok(())
        });
        if let Err(error) = removed {
            tracing::error!(%error, "cannot remove a session grant");
        }
    }

    fn restore_grant(&self, grant: &Grant) -> Result<(), StoreError> {
        let pool = self.pool();
        let grant = grant.clone();
        self.run_write(async move {
            let json = serde_json::to_string(&grant)
                .map_err(|e| StoreError::Postgres(format!("cannot encode a grant: {e}")))?;
            let json = crate::store::postgres::jsonb_text(&json).into_owned();
            client(&pool)
                .await?
                .execute(
                    "INSERT INTO grants (id, grant_json, expires_at_ms)
                     VALUES ($1, ($2::text)::jsonb, $3) ON CONFLICT (id) DO NOTHING",
                    &[&grant.id, &json, &grant.expires_at_ms],
                )
                .await
                .map_err(db_error)?;
            Ok(())
        })
    }

    fn events(&self, id: ApprovalId) -> Result<Vec<AuditEvent>, StoreError> {
        self.history_of(id)
    }

    fn committing(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    fn commit_running_ms(&self) -> Option<u64> {
        None
    }

    fn inject_fault(&self, count: u32, _fault: CommitFault) {
        self.inner.faults.store(count, Ordering::Relaxed);
    }

    fn backup(&self, path: &Path) -> Result<BackupStats, StoreError> {
        let pool = self.pool();
        let path = path.to_path_buf();
        // A large store's export takes a while; it runs on a blocking task, not an actor.
        self.run_within(std::time::Duration::from_secs(3600), async move {
            let mut client = client(&pool).await?;
            super::super::export::export_backup(&mut client, &path)
                .await
                .map_err(db_error)
        })
    }
}
