//! The circuit breaker in front of Telegram: a pure state machine over a sliding window, so its
//! rules can be tested without a clock or a network. The gateway owns one and feeds it the
//! outcome of every Bot API send.
//!
//! Closed → Open when, within `sampling_duration`, at least `minimum_throughput` calls were made,
//! at least `failure_threshold` of them failed, and failures are at least `failure_ratio` of
//! them. The ratio keeps a busy gateway from tripping on a modest error rate (a count alone
//! opens at 30% errors as soon as five calls fail), while an outage still trips it at once. Open → HalfOpen after `break_duration`, which
//! lets exactly one probe through; its success closes the breaker, its failure opens it again.
//!
//! The window is kept as counts per slice of `sampling_duration` (a sixtieth of it): O(1) work
//! per call and bounded memory however busy the gateway is. A call leaves the window with its
//! slice, so it may be counted up to one slice longer than `sampling_duration`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, Clone)]
pub struct BreakerSettings {
    pub failure_threshold: u32,
    /// Share of the window's calls that must have failed, 0.0 ..= 1.0.
    pub failure_ratio: f64,
    pub sampling_duration: Duration,
    pub minimum_throughput: u32,
    pub break_duration: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The gauge value: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

pub struct CircuitBreaker {
    settings: BreakerSettings,
    state: BreakerState,
    /// The sampling window, oldest slice first, and its totals.
    window: VecDeque<Slice>,
    calls: usize,
    failures: usize,
    opened_at: Option<Instant>,
    probe_in_flight: bool,
}

/// The calls made in one slice of the window: from `start`, the last one at `last`.
struct Slice {
    start: Instant,
    last: Instant,
    calls: usize,
    failures: usize,
}

/// How many slices the sampling window is cut into.
const SLICES: u32 = 60;

/// A state change, for logging, metrics and operator announcements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
}

impl CircuitBreaker {
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            state: BreakerState::Closed,
            window: VecDeque::new(),
            calls: 0,
            failures: 0,
            opened_at: None,
            probe_in_flight: false,
        }
    }

    /// New thresholds from a reload; the state and the window of recent calls are kept.
    pub fn reconfigure(&mut self, settings: BreakerSettings) {
        self.settings = settings;
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn opened_at(&self) -> Option<Instant> {
        self.opened_at
    }

    /// How long an open breaker keeps Telegram untried: also how long a flood wait may last
    /// before operators hear of what waits from the fallback channels (`delivery.rs`).
    pub fn break_duration(&self) -> Duration {
        self.settings.break_duration
    }

    /// When an open breaker lets its probe through.
    pub fn next_probe_at(&self) -> Option<Instant> {
        match self.state {
            BreakerState::Open => self.opened_at.map(|at| at + self.settings.break_duration),
            _ => None,
        }
    }

    /// (calls, failures) inside the sampling window.
    pub fn window_counts(&mut self, now: Instant) -> (usize, usize) {
        self.trim(now);
        (self.calls, self.failures)
    }

    fn trim(&mut self, now: Instant) {
        while let Some(slice) = self.window.front() {
            // Whole slices leave once their last call has: never too few calls counted.
            if now.saturating_duration_since(slice.last) <= self.settings.sampling_duration {
                break;
            }
            self.calls -= slice.calls;
            self.failures -= slice.failures;
            self.window.pop_front();
        }
    }

    fn count(&mut self, now: Instant, succeeded: bool) {
        let width = (self.settings.sampling_duration / SLICES).max(Duration::from_millis(1));
        match self.window.back_mut() {
            Some(slice) if now.saturating_duration_since(slice.start) < width => {
                slice.last = now;
                slice.calls += 1;
                slice.failures += usize::from(!succeeded);
            }
            _ => self.window.push_back(Slice {
                start: now,
                last: now,
                calls: 1,
                failures: usize::from(!succeeded),
            }),
        }
        self.calls += 1;
        self.failures += usize::from(!succeeded);
    }

    fn clear_window(&mut self) {
        self.window.clear();
        self.calls = 0;
        self.failures = 0;
    }

    /// May a call be made now? Moves Open → HalfOpen once the break is over; in HalfOpen only one
    /// probe is allowed until its outcome is recorded.
    pub fn try_acquire(&mut self, now: Instant) -> (bool, Option<Transition>) {
        match self.state {
            BreakerState::Closed => (true, None),
            BreakerState::Open => match self.next_probe_at() {
                Some(at) if now >= at => {
                    let transition = self.set(BreakerState::HalfOpen);
                    self.probe_in_flight = true;
                    (true, transition)
                }
                _ => (false, None),
            },
            BreakerState::HalfOpen if !self.probe_in_flight => {
                self.probe_in_flight = true;
                (true, None)
            }
            BreakerState::HalfOpen => (false, None),
        }
    }

    /// True while [`try_acquire`](Self::try_acquire) would refuse a call made `now` (open
    /// before its probe time, or half-open with the probe out): nothing to look for in the
    /// queue until then.
    pub fn refuses(&self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed => false,
            BreakerState::Open => self.next_probe_at().is_none_or(|at| now < at),
            BreakerState::HalfOpen => self.probe_in_flight,
        }
    }

    /// A restarted gateway forgets a probe in flight: its answer will never be recorded, and
    /// keeping the flag would refuse every later call.
    pub fn forget_probe(&mut self) {
        self.probe_in_flight = false;
    }

    /// Record the outcome of a call `try_acquire` allowed. Every outcome resolves a probe.
    pub fn record(&mut self, now: Instant, succeeded: bool) -> Option<Transition> {
        self.probe_in_flight = false;
        match self.state {
            BreakerState::HalfOpen if succeeded => {
                self.clear_window();
                self.opened_at = None;
                self.set(BreakerState::Closed)
            }
            BreakerState::HalfOpen => {
                self.opened_at = Some(now);
                self.set(BreakerState::Open)
            }
            BreakerState::Open => None,
            BreakerState::Closed => {
                self.count(now, succeeded);
                let (calls, failures) = self.window_counts(now);
                let tripped = calls >= self.settings.minimum_throughput as usize
                    && failures >= self.settings.failure_threshold as usize
                    && failures as f64 >= self.settings.failure_ratio * calls as f64;
                if tripped {
                    self.opened_at = Some(now);
                    self.set(BreakerState::Open)
                } else {
                    None
                }
            }
        }
    }

    fn set(&mut self, to: BreakerState) -> Option<Transition> {
        let from = self.state;
        self.state = to;
        (from != to).then_some(Transition { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerSettings {
            failure_threshold: 3,
            failure_ratio: 0.5,
            sampling_duration: Duration::from_secs(60),
            minimum_throughput: 2,
            break_duration: Duration::from_secs(30),
        })
    }

    #[test]
    fn opens_after_the_threshold_within_the_window_then_probes_and_closes() {
        let mut b = breaker();
        let t0 = Instant::now();
        assert_eq!(b.record(t0, false), None);
        assert_eq!(b.record(t0, false), None);
        let opened = b.record(t0, false).expect("third failure trips");
        assert_eq!(opened.to, BreakerState::Open);
        assert_eq!(b.try_acquire(t0 + Duration::from_secs(29)), (false, None));

        let (allowed, t) = b.try_acquire(t0 + Duration::from_secs(30));
        assert!(allowed);
        assert_eq!(t.map(|t| t.to), Some(BreakerState::HalfOpen));
        // Only one probe at a time.
        assert_eq!(b.try_acquire(t0 + Duration::from_secs(30)), (false, None));
        let closed = b
            .record(t0 + Duration::from_secs(31), true)
            .expect("probe success closes");
        assert_eq!(closed.to, BreakerState::Closed);
        assert_eq!(b.window_counts(t0 + Duration::from_secs(31)), (0, 0));
    }

    #[test]
    fn a_failed_probe_reopens_for_another_break() {
        let mut b = breaker();
        let t0 = Instant::now();
        for _ in 0..3 {
            b.record(t0, false);
        }
        let probe_at = t0 + Duration::from_secs(30);
        assert!(b.try_acquire(probe_at).0);
        assert_eq!(
            b.record(probe_at, false).map(|t| t.to),
            Some(BreakerState::Open)
        );
        assert_eq!(b.next_probe_at(), Some(probe_at + Duration::from_secs(30)));
    }

    #[test]
    fn a_modest_error_rate_does_not_trip_but_an_outage_does() {
        let mut b = breaker();
        let t0 = Instant::now();
        // 30% failures over 100 calls: more than `failure_threshold` failures, under the ratio.
        for i in 0..100 {
            assert_eq!(b.record(t0, i % 10 < 7), None, "call {i}");
        }
        assert_eq!(b.state(), BreakerState::Closed);
        for _ in 0..50 {
            b.record(t0, false);
        }
        assert_eq!(b.state(), BreakerState::Open, "80 of 150 failed");
    }

    #[test]
    fn a_forgotten_probe_lets_the_next_one_through() {
        let mut b = breaker();
        let t0 = Instant::now();
        for _ in 0..3 {
            b.record(t0, false);
        }
        let probe_at = t0 + Duration::from_secs(30);
        assert!(b.try_acquire(probe_at).0);
        assert!(!b.try_acquire(probe_at).0, "one probe at a time");
        b.forget_probe();
        assert!(
            b.try_acquire(probe_at).0,
            "a restart must not wedge the breaker"
        );
    }

    #[test]
    fn old_failures_leave_the_window_and_throughput_gates_tripping() {
        let mut b = breaker();
        let t0 = Instant::now();
        b.record(t0, false);
        b.record(t0, false);
        // 61 s later the first two have left the window: one new failure does not trip.
        assert_eq!(b.record(t0 + Duration::from_secs(61), false), None);
        assert_eq!(b.state(), BreakerState::Closed);

        let mut strict = CircuitBreaker::new(BreakerSettings {
            failure_threshold: 1,
            failure_ratio: 0.0,
            sampling_duration: Duration::from_secs(60),
            minimum_throughput: 3,
            break_duration: Duration::from_secs(30),
        });
        assert_eq!(strict.record(t0, false), None, "below minimum throughput");
        assert_eq!(strict.record(t0, true), None);
        assert!(
            strict.record(t0, true).is_some(),
            "3 calls, 1 failure: trips"
        );
    }

    #[test]
    fn a_busy_window_is_counted_in_bounded_memory() {
        let mut b = breaker();
        let t0 = Instant::now();
        // 100,000 calls over 120 s, one in ten failing: under the ratio, never trips.
        for i in 0..100_000u64 {
            let at = t0 + Duration::from_micros(i * 1_200);
            assert_eq!(b.record(at, i % 10 != 0), None, "call {i}");
        }
        assert!(
            b.window.len() <= SLICES as usize + 1,
            "{} slices",
            b.window.len()
        );
        // The last 60 s held 50,000 calls; the window counts them and at most one slice more.
        let (calls, failures) = b.window_counts(t0 + Duration::from_micros(99_999 * 1_200));
        assert!((50_000..=50_000 + 834).contains(&calls), "{calls} calls");
        assert!(
            (5_000..=5_000 + 84).contains(&failures),
            "{failures} failures"
        );
    }
}
