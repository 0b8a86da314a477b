#!/usr/bin/env bash
# The two-service demo of docker/compose.yml without containers: order-app
# and payment-app (Python, standard library) and a kawal beside each, as
# local processes on 127.0.0.1, with the same kawal configs (listen and
# endpoint addresses rewritten to loopback ports) and the same certificate
# script. It runs until Ctrl-C (or SIGTERM), then stops all four.
#
#   cargo build --release && examples/two-services/run.sh
#
# Environment: KAWAL (binary, default target/release/kawal), WORK (a
# directory for configs, certificates, logs and PID files; default a new
# temporary one), OTLP_ENDPOINT (a collector; default none), and the ports
# below.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
KAWAL=${KAWAL:-$root/target/release/kawal}
WORK=${WORK:-$(mktemp -d -t kawal-two-services.XXXXXX)}
ORDER_APP=${ORDER_APP:-18080}       # order-app
ORDER_IN=${ORDER_IN:-15006}         # order's kawal: inbound (the edge), outbound, admin
ORDER_OUT=${ORDER_OUT:-15001}
ORDER_ADMIN=${ORDER_ADMIN:-15000}
PAYMENT_APP=${PAYMENT_APP:-18081}   # payment-app
PAYMENT_IN=${PAYMENT_IN:-15016}     # payment's kawal: inbound (mTLS), admin
PAYMENT_ADMIN=${PAYMENT_ADMIN:-15010}
[ -x "$KAWAL" ] || { echo "no kawal binary at $KAWAL: cargo build --release (or set KAWAL)" >&2; exit 1; }
mkdir -p "$WORK"

pids=()
stop() {
  trap - EXIT INT TERM
  [ ${#pids[@]} -eq 0 ] || kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop EXIT
trap 'exit 0' INT TERM

"$root/docker/certs.sh" "$WORK/tls" order payment >/dev/null

# $1 service, then sed substitutions (compose address -> loopback address).
derive() {
  local name=$1; shift
  local args=()
  for s in "$@"; do args+=(-e "s|$s|g"); done
  if [ -n "${OTLP_ENDPOINT:-}" ]; then
    args+=(-e "s|http://jaeger:4318|$OTLP_ENDPOINT|")
  else
    args+=(-e "s|^otlp_endpoint = .*|# otlp_endpoint: set OTLP_ENDPOINT to export spans|")
  fi
  sed "${args[@]}" "$here/$name.toml" > "$WORK/$name.toml"
  "$KAWAL" check "$WORK/$name.toml" >/dev/null
}
derive order "0.0.0.0:15006|127.0.0.1:$ORDER_IN" "127.0.0.1:8080|127.0.0.1:$ORDER_APP" \
  "127.0.0.1:15001|127.0.0.1:$ORDER_OUT" "0.0.0.0:15000|127.0.0.1:$ORDER_ADMIN" \
  "payment-app:15006|127.0.0.1:$PAYMENT_IN" "drain_delay = \"5s\"|drain_delay = \"0s\""
derive payment "0.0.0.0:15006|127.0.0.1:$PAYMENT_IN" "127.0.0.1:8080|127.0.0.1:$PAYMENT_APP" \
  "0.0.0.0:15000|127.0.0.1:$PAYMENT_ADMIN" "drain_delay = \"5s\"|drain_delay = \"0s\""

# name, command...: runs in the background, output to $WORK/name.log, PID to $WORK/name.pid.
start() {
  local name=$1; shift
  "$@" > "$WORK/$name.log" 2>&1 &
  pids+=($!)
  echo $! > "$WORK/$name.pid"
}
start payment-app env PORT="$PAYMENT_APP" python3 -u "$here/payment.py"
start payment-kawal "$KAWAL" --config "$WORK/payment.toml"
start order-app env PORT="$ORDER_APP" KAWAL_OUTBOUND="http://127.0.0.1:$ORDER_OUT" python3 -u "$here/order.py"
start order-kawal "$KAWAL" --config "$WORK/order.toml"

# Ready when both kawals say so and both apps answer (bounded: 30 s).
for _ in $(seq 300); do
  if curl -sf "http://127.0.0.1:$ORDER_ADMIN/ready" >/dev/null \
    && curl -sf "http://127.0.0.1:$PAYMENT_ADMIN/ready" >/dev/null \
    && curl -s -o /dev/null "http://127.0.0.1:$ORDER_APP/" \
    && curl -s -o /dev/null -X POST "http://127.0.0.1:$PAYMENT_APP/"; then
    cat <<MSG
ready (logs, configs, certificates and PIDs in $WORK)
  curl -si http://127.0.0.1:$ORDER_IN/checkout        # order -> kawal -> mTLS -> kawal -> payment
  grep -h traceId $WORK/*-kawal.log                    # the same traceId in both sidecars' lines
  kill \$(cat $WORK/payment-app.pid)                   # stop payment; a few checkouts later: 503 circuit_open
  curl -s http://127.0.0.1:$ORDER_ADMIN/upstreams      # the breaker's state
MSG
    wait
    exit 0
  fi
  sleep 0.1
done
echo "not ready after 30 s; logs in $WORK" >&2
exit 1
