//! The store through its public surface: atomic changes, read-your-writes, restarts.
use super::*;
use crate::domain::NewApproval;
use crate::notification::Event;
use crate::store::millis;

fn approval(key: Option<&str>) -> Approval {
    Approval::create(
        ApprovalId::new(),
        NewApproval {
            idempotency_key: key.map(str::to_string),
            ..NewApproval::sample()
        },
        millis(chrono::Utc::now().timestamp_millis()),
    )
}

/// A staged change is read back before its commit, and after the commit it is in sled with
/// its index and queue entries: the same after a reopen.
#[actix_rt::test]
async fn staged_changes_read_back_and_land_together_on_commit() {
    let dir = tempfile::tempdir().expect("dir");
    let a = approval(Some("k1"));
    let written = {
        let store = SledStore::open(dir.path()).expect("open");
        let written = store
            .apply(&Change {
                approval: &a,
                previous: None,
                event: Some(Event::Created),
                channels: &[Channel::Console, Channel::File],
                request_id: Some("r1"),
                grant: None,
                events: &[],
            })
            .expect("apply");
        assert_eq!(
            store.get(a.id).expect("get"),
            Some(a.clone()),
            "read your writes"
        );
        assert_eq!(store.find_idempotent("ci", "k1").expect("idem"), Some(a.id));
        assert_eq!(
            store.queues().scan(Channel::Console).expect("scan").0,
            0,
            "not applied yet"
        );
        store.commit().wait().await.expect("commit");
        assert_eq!(store.queues().scan(Channel::Console).expect("scan").0, 1);
        written
    };
    let store = SledStore::open(dir.path()).expect("reopen");
    assert_eq!(store.get(a.id).expect("get"), Some(a.clone()));
    assert_eq!(store.find_idempotent("ci", "k1").expect("idem"), Some(a.id));
    assert_eq!(
        store.count_by_status().expect("counts")[&Status::Pending],
        1
    );
    for (channel, seq) in written.queued {
        let entry = store
            .queues()
            .get(channel, seq)
            .expect("get")
            .expect("queued");
        assert_eq!(entry.approval, a);
        assert_eq!(entry.request_id.as_deref(), Some("r1"));
    }
}

/// A commit that fails is answered with an error, and `revert` undoes what it applied.
#[actix_rt::test]
async fn a_failed_commit_is_reported_and_reverted() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SledStore::open(dir.path()).expect("open");
    let a = approval(Some("k2"));
    let change = Change {
        approval: &a,
        previous: None,
        event: Some(Event::Created),
        channels: &[Channel::Telegram],
        request_id: None,
        grant: None,
        events: &[],
    };
    let written = store.apply(&change).expect("apply");
    store.faults().fail_next(1);
    assert!(store.commit().wait().await.is_err());
    assert!(!store.committing());
    store.revert(&change, &written).expect("revert");
    assert_eq!(store.get(a.id).expect("get"), None);
    assert_eq!(store.find_idempotent("ci", "k2").expect("idem"), None);
    assert_eq!(store.queues().scan(Channel::Telegram).expect("scan").0, 0);
    store
        .commit()
        .wait()
        .await
        .expect("a later commit succeeds");
    assert!(store.committing());
}

/// A queue entry whose journaled commit failed (and that nobody reverts: a hand-over) is held
/// by nothing but memory; the full commit that retries it spills it into sled before the flush.
#[actix_rt::test]
async fn a_full_commit_spills_an_entry_its_failed_commit_left_in_memory() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SledStore::open(dir.path()).expect("open");
    let a = approval(None);
    let written = store
        .apply(&Change {
            approval: &a,
            previous: None,
            event: Some(Event::Created),
            channels: &[Channel::File],
            request_id: None,
            grant: None,
            events: &[],
        })
        .expect("apply");
    store.faults().fail_next(1);
    assert!(store.commit().wait().await.is_err());
    assert_eq!(store.diagnostics().queue_entries_unspilled, 1);
    store.queues().commit().wait().await.expect("full commit");
    assert_eq!(store.diagnostics().queue_entries_unspilled, 0);
    let sled_queues = store.tree("queues").expect("tree");
    for (channel, seq) in written.queued {
        assert!(
            sled_queues
                .contains_key(queue::key(channel, seq))
                .expect("read"),
            "the entry is in sled"
        );
    }
}

/// History staged without a ticket is made durable by the idle flusher, and a failure there is
/// reported like any other commit: the store says it is not committing until a sync succeeds.
#[actix_rt::test]
async fn history_without_a_ticket_is_committed_when_idle_and_its_failure_is_reported() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SledStore::open(dir.path()).expect("open");
    let id = approval(None).id;
    let syncs = || store.diagnostics().last_flush_ms;
    let wait_until = |what: &str, check: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !check() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };

    store.faults().fail_next(1);
    store.queues().record(id, &AuditEvent::now("delivered"));
    wait_until("the idle commit to fail", &|| !store.committing());
    // Applied but not synced: the next idle pass has nothing staged, so a ticket syncs it.
    assert_eq!(store.events(id).expect("events").len(), 1);

    let before = syncs();
    store.queues().record(id, &AuditEvent::now("delivered"));
    wait_until("an idle commit to succeed", &|| {
        store.committing() && syncs() > before
    });
    assert_eq!(store.events(id).expect("events").len(), 2);
}

/// Entries observed for one approval within the window share one sled key; they read back as
/// separate entries, in the order recorded, after the idle pass and after a reopen (the final
/// flush writes entries still in their window).
#[actix_rt::test]
async fn observed_history_entries_share_a_key_and_read_back_one_by_one() {
    let dir = tempfile::tempdir().expect("dir");
    let (a, b) = (approval(None).id, approval(None).id);
    let channels = ["console", "file", "telegram"];
    let kinds = |store: &SledStore, id| -> Vec<Option<String>> {
        let events = store.events(id).expect("events");
        events.into_iter().map(|event| event.channel).collect()
    };
    {
        let store = SledStore::open(dir.path()).expect("open");
        for channel in channels {
            store
                .queues()
                .record(a, &AuditEvent::now("delivered").on(channel));
        }
        store
            .queues()
            .record(b, &AuditEvent::now("delivered").on("file"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while kinds(&store, a).len() < 3 {
            assert!(std::time::Instant::now() < deadline, "never applied");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(
            super::record::entries(&store.inner.approvals.get(a.to_bytes()).unwrap().unwrap())
                .count(),
            1,
            "one entry for the three events"
        );
        let expected: Vec<_> = channels.iter().map(|c| Some(c.to_string())).collect();
        assert_eq!(kinds(&store, a), expected);
        // Written on a graceful stop even inside its window.
        store
            .queues()
            .record(b, &AuditEvent::now("delivered").on("console"));
    }
    let store = SledStore::open(dir.path()).expect("reopen");
    assert_eq!(kinds(&store, a).len(), 3);
    assert_eq!(
        kinds(&store, b),
        [Some("file".to_string()), Some("console".to_string())]
    );
}

/// sled's id counter is not in a backup: a restored store must still issue sequence numbers
/// above every one its data holds, or a new dead letter overwrites a restored one.
#[actix_rt::test]
async fn a_restored_store_issues_sequence_numbers_above_the_backups() {
    let dir = tempfile::tempdir().expect("dir");
    let entry = QueueEntry {
        event: Event::Created,
        approval: approval(None),
        request_id: None,
        only: None,
    };
    let file = dir.path().join("gate.backup");
    // sled raises its counter by a million on every open: a store that has been restarted a
    // few times issues numbers a fresh one (the restored store) will not reach for a while.
    for _ in 0..3 {
        let store = SledStore::open(&dir.path().join("a")).expect("open");
        store
            .queues()
            .enqueue(Channel::File, &entry)
            .expect("enqueue");
    }
    let highest = {
        let store = SledStore::open(&dir.path().join("a")).expect("open");
        let queues = store.queues();
        let mut highest = 0;
        for _ in 0..3 {
            highest = queues.enqueue(Channel::File, &entry).expect("enqueue");
        }
        queues.commit().wait().await.expect("commit");
        queues
            .bury(Channel::File, highest, "refused")
            .expect("bury");
        queues.commit().wait().await.expect("commit");
        store.backup(&file).expect("backup");
        highest
    };
    let restored = dir.path().join("b");
    backup::restore(&file, &restored).expect("restore");
    let store = SledStore::open(&restored).expect("open the restored store");
    let queues = store.queues();
    let next = queues.enqueue(Channel::File, &entry).expect("enqueue");
    assert!(
        next > highest,
        "{next} after a restore of a store at {highest}"
    );
    queues.commit().wait().await.expect("commit");
    queues
        .bury(Channel::File, next, "refused again")
        .expect("bury");
    let dead = queues.dead_letters(0, 10).expect("dead letters");
    assert_eq!(dead.len(), 2, "the restored dead letter is kept");
}

/// A batch whose journal append fails takes the writes nobody reverts (a hand-over, an edit,
/// an undo, history) with it: they go back to the staging and land with the next commit, so
/// their owner's retry finds them instead of a sequence that does not exist.
#[actix_rt::test]
async fn a_failed_batch_puts_back_the_writes_nobody_reverts() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SledStore::open(dir.path()).expect("open");
    let queues = store.queues();
    let entry = QueueEntry {
        event: Event::Created,
        approval: approval(None),
        request_id: None,
        only: None,
    };
    store.faults().inject(1, CommitFault::Refuse);
    let seq = queues.enqueue(Channel::File, &entry).expect("enqueue");
    assert!(
        queues.commit().wait().await.is_err(),
        "the batch is refused"
    );
    queues.commit().wait().await.expect("the next commit");
    assert!(
        queues.get(Channel::File, seq).expect("get").is_some(),
        "the hand-over outlived the failed batch"
    );
}

/// Retention goes through the journal: a crash image taken after a retention pass (sled not
/// flushed since, the approval's creation still in the journal) does not bring the removed
/// approval back. And it counts from the end, not the creation.
#[actix_rt::test]
async fn retention_removals_are_journaled_and_count_from_the_end() {
    let dir = tempfile::tempdir().expect("dir");
    let live = dir.path().join("live");
    let now = chrono::Utc::now();
    let hours = |n| now - chrono::Duration::hours(n);
    let ended = |created: chrono::DateTime<chrono::Utc>, ended_at| {
        let id = ApprovalId::from_bytes(
            ulid::Ulid::from_parts(created.timestamp_millis() as u64, rand_bits()).to_bytes(),
        );
        let mut approval = Approval::create(id, NewApproval::sample(), created);
        approval
            .apply(
                crate::domain::Decision {
                    outcome: crate::domain::Outcome::Approve,
                    actor: crate::domain::Actor::System,
                    comment: None,
                },
                ended_at,
            )
            .expect("ends");
        approval
    };
    let old = ended(hours(5), hours(4));
    let ended_lately = ended(hours(5), now);
    let store = SledStore::open(&live).expect("open");
    store.checkpoint_every(std::time::Duration::from_secs(3600));
    for approval in [&old, &ended_lately] {
        store.apply(&Change::quiet(approval, None)).expect("apply");
    }
    store.commit().wait().await.expect("commit");
    let removed = store
        .remove_ended_before(hours(1).timestamp_millis(), 10)
        .expect("retention");
    assert_eq!(
        removed,
        [Status::Approved],
        "only the one that ended 4 h ago"
    );
    store.commit().wait().await.expect("commit");
    assert_eq!(store.get(old.id).expect("get"), None);
    assert!(store.get(ended_lately.id).expect("get").is_some());
    let image = crash_image(&live, &dir.path().join("image"));
    let recovered = SledStore::open(&image).expect("open the image");
    assert_eq!(
        recovered.get(old.id).expect("get"),
        None,
        "retention's removal was replayed too"
    );
    assert!(recovered.get(ended_lately.id).expect("get").is_some());
    drop(store);
}

/// A crash image of the store at `live`: its folder's files as they are now, copied to `image`
/// while the store runs (never closed), for a store opened on it to recover from.
pub(super) fn crash_image(live: &std::path::Path, image: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir(image).expect("mkdir");
    for file in std::fs::read_dir(live).expect("ls") {
        let file = file.expect("entry");
        if file.file_type().expect("type").is_file() {
            std::fs::copy(file.path(), image.join(file.file_name())).expect("copy");
        }
    }
    image.to_path_buf()
}

fn rand_bits() -> u128 {
    u128::from(fastrand::u64(..))
}

#[test]
fn the_message_log_records_each_copy_once() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SledStore::open(dir.path()).expect("open");
    let queues = store.queues();
    let id = ApprovalId::new();
    let m1 = crate::domain::TelegramMessageRef {
        chat_id: 1,
        message_id: 10,
    };
    let m2 = crate::domain::TelegramMessageRef {
        chat_id: 1,
        message_id: 11,
    };
    assert!(queues.add_message_ref(id, m1).expect("add"));
    assert!(!queues.add_message_ref(id, m1).expect("add"));
    assert!(queues.add_message_ref(id, m2).expect("add"));
    assert_eq!(queues.message_refs(id), vec![m1, m2]);
    assert_eq!(
        queues.meta_init("k", b"first").expect("init"),
        b"first".to_vec()
    );
    assert_eq!(
        queues.meta_init("k", b"second").expect("init"),
        b"first".to_vec(),
        "the first value stays"
    );
}
