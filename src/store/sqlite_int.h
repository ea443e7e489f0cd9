/* sqlite_int.h — private to the SQLite backend (sqlite*.c): the connection
 * struct, the statement ids, the metric column list and small helpers.
 * Nothing outside src/store/sqlite*.c includes this. */
#ifndef TL_STORE_SQLITE_INT_H
#define TL_STORE_SQLITE_INT_H

#include "store/store.h"

#include <sqlite3.h>

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* Metric columns, in enum tl_metric order (X-macro: SQL text and the table). */
#define METRIC_COLUMNS(X)                                                                                    \
	X(sent)                                                                                              \
	X(delivered)                                                                                         \
	X(deferred)                                                                                          \
	X(bounced)                                                                                           \
	X(hard_bounced)                                                                                      \
	X(soft_bounced)                                                                                      \
	X(dropped)                                                                                           \
	X(complaints)                                                                                        \
	X(unsubscribes)                                                                                      \
	X(opens)                                                                                             \
	X(machine_opens)                                                                                     \
	X(unique_opens)                                                                                      \
	X(unique_human_opens)                                                                                \
	X(clicks)                                                                                            \
	X(bot_clicks)                                                                                        \
	X(unique_clicks)                                                                                     \
	X(unique_human_clicks)

#define C_NAME(c) #c,
#define C_LIST(c) "," #c
#define C_PARAM(c) ",?"
#define C_ADD(c) "," #c "=" #c "+excluded." #c
#define C_SUM(c) ",SUM(" #c ")"
#define C_SUMC(c) ",SUM(c." #c ")"
#define C_SUMT(c) ",SUM(t." #c ")"
#define C_COUNT(c) +1

_Static_assert(0 METRIC_COLUMNS(C_COUNT) == TL_M__COUNT, "one column per enum tl_metric");

#define MCOLS METRIC_COLUMNS(C_LIST)
#define MPARAMS METRIC_COLUMNS(C_PARAM)
#define MADD METRIC_COLUMNS(C_ADD)

enum stmt_id {
	S_BEGIN_WRITE,
	S_BEGIN_READ,
	S_COMMIT,
	S_ROLLBACK,
	S_META_GET,
	S_META_SET,
	S_META_BUMP,
	S_TENANT_INSERT,
	S_TENANT_SETTINGS_GET,
	S_TENANT_SETTINGS_SET,
	S_TENANTS_ALL,
	S_DEDUPE,
	S_UNIQUE,
	S_COUNT_UPSERT,
	S_COUNT_UPSERT_N, /* COUNT_ROWS_PER_STMT rows at once */
	S_TOTAL_UPSERT,
	S_CAMPAIGN_UPSERT,
	S_OFFSET_SET,
	S_OFFSET_GET,
	S_PRUNE_SCAN,
	S_PRUNE_RANGE,
	S_PRUNE_TAIL,
	S_CLR_KEYS_RESET,
	S_CLR_KEYS_FILL,
	S_CLR_COUNTS,
	S_CLR_TOTALS_DEL,
	S_CLR_TOTALS_INS,
	S_CLR_CAMPAIGNS_DEL,
	S_CLR_CAMPAIGNS_INS,
	S_CLR_DEDUPE,
	S_CLR_UNIQUES,
	S_CAMPAIGNS_LIST,
	S_CAMPAIGNS_SINCE,
	S_CAMPAIGN_ALL,
	S_CAMPAIGN_VARIANT,
	S__COUNT
};

/* Count rows per S_COUNT_UPSERT_N: one statement step for many rows costs a
 * third less than a step per row. */
#define COUNT_ROWS_PER_STMT 16

/* The SQL of every statement, indexed by enum stmt_id (sqlite.c). */
extern const char *const tl_sqlite_stmt_sql[S__COUNT];

/* Where the dedupe prune sweep stands: the last key examined (src -1: the
 * start of the table). */
struct sq_prune_cursor {
	int64_t src;
	char *tenant, *id;
	size_t tenant_n, id_n;
};

/* The background checkpointer of a writing connection (sqlite_ckpt.c). */
struct sq_ckpt;
int tl_sqlite_ckpt_create(const char *path, struct sq_ckpt **out);
void tl_sqlite_ckpt_destroy(struct sq_ckpt *c); /* NULL-safe; stops and joins the thread */
uint64_t tl_sqlite_ckpt_runs(const struct sq_ckpt *c);
/* sqlite3_wal_hook callback, arg = the struct sq_ckpt. */
int tl_sqlite_wal_hook(void *arg, sqlite3 *db, const char *name, int pages);

struct sq_store {
	struct tl_store base; /* first: a struct tl_store * is a struct sq_store * */
	sqlite3 *db;
	sqlite3_stmt *stmt[S__COUNT];
	sqlite3_stmt *series[TL_M__COUNT]; /* prepared on first use */
	bool in_txn;                       /* a batch transaction is open */
	int txn_err;                       /* first error inside it: commit refuses */
	bool dirty;                        /* counters changed: the commit bumps seq */
	int src;                           /* enum tl_source of the open batch */
	int64_t seq;                       /* sequence number this batch commits as */
	int64_t now_ms;                    /* wall clock at begin (updated_ms) */
	size_t *idx;                       /* scratch: sort order of a call's keys */
	size_t idx_cap;
	struct sq_prune_cursor prune; /* tl_sqlite_prune_dedupe_step */
	struct sq_ckpt *ckpt;         /* WAL checkpoints off this thread; NULL in memory */
};

static inline struct sq_store *sq(struct tl_store *st)
{
	return (struct sq_store *)st;
}

/* ---- helpers ------------------------------------------------------------ */

static inline int sq_err(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_ROW:
	case SQLITE_DONE:
		return 0;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -TL_EBUSY;
	case SQLITE_NOMEM:
		return -TL_ENOMEM;
	case SQLITE_FULL:
		return -TL_ENOSPC;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return -TL_ECORRUPT;
	case SQLITE_CONSTRAINT:
		return -TL_EEXIST;
	case SQLITE_TOOBIG:
		return -TL_ETOOBIG;
	case SQLITE_RANGE:
	case SQLITE_MISMATCH:
	case SQLITE_MISUSE:
		return -TL_EINVAL;
	default:
		return -TL_EIO;
	}
}

static inline int bind_text(sqlite3_stmt *s, int i, const char *p, size_t n)
{
	if (n > INT_MAX)
		return SQLITE_TOOBIG;
	return sqlite3_bind_text(s, i, p ? p : "", (int)n, SQLITE_STATIC);
}

static inline int bind_str(sqlite3_stmt *s, int i, struct tl_str v)
{
	return bind_text(s, i, v.p, v.n);
}

static inline int bind_cstr(sqlite3_stmt *s, int i, const char *v)
{
	return bind_text(s, i, v, strlen(v));
}

static inline int bind_blob(sqlite3_stmt *s, int i, const void *p, size_t n)
{
	if (n > INT_MAX)
		return SQLITE_TOOBIG;
	return sqlite3_bind_blob(s, i, p ? p : "", (int)n, SQLITE_STATIC);
}

/* Steps a statement that returns no rows, then resets it. */
static inline int run(sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);
	sqlite3_reset(s);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : sq_err(rc);
}

/* Runs a one-row integer query (first column); *found = whether a row came. */
static inline int one_int(sqlite3_stmt *s, int64_t *v, bool *found)
{
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*v = sqlite3_column_int64(s, 0);
		*found = true;
		rc = 0;
	} else if (rc == SQLITE_DONE) {
		*found = false;
		rc = 0;
	} else {
		rc = sq_err(rc);
	}
	sqlite3_reset(s);
	return rc;
}

static inline int meta_get(struct sq_store *s, const char *key, int64_t *v)
{
	sqlite3_stmt *q = s->stmt[S_META_GET];
	bool found = false;
	int rc = bind_cstr(q, 1, key);
	if (rc != SQLITE_OK)
		return sq_err(rc);
	rc = one_int(q, v, &found);
	if (rc == 0 && !found)
		rc = -TL_ECORRUPT;
	return rc;
}

/* The ops of the batch transaction (sqlite_txn.c) and of the queries
 * (sqlite_query.c); see struct tl_store_ops and store.h for each contract.
 * Arguments were validated by store.c. One thread per connection. */
int tl_sqlite_begin(struct tl_store *st, enum tl_source src);
int tl_sqlite_dedupe(struct tl_store *st, const struct tl_dedupe_key *keys, size_t n, uint8_t *is_new);
int tl_sqlite_uniques(struct tl_store *st, const struct tl_unique_key *keys, size_t n, uint8_t *is_new);
int tl_sqlite_add_counts(struct tl_store *st, const struct tl_count_row *rows, size_t n);
int tl_sqlite_offsets_set(struct tl_store *st, const char *consumer, const struct tl_offset *o, size_t n);
int tl_sqlite_commit(struct tl_store *st);
void tl_sqlite_rollback(struct tl_store *st);
int tl_sqlite_prune_dedupe_step(struct tl_store *st, int64_t before_ms);
void tl_sqlite_prune_cursor_reset(struct sq_prune_cursor *c); /* frees it, back to the start */
int tl_sqlite_clear_source(struct tl_store *st, enum tl_source src, int64_t from_ms, int64_t to_ms);
int tl_sqlite_offset_get(struct tl_store *st, const char *consumer, const char *topic, int partition,
                         uint64_t *next);
int tl_sqlite_campaigns(struct tl_store *st, enum tl_source src, const char *tenant, int64_t since_seq,
                        const char *after, size_t limit, tl_campaign_fn fn, void *arg);
int tl_sqlite_campaign(struct tl_store *st, enum tl_source src, const char *tenant, const char *campaign,
                       const char *variant, struct tl_campaign_summary *out);
int tl_sqlite_series(struct tl_store *st, enum tl_source src, const char *tenant, const char *campaign,
                     const char *variant, enum tl_metric m, int64_t granularity_s, int64_t from_ms,
                     int64_t to_ms, tl_point_fn fn, void *arg);
int tl_sqlite_last_seq(struct tl_store *st, int64_t *seq);

#endif
