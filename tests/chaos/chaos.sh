#!/usr/bin/env bash
# chaos.sh — nothing lost, nothing counted twice while roles die (issue 3).
#
# Every role runs as its own process over one data directory (tally collect,
# enrich, aggregate, api). `tally gen` drives campaigns against the collector
# while a killer sends SIGKILL to a random role every 0.3–2 s and restarts
# it at once (the collector and the API on the same port). When the load is
# over, every count of every campaign and variant must equal gen's ground
# truth exactly, and every role must still stop cleanly on SIGTERM.
#
# Keeping the truth exact while the collector dies: gen runs with
# --retry-until, so a request left without an answer (connection refused or
# reset, 503 while stopping) is re-sent until it gets one. Event batches
# carry event ids; hits carry an Idempotency-Key that the collector makes
# their event id. A request that was made durable before its answer was
# lost is therefore counted once however often it is re-sent — which is
# exactly what this test checks.
#
# Usage: chaos.sh [--short] [--minutes M] [--events N] [--concurrency C]
#   --short      rounds of --events (default 300000) until 75 s of load
#                passed (at least one): ~2 min in all, for make test (default)
#   --minutes M  rounds until M minutes of load passed (make chaos)
# Env: TALLY_BIN (required), TALLY_KEEP_TMP=1, CHAOS_SEED (killer's RANDOM seed).
TL_TEST_NAME=chaos
: "${TALLY_SRC:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$TALLY_SRC/tests/integration/lib.sh"
. "$TALLY_SRC/tests/chaos/roles_lib.sh"

LOAD_S=75
EVENTS=300000
CONCURRENCY=32
RETRY_UNTIL=120
while [ $# -gt 0 ]; do
	case $1 in
	--short) LOAD_S=75 ;;
	--minutes) LOAD_S=$(($2 * 60)); shift ;;
	--events) EVENTS=$2; shift ;;
	--concurrency) CONCURRENCY=$2; shift ;;
	*) echo "usage: $0 [--short] [--minutes M] [--events N] [--concurrency C]" >&2; exit 2 ;;
	esac
	shift
done
RANDOM=${CHAOS_SEED:-$$}

DATA="$TL_TMP/data"
mkdir -p "$DATA"
acme=$(tl_tenant_add "$DATA" acme)
other=$(tl_tenant_add "$DATA" other)
ACME_KEY=$(jq -r .api_key <<<"$acme")
tl_roles_init "$DATA"
tl_roles_start_all
tl_log "roles: collect ${TL_ROLE_PID[collect]} ($TL_COLLECTOR), enrich ${TL_ROLE_PID[enrich]}," \
	"aggregate ${TL_ROLE_PID[aggregate]}, api ${TL_ROLE_PID[api]} ($TL_API)"

ROLES=(collect enrich aggregate api)
declare -A KILLS=([collect]=0 [enrich]=0 [aggregate]=0 [api]=0)
KILLS_TOTAL=0

# every role must be running between kills: one that exits by itself failed
check_alive() {
	local r
	for r in "${ROLES[@]}"; do
		tl_alive "${TL_ROLE_PID[$r]}" && continue
		wait "${TL_ROLE_PID[$r]}" 2>/dev/null && st=0 || st=$?
		tl_fail "$r (pid ${TL_ROLE_PID[$r]}) exited by itself with status $st: $(tail -n 5 "$(tl_role_log "$r")")"
	done
}

# kill_one: SIGKILL to a random role, reaped, restarted.
kill_one() {
	local r=${ROLES[$((RANDOM % ${#ROLES[@]}))]}
	tl_role_kill9 "$r"
	tl_role_start "$r"
	KILLS[$r]=$((KILLS[$r] + 1))
	KILLS_TOTAL=$((KILLS_TOTAL + 1))
}

# one round: gen in the background, the killer in this shell until gen ends
round=0
TRUTHS=()
GEN_EVENTS=0
GEN_MS=0
run_round() {
	round=$((round + 1))
	local truth="$TL_TMP/round$round.json" glog="$TL_TMP/round$round.gen.log"
	"$TALLY_BIN" gen --collector "$TL_COLLECTOR" --out "$truth" --quiet \
		--tenant acme --api-key "$ACME_KEY" --link-key "$(jq -r .link_key <<<"$acme")" \
		--other-tenant-link-key "$(jq -r .link_key <<<"$other")" \
		--events "$EVENTS" --campaigns 4 --variants A,B --campaign-prefix "r$round" --seed "$round" \
		--concurrency "$CONCURRENCY" --retry-until "$RETRY_UNTIL" >/dev/null 2>"$glog" &
	local gen=$! t0 k0=$KILLS_TOTAL
	t0=$(tl_now_ms)
	while tl_alive "$gen"; do
		# 0.3–2 s, polling gen's end every 100 ms meanwhile
		local pause=$((300 + RANDOM % 1701)) waited=0
		while [ "$waited" -lt "$pause" ] && tl_alive "$gen"; do
			sleep 0.1
			waited=$((waited + 100))
		done
		tl_alive "$gen" || break
		check_alive
		kill_one
	done
	local rc=0
	wait "$gen" || rc=$?
	local ms=$(($(tl_now_ms) - t0))
	grep -E '^gen: done' "$glog" >&2 || true
	[ "$rc" = 0 ] || tl_fail "round $round: gen exited $rc: $(tail -n 5 "$glog")"
	[ "$(jq .errors "$truth")" = 0 ] || tl_fail "round $round: gen reports errors"
	local sent
	sent=$(jq .events_sent "$truth")
	GEN_EVENTS=$((GEN_EVENTS + sent))
	GEN_MS=$((GEN_MS + ms))
	TRUTHS+=("$truth")
	tl_log "round $round: $sent events in $ms ms ($((sent * 1000 / (ms > 0 ? ms : 1))) events/s)" \
		"under $((KILLS_TOTAL - k0)) kills"
}

T_START=$(tl_now_ms)
run_round
while [ $(($(tl_now_ms) - T_START)) -lt $((LOAD_S * 1000)) ]; do
	run_round
done

# the load is over: the last restarted roles must come up, then catch up
check_alive
tl_role_wait_listening collect
tl_role_wait_listening api
KS=$(tl_truth_metrics "${TRUTHS[0]}")
[ "$(jq length <<<"$KS")" = 17 ] || tl_fail "ground truth has $(jq length <<<"$KS") metrics, want 17"
WANT=$(tl_truth_totals "${TRUTHS[@]}")
tl_wait_counts "acme after $KILLS_TOTAL kills" "$ACME_KEY" "$KS" "$WANT" 300
for t in "${TRUTHS[@]}"; do
	tl_check_variants "acme $(basename "$t" .json)" "$ACME_KEY" "$KS" "$t"
done

# graceful stop of every role, in data-flow order, within 10 s each
for r in "${ROLES[@]}"; do
	tl_role_stop "$r" 10
	tl_log "$r stopped cleanly on SIGTERM in $TL_STOP_MS ms"
done

tl_log "RESULT: $KILLS_TOTAL kills survived (collect ${KILLS[collect]}, enrich ${KILLS[enrich]}," \
	"aggregate ${KILLS[aggregate]}, api ${KILLS[api]}) over $round round(s);" \
	"$GEN_EVENTS events at $((GEN_EVENTS * 1000 / (GEN_MS > 0 ? GEN_MS : 1))) events/s under the kill loop;" \
	"every count == ground truth"
tl_log "PASS"
