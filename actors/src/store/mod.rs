//! Durable storage: the sled database, its trees, and the group-commit flusher.
//!
//! The [`ApprovalStore`] trait is what the registry sees, so a different backend (PostgreSQL for
//! several instances) can slot in later without touching the state machine. The sled
//! implementation keeps one tree per concern:
//!
//! | tree          | key                               | value              | owner            |
//! |---------------|-----------------------------------|--------------------|------------------|
//! | `approvals`   | approval id (16-byte ULID)        | versioned record   | ApprovalRegistry |
//! | `idempotency` | requested_by `\0` key            | approval id        | ApprovalRegistry |
//! | `deadlines`   | deadline ms (big-endian) ++ id    | empty              | TimeoutSweeper   |
//! | `outbox`      | approval id ++ sequence (BE)      | notification       | TelegramGateway  |
//! | `meta`        | name                              | bytes              | whoever named it |
//!
//! Each actor is handed only the trees it owns; nothing here reaches into actor state.

mod codec;
mod commit;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::oneshot;

pub use codec::{CodecError, decode as decode_approval, encode as encode_approval, millis};
pub use commit::CommitResult;
use commit::GroupCommit;

use crate::domain::{Approval, ApprovalId, Status};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("store I/O failed: {0}")]
    Io(#[from] sled::Error),
    #[error("store flush failed: {0}")]
    Flush(Arc<sled::Error>),
    #[error("the store's flusher has stopped")]
    FlusherGone,
    #[error("record {key} is unreadable: {source}")]
    Corrupt {
        key: String,
        source: codec::CodecError,
    },
    #[error("cannot start the flusher thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// What the registry needs from storage.
pub trait ApprovalStore: Send + 'static {
    /// Write (insert or replace) one approval and, for a new one, its idempotency entry.
    fn put(&self, approval: &Approval) -> Result<(), StoreError>;
    fn get(&self, id: ApprovalId) -> Result<Option<Approval>, StoreError>;
    fn find_idempotent(&self, agent: &str, key: &str) -> Result<Option<ApprovalId>, StoreError>;
    /// Newest first, strictly older than `before` when given.
    fn list(
        &self,
        status: Option<Status>,
        before: Option<ApprovalId>,
        limit: usize,
    ) -> Result<Vec<Approval>, StoreError>;
    /// Visit every approval (start-up reload).
    fn for_each(&self, visit: &mut dyn FnMut(Approval)) -> Result<(), StoreError>;
    /// Resolves once everything written so far is on disk.
    fn commit(&self) -> Commit;
    fn diagnostics(&self) -> StoreDiagnostics;
}

/// A pending durability promise; await it with [`Commit::wait`].
pub struct Commit(oneshot::Receiver<CommitResult>);

impl Commit {
    pub async fn wait(self) -> Result<(), StoreError> {
        match self.0.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(StoreError::Flush(error)),
            Err(_) => Err(StoreError::FlusherGone),
        }
    }
}

#[derive(Debug, Clone)]
pub struct StoreDiagnostics {
    pub path: PathBuf,
    pub size_on_disk: u64,
    pub last_flush_ms: i64,
}

/// The sled database and its group-commit flusher. Cheap to clone.
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

struct Inner {
    // Field order matters on drop: the flusher joins (final flush) before the trees and db go.
    commit: GroupCommit,
    approvals: sled::Tree,
    idempotency: sled::Tree,
    db: sled::Db,
    path: PathBuf,
}

impl SledStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_error = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(open_error)?;
        let approvals = db.open_tree("approvals").map_err(open_error)?;
        let idempotency = db.open_tree("idempotency").map_err(open_error)?;
        let commit = GroupCommit::start(db.clone())?;
        Ok(Self {
            inner: Arc::new(Inner {
                commit,
                approvals,
                idempotency,
                db,
                path: path.to_path_buf(),
            }),
        })
    }

    /// A tree for another actor (deadlines, outbox, meta). Only call this while wiring up.
    pub fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.inner.db.open_tree(name)?)
    }

    /// Commit tickets for actors that own trees of their own (the outbox must be durable too).
    pub fn committer(&self) -> Committer {
        Committer(self.clone())
    }
}

/// Lets an actor wait for durability without holding the approval store's API.
#[derive(Clone)]
pub struct Committer(SledStore);

impl Committer {
    pub fn commit(&self) -> Commit {
        Commit(self.0.inner.commit.ticket())
    }
}

fn idempotency_key(agent: &str, key: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(agent.len() + key.len() + 1);
    bytes.extend_from_slice(agent.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(key.as_bytes());
    bytes
}

fn decode_entry(key: &[u8], value: &[u8]) -> Result<Approval, StoreError> {
    codec::decode(value).map_err(|source| StoreError::Corrupt {
        key: key.iter().map(|b| format!("{b:02x}")).collect(),
        source,
    })
}

impl ApprovalStore for SledStore {
    fn put(&self, approval: &Approval) -> Result<(), StoreError> {
        let bytes = codec::encode(approval).map_err(|source| StoreError::Corrupt {
            key: approval.id.to_string(),
            source,
        })?;
        self.inner.approvals.insert(approval.id.to_bytes(), bytes)?;
        if let Some(key) = &approval.idempotency_key {
            let agent = approval.requested_by.as_str();
            self.inner
                .idempotency
                .insert(idempotency_key(agent, key), &approval.id.to_bytes())?;
        }
        Ok(())
    }

    fn get(&self, id: ApprovalId) -> Result<Option<Approval>, StoreError> {
        let key = id.to_bytes();
        self.inner
            .approvals
            .get(key)?
            .map(|value| decode_entry(&key, &value))
            .transpose()
    }

    fn find_idempotent(&self, agent: &str, key: &str) -> Result<Option<ApprovalId>, StoreError> {
        let found = self.inner.idempotency.get(idempotency_key(agent, key))?;
        Ok(found
            .and_then(|bytes| <[u8; 16]>::try_from(bytes.as_ref()).ok())
            .map(ApprovalId::from_bytes))
    }

    fn list(
        &self,
        status: Option<Status>,
        before: Option<ApprovalId>,
        limit: usize,
    ) -> Result<Vec<Approval>, StoreError> {
        let range = match before {
            Some(id) => self.inner.approvals.range(..id.to_bytes()),
            None => self.inner.approvals.range::<&[u8], _>(..),
        };
        let mut page = Vec::with_capacity(limit.min(1024));
        for entry in range.rev() {
            let (key, value) = entry?;
            let approval = decode_entry(&key, &value)?;
            if status.is_none_or(|wanted| approval.status == wanted) {
                page.push(approval);
                if page.len() >= limit {
                    break;
                }
            }
        }
        Ok(page)
    }

    fn for_each(&self, visit: &mut dyn FnMut(Approval)) -> Result<(), StoreError> {
        for entry in self.inner.approvals.iter() {
            let (key, value) = entry?;
            visit(decode_entry(&key, &value)?);
        }
        Ok(())
    }

    fn commit(&self) -> Commit {
        Commit(self.inner.commit.ticket())
    }

    fn diagnostics(&self) -> StoreDiagnostics {
        StoreDiagnostics {
            path: self.inner.path.clone(),
            size_on_disk: self.inner.db.size_on_disk().unwrap_or(0),
            last_flush_ms: self.inner.commit.last_flush_ms(),
        }
    }
}
