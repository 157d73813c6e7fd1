//! The PostgreSQL backend behind the store's contracts: [`PgStore`] implements
//! [`ApprovalStore`](crate::store::ApprovalStore) (`approvals.rs`) and its
//! [`queues`](PgStore::queues) handle implements [`QueueStore`](crate::store::QueueStore)
//! (`queues.rs`).
//!
//! Owns the pool, a small runtime of its own that runs every statement, the poller's lease
//! (`lease.rs`) and the LISTEN connection's forwarding to the registry. Must not know about
//! sled, the registry's state or a notifier's.
//!
//! Why a runtime of its own: the contract's reads are synchronous (sled answers them from
//! memory), and actix runs each arbiter on a single-threaded runtime that must not be blocked
//! from inside. A read is spawned on this runtime and the caller's thread waits for its answer
//! (one round trip on loopback: about 0.1 ms). Writes never block a caller: a change is a
//! transaction spawned here whose outcome the registry awaits ([`Landing`](crate::store::Landing)).

mod approvals;
mod clock;
mod creates;
mod dead_letters;
mod lease;
mod queues;
mod reads;
mod telegram_state;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;

use super::{PgError, PgSettings, leader::Lease};
use crate::store::StoreError;

pub use queues::PgQueues;

/// How the backend is set up: the connection, this instance's name among those sharing the
/// database, and the poller's lease.
#[derive(Debug, Clone)]
pub struct PgBackendSettings {
    pub connection: PgSettings,
    /// Unique among the instances (hostname and process id by default): it holds the poller's
    /// lease and names the origin of a change in NOTIFY payloads.
    pub instance: String,
    /// How long the Telegram poller's lease lasts without renewal (`telegram.leader_lease`).
    pub leader_lease: Duration,
}

/// The PostgreSQL store. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    pool: Pool,
    /// Creates waiting for their group commit (`creates.rs`).
    creates: creates::Creates,
    /// A few connections with `synchronous_commit = off`, for the notifiers' acks: a delivered
    /// entry's removal lost to a database crash only repeats a notification (delivery is at
    /// least once anyway), so those commits need not wait for the WAL flush.
    relaxed: Pool,
    settings: PgBackendSettings,
    /// False from a failed statement until one succeeds (health and readiness read it).
    healthy: AtomicBool,
    /// When the last statement failed (ms since the epoch): while the database is down, reads
    /// fail fast for a moment instead of each waiting out `pool_wait` on an actor's thread.
    last_failure_ms: AtomicU64,
    /// A background round trip is under way to find out whether the database answers again.
    probing: AtomicBool,
    failures: AtomicU64,
    /// Statements run and the microseconds callers waited for them (metrics).
    statements: AtomicU64,
    statement_us: AtomicU64,
    /// The last NOTIFY's lag from its sender's commit, microseconds.
    notify_lag_us: AtomicU64,
    /// How many dead letters there are, counted every second (`count_dead_letters`).
    dead_letters: std::sync::atomic::AtomicI64,
    /// Bumped by every local change of the count, so a background count that raced one is not
    /// stored over it.
    dead_letter_changes: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Fault injection: the next writes fail.
    faults: AtomicU32,
    /// This instance holds the poller's lease; the lease itself, for fencing the offset.
    leading: AtomicBool,
    lease: Mutex<Option<Lease>>,
    /// When this instance last renewed (or took) the lease, ms since the epoch (local clock).
    lease_renewed_ms: AtomicU64,
    /// This instance's clock, corrected to the database's (`clock.rs`).
    clock: crate::clock::Clock,
    clock_filter: Mutex<crate::clock::OffsetFilter>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropped on an actix thread: a runtime may not be shut down blocking there.
        if let Ok(mut runtime) = self.runtime.lock()
            && let Some(runtime) = runtime.take()
        {
            runtime.shutdown_background();
        }
    }
}

/// How often a read in flight looks whether another statement failed meanwhile.
const GIVE_UP_CHECK: Duration = Duration::from_millis(50);

/// The longest an actor's thread waits for a read (see [`PgStore::run`]).
pub const READ_DEADLINE: Duration = Duration::from_secs(2);

/// A database error as the store reports it: one the server answered with (a SQLSTATE) is a
/// failed statement; one without (a closed connection, a refused connect) is the database
/// being unreachable, which health reports and reads fail fast on.
fn db_error(error: impl Into<DbError>) -> StoreError {
    match error.into() {
        DbError::Client(error) if error.code().is_none() => {
            StoreError::Unavailable(format!("the database is unreachable: {error}"))
        }
        // tokio-postgres displays a server's error as "db error": say what the server said.
        DbError::Client(error) => StoreError::Postgres(match error.as_db_error() {
            Some(server) => server.to_string(),
            None => error.to_string(),
        }),
        DbError::Other(text) => StoreError::Postgres(text),
    }
}

/// The errors [`db_error`] sorts.
pub(super) enum DbError {
    Client(tokio_postgres::Error),
    Other(String),
}

impl From<tokio_postgres::Error> for DbError {
    fn from(error: tokio_postgres::Error) -> Self {
        DbError::Client(error)
    }
}

impl From<super::approvals::PgApprovalError> for DbError {
    fn from(error: super::approvals::PgApprovalError) -> Self {
        match error {
            super::approvals::PgApprovalError::Database(error) => DbError::Client(error),
            other => DbError::Other(other.to_string()),
        }
    }
}

impl From<super::import::ImportError> for DbError {
    fn from(error: super::import::ImportError) -> Self {
        match error {
            super::import::ImportError::Database(error) => DbError::Client(error),
            other => DbError::Other(other.to_string()),
        }
    }
}

impl From<super::PgError> for DbError {
    fn from(error: super::PgError) -> Self {
        match error {
            super::PgError::Database(error) => DbError::Client(error),
            other => DbError::Other(other.to_string()),
        }
    }
}

impl PgStore {
    /// Connect, bring the schema up to date (one instance migrates, the others wait on its
    /// lock) and start taking part in the poller's election.
    pub fn open(settings: PgBackendSettings) -> Result<Self, PgError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ag-postgres")
            .enable_all()
            .build()
            .map_err(|e| PgError::Pool(format!("cannot start the database runtime: {e}")))?;
        let pool = super::pool(&settings.connection)?;
        let relaxed = super::pool_with(&settings.connection, 2, "-c synchronous_commit=off")?;
        let handle = runtime.handle().clone();
        let store = Self {
            inner: Arc::new_cyclic(|inner| Inner {
                creates: creates::start(&handle, pool.clone(), inner.clone()),
                runtime: Mutex::new(Some(runtime)),
                handle,
                pool: pool.clone(),
                relaxed,
                settings,
                healthy: AtomicBool::new(true),
                probing: AtomicBool::new(false),
                last_failure_ms: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                statements: AtomicU64::new(0),
                statement_us: AtomicU64::new(0),
                notify_lag_us: AtomicU64::new(0),
                dead_letters: std::sync::atomic::AtomicI64::new(0),
                dead_letter_changes: AtomicU64::new(0),
                last_error: Mutex::new(None),
                faults: AtomicU32::new(0),
                leading: AtomicBool::new(false),
                lease: Mutex::new(None),
                lease_renewed_ms: AtomicU64::new(0),
                clock: crate::clock::Clock::default(),
                clock_filter: Mutex::new(crate::clock::OffsetFilter::default()),
            }),
        };
        // Another instance may hold the migration lock for a while.
        let migrated = store
            .run_within(Duration::from_secs(120), async move {
                super::connect_and_migrate(&pool).await.map_err(db_error)
            })
            .map_err(|e| PgError::Connect(e.to_string()))?;
        tracing::info!(
            schema_from = migrated.from,
            schema_to = migrated.to,
            instance = %store.inner.settings.instance,
            "PostgreSQL store ready"
        );
        // Before anything is created or decided here: this instance's clock is the database's.
        clock::measure_now(&store);
        clock::spawn(&store);
        lease::spawn(&store);
        count_dead_letters(&store);
        Ok(store)
    }

    /// The notifiers' handle.
    pub fn queues(&self) -> crate::store::Queues {
        Arc::new(PgQueues(self.clone()))
    }

    /// Forward what other instances commit to `recipient` (the registry): every approval they
    /// end, and a resync after every (re)connection of the LISTEN session.
    pub fn listen(&self, recipient: actix::Recipient<crate::registry::RemoteChange>) {
        use crate::registry::RemoteChange;
        let (config, tls) = match super::connect_config(&self.inner.settings.connection) {
            Ok(parts) => parts,
            Err(error) => {
                tracing::error!(%error, "cannot listen for other instances' changes");
                return;
            }
        };
        let me = self.inner.settings.instance.clone();
        let inner = Arc::downgrade(&self.inner);
        self.inner.handle.spawn(async move {
            let mut wakes = super::listen::spawn(config, tls, super::approvals::CHANGES);
            while let Some(wake) = wakes.recv().await {
                let change = match wake {
                    super::listen::Wake::Resync => RemoteChange::Resync,
                    super::listen::Wake::Changed(payload) => {
                        match super::approvals::parse_payload(&payload) {
                            Some((_, origin, _)) if origin == me => continue,
                            Some((id, _, sent_ms)) => {
                                if let (Some(sent_ms), Some(inner)) = (sent_ms, inner.upgrade()) {
                                    let lag_ms = now_ms()
                                        .saturating_sub(u64::try_from(sent_ms).unwrap_or(0));
                                    inner.notify_lag_us.store(lag_ms * 1000, Ordering::Relaxed);
                                }
                                RemoteChange::Ended(id)
                            }
                            None => continue,
                        }
                    }
                };
                if recipient.try_send(change).is_err() {
                    // A full mailbox: what was dropped is re-read by a resync.
                    let _ = recipient.try_send(RemoteChange::Resync);
                }
            }
        });
    }

    /// Whether this instance holds the poller's lease, and who does (for `/health`).
    pub fn leader_report(&self) -> serde_json::Value {
        let lease = self.inner.lease.lock().ok().and_then(|l| l.clone());
        let renewed = self.inner.lease_renewed_ms.load(Ordering::Relaxed);
        serde_json::json!({
            "instance": self.inner.settings.instance,
            "leader": self.inner.leading.load(Ordering::Relaxed),
            "epoch": lease.as_ref().map(|l| l.epoch),
            "lease_renewed_ms_ago": (renewed > 0).then(|| now_ms().saturating_sub(renewed)),
        })
    }

    /// Run `future` on the database runtime and wait for it on this thread (never call from
    /// the database runtime itself), at most [`READ_DEADLINE`]: an actor's thread is never held
    /// longer by a database that is slow rather than gone (the statement goes on, its answer
    /// is dropped, and reads fail fast for a moment).
    fn run<T: Send + 'static>(
        &self,
        future: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.run_waiting(READ_DEADLINE, true, future)
    }

    /// [`run`](Self::run) for a write: a write the caller gave up on may still commit, so it is
    /// waited for as long as the database may take (a connection, then the statement timeout),
    /// never reported failed while it may yet succeed.
    fn run_write<T: Send + 'static>(
        &self,
        future: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let connection = &self.inner.settings.connection;
        let deadline = connection.pool_wait + connection.statement_timeout + Duration::from_secs(1);
        self.run_within(deadline, future)
    }

    /// [`run`](Self::run) for a notifier's acknowledgement: a write, but one whose loss only
    /// repeats a notification (delivery is at least once), so it is waited for like a read and
    /// given up with the others, never holding a notifier's thread past the read deadline.
    pub(super) fn run_ack<T: Send + 'static>(
        &self,
        future: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.run_waiting(READ_DEADLINE, true, future)
    }

    /// [`run`](Self::run) with a deadline of the caller's choosing (a backup takes long).
    fn run_within<T: Send + 'static>(
        &self,
        deadline: Duration,
        future: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.run_waiting(deadline, false, future)
    }

    /// Runs `future` on the database runtime and waits up to `deadline`. A read
    /// (`give_up_with_others`) also stops waiting as soon as another statement has failed
    /// since it started: the database is then known not to answer, and a read already in
    /// flight would otherwise hold its actor's thread to its own deadline, after everyone
    /// else fails fast. A write never gives up early (it may yet commit).
    fn run_waiting<T: Send + 'static>(
        &self,
        deadline: Duration,
        give_up_with_others: bool,
        future: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        if self.failing_fast() {
            return Err(StoreError::Unavailable(
                "the database is unreachable; retry shortly".into(),
            ));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let started = std::time::Instant::now();
        let started_ms = now_ms();
        self.inner.handle.spawn(async move {
            let _ = tx.send(future.await);
        });
        let result = loop {
            let left = deadline.saturating_sub(started.elapsed());
            let slice = if give_up_with_others {
                left.min(GIVE_UP_CHECK)
            } else {
                left
            };
            match rx.recv_timeout(slice) {
                Ok(result) => break result,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                    if started.elapsed() >= deadline =>
                {
                    break Err(StoreError::Unavailable(format!(
                        "the database did not answer within {}",
                        humantime::format_duration(deadline)
                    )));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let failed_since = !self.inner.healthy.load(Ordering::Relaxed)
                        && self.inner.last_failure_ms.load(Ordering::Relaxed) >= started_ms;
                    if failed_since {
                        // Not noted: the failure that told us is noted already.
                        timed(&self.inner, started);
                        return Err(StoreError::Unavailable(
                            "the database is unreachable; retry shortly".into(),
                        ));
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    break Err(StoreError::Postgres("the database runtime stopped".into()));
                }
            }
        };
        note(&self.inner, &result, started.elapsed());
        timed(&self.inner, started);
        result
    }

    /// True from a failure until the database answers a round trip within the read deadline
    /// again: an actor's read never waits on a database known not to answer. Each refused read
    /// starts a background probe if none is under way, and the probe's success ends it.
    ///
    /// Not "for a moment after a failure": a database that answers too slowly fails every read
    /// at its deadline, and each periodic read (the orphan sweep, the notifiers' timers) would
    /// then hold an actor's thread for the whole deadline once the moment had passed.
    fn failing_fast(&self) -> bool {
        if self.inner.healthy.load(Ordering::Relaxed) {
            return false;
        }
        probe_in_background(&self.inner, self.pool());
        true
    }

    fn pool(&self) -> Pool {
        self.inner.pool.clone()
    }

    fn relaxed_pool(&self) -> Pool {
        self.inner.relaxed.clone()
    }
}

/// After a failed probe, the least time before the next one.
const PROBE_PAUSE: Duration = Duration::from_millis(250);

/// One `SELECT 1` within the read deadline, in the background, unless one is under way; its
/// outcome is noted like any statement's (a success makes the store healthy again). A failed
/// probe holds the next one back for [`PROBE_PAUSE`]: every read of a store that is down would
/// otherwise start one, and each is a connection attempt (a process forked on the server).
fn probe_in_background(inner: &Arc<Inner>, pool: Pool) {
    if inner.probing.swap(true, Ordering::AcqRel) {
        return;
    }
    let probing = Arc::clone(inner);
    inner.handle.spawn(async move {
        let started = std::time::Instant::now();
        let probed = round_trip(pool).await;
        note(&probing, &probed, started.elapsed());
        if probed.is_err() {
            tokio::time::sleep(PROBE_PAUSE).await;
        }
        probing.probing.store(false, Ordering::Release);
    });
}

/// `SELECT 1`, failed as unreachable when it takes longer than a read may.
pub(super) async fn round_trip(pool: Pool) -> Result<(), StoreError> {
    let probe = async {
        client(&pool)
            .await?
            .execute("SELECT 1", &[])
            .await
            .map_err(db_error)?;
        Ok::<(), StoreError>(())
    };
    tokio::time::timeout(READ_DEADLINE, probe)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "the database did not answer within {}",
                humantime::format_duration(READ_DEADLINE)
            )))
        })
}

/// A statement's outcome, for health: a failure makes the store unhealthy until a statement
/// succeeds within the read deadline. A slow success does not heal it: a database that
/// answers a commit in eight seconds still fails every read at its deadline, and marking it
/// healthy would let each periodic read hold an actor's thread for the whole deadline again.
fn note<T>(inner: &Inner, result: &Result<T, StoreError>, took: Duration) {
    match result {
        Ok(_) if took < READ_DEADLINE => inner.healthy.store(true, Ordering::Relaxed),
        Ok(_) => {}
        // The server answered: reachable, whatever the statement's fault.
        Err(StoreError::Postgres(error)) => {
            if let Ok(mut last) = inner.last_error.lock() {
                *last = Some(error.clone());
            }
        }
        Err(error) => {
            inner.healthy.store(false, Ordering::Relaxed);
            inner.last_failure_ms.store(now_ms(), Ordering::Relaxed);
            inner.failures.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut last) = inner.last_error.lock() {
                *last = Some(error.to_string());
            }
        }
    }
}

/// Keep the dead-letter count fresh without any caller waiting for it.
fn count_dead_letters(store: &PgStore) {
    let inner = Arc::downgrade(&store.inner);
    let pool = store.pool();
    store.inner.handle.spawn(async move {
        loop {
            let Some(inner) = inner.upgrade() else { return };
            let changes = inner.dead_letter_changes.load(Ordering::SeqCst);
            if let Ok(client) = client(&pool).await
                && let Ok(row) = client
                    .query_one("SELECT count(*) FROM dead_letters", &[])
                    .await
                && inner.dead_letter_changes.load(Ordering::SeqCst) == changes
            {
                inner
                    .dead_letters
                    .store(row.get::<_, i64>(0), Ordering::Relaxed);
            }
            drop(inner);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// Count one statement (or transaction) and how long its caller waited.
fn timed(inner: &Inner, started: std::time::Instant) {
    inner.statements.fetch_add(1, Ordering::Relaxed);
    let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    inner.statement_us.fetch_add(us, Ordering::Relaxed);
}

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

/// A connection from the pool, or the reason there is none (the database is unreachable, or
/// every connection is busy past `store.postgres.pool_wait`).
async fn client(pool: &Pool) -> Result<deadpool_postgres::Object, StoreError> {
    pool.get()
        .await
        .map_err(|e| StoreError::Unavailable(format!("no database connection: {e}")))
}
