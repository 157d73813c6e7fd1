//! The message log: which Telegram messages show which approval, so an ending edits every copy.
//! Owned by the TelegramGateway; the tree lives in the store (retention removes an approval's
//! entry with the approval).

use crate::domain::{ApprovalId, TelegramMessageRef};
use crate::store::StoreError;

fn codec_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::Queue(format!("message log record: {error}"))
}

/// Which Telegram messages show which approval. Written when a send succeeds and when a tap
/// reveals a copy we did not know (a duplicate from an ambiguous retry).
pub struct MessageLog {
    tree: sled::Tree,
}

impl MessageLog {
    pub fn new(tree: sled::Tree) -> Self {
        Self { tree }
    }

    pub fn get(&self, id: ApprovalId) -> Vec<TelegramMessageRef> {
        self.tree
            .get(id.to_bytes())
            .ok()
            .flatten()
            .and_then(|bytes| {
                bincode::serde::decode_from_slice::<Vec<TelegramMessageRef>, _>(
                    &bytes,
                    bincode::config::standard(),
                )
                .ok()
            })
            .map(|(refs, _)| refs)
            .unwrap_or_default()
    }

    /// Record a message; false if it was already known.
    pub fn add(&self, id: ApprovalId, message: TelegramMessageRef) -> Result<bool, StoreError> {
        let mut refs = self.get(id);
        if refs.contains(&message) {
            return Ok(false);
        }
        refs.push(message);
        let bytes = bincode::serde::encode_to_vec(&refs, bincode::config::standard())
            .map_err(codec_error)?;
        self.tree.insert(id.to_bytes(), bytes)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_log_records_each_copy_once() {
        let dir = tempfile::tempdir().expect("dir");
        let db = sled::open(dir.path()).expect("db");
        let log = MessageLog::new(db.open_tree("messages").expect("tree"));
        let id = ApprovalId::new();
        let m1 = TelegramMessageRef {
            chat_id: 1,
            message_id: 10,
        };
        let m2 = TelegramMessageRef {
            chat_id: 1,
            message_id: 11,
        };
        assert!(log.add(id, m1).expect("add"));
        assert!(!log.add(id, m1).expect("add"));
        assert!(log.add(id, m2).expect("add"));
        assert_eq!(log.get(id), vec![m1, m2]);
    }
}
