#!/usr/bin/env bash
# kawal, nginx and HAProxy loaded at the same time: each proxy gets its own wrk (-c CONNS)
# over the same seconds, all proxies and the upstream share SUT_CPU, and each proxy's CPU
# per request (utime+stime of its processes from /proc) is counted over those seconds.
# On a VM whose speed drifts from minute to minute this compares CPU per request far more
# steadily than peer-bench.sh's one-peer-at-a-time slots. req/s here says nothing (the
# proxies split one core), so it is not reported.
#
#   bench/peers/together.sh                 # s1: one proxy, plain HTTP/1.1
#   SCENARIO=s3 bench/peers/together.sh     # s3: client → A → mTLS → B → upstream (A+B counted)
#   ACCESS_LOG=1 ...                        # each proxy with its access log to a pipe
#   RATE=2000 ...                           # open loop: oha at RATE req/s on each proxy at once,
#                                           # and each one's p50/p99 beside its CPU per request
#                                           # (DUR=5 ROUNDS=10 CONNS=16; KAWAL_BIN=target/release/kawal)
# At the end, each proxy's resident memory (VmRSS of its processes, summed).
#
# Needs nginx, HAProxy, wrk, oha and openssl (install-peers.sh) and a release build.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE/../.."
source "$HERE/lib/configs.sh"
DUR=${DUR:-5}; ROUNDS=${ROUNDS:-10}; CONNS=${CONNS:-16}; LG_CPU=${LG_CPU:-0}; SUT_CPU=${SUT_CPU:-1}
BASE=${BASE:-21180}; SCENARIO=${SCENARIO:-s1}; RATE=${RATE:-}; OHA=${OHA:-/opt/peers/oha/bin/oha}
export KAWAL_BIN=${KAWAL_BIN:-$PWD/target/release/kawal}
for t in nginx haproxy wrk openssl ${RATE:+$OHA}; do command -v $t >/dev/null || { echo "missing $t (see install-peers.sh)" >&2; exit 1; }; done
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
# port: where wrk sends (s1: the proxy; s3: sidecar A); B listens 10 above.
declare -A port=([kawal]=$((BASE + 1)) [nginx]=$((BASE + 2)) [haproxy]=$((BASE + 3))) procs=()
up=127.0.0.1:$BASE
start() { # name part cmd... : pinned to SUT_CPU; stdout to a pipe read on LG_CPU (ACCESS_LOG=1) or nowhere
  local name=$1 part=$2 o=/dev/null; shift 2
  if [ "${ACCESS_LOG:-0}" = 1 ]; then
    o=$tmp/$name-$part.out; mkfifo "$o"
    taskset -c "$LG_CPU" cat "$o" >/dev/null & pids+=($!)
  fi
  taskset -c "$SUT_CPU" "$@" >"$o" 2>>"$tmp/$name.err" & pids+=($!)
  procs[$name]+=" $!"
}
taskset -c "$SUT_CPU" "$UPSTREAM_BIN" "$up" >"$tmp/upstream.log" 2>&1 & pids+=($!)
case $SCENARIO in
s1)
  nginx_plain "$tmp/nginx" "${port[nginx]}" "$BASE"
  haproxy_plain "$tmp/haproxy.cfg" "${port[haproxy]}" "$BASE"
  CANDIDATE_PORT=${port[kawal]} UPSTREAM_ADDR=$up start kawal plain "$HERE/candidates/kawal.sh" plain
  start nginx plain nginx -p "$tmp/nginx/" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/error.log"
  start haproxy plain haproxy -db -f "$tmp/haproxy.cfg"
  ;;
s3)
  c=$tmp/pki
  gen_certs "$c"
  export PB_CA=$c/ca.crt PB_A_CRT=$c/a.crt PB_A_KEY=$c/a.key PB_B_CRT=$c/b.crt PB_B_KEY=$c/b.key
  b() { echo $((port[$1] + 10)); }
  nginx_mtls_b "$tmp/nginx-b" "$(b nginx)" "$BASE" "$c"
  nginx_mtls_a "$tmp/nginx-a" "${port[nginx]}" "$(b nginx)" "$c"
  haproxy_mtls_b "$tmp/haproxy-b.cfg" "$(b haproxy)" "$BASE" "$c"
  haproxy_mtls_a "$tmp/haproxy-a.cfg" "${port[haproxy]}" "$(b haproxy)" "$c"
  for part in b a; do
    CANDIDATE_MTLS_A_PORT=${port[kawal]} CANDIDATE_MTLS_B_PORT=$(b kawal) UPSTREAM_ADDR=$up \
      start kawal $part "$HERE/candidates/kawal.sh" "mtls-$part"
    start nginx $part nginx -p "$tmp/nginx-$part/" -c "$tmp/nginx-$part/nginx.conf" -e "$tmp/nginx-$part/error.log"
    start haproxy $part haproxy -db -f "$tmp/haproxy-$part.cfg"
  done
  ;;
*) echo "SCENARIO is s1 or s3" >&2; exit 2 ;;
esac
for n in "${names[@]}"; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:${port[$n]}/" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fs "http://127.0.0.1:${port[$n]}/" >/dev/null || { echo "$n not answering" >&2; cat "$tmp/$n.err" >&2; exit 1; }
done

pids_of() { local p; for p in ${procs[$1]}; do echo "$p"; descendants "$p"; done; } # name → its processes, theirs
ticks() { # name → "user system" time of its processes, in clock ticks
  local u=0 k=0 q du dk
  for q in $(pids_of "$1"); do
    read -r du dk < <(awk '{print $14, $15}' "/proc/$q/stat" 2>/dev/null || echo 0 0)
    u=$((u + du)); k=$((k + dk))
  done
  echo "$u $k"
}
hz=$(getconf CLK_TCK)
per_request() { awk -v t="$1" -v q="$2" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz * 1e6 / q }'; } # ticks requests → µs
load() { # seconds → one load generator per proxy at once: wrk (closed loop), or oha at RATE
  local n w=()
  for n in "${names[@]}"; do
    if [ -n "$RATE" ]; then
      taskset -c "$LG_CPU" "$OHA" -z "${1}s" -c "$CONNS" -q "$RATE" --latency-correction -w --no-tui \
        --output-format json "http://127.0.0.1:${port[$n]}/" >"$tmp/load-$n.out" 2>/dev/null & w+=($!)
    else
      taskset -c "$LG_CPU" wrk -t1 -c"$CONNS" -d"${1}s" "http://127.0.0.1:${port[$n]}/" >"$tmp/load-$n.out" & w+=($!)
    fi
  done
  wait "${w[@]}"
}
answered() { # name → "requests p50µs p99µs" of its last load (the latencies only with RATE); errors to stderr
  if [ -n "$RATE" ]; then
    python3 - "$tmp/load-$1.out" <<'P'
import json, sys
d = json.load(open(sys.argv[1]))
codes, errors = d["statusCodeDistribution"], d["errorDistribution"]
if set(codes) - {"200"} or errors:
    print(f"{sys.argv[1]}: statuses {codes}, errors {errors}", file=sys.stderr)
p = d["latencyPercentiles"]
print(sum(codes.values()), round(p["p50"] * 1e6), round(p["p99"] * 1e6))
P
  else
    grep "Non-2xx\|Socket errors" "$tmp/load-$1.out" | sed "s/^/$1: /" >&2 || true
    awk '/requests in/ {print $1, "-", "-"}' "$tmp/load-$1.out"
  fi
}
: >"$tmp/rows"
for r in $(seq "$ROUNDS"); do
  load 1
  declare -A before=()
  for n in "${names[@]}"; do before[$n]=$(ticks "$n"); done
  load "$DUR"
  line="$r"; lat=""; user=""
  for n in "${names[@]}"; do
    for p in ${procs[$n]}; do
      kill -0 "$p" 2>/dev/null || { echo "$n exited during round $r" >&2; tail -5 "$tmp/$n.err" >&2; exit 1; }
    done
    read -r reqs p50 p99 < <(answered "$n" 2>> "$tmp/load-errors")
    read -r u0 k0 <<<"${before[$n]}"; read -r u1 k1 < <(ticks "$n")
    line+=" $(per_request $((u1 - u0 + k1 - k0)) "$reqs")"
    lat+=" $p50 $p99"
    user+=" $(per_request $((u1 - u0)) "$reqs")"
  done
  echo "$line$lat$user" | tee -a "$tmp/rows" >&2
done
[ -s "$tmp/load-errors" ] && { echo "errors:" >&2; sort -u "$tmp/load-errors" >&2; }
median() { # three significant digits (whole µs from 100 up)
  sort -n | awk '{v[NR]=$1} END {m = (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2; printf (m >= 100 ? "%.0f\n" : "%.3g\n"), m}'
}
rss() { # name → MiB resident, its processes summed
  local kb=0 q
  for q in $(pids_of "$1"); do kb=$((kb + $(awk '/VmRSS/ {print $2}' "/proc/$q/status" 2>/dev/null || echo 0))); done
  awk -v kb=$kb 'BEGIN { printf "%.1f", kb / 1024 }'
}
col() { awk -v c="$1" '{print $c}' "$tmp/rows" | median; }
if [ -n "$RATE" ]; then
  echo "| proxy | CPU µs/request | of it user | kawal ÷ proxy | p50 µs | p99 µs | kawal ÷ proxy, p99 | RSS MiB after |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
else
  echo "| proxy | CPU µs/request | of it user | kawal ÷ proxy | RSS MiB after |"
  echo "|---|---:|---:|---:|---:|"
fi
for i in 0 1 2; do
  n=${names[i]}
  ratio=$(awk -v c=$((i + 2)) '{printf "%.3f\n", $2 / $c}' "$tmp/rows" | median)
  if [ -n "$RATE" ]; then
    p99ratio=$(awk -v c=$((2 * i + 6)) '{printf "%.3f\n", $6 / $c}' "$tmp/rows" | median)
    echo "| $n | $(col $((i + 2))) | $(col $((i + 11))) | $ratio | $(col $((2 * i + 5))) | $(col $((2 * i + 6))) | $p99ratio | $(rss "$n") |"
  else
    echo "| $n | $(col $((i + 2))) | $(col $((i + 11))) | $ratio | $(rss "$n") |"
  fi
done
echo
echo "Medians of $ROUNDS rounds (each ratio: the median of the rounds' ratios). Rows: round; CPU µs/request of kawal, nginx, HAProxy; their p50 and p99 µs (with RATE); their user-space µs/request:"
sed 's/^/    /' "$tmp/rows"
echo
load=${RATE:+oha -q $RATE --latency-correction -c$CONNS}
echo "$SCENARIO, all three loaded at once (${load:-wrk -c$CONNS} each, ${DUR}s, $ROUNDS rounds), ACCESS_LOG=${ACCESS_LOG:-0};" \
  "$("$KAWAL_BIN" --version), $(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v | head -1 | awk '{print $1, $3}')"
