#!/usr/bin/env bash
# test_diskfull.sh — the data disk full (ENOSPC), then space back (issue 3).
#
# The data directory lives on a small tmpfs this test mounts (as root; the
# test is skipped, exit 77, where it cannot mount). Every role runs as its
# own process on it.
#
#  1. load (tally gen), then the disk is filled to the last page while the
#     pipeline may still be catching up;
#  2. full: POST /v1/events answers 503 with a JSON error (and Retry-After);
#     the open pixel still answers its GIF; hits that could not be written
#     are counted in tally_pixel_dropped_total; no role exits;
#  3. the filler is removed: nothing is restarted; the refused batches are
#     re-sent (202 now); more load; every count ends exactly on the truth —
#     the gen campaigns metric by metric, the re-sent batches once each, and
#     the pixel campaign with exactly the hits the collector recorded.
#
# Env: TALLY_BIN (required), TALLY_KEEP_TMP=1.
TL_TEST_NAME=diskfull
: "${TALLY_SRC:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$TALLY_SRC/tests/integration/lib.sh"
. "$TALLY_SRC/tests/chaos/roles_lib.sh"

MNT="$TL_TMP/mnt"
mkdir -p "$MNT"
skip() {
	echo "SKIPPED: $*" >&2
	rm -rf "$TL_TMP"
	trap - EXIT
	exit 77
}
[ "$(id -u)" = 0 ] || skip "needs root to mount a small tmpfs as the data disk"
mount -t tmpfs -o size=128m,mode=0755 tally-diskfull "$MNT" 2>"$TL_TMP/mount.err" ||
	skip "cannot mount a tmpfs here: $(cat "$TL_TMP/mount.err")"
unmount() {
	umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
}
# on exit: stop the processes, unmount, then lib.sh's cleanup
trap 'tl_cleanup_and_unmount $?' EXIT
tl_cleanup_and_unmount() {
	local rc=$1 pid
	for pid in "${TL_PIDS[@]}"; do
		tl_kill "$pid" 10
	done
	TL_PIDS=()
	unmount
	( exit "$rc" )
	tl_cleanup
}

DATA="$MNT/data"
mkdir -p "$DATA"
acme=$(tl_tenant_add "$DATA" acme)
ACME_KEY=$(jq -r .api_key <<<"$acme")
ACME_LINK=$(jq -r .link_key <<<"$acme")
tl_roles_init "$DATA"
tl_roles_start_all
declare -A PID0=()
for r in collect enrich aggregate api; do PID0[$r]=${TL_ROLE_PID[$r]}; done

gen() { # NAME FLAGS…
	local name=$1
	shift
	"$TALLY_BIN" gen --collector "$TL_COLLECTOR" --out "$TL_TMP/$name.json" --quiet --tenant acme \
		--api-key "$ACME_KEY" --link-key "$ACME_LINK" "$@" 2>"$TL_TMP/$name.gen.log" ||
		tl_fail "gen $name: $(tail -n 3 "$TL_TMP/$name.gen.log")"
	[ "$(jq .errors "$TL_TMP/$name.json")" = 0 ] || tl_fail "gen $name reports errors"
	grep -E '^gen: done' "$TL_TMP/$name.gen.log" >&2 || true
}
metric() { tl_metric "$TL_COLLECTOR" "$1"; }

# ---- 1. load, then fill the disk ----

gen before --events 20000 --campaigns 2 --campaign-prefix ga --seed 21 --concurrency 8
dd if=/dev/zero of="$MNT/filler" bs=1M status=none 2>/dev/null || true
dd if=/dev/zero of="$MNT/filler2" bs=4k status=none 2>/dev/null || true
tl_log "disk full: $(df -h --output=avail "$MNT" | tail -n 1 | tr -d ' ') left"

# ---- 2. full ----

# batch N FIRST: N lines of sent+delivered for campaign "full", ids from FIRST
batch() {
	local i
	for ((i = $2; i < $2 + $1; i++)); do
		printf '{"type":"sent","campaign":"full","recipient":"r-%d","id":"full-s-%d","ts":"2026-12-03T18:00:00Z"}\n' "$i" "$i"
		printf '{"type":"delivered","campaign":"full","recipient":"r-%d","id":"full-d-%d","ts":"2026-12-03T18:00:01Z"}\n' "$i" "$i"
	done
}
post() { # FILE: prints the status; the body goes to FILE.out
	curl -sS -o "$1.out" -D "$1.hdr" -w '%{http_code}' --max-time 30 -H "Authorization: Bearer $ACME_KEY" \
		-H 'Content-Type: application/x-ndjson' --data-binary "@$1" "$TL_COLLECTOR/v1/events" || true
}
# The log preallocates its active segments (up to 1 MiB ahead per
# partition), so batches fit into that space first: post until two are
# refused. A batch is ~100 KiB; the bound is far above what 40 partitions'
# preallocation holds.
REFUSED=()
NB=0
while [ "${#REFUSED[@]}" -lt 2 ]; do
	[ "$NB" -lt 1000 ] || tl_fail "no batch was refused on a full disk after $NB batches"
	f="$TL_TMP/full$NB.ndjson"
	batch 400 $((NB * 400)) >"$f"
	NB=$((NB + 1))
	st=$(post "$f")
	case $st in
	503)
		jq -e '.error.code == "unavailable" and (.error.message | length > 0)' "$f.out" >/dev/null ||
			tl_fail "503 without a JSON error: $(cat "$f.out")"
		grep -qi '^retry-after:' "$f.hdr" || tl_fail "503 without Retry-After"
		REFUSED+=("$f")
		;;
	202) ;;
	*) tl_fail "POST /v1/events on a full disk answered $st: $(cat "$f.out")" ;;
	esac
done
tl_log "full disk: $((NB - ${#REFUSED[@]})) event batches fit in the space left, then ${#REFUSED[@]} answered 503 $(jq -c . "${REFUSED[0]}.out")"

# pixel hits: the GIF always; recorded while a page has room, then dropped
PIX=$("$TALLY_BIN" link open --data "$DATA" --tenant acme --campaign fullpix --recipient r-1 --base-url "$TL_COLLECTOR")
acc0=$(metric 'tally_events_accepted_total{topic="events"}')
drop0=$(metric tally_pixel_dropped_total)
# in rounds of 200 hits over one keep-alive connection, until some were
# dropped (the partition's preallocated space holds a few thousand)
HITS=0
urls=()
for _ in $(seq 200); do urls+=("$PIX"); done
while :; do
	[ "$HITS" -lt 40000 ] || tl_fail "no pixel hit was dropped on a full disk after $HITS hits"
	# the bodies to a file (checked: 200 GIFs back to back), one status line per hit
	curl -sS -w '%{stderr}%{http_code} %{content_type} %{size_download}\n' --max-time 60 "${urls[@]}" \
		>"$TL_TMP/pix.gifs" 2>"$TL_TMP/pix.codes" || tl_fail "pixel requests on a full disk failed"
	bad=$(grep -cv '^200 image/gif 43$' "$TL_TMP/pix.codes" || true)
	[ "$bad" = 0 ] || tl_fail "pixel on a full disk: not the 43-byte GIF: $(grep -v '^200 image/gif 43$' "$TL_TMP/pix.codes" | head -n 1)"
	[ "$(stat -c %s "$TL_TMP/pix.gifs")" = $((43 * ${#urls[@]})) ] && [ "$(head -c 6 "$TL_TMP/pix.gifs")" = GIF89a ] ||
		tl_fail "pixel on a full disk: not the 43-byte GIF"
	HITS=$((HITS + $(wc -l <"$TL_TMP/pix.codes")))
	[ "$(metric tally_pixel_dropped_total)" -gt "$drop0" ] && break
done
RECORDED=$(($(metric 'tally_events_accepted_total{topic="events"}') - acc0))
DROPPED=$(($(metric tally_pixel_dropped_total) - drop0))
[ "$DROPPED" -gt 0 ] || tl_fail "no pixel hit was counted as dropped on a full disk"
[ $((RECORDED + DROPPED)) = "$HITS" ] || tl_fail "pixel hits: $RECORDED recorded + $DROPPED dropped != $HITS sent"
tl_log "full disk: $HITS pixel hits all got the GIF; $RECORDED recorded, $DROPPED in tally_pixel_dropped_total"

for r in collect enrich aggregate api; do
	tl_alive "${TL_ROLE_PID[$r]}" || tl_fail "$r exited on a full disk: $(tail -n 5 "$(tl_role_log "$r")")"
done
grep -q 'no space' "$(tl_role_log enrich)" "$(tl_role_log aggregate)" &&
	tl_log "the pipeline saw ENOSPC: $(grep -h 'no space' "$(tl_role_log enrich)" "$(tl_role_log aggregate)" | head -n 1)"

# ---- 3. space returns ----

rm -f "$MNT/filler" "$MNT/filler2"
tl_log "space back: $(df -h --output=avail "$MNT" | tail -n 1 | tr -d ' ') free; in use: $(cd "$DATA" && du -sh log/* tally.db* | tr "\n\t" ", ")"
for f in "${REFUSED[@]}"; do
	deadline=$(($(date +%s) + 30))
	until [ "$(post "$f")" = 202 ]; do
		[ "$(date +%s)" -lt "$deadline" ] || tl_fail "a refused batch still fails after space returned: $(cat "$f.out")"
		sleep 0.2
	done
done
tl_log "the ${#REFUSED[@]} refused batches re-sent: 202"
gen after --events 20000 --campaigns 2 --campaign-prefix gc --seed 22 --concurrency 8

KS=$(tl_truth_metrics "$TL_TMP/before.json")
WANT=$(tl_truth_totals "$TL_TMP/before.json" "$TL_TMP/after.json")
tl_wait_counts "gen campaigns after the disk was full" "$ACME_KEY" "$KS" "$WANT" 180 g
tl_check_variants before "$ACME_KEY" "$KS" "$TL_TMP/before.json"
tl_check_variants after "$ACME_KEY" "$KS" "$TL_TMP/after.json"

full_ok() {
	local body
	body=$(tl_api_get /v1/campaigns/full/metrics "$ACME_KEY") || return 1
	jq -e --argjson n $((NB * 400)) '.counts.sent == $n and .counts.delivered == $n' <<<"$body" >/dev/null
}
tl_wait_for 60 "campaign full: $((NB * 400)) sent, $((NB * 400)) delivered (every batch once)" full_ok
pix_ok() {
	local body
	body=$(tl_api_get /v1/campaigns/fullpix/metrics "$ACME_KEY") || return 1
	jq -e --argjson n "$RECORDED" '.counts.opens == $n' <<<"$body" >/dev/null
}
tl_wait_for 60 "campaign fullpix: $RECORDED opens (the recorded hits, none of the dropped)" pix_ok
tl_log "every count exact: gen campaigns, re-sent batches once each, $RECORDED pixel opens"

for r in collect enrich aggregate api; do
	[ "${TL_ROLE_PID[$r]}" = "${PID0[$r]}" ] || tl_fail "$r was restarted"
	tl_role_stop "$r" 10
done
tl_log "no role was restarted; all stopped cleanly"
tl_log "PASS"
