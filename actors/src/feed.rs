//! The live feed: every approval that became pending or ended on this instance (or that this
//! instance heard another instance end), for watchers such as the web console's event stream.
//!
//! The registry publishes only changes that are durable (after their commit settled), so a
//! watcher never shows a state a failed commit is about to undo. A watcher that falls behind
//! loses events ([`FeedEvent`]s are not queued for it without bound): it must re-read the
//! pending list, which is why `recv` reports the lag instead of hiding it. Owns no approval
//! state; the registry is the only publisher.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::domain::Approval;

/// How many events a slow watcher may fall behind before it is told to re-read.
pub const FEED_CAPACITY: usize = 4096;

/// One change of the pending set.
#[derive(Debug, Clone)]
pub enum FeedEvent {
    /// A new pending approval, durable.
    Pending(Arc<Approval>),
    /// A pending approval ended (decided, timed out, cancelled), durable; the final record.
    Ended(Arc<Approval>),
}

/// The sending side, cloned into the registry; watchers [`subscribe`](Feed::subscribe).
#[derive(Clone)]
pub struct Feed(broadcast::Sender<FeedEvent>);

impl Default for Feed {
    fn default() -> Self {
        Self(broadcast::channel(FEED_CAPACITY).0)
    }
}

impl Feed {
    pub fn subscribe(&self) -> broadcast::Receiver<FeedEvent> {
        self.0.subscribe()
    }

    /// No watcher is not an error: the event is simply dropped.
    pub fn publish(&self, event: FeedEvent) {
        let _ = self.0.send(event);
    }
}
