//! Handing Telegram's queue entries to the fallback channels while Telegram cannot deliver
//! them (breaker open, retries exhausted, refused for good). Each entry is appended to every
//! fallback channel's durable queue once; one commit covers a whole hand-over, and the
//! fallback notifier is woken with each entry's content once that commit is on disk. The entry
//! stays in Telegram's queue and goes out when Telegram is back.
//!
//! Owns the hand-over watermark (`told_through`, `told_fallback`, `walked`); notes where a walk
//! stopped for the stuck check it shares with the delivery scan.
//!
//! On a store several instances write (PostgreSQL) an entry's sequence number is taken when it
//! is inserted, not when it commits: a walk can see entries 101 and 103 while 102's transaction
//! is still open, and 102 commits a moment later. A watermark moved to 103 would never hand 102
//! over (its wake-up is skipped as "told", the next walk starts past it). There the watermark
//! trails what the walks read by [`LATE_COMMIT_HORIZON`], longer than any write transaction may
//! stay open; each walk reads from it again and skips what it handed over already (kept in
//! `told_fallback` until the watermark passes it). On sled, one writer commits in sequence
//! order and the watermark follows the walk at once. A hand-over costs
//! O(entries handed over): while the breaker is open every wake-up hands over what it brought,
//! and the catch-up walk reads keys from the watermark, decoding only what it hands over, and
//! goes on at once while a backlog remains. Why it matters: an actor kept busy by its mailbox
//! never polls its own spawned futures (actix drains the mailbox first), so a gateway that
//! re-read its queue on every wake-up starved its commit futures and told the fallback
//! channels nothing during a burst. Never delivers anything itself and never touches the
//! fallback notifier's state.

use std::sync::Arc;

use std::time::Instant;

use actix::prelude::*;

use super::{NAME, TelegramGateway};
use crate::notification::Wake;
use crate::store::{Channel, QueueEntry};

/// At most this many entries per catch-up walk; a walk that stops here goes on at once.
const WALK: usize = 1000;

/// On a shared store, how long the hand-over watermark trails the walks: longer than a write
/// transaction may stay open (`store.postgres.pool_wait` + `statement_timeout` are 15 s by
/// default, and the store gives a write up no sooner), so no entry commits below it.
pub(super) const LATE_COMMIT_HORIZON: std::time::Duration = std::time::Duration::from_secs(60);

/// On a shared store, at most this many pages of `WALK` keys per walk (what lies within the
/// horizon is read again each time; only what was not handed over is decoded).
const SHARED_PAGES: usize = 20;

/// How far a walk read, whether it stopped at its limit with more to go, and the entries it
/// found not handed over yet.
type Walk = (u64, bool, Vec<(u64, Arc<QueueEntry>)>);

impl TelegramGateway {
    /// Hand one entry over.
    pub(super) fn tell_fallback(
        &mut self,
        seq: u64,
        entry: Arc<QueueEntry>,
        ctx: &mut Context<Self>,
    ) {
        self.tell_fallback_many(vec![(seq, entry)], ctx);
    }

    /// Hand entries over, each once: appended to every fallback channel's queue, one commit
    /// for all of them, then the fallback notifier is woken with each entry's content.
    pub(super) fn tell_fallback_many(
        &mut self,
        entries: Vec<(u64, Arc<QueueEntry>)>,
        ctx: &mut Context<Self>,
    ) {
        // None to hand to (`fallback.always`: they heard of every change from the registry).
        if self.fallback_channels.is_empty() {
            return;
        }
        let mut fresh = Vec::new();
        for (seq, entry) in entries {
            if seq <= self.told_through || !self.told_fallback.insert(seq) {
                continue;
            }
            fresh.push((seq, entry));
        }
        let mut queued = Vec::new();
        let refs: Vec<&QueueEntry> = fresh.iter().map(|(_, entry)| entry.as_ref()).collect();
        // One write for the whole hand-over, each entry encoded once for every channel.
        match self.queues.enqueue_many(&self.fallback_channels, &refs) {
            Ok(per_entry) => {
                for ((_, entry), seqs) in fresh.iter().zip(per_entry) {
                    queued.extend(
                        seqs.into_iter().map(|(channel, fallback_seq)| {
                            (channel, fallback_seq, Arc::clone(entry))
                        }),
                    );
                }
            }
            Err(error) => {
                // Not handed over: told again by the next walk.
                for (seq, _) in &fresh {
                    self.told_fallback.remove(seq);
                }
                tracing::error!(actor = NAME, %error, "cannot queue fallback notifications");
            }
        }
        if queued.is_empty() {
            return;
        }
        let durable = self.queues.until_enqueued();
        let fallback = self.fallback.clone();
        ctx.spawn(
            async move {
                // Not giving up on a failed sync: the fallback channels drain in order, so a
                // wake-up never sent would hold back every later notification on them.
                durable.await;
                for (channel, seq, entry) in queued {
                    fallback.do_send(Wake {
                        channel,
                        confirmed: vec![seq],
                        withdrawn: Vec::new(),
                        entry: Some(entry),
                        span: None,
                    });
                }
            }
            .into_actor(self),
        );
    }

    /// Hand over every durable entry queued since the last walk (the breaker is open). Walks
    /// keys from the watermark and stops at the first entry whose commit is not confirmed yet;
    /// only entries not handed over already are read. True if the walk stopped at its limit
    /// with more to go (a backlog replayed after a restart): the caller walks on at once
    /// rather than at the next probe.
    pub(super) fn tell_fallback_all(&mut self, ctx: &mut Context<Self>) -> bool {
        if self.queues.shared() {
            return self.tell_fallback_trailing(ctx);
        }
        let Some((through, more, _)) = self.walk_from(self.told_through, ctx) else {
            return false;
        };
        self.told_through = through;
        self.told_fallback.retain(|seq| *seq > through);
        more
    }

    /// A shared store's walk: from the trailing watermark to the end (at most `SHARED_PAGES`
    /// pages), then the watermark moves up to what was read `LATE_COMMIT_HORIZON` ago. Walks on
    /// at once only if it stopped at its page limit having handed something over (a backlog
    /// already handed over and still within the horizon is not read in a loop).
    fn tell_fallback_trailing(&mut self, ctx: &mut Context<Self>) -> bool {
        let (mut from, mut handed_any, mut more) = (self.told_through, false, false);
        for _ in 0..SHARED_PAGES {
            let Some((through, page_more, handed)) = self.walk_from(from, ctx) else {
                break;
            };
            handed_any |= handed;
            from = through;
            more = page_more;
            if !page_more {
                break;
            }
        }
        let now = Instant::now();
        self.walked.push_back((now, from));
        while let Some(&(at, seq)) = self.walked.front() {
            if now.duration_since(at) < LATE_COMMIT_HORIZON {
                break;
            }
            self.told_through = self.told_through.max(seq);
            self.walked.pop_front();
        }
        let through = self.told_through;
        self.told_fallback.retain(|seq| *seq > through);
        more && handed_any
    }

    fn walk_from(&mut self, from: u64, ctx: &mut Context<Self>) -> Option<(u64, bool, bool)> {
        let (through, more, untold) = self.walk(from)?;
        let handed = !untold.is_empty();
        self.tell_fallback_many(untold, ctx);
        Some((through, more, handed))
    }

    /// Read up to `WALK` keys after `from`, stopping at the first entry whose commit is not
    /// confirmed; the entries among them not handed over yet. Answers how far it read, whether
    /// it stopped at its limit with more to go, and what to hand over (the caller hands it).
    fn walk(&mut self, from: u64) -> Option<Walk> {
        // The entry the walk stopped at, not confirmed yet (none: it reached the queue's end).
        let unconfirmed = std::cell::Cell::new(None);
        let seqs = match self
            .queues
            .seqs_after(Channel::Telegram, from, WALK, &|seq| {
                let ready = self.is_ready(seq);
                if !ready {
                    unconfirmed.set(Some(seq));
                }
                ready
            }) {
            Ok(seqs) => seqs,
            Err(error) => {
                tracing::error!(actor = NAME, %error, "cannot read the Telegram queue");
                return None;
            }
        };
        // One never confirmed (a lost wake-up) shows in health as a stuck outbox, as it does
        // for the delivery scan (`delivery.rs`): with the breaker open the gateway is degraded
        // anyway, and the entry would silently never reach the fallback channels.
        self.blocked_on(unconfirmed.get());
        let more = seqs.len() == WALK;
        let last = seqs.last().copied();
        let mut untold = Vec::new();
        let mut through = from;
        for seq in seqs {
            if !self.told_fallback.contains(&seq) {
                match self.entry(seq) {
                    Ok(Some(entry)) => untold.push((seq, entry)),
                    // Gone meanwhile (delivered or dead-lettered): nothing to hand over.
                    Ok(None) => {}
                    // Unreadable: stop here and try again on the next walk.
                    Err(error) => {
                        tracing::error!(actor = NAME, %error, seq, "cannot read the Telegram queue");
                        break;
                    }
                }
            }
            through = seq;
        }
        let walked_all = last.is_none_or(|last| through == last);
        Some((through, more && walked_all, untold))
    }
}
