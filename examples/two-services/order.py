#!/usr/bin/env python3
"""order-service: a tiny app behind kawal (standard library only).

GET /checkout charges the order through payment-service: it calls
http://payment/charge through its kawal's outbound listener (as an HTTP
proxy) and copies the trace context it received onto that call, which is
all an app must do for one trace to cross both services. Payment's answer
(status, body, x-kawal-error) is passed back. One JSON line per request on
stdout, with the trace id.
"""
import json
import os
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("PORT", "8080"))
OUTBOUND = os.environ.get("KAWAL_OUTBOUND", "http://127.0.0.1:15001")
PAYMENT = os.environ.get("PAYMENT_URL", "http://payment/charge")
proxy = urllib.request.build_opener(urllib.request.ProxyHandler({"http": OUTBOUND}))


def trace_id(traceparent):
    """The trace id of a W3C traceparent (version-traceid-parentid-flags)."""
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 else None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path != "/checkout":
            return self.answer(404, {"error": "not found"})
        ctx = {k: self.headers[k] for k in ("traceparent", "tracestate") if k in self.headers}
        order_id = os.urandom(8).hex()
        req = urllib.request.Request(
            PAYMENT,
            data=json.dumps({"order": order_id, "amount": 42}).encode(),
            # POST is retried by kawal only with an Idempotency-Key.
            headers={**ctx, "content-type": "application/json", "idempotency-key": order_id},
            method="POST",
        )
        try:
            with proxy.open(req, timeout=30) as res:
                status, body, error = res.status, json.loads(res.read() or b"{}"), None
        except urllib.error.HTTPError as e:
            status, body, error = e.code, json.loads(e.read() or b"{}"), e.headers.get("x-kawal-error")
        except (urllib.error.URLError, ValueError) as e:
            status, body, error = 502, {"error": str(e)}, None
        self.log_line(ctx, status)
        self.answer(200 if status == 200 else status, {"order": order_id, "payment": body}, error)

    def answer(self, status, doc, error=None):
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        if error:
            self.send_header("x-kawal-error", error)
        self.end_headers()
        self.wfile.write(data)

    def log_line(self, ctx, payment_status):
        print(json.dumps({"service": "order-app", "path": self.path, "traceId": trace_id(ctx.get("traceparent")),
                          "paymentStatus": payment_status}), flush=True)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
