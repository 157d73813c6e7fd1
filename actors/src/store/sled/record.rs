//! The `approvals` tree's value: an approval's record and its whole history under one key, the
//! approval's id: `MAGIC, record_len u32 BE, record, [seq u64 BE, len u32 BE, entry]*` with the
//! entries sorted by seq. A value without `MAGIC` is a record alone, as stores before this
//! layout held them (a record starts with its codec version, 1 or 2), so old values need no
//! rewrite.
//!
//! Staged writes keep the form they always had (the journal's records, a revert's undos and
//! the backup format): a record put or removed under its id, a history entry put or removed
//! under `id ++ seq` (24 bytes, `Target::Events`). Applying one merges it into the approval's
//! value (sled's merge operator, [`attach`]): a record replaces the record and keeps the
//! history, an entry is placed by its seq (the same seq again replaces it, so a replayed
//! journal is idempotent). Removing the record removes the key, history and all.
//!
//! Why one key: sled 0.34 holds a page-table entry per page of every tree, cached or not, and
//! a page holds 8–16 keys, so resident memory follows the number of keys; a key per history
//! entry was three keys more per approval (docs/benchmarks.md, memory).
//! Nothing here decodes a record or an entry: that is the store's (`approvals.rs`).

use sled::Tree;

use super::staging::{Target, tag};

const MAGIC: u8 = 0xA6;
const ID: usize = 16;
/// `id ++ seq`: one entry of an approval's history.
const ENTRY_KEY: usize = ID + 8;
const REMOVE_ENTRY: u8 = 0;
const PUT_ENTRY: u8 = 1;
const PUT_RECORD: u8 = 2;

/// sled calls this for every `merge` on the tree; set before anything is applied to it.
pub(super) fn attach(approvals: &Tree) {
    approvals.set_merge_operator(merge);
}

/// Apply one staged write whose tree is `tree` (a [`tag`]) if it lands in the approvals tree:
/// a record, or a history entry. `None` for every other write (the caller's to apply).
pub(super) fn apply(
    approvals: &Tree,
    tree: u8,
    key: &[u8],
    value: Option<&[u8]>,
) -> Option<sled::Result<()>> {
    let applied = if tree == tag(Target::Approvals) {
        match value {
            Some(record) => approvals.merge(key, operand(PUT_RECORD, 0, record)),
            None => approvals.remove(key),
        }
    } else if tree == tag(Target::Events) {
        let (id, seq) = entry_key(key)?;
        match value {
            Some(entry) => approvals.merge(id, operand(PUT_ENTRY, seq, entry)),
            None => approvals.merge(id, operand(REMOVE_ENTRY, seq, &[])),
        }
    } else {
        return None;
    };
    Some(applied.map(drop))
}

/// The record in a stored value; `None` if the value holds history only (entries observed
/// after their approval was removed).
pub(super) fn record(value: &[u8]) -> Option<&[u8]> {
    let record = split(value).0;
    (!record.is_empty()).then_some(record)
}

/// The history in a stored value, in order: `(seq, entry)`.
pub(super) fn entries(value: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let mut rest = split(value).1;
    std::iter::from_fn(move || {
        let (seq, len) = (rest.get(..8)?, rest.get(8..12)?);
        let seq = u64::from_be_bytes(seq.try_into().ok()?);
        let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
        let entry = rest.get(12..12 + len)?;
        rest = &rest[12 + len..];
        Some((seq, entry))
    })
}

/// A history entry's key (`id ++ seq`), as it is staged, journaled and backed up.
pub(super) fn entry_key(key: &[u8]) -> Option<(&[u8], u64)> {
    if key.len() != ENTRY_KEY {
        return None;
    }
    let seq = u64::from_be_bytes(key[ID..].try_into().ok()?);
    Some((&key[..ID], seq))
}

pub(super) fn key_of(id: &[u8], seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(ENTRY_KEY);
    key.extend_from_slice(id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// (record, history bytes) of a stored value.
fn split(value: &[u8]) -> (&[u8], &[u8]) {
    let Some((&MAGIC, rest)) = value.split_first() else {
        return (value, &[]); // a record alone (or nothing)
    };
    let len = rest
        .get(..4)
        .and_then(|len| len.try_into().ok())
        .map_or(0, |len| u32::from_be_bytes(len) as usize);
    let body = rest.get(4..).unwrap_or_default();
    body.split_at_checked(len).unwrap_or((body, &[]))
}

fn operand(op: u8, seq: u64, bytes: &[u8]) -> Vec<u8> {
    let mut operand = Vec::with_capacity(9 + bytes.len());
    operand.push(op);
    operand.extend_from_slice(&seq.to_be_bytes());
    operand.extend_from_slice(bytes);
    operand
}

fn merge(_key: &[u8], old: Option<&[u8]>, operand: &[u8]) -> Option<Vec<u8>> {
    let old = old.unwrap_or_default();
    let (Some((&op, rest)), Some(seq)) = (
        operand.split_first(),
        operand.get(1..9).and_then(|s| s.try_into().ok()),
    ) else {
        return Some(old.to_vec()).filter(|v| !v.is_empty()); // not ours: change nothing
    };
    let (seq, bytes) = (u64::from_be_bytes(seq), &rest[8..]);
    let record = if op == PUT_RECORD {
        bytes
    } else {
        split(old).0
    };
    let mut history = Vec::with_capacity(old.len() + bytes.len() + 12);
    let mut placed = op != PUT_ENTRY;
    for (at, existing) in entries(old) {
        if !placed && at >= seq {
            push(&mut history, seq, bytes);
            placed = true;
        }
        if op == PUT_RECORD || at != seq {
            push(&mut history, at, existing);
        }
    }
    if !placed {
        push(&mut history, seq, bytes);
    }
    if record.is_empty() && history.is_empty() {
        return None; // nothing left: the key goes
    }
    let mut out = Vec::with_capacity(5 + record.len() + history.len());
    out.push(MAGIC);
    out.extend_from_slice(&(record.len() as u32).to_be_bytes());
    out.extend_from_slice(record);
    out.extend_from_slice(&history);
    Some(out)
}

fn push(out: &mut Vec<u8>, seq: u64, entry: &[u8]) {
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&(entry.len() as u32).to_be_bytes());
    out.extend_from_slice(entry);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (sled::Db, Tree) {
        let db = sled::Config::new().temporary(true).open().expect("db");
        let tree = db.open_tree("approvals").expect("tree");
        attach(&tree);
        (db, tree)
    }

    fn write(tree: &Tree, target: Target, key: &[u8], value: Option<&[u8]>) {
        apply(tree, tag(target), key, value)
            .expect("the approvals tree's")
            .expect("write");
    }

    fn stored(tree: &Tree, id: &[u8]) -> Vec<u8> {
        tree.get(id)
            .expect("get")
            .map(|v| v.to_vec())
            .unwrap_or_default()
    }

    fn history(tree: &Tree, id: &[u8]) -> Vec<(u64, Vec<u8>)> {
        entries(&stored(tree, id))
            .map(|(s, e)| (s, e.to_vec()))
            .collect()
    }

    #[test]
    fn a_record_and_its_history_share_one_key_in_order_and_a_repeated_put_replaces() {
        let (_db, tree) = tree();
        let id = [7u8; 16];
        write(&tree, Target::Approvals, &id, Some(b"\x02pending"));
        for (seq, entry) in [(5, "e"), (2, "b"), (9, "i"), (2, "b")] {
            write(
                &tree,
                Target::Events,
                &key_of(&id, seq),
                Some(entry.as_bytes()),
            );
        }
        write(&tree, Target::Approvals, &id, Some(b"\x02approved"));
        assert_eq!(tree.len(), 1);
        assert_eq!(record(&stored(&tree, &id)), Some(&b"\x02approved"[..]));
        let expected = vec![(2, b"b".to_vec()), (5, b"e".to_vec()), (9, b"i".to_vec())];
        assert_eq!(history(&tree, &id), expected);
        write(&tree, Target::Events, &key_of(&id, 5), None);
        assert_eq!(history(&tree, &id).len(), 2);
        write(&tree, Target::Approvals, &id, None);
        assert!(tree.get(id).expect("get").is_none(), "history and all");
    }

    #[test]
    fn an_old_value_is_a_record_and_history_without_a_record_reads_as_none() {
        let (_db, tree) = tree();
        let (old, orphan) = ([1u8; 16], [2u8; 16]);
        tree.insert(old, &b"\x01record"[..]).expect("insert");
        assert_eq!(record(&stored(&tree, &old)), Some(&b"\x01record"[..]));
        write(&tree, Target::Events, &key_of(&old, 4), Some(b"x"));
        assert_eq!(record(&stored(&tree, &old)), Some(&b"\x01record"[..]));
        assert_eq!(history(&tree, &old), vec![(4, b"x".to_vec())]);
        write(&tree, Target::Events, &key_of(&orphan, 1), Some(b"late"));
        assert_eq!(record(&stored(&tree, &orphan)), None);
        write(&tree, Target::Events, &key_of(&orphan, 1), None);
        assert!(tree.get(orphan).expect("get").is_none());
        assert!(
            apply(&tree, tag(Target::Events), b"probe", Some(b"")).is_none(),
            "not an entry: not this tree's"
        );
    }
}
