#!/usr/bin/env bash
# Quick overhead benchmark: the same wrk load against a fast upstream directly,
# through kawal inbound, and through kawal outbound with the resilience layer
# (retry + budget + breaker) on and off, and through kawal inbound with span
# export on (every request sampled, OTLP/HTTP to examples/otlp_sink) and off.
# Each comparison alternates its two sides ROUNDS times (A B B A ..., since this
# VM is noisy) and compares the medians. Prints requests/s and p50/p99 latency
# per run and the ratios.
#
#   bench/run.sh                 # DUR=5 ROUNDS=6 CONNS=32, upstream + kawal pinned to cpu1, wrk to cpu0
#
# For the side-by-side comparison with nginx, HAProxy and Envoy use
# bench/peers/peer-bench.sh (see README, "Performance").
# Needs: wrk (apt-get install wrk), the upstream from bench/peers/upstream.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-5}; ROUNDS=${ROUNDS:-6}; CONNS=${CONNS:-32}; LG_CPU=${LG_CPU:-0}; SUT_CPU=${SUT_CPU:-1}
UP_PORT=${UP_PORT:-18080}; K_PORT=${K_PORT:-18081}; ADMIN_PORT=${ADMIN_PORT:-18082}
ON_PORT=${ON_PORT:-18083}; OFF_PORT=${OFF_PORT:-18085}; EXPORT_PORT=${EXPORT_PORT:-18087}; SINK_PORT=${SINK_PORT:-18089}
SHARED=${SHARED:-$PWD/bench/peers}
command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk" >&2; exit 1; }
cargo build --release -q --bins --example otlp_sink
UPSTREAM_BIN=$SHARED/upstream/target/release/pb-upstream
[ -x "$UPSTREAM_BIN" ] || (cd "$SHARED/upstream" && cargo build --release -q)

tmp=$(mktemp -d /tmp/kawal-bench.XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

taskset -c "$SUT_CPU" "$UPSTREAM_BIN" "127.0.0.1:$UP_PORT" >"$tmp/upstream.log" 2>&1 & pids+=($!)
# The collector stand-in shares the load generator's core, not kawal's.
taskset -c "$LG_CPU" target/release/examples/otlp_sink "127.0.0.1:$SINK_PORT" 2>"$tmp/sink.log" & pids+=($!)
config() { # file port admin_port extra_toml
  cat >"$tmp/$1" <<T
[service]
name = "bench"
worker_threads = 1
[admin]
listen = "127.0.0.1:$3"
$4
[log]
level = "${LEVEL:-warn}"
T
}
config kawal.toml "$K_PORT" "$ADMIN_PORT" "[inbound]
listen = \"127.0.0.1:$K_PORT\"
app = \"127.0.0.1:$UP_PORT\""
outbound() { # port resilience_toml
  printf '[outbound]\nlisten = "127.0.0.1:%s"\n[upstreams.up]\nhosts = ["127.0.0.1"]\nendpoints = ["127.0.0.1:%s"]\n%s' "$1" "$UP_PORT" "$2"
}
config export.toml "$EXPORT_PORT" $((EXPORT_PORT + 1)) "[inbound]
listen = \"127.0.0.1:$EXPORT_PORT\"
app = \"127.0.0.1:$UP_PORT\"
[tracing]
otlp_endpoint = \"http://127.0.0.1:$SINK_PORT\"
sample_ratio = 1.0"
config on.toml "$ON_PORT" $((ON_PORT + 1)) "$(outbound "$ON_PORT" "")"
config off.toml "$OFF_PORT" $((OFF_PORT + 1)) "$(outbound "$OFF_PORT" "[upstreams.up.retry]
attempts = 1
[upstreams.up.breaker]
enabled = false")"
for c in kawal on off export; do
  taskset -c "$SUT_CPU" target/release/kawal --config "$tmp/$c.toml" >"$tmp/$c.log" & pids+=($!)
done
for p in "$K_PORT" "$ON_PORT" "$OFF_PORT" "$EXPORT_PORT"; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$p/" >/dev/null 2>&1 && break; sleep 0.1; done
done

run() { # name port → "name rps p50 p99"
  taskset -c "$LG_CPU" wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:$2/" >/dev/null
  taskset -c "$LG_CPU" wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "http://127.0.0.1:$2/" >"$tmp/$1.txt"
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$tmp/$1.txt")
  p50=$(awk '$1=="50%" {print $2}' "$tmp/$1.txt")
  p99=$(awk '$1=="99%" {print $2}' "$tmp/$1.txt")
  echo "$1 $rps $p50 $p99"
}
median() { sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
# A/B on a noisy VM: alternate the two ROUNDS times (A B B A ...) and compare medians.
pair() { # label name_a port_a name_b port_b
  local label=$1 a=() b=() i
  for i in $(seq "$ROUNDS"); do
    if ((i % 2)); then a+=("$(run "$2" "$3")"); b+=("$(run "$4" "$5")")
    else b+=("$(run "$4" "$5")"); a+=("$(run "$2" "$3")"); fi
  done
  for r in "${a[@]}" "${b[@]}"; do set -- $r; printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4"; done >>"$tmp/table"
  local ma mb
  ma=$(for r in "${a[@]}"; do set -- $r; echo "$2"; done | median)
  mb=$(for r in "${b[@]}"; do set -- $r; echo "$2"; done | median)
  awk -v l="$label" -v a="$ma" -v b="$mb" 'BEGIN { printf "%s: %.0f / %.0f req/s (medians of %d) = %.3f\n", l, a, b, '"$ROUNDS"', a/b }' >>"$tmp/ratios"
}
: >"$tmp/table"; : >"$tmp/ratios"
pair "kawal inbound / direct" kawal-inbound "$K_PORT" direct "$UP_PORT"
pair "resilience on / off" outbound-resilience-on "$ON_PORT" outbound-resilience-off "$OFF_PORT"
pair "span export on / off" inbound-export-on "$EXPORT_PORT" kawal-inbound "$K_PORT"
rss=$(awk '/VmHWM/ {print $2/1024 " MiB"}' "/proc/${pids[2]}/status")
spans=$(curl -fs "http://127.0.0.1:$SINK_PORT/count")
dropped=$(curl -fs "http://127.0.0.1:$((EXPORT_PORT + 1))/metrics" | awk '/^kawal_trace_spans_dropped_total/ {s += $2} END {print s + 0}')
printf '| path | req/s | p50 | p99 |\n|---|---:|---:|---:|\n'
cat "$tmp/table"
cat "$tmp/ratios"
echo "kawal inbound peak RSS: $rss"
echo "spans received by the sink: $spans; dropped by kawal: $dropped"
