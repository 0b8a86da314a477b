#!/usr/bin/env bash
# s1 (one proxy in front of the upstream, plain HTTP/1.1) for kawal, nginx and HAProxy
# loaded at the same time: each proxy gets its own wrk (-c CONNS) over the same seconds,
# all three proxies and the upstream share SUT_CPU, and each proxy's CPU per request
# (utime+stime of its processes from /proc) is counted over those seconds. On a VM whose
# speed drifts from minute to minute this compares CPU per request far more steadily
# than peer-bench.sh's one-peer-at-a-time slots; req/s here says nothing (the proxies
# split one core), so it is not reported as a result.
#
#   bench/peers/together.sh                 # DUR=5 ROUNDS=10 CONNS=16, kawal: target/release/kawal
#   ACCESS_LOG=1 bench/peers/together.sh    # each proxy with its JSON access log to a pipe
#
# Needs nginx, HAProxy and wrk (install-peers.sh) and a release build.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE/../.."
source "$HERE/lib/configs.sh"
DUR=${DUR:-5}; ROUNDS=${ROUNDS:-10}; CONNS=${CONNS:-16}; LG_CPU=${LG_CPU:-0}; SUT_CPU=${SUT_CPU:-1}
BASE=${BASE:-21180}
export KAWAL_BIN=${KAWAL_BIN:-$PWD/target/release/kawal}
for t in nginx haproxy wrk; do command -v $t >/dev/null || { echo "missing $t (see install-peers.sh)" >&2; exit 1; }; done
[ -x "$KAWAL_BIN" ] || { echo "$KAWAL_BIN missing: cargo build --release" >&2; exit 1; }
UPSTREAM_BIN=$HERE/upstream/target/release/pb-upstream
[ -x "$UPSTREAM_BIN" ] || (cd "$HERE/upstream" && cargo build --release -q)

tmp=$(mktemp -d /tmp/kawal-together.XXXXXX)
pids=()
descendants() { local c; for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do echo "$c"; descendants "$c"; done; }
cleanup() {
  local all=() p
  for p in "${pids[@]}"; do all+=("$p" $(descendants "$p")); done
  kill "${all[@]}" 2>/dev/null || true
  # kawal drains before it exits (shutdown_grace): wait, so that a run right after
  # this one finds its ports free.
  for p in "${all[@]}"; do for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; done
  kill -KILL "${all[@]}" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
names=(kawal nginx haproxy)
declare -A port=([kawal]=$((BASE + 1)) [nginx]=$((BASE + 2)) [haproxy]=$((BASE + 3))) pid
# Access lines go to a pipe read on the load generator's core, as a container runtime reads them.
out() { # name → where its stdout goes
  if [ "${ACCESS_LOG:-0}" = 1 ]; then
    mkfifo "$tmp/$1.out"
    taskset -c "$LG_CPU" cat "$tmp/$1.out" >/dev/null & pids+=($!)
    echo "$tmp/$1.out"
  else
    echo /dev/null
  fi
}
taskset -c "$SUT_CPU" "$UPSTREAM_BIN" "127.0.0.1:$BASE" >"$tmp/upstream.log" 2>&1 & pids+=($!)
nginx_plain "$tmp/nginx" "${port[nginx]}" "$BASE"
haproxy_plain "$tmp/haproxy.cfg" "${port[haproxy]}" "$BASE"
o=$(out kawal)
CANDIDATE_PORT=${port[kawal]} UPSTREAM_ADDR=127.0.0.1:$BASE \
  taskset -c "$SUT_CPU" "$HERE/candidates/kawal.sh" plain >"$o" 2>"$tmp/kawal.err" & pids+=($!); pid[kawal]=$!
o=$(out nginx)
taskset -c "$SUT_CPU" nginx -p "$tmp/nginx/" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/error.log" >"$o" 2>&1 &
pids+=($!); pid[nginx]=$!
o=$(out haproxy)
taskset -c "$SUT_CPU" haproxy -db -f "$tmp/haproxy.cfg" >"$o" 2>&1 & pids+=($!); pid[haproxy]=$!
for n in "${names[@]}"; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:${port[$n]}/" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fs "http://127.0.0.1:${port[$n]}/" >/dev/null || { echo "$n not answering" >&2; exit 1; }
done

ticks() { # pid → utime+stime of it and its descendants, in clock ticks
  local t=0 p
  for p in "$1" $(descendants "$1"); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  echo "$t"
}
hz=$(getconf CLK_TCK)
load() { # seconds → one wrk per proxy at once, outputs in $tmp/wrk-NAME.txt
  local n w=()
  for n in "${names[@]}"; do
    taskset -c "$LG_CPU" wrk -t1 -c"$CONNS" -d"${1}s" "http://127.0.0.1:${port[$n]}/" >"$tmp/wrk-$n.txt" & w+=($!)
  done
  wait "${w[@]}"
}
: >"$tmp/rows"
for r in $(seq "$ROUNDS"); do
  load 1
  declare -A before=()
  for n in "${names[@]}"; do before[$n]=$(ticks "${pid[$n]}"); done
  load "$DUR"
  for n in "${names[@]}"; do
    kill -0 "${pid[$n]}" 2>/dev/null || { echo "$n exited during round $r" >&2; tail -5 "$tmp/kawal.err" >&2; exit 1; }
  done
  line="$r"
  for n in "${names[@]}"; do
    reqs=$(awk '/requests in/ {print $1}' "$tmp/wrk-$n.txt")
    if grep -q "Non-2xx\|Socket errors" "$tmp/wrk-$n.txt"; then echo "round $r $n: $(grep 'Non-2xx\|Socket errors' "$tmp/wrk-$n.txt")" >&2; fi
    line+=" $(awk -v t=$(($(ticks "${pid[$n]}") - before[$n])) -v q="$reqs" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz * 1e6 / q }')"
  done
  echo "$line" | tee -a "$tmp/rows" >&2
done
median() { sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
echo "| proxy | CPU µs/request, median of $ROUNDS rounds | kawal ÷ proxy, median of the rounds' ratios |"
echo "|---|---:|---:|"
for i in 0 1 2; do
  n=${names[i]}
  cpu=$(awk -v c=$((i + 2)) '{print $c}' "$tmp/rows" | median)
  ratio=$(awk -v c=$((i + 2)) '{printf "%.3f\n", $2 / $c}' "$tmp/rows" | median)
  echo "| $n | $cpu | $ratio |"
done
echo
echo "s1 plain, all three loaded at once (wrk -c$CONNS each, ${DUR}s, $ROUNDS rounds), ACCESS_LOG=${ACCESS_LOG:-0};" \
  "$("$KAWAL_BIN" --version), $(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v | head -1 | awk '{print $1, $3}')"
