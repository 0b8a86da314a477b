#!/usr/bin/env bash
# Starts kawal as a peer-bench candidate, writing its config in ARCHITECTURE.md's "Config shape".
# Usage (from peer-bench, which exports the ports, UPSTREAM_ADDR and PB_* cert paths):
#   kawal.sh plain | mtls-a | mtls-b
# KAWAL_BIN: the binary (default: target/release/kawal of this repository).
set -euo pipefail
mode=$1
bin=${KAWAL_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)/target/release/kawal}
dir=$(mktemp -d /tmp/kawal-cand.XXXXXX)
# ACCESS_LOG=1: kawal's JSON access lines on (as by default); otherwise off, as for the peers.
level=warn; [ "${ACCESS_LOG:-0}" = 1 ] && level=info
adm() { echo "127.0.0.1:$(( $1 + 1000 ))"; }
case $mode in
plain) cat > "$dir/kawal.toml" <<T
[service]
name = "bench"
[admin]
listen = "$(adm "$CANDIDATE_PORT")"
[inbound]
listen = "127.0.0.1:$CANDIDATE_PORT"
app = "$UPSTREAM_ADDR"
[log]
level = "$level"
T
;;
mtls-a) cat > "$dir/kawal.toml" <<T
[service]
name = "a"
[admin]
listen = "$(adm "$CANDIDATE_MTLS_A_PORT")"
[outbound]
listen = "127.0.0.1:$CANDIDATE_MTLS_A_PORT"
[upstreams.b]
hosts = ["127.0.0.1", "127.0.0.1:$CANDIDATE_MTLS_A_PORT", "localhost", "b.test"]
endpoints = ["127.0.0.1:$CANDIDATE_MTLS_B_PORT"]
[upstreams.b.tls]
ca = "$PB_CA"
cert = "$PB_A_CRT"
key = "$PB_A_KEY"
server_identity = "spiffe://test/ns/default/sa/b"
[log]
level = "$level"
T
;;
mtls-b) cat > "$dir/kawal.toml" <<T
[service]
name = "b"
[admin]
listen = "$(adm "$CANDIDATE_MTLS_B_PORT")"
[inbound]
listen = "127.0.0.1:$CANDIDATE_MTLS_B_PORT"
app = "$UPSTREAM_ADDR"
[inbound.tls]
cert = "$PB_B_CRT"
key = "$PB_B_KEY"
client_ca = "$PB_CA"
[log]
level = "$level"
T
;;
*) echo "usage: $0 plain|mtls-a|mtls-b" >&2; exit 2;;
esac
exec "$bin" --config "$dir/kawal.toml"
