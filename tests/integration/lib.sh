# lib.sh — shared helpers for the integration tests. Source it from a test:
#
#   . "$(dirname "$0")/lib.sh"
#
# It makes a temporary directory ($TL_TMP), starts tally processes on ports
# they pick themselves (port 0, read back from the "listening <role>
# <addr>:<port>" log lines), waits for conditions with deadlines (never a bare
# sleep), and on exit stops every process it started (SIGTERM, then SIGKILL
# after a deadline) and removes the temporary directory (kept when
# TALLY_KEEP_TMP=1, or printed when the test failed).
#
# Needs: bash, curl, jq. TALLY_BIN points to the tally binary.

set -euo pipefail

: "${TALLY_BIN:?TALLY_BIN must point to the tally binary}"
[ -x "$TALLY_BIN" ] || { echo "TALLY_BIN=$TALLY_BIN is not executable" >&2; exit 1; }
command -v jq >/dev/null || { echo "jq is required (scripts/deps.sh --test)" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is required" >&2; exit 1; }

TL_TMP=$(mktemp -d "${TMPDIR:-/tmp}/tally-it.XXXXXX")
TL_PIDS=()	     # every background process started through tl_spawn
TL_FAILED=0

# tl_log MESSAGE…: a timestamped line on stderr.
tl_log() { printf '%s [%s] %s\n' "$(date +%H:%M:%S.%3N)" "${TL_TEST_NAME:-it}" "$*" >&2; }

# tl_fail MESSAGE…: logs and exits non-zero (the EXIT trap cleans up).
tl_fail() {
	TL_FAILED=1
	tl_log "FAIL: $*"
	exit 1
}

# tl_now_ms: monotonic-enough wall clock in milliseconds (for reporting only).
tl_now_ms() { date +%s%3N; }

# tl_alive PID: true while the process runs.
tl_alive() { kill -0 "$1" 2>/dev/null; }

# tl_wait_exit PID TIMEOUT_S: waits for PID (a child of this shell) to exit
# and sets TL_EXIT_STATUS to its exit status. Returns 1 on timeout. (Not in a
# $(…) subshell: only this shell can reap its children.)
tl_wait_exit() {
	local pid=$1 deadline=$(($(date +%s) + $2))
	while tl_alive "$pid"; do
		[ "$(date +%s)" -lt "$deadline" ] || return 1
		sleep 0.05
	done
	TL_EXIT_STATUS=0
	wait "$pid" 2>/dev/null || TL_EXIT_STATUS=$?
}

# tl_kill PID [TIMEOUT_S]: SIGTERM, then SIGKILL if it outlives the timeout.
tl_kill() {
	local pid=$1 t=${2:-10}
	tl_alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
	kill -TERM "$pid" 2>/dev/null || true
	if ! tl_wait_exit "$pid" "$t"; then
		tl_log "pid $pid ignored SIGTERM for ${t}s: SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
}

tl_cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	local pid
	for pid in "${TL_PIDS[@]}"; do
		tl_kill "$pid" 10
	done
	if [ "$rc" -ne 0 ] || [ "$TL_FAILED" -ne 0 ]; then
		local f
		for f in "$TL_TMP"/*.log; do
			[ -f "$f" ] || continue
			echo "---- last lines of $f ----" >&2
			tail -n 30 "$f" >&2
		done
	fi
	if [ "${TALLY_KEEP_TMP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
		tl_log "kept $TL_TMP"
	else
		rm -rf "$TL_TMP"
	fi
	exit "$rc"
}
trap tl_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# tl_wait_for TIMEOUT_S DESCRIPTION COMMAND…: runs COMMAND every 100 ms until
# it succeeds; fails the test when the deadline passes.
tl_wait_for() {
	local t=$1 what=$2
	shift 2
	local deadline=$(($(date +%s) + t))
	until "$@"; do
		[ "$(date +%s)" -lt "$deadline" ] || tl_fail "timed out after ${t}s waiting for $what"
		sleep 0.1
	done
}

# tl_spawn LOG COMMAND…: starts COMMAND in the background with stdout and
# stderr to LOG; sets TL_LAST_PID and registers it for cleanup.
tl_spawn() {
	local log=$1
	shift
	"$@" >"$log" 2>&1 &
	TL_LAST_PID=$!
	TL_PIDS+=("$TL_LAST_PID")
}

# tl_listen_addr LOG ROLE: prints ADDR:PORT of the last "listening ROLE" line.
tl_listen_addr() {
	[ -f "$1" ] || return 0
	sed -n "s/.*listening $2 \([^ ]*\).*/\1/p" "$1" | tail -n 1
}

_tl_listening() { # LOG PID ROLE…
	local log=$1 pid=$2
	shift 2
	tl_alive "$pid" || tl_fail "process $pid exited early (see $log): $(tail -n 5 "$log")"
	local r
	for r in "$@"; do
		[ -n "$(tl_listen_addr "$log" "$r")" ] || return 1
	done
}

# tl_start_serve NAME DATA_DIR [EXTRA FLAGS…]: starts `tally serve` on free
# ports and waits (up to 30 s) until both listeners accept. Sets
# TL_SERVE_PID, TL_COLLECTOR (http://addr:port), TL_API (http://addr:port)
# and TL_SERVE_LOG ($TL_TMP/NAME.log).
tl_start_serve() {
	local name=$1 data=$2
	shift 2
	TL_SERVE_LOG="$TL_TMP/$name.log"
	tl_spawn "$TL_SERVE_LOG" "$TALLY_BIN" serve --data "$data" --collector 127.0.0.1:0 --api 127.0.0.1:0 "$@"
	TL_SERVE_PID=$TL_LAST_PID
	tl_wait_for 30 "$name to listen" _tl_listening "$TL_SERVE_LOG" "$TL_SERVE_PID" collector api
	TL_COLLECTOR="http://$(tl_listen_addr "$TL_SERVE_LOG" collector)"
	TL_API="http://$(tl_listen_addr "$TL_SERVE_LOG" api)"
	tl_log "$name: pid $TL_SERVE_PID, collector $TL_COLLECTOR, api $TL_API"
}

# tl_stop_serve [TIMEOUT_S]: SIGTERM to the serve process; fails the test if
# it does not exit in time (default 30 s) or exits non-zero.
tl_stop_serve() {
	local t=${1:-30}
	kill -TERM "$TL_SERVE_PID" 2>/dev/null || tl_fail "serve (pid $TL_SERVE_PID) is not running"
	tl_wait_exit "$TL_SERVE_PID" "$t" || tl_fail "serve did not exit within ${t}s of SIGTERM"
	[ "$TL_EXIT_STATUS" = 0 ] || tl_fail "serve exited with status $TL_EXIT_STATUS after SIGTERM"
	tl_log "serve (pid $TL_SERVE_PID) stopped cleanly"
}

# tl_api_get PATH API_KEY: GET $TL_API$PATH with the tenant's key; prints the
# body; returns non-zero on a transport error or a non-2xx status.
tl_api_get() {
	curl -sS -f --max-time 10 -H "Authorization: Bearer $2" "$TL_API$1"
}

# tl_http_status URL [CURL ARGS…]: prints the HTTP status of a request.
tl_http_status() {
	local url=$1
	shift
	curl -sS -o /dev/null -w '%{http_code}' --max-time 10 "$@" "$url" || true
}

# tl_json_diff A B: prints a unified diff of two JSON documents (sorted keys).
tl_json_diff() {
	diff -u <(jq -S . <<<"$1") <(jq -S . <<<"$2") || true
}
