#!/usr/bin/env bash
# nats-test.sh — throwaway nats-server (JetStream) instances on 127.0.0.1 for tests.
#
#   nats-test.sh [--cluster]        start a server (or a 3-node cluster) in a temp dir,
#                                   print its URL, keep running until interrupted; stop
#                                   the servers and delete the dir on exit
#   nats-test.sh run [--cluster] [--] CMD ARG…
#                                   the same around one command: TALLY_NATS_URL and
#                                   TALLY_NATS_DIR are exported to it; exits with its status
#   nats-test.sh start DIR [--cluster] [--owner PID]
#                                   create (first time) and start the server(s) in DIR,
#                                   wait until JetStream answers, print the URL; with
#                                   --owner, a watchdog stops them and deletes DIR once
#                                   process PID is gone (a crashed test leaves nothing)
#   nats-test.sh stop DIR           stop every node (SIGTERM, then SIGKILL)
#   nats-test.sh kill DIR NODE      kill -9 node NODE (1..3)
#   nats-test.sh restart DIR NODE   start node NODE again (same ports, same store)
#   nats-test.sh url DIR            print the URL again
#
# The URL is "nats://127.0.0.1:P" or, for a cluster, "nats://127.0.0.1:P1,127.0.0.1:P2,
# 127.0.0.1:P3" (the form tally's --stream takes). A cluster's nodes route to each other
# on loopback; JetStream keeps its files under DIR/nN/js. Ports are picked free at the
# first start and kept across restarts. Binary: $NATS_SERVER, else nats-server on PATH
# or /usr/sbin/nats-server (Debian's nats-server). Exit status 77 when it is missing, so
# that callers can report a skip.
set -euo pipefail

NATS_SERVER=${NATS_SERVER:-$(command -v nats-server 2>/dev/null || echo /usr/sbin/nats-server)}

die() {
	echo "nats-test: $*" >&2
	exit 1
}

port_busy() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Prints a port nobody listens on (and that this run did not hand out yet),
# below Linux's ephemeral range so that outgoing connections do not take it.
USED=" "
free_port() {
	local p
	while :; do
		p=$((10000 + RANDOM % 22000))
		case "$USED" in *" $p "*) continue ;; esac
		port_busy "$p" && continue
		USED="$USED$p "
		echo "$p"
		return
	done
}

nodes_of() {
	cat "$1/nodes"
}

url_of() {
	local dir=$1 n url="" sep="nats://"
	for n in $(seq 1 "$(nodes_of "$dir")"); do
		url="$url${sep}127.0.0.1:$(cat "$dir/n$n/client_port")"
		sep=","
	done
	echo "$url"
}

# Writes DIR/nN/server.conf for every node (first start only).
configure() {
	local dir=$1 nodes=$2 n
	echo "$nodes" >"$dir/nodes"
	for n in $(seq 1 "$nodes"); do
		mkdir -p "$dir/n$n/js"
		free_port >"$dir/n$n/client_port"
		free_port >"$dir/n$n/http_port"
		[ "$nodes" -gt 1 ] && free_port >"$dir/n$n/route_port"
	done
	for n in $(seq 1 "$nodes"); do
		{
			echo "server_name: n$n"
			echo "listen: 127.0.0.1:$(cat "$dir/n$n/client_port")"
			echo "http: 127.0.0.1:$(cat "$dir/n$n/http_port")"
			echo "jetstream { store_dir: \"$dir/n$n/js\" }"
			if [ "$nodes" -gt 1 ]; then
				echo "cluster {"
				echo "  name: tally-test"
				echo "  listen: 127.0.0.1:$(cat "$dir/n$n/route_port")"
				echo "  routes: ["
				local m
				for m in $(seq 1 "$nodes"); do
					[ "$m" -eq "$n" ] && continue
					echo "    nats-route://127.0.0.1:$(cat "$dir/n$m/route_port")"
				done
				echo "  ]"
				echo "}"
			fi
		} >"$dir/n$n/server.conf"
	done
}

node_pid() {
	local f="$1/n$2/pid"
	[ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && cat "$f"
}

start_node() {
	local dir=$1 n=$2
	node_pid "$dir" "$n" >/dev/null && return 0
	# Detached (own session, no inherited stdout): a kill of the caller's
	# process group does not take the server along, the watchdog does.
	setsid "$NATS_SERVER" -c "$dir/n$n/server.conf" </dev/null >>"$dir/n$n/server.log" 2>&1 &
	echo $! >"$dir/n$n/pid"
}

# Waits until node n answers /healthz (JetStream current) or the deadline;
# non-zero when the node exited or never became healthy.
wait_healthy() {
	local dir=$1 n=$2 deadline=$((SECONDS + 60))
	local url="http://127.0.0.1:$(cat "$dir/n$n/http_port")/healthz"
	while [ $SECONDS -lt $deadline ]; do
		node_pid "$dir" "$n" >/dev/null || return 1
		if curl -fsS -m 2 "$url" 2>/dev/null | grep -q '"ok"'; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

cmd_start() {
	local dir=$1 nodes=$2 owner=${3:-} n tries=0 ok
	[ -x "$NATS_SERVER" ] || {
		echo "nats-test: nats-server not found (apt-get install nats-server)" >&2
		exit 77
	}
	command -v curl >/dev/null || die "curl is needed to wait for the servers"
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	while :; do
		local fresh=0
		if [ ! -f "$dir/nodes" ]; then
			configure "$dir" "$nodes"
			fresh=1
		fi
		nodes=$(nodes_of "$dir")
		for n in $(seq 1 "$nodes"); do start_node "$dir" "$n"; done
		ok=1
		for n in $(seq 1 "$nodes"); do wait_healthy "$dir" "$n" || { ok=0; break; }; done
		[ $ok -eq 1 ] && break
		tries=$((tries + 1))
		# A port picked free was taken meanwhile: pick others (first start only).
		if [ $fresh -eq 1 ] && [ $tries -lt 5 ] && grep -q "address already in use" "$dir"/n*/server.log; then
			cmd_stop "$dir"
			rm -rf "$dir"/n* "$dir/nodes"
			continue
		fi
		tail -n 20 "$dir/n$n/server.log" >&2 || true
		cmd_stop "$dir"
		die "node $n did not start"
	done
	if [ -n "$owner" ]; then
		setsid bash "$0" _watch "$dir" "$owner" </dev/null >/dev/null 2>&1 &
	fi
	url_of "$dir"
}

stop_node() {
	local dir=$1 n=$2 pid i
	pid=$(node_pid "$dir" "$n") || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
}

cmd_stop() {
	local dir=$1 n
	[ -f "$dir/nodes" ] || return 0
	for n in $(seq 1 "$(nodes_of "$dir")"); do stop_node "$dir" "$n"; done
}

cmd_kill() {
	local dir=$1 n=$2 pid i
	pid=$(node_pid "$dir" "$n") || die "node $n is not running"
	kill -KILL "$pid"
	for i in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.05
	done
	die "node $n survived SIGKILL"
}

cmd_restart() {
	local dir=$1 n=$2
	start_node "$dir" "$n"
	wait_healthy "$dir" "$n" || {
		tail -n 20 "$dir/n$n/server.log" >&2 || true
		die "node $n did not restart"
	}
}

case "${1:-}" in
start)
	[ $# -ge 2 ] || die "usage: nats-test.sh start DIR [--cluster] [--owner PID]"
	dir=$2
	shift 2
	nodes=1 owner=""
	while [ $# -gt 0 ]; do
		case "$1" in
		--cluster) nodes=3 ;;
		--owner)
			owner=${2:?--owner needs a pid}
			shift
			;;
		*) die "unknown option $1" ;;
		esac
		shift
	done
	cmd_start "$dir" "$nodes" "$owner"
	;;
stop)
	cmd_stop "${2:?DIR}"
	;;
kill)
	cmd_kill "${2:?DIR}" "${3:?NODE}"
	;;
restart)
	cmd_restart "${2:?DIR}" "${3:?NODE}"
	;;
url)
	url_of "${2:?DIR}"
	;;
_watch)
	# Internal: waits for the owner to exit, then stops the servers and removes DIR.
	dir=$2 owner=$3
	while kill -0 "$owner" 2>/dev/null; do sleep 1; done
	cmd_stop "$dir"
	rm -rf "$dir"
	;;
run | "" | --cluster)
	mode=wait
	if [ "${1:-}" = run ]; then
		mode=run
		shift
	fi
	nodes=1
	if [ "${1:-}" = --cluster ]; then
		nodes=3
		shift
	fi
	[ "${1:-}" = "--" ] && shift
	[ "$mode" = run ] && [ $# -eq 0 ] && die "usage: nats-test.sh run [--cluster] [--] CMD ARG…"
	dir=$(mktemp -d "${TMPDIR:-/tmp}/tally-nats.XXXXXX")
	trap 'cmd_stop "$dir"; rm -rf "$dir"' EXIT
	trap 'exit 130' INT TERM
	url=$(cmd_start "$dir" "$nodes")
	if [ "$mode" = run ]; then
		TALLY_NATS_URL=$url TALLY_NATS_DIR=$dir "$@"
	else
		echo "$url"
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
