//! Approval rows on PostgreSQL: a create, a decision and a wave of expiries, each one
//! transaction that also writes the change's audit events and outbox entries (and, for an
//! approval that ended, NOTIFYs the other instances), so that the change, its history and its
//! notifications commit together or not at all.
//!
//! Owns the SQL of `approvals`, `approval_events` and `outbox` writes. The transition rule stays
//! [`Approval::apply`]; what makes it hold across instances is that it runs on the row locked
//! `FOR UPDATE`, and the update is conditional on the row still being pending: of several
//! instances deciding one approval, exactly one changes it and the others read the winner.
//! Expiries claim due rows with `SKIP LOCKED`, so several sweepers share the work and each
//! approval times out once.

use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Transaction};

use super::jsonb_text;
use crate::domain::{Actor, Approval, ApprovalId, AuditEvent, Decision, Outcome, Status};
use crate::store::codec::{self, CodecError};

/// The NOTIFY channel other instances LISTEN on; the payload is the id of an approval that
/// ended, then a space and the instance that ended it when one is named ([`payload`]).
pub const CHANGES: &str = "approval_gate_changes";

/// A NOTIFY payload: the approval's id, and the instance that changed it (so that instance can
/// skip its own news) with the time it wrote the change (so listeners can tell the lag).
pub fn payload(id: ApprovalId, origin: &str) -> String {
    if origin.is_empty() {
        id.to_string()
    } else {
        format!("{id} {origin} {}", Utc::now().timestamp_millis())
    }
}

/// The approval id, origin and send time (ms) of a [`payload`].
pub fn parse_payload(payload: &str) -> Option<(ApprovalId, &str, Option<i64>)> {
    let mut parts = payload.splitn(3, ' ');
    let id = parts.next()?.parse().ok()?;
    let origin = parts.next().unwrap_or("");
    let sent_ms = parts.next().and_then(|ms| ms.parse().ok());
    Some((id, origin, sent_ms))
}

#[derive(Debug, thiserror::Error)]
pub enum PgApprovalError {
    #[error("PostgreSQL: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("approval {id} is unreadable: {source}")]
    Corrupt { id: String, source: CodecError },
    #[error("cannot encode approval {id}: {source}")]
    Encode { id: String, source: CodecError },
    #[error("cannot encode an audit event: {0}")]
    Event(#[from] serde_json::Error),
}

/// A notification to queue with a change: its channel and its encoded entry.
pub struct Notice {
    pub channel: i16,
    pub entry: Vec<u8>,
}

/// What a create did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// Stored now.
    New(Approval),
    /// The agent's idempotency key was used before (on any instance): that approval.
    Existing(Approval),
}

/// What a decision did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// This decision ended the approval.
    Won(Approval),
    /// Another decision got there first: the approval as it ended.
    AlreadyEnded(Approval),
    Missing,
}

/// Stores a new pending approval with its events and notices, unless the agent's idempotency
/// key names one already.
///
/// One statement, so one round trip and its own transaction: the approval's row, and only if it
/// was inserted (not an idempotent repeat) its history entry and outbox rows, through
/// data-modifying CTEs. A create is the hot path; as a transaction of one statement per row it
/// ran at a quarter of a bare INSERT's rate (`scripts/bench-postgres`). It NOTIFYs nobody:
/// nobody can wait on an approval before it exists (a waiter reads it, then waits for its end),
/// and PostgreSQL serialises the commits of every transaction that notifies (one lock on its
/// notification queue, held through the commit's WAL flush): with a NOTIFY, creates ran at a
/// seventh of the bare INSERT's rate.
pub async fn create(
    client: &deadpool_postgres::ClientWrapper,
    approval: &Approval,
    events: &[AuditEvent],
    notices: &[Notice],
) -> Result<Created, PgApprovalError> {
    Ok(create_queued(client, approval, events, notices).await?.0)
}

/// (channel, seq) of each outbox row a change wrote, in the notices' order.
pub type Queued = Vec<(i16, i64)>;

/// [`create`], also telling which outbox rows it wrote.
pub async fn create_queued(
    client: &deadpool_postgres::ClientWrapper,
    approval: &Approval,
    events: &[AuditEvent],
    notices: &[Notice],
) -> Result<(Created, Queued), PgApprovalError> {
    let record = encode(approval)?;
    let events_json = (!events.is_empty())
        .then(|| serde_json::to_string(events).map(|json| jsonb_text(&json).into_owned()))
        .transpose()?;
    let tool_input = jsonb_text(&approval.tool_input);
    let at_ms = events.iter().map(|e| e.at_ms).max().unwrap_or(0);
    let channels: Vec<i16> = notices.iter().map(|n| n.channel).collect();
    let entries: Vec<&[u8]> = notices.iter().map(|n| n.entry.as_slice()).collect();
    // Prepared once per connection (deadpool's statement cache): the statement is planned
    // once, and each create is one round trip instead of a prepare and an execute.
    let statement = client
        .prepare_cached(
            "WITH a AS (
                 INSERT INTO approvals (id, status, requested_by, agent, session_id, tool_name,
                     tool_input, idempotency_key, created_at_ms, expires_at_ms, record,
                     decided_at_ms, next_step_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, ($7::text)::jsonb, $8, $9, $10, $11, $16, $17)
                 ON CONFLICT (requested_by, idempotency_key) WHERE idempotency_key IS NOT NULL
                 DO NOTHING
                 RETURNING id),
             e AS (
                 INSERT INTO approval_events (approval_id, at_ms, events)
                 SELECT id, $12, ($13::text)::jsonb FROM a WHERE $13::text IS NOT NULL),
             o AS (
                 INSERT INTO outbox (channel, entry)
                 SELECT n.channel, n.entry FROM a,
                     unnest($14::smallint[], $15::bytea[]) WITH ORDINALITY AS n(channel, entry, i)
                 ORDER BY n.i
                 RETURNING channel, seq)
             SELECT (SELECT count(*) FROM a),
                    coalesce((SELECT array_agg(channel ORDER BY seq) FROM o), '{}'),
                    coalesce((SELECT array_agg(seq ORDER BY seq) FROM o), '{}')",
        )
        .await?;
    let row = client
        .query_one(
            &statement,
            &[
                &approval.id.to_bytes().as_slice(),
                &status_code(approval.status),
                &approval.requested_by,
                &approval.agent.as_deref().unwrap_or(""),
                &approval.session_id,
                &approval.tool_name,
                &tool_input.as_ref(),
                &approval.idempotency_key,
                &approval.created_at.timestamp_millis(),
                &approval.expires_at.timestamp_millis(),
                &record,
                &at_ms,
                &events_json,
                &channels,
                &entries,
                &approval.decided_at.map(|at| at.timestamp_millis()),
                &approval.next_escalation_ms,
            ],
        )
        .await?;
    let inserted: i64 = row.get(0);
    if inserted == 1 {
        let channels: Vec<i16> = row.get(1);
        let seqs: Vec<i64> = row.get(2);
        return Ok((
            Created::New(approval.clone()),
            channels.into_iter().zip(seqs).collect(),
        ));
    }
    // The key's first use may be another instance's, committed just now: this statement's
    // snapshot (READ COMMITTED) sees it.
    let row = client
        .query_one(
            "SELECT id, record FROM approvals WHERE requested_by = $1 AND idempotency_key = $2",
            &[&approval.requested_by, &approval.idempotency_key],
        )
        .await?;
    Ok((
        Created::Existing(decode(row.get(0), row.get(1))?),
        Vec::new(),
    ))
}

/// Ends a pending approval with `decision`, or reports the decision that ended it first.
pub async fn decide(
    client: &mut Client,
    id: ApprovalId,
    decision: Decision,
    now: DateTime<Utc>,
    events: &[AuditEvent],
    notices: &[Notice],
) -> Result<Decided, PgApprovalError> {
    let tx = client.transaction().await?;
    let key = id.to_bytes();
    let Some(row) = tx
        .query_opt(
            "SELECT id, record FROM approvals WHERE id = $1 FOR UPDATE",
            &[&key.as_slice()],
        )
        .await?
    else {
        return Ok(Decided::Missing);
    };
    let mut approval = decode(row.get(0), row.get(1))?;
    if approval.apply(decision, now).is_err() {
        tx.commit().await?;
        return Ok(Decided::AlreadyEnded(approval));
    }
    if !end(&tx, &approval, None).await? {
        // Unreachable while the row is locked; kept so that a lock mistake cannot make two
        // winners.
        tx.rollback().await?;
        return Ok(Decided::AlreadyEnded(
            read(client, id).await?.unwrap_or(approval),
        ));
    }
    record_change(&tx, &approval, events, notices, "").await?;
    tx.commit().await?;
    Ok(Decided::Won(approval))
}

/// Writes `approval`, ended by this instance (the registry applied the transition), with its
/// history, notifications and grant, only if its row is still pending: one transaction.
/// `AlreadyEnded`: another instance ended it first; nothing was written.
pub async fn end_change(
    client: &mut Client,
    approval: &Approval,
    previous: Option<&Approval>,
    events: &[AuditEvent],
    notices: &[Notice],
    grant: Option<&crate::domain::Grant>,
    origin: &str,
) -> Result<(Decided, Queued), PgApprovalError> {
    let tx = client.transaction().await?;
    if !end(&tx, approval, previous).await? {
        tx.rollback().await?;
        let lost = match read(client, approval.id).await? {
            Some(current) => Decided::AlreadyEnded(current),
            None => Decided::Missing,
        };
        return Ok((lost, Vec::new()));
    }
    if let Some(grant) = grant {
        tx.execute(
            "INSERT INTO grants (id, grant_json, expires_at_ms) VALUES ($1, ($2::text)::jsonb, $3)
             ON CONFLICT (id) DO NOTHING",
            &[
                &grant.id,
                &jsonb_text(&serde_json::to_string(grant)?).as_ref(),
                &grant.expires_at_ms,
            ],
        )
        .await?;
    }
    let queued = record_change(&tx, approval, events, notices, origin).await?;
    tx.commit().await?;
    Ok((Decided::Won(approval.clone()), queued))
}

/// Times out up to `limit` pending approvals whose deadline is at or before `now`, skipping rows
/// another sweeper holds; returns the approvals this call ended.
pub async fn expire_due(
    client: &mut Client,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Approval>, PgApprovalError> {
    let tx = client.transaction().await?;
    let rows = tx
        .query(
            "SELECT id, record FROM approvals
             WHERE status = 0 AND expires_at_ms <= $1
             ORDER BY expires_at_ms
             LIMIT $2
             FOR UPDATE SKIP LOCKED",
            &[&now.timestamp_millis(), &limit],
        )
        .await?;
    let mut ended = Vec::with_capacity(rows.len());
    for row in rows {
        let mut approval = decode(row.get(0), row.get(1))?;
        let timeout = Decision {
            outcome: Outcome::Timeout,
            actor: Actor::System,
            comment: None,
        };
        if approval.apply(timeout, now).is_err() || !end(&tx, &approval, None).await? {
            continue;
        }
        let mut event = AuditEvent::at(now.timestamp_millis(), "timed_out");
        event.actor = Some(Actor::System.to_string());
        record_change(&tx, &approval, &[event], &[], "").await?;
        ended.push(approval);
    }
    tx.commit().await?;
    Ok(ended)
}

/// The approval as stored.
pub async fn read(client: &Client, id: ApprovalId) -> Result<Option<Approval>, PgApprovalError> {
    let row = client
        .query_opt(
            "SELECT id, record FROM approvals WHERE id = $1",
            &[&id.to_bytes().as_slice()],
        )
        .await?;
    row.map(|row| decode(row.get(0), row.get(1))).transpose()
}

/// Writes a change of a pending approval (its end, or a vote towards its quorum), only if its
/// row is still pending. `false`: it was not.
///
/// An approval that needs several approvals changes while it stays pending (each vote), so
/// "still pending" is not enough: two votes on two instances would each overwrite the other's.
/// Its change is written only over the very record it was made from (`previous`), and a lost
/// race is retried by the registry on the record as it is now.
async fn end(
    tx: &Transaction<'_>,
    approval: &Approval,
    previous: Option<&Approval>,
) -> Result<bool, PgApprovalError> {
    // Also any change that leaves it pending (a vote, an escalation step): two instances
    // making the same one (firing the same step) must land it once.
    let expected =
        match previous.filter(|p| p.approvals_required > 1 || !approval.status.is_terminal()) {
            Some(previous) => Some(encode(previous)?),
            None => None,
        };
    // A record an older binary wrote (version 1) decodes to the same approval but encodes
    // differently now: compared in both forms.
    let expected_v1 = match (&expected, previous) {
        (Some(_), Some(previous)) => {
            Some(crate::store::codec::encode_v1(previous).map_err(|source| {
                PgApprovalError::Encode {
                    id: previous.id.to_string(),
                    source,
                }
            })?)
        }
        _ => None,
    };
    let changed = tx
        .execute(
            "UPDATE approvals SET status = $2, decided_at_ms = $3, record = $4, next_step_ms = $7
             WHERE id = $1 AND status = 0
               AND ($5::bytea IS NULL OR record = $5 OR record = $6)",
            &[
                &approval.id.to_bytes().as_slice(),
                &status_code(approval.status),
                &approval.decided_at.map(|at| at.timestamp_millis()),
                &encode(approval)?,
                &expected,
                &expected_v1,
                &approval.next_escalation_ms,
            ],
        )
        .await?;
    Ok(changed == 1)
}

/// An ended approval's history, its notifications and the wake-up for other instances, sent
/// together (tokio-postgres pipelines the statements: one round trip for all of them, not one
/// each), in its transaction (a NOTIFY is delivered on commit, and not at all on rollback).
async fn record_change(
    tx: &Transaction<'_>,
    approval: &Approval,
    events: &[AuditEvent],
    notices: &[Notice],
    origin: &str,
) -> Result<Queued, PgApprovalError> {
    let id = approval.id.to_bytes();
    let id = id.as_slice();
    let id_text = payload(approval.id, origin);
    let events_json = jsonb_text(&serde_json::to_string(events)?).into_owned();
    let at_ms = events.iter().map(|e| e.at_ms).max().unwrap_or(0);
    // The parameters live as long as the statements in flight.
    let event_params: [&(dyn ToSql + Sync); 3] = [&id, &at_ms, &events_json];
    let notice_params: Vec<[&(dyn ToSql + Sync); 2]> = notices
        .iter()
        .map(|n| [&n.channel as &(dyn ToSql + Sync), &n.entry])
        .collect();
    let notify_params: [&(dyn ToSql + Sync); 2] = [&CHANGES, &id_text];
    let mut writes = Vec::with_capacity(2);
    if !events.is_empty() {
        writes.push(tx.execute(
            "INSERT INTO approval_events (approval_id, at_ms, events) VALUES ($1, $2, ($3::text)::jsonb)",
            &event_params,
        ));
    }
    writes.push(tx.execute("SELECT pg_notify($1, $2)", &notify_params));
    let queue = notice_params.iter().map(|params| {
        tx.query_one(
            "INSERT INTO outbox (channel, entry) VALUES ($1, $2) RETURNING channel, seq",
            params,
        )
    });
    let (_, rows) = futures_util::future::try_join(
        futures_util::future::try_join_all(writes),
        futures_util::future::try_join_all(queue),
    )
    .await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// The `status` column's value ([`crate::store::status_code`]).
pub fn status_code(status: Status) -> i16 {
    i16::from(crate::store::status_code(status))
}

pub(super) fn encode(approval: &Approval) -> Result<Vec<u8>, PgApprovalError> {
    codec::encode(approval).map_err(|source| PgApprovalError::Encode {
        id: approval.id.to_string(),
        source,
    })
}

fn decode(id: &[u8], record: &[u8]) -> Result<Approval, PgApprovalError> {
    codec::decode(record).map_err(|source| PgApprovalError::Corrupt {
        id: hex::encode(id),
        source,
    })
}
