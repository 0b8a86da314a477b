#!/usr/bin/env bash
# A/B on the sidecar-to-sidecar path (peer-bench's s3): client → A (plain) →
# mTLS → B → upstream, for two kawal binaries side by side, alternated
# ROUNDS times (A B B A ...) since this VM is noisy. Per run: req/s and the
# CPU µs per request of the two sidecars together (utime+stime from /proc),
# which stays comparable when the load generator is the bottleneck.
#
#   bench/s3-ab.sh OLD_BIN NEW_BIN          # DUR=5 ROUNDS=6 CONNS=32
#   INSTR=1 bench/s3-ab.sh OLD_BIN NEW_BIN  # instructions per request instead
#   KEEP=DIR INSTR=1 ...                    # and keep the callgrind profiles
#   NEW_LOG=info bench/s3-ab.sh BIN BIN     # access logs off (old) vs on (new), one binary
#   LOG_SINK=pipe ...                        # stdout to a pipe read on the load generator's
#                                            # core (as a container runtime reads it), not a file
#   TOGETHER=1 ...                           # load both pairs at once (c=CONNS/2 each) instead of
#                                            # in turn: the VM's drift then hits both alike
#
# INSTR=1 runs each pair under callgrind with one connection (no batching) and
# prints user-space instructions per request for A and B: the same figure run
# after run whatever else the VM is doing, so a change of 1% shows; it does
# not see the kernel, caches or allocator locality, so confirm with req/s.
#
# Needs wrk, valgrind (INSTR=1) and the upstream of bench/peers (its
# install-peers.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1; NEW=$2
DUR=${DUR:-5}; ROUNDS=${ROUNDS:-6}; CONNS=${CONNS:-32}; LG_CPU=${LG_CPU:-0}; SUT_CPU=${SUT_CPU:-1}
BASE=${BASE:-18180}
SHARED=${SHARED:-$PWD/bench/peers}
source "$SHARED/lib/configs.sh"
UPSTREAM_BIN=$SHARED/upstream/target/release/pb-upstream
[ -x "$UPSTREAM_BIN" ] || (cd "$SHARED/upstream" && cargo build --release -q)

tmp=$(mktemp -d /tmp/kawal-s3ab.XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
gen_certs "$tmp/pki"
taskset -c "$SUT_CPU" "$UPSTREAM_BIN" "127.0.0.1:$BASE" >"$tmp/upstream.log" 2>&1 & pids+=($!)

pair() { # name bin a_port b_port
  local name=$1 bin=$2 a=$3 b=$4
  # OLD_LOG / NEW_LOG: each side's [log] level ("info" writes access lines).
  local level=warn
  [ "$name" = old ] && level=${OLD_LOG:-warn}
  [ "$name" = new ] && level=${NEW_LOG:-warn}
  cat >"$tmp/$name-b.toml" <<T
[service]
name = "b"
[admin]
listen = "127.0.0.1:$((b + 1000))"
[inbound]
listen = "127.0.0.1:$b"
app = "127.0.0.1:$BASE"
[inbound.tls]
cert = "$tmp/pki/b.crt"
key = "$tmp/pki/b.key"
client_ca = "$tmp/pki/ca.crt"
[log]
level = "$level"
T
  cat >"$tmp/$name-a.toml" <<T
[service]
name = "a"
[admin]
listen = "127.0.0.1:$((a + 1000))"
[outbound]
listen = "127.0.0.1:$a"
[upstreams.b]
hosts = ["127.0.0.1:$a"]
endpoints = ["127.0.0.1:$b"]
[upstreams.b.tls]
ca = "$tmp/pki/ca.crt"
cert = "$tmp/pki/a.crt"
key = "$tmp/pki/a.key"
server_identity = "spiffe://test/ns/default/sa/b"
[log]
level = "$level"
T
  local wrap=()
  [ -n "${INSTR:-}" ] && wrap=(valgrind --tool=callgrind "--callgrind-out-file=$tmp/$name-%p.cg")
  local side
  for side in b a; do
    if [ "${LOG_SINK:-file}" = pipe ]; then
      mkfifo "$tmp/$name-$side.log"
      taskset -c "$LG_CPU" cat "$tmp/$name-$side.log" >/dev/null & pids+=($!)
    fi
  done
  taskset -c "$SUT_CPU" "${wrap[@]}" "$bin" --config "$tmp/$name-b.toml" >"$tmp/$name-b.log" 2>&1 & pids+=($!)
  echo $! >"$tmp/$name.pids"
  taskset -c "$SUT_CPU" "${wrap[@]}" "$bin" --config "$tmp/$name-a.toml" >"$tmp/$name-a.log" 2>&1 & pids+=($!)
  echo $! >>"$tmp/$name.pids"
  for _ in $(seq 300); do curl -fs "http://127.0.0.1:$a/" >/dev/null 2>&1 && break; sleep 0.1; done
}

if [ -n "${INSTR:-}" ]; then
  for n in old new; do
    bin=$OLD; [ $n = new ] && bin=$NEW
    pair $n "$bin" $((BASE + 1)) $((BASE + 2))
    taskset -c "$LG_CPU" wrk -t1 -c1 -d2s "http://127.0.0.1:$((BASE + 1))/" >/dev/null
    callgrind_control -z >/dev/null
    reqs=$(taskset -c "$LG_CPU" wrk -t1 -c1 -d"${DUR}s" "http://127.0.0.1:$((BASE + 1))/" | awk '/requests in/ {print $1}')
    callgrind_control -d >/dev/null
    # shellcheck disable=SC2046
    kill $(cat "$tmp/$n.pids"); wait $(cat "$tmp/$n.pids") 2>/dev/null || true
    mapfile -t side_pids <"$tmp/$n.pids" # B, then A
    for i in 0 1; do
      ir=$(callgrind_annotate --auto=no "$tmp/$n-${side_pids[i]}.cg.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
      echo "$n $([ $i = 0 ] && echo B || echo A): $((ir / reqs)) instructions/request ($reqs requests)"
      [ -n "${KEEP:-}" ] && mkdir -p "$KEEP" && cp "$tmp/$n-${side_pids[i]}.cg.1" "$KEEP/$n-$([ $i = 0 ] && echo b || echo a).cg"
    done
  done
  exit 0
fi

pair old "$OLD" $((BASE + 1)) $((BASE + 2))
pair new "$NEW" $((BASE + 3)) $((BASE + 4))

ticks() { # pids... → "utime+stime utime" in clock ticks
  local t=0 u=0 p
  for p in "$@"; do
    read -r pt pu < <(awk '{print $14 + $15, $14}' "/proc/$p/stat")
    t=$((t + pt)); u=$((u + pu))
  done
  echo "$t $u"
}
hz=$(getconf CLK_TCK)
cpu_ticks() { # → "busy idle steal" ticks of the SUT core (busy: user+nice+system+irq+softirq)
  awk -v c="cpu$SUT_CPU" '$1 == c { print $2 + $3 + $4 + $7 + $8, $5 + $6, $9 }' /proc/stat
}
port_of() { if [ "$1" = old ]; then echo $((BASE + 1)); else echo $((BASE + 3)); fi; }
# run NAME... → per pair a line "rps cpu_us_per_req user_us_per_req sut_busy% steal%":
# the pairs named loaded at once (CONNS split between them) over the same seconds;
# busy and steal are of the SUT core they share.
run() {
  local n c=$((CONNS / $#)) w=() before=() after=() c0 c1 i=0 t0 u0 t1 u1 b0 i0 s0 b1 i1 s1
  for n in "$@"; do taskset -c "$LG_CPU" wrk -t1 -c$c -d1s "http://127.0.0.1:$(port_of $n)/" >/dev/null & w+=($!); done
  wait "${w[@]}"; w=()
  # shellcheck disable=SC2046
  for n in "$@"; do before+=("$(ticks $(cat "$tmp/$n.pids"))"); done
  c0=$(cpu_ticks)
  for n in "$@"; do
    taskset -c "$LG_CPU" wrk -t1 -c$c -d"${DUR}s" "http://127.0.0.1:$(port_of $n)/" >"$tmp/wrk-$n.txt" & w+=($!)
  done
  wait "${w[@]}"
  # shellcheck disable=SC2046
  for n in "$@"; do after+=("$(ticks $(cat "$tmp/$n.pids"))"); done
  c1=$(cpu_ticks)
  read -r b0 i0 s0 <<<"$c0"; read -r b1 i1 s1 <<<"$c1"
  for n in "$@"; do
    read -r t0 u0 <<<"${before[i]}"; read -r t1 u1 <<<"${after[i]}"; i=$((i + 1))
    awk -v r="$(awk '/Requests\/sec/ {print $2}' "$tmp/wrk-$n.txt")" -v t=$((t1 - t0)) -v u=$((u1 - u0)) \
      -v hz="$hz" -v d="$DUR" -v b=$((b1 - b0)) -v i=$((i1 - i0)) -v s=$((s1 - s0)) \
      'BEGIN { all = b + i + s; printf "%.0f %.1f %.1f %.0f %.0f\n", r, t / hz * 1e6 / (r * d), u / hz * 1e6 / (r * d), 100 * b / all, 100 * s / all }'
  done
}
median() { sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
: >"$tmp/old.res"; : >"$tmp/new.res"
for i in $(seq "$ROUNDS"); do
  if [ -n "${TOGETHER:-}" ]; then
    order="old new"; mapfile -t rows < <(run old new)
  else
    # In turn, the order alternating between rounds.
    if ((i % 2)); then order="old new"; else order="new old"; fi
    rows=(); for n in $order; do rows+=("$(run $n)"); done
  fi
  j=0
  for n in $order; do
    r=${rows[j]}; j=$((j + 1))
    echo "$r" >>"$tmp/$n.res"; echo "round $i $n: $r (req/s, CPU µs/req, of it user, SUT core busy %, steal %)"
  done
done
# Per busy second of the SUT core: what a round would have done with the core to
# itself (the closed loop keeps it saturated; steal takes it away unevenly).
for n in old new; do
  echo "$n: median $(cut -d' ' -f1 "$tmp/$n.res" | median) req/s," \
    "$(awk '{printf "%.0f\n", $1 * 100 / $4}' "$tmp/$n.res" | median) req/s per busy SUT core," \
    "$(cut -d' ' -f2 "$tmp/$n.res" | median) CPU µs/req (A+B), $(cut -d' ' -f3 "$tmp/$n.res" | median) of it user," \
    "steal $(cut -d' ' -f5 "$tmp/$n.res" | median) %"
done
