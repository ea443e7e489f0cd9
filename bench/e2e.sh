#!/usr/bin/env bash
# bench/e2e.sh — end-to-end sustained events/s of the embedded pipeline
# (`tally serve`: collector, enricher, aggregator, archiver and API in one
# process) and its memory over a long load (DESIGN.md §7: ≥ 300,000 events/s
# on 2 cores; aggregator memory flat).
#
# The load generator is `tally bench load` (src/bench/load.c): NDJSON
# batches of canonical events with unique ids (sent, delivered, deferred,
# bounced, dropped, complaint, unsubscribe, open, click over 100 campaigns ×
# 2 variants × 100,000 recipients) to POST /v1/events over keep-alive
# connections. It follows the aggregator through the API's /metrics: accepted
# = events answered 202, processed = events folded into the reporting DB.
# Sustained = the backlog (accepted − processed) does not grow.
#
# It runs on the same 2 cores as tally: its own CPU share is reported.
#
#  1. max: --rate max for MAX_SECONDS; accepted and processed events/s.
#  2. sustained: a fixed rate starting at min(accepted, processed) of step 1,
#     SUSTAIN_SECONDS long; sustained when the backlog grows by less than 1 %
#     of the rate per second and the collector took ≥ 98 % of the offered
#     rate; otherwise 15 % less until a rate holds, then halfway between the
#     best rate that held and the lowest that did not (TRIES runs in all).
#  3. memory: the sustained rate (× MEM_FRACTION) for MEM_SECONDS, the server's
#     RSS every second; reported at the start, middle and end with the events
#     processed by then.
#
# Environment: BIN, OUT (keep the JSON there), CONNS=32, BATCH=1000,
# MAX_SECONDS=30, SUSTAIN_SECONDS=30, TRIES=5, MEM_SECONDS=120 (0 = skip),
# MEM_FRACTION=0.8, PROFILE=0 (1: `perf record -g` on tally serve during step
# 1, report in $OUT/perf-*.txt), SERVE_FLAGS (extra flags for tally serve).
# Prints a RESULT line at the end (bench/run-all.sh collects it).
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

CONNS=${CONNS:-32}
BATCH=${BATCH:-1000}
MAX_SECONDS=${MAX_SECONDS:-30}
SUSTAIN_SECONDS=${SUSTAIN_SECONDS:-30}
TRIES=${TRIES:-5}
MEM_SECONDS=${MEM_SECONDS:-120}
MEM_FRACTION=${MEM_FRACTION:-0.8}
PROFILE=${PROFILE:-0}
TARGET=300000

bench_context | tee "$OUT/e2e-context.txt"
data="$WORK/data"
key=$(bench_tenant "$data" bench)
# shellcheck disable=SC2086
bench_serve serve "$data" ${SERVE_FLAGS:-}
# role threads in creation order (roles.c: collector, enricher, aggregator,
# archiver, api after the stream's writer threads): for the per-role CPU lines
mapfile -t start_tids < <(find /proc/"$SERVE_PID"/task -mindepth 1 -maxdepth 1 -printf "%f\n" | sort -n)

# load NAME RATE SECONDS [WARMUP]: one `tally bench load` run into $OUT/e2e-NAME.json.
load() {
	local name=$1 rate=$2 secs=$3 warm=${4:-5}
	"$BIN" bench load --collector "$COLLECTOR" --api "$API" --api-key "$key" --rate "$rate" \
		--seconds "$secs" --warmup "$warm" --batch "$BATCH" --connections "$CONNS" \
		--server-pid "$SERVE_PID" --drain-timeout 120 >"$OUT/e2e-$name.json" 2>"$WORK/load-$name.log" ||
		bench_fail "bench load $name failed: $(tail -n 3 "$WORK/load-$name.log")"
	tail -n 1 "$WORK/load-$name.log" >&2
}

# role_cpu BEFORE AFTER SECONDS: per-thread CPU share between two bench_threads snapshots.
role_cpu() {
	local names=(collector enricher aggregator archiver api)
	local n=${#start_tids[@]} i=0 tid label
	join <(sort "$1") <(sort "$2") | sort -n | while read -r tid a b; do
		label="thread $tid"
		for ((i = 0; i < 5; i++)); do
			[[ ${start_tids[n - 5 + i]:-} == "$tid" ]] && label=${names[i]}
		done
		awk -v l="$label" -v a="$a" -v b="$b" -v s="$3" 'BEGIN { if (b - a > 0.005 * s) printf "    %-12s %6.1f CPU s  %.2f cores\n", l, b - a, (b - a) / s }'
	done
}

# ---- 1. max
bench_log "1. max: --rate max, $MAX_SECONDS s, $CONNS connections × $BATCH events per POST"
bench_threads "$SERVE_PID" >"$WORK/threads0"
t0=$(date +%s.%N)
if [[ $PROFILE == 1 ]]; then
	command -v perf >/dev/null || bench_fail "PROFILE=1 needs perf"
	(sleep 5 && perf record -F 499 -g -p "$SERVE_PID" -o "$WORK/perf.data" -- sleep $((MAX_SECONDS - 8)) \
		>"$WORK/perf.log" 2>&1) &
	perf_pid=$!
fi
load max max "$MAX_SECONDS"
bench_threads "$SERVE_PID" >"$WORK/threads1"
t1=$(date +%s.%N)
if [[ $PROFILE == 1 ]]; then
	wait "$perf_pid" || true
	perf report -i "$WORK/perf.data" --no-children --sort pid,dso --stdio -g none 2>/dev/null |
		grep -v '^#' | grep -v '^$' | head -n 40 >"$OUT/perf-threads.txt" || true
	perf report -i "$WORK/perf.data" --no-children --sort pid,dso,sym --stdio -g none 2>/dev/null |
		grep -v '^#' | grep -v '^$' | head -n 150 >"$OUT/perf-symbols.txt" || true
	bench_log "profile: $OUT/perf-threads.txt, $OUT/perf-symbols.txt"
fi
m=$OUT/e2e-max.json
acc=$(jq .accepted_per_s "$m")
proc=$(jq .processed_per_s "$m")
printf 'max: accepted %.0f ev/s, processed %.0f ev/s, backlog %+.0f ev/s, POST p50 %.1f ms p99 %.1f ms; CPU: server %.2f, generator %.2f cores\n' \
	"$acc" "$proc" "$(jq .backlog_growth_per_s "$m")" "$(jq .post_p50_ms "$m")" "$(jq .post_p99_ms "$m")" \
	"$(jq .server_cpu_share "$m")" "$(jq .gen_cpu_share "$m")"
echo "  CPU by thread over the run and its drain (roles by thread creation order):"
role_cpu "$WORK/threads0" "$WORK/threads1" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"

# ---- 2. sustained
# The highest offered rate that holds, searched from min(accepted, processed)
# of step 1: 15 % less after a rate that does not hold until one does, then
# halfway between the best rate that held and the lowest that did not, while
# they are more than 3 % apart (TRIES runs in all).
rate=$(awk -v a="$acc" -v p="$proc" 'BEGIN { printf "%.0f", (a < p ? a : p) }')
sustained=0
held=0   # best offered rate that held
failed=0 # lowest offered rate that did not
best_try=0
for try in $(seq 1 "$TRIES"); do
	bench_log "2. sustained, try $try: --rate $rate for $SUSTAIN_SECONDS s"
	load "sustain-$try" "$rate" "$SUSTAIN_SECONDS"
	s=$OUT/e2e-sustain-$try.json
	ok=$(jq --argjson r "$rate" '(.backlog_growth_per_s < 0.01 * $r) and (.accepted_per_s >= 0.98 * $r) and .errors == 0' "$s")
	printf 'rate %s: accepted %.0f ev/s, processed %.0f ev/s, backlog %+.0f ev/s -> %s\n' "$rate" \
		"$(jq .accepted_per_s "$s")" "$(jq .processed_per_s "$s")" "$(jq .backlog_growth_per_s "$s")" \
		"$([[ $ok == true ]] && echo sustained || echo 'not sustained')"
	if [[ $ok == true ]]; then
		held=$rate
		best_try=$try
		sustained=$(jq '[.accepted_per_s, .processed_per_s] | min' "$s") # in and out; not a backlog drained
	else
		failed=$rate
	fi
	# the first rate is all that step 1 processed: once it holds, nothing above it
	[[ $failed == 0 ]] && break
	if [[ $held == 0 ]]; then
		rate=$(awk -v r="$rate" 'BEGIN { printf "%.0f", r * 0.85 }')
	else
		awk -v h="$held" -v f="$failed" 'BEGIN { exit !((f - h) > 0.03 * f) }' || break
		rate=$(awk -v h="$held" -v f="$failed" 'BEGIN { printf "%.0f", (h + f) / 2 }')
	fi
done
[[ $best_try == 0 ]] && best_try=$try
printf 'sustained end to end: %.0f events/s (target %d: ratio %.2f, %s); generator CPU %.2f cores, server %.2f cores\n' \
	"$sustained" "$TARGET" "$(awk -v s="$sustained" -v t="$TARGET" 'BEGIN { print s / t }')" \
	"$(awk -v s="$sustained" -v t="$TARGET" 'BEGIN { print (s >= t ? "met" : "NOT met") }')" \
	"$(jq .gen_cpu_share "$OUT/e2e-sustain-$best_try.json")" "$(jq .server_cpu_share "$OUT/e2e-sustain-$best_try.json")"

# ---- 3. memory
mem_line="memory: skipped"
if [[ $MEM_SECONDS -gt 0 ]]; then
	mrate=$(awk -v s="${sustained/.*/}" -v r="$rate" -v f="$MEM_FRACTION" 'BEGIN { printf "%.0f", (s > 0 ? s : r) * f }')
	bench_log "3. memory: --rate $mrate for $MEM_SECONDS s"
	load mem "$mrate" "$MEM_SECONDS" 2
	# RSS at 5 % (after start-up), 50 % and the end of sending, with events processed by then
	mem_line=$(jq -r --argjson S "$MEM_SECONDS" '
		[.samples[] | select(.t <= $S + 0.5)] as $s
		| [($s | map(select(.t >= $S * 0.05)) | first), ($s[($s | length) / 2 | floor]), ($s | last)]
		| map("\(.t | floor) s: \((.rss_kb / 1024 * 10 | floor) / 10) MiB after \((.processed / 1e6 * 100 | floor) / 100) M events")
		| "memory (RSS of tally serve): " + join(", ")' "$OUT/e2e-mem.json")
	echo "$mem_line"
	jq -r '.samples[] | "\(.t)\t\(.rss_kb)\t\(.processed)"' "$OUT/e2e-mem.json" >"$OUT/e2e-mem-curve.tsv"
fi

echo "RESULT e2e: sustained $(printf '%.0f' "$sustained") events/s (target $TARGET), max accepted $(printf '%.0f' "$acc") processed $(printf '%.0f' "$proc"); $mem_line"
