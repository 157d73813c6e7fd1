//! Digests in the gateway: when to post one instead of single messages, posting it, editing it
//! as its approvals end, and the taps that decide a whole line.
//!
//! A burst is announced in digests when more new approvals wait for the default chat than its
//! budget (the pace `send_interval`, and a group's `group_messages_per_minute`) can post one by
//! one within `telegram.digest_after`; once that backlog is gone, new approvals get single
//! messages again. A digest is one message: its approvals' queue entries leave the queue when
//! Telegram takes it, each approval's message log names it (so a tap on it verifies as on any
//! message, and their endings edit it), and what it lists is stored with it in `meta`
//! (`telegram_digest:<chat>:<message>`), as is, once known, how each listed approval ended
//! (`telegram_ended:<id>`, written once), so every edit, on any instance, renders the same.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use super::delivery::Delivered;
use super::{NAME, TelegramGateway};
use crate::domain::{ApprovalId, AuditEvent, Status, TelegramMessageRef};
use crate::metrics::Metric;
use crate::notification::Event;
use crate::store::{Channel, QueueEntry};
use crate::supervision::guarded_with;
use crate::telegram::api::Attempt;
use crate::telegram::digest::{Digest, Ended, MAX_APPROVALS};
use crate::telegram::render;

/// How far the queue is scanned for a digest's approvals.
const DIGEST_SCAN: usize = 2048;

fn digest_key(message: TelegramMessageRef) -> String {
    format!("telegram_digest:{}:{}", message.chat_id, message.message_id)
}

fn ended_key(id: ApprovalId) -> String {
    format!("telegram_ended:{id}")
}

/// A digest ready to post: the queue entries it announces (oldest first) and what it lists.
pub(super) struct Batch {
    entries: Vec<(u64, Arc<QueueEntry>)>,
    digest: Digest,
}

impl TelegramGateway {
    /// How many new messages the default chat can take one by one within `digest_after`:
    /// `usize::MAX` when digests are off or nothing paces the chat.
    fn digest_capacity(&self, now: Instant) -> usize {
        let after = self.settings.digest_after;
        if after.is_zero() {
            return usize::MAX;
        }
        let interval = self.settings.send_interval;
        let paced = if interval.is_zero() {
            usize::MAX
        } else {
            usize::try_from(after.as_millis() / interval.as_millis()).unwrap_or(usize::MAX) + 1
        };
        let group = self
            .group_sends
            .as_ref()
            .map_or(usize::MAX, |budget| budget.available_within(now, after));
        paced.min(group)
    }

    /// A digest to post instead of `first`'s single message, when more approvals wait than the
    /// chat can take one by one in time. Only approvals for the default chat that are still
    /// pending as queued (an ended one is posted decided, on its own) and not waiting for a
    /// retry are listed.
    pub(super) fn digest_batch(
        &mut self,
        first: u64,
        first_entry: &Arc<QueueEntry>,
        now: Instant,
    ) -> Option<Batch> {
        let capacity = self.digest_capacity(now);
        if capacity == usize::MAX || !self.digestible(first_entry) {
            return None;
        }
        let mut entries = vec![(first, Arc::clone(first_entry))];
        let mut after = first;
        let mut scanned = 0;
        while scanned < DIGEST_SCAN && entries.len() < MAX_APPROVALS {
            let seqs = self
                .queues
                .seqs_after(Channel::Telegram, after, 256, &|_| true)
                .ok()?;
            if seqs.is_empty() {
                break;
            }
            scanned += seqs.len();
            for seq in seqs {
                after = seq;
                if !self.is_ready(seq) {
                    // Not confirmed yet: its approval cannot be known; stop here.
                    scanned = DIGEST_SCAN;
                    break;
                }
                let Ok(Some(entry)) = self.entry(seq) else {
                    continue;
                };
                let retrying = self
                    .delivery
                    .retries
                    .get(&seq)
                    .is_some_and(|&(_, at)| at > now);
                if !retrying && self.digestible(&entry) {
                    entries.push((seq, entry));
                    if entries.len() >= MAX_APPROVALS {
                        break;
                    }
                }
            }
        }
        if entries.len() <= capacity {
            return None;
        }
        let approvals: Vec<&crate::domain::Approval> =
            entries.iter().map(|(_, entry)| &entry.approval).collect();
        let (digest, taken) = Digest::build(&approvals);
        entries.truncate(taken);
        (taken > 1).then_some(Batch { entries, digest })
    }

    /// A new approval for the default chat, still pending, with no later entry queued.
    fn digestible(&self, entry: &QueueEntry) -> bool {
        entry.event == Event::Created
            && entry.only.is_none()
            && entry.approval.status == Status::Pending
            && entry.approval.route.is_empty()
            && self.superseded.get(&entry.approval.id).is_none()
    }

    /// Post `batch` as one message; the pump has taken the budget and the breaker's leave.
    pub(super) fn post_digest(&mut self, batch: Batch, ctx: &mut Context<Self>) {
        self.delivery.delivering = true;
        let text = batch.digest.text(&HashMap::new());
        let keyboard = batch.digest.keyboard(&self.codec, &HashMap::new());
        let api = self.api.clone();
        let chat = self.settings.chat_id;
        tracing::info!(
            actor = NAME,
            approvals = batch.entries.len(),
            lines = batch.digest.lines.len(),
            "posting a digest"
        );
        let call = async move { api.send(chat, text, keyboard).await };
        ctx.spawn(call.into_actor(self).map(move |attempt, act, ctx| {
            guarded_with(NAME, act, ctx, |act, ctx| {
                act.delivery.delivering = false;
                act.digest_posted(batch, attempt, ctx);
                act.pump(ctx);
            });
        }));
    }

    fn digest_posted(
        &mut self,
        batch: Batch,
        attempt: Attempt<TelegramMessageRef>,
        ctx: &mut Context<Self>,
    ) {
        let Batch { entries, digest } = batch;
        let message = match attempt.result {
            Ok(message) => message,
            Err(failure) => {
                // Handled as the first entry's failure: its retry, the breaker, the fallback
                // channels; the next pump builds the digest again.
                let Some((seq, entry)) = entries.into_iter().next() else {
                    return;
                };
                let attempt = Attempt {
                    method: attempt.method,
                    took: attempt.took,
                    result: Err(failure),
                };
                self.finish(seq, (*entry).clone(), attempt, ctx);
                return;
            }
        };
        // What it lists first: a tap or an edit may come as soon as the message exists.
        if let Err(error) = self
            .queues
            .meta_init(&digest_key(message), &digest.encode())
        {
            tracing::error!(actor = NAME, %error, "cannot record a digest");
        }
        self.open_digests
            .push_back((message, digest.ids().collect()));
        let mut history = Vec::with_capacity(entries.len());
        let now_ms = self.clock.now_ms();
        for (_, entry) in &entries {
            if let Err(error) = self.queues.add_message_ref(entry.approval.id, message) {
                tracing::error!(actor = NAME, %error, "cannot record a sent digest");
            }
            history.push((
                entry.approval.id,
                AuditEvent::at(now_ms, "delivered")
                    .on("telegram")
                    .saying(format!(
                        "in digest message {} in chat {} ({} approvals)",
                        message.message_id,
                        message.chat_id,
                        entries.len()
                    )),
            ));
        }
        let Some((first_seq, first)) = entries.first().cloned() else {
            return;
        };
        let first_attempt = Attempt {
            method: attempt.method,
            took: attempt.took,
            result: Ok(Delivered::Sent(Vec::new())),
        };
        // The first entry goes through the common path (breaker, pacing, metrics); the others
        // simply leave the queue.
        self.finish(first_seq, (*first).clone(), first_attempt, ctx);
        for (seq, _) in entries.iter().skip(1) {
            self.done(*seq);
        }
        self.queues.record_all(history);
        self.metrics.do_send(Metric::Queue {
            channel: "telegram",
            event: "delivered",
            count: entries.len().saturating_sub(1) as u64,
        });
    }

    /// Whether `message` is a digest, and what it lists.
    pub(super) fn digest_of(&self, message: TelegramMessageRef) -> Option<Digest> {
        let bytes = self.queues.meta_get(&digest_key(message)).ok()??;
        Digest::decode(&bytes)
    }

    /// Remember how `entry`'s approval ended, for the digests that list it.
    pub(super) fn note_ended(&mut self, entry: &QueueEntry) {
        let approval = &entry.approval;
        if entry.event != Event::Ended || !approval.status.is_terminal() {
            return;
        }
        self.endings_noted += 1;
        let ended = Ended {
            status: approval.status,
            by: approval
                .decided_by
                .as_ref()
                .map(render::who)
                .unwrap_or_default(),
        };
        let bytes = serde_json::to_vec(&ended).unwrap_or_default();
        if let Err(error) = self.queues.meta_init(&ended_key(approval.id), &bytes) {
            tracing::warn!(actor = NAME, %error, "cannot record how a digest's approval ended");
        }
    }

    /// A digest's text and buttons as they stand: each listed approval's ending, as noted.
    pub(super) fn digest_view(
        &self,
        digest: &Digest,
    ) -> (String, Option<teloxide::types::InlineKeyboardMarkup>) {
        let ended: HashMap<ApprovalId, Ended> = digest
            .ids()
            .filter_map(|id| {
                let bytes = self.queues.meta_get(&ended_key(id)).ok()??;
                Some((id, serde_json::from_slice(&bytes).ok()?))
            })
            .collect();
        (digest.text(&ended), digest.keyboard(&self.codec, &ended))
    }
}

impl TelegramGateway {
    /// The backlog is gone: the oldest digest whose undecided approvals the chat can now take
    /// one by one within `digest_after` gets them posted as messages of their own (one per
    /// call, paced like every send; the digest stays, and an ending edits both). A digest with
    /// more undecided than that stays the view of them.
    pub(super) fn break_up_digest(&mut self, now: Instant, ctx: &mut Context<Self>) {
        if self.queued > 0
            || self.open_digests.is_empty()
            || self.break_up_waits_for == Some(self.endings_noted)
        {
            return;
        }
        let capacity = self.digest_capacity(now);
        let next = loop {
            let Some((digest, ids)) = self.open_digests.front().cloned() else {
                return;
            };
            let open: Vec<ApprovalId> = ids
                .iter()
                .filter(|id| !self.has_ended(**id))
                .copied()
                .collect();
            match open.first() {
                None => {
                    self.open_digests.pop_front();
                }
                Some(_) if open.len() > capacity => {
                    self.break_up_waits_for = Some(self.endings_noted);
                    return;
                }
                Some(&id) => {
                    if let Some(front) = self.open_digests.front_mut() {
                        front.1 = open[1..].to_vec();
                    }
                    break (digest, id);
                }
            }
        };
        if let Some(budget) = &mut self.group_sends
            && let Err(free_at) = budget.take(now)
        {
            // Not now: the approval goes back to the front of its digest's list.
            if let Some(front) = self.open_digests.front_mut() {
                front.1.insert(0, next.1);
            }
            let delay = free_at.saturating_duration_since(Instant::now());
            crate::supervision::run_later(ctx, NAME, delay, |act, ctx| act.pump(ctx));
            return;
        }
        let (allowed, transition) = self.breaker.try_acquire(now);
        self.on_transition(transition);
        if allowed {
            self.post_single(next.0, next.1, ctx);
        }
    }

    /// Whether the gateway noted `id`'s ending (its ended entry was delivered).
    fn has_ended(&self, id: ApprovalId) -> bool {
        self.queues
            .meta_get(&ended_key(id))
            .ok()
            .flatten()
            .is_some()
    }

    /// One approval listed in `digest`, posted on its own as it stands now (asked of the
    /// registry: it may have ended since).
    fn post_single(&mut self, digest: TelegramMessageRef, id: ApprovalId, ctx: &mut Context<Self>) {
        let Some(registry) = self.registry.clone() else {
            return;
        };
        self.delivery.delivering = true;
        let api = self.api.clone();
        let codec = Arc::clone(&self.codec);
        let session = self.settings.session_grant.is_some();
        let console = self.settings.console_url.clone();
        let chat = self.settings.chat_id;
        let call = async move {
            let approval = match registry.send(crate::registry::Get(id)).await {
                Ok(Ok(approval)) if approval.status == Status::Pending => approval,
                _ => return None,
            };
            let text = render::message_text(&approval, console.as_deref());
            let keyboard = render::keyboard(&approval, &codec, session);
            Some(api.send(chat, text, keyboard).await)
        };
        ctx.spawn(call.into_actor(self).map(move |attempt, act, ctx| {
            guarded_with(NAME, act, ctx, |act, ctx| {
                act.delivery.delivering = false;
                if let Some(attempt) = attempt {
                    act.single_posted(digest, id, attempt);
                }
                act.pump(ctx);
            });
        }));
    }

    fn single_posted(
        &mut self,
        digest: TelegramMessageRef,
        id: ApprovalId,
        attempt: Attempt<TelegramMessageRef>,
    ) {
        let now = Instant::now();
        self.delivery.send_ready_at = Some(now + self.settings.send_interval);
        super::log_call(&attempt, Some(id), "-");
        let transition = self.breaker.record(now, attempt.result.is_ok());
        self.on_transition(transition);
        match attempt.result {
            Ok(message) => {
                if let Err(error) = self.queues.add_message_ref(id, message) {
                    tracing::error!(actor = NAME, %error, "cannot record a sent message");
                }
                self.queues.record(
                    id,
                    &AuditEvent::at(self.clock.now_ms(), "delivered")
                        .on("telegram")
                        .saying(format!(
                            "message {} sent to chat {}, on its own after digest message {}",
                            message.message_id, message.chat_id, digest.message_id
                        )),
                );
            }
            // It stays in the digest: that message still decides it.
            Err(failure) => {
                tracing::warn!(actor = NAME, approval_id = %id, error = %failure.detail, "cannot post a digest's approval on its own; the digest still shows it");
            }
        }
    }
}
