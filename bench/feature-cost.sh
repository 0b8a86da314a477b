#!/usr/bin/env bash
# What each feature costs per request, in user-space instructions under
# callgrind: one kawal, one keep-alive connection from wrk, the same request
# with the feature off and on. Instruction counts hold run after run on a
# noisy VM (a change of 1 % shows), but they do not see the kernel (sockets,
# the access log's pipe) or caches: the CPU-time benchmarks (run.sh, cache.sh,
# guard.sh, s3-ab.sh) measure those.
#
#   bench/feature-cost.sh            # DUR=5; KAWAL=target/release/kawal
#   KEEP=DIR bench/feature-cost.sh   # and keep each row's callgrind profile in DIR
#
# Rows (each against the plain row of its own direction):
#   outbound plain        GET through [outbound] to the upstream, logs at warn,
#                         retries (attempts = 1) and the breaker off
#   retry + breaker       their defaults (3 attempts, breaker on)
#   access log            [log] level = "info" (the default; stdout to a file)
#   span export           [tracing] sample_ratio = 1.0 to a local OTLP sink
#   cache hit             [upstreams.up.cache] with default_ttl: every request a hit
#   inbound POST plain    POST with a unique Idempotency-Key through [inbound]
#   guard (memory store)  the same route guarded: idempotency with the memory store
#
# Needs: valgrind and wrk (apt-get install -y valgrind wrk), a release build
# (cargo build --release --bins --example otlp_sink), and the upstream of
# bench/peers/upstream (built here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/peers/lib/callgrind.sh
DUR=${DUR:-5}; LG_CPU=${LG_CPU:-0}; SUT_CPU=${SUT_CPU:-1}; BASE=${BASE:-19180}
KAWAL=${KAWAL:-target/release/kawal}
SINK=${SINK:-target/release/examples/otlp_sink}
for tool in valgrind callgrind_control wrk; do
  command -v "$tool" >/dev/null || { echo "$tool missing: apt-get install -y valgrind wrk" >&2; exit 1; }
done
for bin in "$KAWAL" "$SINK"; do
  [ -x "$bin" ] || { echo "$bin missing: cargo build --release --bins --example otlp_sink" >&2; exit 1; }
done
UPSTREAM_BIN=bench/peers/upstream/target/release/pb-upstream
[ -x "$UPSTREAM_BIN" ] || (cd bench/peers/upstream && cargo build --release -q)

tmp=$(mktemp -d /tmp/kawal-feature-cost.XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
UP=$BASE; OTLP=$((BASE + 1)); PORT=$((BASE + 2)); ADMIN=$((BASE + 3))
taskset -c "$SUT_CPU" "$UPSTREAM_BIN" "127.0.0.1:$UP" >"$tmp/upstream.log" 2>&1 & pids+=($!)
taskset -c "$LG_CPU" "$SINK" "127.0.0.1:$OTLP" >"$tmp/sink.log" 2>&1 & pids+=($!)

# A unique Idempotency-Key per request (the guard answers a repeated one itself).
cat >"$tmp/post.lua" <<'L'
local counter = 0
function init(args) run = args[1] or "0" end
function request()
  counter = counter + 1
  return wrk.format("POST", "/orders/1", {["Idempotency-Key"] = run .. "-" .. counter,
    ["Content-Type"] = "application/json"}, '{"qty":1}')
end
L

OUTBOUND="[outbound]
listen = \"127.0.0.1:$PORT\"
[upstreams.up]
hosts = [\"127.0.0.1\"]
endpoints = [\"127.0.0.1:$UP\"]"
INBOUND="[inbound]
listen = \"127.0.0.1:$PORT\"
app = \"127.0.0.1:$UP\""
NO_RETRY="[upstreams.up.retry]
attempts = 1
[upstreams.up.breaker]
enabled = false"
CACHE="[upstreams.up.cache]
max_bytes = \"64MiB\"
default_ttl = \"1h\""
TRACING="[tracing]
otlp_endpoint = \"http://127.0.0.1:$OTLP\"
sample_ratio = 1.0"
GUARD="[inbound.guard]
[[inbound.guard.routes]]
methods = [\"POST\"]
paths = [\"/*\"]
idempotency = true"

declare -A cost
measure() { # name level post(0|1) toml → instructions per request into cost[name]
  local name=$1 level=$2 post=$3 toml=$4 script=() file=${1//[^a-zA-Z]/-}
  printf '[service]\nname = "cost"\nworker_threads = 1\n[admin]\nlisten = "127.0.0.1:%s"\n%s\n[log]\nlevel = "%s"\n' \
    "$ADMIN" "$toml" "$level" >"$tmp/$file.toml"
  [ "$post" = 1 ] && script=(-s "$tmp/post.lua")
  cost[$name]=$(callgrind_per_request "$file" "http://127.0.0.1:$ADMIN/live" "http://127.0.0.1:$PORT/" "${script[@]}" \
    -- "$KAWAL" --config "$tmp/$file.toml")
}

measure "outbound plain" warn 0 "$OUTBOUND
$NO_RETRY"
measure "retry + breaker" warn 0 "$OUTBOUND"
measure "access log" info 0 "$OUTBOUND
$NO_RETRY"
measure "span export" warn 0 "$OUTBOUND
$NO_RETRY
$TRACING"
measure "cache hit" warn 0 "$OUTBOUND
$NO_RETRY
$CACHE"
measure "inbound POST plain" warn 1 "$INBOUND"
measure "guard (memory store)" warn 1 "$INBOUND
$GUARD"
curl -fs "http://127.0.0.1:$UP/" >/dev/null # the upstream outlived every row

row() { # name baseline
  awk -v n="$1" -v c="${cost[$1]}" -v b="${cost[$2]}" \
    'BEGIN { printf "| %s | %d | %+d | %+.1f %% |\n", n, c, c - b, (c - b) * 100 / b }'
}
echo "| row | instructions/request | vs plain | |"
echo "|---|---:|---:|---:|"
for name in "outbound plain" "retry + breaker" "access log" "span export" "cache hit"; do row "$name" "outbound plain"; done
for name in "inbound POST plain" "guard (memory store)"; do row "$name" "inbound POST plain"; done
echo
echo "$("$KAWAL" --version), DUR=${DUR}s, one connection, callgrind (user space only)"
