//! A group of creates in one statement (`creates.rs`): what it stores, what it skips, and the
//! outbox rows it hands back to each create.

use std::time::Duration;

use chrono::Utc;

use super::super::approvals::{self, Notice};
use super::super::creates::{NewApproval, create_many};
use super::super::testing::TestDb;
use super::migrated;
use crate::domain::{Approval, ApprovalId, AuditEvent};

fn approval(key: Option<&str>, input: &str) -> Approval {
    Approval::create(
        ApprovalId::new(),
        crate::domain::NewApproval {
            session_id: "s".into(),
            tool_name: "Bash".into(),
            tool_input: input.into(),
            reason: None,
            agent: None,
            requested_by: "laptop".into(),
            idempotency_key: key.map(str::to_string),
            timeout: Duration::from_secs(600),
            max_timeout: None,
            idempotent_while_pending: false,
            cwd: None,
        },
        Utc::now(),
    )
}

fn notices(tag: u8) -> Vec<Notice> {
    vec![
        Notice {
            channel: 1,
            entry: vec![tag, 1],
        },
        Notice {
            channel: 2,
            entry: vec![tag, 2],
        },
    ]
}

#[actix_rt::test]
async fn a_group_stores_its_creates_with_their_rows_and_skips_taken_keys() {
    let Some(db) = TestDb::create("a_group_stores_its_creates").await else {
        return;
    };
    let pool = migrated(&db).await;
    let client = pool.get().await.expect("a connection");
    let holder = approval(Some("taken"), r#"{"command":"ls"}"#);
    approvals::create(&client, &holder, &[], &[])
        .await
        .expect("the key's holder");

    // a: plain; b: a key held before; c and d: one key twice in the group; e: a NUL in its
    // input (valid JSON that jsonb cannot hold).
    let group = [
        approval(None, r#"{"command":"make"}"#),
        approval(Some("taken"), r#"{"command":"rm -rf /"}"#),
        approval(Some("twice"), r#"{"command":"a"}"#),
        approval(Some("twice"), r#"{"command":"b"}"#),
        approval(None, r#"{"command":"a\u0000b"}"#),
    ];
    let events = [AuditEvent::now("created")];
    let notices: Vec<Vec<Notice>> = (0..group.len() as u8).map(notices).collect();
    let news: Vec<NewApproval<'_>> = group
        .iter()
        .zip(&notices)
        .map(|(approval, notices)| NewApproval {
            approval,
            events: &events,
            notices,
        })
        .collect();
    let outcomes = create_many(&client, &news).await.expect("the group");

    let stored: Vec<bool> = outcomes.iter().map(Option::is_some).collect();
    assert_eq!(stored, [true, false, true, false, true]);
    // Each stored create is handed its own outbox rows: its channels, in its notices' order,
    // holding its entries.
    let mut last_seq = 0;
    for (i, queued) in outcomes.iter().enumerate() {
        for (notice, (channel, seq)) in notices[i].iter().zip(queued.iter().flatten()) {
            assert_eq!(*channel, notice.channel);
            assert!(*seq > last_seq, "sequence numbers follow the group's order");
            last_seq = *seq;
            let row = client
                .query_one("SELECT channel, entry FROM outbox WHERE seq = $1", &[seq])
                .await
                .expect("the outbox row");
            assert_eq!(row.get::<_, i16>(0), notice.channel);
            assert_eq!(row.get::<_, Vec<u8>>(1), notice.entry);
        }
    }
    let count = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(sql, &[])
                .await
                .expect("count")
                .get::<_, i64>(0)
        }
    };
    assert_eq!(count("SELECT count(*) FROM approvals").await, 4);
    assert_eq!(count("SELECT count(*) FROM approval_events").await, 3);
    assert_eq!(count("SELECT count(*) FROM outbox").await, 6);
    // The record keeps the input exactly; the queryable copy holds what jsonb can.
    let nul = approvals::read(&client, group[4].id)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(nul.tool_input, r#"{"command":"a\u0000b"}"#);
    let copy: String = client
        .query_one(
            "SELECT tool_input->>'command' FROM approvals WHERE id = $1",
            &[&group[4].id.to_bytes().as_slice()],
        )
        .await
        .expect("the copy")
        .get(0);
    assert_eq!(copy, "a\u{fffd}b");
}

/// Through the store: a burst of creates is committed in groups, and a create the server
/// refuses fails alone (its group is retried create by create) while a repeated idempotency key
/// in the burst lands once and the repeat is answered with the holder.
#[actix_rt::test]
async fn in_a_burst_a_refused_create_fails_alone_and_a_repeated_key_lands_once() {
    use crate::store::postgres::backend::{PgBackendSettings, PgStore};
    use crate::store::{ApprovalStore, Change, Landed, StoreError};
    let Some(db) = TestDb::create("a_refused_create_fails_alone").await else {
        return;
    };
    let store = PgStore::open(PgBackendSettings {
        connection: db.settings(),
        instance: "test".into(),
        leader_lease: Duration::from_secs(10),
    })
    .expect("the store opens");
    // A row this database refuses, as a stand-in for any one bad row in a group.
    db.pool()
        .get()
        .await
        .expect("a connection")
        .batch_execute(
            "ALTER TABLE approvals ADD CONSTRAINT no_poison CHECK (tool_name <> 'Poison')",
        )
        .await
        .expect("the constraint");
    const POISON: usize = 10;
    const SAME_KEY: [usize; 2] = [20, 21];
    let burst: Vec<Approval> = (0..64)
        .map(|i| {
            let key = SAME_KEY.contains(&i).then_some("same");
            let mut approval = approval(key, r#"{"command":"make"}"#);
            if i == POISON {
                approval.tool_name = "Poison".into();
            }
            approval
        })
        .collect();
    let landings: Vec<_> = burst
        .iter()
        .map(|approval| {
            store
                .write(&Change::quiet(approval, None))
                .expect("submitted")
                .1
        })
        .collect();
    let mut outcomes = Vec::new();
    for landing in landings {
        outcomes.push(landing.wait().await);
    }
    for (i, outcome) in outcomes.iter().enumerate() {
        match i {
            POISON => assert!(
                matches!(outcome, Err(StoreError::Postgres(e)) if e.contains("no_poison")),
                "the refused create fails: {outcome:?}"
            ),
            i if SAME_KEY.contains(&i) => {}
            _ => assert!(
                matches!(outcome, Ok(Landed::Durable(_))),
                "create {i} lands: {outcome:?}"
            ),
        }
    }
    let [first, second] = SAME_KEY.map(|i| &outcomes[i]);
    let (won, lost) = match (first, second) {
        (Ok(Landed::Durable(_)), Ok(Landed::Lost(holder))) => (SAME_KEY[0], holder),
        (Ok(Landed::Lost(holder)), Ok(Landed::Durable(_))) => (SAME_KEY[1], holder),
        other => panic!("one of a repeated key lands, the other reads it: {other:?}"),
    };
    assert_eq!(lost.id, burst[won].id);
    let stored: i64 = db
        .pool()
        .get()
        .await
        .expect("a connection")
        .query_one("SELECT count(*) FROM approvals", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored, 62, "all but the refused one and the repeat");
}
