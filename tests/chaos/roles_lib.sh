# roles_lib.sh — helpers for tests that run every role as its own process
# (tally collect | enrich | aggregate | api over one data directory). Source
# it after tests/integration/lib.sh:
#
#   . "$TALLY_SRC/tests/integration/lib.sh"
#   . "$TALLY_SRC/tests/chaos/roles_lib.sh"
#
# Each role is remembered by name: TL_ROLE_PID[name], its log is
# $TL_TMP/<name>.<n>.log (n counts its starts). The collector and the API are
# restarted on the port they got the first time, so clients keep their URL.
# Processes are started through tl_spawn (lib.sh stops them at exit).

declare -A TL_ROLE_PID=()   # name -> pid of the running process
declare -A TL_ROLE_ADDR=()  # collect/api -> ADDR:PORT once known
declare -A TL_ROLE_STARTS=()
TL_ROLES_DATA=""
TL_ROLES_FLAGS=()           # extra flags for every role

# tl_roles_init DATA_DIR [FLAGS…]: the data directory every role uses.
tl_roles_init() {
	TL_ROLES_DATA=$1
	shift
	TL_ROLES_FLAGS=("$@")
}

# tl_role_log NAME: the log of NAME's current process.
tl_role_log() { echo "$TL_TMP/$1.${TL_ROLE_STARTS[$1]:-0}.log"; }

# tl_role_start NAME: starts role NAME (collect, enrich, aggregate, api) in
# the background; does not wait. Sets TL_ROLE_PID[NAME].
tl_role_start() {
	local name=$1 n=$((${TL_ROLE_STARTS[$1]:-0} + 1))
	TL_ROLE_STARTS[$name]=$n
	local log="$TL_TMP/$name.$n.log" args=()
	case $name in
	collect) args=(--collector "${TL_ROLE_ADDR[collect]:-127.0.0.1:0}") ;;
	api) args=(--api "${TL_ROLE_ADDR[api]:-127.0.0.1:0}") ;;
	esac
	tl_spawn "$log" "$TALLY_BIN" "$name" --data "$TL_ROLES_DATA" "${args[@]}" "${TL_ROLES_FLAGS[@]}"
	TL_ROLE_PID[$name]=$TL_LAST_PID
}

_tl_role_listening() { # NAME
	local log pid=${TL_ROLE_PID[$1]}
	log=$(tl_role_log "$1")
	tl_alive "$pid" || tl_fail "$1 (pid $pid) exited early: $(tail -n 5 "$log")"
	[ -n "$(tl_listen_addr "$log" "${2:-$1}")" ]
}

# tl_role_wait_listening NAME: waits until collect/api logs its listener;
# remembers its address (restarts reuse it).
tl_role_wait_listening() {
	local name=$1 role=$1
	[ "$name" = collect ] && role=collector
	tl_wait_for 30 "$name to listen" _tl_role_listening "$name" "$role"
	TL_ROLE_ADDR[$name]=$(tl_listen_addr "$(tl_role_log "$name")" "$role")
}

# tl_roles_start_all: collect, enrich, aggregate, api; waits for the listeners.
# Sets TL_COLLECTOR and TL_API (http://addr:port).
tl_roles_start_all() {
	local r
	for r in collect enrich aggregate api; do
		tl_role_start "$r"
	done
	tl_role_wait_listening collect
	tl_role_wait_listening api
	TL_COLLECTOR="http://${TL_ROLE_ADDR[collect]}"
	TL_API="http://${TL_ROLE_ADDR[api]}"
}

# tl_role_kill9 NAME: kill -9 and reap (the kernel has released its locks
# when this returns).
tl_role_kill9() {
	local pid=${TL_ROLE_PID[$1]}
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# tl_role_stop NAME TIMEOUT_S: SIGTERM; fails the test unless it exits 0 in
# time. Sets TL_STOP_MS to how long it took.
tl_role_stop() {
	local name=$1 t=$2 pid=${TL_ROLE_PID[$1]} t0
	t0=$(tl_now_ms)
	kill -TERM "$pid" 2>/dev/null || tl_fail "$name (pid $pid) is not running"
	tl_wait_exit "$pid" "$t" || tl_fail "$name did not exit within ${t}s of SIGTERM"
	TL_STOP_MS=$(($(tl_now_ms) - t0))
	[ "$TL_EXIT_STATUS" = 0 ] || tl_fail "$name exited with status $TL_EXIT_STATUS after SIGTERM: $(tail -n 5 "$(tl_role_log "$name")")"
}

# tl_metric URL NAME: the value of a Prometheus sample (first match), or 0.
tl_metric() {
	curl -sS --max-time 10 "$1/metrics" | awk -v n="$2" '$1 == n { print $2; found = 1; exit } END { if (!found) print 0 }'
}

# ---- ground truth vs the API ----

# tl_truth_totals TRUTH_FILE…: {"<campaign>": {17 metrics}} of the truths merged.
tl_truth_totals() { jq -S -s 'map(.campaigns | map_values(.total)) | add' "$@"; }

# tl_truth_metrics TRUTH_FILE: the metric names, as a JSON array.
tl_truth_metrics() { jq -c '.campaigns | to_entries[0].value.total | keys_unsorted' "$1"; }

# tl_api_totals KEY METRICS [PREFIX]: the API's campaign list as
# {"<campaign>": {metrics}}, only campaigns named PREFIX… when given.
tl_api_totals() {
	local body
	body=$(tl_api_get /v1/campaigns "$1") || return 1
	jq -S --argjson ks "$2" --arg p "${3:-}" \
		'[.campaigns[] | select(.campaign | startswith($p))
		  | {key: .campaign, value: (.counts as $c | reduce $ks[] as $k ({}; .[$k] = $c[$k]))}]
		 | from_entries' <<<"$body"
}

# tl_wait_counts WHAT KEY METRICS EXPECTED TIMEOUT_S [PREFIX]: polls until the
# API's totals (of campaigns named PREFIX…) equal EXPECTED, then checks they
# stay equal for 2 s. Sets CAUGHT_MS. Fails early when the counts differ and
# have not moved for 60 s.
tl_wait_counts() {
	local what=$1 key=$2 ks=$3 want=$4 t=$5 pfx=${6:-} start got="" prev="" moved i now
	start=$(tl_now_ms)
	moved=$start
	while :; do
		got=$(tl_api_totals "$key" "$ks" "$pfx") && [ "$got" = "$want" ] && break
		now=$(tl_now_ms)
		[ "$got" != "$prev" ] && { prev=$got; moved=$now; }
		if [ $((now - start)) -ge $((t * 1000)) ] || [ $((now - moved)) -ge 60000 ]; then
			tl_json_diff "$want" "$got" | head -n 80 >&2
			tl_fail "$what: counts != ground truth after $(((now - start) / 1000))s (unchanged for $(((now - moved) / 1000))s)"
		fi
		sleep 0.2
	done
	CAUGHT_MS=$(($(tl_now_ms) - start))
	for i in $(seq 10); do
		sleep 0.2
		got=$(tl_api_totals "$key" "$ks" "$pfx") || continue
		[ "$got" = "$want" ] || { tl_json_diff "$want" "$got" | head -n 80 >&2; tl_fail "$what: counts changed after reaching the ground truth"; }
	done
	tl_log "$what: API counts == ground truth (after $CAUGHT_MS ms, stable for 2 s)"
}

# tl_check_variants WHAT KEY METRICS TRUTH_FILE: every metric of every
# campaign total and variant, through /v1/campaigns/<c>/metrics[?variant=V].
tl_check_variants() {
	local what=$1 key=$2 ks=$3 truth=$4 c v q want got n=0
	for c in $(jq -r '.campaigns | keys[]' "$truth"); do
		for v in "(total)" $(jq -r --arg c "$c" '.campaigns[$c].variants | keys[] | select(. != "")' "$truth"); do
			if [ "$v" = "(total)" ]; then
				q="" want=$(jq -S --arg c "$c" '.campaigns[$c].total' "$truth")
			else
				q="?variant=$v" want=$(jq -S --arg c "$c" --arg v "$v" '.campaigns[$c].variants[$v]' "$truth")
			fi
			got=$(tl_api_get "/v1/campaigns/$c/metrics$q" "$key") || tl_fail "$what: GET /v1/campaigns/$c/metrics$q failed"
			got=$(jq -S --argjson ks "$ks" '.counts as $c | reduce $ks[] as $k ({}; .[$k] = $c[$k])' <<<"$got")
			[ "$got" = "$want" ] || { tl_json_diff "$want" "$got" >&2; tl_fail "$what: campaign $c variant $v differs from the ground truth"; }
			n=$((n + 1))
		done
	done
	tl_log "$what: $n campaign/variant count sets equal the ground truth, metric by metric"
}

# tl_tenant_add DATA NAME: prints the tenant's JSON (tally tenant add).
tl_tenant_add() {
	local out
	out=$("$TALLY_BIN" tenant add "$2" --data "$1") || tl_fail "tally tenant add $2 failed"
	jq -e '.api_key and .link_key' <<<"$out" >/dev/null || tl_fail "tally tenant add $2 printed: $out"
	echo "$out"
}
