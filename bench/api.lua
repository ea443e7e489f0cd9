-- bench/api.lua — wrk script for bench/api.sh: GET /v1/campaigns/<c>/metrics
-- of a random campaign "<prefix>-<n>", n in [0, campaigns), with the tenant's
-- API key. Settings come from the environment (set by api.sh):
-- TALLY_BENCH_KEY, TALLY_BENCH_CAMPAIGNS, TALLY_BENCH_PREFIX.
local key = os.getenv("TALLY_BENCH_KEY") or ""
local campaigns = tonumber(os.getenv("TALLY_BENCH_CAMPAIGNS") or "10000")
local prefix = os.getenv("TALLY_BENCH_PREFIX") or "c"
local headers = { ["Authorization"] = "Bearer " .. key }

function init(args)
	math.randomseed(os.time())
end

function request()
	local path = "/v1/campaigns/" .. prefix .. "-" .. math.random(0, campaigns - 1) .. "/metrics"
	return wrk.format("GET", path, headers)
end
