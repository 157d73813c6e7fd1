//! Rate limits at the front door: creates per agent token, decisions per operator token, and
//! failed authentications per source address (governor's GCRA buckets, one per key).
//!
//! A refused request gets `429 rate_limited` with `Retry-After`, and every refusal is counted in
//! `approval_gate_refused_total{reason}` and logged with its source. The cap on pending
//! approvals per agent lives in the registry, which owns the counts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::error::ApiError;
use crate::settings::LimitSettings;

/// How long an address stays refused once it exhausted its failed-authentication budget.
const BLOCK_AT_LEAST: Duration = Duration::from_secs(1);

/// How often the failed-authentication buckets of addresses that have been quiet long enough to
/// be back at a full budget are forgotten, so the map holds recent offenders only.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// The key a source address is counted under: an IPv4 address (IPv4-mapped IPv6 included), or
/// an IPv6 address's /64, the smallest block a single host is usually given: one host can pick
/// any of 2^64 addresses in it, and must not get a budget per address.
fn source_key(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
        v4 => v4,
    }
}

pub struct Limits {
    creates: Option<DefaultKeyedRateLimiter<String>>,
    decisions: Option<DefaultKeyedRateLimiter<String>>,
    failed_auth: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Addresses refused until an instant, after too many failed authentications.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    /// When `failed_auth` was last pruned.
    pruned: Mutex<Instant>,
}

fn per_second(rate: u32, burst: u32) -> Option<DefaultKeyedRateLimiter<String>> {
    let rate = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Some(RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

impl Limits {
    pub fn new(settings: &LimitSettings) -> Self {
        Self {
            creates: per_second(settings.creates_per_second, settings.create_burst),
            decisions: per_second(settings.decisions_per_second, settings.decision_burst),
            failed_auth: NonZeroU32::new(settings.failed_auth_per_minute)
                .map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            blocked: Mutex::new(HashMap::new()),
            pruned: Mutex::new(Instant::now()),
        }
    }

    fn check(
        limiter: Option<&DefaultKeyedRateLimiter<String>>,
        key: &str,
        limit: &'static str,
    ) -> Result<(), ApiError> {
        let Some(limiter) = limiter else {
            return Ok(());
        };
        limiter.check_key(&key.to_string()).map_err(|not_until| {
            let retry_after = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited { limit, retry_after }
        })
    }

    /// One more create by this agent token.
    pub fn create(&self, agent: &str) -> Result<(), ApiError> {
        Self::check(self.creates.as_ref(), agent, "rate_limited_create")
    }

    /// One more decision by this operator token.
    pub fn decision(&self, operator: &str) -> Result<(), ApiError> {
        Self::check(self.decisions.as_ref(), operator, "rate_limited_decision")
    }

    /// Refused without even looking at the token: this address failed too often lately.
    pub fn blocked(&self, source: Option<IpAddr>) -> Result<(), ApiError> {
        let Some(source) = source.map(source_key) else {
            return Ok(());
        };
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        match blocked.get(&source) {
            Some(until) if *until > Instant::now() => Err(ApiError::RateLimited {
                limit: "auth_blocked",
                retry_after: *until - Instant::now(),
            }),
            Some(_) => {
                blocked.remove(&source);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// A failed authentication from `source`; past the budget, the address is refused for a
    /// while (the answer to this request is then 429 too).
    pub fn failed_auth(&self, source: Option<IpAddr>) -> Option<ApiError> {
        let (limiter, source) = (self.failed_auth.as_ref()?, source_key(source?));
        self.prune(limiter);
        let not_until = limiter.check_key(&source).err()?;
        let wait = not_until
            .wait_time_from(DefaultClock::default().now())
            .max(BLOCK_AT_LEAST);
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        // Forget expired blocks so the map stays as small as the set of current offenders.
        let now = Instant::now();
        blocked.retain(|_, until| *until > now);
        blocked.insert(source, now + wait);
        Some(ApiError::RateLimited {
            limit: "auth_blocked",
            retry_after: wait,
        })
    }

    /// Forget the buckets that are back at a full budget (at most every [`PRUNE_EVERY`]).
    fn prune(&self, limiter: &DefaultKeyedRateLimiter<IpAddr>) {
        let mut pruned = self.pruned.lock().unwrap_or_else(|p| p.into_inner());
        if pruned.elapsed() < PRUNE_EVERY {
            return;
        }
        *pruned = Instant::now();
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }

    /// Source addresses the failed-authentication limit remembers.
    #[cfg(test)]
    fn failed_auth_sources(&self) -> usize {
        self.failed_auth.as_ref().map_or(0, |limiter| limiter.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_ipv6_host_gets_one_budget_for_its_whole_64() {
        let settings = LimitSettings {
            creates_per_second: 0,
            create_burst: 0,
            max_pending_per_agent: 0,
            decisions_per_second: 0,
            decision_burst: 0,
            failed_auth_per_minute: 3,
        };
        let limits = Limits::new(&settings);
        let host = |n: u16| {
            Some(IpAddr::V6(std::net::Ipv6Addr::new(
                0x2001, 0xdb8, 0, 1, 0, 0, 0, n,
            )))
        };
        let refused = (1..=10).filter_map(|n| limits.failed_auth(host(n))).count();
        assert_eq!(
            refused, 7,
            "three failures for the /64, whichever addresses it used"
        );
        assert!(
            limits.blocked(host(999)).is_err(),
            "the whole /64 is refused"
        );
        let elsewhere = Some(IpAddr::V6(std::net::Ipv6Addr::new(
            0x2001, 0xdb8, 0, 2, 0, 0, 0, 1,
        )));
        assert!(limits.blocked(elsewhere).is_ok());
        assert_eq!(limits.failed_auth_sources(), 1);
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(source_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
