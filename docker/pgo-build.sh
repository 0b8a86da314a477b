#!/usr/bin/env bash
# The profile-guided release build of kawal: the Dockerfile's build, and the
# one a human runs (bench/pgo.sh calls it), so what is measured is what ships.
#
#   docker/pgo-build.sh             # prints the binary's path: target/pgo/release/kawal
#   docker/pgo-build.sh --install   # only installs what it needs (apt-get, as root)
#
# 1. kawal instrumented (-Cprofile-generate, target/pgo-gen) and the load
#    generator examples/soak.rs plain (target/pgo-load: its own code stays
#    out of the profile);
# 2. training, TRAIN_SECS seconds: an app (soak upstream), sidecar A (plain
#    inbound to the app; outbound to B over mTLS) and sidecar B (mTLS inbound
#    to the app), access lines on as by default; `soak train` runs keep-alive
#    HTTP/1.1 GETs and POSTs and h2c to A's inbound and HTTP/1.1 through A's
#    outbound to B. It fails the build if any request failed or a kind of
#    request got no answer. SIGTERM then ends the sidecars gracefully, which
#    writes their profiles;
# 3. llvm-profdata (of rustc's own LLVM major) merges only the sidecars' profiles;
# 4. the release build with -Cprofile-use, in a target dir emptied first
#    (cargo does not rebuild dependencies when a profile's content changes).
#
# Needs cargo, openssl and llvm-profdata-N (installed with apt-get as llvm-N
# when missing). Loopback ports PGO_PORT..PGO_PORT+4 (default 17480).
set -euo pipefail
cd "$(dirname "$0")/.."
llvm=$(rustc -vV | awk '/^LLVM version/ {split($3, v, "."); print v[1]}')
profdata=llvm-profdata-$llvm
install() {
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "llvm-$llvm" openssl
}
[ "${1:-}" != --install ] || { install; exit 0; }
{ command -v "$profdata" && command -v openssl; } >/dev/null || install >&2
target=${CARGO_TARGET_DIR:-$PWD/target}
secs=${TRAIN_SECS:-15}
port=${PGO_PORT:-17480}
app=$port a_in=$((port + 1)) a_out=$((port + 2)) b_in=$((port + 3)) admin=$((port + 4))
log() { echo "pgo-build: $*" >&2; }

log "1/4 instrumented build, load generator"
# Build scripts and proc macros are instrumented too: their profiles go apart.
rm -rf "$target/pgo-gen/build-profraw"
RUSTFLAGS="-Cprofile-generate=$target/pgo-gen/build-profraw" \
  cargo build --release --locked --bin kawal --target-dir "$target/pgo-gen" >&2
CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_DEBUG=0 \
  cargo build --release --locked --example soak --target-dir "$target/pgo-load" >&2
gen=$target/pgo-gen/release/kawal
soak=$target/pgo-load/release/examples/soak

log "2/4 training, $secs s"
tmp=$(mktemp -d /tmp/kawal-pgo.XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
raw=$tmp/profraw
mkdir -p "$raw"
docker/certs.sh "$tmp/tls" a b >&2
cat >"$tmp/b.toml" <<T
[service]
name = "b"
drain_delay = "0s"
shutdown_grace = "5s"
[admin]
listen = "127.0.0.1:$((admin + 1))"
[inbound]
listen = "127.0.0.1:$b_in"
app = "127.0.0.1:$app"
[inbound.tls]
cert = "$tmp/tls/b.crt"
key = "$tmp/tls/b.key"
client_ca = "$tmp/tls/ca.pem"
T
cat >"$tmp/a.toml" <<T
[service]
name = "a"
drain_delay = "0s"
shutdown_grace = "5s"
[admin]
listen = "127.0.0.1:$admin"
[inbound]
listen = "127.0.0.1:$a_in"
app = "127.0.0.1:$app"
[outbound]
listen = "127.0.0.1:$a_out"
[upstreams.b]
hosts = ["b"]
endpoints = ["127.0.0.1:$b_in"]
[upstreams.b.tls]
ca = "$tmp/tls/ca.pem"
cert = "$tmp/tls/a.crt"
key = "$tmp/tls/a.key"
server_identity = "spiffe://${TRUST_DOMAIN:-shop.local}/ns/default/sa/b"
T
"$soak" upstream "127.0.0.1:$app" 2>"$tmp/app.err" & pids+=($!)
# Only the sidecars write where the merge looks (%p: one file per process).
LLVM_PROFILE_FILE="$raw/kawal-%p.profraw" "$gen" --config "$tmp/b.toml" >/dev/null 2>"$tmp/b.err" & b=$!; pids+=($b)
LLVM_PROFILE_FILE="$raw/kawal-%p.profraw" "$gen" --config "$tmp/a.toml" >/dev/null 2>"$tmp/a.err" & a=$!; pids+=($a)
probe() { LLVM_PROFILE_FILE="$tmp/probe.profraw" "$gen" probe "$1" >/dev/null 2>&1; }
for _ in $(seq 100); do
  probe "http://127.0.0.1:$admin/ready" && probe "http://127.0.0.1:$((admin + 1))/ready" &&
    probe "http://127.0.0.1:$app/small" && break
  sleep 0.1
done
if ! "$soak" train "127.0.0.1:$a_in" "127.0.0.1:$a_out" "$secs" 4 >"$tmp/train.json"; then
  log "training failed: $(cat "$tmp/train.json")"
  tail -n 20 "$tmp/a.err" "$tmp/b.err" "$tmp/app.err" >&2
  exit 1
fi
log "answers: $(cat "$tmp/train.json")"
kill -TERM "$a" "$b"
for p in "$a" "$b"; do
  wait "$p" || { log "sidecar $p exited with $? after SIGTERM"; tail -n 20 "$tmp/a.err" "$tmp/b.err" >&2; exit 1; }
done
n=$(find "$raw" -name 'kawal-*.profraw' -size +0 | wc -l)
[ "$n" = 2 ] || { log "expected 2 profiles from the sidecars, found $n"; exit 1; }

log "3/4 merge"
"$profdata" merge -o "$target/pgo.profdata" "$raw"/kawal-*.profraw

log "4/4 release build with the profile"
rm -rf "$target/pgo"
RUSTFLAGS="-Cprofile-use=$target/pgo.profdata" \
  cargo build --release --locked --bin kawal --target-dir "$target/pgo" >&2
echo "$target/pgo/release/kawal"
