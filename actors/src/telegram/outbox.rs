//! The outbox: every Telegram notification waiting for Telegram to confirm it, in sled, so an
//! outage or a restart loses none. Owned by the TelegramGateway alone.
//!
//! Keys are a global big-endian sequence number, so entries drain in the order they were queued
//! (and therefore in order per approval). A `Send` not yet delivered when its approval ends is
//! rewritten in place to show the ended state, so an approval decided during an outage appears
//! once, already decided, without buttons. Entries that can never succeed (a permanent 4xx) move
//! to the `outbox_dead` tree with the reason, for diagnostics, instead of vanishing.
//!
//! Also here: the message log (which Telegram messages show which approval), the gateway's own
//! record used to edit every copy.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::domain::{Approval, ApprovalId, TelegramMessageRef};
use crate::store::{StoreError, decode_approval, encode_approval};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// Post the approval to the chat (with buttons if it is still pending).
    Send,
    /// Bring the messages showing the approval up to date; `only` limits it to one message
    /// (a copy we learned about from a tap).
    Edit { only: Option<TelegramMessageRef> },
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub job: Job,
    pub approval: Approval,
    pub request_id: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct StoredEntry {
    send: bool,
    only: Option<TelegramMessageRef>,
    approval: Vec<u8>,
    request_id: Option<String>,
}

fn codec_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::Io(sled::Error::Unsupported(format!("outbox record: {error}")))
}

fn encode(entry: &Entry) -> Result<Vec<u8>, StoreError> {
    let stored = StoredEntry {
        send: entry.job == Job::Send,
        only: match entry.job {
            Job::Edit { only } => only,
            Job::Send => None,
        },
        approval: encode_approval(&entry.approval).map_err(codec_error)?,
        request_id: entry.request_id.clone(),
    };
    bincode::serde::encode_to_vec(&stored, bincode::config::standard()).map_err(codec_error)
}

fn decode(bytes: &[u8]) -> Result<Entry, StoreError> {
    let (stored, _): (StoredEntry, usize) =
        bincode::serde::decode_from_slice(bytes, bincode::config::standard())
            .map_err(codec_error)?;
    Ok(Entry {
        job: if stored.send {
            Job::Send
        } else {
            Job::Edit { only: stored.only }
        },
        approval: decode_approval(&stored.approval).map_err(codec_error)?,
        request_id: stored.request_id,
    })
}

fn seq_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

pub struct Outbox {
    tree: sled::Tree,
    dead: sled::Tree,
    next_seq: u64,
    len: usize,
    /// Undelivered `Send` entries by approval, so an ending can rewrite them.
    sends: HashMap<ApprovalId, u64>,
}

impl Outbox {
    pub fn open(tree: sled::Tree, dead: sled::Tree) -> Result<Self, StoreError> {
        let mut outbox = Outbox {
            tree,
            dead,
            next_seq: 1,
            len: 0,
            sends: HashMap::new(),
        };
        for item in outbox.tree.iter() {
            let (key, value) = item?;
            let Some(seq) = seq_of(&key) else { continue };
            outbox.next_seq = outbox.next_seq.max(seq + 1);
            outbox.len += 1;
            if let Ok(entry) = decode(&value)
                && entry.job == Job::Send
            {
                outbox.sends.insert(entry.approval.id, seq);
            }
        }
        Ok(outbox)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn dead_letters(&self) -> usize {
        self.dead.len()
    }

    pub fn has_send_for(&self, id: ApprovalId) -> bool {
        self.sends.contains_key(&id)
    }

    fn push(&mut self, entry: &Entry) -> Result<u64, StoreError> {
        let seq = self.next_seq;
        self.tree.insert(seq.to_be_bytes(), encode(entry)?)?;
        self.next_seq += 1;
        self.len += 1;
        if entry.job == Job::Send {
            self.sends.insert(entry.approval.id, seq);
        }
        Ok(seq)
    }

    pub fn push_created(
        &mut self,
        approval: Approval,
        request_id: Option<String>,
    ) -> Result<u64, StoreError> {
        self.push(&Entry {
            job: Job::Send,
            approval,
            request_id,
        })
    }

    /// The approval ended: rewrite its undelivered `Send`, or queue an edit of its messages.
    pub fn push_ended(
        &mut self,
        approval: Approval,
        request_id: Option<String>,
    ) -> Result<u64, StoreError> {
        if let Some(&seq) = self.sends.get(&approval.id) {
            let entry = Entry {
                job: Job::Send,
                approval,
                request_id,
            };
            self.tree.insert(seq.to_be_bytes(), encode(&entry)?)?;
            return Ok(seq);
        }
        self.push(&Entry {
            job: Job::Edit { only: None },
            approval,
            request_id,
        })
    }

    pub fn push_edit_one(
        &mut self,
        approval: Approval,
        message: TelegramMessageRef,
    ) -> Result<u64, StoreError> {
        self.push(&Entry {
            job: Job::Edit {
                only: Some(message),
            },
            approval,
            request_id: None,
        })
    }

    pub fn first(&self) -> Result<Option<(u64, Entry)>, StoreError> {
        match self.tree.first()? {
            Some((key, value)) => Ok(seq_of(&key)
                .map(|seq| decode(&value).map(|e| (seq, e)))
                .transpose()?),
            None => Ok(None),
        }
    }

    pub fn get(&self, seq: u64) -> Result<Option<Entry>, StoreError> {
        self.tree
            .get(seq.to_be_bytes())?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Queued entries after `seq`, oldest first (for telling the fallback channels during an
    /// outage without re-reading what they were already told).
    pub fn entries_after(&self, seq: u64) -> impl Iterator<Item = (u64, Entry)> + '_ {
        self.tree
            .range(seq.saturating_add(1).to_be_bytes()..)
            .filter_map(Result::ok)
            .filter_map(|(k, v)| Some((seq_of(&k)?, decode(&v).ok()?)))
    }

    /// Telegram confirmed the entry.
    pub fn remove(&mut self, seq: u64) -> Result<(), StoreError> {
        if let Some(value) = self.tree.remove(seq.to_be_bytes())? {
            self.len = self.len.saturating_sub(1);
            if let Ok(entry) = decode(&value)
                && self.sends.get(&entry.approval.id) == Some(&seq)
            {
                self.sends.remove(&entry.approval.id);
            }
        }
        Ok(())
    }

    /// The entry can never succeed: keep it, with the reason, out of the delivery queue.
    pub fn bury(&mut self, seq: u64, reason: &str) -> Result<(), StoreError> {
        if let Some(value) = self.tree.get(seq.to_be_bytes())? {
            let mut record = reason.as_bytes().to_vec();
            record.push(0);
            record.extend_from_slice(&value);
            self.dead.insert(seq.to_be_bytes(), record)?;
        }
        self.remove(seq)
    }
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
    use crate::domain::{Decision, NewApproval, Outcome, Status};

    fn approval() -> Approval {
        Approval::create(
            ApprovalId::new(),
            NewApproval {
                session_id: "s".into(),
                tool_name: "Bash".into(),
                tool_input: "{}".into(),
                reason: None,
                agent: None,
                requested_by: "ci".into(),
                idempotency_key: None,
                timeout: std::time::Duration::from_secs(60),
            },
            chrono::Utc::now(),
        )
    }

    fn open(db: &sled::Db) -> Outbox {
        Outbox::open(
            db.open_tree("outbox").expect("tree"),
            db.open_tree("dead").expect("tree"),
        )
        .expect("open")
    }

    #[test]
    fn drains_in_order_survives_reopen_and_rewrites_undelivered_sends() {
        let dir = tempfile::tempdir().expect("dir");
        let db = sled::open(dir.path()).expect("db");
        let (a, b) = (approval(), approval());
        {
            let mut outbox = open(&db);
            outbox.push_created(a.clone(), None).expect("push");
            outbox.push_created(b.clone(), None).expect("push");
            assert_eq!(outbox.len(), 2);
        }
        let mut outbox = open(&db);
        assert_eq!(outbox.len(), 2);
        let mut ended = a.clone();
        ended
            .apply(
                Decision {
                    outcome: Outcome::Approve,
                    actor: crate::domain::Actor::System,
                    comment: None,
                },
                chrono::Utc::now(),
            )
            .expect("pending");
        outbox.push_ended(ended, None).expect("push");
        assert_eq!(outbox.len(), 2, "rewritten in place, not queued again");
        let (seq, first) = outbox.first().expect("read").expect("entry");
        assert_eq!(first.job, Job::Send);
        assert_eq!(first.approval.id, a.id);
        assert_eq!(first.approval.status, Status::Approved);
        outbox.remove(seq).expect("remove");
        let (seq, second) = outbox.first().expect("read").expect("entry");
        assert_eq!(second.approval.id, b.id);
        outbox.bury(seq, "bad request").expect("bury");
        assert!(outbox.is_empty());
        assert_eq!(outbox.dead_letters(), 1);
    }

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
