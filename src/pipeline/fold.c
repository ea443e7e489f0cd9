/* fold.c — see fold.h.
 *
 * Per event, the fold keeps only what differs from event to event: the id,
 * the recipient, the times and the type. The (tenant, campaign, variant) of
 * an event is interned once per fold as a group (a direct-mapped cache with
 * a cheap hash in front of a hash map with XXH3), so a counter row is keyed
 * by (group, minute) and a unique candidate by ((tenant, campaign), kind,
 * recipient): two string hashes per event (id, and recipient when it has a
 * unique kind) instead of one per string and map. */
#include "pipeline/fold.h"

#include "core/arena.h"
#include "core/buf.h"
#include "core/hmap.h"
#include "event/metrics.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define GCACHE 1024 /* direct-mapped group cache slots (a power of two) */
#define NO_ROW UINT32_MAX

struct fev {
	struct tl_str recipient, id;
	int64_t ts_ms, arrival_ms;
	uint32_t grp;
	uint8_t type, bounce_class;
	uint16_t flags;
};

/* A distinct (tenant, campaign, variant) of the fold. t and tc name the
 * first group with the same tenant, and with the same (tenant, campaign):
 * equal ids mean equal strings. */
struct grp {
	struct tl_str tenant, campaign, variant; /* arena copies */
	uint64_t t_hash, tc_hash;                /* XXH3 of tenant; of (tenant, campaign) */
	uint32_t t, tc;
	uint32_t last_row; /* scratch of apply: the group's last counter row */
};

struct row_key {
	uint32_t grp;
	int64_t minute_ms;
};

struct ukey_ref {
	uint32_t tc, row;
	uint8_t kind;
	struct tl_str recipient;
};

struct tl_fold {
	size_t max;
	struct fev *ev;
	size_t n;
	struct tl_arena arena; /* strings of events and groups; reset with the fold */
	int64_t min_arrival;
	/* groups, reset with the fold */
	struct grp *g;
	size_t n_g, cap_g;
	struct tl_hmap gmap, tmap, tcmap;
	uint32_t gcache[GCACHE]; /* group + 1; 0 = empty */
	/* scratch for apply, rebuilt on every call */
	struct tl_hmap ids, rows_map, umap;
	uint32_t *cand; /* indices of events distinct by id */
	struct tl_dedupe_key *dkeys;
	uint8_t *is_new;
	struct tl_count_row *rows;
	struct row_key *rkeys;
	size_t n_rows;
	struct ukey_ref *urefs;
	struct tl_unique_key *ukeys;
	size_t n_u;
};

int tl_fold_create(size_t max_events, struct tl_fold **out)
{
	struct tl_fold *f = calloc(1, sizeof *f);
	if (!f)
		goto fail;
	f->max = max_events;
	tl_arena_init(&f->arena, 1 << 20, 0);
	tl_hmap_init(&f->gmap);
	tl_hmap_init(&f->tmap);
	tl_hmap_init(&f->tcmap);
	tl_hmap_init(&f->ids);
	tl_hmap_init(&f->rows_map);
	tl_hmap_init(&f->umap);
	f->ev = malloc(max_events * sizeof *f->ev);
	f->cand = malloc(max_events * sizeof *f->cand);
	f->dkeys = malloc(max_events * sizeof *f->dkeys);
	f->is_new = malloc(max_events * TL_U__COUNT + 16);
	f->rows = malloc(max_events * sizeof *f->rows);
	f->rkeys = malloc(max_events * sizeof *f->rkeys);
	f->urefs = malloc(max_events * TL_U__COUNT * sizeof *f->urefs);
	f->ukeys = malloc(max_events * TL_U__COUNT * sizeof *f->ukeys);
	if (!f->ev || !f->cand || !f->dkeys || !f->is_new || !f->rows || !f->rkeys || !f->urefs || !f->ukeys)
		goto fail;
	*out = f;
	return TL_OK;
fail:
	tl_fold_destroy(f);
	return -TL_ENOMEM;
}

void tl_fold_destroy(struct tl_fold *f)
{
	if (!f)
		return;
	tl_arena_free(&f->arena);
	tl_hmap_free(&f->gmap);
	tl_hmap_free(&f->tmap);
	tl_hmap_free(&f->tcmap);
	tl_hmap_free(&f->ids);
	tl_hmap_free(&f->rows_map);
	tl_hmap_free(&f->umap);
	free(f->g);
	free(f->ev);
	free(f->cand);
	free(f->dkeys);
	free(f->is_new);
	free(f->rows);
	free(f->rkeys);
	free(f->urefs);
	free(f->ukeys);
	free(f);
}

static int copy_str(struct tl_arena *a, struct tl_str *dst, struct tl_str src)
{
	if (!src.n) {
		*dst = (struct tl_str){"", 0};
		return TL_OK;
	}
	char *p = tl_arena_strdup(a, src.p, src.n);
	if (!p)
		return -TL_ENOMEM;
	*dst = (struct tl_str){p, src.n};
	return TL_OK;
}

/* ---- groups */

struct gkey {
	struct tl_str tenant, campaign, variant;
};

static int g_eq(const void *arg, uint32_t idx, const void *key)
{
	const struct grp *g = &((const struct tl_fold *)arg)->g[idx];
	const struct gkey *k = key;
	return tl_str_eq(g->variant, k->variant) && tl_str_eq(g->campaign, k->campaign) &&
	       tl_str_eq(g->tenant, k->tenant);
}

static int t_eq(const void *arg, uint32_t idx, const void *key)
{
	return tl_str_eq(((const struct tl_fold *)arg)->g[idx].tenant, ((const struct gkey *)key)->tenant);
}

static int tc_eq(const void *arg, uint32_t idx, const void *key)
{
	const struct grp *g = &((const struct tl_fold *)arg)->g[idx];
	const struct gkey *k = key;
	return tl_str_eq(g->campaign, k->campaign) && tl_str_eq(g->tenant, k->tenant);
}

/* The group of (tenant, campaign, variant), created when new. */
static long group_of(struct tl_fold *f, struct tl_str tenant, struct tl_str campaign, struct tl_str variant)
{
	struct gkey k = {tenant, campaign, variant};
	uint64_t qh = tl_str_hash_quick(tl_str_hash_quick(tl_str_hash_quick(0, tenant), campaign), variant);
	uint32_t *slot = &f->gcache[qh & (GCACHE - 1)];
	if (*slot && g_eq(f, *slot - 1, &k))
		return *slot - 1;
	uint64_t t_hash = XXH3_64bits(tenant.p, tenant.n);
	uint64_t tc_hash = XXH3_64bits_withSeed(campaign.p, campaign.n, t_hash);
	uint64_t h = XXH3_64bits_withSeed(variant.p, variant.n, tc_hash);
	long idx = tl_hmap_find(&f->gmap, h, &k, g_eq, f);
	if (idx < 0) {
		if (tl_array_grow((void **)&f->g, &f->cap_g, f->n_g + 1, sizeof *f->g))
			return -TL_ENOMEM;
		struct grp *g = &f->g[f->n_g];
		*g = (struct grp){.t_hash = t_hash, .tc_hash = tc_hash};
		if (copy_str(&f->arena, &g->tenant, tenant) || copy_str(&f->arena, &g->campaign, campaign) ||
		    copy_str(&f->arena, &g->variant, variant))
			return -TL_ENOMEM;
		uint32_t gi = (uint32_t)f->n_g;
		int ins;
		long t = tl_hmap_upsert(&f->tmap, t_hash, &k, t_eq, f, gi, &ins);
		long tc = t < 0 ? t : tl_hmap_upsert(&f->tcmap, tc_hash, &k, tc_eq, f, gi, &ins);
		idx = tc < 0 ? tc : tl_hmap_upsert(&f->gmap, h, &k, g_eq, f, gi, &ins);
		if (idx < 0)
			return idx; /* the maps may now name gi: it is never handed out, and reset clears them
			             */
		g->t = (uint32_t)t;
		g->tc = (uint32_t)tc;
		f->n_g++;
	}
	*slot = (uint32_t)idx + 1;
	return idx;
}

int tl_fold_add(struct tl_fold *f, const struct tl_event *ev)
{
	if (f->n >= f->max)
		return -TL_ETOOBIG;
	struct fev *e = &f->ev[f->n];
	long g = group_of(f, ev->tenant, ev->campaign, ev->variant);
	if (g < 0)
		return (int)g;
	if (copy_str(&f->arena, &e->recipient, ev->recipient) || copy_str(&f->arena, &e->id, ev->id))
		return -TL_ENOMEM;
	e->grp = (uint32_t)g;
	e->ts_ms = ev->ts_ms;
	e->arrival_ms = ev->arrival_ms ? ev->arrival_ms : ev->ts_ms;
	e->type = ev->type;
	e->bounce_class = ev->bounce_class;
	e->flags = ev->flags;
	if (!f->n || e->arrival_ms < f->min_arrival)
		f->min_arrival = e->arrival_ms;
	f->n++;
	return TL_OK;
}

size_t tl_fold_count(const struct tl_fold *f)
{
	return f->n;
}

int64_t tl_fold_min_arrival(const struct tl_fold *f)
{
	return f->n ? f->min_arrival : 0;
}

void tl_fold_reset(struct tl_fold *f)
{
	f->n = 0;
	f->min_arrival = 0;
	f->n_g = 0;
	tl_hmap_clear(&f->gmap);
	tl_hmap_clear(&f->tmap);
	tl_hmap_clear(&f->tcmap);
	memset(f->gcache, 0, sizeof f->gcache);
	tl_arena_reset(&f->arena);
}

/* ---- equality callbacks for the three maps of apply */

struct id_key {
	uint32_t t;
	struct tl_str id;
};

static int id_eq(const void *arg, uint32_t idx, const void *key)
{
	const struct tl_fold *f = arg;
	const struct id_key *k = key;
	const struct fev *e = &f->ev[idx];
	return f->g[e->grp].t == k->t && tl_str_eq(e->id, k->id);
}

static int row_eq(const void *arg, uint32_t idx, const void *key)
{
	const struct row_key *r = &((const struct tl_fold *)arg)->rkeys[idx], *k = key;
	return r->grp == k->grp && r->minute_ms == k->minute_ms;
}

static int u_eq(const void *arg, uint32_t idx, const void *key)
{
	const struct ukey_ref *a = &((const struct tl_fold *)arg)->urefs[idx], *b = key;
	return a->tc == b->tc && a->kind == b->kind && tl_str_eq(a->recipient, b->recipient);
}

static int64_t floor_minute(int64_t ms)
{
	int64_t m = ms / 60000;
	if (ms < 0 && m * 60000 != ms)
		m--;
	return m * 60000;
}

/* The counter row of event e (created when new); its index, or < 0. */
static long row_of(struct tl_fold *f, const struct fev *e)
{
	struct grp *g = &f->g[e->grp];
	struct row_key key = {e->grp, floor_minute(e->ts_ms)};
	if (g->last_row != NO_ROW && f->rkeys[g->last_row].minute_ms == key.minute_ms)
		return g->last_row;
	int ins;
	long r = tl_hmap_upsert(&f->rows_map, tl_mix64((uint64_t)key.minute_ms ^ ((uint64_t)key.grp << 40)),
	                        &key, row_eq, f, (uint32_t)f->n_rows, &ins);
	if (r < 0)
		return r;
	if (ins) {
		f->rkeys[r] = key;
		f->rows[r] = (struct tl_count_row){.tenant = g->tenant,
		                                   .campaign = g->campaign,
		                                   .variant = g->variant,
		                                   .minute_ms = key.minute_ms,
		                                   .first_ts_ms = e->ts_ms,
		                                   .last_ts_ms = e->ts_ms};
		f->n_rows++;
	}
	g->last_row = (uint32_t)r;
	return r;
}

int tl_fold_apply(struct tl_fold *f, struct tl_store *st, enum tl_source src, const char *consumer,
                  const struct tl_offset *offs, size_t n_offs, struct tl_fold_stats *stats)
{
	struct tl_fold_stats s = {.events = f->n};
	int rc;
	const bool distinct = !tl_store_dedupe_repeats(st); /* else the store's set is the check */
	if (distinct)
		tl_hmap_clear(&f->ids);
	tl_hmap_clear(&f->rows_map);
	tl_hmap_clear(&f->umap);
	f->n_rows = 0;
	f->n_u = 0;
	for (size_t i = 0; i < f->n_g; i++)
		f->g[i].last_row = NO_ROW;

	/* 1. distinct ids within the batch (first occurrence wins), unless the
	 * store's dedupe takes repeats itself */
	size_t n_cand = 0;
	for (size_t i = 0; i < f->n; i++) {
		const struct fev *e = &f->ev[i];
		const struct grp *g = &f->g[e->grp];
		if (distinct) {
			struct id_key k = {g->t, e->id};
			int ins;
			long r = tl_hmap_upsert(&f->ids, XXH3_64bits_withSeed(e->id.p, e->id.n, g->t_hash),
			                        &k, id_eq, f, (uint32_t)i, &ins);
			if (r < 0)
				return (int)r;
			if (!ins)
				continue;
		}
		f->cand[n_cand] = (uint32_t)i;
		f->dkeys[n_cand] = (struct tl_dedupe_key){g->tenant, e->id, e->arrival_ms};
		n_cand++;
	}

	if ((rc = tl_store_begin(st, src)))
		return rc;

	/* 2. ids seen in earlier batches */
	if (n_cand && (rc = tl_store_dedupe(st, f->dkeys, n_cand, f->is_new)))
		goto fail;

	/* 3. counter rows and unique candidates of the new events (ev: what the
	 * metrics read of an event; zeroed once, not per event) */
	struct tl_event ev = {0};
	for (size_t c = 0; c < n_cand; c++) {
		if (!f->is_new[c])
			continue;
		const struct fev *e = &f->ev[f->cand[c]];
		ev.type = e->type;
		ev.bounce_class = e->bounce_class;
		ev.flags = e->flags;
		long r = row_of(f, e);
		if (r < 0) {
			rc = (int)r;
			goto fail;
		}
		struct tl_count_row *row = &f->rows[r];
		if (e->ts_ms < row->first_ts_ms)
			row->first_ts_ms = e->ts_ms;
		if (e->ts_ms > row->last_ts_ms)
			row->last_ts_ms = e->ts_ms;
		tl_metrics_count_event(&ev, row->delta);
		s.counted++;

		unsigned kinds = tl_metrics_unique_kinds(&ev);
		if (!kinds)
			continue;
		const struct grp *g = &f->g[e->grp];
		uint64_t rh = XXH3_64bits_withSeed(e->recipient.p, e->recipient.n, f->g[g->tc].tc_hash);
		for (unsigned k = 0; k < TL_U__COUNT; k++) {
			if (!(kinds & (1u << k)))
				continue;
			struct ukey_ref ref = {g->tc, (uint32_t)r, (uint8_t)k, e->recipient};
			int ins;
			long u =
			    tl_hmap_upsert(&f->umap, tl_mix64(rh + k), &ref, u_eq, f, (uint32_t)f->n_u, &ins);
			if (u < 0) {
				rc = (int)u;
				goto fail;
			}
			if (ins) {
				f->urefs[f->n_u] = ref;
				f->ukeys[f->n_u] = (struct tl_unique_key){g->tenant, g->campaign, (uint8_t)k,
				                                          e->recipient, e->ts_ms};
				f->n_u++;
			}
		}
	}
	s.duplicates = f->n - s.counted;

	/* 4. first members of the unique sets credit the row of their event */
	if (f->n_u) {
		if ((rc = tl_store_uniques(st, f->ukeys, f->n_u, f->is_new)))
			goto fail;
		for (size_t i = 0; i < f->n_u; i++) {
			if (!f->is_new[i])
				continue;
			f->rows[f->urefs[i].row].delta[tl_unique_metric(f->urefs[i].kind)]++;
			s.uniques_new++;
		}
	}

	/* 5. counters, offsets, commit */
	if (f->n_rows && (rc = tl_store_add_counts(st, f->rows, f->n_rows)))
		goto fail;
	if (n_offs && (rc = tl_store_offsets_set(st, consumer, offs, n_offs)))
		goto fail;
	if ((rc = tl_store_commit(st)))
		return rc; /* commit failure rolls back */
	s.rows = f->n_rows;
	if (stats)
		*stats = s;
	return TL_OK;
fail:
	tl_store_rollback(st);
	return rc;
}
