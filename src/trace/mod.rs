//! Trace context for one request: continue the caller's W3C trace or start
//! one, and hand the next hop a `traceparent` whose parent is kawal's span.

pub mod context;

use http::HeaderMap;

pub use context::{SpanId, TraceContext, TraceId};

use crate::proxy::headers::{TRACEPARENT, TRACESTATE, X_TRACE_ID};

/// The trace position of one request as it passes through kawal.
#[derive(Debug, Clone, Copy)]
pub struct RequestTrace {
    /// The trace this request belongs to.
    pub trace_id: TraceId,
    /// kawal's own span for this hop.
    pub span_id: SpanId,
    /// The caller's span, when the caller sent a valid traceparent.
    pub parent_id: Option<SpanId>,
    /// Trace flags (bit 0: sampled), kept from the caller.
    pub flags: u8,
}

impl RequestTrace {
    /// Continues a valid incoming `traceparent`, or starts a new trace (sampled).
    pub fn from_headers(headers: &HeaderMap) -> RequestTrace {
        let incoming = headers
            .get(TRACEPARENT)
            .and_then(|v| TraceContext::parse(v.as_bytes()));
        match incoming {
            Some(ctx) => RequestTrace {
                trace_id: ctx.trace_id,
                span_id: SpanId::random(),
                parent_id: Some(ctx.parent_id),
                // Level 1: pass on only the flags we understand.
                flags: ctx.flags & context::FLAG_SAMPLED,
            },
            None => RequestTrace {
                trace_id: TraceId::random(),
                span_id: SpanId::random(),
                parent_id: None,
                flags: 0x01,
            },
        }
    }

    /// Writes the outgoing `traceparent` (parent = kawal's span). A
    /// `tracestate` belongs to the trace it came with: it is dropped when the
    /// caller's traceparent was missing or malformed.
    pub fn inject(&self, headers: &mut HeaderMap) {
        let outgoing = TraceContext {
            trace_id: self.trace_id,
            parent_id: self.span_id,
            flags: self.flags,
        };
        headers.insert(TRACEPARENT, outgoing.to_header_value());
        if self.parent_id.is_none() {
            headers.remove(TRACESTATE);
        }
    }

    /// Puts the trace id on a response, so a caller can quote it.
    pub fn stamp_response(&self, headers: &mut HeaderMap) {
        headers.insert(X_TRACE_ID, self.trace_id.to_header_value());
    }
}
