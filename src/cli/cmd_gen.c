/* cmd_gen.c — `tally gen`: simulates email campaigns against a running
 * collector and writes the exact counts the pipeline must reach (the ground
 * truth) as JSON. See gen/gen.h for what is simulated. */
#include "cli/cli.h"
#include "cli/settings.h"
#include "core/clock.h"
#include "gen/gen.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

struct gen_cfg {
	char *collector;
	char *tenant;
	char *api_key;
	char *link_key;
	char *other_key;
	char *variants;
	char *prefix;
	char *out;
	int64_t campaigns;
	int64_t recipients;
	int64_t events;
	int64_t seed;
	int64_t concurrency;
	int64_t batch_lines;
	int64_t retry_until;
	int junk;
	int quiet;
	struct tl_settings common; /* so tally.conf and TALLY_* meant for other commands are understood */
};

#define G(field) offsetof(struct gen_cfg, field)

static const struct tl_opt gen_table[] = {
    {"collector", TL_OPT_STR, G(collector), "http://127.0.0.1:8080", "collector base URL (or ADDR:PORT)"},
    {"tenant", TL_OPT_STR, G(tenant), NULL, "tenant name (required)"},
    {"api-key", TL_OPT_STR, G(api_key), NULL, "the tenant's API key (required)"},
    {"link-key", TL_OPT_STR, G(link_key), NULL, "the tenant's link key, 64 hex characters (required)"},
    {"other-tenant-link-key", TL_OPT_STR, G(other_key), NULL,
     "another tenant's link key: also send tokens signed with it (must not count)"},
    {"campaigns", TL_OPT_INT, G(campaigns), "5", "number of campaigns"},
    {"recipients", TL_OPT_INT, G(recipients), "1000", "recipients per campaign"},
    {"events", TL_OPT_INT, G(events), "0", "approximate total events to submit (scales --recipients)"},
    {"variants", TL_OPT_STR, G(variants), "A,B", "comma-separated variants; \"\" = none"},
    {"campaign-prefix", TL_OPT_STR, G(prefix), "camp", "campaigns are named <prefix>-<n>"},
    {"seed", TL_OPT_INT, G(seed), "1", "simulation seed"},
    {"out", TL_OPT_STR, G(out), NULL, "write the ground truth JSON here (default stdout)"},
    {"concurrency", TL_OPT_INT, G(concurrency), "8", "parallel keep-alive HTTP connections"},
    {"batch-lines", TL_OPT_INT, G(batch_lines), "800", "NDJSON lines per POST /v1/events"},
    {"junk", TL_OPT_BOOL, G(junk), "true", "duplicates, bad batches, forged and foreign tokens"},
    {"retry-until", TL_OPT_INT, G(retry_until), "0",
     "seconds: re-send any request left without an answer (collector killed or restarting) until it "
     "gets one; hits then carry an Idempotency-Key so they count once (0 = off)"},
    {"quiet", TL_OPT_BOOL, G(quiet), "false", "no progress lines"},
};
#define N_GEN (sizeof gen_table / sizeof gen_table[0])

static const char *const gen_flags[] = {
    "collector", "tenant",      "api-key",     "link-key",    "other-tenant-link-key",
    "campaigns", "recipients",  "events",      "variants",    "campaign-prefix",
    "seed",      "out",         "concurrency", "batch-lines", "junk",
    "quiet",     "retry-until", NULL};

static const char usage_line[] =
    "tally gen --collector URL --tenant NAME --api-key KEY --link-key HEX [--events N | --recipients N] "
    "[--campaigns N] [--variants A,B] [--seed N] [--out FILE] [--retry-until SECONDS] [flags]";

/* gen's own options, then every shared setting it does not redefine. */
static struct tl_opt *build_table(size_t *n)
{
	struct tl_opt *t = calloc(N_GEN + tl_settings_count, sizeof *t);
	if (!t)
		return NULL;
	memcpy(t, gen_table, sizeof gen_table);
	size_t k = N_GEN;
	for (size_t i = 0; i < tl_settings_count; i++) {
		bool mine = false;
		for (size_t j = 0; j < N_GEN; j++)
			mine |= strcmp(tl_settings_table[i].name, gen_table[j].name) == 0;
		if (mine)
			continue;
		t[k] = tl_settings_table[i];
		t[k].offset += G(common);
		k++;
	}
	*n = k;
	return t;
}

static int parse_key(const char *flag, const char *hex, unsigned char key[TL_LINK_KEY_LEN])
{
	size_t n = strlen(hex);
	if (n != 2 * TL_LINK_KEY_LEN || tl_hex_decode(hex, n, key, TL_LINK_KEY_LEN) != TL_LINK_KEY_LEN) {
		fprintf(stderr, "tally gen: --%s: need %d hex characters\n", flag, 2 * TL_LINK_KEY_LEN);
		return -1;
	}
	return 0;
}

static void on_progress(void *arg, const struct tl_gen_progress *p)
{
	const struct gen_cfg *c = arg;
	double secs = (double)p->elapsed_ms / 1000.0;
	if (p->done) {
		fprintf(
		    stderr,
		    "gen: done: %lld events (%lld counted) in %.2f s: %.0f events/s; %lld requests (%.0f/s), "
		    "%lld batches (%lld bad, %lld retried, %lld duplicate lines), %lld hits (%lld forged), "
		    "%lld errors\n",
		    (long long)p->stats.events_sent, (long long)p->stats.events_counted, secs,
		    p->events_per_s, (long long)p->stats.requests,
		    secs > 0 ? (double)p->stats.requests / secs : 0.0, (long long)p->stats.batches,
		    (long long)p->stats.junk_batches, (long long)p->stats.retried_batches,
		    (long long)p->stats.dup_lines, (long long)p->stats.hits, (long long)p->stats.forged_hits,
		    (long long)p->stats.errors);
	} else if (!c->quiet) {
		fprintf(stderr, "gen: %.1f s: %lld events, %lld requests, %.0f events/s, %lld errors\n", secs,
		        (long long)p->stats.events_sent, (long long)p->stats.requests, p->events_per_s,
		        (long long)p->stats.errors);
	}
}

/* Writes text to path. A regular file (or a new one) is written through a
 * temporary file and a rename, so a reader never sees half of it; anything
 * else that exists (/dev/stdout, /dev/null, a FIFO) is written in place —
 * renaming over it would replace the device or pipe with a file. */
static int write_file(const char *path, const char *text, size_t n)
{
	struct stat sb;
	if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
		FILE *f = fopen(path, "w");
		int ok = f && fwrite(text, 1, n, f) == n;
		if (f && fclose(f))
			ok = 0;
		if (!ok)
			fprintf(stderr, "tally gen: --out %s: %s\n", path, strerror(errno));
		return ok ? 0 : -1;
	}
	size_t tl = strlen(path) + 8;
	char *tmp = malloc(tl);
	if (!tmp)
		return -1;
	snprintf(tmp, tl, "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	int ok = f && fwrite(text, 1, n, f) == n;
	if (f && fclose(f))
		ok = 0;
	if (ok && rename(tmp, path))
		ok = 0;
	if (!ok) {
		fprintf(stderr, "tally gen: --out %s: %s\n", path, strerror(errno));
		remove(tmp);
	}
	free(tmp);
	return ok ? 0 : -1;
}

int tl_cmd_gen(int argc, char **argv)
{
	struct gen_cfg c;
	memset(&c, 0, sizeof c);
	size_t n_table = 0;
	struct tl_opt *table = build_table(&n_table);
	if (!table) {
		fprintf(stderr, "tally gen: out of memory\n");
		return 1;
	}
	int ec = 2;
	struct tl_gen *g = NULL;
	char *collector = NULL;
	struct tl_buf out;
	tl_buf_init(&out, 0);
	struct tl_config_result res;
	char err[512];
	if (tl_config_load(&c, table, n_table, gen_flags, argc, argv, &res, err, sizeof err)) {
		fprintf(stderr, "tally gen: %s (see tally gen --help)\n", err);
		goto out;
	}
	if (res.help) {
		printf("usage: %s\n\nflags:\n", usage_line);
		tl_config_usage(table, n_table, gen_flags, stdout);
		ec = 0;
		goto out;
	}
	if (res.n_positional) {
		fprintf(stderr, "tally gen: unexpected argument '%s'\n", res.positional[0]);
		goto out;
	}
	const char *missing = !*c.tenant     ? "--tenant"
	                      : !*c.api_key  ? "--api-key"
	                      : !*c.link_key ? "--link-key"
	                                     : NULL;
	if (missing) {
		fprintf(stderr, "tally gen: %s is required\n", missing);
		goto out;
	}
	struct tl_gen_opts o;
	tl_gen_defaults(&o);
	if (parse_key("link-key", c.link_key, o.link_key))
		goto out;
	if (*c.other_key) {
		if (parse_key("other-tenant-link-key", c.other_key, o.other_key))
			goto out;
		o.has_other_key = true;
	}
	static const struct {
		const char *flag;
		size_t off;
		int64_t min, max;
	} ranges[] = {
	    {"campaigns", G(campaigns), 1, 100000},    {"recipients", G(recipients), 0, 100000000},
	    {"events", G(events), 0, 10000000000LL},   {"seed", G(seed), 0, INT64_MAX},
	    {"concurrency", G(concurrency), 1, 1024},  {"batch-lines", G(batch_lines), 1, 100000},
	    {"retry-until", G(retry_until), 0, 86400},
	};
	for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
		int64_t v = *(int64_t *)(void *)((char *)&c + ranges[i].off);
		if (v < ranges[i].min || v > ranges[i].max) {
			fprintf(stderr, "tally gen: --%s: must be %lld..%lld\n", ranges[i].flag,
			        (long long)ranges[i].min, (long long)ranges[i].max);
			goto out;
		}
	}
	o.tenant = c.tenant;
	o.campaign_prefix = c.prefix;
	o.campaigns = (int)c.campaigns;
	o.recipients = c.recipients;
	o.events = c.events;
	o.variants = c.variants;
	o.seed = (uint64_t)c.seed;
	o.junk = c.junk;
	o.batch_lines = (int)c.batch_lines;
	/* retry mode: hit keys unique to this run, so a re-sent hit counts once */
	char hit_prefix[24];
	if (c.retry_until > 0) {
		uint64_t r = 0;
		if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
			r = (uint64_t)tl_now_ms() ^ ((uint64_t)getpid() << 32);
		snprintf(hit_prefix, sizeof hit_prefix, "g%016llx", (unsigned long long)r);
		o.hit_id_prefix = hit_prefix;
	}
	int rc = tl_gen_create(&o, &g);
	if (rc) {
		fprintf(stderr, "tally gen: %s\n",
		        rc == -TL_EINVAL
		            ? "bad options (--tenant, --variants \"A,B\" with up to 16 distinct names, "
		              "--campaign-prefix)"
		            : tl_strerror(rc));
		goto out;
	}

	/* "127.0.0.1:8080" (the serve-style listener address) means http:// */
	size_t cl = strlen(c.collector) + 8;
	if (!(collector = malloc(cl)))
		goto oom;
	snprintf(collector, cl, "%s%s", strstr(c.collector, "://") ? "" : "http://", c.collector);

	fprintf(stderr,
	        "gen: tenant %s, %lld campaigns x %lld recipients, variants \"%s\", seed %lld -> %s\n",
	        c.tenant, (long long)c.campaigns, (long long)tl_gen_recipients(g), c.variants,
	        (long long)c.seed, collector);
	ec = 1;
	err[0] = '\0';
	struct tl_gen_http_opts ho = {
	    .collector = collector,
	    .api_key = c.api_key,
	    .concurrency = (int)c.concurrency,
	    .retry_until_ms = c.retry_until * 1000,
	    .progress = on_progress,
	    .progress_arg = &c,
	    .err = err,
	    .errlen = sizeof err,
	};
	rc = tl_gen_run_http(g, &ho);
	if (rc)
		fprintf(stderr, "tally gen: %s%s%s\n", tl_strerror(rc), err[0] ? ": " : "", err);
	if (tl_gen_truth_json(g, &out))
		goto oom;
	if (*c.out && strcmp(c.out, "-") != 0) {
		if (write_file(c.out, out.data, out.len))
			rc = rc ? rc : -TL_EIO;
	} else if (fwrite(out.data, 1, out.len, stdout) != out.len || fflush(stdout)) {
		rc = rc ? rc : -TL_EIO;
	}
	ec = rc ? 1 : 0;
	goto out;
oom:
	fprintf(stderr, "tally gen: out of memory\n");
	ec = 1;
out:
	tl_buf_free(&out);
	free(collector);
	tl_gen_destroy(g);
	tl_config_free(&c, table, n_table);
	free(table);
	return ec;
}
