//! The SQL of a group of creates: several new approvals, their history and their outbox rows
//! in one statement, so one round trip and one commit (one WAL flush) for the whole group.
//!
//! Owns that statement only. What makes a group (who waits, how many) is the backend's
//! business (`backend/creates.rs`); a single create and an idempotent repeat stay
//! [`create_queued`](super::approvals::create_queued)'s.

use std::collections::HashSet;

use super::approvals::{Notice, PgApprovalError, Queued, status_code};
use super::jsonb_text;
use crate::domain::{Approval, AuditEvent};

/// One create of a group: the new approval, its history entries and the notices it queues.
pub struct NewApproval<'a> {
    pub approval: &'a Approval,
    pub events: &'a [AuditEvent],
    pub notices: &'a [Notice],
}

/// The statement: the same data-modifying CTEs as a single create, each over arrays. Rows
/// whose idempotency key is taken are skipped (`DO NOTHING`), and so are their history and
/// outbox rows; the outbox rows are inserted in the notices' order, so their sequence numbers
/// follow it.
const CREATE_MANY: &str = "
WITH a AS (
    INSERT INTO approvals (id, status, requested_by, agent, session_id, tool_name, tool_input,
        idempotency_key, created_at_ms, expires_at_ms, record, decided_at_ms, next_step_ms)
    SELECT r.id, r.status, r.requested_by, r.agent, r.session_id, r.tool_name,
        r.tool_input::jsonb, r.idempotency_key, r.created_at_ms, r.expires_at_ms, r.record,
        r.decided_at_ms, r.next_step_ms
    FROM unnest($1::bytea[], $2::smallint[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::int8[], $10::int8[], $11::bytea[], $12::int8[],
            $13::int8[])
        WITH ORDINALITY AS r(id, status, requested_by, agent, session_id, tool_name,
            tool_input, idempotency_key, created_at_ms, expires_at_ms, record, decided_at_ms,
            next_step_ms, n)
    ORDER BY r.n
    ON CONFLICT (requested_by, idempotency_key) WHERE idempotency_key IS NOT NULL
    DO NOTHING
    RETURNING id),
e AS (
    INSERT INTO approval_events (approval_id, at_ms, events)
    SELECT v.id, v.at_ms, v.events::jsonb
    FROM unnest($14::bytea[], $15::int8[], $16::text[]) WITH ORDINALITY AS v(id, at_ms, events, n)
    WHERE v.id IN (SELECT id FROM a)
    ORDER BY v.n),
o AS (
    INSERT INTO outbox (channel, entry)
    SELECT q.channel, q.entry
    FROM unnest($17::bytea[], $18::smallint[], $19::bytea[])
        WITH ORDINALITY AS q(id, channel, entry, n)
    WHERE q.id IN (SELECT id FROM a)
    ORDER BY q.n
    RETURNING channel, seq)
SELECT coalesce((SELECT array_agg(id) FROM a), '{}'),
       coalesce((SELECT array_agg(seq ORDER BY seq) FROM o), '{}')";

/// The group's parameters, column by column.
#[derive(Default)]
struct Columns<'a> {
    ids: Vec<Vec<u8>>,
    statuses: Vec<i16>,
    requested_by: Vec<&'a str>,
    agents: Vec<&'a str>,
    sessions: Vec<&'a str>,
    tools: Vec<&'a str>,
    inputs: Vec<std::borrow::Cow<'a, str>>,
    keys: Vec<Option<&'a str>>,
    created_ms: Vec<i64>,
    expires_ms: Vec<i64>,
    records: Vec<Vec<u8>>,
    decided_ms: Vec<Option<i64>>,
    step_ms: Vec<Option<i64>>,
    event_ids: Vec<Vec<u8>>,
    event_at_ms: Vec<i64>,
    event_json: Vec<String>,
    notice_ids: Vec<Vec<u8>>,
    notice_channels: Vec<i16>,
    notice_entries: Vec<&'a [u8]>,
}

impl<'a> Columns<'a> {
    fn push(&mut self, new: &NewApproval<'a>) -> Result<(), PgApprovalError> {
        let approval = new.approval;
        let id = approval.id.to_bytes().to_vec();
        self.ids.push(id.clone());
        self.statuses.push(status_code(approval.status));
        self.requested_by.push(&approval.requested_by);
        self.agents.push(approval.agent.as_deref().unwrap_or(""));
        self.sessions.push(&approval.session_id);
        self.tools.push(&approval.tool_name);
        self.inputs.push(jsonb_text(&approval.tool_input));
        self.keys.push(approval.idempotency_key.as_deref());
        self.created_ms.push(approval.created_at.timestamp_millis());
        self.expires_ms.push(approval.expires_at.timestamp_millis());
        self.records.push(super::approvals::encode(approval)?);
        self.decided_ms
            .push(approval.decided_at.map(|at| at.timestamp_millis()));
        self.step_ms.push(approval.next_escalation_ms);
        if !new.events.is_empty() {
            self.event_ids.push(id.clone());
            self.event_at_ms
                .push(new.events.iter().map(|e| e.at_ms).max().unwrap_or(0));
            self.event_json
                .push(jsonb_text(&serde_json::to_string(new.events)?).into_owned());
        }
        for notice in new.notices {
            self.notice_ids.push(id.clone());
            self.notice_channels.push(notice.channel);
            self.notice_entries.push(&notice.entry);
        }
        Ok(())
    }
}

/// Stores every approval of the group whose idempotency key is free, with its history and
/// outbox rows, in one statement. For each create, in order: the outbox rows it wrote, or
/// `None` when its key was taken (nothing of it was written; the caller handles it alone).
pub async fn create_many(
    client: &deadpool_postgres::ClientWrapper,
    group: &[NewApproval<'_>],
) -> Result<Vec<Option<Queued>>, PgApprovalError> {
    let mut columns = Columns::default();
    for new in group {
        columns.push(new)?;
    }
    let statement = client.prepare_cached(CREATE_MANY).await?;
    let c = &columns;
    let row = client
        .query_one(
            &statement,
            &[
                &c.ids,
                &c.statuses,
                &c.requested_by,
                &c.agents,
                &c.sessions,
                &c.tools,
                &c.inputs,
                &c.keys,
                &c.created_ms,
                &c.expires_ms,
                &c.records,
                &c.decided_ms,
                &c.step_ms,
                &c.event_ids,
                &c.event_at_ms,
                &c.event_json,
                &c.notice_ids,
                &c.notice_channels,
                &c.notice_entries,
            ],
        )
        .await?;
    let inserted: HashSet<Vec<u8>> = row.get::<_, Vec<Vec<u8>>>(0).into_iter().collect();
    let mut seqs = row.get::<_, Vec<i64>>(1).into_iter();
    // The outbox rows were inserted in the notices' order, so ascending sequence numbers
    // follow the inserted creates' notices one by one.
    Ok(group
        .iter()
        .zip(&columns.ids)
        .map(|(new, id)| {
            inserted.contains(id).then(|| {
                new.notices
                    .iter()
                    .map(|notice| (notice.channel, seqs.next().unwrap_or(0)))
                    .collect()
            })
        })
        .collect())
}
