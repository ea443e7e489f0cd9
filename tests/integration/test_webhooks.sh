#!/usr/bin/env bash
# test_webhooks.sh — provider webhooks end to end against `tally serve` (issue 5):
#
#  1. tenants acme, beta and gamma; real credentials for acme and beta set with
#     `tally tenant set`: a fresh ECDSA P-256 key pair per tenant (SendGrid signs
#     with the private key, tally gets the base64 DER public key), random
#     Mailgun signing keys, Postmark Basic auth, SparkPost Basic auth (acme) or
#     token header (beta). gamma has no credential at all.
#     SES: acme runs with ses_verify=false — an SNS signature can only be
#     checked against a certificate fetched from sns.<region>.amazonaws.com,
#     which a test cannot sign with — but keeps ses_topic_arn, so a foreign
#     topic is refused; beta keeps verification on and every SES post to it
#     (unsigned, or with a certificate URL off amazonaws.com) is refused.
#  2. webhook_payloads.py generates, signed for real, a mixed stream for acme
#     and beta: every provider, several campaigns and A/B variants (through the
#     tally_campaign/tally_variant/tally_recipient custom fields and the
#     providers' own campaign fields), every event kind each provider maps
#     (delivered, bounce hard/soft/block, deferred, dropped, complaint,
#     unsubscribe, open, machine open, click, bot click), dead letters, pings,
#     retries of the same batches (same bytes; re-signed with a fresh timestamp;
#     split differently; a Mailgun retry with a new token and the same event id)
#     and, interleaved, requests that must be refused (bad signatures and
#     credentials, stale timestamps, replayed Mailgun tokens, the other tenant's
#     key, a malformed body). It writes the exact counts tally must reach.
#  3. posts the stream in order, checking each answer's status and
#     {"accepted":N,"dead":M}; waits (bounded) for catch-up; compares every
#     metric of every campaign and variant, first/last event times, the
#     collector's and aggregator's counters, with the expected numbers.
#  4. refused requests only (each provider, both tenants, gamma, a body over
#     the size limit): the collector's record counters read before and after
#     are identical; the same signed Mailgun request posted 12 times at once
#     passes exactly once, a SendGrid batch posted 12 times at once is counted
#     once (campaign "race"); then a sentinel batch per tenant
#     (64 recipients: every partition) is counted, and every other campaign is
#     exactly as before the refused requests.
#  5. tenant isolation: each key sees exactly its campaigns (acme and beta
#     share a campaign name and even SendGrid event ids, counted per tenant).
#  6. a Mailgun signing key rotated with `tally tenant set` while serve runs:
#     the new key is accepted, the old one refused.
#
# Env: TALLY_BIN (required), TALLY_WH_SEED (generator seed, default 1),
# TALLY_WH_CATCHUP_TIMEOUT seconds (default 30), TALLY_KEEP_TMP=1.
TL_TEST_NAME=webhooks
. "$(dirname "$0")/lib.sh"

command -v python3 >/dev/null || tl_fail "python3 is required (scripts/deps.sh --test)"
command -v openssl >/dev/null || tl_fail "the openssl CLI is required (scripts/deps.sh --test)"

HERE=$(cd "$(dirname "$0")" && pwd)
SEED=${TALLY_WH_SEED:-1}
CATCHUP_TIMEOUT=${TALLY_WH_CATCHUP_TIMEOUT:-30}
RACE_COPIES=12
DATA="$TL_TMP/data"
GEN="$TL_TMP/gen"
mkdir -p "$DATA" "$GEN"
T_START=$(tl_now_ms)

# ---- 1. tenants and credentials -------------------------------------------

tenant_add() {
	local out
	out=$("$TALLY_BIN" tenant add "$1" --data "$DATA") || tl_fail "tally tenant add $1 failed"
	jq -r .api_key <<<"$out"
}
tenant_set() {
	"$TALLY_BIN" tenant set "$@" --data "$DATA" >/dev/null || tl_fail "tally tenant set $1 failed"
}
ec_key() { # NAME: a fresh P-256 private key (PEM); prints its path
	openssl ecparam -name prime256v1 -genkey -noout -out "$TL_TMP/$1.pem" 2>/dev/null ||
		tl_fail "openssl cannot generate a P-256 key"
	echo "$TL_TMP/$1.pem"
}
ec_pub_b64() { openssl ec -in "$1" -pubout -outform DER 2>/dev/null | base64 -w0; }
secret() { openssl rand -hex "${1:-24}"; }

ACME_KEY=$(tenant_add acme)
BETA_KEY=$(tenant_add beta)
GAMMA_KEY=$(tenant_add gamma)

ACME_SG=$(ec_key sendgrid-acme)
BETA_SG=$(ec_key sendgrid-beta)
ROGUE_SG=$(ec_key sendgrid-rogue)
ACME_MG=$(secret) BETA_MG=$(secret)
ACME_PM="pm-acme:$(secret 12)" BETA_PM="pm-beta:$(secret 12)"
ACME_SP="sp-acme:$(secret 12)" BETA_SP="token-$(secret 16)"
ACME_ARN="arn:aws:sns:us-east-1:123456789012:tally-acme"
BETA_ARN="arn:aws:sns:eu-west-1:123456789012:tally-beta"

tenant_set acme "sendgrid_public_key=$(ec_pub_b64 "$ACME_SG")" "mailgun_signing_key=$ACME_MG" \
	"postmark_auth=$ACME_PM" "sparkpost_auth=$ACME_SP" ses_verify=false "ses_topic_arn=$ACME_ARN"
# a PEM block is accepted as well as the bare base64 SendGrid shows
tenant_set beta "sendgrid_public_key=$(openssl ec -in "$BETA_SG" -pubout 2>/dev/null)" \
	"mailgun_signing_key=$BETA_MG" "postmark_auth=$BETA_PM" "sparkpost_auth=$BETA_SP" ses_verify=true \
	"ses_topic_arn=$BETA_ARN"

tl_start_serve serve "$DATA"

# ---- 2. the stream ----------------------------------------------------------

jq -n --argjson now "$(tl_now_ms)" --argjson seed "$SEED" \
	--arg acme_sg "$ACME_SG" --arg beta_sg "$BETA_SG" --arg rogue "$ROGUE_SG" \
	--arg acme_mg "$ACME_MG" --arg beta_mg "$BETA_MG" --arg acme_pm "$ACME_PM" --arg beta_pm "$BETA_PM" \
	--arg acme_sp "$ACME_SP" --arg beta_sp "$BETA_SP" --arg acme_arn "$ACME_ARN" --arg beta_arn "$BETA_ARN" \
	--argjson copies "$RACE_COPIES" \
	'{now_ms: $now, seed: $seed, rogue_sendgrid_key: $rogue, bare_tenant: "gamma", race_copies: $copies,
	  tenants: {
	    acme: {sendgrid_key: $acme_sg, mailgun_signing_key: $acme_mg, postmark_auth: $acme_pm,
	           sparkpost_auth: $acme_sp, sparkpost_mode: "basic", ses_verify: false, ses_topic_arn: $acme_arn},
	    beta: {sendgrid_key: $beta_sg, mailgun_signing_key: $beta_mg, postmark_auth: $beta_pm,
	           sparkpost_auth: $beta_sp, sparkpost_mode: "token", ses_verify: true, ses_topic_arn: $beta_arn}}}' \
	>"$GEN/config.json"
python3 "$HERE/webhook_payloads.py" --config "$GEN/config.json" --out "$GEN" 2>"$GEN/gen.log" ||
	tl_fail "webhook_payloads.py failed: $(cat "$GEN/gen.log")"
tl_log "$(cat "$GEN/gen.log")"
EXPECTED="$GEN/expected.json"
METRICS=$(jq -c .metrics "$EXPECTED")

# ---- helpers -------------------------------------------------------------------

# post_phase PHASE: posts the phase's requests in plan order through one curl
# process (keep-alive), then checks every status and every 200 answer's
# {"accepted":N,"dead":M}. Fails listing every mismatch.
post_phase() {
	local phase=$1 cfg="$GEN/curl-$1.cfg" res="$GEN/results-$1.txt" bad=0 n=0
	local seq ph path status acc dead note got body
	mkdir -p "$GEN/resp"
	: >"$cfg"
	while IFS=$'\t' read -r seq ph path status acc dead note; do
		[ "$ph" = "$phase" ] || continue
		[ "$n" = 0 ] || echo "next" >>"$cfg"
		printf 'url = "%s%s"\nheader = "@%s/req/%s.hdr"\ndata-binary = "@%s/req/%s.body"\noutput = "%s/resp/%s"\nwrite-out = "%s %%{http_code}\\n"\nmax-time = 10\nsilent\nshow-error\n' \
			"$TL_COLLECTOR" "$path" "$GEN" "$seq" "$GEN" "$seq" "$GEN" "$seq" "$seq" >>"$cfg"
		n=$((n + 1))
	done <"$GEN/plan.tsv"
	local t0
	t0=$(tl_now_ms)
	timeout 120 curl -K "$cfg" >"$res" 2>"$GEN/curl-$phase.err" || true
	while IFS=$'\t' read -r seq ph path status acc dead note; do
		[ "$ph" = "$phase" ] || continue
		got=$(sed -n "s/^$seq //p" "$res")
		body=$(cat "$GEN/resp/$seq" 2>/dev/null || true)
		if [ "$got" != "$status" ]; then
			tl_log "request $seq ($note) POST $path: status $got, want $status: $body"
			bad=$((bad + 1))
		elif [ "$status" = 200 ] && [ "$body" != "{\"accepted\":$acc,\"dead\":$dead}" ]; then
			tl_log "request $seq ($note): answered $body, want {\"accepted\":$acc,\"dead\":$dead}"
			bad=$((bad + 1))
		fi
	done <"$GEN/plan.tsv"
	[ "$bad" = 0 ] || tl_fail "$phase: $bad of $n requests were not answered as expected (seed $SEED)"
	tl_log "$phase: $n requests answered as expected in $(($(tl_now_ms) - t0)) ms"
}

# collector_counts: the collector's and aggregator's counters from /metrics, as JSON.
collector_counts() {
	curl -sS -f --max-time 10 "$TL_API/metrics" | awk '
		/^tally_collector_batches_total\{result="/ { split($1, a, "\""); printf "\"%s\":%s,", a[2], $2 }
		/^tally_events_accepted_total\{topic="/    { split($1, a, "\""); sub(/^dead.*/, "dead", a[2])
		                                             printf "\"%s\":%s,", a[2], $2 }
		/^tally_aggregate_events_total /           { printf "\"agg_events\":%s,", $2 }
		/^tally_aggregate_duplicates_total /       { printf "\"agg_duplicates\":%s,", $2 }
		BEGIN { printf "{" } END { printf "\"_\":0}\n" }' | jq -S -c 'del(._)'
}
want_counts() { # PHASE: the counters expected after it
	jq -S -c --arg p "$1" '.phases[$p] | .collector + {too_large: 0, unavailable: 0,
		agg_events: .aggregate.events, agg_duplicates: .aggregate.duplicates}' "$EXPECTED"
}

# api_view KEY: {campaign: {total: {17 metrics}, first_event, last_event}} from /v1/campaigns.
api_view() {
	local body
	body=$(tl_api_get /v1/campaigns "$1") || return 1
	jq -S -c --argjson ks "$METRICS" '[.campaigns[] | {key: .campaign, value: {
		total: (.counts as $c | reduce $ks[] as $k ({}; .[$k] = $c[$k])),
		first_event, last_event}}] | from_entries' <<<"$body"
}
want_view() { # PHASE TENANT
	jq -S -c --arg p "$1" --arg t "$2" '.phases[$p].truth[$t] | map_values({total, first_event, last_event})' "$EXPECTED"
}

# variant_view KEY PHASE TENANT: {campaign: {variants: {v: counts}}} through
# /v1/campaigns/<c>/metrics?variant=V for every variant the phase expects and
# for "" (the events without a variant: 404 unless the campaign has none),
# fetched by one curl process.
variant_view() {
	local key=$1 p=$2 t=$3 cj vj cu vu n=0 j out="$GEN/variants-$3.ndjson" cfg="$GEN/variants-$3.cfg"
	local -a cjs=() vjs=() codes=()
	: >"$cfg"
	# names as JSON strings (cj, vj) and percent-encoded (cu, vu)
	while IFS=$'\t' read -r cj vj cu vu; do
		[ "$n" = 0 ] || echo "next" >>"$cfg"
		printf 'url = "%s/v1/campaigns/%s/metrics?variant=%s"\nheader = "Authorization: Bearer %s"\noutput = "%s/vv-%s-%s.json"\nwrite-out = "%%{http_code}\\n"\nmax-time = 10\nsilent\nshow-error\n' \
			"$TL_API" "$cu" "$vu" "$key" "$GEN" "$t" "$n" >>"$cfg"
		cjs+=("$cj") vjs+=("$vj")
		n=$((n + 1))
	done < <(jq -r --arg p "$p" --arg t "$t" '.phases[$p].truth[$t] | to_entries[] | .key as $c
		| ("", (.value.variants | keys[] | select(. != ""))) | [($c | tojson), tojson, ($c | @uri), @uri] | @tsv' "$EXPECTED")
	[ "$n" = 0 ] || mapfile -t codes < <(curl -K "$cfg")
	: >"$out"
	for ((j = 0; j < n; j++)); do
		case ${codes[j]:-} in
		404) continue ;;
		200) printf '{"c":%s,"v":%s,"r":%s}\n' "${cjs[j]}" "${vjs[j]}" "$(<"$GEN/vv-$t-$j.json")" >>"$out" ;;
		*) tl_fail "GET /v1/campaigns/${cjs[j]}/metrics?variant=${vjs[j]} answered ${codes[j]:-nothing}" ;;
		esac
	done
	jq -S -c -s --argjson ks "$METRICS" 'reduce .[] as $x ({};
		.[$x.c].variants[$x.v] = ($x.r.counts as $c | reduce $ks[] as $k ({}; .[$k] = $c[$k])))' "$out"
}
want_variants() { # PHASE TENANT
	jq -S -c --arg p "$1" --arg t "$2" '.phases[$p].truth[$t] | with_entries(select(.value.variants != {}))
		| map_values({variants})' "$EXPECTED"
}

declare -A WANT_VIEW
_caught_up() { # PHASE: the aggregator's event count and every tenant's campaign totals
	local t key
	[ "$(collector_counts | jq .agg_events)" = "$WANT_AGG_EVENTS" ] || return 1
	for t in acme beta gamma; do
		key=${t^^}_KEY
		[ "$(api_view "${!key}")" = "${WANT_VIEW[$t]}" ] || return 1
	done
}

# check_phase PHASE: waits (bounded) for catch-up, checks that it holds for
# 1 s, then compares everything exactly, printing a diff on failure.
check_phase() {
	local p=$1 t key deadline t0 got want i
	for t in acme beta gamma; do WANT_VIEW[$t]=$(want_view "$p" "$t"); done
	WANT_AGG_EVENTS=$(jq --arg p "$p" '.phases[$p].aggregate.events' "$EXPECTED")
	t0=$(tl_now_ms)
	deadline=$((t0 + CATCHUP_TIMEOUT * 1000))
	until _caught_up "$p"; do
		if [ "$(tl_now_ms)" -ge "$deadline" ]; then
			tl_log "$p: not caught up after ${CATCHUP_TIMEOUT}s (seed $SEED); expected vs got:"
			tl_json_diff "$(want_counts "$p")" "$(collector_counts)" >&2
			for t in acme beta gamma; do
				key=${t^^}_KEY
				echo "--- $t" >&2
				tl_json_diff "${WANT_VIEW[$t]}" "$(api_view "${!key}")" >&2
			done
			tl_fail "$p: counts differ from the expected numbers"
		fi
		sleep 0.1
	done
	local caught=$(($(tl_now_ms) - t0))
	for i in 1 2 3; do
		sleep 0.3
		_caught_up "$p" || tl_fail "$p: counts changed after reaching the expected numbers"
	done
	local counts
	counts=$(collector_counts)
	want=$(want_counts "$p")
	if [ "$counts" != "$want" ]; then
		tl_json_diff "$want" "$counts" >&2
		tl_fail "$p: collector/aggregator counters differ from the expected ones"
	fi
	for t in acme beta gamma; do
		key=${t^^}_KEY
		got=$(variant_view "${!key}" "$p" "$t")
		want=$(want_variants "$p" "$t")
		if [ "$got" != "$want" ]; then
			tl_json_diff "$want" "$got" >&2
			tl_fail "$p: $t per-variant counts differ from the expected numbers"
		fi
	done
	tl_log "$p: caught up in $caught ms; every metric of $(jq --arg p "$p" '[.phases[$p].truth[] | length] | add' "$EXPECTED")" \
		"campaigns (totals, each variant and no-variant, first/last event) equals the expected numbers; counters $counts"
}

# ---- 3. the mixed stream ---------------------------------------------------------

post_phase main
check_phase main

# ---- 4. refused requests change nothing ------------------------------------------

before_counts=$(collector_counts)
before_acme=$(api_view "$ACME_KEY")$(variant_view "$ACME_KEY" main acme)
before_beta=$(api_view "$BETA_KEY")$(variant_view "$BETA_KEY" main beta)
post_phase bad
after_counts=$(collector_counts)
# nothing was written: the record counters did not move; the refusals were counted
jq -e -n --argjson b "$before_counts" --argjson a "$after_counts" '
	($b | del(.unauthorized, .bad_request)) == ($a | del(.unauthorized, .bad_request))' >/dev/null || {
	tl_json_diff "$before_counts" "$after_counts" >&2
	tl_fail "refused requests changed the collector's record counters"
}
[ "$after_counts" = "$(want_counts bad)" ] || {
	tl_json_diff "$(want_counts bad)" "$after_counts" >&2
	tl_fail "refused requests were not counted as unauthorized/bad_request as expected"
}

# concurrent copies of one signed Mailgun request: one passes (the race campaign)

post_race() {
	local seq ph path status acc dead note i f cfg="$GEN/curl-race.cfg" res
	while IFS=$'\t' read -r seq ph path status acc dead note; do
		[ "$ph" = race ] || continue
		: >"$cfg"
		for i in $(seq "$RACE_COPIES"); do
			[ "$i" = 1 ] || echo "next" >>"$cfg"
			printf 'url = "%s%s"\nheader = "@%s/req/%s.hdr"\ndata-binary = "@%s/req/%s.body"\noutput = "%s/resp/%s.%s"\nwrite-out = "%%{http_code}\\n"\nmax-time = 10\nsilent\n' \
				"$TL_COLLECTOR" "$path" "$GEN" "$seq" "$GEN" "$seq" "$GEN" "$seq" "$i" >>"$cfg"
		done
		# the answers as a multiset, "1x200+11x403"
		res=$(timeout 60 curl -sS --no-progress-meter --parallel --parallel-immediate --parallel-max "$RACE_COPIES" \
			-K "$cfg" | sort | uniq -c | awk '{ printf "%s%sx%s", (NR > 1 ? "+" : ""), $1, $2 }')
		[ "$res" = "$status" ] || tl_fail "$note ($path): answered $res, want $status"
		for f in "$GEN/resp/$seq".*; do
			grep -q '^{"error"' "$f" && continue
			[ "$(cat "$f")" = "{\"accepted\":$acc,\"dead\":$dead}" ] ||
				tl_fail "$note: a copy answered $(cat "$f"), want {\"accepted\":$acc,\"dead\":$dead}"
		done
		tl_log "$note ($path): $res"
	done <"$GEN/plan.tsv"
}
post_race

post_phase sentinel
check_phase sentinel
# everything but the sentinel and race campaigns is as it was before the refused requests
after_acme=$(api_view "$ACME_KEY" | jq -S -c 'del(.sentinel, .race)')$(variant_view "$ACME_KEY" main acme)
after_beta=$(api_view "$BETA_KEY" | jq -S -c 'del(.sentinel, .race)')$(variant_view "$BETA_KEY" main beta)
[ "$before_acme" = "$after_acme" ] || tl_fail "acme's counts changed across the refused requests"
[ "$before_beta" = "$after_beta" ] || tl_fail "beta's counts changed across the refused requests"
tl_log "refused requests: $(awk -F'\t' '$2 == "bad"' "$GEN/plan.tsv" | wc -l) requests, nothing written, counts unchanged"

# ---- 5. tenant isolation ------------------------------------------------------------

for t in acme beta gamma; do
	key=${t^^}_KEY
	got=$(tl_api_get /v1/campaigns "${!key}" | jq -c '[.campaigns[].campaign]')
	want=$(jq -c --arg t "$t" '.phases.sentinel.truth[$t] | keys' "$EXPECTED")
	[ "$got" = "$want" ] || tl_fail "$t sees campaigns $got, want $want"
done
[ "$(api_view "$ACME_KEY" | jq -c '."shared-promo".total')" != "$(api_view "$BETA_KEY" | jq -c '."shared-promo".total')" ] ||
	tl_fail "acme's and beta's shared-promo have the same counts: the test does not tell them apart"
for x in "launch $ACME_KEY" "spring-sale $BETA_KEY" "spring-sale $GAMMA_KEY" "forged-campaign $ACME_KEY" "forged-campaign $BETA_KEY"; do
	set -- $x
	status=$(tl_http_status "$TL_API/v1/campaigns/$1/metrics" -H "Authorization: Bearer $2")
	[ "$status" = 404 ] || tl_fail "GET /v1/campaigns/$1/metrics with another tenant's key answered $status, want 404"
done
tl_log "isolation: each tenant sees exactly its campaigns; same-named campaigns and event ids counted per tenant"

# ---- 6. a credential changed with `tally tenant set` applies without a restart ----

mg_post() { # TENANT KEY: a freshly signed Mailgun "stored" event (a dead letter: counts nothing); prints the status
	local ts tok sig
	ts=$(date +%s) tok=$(openssl rand -hex 25)
	sig=$(printf '%s%s' "$ts" "$tok" | openssl dgst -sha256 -hmac "$2" -r | cut -d' ' -f1)
	tl_http_status "$TL_COLLECTOR/v1/webhooks/mailgun/$1" -H 'Content-Type: application/json' --data-binary \
		"{\"signature\":{\"timestamp\":\"$ts\",\"token\":\"$tok\",\"signature\":\"$sig\"},\"event-data\":{\"event\":\"stored\",\"id\":\"rot-$tok\",\"timestamp\":$ts,\"recipient\":\"x@rot.example\"}}"
}
[ "$(mg_post acme "$ACME_MG")" = 200 ] || tl_fail "a Mailgun request signed in the shell was refused"
NEW_MG=$(secret)
tenant_set acme "mailgun_signing_key=$NEW_MG"
_rotated() { [ "$(mg_post acme "$NEW_MG")" = 200 ]; }
tl_wait_for 15 "the rotated Mailgun signing key to be picked up" _rotated
[ "$(mg_post acme "$ACME_MG")" = 403 ] || tl_fail "the old Mailgun signing key is still accepted after rotation"
tl_log "rotation: the new Mailgun signing key works and the old one is refused, without a restart"

tl_stop_serve 30
tl_log "PASS in $(($(tl_now_ms) - T_START)) ms (seed $SEED)"
