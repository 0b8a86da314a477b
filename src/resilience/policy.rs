//! Which failed attempts may be retried, and which count against the breaker.
//!
//! The rules of the design notes, in the order [`RetryPolicy::decide`] applies them:
//! 1. once any byte of the response has gone to the client, never retry: the
//!    client would get two responses spliced together;
//! 2. 4xx other than 429 are the caller's fault and never retried, whatever the
//!    configuration says; other statuses only if configured;
//! 3. a failure before any request byte was sent (connect refused or timed out)
//!    is safe for every method, as the upstream never saw the request;
//! 4. otherwise the upstream may have acted on it, so only idempotent methods, or
//!    requests carrying an `Idempotency-Key`, are retried;
//! 5. never more than `attempts` attempts in all.
//!
//! The retry budget, the overall deadline and the breaker are checked by the
//! adapter after a [`Decision::Retry`]; [`Reason`] has labels for them too, so one
//! metric covers every "not retried".

use std::time::{Duration, SystemTime};

use http::Method;

/// How one attempt at an upstream failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection was refused: nothing was sent.
    ConnectRefused,
    /// The connection was not established in time: nothing was sent.
    ConnectTimeout,
    /// The connection was reset or closed after the request was (partly) sent.
    Reset {
        /// Whether response bytes had already been forwarded to the client.
        response_started: bool,
    },
    /// No response head arrived within the per-try timeout.
    PerTryTimeout,
    /// The upstream answered with this status (response not yet forwarded).
    Status(u16),
}

impl Failure {
    /// Name for logs and metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Failure::ConnectRefused => "connect_refused",
            Failure::ConnectTimeout => "connect_timeout",
            Failure::Reset { .. } => "reset",
            Failure::PerTryTimeout => "per_try_timeout",
            Failure::Status(_) => "status",
        }
    }

    /// The failure as the config's `retry.on` spells it, for the retries
    /// metric: `connect-failure`, `reset`, `timeout` or the status code.
    pub fn retry_on(&self) -> std::borrow::Cow<'static, str> {
        match self {
            Failure::ConnectRefused | Failure::ConnectTimeout => "connect-failure".into(),
            Failure::Reset { .. } => "reset".into(),
            Failure::PerTryTimeout => "timeout".into(),
            Failure::Status(code) => code.to_string().into(),
        }
    }

    /// Whether the failure happened before any request byte reached the upstream.
    fn before_request_sent(&self) -> bool {
        matches!(self, Failure::ConnectRefused | Failure::ConnectTimeout)
    }
}

/// Retry rules of one upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included (3 = at most 2 retries).
    pub attempts: u32,
    /// Statuses that may be retried; 4xx other than 429 are ignored here.
    pub retry_on_status: Vec<u16>,
    /// Retry connect refused and connect timeout.
    pub retry_connect_failure: bool,
    /// Retry connections reset before the response started.
    pub retry_reset: bool,
    /// Retry per-try timeouts.
    pub retry_timeout: bool,
    /// Longest `Retry-After` honoured; longer ones are cut to this.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// 3 attempts on 502, 503, 504, 429, connect failures, resets and timeouts;
    /// Retry-After honoured up to 10 s.
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            retry_on_status: vec![502, 503, 504, 429],
            retry_connect_failure: true,
            retry_reset: true,
            retry_timeout: true,
            max_retry_after: Duration::from_secs(10),
        }
    }
}

/// What to do with a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try again (subject to budget, deadline and breaker).
    Retry,
    /// Return the failure to the client, for this reason.
    DoNotRetry(Reason),
}

/// Why an attempt was not retried; `as_str` gives a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// `attempts` attempts were made already.
    AttemptsExhausted,
    /// The response had started streaming to the client.
    ResponseStarted,
    /// A 4xx other than 429: the request itself is wrong.
    ClientError,
    /// A status not in `retry_on_status`.
    StatusNotRetryable,
    /// A kind of failure whose retry is switched off in the policy.
    NotEnabled,
    /// The upstream may have acted on a non-idempotent request without a key.
    NotIdempotent,
    /// The retry budget is spent (decided by the adapter).
    BudgetExhausted,
    /// The overall deadline would pass before the retry (decided by the adapter).
    DeadlineExceeded,
    /// The breaker refused the retry (decided by the adapter).
    BreakerOpen,
}

impl Reason {
    /// Label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::AttemptsExhausted => "attempts_exhausted",
            Reason::ResponseStarted => "response_started",
            Reason::ClientError => "client_error",
            Reason::StatusNotRetryable => "status_not_retryable",
            Reason::NotEnabled => "not_enabled",
            Reason::NotIdempotent => "not_idempotent",
            Reason::BudgetExhausted => "budget_exhausted",
            Reason::DeadlineExceeded => "deadline_exceeded",
            Reason::BreakerOpen => "breaker_open",
        }
    }
}

impl RetryPolicy {
    /// Whether to retry after `failure`, given the request's method, whether it
    /// carries an `Idempotency-Key`, and the attempts made so far (1 after the first).
    pub fn decide(
        &self,
        failure: &Failure,
        method: &Method,
        has_idempotency_key: bool,
        attempt: u32,
    ) -> Decision {
        use Decision::DoNotRetry;
        // Why the failure itself rules a retry out comes first: it is the more
        // useful label than "attempts exhausted" when both hold.
        let enabled = match *failure {
            Failure::Reset {
                response_started: true,
            } => return DoNotRetry(Reason::ResponseStarted),
            Failure::Status(status) if is_client_error(status) => return DoNotRetry(Reason::ClientError),
            Failure::Status(status) if !self.retry_on_status.contains(&status) => {
                return DoNotRetry(Reason::StatusNotRetryable)
            }
            Failure::Status(_) => true,
            Failure::ConnectRefused | Failure::ConnectTimeout => self.retry_connect_failure,
            Failure::Reset { .. } => self.retry_reset,
            Failure::PerTryTimeout => self.retry_timeout,
        };
        if !enabled {
            DoNotRetry(Reason::NotEnabled)
        } else if !failure.before_request_sent() && !method.is_idempotent() && !has_idempotency_key {
            DoNotRetry(Reason::NotIdempotent)
        } else if attempt >= self.attempts {
            DoNotRetry(Reason::AttemptsExhausted)
        } else {
            Decision::Retry
        }
    }

    /// The wait before a retry: the backoff delay, or the upstream's
    /// `Retry-After` (cut to `max_retry_after`) when that is longer.
    pub fn retry_delay(&self, backoff: Duration, retry_after: Option<Duration>) -> Duration {
        retry_after.map_or(backoff, |wait| backoff.max(wait.min(self.max_retry_after)))
    }

    /// Whether `failure` says the upstream is unwell, for the circuit breaker:
    /// connect errors, resets, timeouts and any 5xx (retried or not). Never a
    /// 4xx (429 included: the upstream is working as designed).
    pub fn is_failure_for_breaker(&self, failure: &Failure) -> bool {
        match *failure {
            // Any 5xx says the upstream is unwell, retried or not.
            Failure::Status(status) => (500..600).contains(&status),
            Failure::ConnectRefused
            | Failure::ConnectTimeout
            | Failure::Reset { .. }
            | Failure::PerTryTimeout => true,
        }
    }
}

/// 4xx other than 429 (Too Many Requests, which asks to come back later).
fn is_client_error(status: u16) -> bool {
    (400..500).contains(&status) && status != 429
}

/// Parses a `Retry-After` value (RFC 9110 §10.2.3): delay-seconds or an
/// HTTP-date. A date in the past gives zero; anything malformed gives `None`.
/// A huge number of seconds saturates rather than failing: the caller caps it.
pub fn parse_retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let value = value.trim_ascii();
    if !value.is_empty() && value.iter().all(u8::is_ascii_digit) {
        let seconds = value.iter().fold(0u64, |n, digit| {
            n.saturating_mul(10).saturating_add(u64::from(digit - b'0'))
        });
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(std::str::from_utf8(value).ok()?).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(failure: Failure, method: Method, key: bool, attempt: u32) -> Decision {
        RetryPolicy::default().decide(&failure, &method, key, attempt)
    }

    fn not(reason: Reason) -> Decision {
        Decision::DoNotRetry(reason)
    }

    #[test]
    fn idempotent_methods_retry_transient_failures() {
        for method in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::TRACE,
            Method::PUT,
            Method::DELETE,
        ] {
            for failure in [
                Failure::Status(502),
                Failure::Status(503),
                Failure::Status(504),
                Failure::Status(429),
                Failure::Reset {
                    response_started: false,
                },
                Failure::PerTryTimeout,
            ] {
                assert_eq!(
                    decide(failure, method.clone(), false, 1),
                    Decision::Retry,
                    "{method} {failure:?}"
                );
            }
        }
    }

    #[test]
    fn post_needs_an_idempotency_key() {
        assert_eq!(
            decide(Failure::Status(503), Method::POST, false, 1),
            not(Reason::NotIdempotent)
        );
        assert_eq!(
            decide(Failure::PerTryTimeout, Method::PATCH, false, 1),
            not(Reason::NotIdempotent)
        );
        assert_eq!(
            decide(Failure::Status(503), Method::POST, true, 1),
            Decision::Retry
        );
        assert_eq!(
            decide(
                Failure::Reset {
                    response_started: false
                },
                Method::PATCH,
                true,
                1
            ),
            Decision::Retry
        );
    }

    #[test]
    fn connect_failures_are_safe_for_every_method() {
        assert_eq!(
            decide(Failure::ConnectRefused, Method::POST, false, 1),
            Decision::Retry
        );
        assert_eq!(
            decide(Failure::ConnectTimeout, Method::PATCH, false, 1),
            Decision::Retry
        );
    }

    #[test]
    fn started_responses_are_never_retried() {
        let started = Failure::Reset {
            response_started: true,
        };
        assert_eq!(
            decide(started, Method::GET, true, 1),
            not(Reason::ResponseStarted)
        );
    }

    #[test]
    fn client_errors_are_never_retried_even_if_configured() {
        assert_eq!(
            decide(Failure::Status(404), Method::GET, false, 1),
            not(Reason::ClientError)
        );
        let policy = RetryPolicy {
            retry_on_status: vec![409, 500],
            ..RetryPolicy::default()
        };
        assert_eq!(
            policy.decide(&Failure::Status(409), &Method::GET, false, 1),
            not(Reason::ClientError)
        );
        assert_eq!(
            policy.decide(&Failure::Status(500), &Method::GET, false, 1),
            Decision::Retry
        );
    }

    #[test]
    fn only_configured_statuses_are_retried() {
        assert_eq!(
            decide(Failure::Status(500), Method::GET, false, 1),
            not(Reason::StatusNotRetryable)
        );
        assert_eq!(
            decide(Failure::Status(200), Method::GET, false, 1),
            not(Reason::StatusNotRetryable)
        );
        assert_eq!(
            decide(Failure::Status(429), Method::GET, false, 1),
            Decision::Retry
        );
    }

    #[test]
    fn switched_off_kinds_are_not_retried() {
        let policy = RetryPolicy {
            retry_connect_failure: false,
            retry_reset: false,
            retry_timeout: false,
            ..RetryPolicy::default()
        };
        for failure in [
            Failure::ConnectRefused,
            Failure::Reset {
                response_started: false,
            },
            Failure::PerTryTimeout,
        ] {
            assert_eq!(
                policy.decide(&failure, &Method::GET, false, 1),
                not(Reason::NotEnabled)
            );
        }
    }

    #[test]
    fn never_past_the_attempt_limit() {
        assert_eq!(
            decide(Failure::Status(503), Method::GET, false, 2),
            Decision::Retry
        );
        assert_eq!(
            decide(Failure::Status(503), Method::GET, false, 3),
            not(Reason::AttemptsExhausted)
        );
        assert_eq!(
            decide(Failure::ConnectRefused, Method::GET, false, u32::MAX),
            not(Reason::AttemptsExhausted)
        );
    }

    #[test]
    fn reasons_have_distinct_labels() {
        let all = [
            Reason::AttemptsExhausted,
            Reason::ResponseStarted,
            Reason::ClientError,
            Reason::StatusNotRetryable,
            Reason::NotEnabled,
            Reason::NotIdempotent,
            Reason::BudgetExhausted,
            Reason::DeadlineExceeded,
            Reason::BreakerOpen,
        ];
        let mut labels: Vec<&str> = all.iter().map(|r| r.as_str()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), all.len());
    }

    #[test]
    fn breaker_counts_upstream_faults_only() {
        let policy = RetryPolicy::default();
        for failure in [
            Failure::ConnectRefused,
            Failure::ConnectTimeout,
            Failure::PerTryTimeout,
            Failure::Status(503),
            Failure::Status(500),
        ] {
            assert!(policy.is_failure_for_breaker(&failure), "{failure:?}");
        }
        assert!(policy.is_failure_for_breaker(&Failure::Reset {
            response_started: true
        }));
        for status in [404, 429, 400, 200] {
            assert!(
                !policy.is_failure_for_breaker(&Failure::Status(status)),
                "{status}"
            );
        }
    }

    #[test]
    fn retry_after_is_honoured_but_capped() {
        let policy = RetryPolicy::default();
        let ms = Duration::from_millis;
        assert_eq!(policy.retry_delay(ms(100), None), ms(100));
        assert_eq!(policy.retry_delay(ms(100), Some(ms(2000))), ms(2000));
        assert_eq!(
            policy.retry_delay(ms(100), Some(Duration::from_secs(3600))),
            Duration::from_secs(10)
        );
        assert_eq!(policy.retry_delay(ms(100), Some(Duration::ZERO)), ms(100));
    }

    #[test]
    fn parses_retry_after_seconds() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after(b"120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(b" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after(b"99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        for bad in [&b""[..], b"-5", b"1.5", b"soon", b"\xff\xfe"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn parses_retry_after_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after(b"Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after(b"Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        // The obsolete RFC 850 form is accepted too, as RFC 9110 requires.
        assert_eq!(
            parse_retry_after(b"Sunday, 06-Nov-94 08:49:38 GMT", now),
            Some(Duration::from_secs(1))
        );
    }
}
