#!/usr/bin/env bash
# bench/run-all.sh — every benchmark of DESIGN.md §7 in turn (`make bench`):
# pixel.sh (open pixel vs nginx), e2e.sh (sustained events/s, memory),
# lag.sh (event → queryable at half of max load), api.sh (campaign summary
# latency), and the parser micro-benchmark (tally bench json). Each script's
# output goes to $OUT/<name>.txt, its figures (JSON) to $OUT; the RESULT lines
# are summed up at the end. Builds nothing (`make bench` builds first).
#
# Environment: BIN (default build/tally), OUT (default bench/results/<date>),
# ONLY="e2e lag" (a subset), and each script's own settings.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
export BIN=${BIN:-$root/build/tally}
export OUT=${OUT:-$root/bench/results/$(date +%Y%m%d-%H%M%S)}
ONLY=${ONLY:-pixel e2e lag api json}
mkdir -p "$OUT"
[[ -x $BIN ]] || { echo "run-all.sh: $BIN not built (make build)" >&2; exit 2; }

echo "tally benchmarks -> $OUT"
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); tally $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')"
failed=()
for b in $ONLY; do
	echo "=== $b"
	case $b in
	json)
		"$BIN" bench json | tee "$OUT/json.txt"
		rc=${PIPESTATUS[0]}
		[[ $rc == 0 ]] && jq -r '"RESULT json: parse \(.us_per_line) us/line (jansson alone \(.jansson_us_per_line)), to_json \(.to_json_us_per_event) us/event, CPU time"' \
			"$OUT/json.txt" | tee -a "$OUT/json.txt"
		;;
	pixel | e2e | lag | api)
		"$here/$b.sh" 2>&1 | tee "$OUT/$b.txt"
		rc=${PIPESTATUS[0]}
		;;
	*)
		echo "unknown benchmark $b" >&2
		rc=2
		;;
	esac
	[[ $rc == 0 ]] || failed+=("$b")
done

echo "=== summary ($OUT)"
grep -h '^RESULT' "$OUT"/*.txt 2>/dev/null | sed 's/^RESULT //'
grep -h '^ratio' "$OUT/pixel.txt" 2>/dev/null | sed 's/^/pixel: /'
if [[ ${#failed[@]} -gt 0 ]]; then
	echo "failed: ${failed[*]}"
	exit 1
fi
