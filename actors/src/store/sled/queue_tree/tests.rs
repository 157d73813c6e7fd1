//! The queue tree's merge, spill and sled-bound rules, against a real sled tree.

use super::*;

fn key(seq: u64) -> Key {
    super::super::queue::key(super::super::Channel::Console, seq)
}

fn keys(tree: &QueueTree, limit: usize) -> Vec<Key> {
    let mut out = Vec::new();
    tree.visit_range(key(0), key(u64::MAX), limit, |k, _| {
        out.push(Key::try_from(k).expect("queue key"));
        true
    })
    .expect("visit");
    out
}

#[test]
fn reads_merge_memory_and_sled_in_key_order_and_spill_moves_each_entry_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path()).expect("open");
    let tree = QueueTree::new(db.open_tree("queues").expect("tree")).expect("queue tree");
    for seq in [1, 4] {
        tree.insert(&key(seq), b"spilled").expect("insert");
    }
    assert_eq!(tree.spill().expect("spill"), 2);
    for seq in [2, 3, 5] {
        tree.insert(&key(seq), b"memory").expect("insert");
    }
    assert_eq!(keys(&tree, 10), [1, 2, 3, 4, 5].map(key));
    assert_eq!(keys(&tree, 2), [1, 2].map(key));
    assert_eq!(tree.unspilled(), 3);

    assert_eq!(
        tree.remove(&key(2)).expect("remove").as_deref(),
        Some(&b"memory"[..])
    );
    assert_eq!(
        tree.remove(&key(4)).expect("remove").as_deref(),
        Some(&b"spilled"[..])
    );
    assert_eq!(tree.spill().expect("spill"), 2);
    assert_eq!(tree.unspilled(), 0);
    assert_eq!(db.open_tree("queues").expect("tree").len(), 3);
    assert_eq!(keys(&tree, 10), [1, 3, 5].map(key));
    assert_eq!(
        tree.get(&key(3)).expect("get").as_deref(),
        Some(&b"memory"[..])
    );
    assert_eq!(tree.take_unspilled(&key(3)), None);
}

#[test]
fn deliveries_during_spills_never_come_back_and_nothing_else_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path()).expect("open");
    let tree = std::sync::Arc::new(
        QueueTree::new(db.open_tree("queues").expect("tree")).expect("queue tree"),
    );
    for seq in 1..=2000 {
        tree.insert(&key(seq), b"entry").expect("insert");
    }
    let deliverer = {
        let tree = std::sync::Arc::clone(&tree);
        std::thread::spawn(move || {
            for seq in (2..=2000).step_by(2) {
                tree.remove(&key(seq)).expect("remove");
            }
        })
    };
    while !deliverer.is_finished() {
        tree.spill().expect("spill");
    }
    deliverer.join().expect("deliverer");
    tree.spill().expect("spill");
    let odd: Vec<Key> = (1..=2000).step_by(2).map(key).collect();
    assert_eq!(keys(&tree, usize::MAX), odd);
    assert_eq!(tree.unspilled(), 0);
    let in_sled: Vec<Key> = db
        .open_tree("queues")
        .expect("tree")
        .iter()
        .keys()
        .map(|k| Key::try_from(&k.expect("key")[..]).expect("queue key"))
        .collect();
    assert_eq!(in_sled, odd);
}

#[test]
fn a_spill_that_sled_refuses_partway_keeps_the_rest_in_memory_for_the_next() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path()).expect("open");
    let tree = QueueTree::new(db.open_tree("queues").expect("tree")).expect("queue tree");
    for seq in 1..=10 {
        tree.insert(&key(seq), b"entry").expect("insert");
    }
    // sled takes four entries, then refuses (a full disk).
    let mut room = 4;
    let refused = tree.spill_with(
        |key, value| {
            if room == 0 {
                return Err(sled::Error::Io(std::io::Error::other("no space left")));
            }
            room -= 1;
            tree.tree.insert(key, value).map(drop)
        },
        |key| tree.tree.remove(key).map(drop),
    );
    assert!(refused.is_err(), "the checkpoint hears of the refusal");
    assert_eq!(tree.unspilled(), 6, "what sled refused stays in memory");
    assert_eq!(db.open_tree("queues").expect("tree").len(), 4);
    assert_eq!(
        keys(&tree, usize::MAX),
        (1..=10).map(key).collect::<Vec<_>>()
    );
    // Delivered meanwhile: one copied, one not.
    tree.remove(&key(2)).expect("remove");
    tree.remove(&key(7)).expect("remove");
    assert_eq!(tree.spill().expect("the next spill"), 5);
    assert_eq!(tree.unspilled(), 0);
    let expected: Vec<Key> = [1, 3, 4, 5, 6, 8, 9, 10].map(key).to_vec();
    assert_eq!(keys(&tree, usize::MAX), expected);
    assert_eq!(db.open_tree("queues").expect("tree").len(), 8);
}

/// An entry delivered while a spill copied it leaves a copy in sled that the spill's clean-up
/// removes; if sled refuses that removal, the copy must stay unread (it is a delivered entry,
/// and a notifier finding it at the front of its queue would stop there), through later spills
/// too, while everything else reads and spills as usual.
#[test]
fn a_copy_the_clean_up_cannot_remove_stays_unread_through_later_spills() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path()).expect("open");
    let tree = QueueTree::new(db.open_tree("queues").expect("tree")).expect("queue tree");
    for seq in 1..=3 {
        tree.insert(&key(seq), b"entry").expect("insert");
    }
    let failed = tree.spill_with(
        |copied, value| {
            tree.tree.insert(copied, value)?;
            // Entry 2 is delivered right after its copy was made.
            if *copied == key(2) {
                tree.remove(&key(2)).expect("remove");
            }
            Ok(())
        },
        |_| Err(sled::Error::Io(std::io::Error::other("I/O error"))),
    );
    assert!(
        failed.is_err(),
        "the checkpoint hears of the failed clean-up"
    );
    let in_sled = db.open_tree("queues").expect("tree");
    assert!(
        in_sled.contains_key(key(2)).expect("read"),
        "the copy is still in sled"
    );
    assert_unread_beside(&tree, &[1, 3]);
    assert_eq!(tree.remove(&key(2)).expect("remove"), None);
    tree.insert(&key(4), b"entry").expect("insert");
    assert_eq!(tree.spill().expect("a later spill"), 1);
    assert_unread_beside(&tree, &[1, 3, 4]);
    assert_eq!(tree.spill().expect("and another"), 0);
    assert_unread_beside(&tree, &[1, 3, 4]);
}

/// Entry 2 reads as absent, and exactly `others` are there.
fn assert_unread_beside(tree: &QueueTree, others: &[u64]) {
    let expected: Vec<Key> = others.iter().map(|&seq| key(seq)).collect();
    assert_eq!(keys(tree, usize::MAX), expected);
    assert_eq!(tree.get(&key(2)).expect("get"), None);
}

#[test]
fn entries_already_in_sled_at_start_are_found_in_every_channel() {
    use super::super::Channel;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path()).expect("open");
    let sled_tree = db.open_tree("queues").expect("tree");
    // As the journal's replay leaves them: straight in sled, in two channels.
    let console = super::super::queue::key(Channel::Console, 7);
    let telegram = super::super::queue::key(Channel::Telegram, 3);
    sled_tree.insert(console, &b"c"[..]).expect("insert");
    sled_tree.insert(telegram, &b"t"[..]).expect("insert");
    let tree = QueueTree::new(sled_tree).expect("queue tree");
    assert_eq!(tree.get(&console).expect("get").as_deref(), Some(&b"c"[..]));
    assert_eq!(
        tree.get(&telegram).expect("get").as_deref(),
        Some(&b"t"[..])
    );
    let newer = super::super::queue::key(Channel::Telegram, 4);
    assert_eq!(tree.get(&newer).expect("get"), None);
    let mut seen = Vec::new();
    tree.visit_range(
        telegram,
        super::super::queue::key(Channel::Telegram, u64::MAX),
        10,
        |k, _| {
            seen.push(k.to_vec());
            true
        },
    )
    .expect("visit");
    assert_eq!(seen, vec![telegram.to_vec()]);
    assert_eq!(
        tree.remove(&console).expect("remove").as_deref(),
        Some(&b"c"[..])
    );
    assert_eq!(tree.get(&console).expect("get"), None);
}

/// Spills, inserts and a consumer that reads the front and removes what it read, all at once:
/// every entry is read once and removed, and none is left behind. Before removals during a
/// spill were remembered, an entry removed while the spill copied it was read again from its
/// copy in sled (a fallback lane then stopped at it for good, its Wake long gone).
#[test]
fn concurrent_spills_inserts_and_removals_leave_nothing_behind() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path()).expect("open");
    let tree = Arc::new(QueueTree::new(db.open_tree("queues").expect("tree")).expect("queue tree"));
    const N: u64 = 50_000;
    let inserted = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let (tree, inserted) = (Arc::clone(&tree), Arc::clone(&inserted));
        std::thread::spawn(move || {
            for seq in 1..=N {
                tree.insert(&key(seq), &[7u8; 300]).expect("insert");
                inserted.store(seq, Ordering::SeqCst);
            }
        })
    };
    let spiller = {
        let (tree, done) = (Arc::clone(&tree), Arc::clone(&done));
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                tree.spill().expect("spill");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    let mut removed = 0u64;
    let mut gone = std::collections::BTreeSet::new();
    let mut twice = 0u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while removed < N && std::time::Instant::now() < deadline {
        let front = keys(&tree, 256);
        let upto = inserted.load(Ordering::SeqCst);
        for k in front {
            let seq = u64::from_be_bytes(k[1..].try_into().expect("seq"));
            if seq > upto {
                break;
            }
            if gone.contains(&seq) {
                twice += 1;
                continue;
            }
            gone.insert(seq);
            assert!(
                tree.remove(&k).expect("remove").is_some(),
                "seq {seq} was read but was not there to remove"
            );
            removed += 1;
        }
    }
    done.store(true, Ordering::SeqCst);
    producer.join().expect("producer");
    spiller.join().expect("spiller");
    let left = keys(&tree, 10);
    assert_eq!(twice, 0, "reads returned entries already removed");
    assert_eq!(removed, N, "left: {left:?}");
    assert!(left.is_empty(), "left behind: {left:?}");
}
