#!/usr/bin/env bash
# bench/lag.sh — event → queryable lag of the embedded pipeline at half of
# its maximum load (DESIGN.md §7: p99 ≤ 100 ms; the seed design's 200 ms
# aggregator poll was the floor to beat).
#
#  1. max: `tally bench load --rate max` for MAX_SECONDS → the processed
#     rate (skipped when MAX_RATE is given).
#  2. idle reference: `tally bench lag` with no other load (PROBES_IDLE
#     probes): what the pipeline's fixed path costs.
#  3. under load: `tally bench load` at half the max processed rate for
#     LOAD_SECONDS, and meanwhile `tally bench lag` (PROBES probes):
#     - internal: the aggregator's tally_event_lag_ms histogram (collector
#       arrival → committed in the reporting DB) over the load window,
#       every event; quantiles interpolated inside its buckets (…, 50, 100,
#       200, … ms), so they are estimates;
#     - external: a marker event posted to the collector, the API polled
#       until its campaign shows it: POST → visible, an upper bound that
#       includes the durable write and one API poll.
#
# Environment: BIN, OUT, CONNS=32, BATCH=1000, MAX_SECONDS=20, MAX_RATE,
# LOAD_SECONDS=45, PROBES=200, PROBES_IDLE=100, SERVE_FLAGS.
# Prints a RESULT line at the end.
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

CONNS=${CONNS:-32}
BATCH=${BATCH:-1000}
MAX_SECONDS=${MAX_SECONDS:-20}
LOAD_SECONDS=${LOAD_SECONDS:-45}
PROBES=${PROBES:-200}
PROBES_IDLE=${PROBES_IDLE:-100}
TARGET_P99=100

bench_context | tee "$OUT/lag-context.txt"
data="$WORK/data"
key=$(bench_tenant "$data" bench)
# shellcheck disable=SC2086
bench_serve serve "$data" ${SERVE_FLAGS:-}

load() { # NAME RATE SECONDS
	"$BIN" bench load --collector "$COLLECTOR" --api "$API" --api-key "$key" --rate "$2" --seconds "$3" \
		--warmup 5 --batch "$BATCH" --connections "$CONNS" --server-pid "$SERVE_PID" --drain-timeout 120 \
		>"$OUT/lag-$1.json" 2>"$WORK/load-$1.log" || bench_fail "bench load $1: $(tail -n 3 "$WORK/load-$1.log")"
	tail -n 1 "$WORK/load-$1.log" >&2
}

probe() { # NAME COUNT
	"$BIN" bench lag --collector "$COLLECTOR" --api "$API" --api-key "$key" --probes "$2" --interval 100 \
		>"$OUT/lag-probe-$1.json" 2>"$WORK/probe-$1.log" || bench_fail "bench lag $1: $(tail -n 3 "$WORK/probe-$1.log")"
}

if [[ -n ${MAX_RATE:-} ]]; then
	max=$MAX_RATE
	bench_log "1. max: given, $max events/s"
else
	bench_log "1. max: --rate max for $MAX_SECONDS s"
	load max max "$MAX_SECONDS"
	max=$(jq '[.accepted_per_s, .processed_per_s] | min | floor' "$OUT/lag-max.json")
fi
half=$((max / 2))

bench_log "2. idle: $PROBES_IDLE probes"
probe idle "$PROBES_IDLE"
jq -r '"idle: POST->visible p50 \(.visible_p50_ms) ms, p99 \(.visible_p99_ms) ms (POST answered p50 \(.ack_p50_ms) ms; one API poll \(.poll_mean_ms) ms)"' \
	"$OUT/lag-probe-idle.json"

bench_log "3. under load: --rate $half (half of $max) for $LOAD_SECONDS s, $PROBES probes"
load half "$half" "$LOAD_SECONDS" &
load_pid=$!
BENCH_PIDS+=("$load_pid")
sleep 6 # the load's warm-up: probes run inside its measured window
probe load "$PROBES"
wait "$load_pid" || bench_fail "the background load failed"

h=$OUT/lag-half.json
p=$OUT/lag-probe-load.json
printf 'load: offered %d ev/s, accepted %.0f, processed %.0f, backlog %+.0f ev/s\n' "$half" \
	"$(jq .accepted_per_s "$h")" "$(jq .processed_per_s "$h")" "$(jq .backlog_growth_per_s "$h")"
jq -r '"internal (tally_event_lag_ms, \(.lag_ms.count) events): p50 \(.lag_ms.p50) ms, p90 \(.lag_ms.p90) ms, p99 \(.lag_ms.p99) ms (bucket le \(.lag_ms.p99_bucket_le)), mean \(.lag_ms.mean) ms"' "$h"
jq -r '"external (\(.probes) probes, POST->visible): p50 \(.visible_p50_ms) ms, p90 \(.visible_p90_ms) ms, p99 \(.visible_p99_ms) ms, max \(.visible_max_ms) ms; POST answered p50 \(.ack_p50_ms) ms p99 \(.ack_p99_ms) ms"' "$p"
ext99=$(jq .visible_p99_ms "$p")
int99=$(jq .lag_ms.p99 "$h")
printf 'p99 vs target %d ms: external %.1f ms (ratio %.2f, %s), internal %.1f ms (ratio %.2f)\n' "$TARGET_P99" \
	"$ext99" "$(awk -v a="$ext99" -v t="$TARGET_P99" 'BEGIN { print a / t }')" \
	"$(awk -v a="$ext99" -v t="$TARGET_P99" 'BEGIN { print (a <= t ? "met" : "NOT met") }')" \
	"$int99" "$(awk -v a="$int99" -v t="$TARGET_P99" 'BEGIN { print a / t }')"
echo "RESULT lag: at $half ev/s (half of max $max): external p50 $(jq .visible_p50_ms "$p") ms p99 $ext99 ms; internal p50 $(jq .lag_ms.p50 "$h") ms p99 $int99 ms (target p99 <= $TARGET_P99 ms)"
