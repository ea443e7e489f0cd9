/* reconcile.c — real-time vs batch (see reconcile.h). */
#include "batch/reconcile.h"

#include "batch/reader.h"
#include "batch/state.h"
#include "core/hmap.h"
#include "store/store.h"

#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define DAY_MS 86400000LL

bool tl_reconcile_is_unique(enum tl_metric m)
{
	return m == TL_M_UNIQUE_OPENS || m == TL_M_UNIQUE_HUMAN_OPENS || m == TL_M_UNIQUE_CLICKS ||
	       m == TL_M_UNIQUE_HUMAN_CLICKS;
}

void tl_reconcile_free(struct tl_reconcile_result *res)
{
	for (size_t i = 0; i < res->n_diffs; i++) {
		free(res->diffs[i].tenant);
		free(res->diffs[i].campaign);
		free(res->diffs[i].variant);
	}
	free(res->diffs);
	for (size_t i = 0; i < res->n_notes; i++)
		free(res->notes[i]);
	free(res->notes);
	memset(res, 0, sizeof *res);
}

/* ---- a campaign list: name, first and last day in either source ----------- */

struct camp {
	char *name;
	int64_t first_ms, last_ms;
	char **variants; /* from the batch state of the days */
	size_t n_var;
};

struct camps {
	struct camp *v;
	size_t n, cap;
	struct tl_hmap map; /* name -> index */
	int64_t from_ms, to_ms;
	int rc;
};

static int camp_eq(const void *arg, uint32_t idx, const void *key)
{
	const struct camps *cs = arg;
	return !strcmp(cs->v[idx].name, key);
}

static struct camp *camp_get(struct camps *cs, const char *name)
{
	uint64_t h = XXH3_64bits(name, strlen(name));
	long i = tl_hmap_find(&cs->map, h, name, camp_eq, cs);
	if (i >= 0)
		return &cs->v[i];
	if (cs->n == cs->cap) {
		size_t nc = cs->cap ? cs->cap * 2 : 32;
		struct camp *nv = realloc(cs->v, nc * sizeof *nv);
		if (!nv)
			return NULL;
		cs->v = nv;
		cs->cap = nc;
	}
	struct camp *c = &cs->v[cs->n];
	*c = (struct camp){.name = strdup(name), .first_ms = INT64_MAX, .last_ms = INT64_MIN};
	int ins;
	if (!c->name || tl_hmap_upsert(&cs->map, h, name, camp_eq, cs, (uint32_t)cs->n, &ins) < 0) {
		free(c->name);
		return NULL;
	}
	cs->n++;
	return c;
}

static int on_campaign(void *arg, const struct tl_campaign_summary *s)
{
	struct camps *cs = arg;
	if (s->first_ms >= cs->to_ms || s->last_ms < cs->from_ms)
		return TL_OK; /* no data in the days */
	struct camp *c = camp_get(cs, s->campaign);
	if (!c)
		return cs->rc = -TL_ENOMEM;
	if (s->first_ms < c->first_ms)
		c->first_ms = s->first_ms;
	if (s->last_ms > c->last_ms)
		c->last_ms = s->last_ms;
	return TL_OK;
}

static int add_variant(struct camp *c, const char *v)
{
	for (size_t i = 0; i < c->n_var; i++)
		if (!strcmp(c->variants[i], v))
			return TL_OK;
	char **nv = realloc(c->variants, (c->n_var + 1) * sizeof *nv);
	if (!nv)
		return -TL_ENOMEM;
	c->variants = nv;
	if (!(nv[c->n_var] = strdup(v)))
		return -TL_ENOMEM;
	c->n_var++;
	return TL_OK;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void camps_free(struct camps *cs)
{
	for (size_t i = 0; i < cs->n; i++) {
		free(cs->v[i].name);
		for (size_t j = 0; j < cs->v[i].n_var; j++)
			free(cs->v[i].variants[j]);
		free(cs->v[i].variants);
	}
	free(cs->v);
	tl_hmap_free(&cs->map);
}

/* ---- the comparison --------------------------------------------------------- */

struct rec {
	const struct tl_reconcile_opts *o;
	struct tl_store *st;
	struct tl_reconcile_result *res;
	int64_t *arch_days; /* days with an archive directory */
	size_t n_arch;
	int64_t *runs_day; /* cache: day -> batch run (0 = none) */
	uint64_t *runs_id;
	size_t n_runs;
};

static int note(struct tl_reconcile_result *res, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int note(struct tl_reconcile_result *res, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	char **nv = realloc(res->notes, (res->n_notes + 1) * sizeof *nv);
	if (!nv)
		return -TL_ENOMEM;
	res->notes = nv;
	if (!(nv[res->n_notes] = strdup(buf)))
		return -TL_ENOMEM;
	res->n_notes++;
	return TL_OK;
}

static int day_run(struct rec *r, int64_t day, uint64_t *runid)
{
	for (size_t i = 0; i < r->n_runs; i++)
		if (r->runs_day[i] == day) {
			*runid = r->runs_id[i];
			return TL_OK;
		}
	char topic[32];
	int rc = tl_bstate_topic(day, topic, sizeof topic);
	if (!rc)
		rc = tl_store_offset_get(r->st, TL_BSTATE_CONSUMER, topic, 0, runid);
	if (rc)
		return rc;
	int64_t *nd = realloc(r->runs_day, (r->n_runs + 1) * sizeof *nd);
	if (nd)
		r->runs_day = nd;
	uint64_t *ni = realloc(r->runs_id, (r->n_runs + 1) * sizeof *ni);
	if (ni)
		r->runs_id = ni;
	if (!nd || !ni)
		return -TL_ENOMEM;
	r->runs_day[r->n_runs] = day;
	r->runs_id[r->n_runs++] = *runid;
	return TL_OK;
}

static int add_diff(struct tl_reconcile_result *res, const char *tenant, const char *campaign,
                    const char *variant, enum tl_metric m, int64_t rt, int64_t bt)
{
	struct tl_reconcile_diff *nv = realloc(res->diffs, (res->n_diffs + 1) * sizeof *nv);
	if (!nv)
		return -TL_ENOMEM;
	res->diffs = nv;
	struct tl_reconcile_diff *d = &nv[res->n_diffs];
	*d = (struct tl_reconcile_diff){.tenant = strdup(tenant),
	                                .campaign = strdup(campaign),
	                                .variant = variant ? strdup(variant) : NULL,
	                                .metric = m,
	                                .realtime = rt,
	                                .batch = bt};
	if (!d->tenant || !d->campaign || (variant && !d->variant)) {
		free(d->tenant);
		free(d->campaign);
		free(d->variant);
		return -TL_ENOMEM;
	}
	res->n_diffs++;
	return TL_OK;
}

static int sum_point(void *arg, int64_t bucket_ms, int64_t value)
{
	(void)bucket_ms;
	*(int64_t *)arg += value;
	return TL_OK;
}

static int totals(struct tl_store *st, enum tl_source src, const char *tenant, const char *campaign,
                  const char *variant, int64_t counts[TL_M__COUNT])
{
	struct tl_campaign_summary s;
	int rc = tl_store_campaign(st, src, tenant, campaign, variant, &s);
	if (rc == -TL_ENOTFOUND) {
		memset(counts, 0, TL_M__COUNT * sizeof *counts);
		return TL_OK;
	}
	if (!rc)
		memcpy(counts, s.counts, TL_M__COUNT * sizeof *counts);
	return rc;
}

/* Whether the batch recomputed every archived day of the campaign; if not,
 * a note names the days. */
static int covered(struct rec *r, const char *tenant, const struct camp *c, bool *ok)
{
	int64_t a = c->first_ms / DAY_MS, b = c->last_ms / DAY_MS, miss_a = 0, miss_b = -1;
	size_t missing = 0;
	for (size_t i = 0; i < r->n_arch; i++) {
		int64_t d = r->arch_days[i];
		if (d < a || d > b)
			continue;
		uint64_t runid;
		int rc = day_run(r, d, &runid);
		if (rc)
			return rc;
		if (runid)
			continue;
		if (!missing++)
			miss_a = d;
		miss_b = d;
	}
	*ok = missing == 0;
	if (*ok)
		return TL_OK;
	char da[32], db[32], fa[32], fb[32];
	if (tl_bstate_topic(miss_a, da, sizeof da) || tl_bstate_topic(miss_b, db, sizeof db) ||
	    tl_bstate_topic(a, fa, sizeof fa) || tl_bstate_topic(b, fb, sizeof fb))
		return -TL_EINVAL;
	return note(
	    r->res,
	    "%s/%s: unique metrics not compared: the batch has not recomputed %zu archived day(s) of the "
	    "campaign (%s .. %s); run: tally batch --from %s --to %s",
	    tenant, c->name, missing, da + 3, db + 3, fa + 3, fb + 3);
}

static int compare_campaign(struct rec *r, const char *tenant, struct camp *c)
{
	int64_t from_ms = r->o->from_day * DAY_MS, to_ms = (r->o->to_day + 1) * DAY_MS;
	bool unique_ok;
	int rc = covered(r, tenant, c, &unique_ok);
	if (c->n_var)
		qsort(c->variants, c->n_var, sizeof *c->variants, cmp_str);
	for (size_t v = 0; v <= c->n_var && !rc; v++) {
		const char *variant = v ? c->variants[v - 1] : NULL;
		int64_t rt_tot[TL_M__COUNT], bt_tot[TL_M__COUNT];
		if ((rc = totals(r->st, TL_SOURCE_REALTIME, tenant, c->name, variant, rt_tot)) ||
		    (rc = totals(r->st, TL_SOURCE_BATCH, tenant, c->name, variant, bt_tot)))
			break;
		for (int m = 0; m < TL_M__COUNT && !rc; m++) {
			int64_t rt = 0, bt = 0;
			if (tl_reconcile_is_unique((enum tl_metric)m)) {
				if (!unique_ok)
					continue;
				rt = rt_tot[m];
				bt = bt_tot[m];
			} else {
				rc =
				    tl_store_series(r->st, TL_SOURCE_REALTIME, tenant, c->name, variant,
				                    (enum tl_metric)m, 86400, from_ms, to_ms, sum_point, &rt);
				if (!rc)
					rc = tl_store_series(r->st, TL_SOURCE_BATCH, tenant, c->name, variant,
					                     (enum tl_metric)m, 86400, from_ms, to_ms,
					                     sum_point, &bt);
				if (rc)
					break;
			}
			r->res->comparisons++;
			if (rt != bt)
				rc = add_diff(r->res, tenant, c->name, variant, (enum tl_metric)m, rt, bt);
		}
	}
	return rc;
}

/* Adds the variants the batch state of the days lists for tenant's campaigns. */
static int state_variants(struct rec *r, const char *tenant, struct camps *cs)
{
	int rc = TL_OK;
	for (int64_t d = r->o->from_day; d <= r->o->to_day && !rc; d++) {
		uint64_t runid;
		if ((rc = day_run(r, d, &runid)) || !runid)
			continue;
		char path[PATH_MAX];
		struct tl_bstate *s = NULL;
		if ((rc = tl_bstate_path(r->o->state_dir, d, runid, path, sizeof path)))
			break;
		rc = tl_bstate_open(path, &s);
		if (rc == -TL_ENOTFOUND) {
			rc = note(r->res,
			          "%s: the batch state of run %" PRIu64 " is missing: per-variant numbers of "
			          "that day are compared only for variants found elsewhere",
			          path, runid);
			continue;
		}
		for (size_t i = 0; !rc && i < s->n; i++) {
			if (strcmp(s->c[i].tenant, tenant))
				continue;
			struct camp *c = camp_get(cs, s->c[i].campaign);
			if (!c) {
				rc = -TL_ENOMEM;
				break;
			}
			if (d * DAY_MS < c->first_ms)
				c->first_ms = d * DAY_MS;
			if (d * DAY_MS > c->last_ms)
				c->last_ms = d * DAY_MS;
			for (size_t v = 0; v < s->c[i].n_variants && !rc; v++)
				rc = add_variant(c, s->c[i].variants[v]);
		}
		tl_bstate_close(s);
	}
	return rc;
}

int tl_reconcile(const struct tl_reconcile_opts *o, struct tl_reconcile_result *res)
{
	memset(res, 0, sizeof *res);
	if (o->from_day > o->to_day)
		return -TL_EINVAL;
	struct rec r = {.o = o, .res = res};
	struct tl_tenant *tenants = NULL;
	size_t n_tenants = 0;
	int64_t version;
	int rc = tl_store_open(o->db_uri, &r.st);
	if (!rc)
		rc = tl_store_tenants_load(r.st, &tenants, &n_tenants, &version);
	if (!rc)
		rc = tl_archive_days_list(o->archive_dir, INT32_MIN, INT32_MAX, &r.arch_days, &r.n_arch);
	for (int64_t d = o->from_day; d <= o->to_day && !rc; d++) {
		uint64_t runid;
		char topic[32];
		if ((rc = day_run(&r, d, &runid)) || runid)
			continue;
		bool archived = false;
		for (size_t i = 0; i < r.n_arch; i++)
			archived |= r.arch_days[i] == d;
		if ((rc = tl_bstate_topic(d, topic, sizeof topic)))
			break;
		rc = note(res, "%s has not been recomputed by the batch%s: run tally batch --day %s",
		          topic + 3, archived ? "" : " (and the archive has no files for it)", topic + 3);
	}
	for (size_t t = 0; t < n_tenants && !rc; t++) {
		struct camps cs = {.from_ms = o->from_day * DAY_MS, .to_ms = (o->to_day + 1) * DAY_MS};
		tl_hmap_init(&cs.map);
		rc = tl_store_campaigns(r.st, TL_SOURCE_REALTIME, tenants[t].name, 0, on_campaign, &cs);
		if (!rc)
			rc = tl_store_campaigns(r.st, TL_SOURCE_BATCH, tenants[t].name, 0, on_campaign, &cs);
		if (!rc)
			rc = cs.rc;
		if (!rc)
			rc = state_variants(&r, tenants[t].name, &cs);
		for (size_t i = 0; i < cs.n && !rc; i++) {
			res->campaigns++;
			rc = compare_campaign(&r, tenants[t].name, &cs.v[i]);
		}
		camps_free(&cs);
	}
	tl_tenants_free(tenants, n_tenants);
	tl_store_close(r.st);
	free(r.arch_days);
	free(r.runs_day);
	free(r.runs_id);
	if (rc)
		tl_reconcile_free(res);
	return rc;
}
