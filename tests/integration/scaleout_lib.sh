# scaleout_lib.sh — helpers for the scale-out tests (issue 4): throwaway
# PostgreSQL and nats-server (JetStream) on loopback under $TL_TMP, and
# several instances of one role, each with its own flags (two aggregators
# owning --partitions 0-3 and 4-7, two collectors, …). Source it INSTEAD of
# lib.sh:
#
#   . "$TALLY_SRC/tests/integration/scaleout_lib.sh"
#
# It first exits 77 with a message when nats-server or PostgreSQL is not
# installed (ctest reports the test as skipped), then sources lib.sh and
# tests/chaos/roles_lib.sh (the ground-truth helpers tl_tenant_add,
# tl_truth_totals, tl_truth_metrics, tl_wait_counts, tl_check_variants).
#
#   so_pg_start                   sets SO_PG_URI (database "tally")
#   so_pg_createdb NAME           prints the URI of a new empty database
#   so_pg_stop [immediate] / so_pg_start_again / so_pg_restart [immediate]
#   so_nats_start [--cluster]     sets SO_NATS_URL (nats://h:p[,h:p,h:p])
#   so_nats_kill9 N / so_nats_restart N    one node of the cluster
#   so_start NAME ROLE FLAG…      starts `tally ROLE FLAG…` as instance NAME
#   so_kill9 NAME / so_restart NAME / so_stop NAME T / so_wait_listening NAME
#   so_gen NAME URL TENANT_JSON FLAG… / so_gen_wait NAME T
#
# Instances are remembered by name: SO_PID[NAME], log $TL_TMP/NAME.<n>.log
# (n counts its starts). so_restart starts NAME again with the same flags; a
# collector or an API gets the port it had the first time, so clients keep
# their URL. On exit every tally process is stopped first, then the servers
# (so no role spends its shutdown retrying a vanished server), then lib.sh
# cleans up. The servers' scripts also get --owner $$: if this shell dies
# without running its traps, a watchdog stops them.

: "${TALLY_SRC:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
SO_PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
SO_NATS_SERVER=${NATS_SERVER:-$(command -v nats-server 2>/dev/null || echo /usr/sbin/nats-server)}

# exit 77 (skip) when a server binary is missing
_so_require_servers() {
	local missing=()
	[ -x "$SO_NATS_SERVER" ] || missing+=("nats-server (apt-get install nats-server)")
	[ -x "$SO_PG_BIN/initdb" ] && [ -x "$SO_PG_BIN/pg_ctl" ] && [ -x "$SO_PG_BIN/postgres" ] ||
		missing+=("PostgreSQL in $SO_PG_BIN (apt-get install postgresql)")
	if [ ${#missing[@]} -gt 0 ]; then
		echo "SKIP: not installed: ${missing[*]} — scripts/deps.sh --test installs them" >&2
		exit 77
	fi
}

_so_require_servers
. "$TALLY_SRC/tests/integration/lib.sh"
. "$TALLY_SRC/tests/chaos/roles_lib.sh"

declare -A SO_PID=()    # name -> pid of the running process
declare -A SO_ROLE=()   # name -> tally subcommand
declare -A SO_ARGS=()   # name -> its flags, one per line
declare -A SO_STARTS=() # name -> how many times it was started
declare -A SO_ADDR=()   # collect/api instance -> ADDR:PORT once known
SO_PG_DIR=""
SO_NATS_DIR=""

_so_cleanup() {
	local rc=$? name
	trap - EXIT
	for name in "${!SO_PID[@]}"; do
		tl_kill "${SO_PID[$name]}" 10
	done
	set +e # (lib.sh's set -e would end this trap at the first failing command)
	[ -n "$SO_NATS_DIR" ] && bash "$TALLY_SRC/scripts/nats-test.sh" stop "$SO_NATS_DIR" >/dev/null 2>&1
	[ -n "$SO_PG_DIR" ] && bash "$TALLY_SRC/scripts/pg-test.sh" stop "$SO_PG_DIR" >/dev/null 2>&1
	if [ "$rc" -ne 0 ]; then
		# the servers' watchdogs delete their directories: keep their logs
		local f
		for f in "$SO_PG_DIR"/server.log "$SO_NATS_DIR"/n*/server.log; do
			[ -f "$f" ] && cp "$f" "$TL_TMP/server-$(basename "$(dirname "$f")").log"
		done
	fi
	(exit "$rc")
	tl_cleanup
}
trap _so_cleanup EXIT
# the PostgreSQL server runs as another OS user when this runs as root: it
# must be able to reach its directory inside $TL_TMP (mktemp makes it 0700)
chmod 0711 "$TL_TMP"

# so_pg_start: a PostgreSQL 15 cluster in $TL_TMP/pg; sets SO_PG_URI.
so_pg_start() {
	SO_PG_DIR="$TL_TMP/pg"
	SO_PG_URI=$(bash "$TALLY_SRC/scripts/pg-test.sh" start "$SO_PG_DIR" --owner $$) ||
		tl_fail "PostgreSQL did not start (see $SO_PG_DIR/server.log)"
	tl_log "PostgreSQL: $SO_PG_URI"
}

# so_pg_stop [immediate]: stops the server (fast shutdown; "immediate": like
# a crash, no checkpoint, clients cut at once). so_pg_start_again: starts it
# again on the same port. so_pg_restart [immediate]: both.
so_pg_stop() {
	local as=()
	[ "$(id -u)" -eq 0 ] && as=(runuser -u "${PG_USER:-postgres}" --)
	"${as[@]}" "$SO_PG_BIN/pg_ctl" -D "$SO_PG_DIR/data" -m "${1:-fast}" -w -t 60 stop >/dev/null 2>&1 ||
		tl_fail "pg_ctl stop -m ${1:-fast} failed"
}
so_pg_start_again() {
	bash "$TALLY_SRC/scripts/pg-test.sh" start "$SO_PG_DIR" >/dev/null || tl_fail "PostgreSQL did not start again"
}
so_pg_restart() {
	so_pg_stop "${1:-fast}"
	so_pg_start_again
}

# so_pg_sql DATABASE SQL: runs SQL, prints the rows unaligned (| separated).
so_pg_sql() {
	local port
	port=$(cat "$SO_PG_DIR/port")
	PGCONNECT_TIMEOUT=10 "$SO_PG_BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d "$1" -Atq -v ON_ERROR_STOP=1 -c "$2"
}

# so_pg_createdb NAME: creates an empty database; prints its URI.
so_pg_createdb() {
	so_pg_sql postgres "CREATE DATABASE \"$1\"" >/dev/null || tl_fail "CREATE DATABASE $1 failed"
	echo "postgres://postgres@127.0.0.1:$(cat "$SO_PG_DIR/port")/$1"
}

# so_nats_start [--cluster]: one nats-server, or a 3-node cluster, in
# $TL_TMP/nats; sets SO_NATS_URL.
so_nats_start() {
	SO_NATS_DIR="$TL_TMP/nats"
	SO_NATS_URL=$(bash "$TALLY_SRC/scripts/nats-test.sh" start "$SO_NATS_DIR" "$@" --owner $$) ||
		tl_fail "nats-server did not start (see $SO_NATS_DIR/n*/server.log)"
	tl_log "nats: $SO_NATS_URL"
}

# so_nats_kill9 NODE / so_nats_restart NODE: SIGKILL a node of the cluster;
# start it again (same ports, same store) and wait until it is healthy.
so_nats_kill9() { bash "$TALLY_SRC/scripts/nats-test.sh" kill "$SO_NATS_DIR" "$1" || tl_fail "kill of nats node $1 failed"; }
so_nats_restart() { bash "$TALLY_SRC/scripts/nats-test.sh" restart "$SO_NATS_DIR" "$1" || tl_fail "nats node $1 did not restart"; }

# so_log NAME: the log of NAME's current process.
so_log() { echo "$TL_TMP/$1.${SO_STARTS[$1]:-0}.log"; }

_so_spawn() { # NAME: starts it with its remembered role and flags
	local name=$1 n=$((${SO_STARTS[$1]:-0} + 1)) args=()
	SO_STARTS[$name]=$n
	[ -n "${SO_ARGS[$name]}" ] && mapfile -t args <<<"${SO_ARGS[$name]}"
	case ${SO_ROLE[$name]} in
	collect) args+=(--collector "${SO_ADDR[$name]:-127.0.0.1:0}") ;;
	api) args+=(--api "${SO_ADDR[$name]:-127.0.0.1:0}") ;;
	esac
	tl_spawn "$TL_TMP/$name.$n.log" "$TALLY_BIN" "${SO_ROLE[$name]}" "${args[@]}"
	SO_PID[$name]=$TL_LAST_PID
}

# so_start NAME ROLE [FLAG…]: starts `tally ROLE FLAG…` in the background
# (collect and api on a free port); does not wait.
so_start() {
	local name=$1 role=$2
	shift 2
	SO_ROLE[$name]=$role
	SO_ARGS[$name]=$(printf '%s\n' "$@")
	_so_spawn "$name"
}

# so_restart NAME: starts NAME again (after so_kill9 or so_stop).
so_restart() { _so_spawn "$1"; }

# so_kill9 NAME: SIGKILL and reap.
so_kill9() {
	kill -KILL "${SO_PID[$1]}" 2>/dev/null || true
	wait "${SO_PID[$1]}" 2>/dev/null || true
}

# so_stop NAME TIMEOUT_S: SIGTERM; fails unless it exits 0 in time.
so_stop() {
	local name=$1 t=$2 pid=${SO_PID[$1]}
	kill -TERM "$pid" 2>/dev/null || tl_fail "$name (pid $pid) is not running"
	tl_wait_exit "$pid" "$t" || tl_fail "$name did not exit within ${t}s of SIGTERM"
	[ "$TL_EXIT_STATUS" = 0 ] || tl_fail "$name exited with status $TL_EXIT_STATUS after SIGTERM: $(tail -n 5 "$(so_log "$name")")"
	unset "SO_PID[$name]"
}

# so_stop_all TIMEOUT_S NAME…: so_stop each, in the given order.
so_stop_all() {
	local t=$1 name
	shift
	for name in "$@"; do
		so_stop "$name" "$t"
		tl_log "$name stopped cleanly on SIGTERM"
	done
}

_so_listening() { # NAME LISTENER
	local pid=${SO_PID[$1]} log
	log=$(so_log "$1")
	tl_alive "$pid" || tl_fail "$1 (pid $pid) exited early: $(tail -n 5 "$log")"
	[ -n "$(tl_listen_addr "$log" "$2")" ]
}

# so_wait_listening NAME: waits until a collect/api instance logs its
# listener; sets SO_URL[NAME] (http://addr:port) and remembers the address.
declare -A SO_URL=()
so_wait_listening() {
	local name=$1 l
	case ${SO_ROLE[$name]} in collect) l=collector ;; *) l=${SO_ROLE[$name]} ;; esac
	tl_wait_for 30 "$name to listen" _so_listening "$name" "$l"
	SO_ADDR[$name]=$(tl_listen_addr "$(so_log "$name")" "$l")
	SO_URL[$name]="http://${SO_ADDR[$name]}"
}

# so_check_alive NAME…: fails when one of them exited by itself.
so_check_alive() {
	local name st
	for name in "$@"; do
		tl_alive "${SO_PID[$name]}" && continue
		wait "${SO_PID[$name]}" 2>/dev/null && st=0 || st=$?
		tl_fail "$name (pid ${SO_PID[$name]}) exited by itself with status $st: $(tail -n 5 "$(so_log "$name")")"
	done
}

# so_gen NAME COLLECTOR_URL TENANT_JSON [GEN FLAG…]: runs `tally gen` in the
# background, truth to $TL_TMP/NAME.json; sets SO_GEN_PID[NAME].
declare -A SO_GEN_PID=()
so_gen() {
	local name=$1 url=$2 tenant=$3
	shift 3
	"$TALLY_BIN" gen --collector "$url" --out "$TL_TMP/$name.json" --quiet \
		--tenant "$(jq -r .tenant <<<"$tenant")" --api-key "$(jq -r .api_key <<<"$tenant")" \
		--link-key "$(jq -r .link_key <<<"$tenant")" "$@" >/dev/null 2>"$TL_TMP/$name.gen.log" &
	SO_GEN_PID[$name]=$!
	TL_PIDS+=("$!")
}

# so_gen_wait NAME TIMEOUT_S: waits for gen NAME; fails unless it exited 0
# with no errors in its truth.
so_gen_wait() {
	local name=$1 t=$2 pid=${SO_GEN_PID[$1]}
	tl_wait_exit "$pid" "$t" || tl_fail "gen $name still running after ${t}s"
	grep -E '^gen: done' "$TL_TMP/$name.gen.log" >&2 || true
	[ "$TL_EXIT_STATUS" = 0 ] || tl_fail "gen $name exited $TL_EXIT_STATUS: $(tail -n 5 "$TL_TMP/$name.gen.log")"
	[ "$(jq .errors "$TL_TMP/$name.json")" = 0 ] || tl_fail "gen $name reports errors"
}

# so_gen_running NAME…: true while one of these gens runs.
so_gen_running() {
	local name
	for name in "$@"; do
		tl_alive "${SO_GEN_PID[$name]}" && return 0
	done
	return 1
}
