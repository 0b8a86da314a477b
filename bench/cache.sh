#!/usr/bin/env bash
# The cache's hit path against kawal's uncached path and nginx proxy_cache,
# in one run, on the same upstream (an nginx `return 200` of 32 bytes with
# Cache-Control: max-age=3600). Each proxy has one worker on SUT_CPU with the
# upstream; wrk runs on LG_CPU. The three are alternated ROUNDS times and the
# medians reported: requests/s, p50/p99, and the proxy's CPU per request
# (utime+stime of its processes from /proc, divided by the requests served).
#
#   bench/cache.sh              # DUR=5 ROUNDS=3 CONNS=32; writes bench/results/<UTC>-cache.md
#
# Needs: wrk and nginx (apt-get install -y wrk nginx), a release build
# (cargo build --release --bins).
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-5}; ROUNDS=${ROUNDS:-3}; CONNS=${CONNS:-32}; LG_CPU=${LG_CPU:-0}; SUT_CPU=${SUT_CPU:-1}
UP_PORT=${UP_PORT:-18180}; HIT_PORT=${HIT_PORT:-18181}; PLAIN_PORT=${PLAIN_PORT:-18183}; NGX_PORT=${NGX_PORT:-18185}
KAWAL=${KAWAL:-target/release/kawal}
for c in wrk nginx; do command -v $c >/dev/null || { echo "$c missing: apt-get install -y wrk nginx" >&2; exit 1; }; done
[ -x "$KAWAL" ] || { echo "$KAWAL missing: cargo build --release --bins" >&2; exit 1; }

tmp=$(mktemp -d /tmp/kawal-cache-bench.XXXXXX)
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  for d in up ngx; do [ -f "$tmp/$d/nginx.pid" ] && kill "$(cat "$tmp/$d/nginx.pid")" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT

nginx_conf() { # dir server_block
  mkdir -p "$tmp/$1/cache"
  chmod -R a+rwx "$tmp"   # nginx workers run as another user when started by root
  cat >"$tmp/$1/nginx.conf" <<N
worker_processes 1;
daemon on;
pid $tmp/$1/nginx.pid;
error_log $tmp/$1/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $tmp/$1;
  proxy_temp_path $tmp/$1;
  $2
}
N
  taskset -c "$SUT_CPU" nginx -c "$tmp/$1/nginx.conf" -p "$tmp/$1"
}
nginx_conf up "server { listen 127.0.0.1:$UP_PORT; keepalive_requests 100000;
  location / { add_header Cache-Control \"max-age=3600\"; return 200 \"0123456789abcdef0123456789abcdef\"; } }"
nginx_conf ngx "proxy_cache_path $tmp/ngx/cache keys_zone=c:10m max_size=64m;
  upstream up { server 127.0.0.1:$UP_PORT; keepalive 32; }
  server { listen 127.0.0.1:$NGX_PORT; keepalive_requests 100000;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\";
      proxy_cache c; proxy_cache_lock on; add_header Cache-Status \$upstream_cache_status; } }"

kawal_conf() { # name port cache_toml
  cat >"$tmp/$1.toml" <<T
[service]
name = "bench"
worker_threads = 1
[admin]
listen = "127.0.0.1:$(($2 + 1))"
[outbound]
listen = "127.0.0.1:$2"
[upstreams.up]
hosts = ["127.0.0.1"]
endpoints = ["127.0.0.1:$UP_PORT"]
$3
[log]
level = "warn"
T
  taskset -c "$SUT_CPU" "$KAWAL" --config "$tmp/$1.toml" >"$tmp/$1.log" 2>&1 & pids+=($!)
}
kawal_conf hit "$HIT_PORT" "[upstreams.up.cache]
max_bytes = \"64MiB\""
kawal_conf plain "$PLAIN_PORT" ""
for p in "$UP_PORT" "$HIT_PORT" "$PLAIN_PORT" "$NGX_PORT"; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$p/" >/dev/null 2>&1 && break; sleep 0.1; done
done
curl -s -D- -o/dev/null "http://127.0.0.1:$HIT_PORT/" | grep -i cache-status || true
curl -s -D- -o/dev/null "http://127.0.0.1:$NGX_PORT/" | grep -i cache-status || { cat "$tmp/ngx/error.log"; exit 1; }

cpu_ticks() { # pids → utime+stime ticks summed
  local t=0 p
  for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo $t
}
pid_of() { # name → proxy process ids
  case $1 in
    hit) echo "${pids[0]}" ;;
    plain) echo "${pids[1]}" ;;
    nginx) pgrep -P "$(cat "$tmp/ngx/nginx.pid")" | tr '\n' ' ' ;;
  esac
}
port_of() { case $1 in hit) echo "$HIT_PORT" ;; plain) echo "$PLAIN_PORT" ;; nginx) echo "$NGX_PORT" ;; esac; }
hz=$(getconf CLK_TCK)
run() { # name → "rps p50 p99 cpu_us_per_req"
  local port; port=$(port_of "$1")
  taskset -c "$LG_CPU" wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:$port/" >/dev/null
  # shellcheck disable=SC2046
  local before; before=$(cpu_ticks $(pid_of "$1"))
  taskset -c "$LG_CPU" wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "http://127.0.0.1:$port/" >"$tmp/$1.txt"
  # shellcheck disable=SC2046
  local after; after=$(cpu_ticks $(pid_of "$1"))
  local reqs; reqs=$(awk '/requests in/ {print $1}' "$tmp/$1.txt")
  [ -n "$reqs" ] || { echo "wrk failed for $1:" >&2; cat "$tmp/$1.txt" >&2; }
  awk -v b="$before" -v a="$after" -v r="$reqs" -v hz="$hz" '
    /Requests\/sec/ {rps=$2} $1=="50%" {p50=$2} $1=="99%" {p99=$2}
    END {printf "%s %s %s %.1f\n", rps, p50, p99, (a-b)/hz*1e6/r}' "$tmp/$1.txt"
}
median() { sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

for r in $(seq "$ROUNDS"); do
  for name in hit plain nginx; do
    line=$(run "$name"); echo "round $r $name $line"; echo "$name $line" >>"$tmp/all"
  done
done
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
out=bench/results/$stamp-cache.md
{
  echo "# Cache hit path, $stamp: wrk -t1 -c$CONNS ${DUR}s x $ROUNDS rounds, medians"
  echo
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); 1 worker each on cpu$SUT_CPU with the upstream, wrk on cpu$LG_CPU"
  echo
  echo "| path | req/s | p50 | p99 | proxy CPU µs/req |"
  echo "|---|---|---|---|---|"
  for name in hit plain nginx; do
    label=$(case $name in hit) echo "kawal cache hit" ;; plain) echo "kawal uncached" ;; nginx) echo "nginx proxy_cache hit" ;; esac)
    rps=$(awk -v n=$name '$1==n {print $2}' "$tmp/all" | median)
    p50=$(awk -v n=$name '$1==n {print $3}' "$tmp/all" | sed 's/us$//;s/ms$/e3/' | median)
    p99=$(awk -v n=$name '$1==n {print $4}' "$tmp/all" | sed 's/us$//;s/ms$/e3/' | median)
    cpu=$(awk -v n=$name '$1==n {print $5}' "$tmp/all" | median)
    echo "| $label | $rps | ${p50}us | ${p99}us | $cpu |"
  done
  echo
  echo "Raw rounds (name rps p50 p99 cpu_us_per_req):"
  echo '```'
  cat "$tmp/all"
  echo '```'
} | tee "$out"
