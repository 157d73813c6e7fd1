//! The layout on disk, through the store: a store of the previous layout opens and reads the
//! same; counts of ended approvals hold across a crash and a refused commit.
use super::super::staging::tag;
use super::super::*;
use crate::domain::{Actor, Decision, NewApproval, Outcome};

fn created() -> Approval {
    Approval::create(
        ApprovalId::new(),
        NewApproval::sample(),
        crate::store::millis(chrono::Utc::now().timestamp_millis()),
    )
}

fn decided(approval: &Approval, outcome: Outcome) -> Approval {
    let mut decided = approval.clone();
    let decision = Decision {
        outcome,
        actor: Actor::System,
        comment: None,
    };
    decided
        .apply(decision, chrono::Utc::now())
        .expect("decides");
    decided
}

/// The kinds of an approval's history entries, in order.
fn kinds(store: &SledStore, id: ApprovalId) -> Vec<String> {
    let history = store.events(id).expect("history");
    history.into_iter().map(|e| e.kind).collect()
}

fn keys(tree: &sled::Tree) -> Vec<Vec<u8>> {
    tree.iter()
        .keys()
        .map(|k| k.expect("key").to_vec())
        .collect()
}

/// A store written by the previous version (a history key per entry, every approval in the
/// status index, schema 2) is rewritten at its first open: history in its approval's value,
/// only pending approvals indexed, the ended ones counted; and reads answer as before.
#[actix_rt::test]
async fn a_store_of_the_previous_layout_is_rewritten_once_and_reads_the_same() {
    let dir = tempfile::tempdir().expect("dir");
    let pending = created();
    let approved = decided(&created(), Outcome::Approve);
    let rejected = decided(&created(), Outcome::Reject);
    {
        let db = sled::open(dir.path()).expect("sled");
        let (approvals, by_status, events, meta) = (
            db.open_tree("approvals").expect("tree"),
            db.open_tree("by_status").expect("tree"),
            db.open_tree("events").expect("tree"),
            db.open_tree("meta").expect("tree"),
        );
        for a in [&pending, &approved, &rejected] {
            approvals
                .insert(a.id.to_bytes(), encode_record(a).expect("encode"))
                .expect("insert");
            by_status
                .insert(index_key(a.status, a.id), &[])
                .expect("insert");
        }
        // Two entries, the second observed together (an array), under keys id ++ seq.
        let entry = |kind: &str| AuditEvent::now(kind);
        let one = serde_json::to_vec(&entry("created")).expect("json");
        let two = serde_json::to_vec(&[entry("delivered"), entry("edited")]).expect("json");
        events
            .insert(record::key_of(&approved.id.to_bytes(), 9), two)
            .expect("insert");
        events
            .insert(record::key_of(&approved.id.to_bytes(), 3), one)
            .expect("insert");
        meta.insert(SCHEMA_KEY, &[2]).expect("schema");
        db.flush().expect("flush");
    }
    for _ in 0..2 {
        let store = SledStore::open(dir.path()).expect("open");
        assert_eq!(
            kinds(&store, approved.id),
            ["created", "delivered", "edited"],
            "in order, all kept"
        );
        let counts = store.count_by_status().expect("counts");
        assert_eq!(counts[&Status::Pending], 1);
        assert_eq!(counts[&Status::Approved], 1);
        assert_eq!(counts[&Status::Rejected], 1);
        assert_eq!(counts[&Status::TimedOut], 0);
        let listed = |status| {
            store
                .list(Some(status), None, 10)
                .expect("list")
                .into_iter()
                .map(|a| a.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(listed(Status::Approved), [approved.id]);
        assert_eq!(listed(Status::Rejected), [rejected.id]);
        assert_eq!(listed(Status::Pending), [pending.id]);
        assert!(
            keys(&store.inner.events).is_empty(),
            "history moved into the approvals' values"
        );
        assert_eq!(keys(&store.inner.approvals).len(), 3);
        assert_eq!(
            keys(&store.inner.by_status),
            [
                index_key(Status::Pending, pending.id).to_vec(),
                status_index::ENDED_KEY.to_vec()
            ],
            "only the pending approval indexed, and the counts"
        );
    }
}

/// The counts of ended approvals are written with the change that ends one: a crash image
/// (the folder copied while the store runs, so the journal is replayed) reads them back, and a
/// refused commit's revert takes its count back too.
#[actix_rt::test]
async fn ended_counts_survive_a_crash_and_follow_a_refused_commit_back() {
    let dir = tempfile::tempdir().expect("dir");
    let live = dir.path().join("live");
    let store = SledStore::open(&live).expect("open");
    store.checkpoint_every(std::time::Duration::from_secs(3600));
    let (a, b) = (created(), created());
    for approval in [&a, &b] {
        store.apply(&Change::quiet(approval, None)).expect("create");
    }
    let a_approved = decided(&a, Outcome::Approve);
    store
        .apply(&Change::quiet(&a_approved, Some(&a)))
        .expect("decide");
    store.commit().wait().await.expect("commit");
    // A decision whose commit is refused, reverted by its owner.
    let b_rejected = decided(&b, Outcome::Reject);
    let refused = Change::quiet(&b_rejected, Some(&b));
    let written = store.apply(&refused).expect("decide");
    store.faults().fail_next(1);
    assert!(store.commit().wait().await.is_err());
    store.revert(&refused, &written).expect("revert");
    store.commit().wait().await.expect("commit");
    let expect = |store: &SledStore, what: &str| {
        let counts = store.count_by_status().expect("counts");
        assert_eq!(
            (
                counts[&Status::Pending],
                counts[&Status::Approved],
                counts[&Status::Rejected]
            ),
            (1, 1, 0),
            "{what}"
        );
        let rejected = store.list(Some(Status::Rejected), None, 10).expect("list");
        assert!(rejected.is_empty(), "{what}: nothing rejected");
    };
    expect(&store, "running");
    let image = super::super::tests::crash_image(&live, &dir.path().join("image"));
    expect(
        &SledStore::open(&image).expect("open the image"),
        "after a crash",
    );
    drop(store);
}

/// History observed after retention removed its approval (a late delivery) lands alone under
/// the approval's key: it reads as no approval, a backup leaves it out, and the next
/// retention pass removes it.
#[actix_rt::test]
async fn history_that_outlives_its_approval_is_no_approval_and_goes_with_retention() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SledStore::open(&dir.path().join("live")).expect("open");
    let a = created();
    let ended = decided(&a, Outcome::Approve);
    store.apply(&Change::quiet(&a, None)).expect("create");
    store
        .apply(&Change::quiet(&ended, Some(&a)))
        .expect("decide");
    store.commit().wait().await.expect("commit");
    let later = chrono::Utc::now().timestamp_millis() + 60_000;
    assert_eq!(
        store.remove_ended(later, 10).expect("retention"),
        [Status::Approved]
    );
    store.commit().wait().await.expect("commit");
    store.record(a.id, &AuditEvent::now("delivered"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while store
        .inner
        .approvals
        .get(a.id.to_bytes())
        .expect("get")
        .is_none()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the late entry never landed"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(store.get(a.id).expect("get"), None);
    assert!(store.list(None, None, 10).expect("list").is_empty());
    assert_eq!(
        store.count_by_status().expect("counts")[&Status::Approved],
        0
    );

    let file = dir.path().join("backup");
    store.backup(&file).expect("backup");
    let restored = dir.path().join("restored");
    backup::restore(&file, &restored).expect("restore");
    let restored = SledStore::open(&restored).expect("open the restored store");
    assert!(keys(&restored.inner.approvals).is_empty(), "left out");

    store.remove_ended(later, 10).expect("retention");
    store.commit().wait().await.expect("commit");
    assert!(
        store
            .inner
            .approvals
            .get(a.id.to_bytes())
            .expect("get")
            .is_none()
    );
}

/// A migration cut off by a crash (an entry already merged into its approval's value but its
/// old key not yet removed, the status index half cleared, no schema mark) is finished by the
/// next open: each entry once, the counts right.
#[actix_rt::test]
async fn a_migration_cut_off_by_a_crash_is_finished_by_the_next_open() {
    let dir = tempfile::tempdir().expect("dir");
    let (pending, approved) = (created(), decided(&created(), Outcome::Approve));
    let id = approved.id.to_bytes();
    {
        let db = sled::open(dir.path()).expect("sled");
        let approvals = db.open_tree("approvals").expect("tree");
        record::attach(&approvals);
        let events = db.open_tree("events").expect("tree");
        for a in [&pending, &approved] {
            approvals
                .insert(a.id.to_bytes(), encode_record(a).expect("encode"))
                .expect("insert");
        }
        let entry = |kind: &str| serde_json::to_vec(&AuditEvent::now(kind)).expect("json");
        for (seq, kind) in [(3, "created"), (9, "delivered")] {
            events
                .insert(record::key_of(&id, seq), entry(kind))
                .expect("insert");
        }
        // Moved already, its old key still there.
        let moved = record::key_of(&id, 3);
        record::apply(
            &approvals,
            tag(Target::Events),
            &moved,
            Some(&entry("created")),
        )
        .expect("an entry")
        .expect("merge");
        // Only the ended approval's index key left; no counts record; no schema mark.
        db.open_tree("by_status")
            .expect("tree")
            .insert(index_key(approved.status, approved.id), &[])
            .expect("insert");
        db.flush().expect("flush");
    }
    let store = SledStore::open(dir.path()).expect("open");
    assert_eq!(
        kinds(&store, approved.id),
        ["created", "delivered"],
        "each entry once"
    );
    let counts = store.count_by_status().expect("counts");
    assert_eq!(
        (counts[&Status::Pending], counts[&Status::Approved]),
        (1, 1)
    );
    assert!(keys(&store.inner.events).is_empty());
}
