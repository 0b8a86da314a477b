#!/usr/bin/env python3
"""Median req/s per peer over many peer-bench runs, from the slots no steal hit.

On this project's VM, hypervisor steal of 5-40 % of a core lands in one peer's
slot or another in most runs, so one run rarely compares all peers fairly. This
takes every run directory given, keeps the slots of one scenario whose steal
(peer-bench's `steal` field, % of a core) stayed under a limit, and prints the
median, range and count per peer.

    bench/quiet-slots.py /tmp/peerbench/run-2026-12-01T1[67]*       # s3-mtls-c32, steal < 1 %
    SCENARIO=s1-c32-run1 MAX_STEAL=2 bench/quiet-slots.py /tmp/peerbench/run-*
"""
import json
import os
import statistics
import sys

scenario = os.environ.get("SCENARIO", "s3-mtls-c32")
max_steal = float(os.environ.get("MAX_STEAL", "1"))
slots, runs = {}, 0
for run in sys.argv[1:]:
    try:
        with open(os.path.join(run, "results.jsonl")) as f:
            rows = [json.loads(line) for line in f]
    except (OSError, ValueError):
        continue  # an interrupted run
    rows = [r for r in rows if r.get("scenario") == scenario and not r.get("failed")]
    runs += bool(rows)
    for r in rows:
        if (r.get("steal") or 0) < max_steal:
            slots.setdefault(r["peer"], []).append(r["rps"])
print(f"{scenario}: {runs} runs, slots with steal < {max_steal} % of a core")
for peer, rps in sorted(slots.items(), key=lambda kv: -statistics.median(kv[1])):
    print(f"  {peer:10} median {statistics.median(rps):8,.0f}  range {min(rps):,.0f}-{max(rps):,.0f}  ({len(rps)} slots)")
