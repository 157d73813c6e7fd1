//! The group budget: at most `n` new messages to a group chat in any 60 seconds.
//!
//! Telegram's limit for bots in groups is per minute, and a GCRA bucket (governor's
//! `Quota::per_minute(n)`) does not keep it: it lets a burst of `n` through at once and then one
//! every `60/n` s, so a burst put `2n - 1` messages into its first minute (seen: 39 for n = 20).
//! This is a sliding window: the send times of the last `n` messages, and a new one only once
//! the oldest of them is a full window old. Pure: no clock of its own, no I/O.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

/// Telegram's window for group messages.
pub const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct GroupBudget {
    limit: usize,
    window: Duration,
    /// Send times of the last `limit` messages, oldest first.
    sent: VecDeque<Instant>,
}

impl GroupBudget {
    pub fn per_minute(limit: NonZeroU32) -> Self {
        Self::new(limit, WINDOW)
    }

    pub fn new(limit: NonZeroU32, window: Duration) -> Self {
        let limit = limit.get() as usize;
        Self {
            limit,
            window,
            sent: VecDeque::with_capacity(limit),
        }
    }

    /// How many messages could be sent from `now` to `now + horizon`: the free places, and
    /// those the window frees in that time.
    pub fn available_within(&self, now: Instant, horizon: Duration) -> usize {
        let until = now + horizon;
        let freed = self
            .sent
            .iter()
            .filter(|&&at| at + self.window <= until)
            .count();
        self.limit - self.sent.len() + freed
    }

    /// Take one message from the budget at `now`, or say when one is free again.
    pub fn take(&mut self, now: Instant) -> Result<(), Instant> {
        if self.sent.len() >= self.limit {
            let free_at = self.sent[0] + self.window;
            if now < free_at {
                return Err(free_at);
            }
            self.sent.pop_front();
        }
        self.sent.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(n: u32) -> GroupBudget {
        GroupBudget::per_minute(NonZeroU32::new(n).unwrap())
    }

    #[test]
    fn no_window_holds_more_than_the_limit() {
        let start = Instant::now();
        let mut b = budget(20);
        let mut sent = Vec::new();
        // Ask every 100 ms for five minutes; send whenever allowed.
        for step in 0..3000u64 {
            let now = start + Duration::from_millis(step * 100);
            if b.take(now).is_ok() {
                sent.push(now);
            }
        }
        for (i, at) in sent.iter().enumerate() {
            let in_window = sent[i..].iter().take_while(|t| **t < *at + WINDOW).count();
            assert!(
                in_window <= 20,
                "{in_window} in the minute from message {i}"
            );
        }
        assert_eq!(sent.len(), 100, "20 per minute for five minutes");
    }

    #[test]
    fn a_refusal_names_when_the_oldest_send_leaves_the_window() {
        let start = Instant::now();
        let mut b = budget(2);
        assert!(b.take(start).is_ok());
        assert!(b.take(start + Duration::from_secs(10)).is_ok());
        assert_eq!(b.take(start + Duration::from_secs(20)), Err(start + WINDOW));
        assert!(b.take(start + WINDOW).is_ok());
        assert_eq!(b.take(start + WINDOW), Err(start + Duration::from_secs(70)));
    }
}
