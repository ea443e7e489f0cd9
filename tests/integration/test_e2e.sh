#!/usr/bin/env bash
# test_e2e.sh — end to end against the real binary (DESIGN.md §8):
#
#  1. `tally serve` on free ports with a fresh data dir, tenants acme and other;
#  2. `tally gen` drives ≥ 200,000 events for acme (duplicates, retried
#     batches, late and out-of-order events, batches with a bad line, forged
#     tokens, tokens signed with other's key) and a small run for other;
#  3. waits (bounded) until the API's counts stop changing and equal the
#     ground truth, then checks every metric of every campaign and variant;
#  4. tenant isolation: neither key sees the other's campaigns;
#  5. restarts serve on the same data dir: counts unchanged; a few more
#     events count.
#
# Env: TALLY_BIN (required), TALLY_E2E_EVENTS (default 230000),
# TALLY_E2E_CONCURRENCY (gen connections, default 32),
# TALLY_E2E_CATCHUP_TIMEOUT seconds (default 300), TALLY_KEEP_TMP=1.
TL_TEST_NAME=e2e
. "$(dirname "$0")/lib.sh"

EVENTS=${TALLY_E2E_EVENTS:-230000}
CATCHUP_TIMEOUT=${TALLY_E2E_CATCHUP_TIMEOUT:-300}
GEN_TIMEOUT=${TALLY_E2E_GEN_TIMEOUT:-600}
# the collector answers a hit once it is durable (group commit): more
# connections in flight, more hits per fsync
CONCURRENCY=${TALLY_E2E_CONCURRENCY:-32}
DATA="$TL_TMP/data"
mkdir -p "$DATA"

# ---- tenants (added before serve starts: the collector knows them at once) ----

tenant_add() {
	local out
	out=$("$TALLY_BIN" tenant add "$1" --data "$DATA") || tl_fail "tally tenant add $1 failed"
	jq -e '.tenant and .api_key and (.link_key | test("^[0-9a-f]{64}$"))' <<<"$out" >/dev/null ||
		tl_fail "tally tenant add $1 printed: $out"
	echo "$out"
}
acme=$(tenant_add acme)
other=$(tenant_add other)
ACME_KEY=$(jq -r .api_key <<<"$acme")
ACME_LINK=$(jq -r .link_key <<<"$acme")
OTHER_KEY=$(jq -r .api_key <<<"$other")
OTHER_LINK=$(jq -r .link_key <<<"$other")

tl_start_serve serve1 "$DATA"

# ---- helpers ----

# run_gen NAME FLAGS…: runs tally gen against the collector, the truth into
# $TL_TMP/NAME.json; fails unless it exits 0 with no errors.
run_gen() {
	local name=$1
	shift
	local rc=0
	timeout "$GEN_TIMEOUT" "$TALLY_BIN" gen --collector "$TL_COLLECTOR" --out "$TL_TMP/$name.json" --quiet "$@" \
		2>"$TL_TMP/$name.gen.log" || rc=$?
	grep -E '^gen: (done|tenant)' "$TL_TMP/$name.gen.log" >&2 || true
	[ "$rc" = 0 ] || tl_fail "gen $name exited $rc: $(tail -n 5 "$TL_TMP/$name.gen.log")"
	[ "$(jq .errors "$TL_TMP/$name.json")" = 0 ] || tl_fail "gen $name reports errors"
}

# totals TRUTH_FILE…: {"<campaign>": {17 metrics}} of the given truths merged.
totals() { jq -S -s 'map(.campaigns | map_values(.total)) | add' "$@"; }

# metric names, from the truth
METRICS=""

# api_totals KEY: the API's campaign list as {"<campaign>": {the 17 metrics}}.
api_totals() {
	local body
	body=$(tl_api_get /v1/campaigns "$1") || return 1
	jq -S --argjson ks "$METRICS" \
		'[.campaigns[] | {key: .campaign, value: (.counts as $c | reduce $ks[] as $k ({}; .[$k] = $c[$k]))}]
		 | from_entries' <<<"$body"
}

# wait_counts WHAT KEY EXPECTED TIMEOUT_S: polls until the API's totals equal
# EXPECTED, then keeps polling for 2 s to see them stay equal. Sets CAUGHT_MS
# to the time it took. Fails with a diff at the deadline.
wait_counts() {
	local what=$1 key=$2 want=$3 t=$4
	local start now deadline got="" prev="" changed_ms
	start=$(tl_now_ms)
	deadline=$((start + t * 1000))
	changed_ms=$start
	while :; do
		now=$(tl_now_ms)
		if got=$(api_totals "$key"); then
			if [ "$got" != "$prev" ]; then
				prev=$got
				changed_ms=$now
			fi
			[ "$got" = "$want" ] && break
		fi
		if [ "$now" -ge "$deadline" ]; then
			tl_log "$what: counts never reached the ground truth (last change $(((now - changed_ms) / 1000)) s ago):"
			tl_json_diff "$want" "$got" | head -n 80 >&2
			tl_fail "$what: counts != ground truth after ${t}s"
		fi
		sleep 0.1
	done
	CAUGHT_MS=$(($(tl_now_ms) - start))
	local i
	for i in $(seq 20); do
		sleep 0.1
		got=$(api_totals "$key") || continue
		if [ "$got" != "$want" ]; then
			tl_json_diff "$want" "$got" | head -n 80 >&2
			tl_fail "$what: counts changed after reaching the ground truth"
		fi
	done
	tl_log "$what: API counts == ground truth (after $CAUGHT_MS ms, stable for 2 s)"
}

# check_variants NAME KEY TRUTH_FILE: every metric of every campaign's total
# and of every variant, through /v1/campaigns/<c>/metrics[?variant=V].
check_variants() {
	local name=$1 key=$2 truth=$3 c v want got q checked=0
	for c in $(jq -r '.campaigns | keys[]' "$truth"); do
		for v in "(total)" $(jq -r --arg c "$c" '.campaigns[$c].variants | keys[] | select(. != "")' "$truth"); do
			if [ "$v" = "(total)" ]; then
				q="" want=$(jq -S --arg c "$c" '.campaigns[$c].total' "$truth")
			else
				q="?variant=$v" want=$(jq -S --arg c "$c" --arg v "$v" '.campaigns[$c].variants[$v]' "$truth")
			fi
			got=$(tl_api_get "/v1/campaigns/$c/metrics$q" "$key") || tl_fail "$name: GET /v1/campaigns/$c/metrics$q failed"
			got=$(jq -S --argjson ks "$METRICS" '.counts as $c | reduce $ks[] as $k ({}; .[$k] = $c[$k])' <<<"$got")
			if [ "$got" != "$want" ]; then
				tl_json_diff "$want" "$got" >&2
				tl_fail "$name: campaign $c variant $v differs from the ground truth"
			fi
			checked=$((checked + 1))
		done
		# a campaign without variants: its "" variant is the total
		if jq -e --arg c "$c" '.campaigns[$c].variants | has("")' "$truth" >/dev/null; then
			[ "$(jq -S --arg c "$c" '.campaigns[$c].variants[""]' "$truth")" = \
				"$(jq -S --arg c "$c" '.campaigns[$c].total' "$truth")" ] || tl_fail "$name: truth of $c inconsistent"
		fi
	done
	tl_log "$name: $checked campaign/variant count sets equal the ground truth, metric by metric"
}

# ---- 1. load ----

t0=$(tl_now_ms)
run_gen acme --tenant acme --api-key "$ACME_KEY" --link-key "$ACME_LINK" --other-tenant-link-key "$OTHER_LINK" \
	--events "$EVENTS" --campaigns 5 --variants A,B --seed 1 --concurrency "$CONCURRENCY" --junk
t1=$(tl_now_ms)
run_gen other --tenant other --api-key "$OTHER_KEY" --link-key "$OTHER_LINK" --other-tenant-link-key "$ACME_LINK" \
	--events 5000 --campaigns 2 --variants "" --campaign-prefix other --seed 2 --concurrency 4
METRICS=$(jq -c '.campaigns | to_entries[0].value.total | keys_unsorted' "$TL_TMP/acme.json")
[ "$(jq length <<<"$METRICS")" = 17 ] || tl_fail "ground truth has $(jq length <<<"$METRICS") metrics, want 17"

sent=$(jq .events_sent "$TL_TMP/acme.json")
counted=$(jq .events_counted "$TL_TMP/acme.json")
[ "$sent" -ge $((EVENTS * 9 / 10)) ] || tl_fail "gen submitted only $sent events (asked for about $EVENTS)"
gen_ms=$((t1 - t0))
gen_rate=$(sed -n 's/.* \([0-9]*\) events\/s.*/\1/p' "$TL_TMP/acme.gen.log" | tail -n 1)
tl_log "gen acme: $sent events submitted ($counted counted) in $gen_ms ms: ${gen_rate:-?} events/s"

# ---- 2. catch-up and exact counts ----

ACME_WANT=$(totals "$TL_TMP/acme.json")
OTHER_WANT=$(totals "$TL_TMP/other.json")
wait_counts acme "$ACME_KEY" "$ACME_WANT" "$CATCHUP_TIMEOUT"
acme_catchup=$CAUGHT_MS
wait_counts other "$OTHER_KEY" "$OTHER_WANT" 60
check_variants acme "$ACME_KEY" "$TL_TMP/acme.json"
check_variants other "$OTHER_KEY" "$TL_TMP/other.json"
e2e_ms=$((gen_ms + acme_catchup))
tl_log "RESULT: gen $sent events at ${gen_rate:-?} events/s; catch-up after gen $acme_catchup ms;" \
	"end to end $((counted * 1000 / (e2e_ms > 0 ? e2e_ms : 1))) counted events/s"

# ---- 3. tenant isolation ----

acme_list=$(api_totals "$ACME_KEY" | jq -c 'keys')
other_list=$(api_totals "$OTHER_KEY" | jq -c 'keys')
[ "$acme_list" = "$(jq -c 'keys' <<<"$ACME_WANT")" ] || tl_fail "acme sees campaigns $acme_list"
[ "$other_list" = "$(jq -c 'keys' <<<"$OTHER_WANT")" ] || tl_fail "other sees campaigns $other_list"
jq -e --argjson a "$acme_list" --argjson o "$other_list" '($a - $o) == $a' <<<null >/dev/null ||
	tl_fail "acme and other share campaign names: $acme_list / $other_list"
# one tenant's key on the other's campaign: 404, or a campaign with nothing counted
cross() {
	local path=$1 key=$2 status body
	status=$(tl_http_status "$TL_API$path" -H "Authorization: Bearer $key")
	case $status in
	404) ;;
	200)
		body=$(tl_api_get "$path" "$key")
		jq -e '[.counts[]] | all(. == 0)' <<<"$body" >/dev/null || tl_fail "cross-tenant read of $path: $body"
		;;
	*) tl_fail "cross-tenant read of $path answered $status" ;;
	esac
}
cross /v1/campaigns/camp-0/metrics "$OTHER_KEY"
cross /v1/campaigns/other-0/metrics "$ACME_KEY"
status=$(tl_http_status "$TL_API/v1/campaigns" -H "Authorization: Bearer tk_not_a_key")
[ "$status" = 401 ] || tl_fail "an unknown API key got $status, want 401"
status=$(tl_http_status "$TL_API/v1/campaigns")
[ "$status" = 401 ] || tl_fail "no API key got $status, want 401"
tl_log "isolation: each key sees only its own campaigns"

# ---- 4. restart: nothing lost, nothing counted twice ----

tl_stop_serve 60
# started under a low soft open-file limit, which it raises to the hard one
# (every keep-alive connection is a descriptor)
hard_nofile=$(ulimit -Hn)
if [ "$hard_nofile" != unlimited ] && [ "$hard_nofile" -gt 512 ]; then ulimit -Sn 512; fi
tl_start_serve serve2 "$DATA"
soft_nofile=$(awk '/^Max open files/ {print $4}' "/proc/$TL_SERVE_PID/limits")
[ "$soft_nofile" = "$hard_nofile" ] || tl_fail "serve runs with an open-file limit of $soft_nofile, want $hard_nofile"
wait_counts "acme after restart" "$ACME_KEY" "$ACME_WANT" 60
wait_counts "other after restart" "$OTHER_KEY" "$OTHER_WANT" 30

run_gen after --tenant acme --api-key "$ACME_KEY" --link-key "$ACME_LINK" \
	--events 4000 --campaigns 2 --variants A,B --campaign-prefix after --seed 3 --concurrency 4
ACME_WANT=$(totals "$TL_TMP/acme.json" "$TL_TMP/after.json")
wait_counts "acme after more events" "$ACME_KEY" "$ACME_WANT" 120
check_variants "acme (after)" "$ACME_KEY" "$TL_TMP/after.json"
wait_counts "other unchanged" "$OTHER_KEY" "$OTHER_WANT" 10

tl_stop_serve 60
tl_log "PASS"
