/* postgres_batch.c — the batch transaction of the PostgreSQL backend:
 * begin, dedupe, uniques, counter upserts, offsets, commit / rollback, and
 * the two maintenance calls that write (prune_dedupe, clear_source). See
 * postgres.c for the design; statements and helpers are in postgres_int.h. */
#include "store/postgres_int.h"

#include "core/clock.h"

#include <stdlib.h>

#define PRUNE_CHUNK 5000 /* dedupe rows deleted per prune step: a few ms */

/* ---- the batch transaction ---------------------------------------------- */

/* BEGIN ISOLATION LEVEL READ COMMITTED; a connection found lost is
 * re-established first (BEGIN is safe to resend). Batch thread. */
int tl_pg_begin(struct tl_store *st, enum tl_source src)
{
	struct pg_store *s = pg(st);
	if (s->in_txn)
		return -TL_EINVAL;
	int rc = 0;
	for (int attempt = 0; attempt < 2; attempt++) {
		if ((rc = tl_pg_ensure_conn(s)) != 0)
			continue; /* one more connection attempt */
		if (PQtransactionStatus(s->conn) != PQTRANS_IDLE)
			(void)tl_pg_simple(s, "ROLLBACK", NULL); /* left over by an earlier failure */
		rc = tl_pg_simple(s, "BEGIN ISOLATION LEVEL READ COMMITTED", NULL);
		if (rc != -TL_EUNAVAIL)
			break; /* BEGIN is safe to resend on a fresh connection */
	}
	if (rc != 0)
		return rc;
	s->in_txn = true;
	s->txn_err = 0;
	s->have_seq = false;
	s->src = (int)src;
	s->seq = 0;
	s->now_ms = tl_now_ms();
	return 0;
}

/* Takes this transaction's batch sequence number (once): increments the seq
 * row, which stays locked until commit, so numbers follow commit order. */
static int take_seq(struct pg_store *s)
{
	if (s->have_seq)
		return 0;
	bool found = false;
	int rc = tl_pg_one_int(s, S_SEQ_NEXT, NULL, false, &s->seq, &found);
	if (rc == 0 && !found)
		rc = -TL_ECORRUPT;
	if (rc == 0)
		s->have_seq = true;
	return rc;
}

/* Byte order of two strings (shorter first on a common prefix). */
static int str_cmp(struct tl_str a, struct tl_str b)
{
	size_t n = a.n < b.n ? a.n : b.n;
	int c = n ? memcmp(a.p, b.p, n) : 0;
	return c ? c : (a.n > b.n) - (a.n < b.n);
}

static int dedupe_cmp(const void *x, const void *y, void *arg)
{
	const struct tl_dedupe_key *k = arg, *a = &k[*(const uint32_t *)x], *b = &k[*(const uint32_t *)y];
	int c = str_cmp(a->tenant, b->tenant);
	return c ? c : str_cmp(a->id, b->id);
}

static int unique_cmp(const void *x, const void *y, void *arg)
{
	const struct tl_unique_key *k = arg, *a = &k[*(const uint32_t *)x], *b = &k[*(const uint32_t *)y];
	int c = str_cmp(a->tenant, b->tenant);
	c = c ? c : str_cmp(a->campaign, b->campaign);
	c = c ? c : (a->kind > b->kind) - (a->kind < b->kind);
	return c ? c : str_cmp(a->recipient, b->recipient);
}

/* Puts the permutation that sorts keys[0..n) by cmp into s->ord. Keys go
 * to the server in that order, which is the order their rows are inserted
 * and locked in: two transactions over overlapping keys then wait for each
 * other instead of deadlocking. Sorting here keeps the shared server's CPU
 * for the inserts. */
static int order_keys(struct pg_store *s, size_t n, int (*cmp)(const void *, const void *, void *),
                      const void *keys)
{
	if (s->ord_cap < n) {
		uint32_t *o = realloc(s->ord, n * sizeof(*o));
		if (!o)
			return -TL_ENOMEM;
		s->ord = o;
		s->ord_cap = n;
	}
	for (size_t i = 0; i < n; i++)
		s->ord[i] = (uint32_t)i;
	qsort_r(s->ord, n, sizeof(*s->ord), cmp, (void *)keys);
	return 0;
}

static int dedupe_eq(const void *arg, uint32_t idx, const void *key)
{
	const struct tl_dedupe_key *a = (const struct tl_dedupe_key *)arg + idx, *b = key;
	return tl_str_eq(a->id, b->id) && tl_str_eq(a->tenant, b->tenant);
}

/* One INSERT … SELECT FROM unnest … ON CONFLICT DO NOTHING RETURNING of
 * every key; the returned keys are the new ones (is_new[i] = 1). */
int tl_pg_dedupe(struct tl_store *st, const struct tl_dedupe_key *keys, size_t n, uint8_t *is_new)
{
	struct pg_store *s = pg(st);
	int rc = txn_check(s);
	if (rc != 0 || n == 0)
		return rc;
	if (n > INT32_MAX)
		return txn_fail(s, -TL_ETOOBIG);
	size_t tb = 0, ib = 0;
	for (size_t i = 0; i < n; i++) {
		tb += keys[i].tenant.n;
		ib += keys[i].id.n;
	}
	if (tb > INT_MAX / 2 || ib > INT_MAX / 2)
		return txn_fail(s, -TL_ETOOBIG); /* before reading any of it */
	if ((rc = order_keys(s, n, dedupe_cmp, keys)) != 0)
		return txn_fail(s, rc);
	const uint32_t *ord = s->ord;
	struct params p;
	params_init(&p);
	p_i64(&p, s->src);
	tl_buf_reset(&s->arrays);
	struct arr a;
	arr_begin(&a, &s->arrays, OID_TEXT, n, tb);
	for (size_t i = 0; i < n; i++)
		arr_str(&a, keys[ord[i]].tenant);
	rc = arr_end(&a, &p);
	arr_begin(&a, &s->arrays, OID_BYTEA, n, ib);
	for (size_t i = 0; i < n; i++)
		arr_str(&a, keys[ord[i]].id);
	rc = rc ? rc : arr_end(&a, &p);
	arr_begin(&a, &s->arrays, OID_INT8, n, 8 * n);
	for (size_t i = 0; i < n; i++)
		arr_i64(&a, keys[ord[i]].ts_ms);
	rc = rc ? rc : arr_end(&a, &p);
	if (rc != 0)
		return txn_fail(s, rc);

	PGresult *r = NULL;
	if ((rc = tl_pg_exec(s, S_DEDUPE, &p, false, &r)) != 0)
		return txn_fail(s, rc);
	memset(is_new, 0, n);
	int rows = PQntuples(r);
	if (rows > 0) {
		/* keys → index, then every returned (tenant, id) marks its key new */
		tl_hmap_clear(&s->keys);
		for (size_t i = 0; i < n && rc == 0; i++) {
			int ins;
			long x = tl_hmap_upsert(&s->keys, hash_strs(keys[i].tenant, keys[i].id, 0), &keys[i],
			                        dedupe_eq, keys, (uint32_t)i, &ins);
			if (x < 0)
				rc = (int)x;
		}
		for (int j = 0; j < rows && rc == 0; j++) {
			struct tl_dedupe_key k = {.tenant = col_str(r, j, 0), .id = col_str(r, j, 1)};
			long x = tl_hmap_find(&s->keys, hash_strs(k.tenant, k.id, 0), &k, dedupe_eq, keys);
			if (x < 0)
				rc = -TL_ECORRUPT; /* the server returned a key we did not send */
			else
				is_new[x] = 1;
		}
	}
	PQclear(r);
	return txn_fail(s, rc);
}

static uint64_t unique_hash(const struct tl_unique_key *k)
{
	return hash_strs(k->tenant, k->campaign, hash_strs(k->recipient, TL_STR_NULL, k->kind));
}

static int unique_eq(const void *arg, uint32_t idx, const void *key)
{
	const struct tl_unique_key *a = (const struct tl_unique_key *)arg + idx, *b = key;
	return a->kind == b->kind && tl_str_eq(a->recipient, b->recipient) &&
	       tl_str_eq(a->campaign, b->campaign) && tl_str_eq(a->tenant, b->tenant);
}

/* The same as tl_pg_dedupe for unique-set members. */
int tl_pg_uniques(struct tl_store *st, const struct tl_unique_key *keys, size_t n, uint8_t *is_new)
{
	struct pg_store *s = pg(st);
	int rc = txn_check(s);
	if (rc != 0 || n == 0)
		return rc;
	if (n > INT32_MAX)
		return txn_fail(s, -TL_ETOOBIG);
	size_t tb = 0, cb = 0, rb = 0;
	for (size_t i = 0; i < n; i++) {
		tb += keys[i].tenant.n;
		cb += keys[i].campaign.n;
		rb += keys[i].recipient.n;
	}
	if (tb > INT_MAX / 2 || cb > INT_MAX / 2 || rb > INT_MAX / 2)
		return txn_fail(s, -TL_ETOOBIG);
	if ((rc = order_keys(s, n, unique_cmp, keys)) != 0)
		return txn_fail(s, rc);
	const uint32_t *ord = s->ord;
	struct params p;
	params_init(&p);
	p_i64(&p, s->src);
	tl_buf_reset(&s->arrays);
	struct arr a;
	arr_begin(&a, &s->arrays, OID_TEXT, n, tb);
	for (size_t i = 0; i < n; i++)
		arr_str(&a, keys[ord[i]].tenant);
	rc = arr_end(&a, &p);
	arr_begin(&a, &s->arrays, OID_TEXT, n, cb);
	for (size_t i = 0; i < n; i++)
		arr_str(&a, keys[ord[i]].campaign);
	rc = rc ? rc : arr_end(&a, &p);
	arr_begin(&a, &s->arrays, OID_INT2, n, 2 * n);
	for (size_t i = 0; i < n; i++)
		arr_i16(&a, keys[ord[i]].kind);
	rc = rc ? rc : arr_end(&a, &p);
	arr_begin(&a, &s->arrays, OID_BYTEA, n, rb);
	for (size_t i = 0; i < n; i++)
		arr_str(&a, keys[ord[i]].recipient);
	rc = rc ? rc : arr_end(&a, &p);
	arr_begin(&a, &s->arrays, OID_INT8, n, 8 * n);
	for (size_t i = 0; i < n; i++)
		arr_i64(&a, keys[ord[i]].ts_ms);
	rc = rc ? rc : arr_end(&a, &p);
	if (rc != 0)
		return txn_fail(s, rc);

	PGresult *r = NULL;
	if ((rc = tl_pg_exec(s, S_UNIQUES, &p, false, &r)) != 0)
		return txn_fail(s, rc);
	memset(is_new, 0, n);
	int rows = PQntuples(r);
	if (rows > 0) {
		tl_hmap_clear(&s->keys);
		for (size_t i = 0; i < n && rc == 0; i++) {
			int ins;
			long x = tl_hmap_upsert(&s->keys, unique_hash(&keys[i]), &keys[i], unique_eq, keys,
			                        (uint32_t)i, &ins);
			if (x < 0)
				rc = (int)x;
		}
		for (int j = 0; j < rows && rc == 0; j++) {
			struct tl_unique_key k = {.tenant = col_str(r, j, 0),
			                          .campaign = col_str(r, j, 1),
			                          .kind = (uint8_t)col_i64(r, j, 2),
			                          .recipient = col_str(r, j, 3)};
			long x = tl_hmap_find(&s->keys, unique_hash(&k), &k, unique_eq, keys);
			if (x < 0)
				rc = -TL_ECORRUPT;
			else
				is_new[x] = 1;
		}
	}
	PQclear(r);
	return txn_fail(s, rc);
}

static int64_t floor_minute(int64_t ms)
{
	return ms - (((ms % 60000) + 60000) % 60000);
}

/* ---- counter rows folded per key (add_counts) ----------------------------- */

/* The three keys a counter row is summed under: its minute bucket, its
 * variant's totals, its campaign. */
enum agg_level { AGG_MINUTE, AGG_VARIANT, AGG_CAMPAIGN, AGG__COUNT };

struct agg {
	uint32_t row;   /* the first input row with this key: its strings */
	int64_t minute; /* floored (AGG_MINUTE) */
	int64_t first, last;
	int64_t delta[TL_M__COUNT]; /* not for AGG_CAMPAIGN */
};

struct aggset {
	struct agg *a;
	size_t n, cap;
	struct tl_hmap map;
};

struct agg_probe {
	const struct tl_count_row *r;
	int64_t minute;
};

struct agg_cmp {
	const struct tl_count_row *rows;
	const struct agg *a;
	enum agg_level level;
};

static uint64_t agg_hash(const struct tl_count_row *r, int64_t minute, enum agg_level level)
{
	uint64_t h = hash_strs(r->tenant, r->campaign, (uint64_t)level);
	if (level != AGG_CAMPAIGN)
		h = XXH3_64bits_withSeed(r->variant.p ? r->variant.p : "", r->variant.n, h);
	if (level == AGG_MINUTE)
		h ^= (uint64_t)minute * 0x9E3779B97F4A7C15ULL;
	return h;
}

static int agg_eq(const void *arg, uint32_t idx, const void *key)
{
	const struct agg_cmp *c = arg;
	const struct agg_probe *p = key;
	const struct agg *g = &c->a[idx];
	const struct tl_count_row *r = &c->rows[g->row];
	if (c->level == AGG_MINUTE && g->minute != p->minute)
		return 0;
	if (c->level != AGG_CAMPAIGN && !tl_str_eq(r->variant, p->r->variant))
		return 0;
	return tl_str_eq(r->campaign, p->r->campaign) && tl_str_eq(r->tenant, p->r->tenant);
}

/* Allocates the AGG__COUNT fold sets of one connection; NULL when out of memory. */
struct aggset *tl_pg_aggs_new(void)
{
	struct aggset *g = calloc(AGG__COUNT, sizeof(*g));
	for (int l = 0; g && l < AGG__COUNT; l++)
		tl_hmap_init(&g[l].map);
	return g;
}

/* Frees what tl_pg_aggs_new made. NULL-safe. */
void tl_pg_aggs_free(struct aggset *g)
{
	for (int l = 0; g && l < AGG__COUNT; l++) {
		free(g[l].a);
		tl_hmap_free(&g[l].map);
	}
	free(g);
}

/* Sums rows[] per key at every level into s->agg[]. */
static int fold_rows(struct pg_store *s, const struct tl_count_row *rows, size_t n)
{
	/* Strings over what one array parameter can carry fail before being read. */
	size_t bytes = 0;
	for (size_t i = 0; i < n; i++) {
		const struct tl_count_row *r = &rows[i];
		bytes += (size_t)r->tenant.n + r->campaign.n + r->variant.n;
		if (bytes > INT_MAX / 2)
			return -TL_ETOOBIG;
	}
	for (int l = 0; l < AGG__COUNT; l++) {
		struct aggset *g = &s->agg[l];
		if (g->cap < n) {
			struct agg *na = realloc(g->a, n * sizeof(*na));
			if (!na)
				return -TL_ENOMEM;
			g->a = na;
			g->cap = n;
		}
		g->n = 0;
		tl_hmap_clear(&g->map);
	}
	for (size_t i = 0; i < n; i++) {
		const struct tl_count_row *r = &rows[i];
		struct agg_probe pr = {r, floor_minute(r->minute_ms)};
		/* Rows without event times take their minute, as in the SQLite backend. */
		int64_t first = r->first_ts_ms ? r->first_ts_ms : r->minute_ms;
		int64_t last = r->last_ts_ms ? r->last_ts_ms : r->minute_ms;
		for (int l = 0; l < AGG__COUNT; l++) {
			struct aggset *g = &s->agg[l];
			struct agg_cmp cmp = {rows, g->a, (enum agg_level)l};
			int ins = 0;
			long x = tl_hmap_upsert(&g->map, agg_hash(r, pr.minute, (enum agg_level)l), &pr,
			                        agg_eq, &cmp, (uint32_t)g->n, &ins);
			if (x < 0)
				return (int)x;
			struct agg *a = &g->a[x];
			if (ins) {
				a->row = (uint32_t)i;
				a->minute = pr.minute;
				a->first = first;
				a->last = last;
				if (l != AGG_CAMPAIGN)
					memcpy(a->delta, r->delta, sizeof(a->delta));
				g->n++;
				continue;
			}
			a->first = first < a->first ? first : a->first;
			a->last = last > a->last ? last : a->last;
			for (int k = 0; l != AGG_CAMPAIGN && k < TL_M__COUNT; k++)
				if (__builtin_add_overflow(a->delta[k], r->delta[k], &a->delta[k]))
					return -TL_ETOOBIG;
		}
	}
	return 0;
}

/* Appends the arrays of one level's folded rows to p: the key columns
 * (tenant, campaign[, minute][, variant]), the metrics unless campaign
 * level, first_ms, last_ms. */
static int put_agg_arrays(struct pg_store *s, const struct tl_count_row *rows, enum agg_level l,
                          struct params *p)
{
	const struct aggset *g = &s->agg[l];
	size_t n = g->n, tb = 0, cb = 0, vb = 0;
	for (size_t i = 0; i < n; i++) {
		const struct tl_count_row *r = &rows[g->a[i].row];
		tb += r->tenant.n;
		cb += r->campaign.n;
		vb += r->variant.n;
	}
	struct arr a;
	arr_begin(&a, &s->arrays, OID_TEXT, n, tb);
	for (size_t i = 0; i < n; i++)
		arr_str(&a, rows[g->a[i].row].tenant);
	int rc = arr_end(&a, p);
	arr_begin(&a, &s->arrays, OID_TEXT, n, cb);
	for (size_t i = 0; i < n; i++)
		arr_str(&a, rows[g->a[i].row].campaign);
	rc = rc ? rc : arr_end(&a, p);
	if (l == AGG_MINUTE) {
		arr_begin(&a, &s->arrays, OID_INT8, n, 8 * n);
		for (size_t i = 0; i < n; i++)
			arr_i64(&a, g->a[i].minute);
		rc = rc ? rc : arr_end(&a, p);
	}
	if (l != AGG_CAMPAIGN) {
		arr_begin(&a, &s->arrays, OID_TEXT, n, vb);
		for (size_t i = 0; i < n; i++)
			arr_str(&a, rows[g->a[i].row].variant);
		rc = rc ? rc : arr_end(&a, p);
		for (int k = 0; k < TL_M__COUNT; k++) {
			arr_begin(&a, &s->arrays, OID_INT8, n, 8 * n);
			for (size_t i = 0; i < n; i++)
				arr_i64(&a, g->a[i].delta[k]);
			rc = rc ? rc : arr_end(&a, p);
		}
	}
	arr_begin(&a, &s->arrays, OID_INT8, n, 8 * n);
	for (size_t i = 0; i < n; i++)
		arr_i64(&a, g->a[i].first);
	rc = rc ? rc : arr_end(&a, p);
	arr_begin(&a, &s->arrays, OID_INT8, n, 8 * n);
	for (size_t i = 0; i < n; i++)
		arr_i64(&a, g->a[i].last);
	return rc ? rc : arr_end(&a, p);
}

/* Folds rows per minute bucket, variant and campaign, takes the batch
 * sequence number, and upserts all three in one statement. */
int tl_pg_add_counts(struct tl_store *st, const struct tl_count_row *rows, size_t n)
{
	struct pg_store *s = pg(st);
	int rc = txn_check(s);
	if (rc != 0 || n == 0)
		return rc;
	if (n > INT32_MAX)
		return txn_fail(s, -TL_ETOOBIG);
	if ((rc = fold_rows(s, rows, n)) != 0 || (rc = take_seq(s)) != 0)
		return txn_fail(s, rc);
	struct params p;
	params_init(&p);
	p_i64(&p, s->src);
	p_i64(&p, s->now_ms);
	p_i64(&p, s->seq);
	tl_buf_reset(&s->arrays);
	for (int l = 0; l < AGG__COUNT && rc == 0; l++)
		rc = put_agg_arrays(s, rows, (enum agg_level)l, &p);
	if (rc == 0)
		rc = tl_pg_run(s, S_COUNTS, &p, false);
	return txn_fail(s, rc);
}

/* Whether entry i is given again later in o[] (then the later one wins, as
 * with one upsert per entry: one statement may not update a row twice). */
static bool superseded(const struct tl_offset *o, size_t n, size_t i)
{
	for (size_t j = i + 1; j < n; j++)
		if (o[j].partition == o[i].partition && strcmp(o[j].topic, o[i].topic) == 0)
			return true;
	return false;
}

/* One upsert of every (topic, partition) offset of consumer. */
int tl_pg_offsets_set(struct tl_store *st, const char *consumer, const struct tl_offset *o, size_t n)
{
	struct pg_store *s = pg(st);
	int rc = txn_check(s);
	if (rc != 0 || n == 0)
		return rc;
	uint8_t *keep = malloc(n);
	if (!keep)
		return txn_fail(s, -TL_ENOMEM);
	size_t m = 0, tb = 0;
	for (size_t i = 0; i < n; i++) {
		keep[i] = !superseded(o, n, i);
		if (keep[i]) {
			m++;
			tb += strlen(o[i].topic);
		}
	}
	struct params p;
	params_init(&p);
	p_text(&p, consumer);
	tl_buf_reset(&s->arrays);
	struct arr a;
	arr_begin(&a, &s->arrays, OID_TEXT, m, tb);
	for (size_t i = 0; i < n; i++)
		if (keep[i])
			arr_bytes(&a, o[i].topic, (uint32_t)strlen(o[i].topic));
	rc = arr_end(&a, &p);
	arr_begin(&a, &s->arrays, OID_INT4, m, 4 * m);
	for (size_t i = 0; i < n; i++)
		if (keep[i])
			arr_i32(&a, o[i].partition);
	rc = rc ? rc : arr_end(&a, &p);
	arr_begin(&a, &s->arrays, OID_INT8, m, 8 * m);
	for (size_t i = 0; i < n; i++)
		if (keep[i])
			arr_i64(&a, (int64_t)o[i].next);
	rc = rc ? rc : arr_end(&a, &p);
	free(keep);
	if (rc == 0)
		rc = tl_pg_run(s, S_OFFSETS_SET, &p, false);
	return txn_fail(s, rc);
}

/* Ends the transaction on the server (when there still is one) and locally. */
void tl_pg_rollback(struct tl_store *st)
{
	struct pg_store *s = pg(st);
	if (!s->broken && PQstatus(s->conn) == CONNECTION_OK && PQtransactionStatus(s->conn) != PQTRANS_IDLE)
		(void)tl_pg_simple(s, "ROLLBACK", NULL);
	s->in_txn = false;
	s->txn_err = 0;
	s->have_seq = false;
}

/* COMMIT; any earlier failure in the transaction, or a COMMIT the server
 * answers with ROLLBACK, rolls back instead and is returned. */
int tl_pg_commit(struct tl_store *st)
{
	struct pg_store *s = pg(st);
	if (!s->in_txn)
		return -TL_EINVAL;
	int rc = s->txn_err;
	PGresult *r = NULL;
	if (rc == 0 && (rc = tl_pg_simple(s, "COMMIT", &r)) == 0) {
		/* COMMIT of a transaction the server had aborted answers ROLLBACK. */
		if (strcmp(PQcmdStatus(r), "COMMIT") != 0)
			rc = -TL_EIO;
		PQclear(r);
	}
	if (rc != 0) {
		tl_pg_rollback(st);
		return rc;
	}
	s->in_txn = false;
	s->have_seq = false;
	return 0;
}

/* Deletes at most PRUNE_CHUNK dedupe rows older than before_ms (found
 * through the ts_ms index), its own transaction when outside a batch, so a
 * step never holds many row locks for long. 1: a full chunk went, call
 * again. */
int tl_pg_prune_dedupe_step(struct tl_store *st, int64_t before_ms)
{
	struct pg_store *s = pg(st);
	if (s->in_txn && s->txn_err)
		return s->txn_err;
	struct params p;
	params_init(&p);
	p_i64(&p, before_ms);
	p_i64(&p, PRUNE_CHUNK);
	PGresult *r = NULL;
	int rc = tl_pg_exec(s, S_PRUNE, &p, !s->in_txn, &r);
	if (rc != 0)
		return s->in_txn ? txn_fail(s, rc) : rc;
	long deleted = strtol(PQcmdTuples(r), NULL, 10);
	PQclear(r);
	return deleted >= PRUNE_CHUNK;
}

/* Removes a source's counters, dedupe ids and unique members of a time
 * range, recomputing the totals and campaign rows they fed. */
int tl_pg_clear_source(struct tl_store *st, enum tl_source src, int64_t from_ms, int64_t to_ms)
{
	struct pg_store *s = pg(st);
	int rc = txn_check(s);
	if (rc == 0)
		rc = take_seq(s);
	static const enum stmt_id steps[] = {
	    S_CLR_TOTALS_DEL, S_CLR_TOTALS_INS, S_CLR_CAMPAIGNS_DEL, S_CLR_CAMPAIGNS_INS,
	    S_CLR_COUNTS,     S_CLR_DEDUPE,     S_CLR_UNIQUES,
	};
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]) && rc == 0; i++) {
		struct params p;
		params_init(&p);
		p_i64(&p, (int)src);
		p_i64(&p, from_ms);
		p_i64(&p, to_ms);
		if (steps[i] == S_CLR_TOTALS_INS || steps[i] == S_CLR_CAMPAIGNS_INS) {
			p_i64(&p, s->now_ms);
			p_i64(&p, s->seq);
		}
		rc = tl_pg_run(s, steps[i], &p, false);
	}
	return txn_fail(s, rc);
}
