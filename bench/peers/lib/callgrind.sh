# shellcheck shell=bash
# Instructions per request of one server under callgrind (feature-cost.sh, peers/instructions.sh).
# Sourced; the caller sets tmp (a scratch dir), DUR, LG_CPU and SUT_CPU, and pids (an array
# its cleanup kills).

# callgrind_per_request NAME READY_URL LOAD_URL [WRK_ARG...] -- CMD...
#   Starts CMD under callgrind on SUT_CPU and waits until READY_URL answers 2xx. Then one
#   keep-alive connection (wrk -t1 -c1 WRK_ARG... LOAD_URL, with "w"/"r" + NAME as the
#   script's argument) warms it up for 2 s and is counted for DUR s. Stops CMD and prints its
#   user-space instructions per request; fails on a non-2xx answer. KEEP=DIR keeps the
#   profile as DIR/NAME.cg.
callgrind_per_request() {
  local name=$1 ready=$2 url=$3 wrk_args=() pid reqs ir part
  shift 3
  while [ "$1" != -- ]; do wrk_args+=("$1"); shift; done
  shift
  taskset -c "$SUT_CPU" valgrind --tool=callgrind "--callgrind-out-file=$tmp/$name.cg" "$@" \
    >"$tmp/$name.out" 2>"$tmp/$name.err" &
  pid=$!; pids+=("$pid")
  for _ in $(seq 300); do curl -fs "$ready" >/dev/null 2>&1 && break; sleep 0.1; done
  taskset -c "$LG_CPU" wrk -t1 -c1 -d2s "${wrk_args[@]}" "$url" -- "w$name" >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  taskset -c "$LG_CPU" wrk -t1 -c1 -d"${DUR}s" "${wrk_args[@]}" "$url" -- "r$name" >"$tmp/wrk.txt"
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  if grep -q "Non-2xx\|Socket errors" "$tmp/wrk.txt"; then
    echo "$name: $(grep 'Non-2xx\|Socket errors' "$tmp/wrk.txt")" >&2
    return 1
  fi
  reqs=$(awk '/requests in/ {print $1}' "$tmp/wrk.txt")
  # The dump of the zeroed counters is the newest part file.
  part=$(ls -t "$tmp/$name.cg".* | head -1)
  ir=$(callgrind_annotate --auto=no "$part" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$part" "$KEEP/$name.cg"; fi
  echo "$name: $((ir / reqs)) instructions/request ($reqs requests)" >&2
  echo $((ir / reqs))
}
