#!/usr/bin/env bash
# A profile-guided release build of kawal: target/pgo/release/kawal.
#
#   bench/pgo.sh            # ~10 min on the 2-core VM
#
# 1. an instrumented release build (-Cprofile-generate), 2. training load:
# the s3 sidecar path (bench/s3-ab.sh, the instrumented binary as A and B, one
# round of TRAIN_DUR seconds), 3. llvm-profdata merge, 4. the release build
# with -Cprofile-use. The instrumented and the final builds have target dirs of
# their own, so target/release stays the plain build.
#
# Needs wrk, the upstream of bench/peers, and llvm-profdata of rustc's own
# LLVM major version (installed with apt-get as llvm-N if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
llvm=$(rustc -vV | awk '/^LLVM version/ {split($3, v, "."); print v[1]}')
profdata=llvm-profdata-$llvm
# apt-get update first: a fresh machine may have no package lists yet.
command -v "$profdata" >/dev/null ||
  { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "llvm-$llvm" >/dev/null; }
raw=$PWD/target/pgo-raw
rm -rf "$raw" && mkdir -p "$raw"

RUSTFLAGS="-Cprofile-generate=$raw" cargo build --release --locked -q --target-dir target/pgo-gen
# Build scripts are instrumented too and have written profiles of their own.
rm -f "$raw"/*
gen=$PWD/target/pgo-gen/release/kawal
DUR=${TRAIN_DUR:-10} ROUNDS=1 bench/s3-ab.sh "$gen" "$gen"
# The profile is written when a process exits (SIGTERM: a graceful shutdown).
for _ in $(seq 100); do pgrep -f "$gen --config" >/dev/null || break; sleep 0.1; done

"$profdata" merge -o target/pgo.profdata "$raw"
RUSTFLAGS="-Cprofile-use=$PWD/target/pgo.profdata" cargo build --release --locked -q --target-dir target/pgo
echo "built target/pgo/release/kawal"
