/* cmd_bench.c — `tally bench load|lag|fill|json`: the measuring tools the
 * scripts in bench/ drive (DESIGN.md §7; bench/bench.h says what each does).
 * Each prints one JSON object with its figures on stdout and progress on
 * stderr. */
#include "bench/bench.h"
#include "cli/cli.h"
#include "cli/settings.h"
#include "core/clock.h"

#include <curl/curl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

struct bench_cfg {
	char *collector, *api, *api_key, *rate, *tenant, *prefix;
	int64_t seconds, warmup, batch, connections, server_pid, drain_timeout;
	int64_t campaigns, variants, recipients, seed;
	int64_t probes, interval, poll_us, timeout;
	int64_t days, active_minutes, txn_rows;
	int64_t lines, rounds, events;
	int quiet;
	struct tl_settings common; /* tally.conf and TALLY_* meant for other commands are understood */
};

#define B(field) offsetof(struct bench_cfg, field)

static const struct tl_opt bench_table[] = {
    {"collector", TL_OPT_STR, B(collector), "http://127.0.0.1:8080", "collector base URL (or ADDR:PORT)"},
    {"api", TL_OPT_STR, B(api), "",
     "API base URL (or ADDR:PORT): follow its /metrics (load) or poll it (lag)"},
    {"api-key", TL_OPT_STR, B(api_key), NULL, "the tenant's API key (required)"},
    {"rate", TL_OPT_STR, B(rate), "max", "offered events/s, or max"},
    {"seconds", TL_OPT_INT, B(seconds), "30", "load: seconds of sending, warm-up included"},
    {"warmup", TL_OPT_INT, B(warmup), "5", "load: first seconds left out of the figures"},
    {"batch", TL_OPT_INT, B(batch), "1000", "load: NDJSON lines per POST"},
    {"connections", TL_OPT_INT, B(connections), "8", "load: parallel keep-alive connections"},
    {"server-pid", TL_OPT_INT, B(server_pid), "0", "load: sample this process's RSS and CPU every second"},
    {"drain-timeout", TL_OPT_INT, B(drain_timeout), "60",
     "load: seconds to wait after sending for the aggregator to catch up"},
    {"campaigns", TL_OPT_INT, B(campaigns), "100", "campaigns (fill: default 10000 when not given)"},
    {"variants", TL_OPT_INT, B(variants), "2", "variants per campaign (0 = none)"},
    {"recipients", TL_OPT_INT, B(recipients), "100000", "load: distinct recipients per campaign"},
    {"seed", TL_OPT_INT, B(seed), "0", "load: random seed (0 = from the clock)"},
    {"probes", TL_OPT_INT, B(probes), "200", "lag: number of probes"},
    {"interval", TL_OPT_INT, B(interval), "100", "lag: mean ms between probes (jittered)"},
    {"poll-us", TL_OPT_INT, B(poll_us), "1000", "lag: microseconds between visibility polls"},
    {"timeout", TL_OPT_INT, B(timeout), "10000", "lag: ms before a probe counts as lost"},
    {"tenant", TL_OPT_STR, B(tenant), NULL, "fill: tenant name (required)"},
    {"campaign-prefix", TL_OPT_STR, B(prefix), NULL,
     "campaign names are <prefix>-<n> (load: bench, fill: c)"},
    {"days", TL_OPT_INT, B(days), "30", "fill: days of minute buckets"},
    {"active-minutes", TL_OPT_INT, B(active_minutes), "120",
     "fill: minutes with data per campaign per day (1440 = every minute)"},
    {"txn-rows", TL_OPT_INT, B(txn_rows), "20000", "fill: rows per transaction"},
    {"lines", TL_OPT_INT, B(lines), "200000", "json: lines parsed per round"},
    {"rounds", TL_OPT_INT, B(rounds), "5", "json: rounds (the median is reported)"},
    {"events", TL_OPT_INT, B(events), "2000000", "agg: events folded and applied"},
    {"quiet", TL_OPT_BOOL, B(quiet), "false", "no progress lines"},
};
#define N_BENCH (sizeof bench_table / sizeof bench_table[0])

static const char *const load_flags[] = {
    "collector",  "api",         "api-key",         "rate",          "seconds",   "warmup",
    "batch",      "connections", "server-pid",      "drain-timeout", "campaigns", "variants",
    "recipients", "seed",        "campaign-prefix", "quiet",         NULL};
static const char *const lag_flags[] = {"collector", "api",     "api-key", "probes", "interval",
                                        "poll-us",   "timeout", "quiet",   NULL};
static const char *const fill_flags[] = {
    "data",     "db",       "tenant",          "campaigns", "days", "active-minutes",
    "variants", "txn-rows", "campaign-prefix", "quiet",     NULL};
static const char *const json_flags[] = {"lines", "rounds", "seed", NULL};
static const char *const agg_flags[] = {"data",     "db",         "events", "batch", "campaigns",
                                        "variants", "recipients", "quiet",  NULL};

static const char usage_text[] =
    "usage: tally bench load|lag|fill|json|agg [flags]   (tally bench <what> --help)\n\n"
    "  load   POST /v1/events batches at --rate N|max; follows the aggregator through the API's /metrics\n"
    "  lag    event -> queryable from outside: post a marked event, poll the API until it shows\n"
    "  fill   write --campaigns x --days of minute buckets into --db through the store interface\n"
    "  json   time the NDJSON event parser per line on generated canonical lines\n"
    "  agg    the aggregator's fold + apply alone on --db: CPU per event at --batch events a transaction\n";

static struct tl_opt *build_table(size_t *n)
{
	struct tl_opt *t = calloc(N_BENCH + tl_settings_count, sizeof *t);
	if (!t)
		return NULL;
	memcpy(t, bench_table, sizeof bench_table);
	size_t k = N_BENCH;
	for (size_t i = 0; i < tl_settings_count; i++) {
		bool mine = false;
		for (size_t j = 0; j < N_BENCH; j++)
			mine |= strcmp(tl_settings_table[i].name, bench_table[j].name) == 0;
		if (mine)
			continue;
		t[k] = tl_settings_table[i];
		t[k].offset += B(common);
		k++;
	}
	*n = k;
	return t;
}

/* "127.0.0.1:8080" (a listener address) means http://; trailing '/' dropped. */
static char *base_url(const char *s)
{
	size_t n = strlen(s) + 8;
	char *u = malloc(n);
	if (!u)
		return NULL;
	snprintf(u, n, "%s%s", strstr(s, "://") ? "" : "http://", s);
	size_t l = strlen(u);
	while (l && u[l - 1] == '/')
		u[--l] = '\0';
	return u;
}

static int print_json(struct tl_buf *b)
{
	if (tl_buf_putc(b, '\n'))
		return 1;
	return fwrite(b->data, 1, b->len, stdout) == b->len && fflush(stdout) == 0 ? 0 : 1;
}

static int run_load(struct bench_cfg *c)
{
	struct tl_bench_load_opts o;
	tl_bench_load_defaults(&o);
	char *collector = base_url(c->collector), *api = *c->api ? base_url(c->api) : NULL;
	char idp[40];
	uint64_t r = 0;
	if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
		r = (uint64_t)tl_now_ms() ^ ((uint64_t)getpid() << 32);
	snprintf(idp, sizeof idp, "L%012llx", (unsigned long long)(r & 0xffffffffffffULL));
	int ec = 1;
	if (!collector || (*c->api && !api))
		goto out;
	if (!strcmp(c->rate, "max")) {
		o.rate = 0;
	} else {
		char *end;
		o.rate = strtod(c->rate, &end);
		if (end == c->rate || *end || o.rate <= 0) {
			fprintf(stderr, "tally bench load: --rate: a number of events/s, or max\n");
			ec = 2;
			goto out;
		}
	}
	o.collector = collector;
	o.api = api;
	o.api_key = c->api_key;
	o.seconds = (double)c->seconds;
	o.warmup = (double)c->warmup;
	o.batch = (int)c->batch;
	o.connections = (int)c->connections;
	o.server_pid = (int)c->server_pid;
	o.drain_timeout = (double)c->drain_timeout;
	o.mix.campaigns = (int)c->campaigns;
	o.mix.variants = (int)c->variants;
	o.mix.recipients = c->recipients;
	if (*c->prefix)
		o.mix.prefix = c->prefix;
	o.mix.id_prefix = idp;
	o.seed = (uint64_t)c->seed;
	o.progress = c->quiet ? NULL : stderr;
	struct tl_bench_load_result res;
	int rc = tl_bench_load_run(&o, &res);
	if (rc) {
		fprintf(stderr, "tally bench load: %s%s%s\n", tl_strerror(rc), res.first_error[0] ? ": " : "",
		        res.first_error);
		ec = rc == -TL_EINVAL ? 2 : 1;
		goto out;
	}
	fprintf(stderr,
	        "load: window %.1f s: accepted %.0f ev/s, processed %.0f ev/s, backlog %+.0f ev/s, "
	        "%llu errors, %llu 503; generator CPU %.2f cores\n",
	        res.window_s, res.accepted_per_s, res.processed_per_s, res.backlog_growth_per_s,
	        (unsigned long long)res.errors, (unsigned long long)res.rejected_503, res.gen_cpu_share);
	if (res.first_error[0])
		fprintf(stderr, "load: first error: %s\n", res.first_error);
	struct tl_buf b;
	tl_buf_init(&b, 0);
	ec = tl_bench_load_result_json(&res, &b) ? 1 : print_json(&b);
	tl_buf_free(&b);
	tl_bench_load_result_free(&res);
out:
	free(collector);
	free(api);
	return ec;
}

static int run_lag(struct bench_cfg *c)
{
	struct tl_bench_probe_opts o;
	tl_bench_probe_defaults(&o);
	char *collector = base_url(c->collector), *api = *c->api ? base_url(c->api) : NULL;
	int ec = 1;
	if (!api) {
		fprintf(stderr, "tally bench lag: --api is required\n");
		ec = 2;
		goto out;
	}
	if (!collector)
		goto out;
	o.collector = collector;
	o.api = api;
	o.api_key = c->api_key;
	o.probes = (int)c->probes;
	o.interval_ms = (int)c->interval;
	o.poll_us = (int)c->poll_us;
	o.timeout_ms = (int)c->timeout;
	o.progress = c->quiet ? NULL : stderr;
	struct tl_bench_probe_result res;
	int rc = tl_bench_probe_run(&o, &res);
	if (rc) {
		fprintf(stderr, "tally bench lag: %s\n", tl_strerror(rc));
		goto out;
	}
	struct tl_buf b;
	tl_buf_init(&b, 0);
	ec = tl_buf_printf(&b,
	                   "{\"probes\":%d,\"ack_p50_ms\":%.2f,\"ack_p99_ms\":%.2f,\"visible_p50_ms\":%.2f,"
	                   "\"visible_p90_ms\":%.2f,\"visible_p99_ms\":%.2f,\"visible_max_ms\":%.2f,"
	                   "\"poll_mean_ms\":%.3f}",
	                   res.probes, res.ack_p50_ms, res.ack_p99_ms, res.vis_p50_ms, res.vis_p90_ms,
	                   res.vis_p99_ms, res.vis_max_ms, res.poll_mean_ms)
	         ? 1
	         : print_json(&b);
	tl_buf_free(&b);
out:
	free(collector);
	free(api);
	return ec;
}

static int run_fill(struct bench_cfg *c, const struct tl_config_result *res_cfg)
{
	(void)res_cfg;
	struct tl_bench_fill_opts o;
	tl_bench_fill_defaults(&o);
	char db[4096];
	if (*c->common.db)
		snprintf(db, sizeof db, "%s", c->common.db);
	else
		snprintf(db, sizeof db, "sqlite:%s/tally.db", c->common.data);
	if (!*c->tenant) {
		fprintf(stderr, "tally bench fill: --tenant is required\n");
		return 2;
	}
	o.db_uri = db;
	o.tenant = c->tenant;
	if (*c->prefix)
		o.prefix = c->prefix;
	o.campaigns = (int)c->campaigns;
	o.days = (int)c->days;
	o.active_minutes = (int)c->active_minutes;
	o.variants = (int)c->variants;
	o.txn_rows = (int)c->txn_rows;
	o.progress = c->quiet ? NULL : stderr;
	struct tl_bench_fill_result res;
	int rc = tl_bench_fill_run(&o, &res);
	if (rc) {
		fprintf(stderr, "tally bench fill: %s: %s\n", db, tl_strerror(rc));
		return rc == -TL_EINVAL ? 2 : 1;
	}
	printf("{\"campaigns\":%d,\"days\":%d,\"active_minutes\":%d,\"variants\":%d,\"rows\":%llu,"
	       "\"seconds\":%.1f,\"rows_per_s\":%.0f}\n",
	       o.campaigns, o.days, o.active_minutes, o.variants, (unsigned long long)res.rows, res.seconds,
	       res.seconds > 0 ? (double)res.rows / res.seconds : 0.0);
	return fflush(stdout) ? 1 : 0;
}

static int run_agg(struct bench_cfg *c)
{
	struct tl_bench_agg_opts o;
	tl_bench_agg_defaults(&o);
	char db[4096];
	if (*c->common.db)
		snprintf(db, sizeof db, "%s", c->common.db);
	else
		snprintf(db, sizeof db, "sqlite:%s/tally.db", c->common.data);
	o.db_uri = db;
	o.events = c->events;
	o.batch = (int)c->batch;
	o.mix.campaigns = (int)c->campaigns;
	o.mix.variants = (int)c->variants;
	o.mix.recipients = c->recipients;
	o.progress = c->quiet ? NULL : stderr;
	struct tl_bench_agg_result res;
	int rc = tl_bench_agg_run(&o, &res);
	if (rc) {
		fprintf(stderr, "tally bench agg: %s: %s\n", db, tl_strerror(rc));
		return rc == -TL_EINVAL ? 2 : 1;
	}
	printf("{\"events\":%lld,\"batch\":%d,\"batches\":%lld,\"cpu_us_per_event\":%.3f,"
	       "\"wall_us_per_event\":%.3f,\"cpu_ms_per_batch\":%.3f}\n",
	       (long long)res.events, o.batch, (long long)res.batches, res.cpu_us_per_event,
	       res.wall_us_per_event, res.cpu_ms_per_batch);
	return fflush(stdout) ? 1 : 0;
}

static int run_json(struct bench_cfg *c)
{
	struct tl_bench_json_result res;
	int rc = tl_bench_json_run((size_t)c->lines, (int)c->rounds, (uint64_t)c->seed, &res);
	if (rc) {
		fprintf(stderr, "tally bench json: %s\n", tl_strerror(rc));
		return 1;
	}
	printf("{\"lines\":%lld,\"rounds\":%lld,\"bytes_per_line\":%.0f,\"us_per_line\":%.3f,"
	       "\"jansson_us_per_line\":%.3f,\"fast_path_lines\":%.3f,\"to_json_us_per_event\":%.3f}\n",
	       (long long)c->lines, (long long)c->rounds, res.bytes_per_line, res.us_per_line,
	       res.jansson_us_per_line, res.fast_share, res.to_json_us);
	return fflush(stdout) ? 1 : 0;
}

int tl_cmd_bench(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		fputs(usage_text, argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	const char *what = argv[1];
	const char *const *flags = !strcmp(what, "load")   ? load_flags
	                           : !strcmp(what, "lag")  ? lag_flags
	                           : !strcmp(what, "fill") ? fill_flags
	                           : !strcmp(what, "json") ? json_flags
	                           : !strcmp(what, "agg")  ? agg_flags
	                                                   : NULL;
	if (!flags) {
		fprintf(stderr, "tally bench: unknown benchmark '%s'\n%s", what, usage_text);
		return 2;
	}
	struct bench_cfg c;
	memset(&c, 0, sizeof c);
	size_t n_table = 0;
	struct tl_opt *table = build_table(&n_table);
	if (!table) {
		fprintf(stderr, "tally bench: out of memory\n");
		return 1;
	}
	/* fill's campaign default is the API target's 10,000 */
	bool campaigns_given = false;
	for (int i = 2; i < argc; i++)
		campaigns_given |= !strncmp(argv[i], "--campaigns", 11);
	int ec = 2;
	struct tl_config_result res;
	char err[512];
	if (tl_config_load(&c, table, n_table, flags, argc - 1, argv + 1, &res, err, sizeof err)) {
		fprintf(stderr, "tally bench %s: %s (see tally bench %s --help)\n", what, err, what);
		goto out;
	}
	if (res.help) {
		printf("usage: tally bench %s [flags]\n\nflags:\n", what);
		tl_config_usage(table, n_table, flags, stdout);
		ec = 0;
		goto out;
	}
	if (res.n_positional) {
		fprintf(stderr, "tally bench %s: unexpected argument '%s'\n", what, res.positional[0]);
		goto out;
	}
	if (strcmp(what, "fill") && strcmp(what, "json") && strcmp(what, "agg") && !*c.api_key) {
		fprintf(stderr, "tally bench %s: --api-key is required\n", what);
		goto out;
	}
	if (!strcmp(what, "fill") && !campaigns_given)
		c.campaigns = 10000;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (!strcmp(what, "load"))
		ec = run_load(&c);
	else if (!strcmp(what, "lag"))
		ec = run_lag(&c);
	else if (!strcmp(what, "fill"))
		ec = run_fill(&c, &res);
	else if (!strcmp(what, "agg"))
		ec = run_agg(&c);
	else
		ec = run_json(&c);
	curl_global_cleanup();
out:
	tl_config_free(&c, table, n_table);
	free(table);
	return ec;
}
