//! The outbound forward step with resilience: for each attempt the breaker
//! is asked first (open → fail fast, nothing sent), the attempt gets what is
//! left of the deadline (or the per-try timeout), its outcome is recorded in
//! the breaker, and a failed attempt is retried only if the policy, the
//! request body, the retry budget and the deadline all allow it, after a
//! jittered backoff (or the upstream's capped `Retry-After`).
//!
//! Why the breaker sits inside the loop: every attempt counts toward it, and
//! an open breaker stops the retries too. Retries never happen once a
//! response is returned, so a response already streaming to the client is
//! never retried.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::request::Parts;
use http::{header, Request, Response};
use http_body_util::BodyExt;

use super::exchange::Attempts;
use super::upstream::Upstream;
use super::upstream::UpstreamBody;
use super::Shared;
use crate::body::{self, BoxBody};
use crate::config::{RetryOn, UpstreamConfig};
use crate::error::ProxyError;
use crate::headers::{self, IDEMPOTENCY_KEY};
use crate::log::RetriedAttempt;
use crate::metrics::ResilienceMetrics;
use crate::resilience::backoff::Backoff;
use crate::resilience::breaker::{Breaker, BreakerPolicy, Outcome, Permit, Transition};
use crate::resilience::budget::RetryBudget;
use crate::resilience::policy::{parse_retry_after, Decision, Failure, RetryPolicy};
use crate::trace::export::SpanRecord;
use crate::trace::{RequestTrace, SpanId};

/// Retry and breaker state of one upstream, shared by all its requests.
pub struct Resilience {
    policy: RetryPolicy,
    backoff: Backoff,
    budget: RetryBudget,
    breaker: Option<Breaker>,
    deadline: Duration,
    per_try_timeout: Option<Duration>,
    max_replay_body: u64,
    /// Metrics for this upstream.
    pub metrics: ResilienceMetrics,
}

/// A request body ready for one or more attempts.
pub enum ReplayBody {
    /// Small enough to keep: every attempt sends these bytes.
    Kept(Bytes),
    /// Streamed through once: only the first attempt can carry it.
    Streamed(Option<BoxBody>),
}

impl ReplayBody {
    fn take(&mut self) -> Option<BoxBody> {
        match self {
            ReplayBody::Kept(bytes) if bytes.is_empty() => Some(body::empty()),
            ReplayBody::Kept(bytes) => Some(body::full(bytes.clone())),
            ReplayBody::Streamed(body) => body.take(),
        }
    }
}

// === impl Resilience ===

impl Resilience {
    /// Builds the policy objects from a validated upstream config.
    pub fn new(cfg: &UpstreamConfig, metrics: ResilienceMetrics) -> Resilience {
        let r = &cfg.retry;
        let mut policy = RetryPolicy {
            attempts: r.attempts,
            retry_on_status: Vec::new(),
            retry_connect_failure: false,
            retry_reset: false,
            retry_timeout: false,
            max_retry_after: r.max_retry_after.0,
        };
        for &on in &r.on {
            match on {
                RetryOn::Status(code) => policy.retry_on_status.push(code),
                RetryOn::ConnectFailure => policy.retry_connect_failure = true,
                RetryOn::Reset => policy.retry_reset = true,
                RetryOn::Timeout => policy.retry_timeout = true,
            }
        }
        let b = &cfg.breaker;
        Resilience {
            policy,
            backoff: r.backoff,
            budget: RetryBudget::new(r.budget.ratio, r.budget.min_per_second, Duration::from_secs(10)),
            breaker: b.enabled.then(|| {
                Breaker::new(BreakerPolicy {
                    consecutive_failures: b.consecutive_failures,
                    failure_rate: b.failure_rate,
                    min_requests: b.min_requests,
                    window: b.window.0,
                    open_for: b.open_for.0,
                    half_open_probes: b.half_open_probes,
                })
            }),
            deadline: cfg.timeout.0,
            per_try_timeout: r.per_try_timeout.map(|d| d.0),
            max_replay_body: r.max_replay_body.0,
            metrics,
        }
    }

    /// Keeps the request body for replay when it may be retried and is small
    /// and of known length; otherwise it is streamed once.
    pub async fn prepare_body(&self, parts: &Parts, body: BoxBody) -> Result<ReplayBody, ProxyError> {
        if self.policy.attempts <= 1 {
            return Ok(ReplayBody::Streamed(Some(body)));
        }
        if http_body::Body::is_end_stream(&body) {
            return Ok(ReplayBody::Kept(Bytes::new()));
        }
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        match declared {
            Some(len) if len <= self.max_replay_body => match body.collect().await {
                Ok(collected) => Ok(ReplayBody::Kept(collected.to_bytes())),
                Err(e) => Err(match crate::error::find::<crate::body::BodyError>(&*e).copied() {
                    Some(body_error) => body_error.into(),
                    None => ProxyError::BadRequest(format!("request body: {e}")),
                }),
            },
            _ => Ok(ReplayBody::Streamed(Some(body))),
        }
    }

    /// Sends the request with retries; `attempt.count` is set to the attempts made.
    pub async fn send(
        &self,
        upstream: &Upstream,
        parts: Parts,
        mut body: ReplayBody,
        attempt: Attempt<'_>,
    ) -> Result<Response<UpstreamBody>, ProxyError> {
        let Attempt {
            trace,
            shared,
            record,
        } = attempt;
        let started = Instant::now();
        let deadline = started + self.deadline;
        self.budget.record_request(started);
        let has_key = headers::has(&parts.headers, &IDEMPOTENCY_KEY);
        let (method, uri, version, mut headers) = (parts.method, parts.uri, parts.version, parts.headers);
        // Keep a copy of the head only if a second attempt is possible at all.
        let may_retry = self.policy.attempts > 1 && matches!(body, ReplayBody::Kept(_));
        loop {
            let now = Instant::now();
            let permit = self.acquire(upstream, now)?;
            let Some(attempt_body) = body.take() else {
                return Err(ProxyError::Internal("request body already sent".into()));
            };
            let mut req = Request::new(attempt_body);
            *req.method_mut() = method.clone();
            *req.uri_mut() = uri.clone();
            *req.version_mut() = version;
            *req.headers_mut() = if may_retry {
                headers.clone()
            } else {
                std::mem::take(&mut headers)
            };
            let span_id = SpanId::random();
            shared.propagator.inject(trace, span_id, req.headers_mut());
            let recording = shared.spans.as_ref().filter(|_| trace.sampled);
            record.count += 1;
            let span = recording.map(|_| client_span(upstream, &req, &method, record.count, trace, span_id));

            let left = deadline.saturating_duration_since(now);
            let per_try = self.per_try_timeout.map_or(left, |t| t.min(left));
            let result = upstream.send(req, per_try, &mut record.endpoint).await;
            if let (Some(spans), Some(mut span)) = (recording, span) {
                span.end = SystemTime::now();
                span.status = result.as_ref().ok().map(|r| r.status().as_u16());
                span.error = result.as_ref().err().map(ProxyError::kind);
                spans.record(trace, span);
            }
            let failure = match &result {
                Ok(res) if self.policy.retry_on_status.contains(&res.status().as_u16()) => {
                    Some(Failure::Status(res.status().as_u16()))
                }
                Ok(_) => None,
                Err(e) => failure_of(e),
            };
            // The breaker hears of every 5xx, whatever the retry list says; an
            // error that is not the upstream's (the client's body) is no verdict
            // on it, so the permit is just given back.
            let breaker_failure = match &result {
                Ok(res) => Some(res.status().is_server_error()),
                Err(_) => failure.as_ref().map(|f| self.policy.is_failure_for_breaker(f)),
            };
            self.record(upstream, permit, breaker_failure);
            let Some(failure) = failure else { return result };

            // A streamed body went with the first attempt: nothing to send again.
            let replayable = matches!(body, ReplayBody::Kept(_));
            if !replayable || self.policy.decide(&failure, &method, has_key, record.count) != Decision::Retry
            {
                return result;
            }
            let retry_after = match &result {
                Ok(res) => res
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| parse_retry_after(v.as_bytes(), SystemTime::now())),
                Err(_) => None,
            };
            let backoff = self.backoff.delay(record.count - 1, &mut rand::rng());
            let wait = self.policy.retry_delay(backoff, retry_after);
            // A wait that does not fit the deadline is no retry: answer now.
            if Instant::now() + wait >= deadline {
                return result;
            }
            if !self.budget.try_withdraw(Instant::now()) {
                self.metrics.budget_exhausted.inc();
                return result;
            }
            self.metrics.retry(failure.retry_on());
            record.retried.push(RetriedAttempt {
                endpoint: record.endpoint,
                status: result.as_ref().ok().map(|r| r.status().as_u16()),
                error: result.as_ref().err().map(ProxyError::kind),
            });
            drop(result);
            tokio::time::sleep(wait).await;
        }
    }

    /// Asks the breaker for leave to send; open → fail fast.
    fn acquire(&self, upstream: &Upstream, now: Instant) -> Result<Option<PermitGuard<'_>>, ProxyError> {
        let Some(breaker) = &self.breaker else {
            return Ok(None);
        };
        match breaker.try_acquire(now) {
            Ok(permit) => {
                if let Some(t) = permit.transition() {
                    self.log_transition(upstream, t);
                }
                Ok(Some(PermitGuard {
                    breaker,
                    permit: Some(permit),
                }))
            }
            Err(rejected) => Err(ProxyError::CircuitOpen {
                upstream: upstream.name.to_string(),
                retry_after: rejected.retry_after,
            }),
        }
    }

    /// `failed`: `Some(true)` upstream failure, `Some(false)` success,
    /// `None` no verdict (the permit is released by the guard).
    fn record(&self, upstream: &Upstream, guard: Option<PermitGuard<'_>>, failed: Option<bool>) {
        let (Some(mut guard), Some(failed)) = (guard, failed) else {
            return;
        };
        let Some(permit) = guard.permit.take() else { return };
        let outcome = if failed {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        if let Some(t) = guard.breaker.record(permit, outcome, Instant::now()) {
            self.log_transition(upstream, t);
        }
    }

    fn log_transition(&self, upstream: &Upstream, t: Transition) {
        self.metrics.set_breaker(t.to.as_str());
        tracing::warn!(
            event = "breaker_state_changed",
            upstream = %upstream.name,
            from = t.from.as_str(),
            to = t.to.as_str(),
            "circuit breaker {}",
            t.to.as_str()
        );
    }

    /// Brings the breaker's state set up to date: an open breaker whose
    /// cool-down has ended is half-open even before a request notices.
    pub fn refresh_breaker_metric(&self) {
        if let Some(b) = &self.breaker {
            self.metrics.set_breaker(b.state(Instant::now()).as_str());
        }
    }

    /// Retries the budget would allow now.
    pub fn budget_remaining(&self) -> u64 {
        self.budget.remaining(Instant::now())
    }

    /// The breaker's state and counts, for `/upstreams`.
    pub fn breaker_json(&self) -> serde_json::Value {
        let Some(b) = &self.breaker else {
            return serde_json::json!({ "state": "disabled" });
        };
        let s = b.snapshot(Instant::now());
        serde_json::json!({
            "state": s.state.as_str(),
            "consecutiveFailures": s.consecutive_failures,
            "windowRequests": s.window_requests,
            "windowFailures": s.window_failures,
            "openedCount": s.opened_count,
            "retryAfterSeconds": s.retry_after.map(|d| d.as_secs_f64()),
        })
    }
}

/// What one request's attempts carry besides the request: its trace, the
/// propagation and export settings, and the attempt counter to fill in.
pub struct Attempt<'a> {
    /// The request's trace; each attempt is a child span of its span.
    pub trace: &'a RequestTrace,
    /// Propagation formats and the span exporter.
    pub shared: &'a Shared,
    /// Filled in with the attempts made.
    pub record: &'a mut Attempts,
}

/// The CLIENT span of one attempt, opened as it is sent; it ends at the
/// response head (or the failure), a child of the request's SERVER span.
fn client_span<'a>(
    upstream: &Upstream,
    req: &Request<BoxBody>,
    method: &'a http::Method,
    attempt: u32,
    trace: &RequestTrace,
    span_id: SpanId,
) -> SpanRecord<'a> {
    use opentelemetry::KeyValue;
    let mut attributes = vec![
        KeyValue::new("url.path", req.uri().path().to_string()),
        KeyValue::new("kawal.upstream", upstream.name.to_string()),
        KeyValue::new("kawal.attempt", i64::from(attempt)),
    ];
    if let Some(host) = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()) {
        attributes.push(KeyValue::new("server.address", host.to_string()));
    }
    if attempt > 1 {
        attributes.push(KeyValue::new("http.request.resend_count", i64::from(attempt - 1)));
    }
    let now = SystemTime::now();
    SpanRecord {
        kind: opentelemetry::trace::SpanKind::Client,
        span_id,
        parent_id: Some(trace.span_id),
        parent_is_remote: false,
        method,
        start: now,
        end: now,
        status: None,
        error: None,
        attributes,
    }
}

/// Gives a permit back if the attempt was abandoned (the client went away),
/// so a half-open probe slot is never lost.
struct PermitGuard<'a> {
    breaker: &'a Breaker,
    permit: Option<Permit>,
}

impl Drop for PermitGuard<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.breaker.release(permit);
        }
    }
}

/// How an attempt failed, in the policy's terms; `None` = not an upstream
/// fault (the client's body, an internal error): never retried or counted.
fn failure_of(err: &ProxyError) -> Option<Failure> {
    match err {
        // A TLS failure is a connect failure: no request byte was sent.
        ProxyError::UpstreamConnect { .. } | ProxyError::UpstreamTls { .. } => Some(Failure::ConnectRefused),
        ProxyError::UpstreamTimeout { connect: true, .. } => Some(Failure::ConnectTimeout),
        // Per-try or overall deadline: after the overall one no retry fits
        // the time left, so the two need no telling apart here.
        ProxyError::UpstreamTimeout { .. } => Some(Failure::PerTryTimeout),
        ProxyError::UpstreamReset { .. } => Some(Failure::Reset {
            response_started: false,
        }),
        _ => None,
    }
}
