#!/usr/bin/env bash
# bench/api.sh — API campaign summary latency with 10,000 campaigns × 30 days
# of minute buckets (DESIGN.md §7: p99 ≤ 5 ms).
#
#  1. data set: `tally bench fill` writes, through the store interface
#     (tl_store_add_counts, the aggregator's own write path), CAMPAIGNS
#     campaigns × DAYS days × ACTIVE_MINUTES minutes with data per campaign
#     and day × VARIANTS variants of minute rows into a fresh SQLite reporting
#     DB. The full set (every minute of every day) would be 10,000 × 30 ×
#     1,440 × 2 = 864 M rows (~66 GB): not a quick benchmark. The default
#     density is one hour of activity per campaign per day (36 M rows,
#     ~2.8 GB). The summary query reads the per-campaign totals the aggregator
#     maintains, so its cost does not grow with the minute rows — the
#     density mostly sets how large and cold the database file is.
#     DATASET=DIR keeps the filled data directory there and reuses it on the
#     next run (filling takes minutes).
#  2. `tally api` alone on that data directory.
#  3. reference, same run: wrk on the API's /healthz (the HTTP floor: no
#     auth, no query).
#  4. wrk (Lua: bench/api.lua) GET /v1/campaigns/<random campaign>/metrics
#     with the tenant's key, --latency: p50/p99.
#
# Environment: BIN, OUT, CAMPAIGNS=10000, DAYS=30, ACTIVE_MINUTES=60,
# VARIANTS=2, DATASET, WRK_THREADS=1, WRK_CONNS=8, DURATION=20s, ROUNDS=3.
# Prints a RESULT line at the end.
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

CAMPAIGNS=${CAMPAIGNS:-10000}
DAYS=${DAYS:-30}
ACTIVE_MINUTES=${ACTIVE_MINUTES:-60}
VARIANTS=${VARIANTS:-2}
WRK_THREADS=${WRK_THREADS:-1}
WRK_CONNS=${WRK_CONNS:-8}
DURATION=${DURATION:-20s}
ROUNDS=${ROUNDS:-3}
TARGET_P99=5
command -v wrk >/dev/null || bench_fail "wrk not found"

bench_context | tee "$OUT/api-context.txt"
shape="$CAMPAIGNS campaigns x $DAYS days x $ACTIVE_MINUTES min/day x $VARIANTS variants"
data=${DATASET:-$WORK/data}
if [[ -f $data/bench.json && $(jq -r .shape "$data/bench.json") == "$shape" ]]; then
	key=$(jq -r .api_key "$data/bench.json")
	bench_log "1. data set: reusing $data ($shape)"
else
	[[ -e $data/tally.db ]] && bench_fail "$data holds another data set: remove it or choose another DATASET"
	mkdir -p "$data"
	key=$(bench_tenant "$data" bench)
	bench_log "1. data set: filling $data ($shape)"
	"$BIN" bench fill --data "$data" --tenant bench --campaigns "$CAMPAIGNS" --days "$DAYS" \
		--active-minutes "$ACTIVE_MINUTES" --variants "$VARIANTS" >"$OUT/api-fill.json" 2>"$WORK/fill.log" ||
		bench_fail "bench fill: $(tail -n 3 "$WORK/fill.log")"
	jq -n --arg shape "$shape" --arg key "$key" '{shape: $shape, api_key: $key}' >"$data/bench.json"
	jq -r '"filled \(.rows) minute rows in \(.seconds) s (\(.rows_per_s) rows/s)"' "$OUT/api-fill.json"
fi
printf 'data set: %s = %s minute rows, database %s\n' "$shape" \
	"$(awk -v c="$CAMPAIGNS" -v d="$DAYS" -v m="$ACTIVE_MINUTES" -v v="$VARIANTS" 'BEGIN { printf "%.0f", c * d * m * (v ? v : 1) }')" \
	"$(du -sh "$data/tally.db" | cut -f1)"

"$BIN" api --data "$data" --api 127.0.0.1:0 >"$WORK/api.log" 2>&1 &
api_pid=$!
BENCH_PIDS+=("$api_pid")
API=http://$(bench_listen "$WORK/api.log" api "$api_pid")
curl -fsS -H "Authorization: Bearer $key" "$API/v1/campaigns/c-0/metrics" | jq -e '.counts.sent > 0' >/dev/null ||
	bench_fail "the API does not answer campaign c-0"

# run NAME URL [SCRIPT]: one wrk run; prints "p50 p99 req/s" in ms; the output is kept.
run() {
	local name=$1 url=$2 script=${3:-} out
	out=$(TALLY_BENCH_KEY=$key TALLY_BENCH_CAMPAIGNS=$CAMPAIGNS TALLY_BENCH_PREFIX=c \
		wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$DURATION" --latency ${script:+-s "$script"} "$url")
	echo "$out" >>"$OUT/api-wrk-$name.txt"
	grep -q "Non-2xx or 3xx responses" <<<"$out" && { echo "$out" >&2; bench_fail "$name answered errors"; }
	# wrk prints latencies as 812.00us, 1.23ms, 2.00s
	awk 'function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v + 0 }
	     /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) } /^Requests\/sec:/ { rps = $2 }
	     END { printf "%.3f %.3f %.0f\n", p50, p99, rps }' <<<"$out"
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "wrk -t$WRK_THREADS -c$WRK_CONNS -d$DURATION --latency, $ROUNDS alternated rounds"
h50=() h99=() s50=() s99=() srps=()
for r in $(seq 1 "$ROUNDS"); do
	read -r a b c < <(run healthz "$API/healthz")
	h50+=("$a") h99+=("$b")
	printf 'round %d  /healthz                      p50 %7.3f ms  p99 %7.3f ms  %8.0f req/s\n' "$r" "$a" "$b" "$c"
	read -r a b c < <(run summary "$API" "$bench_here/api.lua")
	s50+=("$a") s99+=("$b") srps+=("$c")
	printf 'round %d  /v1/campaigns/<random>/metrics p50 %7.3f ms  p99 %7.3f ms  %8.0f req/s\n' "$r" "$a" "$b" "$c"
done
m50=$(median "${s50[@]}") m99=$(median "${s99[@]}") mh99=$(median "${h99[@]}")
printf 'median summary p50 %.3f ms, p99 %.3f ms (/healthz p99 %.3f ms); target p99 <= %d ms: ratio %.2f, %s\n' \
	"$m50" "$m99" "$mh99" "$TARGET_P99" "$(awk -v a="$m99" -v t="$TARGET_P99" 'BEGIN { print a / t }')" \
	"$(awk -v a="$m99" -v t="$TARGET_P99" 'BEGIN { print (a <= t ? "met" : "NOT met") }')"
echo "RESULT api: campaign summary p50 $m50 ms p99 $m99 ms at $(median "${srps[@]}") req/s, $WRK_CONNS connections ($shape; /healthz p99 $mh99 ms; target p99 <= $TARGET_P99 ms)"
