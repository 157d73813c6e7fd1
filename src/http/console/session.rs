//! Console sign-ins: an operator token exchanged for a server-side session, named by a random
//! id in an `HttpOnly`, `SameSite=Strict` cookie.
//!
//! A session is a record in the store's key-value meta (so it survives a restart and is shared
//! by every instance on PostgreSQL), keyed by the SHA-256 of its id: the store never holds a
//! cookie value that would let its reader sign in. Sign-out writes an "ended" marker beside it.
//! A session is valid while it has not expired, has not ended, and the operator token it was
//! made from is still configured with the same value: a reload that removes (or changes) the
//! token ends every session made from it at once, without touching the store.
//!
//! Owns the session records and their short in-memory cache; knows nothing of routes. The
//! records go through the registry (`ReadMeta`, `InitMeta`), which owns the store: the front
//! door holds no store handle (one would keep the store open past a graceful stop's final
//! checkpoint). The cache keeps the registry off the path of every console request; it is why a
//! sign-out on one instance reaches the others within [`RECHECK_AFTER`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix::Addr;
use approval_gate_actors::registry::{ApprovalRegistry, InitMeta, ReadMeta};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// The cookie that names a console session.
pub const COOKIE: &str = "ag_console";
/// The header every state-changing console request carries (the session's CSRF token).
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session read from the store is trusted before it is read again.
pub const RECHECK_AFTER: Duration = Duration::from_secs(5);

/// One signed-in operator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// The operator token's name, shown as who is signed in and recorded on decisions.
    pub name: String,
    /// Hex SHA-256 of the token the session was made from.
    pub token_digest: String,
    /// Sent back in [`CSRF_HEADER`] by the console's script with every change.
    pub csrf: String,
    pub expires_at_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the store cannot keep console sessions: {0}")]
    Store(String),
    #[error("no random bytes for a session id")]
    Random,
}

/// The sessions of this process: the registry's records plus a small cache.
pub struct Sessions {
    registry: Addr<ApprovalRegistry>,
    cache: Mutex<HashMap<String, (Session, Instant)>>,
}

fn key(kind: &str, id: &str) -> String {
    format!(
        "console/{kind}/{}",
        hex::encode(crate::settings::sha256(id.as_bytes()))
    )
}

fn random_hex() -> Result<String, SessionError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SessionError::Random)?;
    Ok(hex::encode(bytes))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Sessions {
    pub fn new(registry: Addr<ApprovalRegistry>) -> Self {
        Self {
            registry,
            cache: Mutex::new(HashMap::new()),
        }
    }

    async fn read_meta(&self, key: String) -> Result<Option<Vec<u8>>, SessionError> {
        match self.registry.send(ReadMeta(key)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(SessionError::Store(error.to_string())),
            Err(error) => Err(SessionError::Store(error.to_string())),
        }
    }

    async fn init_meta(&self, key: String, value: Vec<u8>) -> Result<(), SessionError> {
        match self.registry.send(InitMeta { key, value }).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(SessionError::Store(error.to_string())),
            Err(error) => Err(SessionError::Store(error.to_string())),
        }
    }

    /// Start a session for operator `name` (token digest `digest`); answers the cookie value
    /// and the session, once the record is stored.
    pub async fn start(
        &self,
        name: &str,
        digest: &[u8; 32],
        ttl: Duration,
    ) -> Result<(String, Session), SessionError> {
        let id = random_hex()?;
        let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let session = Session {
            name: name.to_string(),
            token_digest: hex::encode(digest),
            csrf: random_hex()?,
            expires_at_ms: now_ms().saturating_add(ttl),
        };
        let record =
            serde_json::to_vec(&session).map_err(|e| SessionError::Store(e.to_string()))?;
        self.init_meta(key("session", &id), record).await?;
        self.remember(&id, &session);
        Ok((id, session))
    }

    /// The live session named by cookie value `id`, if any. `current_digest` answers the
    /// digest the operator token `name` has now (none: removed by a reload).
    pub async fn find(
        &self,
        id: &str,
        current_digest: impl Fn(&str) -> Option<[u8; 32]>,
    ) -> Option<Session> {
        let session = match self.cached(id) {
            Some(session) => session,
            None => self.read(id).await?,
        };
        if session.expires_at_ms <= now_ms() {
            return None;
        }
        let digest = current_digest(&session.name)?;
        let stored = hex::decode(&session.token_digest).ok()?;
        bool::from(stored.as_slice().ct_eq(digest.as_slice())).then_some(session)
    }

    /// Sign out: the session ends here at once and on other instances within
    /// [`RECHECK_AFTER`].
    pub async fn end(&self, id: &str) -> Result<(), SessionError> {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(id);
        }
        self.init_meta(key("ended", id), b"1".to_vec()).await
    }

    fn cached(&self, id: &str) -> Option<Session> {
        let cache = self.cache.lock().ok()?;
        let (session, read_at) = cache.get(id)?;
        (read_at.elapsed() < RECHECK_AFTER).then(|| session.clone())
    }

    fn remember(&self, id: &str, session: &Session) {
        if let Ok(mut cache) = self.cache.lock() {
            // Bounded by the sessions in use: entries past their recheck time are dropped.
            if cache.len() > 1024 {
                cache.retain(|_, (_, read_at)| read_at.elapsed() < RECHECK_AFTER);
            }
            cache.insert(id.to_string(), (session.clone(), Instant::now()));
        }
    }

    async fn read(&self, id: &str) -> Option<Session> {
        // A cookie that is not one of ours is not worth a store read.
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let stored = match self.read_meta(key("session", id)).await {
            Ok(stored) => stored?,
            Err(error) => {
                tracing::warn!(%error, "cannot read a console session");
                return None;
            }
        };
        match self.read_meta(key("ended", id)).await {
            Ok(None) => {}
            Ok(Some(_)) => return None,
            Err(error) => {
                tracing::warn!(%error, "cannot read a console session");
                return None;
            }
        }
        let session: Session = serde_json::from_slice(&stored).ok()?;
        self.remember(id, &session);
        Some(session)
    }
}
