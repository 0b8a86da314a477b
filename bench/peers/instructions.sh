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
source "$HERE/lib/callgrind.sh"
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
  local name=$1 url=http://127.0.0.1:$2/; shift 2
  cost[$name]=$(callgrind_per_request "$name" "$url" "$url" -- "$@")
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
