/* sqlite_txn.c — the SQLite backend's batch transaction: begin, dedupe,
 * uniques, counter upserts, offsets, commit/rollback, pruning and clearing.
 *
 * The aggregator applies each batch as ONE transaction (store.h). The first
 * failure inside it is remembered and the commit then refuses (rolling
 * back), so counters and offsets are written together or not at all. */
#include "store/sqlite_int.h"

#include "core/clock.h"

#include <stdlib.h>

#define PRUNE_CHUNK 5000 /* dedupe keys examined per prune step: a few ms */

int tl_sqlite_begin(struct tl_store *st, enum tl_source src)
{
	struct sq_store *s = sq(st);
	if (s->in_txn)
		return -TL_EINVAL;
	int rc = run(s->stmt[S_BEGIN_WRITE]);
	if (rc != 0)
		return rc;
	int64_t seq = 0;
	rc = meta_get(s, "seq", &seq);
	if (rc != 0) {
		(void)run(s->stmt[S_ROLLBACK]);
		return rc;
	}
	s->in_txn = true;
	s->txn_err = 0;
	s->dirty = false;
	s->src = (int)src;
	s->seq = seq + 1;
	s->now_ms = tl_now_ms();
	return 0;
}

/* Records the first failure inside the transaction; commit then refuses. */
static int txn_fail(struct sq_store *s, int rc)
{
	if (rc != 0 && s->txn_err == 0)
		s->txn_err = rc;
	return rc;
}

static int txn_check(struct sq_store *s)
{
	if (!s->in_txn)
		return -TL_EINVAL;
	return s->txn_err;
}

/* Inserts one key row with ON CONFLICT DO NOTHING; *is_new from changes(). */
static int insert_new(struct sq_store *s, sqlite3_stmt *q, uint8_t *is_new)
{
	int rc = sqlite3_step(q);
	sqlite3_reset(q);
	if (rc != SQLITE_DONE)
		return sq_err(rc);
	*is_new = sqlite3_changes(s->db) > 0;
	return 0;
}

/* A scratch array of n indices 0..n-1, reused across batches. */
static size_t *scratch_idx(struct sq_store *s, size_t n)
{
	if (n > s->idx_cap) {
		size_t *p = realloc(s->idx, n * sizeof(*p));
		if (!p)
			return NULL;
		s->idx = p;
		s->idx_cap = n;
	}
	for (size_t i = 0; i < n; i++)
		s->idx[i] = i;
	return s->idx;
}

static int cmp_str(struct tl_str a, struct tl_str b)
{
	size_t m = a.n < b.n ? a.n : b.n;
	int r = m ? memcmp(a.p, b.p, m) : 0;
	return r ? r : (a.n > b.n) - (a.n < b.n);
}

static int cmp_dedupe(const void *a, const void *b, void *ctx)
{
	const struct tl_dedupe_key *k = ctx, *x = &k[*(const size_t *)a], *y = &k[*(const size_t *)b];
	int r = cmp_str(x->tenant, y->tenant);
	return r ? r : cmp_str(x->id, y->id);
}

static int cmp_unique(const void *a, const void *b, void *ctx)
{
	const struct tl_unique_key *k = ctx, *x = &k[*(const size_t *)a], *y = &k[*(const size_t *)b];
	int r = cmp_str(x->tenant, y->tenant);
	if (!r)
		r = cmp_str(x->campaign, y->campaign);
	if (!r)
		r = (x->kind > y->kind) - (x->kind < y->kind);
	return r ? r : cmp_str(x->recipient, y->recipient);
}

/* Keys go in in primary-key order: consecutive inserts land on the same
 * B-tree pages, which keeps the page cache warm. */
int tl_sqlite_dedupe(struct tl_store *st, const struct tl_dedupe_key *keys, size_t n, uint8_t *is_new)
{
	struct sq_store *s = sq(st);
	int rc = txn_check(s);
	if (rc != 0)
		return rc;
	size_t *idx = scratch_idx(s, n);
	if (!idx && n)
		return txn_fail(s, -TL_ENOMEM);
	qsort_r(idx, n, sizeof(*idx), cmp_dedupe, (void *)keys);
	sqlite3_stmt *q = s->stmt[S_DEDUPE];
	sqlite3_bind_int(q, 1, s->src);
	for (size_t j = 0; j < n && rc == 0; j++) {
		const struct tl_dedupe_key *k = &keys[idx[j]];
		if (bind_str(q, 2, k->tenant) != SQLITE_OK ||
		    bind_blob(q, 3, k->id.p, k->id.n) != SQLITE_OK ||
		    sqlite3_bind_int64(q, 4, k->ts_ms) != SQLITE_OK)
			rc = -TL_ETOOBIG;
		else
			rc = insert_new(s, q, &is_new[idx[j]]);
	}
	return txn_fail(s, rc);
}

int tl_sqlite_uniques(struct tl_store *st, const struct tl_unique_key *keys, size_t n, uint8_t *is_new)
{
	struct sq_store *s = sq(st);
	int rc = txn_check(s);
	if (rc != 0)
		return rc;
	size_t *idx = scratch_idx(s, n);
	if (!idx && n)
		return txn_fail(s, -TL_ENOMEM);
	qsort_r(idx, n, sizeof(*idx), cmp_unique, (void *)keys);
	sqlite3_stmt *q = s->stmt[S_UNIQUE];
	sqlite3_bind_int(q, 1, s->src);
	for (size_t j = 0; j < n && rc == 0; j++) {
		const struct tl_unique_key *k = &keys[idx[j]];
		if (bind_str(q, 2, k->tenant) != SQLITE_OK || bind_str(q, 3, k->campaign) != SQLITE_OK ||
		    sqlite3_bind_int(q, 4, k->kind) != SQLITE_OK ||
		    bind_blob(q, 5, k->recipient.p, k->recipient.n) != SQLITE_OK ||
		    sqlite3_bind_int64(q, 6, k->ts_ms) != SQLITE_OK)
			rc = -TL_ETOOBIG;
		else
			rc = insert_new(s, q, &is_new[idx[j]]);
	}
	return txn_fail(s, rc);
}

/* Count rows sort by (tenant, campaign, variant, minute): the totals of one
 * variant and the campaign row are then runs of neighbours, folded in memory
 * and upserted once per run instead of once per row. */
static int cmp_count(const void *a, const void *b, void *ctx)
{
	const struct tl_count_row *k = ctx, *x = &k[*(const size_t *)a], *y = &k[*(const size_t *)b];
	int r = cmp_str(x->tenant, y->tenant);
	if (!r)
		r = cmp_str(x->campaign, y->campaign);
	if (!r)
		r = cmp_str(x->variant, y->variant);
	return r ? r : (x->minute_ms > y->minute_ms) - (x->minute_ms < y->minute_ms);
}

struct fold {
	int64_t delta[TL_M__COUNT];
	int64_t first, last;
};

static void fold_add(struct fold *f, const int64_t *delta, int64_t first, int64_t last, bool reset)
{
	for (int k = 0; k < TL_M__COUNT; k++)
		f->delta[k] = reset ? delta[k] : f->delta[k] + delta[k];
	f->first = reset || first < f->first ? first : f->first;
	f->last = reset || last > f->last ? last : f->last;
}

static int bind_key_deltas(sqlite3_stmt *q, int *i, int src, const struct tl_count_row *r,
                           const int64_t *minute, const struct fold *f)
{
	int rc = sqlite3_bind_int(q, (*i)++, src);
	rc |= bind_str(q, (*i)++, r->tenant);
	rc |= bind_str(q, (*i)++, r->campaign);
	if (minute)
		rc |= sqlite3_bind_int64(q, (*i)++, *minute);
	rc |= bind_str(q, (*i)++, r->variant);
	for (int k = 0; k < TL_M__COUNT; k++)
		rc |= sqlite3_bind_int64(q, (*i)++, f->delta[k]);
	rc |= sqlite3_bind_int64(q, (*i)++, f->first);
	rc |= sqlite3_bind_int64(q, (*i)++, f->last);
	return rc;
}

/* Count rows go out COUNT_ROWS_PER_STMT at a time (the rest one by one, at
 * the end of add_counts): pending[] holds the indices of those bound so far. */
struct count_batch {
	size_t pending[COUNT_ROWS_PER_STMT];
	int n;
	int params; /* bound parameters per row */
};

static int bind_count(sqlite3_stmt *q, int *i, int src, const struct tl_count_row *r)
{
	int64_t minute = r->minute_ms - (((r->minute_ms % 60000) + 60000) % 60000);
	/* 0 = not recorded: the bucket start stands in for the event times. */
	struct fold f;
	memcpy(f.delta, r->delta, sizeof f.delta);
	f.first = r->first_ts_ms ? r->first_ts_ms : r->minute_ms;
	f.last = r->last_ts_ms ? r->last_ts_ms : r->minute_ms;
	return bind_key_deltas(q, i, src, r, &minute, &f);
}

static int upsert_count(struct sq_store *s, const struct tl_count_row *rows, size_t j, struct count_batch *b)
{
	sqlite3_stmt *q = s->stmt[S_COUNT_UPSERT_N];
	int i = 1 + b->n * b->params;
	if (bind_count(q, &i, s->src, &rows[j]) != SQLITE_OK)
		return -TL_ETOOBIG;
	b->pending[b->n++] = j;
	if (b->n < COUNT_ROWS_PER_STMT)
		return 0;
	b->n = 0;
	return run(q);
}

/* The rows still pending, one statement each. */
static int upsert_counts_rest(struct sq_store *s, const struct tl_count_row *rows, struct count_batch *b)
{
	sqlite3_stmt *q = s->stmt[S_COUNT_UPSERT];
	int rc = 0;
	for (int k = 0; k < b->n && rc == 0; k++) {
		int i = 1;
		rc = bind_count(q, &i, s->src, &rows[b->pending[k]]) != SQLITE_OK ? -TL_ETOOBIG : run(q);
	}
	b->n = 0;
	return rc;
}

static int upsert_total(struct sq_store *s, const struct tl_count_row *r, const struct fold *f)
{
	sqlite3_stmt *q = s->stmt[S_TOTAL_UPSERT];
	int i = 1;
	int b = bind_key_deltas(q, &i, s->src, r, NULL, f);
	b |= sqlite3_bind_int64(q, i, s->now_ms) | sqlite3_bind_int64(q, i + 1, s->seq);
	return b != SQLITE_OK ? -TL_ETOOBIG : run(q);
}

static int upsert_campaign(struct sq_store *s, const struct tl_count_row *r, const struct fold *f)
{
	sqlite3_stmt *q = s->stmt[S_CAMPAIGN_UPSERT];
	int b = sqlite3_bind_int(q, 1, s->src) | bind_str(q, 2, r->tenant) | bind_str(q, 3, r->campaign) |
	        sqlite3_bind_int64(q, 4, f->first) | sqlite3_bind_int64(q, 5, f->last) |
	        sqlite3_bind_int64(q, 6, s->now_ms) | sqlite3_bind_int64(q, 7, s->seq);
	return b != SQLITE_OK ? -TL_ETOOBIG : run(q);
}

int tl_sqlite_add_counts(struct tl_store *st, const struct tl_count_row *rows, size_t n)
{
	struct sq_store *s = sq(st);
	int rc = txn_check(s);
	if (rc != 0)
		return rc;
	size_t *idx = scratch_idx(s, n);
	if (!idx && n)
		return txn_fail(s, -TL_ENOMEM);
	qsort_r(idx, n, sizeof(*idx), cmp_count, (void *)rows);
	struct fold var, camp;
	struct count_batch cb = {
	    .n = 0, .params = sqlite3_bind_parameter_count(s->stmt[S_COUNT_UPSERT_N]) / COUNT_ROWS_PER_STMT};
	bool var_empty = true, camp_empty = true;
	for (size_t j = 0; j < n && rc == 0; j++) {
		const struct tl_count_row *r = &rows[idx[j]], *next = j + 1 < n ? &rows[idx[j + 1]] : NULL;
		/* 0 = not recorded: the bucket start stands in for the event times. */
		int64_t first = r->first_ts_ms ? r->first_ts_ms : r->minute_ms;
		int64_t last = r->last_ts_ms ? r->last_ts_ms : r->minute_ms;
		if ((rc = upsert_count(s, rows, idx[j], &cb)) != 0)
			break;
		fold_add(&var, r->delta, first, last, var_empty);
		fold_add(&camp, r->delta, first, last, camp_empty);
		var_empty = camp_empty = false;
		bool same_camp = next && cmp_str(r->tenant, next->tenant) == 0 &&
		                 cmp_str(r->campaign, next->campaign) == 0;
		if (!same_camp || cmp_str(r->variant, next->variant) != 0) {
			rc = upsert_total(s, r, &var);
			var_empty = true;
		}
		if (rc == 0 && !same_camp) {
			rc = upsert_campaign(s, r, &camp);
			camp_empty = true;
		}
	}
	if (rc == 0)
		rc = upsert_counts_rest(s, rows, &cb);
	if (n)
		s->dirty = true;
	return txn_fail(s, rc);
}

int tl_sqlite_offsets_set(struct tl_store *st, const char *consumer, const struct tl_offset *o, size_t n)
{
	struct sq_store *s = sq(st);
	int rc = txn_check(s);
	if (rc != 0)
		return rc;
	sqlite3_stmt *q = s->stmt[S_OFFSET_SET];
	for (size_t i = 0; i < n && rc == 0; i++) {
		if (bind_cstr(q, 1, consumer) | bind_cstr(q, 2, o[i].topic) |
		    sqlite3_bind_int(q, 3, o[i].partition) | sqlite3_bind_int64(q, 4, (int64_t)o[i].next))
			rc = -TL_ETOOBIG;
		else
			rc = run(q);
	}
	return txn_fail(s, rc);
}

void tl_sqlite_rollback(struct tl_store *st)
{
	struct sq_store *s = sq(st);
	if (!sqlite3_get_autocommit(s->db))
		(void)run(s->stmt[S_ROLLBACK]);
	s->in_txn = false;
	s->txn_err = 0;
	s->dirty = false;
}

int tl_sqlite_commit(struct tl_store *st)
{
	struct sq_store *s = sq(st);
	if (!s->in_txn)
		return -TL_EINVAL;
	int rc = s->txn_err;
	if (rc == 0 && sqlite3_get_autocommit(s->db))
		rc = -TL_EIO; /* SQLite rolled the transaction back after an error */
	if (rc == 0 && s->dirty) {
		sqlite3_stmt *q = s->stmt[S_META_SET];
		if (bind_cstr(q, 1, "seq") != SQLITE_OK || sqlite3_bind_int64(q, 2, s->seq) != SQLITE_OK)
			rc = -TL_ENOMEM;
		else
			rc = run(q);
	}
	if (rc == 0)
		rc = run(s->stmt[S_COMMIT]);
	if (rc != 0) {
		tl_sqlite_rollback(st);
		return rc;
	}
	s->in_txn = false;
	s->dirty = false;
	return 0;
}

static int cursor_bind(sqlite3_stmt *q, const struct sq_prune_cursor *c, int first)
{
	return sqlite3_bind_int64(q, first, c->src) | bind_text(q, first + 1, c->tenant, c->tenant_n) |
	       bind_blob(q, first + 2, c->id, c->id_n);
}

static int cursor_set(struct sq_prune_cursor *c, sqlite3_stmt *q)
{
	size_t tn = (size_t)sqlite3_column_bytes(q, 1), in = (size_t)sqlite3_column_bytes(q, 2);
	char *t = malloc(tn + 1), *id = malloc(in + 1);
	if (!t || !id) {
		free(t);
		free(id);
		return -TL_ENOMEM;
	}
	if (tn)
		memcpy(t, sqlite3_column_text(q, 1), tn);
	if (in)
		memcpy(id, sqlite3_column_blob(q, 2), in);
	free(c->tenant);
	free(c->id);
	c->src = sqlite3_column_int64(q, 0);
	c->tenant = t;
	c->tenant_n = tn;
	c->id = id;
	c->id_n = in;
	return 0;
}

void tl_sqlite_prune_cursor_reset(struct sq_prune_cursor *c)
{
	free(c->tenant);
	free(c->id);
	*c = (struct sq_prune_cursor){.src = -1};
}

/* Walks dedupe in primary-key order from the connection's cursor (there is
 * deliberately no index on ts_ms, see migrations/sqlite.c): one step looks at
 * the next PRUNE_CHUNK keys and deletes the old ones among them; outside a
 * batch the step is its own transaction, so pruning never holds the write
 * lock for long. A step rolled back with its batch only leaves rows for the
 * next sweep. */
int tl_sqlite_prune_dedupe_step(struct tl_store *st, int64_t before_ms)
{
	struct sq_store *s = sq(st);
	if (s->in_txn && s->txn_err)
		return s->txn_err;
	struct sq_prune_cursor *cur = &s->prune;
	sqlite3_stmt *scan = s->stmt[S_PRUNE_SCAN], *del;
	int rc = 0, more = 1;
	if (cursor_bind(scan, cur, 1) | sqlite3_bind_int(scan, 4, PRUNE_CHUNK - 1))
		return s->in_txn ? txn_fail(s, -TL_ENOMEM) : -TL_ENOMEM;
	int r = sqlite3_step(scan);
	if (r == SQLITE_ROW) {
		/* Delete (cursor, end]; the end becomes the next cursor. */
		struct sq_prune_cursor end = {0};
		rc = cursor_set(&end, scan);
		sqlite3_reset(scan);
		del = s->stmt[S_PRUNE_RANGE];
		if (rc == 0 && (cursor_bind(del, cur, 1) | cursor_bind(del, &end, 4) |
		                sqlite3_bind_int64(del, 7, before_ms)))
			rc = -TL_ENOMEM;
		if (rc == 0)
			rc = run(del);
		if (rc == 0) {
			tl_sqlite_prune_cursor_reset(cur);
			*cur = end;
		} else {
			free(end.tenant);
			free(end.id);
		}
	} else if (r == SQLITE_DONE) {
		/* The last, partial chunk: the sweep ends, the next one starts over. */
		sqlite3_reset(scan);
		del = s->stmt[S_PRUNE_TAIL];
		rc = cursor_bind(del, cur, 1) | sqlite3_bind_int64(del, 4, before_ms) ? -TL_ENOMEM : run(del);
		if (rc == 0)
			tl_sqlite_prune_cursor_reset(cur);
		more = 0;
	} else {
		rc = sq_err(r);
		sqlite3_reset(scan);
	}
	if (rc)
		return s->in_txn ? txn_fail(s, rc) : rc;
	return more;
}

int tl_sqlite_clear_source(struct tl_store *st, enum tl_source src, int64_t from_ms, int64_t to_ms)
{
	struct sq_store *s = sq(st);
	int rc = txn_check(s);
	if (rc != 0)
		return rc;
	static const enum stmt_id steps[] = {
	    S_CLR_KEYS_RESET,    S_CLR_KEYS_FILL,     S_CLR_COUNTS, S_CLR_TOTALS_DEL, S_CLR_TOTALS_INS,
	    S_CLR_CAMPAIGNS_DEL, S_CLR_CAMPAIGNS_INS, S_CLR_DEDUPE, S_CLR_UNIQUES,    S_CLR_KEYS_RESET,
	};
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]) && rc == 0; i++) {
		sqlite3_stmt *q = s->stmt[steps[i]];
		int np = sqlite3_bind_parameter_count(q), b = SQLITE_OK;
		/* Parameters: ?1 src; ?2 ?3 = the range, or updated_ms and seq for the inserts. */
		bool ins = steps[i] == S_CLR_TOTALS_INS || steps[i] == S_CLR_CAMPAIGNS_INS;
		if (np >= 1)
			b |= sqlite3_bind_int(q, 1, (int)src);
		if (np >= 3) {
			b |= sqlite3_bind_int64(q, 2, ins ? s->now_ms : from_ms);
			b |= sqlite3_bind_int64(q, 3, ins ? s->seq : to_ms);
		}
		rc = b == SQLITE_OK ? run(q) : -TL_EINVAL;
	}
	s->dirty = true;
	return txn_fail(s, rc);
}
