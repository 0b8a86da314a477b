#!/usr/bin/env bash
# Stands in for kawal in bench/peers/together.sh (s1 only), so the floor is loaded beside
# nginx and HAProxy: KAWAL_BIN=$PWD/bench/floor/as-kawal.sh bench/peers/together.sh
# Reads [inbound] listen and app from the config candidates/kawal.sh writes.
set -euo pipefail
[ "$1" = --version ] && { echo "floor (bench/floor, not kawal)"; exit 0; }
bin=$(cd "$(dirname "$0")" && pwd)/target/release/floor
[ -x "$bin" ] || (cd "$(dirname "$0")" && cargo build --release --locked -q)
listen=$(awk -F'"' '/^\[inbound\]/ {i = 1} i && /^listen/ {print $2; exit}' "$2")
app=$(awk -F'"' '/^app/ {print $2; exit}' "$2")
exec "$bin" "$listen" "$app"
