#!/usr/bin/env bash
# test_batch.sh — archive, batch recompute, reconciliation and rollback
# against the real binary (issue 6, DESIGN.md §8):
#
#  1. `tally serve` (archiver included) on free ports, with a tally.conf and
#     rolls that never close by themselves; `tally gen` drives events for acme
#     (duplicates, retried and bad batches, forged and foreign tokens) and a
#     small run for other; waits until the real-time counts equal the ground
#     truth;
#  2. kill -9 while the archiver holds every record in open rolls (hidden
#     temporaries); serve again with 1 s rolls: the archiver drops the
#     temporaries, archives from the last committed offsets and commits every
#     record (its lag gauges in /metrics reach 0);
#  3. checks the archive layout: dt=YYYY-MM-DD directories, file names with
#     offset ranges, no temporaries, zstd NDJSON that reads back;
#  4. `tally batch` over every archived day, twice (the second run replaces
#     the first): the batch counts (?source=batch) equal the ground truth,
#     metric by metric, per campaign and variant; `tally reconcile` reports no
#     difference and exits 0;
#  5. rollback: read-source = batch in tally.conf + SIGHUP switches the
#     API's default source without a restart, and back;
#  6. removes one event's effect from the real-time DB (sqlite3): reconcile
#     names exactly that campaign and metric and exits 1 (also with --json).
#
# Env: TALLY_BIN (required), TALLY_BATCH_EVENTS (default 40000), TALLY_KEEP_TMP=1.
TL_TEST_NAME=batch
. "$(dirname "$0")/lib.sh"

command -v sqlite3 >/dev/null || { echo "sqlite3 is required (scripts/deps.sh --test)" >&2; exit 1; }
command -v zstdcat >/dev/null || { echo "zstd is required (scripts/deps.sh --test)" >&2; exit 1; }

EVENTS=${TALLY_BATCH_EVENTS:-40000}
DATA="$TL_TMP/data"
CONF="$TL_TMP/tally.conf"
mkdir -p "$DATA"
printf '[api]\nread-source = realtime\n' >"$CONF"

acme=$("$TALLY_BIN" tenant add acme --data "$DATA") || tl_fail "tenant add acme"
other=$("$TALLY_BIN" tenant add other --data "$DATA") || tl_fail "tenant add other"
ACME_KEY=$(jq -r .api_key <<<"$acme")
ACME_LINK=$(jq -r .link_key <<<"$acme")
OTHER_KEY=$(jq -r .api_key <<<"$other")
OTHER_LINK=$(jq -r .link_key <<<"$other")

tl_start_serve serve1 "$DATA" --config "$CONF" --archive-roll-interval 1h --archive-roll-bytes 1G

run_gen() {
	local name=$1
	shift
	local rc=0
	timeout 600 "$TALLY_BIN" gen --collector "$TL_COLLECTOR" --out "$TL_TMP/$name.json" --quiet "$@" \
		2>"$TL_TMP/$name.gen.log" || rc=$?
	[ "$rc" = 0 ] || tl_fail "gen $name exited $rc: $(tail -n 5 "$TL_TMP/$name.gen.log")"
	[ "$(jq .errors "$TL_TMP/$name.json")" = 0 ] || tl_fail "gen $name reports errors"
}
run_gen acme --tenant acme --api-key "$ACME_KEY" --link-key "$ACME_LINK" --other-tenant-link-key "$OTHER_LINK" \
	--events "$EVENTS" --campaigns 4 --variants A,B --seed 11 --concurrency 8 --junk
run_gen other --tenant other --api-key "$OTHER_KEY" --link-key "$OTHER_LINK" \
	--events 3000 --campaigns 2 --variants "" --campaign-prefix other --seed 12 --concurrency 4
METRICS=$(jq -c '.campaigns | to_entries[0].value.total | keys_unsorted' "$TL_TMP/acme.json")

# {"<campaign>": {17 metrics}} of a truth file, and of the API for a source
truth_totals() { jq -S '.campaigns | map_values(.total)' "$1"; }
api_totals() { # KEY [SOURCE]
	local body
	body=$(tl_api_get "/v1/campaigns${2:+?source=$2}" "$1") || return 1
	jq -S --argjson ks "$METRICS" \
		'[.campaigns[] | {key: .campaign, value: (.counts as $c | reduce $ks[] as $k ({}; .[$k] = $c[$k]))}]
		 | from_entries' <<<"$body"
}
counts_equal() { [ "$(api_totals "$1" "${3:-}")" = "$2" ]; }

ACME_WANT=$(truth_totals "$TL_TMP/acme.json")
OTHER_WANT=$(truth_totals "$TL_TMP/other.json")
tl_wait_for 300 "real-time counts of acme == ground truth" counts_equal "$ACME_KEY" "$ACME_WANT"
tl_wait_for 60 "real-time counts of other == ground truth" counts_equal "$OTHER_KEY" "$OTHER_WANT"
tl_log "real-time counts equal the ground truth"

# The archiver has committed everything: a lag gauge for every partition of
# both topics, all 0, and still so 5 s later (the gauges learn the stream's
# end one partition every 250 ms).
archive_zero() {
	local m
	m=$(curl -sS --max-time 5 "$TL_API/metrics") || return 1
	[ "$(grep -c '^tally_archive_lag_records' <<<"$m")" = 16 ] || return 1
	! grep '^tally_archive_lag_records' <<<"$m" | grep -vq ' 0$'
}
archive_caught_up() {
	archive_zero || return 1
	local deadline=$(($(date +%s) + 5))
	while [ "$(date +%s)" -lt "$deadline" ]; do
		archive_zero || return 1
		sleep 0.5
	done
}
archive_lag() { # prints the summed lag of every partition
	curl -sS --max-time 5 "$TL_API/metrics" | awk '/^tally_archive_lag_records/ {s += $2} END {print s + 0}'
}
tmps() { find "$DATA/archive" -name '.*.tmp' | wc -l; }
tl_wait_for 30 "the archiver to write temporaries" test "$(tmps)" -gt 0
[ "$(archive_lag)" -gt 0 ] || tl_fail "the archiver committed a roll it should hold open"
kill -KILL "$TL_SERVE_PID"
wait "$TL_SERVE_PID" 2>/dev/null || true
tl_log "serve1 killed with SIGKILL holding $(tmps) temporaries, $(find "$DATA/archive" -name '*.ndjson.zst' | wc -l) committed files"

tl_start_serve serve2 "$DATA" --config "$CONF" --archive-roll-interval 1s
tl_wait_for 60 "real-time counts of acme after the restart" counts_equal "$ACME_KEY" "$ACME_WANT"
tl_wait_for 60 "the archiver to commit every record" archive_caught_up
[ "$(tmps)" = 0 ] || tl_fail "temporaries left after recovery"

# ---- the archive layout ----

ARCH="$DATA/archive"
mapfile -t DAYS < <(find "$ARCH" -mindepth 1 -maxdepth 1 -type d -name 'dt=*' -printf '%f\n' | sed 's/^dt=//' | sort)
[ "${#DAYS[@]}" -ge 1 ] || tl_fail "no day directories in $ARCH"
FROM=${DAYS[0]}
TO=${DAYS[${#DAYS[@]} - 1]}
for d in "${DAYS[@]}"; do
	[[ $d =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$ ]] || tl_fail "bad day directory dt=$d"
done
bad=$(find "$ARCH" -regextype posix-extended -path "$ARCH/.locks" -prune -o -type f \
	! -regex '.*/dt=[0-9]{4}-[0-9]{2}-[0-9]{2}/(events|delivery)-p[0-9]+-[0-9]{20}-[0-9]{20}\.ndjson\.zst' -print | head -n 3)
[ -z "$bad" ] || tl_fail "unexpected files in the archive (temporaries?): $bad"
lines=$(find "$ARCH" -name '*.ndjson.zst' -print0 | xargs -0 zstdcat | wc -l)
f=$(find "$ARCH" -name 'delivery-*.ndjson.zst' | head -n 1)
zstdcat "$f" | jq -e 'select((.type | type) != "string" or (.ts | type) != "string")' >/dev/null &&
	tl_fail "archive lines of $f are not canonical events"
sent=$(($(jq .events_sent "$TL_TMP/acme.json") + $(jq .events_sent "$TL_TMP/other.json")))
tl_log "archive: days $FROM .. $TO, $(find "$ARCH" -name '*.ndjson.zst' | wc -l) files, $lines lines ($sent events submitted)"
[ "$lines" -gt 0 ] || tl_fail "the archive is empty"

# ---- batch, twice, and reconcile ----

batch() {
	"$TALLY_BIN" batch --from "$FROM" --to "$TO" --data "$DATA" --config "$CONF" >"$TL_TMP/batch.out" \
		2>"$TL_TMP/batch.err" || tl_fail "tally batch failed: $(cat "$TL_TMP/batch.err")"
	tl_log "$(head -n 1 "$TL_TMP/batch.out")"
}
batch
batch # a re-run replaces the days: the numbers must not double
grep -q ' 0 bad lines' "$TL_TMP/batch.out" || tl_fail "batch met bad lines: $(cat "$TL_TMP/batch.out")"

got=$(api_totals "$ACME_KEY" batch)
[ "$got" = "$ACME_WANT" ] || { tl_json_diff "$ACME_WANT" "$got" >&2; tl_fail "batch counts of acme != ground truth"; }
got=$(api_totals "$OTHER_KEY" batch)
[ "$got" = "$OTHER_WANT" ] || { tl_json_diff "$OTHER_WANT" "$got" >&2; tl_fail "batch counts of other != ground truth"; }
# per variant, metric by metric
for c in $(jq -r '.campaigns | keys[]' "$TL_TMP/acme.json"); do
	for v in $(jq -r --arg c "$c" '.campaigns[$c].variants | keys[] | select(. != "")' "$TL_TMP/acme.json"); do
		want=$(jq -S --arg c "$c" --arg v "$v" '.campaigns[$c].variants[$v]' "$TL_TMP/acme.json")
		got=$(tl_api_get "/v1/campaigns/$c/metrics?variant=$v&source=batch" "$ACME_KEY" |
			jq -S --argjson ks "$METRICS" '.counts as $c | reduce $ks[] as $k ({}; .[$k] = $c[$k])')
		[ "$got" = "$want" ] || { tl_json_diff "$want" "$got" >&2; tl_fail "batch $c/$v != ground truth"; }
	done
done
tl_log "batch counts equal the ground truth (campaigns and variants, every metric)"

reconcile() { # prints the output, returns the exit status
	local rc=0
	"$TALLY_BIN" reconcile --from "$FROM" --to "$TO" --data "$DATA" --config "$CONF" "$@" || rc=$?
	return $rc
}
rc=0
out=$(reconcile) || rc=$?
[ "$rc" = 0 ] || tl_fail "reconcile exited $rc on equal data: $out"
grep -q 'no differences' <<<"$out" || tl_fail "reconcile: $out"
rc=0
out=$(reconcile --json) || rc=$?
[ "$rc" = 0 ] && jq -e '.equal == true and (.differences | length) == 0 and .comparisons > 0' <<<"$out" >/dev/null ||
	tl_fail "reconcile --json on equal data ($rc): $out"
tl_log "reconcile: $(jq -c '{campaigns, comparisons, differences: (.differences | length)}' <<<"$out")"

# ---- rollback: the API's default source, switched by SIGHUP ----

source_of() { tl_api_get "/v1/campaigns/$1/metrics" "$ACME_KEY" | jq -r .source; }
C0=$(jq -r '.campaigns | keys[0]' "$TL_TMP/acme.json")
[ "$(source_of "$C0")" = realtime ] || tl_fail "default source is not realtime"
printf '[api]\nread-source = batch\n' >"$CONF"
kill -HUP "$TL_SERVE_PID"
served_batch() { [ "$(source_of "$C0")" = batch ]; }
tl_wait_for 10 "SIGHUP to switch the API to batch" served_batch
got=$(api_totals "$ACME_KEY")
[ "$got" = "$ACME_WANT" ] || tl_fail "the API serving batch by default differs from the ground truth"
printf '[api]\nread-source = realtime\n' >"$CONF"
kill -HUP "$TL_SERVE_PID"
served_realtime() { [ "$(source_of "$C0")" = realtime ]; }
tl_wait_for 10 "SIGHUP to switch the API back to realtime" served_realtime
tl_alive "$TL_SERVE_PID" || tl_fail "serve died on SIGHUP"
tl_log "rollback: SIGHUP switched the default source to batch and back, without a restart"

# ---- one event's effect removed from the real-time DB ----

tl_stop_serve 60
DB="$DATA/tally.db"
row=$(sqlite3 -separator '|' "$DB" \
	"SELECT campaign, variant, minute_ms FROM counts WHERE src=0 AND tenant='acme' AND clicks>0 ORDER BY campaign, minute_ms LIMIT 1")
IFS='|' read -r RC RV RM <<<"$row"
[ -n "$RC" ] || tl_fail "no real-time row with clicks to tamper with"
sqlite3 "$DB" "BEGIN;
UPDATE counts SET clicks=clicks-1 WHERE src=0 AND tenant='acme' AND campaign='$RC' AND variant='$RV' AND minute_ms=$RM;
UPDATE totals SET clicks=clicks-1 WHERE src=0 AND tenant='acme' AND campaign='$RC' AND variant='$RV';
COMMIT;" || tl_fail "sqlite3 update failed"
tl_log "removed one click of acme/$RC/$RV from the real-time tables"

rc=0
out=$(reconcile) || rc=$?
[ "$rc" = 1 ] || tl_fail "reconcile exited $rc after the tampering (want 1): $out"
echo "$out" >&2
rc=0
out=$(reconcile --json) || rc=$?
[ "$rc" = 1 ] || tl_fail "reconcile --json exited $rc after the tampering (want 1)"
named=$(jq -c '[.differences[] | {tenant, campaign, metric}] | unique' <<<"$out")
[ "$named" = "[{\"tenant\":\"acme\",\"campaign\":\"$RC\",\"metric\":\"clicks\"}]" ] ||
	tl_fail "reconcile named $named, want exactly acme/$RC/clicks"
jq -e --arg v "$RV" '(.differences | length) >= 1 and
	all(.differences[]; (.variant == $v or .variant == null) and .batch - .realtime == 1)' <<<"$out" >/dev/null ||
	tl_fail "reconcile differences are not the removed click: $out"
tl_log "reconcile names exactly acme/$RC clicks and exits 1"
tl_log "PASS"
