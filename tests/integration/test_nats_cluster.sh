#!/usr/bin/env bash
# test_nats_cluster.sh — a 3-node JetStream cluster loses a node under load
# and nothing is lost or counted twice (issue 4):
#
#  1. three nats-servers routed on loopback (scripts/nats-test.sh --cluster)
#     and a PostgreSQL; every topic created with ?replicas=3 (checked on the
#     servers: every stream has 3 replicas);
#  2. every role as its own process (collect, enrich, aggregate, api) over
#     the three servers' URLs;
#  3. `tally gen` drives campaigns while, twice, the node that leads the most
#     streams is killed with SIGKILL, left dead for a few seconds and started
#     again (same ports, same store), then waited for until it is healthy;
#  4. after the load: every count of every campaign and variant == the
#     ground truth, every role is still running and stops cleanly.
#
# gen re-sends a request left without an answer (--retry-until): while a
# stream has no leader the collector answers 503 and the retry counts once
# (event ids; hits carry an Idempotency-Key).
#
# Skipped (exit 77) when nats-server or PostgreSQL is not installed.
# Env: TALLY_BIN (required), TALLY_CLUSTER_EVENTS (default 80000),
# TALLY_KEEP_TMP=1.
TL_TEST_NAME=nats-cluster
: "${TALLY_SRC:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$TALLY_SRC/tests/integration/scaleout_lib.sh"

EVENTS=${TALLY_CLUSTER_EVENTS:-80000}
KILLS=2

so_pg_start
so_nats_start --cluster
STREAM="$SO_NATS_URL?replicas=3"
DATA="$TL_TMP/data"
mkdir -p "$DATA"
COMMON=(--data "$DATA" --stream "$STREAM" --db "$SO_PG_URI")
acme=$(TALLY_DB=$SO_PG_URI tl_tenant_add "$DATA" acme)
other=$(TALLY_DB=$SO_PG_URI tl_tenant_add "$DATA" other)
ACME_KEY=$(jq -r .api_key <<<"$acme")

# jsz NODE: the node's JetStream report with every stream.
jsz() {
	curl -sS -f --max-time 5 "http://127.0.0.1:$(cat "$SO_NATS_DIR/n$1/http_port")/jsz?accounts=true&streams=true&config=true"
}

# the collector creates events/delivery/dead-webhooks, the enricher metrics/dead
so_start collect collect "${COMMON[@]}"
so_start enrich enrich "${COMMON[@]}"
so_start aggregate aggregate "${COMMON[@]}"
so_start api api "${COMMON[@]}"
so_wait_listening collect
so_wait_listening api
TL_API=${SO_URL[api]}
ROLES=(collect enrich aggregate api)

# every stream exists with 3 replicas (the roles create them at start)
streams_replicated() {
	local r
	r=$(jsz 1 | jq -c '[.account_details[]?.stream_detail[]? | select(.name | startswith("TALLY_"))]
		| {n: length, r3: map(select(.config.num_replicas == 3 and (.cluster.replicas | length) == 2)) | length}') ||
		return 1
	[ "$r" = '{"n":40,"r3":40}' ]
}
tl_wait_for 90 "40 streams (5 topics x 8 partitions) with 3 replicas" streams_replicated
tl_log "40 streams, each with 3 replicas"

# leader_node: the node leading the most streams (the most disruptive kill).
leader_node() {
	local n
	for n in 1 2 3; do
		jsz "$n" 2>/dev/null && break
	done | jq -r '[.account_details[]?.stream_detail[]?.cluster.leader | select(. != null)]
		| group_by(.) | map({n: .[0], c: length}) | max_by(.c) | .n // "n1"' | sed 's/^n//'
}

so_gen load "${SO_URL[collect]}" "$acme" --other-tenant-link-key "$(jq -r .link_key <<<"$other")" \
	--events "$EVENTS" --campaigns 4 --variants A,B --campaign-prefix cl --seed 21 --concurrency 16 \
	--retry-until 90 --junk
t0=$(tl_now_ms)

# waits up to S seconds while gen runs (returns at once when it ends)
gen_sleep() {
	local until=$(($(tl_now_ms) + $1 * 1000))
	while so_gen_running load && [ "$(tl_now_ms)" -lt "$until" ]; do sleep 0.1; done
}

killed=()
for k in $(seq "$KILLS"); do
	gen_sleep 3
	so_gen_running load || break
	node=$(leader_node)
	[[ $node =~ ^[123]$ ]] || node=1
	so_nats_kill9 "$node"
	tl_log "kill -9 of nats node n$node ($(($(tl_now_ms) - t0)) ms into the load)"
	gen_sleep 4
	so_check_alive "${ROLES[@]}"
	so_nats_restart "$node"
	tl_log "nats node n$node is back and healthy"
	killed+=("n$node")
done
[ ${#killed[@]} -gt 0 ] || tl_fail "gen ended before a node could be killed: raise TALLY_CLUSTER_EVENTS"
so_gen_wait load 150
gen_ms=$(($(tl_now_ms) - t0))
sent=$(jq .events_sent "$TL_TMP/load.json")
so_check_alive "${ROLES[@]}"
tl_log "gen: $sent events in $gen_ms ms across ${#killed[@]} node kill(s): ${killed[*]}"

KS=$(tl_truth_metrics "$TL_TMP/load.json")
[ "$(jq length <<<"$KS")" = 17 ] || tl_fail "ground truth has $(jq length <<<"$KS") metrics, want 17"
tl_wait_counts "acme after ${#killed[@]} nats node kill(s)" "$ACME_KEY" "$KS" "$(tl_truth_totals "$TL_TMP/load.json")" 120
tl_check_variants acme "$ACME_KEY" "$KS" "$TL_TMP/load.json"

so_stop_all 20 collect enrich aggregate api
tl_log "RESULT: 3-node cluster, replicas=3: $sent events in $gen_ms ms" \
	"($((sent * 1000 / (gen_ms > 0 ? gen_ms : 1))) events/s) while ${killed[*]} were killed with SIGKILL and restarted;" \
	"every count == ground truth"
tl_log "PASS"
