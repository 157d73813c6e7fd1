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

pub struct Limits {
    creates: Option<DefaultKeyedRateLimiter<String>>,
    decisions: Option<DefaultKeyedRateLimiter<String>>,
    failed_auth: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Addresses refused until an instant, after too many failed authentications.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
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
        let Some(source) = source else {
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
        let (limiter, source) = (self.failed_auth.as_ref()?, source?);
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
}
