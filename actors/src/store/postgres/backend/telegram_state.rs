//! What the Telegram gateway keeps on PostgreSQL besides its queue: the message log
//! (`telegram_messages`), its secrets (`meta`, the first instance's value wins) and the update
//! offset (the poller's lease row, written only under the current epoch).

use std::sync::atomic::Ordering;

use super::queues::PgQueues;
use super::{client, db_error};
use crate::domain::{ApprovalId, TelegramMessageRef};
use crate::store::StoreError;

/// Where an imported sled store kept the update offset (a big-endian i32 in `meta`).
const SLED_OFFSET_KEY: &str = "telegram_update_offset";

impl PgQueues {
    pub(super) fn messages_of(&self, id: ApprovalId) -> Vec<TelegramMessageRef> {
        let pool = self.0.pool();
        let refs: Result<Option<Vec<u8>>, StoreError> = self.0.run(async move {
            let row = client(&pool)
                .await?
                .query_opt(
                    "SELECT refs FROM telegram_messages WHERE approval_id = $1",
                    &[&id.to_bytes().as_slice()],
                )
                .await
                .map_err(db_error)?;
            Ok(row.map(|row| row.get(0)))
        });
        refs.ok()
            .flatten()
            .map(|bytes| crate::store::queues::decode_message_refs(&bytes))
            .unwrap_or_default()
    }

    pub(super) fn add_message(
        &self,
        id: ApprovalId,
        message: TelegramMessageRef,
    ) -> Result<bool, StoreError> {
        let mut refs = self.messages_of(id);
        if refs.contains(&message) {
            return Ok(false);
        }
        refs.push(message);
        let bytes = crate::store::queues::encode_message_refs(&refs)?;
        let pool = self.0.pool();
        self.0.run_write(async move {
            client(&pool)
                .await?
                .execute(
                    "INSERT INTO telegram_messages (approval_id, refs) VALUES ($1, $2)
                     ON CONFLICT (approval_id) DO UPDATE SET refs = EXCLUDED.refs",
                    &[&id.to_bytes().as_slice(), &bytes],
                )
                .await
                .map_err(db_error)?;
            Ok(true)
        })
    }

    pub(super) fn meta_value(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let pool = self.0.pool();
        let key = key.to_string();
        self.0.run(async move {
            let row = client(&pool)
                .await?
                .query_opt("SELECT value FROM meta WHERE name = $1", &[&key])
                .await
                .map_err(db_error)?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    pub(super) fn meta_first(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        let pool = self.0.pool();
        let (key, value) = (key.to_string(), value.to_vec());
        self.0.run_write(async move {
            let client = client(&pool).await?;
            client
                .execute(
                    "INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                    &[&key, &value],
                )
                .await
                .map_err(db_error)?;
            let row = client
                .query_one("SELECT value FROM meta WHERE name = $1", &[&key])
                .await
                .map_err(db_error)?;
            Ok(row.get(0))
        })
    }

    /// The leader row's offset; a store restored from sled starts from sled's.
    pub(super) fn stored_offset(&self) -> Result<i64, StoreError> {
        let pool = self.0.pool();
        let leader = self.0.run(async move {
            super::super::leader::state(&**client(&pool).await?)
                .await
                .map_err(db_error)
        })?;
        let from_sled = self
            .meta_value(SLED_OFFSET_KEY)?
            .and_then(|bytes| <[u8; 4]>::try_from(bytes.as_slice()).ok())
            .map_or(0, |bytes| i64::from(i32::from_be_bytes(bytes)));
        Ok(leader.map_or(0, |l| l.update_offset).max(from_sled))
    }

    /// Fenced by the lease's epoch: a leader that lost its lease cannot move the offset.
    pub(super) fn fenced_offset(&self, offset: i64) -> Result<bool, StoreError> {
        let lease = self.0.inner.lease.lock().ok().and_then(|l| l.clone());
        let Some(lease) = lease else {
            self.0.inner.leading.store(false, Ordering::Relaxed);
            return Ok(false);
        };
        let pool = self.0.pool();
        let saved = self.0.run_write(async move {
            super::super::leader::advance_offset(&**client(&pool).await?, &lease, offset)
                .await
                .map_err(db_error)
        })?;
        if !saved {
            self.0.inner.leading.store(false, Ordering::Relaxed);
        }
        Ok(saved)
    }
}
