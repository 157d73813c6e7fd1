//! Draining the Telegram queue: one Bot API call at a time, oldest deliverable entry first,
//! paced for the chat, retried with backoff, gated by the circuit breaker. Only entries whose
//! commit is durable are delivered (each waits for its [`Wake`](crate::notification::Wake)).
//! Order is kept per approval, not globally: an entry waiting to be retried holds back the later
//! entries of its own approval only, so one failing call does not stall every other approval
//! (under a 30% 5xx rate the queue drains at nearly the fault-free pace). An entry leaves the
//! queue only when Telegram confirms it, or becomes a dead letter when it never can.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;

use super::{NAME, TelegramGateway};
use crate::domain::TelegramMessageRef;
use crate::notification::{Blocked, Event};
use crate::store::{Channel, QueueEntry};
use crate::supervision::{self, guarded_with};
use crate::telegram::api::Attempt;
use crate::telegram::render;
use crate::telegram::retry::FailureKind;
use teloxide::types::InlineKeyboardMarkup;

/// How far the queue is scanned for a deliverable entry on each pump.
const SCAN: usize = 1024;

#[derive(Default)]
pub(super) struct State {
    pub(super) delivering: bool,
    /// Entries that failed: attempts so far and when they may be tried again.
    pub(super) retries: HashMap<u64, (u32, Instant)>,
    /// Pacing: no message to the chat before this.
    pub(super) send_ready_at: Option<Instant>,
    wake: Option<(Instant, SpawnHandle)>,
    /// The entry the last scan or hand-over walk stopped at, not confirmed (by seq), and since
    /// when (see `notification::STUCK_AFTER`).
    pub(super) blocked: Blocked<u64>,
    /// Fault injection (`debug.fault_injection`): wake-ups still to be ignored.
    pub(super) lose_wakes: u32,
}

enum Next {
    Deliver(u64, Arc<QueueEntry>),
    RetryAt(Instant),
    Nothing,
}

pub(super) enum Delivered {
    /// New messages, each already in the message log (so a retry after a later chat failed
    /// does not post again where one went).
    Sent(Vec<TelegramMessageRef>),
    Edited,
    /// An edit with no known message to edit: nothing was asked of Telegram.
    Nothing,
}

impl TelegramGateway {
    /// Deliver the outbox's head if nothing stops us; otherwise arrange to be woken.
    pub(super) fn pump(&mut self, ctx: &mut Context<Self>) {
        // Another instance delivers (it holds the poller's lease).
        if self.delivery.delivering || !self.leading {
            return;
        }
        let now = Instant::now();
        if let Some(at) = self.delivery.send_ready_at.filter(|at| *at > now) {
            // Telegram asked for a pause (429). One longer than an open breaker's keeps
            // operators from hearing of new approvals as long as an outage would, so what waits
            // goes to the fallback channels now, as with the breaker open; Telegram still gets
            // every entry once the pause ends. The pause is not counted as failures.
            if at - now > self.breaker.break_duration() && self.tell_fallback_all(ctx) {
                self.wake_at(ctx, now);
            } else {
                self.wake_at(ctx, at);
            }
            return;
        }
        if self.breaker.refuses(now) {
            // Nothing can go to Telegram before the probe: hand what waits to the fallback
            // channels (O(new entries)) without scanning the queue for a deliverable entry.
            if self.tell_fallback_all(ctx) {
                self.wake_at(ctx, now);
            } else if let Some(at) = self.breaker.next_probe_at() {
                self.wake_at(ctx, at);
            }
            return;
        }
        let (seq, entry) = match self.next_deliverable(now) {
            Ok(Next::Deliver(seq, entry)) => {
                self.blocked_on(None);
                (seq, entry)
            }
            Ok(Next::RetryAt(at)) => {
                self.wake_at(ctx, at);
                return;
            }
            // Nothing, or only entries whose commit is not confirmed yet: their Wake pumps.
            // With the queue empty, a digest whose undecided approvals now fit the chat's
            // budget is replaced by messages of their own, one per pump.
            Ok(Next::Nothing) => {
                self.break_up_digest(now, ctx);
                return;
            }
            Err(error) => {
                tracing::error!(actor = NAME, %error, "cannot read the Telegram queue");
                return;
            }
        };
        // A burst: more wait than the chat can take one by one in time, so one digest instead.
        let batch = if entry.event == Event::Created {
            self.digest_batch(seq, &entry, now)
        } else {
            None
        };
        // A new message to a group waits for the group's budget (the entry stays queued).
        if entry.event == Event::Created
            && let Some(budget) = &mut self.group_sends
            && let Err(free_at) = budget.take(now)
        {
            self.wake_at(ctx, free_at);
            return;
        }
        let mut entry = (*entry).clone();
        let (allowed, transition) = self.breaker.try_acquire(now);
        self.on_transition(transition);
        if !allowed {
            // Skipping costs nothing but this check; operators hear about what waits.
            if self.tell_fallback_all(ctx) {
                self.wake_at(ctx, now);
            } else if let Some(at) = self.breaker.next_probe_at() {
                self.wake_at(ctx, at);
            }
            return;
        }
        if let Some(batch) = batch {
            self.post_digest(batch, ctx);
            return;
        }
        // Not posted yet but already ended: post the ended state; its edit is then moot.
        let mut also = None;
        if entry.event == Event::Created
            && let Some(&ended_seq) = self.superseded.get(&entry.approval.id)
            && ended_seq > seq
            && self.is_ready(ended_seq)
            && let Ok(Some(ended)) = self.queues.get(Channel::Telegram, ended_seq)
        {
            entry.approval = ended.approval;
            also = Some(ended_seq);
        }
        self.delivery.delivering = true;
        let call = self.deliver(seq, &entry);
        // A child of the approval's span when the registry gave us one (not after a restart).
        let span = match self.spans.get(&entry.approval.id) {
            Some(parent) => {
                tracing::info_span!(parent: parent, "telegram", approval_id = %entry.approval.id, send = entry.event == Event::Created)
            }
            None => {
                tracing::info_span!("telegram", approval_id = %entry.approval.id, send = entry.event == Event::Created)
            }
        };
        let call = tracing::Instrument::instrument(call, span);
        ctx.spawn(call.into_actor(self).map(move |attempt, act, ctx| {
            guarded_with(NAME, act, ctx, |act, ctx| {
                act.delivery.delivering = false;
                let delivered = attempt.result.is_ok();
                act.finish(seq, entry, attempt, ctx);
                if delivered && let Some(also) = also {
                    act.done(also);
                }
                act.pump(ctx);
            });
        }));
    }

    /// The oldest durable entry that may go now: not waiting for a retry, and with no earlier
    /// undelivered entry of the same approval (per-approval order). Scans at most `SCAN`
    /// entries; stops at the first unconfirmed one, whose approval it cannot know yet.
    fn next_deliverable(&mut self, now: Instant) -> Result<Next, crate::store::StoreError> {
        let mut held: HashSet<crate::domain::ApprovalId> = HashSet::new();
        let mut earliest_retry: Option<Instant> = None;
        let mut blocked = None;
        // Keys are read in growing chunks from the front: the first entry is deliverable
        // almost always, so a pump reads a few keys, not `SCAN`, however long the backlog.
        let (mut after, mut scanned, mut chunk) = (0, 0, 8);
        'scan: while scanned < SCAN {
            let seqs = self.queues.seqs_after(
                Channel::Telegram,
                after,
                chunk.min(SCAN - scanned),
                &|_| true,
            )?;
            if seqs.is_empty() {
                break;
            }
            scanned += seqs.len();
            chunk *= 4;
            for seq in seqs {
                after = seq;
                if !self.is_ready(seq) {
                    blocked = Some(seq);
                    break 'scan;
                }
                let entry = match self.cache.get(&seq) {
                    Some(entry) => Arc::clone(entry),
                    None => match self.queues.get(Channel::Telegram, seq)? {
                        Some(entry) => {
                            let entry = Arc::new(entry);
                            self.cache.insert(seq, &entry);
                            entry
                        }
                        None => continue,
                    },
                };
                let id = entry.approval.id;
                if held.contains(&id) {
                    continue;
                }
                if let Some(&(_, at)) = self.delivery.retries.get(&seq)
                    && at > now
                {
                    held.insert(id);
                    earliest_retry = Some(earliest_retry.map_or(at, |e: Instant| e.min(at)));
                    continue;
                }
                return Ok(Next::Deliver(seq, entry));
            }
        }
        self.blocked_on(blocked);
        Ok(earliest_retry.map_or(Next::Nothing, Next::RetryAt))
    }

    /// Note the unconfirmed entry a scan or walk stopped at, or that none stopped it.
    pub(super) fn blocked_on(&mut self, seq: Option<u64>) {
        self.delivery.blocked.note(seq);
    }

    fn wake_at(&mut self, ctx: &mut Context<Self>, at: Instant) {
        if let Some((current, handle)) = self.delivery.wake {
            if current <= at {
                return;
            }
            ctx.cancel_future(handle);
        }
        let delay = at.saturating_duration_since(Instant::now());
        let handle = supervision::run_later(ctx, NAME, delay, |act, ctx| {
            act.delivery.wake = None;
            act.pump(ctx);
        });
        self.delivery.wake = Some((at, handle));
    }

    /// The Bot API call(s) for one entry, as an owned future.
    fn deliver(
        &mut self,
        seq: u64,
        entry: &QueueEntry,
    ) -> impl Future<Output = Attempt<Delivered>> + 'static {
        let api = self.api.clone();
        let text = render::message_text(&entry.approval, self.settings.console_url.as_deref());
        let keyboard = render::keyboard(
            &entry.approval,
            &self.codec,
            self.settings.session_grant.is_some(),
        );
        let send = matches!(entry.event, Event::Created | Event::Escalated);
        let chats = if send {
            self.chats_to_post(entry)
        } else {
            Vec::new()
        };
        let targets = match entry.only {
            _ if send => Vec::new(),
            Some(message) => vec![message],
            None => self.queues.message_refs(entry.approval.id),
        };
        // A digest among the copies is edited as a digest: all its lines, this one's ending
        // noted first (only then: the note is a durable write, not worth making for every
        // ending).
        let targets: Vec<(TelegramMessageRef, Option<crate::telegram::digest::Digest>)> = targets
            .into_iter()
            .map(|target| (target, self.digest_of(target)))
            .collect();
        if targets.iter().any(|(_, digest)| digest.is_some()) {
            self.note_ended(entry);
        }
        let mut rendered = Vec::new();
        let targets: Vec<(TelegramMessageRef, String, Option<InlineKeyboardMarkup>)> = targets
            .into_iter()
            .filter_map(|(target, digest)| match digest {
                Some(digest) => {
                    let (text, keyboard) = self.digest_view(&digest);
                    // A digest already showing exactly this needs no edit (most endings of a
                    // group change nothing until the last).
                    let fingerprint = fingerprint(&text, keyboard.as_ref());
                    if self.digests_shown.get(&target) == Some(&fingerprint) {
                        return None;
                    }
                    rendered.push((target, fingerprint));
                    Some((target, text, keyboard))
                }
                None => Some((target, text.clone(), keyboard.clone())),
            })
            .collect();
        if !rendered.is_empty() {
            self.digests_rendering.insert(seq, rendered);
        }
        let (queues, id) = (self.queues.clone(), entry.approval.id);
        async move {
            if send {
                return post(&api, &queues, id, chats, text, keyboard).await;
            }
            let mut last = Attempt {
                method: "editMessageText",
                result: Ok(if targets.is_empty() {
                    Delivered::Nothing
                } else {
                    Delivered::Edited
                }),
                took: std::time::Duration::ZERO,
            };
            // Every copy gets the final text; one that is gone or already right is done.
            for (target, text, keyboard) in targets {
                let attempt = api.edit(target, text, keyboard).await;
                last.took += attempt.took;
                match attempt.result {
                    Ok(()) => {}
                    Err(failure) if failure.kind == FailureKind::Moot => {}
                    Err(failure) => {
                        last.result = Err(failure);
                        break;
                    }
                }
            }
            last
        }
    }
}

/// Sends the message to each chat in turn, recording each copy as it is made; the first
/// failure ends the attempt (what was sent stays recorded, so the retry skips those chats).
async fn post(
    api: &crate::telegram::api::Api,
    queues: &crate::store::Queues,
    id: crate::domain::ApprovalId,
    chats: Vec<i64>,
    text: String,
    keyboard: Option<teloxide::types::InlineKeyboardMarkup>,
) -> Attempt<Delivered> {
    let mut done = Attempt {
        method: "sendMessage",
        took: std::time::Duration::ZERO,
        result: Ok(Delivered::Sent(Vec::new())),
    };
    let mut sent = Vec::new();
    for chat in chats {
        let attempt = api.send(chat, text.clone(), keyboard.clone()).await;
        done.took += attempt.took;
        match attempt.result {
            Ok(message) => {
                // The log is what a retry and the edits read: record before anything else.
                if let Err(error) = queues.add_message_ref(id, message) {
                    tracing::error!(actor = NAME, %error, "cannot record a sent message");
                }
                sent.push(message);
            }
            Err(failure) => {
                done.result = Err(failure);
                return done;
            }
        }
    }
    done.result = Ok(Delivered::Sent(sent));
    done
}

impl TelegramGateway {
    /// Where an entry that posts goes, in order: for a creation, the approval's chats (its
    /// route's, or the default); for an escalation, a fresh copy in the first chat when the step
    /// re-posts, then each chat the steps added. A chat that already shows the approval is
    /// skipped (a retry after a partial failure, a step naming a chat told before), except
    /// for the re-post, which is the point.
    fn chats_to_post(&self, entry: &QueueEntry) -> Vec<i64> {
        let approval = &entry.approval;
        let shown: HashSet<i64> = self
            .queues
            .message_refs(approval.id)
            .iter()
            .map(|m| m.chat_id)
            .collect();
        let first = approval
            .chats()
            .first()
            .map_or(self.settings.chat_id, |name| self.chat_id(name));
        let mut chats: Vec<i64> = Vec::new();
        let wanted: Vec<i64> = match entry.event {
            Event::Created => approval
                .chats()
                .into_iter()
                .map(|n| self.chat_id(n))
                .collect(),
            Event::Escalated => {
                let step = usize::from(approval.escalations.saturating_sub(1));
                if self.settings.escalation_reposts.get(step) == Some(&true) {
                    chats.push(first);
                }
                approval
                    .escalated_to
                    .iter()
                    .filter_map(crate::domain::Target::telegram_chat)
                    .map(|n| self.chat_id(n))
                    .collect()
            }
            _ => Vec::new(),
        };
        for chat in wanted {
            if !shown.contains(&chat) && !chats.contains(&chat) {
                chats.push(chat);
            }
        }
        chats
    }

    /// A chat's id by its name (`default`: `telegram.chat_id`); a name no longer configured
    /// falls back to the default chat rather than going nowhere.
    fn chat_id(&self, name: &str) -> i64 {
        self.settings
            .chats
            .get(name)
            .copied()
            .unwrap_or(self.settings.chat_id)
    }
}

/// What a digest's edit showed, to skip an edit that would show the same.
fn fingerprint(text: &str, keyboard: Option<&InlineKeyboardMarkup>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    serde_json::to_string(&keyboard)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}
