//! The time this instance decides by: deadlines, timeouts, grants' expiry and the timestamps
//! stored on approvals.
//!
//! One instance on sled decides by its own wall clock. Instances sharing a PostgreSQL database
//! must agree, or an instance whose clock runs ahead times out approvals other instances created
//! before their time (its orphan sweep finds them "due") and turns operators' late decisions
//! into timeouts. So on a shared store each instance's clock is its wall clock plus its offset
//! from the database's clock, measured by the store (`store/postgres/backend/clock.rs`) with
//! the same round trip NTP uses: the database's reading against the middle of the round trip,
//! keeping the reading whose round trip was shortest of the last few.
//!
//! Owns the offset and its filter. Must not read the database itself, nor be used for what is
//! local to this process (timers' durations, rate limits, console sessions).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};

/// This instance's clock. Cheap to clone; clones share the offset.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// Milliseconds since the epoch, corrected by the offset.
    pub fn now_ms(&self) -> i64 {
        Utc::now()
            .timestamp_millis()
            .saturating_add(self.offset_ms())
    }

    /// Now, at the millisecond precision records are stored with (so a record read back
    /// equals the one just written).
    pub fn now(&self) -> DateTime<Utc> {
        crate::store::millis(self.now_ms())
    }

    /// What is added to the wall clock: the shared clock minus this host's (0 on sled).
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    /// Set by whoever measures the shared clock (the store).
    pub fn set_offset_ms(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::Relaxed);
    }
}

/// How many readings the filter keeps: a reading delayed on its way (a slow round trip) is
/// outlived by better ones within a few measurements, and a host clock that was stepped is
/// followed within as many.
const KEPT: usize = 5;

/// One reading of the shared clock: sent and received by this host's wall clock, and what the
/// shared clock said in between (all ms since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub sent_ms: i64,
    pub received_ms: i64,
    pub shared_ms: i64,
}

impl Reading {
    fn round_trip_ms(&self) -> i64 {
        self.received_ms.saturating_sub(self.sent_ms).max(0)
    }

    /// The shared clock against the middle of the round trip: off by at most half of it.
    fn offset_ms(&self) -> i64 {
        let middle = self.sent_ms + self.round_trip_ms() / 2;
        self.shared_ms.saturating_sub(middle)
    }
}

/// The last few readings; the offset is the one whose round trip was shortest.
#[derive(Debug, Default)]
pub struct OffsetFilter {
    readings: VecDeque<Reading>,
}

impl OffsetFilter {
    /// Keep `reading` and answer the offset to use now.
    pub fn add(&mut self, reading: Reading) -> i64 {
        if self.readings.len() == KEPT {
            self.readings.pop_front();
        }
        self.readings.push_back(reading);
        self.readings
            .iter()
            .min_by_key(|r| r.round_trip_ms())
            .map_or(0, Reading::offset_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(sent_ms: i64, round_trip_ms: i64, shared_ms: i64) -> Reading {
        Reading {
            sent_ms,
            received_ms: sent_ms + round_trip_ms,
            shared_ms,
        }
    }

    #[test]
    fn the_offset_is_taken_against_the_middle_of_the_round_trip() {
        let mut filter = OffsetFilter::default();
        // Sent at 1000, back at 1010; the shared clock read 61005 in between: 60 s ahead.
        assert_eq!(filter.add(reading(1_000, 10, 61_005)), 60_000);
    }

    #[test]
    fn the_shortest_round_trip_of_the_last_five_wins() {
        let mut filter = OffsetFilter::default();
        assert_eq!(filter.add(reading(0, 2, 501)), 500);
        // A slow round trip whose reply waited on the way reads a larger offset: ignored.
        assert_eq!(filter.add(reading(10_000, 400, 10_900)), 500);
        // A stepped host clock (now 5 s behind) is followed once the best old reading is gone.
        for i in 0..3 {
            assert_eq!(filter.add(reading(20_000 + i, 3, 25_501 + i)), 500);
        }
        assert_eq!(filter.add(reading(30_000, 3, 35_501)), 5_500);
    }

    #[test]
    fn a_clock_adds_its_offset_and_clones_share_it() {
        let clock = Clock::default();
        let shared = clock.clone();
        let before = Utc::now().timestamp_millis();
        assert!((clock.now_ms() - before).abs() < 1_000);
        shared.set_offset_ms(-60_000);
        assert!((clock.now_ms() - (before - 60_000)).abs() < 1_000);
    }
}
