//! FallbackNotifier: tells operators about approvals through channels that do not need Telegram
//! (console, local file, SMTP email), in the configured priority order.
//!
//! Two strategies: `all` tells every channel (the default: the console line and the file both
//! exist to be read), each from its own durable queue (`console`, `file`, `email`); `first` has
//! one queue (`fallback_chain`) whose entries walk the chain and are done at the first channel
//! that succeeds. Each queue is a [`Lane`]: delivered in order and in batches, an entry removed
//! only once delivered; a failing channel is retried with backoff and after
//! `max_attempts` its entries become dead letters. Entries are delivered only once their commit
//! is durable ([`Wake`]); on start every queue is replayed. This actor owns its channels, their
//! counters and the consumption of their queues; it never reads approval state itself.
//!
//! Here: the actor, its lanes and their pumping. `handlers.rs`: its messages, start and
//! health. `settings.rs`: what it is configured with.
//! `channel.rs`: the channels and how each delivers a batch. `walk.rs`: a batch's walk through
//! a lane's channels and what the actor does with the outcome.

mod channel;
mod console;
mod email;
mod file;
mod handlers;
mod settings;
mod text;
mod walk;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use futures_util::FutureExt;

pub use channel::ChannelConfig;
use channel::{Channel, ChannelStats, Outgoing};
pub use email::{EmailSettings, EmailTls};
pub use settings::{FallbackSettings, Reconfigure, Strategy};
use walk::walk;

use crate::metrics::Metric;
use crate::notification::{Blocked, CountPacer, Wake};
use crate::store::{Channel as Queue, QueueEntry, Queues, StoreError};
use crate::supervision::{self, Restarts};

pub const NAME: &str = "fallback_notifier";

/// Something for operators that is not about one approval (e.g. "Telegram is unreachable").
#[derive(Debug, Clone)]
pub struct Announcement {
    pub subject: String,
    pub text: String,
}

#[derive(Message, Clone, Debug)]
#[rtype(result = "()")]
pub struct Announce(pub Announcement);

/// Most entries delivered in one batch (the file channel writes a batch with one fsync).
const BATCH: usize = 256;

/// How one queued entry has failed so far (`walk.rs` decides when it is a dead letter).
struct EntryFailures {
    /// Every failed attempt.
    attempts: u32,
    /// Failed attempts while the channel delivered other entries of the same batch.
    own: u32,
    /// The first failure.
    since: Instant,
}

/// One durable queue and its delivery state.
struct Lane {
    queue: Queue,
    /// Indexes into the channels, in chain order (one channel under strategy `all`).
    targets: Vec<usize>,
    delivering: bool,
    /// Failed batches in a row with nothing delivered (the channel down): the backoff.
    attempts: u32,
    retry_at: Option<Instant>,
    /// Per entry that failed: its attempts so far, and since when it fails.
    failures: std::collections::HashMap<u64, EntryFailures>,
    /// Durable entries: everything up to `ready_through` (on disk at start) and each confirmed.
    ready: BTreeSet<u64>,
    /// The content of confirmed entries as their Wake carried it (within a byte budget), so
    /// delivery reads the store only for entries replayed after a restart or past the budget.
    cache: crate::wake_cache::WakeCache,
    ready_through: u64,
    queued: usize,
    /// No new batch before this (`fallback.batch_interval` after the last one started).
    next_batch_at: Option<Instant>,
    /// A wake-up at `next_batch_at` is scheduled.
    batch_wake_armed: bool,
    /// Since when confirmed entries wait behind the queue's front, which is not confirmed
    /// (see [`crate::notification::STUCK_AFTER`]).
    blocked: Blocked<()>,
    /// Every entry the queue shows is durable (PostgreSQL: rows are visible once committed).
    all_ready: bool,
}

impl Lane {
    fn is_ready(&self, seq: u64) -> bool {
        self.all_ready || seq <= self.ready_through || self.ready.contains(&seq)
    }
}

pub struct FallbackNotifier {
    settings: Arc<FallbackSettings>,
    channels: Arc<Vec<Channel>>,
    queues: Queues,
    /// The store's clock: history entries and queue ages are reckoned by the time the
    /// approvals were stamped with, on whichever instance.
    clock: crate::clock::Clock,
    lanes: Vec<Lane>,
    stats: Vec<ChannelStats>,
    metrics: Recipient<Metric>,
    restarts: Restarts,
    /// Fault injection (`debug.fault_injection`): wake-ups still to be ignored.
    lose_wakes: u32,
    /// On a shared store: when the queues are counted again.
    counts: CountPacer,
}

impl FallbackNotifier {
    /// Must be called on the arbiter the actor runs on (the email transport binds to its runtime).
    pub fn new(settings: FallbackSettings, queues: Queues, metrics: Recipient<Metric>) -> Self {
        let stats = settings
            .channels
            .iter()
            .map(|c| ChannelStats {
                channel: c.name(),
                ..Default::default()
            })
            .collect();
        let channels = settings.channels.iter().map(Channel::build).collect();
        let lanes = match settings.strategy {
            Strategy::All => (0..settings.channels.len())
                .map(|i| (settings.channels[i].queue(), vec![i]))
                .collect::<Vec<_>>(),
            Strategy::First if settings.channels.is_empty() => Vec::new(),
            Strategy::First => vec![(Queue::FallbackChain, (0..settings.channels.len()).collect())],
        }
        .into_iter()
        .map(|(queue, targets)| Lane {
            queue,
            targets,
            delivering: false,
            attempts: 0,
            failures: std::collections::HashMap::new(),
            retry_at: None,
            ready: BTreeSet::new(),
            cache: Default::default(),
            ready_through: 0,
            queued: 0,
            next_batch_at: None,
            batch_wake_armed: false,
            blocked: Blocked::default(),
            all_ready: queues.visible_is_durable(),
        })
        .collect();
        Self {
            settings: Arc::new(settings),
            channels: Arc::new(channels),
            clock: queues.clock(),
            queues,
            lanes,
            stats,
            metrics,
            restarts: Restarts::default(),
            lose_wakes: 0,
            counts: CountPacer::default(),
        }
    }

    /// Read every lane's queue once (start and restart): what is there is durable, replay it.
    fn reload(&mut self, ctx: &mut Context<Self>) {
        for index in 0..self.lanes.len() {
            let lane = &mut self.lanes[index];
            lane.delivering = false;
            lane.attempts = 0;
            lane.retry_at = None;
            lane.failures.clear();
            // A wake-up scheduled before a restart died with the old context.
            lane.next_batch_at = None;
            lane.batch_wake_armed = false;
            lane.blocked = Blocked::default();
            lane.ready.clear();
            lane.cache.clear();
            match self.queues.scan(lane.queue) {
                Ok((count, last)) => {
                    lane.queued = count;
                    lane.ready_through = last;
                    if count > 0 {
                        tracing::info!(
                            actor = NAME,
                            queue = lane.queue.as_str(),
                            queued = count,
                            "replaying undelivered notifications"
                        );
                    }
                }
                Err(error) => {
                    tracing::error!(actor = NAME, queue = lane.queue.as_str(), %error, "cannot read a notification queue");
                }
            }
            self.pump(index, ctx);
        }
    }

    fn woken(&mut self, wake: Wake, ctx: &mut Context<Self>) {
        if self.lose_wakes > 0 {
            self.lose_wakes -= 1;
            tracing::warn!(actor = NAME, queue = wake.channel.as_str(), seqs = ?wake.confirmed, "fault injection: a wake-up ignored");
            return;
        }
        let Some(index) = self.lanes.iter().position(|l| l.queue == wake.channel) else {
            return;
        };
        let lane = &mut self.lanes[index];
        for seq in &wake.withdrawn {
            lane.ready.remove(seq);
            lane.cache.remove(seq);
        }
        for seq in wake.confirmed {
            // On a shared store every visible entry is ready; one past the last count is new.
            let new = if lane.all_ready {
                seq > lane.ready_through && !lane.ready.contains(&seq)
            } else {
                !lane.is_ready(seq)
            };
            if new {
                lane.ready.insert(seq);
                lane.queued += 1;
                if let Some(entry) = &wake.entry {
                    lane.cache.insert(seq, entry);
                }
            }
        }
        self.pump(index, ctx);
    }

    /// Deliver the durable front of one lane as a batch, unless a batch is under way or the
    /// lane waits to retry.
    fn pump(&mut self, index: usize, ctx: &mut Context<Self>) {
        let Some(lane) = self.lanes.get(index) else {
            return;
        };
        // On a shared store one instance delivers: the holder of the poller's lease.
        if lane.delivering || !self.queues.leading() {
            return;
        }
        if let Some(at) = lane.retry_at {
            let now = Instant::now();
            if at > now {
                supervision::run_later(ctx, NAME, at - now, move |act, ctx| {
                    if let Some(lane) = act.lanes.get_mut(index) {
                        lane.retry_at = None;
                    }
                    act.pump(index, ctx);
                });
                return;
            }
        }
        if self.wait_for_batch_interval(index, ctx) {
            return;
        }
        let Some(lane) = self.lanes.get(index) else {
            return;
        };
        let batch = match self.ready_batch(lane) {
            Ok(batch) => batch,
            Err(error) => {
                tracing::error!(actor = NAME, queue = lane.queue.as_str(), %error, "cannot read a notification queue");
                return;
            }
        };
        let lane = &mut self.lanes[index];
        if batch.is_empty() {
            // Confirmed entries waiting behind an unconfirmed front: for the moment a commit
            // takes, normally; see `notification::STUCK_AFTER`.
            lane.blocked.note((!lane.ready.is_empty()).then_some(()));
            return;
        }
        lane.blocked.note(None);
        let targets = lane.targets.clone();
        lane.delivering = true;
        lane.next_batch_at = Some(Instant::now() + self.settings.batch_interval);
        let walk = walk(
            Arc::clone(&self.channels),
            Arc::clone(&self.settings),
            targets,
            batch,
        );
        // The walk runs outside any handler, so guard it here: a panic becomes a stop and the
        // supervisor restarts the notifier (an unguarded panic would take the actor down).
        let walk = std::panic::AssertUnwindSafe(walk).catch_unwind();
        ctx.spawn(
            walk.into_actor(self)
                .map(move |outcome, act, ctx| match outcome {
                    Ok(walked) => supervision::guarded_with(NAME, act, ctx, |act, ctx| {
                        act.walked(index, walked, ctx)
                    }),
                    Err(_) => {
                        tracing::error!(
                            actor = NAME,
                            "a fallback channel panicked; restarting the notifier"
                        );
                        ctx.stop();
                    }
                }),
        );
    }

    /// True if the lane's last batch started less than `fallback.batch_interval` ago; a
    /// wake-up then starts the next one when the interval is over (one at a time). Why: a
    /// batch costs the file channel a write and an fsync whatever its size, so under load
    /// fewer, larger batches cost less per notification; operators wait milliseconds.
    fn wait_for_batch_interval(&mut self, index: usize, ctx: &mut Context<Self>) -> bool {
        let Some(lane) = self.lanes.get_mut(index) else {
            return false;
        };
        let now = Instant::now();
        let Some(at) = lane.next_batch_at.filter(|at| *at > now) else {
            return false;
        };
        if !lane.batch_wake_armed {
            lane.batch_wake_armed = true;
            supervision::run_later(ctx, NAME, at - now, move |act, ctx| {
                if let Some(lane) = act.lanes.get_mut(index) {
                    lane.batch_wake_armed = false;
                }
                act.pump(index, ctx);
            });
        }
        true
    }

    /// The durable entries at the front of a lane, in order: from the Wake cache, or from sled
    /// for entries replayed after a restart.
    fn ready_batch(&self, lane: &Lane) -> Result<Vec<(u64, Arc<QueueEntry>)>, StoreError> {
        if lane.all_ready {
            // Every visible entry is durable: the front in one read.
            return Ok(self
                .queues
                .front(lane.queue, BATCH, &|_| true)?
                .into_iter()
                .map(|(seq, entry)| match lane.cache.get(&seq) {
                    Some(cached) => (seq, Arc::clone(cached)),
                    None => (seq, Arc::new(entry)),
                })
                .collect());
        }
        let seqs = self
            .queues
            .front_seqs(lane.queue, BATCH, &|seq| lane.is_ready(seq))?;
        let mut batch = Vec::with_capacity(seqs.len());
        for seq in seqs {
            let entry = match lane.cache.get(&seq) {
                Some(entry) => Arc::clone(entry),
                None => match self.queues.get(lane.queue, seq)? {
                    Some(entry) => Arc::new(entry),
                    None => continue,
                },
            };
            batch.push((seq, entry));
        }
        Ok(batch)
    }

    /// On a shared store: each lane's queue counted afresh (other instances add to it).
    fn recount(&mut self) {
        for lane in &mut self.lanes {
            match self.queues.scan(lane.queue) {
                Ok((count, last)) => {
                    lane.queued = count;
                    lane.ready_through = lane.ready_through.max(last);
                    let through = lane.ready_through;
                    lane.ready.retain(|&seq| seq > through);
                }
                Err(error) => {
                    tracing::warn!(actor = NAME, queue = lane.queue.as_str(), %error, "cannot count a notification queue")
                }
            }
        }
        self.publish_queued();
    }

    fn publish_queued(&self) {
        let queued: usize = self.lanes.iter().map(|l| l.queued).sum();
        self.metrics.do_send(Metric::FallbackQueued(queued as i64));
    }

    /// Announcements (breaker transitions) are not about one approval and are not queued:
    /// every channel is told once, best effort.
    fn announce(&mut self, announcement: Announcement, ctx: &mut Context<Self>) {
        let channels = Arc::clone(&self.channels);
        let settings = Arc::clone(&self.settings);
        let walk = async move {
            let outgoing = Outgoing::Announcement(announcement);
            let mut outcomes = Vec::new();
            for (index, channel) in channels.iter().enumerate() {
                let result = channel
                    .deliver(&[&outgoing], &settings.hints)
                    .await
                    .pop()
                    .unwrap_or(Ok(()));
                let ok = result.is_ok();
                outcomes.push(walk::outcome(index, result, &outgoing));
                if ok && settings.strategy == Strategy::First {
                    break;
                }
            }
            outcomes
        };
        let walk = std::panic::AssertUnwindSafe(walk).catch_unwind();
        ctx.spawn(
            walk.into_actor(self)
                .map(|outcome, act, ctx| match outcome {
                    Ok(outcomes) => act.record_all(outcomes),
                    Err(_) => ctx.stop(),
                }),
        );
    }
}
