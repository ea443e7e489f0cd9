#!/usr/bin/env bash
# chaos.sh — the chaos test against the optimised build (make chaos):
# every role as its own process, SIGKILL to a random one every 0.3–2 s while
# tally gen drives load, exact counts at the end (tests/chaos/chaos.sh).
#
#   make chaos                       ~2 min (the short mode make test runs)
#   make chaos ARGS="--minutes 30"   30 minutes of load under the kill loop
#
# Flags are passed on: --minutes M, --events N (per round), --concurrency C.
# Env: BUILD (default build), TALLY_BIN, TALLY_KEEP_TMP=1, CHAOS_SEED.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export TALLY_BIN=${TALLY_BIN:-$root/${BUILD:-build}/tally}
export TALLY_SRC=$root
exec bash "$root/tests/chaos/chaos.sh" "$@"
