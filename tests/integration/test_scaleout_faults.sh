#!/usr/bin/env bash
# test_scaleout_faults.sh — kill -9 of role processes and restarts of
# PostgreSQL under load, on nats+PostgreSQL: nothing lost, nothing counted
# twice (issue 4).
#
#  1. a nats-server (JetStream) and a PostgreSQL on loopback;
#  2. every role as its own process: one collector, two enrichers and two
#     aggregators (--partitions 0-3 and 4-7), one API;
#  3. `tally gen` drives campaigns while faults come one after the other,
#     every ~1.2 s, in a fixed cycle so that each kind happens at least once:
#     kill -9 of an enricher, of an aggregator, of the collector, a restart
#     of PostgreSQL (fast shutdown), kill -9 of the other enricher and
#     aggregator, a crash of PostgreSQL (immediate shutdown, recovery at
#     start), kill -9 of the API, and PostgreSQL down for ~1.5 s while the
#     collector, the API, an enricher and an aggregator are killed and
#     started again (they must wait for the database, not exit). A killed
#     role is restarted at once (the collector and the API on the same
#     port). Roles must survive the database going away on their own: none
#     may exit;
#  4. after the load: every count of every campaign and variant == the
#     ground truth, every role stops cleanly on SIGTERM.
#
# Keeping the truth exact while the collector dies: gen runs with
# --retry-until, so a request left without an answer (connection refused or
# reset, 503) is re-sent until it gets one; event batches carry event ids and
# hits an Idempotency-Key, so a request made durable before its answer was
# lost counts once however often it is re-sent (the same device as
# tests/chaos/chaos.sh).
#
# Skipped (exit 77) when nats-server or PostgreSQL is not installed.
# Load runs in rounds (one gen each) until every kind of fault happened.
# Env: TALLY_BIN (required), TALLY_FAULTS_EVENTS (events per round, default 120000),
# TALLY_KEEP_TMP=1.
TL_TEST_NAME=scaleout-faults
: "${TALLY_SRC:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$TALLY_SRC/tests/integration/scaleout_lib.sh"

EVENTS=${TALLY_FAULTS_EVENTS:-120000}

so_pg_start
so_nats_start
DATA="$TL_TMP/data"
mkdir -p "$DATA"
COMMON=(--data "$DATA" --stream "$SO_NATS_URL" --db "$SO_PG_URI")
acme=$(TALLY_DB=$SO_PG_URI tl_tenant_add "$DATA" acme)
other=$(TALLY_DB=$SO_PG_URI tl_tenant_add "$DATA" other)
ACME_KEY=$(jq -r .api_key <<<"$acme")

so_start collect collect "${COMMON[@]}"
so_start enrich-a enrich "${COMMON[@]}" --partitions 0-3
so_start enrich-b enrich "${COMMON[@]}" --partitions 4-7
so_start agg-a aggregate "${COMMON[@]}" --partitions 0-3
so_start agg-b aggregate "${COMMON[@]}" --partitions 4-7
so_start api api "${COMMON[@]}"
so_wait_listening collect
so_wait_listening api
TL_API=${SO_URL[api]}
ROLES=(collect enrich-a enrich-b agg-a agg-b api)

# waits up to MS milliseconds while gen runs (returns at once when it ends)
gen_sleep_ms() {
	local until=$(($(tl_now_ms) + $1))
	while so_gen_running "$GEN" && [ "$(tl_now_ms)" -lt "$until" ]; do sleep 0.1; done
}

FAULTS=(enrich-a agg-b collect pg-restart enrich-b agg-a pg-crash api pg-down-roles)
declare -A DONE=()
n=0 sent=0 gen_ms=0 round=0
TRUTHS=()
# rounds of load until every fault happened at least once (a fast machine
# may finish one round first)
while [ "$n" -lt "${#FAULTS[@]}" ]; do
	round=$((round + 1))
	[ "$round" -le 4 ] || tl_fail "4 rounds of load were not enough for ${#FAULTS[@]} faults"
	GEN=load$round
	so_gen "$GEN" "${SO_URL[collect]}" "$acme" --other-tenant-link-key "$(jq -r .link_key <<<"$other")" \
		--events "$EVENTS" --campaigns 4 --variants A,B --campaign-prefix "f$round" --seed "$((30 + round))" \
		--concurrency 16 --retry-until 90 --junk
	t0=$(tl_now_ms)
	while so_gen_running "$GEN"; do
		gen_sleep_ms 1200
		so_gen_running "$GEN" || break
		so_check_alive "${ROLES[@]}"
		f=${FAULTS[$((n % ${#FAULTS[@]}))]}
		case $f in
		pg-restart)
			so_pg_restart
			;;
		pg-crash)
			so_pg_restart immediate
			;;
		pg-down-roles)
			# roles that start while the database is down wait for it
			so_pg_stop
			for r in collect api enrich-b agg-a; do
				so_kill9 "$r"
				so_restart "$r"
			done
			gen_sleep_ms 1500
			so_check_alive "${ROLES[@]}"
			so_pg_start_again
			;;
		*)
			so_kill9 "$f"
			gen_sleep_ms 300 # dead for a moment while the load goes on
			so_restart "$f"
			;;
		esac
		DONE[$f]=$((${DONE[$f]:-0} + 1))
		n=$((n + 1))
		tl_log "fault $n: $f ($(($(tl_now_ms) - t0)) ms into round $round)"
	done
	so_gen_wait "$GEN" 150
	gen_ms=$((gen_ms + $(tl_now_ms) - t0))
	sent=$((sent + $(jq .events_sent "$TL_TMP/$GEN.json")))
	TRUTHS+=("$TL_TMP/$GEN.json")
done
so_check_alive "${ROLES[@]}"
so_wait_listening collect
so_wait_listening api
tl_log "gen: $sent events in $gen_ms ms under $n faults;" \
	"collector: $(tl_metric "${SO_URL[collect]}" tally_collector_append_errors_total) failed appends," \
	"$(tl_metric "${SO_URL[collect]}" tally_pixel_dropped_total) pixel and" \
	"$(tl_metric "${SO_URL[collect]}" tally_click_dropped_total) click hits answered unrecorded since its last start"

KS=$(tl_truth_metrics "${TRUTHS[0]}")
[ "$(jq length <<<"$KS")" = 17 ] || tl_fail "ground truth has $(jq length <<<"$KS") metrics, want 17"
tl_wait_counts "acme after $n faults" "$ACME_KEY" "$KS" "$(tl_truth_totals "${TRUTHS[@]}")" 120
for t in "${TRUTHS[@]}"; do
	tl_check_variants "acme $(basename "$t" .json)" "$ACME_KEY" "$KS" "$t"
done

so_stop_all 20 collect enrich-a enrich-b agg-a agg-b api
summary=$(for f in "${FAULTS[@]}"; do printf '%s x%s, ' "$f" "${DONE[$f]}"; done)
tl_log "RESULT: $sent events in $gen_ms ms ($((sent * 1000 / (gen_ms > 0 ? gen_ms : 1))) events/s) under" \
	"$n faults (${summary%, }) over $round round(s) of load; every count == ground truth"
tl_log "PASS"
