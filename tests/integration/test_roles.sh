#!/usr/bin/env bash
# test_roles.sh — every role as its own process over one data directory
# (issue 3): tally collect, enrich, aggregate and api started separately.
#
#  1. load through the separate processes; while it runs each role in turn
#     gets SIGTERM (must exit 0 within 10 s, having drained what it
#     accepted) and is started again; the counts end exactly on the truth;
#  2. a second writer of a topic — a second collector, enricher, or serve —
#     is refused at start, naming the topic and the holder's pid; so is one
#     next to a stale (stopped, SIGSTOP) collector, until that one dies;
#  3. the reporting DB write-locked for 8 s by another process (sqlite3
#     CLI): the aggregator retries with backoff and catches up exactly;
#  4. a torn tail on a segment is truncated when its writer starts; a
#     corrupted record in the middle stops the enricher with exit status 3
#     and a message naming the segment and the offset, every time it starts;
#     the repair of docs/operations.md (cut the segment at that offset, drop
#     the durable file, start the topic's writer) gets it going again.
#
# Env: TALLY_BIN (required), TALLY_ROLES_EVENTS (default 120000), TALLY_KEEP_TMP=1.
TL_TEST_NAME=roles
: "${TALLY_SRC:=$(cd "$(dirname "$0")/../.." && pwd)}"
. "$TALLY_SRC/tests/integration/lib.sh"
. "$TALLY_SRC/tests/chaos/roles_lib.sh"

EVENTS=${TALLY_ROLES_EVENTS:-120000}
DATA="$TL_TMP/data"
mkdir -p "$DATA"
acme=$(tl_tenant_add "$DATA" acme)
ACME_KEY=$(jq -r .api_key <<<"$acme")
ACME_LINK=$(jq -r .link_key <<<"$acme")
tl_roles_init "$DATA"
tl_roles_start_all
tl_log "roles: collect ${TL_ROLE_PID[collect]} ($TL_COLLECTOR), enrich ${TL_ROLE_PID[enrich]}," \
	"aggregate ${TL_ROLE_PID[aggregate]}, api ${TL_ROLE_PID[api]} ($TL_API)"

# gen NAME FLAGS…: tally gen in the background (retry mode: a stopping
# collector may leave a request unanswered); sets GEN_PID.
gen() {
	local name=$1
	shift
	"$TALLY_BIN" gen --collector "$TL_COLLECTOR" --out "$TL_TMP/$name.json" --quiet --tenant acme \
		--api-key "$ACME_KEY" --link-key "$ACME_LINK" --retry-until 120 "$@" 2>"$TL_TMP/$name.gen.log" &
	GEN_PID=$!
}
gen_wait() { # NAME
	local rc=0
	wait "$GEN_PID" || rc=$?
	grep -E '^gen: done' "$TL_TMP/$1.gen.log" >&2 || true
	[ "$rc" = 0 ] || tl_fail "gen $1 exited $rc: $(tail -n 5 "$TL_TMP/$1.gen.log")"
	[ "$(jq .errors "$TL_TMP/$1.json")" = 0 ] || tl_fail "gen $1 reports errors"
}

# ---- 1. graceful stops under load ----

accepted_some() { [ "$(tl_metric "$TL_COLLECTOR" 'tally_events_accepted_total{topic="events"}')" -gt 0 ]; }

gen load --events "$EVENTS" --campaigns 3 --seed 11 --concurrency 8
for r in collect enrich aggregate api; do
	tl_alive "$GEN_PID" || tl_log "(gen already done: $r is stopped after the load)"
	# let some load flow through the new process first
	tl_wait_for 60 "events accepted by the collector" accepted_some
	tl_role_stop "$r" 10
	tl_log "$r: SIGTERM under load -> exit 0 in $TL_STOP_MS ms"
	tl_role_start "$r"
	case $r in collect | api) tl_role_wait_listening "$r" ;; esac
done
gen_wait load
KS=$(tl_truth_metrics "$TL_TMP/load.json")
WANT=$(tl_truth_totals "$TL_TMP/load.json")
tl_wait_counts "after a SIGTERM of every role under load" "$ACME_KEY" "$KS" "$WANT" 180
tl_check_variants load "$ACME_KEY" "$KS" "$TL_TMP/load.json"

# ---- 2. one writer per topic ----

# second NAME ROLE TOPIC HOLDER_PID FLAGS…: another process of ROLE on the
# same data must exit non-zero at once, naming TOPIC and HOLDER_PID.
second() {
	local name=$1 role=$2 topic=$3 holder=$4 log="$TL_TMP/$1.log"
	shift 4
	tl_spawn "$log" "$TALLY_BIN" "$role" --data "$DATA" "$@"
	local pid=$TL_LAST_PID
	tl_wait_exit "$pid" 30 || tl_fail "$name: a second $role was not refused within 30 s"
	[ "$TL_EXIT_STATUS" != 0 ] || tl_fail "$name: a second $role exited 0"
	grep -q "topic $topic is written by another process (pid $holder " "$log" ||
		tl_fail "$name: the refusal does not name topic $topic and pid $holder: $(cat "$log")"
	tl_log "$name: refused: $(grep -o 'topic .*' "$log" | head -n 1)"
}
second "second collector" collect events "${TL_ROLE_PID[collect]}" --collector 127.0.0.1:0
second "second enricher" enrich metrics "${TL_ROLE_PID[enrich]}"
second "serve next to the roles" serve events "${TL_ROLE_PID[collect]}" --collector 127.0.0.1:0 --api 127.0.0.1:0

# a stale collector: stopped, not dead, still holding its topics
kill -STOP "${TL_ROLE_PID[collect]}"
second "collector next to a stale one" collect events "${TL_ROLE_PID[collect]}" --collector 127.0.0.1:0
tl_role_kill9 collect # what an operator does with it; the kernel drops its locks
tl_role_start collect
tl_role_wait_listening collect
tl_log "after the stale collector was killed, a new one starts (pid ${TL_ROLE_PID[collect]})"

# ---- 3. the reporting DB locked by another process ----

command -v sqlite3 >/dev/null || tl_fail "sqlite3 is required (scripts/deps.sh --test)"
AGG_LOG=$(tl_role_log aggregate)
retries0=$(grep -c 'retrying in' "$AGG_LOG" || true)
LOCK_FIFO="$TL_TMP/lock.fifo"
mkfifo "$LOCK_FIFO"
sqlite3 "$DATA/tally.db" <"$LOCK_FIFO" >"$TL_TMP/sqlite3.log" 2>&1 &
SQLITE_PID=$!
exec 7>"$LOCK_FIFO"
echo "BEGIN IMMEDIATE;" >&7
echo "SELECT 'locked';" >&7
tl_wait_for 10 "sqlite3 to hold the write lock" grep -q locked "$TL_TMP/sqlite3.log"
gen locked --events 8000 --campaigns 2 --campaign-prefix locked --seed 12 --concurrency 8
# the aggregator's transactions wait 5 s (busy timeout), fail, back off, retry
tl_wait_for 60 "the aggregator to retry twice" sh -c "[ \$(grep -c 'retrying in' '$AGG_LOG') -gt $((retries0 + 1)) ]"
echo "COMMIT;" >&7
exec 7>&-
tl_wait_exit "$SQLITE_PID" 10 || tl_fail "sqlite3 did not exit"
gen_wait locked
tl_log "aggregator: $(($(grep -c 'retrying in' "$AGG_LOG") - retries0)) retries while the DB was locked"
WANT=$(tl_truth_totals "$TL_TMP/load.json" "$TL_TMP/locked.json")
tl_wait_counts "after the DB lock was released" "$ACME_KEY" "$KS" "$WANT" 120

for r in collect enrich aggregate api; do
	tl_role_stop "$r" 10
done

# ---- 4. torn tail and corruption ----

DATA2="$TL_TMP/data2"
mkdir -p "$DATA2"
tl_tenant_add "$DATA2" acme >"$TL_TMP/acme2.json"
tl_spawn "$TL_TMP/collect2.log" "$TALLY_BIN" collect --data "$DATA2" --collector 127.0.0.1:0
C2=$TL_LAST_PID
tl_wait_for 30 "collect2 to listen" _tl_listening "$TL_TMP/collect2.log" "$C2" collector
TL_COLLECTOR="http://$(tl_listen_addr "$TL_TMP/collect2.log" collector)"
"$TALLY_BIN" gen --collector "$TL_COLLECTOR" --out "$TL_TMP/small.json" --quiet --tenant acme \
	--api-key "$(jq -r .api_key "$TL_TMP/acme2.json")" --link-key "$(jq -r .link_key "$TL_TMP/acme2.json")" \
	--events 3000 --campaigns 1 --seed 13 --junk=false 2>"$TL_TMP/small.gen.log" ||
	tl_fail "gen small: $(tail -n 3 "$TL_TMP/small.gen.log")"
kill -TERM "$C2"
tl_wait_exit "$C2" 10 || tl_fail "collect2 did not stop"

# the two largest segments of `events`: one gets a torn tail, one a bad byte
mapfile -t SEGS < <(find "$DATA2/log/events" -name '*.seg' -size +1k -printf '%s %p\n' | sort -rn | awk '{print $2}')
[ "${#SEGS[@]}" -ge 2 ] || tl_fail "expected events in at least two partitions"
TORN=${SEGS[0]} BAD=${SEGS[1]}
torn_size=$(stat -c %s "$TORN")
# a torn write: half a frame header of garbage after the last record
printf '\x30\x00\x00\x00\xff\xff\xff\x7f\x01\x02\x03\x04\x05' >>"$TORN"
# a flipped byte in the middle of a record in the middle of the segment
bad_size=$(stat -c %s "$BAD")
bad_at=$((bad_size / 2))
byte=$(od -An -tu1 -j "$bad_at" -N1 "$BAD" | tr -d ' ')
printf "$(printf '\\%03o' $(((byte + 1) % 256)))" | dd of="$BAD" bs=1 seek="$bad_at" conv=notrunc status=none

tl_spawn "$TL_TMP/collect3.log" "$TALLY_BIN" collect --data "$DATA2" --collector 127.0.0.1:0
C3=$TL_LAST_PID
tl_wait_for 30 "collect3 to listen" _tl_listening "$TL_TMP/collect3.log" "$C3" collector
[ "$(stat -c %s "$TORN")" = "$torn_size" ] ||
	tl_fail "torn tail not truncated on recovery: $(stat -c %s "$TORN") bytes, want $torn_size"
tl_log "torn tail of ${TORN#"$DATA2"/} truncated back to $torn_size bytes when the collector started"
kill -TERM "$C3"
tl_wait_exit "$C3" 10 || tl_fail "collect3 did not stop"

BAD_REL=${BAD#"$DATA2"/log/}
for attempt in 1 2; do
	log="$TL_TMP/enrich-corrupt.$attempt.log"
	tl_spawn "$log" "$TALLY_BIN" enrich --data "$DATA2"
	tl_wait_exit "$TL_LAST_PID" 60 || tl_fail "the enricher did not stop on the corrupted record"
	[ "$TL_EXIT_STATUS" = 3 ] || tl_fail "enricher on corrupt data: exit $TL_EXIT_STATUS, want 3: $(tail -n 3 "$log")"
	grep -q "$BAD_REL at offset [0-9]" "$log" ||
		tl_fail "the enricher's error does not name $BAD_REL and an offset: $(cat "$log")"
	tl_log "start $attempt: enricher exits 3: $(grep -o "$BAD_REL at offset [0-9]*[^)]*)" "$log" | head -n 1)"
done

# the repair (docs/operations.md, "Recovering from corruption"): the records
# from the damaged one on are cut from the partition, the writer recovers it
BAD_POS=$(grep -o "$BAD_REL at offset [0-9]*" "$log" | head -n 1 | awk '{print $NF}')
PDIR=$(dirname "$BAD")
truncate -s "$BAD_POS" "$BAD"
for seg in "$PDIR"/*.seg; do # later segments (none here) go too
	[[ "$(basename "$seg")" > "$(basename "$BAD")" ]] && rm -f "$seg"
done
rm -f "$PDIR/durable"
# log_end TOPIC P: the durable end (record count) of a partition
log_end() { od -An -tu8 -N8 "$DATA2/log/$1/$2/durable" 2>/dev/null | tr -d ' ' || echo 0; }
P=$(basename "$PDIR")
tl_spawn "$TL_TMP/collect4.log" "$TALLY_BIN" collect --data "$DATA2" --collector 127.0.0.1:0
C4=$TL_LAST_PID
tl_wait_for 30 "collect4 to listen" _tl_listening "$TL_TMP/collect4.log" "$C4" collector
TL_COLLECTOR="http://$(tl_listen_addr "$TL_TMP/collect4.log" collector)"
tl_spawn "$TL_TMP/enrich-repaired.log" "$TALLY_BIN" enrich --data "$DATA2"
E4=$TL_LAST_PID
cut_end=$(log_end events "$P")
"$TALLY_BIN" gen --collector "$TL_COLLECTOR" --out "$TL_TMP/small2.json" --quiet --tenant acme \
	--api-key "$(jq -r .api_key "$TL_TMP/acme2.json")" --link-key "$(jq -r .link_key "$TL_TMP/acme2.json")" \
	--events 3000 --campaigns 1 --campaign-prefix again --seed 14 --junk=false 2>"$TL_TMP/small2.gen.log" ||
	tl_fail "gen small2: $(tail -n 3 "$TL_TMP/small2.gen.log")"
caught_up() {
	tl_alive "$E4" || tl_fail "the enricher exited after the repair: $(tail -n 3 "$TL_TMP/enrich-repaired.log")"
	local ev
	ev=$(log_end events "$P")
	[ "$ev" -gt "$cut_end" ] && [ "$(log_end metrics "$P")" = "$ev" ]
}
tl_wait_for 60 "the enricher to process $BAD_REL past the cut" caught_up
tl_log "repaired: events/$P cut at byte $BAD_POS (record $cut_end); new records flow: events/$P and metrics/$P end at $(log_end metrics "$P")"
tl_kill "$E4" 10
tl_kill "$C4" 10
tl_log "PASS"
