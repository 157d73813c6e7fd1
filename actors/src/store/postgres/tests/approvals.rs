//! Approval rows across three instances: idempotency, racing decisions, sweepers, wake-ups.

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
            cwd: None,
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
                    let client = pool.get().await.expect("a connection");
                    approvals::create(&client, &approval, &[], &[]).await
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
        let client = pools[0].get().await.expect("a connection");
        approvals::create(&client, &approval, &[], &[])
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
    let client = pools[0].get().await.expect("a connection");
    let mut ids = Vec::new();
    for _ in 0..90 {
        let approval = new_approval(None, Duration::from_millis(1));
        approvals::create(&client, &approval, &[], &[])
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
async fn a_decision_reaches_a_listener_on_another_instance_and_a_create_wakes_nobody() {
    use super::super::listen::{self, Wake};
    let Some(db) = TestDb::create("a_decision_reaches_a_listener").await else {
        return;
    };
    let pools = instances(&db).await;
    let (config, tls) = db.connect_config();
    let mut wakes = listen::spawn(config, tls, approvals::CHANGES);
    let limit = Duration::from_secs(10);
    assert_eq!(
        super::listen::next_wake(&mut wakes, limit).await,
        Some(Wake::Resync)
    );
    let approval = new_approval(None, Duration::from_secs(600));
    let mut a = pools[0].get().await.expect("instance A");
    approvals::create(&a, &approval, &[], &[])
        .await
        .expect("create");
    let id = approval.id.to_string();
    // A create wakes nobody (nobody can wait on it before it exists; and a NOTIFY would
    // serialise every create's commit).
    assert_eq!(
        super::listen::next_wake(&mut wakes, Duration::from_millis(300)).await,
        None
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
        super::listen::next_wake(&mut wakes, limit).await,
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
        super::listen::next_wake(&mut wakes, Duration::from_millis(300)).await,
        None
    );
}
