#!/usr/bin/env bash
# pg-test.sh — a throwaway PostgreSQL 15 cluster on 127.0.0.1 for tests.
#
#   pg-test.sh                      start a cluster in a temp dir, print its URI, keep
#                                   running until interrupted; stop and delete it on exit
#   pg-test.sh run [--] CMD ARG…    the same around one command: TALLY_PG_URI and
#                                   TALLY_PG_DIR are exported to it; exits with its status
#   pg-test.sh start DIR [--owner PID]
#                                   create (first time) and start a cluster in DIR, print
#                                   its URI; with --owner, a watchdog stops the cluster and
#                                   deletes DIR once process PID is gone (a crashed test
#                                   leaves no server behind)
#   pg-test.sh stop DIR | restart DIR | uri DIR
#
# The URI names the database "tally" (created empty). Authentication is
# `trust` and the server listens on 127.0.0.1 only, on a free port picked at
# the first start and kept across restarts. As root the server runs as the
# `postgres` OS user (initdb refuses root). Binaries: $PG_BIN, else
# /usr/lib/postgresql/15/bin (Debian's postgresql-15). Exit status 77 when
# they are missing, so that callers can report a skip.
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
DB=tally

die() {
	echo "pg-test: $*" >&2
	exit 1
}

have_bins() {
	[ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] && [ -x "$PG_BIN/postgres" ]
}

# Runs a command as the server's OS user.
as_pg() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u "${PG_USER:-postgres}" -- "$@"
	else
		"$@"
	fi
}

uri_of() {
	echo "postgres://postgres@127.0.0.1:$(cat "$1/port")/$DB"
}

port_busy() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

cmd_start() {
	local dir=$1 owner=${2:-}
	have_bins || {
		echo "pg-test: PostgreSQL binaries not found in $PG_BIN (apt-get install postgresql-15)" >&2
		exit 77
	}
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	if [ "$(id -u)" -eq 0 ]; then
		chown "${PG_USER:-postgres}" "$dir"
		chmod 0700 "$dir"
	fi
	if [ ! -f "$dir/data/PG_VERSION" ]; then
		as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync \
			>"$dir/initdb.log" 2>&1 || {
			cat "$dir/initdb.log" >&2
			die "initdb failed"
		}
	fi
	local tries=0 port
	while :; do
		if [ -f "$dir/port" ]; then
			port=$(cat "$dir/port")
		else
			port=$((20000 + RANDOM % 40000))
			if port_busy "$port"; then
				continue
			fi
		fi
		# Settings on the command line, so that a restart keeps them.
		if as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
			-o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='$dir'" \
			start >/dev/null 2>&1; then
			echo "$port" >"$dir/port"
			break
		fi
		tries=$((tries + 1))
		if [ -f "$dir/port" ] || [ $tries -ge 10 ] || ! grep -q "could not bind\|in use" "$dir/server.log"; then
			tail -n 20 "$dir/server.log" >&2 || true
			die "server did not start"
		fi
	done
	if ! as_pg "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atqc \
		"SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1; then
		as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres "$DB"
	fi
	if [ -n "$owner" ]; then
		# Detached: no inherited stdout, its own session (survives a kill of the caller's group).
		setsid bash "$0" _watch "$dir" "$owner" </dev/null >/dev/null 2>&1 &
	fi
	uri_of "$dir"
}

cmd_stop() {
	local dir=$1
	[ -f "$dir/data/postmaster.pid" ] || return 0
	as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
}

cmd_restart() {
	local dir=$1
	as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -m fast -w -t 60 restart >/dev/null 2>&1 ||
		die "restart failed"
}

case "${1:-}" in
start)
	[ $# -ge 2 ] || die "usage: pg-test.sh start DIR [--owner PID]"
	owner=""
	[ "${3:-}" = "--owner" ] && owner=${4:?--owner needs a pid}
	cmd_start "$2" "$owner"
	;;
stop)
	cmd_stop "${2:?DIR}"
	;;
restart)
	cmd_restart "${2:?DIR}"
	;;
uri)
	uri_of "${2:?DIR}"
	;;
_watch)
	# Internal: waits for the owner to exit, then stops the cluster and removes DIR.
	dir=$2 owner=$3
	while kill -0 "$owner" 2>/dev/null; do sleep 1; done
	cmd_stop "$dir"
	rm -rf "$dir"
	;;
run | "")
	mode=${1:-wait}
	[ $# -gt 0 ] && shift
	[ "${1:-}" = "--" ] && shift
	[ "$mode" = run ] && [ $# -eq 0 ] && die "usage: pg-test.sh run [--] CMD ARG…"
	dir=$(mktemp -d "${TMPDIR:-/tmp}/tally-pg.XXXXXX")
	trap 'cmd_stop "$dir"; rm -rf "$dir"' EXIT
	trap 'exit 130' INT TERM
	uri=$(cmd_start "$dir")
	if [ "$mode" = run ]; then
		TALLY_PG_URI=$uri TALLY_PG_DIR=$dir "$@"
	else
		echo "$uri"
		while :; do
			sleep 3600 &
			wait $!
		done
	fi
	;;
*)
	die "unknown command '$1' (see the header of $0)"
	;;
esac
