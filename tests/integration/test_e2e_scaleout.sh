#!/usr/bin/env bash
# test_e2e_scaleout.sh — the scale-out deployment gives the same exact counts
# as the embedded one (issue 4):
#
#  1. a throwaway PostgreSQL and a nats-server (JetStream) on loopback, under
#     the test's temporary directory;
#  2. tests/integration/test_e2e.sh, UNCHANGED, with TALLY_STREAM and
#     TALLY_DB pointing at them: tally serve over nats+PostgreSQL, ≥ 200,000
#     events with duplicates, retries, late events and junk, every count of
#     every campaign and variant == the ground truth, tenant isolation, a
#     restart;
#  3. every role as its own process, several of each: two collectors (the
#     load split between them: one gen per collector), two enrichers and two
#     aggregators owning --partitions 0-3 and 4-7, one API — on a fresh
#     database and stream prefix. Counts exact; every partition of both
#     input topics was consumed (offsets in the reporting DB); every process
#     stops cleanly;
#  4. an aggregator pointed at a reporting DB that was fed from another stream
#     (part 2's DB, part 3's streams) stops at once with exit 3 instead of
#     silently skipping records;
#  5. with the nats-server gone, `tally serve` still stops on SIGTERM within
#     seconds (exit 0), not after every role has sat out its retries (it took
#     minutes: one consumer deletion request per subscription, each waiting
#     out its timeout), and a batch posted meanwhile gets a 503, never a 202;
#  6. with PostgreSQL down, a batch is still accepted (the log is durable) and
#     SIGTERM stops `tally serve` cleanly (exit 0) although the aggregator
#     cannot apply what it holds; started again with PostgreSQL back, the
#     batch is counted.
#
# Skipped (exit 77) when nats-server or PostgreSQL is not installed.
# Env: TALLY_BIN (required), TALLY_SCALEOUT_EVENTS (events per gen in part 3,
# default 60000), TALLY_KEEP_TMP=1.
TL_TEST_NAME=e2e-scaleout
: "${TALLY_SRC:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$TALLY_SRC/tests/integration/scaleout_lib.sh"

EVENTS=${TALLY_SCALEOUT_EVENTS:-60000}

so_pg_start
so_nats_start

# ---- 2. the embedded pipeline's integration test, unchanged ----

tl_log "running test_e2e.sh with TALLY_STREAM=$SO_NATS_URL TALLY_DB=$SO_PG_URI"
rc=0
TALLY_STREAM=$SO_NATS_URL TALLY_DB=$SO_PG_URI timeout 400 bash "$TALLY_SRC/tests/integration/test_e2e.sh" || rc=$?
[ "$rc" = 0 ] || tl_fail "test_e2e.sh over nats+PostgreSQL exited $rc"
tl_log "test_e2e.sh passed over nats+PostgreSQL"

# ---- 3. several collectors, enrichers and aggregators side by side ----

DB=$(so_pg_createdb scale)
STREAM="$SO_NATS_URL?prefix=scale"
DATA="$TL_TMP/data"
mkdir -p "$DATA"
COMMON=(--data "$DATA" --stream "$STREAM" --db "$DB")
acme=$(TALLY_DB=$DB tl_tenant_add "$DATA" acme)
other=$(TALLY_DB=$DB tl_tenant_add "$DATA" other)

so_start enrich-a enrich "${COMMON[@]}" --partitions 0-3
so_start enrich-b enrich "${COMMON[@]}" --partitions 4-7
so_start agg-a aggregate "${COMMON[@]}" --partitions 0-3
so_start agg-b aggregate "${COMMON[@]}" --partitions 4-7
so_start collect-1 collect "${COMMON[@]}"
so_start collect-2 collect "${COMMON[@]}"
so_start api api "${COMMON[@]}"
for n in collect-1 collect-2 api; do so_wait_listening "$n"; done
TL_API=${SO_URL[api]}
ALL=(collect-1 collect-2 enrich-a enrich-b agg-a agg-b api)
tl_log "roles: $(for n in "${ALL[@]}"; do printf '%s=%s ' "$n" "${SO_PID[$n]}"; done)"

# the load split between the collectors; the same tenant through both
t0=$(tl_now_ms)
so_gen s1 "${SO_URL[collect-1]}" "$acme" --other-tenant-link-key "$(jq -r .link_key <<<"$other")" \
	--events "$EVENTS" --campaigns 3 --variants A,B --campaign-prefix s1 --seed 11 --concurrency 16 --junk
so_gen s2 "${SO_URL[collect-2]}" "$acme" --other-tenant-link-key "$(jq -r .link_key <<<"$other")" \
	--events "$EVENTS" --campaigns 3 --variants A,B --campaign-prefix s2 --seed 12 --concurrency 16 --junk
so_gen o1 "${SO_URL[collect-2]}" "$other" --events 3000 --campaigns 1 --variants "" --campaign-prefix o1 \
	--seed 13 --concurrency 2
so_gen_wait s1 240
so_gen_wait s2 60
so_gen_wait o1 60
gen_ms=$(($(tl_now_ms) - t0))
sent=$(($(jq .events_sent "$TL_TMP/s1.json") + $(jq .events_sent "$TL_TMP/s2.json")))
so_check_alive "${ALL[@]}"

KS=$(tl_truth_metrics "$TL_TMP/s1.json")
[ "$(jq length <<<"$KS")" = 17 ] || tl_fail "ground truth has $(jq length <<<"$KS") metrics, want 17"
tl_wait_counts "acme (2 collectors, 2+2 partition owners)" "$(jq -r .api_key <<<"$acme")" "$KS" \
	"$(tl_truth_totals "$TL_TMP/s1.json" "$TL_TMP/s2.json")" 120
tl_check_variants "acme s1" "$(jq -r .api_key <<<"$acme")" "$KS" "$TL_TMP/s1.json"
tl_check_variants "acme s2" "$(jq -r .api_key <<<"$acme")" "$KS" "$TL_TMP/s2.json"
tl_wait_counts "other" "$(jq -r .api_key <<<"$other")" "$KS" "$(tl_truth_totals "$TL_TMP/o1.json")" 30

# each aggregator committed its own partitions' offsets, of both input topics
parts=$(so_pg_sql scale "SELECT topic || ':' || count(DISTINCT partition) FROM offsets
	WHERE topic IN ('metrics','delivery') AND next > 0 GROUP BY topic ORDER BY topic" | tr '\n' ' ')
[ "$parts" = "delivery:8 metrics:8 " ] || tl_fail "partitions with committed offsets: '$parts' (want all 8 of delivery and metrics)"
tl_log "offsets committed for every partition of metrics and delivery: $parts"

so_stop_all 15 collect-1 collect-2 enrich-a enrich-b agg-a agg-b api

# ---- 4. a reporting DB fed from another stream is refused, not skipped over ----

# the DB of part 2 has read the default-prefix streams (~250k records) far
# past the end of this part's streams (~120k): an aggregator pointed at both
# must stop at once (exit 3: corrupt data) instead of silently skipping the
# first records of every partition
so_start agg-wrong aggregate --data "$DATA" --stream "$STREAM" --db "$SO_PG_URI"
tl_wait_exit "${SO_PID[agg-wrong]}" 30 || tl_fail "an aggregator over another stream's DB kept running"
unset "SO_PID[agg-wrong]"
[ "$TL_EXIT_STATUS" = 3 ] || tl_fail "an aggregator over another stream's DB exited $TL_EXIT_STATUS, want 3"
grep -q "fed from another stream" "$(so_log agg-wrong)" || tl_fail "no explanation in $(so_log agg-wrong)"
tl_log "an aggregator over a DB fed from another stream stops with exit 3: $(grep -o 'the reporting DB has counted [^:]*' "$(so_log agg-wrong)")"
# ---- 5. a stop while the stream server is down ----

tl_start_serve stop-serve "$TL_TMP/stop-data" --stream "$SO_NATS_URL?prefix=stop"
key=$(grep -o 'tk_[A-Za-z0-9_-]*' "$TL_SERVE_LOG" | head -1)
[ -n "$key" ] || tl_fail "no demo API key in $TL_SERVE_LOG"
printf '{"type":"sent","campaign":"stop","recipient":"r1","ts":"2026-12-04T10:00:00Z","id":"stop-1"}\n' >"$TL_TMP/stop.ndjson"
post_stop() { curl -sS --max-time 60 -o "$1" -w '%{http_code}' -H "Authorization: Bearer $key" \
	--data-binary @"$TL_TMP/stop.ndjson" "$TL_COLLECTOR/v1/events"; }
code=$(post_stop "$TL_TMP/stop-1.json")
[ "$code" = 202 ] || tl_fail "a batch with the server up got $code: $(cat "$TL_TMP/stop-1.json")"
so_nats_kill9 1
code=$(post_stop "$TL_TMP/stop-2.json" || true)
[ "$code" = 503 ] || tl_fail "a batch with the server gone got '$code', want 503: $(cat "$TL_TMP/stop-2.json")"
t0=$(tl_now_ms)
tl_stop_serve 30
stop_ms=$(($(tl_now_ms) - t0))
tl_log "with the nats-server gone: a batch answered 503, serve stopped on SIGTERM in $stop_ms ms"

# ---- 6. a stop while the reporting DB is down ----

PGDB=$(so_pg_createdb pgstop)
tl_start_serve pgstop-1 "$TL_TMP/pgstop-data" --db "$PGDB"
key=$(grep -o 'tk_[A-Za-z0-9_-]*' "$TL_SERVE_LOG" | head -1)
[ -n "$key" ] || tl_fail "no demo API key in $TL_SERVE_LOG"
sed 's/"stop-1"/"pgstop-1"/' "$TL_TMP/stop.ndjson" >"$TL_TMP/pgstop.ndjson"
code=$(curl -sS --max-time 30 -o "$TL_TMP/pgstop.json" -w '%{http_code}' -H "Authorization: Bearer $key" \
	--data-binary @"$TL_TMP/pgstop.ndjson" "$TL_COLLECTOR/v1/events")
[ "$code" = 202 ] || tl_fail "a batch before PostgreSQL stops got $code: $(cat "$TL_TMP/pgstop.json")"
so_pg_stop immediate
sed 's/"pgstop-1"/"pgstop-2"/' "$TL_TMP/pgstop.ndjson" >"$TL_TMP/pgstop2.ndjson"
code=$(curl -sS --max-time 30 -o "$TL_TMP/pgstop.json" -w '%{http_code}' -H "Authorization: Bearer $key" \
	--data-binary @"$TL_TMP/pgstop2.ndjson" "$TL_COLLECTOR/v1/events")
[ "$code" = 202 ] || tl_fail "a batch with PostgreSQL down got $code: $(cat "$TL_TMP/pgstop.json")"
tl_wait_for 20 "the aggregator to hold a batch it cannot apply" grep -q "applying a batch of .* failed" "$TL_SERVE_LOG"
tl_stop_serve 30
so_pg_start_again
tl_start_serve pgstop-2 "$TL_TMP/pgstop-data" --db "$PGDB"
pg_sent() { [ "$(tl_api_get /v1/campaigns/stop/metrics "$key" | jq .counts.sent)" = 2 ]; }
tl_wait_for 30 "both batches counted after the restart" pg_sent
tl_stop_serve 30
tl_log "with PostgreSQL down: a batch accepted, serve stopped cleanly, both batches counted after the restart"

tl_log "RESULT: $sent events through 2 collectors in $gen_ms ms ($((sent * 1000 / (gen_ms > 0 ? gen_ms : 1))) events/s);" \
	"2 enrichers and 2 aggregators (partitions 0-3, 4-7); every count == ground truth"
tl_log "PASS"
