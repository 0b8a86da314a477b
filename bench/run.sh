#!/usr/bin/env bash
# Quick overhead benchmark: the same wrk load against a fast upstream directly
# and through kawal (inbound, plain HTTP/1.1), one after the other in one run.
# Prints requests/s and p50/p99 latency for both, and their ratio.
#
#   bench/run.sh                 # DUR=10 CONNS=32, upstream + kawal pinned to cpu1, wrk to cpu0
#
# For the side-by-side comparison with nginx, HAProxy and Envoy use
# ../shared/bench/peer-bench.sh (see README, "Performance").
# Needs: wrk (apt-get install wrk), the upstream from ../shared/bench/upstream.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-10}; CONNS=${CONNS:-32}; LG_CPU=${LG_CPU:-0}; SUT_CPU=${SUT_CPU:-1}
UP_PORT=${UP_PORT:-18080}; K_PORT=${K_PORT:-18081}; ADMIN_PORT=${ADMIN_PORT:-18082}
SHARED=${SHARED:-../shared/bench}
command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk" >&2; exit 1; }
cargo build --release -q
UPSTREAM_BIN=$SHARED/upstream/target/release/pb-upstream
[ -x "$UPSTREAM_BIN" ] || (cd "$SHARED/upstream" && cargo build --release -q)

tmp=$(mktemp -d /tmp/kawal-bench.XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

taskset -c "$SUT_CPU" "$UPSTREAM_BIN" "127.0.0.1:$UP_PORT" >"$tmp/upstream.log" 2>&1 & pids+=($!)
cat >"$tmp/kawal.toml" <<T
[service]
name = "bench"
worker_threads = 1
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
[inbound]
listen = "127.0.0.1:$K_PORT"
app = "127.0.0.1:$UP_PORT"
[log]
level = "${LEVEL:-warn}"
T
taskset -c "$SUT_CPU" target/release/kawal --config "$tmp/kawal.toml" >"$tmp/kawal.log" & pids+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$K_PORT/" >/dev/null 2>&1 && break; sleep 0.1; done

run() { # name port
  taskset -c "$LG_CPU" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$2/" >/dev/null
  taskset -c "$LG_CPU" wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "http://127.0.0.1:$2/" >"$tmp/$1.txt"
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$tmp/$1.txt")
  p50=$(awk '$1=="50%" {print $2}' "$tmp/$1.txt")
  p99=$(awk '$1=="99%" {print $2}' "$tmp/$1.txt")
  echo "$1 $rps $p50 $p99"
}
d=$(run direct "$UP_PORT"); k=$(run kawal "$K_PORT")
rss=$(awk '/VmHWM/ {print $2/1024 " MiB"}' "/proc/${pids[1]}/status")
printf '| path | req/s | p50 | p99 |\n|---|---:|---:|---:|\n'
for r in "$d" "$k"; do set -- $r; printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4"; done
set -- $d; drps=$2; set -- $k
echo "kawal/direct throughput: $(awk -v a="$2" -v b="$drps" 'BEGIN {printf "%.2f", a/b}')x; kawal peak RSS: $rss"
