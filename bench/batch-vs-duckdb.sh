#!/usr/bin/env bash
# batch-vs-duckdb.sh — `tally batch` against DuckDB on the same archive files,
# in the same run (DESIGN.md §7: batch recompute of a day faster than DuckDB
# aggregating the same files).
#
#  1. builds tally (Release) and bench/archive_gen.c against it;
#  2. writes a day of >= 20 million events straight into the archive layout
#     (bench/archive_gen.c: event-API traffic of a big sender, time-ordered
#     per partition, 60 s / 64 MiB rolls like the archiver, zstd NDJSON);
#  3. installs @duckdb/node-api with npm under the work directory;
#  4. ROUNDS times, alternately: `tally batch --day DAY` (2 worker threads,
#     into a fresh SQLite reporting DB) and DuckDB (2 threads) computing the
#     counts by campaign, variant and type plus the exact distinct recipients
#     of opens and clicks over the same files;
#  5. checks that both give the same numbers (sent, delivered, deferred,
#     bounced, dropped, complaints, unsubscribes, opens, unique_opens, clicks,
#     unique_clicks of every campaign and variant);
#  6. prints the wall and CPU times of each round, the medians and the ratio
#     (tally / DuckDB: below 1 means tally is faster). Only same-run ratios
#     mean anything on a shared machine.
#
# tally does more than DuckDB here: it parses every field, runs the enricher
# and classifier on every open and click, deduplicates every event id, keeps
# four exact unique sets and writes per-minute rows, totals and day state.
#
# Env: EVENTS (default 20000000), DAY (2026-12-02), ROUNDS (3), ROLL_SECONDS
# (60), CAMPAIGNS (200), BENCH_DIR (work directory, kept and reused when
# given; else a temporary one), TALLY_BUILD (build directory, default
# build-bench), PROFILE=1 (also a perf profile of one tally run).
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
EVENTS=${EVENTS:-20000000}
DAY=${DAY:-2026-12-02}
ROUNDS=${ROUNDS:-3}
ROLL_SECONDS=${ROLL_SECONDS:-60}
CAMPAIGNS=${CAMPAIGNS:-200}
BUILD=${TALLY_BUILD:-$SRC/build-bench}
if [ -n "${BENCH_DIR:-}" ]; then
	WORK=$BENCH_DIR
	mkdir -p "$WORK"
else
	WORK=$(mktemp -d "${TMPDIR:-/tmp}/tally-bench-batch.XXXXXX")
	trap 'rm -rf "$WORK"' EXIT
fi
log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
for t in node npm jq sqlite3 cmake cc; do
	command -v "$t" >/dev/null || { echo "batch-vs-duckdb: $t is required" >&2; exit 1; }
done
TIME=/usr/bin/time
[ -x "$TIME" ] || { echo "batch-vs-duckdb: GNU time (/usr/bin/time) is required" >&2; exit 1; }

# ---- 1. build ----
log "building tally (Release) in $BUILD"
cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" --target tally tl_event tl_core -j2 >/dev/null
TALLY=$BUILD/tally
cc -O2 -Wall -Wextra -I"$SRC/src" "$SRC/bench/archive_gen.c" -o "$WORK/archive_gen" \
	"$BUILD/libtl_event.a" "$BUILD/libtl_core.a" -lzstd -ljansson -lssl -lcrypto -lxxhash -lpthread -lm

# ---- 2. the archive ----
ARCH=$WORK/archive
STAMP="$EVENTS $DAY $CAMPAIGNS $ROLL_SECONDS $(md5sum "$SRC/bench/archive_gen.c" | cut -c1-12)"
if [ "$(cat "$WORK/archive.stamp" 2>/dev/null)" != "$STAMP" ]; then
	rm -rf "$ARCH" "$WORK/archive.stamp"
	log "writing $EVENTS events of $DAY into $ARCH (this takes a few minutes)"
	"$WORK/archive_gen" "$ARCH" "$DAY" "$EVENTS" acme "$CAMPAIGNS" 2 "$ROLL_SECONDS" >"$WORK/archive.count"
	echo "$STAMP" >"$WORK/archive.stamp"
fi
LINES=$(cat "$WORK/archive.count")
FILES=$(find "$ARCH" -name '*.ndjson.zst' | wc -l)
ZBYTES=$(du -sb "$ARCH" | cut -f1)
log "archive: $LINES events in $FILES files, $((ZBYTES / 1000000)) MB zstd"
[ "$LINES" -ge 20000000 ] || [ "$EVENTS" -lt 20000000 ] || { echo "only $LINES events generated" >&2; exit 1; }

# ---- 3. DuckDB ----
DUCK=$WORK/duckdb
if [ ! -d "$DUCK/node_modules/@duckdb/node-api" ]; then
	log "installing @duckdb/node-api under $DUCK"
	mkdir -p "$DUCK"
	(cd "$DUCK" && npm init -y >/dev/null && npm install --no-audit --no-fund @duckdb/node-api >/dev/null)
fi
cat >"$DUCK/count.mjs" <<'EOF'
// The same counts tally computes, by campaign and variant, from the archive files.
import { DuckDBInstance } from '@duckdb/node-api';
import { writeFileSync } from 'node:fs';
const [glob, out] = process.argv.slice(2);
const db = await DuckDBInstance.create(':memory:', { threads: '2' });
const con = await db.connect();
const res = await con.runAndReadAll(`
  SELECT campaign, coalesce(variant, '') AS variant, type, count(*) AS n,
         count(DISTINCT recipient) FILTER (WHERE type IN ('open', 'click')) AS u
  FROM read_json('${glob}', format = 'newline_delimited', compression = 'zstd',
       columns = {type: 'VARCHAR', tenant: 'VARCHAR', campaign: 'VARCHAR', variant: 'VARCHAR', recipient: 'VARCHAR'})
  GROUP BY ALL`);
const metric = { sent: 'sent', delivered: 'delivered', deferred: 'deferred', bounced: 'bounced',
                 dropped: 'dropped', complaint: 'complaints', unsubscribe: 'unsubscribes', open: 'opens',
                 click: 'clicks' };
const result = {};
for (const [campaign, variant, type, n, u] of res.getRows()) {
  const k = `${campaign}|${variant}`;
  result[k] ??= {};
  result[k][metric[type]] = Number(n);
  if (type === 'open') result[k].unique_opens = Number(u);
  if (type === 'click') result[k].unique_clicks = Number(u);
}
writeFileSync(out, JSON.stringify(result));
EOF

# ---- 4. rounds ----
NORM='with_entries(.value |= ({sent:0, delivered:0, deferred:0, bounced:0, dropped:0, complaints:0,
	unsubscribes:0, opens:0, unique_opens:0, clicks:0, unique_clicks:0} + .))'
declare -a T_WALL T_CPU D_WALL D_CPU
run_timed() { # OUT_PREFIX COMMAND… ; sets RUN_WALL RUN_CPU (seconds)
	local pre=$1
	shift
	local t0 t1
	t0=$(date +%s%N)
	"$TIME" -f '%U %S' -o "$pre.time" "$@" >"$pre.out" 2>"$pre.err" || {
		cat "$pre.err" >&2
		exit 1
	}
	t1=$(date +%s%N)
	RUN_WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", (b - a) / 1e9}')
	RUN_CPU=$(tail -n 1 "$pre.time" | awk '{printf "%.2f", $1 + $2}')
}
for r in $(seq "$ROUNDS"); do
	DATA=$WORK/data-$r
	rm -rf "$DATA"
	mkdir -p "$DATA"
	"$TALLY" tenant add acme --data "$DATA" >/dev/null
	run_timed "$WORK/tally-$r" "$TALLY" batch --day "$DAY" --data "$DATA" --archive-dir "$ARCH" --batch-threads 2
	T_WALL[r]=$RUN_WALL
	T_CPU[r]=$RUN_CPU
	log "round $r: tally  $RUN_WALL s wall, $RUN_CPU s CPU: $(sed 's/.*campaigns; //' "$WORK/tally-$r.out")"
	run_timed "$WORK/duck-$r" node "$DUCK/count.mjs" "$ARCH/dt=$DAY/*.ndjson.zst" "$WORK/duck-$r.json"
	D_WALL[r]=$RUN_WALL
	D_CPU[r]=$RUN_CPU
	log "round $r: duckdb $RUN_WALL s wall, $RUN_CPU s CPU"
	# ---- 5. the same numbers ----
	sqlite3 -json "$DATA/tally.db" "SELECT campaign, variant, sent, delivered, deferred, bounced, dropped,
		complaints, unsubscribes, opens, unique_opens, clicks, unique_clicks FROM totals
		WHERE src = 1 AND tenant = 'acme'" |
		jq -S "map({key: \"\(.campaign)|\(.variant)\", value: (del(.campaign, .variant))}) | from_entries | $NORM" \
			>"$WORK/tally-$r.json"
	jq -S "$NORM" "$WORK/duck-$r.json" >"$WORK/duck-$r.norm.json"
	if ! cmp -s "$WORK/tally-$r.json" "$WORK/duck-$r.norm.json"; then
		diff <(jq . "$WORK/duck-$r.norm.json") <(jq . "$WORK/tally-$r.json") | head -n 40 >&2
		echo "batch-vs-duckdb: tally and DuckDB disagree (round $r)" >&2
		exit 1
	fi
	total=$(jq '[.[] | .sent + .delivered + .deferred + .bounced + .dropped + .complaints + .unsubscribes
		+ .opens + .clicks] | add' "$WORK/tally-$r.json")
	[ "$total" = "$LINES" ] || { echo "batch-vs-duckdb: tally counted $total of $LINES events" >&2; exit 1; }
	log "round $r: identical results: $(jq length "$WORK/tally-$r.json") campaign/variant pairs, $total events"
done

if [ "${PROFILE:-0}" = 1 ] && command -v perf >/dev/null; then
	rm -rf "$WORK/data-prof"
	mkdir -p "$WORK/data-prof"
	"$TALLY" tenant add acme --data "$WORK/data-prof" >/dev/null
	perf record -F 299 -g -o "$WORK/perf.data" "$TALLY" batch --day "$DAY" --data "$WORK/data-prof" \
		--archive-dir "$ARCH" >/dev/null 2>&1
	echo "perf: where tally's CPU time goes (self time by symbol, then by library):"
	# (head closes the pipe early: not a failure)
	{ perf report -i "$WORK/perf.data" --no-children --sort sym --stdio -g none 2>/dev/null | grep '%' | head -n 25; } || true
	{ perf report -i "$WORK/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep '%' | head -n 8; } || true
fi

# ---- 6. report ----
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
tw=$(median "${T_WALL[@]}")
dw=$(median "${D_WALL[@]}")
tc=$(median "${T_CPU[@]}")
dc=$(median "${D_CPU[@]}")
echo
echo "batch vs DuckDB: $LINES events, $FILES files, $((ZBYTES / 1000000)) MB zstd, 2 threads each, $ROUNDS rounds"
printf '%-8s %12s %12s %14s\n' "" "wall (s)" "CPU (s)" "events/s"
printf '%-8s %12s %12s %14.0f\n' tally "$tw" "$tc" "$(awk -v n="$LINES" -v t="$tw" 'BEGIN {print n / t}')"
printf '%-8s %12s %12s %14.0f\n' duckdb "$dw" "$dc" "$(awk -v n="$LINES" -v t="$dw" 'BEGIN {print n / t}')"
for r in $(seq "$ROUNDS"); do
	printf '  round %d: tally %s s, duckdb %s s: ratio %.2f\n' "$r" "${T_WALL[r]}" "${D_WALL[r]}" \
		"$(awk -v a="${T_WALL[r]}" -v b="${D_WALL[r]}" 'BEGIN {print a / b}')"
done
ratio=$(awk -v a="$tw" -v b="$dw" 'BEGIN {printf "%.2f", a / b}')
echo "ratio tally/duckdb (median wall): $ratio ($(awk -v r="$ratio" 'BEGIN {print (r < 1) ? "tally is faster" : "tally is slower"}'))"
