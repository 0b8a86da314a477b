#!/usr/bin/env bash
# kawal, nginx and HAProxy on s1 (one proxy, plain HTTP/1.1), each under callgrind: user-space
# instructions per request over one keep-alive connection. Instruction counts hold from run
# to run on a noisy VM; they do not see the kernel (the system calls per request are the
# same for all three: 2 recvfrom, 2 writev, ~1 epoll_wait), which together.sh's CPU figures do.
#
#   bench/peers/instructions.sh              # DUR=5; KAWAL_BIN=target/release/kawal
#   ACCESS_LOG=1 bench/peers/instructions.sh # each proxy with its access log (to a file)
#   KEEP=DIR ...                             # keep each proxy's profile for callgrind_annotate
#   FLOOR=1 ...                              # and bench/floor: a bare tokio + httparse proxy
#                                            # (not kawal), the floor under any proxy on tokio,
#                                            # also with hyper's client's hand-off between tasks
#
# Needs nginx, HAProxy, wrk (install-peers.sh), valgrind (apt-get install -y valgrind) and a
# release build.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE/../.."
source "$HERE/lib/configs.sh"
DUR=${DUR:-5}; LG_CPU=${LG_CPU:-0}; SUT_CPU=${SUT_CPU:-1}; BASE=${BASE:-23180}
export KAWAL_BIN=${KAWAL_BIN:-$PWD/target/release/kawal}
for t in nginx haproxy wrk valgrind callgrind_control; do
  command -v $t >/dev/null || { echo "missing $t (install-peers.sh; apt-get install -y valgrind)" >&2; exit 1; }
done
[ -x "$KAWAL_BIN" ] || { echo "$KAWAL_BIN missing: cargo build --release" >&2; exit 1; }
UPSTREAM_BIN=$HERE/upstream/target/release/pb-upstream
[ -x "$UPSTREAM_BIN" ] || (cd "$HERE/upstream" && cargo build --release -q)

tmp=$(mktemp -d /tmp/kawal-instructions.XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; sleep 0.5; rm -rf "$tmp"; }
trap cleanup EXIT
up=$BASE
taskset -c "$SUT_CPU" "$UPSTREAM_BIN" "127.0.0.1:$up" >"$tmp/upstream.log" 2>&1 & pids+=($!)

declare -A cost
measure() { # name port cmd... → instructions per request into cost[name]
  local name=$1 port=$2 pid reqs ir; shift 2
  taskset -c "$SUT_CPU" valgrind --tool=callgrind "--callgrind-out-file=$tmp/$name.cg" "$@" \
    >"$tmp/$name.out" 2>"$tmp/$name.err" &
  pid=$!; pids+=("$pid")
  for _ in $(seq 300); do curl -fs "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.1; done
  taskset -c "$LG_CPU" wrk -t1 -c1 -d2s "http://127.0.0.1:$port/" >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  taskset -c "$LG_CPU" wrk -t1 -c1 -d"${DUR}s" "http://127.0.0.1:$port/" >"$tmp/wrk.txt"
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  if grep -q "Non-2xx\|Socket errors" "$tmp/wrk.txt"; then echo "$name: $(grep 'Non-2xx\|Socket errors' "$tmp/wrk.txt")" >&2; exit 1; fi
  reqs=$(awk '/requests in/ {print $1}' "$tmp/wrk.txt")
  # The dump of the zeroed counters is the newest part file.
  local part; part=$(ls -t "$tmp/$name.cg".* | head -1)
  ir=$(callgrind_annotate --auto=no "$part" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  cost[$name]=$((ir / reqs))
  [ -n "${KEEP:-}" ] && mkdir -p "$KEEP" && cp "$part" "$KEEP/$name.cg"
  echo "$name: ${cost[$name]} instructions/request ($reqs requests)" >&2
}

# kawal as candidates/kawal.sh plain starts it.
level=warn; [ "${ACCESS_LOG:-0}" = 1 ] && level=info
printf '[service]\nname = "bench"\n[admin]\nlisten = "127.0.0.1:%s"\n[inbound]\nlisten = "127.0.0.1:%s"\napp = "127.0.0.1:%s"\n[log]\nlevel = "%s"\n' \
  $((BASE + 1001)) $((BASE + 1)) "$up" "$level" >"$tmp/kawal.toml"
measure kawal $((BASE + 1)) "$KAWAL_BIN" --config "$tmp/kawal.toml"
# nginx without its master process: the one process under valgrind is the worker.
nginx_plain "$tmp/nginx" $((BASE + 2)) "$up"
sed -i 's/^master_process on;/master_process off;/' "$tmp/nginx/nginx.conf"
measure nginx $((BASE + 2)) nginx -p "$tmp/nginx/" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/error.log"
haproxy_plain "$tmp/haproxy.cfg" $((BASE + 3)) "$up"
measure haproxy $((BASE + 3)) haproxy -db -f "$tmp/haproxy.cfg"
names=(kawal nginx haproxy)
if [ "${FLOOR:-0}" = 1 ]; then
  (cd bench/floor && cargo build --release --locked -q)
  measure floor $((BASE + 4)) bench/floor/target/release/floor 127.0.0.1:$((BASE + 4)) "127.0.0.1:$up"
  # The same with each upstream connection in a task of its own, as hyper's client runs it.
  measure floor-hop $((BASE + 5)) bench/floor/target/release/floor 127.0.0.1:$((BASE + 5)) "127.0.0.1:$up" hop
  names+=(floor floor-hop)
fi

echo "| proxy | instructions/request | kawal ÷ proxy |"
echo "|---|---:|---:|"
for n in "${names[@]}"; do
  awk -v n=$n -v c="${cost[$n]}" -v k="${cost[kawal]}" 'BEGIN { printf "| %s | %d | %.2f |\n", n, c, k / c }'
done
echo
echo "s1, one connection (wrk -c1, ${DUR}s), callgrind (user space only), ACCESS_LOG=${ACCESS_LOG:-0};" \
  "$("$KAWAL_BIN" --version), $(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v | head -1 | awk '{print $1, $3}')"
