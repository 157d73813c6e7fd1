//! Retry policy for Bot API calls: exponential backoff with full jitter between `initial_delay`
//! and `max_delay`, at most `max_attempts`, and a 429's `retry_after` always honoured (never
//! retry sooner). Also classifies teloxide's errors into transient and permanent.

use std::time::Duration;

use teloxide::ApiError;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
    pub jitter: bool,
}

impl RetryPolicy {
    /// How long to wait before attempt `attempt + 1`, after `attempt` failures (1-based).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exponent = attempt.saturating_sub(1).min(16);
        let ceiling = self
            .initial_delay
            .saturating_mul(1 << exponent)
            .min(self.max_delay);
        let backoff = if self.jitter {
            // Full jitter: uniform in [initial, ceiling], so bursts of failures spread out.
            let span = ceiling.saturating_sub(self.initial_delay);
            self.initial_delay + span.mul_f64(fastrand::f64())
        } else {
            ceiling
        };
        match retry_after {
            Some(wait) => backoff.max(wait),
            None => backoff,
        }
    }
}

/// What went wrong with one call, reduced to what the gateway needs to decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    /// Low-cardinality label for metrics: `rate_limited`, `timeout`, `network`, `server_error`,
    /// `bad_request`, `forbidden`, `invalid_response`, ...
    pub reason: &'static str,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Worth retrying (network, timeout, 5xx, 429).
    Transient { retry_after: Option<Duration> },
    /// Will not succeed by retrying (other 4xx).
    Permanent,
    /// For edits: the message is already in the wanted state or gone; nothing left to do.
    Moot,
}

impl Failure {
    pub fn network(detail: String) -> Self {
        transient("network", detail)
    }

    pub fn invalid_response(detail: String) -> Self {
        transient("invalid_response", detail)
    }

    pub fn timeout(after: Duration) -> Self {
        Failure {
            kind: FailureKind::Transient { retry_after: None },
            reason: "timeout",
            detail: format!("no answer within {}", humantime::format_duration(after)),
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self.kind, FailureKind::Transient { .. })
    }
}

fn transient(reason: &'static str, detail: String) -> Failure {
    Failure {
        kind: FailureKind::Transient { retry_after: None },
        reason,
        detail,
    }
}

/// Classify a Bot API error answer: 429 and `retry_after` are rate limits, 5xx are transient
/// server errors, a migrated chat and other 4xx are permanent (by the description teloxide
/// knows), "message is not modified" and friends are moot.
pub fn classify_answer(answer: crate::telegram::api::ErrorAnswer) -> Failure {
    let detail = if answer.description.is_empty() {
        format!("HTTP {}", answer.status)
    } else {
        format!("HTTP {}: {}", answer.status, answer.description)
    };
    if answer.status == 429 || answer.retry_after.is_some() {
        return Failure {
            kind: FailureKind::Transient {
                retry_after: answer.retry_after,
            },
            reason: "rate_limited",
            detail,
        };
    }
    if answer.status >= 500 {
        return transient("server_error", detail);
    }
    if answer.migrated {
        return Failure {
            kind: FailureKind::Permanent,
            reason: "chat_migrated",
            detail,
        };
    }
    // teloxide's ApiError deserializes from the description string.
    let api: ApiError = serde_json::from_value(serde_json::Value::String(answer.description))
        .unwrap_or(ApiError::Unknown(String::new()));
    classify_api(&api, detail)
}

fn classify_api(api: &ApiError, detail: String) -> Failure {
    let permanent = |reason| Failure {
        kind: FailureKind::Permanent,
        reason,
        detail: detail.clone(),
    };
    match api {
        ApiError::MessageNotModified
        | ApiError::MessageToEditNotFound
        | ApiError::MessageCantBeEdited => Failure {
            kind: FailureKind::Moot,
            reason: "moot_edit",
            detail: detail.clone(),
        },
        ApiError::BotBlocked
        | ApiError::BotKicked
        | ApiError::BotKickedFromSupergroup
        | ApiError::NotEnoughRightsToPostMessages => permanent("forbidden"),
        ApiError::InvalidToken => permanent("invalid_token"),
        ApiError::ChatNotFound => permanent("chat_not_found"),
        ApiError::Unknown(text) => {
            // teloxide keeps only the description; 5xx descriptions name the HTTP status.
            let lower = text.to_ascii_lowercase();
            let server = [
                "bad gateway",
                "internal server error",
                "service unavailable",
                "gateway timeout",
                "too many requests",
            ];
            if server.iter().any(|s| lower.contains(s)) {
                transient("server_error", detail)
            } else {
                permanent("bad_request")
            }
        }
        _ => permanent("bad_request"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: bool) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(16),
            jitter,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = policy(false);
        let delays: Vec<u64> = (1..=7).map(|a| p.delay(a, None).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 16, 16]);
    }

    #[test]
    fn jitter_stays_between_initial_and_the_ceiling() {
        let p = policy(true);
        for attempt in 1..=6 {
            for _ in 0..200 {
                let d = p.delay(attempt, None);
                assert!(d >= p.initial_delay && d <= p.max_delay, "{d:?}");
                assert!(
                    d <= p.initial_delay * (1 << (attempt - 1)),
                    "{d:?} at {attempt}"
                );
            }
        }
    }

    #[test]
    fn retry_after_is_never_undercut() {
        let p = policy(true);
        for attempt in 1..=3 {
            assert!(p.delay(attempt, Some(Duration::from_secs(20))) >= Duration::from_secs(20));
        }
    }

    fn answer(status: u16, description: &str, retry_after: Option<u64>) -> Failure {
        classify_answer(crate::telegram::api::ErrorAnswer {
            status,
            description: description.into(),
            retry_after: retry_after.map(Duration::from_secs),
            migrated: false,
        })
    }

    #[test]
    fn errors_are_classified() {
        let rate = answer(429, "Too Many Requests: retry after 3", Some(3));
        assert_eq!(
            rate.kind,
            FailureKind::Transient {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert!(answer(502, "Bad Gateway", None).is_transient());
        assert_eq!(answer(502, "Bad Gateway", None).reason, "server_error");
        let bad = answer(400, "Bad Request: message is too long", None);
        assert_eq!(bad.kind, FailureKind::Permanent);
        let moot = answer(
            400,
            "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message",
            None,
        );
        assert_eq!(moot.kind, FailureKind::Moot);
        assert_eq!(
            answer(403, "Forbidden: bot was blocked by the user", None).reason,
            "forbidden"
        );
    }
}
