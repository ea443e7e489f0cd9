#include "pipeline/fold.h"

#include "core/arena.h"
#include "core/hmap.h"
#include "event/metrics.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

struct fev {
	struct tl_str tenant, campaign, variant, recipient, id;
	int64_t ts_ms, arrival_ms;
	uint8_t type, bounce_class;
	uint16_t flags;
};

struct ukey_ref {
	struct tl_unique_key key;
	uint32_t row;
};

struct tl_fold {
	size_t max;
	struct fev *ev;
	size_t n;
	struct tl_arena arena; /* event strings; reset with the fold */
	int64_t min_arrival;
	/* scratch for apply, rebuilt on every call */
	struct tl_hmap ids, rows_map, umap;
	uint32_t *cand; /* indices of events distinct by id */
	struct tl_dedupe_key *dkeys;
	uint8_t *is_new;
	struct tl_count_row *rows;
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
	tl_hmap_init(&f->ids);
	tl_hmap_init(&f->rows_map);
	tl_hmap_init(&f->umap);
	f->ev = malloc(max_events * sizeof *f->ev);
	f->cand = malloc(max_events * sizeof *f->cand);
	f->dkeys = malloc(max_events * sizeof *f->dkeys);
	f->is_new = malloc(max_events * 4 + 16);
	f->rows = malloc(max_events * sizeof *f->rows);
	f->urefs = malloc(max_events * 4 * sizeof *f->urefs);
	f->ukeys = malloc(max_events * 4 * sizeof *f->ukeys);
	if (!f->ev || !f->cand || !f->dkeys || !f->is_new || !f->rows || !f->urefs || !f->ukeys)
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
	tl_hmap_free(&f->ids);
	tl_hmap_free(&f->rows_map);
	tl_hmap_free(&f->umap);
	free(f->ev);
	free(f->cand);
	free(f->dkeys);
	free(f->is_new);
	free(f->rows);
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

int tl_fold_add(struct tl_fold *f, const struct tl_event *ev)
{
	if (f->n >= f->max)
		return -TL_ETOOBIG;
	struct fev *e = &f->ev[f->n];
	if (copy_str(&f->arena, &e->tenant, ev->tenant) || copy_str(&f->arena, &e->campaign, ev->campaign) ||
	    copy_str(&f->arena, &e->variant, ev->variant) ||
	    copy_str(&f->arena, &e->recipient, ev->recipient) || copy_str(&f->arena, &e->id, ev->id))
		return -TL_ENOMEM;
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
	tl_arena_reset(&f->arena);
}

static inline int str_eq(struct tl_str a, struct tl_str b)
{
	return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

static inline uint64_t hash2(struct tl_str a, struct tl_str b)
{
	return XXH3_64bits_withSeed(b.p, b.n, XXH3_64bits(a.p, a.n));
}

/* ---- equality callbacks for the three maps */

struct id_key {
	struct tl_str tenant, id;
};

static int id_eq(const void *arg, uint32_t idx, const void *key)
{
	const struct tl_fold *f = arg;
	const struct id_key *k = key;
	return str_eq(f->ev[idx].id, k->id) && str_eq(f->ev[idx].tenant, k->tenant);
}

static int row_eq(const void *arg, uint32_t idx, const void *key)
{
	const struct tl_fold *f = arg;
	const struct tl_count_row *r = &f->rows[idx], *k = key;
	return r->minute_ms == k->minute_ms && str_eq(r->campaign, k->campaign) &&
	       str_eq(r->variant, k->variant) && str_eq(r->tenant, k->tenant);
}

static int u_eq(const void *arg, uint32_t idx, const void *key)
{
	const struct tl_fold *f = arg;
	const struct tl_unique_key *a = &f->urefs[idx].key, *b = key;
	return a->kind == b->kind && str_eq(a->recipient, b->recipient) && str_eq(a->campaign, b->campaign) &&
	       str_eq(a->tenant, b->tenant);
}

static int64_t floor_minute(int64_t ms)
{
	int64_t m = ms / 60000;
	if (ms < 0 && m * 60000 != ms)
		m--;
	return m * 60000;
}

int tl_fold_apply(struct tl_fold *f, struct tl_store *st, enum tl_source src, const char *consumer,
                  const struct tl_offset *offs, size_t n_offs, struct tl_fold_stats *stats)
{
	struct tl_fold_stats s = {.events = f->n};
	int rc;
	tl_hmap_clear(&f->ids);
	tl_hmap_clear(&f->rows_map);
	tl_hmap_clear(&f->umap);
	f->n_rows = 0;
	f->n_u = 0;

	/* 1. distinct ids within the batch (first occurrence wins) */
	size_t n_cand = 0;
	for (size_t i = 0; i < f->n; i++) {
		struct id_key k = {f->ev[i].tenant, f->ev[i].id};
		int ins;
		long r = tl_hmap_upsert(&f->ids, hash2(k.tenant, k.id), &k, id_eq, f, (uint32_t)i, &ins);
		if (r < 0)
			return (int)r;
		if (!ins)
			continue;
		f->cand[n_cand] = (uint32_t)i;
		f->dkeys[n_cand] = (struct tl_dedupe_key){f->ev[i].tenant, f->ev[i].id, f->ev[i].arrival_ms};
		n_cand++;
	}

	if ((rc = tl_store_begin(st, src)))
		return rc;

	/* 2. ids seen in earlier batches */
	if (n_cand && (rc = tl_store_dedupe(st, f->dkeys, n_cand, f->is_new)))
		goto fail;

	/* 3. counter rows and unique candidates of the new events */
	for (size_t c = 0; c < n_cand; c++) {
		if (!f->is_new[c])
			continue;
		const struct fev *e = &f->ev[f->cand[c]];
		struct tl_event ev = {.type = e->type, .bounce_class = e->bounce_class, .flags = e->flags};
		struct tl_count_row key = {.tenant = e->tenant,
		                           .campaign = e->campaign,
		                           .variant = e->variant,
		                           .minute_ms = floor_minute(e->ts_ms)};
		uint64_t h = XXH3_64bits_withSeed(e->variant.p, e->variant.n, hash2(e->tenant, e->campaign)) ^
		             (uint64_t)key.minute_ms * 0x9E3779B97F4A7C15ULL;
		int ins;
		long r = tl_hmap_upsert(&f->rows_map, h, &key, row_eq, f, (uint32_t)f->n_rows, &ins);
		if (r < 0) {
			rc = (int)r;
			goto fail;
		}
		struct tl_count_row *row = &f->rows[r];
		if (ins) {
			*row = key;
			row->first_ts_ms = row->last_ts_ms = e->ts_ms;
			f->n_rows++;
		}
		if (e->ts_ms < row->first_ts_ms)
			row->first_ts_ms = e->ts_ms;
		if (e->ts_ms > row->last_ts_ms)
			row->last_ts_ms = e->ts_ms;
		tl_metrics_count_event(&ev, row->delta);
		s.counted++;

		unsigned kinds = tl_metrics_unique_kinds(&ev);
		for (unsigned k = 0; k < TL_U__COUNT; k++) {
			if (!(kinds & (1u << k)))
				continue;
			struct tl_unique_key uk = {e->tenant, e->campaign, (uint8_t)k, e->recipient,
			                           e->ts_ms};
			uint64_t uh = XXH3_64bits_withSeed(e->recipient.p, e->recipient.n,
			                                   hash2(e->tenant, e->campaign) + k);
			long u = tl_hmap_upsert(&f->umap, uh, &uk, u_eq, f, (uint32_t)f->n_u, &ins);
			if (u < 0) {
				rc = (int)u;
				goto fail;
			}
			if (ins) {
				f->urefs[f->n_u] = (struct ukey_ref){uk, (uint32_t)r};
				f->ukeys[f->n_u] = uk;
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
			f->rows[f->urefs[i].row].delta[tl_unique_metric(f->urefs[i].key.kind)]++;
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
