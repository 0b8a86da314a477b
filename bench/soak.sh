#!/usr/bin/env bash
# Soak: kawal under a mixed load for DURATION, watched for leaks.
#
#   bench/soak.sh 60m            # or 300s, 5m, 1h; PROFILE=debug to skip the release build
#
# Starts a fault-injecting app (examples/soak.rs: resets, 503s, 2 s responses),
# kawal with an inbound listener in front of it and an outbound route to it
# (retries, breaker), and a mixed load through both for DURATION: HTTP/1.1
# keep-alive and fresh connections, h2c, small and 1 MiB bodies, cacheable
# GETs, keyed POSTs, client aborts. Every 10 s it samples kawal's RSS, open
# fds and request counter (/metrics) into bench/results/soak-STAMP.csv, and
# at the end writes bench/results/soak-STAMP.md (figures, verdict) and
# soak-STAMP.svg (RSS and fds over time). Verdict:
#   - RSS growth over the second half < 5 % (of a least-squares line through its samples)
#   - open fds back to the baseline within 30 s of the end
#   - requests sent = answered + connection errors + client aborts (none lost)
#   - no panic in kawal's output
# Exit status 0 when all hold. Needs only the repository (cargo, python3, curl).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:?usage: bench/soak.sh DURATION (e.g. 60m)}
secs=$(python3 -c "
import re,sys
m=re.fullmatch(r'(\d+)(s|m|h)?','$DURATION') or sys.exit('bad DURATION: $DURATION')
print(int(m[1])*{'s':1,None:1,'m':60,'h':3600}[m[2]])")
PROFILE=${PROFILE:-release}; WORKERS=${WORKERS:-12}
APP_PORT=${APP_PORT:-19180}; IN_PORT=${IN_PORT:-19181}; OUT_PORT=${OUT_PORT:-19182}; ADMIN_PORT=${ADMIN_PORT:-19183}
target=${CARGO_TARGET_DIR:-target}
if [ "$PROFILE" = release ]; then
  cargo build --release -q --bin kawal --example soak; bin=$target/release
else
  cargo build -q --bin kawal --example soak; bin=$target/debug
fi
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
out=bench/results/soak-$stamp
tmp=$(mktemp -d /tmp/kawal-soak.XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

cat >"$tmp/kawal.toml" <<T
[service]
name = "soak"
worker_threads = 2
shutdown_grace = "5s"
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
[inbound]
listen = "127.0.0.1:$IN_PORT"
app = "127.0.0.1:$APP_PORT"
timeout = "5s"
[outbound]
listen = "127.0.0.1:$OUT_PORT"
[upstreams.app]
hosts = ["app"]
endpoints = ["127.0.0.1:$APP_PORT"]
timeout = "5s"
[upstreams.app.retry]
attempts = 2
[upstreams.app.breaker]
consecutive_failures = 50
open_for = "2s"
[limits]
request_head_timeout = "5s"
[log]
level = "info"
T
"$bin/examples/soak" upstream "127.0.0.1:$APP_PORT" 2>"$tmp/app.err" & pids+=($!)
"$bin/kawal" --config "$tmp/kawal.toml" >"$tmp/kawal.out" 2>"$tmp/kawal.err" & kpid=$!; pids+=($kpid)
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$ADMIN_PORT/live" >/dev/null && break; sleep 0.2; done

rss() { awk '/^VmRSS/ {print $2}' "/proc/$kpid/status"; }
fds() { ls "/proc/$kpid/fd" | wc -l; }
served() { curl -fs "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^kawal_requests_total/ {s+=$2} END {print s+0}'; }
sample() { echo "$1,$(rss),$(fds),$(served)" >>"$out.csv"; }
mkdir -p bench/results
echo "t_s,rss_kib,fds,kawal_requests" >"$out.csv"
base_fds=$(fds)
sample 0
echo "soak: $DURATION ($secs s), $WORKERS workers, kawal pid $kpid, baseline fds $base_fds" >&2
"$bin/examples/soak" load "127.0.0.1:$IN_PORT" "127.0.0.1:$OUT_PORT" "$secs" "$WORKERS" >"$tmp/load.json" 2>"$tmp/load.err" & lpid=$!; pids+=($lpid)
start=$(date +%s)
while kill -0 "$lpid" 2>/dev/null; do
  sleep 10
  kill -0 "$kpid" 2>/dev/null || { echo "kawal exited" >&2; break; }
  sample $(( $(date +%s) - start ))
done
wait "$lpid" || true
end_load=$(( $(date +%s) - start ))
[ "$end_load" -ge "$secs" ] || { echo "the load ended early, after $end_load s:" >&2; tail -20 "$tmp/load.err" >&2; }
# Idle connections close after request_head_timeout: wait for fds to settle.
end_fds=$(fds)
for _ in $(seq 30); do end_fds=$(fds); [ "$end_fds" -le "$base_fds" ] && break; sleep 1; done
sample $(( $(date +%s) - start ))

python3 - "$out" "$tmp" "$base_fds" "$end_fds" "$DURATION" "$end_load" <<'PY'
import csv, json, sys
out, tmp, base_fds, end_fds, duration, end_load = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
rows = [{k: int(v) for k, v in r.items()} for r in csv.DictReader(open(out + ".csv"))]
load = json.loads(open(tmp + "/load.json").read().strip().splitlines()[-1])
during = [r for r in rows if 0 < r["t_s"] <= end_load + 10] or rows
half = [r for r in during if r["t_s"] >= end_load / 2] or during[-1:]
mid, last = half[0]["rss_kib"], half[-1]["rss_kib"]
# Growth of a least-squares line over the second half: one sample at each
# end would make the verdict hang on allocator noise.
xs, ys = [r["t_s"] for r in half], [r["rss_kib"] for r in half]
mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
var = sum((x - mx) ** 2 for x in xs)
slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0
fit0, fit1 = my + slope * (xs[0] - mx), my + slope * (xs[-1] - mx)
growth = (fit1 - fit0) / fit0 * 100 if fit0 else 0.0
text = open(tmp + "/kawal.out", errors="replace").read() + open(tmp + "/kawal.err", errors="replace").read()
panics = text.count("panicked")
checks = [
    (f"RSS growth over the second half {growth:+.2f} % (< 5 %; fitted line {fit0:.0f} -> {fit1:.0f} KiB, samples {mid} -> {last} KiB)", growth < 5),
    (f"open fds at the end {end_fds}, baseline {base_fds}", end_fds <= base_fds),
    (f"sent {load['sent']} = answered {load['answered']} + connection errors {load['errors']} + client aborts {load['aborted']} (lost {load['lost']})", load["lost"] == 0),
    (f"panics in kawal's output: {panics}", panics == 0),
]
ok = all(c for _, c in checks)
served = rows[-1]["kawal_requests"]
lines = [f"# Soak {duration} ({out.split('/')[-1]})", "",
         f"Load: {load}.", "",
         f"kawal's own counter (kawal_requests_total, both listeners): {served}; the load saw {load['answered']} answers "
         "(a request the client abandons before its response head counts there as code 499, not in the load's answers).", "",
         "| check | holds |", "|---|---|"] + [f"| {t} | {'yes' if c else 'NO'} |" for t, c in checks] + [
         "", f"Verdict: {'PASS' if ok else 'FAIL'}", "", "| t (s) | RSS (KiB) | fds | kawal requests |", "|---|---|---|---|"] + [
         f"| {r['t_s']} | {r['rss_kib']} | {r['fds']} | {r['kawal_requests']} |" for r in rows]
# A small SVG: RSS (blue) and fds (red), each scaled to its own range.
W, H, P = 640, 240, 30
def poly(key, color):
    xs = [r["t_s"] for r in rows]; ys = [r[key] for r in rows]
    x0, x1 = min(xs), max(xs) or 1; y0, y1 = 0, max(ys) * 1.1 or 1
    pts = " ".join(f"{P + (x - x0) / ((x1 - x0) or 1) * (W - 2 * P):.1f},{H - P - (y - y0) / (y1 - y0) * (H - 2 * P):.1f}" for x, y in zip(xs, ys))
    return f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/><text x="{P}" y="{14 if color == "blue" else 28}" fill="{color}" font-size="12">{key}: max {max(ys)}</text>'
svg = f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}"><rect width="{W}" height="{H}" fill="white"/>{poly("rss_kib", "blue")}{poly("fds", "red")}<text x="{W - 150}" y="{H - 8}" font-size="12">time (s), 0..{rows[-1]["t_s"]}</text></svg>'
open(out + ".svg", "w").write(svg)
lines.insert(2, f"![RSS and fds over time]({out.split('/')[-1]}.svg)\n")
open(out + ".md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines[:14]))
sys.exit(0 if ok else 1)
PY
