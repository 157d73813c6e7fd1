//! One batch's walk through a lane's channels, and the per-channel outcome bookkeeping it
//! feeds. Runs outside the actor (a future); the actor applies what it returns.

use std::collections::HashMap;
use std::sync::Arc;

use super::FallbackSettings;
use super::channel::{Channel, ChannelStats, Outgoing};
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

/// (channel index, its result, (subject, request id)) for the counters and logs.
pub(super) type ChannelOutcome = (usize, Result<(), String>, (String, Option<String>));

/// One channel's outcome for one notification into its stats; true if delivered.
pub(super) fn record(
    stats: &mut ChannelStats,
    result: Result<(), String>,
    (subject, request_id): &(String, Option<String>),
) -> bool {
    match result {
        Ok(()) => {
            stats.delivered += 1;
            stats.consecutive_failures = 0;
            true
        }
        Err(error) => {
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
            outcomes.push((index, result, items[item].1.label()));
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
        .filter_map(|(seq, outgoing)| outgoing.label().1.map(|id| (*seq, id)))
        .collect();
    Walked {
        delivered,
        about,
        requests,
        happened,
        outcomes,
    }
}
