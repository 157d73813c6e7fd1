//! Taking part in the poller's election: renew the lease at a third of its length, and stop
//! leading as soon as a renewal fails for longer than the lease (another instance may hold it
//! by then). The lease row and its fencing are `postgres/leader.rs`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{PgStore, client, now_ms};

pub(super) fn spawn(store: &PgStore) {
    let inner = std::sync::Arc::downgrade(&store.inner);
    let lease = store.inner.settings.leader_lease;
    let instance = store.inner.settings.instance.clone();
    let pool = store.pool();
    store.inner.handle.spawn(async move {
        let every = (lease / 3).max(Duration::from_millis(100));
        loop {
            let Some(inner) = inner.upgrade() else { return };
            let taken = match client(&pool).await {
                Ok(client) => super::super::leader::acquire(&**client, &instance, lease)
                    .await
                    .map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            match taken {
                Ok(Some(granted)) => {
                    inner.lease_renewed_ms.store(now_ms(), Ordering::Relaxed);
                    if let Ok(mut held) = inner.lease.lock() {
                        *held = Some(granted);
                    }
                    inner.leading.store(true, Ordering::Relaxed);
                }
                Ok(None) => {
                    inner.leading.store(false, Ordering::Relaxed);
                    if let Ok(mut held) = inner.lease.lock() {
                        *held = None;
                    }
                }
                Err(error) => {
                    // Still leading only while the last renewal is younger than the lease.
                    let renewed = inner.lease_renewed_ms.load(Ordering::Relaxed);
                    let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
                    if now_ms().saturating_sub(renewed) >= lease_ms {
                        inner.leading.store(false, Ordering::Relaxed);
                    }
                    tracing::warn!(%error, "cannot renew the Telegram poller's lease");
                }
            }
            drop(inner);
            tokio::time::sleep(every).await;
        }
    });
}
