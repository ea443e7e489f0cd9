# shellcheck shell=bash
# bench/lib.sh — shared helpers of the benchmark scripts (e2e.sh, lag.sh,
# api.sh). Source it:   . "$(dirname "$0")/lib.sh"
#
# Starts tally on ports it picks itself (port 0, read back from the
# "listening <role> <addr>:<port>" log lines), waits by polling with a
# deadline, stops everything it started on exit and keeps every figure as
# JSON in $OUT (a fresh directory unless OUT is set). Builds nothing: run
# `make build` first (or BIN=…).
#
# Needs: bash, curl, jq.

set -euo pipefail

bench_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bench_root=$(cd "$bench_here/.." && pwd)
BIN=${BIN:-$bench_root/build/tally}
[[ -x $BIN ]] || { echo "${0##*/}: $BIN not built (make build, or BIN=…)" >&2; exit 2; }
for tool in curl jq; do
	command -v "$tool" >/dev/null || { echo "${0##*/}: $tool not found" >&2; exit 2; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tally-bench.XXXXXX")
OUT=${OUT:-$WORK/out}
mkdir -p "$OUT"
BENCH_PIDS=()

bench_log() { printf '%s %s: %s\n' "$(date +%H:%M:%S)" "${0##*/}" "$*" >&2; }

bench_fail() {
	bench_log "FAIL: $*"
	local f
	for f in "$WORK"/*.log; do
		[[ -s $f ]] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }
	done
	exit 1
}

bench_cleanup() {
	local rc=$? p
	trap - EXIT
	for p in "${BENCH_PIDS[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in "${BENCH_PIDS[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	if [[ ${KEEP:-0} == 1 || $rc != 0 ]]; then
		bench_log "work directory kept: $WORK"
	else
		# the figures stay when OUT is elsewhere
		[[ $OUT == "$WORK"/* ]] && bench_log "figures: $OUT (deleted; set OUT=DIR to keep them)"
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# The conditions of the run, for the record: the figures on a shared 2-core
# machine depend on what else runs (load average).
bench_context() {
	printf 'machine: %s cores, %s, load average %s; tally %s\n' "$(nproc)" \
		"$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)" \
		"$(cut -d' ' -f1-3 /proc/loadavg)" \
		"$(git -C "$bench_root" rev-parse --short HEAD 2>/dev/null || echo '?')"
}

# bench_listen LOG ROLE PID: prints ADDR:PORT once PID logs "listening ROLE …" (10 s).
bench_listen() {
	local log=$1 role=$2 pid=$3 addr="" _
	for _ in $(seq 1 200); do
		addr=$(sed -n "s/.*listening $role \([0-9.:]*\).*/\1/p" "$log" 2>/dev/null | head -n1)
		[[ -n $addr ]] && { echo "$addr"; return 0; }
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	bench_fail "tally did not start its $role (see $log)"
}

# bench_tenant DATA NAME: adds a tenant, prints its API key.
bench_tenant() {
	local out
	out=$("$BIN" tenant add "$2" --data "$1" 2>>"$WORK/tenant.log") || bench_fail "tenant add $2 failed"
	jq -r .api_key <<<"$out"
}

# bench_serve NAME DATA [FLAGS…]: starts `tally serve` with its log in
# $WORK/NAME.log; sets SERVE_PID, COLLECTOR and API (http://ADDR:PORT).
bench_serve() {
	local name=$1 data=$2
	shift 2
	"$BIN" serve --data "$data" --collector 127.0.0.1:0 --api 127.0.0.1:0 "$@" >"$WORK/$name.log" 2>&1 &
	SERVE_PID=$!
	BENCH_PIDS+=("$SERVE_PID")
	# shellcheck disable=SC2034 # COLLECTOR and API are for the scripts that source this file
	COLLECTOR=http://$(bench_listen "$WORK/$name.log" collector "$SERVE_PID")
	# shellcheck disable=SC2034
	API=http://$(bench_listen "$WORK/$name.log" api "$SERVE_PID")
}

# bench_stop PID: SIGTERM and wait (30 s, then SIGKILL).
bench_stop() {
	local pid=$1 _
	kill -TERM "$pid" 2>/dev/null || return 0
	for _ in $(seq 1 600); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# bench_threads PID: per-thread CPU seconds "tid comm seconds" (for the record).
bench_threads() {
	local t tck
	tck=$(getconf CLK_TCK)
	for t in /proc/"$1"/task/*; do
		awk -v tck="$tck" -v tid="${t##*/}" '{ sub(/.*\) /, ""); printf "%s %.2f\n", tid, ($12 + $13) / tck }' \
			"$t/stat" 2>/dev/null || true
	done
}
