//! The schema's migrations and the poller's lease, against a real PostgreSQL (see `testing`).

use std::time::{Duration, Instant};

use super::leader::{self, Lease};
use super::migrations::{self, MigrationError};
use super::testing::TestDb;
use super::{PgError, connect_and_migrate};

async fn migrated(db: &TestDb) -> deadpool_postgres::Pool {
    let pool = db.pool();
    connect_and_migrate(&pool).await.expect("migrate");
    pool
}

#[actix_rt::test]
async fn a_fresh_database_is_migrated_once_and_then_left_alone() {
    let Some(db) = TestDb::create("a_fresh_database_is_migrated_once").await else {
        return;
    };
    let pool = db.pool();
    let first = connect_and_migrate(&pool).await.expect("first start");
    assert_eq!((first.from, first.to), (0, migrations::latest()));
    let second = connect_and_migrate(&pool).await.expect("second start");
    assert_eq!(
        (second.from, second.to),
        (migrations::latest(), migrations::latest())
    );
    let client = pool.get().await.expect("a connection");
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables
             WHERE table_schema = 'public' AND table_name IN
             ('approvals', 'approval_events', 'outbox', 'dead_letters', 'telegram_messages',
              'grants', 'telegram_leader', 'meta')",
            &[],
        )
        .await
        .expect("count tables")
        .get(0);
    assert_eq!(tables, 8);
}

#[actix_rt::test]
async fn instances_starting_together_apply_each_migration_exactly_once() {
    let Some(db) = TestDb::create("instances_starting_together").await else {
        return;
    };
    // Eight "instances", each with its own pool, all starting at once on an empty database.
    let starts: Vec<_> = (0..8)
        .map(|_| {
            let pool = db.pool();
            tokio::spawn(async move { connect_and_migrate(&pool).await })
        })
        .collect();
    let mut migrated_from_zero = 0;
    for start in starts {
        let done = start.await.expect("join").expect("every instance starts");
        assert_eq!(done.to, migrations::latest());
        migrated_from_zero += usize::from(done.from == 0);
    }
    assert_eq!(migrated_from_zero, 1, "exactly one instance migrated");
    let client = db.pool().get().await.expect("a connection");
    let rows: Vec<(i32, i64)> = client
        .query(
            "SELECT version, count(*) FROM schema_migrations GROUP BY version ORDER BY version",
            &[],
        )
        .await
        .expect("read schema_migrations")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected: Vec<(i32, i64)> = migrations::MIGRATIONS
        .iter()
        .map(|m| (m.version, 1))
        .collect();
    assert_eq!(rows, expected);
}

#[actix_rt::test]
async fn a_binary_older_than_the_schema_refuses_to_start() {
    let Some(db) = TestDb::create("a_binary_older_than_the_schema").await else {
        return;
    };
    let pool = migrated(&db).await;
    let newer = migrations::latest() + 1;
    pool.get()
        .await
        .expect("a connection")
        .execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, 'from the future')",
            &[&newer],
        )
        .await
        .expect("pretend a newer binary migrated");
    let error = connect_and_migrate(&pool)
        .await
        .expect_err("an older binary must refuse");
    match &error {
        PgError::Migration(MigrationError::SchemaTooNew { found, supported }) => {
            assert_eq!((*found, *supported), (newer, migrations::latest()));
        }
        other => panic!("expected SchemaTooNew, got {other}"),
    }
    assert!(
        error.to_string().contains("newer than this binary"),
        "{error}"
    );
}

/// Waits until `holder` gets the lease (it lapses on the database's clock), at most `limit`.
async fn acquire_within(
    client: &tokio_postgres::Client,
    holder: &str,
    lease: Duration,
    limit: Duration,
) -> Option<Lease> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(granted) = leader::acquire(client, holder, lease)
            .await
            .expect("acquire")
        {
            return Some(granted);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn one_holder_at_a_time_and_a_lapsed_holder_is_fenced() {
    let Some(db) = TestDb::create("one_holder_at_a_time").await else {
        return;
    };
    let pool = migrated(&db).await;
    let client = pool.get().await.expect("a connection");
    let short = Duration::from_millis(300);

    let a = leader::acquire(&**client, "a", short)
        .await
        .expect("acquire")
        .expect("a free lease is granted");
    assert_eq!(a.epoch, 1);
    assert!(
        leader::acquire(&**client, "b", short)
            .await
            .expect("acquire")
            .is_none(),
        "a live lease is not granted to another"
    );
    let renewed = leader::acquire(&**client, "a", short)
        .await
        .expect("renew")
        .expect("the holder renews");
    assert_eq!(renewed.epoch, a.epoch, "a renewal keeps the epoch");
    assert!(
        leader::advance_offset(&**client, &renewed, 41)
            .await
            .unwrap()
    );

    // A stops renewing (paused, or its host died); B takes over once the lease lapses.
    let b = acquire_within(
        &client,
        "b",
        Duration::from_secs(60),
        Duration::from_secs(5),
    )
    .await
    .expect("b takes the lapsed lease");
    assert_eq!(b.epoch, a.epoch + 1);
    // A wakes up and tries to record what it polled meanwhile: fenced, and it cannot renew.
    assert!(
        !leader::advance_offset(&**client, &renewed, 99)
            .await
            .unwrap()
    );
    assert!(
        leader::acquire(&**client, "a", short)
            .await
            .unwrap()
            .is_none(),
        "a cannot take back a live lease"
    );
    let state = leader::state(&**client).await.unwrap().expect("state");
    assert_eq!(
        state.update_offset, 41,
        "the fenced write left the offset alone"
    );
}

#[actix_rt::test]
async fn the_offset_never_moves_backwards_and_a_release_hands_over_at_once() {
    let Some(db) = TestDb::create("the_offset_never_moves_backwards").await else {
        return;
    };
    let pool = migrated(&db).await;
    let client = pool.get().await.expect("a connection");
    let long = Duration::from_secs(60);
    let a = leader::acquire(&**client, "a", long)
        .await
        .unwrap()
        .unwrap();
    assert!(leader::advance_offset(&**client, &a, 10).await.unwrap());
    assert!(leader::advance_offset(&**client, &a, 7).await.unwrap());
    let state = leader::state(&**client).await.unwrap().unwrap();
    assert_eq!(state.update_offset, 10);
    assert!(
        leader::acquire(&**client, "b", long)
            .await
            .unwrap()
            .is_none()
    );
    leader::release(&**client, &a).await.unwrap();
    let b = leader::acquire(&**client, "b", long)
        .await
        .unwrap()
        .expect("a released lease is free at once");
    assert_eq!(b.epoch, a.epoch + 1);
    assert_eq!(
        leader::state(&**client)
            .await
            .unwrap()
            .unwrap()
            .update_offset,
        10,
        "the offset is kept across holders"
    );
}

#[actix_rt::test]
async fn of_many_contenders_at_once_exactly_one_gets_the_lease() {
    let Some(db) = TestDb::create("of_many_contenders").await else {
        return;
    };
    let pool = migrated(&db).await;
    for round in 0..5 {
        let contenders: Vec<_> = (0..8)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let client = pool.get().await.expect("a connection");
                    leader::acquire(&**client, &format!("r{round}-{i}"), Duration::from_secs(60))
                        .await
                        .expect("acquire")
                })
            })
            .collect();
        let mut winners = Vec::new();
        for contender in contenders {
            if let Some(lease) = contender.await.expect("join") {
                winners.push(lease);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        leader::release(&**pool.get().await.unwrap(), &winners[0])
            .await
            .unwrap();
    }
}

/// The next wake-up, at most `limit` away.
async fn next_wake(
    wakes: &mut tokio::sync::mpsc::Receiver<super::listen::Wake>,
    limit: Duration,
) -> Option<super::listen::Wake> {
    tokio::time::timeout(limit, wakes.recv())
        .await
        .ok()
        .flatten()
}

async fn notify(client: &tokio_postgres::Client, payload: &str) {
    client
        .execute("SELECT pg_notify('ag_test_changes', $1)", &[&payload])
        .await
        .expect("notify");
}

#[actix_rt::test]
async fn a_killed_listen_connection_reconnects_and_asks_for_a_resync() {
    use super::listen::{self, Wake};
    let Some(db) = TestDb::create("a_killed_listen_connection").await else {
        return;
    };
    let config: tokio_postgres::Config = db.url.parse().expect("the test URL parses");
    let mut wakes = listen::spawn(config, "ag_test_changes");
    let pool = db.pool();
    let client = pool.get().await.expect("a connection");
    let limit = Duration::from_secs(10);
    assert_eq!(
        next_wake(&mut wakes, limit).await,
        Some(Wake::Resync),
        "on connecting"
    );
    notify(&client, "01A").await;
    assert_eq!(
        next_wake(&mut wakes, limit).await,
        Some(Wake::Changed("01A".into()))
    );

    // Kill the listening session (a proxy restart, a failover, an idle-connection reaper).
    let killed: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = $1",
            &[&listen::APPLICATION_NAME],
        )
        .await
        .expect("terminate the listener")
        .get(0);
    assert_eq!(killed, 1);
    // What is sent while it is down is lost to LISTEN; the listener must say so with a resync
    // once it is back, and then deliver wake-ups again.
    notify(&client, "01B-while-down").await;
    let mut saw_resync = false;
    let deadline = Instant::now() + limit;
    while !saw_resync && Instant::now() < deadline {
        match next_wake(&mut wakes, limit).await {
            Some(Wake::Resync) => saw_resync = true,
            Some(Wake::Changed(_)) => {} // it may have reconnected before the notify
            None => break,
        }
    }
    assert!(saw_resync, "a reconnection is announced with a resync");
    notify(&client, "01C").await;
    let mut delivered = false;
    while let Some(wake) = next_wake(&mut wakes, limit).await {
        if wake == Wake::Changed("01C".into()) {
            delivered = true;
            break;
        }
    }
    assert!(delivered, "wake-ups flow again after the reconnection");
}

mod approvals {
    use std::time::Duration;

    use chrono::Utc;

    use super::super::approvals::{self, Created, Decided};
    use super::super::testing::TestDb;
    use super::migrated;
    use crate::domain::{
        Actor, Approval, ApprovalId, AuditEvent, Decision, NewApproval, Outcome, Status,
    };

    fn new_approval(key: Option<&str>, timeout: Duration) -> Approval {
        Approval::create(
            ApprovalId::new(),
            NewApproval {
                session_id: "s".into(),
                tool_name: "Bash".into(),
                tool_input: r#"{"command":"make deploy"}"#.into(),
                reason: None,
                agent: Some("claude-code".into()),
                requested_by: "laptop".into(),
                idempotency_key: key.map(str::to_string),
                timeout,
                max_timeout: None,
                idempotent_while_pending: false,
            },
            Utc::now(),
        )
    }

    fn decision(outcome: Outcome, who: &str) -> Decision {
        Decision {
            outcome,
            actor: Actor::Operator(who.into()),
            comment: None,
        }
    }

    /// Three "instances": three pools on one database.
    async fn instances(db: &TestDb) -> Vec<deadpool_postgres::Pool> {
        let first = migrated(db).await;
        vec![first, db.pool(), db.pool()]
    }

    #[actix_rt::test]
    async fn an_idempotency_key_holds_across_instances() {
        let Some(db) = TestDb::create("an_idempotency_key_holds_across_instances").await else {
            return;
        };
        let pools = instances(&db).await;
        for round in 0..10 {
            let key = format!("retry-{round}");
            let tries: Vec<_> = (0..6)
                .map(|i| {
                    let pool = pools[i % pools.len()].clone();
                    let approval = new_approval(Some(&key), Duration::from_secs(600));
                    tokio::spawn(async move {
                        let mut client = pool.get().await.expect("a connection");
                        approvals::create(&mut client, &approval, &[], &[]).await
                    })
                })
                .collect();
            let mut ids = Vec::new();
            let mut new = 0;
            for attempt in tries {
                match attempt.await.expect("join").expect("create") {
                    Created::New(a) => {
                        new += 1;
                        ids.push(a.id);
                    }
                    Created::Existing(a) => ids.push(a.id),
                }
            }
            assert_eq!(new, 1, "round {round}: one create stored");
            ids.dedup();
            assert_eq!(
                ids.len(),
                1,
                "round {round}: every retry got the same approval"
            );
        }
    }

    #[actix_rt::test]
    async fn racing_decisions_on_three_instances_have_exactly_one_winner() {
        let Some(db) = TestDb::create("racing_decisions_on_three_instances").await else {
            return;
        };
        let pools = instances(&db).await;
        let outcomes = [Outcome::Approve, Outcome::Reject, Outcome::Cancel];
        for round in 0..30 {
            let approval = new_approval(None, Duration::from_secs(600));
            let mut client = pools[0].get().await.expect("a connection");
            approvals::create(&mut client, &approval, &[], &[])
                .await
                .expect("create");
            drop(client);
            let racers: Vec<_> = outcomes
                .iter()
                .enumerate()
                .map(|(i, outcome)| {
                    let pool = pools[i].clone();
                    let decision = decision(*outcome, &format!("op{i}"));
                    let event = AuditEvent::now("decided");
                    tokio::spawn(async move {
                        let mut client = pool.get().await.expect("a connection");
                        approvals::decide(
                            &mut client,
                            approval.id,
                            decision,
                            Utc::now(),
                            &[event],
                            &[],
                        )
                        .await
                    })
                })
                .collect();
            let mut winners = Vec::new();
            let mut reported = Vec::new();
            for racer in racers {
                match racer.await.expect("join").expect("decide") {
                    Decided::Won(a) => winners.push(a.status),
                    Decided::AlreadyEnded(a) => reported.push(a.status),
                    Decided::Missing => panic!("round {round}: the approval went missing"),
                }
            }
            assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
            assert!(
                reported.iter().all(|s| *s == winners[0]),
                "round {round}: the losers were told the winner ({winners:?} vs {reported:?})"
            );
            let client = pools[1].get().await.expect("a connection");
            let stored = approvals::read(&client, approval.id)
                .await
                .expect("read")
                .expect("stored");
            assert_eq!(stored.status, winners[0]);
            let decided: i64 = client
                .query_one(
                    "SELECT count(*) FROM approval_events WHERE approval_id = $1",
                    &[&approval.id.to_bytes().as_slice()],
                )
                .await
                .expect("count events")
                .get(0);
            assert_eq!(decided, 1, "round {round}: one decision in the history");
        }
    }

    #[actix_rt::test]
    async fn three_sweepers_time_each_approval_out_once() {
        let Some(db) = TestDb::create("three_sweepers_time_each_approval_out_once").await else {
            return;
        };
        let pools = instances(&db).await;
        let mut client = pools[0].get().await.expect("a connection");
        let mut ids = Vec::new();
        for _ in 0..90 {
            let approval = new_approval(None, Duration::from_millis(1));
            approvals::create(&mut client, &approval, &[], &[])
                .await
                .expect("create");
            ids.push(approval.id);
        }
        drop(client);
        let now = Utc::now() + chrono::Duration::seconds(1);
        let sweepers: Vec<_> = pools
            .iter()
            .map(|pool| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    let mut client = pool.get().await.expect("a connection");
                    loop {
                        let ended = approvals::expire_due(&mut client, now, 7)
                            .await
                            .expect("expire");
                        if ended.is_empty() {
                            return mine;
                        }
                        mine.extend(ended.into_iter().map(|a| a.id));
                    }
                })
            })
            .collect();
        let mut ended = Vec::new();
        for sweeper in sweepers {
            ended.extend(sweeper.await.expect("join"));
        }
        ended.sort();
        let total = ended.len();
        ended.dedup();
        assert_eq!(total, ended.len(), "no approval timed out twice");
        ids.sort();
        assert_eq!(ended, ids, "every due approval timed out");
        let client = pools[2].get().await.expect("a connection");
        let timed_out: i64 = client
            .query_one(
                "SELECT count(*) FROM approvals WHERE status = $1",
                &[&approvals::status_code(Status::TimedOut)],
            )
            .await
            .expect("count")
            .get(0);
        assert_eq!(timed_out, 90);
    }

    #[actix_rt::test]
    async fn a_decision_reaches_a_listener_on_another_instance_only_once_committed() {
        use super::super::listen::{self, Wake};
        let Some(db) = TestDb::create("a_decision_reaches_a_listener").await else {
            return;
        };
        let pools = instances(&db).await;
        let config: tokio_postgres::Config = db.url.parse().expect("the test URL parses");
        let mut wakes = listen::spawn(config, approvals::CHANGES);
        let limit = Duration::from_secs(10);
        assert_eq!(
            super::next_wake(&mut wakes, limit).await,
            Some(Wake::Resync)
        );
        let approval = new_approval(None, Duration::from_secs(600));
        let mut a = pools[0].get().await.expect("instance A");
        approvals::create(&mut a, &approval, &[], &[])
            .await
            .expect("create");
        let id = approval.id.to_string();
        assert_eq!(
            super::next_wake(&mut wakes, limit).await,
            Some(Wake::Changed(id.clone()))
        );
        let mut c = pools[2].get().await.expect("instance C");
        let won = approvals::decide(
            &mut c,
            approval.id,
            decision(Outcome::Approve, "alice"),
            Utc::now(),
            &[],
            &[],
        )
        .await
        .expect("decide");
        assert!(matches!(won, Decided::Won(_)));
        assert_eq!(
            super::next_wake(&mut wakes, limit).await,
            Some(Wake::Changed(id))
        );
        // A decision that loses writes nothing and wakes nobody.
        let lost = approvals::decide(
            &mut a,
            approval.id,
            decision(Outcome::Reject, "bob"),
            Utc::now(),
            &[],
            &[],
        )
        .await
        .expect("decide");
        assert!(matches!(lost, Decided::AlreadyEnded(ref e) if e.status == Status::Approved));
        assert_eq!(
            super::next_wake(&mut wakes, Duration::from_millis(300)).await,
            None
        );
    }
}
