#!/usr/bin/env bash
# Scans kawal's inbound mTLS port with sslyze (an external TLS scanner, from
# PyPI) and prints what it accepts: protocol versions, cipher suites,
# renegotiation, compression. Expected: TLS 1.2 with ECDHE + AEAD suites and
# TLS 1.3 only; no SSL 2/3, TLS 1.0/1.1; no renegotiation.
#
#   bench/tls-scan.sh            # needs python3 + venv and openssl; installs sslyze into /tmp/sslyze-venv
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-18443}; APP_PORT=${APP_PORT:-18444}; ADMIN_PORT=${ADMIN_PORT:-18445}
VENV=${VENV:-/tmp/sslyze-venv}
[ -x "$VENV/bin/sslyze" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q "sslyze>=6,<7"; }
cargo build --release -q --bins

tmp=$(mktemp -d /tmp/kawal-tls-scan.XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
source bench/peers/lib/configs.sh
gen_certs "$tmp/certs"

python3 -m http.server "$APP_PORT" --bind 127.0.0.1 >/dev/null 2>&1 & pids+=($!)
cat >"$tmp/kawal.toml" <<T
[service]
name = "tls-scan"
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
[inbound]
listen = "127.0.0.1:$PORT"
app = "127.0.0.1:$APP_PORT"
[inbound.tls]
cert = "$tmp/certs/b.crt"
key = "$tmp/certs/b.key"
client_ca = "$tmp/certs/ca.crt"
[log]
level = "warn"
T
target/release/kawal --config "$tmp/kawal.toml" >"$tmp/kawal.log" 2>&1 & pids+=($!)
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$ADMIN_PORT/ready" >/dev/null && break; sleep 0.1; done

# The scanner presents a client certificate from the mesh CA, as a peer would.
"$VENV/bin/sslyze" --cert "$tmp/certs/a.crt" --key "$tmp/certs/a.key" \
  --sslv2 --sslv3 --tlsv1 --tlsv1_1 --tlsv1_2 --tlsv1_3 --reneg --compression --fallback \
  "127.0.0.1:$PORT" | sed -n '/SCAN RESULTS/,$p'
