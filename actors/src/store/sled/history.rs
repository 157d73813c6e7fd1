//! The `events` tree's layout: an approval's whole history under one key, its id.
//!
//! Staged history writes name one entry, `id ++ seq` (24 bytes), as they always have (the
//! journal's records, a revert's removals and the backup format keep that form); applying
//! one merges the entry into the approval's value, `[seq u64 BE, len u32 BE, entry]*` sorted
//! by seq. Why: sled 0.34 holds a page-table entry for every page of every tree, cached or
//! not, and a page holds 8–16 keys, so resident memory follows the number of keys; a key per
//! entry was three keys per approval (docs/benchmarks.md, memory). Putting an entry twice
//! (a journal replayed over a store that already holds it) replaces it, so a replay is
//! idempotent. Other keys (the store's write probe, a retention's removal of a whole history)
//! are plain writes. Nothing here decodes an entry: that is the store's (`approvals.rs`).

use sled::Tree;

const ID: usize = 16;
/// `id ++ seq`: one entry of an approval's history.
const ENTRY_KEY: usize = ID + 8;
const PUT: u8 = 1;
const REMOVE: u8 = 0;

/// sled calls this for every `merge` on the tree; set before anything is applied to it.
pub(super) fn attach(tree: &Tree) {
    tree.set_merge_operator(merge);
}

/// Apply one staged history write (a put, or a removal with `None`) to the tree.
pub(super) fn write(tree: &Tree, key: &[u8], value: Option<&[u8]>) -> sled::Result<()> {
    let Some((id, seq)) = entry_key(key) else {
        match value {
            Some(value) => tree.insert(key, value).map(drop)?,
            None => tree.remove(key).map(drop)?,
        }
        return Ok(());
    };
    let mut operand = Vec::with_capacity(9 + value.map_or(0, <[u8]>::len));
    operand.push(if value.is_some() { PUT } else { REMOVE });
    operand.extend_from_slice(&seq.to_be_bytes());
    operand.extend_from_slice(value.unwrap_or_default());
    tree.merge(id, operand).map(drop)
}

/// An approval's entries, in order: `(seq, entry)`. A value cut short (never written by this
/// module) ends the walk.
pub(super) fn entries(value: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    let mut rest = value;
    std::iter::from_fn(move || {
        let (seq, len) = (rest.get(..8)?, rest.get(8..12)?);
        let seq = u64::from_be_bytes(seq.try_into().ok()?);
        let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
        let entry = rest.get(12..12 + len)?;
        rest = &rest[12 + len..];
        Some((seq, entry))
    })
}

/// An old layout's key (one entry per key), as [`write`] takes it.
pub(super) fn entry_key(key: &[u8]) -> Option<(&[u8], u64)> {
    if key.len() != ENTRY_KEY {
        return None;
    }
    let seq = u64::from_be_bytes(key[ID..].try_into().ok()?);
    Some((&key[..ID], seq))
}

/// The key an entry is journaled and backed up under.
pub(super) fn key_of(id: &[u8], seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(ENTRY_KEY);
    key.extend_from_slice(id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn merge(_key: &[u8], old: Option<&[u8]>, operand: &[u8]) -> Option<Vec<u8>> {
    let (&op, rest) = operand.split_first()?;
    let Some((seq, entry)) = rest
        .get(..8)
        .and_then(|seq| seq.try_into().ok())
        .map(|seq| (u64::from_be_bytes(seq), &rest[8..]))
    else {
        return old.map(<[u8]>::to_vec); // not an operand this module wrote: change nothing
    };
    let mut out = Vec::with_capacity(old.map_or(0, <[u8]>::len) + entry.len() + 12);
    let mut placed = op == REMOVE;
    for (at, existing) in entries(old.unwrap_or_default()) {
        if !placed && at >= seq {
            push(&mut out, seq, entry);
            placed = true;
        }
        if at != seq {
            push(&mut out, at, existing);
        }
    }
    if !placed {
        push(&mut out, seq, entry);
    }
    // No entries left: the key goes.
    (!out.is_empty()).then_some(out)
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
        let tree = db.open_tree("events").expect("tree");
        attach(&tree);
        (db, tree)
    }

    fn read(tree: &Tree, id: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let value = tree
            .get(id)
            .expect("get")
            .map(|v| v.to_vec())
            .unwrap_or_default();
        entries(&value).map(|(s, e)| (s, e.to_vec())).collect()
    }

    #[test]
    fn entries_share_one_key_in_order_and_a_repeated_put_replaces() {
        let (_db, tree) = tree();
        let id = [7u8; 16];
        for (seq, entry) in [(5, "e"), (2, "b"), (9, "i"), (2, "b")] {
            write(&tree, &key_of(&id, seq), Some(entry.as_bytes())).expect("write");
        }
        assert_eq!(tree.len(), 1);
        let seen = read(&tree, &id);
        assert_eq!(
            seen,
            vec![(2, b"b".to_vec()), (5, b"e".to_vec()), (9, b"i".to_vec())]
        );
    }

    #[test]
    fn removing_every_entry_removes_the_key_and_other_keys_are_plain() {
        let (_db, tree) = tree();
        let id = [1u8; 16];
        write(&tree, &key_of(&id, 1), Some(b"a")).expect("write");
        write(&tree, &key_of(&id, 3), Some(b"c")).expect("write");
        write(&tree, &key_of(&id, 1), None).expect("remove");
        assert_eq!(read(&tree, &id), vec![(3, b"c".to_vec())]);
        write(&tree, &key_of(&id, 3), None).expect("remove");
        assert!(tree.get(id).expect("get").is_none());
        write(&tree, b"probe", Some(b"")).expect("plain put");
        assert!(tree.get(b"probe").expect("get").is_some());
        write(&tree, &id, None).expect("plain remove");
    }
}
