#!/usr/bin/env bash
# A profile-guided release build of kawal: target/pgo/release/kawal, built by
# docker/pgo-build.sh, the script the Dockerfile runs (its header says how it
# trains). The instrumented and the final builds have target dirs of their
# own, so target/release stays the plain build.
#
#   bench/pgo.sh          # 15-20 min on 2 cores; TRAIN_SECS=15, PGO_PORT=17480
set -euo pipefail
exec "$(dirname "$0")/../docker/pgo-build.sh" "$@"
