//! The journal's format and replay rules, on real files and a real sled.

use super::super::staging::Target;
use super::*;

fn op(target: Target, key: &[u8], value: Option<&[u8]>) -> Op {
    Op {
        target,
        key: key.to_vec(),
        value: value.map(<[u8]>::to_vec),
    }
}

fn open(dir: &Path) -> (sled::Db, [sled::Tree; 6]) {
    let db = sled::open(dir.join("sled")).expect("sled");
    let trees = ["a", "i", "s", "q", "g", "e"].map(|name| db.open_tree(name).expect("tree"));
    record::attach(&trees[0]);
    (db, trees)
}

#[test]
fn replay_applies_records_in_order_and_stops_at_a_torn_tail() {
    let dir = tempfile::tempdir().expect("dir");
    let mut scratch = Vec::new();
    {
        let mut journal = Journal::create(dir.path(), 7).expect("journal");
        let first = [
            op(Target::Approvals, b"x", Some(b"pending")),
            op(Target::Queues, b"q1", Some(b"entry")),
        ];
        journal.append(&first, &mut scratch).expect("append");
        journal
            .append(
                &[op(Target::Approvals, b"x", Some(b"approved"))],
                &mut scratch,
            )
            .expect("append");
        journal
            .append(&[op(Target::Queues, b"q1", None)], &mut scratch)
            .expect("append");
        // A crash in the middle of the next append: half a record.
        journal
            .append(&[op(Target::Approvals, b"y", Some(b"torn"))], &mut scratch)
            .expect("append");
        let cut = journal.len() - 3;
        journal.file.set_len(cut).expect("cut");
    }
    let (db, trees) = open(dir.path());
    let (journal, replayed) =
        Journal::recover(dir.path(), &db, &trees, &dir.path().join("sled/db")).expect("recover");
    assert_eq!(
        replayed,
        Replayed {
            files: 1,
            records: 3,
            ops: 4,
            torn: 1
        }
    );
    let x = trees[0].get(b"x").expect("get").expect("stored");
    assert_eq!(record::record(&x), Some(&b"approved"[..]));
    assert_eq!(trees[0].get(b"y").expect("get"), None);
    assert_eq!(trees[3].get(b"q1").expect("get"), None);
    assert_eq!(journal.generation, 8);
    let left: Vec<u64> = generations(dir.path())
        .expect("list")
        .into_iter()
        .map(|(generation, _)| generation)
        .collect();
    assert_eq!(left, vec![8], "replayed files are removed");
}

#[test]
fn a_corrupt_record_ends_replay_of_its_file_but_not_of_the_next() {
    let dir = tempfile::tempdir().expect("dir");
    let mut scratch = Vec::new();
    let mut journal = Journal::create(dir.path(), 1).expect("journal");
    journal
        .append(&[op(Target::Events, b"e1", Some(b"one"))], &mut scratch)
        .expect("append");
    journal
        .append(&[op(Target::Events, b"e2", Some(b"two"))], &mut scratch)
        .expect("append");
    let old = journal.rotate().expect("rotate").expect("old file");
    journal
        .append(&[op(Target::Events, b"e3", Some(b"three"))], &mut scratch)
        .expect("append");
    drop(journal);
    // Flip a byte in the second record of the first file.
    let mut bytes = std::fs::read(&old).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&old, bytes).expect("write");
    let (db, trees) = open(dir.path());
    let (_, replayed) =
        Journal::recover(dir.path(), &db, &trees, &dir.path().join("sled/db")).expect("recover");
    assert_eq!((replayed.files, replayed.records, replayed.torn), (2, 2, 1));
    assert!(trees[5].get(b"e1").expect("get").is_some());
    assert!(trees[5].get(b"e2").expect("get").is_none());
    assert!(trees[5].get(b"e3").expect("get").is_some());
}

#[test]
fn a_recycled_file_replays_only_its_own_generation() {
    let dir = tempfile::tempdir().expect("dir");
    let mut scratch = Vec::new();
    let mut journal = Journal::create(dir.path(), 1).expect("journal");
    for key in [b"old1", b"old2", b"old3"] {
        journal
            .append(&[op(Target::Events, key, Some(b"stale"))], &mut scratch)
            .expect("append");
    }
    let old = journal.rotate().expect("rotate").expect("old file");
    // The checkpoint is done: generation 1 becomes the spare, and generation 3 (after the
    // current 2) takes it over.
    retire(std::slice::from_ref(&old)).expect("retire");
    assert!(dir.path().join(SPARE).exists());
    journal
        .append(&[op(Target::Events, b"two", Some(b"2"))], &mut scratch)
        .expect("append");
    journal.rotate().expect("rotate");
    assert!(!dir.path().join(SPARE).exists(), "the spare was taken");
    journal
        .append(&[op(Target::Events, b"new", Some(b"3"))], &mut scratch)
        .expect("append");
    drop(journal);
    let (db, trees) = open(dir.path());
    let (_, replayed) =
        Journal::recover(dir.path(), &db, &trees, &dir.path().join("sled/db")).expect("recover");
    // What follows the new record in generation 3's file is the middle of generation 1's
    // records: it ends replay, whether it reads as another generation or as a torn record.
    assert_eq!(replayed.records, 2);
    assert!(trees[5].get(b"two").expect("get").is_some());
    assert!(trees[5].get(b"new").expect("get").is_some());
    for stale in [b"old1", b"old2", b"old3"] {
        assert!(
            trees[5].get(stale).expect("get").is_none(),
            "generation 1 is not replayed"
        );
    }
}
