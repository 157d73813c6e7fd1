//! Creates, committed in groups. A create is the hot path, and on PostgreSQL most of its cost
//! is the transaction around it: the statement's round trip, the commit and its WAL flush.
//! Creates that arrive while a group is being committed wait in one queue; the next group is
//! everything waiting (up to [`MAX_GROUP`]), as one statement
//! ([`create_many`](crate::store::postgres::creates::create_many)), so under load many creates
//! share one commit, and alone a create is one statement as before. This is sled's group
//! commit, on PostgreSQL's side of the contract: the registry still awaits each create's own
//! landing and learns its own outcome.
//!
//! Owns the queue and the lanes that commit it. A group whose statement fails for one row's sake (the server
//! answered with an error) is retried create by create, so one bad request fails alone; a
//! group that failed because the database is unreachable fails together.

use std::sync::{Arc, Weak};
use std::time::Instant;

use tokio::sync::{Mutex, mpsc, oneshot};

use super::approvals::channels;
use super::{Inner, client, db_error, note, timed};
use crate::domain::{Approval, AuditEvent};
use crate::store::postgres::approvals::{self as sql, Created, Notice};
use crate::store::postgres::creates::{NewApproval, create_many};
use crate::store::{Landed, StoreError};

/// How many groups may be committing at once. One: more lanes make smaller groups, so more
/// commits for as many creates, and commits (the WAL flush) are what a create waits on. Measured
/// with `scripts/bench-cluster`, alternating binaries: one lane 1.02-1.04x the bare INSERT
/// baseline with one instance and p99 15-17 ms with three, two lanes 0.88-0.94x and p99
/// 17-22 ms, four lanes 0.84-0.89x and p99 22-25 ms.
const LANES: usize = 1;

/// The most creates in one statement (its arrays, and the time its slowest member waits).
const MAX_GROUP: usize = 128;

/// One create waiting for its group.
pub(super) struct CreateJob {
    pub approval: Approval,
    pub events: Vec<AuditEvent>,
    pub notices: Vec<Notice>,
    pub started: Instant,
    pub reply: oneshot::Sender<Result<Landed, StoreError>>,
}

/// The queue's sending side, held by the store; the lanes stop when it is dropped.
pub(super) type Creates = mpsc::UnboundedSender<CreateJob>;

/// Start the lanes on the database runtime.
pub(super) fn start(
    handle: &tokio::runtime::Handle,
    pool: deadpool_postgres::Pool,
    inner: Weak<Inner>,
) -> Creates {
    let (tx, rx) = mpsc::unbounded_channel();
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..LANES {
        let (rx, pool, inner) = (Arc::clone(&rx), pool.clone(), inner.clone());
        handle.spawn(async move {
            while let Some(group) = next_group(&rx).await {
                commit_group(&pool, &inner, group).await;
            }
        });
    }
    tx
}

/// Everything waiting, once at least one create is.
async fn next_group(rx: &Mutex<mpsc::UnboundedReceiver<CreateJob>>) -> Option<Vec<CreateJob>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut group = vec![first];
    while group.len() < MAX_GROUP {
        match rx.try_recv() {
            Ok(job) => group.push(job),
            Err(_) => break,
        }
    }
    Some(group)
}

async fn commit_group(pool: &deadpool_postgres::Pool, inner: &Weak<Inner>, group: Vec<CreateJob>) {
    if group.len() == 1 {
        for job in group {
            let result = create(pool, &job.approval, &job.events, &job.notices).await;
            finish(inner, job, result);
        }
        return;
    }
    match run_group(pool, &group).await {
        Ok(outcomes) => {
            let mut taken = Vec::new();
            for (job, outcome) in group.into_iter().zip(outcomes) {
                match outcome {
                    Some(queued) => {
                        let result = channels(queued).map(Landed::Durable);
                        finish(inner, job, result);
                    }
                    // Its idempotency key was taken: the single path reads the holder.
                    None => taken.push(job),
                }
            }
            one_by_one(pool, inner, taken).await;
        }
        // The server refused the statement: find the create it refused for.
        Err(StoreError::Postgres(_)) => one_by_one(pool, inner, group).await,
        Err(error) => {
            let error = error.to_string();
            for job in group {
                finish(inner, job, Err(StoreError::Unavailable(error.clone())));
            }
        }
    }
}

/// Each create through the single path, at once (the pool bounds them), so that a group
/// retried this way holds the lane for about one round trip.
async fn one_by_one(pool: &deadpool_postgres::Pool, inner: &Weak<Inner>, jobs: Vec<CreateJob>) {
    let results = futures_util::future::join_all(
        jobs.iter()
            .map(|job| create(pool, &job.approval, &job.events, &job.notices)),
    )
    .await;
    for (job, result) in jobs.into_iter().zip(results) {
        finish(inner, job, result);
    }
}

async fn run_group(
    pool: &deadpool_postgres::Pool,
    group: &[CreateJob],
) -> Result<Vec<Option<sql::Queued>>, StoreError> {
    let client = client(pool).await?;
    let news: Vec<NewApproval<'_>> = group
        .iter()
        .map(|job| NewApproval {
            approval: &job.approval,
            events: &job.events,
            notices: &job.notices,
        })
        .collect();
    create_many(&client, &news).await.map_err(db_error)
}

/// Note the outcome for health and metrics, and tell the registry.
fn finish(inner: &Weak<Inner>, job: CreateJob, result: Result<Landed, StoreError>) {
    if let Some(inner) = inner.upgrade() {
        note(&inner, &result, job.started.elapsed());
        timed(&inner, job.started);
    }
    let _ = job.reply.send(result);
}

/// Store one new approval; a key taken by an ended approval is handed over once (the registry
/// creates anew only when the agent asked for that, `idempotent_while_pending`).
async fn create(
    pool: &deadpool_postgres::Pool,
    approval: &Approval,
    events: &[AuditEvent],
    notices: &[Notice],
) -> Result<Landed, StoreError> {
    let client = client(pool).await?;
    for attempt in 0..2 {
        match sql::create_queued(&client, approval, events, notices)
            .await
            .map_err(db_error)?
        {
            (Created::New(_), queued) => return Ok(Landed::Durable(channels(queued)?)),
            (Created::Existing(existing), _) if attempt == 0 && existing.status.is_terminal() => {
                client
                    .execute(
                        "UPDATE approvals SET idempotency_key = NULL WHERE id = $1 AND status <> 0",
                        &[&existing.id.to_bytes().as_slice()],
                    )
                    .await
                    .map_err(db_error)?;
            }
            (Created::Existing(existing), _) => return Ok(Landed::Lost(Box::new(existing))),
        }
    }
    Err(StoreError::Postgres(
        "the idempotency key stayed taken".into(),
    ))
}
