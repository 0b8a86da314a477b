#!/usr/bin/env bash
# Quick overhead benchmark: the same wrk load against a fast upstream directly,
# through kawal inbound, and through kawal outbound with the resilience layer
# (retry + budget + breaker) on and off, one after the other in one run
# (on/off interleaved twice, since this VM is noisy). Prints requests/s and
# p50/p99 latency per path and the ratios.
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
ON_PORT=${ON_PORT:-18083}; OFF_PORT=${OFF_PORT:-18085}
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
config on.toml "$ON_PORT" $((ON_PORT + 1)) "$(outbound "$ON_PORT" "")"
config off.toml "$OFF_PORT" $((OFF_PORT + 1)) "$(outbound "$OFF_PORT" "[upstreams.up.retry]
attempts = 1
[upstreams.up.breaker]
enabled = false")"
for c in kawal on off; do
  taskset -c "$SUT_CPU" target/release/kawal --config "$tmp/$c.toml" >"$tmp/$c.log" & pids+=($!)
done
for p in "$K_PORT" "$ON_PORT" "$OFF_PORT"; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$p/" >/dev/null 2>&1 && break; sleep 0.1; done
done

run() { # name port
  taskset -c "$LG_CPU" wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$2/" >/dev/null
  taskset -c "$LG_CPU" wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "http://127.0.0.1:$2/" >"$tmp/$1.txt"
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$tmp/$1.txt")
  p50=$(awk '$1=="50%" {print $2}' "$tmp/$1.txt")
  p99=$(awk '$1=="99%" {print $2}' "$tmp/$1.txt")
  echo "$1 $rps $p50 $p99"
}
d=$(run direct "$UP_PORT"); k=$(run kawal-inbound "$K_PORT")
on1=$(run outbound-resilience-on "$ON_PORT"); off1=$(run outbound-resilience-off "$OFF_PORT")
off2=$(run outbound-resilience-off "$OFF_PORT"); on2=$(run outbound-resilience-on "$ON_PORT")
rss=$(awk '/VmHWM/ {print $2/1024 " MiB"}' "/proc/${pids[1]}/status")
printf '| path | req/s | p50 | p99 |\n|---|---:|---:|---:|\n'
for r in "$d" "$k" "$on1" "$off1" "$off2" "$on2"; do set -- $r; printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4"; done
rps() { set -- $1; echo "$2"; }
awk -v d="$(rps "$d")" -v k="$(rps "$k")" -v a="$(rps "$on1")" -v b="$(rps "$on2")" -v x="$(rps "$off1")" -v y="$(rps "$off2")" \
  'BEGIN { printf "kawal inbound / direct: %.2fx\nresilience on / off (mean of 2 each): %.3f\n", k/d, (a+b)/(x+y) }'
echo "kawal inbound peak RSS: $rss"
