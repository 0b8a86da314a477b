//! Distributed tracing: spans exported over OTLP/HTTP to a real receiver,
//! linked across two kawals and an app; export that cannot slow requests;
//! sampling; B3 ↔ W3C propagation.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use support::otlp::{Mode, OtlpReceiver, ReceivedSpan};
use support::*;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn tracing_table(receiver: &OtlpReceiver, extra: &str) -> String {
    format!(
        "[tracing]\notlp_endpoint = \"{}\"\nflush_interval = \"20ms\"\n{extra}\n",
        receiver.endpoint()
    )
}

/// A kawal with both directions: inbound to `app`, outbound host `next` to `next`.
fn sidecar(name: &str, app: SocketAddr, next: SocketAddr, tracing: &str) -> String {
    format!(
        r#"
[service]
name = "{name}"
shutdown_grace = "5s"
[admin]
listen = "127.0.0.1:0"
[inbound]
listen = "127.0.0.1:0"
app = "{app}"
[outbound]
listen = "127.0.0.1:0"
[upstreams.next]
endpoints = ["{next}"]
[upstreams.next.retry]
backoff = {{ base = "1ms", max = "5ms" }}
{tracing}
"#
    )
}

fn by_parent<'a>(spans: &'a [ReceivedSpan], parent: &str) -> Vec<&'a ReceivedSpan> {
    let mut found: Vec<_> = spans.iter().filter(|s| s.parent_span_id == parent).collect();
    found.sort_by_key(|s| s.attributes.get("kawal.attempt").cloned());
    found
}

#[tokio::test]
async fn spans_link_client_to_kawal_a_to_kawal_b_to_the_app_and_onward() {
    let receiver = OtlpReceiver::start().await;
    let last = Upstream::echo().await;

    // The app behind kawal B fails its first call (503, so A retries), and
    // on the second copies the traceparent it got onto its own call through
    // B's outbound, as the README asks every app to do.
    let b_outbound = Arc::new(std::sync::OnceLock::<SocketAddr>::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let (out, n) = (b_outbound.clone(), calls.clone());
    let app = Upstream::start(move |req: Request<Incoming>| {
        let (out, n) = (out.clone(), n.clone());
        async move {
            if n.fetch_add(1, Ordering::SeqCst) == 0 {
                return status(503, "warming up");
            }
            let tp = req.headers()["traceparent"].clone();
            let res = client()
                .get(format!("http://{}/onward", out.get().unwrap()))
                .header("host", "next")
                .header("traceparent", tp)
                .send()
                .await
                .unwrap();
            Response::new(full(res.bytes().await.unwrap()))
        }
    })
    .await;
    let b = Proxy::start(&sidecar(
        "svc-b",
        app.addr,
        last.addr,
        &tracing_table(&receiver, ""),
    ))
    .await;
    b_outbound.set(b.outbound()).unwrap();
    let a = Proxy::start(&sidecar(
        "svc-a",
        app.addr,
        b.inbound(),
        &tracing_table(&receiver, ""),
    ))
    .await;

    let res = client()
        .get(format!("http://{}/checkout", a.outbound()))
        .header("host", "next")
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-trace-id"], CLIENT_TRACE);
    let echo: serde_json::Value = res.json().await.unwrap();
    let (last_trace, last_parent) = traceparent_of(&echo);
    assert_eq!(last_trace, CLIENT_TRACE);

    // A: server + 2 attempts; B: 2 inbound servers, 1 outbound server + 1 attempt.
    let spans = receiver.wait_spans(7, Duration::from_secs(10)).await;
    assert_eq!(spans.len(), 7, "{spans:#?}");
    assert!(spans.iter().all(|s| s.trace_id == CLIENT_TRACE), "{spans:#?}");

    let a_server = by_parent(&spans, CLIENT_SPAN);
    assert_eq!(a_server.len(), 1, "{spans:#?}");
    let a_server = a_server[0];
    assert_eq!(
        (a_server.service.as_str(), a_server.kind),
        ("svc-a", SpanKind::Server)
    );
    assert_eq!(a_server.attributes["http.request.method"], "GET");
    assert_eq!(a_server.attributes["url.path"], "/checkout");
    assert_eq!(a_server.attributes["http.response.status_code"], "200");

    // Retries are sibling CLIENT spans under A's server span, numbered.
    let attempts = by_parent(&spans, &a_server.span_id);
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    for (i, attempt) in attempts.iter().enumerate() {
        assert_eq!(
            (attempt.service.as_str(), attempt.kind),
            ("svc-a", SpanKind::Client)
        );
        assert_eq!(attempt.attributes["kawal.attempt"], (i + 1).to_string());
    }
    assert_eq!(attempts[0].attributes["http.response.status_code"], "503");
    assert_eq!(attempts[0].attributes["error.type"], "503");
    assert!(attempts[0].status_error);
    assert_eq!(attempts[1].attributes["http.request.resend_count"], "1");
    assert_eq!(attempts[1].attributes["http.response.status_code"], "200");

    // Each attempt reached B as a SERVER span whose parent is that attempt.
    for (attempt, code) in attempts.iter().zip(["503", "200"]) {
        let b_server = by_parent(&spans, &attempt.span_id);
        assert_eq!(b_server.len(), 1, "{spans:#?}");
        assert_eq!(
            (b_server[0].service.as_str(), b_server[0].kind),
            ("svc-b", SpanKind::Server)
        );
        assert_eq!(b_server[0].attributes["http.response.status_code"], code);
        assert_eq!(b_server[0].attributes["kawal.direction"], "inbound");
    }
    // The app's onward call: B outbound server span under B's second inbound
    // span, its attempt under it, and the last upstream's parent is that attempt.
    let b_inbound_ok = by_parent(&spans, &attempts[1].span_id)[0];
    let b_outbound_server = by_parent(&spans, &b_inbound_ok.span_id);
    assert_eq!(b_outbound_server.len(), 1, "{spans:#?}");
    assert_eq!(b_outbound_server[0].attributes["kawal.direction"], "outbound");
    let b_attempt = by_parent(&spans, &b_outbound_server[0].span_id);
    assert_eq!(b_attempt.len(), 1, "{spans:#?}");
    assert_eq!(b_attempt[0].kind, SpanKind::Client);
    assert_eq!(b_attempt[0].span_id, last_parent);

    // The access log lines carry the very span ids that were exported.
    let a_lines = a.wait_log_lines(1).await;
    assert_eq!(a_lines[0]["spanId"], a_server.span_id.as_str());
    assert_eq!(a_lines[0]["parentSpanId"], CLIENT_SPAN);
    let b_lines = b.wait_log_lines(3).await;
    for line in &b_lines {
        assert_eq!(line["traceId"], CLIENT_TRACE);
        let span = receiver
            .span(line["spanId"].as_str().unwrap())
            .unwrap_or_else(|| panic!("log line's span was not exported: {line}"));
        assert_eq!((span.service.as_str(), span.kind), ("svc-b", SpanKind::Server));
        assert_eq!(line["parentSpanId"].as_str().unwrap(), span.parent_span_id);
    }
}

#[tokio::test]
async fn a_hanging_or_stopped_collector_costs_requests_nothing_and_drops_are_counted() {
    let mut receiver = OtlpReceiver::start().await;
    receiver.set_mode(Mode::Hang);
    let app = Upstream::echo().await;
    // One export may hang for 10 s; the queue holds 4 spans.
    let tracing = tracing_table(
        &receiver,
        "queue_size = 4\nbatch_size = 2\nexport_timeout = \"10s\"",
    );
    let proxy = Proxy::start(&inbound_config(app.addr, &tracing)).await;
    let url = format!("http://{}/x", proxy.inbound());
    let started = Instant::now();
    for _ in 0..40 {
        assert_eq!(client().get(&url).send().await.unwrap().status(), 200);
    }
    // Generous bound: an exporter that made requests wait would take 10 s per batch.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(proxy.wait_log_lines(40).await.len(), 40);
    assert!(receiver.requests() >= 1, "the exporter did try to send");
    let dropped = proxy
        .metric("kawal_trace_spans_dropped_total{reason=\"queue_full\"}")
        .await;
    assert!(dropped >= 30.0, "dropped {dropped}");
    assert_eq!(proxy.metric("kawal_trace_spans_exported_total").await, 0.0);

    // Stopped: the port refuses; requests still succeed, the failed batches are counted.
    receiver.stop();
    let failing = Proxy::start(&inbound_config(
        app.addr,
        &tracing_table(&receiver, "export_timeout = \"2s\""),
    ))
    .await;
    let url = format!("http://{}/x", failing.inbound());
    for _ in 0..5 {
        assert_eq!(client().get(&url).send().await.unwrap().status(), 200);
    }
    let mut failed = 0.0;
    for _ in 0..200 {
        // The series appears with the first failed batch.
        failed = failing
            .metric_opt("kawal_trace_spans_dropped_total{reason=\"export_failed\"}")
            .await
            .0
            .unwrap_or(0.0);
        if failed >= 5.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(failed, 5.0);
}

#[tokio::test]
async fn sampling_follows_the_caller_and_the_ratio_and_logs_keep_every_trace() {
    let receiver = OtlpReceiver::start().await;
    let app = Upstream::echo().await;
    let proxy = Proxy::start(&inbound_config(
        app.addr,
        &tracing_table(&receiver, "sample_ratio = 0.0"),
    ))
    .await;
    let url = format!("http://{}/x", proxy.inbound());

    // New trace at ratio 0: not recorded, flagged so downstream, still logged.
    let echo: serde_json::Value = client().get(&url).send().await.unwrap().json().await.unwrap();
    let tp = echo["headers"]["traceparent"].as_str().unwrap().to_string();
    assert!(tp.ends_with("-00"), "{tp}");
    // The caller's "not sampled" is followed too.
    let unsampled = format!("00-{}-{CLIENT_SPAN}-00", "1".repeat(32));
    let echo: serde_json::Value = client()
        .get(&url)
        .header("traceparent", &unsampled)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(echo["headers"]["traceparent"].as_str().unwrap().ends_with("-00"));
    // The caller's "sampled" wins over the ratio: recorded and flagged.
    let res = client()
        .get(&url)
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .send()
        .await
        .unwrap();
    let echo: serde_json::Value = res.json().await.unwrap();
    assert!(echo["headers"]["traceparent"].as_str().unwrap().ends_with("-01"));

    let lines = proxy.wait_log_lines(3).await;
    assert_eq!(lines[0]["traceId"], tp.split('-').nth(1).unwrap());
    assert_eq!(lines[1]["traceId"], "1".repeat(32).as_str());
    // Only the sampled request's span arrives (it was sent last, the batch is in order).
    let spans = receiver.wait_spans(1, Duration::from_secs(10)).await;
    assert_eq!(spans.len(), 1, "{spans:#?}");
    assert_eq!(spans[0].trace_id, CLIENT_TRACE);
    assert_eq!(spans[0].span_id, lines[2]["spanId"].as_str().unwrap());
}

#[tokio::test]
async fn b3_in_w3c_between_sidecars_and_b3_out_keep_one_trace() {
    let app = Upstream::echo().await;
    // B speaks W3C in and B3 (single) out; A reads B3 and writes W3C.
    let b = Proxy::start(&inbound_config(
        app.addr,
        "[tracing]\npropagation = [\"w3c\"]\ninject = [\"b3\"]",
    ))
    .await;
    let a = Proxy::start(&outbound_config(
        &[b.inbound()],
        "",
        "[tracing]\npropagation = [\"b3\", \"w3c\"]\ninject = [\"w3c\"]",
    ))
    .await;
    let trace = "80f198ee56343ba864fe8b2a57d3eff7";
    let res = client()
        .get(format!("http://{}/b3", a.outbound()))
        .header("host", "svc")
        .header("x-b3-traceid", trace)
        .header("x-b3-spanid", "e457b5a2e4d86bd1")
        .header("x-b3-sampled", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-trace-id"], trace);
    let echo: serde_json::Value = res.json().await.unwrap();
    let headers = &echo["headers"];
    assert!(headers.get("traceparent").is_none(), "{headers}");
    assert!(
        headers.get("x-b3-traceid").is_none(),
        "stale multi B3 passed on: {headers}"
    );
    let b3 = headers["b3"].as_str().unwrap();
    let fields: Vec<&str> = b3.split('-').collect();
    assert_eq!(fields[0], trace);
    assert_eq!(fields[2], "0", "the caller's sampling decision travels: {b3}");

    let a_line = &a.wait_log_lines(1).await[0];
    let b_line = &b.wait_log_lines(1).await[0];
    assert_eq!(a_line["traceId"], trace);
    assert_eq!(a_line["parentSpanId"], "e457b5a2e4d86bd1");
    assert_eq!(b_line["traceId"], trace);
    assert_eq!(fields[1], b_line["spanId"].as_str().unwrap());
}

#[tokio::test]
async fn outbound_user_header_names_the_user_in_the_log_and_span() {
    let receiver = OtlpReceiver::start().await;
    let upstream = Upstream::echo().await;
    let proxy = Proxy::start(
        &outbound_config(&[upstream.addr], "", &tracing_table(&receiver, ""))
            .replace("[outbound]\n", "[outbound]\nuser_header = \"x-app-user\"\n"),
    )
    .await;
    let res = client()
        .get(format!("http://{}/me", proxy.outbound()))
        .header("host", "svc")
        .header("x-app-user", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let line = &proxy.wait_log_lines(1).await[0];
    assert_eq!(line["userId"], "alice");
    let spans = receiver.wait_spans(2, Duration::from_secs(10)).await;
    let server = spans.iter().find(|s| s.kind == SpanKind::Server).unwrap();
    assert_eq!(server.attributes["user.id"], "alice");
}
