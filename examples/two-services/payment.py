#!/usr/bin/env python3
"""payment-service: a tiny app behind kawal (standard library only).

POST /charge answers {"charged": true}. kawal in front of it has already
checked the caller's client certificate and its SPIFFE ID against the
allow rules, and hands the identity over as x-kawal-peer-identity. One JSON
line per request on stdout, with the trace id.
"""
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("PORT", "8080"))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", "0")))
        status, doc = (200, {"charged": True}) if self.path == "/charge" else (404, {"error": "not found"})
        parts = (self.headers.get("traceparent") or "").split("-")
        print(json.dumps({"service": "payment-app", "path": self.path, "traceId": parts[1] if len(parts) == 4 else None,
                          "caller": self.headers.get("x-kawal-peer-identity")}), flush=True)
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
