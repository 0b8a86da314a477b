#!/usr/bin/env python3
"""Median req/s (or another field) per peer over many peer-bench runs, from the
slots no steal hit.

On this project's VM, hypervisor steal of 5-40 % of a core lands in one peer's
slot or another in most runs, so one run rarely compares all peers fairly. This
takes every run given (a run directory, or its results.jsonl), keeps the slots
of one scenario whose steal (peer-bench's `steal` field, % of a core) stayed
under a limit, and prints the median, range and count per peer of one field
(`FIELD`, default rps; p99_us for the open-loop rows).

    bench/quiet-slots.py bench/results/raw/*.jsonl     # s3-mtls-c32, steal < 1 %
    bench/quiet-slots.py /tmp/peerbench/run-*           # peer-bench's run directories
    SCENARIO=s1-c32-run1 MAX_STEAL=2 bench/quiet-slots.py /tmp/peerbench/run-*
    SCENARIO=s3-mtls-rate2000 FIELD=p99_us bench/quiet-slots.py /tmp/peerbench/run-*
"""
import json
import os
import statistics
import sys

scenario = os.environ.get("SCENARIO", "s3-mtls-c32")
max_steal = float(os.environ.get("MAX_STEAL", "1"))
field = os.environ.get("FIELD", "rps")
slots, runs = {}, 0
for run in sys.argv[1:]:
    try:
        path = os.path.join(run, "results.jsonl") if os.path.isdir(run) else run
        with open(path) as f:
            rows = [json.loads(line) for line in f]
    except (OSError, ValueError):
        continue  # an interrupted run
    rows = [r for r in rows if r.get("scenario") == scenario and not r.get("failed")]
    runs += bool(rows)
    for r in rows:
        if r.get("steal") is not None and r["steal"] < max_steal:  # unknown is not quiet
            slots.setdefault(r["peer"], []).append(float(r[field]))
print(f"{scenario} {field}: {runs} runs, slots with steal < {max_steal} % of a core")
# Best first: the highest req/s, the lowest latency.
for peer, v in sorted(slots.items(), key=lambda kv: statistics.median(kv[1]), reverse=field == "rps"):
    print(f"  {peer:10} median {statistics.median(v):8,.0f}  range {min(v):,.0f}-{max(v):,.0f}  ({len(v)} slots)")
