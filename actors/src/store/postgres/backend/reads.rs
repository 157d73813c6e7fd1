//! The approval store's reads on PostgreSQL (and the retention pass's delete): single
//! statements, run through [`PgStore::run`] (bounded by its read deadline).

use std::collections::HashMap;

use super::approvals::{decode, status_of};
use super::{PgStore, client, db_error};
use crate::domain::{Approval, ApprovalId, AuditEvent, Grant, Status};
use crate::store::StoreError;
use crate::store::postgres::approvals as sql;

impl PgStore {
    /// Pending approvals whose deadline is at or before `before_ms`, soonest first.
    pub(super) fn due_ids(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<ApprovalId>, StoreError> {
        self.pending_ids_due(
            "SELECT id FROM approvals WHERE status = 0 AND expires_at_ms <= $1
             ORDER BY expires_at_ms LIMIT $2",
            before_ms,
            limit,
        )
    }

    /// Pending approvals whose next escalation step (`next_step_ms`) is due by `before_ms`.
    pub(super) fn due_step_ids(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<ApprovalId>, StoreError> {
        self.pending_ids_due(
            "SELECT id FROM approvals
             WHERE status = 0 AND next_step_ms IS NOT NULL AND next_step_ms <= $1
             ORDER BY next_step_ms LIMIT $2",
            before_ms,
            limit,
        )
    }

    /// The ids a `query` (`$1` = before, `$2` = limit) selects.
    fn pending_ids_due(
        &self,
        query: &'static str,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<ApprovalId>, StoreError> {
        let pool = self.pool();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(async move {
            let rows = client(&pool)
                .await?
                .query(query, &[&before_ms, &limit])
                .await
                .map_err(db_error)?;
            Ok(rows
                .iter()
                .filter_map(|row| ApprovalId::from_slice(row.get::<_, &[u8]>(0)))
                .collect())
        })
    }

    pub(super) fn idempotent_id(
        &self,
        agent: &str,
        key: &str,
    ) -> Result<Option<ApprovalId>, StoreError> {
        let pool = self.pool();
        let (agent, key) = (agent.to_string(), key.to_string());
        self.run(async move {
            let row = client(&pool)
                .await?
                .query_opt(
                    "SELECT id FROM approvals WHERE requested_by = $1 AND idempotency_key = $2",
                    &[&agent, &key],
                )
                .await
                .map_err(db_error)?;
            Ok(row.and_then(|row| ApprovalId::from_slice(row.get::<_, &[u8]>(0))))
        })
    }

    pub(super) fn list_page(
        &self,
        status: Option<Status>,
        before: Option<ApprovalId>,
        limit: usize,
    ) -> Result<Vec<Approval>, StoreError> {
        let pool = self.pool();
        let status = status.map(sql::status_code);
        let before = before.map(|id| id.to_bytes().to_vec());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(async move {
            let rows = client(&pool)
                .await?
                .query(
                    "SELECT record FROM approvals
                     WHERE ($1::smallint IS NULL OR status = $1)
                       AND ($2::bytea IS NULL OR id < $2)
                     ORDER BY id DESC LIMIT $3",
                    &[&status, &before, &limit],
                )
                .await
                .map_err(db_error)?;
            rows.iter().map(|row| decode(row.get(0))).collect()
        })
    }

    pub(super) fn counts(&self) -> Result<HashMap<Status, u64>, StoreError> {
        let pool = self.pool();
        self.run(async move {
            let rows = client(&pool)
                .await?
                .query(
                    "SELECT status, count(*) FROM approvals GROUP BY status",
                    &[],
                )
                .await
                .map_err(db_error)?;
            Ok(rows
                .iter()
                .filter_map(|row| {
                    let count: i64 = row.get(1);
                    Some((status_of(row.get(0))?, u64::try_from(count).unwrap_or(0)))
                })
                .collect())
        })
    }

    pub(super) fn oldest_pending(&self) -> Result<Option<i64>, StoreError> {
        let pool = self.pool();
        self.run(async move {
            let row = client(&pool)
                .await?
                .query_opt(
                    "SELECT created_at_ms FROM approvals WHERE status = 0 ORDER BY id LIMIT 1",
                    &[],
                )
                .await
                .map_err(db_error)?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    pub(super) fn visit_pending(&self, visit: &mut dyn FnMut(Approval)) -> Result<(), StoreError> {
        let mut after: Vec<u8> = Vec::new();
        loop {
            let pool = self.pool();
            let from = after.clone();
            let page: Vec<(Vec<u8>, Vec<u8>)> = self.run(async move {
                let rows = client(&pool)
                    .await?
                    .query(
                        "SELECT id, record FROM approvals WHERE status = 0 AND id > $1
                         ORDER BY id LIMIT 1000",
                        &[&from],
                    )
                    .await
                    .map_err(db_error)?;
                Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
            })?;
            let Some((last, _)) = page.last() else {
                return Ok(());
            };
            after = last.clone();
            for (_, record) in &page {
                visit(decode(record)?);
            }
        }
    }

    pub(super) fn remove_ended(
        &self,
        cutoff_ms: i64,
        limit: usize,
    ) -> Result<Vec<Status>, StoreError> {
        let pool = self.pool();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run_write(async move {
            let rows = client(&pool)
                .await?
                .query(
                    "WITH gone AS (
                         DELETE FROM approvals WHERE id IN (
                             SELECT id FROM approvals WHERE decided_at_ms < $1
                             ORDER BY decided_at_ms LIMIT $2)
                         RETURNING id, status),
                     e AS (DELETE FROM approval_events WHERE approval_id IN (SELECT id FROM gone)),
                     m AS (DELETE FROM telegram_messages WHERE approval_id IN (SELECT id FROM gone))
                     SELECT status FROM gone",
                    &[&cutoff_ms, &limit],
                )
                .await
                .map_err(db_error)?;
            Ok(rows
                .iter()
                .filter_map(|row| status_of(row.get(0)))
                .collect())
        })
    }

    pub(super) fn all_grants(&self) -> Result<Vec<Grant>, StoreError> {
        let pool = self.pool();
        self.run(async move {
            let rows = client(&pool)
                .await?
                .query("SELECT grant_json::text FROM grants", &[])
                .await
                .map_err(db_error)?;
            rows.iter()
                .map(|row| {
                    serde_json::from_str::<Grant>(row.get(0))
                        .map_err(|e| StoreError::Postgres(format!("unreadable grant: {e}")))
                })
                .collect()
        })
    }

    pub(super) fn history_of(&self, id: ApprovalId) -> Result<Vec<AuditEvent>, StoreError> {
        let pool = self.pool();
        self.run(async move {
            let rows = client(&pool)
                .await?
                .query(
                    "SELECT events::text FROM approval_events WHERE approval_id = $1 ORDER BY seq",
                    &[&id.to_bytes().as_slice()],
                )
                .await
                .map_err(db_error)?;
            let mut events = Vec::new();
            for row in rows {
                let batch: Vec<AuditEvent> = serde_json::from_str(row.get(0))
                    .map_err(|e| StoreError::Postgres(format!("unreadable history: {e}")))?;
                events.extend(batch);
            }
            Ok(events)
        })
    }
}
