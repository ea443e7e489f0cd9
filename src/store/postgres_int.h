/* postgres_int.h — private to the PostgreSQL backend (postgres*.c): the
 * connection struct, the statement ids, the metric column list, the builders
 * of binary parameters and readers of binary results, and the calls the two
 * files share. Nothing outside src/store/postgres*.c includes this. */
#ifndef TL_STORE_POSTGRES_INT_H
#define TL_STORE_POSTGRES_INT_H

#include "store/store.h"

#include "core/buf.h"
#include "core/hmap.h"

#include <libpq-fe.h>
#include <xxhash.h>

#include <endian.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define PARAMS_MAX 56

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
#define C_SUMC(c) ",SUM(c." #c ")::int8"
#define C_SUMT(c) ",SUM(t." #c ")::int8"
#define C_SUM(c) ",SUM(" #c ")::int8"
#define C_COUNT(c) +1

_Static_assert(0 METRIC_COLUMNS(C_COUNT) == TL_M__COUNT, "one column per enum tl_metric");

#define MCOLS METRIC_COLUMNS(C_LIST)

/* Built-in type OIDs (pg_type.dat; stable across releases). */
#define OID_BYTEA 17
#define OID_INT8 20
#define OID_INT2 21
#define OID_INT4 23
#define OID_TEXT 25

/* ---- statements --------------------------------------------------------- */

enum stmt_id {
	S_META_GET,
	S_SEQ_NEXT,
	S_TENANT_ADD,
	S_TENANT_SET,
	S_TENANTS_ALL,
	S_DEDUPE,
	S_UNIQUES,
	S_COUNTS,
	S_OFFSETS_SET,
	S_OFFSET_GET,
	S_PRUNE,
	S_CLR_TOTALS_DEL,
	S_CLR_TOTALS_INS,
	S_CLR_CAMPAIGNS_DEL,
	S_CLR_CAMPAIGNS_INS,
	S_CLR_COUNTS,
	S_CLR_DEDUPE,
	S_CLR_UNIQUES,
	S_CAMPAIGNS_LIST,
	S_CAMPAIGN_ALL,
	S_CAMPAIGN_VARIANT,
	S_SERIES, /* + enum tl_metric: one statement per metric column */
	S__COUNT = S_SERIES + TL_M__COUNT
};

struct pg_store {
	struct tl_store base; /* first: a struct tl_store * is a struct pg_store * */
	PGconn *conn;
	bool broken;             /* the connection is lost: reconnect before the next call */
	bool prepared[S__COUNT]; /* per connection; cleared by a reconnect */
	bool in_txn;             /* a batch transaction is open */
	int txn_err;             /* first error inside it: commit refuses */
	bool have_seq;           /* this transaction holds the 'seq' row and s->seq */
	int src;                 /* enum tl_source of the open batch */
	int64_t seq;             /* sequence number this batch commits as */
	int64_t now_ms;          /* wall clock at begin (updated_ms) */
	struct tl_buf arrays;    /* binary array parameters of one statement */
	struct tl_buf sql;       /* SQL text being built (build_sql) */
	struct tl_hmap keys;     /* batch keys → index, to map RETURNING rows back */
	uint32_t *ord;           /* scratch: the key order of one dedupe/uniques call */
	size_t ord_cap;
	struct aggset *agg; /* [AGG__COUNT]: add_counts' rows folded per key */
};

static inline struct pg_store *pg(struct tl_store *st)
{
	return (struct pg_store *)st;
}

/* ---- parameters ---------------------------------------------------------- */

/* Up to PARAMS_MAX parameters of one statement. Scalars go as text, keys
 * and arrays in binary; array values live in s->arrays and are pointed at by
 * params_fix() once every array is built (the buffer may move while growing). */
struct params {
	int n;
	const char *v[PARAMS_MAX];
	int len[PARAMS_MAX];
	int fmt[PARAMS_MAX];
	size_t arr_off[PARAMS_MAX]; /* SIZE_MAX = not an array */
	char num[PARAMS_MAX][24];
};

static inline void params_init(struct params *p)
{
	p->n = 0;
}

static inline void p_i64(struct params *p, int64_t v)
{
	int i = p->n++;
	snprintf(p->num[i], sizeof(p->num[i]), "%" PRId64, v);
	p->v[i] = p->num[i];
	p->len[i] = 0;
	p->fmt[i] = 0;
	p->arr_off[i] = SIZE_MAX;
}

static inline void p_text(struct params *p, const char *s) /* NULL = SQL NULL */
{
	int i = p->n++;
	p->v[i] = s;
	p->len[i] = 0;
	p->fmt[i] = 0;
	p->arr_off[i] = SIZE_MAX;
}

static inline void p_bin(struct params *p, const void *b, int n)
{
	int i = p->n++;
	p->v[i] = b;
	p->len[i] = n;
	p->fmt[i] = 1;
	p->arr_off[i] = SIZE_MAX;
}

static inline void put_be32(char *p, uint32_t v)
{
	v = htobe32(v);
	memcpy(p, &v, 4);
}

static inline void put_be64(char *p, uint64_t v)
{
	v = htobe64(v);
	memcpy(p, &v, 8);
}

/* A one-dimensional binary array (array_recv format) being appended to
 * s->arrays: header, then for each element its length and its bytes. */
struct arr {
	struct tl_buf *b;
	size_t off;
	int err;
};

/* Starts an array of n elements of type oid whose elements take payload
 * bytes in all (lengths excluded); reserves everything up front. */
static inline void arr_begin(struct arr *a, struct tl_buf *b, uint32_t oid, size_t n, size_t payload)
{
	a->b = b;
	a->off = b->len;
	a->err = 0;
	size_t total = 20 + 4 * n + payload;
	if (n > INT32_MAX || total > INT_MAX - b->len) {
		a->err = -TL_ETOOBIG;
		return;
	}
	if ((a->err = tl_buf_reserve(b, total)) != 0)
		return;
	char *p = b->data + b->len;
	put_be32(p, 1);                /* ndim */
	put_be32(p + 4, 0);            /* no NULLs */
	put_be32(p + 8, oid);          /* element type */
	put_be32(p + 12, (uint32_t)n); /* dimension length */
	put_be32(p + 16, 1);           /* lower bound */
	b->len += 20;
}

static inline void arr_bytes(struct arr *a, const void *v, uint32_t n)
{
	if (a->err)
		return;
	char *p = a->b->data + a->b->len;
	put_be32(p, n);
	if (n)
		memcpy(p + 4, v, n);
	a->b->len += 4 + (size_t)n;
}

static inline void arr_str(struct arr *a, struct tl_str v)
{
	arr_bytes(a, v.p, v.n);
}

static inline void arr_i64(struct arr *a, int64_t v)
{
	if (a->err)
		return;
	char *p = a->b->data + a->b->len;
	put_be32(p, 8);
	put_be64(p + 4, (uint64_t)v);
	a->b->len += 12;
}

static inline void arr_i32(struct arr *a, int32_t v)
{
	if (a->err)
		return;
	char *p = a->b->data + a->b->len;
	put_be32(p, 4);
	put_be32(p + 4, (uint32_t)v);
	a->b->len += 8;
}

static inline void arr_i16(struct arr *a, int16_t v)
{
	if (a->err)
		return;
	char *p = a->b->data + a->b->len;
	uint16_t be = htobe16((uint16_t)v);
	put_be32(p, 2);
	memcpy(p + 4, &be, 2);
	a->b->len += 6;
}

/* Ends the array and makes it the next parameter; returns its error. */
static inline int arr_end(struct arr *a, struct params *p)
{
	if (a->err)
		return a->err;
	int i = p->n++;
	p->v[i] = NULL;
	p->len[i] = (int)(a->b->len - a->off);
	p->fmt[i] = 1;
	p->arr_off[i] = a->off;
	return 0;
}

/* Points the array parameters into the (now final) array buffer. */
static inline void params_fix(struct params *p, const struct tl_buf *b)
{
	for (int i = 0; i < p->n; i++)
		if (p->arr_off[i] != SIZE_MAX)
			p->v[i] = b->data + p->arr_off[i];
}

/* ---- results ------------------------------------------------------------- */

/* A binary integer column (int2/int4/int8) as int64; NULL reads as 0. */
static inline int64_t col_i64(const PGresult *r, int row, int col)
{
	if (PQgetisnull(r, row, col))
		return 0;
	const char *p = PQgetvalue(r, row, col);
	switch (PQgetlength(r, row, col)) {
	case 8: {
		uint64_t v;
		memcpy(&v, p, 8);
		return (int64_t)be64toh(v);
	}
	case 4: {
		uint32_t v;
		memcpy(&v, p, 4);
		return (int32_t)be32toh(v);
	}
	case 2: {
		uint16_t v;
		memcpy(&v, p, 2);
		return (int16_t)be16toh(v);
	}
	default:
		return 0;
	}
}

static inline struct tl_str col_str(const PGresult *r, int row, int col)
{
	return tl_str_of(PQgetvalue(r, row, col), (size_t)PQgetlength(r, row, col));
}

static inline uint64_t hash_strs(struct tl_str a, struct tl_str b, uint64_t salt)
{
	return XXH3_64bits_withSeed(b.p ? b.p : "", b.n, XXH3_64bits_withSeed(a.p ? a.p : "", a.n, salt));
}

/* Records the first failure inside the transaction; commit then refuses. */
static inline int txn_fail(struct pg_store *s, int rc)
{
	if (rc != 0 && s->txn_err == 0)
		s->txn_err = rc;
	return rc;
}

static inline int txn_check(struct pg_store *s)
{
	if (!s->in_txn)
		return -TL_EINVAL;
	return s->txn_err;
}

/* ---- shared calls --------------------------------------------------------- */

/* Runs prepared statement id with p (NULL = none), binary results. On 0 *out
 * holds the result (the caller PQclear()s it). retry: the statement is safe
 * to run twice, so a connection found lost is re-established and the
 * statement sent once more (outside a transaction only). postgres.c. */
int tl_pg_exec(struct pg_store *s, enum stmt_id id, struct params *p, bool retry, PGresult **out);

/* tl_pg_exec without the result. postgres.c. */
int tl_pg_run(struct pg_store *s, enum stmt_id id, struct params *p, bool retry);

/* Runs constant SQL without parameters (transaction control); *out as above
 * when out is not NULL. postgres.c. */
int tl_pg_simple(struct pg_store *s, const char *sql, PGresult **out);

/* A one-row integer query; *found = whether a non-NULL value came. postgres.c. */
int tl_pg_one_int(struct pg_store *s, enum stmt_id id, struct params *p, bool retry, int64_t *v, bool *found);

/* Makes sure the connection is usable: inside a transaction a lost
 * connection is final (-TL_EUNAVAIL), outside it is re-established. postgres.c. */
int tl_pg_ensure_conn(struct pg_store *s);

/* The scratch sets add_counts folds rows into, and their release (NULL-safe). postgres_batch.c. */
struct aggset *tl_pg_aggs_new(void);
void tl_pg_aggs_free(struct aggset *g);

/* The batch transaction, as in struct tl_store_ops (postgres_batch.c). */
int tl_pg_begin(struct tl_store *st, enum tl_source src);
int tl_pg_dedupe(struct tl_store *st, const struct tl_dedupe_key *keys, size_t n, uint8_t *is_new);
int tl_pg_uniques(struct tl_store *st, const struct tl_unique_key *keys, size_t n, uint8_t *is_new);
int tl_pg_add_counts(struct tl_store *st, const struct tl_count_row *rows, size_t n);
int tl_pg_offsets_set(struct tl_store *st, const char *consumer, const struct tl_offset *o, size_t n);
int tl_pg_commit(struct tl_store *st);
void tl_pg_rollback(struct tl_store *st);
int tl_pg_prune_dedupe_step(struct tl_store *st, int64_t before_ms);
int tl_pg_clear_source(struct tl_store *st, enum tl_source src, int64_t from_ms, int64_t to_ms);

#endif
