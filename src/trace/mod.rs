//! Trace context for one request: continue the caller's trace (W3C or B3)
//! or start one, decide whether it is recorded, and hand the next hop a
//! context whose parent is kawal's own span. Recorded spans are exported by
//! [`export`].

pub mod b3;
pub mod context;
pub mod export;
pub mod state;

use http::HeaderMap;

pub use context::{SpanId, TraceContext, TraceId};

use crate::config::{Propagation, Tracing};
use crate::headers::{first, has, values, TRACEPARENT, TRACESTATE, X_TRACE_ID};

/// The trace position of one request as it passes through kawal.
#[derive(Debug, Clone, Copy)]
pub struct RequestTrace {
    /// The trace this request belongs to.
    pub trace_id: TraceId,
    /// kawal's own span for this request (the access log's `spanId`).
    pub span_id: SpanId,
    /// The caller's span, when the caller sent a valid context.
    pub parent_id: Option<SpanId>,
    /// Whether this trace is recorded (exported and flagged downstream).
    pub sampled: bool,
    /// The caller's `tracestate` belongs to its `traceparent`: kept only
    /// when the trace was continued from a valid W3C context.
    keep_tracestate: bool,
}

/// Propagation formats and the sampler, from `[tracing]`.
#[derive(Debug, Clone)]
pub struct Propagator {
    extract: Vec<Propagation>,
    inject: Vec<Propagation>,
    /// B3 headers are rewritten (never passed on stale) once kawal speaks B3.
    owns_b3: bool,
    /// A new trace is sampled when the low 63 bits of its id fall below this
    /// (the OpenTelemetry `TraceIdRatioBased` rule, so every hop agrees).
    sample_below: u64,
}

impl Propagator {
    /// Builds the propagator from a validated config.
    pub fn new(cfg: &Tracing) -> Propagator {
        let extract = cfg.propagation.clone();
        let inject = cfg.inject_formats().to_vec();
        let owns_b3 = extract.iter().chain(&inject).any(|p| *p != Propagation::W3c);
        Propagator {
            extract,
            inject,
            owns_b3,
            sample_below: (cfg.sample_ratio.clamp(0.0, 1.0) * (1u64 << 63) as f64) as u64,
        }
    }

    /// Continues the first valid incoming context (in the configured order)
    /// or starts a new trace. A caller's sampling decision is followed
    /// (parent-based); a new trace is sampled by ratio.
    pub fn start(&self, headers: &HeaderMap) -> RequestTrace {
        let mut decision = None;
        for format in &self.extract {
            match format {
                Propagation::W3c => {
                    let incoming =
                        first(headers, &TRACEPARENT).and_then(|v| TraceContext::parse(v.as_bytes()));
                    if let Some(ctx) = incoming {
                        return RequestTrace::continued(ctx.trace_id, ctx.parent_id, ctx.sampled(), true);
                    }
                }
                Propagation::B3 | Propagation::B3multi => match b3::extract(headers) {
                    Some(b3::B3Context {
                        ids: Some((trace_id, parent_id)),
                        sampled,
                    }) => {
                        let sampled = sampled.unwrap_or_else(|| self.samples(&trace_id));
                        return RequestTrace::continued(trace_id, parent_id, sampled, false);
                    }
                    // `b3: 0` / `b3: 1`: a decision without a trace to join.
                    Some(ctx) => decision = decision.or(ctx.sampled),
                    None => {}
                },
            }
        }
        let trace_id = TraceId::random();
        RequestTrace {
            trace_id,
            span_id: SpanId::random(),
            parent_id: None,
            sampled: decision.unwrap_or_else(|| self.samples(&trace_id)),
            keep_tracestate: false,
        }
    }

    fn samples(&self, trace_id: &TraceId) -> bool {
        let low = u64::from_be_bytes(trace_id.0[8..].try_into().unwrap_or_default());
        // At ratio 1.0 the bound is 2^63, above every 63-bit value.
        (low >> 1) < self.sample_below
    }

    /// Writes the outgoing context, with `parent` (kawal's span for this
    /// hop) as the next hop's parent, in every configured format.
    pub fn inject(&self, trace: &RequestTrace, parent: SpanId, headers: &mut HeaderMap) {
        if has(headers, &TRACESTATE) {
            if !trace.keep_tracestate {
                headers.remove(TRACESTATE);
            } else if let Some(bounded) = state::bound(values(headers, TRACESTATE)) {
                match bounded {
                    Some(v) => headers.insert(TRACESTATE, v),
                    None => headers.remove(TRACESTATE),
                };
            }
        }
        if self.owns_b3 {
            b3::strip(headers);
        }
        for format in &self.inject {
            match format {
                Propagation::W3c => {
                    let outgoing = TraceContext {
                        trace_id: trace.trace_id,
                        parent_id: parent,
                        flags: trace.flags(),
                    };
                    headers.insert(TRACEPARENT, outgoing.to_header_value());
                }
                Propagation::B3 => b3::inject_single(headers, &trace.trace_id, &parent, trace.sampled),
                Propagation::B3multi => b3::inject_multi(headers, &trace.trace_id, &parent, trace.sampled),
            }
        }
        if !self.inject.contains(&Propagation::W3c) {
            // Not speaking W3C downstream: a caller's traceparent would be stale.
            headers.remove(TRACEPARENT);
        }
    }
}

impl RequestTrace {
    fn continued(trace_id: TraceId, parent_id: SpanId, sampled: bool, keep_tracestate: bool) -> RequestTrace {
        RequestTrace {
            trace_id,
            span_id: SpanId::random(),
            parent_id: Some(parent_id),
            sampled,
            keep_tracestate,
        }
    }

    /// W3C trace flags: only the sampled bit (Level 1).
    pub fn flags(&self) -> u8 {
        if self.sampled {
            context::FLAG_SAMPLED
        } else {
            0
        }
    }

    /// Puts the trace id on a response, so a caller can quote it.
    pub fn stamp_response(&self, headers: &mut HeaderMap) {
        let id = self.trace_id.to_hex();
        // Behind another kawal the response already says just this.
        let ours_alone = {
            let mut given = values(headers, X_TRACE_ID);
            given.next().is_some_and(|v| v.as_bytes() == id) && given.next().is_none()
        };
        if ours_alone {
            return;
        }
        headers.insert(X_TRACE_ID, context::hex_header_value(&id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn propagator(toml_src: &str) -> Propagator {
        Propagator::new(&toml::from_str::<Tracing>(toml_src).unwrap())
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn continues_w3c_and_follows_its_sampling() {
        let p = propagator("sample_ratio = 0.0");
        let t = p.start(&headers(&[("traceparent", PARENT), ("tracestate", "a=1")]));
        assert_eq!(t.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_id.unwrap().to_string(), "00f067aa0ba902b7");
        assert!(t.sampled, "the caller's decision wins over the ratio");
        let mut out = headers(&[("traceparent", PARENT), ("tracestate", "a=1")]);
        p.inject(&t, t.span_id, &mut out);
        let expected = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", t.span_id);
        assert_eq!(out[TRACEPARENT], expected.as_str());
        assert_eq!(out[TRACESTATE], "a=1");

        let unsampled = PARENT.replace("-01", "-00");
        let t = propagator("sample_ratio = 1.0").start(&headers(&[("traceparent", &unsampled)]));
        assert!(!t.sampled);
    }

    #[test]
    fn responses_carry_exactly_this_trace_id() {
        let t = propagator("").start(&HeaderMap::new());
        let ours = t.trace_id.to_string();
        for given in [
            vec![],
            vec!["0af7651916cd43dd8448eb211c80319c"],
            vec![ours.as_str()],
            vec![ours.as_str(), "x"],
        ] {
            let mut h = HeaderMap::new();
            for v in &given {
                h.append(X_TRACE_ID, v.parse().unwrap());
            }
            t.stamp_response(&mut h);
            let values: Vec<_> = h.get_all(X_TRACE_ID).iter().collect();
            assert_eq!(values, [ours.as_str()], "{given:?}");
        }
    }

    #[test]
    fn new_traces_are_sampled_by_ratio() {
        let all = propagator("sample_ratio = 1.0");
        let none = propagator("sample_ratio = 0.0");
        let half = propagator("sample_ratio = 0.5");
        let empty = HeaderMap::new();
        let mut sampled = 0;
        for _ in 0..2000 {
            assert!(all.start(&empty).sampled);
            assert!(!none.start(&empty).sampled);
            sampled += usize::from(half.start(&empty).sampled);
        }
        // 2000 draws at p = 0.5: far outside 800..1200 is a broken sampler.
        assert!((800..1200).contains(&sampled), "{sampled}");
        // The decision is a function of the trace id: every hop agrees.
        let t = half.start(&empty);
        assert_eq!(half.samples(&t.trace_id), t.sampled);
    }

    #[test]
    fn malformed_context_starts_a_new_trace_and_drops_tracestate() {
        let p = propagator("");
        let mut h = headers(&[
            ("traceparent", "00-zz-00f067aa0ba902b7-01"),
            ("tracestate", "a=1"),
        ]);
        let t = p.start(&h);
        assert!(t.parent_id.is_none());
        p.inject(&t, t.span_id, &mut h);
        assert!(!h.contains_key(TRACESTATE));
        let ctx = TraceContext::parse(h[TRACEPARENT].as_bytes()).unwrap();
        assert_eq!(ctx.trace_id, t.trace_id);
    }

    #[test]
    fn b3_in_w3c_out_keeps_the_trace() {
        let p = propagator("propagation = [\"b3\", \"w3c\"]\ninject = [\"w3c\"]");
        let b3 = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1";
        let mut h = headers(&[("b3", b3)]);
        let t = p.start(&h);
        assert_eq!(t.trace_id.to_string(), "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(t.parent_id.unwrap().to_string(), "e457b5a2e4d86bd1");
        p.inject(&t, t.span_id, &mut h);
        assert!(!h.contains_key("b3"), "a stale b3 must not be passed on");
        let ctx = TraceContext::parse(h[TRACEPARENT].as_bytes()).unwrap();
        assert_eq!((ctx.trace_id, ctx.parent_id), (t.trace_id, t.span_id));
    }

    #[test]
    fn w3c_in_b3_out_keeps_the_trace() {
        let p = propagator("propagation = [\"w3c\"]\ninject = [\"b3multi\"]");
        let mut h = headers(&[("traceparent", PARENT)]);
        let t = p.start(&h);
        p.inject(&t, t.span_id, &mut h);
        assert!(!h.contains_key(TRACEPARENT));
        assert_eq!(h["x-b3-traceid"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(h["x-b3-spanid"], t.span_id.to_string().as_str());
        assert_eq!(h["x-b3-sampled"], "1");
    }

    #[test]
    fn b3_sampling_only_header_decides_a_new_trace() {
        let p = propagator("propagation = [\"b3\"]\nsample_ratio = 1.0");
        let t = p.start(&headers(&[("b3", "0")]));
        assert!(t.parent_id.is_none());
        assert!(!t.sampled);
    }
}
