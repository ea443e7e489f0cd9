#!/usr/bin/env bash
# bench/deployments.sh — the two deployments side by side in one run
# (DESIGN.md §2, issue 4): end-to-end events/s and event→queryable lag of
#
#   embedded   tally serve, topics in the file log, reporting DB in SQLite
#   scaleout   tally serve over NATS JetStream (one nats-server, replicas=1)
#              and PostgreSQL 15, both throwaway servers on loopback
#
# Each side is bench/lag.sh (the same script, the same `tally serve` with
# every role in one process, so the API's /metrics shows the aggregator),
# run on the same 2 cores, alternately, ROUNDS times; the scale-out side gets
# TALLY_STREAM / TALLY_DB pointing at throwaway servers on loopback (a fresh
# database and stream prefix each round), which run all along and share the
# cores with tally — as the file log and SQLite do, inside tally. lag.sh
# measures:
#
#  1. max: `tally bench load --rate max`: events/s answered 202 (accepted)
#     and folded into the reporting DB (processed: the end-to-end figure);
#  2. idle: `tally bench lag` probes with no other load;
#  3. half: `tally bench load` at half of min(accepted, processed) of step 1
#     while `tally bench lag` probes from outside (POST one marked event,
#     poll the API until it shows): the aggregator's tally_event_lag_ms
#     histogram (arrival at the collector → committed in the reporting DB)
#     and the external POST → visible times, p50/p99.
#
# The table at the end holds the medians over the rounds; every figure is
# kept as JSON in $OUT/<deployment>-<round>/. Figures from one run only
# compare with each other.
#
# Environment: BIN (default build/tally), OUT (keep the figures there),
# ROUNDS=1, ONLY=embedded|scaleout, and lag.sh's own (MAX_SECONDS=20,
# LOAD_SECONDS=45, PROBES=200, PROBES_IDLE=100, CONNS=32, BATCH=1000).
# The scaleout side needs nats-server and PostgreSQL 15 (scripts/deps.sh
# --test). Builds nothing: run `make build` first.
. "$(dirname "$0")/lib.sh"

ROUNDS=${ROUNDS:-1}
ONLY=${ONLY:-}
DEPLOYMENTS=(embedded scaleout)
case $ONLY in "") ;; embedded | scaleout) DEPLOYMENTS=("$ONLY") ;; *) bench_fail "ONLY must be embedded or scaleout" ;; esac

# ---- the scale-out servers (stopped before lib.sh removes $WORK) ----

PG_DIR="" NATS_DIR=""
deploy_cleanup() {
	local rc=$? p
	for p in "${BENCH_PIDS[@]}"; do
		bench_stop "$p"
	done
	set +e # (lib.sh's set -e would end this trap at the first failing command)
	[[ -n $NATS_DIR ]] && bash "$bench_root/scripts/nats-test.sh" stop "$NATS_DIR" >/dev/null 2>&1
	[[ -n $PG_DIR ]] && bash "$bench_root/scripts/pg-test.sh" stop "$PG_DIR" >/dev/null 2>&1
	(exit "$rc")
	bench_cleanup
}
trap deploy_cleanup EXIT

bench_context | tee "$OUT/deployments-context.txt"
if [[ " ${DEPLOYMENTS[*]} " == *" scaleout "* ]]; then
	chmod 0711 "$WORK" # PostgreSQL runs as its own OS user when this runs as root
	PG_DIR=$WORK/pg
	NATS_DIR=$WORK/nats
	# --owner: a watchdog stops them should this script die without its traps
	PG_URI=$(bash "$bench_root/scripts/pg-test.sh" start "$PG_DIR" --owner $$) || bench_fail "PostgreSQL did not start"
	NATS_URL=$(bash "$bench_root/scripts/nats-test.sh" start "$NATS_DIR" --owner $$) || bench_fail "nats-server did not start"
	PG_PORT=$(cat "$PG_DIR/port")
	nats_bin=${NATS_SERVER:-$(command -v nats-server 2>/dev/null || echo /usr/sbin/nats-server)}
	bench_log "scaleout: $NATS_URL ($("$nats_bin" --version 2>/dev/null), JetStream, 1 node), $PG_URI"
fi

# ---- one round of one deployment: bench/lag.sh ----

run_round() { # DEPLOYMENT ROUND
	local d=$1 r=$2 out=$OUT/$1-$2 env=()
	if [[ $d == scaleout ]]; then
		PGCONNECT_TIMEOUT=10 "${PG_BIN:-/usr/lib/postgresql/15/bin}/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres \
			-d postgres -Atqc "CREATE DATABASE bench_$r" >/dev/null || bench_fail "CREATE DATABASE bench_$r failed"
		# tally tenant add and tally serve take them from the environment
		env=(TALLY_STREAM="$NATS_URL?prefix=bench$r" TALLY_DB="postgres://postgres@127.0.0.1:$PG_PORT/bench_$r")
	fi
	mkdir -p "$out"
	bench_log "$d, round $r: bench/lag.sh ${env[*]:-(file log + SQLite)} > $out/lag.txt"
	# once more if it fails: on a shared machine a probe's connection is now
	# and then refused, and bench lag stops at the first failed probe
	local try
	for try in 1 2; do
		env -u TALLY_STREAM -u TALLY_DB "${env[@]}" OUT="$out" BIN="$BIN" bash "$bench_here/lag.sh" >"$out/lag.txt" 2>&1 &&
			break
		[[ $try == 1 ]] || bench_fail "lag.sh on $d failed twice: $(grep FAIL "$out/lag.txt")"
		bench_log "lag.sh on $d failed ($(grep FAIL "$out/lag.txt")); once more"
		cp "$out/lag.txt" "$out/lag-failed.txt"
	done
	grep '^RESULT' "$out/lag.txt" | sed "s/^RESULT lag:/  $d:/" >&2
}

for r in $(seq 1 "$ROUNDS"); do
	for d in "${DEPLOYMENTS[@]}"; do
		run_round "$d" "$r"
	done
done

# ---- the table: medians over the rounds ----

# med DEPLOYMENT FILE JQ_EXPR: median of the expression over the rounds.
med() {
	local f=()
	for r in $(seq 1 "$ROUNDS"); do f+=("$OUT/$1-$r/$2.json"); done
	jq -s "map($3) | sort | .[length / 2 | floor]" "${f[@]}"
}

{
	printf '\n%-10s  %11s  %12s  %9s  %16s  %16s  %14s\n' deployment "accepted/s" "end-to-end/s" \
		"half rate" "lag@half p50/p99" "probe p50/p99" "probe idle p50"
	for d in "${DEPLOYMENTS[@]}"; do
		printf '%-10s  %11.0f  %12.0f  %9.0f  %7.0f/%-8.0f  %7.1f/%-8.1f  %14.1f\n' "$d" \
			"$(med "$d" lag-max .accepted_per_s)" "$(med "$d" lag-max .processed_per_s)" \
			"$(med "$d" lag-half .accepted_per_s)" "$(med "$d" lag-half .lag_ms.p50)" "$(med "$d" lag-half .lag_ms.p99)" \
			"$(med "$d" lag-probe-load .visible_p50_ms)" "$(med "$d" lag-probe-load .visible_p99_ms)" \
			"$(med "$d" lag-probe-idle .visible_p50_ms)"
	done
	echo "events/s at --rate max: accepted (answered 202) and end to end (folded into the reporting DB);"
	echo "at half of that rate, lag in ms: the aggregator's histogram (arrival at the collector -> committed,"
	echo "interpolated within its buckets) and the external probe (POST -> visible through the API)"
} | tee "$OUT/deployments.txt"

line="RESULT deployments:"
for d in "${DEPLOYMENTS[@]}"; do
	line="$line $d $(printf '%.0f' "$(med "$d" lag-max .processed_per_s)") ev/s end to end, lag at half load p50 $(printf '%.0f' "$(med "$d" lag-half .lag_ms.p50)") p99 $(printf '%.0f' "$(med "$d" lag-half .lag_ms.p99)") ms (probe p99 $(printf '%.0f' "$(med "$d" lag-probe-load .visible_p99_ms)") ms);"
done
echo "${line%;}"
