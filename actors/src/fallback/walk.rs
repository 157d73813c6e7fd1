//! One batch's walk through a lane's channels (a future, outside the actor), and what the
//! notifier does with its outcome: acknowledge what was delivered, count and log per channel,
//! retry with backoff or move to the dead letters.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::channel::{Channel, ChannelStats, Outgoing};
use super::{EntryFailures, FallbackNotifier, FallbackSettings, NAME};
use crate::domain::AuditEvent;
use crate::metrics::Metric;
use crate::notification::Notification;
use crate::store::QueueEntry;

/// What one batch's walk produced: per item (queue seq), whether some channel delivered it, and
/// the last error otherwise; plus per-channel outcomes for the counters.
pub(super) struct Walked {
    pub(super) delivered: Vec<(u64, Result<(), String>)>,
    /// Per seq: the approval it notifies about and the notification's kind (history).
    pub(super) about: HashMap<u64, (crate::domain::ApprovalId, &'static str)>,
    /// Per seq: the id of the request that caused the notification, when there was one.
    pub(super) requests: HashMap<u64, String>,
    /// Per seq: when the change it announces happened (ms), for the queue-age histogram.
    pub(super) happened: HashMap<u64, i64>,
    pub(super) outcomes: Vec<ChannelOutcome>,
}

/// (channel index, its result) for the counters; a failure carries what the log names:
/// (error, (subject, request id)), worked out only then.
pub(super) type ChannelOutcome = (usize, Result<(), (String, (String, Option<String>))>);

/// A channel's result for `outgoing` as a [`ChannelOutcome`].
pub(super) fn outcome(
    index: usize,
    result: Result<(), String>,
    outgoing: &Outgoing,
) -> ChannelOutcome {
    (index, result.map_err(|error| (error, outgoing.label())))
}

/// One channel's outcome for one notification into its stats; true if delivered.
pub(super) fn record(
    stats: &mut ChannelStats,
    result: Result<(), (String, (String, Option<String>))>,
) -> bool {
    match result {
        Ok(()) => {
            stats.delivered += 1;
            stats.consecutive_failures = 0;
            true
        }
        Err((error, (subject, request_id))) => {
            tracing::error!(
                channel = stats.channel,
                subject = %subject,
                request_id = request_id.as_deref().unwrap_or("-"),
                %error,
                "fallback channel failed"
            );
            stats.failed += 1;
            stats.consecutive_failures += 1;
            stats.last_error = Some(error);
            false
        }
    }
}

/// Walk a batch through the lane's channels: each channel gets what every earlier one failed
/// to deliver (one channel under strategy `all`, the chain under `first`).
pub(super) async fn walk(
    channels: Arc<Vec<Channel>>,
    settings: Arc<FallbackSettings>,
    targets: Vec<usize>,
    batch: Vec<(u64, Arc<QueueEntry>)>,
) -> Walked {
    let happened = batch
        .iter()
        .map(|(seq, entry)| (*seq, entry.happened_ms()))
        .collect();
    let items: Vec<(u64, Outgoing)> = batch
        .into_iter()
        .map(|(seq, entry)| {
            let notification = Notification {
                event: entry.event,
                approval: entry.approval.clone(),
                request_id: entry.request_id.clone(),
            };
            (seq, Outgoing::Approval(Box::new(notification)))
        })
        .collect();
    let mut last_error: Vec<Option<String>> = vec![None; items.len()];
    let mut remaining: Vec<usize> = (0..items.len()).collect();
    let mut outcomes = Vec::new();
    for index in targets {
        if remaining.is_empty() {
            break;
        }
        let Some(channel) = channels.get(index) else {
            continue;
        };
        let outgoing: Vec<&Outgoing> = remaining.iter().map(|&i| &items[i].1).collect();
        let results = channel.deliver(&outgoing, &settings.hints).await;
        let mut failed = Vec::new();
        for (&item, result) in remaining.iter().zip(results) {
            if let Err(error) = &result {
                last_error[item] = Some(error.clone());
                failed.push(item);
            } else {
                last_error[item] = None;
            }
            outcomes.push(outcome(index, result, &items[item].1));
        }
        remaining = failed;
    }
    let delivered = items
        .iter()
        .enumerate()
        .map(|(i, (seq, _))| {
            let result = if remaining.contains(&i) {
                Err(last_error[i]
                    .clone()
                    .unwrap_or_else(|| "no channel delivered it".into()))
            } else {
                Ok(())
            };
            (*seq, result)
        })
        .collect();
    let about = items
        .iter()
        .filter_map(|(seq, outgoing)| outgoing.about().map(|a| (*seq, a)))
        .collect();
    let requests = items
        .iter()
        .filter_map(|(seq, outgoing)| outgoing.request_id().map(|id| (*seq, id.to_string())))
        .collect();
    Walked {
        delivered,
        about,
        requests,
        happened,
        outcomes,
    }
}

impl FallbackNotifier {
    pub(super) fn walked(&mut self, index: usize, walked: Walked, ctx: &mut Context<Self>) {
        self.record_all(walked.outcomes);
        let queue = self.lanes[index].queue;
        let done: Vec<u64> = walked
            .delivered
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(seq, _)| *seq)
            .collect();
        let failed: Vec<(u64, String)> = walked
            .delivered
            .into_iter()
            .filter_map(|(seq, r)| r.err().map(|e| (seq, e)))
            .collect();
        if let Err(error) = self.queues.ack(queue, &done) {
            tracing::error!(actor = NAME, %error, "cannot remove delivered notifications");
        }
        // The shared clock, as the entries' times were stamped by (possibly on other instances).
        let now_ms = self.clock.now_ms();
        if !done.is_empty() {
            self.metrics.do_send(Metric::Queue {
                channel: queue.as_str(),
                event: "delivered",
                count: done.len() as u64,
            });
            self.metrics.do_send(Metric::QueueAge {
                channel: queue.as_str(),
                ages: done
                    .iter()
                    .filter_map(|seq| walked.happened.get(seq))
                    .map(|&ms| crate::store::queue::seconds_since(ms, now_ms))
                    .collect(),
            });
        }
        self.queues.record_all(
            done.iter()
                .filter_map(|seq| {
                    let (id, kind) = walked.about.get(seq)?;
                    let event = AuditEvent::at(now_ms, "delivered")
                        .on(queue.as_str())
                        .saying(format!("{kind} notification"));
                    Some((*id, event))
                })
                .collect(),
        );
        let lane = &mut self.lanes[index];
        lane.delivering = false;
        for seq in &done {
            lane.ready.remove(seq);
            lane.cache.remove(seq);
        }
        lane.queued = lane.queued.saturating_sub(done.len());
        for seq in &done {
            lane.failures.remove(seq);
        }
        // The channel delivered something: it is up, and what failed beside it failed on its
        // own. Nothing delivered: the channel is down, which is no fault of the entries.
        let channel_down = done.is_empty();
        if !channel_down {
            lane.attempts = 0;
        }
        if !failed.is_empty() {
            lane.attempts += 1;
            let now = Instant::now();
            let dead_after = self.settings.dead_letter_after;
            let max_attempts = self.settings.max_attempts;
            // Attempts are counted per entry. An entry is a dead letter once it has failed
            // `max_attempts` times while the channel delivered others (it is the problem, not
            // the channel), or has used up its attempts and been failing for
            // `dead_letter_after` (a channel down that long).
            let undeliverable: Vec<&(u64, String)> = failed
                .iter()
                .filter(|(seq, _)| {
                    let failure = lane.failures.entry(*seq).or_insert(EntryFailures {
                        attempts: 0,
                        own: 0,
                        since: now,
                    });
                    failure.attempts += 1;
                    if !channel_down {
                        failure.own += 1;
                    }
                    failure.own >= max_attempts
                        || (failure.attempts >= max_attempts
                            && now.duration_since(failure.since) >= dead_after)
                })
                .collect();
            for (seq, reason) in &undeliverable {
                let approval_id = walked
                    .about
                    .get(seq)
                    .map(|(id, _)| id.to_string())
                    .unwrap_or_default();
                let request_id = walked.requests.get(seq).map_or("-", String::as_str);
                tracing::error!(actor = NAME, queue = queue.as_str(), seq, %approval_id, request_id, %reason, "notification undeliverable after every attempt; moved to the dead letters");
                if let Err(error) = self.queues.bury(queue, *seq, reason) {
                    tracing::error!(actor = NAME, %error, "cannot move a notification to the dead letters");
                }
                self.metrics.do_send(Metric::Queue {
                    channel: queue.as_str(),
                    event: "dead_lettered",
                    count: 1,
                });
                if let Some((id, _)) = walked.about.get(seq) {
                    let event = AuditEvent::at(self.clock.now_ms(), "dead_lettered")
                        .on(queue.as_str())
                        .saying(reason.clone());
                    self.queues.record(*id, &event);
                }
                lane.ready.remove(seq);
                lane.cache.remove(seq);
                lane.failures.remove(seq);
            }
            lane.queued = lane.queued.saturating_sub(undeliverable.len());
            if undeliverable.len() < failed.len() {
                let exponent = (lane.attempts - 1).min(6);
                let delay = self
                    .settings
                    .retry_delay
                    .saturating_mul(1 << exponent)
                    .min(Duration::from_secs(60));
                lane.retry_at = Some(Instant::now() + delay);
            }
        }
        self.publish_queued();
        self.pump(index, ctx);
    }

    /// Count a batch's outcomes per channel (one metric message per channel and outcome, not
    /// per notification) and log every failure.
    pub(super) fn record_all(&mut self, outcomes: Vec<ChannelOutcome>) {
        // (delivered, failed) per channel index.
        let mut counts = vec![(0u64, 0u64); self.stats.len()];
        for (index, result) in outcomes {
            if let (Some(stats), Some(count)) = (self.stats.get_mut(index), counts.get_mut(index)) {
                if record(stats, result) {
                    count.0 += 1;
                } else {
                    count.1 += 1;
                }
            }
        }
        for (stats, (delivered, failed)) in self.stats.iter().zip(counts) {
            for (outcome, count) in [("delivered", delivered), ("failed", failed)] {
                if count > 0 {
                    self.metrics.do_send(Metric::Fallback {
                        channel: stats.channel,
                        outcome,
                        count,
                    });
                }
            }
        }
    }
}
