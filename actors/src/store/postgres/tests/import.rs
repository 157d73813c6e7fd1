//! A sled backup imported into PostgreSQL: approvals with their deadlines, history, grants,
//! queued notifications, dead letters and `meta`, and the imported data works there.

use std::time::Duration;

use chrono::Utc;

use super::super::approvals::{self, Created};
use super::super::import::{ImportError, import_backup};
use super::super::testing::TestDb;
use super::migrated;
use crate::domain::{
    Actor, Approval, ApprovalId, AuditEvent, Decision, Grant, NewApproval, Outcome, Status,
};
use crate::notification::Event;
use crate::store::{ApprovalStore, Change, Channel, SledStore, millis};

fn approval(key: Option<&str>, timeout: Duration) -> Approval {
    Approval::create(
        ApprovalId::new(),
        NewApproval {
            idempotency_key: key.map(str::to_string),
            timeout,
            ..NewApproval::sample()
        },
        // Records keep milliseconds.
        millis(Utc::now().timestamp_millis()),
    )
}

/// Stores a new approval in `store`, announced on `channels`, with a "created" history entry.
fn create(store: &SledStore, approval: &Approval, channels: &[Channel]) -> crate::store::Written {
    store
        .apply(&Change {
            approval,
            previous: None,
            event: Some(Event::Created),
            channels,
            request_id: None,
            grant: None,
            events: &[AuditEvent::now("created")],
        })
        .expect("create")
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.expect(sql).get(0)
}

#[actix_rt::test]
async fn a_sled_backup_imports_into_postgres_and_works_there() {
    let Some(db) = TestDb::create("a_sled_backup_imports_into_postgres").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = SledStore::open(&dir.path().join("store")).expect("open sled");

    // A pending approval announced on two channels, one of whose entries became a dead letter.
    let pending = approval(Some("k1"), Duration::from_secs(7200));
    let written = create(&store, &pending, &[Channel::Console, Channel::File]);
    // An approval approved "for this session", with its grant.
    let created = approval(None, Duration::from_secs(600));
    create(&store, &created, &[]);
    let mut decided = created.clone();
    let now = millis(Utc::now().timestamp_millis());
    decided
        .apply(
            Decision {
                outcome: Outcome::Approve,
                actor: Actor::Operator("alice".into()),
                comment: None,
            },
            now,
        )
        .expect("approve");
    let grant = Grant {
        id: ulid::Ulid::new().to_string(),
        session_id: decided.session_id.clone(),
        tool_name: decided.tool_name.clone(),
        requested_by: decided.requested_by.clone(),
        granted_by: "operator:alice".into(),
        approval_id: decided.id.to_string(),
        created_at_ms: now.timestamp_millis(),
        expires_at_ms: now.timestamp_millis() + 3_600_000,
    };
    store
        .apply(&Change {
            approval: &decided,
            previous: Some(&created),
            event: Some(Event::Ended),
            channels: &[],
            request_id: None,
            grant: Some(&grant),
            events: &[AuditEvent::now("decided")],
        })
        .expect("decide");
    store.commit().wait().await.expect("commit");
    let file_seq = written
        .queued
        .iter()
        .find(|(channel, _)| *channel == Channel::File)
        .map(|(_, seq)| *seq)
        .expect("queued to the file channel");
    let queues = store.queues();
    queues
        .bury(Channel::File, file_seq, "disk full")
        .expect("bury");
    queues.commit().wait().await.expect("commit the burial");
    let backup = dir.path().join("backup.agb");
    store.backup(&backup).expect("back up");
    drop(queues);
    drop(store);

    let pool = migrated(&db).await;
    let mut client = pool.get().await.expect("a connection");
    let imported = import_backup(&mut client, &backup).await.expect("import");
    assert_eq!(imported.approvals, 2, "{imported:?}");
    assert_eq!(imported.grants, 1, "{imported:?}");
    assert_eq!(imported.dead_letters, 1, "{imported:?}");
    assert!(imported.events >= 3, "{imported:?}");

    // The approvals are the same, the pending one with its deadline.
    let read = approvals::read(&client, pending.id).await.expect("read");
    assert_eq!(read.as_ref(), Some(&pending));
    let read = approvals::read(&client, decided.id).await.expect("read");
    assert_eq!(read.map(|a| a.status), Some(Status::Approved));
    let deadline: i64 = client
        .query_one("SELECT expires_at_ms FROM approvals WHERE status = 0", &[])
        .await
        .expect("the pending row")
        .get(0);
    assert_eq!(deadline, pending.expires_at.timestamp_millis());
    // Queued notifications, the dead letter, the grant and meta came along.
    assert_eq!(
        count(&client, "SELECT count(*) FROM outbox WHERE channel = 1").await,
        1
    );
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM dead_letters WHERE reason = 'disk full'"
        )
        .await,
        1
    );
    assert_eq!(count(&client, "SELECT count(*) FROM grants").await, 1);
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM meta WHERE name = 'seq_floor'"
        )
        .await,
        1
    );

    // And they work there: the idempotency key still names the pending approval, and its
    // deadline times it out.
    let retry = approval(Some("k1"), Duration::from_secs(7200));
    match approvals::create(&client, &retry, &[], &[])
        .await
        .expect("create")
    {
        Created::Existing(existing) => assert_eq!(existing.id, pending.id),
        Created::New(_) => panic!("the imported idempotency key was not honoured"),
    }
    let later = pending.expires_at + chrono::Duration::seconds(1);
    let ended = approvals::expire_due(&mut client, later, 10)
        .await
        .expect("expire");
    assert_eq!(
        ended.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![pending.id]
    );

    // A second import is refused: the database is not empty.
    let again = import_backup(&mut client, &backup).await;
    assert!(matches!(again, Err(ImportError::NotEmpty(2))), "{again:?}");
}

#[actix_rt::test]
async fn a_truncated_backup_imports_nothing() {
    let Some(db) = TestDb::create("a_truncated_backup_imports_nothing").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = SledStore::open(&dir.path().join("store")).expect("open sled");
    for _ in 0..3 {
        let a = approval(None, Duration::from_secs(600));
        create(&store, &a, &[]);
    }
    store.commit().wait().await.expect("commit");
    let backup = dir.path().join("backup.agb");
    store.backup(&backup).expect("back up");
    let bytes = std::fs::read(&backup).expect("read");
    std::fs::write(&backup, &bytes[..bytes.len() - 20]).expect("truncate");

    let pool = migrated(&db).await;
    let mut client = pool.get().await.expect("a connection");
    let error = import_backup(&mut client, &backup)
        .await
        .expect_err("a truncated file is refused");
    assert!(error.to_string().contains("truncated"), "{error}");
    assert_eq!(
        count(&client, "SELECT count(*) FROM approvals").await,
        0,
        "nothing imported"
    );
}

#[actix_rt::test]
async fn sled_to_postgres_and_back_keeps_what_happened_on_postgres() {
    use crate::store::backup;
    let Some(db) = TestDb::create("sled_to_postgres_and_back").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = SledStore::open(&dir.path().join("store")).expect("open sled");
    let pending = approval(Some("k1"), Duration::from_secs(7200));
    let written = create(&store, &pending, &[Channel::Console, Channel::File]);
    store.commit().wait().await.expect("commit");
    let (_, file_seq) = written.queued[1];
    store
        .queues()
        .bury(Channel::File, file_seq, "disk full")
        .expect("bury");
    store.queues().commit().wait().await.expect("commit");
    let to_postgres = dir.path().join("to-postgres.agb");
    store.backup(&to_postgres).expect("back up");
    drop(store);

    // On PostgreSQL: imported, then decided there.
    let pool = migrated(&db).await;
    let mut client = pool.get().await.expect("a connection");
    import_backup(&mut client, &to_postgres)
        .await
        .expect("import");
    let mut decided_event = AuditEvent::now("decided");
    decided_event.actor = Some("operator:bob".into());
    let won = approvals::decide(
        &mut client,
        pending.id,
        Decision {
            outcome: Outcome::Reject,
            actor: Actor::Operator("bob".into()),
            comment: Some("not now".into()),
        },
        millis(Utc::now().timestamp_millis()),
        &[decided_event],
        &[],
    )
    .await
    .expect("decide on PostgreSQL");
    assert!(matches!(won, approvals::Decided::Won(_)));

    // And back to sled.
    let to_sled = dir.path().join("to-sled.agb");
    super::super::export::export_backup(&mut client, &to_sled)
        .await
        .expect("export");
    let restored_path = dir.path().join("restored");
    backup::restore(&to_sled, &restored_path).expect("restore into sled");
    let restored = SledStore::open(&restored_path).expect("open the restored store");
    let back = restored
        .get(pending.id)
        .expect("get")
        .expect("the approval came back");
    assert_eq!(
        back.status,
        Status::Rejected,
        "the decision made on PostgreSQL"
    );
    assert_eq!(back.comment.as_deref(), Some("not now"));
    assert_eq!(
        restored.find_idempotent("ci", "k1").expect("idempotency"),
        Some(pending.id),
        "the idempotency index was rebuilt"
    );
    assert_eq!(
        restored
            .count_by_status()
            .expect("counts")
            .get(&Status::Rejected),
        Some(&1),
        "the status index was rebuilt"
    );
    let kinds: Vec<String> = restored
        .events(pending.id)
        .expect("history")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(
        kinds.contains(&"created".to_string()) && kinds.contains(&"decided".to_string()),
        "{kinds:?}"
    );
    assert_eq!(restored.queues().dead_letter_count(), 1);
    // The restored store goes on: a new change commits, its numbers above the exported ones.
    let next = approval(None, Duration::from_secs(600));
    create(&restored, &next, &[Channel::Console]);
    restored
        .commit()
        .wait()
        .await
        .expect("commit on the restored store");
    assert_eq!(
        restored
            .count_by_status()
            .expect("counts")
            .get(&Status::Pending),
        Some(&1)
    );
}
