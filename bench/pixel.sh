#!/usr/bin/env bash
# bench/pixel.sh — open-pixel throughput: tally's collector vs nginx serving
# the same 43-byte GIF from a file (DESIGN.md §7: target ratio >= 1.0).
#
# Both run on loopback at the same time and are measured alternately with
# the same wrk command (keep-alive, 1 thread, 64 connections), ROUNDS times;
# the medians are compared. nginx (one worker) records nothing; tally
# answers each hit only after its record is durable (fdatasync, group
# commit), and the script checks afterwards that every hit was recorded.
# Builds nothing: run `make build` first.
#
# Environment:
#   BIN=build/tally     the tally binary
#   ROLE=collect        `tally collect` (the collector alone) or `serve` (every
#                       role in one process: enricher and aggregator share the CPU)
#   DURATION=10s        wrk duration of one measurement
#   ROUNDS=5            alternated measurements per side (the machine is shared: medians)
#   CONNS=64 THREADS=1  wrk connections / threads
#   RECIPIENTS=64       distinct pixel tokens (recipients) wrk cycles through, as
#                       real traffic does; they spread over the topic's partitions,
#                       whose group commits run in parallel (1 = one partition)
#   ONLY=nginx|tally    measure one side only
# Prints one line per measurement, the medians and the ratio.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
BIN=${BIN:-$root/build/tally}
ROLE=${ROLE:-collect}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-5}
RECIPIENTS=${RECIPIENTS:-64}
CONNS=${CONNS:-64}
THREADS=${THREADS:-1}
ONLY=${ONLY:-}

case $ROLE in collect | serve) ;; *) echo "pixel.sh: ROLE must be collect or serve" >&2; exit 2 ;; esac
for tool in wrk curl; do
	command -v "$tool" >/dev/null || { echo "pixel.sh: $tool not found" >&2; exit 2; }
done
if [[ $ONLY != tally ]]; then
	command -v nginx >/dev/null || { echo "pixel.sh: nginx not found (apt-get install nginx-light)" >&2; exit 2; }
fi
if [[ $ONLY != nginx && ! -x $BIN ]]; then
	echo "pixel.sh: $BIN not built (make build, or BIN=…)" >&2
	exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/tally-pixel.XXXXXX")
chmod 755 "$work" # nginx workers may run as another user
pids=()
cleanup() {
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${pids[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
	echo "pixel.sh: $*" >&2
	for f in "$work/nginx/error.log" "$work/tally.log"; do
		[[ -s $f ]] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }
	done
	exit 1
}

# A free loopback port for nginx: bind port 0 and read back the kernel's choice.
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Polls url until it answers 200 (10 s).
wait_http() {
	for _ in $(seq 1 200); do
		if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
		sleep 0.05
	done
	fail "$1 did not come up"
}

# measure NAME URL [SCRIPT]: runs wrk once, prints req/s; the output is kept in wrk-NAME.txt.
measure() {
	local name=$1 url=$2 out
	if [[ -n ${3:-} ]]; then
		out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" -s "$3" "$url")
	else
		out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" "$url")
	fi
	echo "$out" >>"$work/wrk-$name.txt"
	if grep -q "Non-2xx or 3xx responses" <<<"$out"; then
		echo "$out" >&2
		fail "$name answered errors"
	fi
	awk '/^Requests\/sec:/ {print $2}' <<<"$out"
}

median() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# The 43-byte transparent GIF, byte for byte what the collector serves.
printf 'GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff\x21\xf9\x04\x01\x00\x00\x00\x00\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00\x3b' >"$work/pixel.gif"
[[ $(stat -c %s "$work/pixel.gif") == 43 ]] || fail "bad reference GIF"

nginx_url=""
tally_url=""

if [[ $ONLY != tally ]]; then
	nport=$(free_port)
	mkdir -p "$work/nginx/o" "$work/nginx/tmp"
	cp "$work/pixel.gif" "$work/nginx/o/pixel.gif"
	chmod -R a+rX "$work/nginx"
	sed -e "s#@ROOT@#$work/nginx#g" -e "s#@PORT@#$nport#g" "$here/nginx-pixel.conf" >"$work/nginx/nginx.conf"
	nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" -g 'daemon off;' &
	pids+=($!)
	nginx_url="http://127.0.0.1:$nport/o/pixel.gif"
	wait_http "$nginx_url"
fi

if [[ $ONLY != nginx ]]; then
	data="$work/data"
	mkdir -p "$data"
	"$BIN" tenant add bench --data "$data" >"$work/tenant.json" 2>"$work/tally.log" || fail "tenant add failed"
	# port 0: the collector picks a free port and logs it
	if [[ $ROLE == serve ]]; then
		"$BIN" serve --data "$data" --collector 127.0.0.1:0 --api 127.0.0.1:0 >>"$work/tally.log" 2>&1 &
	else
		"$BIN" collect --data "$data" --collector 127.0.0.1:0 >>"$work/tally.log" 2>&1 &
	fi
	pids+=($!)
	caddr=""
	for _ in $(seq 1 200); do
		caddr=$(sed -n 's/.*listening collector \([0-9.:]*\).*/\1/p' "$work/tally.log" | head -n1)
		[[ -n $caddr ]] && break
		kill -0 "${pids[-1]}" 2>/dev/null || break
		sleep 0.05
	done
	[[ -n $caddr ]] || fail "tally $ROLE did not start"
	wait_http "http://$caddr/healthz"
	# one token per recipient; wrk cycles through their paths
	{
		echo "paths = {"
		for i in $(seq 1 "$RECIPIENTS"); do
			u=$("$BIN" link open --data "$data" --tenant bench --campaign bench --recipient "r-$i" \
				--base-url "http://$caddr") || fail "link open failed"
			echo "  \"${u#http://$caddr}\","
		done
		echo "}"
		echo "n = 0"
		echo "request = function() n = n + 1; return wrk.format(\"GET\", paths[(n % #paths) + 1]) end"
	} >"$work/paths.lua"
	tally_url="http://$caddr"
	first=$(sed -n '2s/^  "\(.*\)",$/\1/p' "$work/paths.lua")
	curl -fsS -o "$work/check.gif" "$tally_url$first" || fail "$tally_url$first failed"
	cmp -s "$work/check.gif" "$work/pixel.gif" || fail "$tally_url$first did not answer the GIF"
fi

echo "wrk -t$THREADS -c$CONNS -d$DURATION, keep-alive, $ROUNDS alternated rounds; tally $ROLE, $RECIPIENTS recipients"
nginx_rps=()
tally_rps=()
for round in $(seq 1 "$ROUNDS"); do
	if [[ -n $nginx_url ]]; then
		nginx_rps+=("$(measure nginx "$nginx_url")")
		printf 'round %d  nginx %10.0f req/s\n' "$round" "${nginx_rps[-1]}"
	fi
	if [[ -n $tally_url ]]; then
		tally_rps+=("$(measure tally "$tally_url" "$work/paths.lua")")
		printf 'round %d  tally %10.0f req/s\n' "$round" "${tally_rps[-1]}"
	fi
done

if [[ -n $tally_url ]]; then
	# every answered hit must have been made durable before its answer
	metrics=$(curl -fsS "http://$caddr/metrics")
	written=$(awk '/^tally_events_accepted_total\{topic="events"\}/ {print $2}' <<<"$metrics")
	dropped=$(awk '/^tally_pixel_dropped_total/ {print $2}' <<<"$metrics")
	# answered = wrk's completed requests + the curl check (wrk may also have
	# left some in flight when it stopped: those are recorded, not counted)
	total_tally=$(awk '/requests in/ { n += $1 } END { print n + 1 }' "$work/wrk-tally.txt")
	echo "tally recorded $written hits durably for $total_tally answered ($dropped dropped)"
	[[ $dropped == 0 && $written -ge $total_tally ]] || fail "hits were answered without being recorded"
fi

nm=""
tm=""
[[ ${#nginx_rps[@]} -gt 0 ]] && nm=$(median "${nginx_rps[@]}") && printf 'median nginx %10.0f req/s  (43-byte GIF from a file, 1 worker)\n' "$nm"
[[ ${#tally_rps[@]} -gt 0 ]] && tm=$(median "${tally_rps[@]}") && printf 'median tally %10.0f req/s  (same GIF, each hit durable before the answer)\n' "$tm"
if [[ -n $nm && -n $tm ]]; then
	awk -v t="$tm" -v n="$nm" 'BEGIN { r = t / n; printf "ratio  %.2f  tally/nginx (target >= 1.00): %s\n", r, (r >= 1.0 ? "met" : "NOT met") }'
fi
