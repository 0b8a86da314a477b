#!/usr/bin/env bash
# The guard's cost, in one run: the same wrk POST load (a unique
# Idempotency-Key per request) through kawal inbound to a fast app on a route
#   unguarded      no [inbound.guard]
#   memory         idempotency = true, store = "memory"
#   redis          idempotency = true, store = "redis" (a local redis-server)
# alternated ROUNDS times (the VM is noisy); per run req/s, p50/p99, and the
# kawal process's CPU time per request (utime+stime from /proc). Prints a
# Markdown table and the medians; save it under bench/results/.
#
#   bench/guard.sh               # DUR=5 ROUNDS=4 CONNS=32, kawal + app on cpu1, wrk + redis on cpu0
#
# Needs: wrk, redis-server (apt-get install -y wrk redis-server), the upstream
# of bench/peers/upstream (built here when missing). KAWAL=path/to/kawal
# measures that binary instead of building target/release/kawal.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-5}; ROUNDS=${ROUNDS:-4}; CONNS=${CONNS:-32}; LG_CPU=${LG_CPU:-0}; SUT_CPU=${SUT_CPU:-1}
UP_PORT=${UP_PORT:-18180}; REDIS_PORT=${REDIS_PORT:-18189}; BASE=${BASE:-18181}
PEERS_DIR=bench/peers
for tool in wrk redis-server; do
  command -v "$tool" >/dev/null || { echo "$tool missing: apt-get install -y $tool" >&2; exit 1; }
done
KAWAL=${KAWAL:-}
[ -n "$KAWAL" ] || { cargo build --release -q --bin kawal; KAWAL=target/release/kawal; }
UPSTREAM_BIN=$PEERS_DIR/upstream/target/release/pb-upstream
[ -x "$UPSTREAM_BIN" ] || (cd "$PEERS_DIR/upstream" && cargo build --release -q)

tmp=$(mktemp -d /tmp/kawal-guard-bench.XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

taskset -c "$SUT_CPU" "$UPSTREAM_BIN" "127.0.0.1:$UP_PORT" >"$tmp/upstream.log" 2>&1 & pids+=($!)
taskset -c "$LG_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$tmp/redis.log" 2>&1 & pids+=($!)

GUARD_ROUTE='[[inbound.guard.routes]]
methods = ["POST"]
paths = ["/*"]
idempotency = true'
names=(unguarded memory redis)
declare -A port kpid
i=0
for name in "${names[@]}"; do
  port[$name]=$((BASE + 2 * i)); i=$((i + 1))
  case $name in
    unguarded) guard="" ;;
    memory) guard="[inbound.guard]
$GUARD_ROUTE" ;;
    redis) guard="[inbound.guard]
store = \"redis\"
redis_url = \"redis://127.0.0.1:$REDIS_PORT\"
$GUARD_ROUTE" ;;
  esac
  cat >"$tmp/$name.toml" <<T
[service]
name = "bench-$name"
worker_threads = 1
[admin]
listen = "127.0.0.1:$((port[$name] + 1))"
[inbound]
listen = "127.0.0.1:${port[$name]}"
app = "127.0.0.1:$UP_PORT"
$guard
[log]
level = "warn"
T
  taskset -c "$SUT_CPU" "$KAWAL" --config "$tmp/$name.toml" >"$tmp/$name.log" 2>&1 &
  pids+=($!); kpid[$name]=$!
done
for name in "${names[@]}"; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$((port[$name] + 1))/live" >/dev/null 2>&1 && break; sleep 0.1; done
done

# A unique key per request: thread id + counter (keys from earlier rounds
# are never reused: the round number is in them).
cat >"$tmp/post.lua" <<'L'
local counter, tid = 0, 0
local threads = 0
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
function init(args) tid = tonumber(tid) or 0; round = args[1] or "0" end
function request()
  counter = counter + 1
  return wrk.format("POST", "/orders/1", {["Idempotency-Key"] = round .. "-" .. tid .. "-" .. counter,
    ["Content-Type"] = "application/json"}, '{"qty":1}')
end
L
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() { # name round → "name rps p50 p99 cpu_us_per_req"
  local name=$1 p=${port[$1]} before after rps p50 p99 reqs tck
  tck=$(getconf CLK_TCK)
  taskset -c "$LG_CPU" wrk -t1 -c"$CONNS" -d1s -s "$tmp/post.lua" "http://127.0.0.1:$p/" -- "w$2" >/dev/null
  before=$(cpu_ticks "${kpid[$name]}")
  taskset -c "$LG_CPU" wrk -t1 -c"$CONNS" -d"${DUR}s" --latency -s "$tmp/post.lua" "http://127.0.0.1:$p/" -- "r$2" >"$tmp/out.txt"
  after=$(cpu_ticks "${kpid[$name]}")
  rps=$(awk '/Requests\/sec/ {print $2}' "$tmp/out.txt")
  reqs=$(awk '/requests in/ {print $1}' "$tmp/out.txt")
  p50=$(awk '$1=="50%" {print $2}' "$tmp/out.txt")
  p99=$(awk '$1=="99%" {print $2}' "$tmp/out.txt")
  if grep -q "Non-2xx" "$tmp/out.txt"; then echo "WARN $name: $(grep Non-2xx "$tmp/out.txt")" >&2; fi
  awk -v n="$name" -v r="$rps" -v a="$p50" -v b="$p99" -v t="$((after - before))" -v q="$reqs" -v hz="$tck" \
    'BEGIN { printf "%s %s %s %s %.1f\n", n, r, a, b, t / hz * 1e6 / q }'
}
median() { sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
declare -A rows
for r in $(seq "$ROUNDS"); do
  order=("${names[@]}"); ((r % 2)) || order=(redis memory unguarded)
  for name in "${order[@]}"; do rows[$name]+="$(run "$name" "$r")"$'\n'; done
done
printf '| route | req/s | p50 | p99 | kawal CPU µs/request |\n|---|---:|---:|---:|---:|\n'
for name in "${names[@]}"; do
  printf '%s' "${rows[$name]}" | while read -r n a b c d; do printf '| %s | %s | %s | %s | %s |\n' "$n" "$a" "$b" "$c" "$d"; done
done
echo
for name in "${names[@]}"; do
  rps=$(printf '%s' "${rows[$name]}" | awk '{print $2}' | median)
  cpu=$(printf '%s' "${rows[$name]}" | awk '{print $5}' | median)
  echo "$name: median $rps req/s, $cpu µs CPU/request (of $ROUNDS rounds, c$CONNS, ${DUR}s)"
done
echo "redis-server keys after the run: $(redis-cli -p "$REDIS_PORT" dbsize 2>/dev/null || echo '?')"
