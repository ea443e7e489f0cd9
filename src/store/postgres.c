/* postgres.c — the PostgreSQL backend of the store ("postgres://…",
 * "postgresql://…", any libpq connection URI; Aurora-compatible).
 *
 * One struct pg_store per connection (per thread). The schema lives in
 * migrations/postgres.c and is applied at open under a session advisory lock,
 * so two processes starting at once serialise and the second finds nothing
 * to do. Every data statement is prepared once per connection (lazily, on
 * first use) and takes bound parameters only; the identifiers pasted into SQL
 * text come from the constant column table below, never from data.
 *
 * The batch transaction (DESIGN.md §3) is a handful of round trips whatever
 * the batch size, each a set-based statement over binary array parameters
 * (postgres_batch.c):
 *   BEGIN ISOLATION LEVEL READ COMMITTED
 *   dedupe:   INSERT … SELECT FROM unnest(tenants, ids, ts) ON CONFLICT DO
 *             NOTHING RETURNING tenant, id  → is_new[] through a hash of the keys
 *   uniques:  the same over (tenant, campaign, kind, recipient)
 *   counts:   the rows are folded in C per minute bucket, per variant and per
 *             campaign; UPDATE meta 'seq' (once per transaction); then ONE
 *             statement whose data-modifying CTEs upsert the minute buckets,
 *             the totals and the campaign list, each from its own unnest
 *             (ON CONFLICT DO UPDATE SET col = x.col + EXCLUDED.col)
 *   offsets:  one upsert from unnest
 *   COMMIT
 * READ COMMITTED is what makes concurrent aggregators exact: an INSERT … ON
 * CONFLICT that meets a row another open transaction inserted waits for it,
 * then sees it (not new) or, if that one rolled back, inserts it. Dedupe and
 * unique keys are sent sorted by their bytes (sorted here, not by the
 * server) and inserted in that order, so two transactions over overlapping
 * keys lock them in the same order; the
 * counter tables need no order, as only the holder of the 'seq' row writes
 * them (below). A deadlock that still happens comes back as -TL_EBUSY.
 *
 * Batch sequence: the 'seq' row of meta is incremented when a transaction
 * first changes counters and stays row-locked until it ends. Sequence numbers
 * are therefore handed out in commit order, so an API reader that has seen
 * seq N has seen every batch ≤ N (the live stream's since_seq never skips a
 * batch). Only the counter tail of a batch serialises on it; the dedupe and
 * unique inserts, the bulk of the work, of two aggregators run side by side.
 *
 * Connection loss: a connection error, or a server that is shutting down,
 * in recovery or read-only (an Aurora failover), gives -TL_EUNAVAIL and marks
 * the connection broken. Outside a transaction the next call reconnects
 * (PQreset) and re-prepares; calls that are safe to repeat (BEGIN, every read,
 * idempotent writes) then retry once by themselves. Inside a transaction the
 * work is gone with the connection: the caller rolls back and retries the
 * whole batch, which is safe because the offsets commit with the counters
 * (a commit whose answer was lost either happened, and the retry then finds
 * every id already deduplicated, or did not). Deadlocks, serialization and
 * lock-timeout failures give -TL_EBUSY. */
#include "store/postgres_int.h"

#include "core/clock.h"
#include "store/migrations/postgres.h"

#include <jansson.h>

#include <stdlib.h>

#define MIGRATE_LOCK_KEY "7809317648359403630" /* pg_advisory_lock key: tally's schema */

static const char *const metric_col[] = {METRIC_COLUMNS(C_NAME)};

/* ---- statements --------------------------------------------------------- */

/* The keys of counts rows touched by a day range (clear_source). */
#define CLR_KEYS                                                                                             \
	"SELECT tenant,campaign,variant FROM counts WHERE src=$1::int2 AND minute_ms>=$2::int8 AND "         \
	"minute_ms<$3::int8"

/* Constant SQL; S_COUNTS and S_SERIES+m are built by build_sql(). */
static const char *const stmt_sql[S__COUNT] = {
    [S_META_GET] = "SELECT value FROM meta WHERE key=$1::text",
    [S_SEQ_NEXT] = "UPDATE meta SET value=value+1 WHERE key='seq' RETURNING value",
    [S_TENANT_ADD] = "WITH i AS (INSERT INTO tenants(name,api_key_hash,link_key,salt,created_ms)"
                     " VALUES($1::text,$2::bytea,$3::bytea,$4::bytea,$5::int8) RETURNING 1)"
                     " UPDATE meta SET value=value+1 WHERE key='tenants_version' AND EXISTS(SELECT 1 FROM i)",
    [S_TENANT_SET] =
        "WITH u AS (UPDATE tenants SET settings=CASE WHEN $3::text IS NULL THEN settings-$2::text"
        " ELSE settings||jsonb_build_object($2::text,$3::text) END WHERE name=$1::text RETURNING 1)"
        " UPDATE meta SET value=value+1 WHERE key='tenants_version' AND EXISTS(SELECT 1 FROM u)"
        " RETURNING value",
    /* One statement, one snapshot: the version matches the rows. */
    [S_TENANTS_ALL] =
        "SELECT m.value,t.name,t.api_key_hash,t.link_key,t.salt,t.created_ms,t.settings::text"
        " FROM meta m LEFT JOIN tenants t ON true WHERE m.key='tenants_version' ORDER BY t.name",
    [S_DEDUPE] = "INSERT INTO dedupe(src,tenant,id,ts_ms)"
                 " SELECT $1::int2,t,i,ts FROM unnest($2::text[],$3::bytea[],$4::int8[]) AS u(t,i,ts)"
                 " ON CONFLICT DO NOTHING RETURNING tenant,id",
    [S_UNIQUES] =
        "INSERT INTO uniques(src,tenant,campaign,kind,recipient,ts_ms)"
        " SELECT $1::int2,t,c,k,r,ts FROM unnest($2::text[],$3::text[],$4::int2[],$5::bytea[],$6::int8[])"
        " AS u(t,c,k,r,ts)"
        " ON CONFLICT DO NOTHING RETURNING tenant,campaign,kind,recipient",
    [S_OFFSETS_SET] =
        "INSERT INTO offsets(consumer,topic,partition,next)"
        " SELECT $1::text,t,p,n FROM unnest($2::text[],$3::int4[],$4::int8[]) AS u(t,p,n)"
        " ORDER BY t COLLATE \"C\",p ON CONFLICT (consumer,topic,partition) DO UPDATE SET next=EXCLUDED.next",
    [S_OFFSET_GET] =
        "SELECT next FROM offsets WHERE consumer=$1::text AND topic=$2::text AND partition=$3::int4",
    [S_PRUNE] = "DELETE FROM dedupe WHERE ctid=ANY(ARRAY(SELECT ctid FROM dedupe WHERE ts_ms<$1::int8 LIMIT "
                "$2::int4))",
    /* clear_source: totals and campaigns of the touched keys are recomputed
     * from the counts rows outside the range, before those in it go. */
    [S_CLR_TOTALS_DEL] =
        "DELETE FROM totals WHERE src=$1::int2 AND (tenant,campaign,variant) IN (" CLR_KEYS ")",
    [S_CLR_TOTALS_INS] =
        "INSERT INTO totals(src,tenant,campaign,variant" MCOLS ",first_ms,last_ms,updated_ms,seq)"
        " SELECT $1::int2,c.tenant,c.campaign,c.variant" METRIC_COLUMNS(
            C_SUMC) ",MIN(c.first_ms),MAX(c.last_ms),$4::int8,$5::int8 FROM counts c"
                    " WHERE c.src=$1::int2 AND NOT (c.minute_ms>=$2::int8 AND c.minute_ms<$3::int8)"
                    " AND (c.tenant,c.campaign,c.variant) IN (" CLR_KEYS ")"
                    " GROUP BY c.tenant,c.campaign,c.variant",
    [S_CLR_CAMPAIGNS_DEL] = "DELETE FROM campaigns WHERE src=$1::int2 AND (tenant,campaign) IN"
                            " (SELECT tenant,campaign FROM (" CLR_KEYS ") k)",
    [S_CLR_CAMPAIGNS_INS] =
        "INSERT INTO campaigns(src,tenant,campaign,first_ms,last_ms,updated_ms,seq)"
        " SELECT $1::int2,tenant,campaign,MIN(first_ms),MAX(last_ms),$4::int8,$5::int8 FROM totals"
        " WHERE src=$1::int2 AND (tenant,campaign) IN (SELECT tenant,campaign FROM (" CLR_KEYS ") k)"
        " GROUP BY tenant,campaign",
    [S_CLR_COUNTS] = "DELETE FROM counts WHERE src=$1::int2 AND minute_ms>=$2::int8 AND minute_ms<$3::int8",
    [S_CLR_DEDUPE] = "DELETE FROM dedupe WHERE src=$1::int2 AND ts_ms>=$2::int8 AND ts_ms<$3::int8",
    [S_CLR_UNIQUES] = "DELETE FROM uniques WHERE src=$1::int2 AND ts_ms>=$2::int8 AND ts_ms<$3::int8",
    [S_CAMPAIGNS_LIST] = "SELECT c.campaign,c.first_ms,c.last_ms,c.updated_ms,c.seq" METRIC_COLUMNS(
        C_SUMT) " FROM campaigns c JOIN totals t ON t.src=c.src AND t.tenant=c.tenant"
                " AND t.campaign=c.campaign WHERE c.src=$1::int2 AND c.tenant=$2::text AND c.seq>$3::int8"
                " AND c.campaign>$4::text GROUP BY c.src,c.tenant,c.campaign ORDER BY c.campaign"
                " LIMIT $5::int8",
    [S_CAMPAIGN_ALL] = "SELECT MIN(first_ms),MAX(last_ms),MAX(updated_ms),MAX(seq),COUNT(*)" METRIC_COLUMNS(
        C_SUM) " FROM totals WHERE src=$1::int2 AND tenant=$2::text AND campaign=$3::text",
    [S_CAMPAIGN_VARIANT] = "SELECT first_ms,last_ms,updated_ms,seq,1::int8" MCOLS
                           " FROM totals WHERE src=$1::int2 AND tenant=$2::text AND campaign=$3::text"
                           " AND variant=$4::text",
};

/* ---- SQL built at prepare time ------------------------------------------ */

/* One statement for add_counts, three upserts over three sets of arrays
 * that add_counts has already folded (one row per key, so ON CONFLICT DO
 * UPDATE never meets a key twice): the minute buckets, the per-variant
 * totals, the campaign list. No ORDER BY: these tables are only written
 * while holding the 'seq' row (take_seq), so writers never interleave on them.
 * $1 src, $2 updated_ms, $3 seq; then, from $4, the arrays of each part:
 * key columns, the metrics (not for campaigns), first_ms, last_ms. */
enum { CNT_P0 = 4, CNT_NKEY = 4, TOT_NKEY = 3, CMP_NKEY = 2 };
#define CNT_NPAR (CNT_NKEY + TL_M__COUNT + 2)
#define TOT_NPAR (TOT_NKEY + TL_M__COUNT + 2)
#define CMP_NPAR (CMP_NKEY + 2)

/* Appends the SELECT that turns one part's arrays into rows: $1 (src), the
 * key columns of the given types, the metrics (when with_metrics), first_ms,
 * last_ms, then tail. Parameters are numbered from first in that order. The
 * text arrays are unnested together WITH ORDINALITY and the int8 arrays read
 * by subscript at that ordinal, which costs the server about half of what a
 * twenty-way unnest does (fixed-width elements are found in O(1)). */
static int put_select(struct tl_buf *b, int first, const char *const *keytypes, int nkey, bool with_metrics,
                      const char *tail)
{
	int rc = tl_buf_puts(b, "SELECT $1::int2");
	int i = first, ntext = 0;
	for (int k = 0; k < nkey && rc == 0; k++, i++) {
		if (strcmp(keytypes[k], "text") == 0)
			rc = tl_buf_printf(b, ",u.k%d", ntext++);
		else
			rc = tl_buf_printf(b, ",($%d::%s[])[u.i]", i, keytypes[k]);
	}
	for (int k = 0; with_metrics && k < TL_M__COUNT && rc == 0; k++)
		rc = tl_buf_printf(b, ",($%d::int8[])[u.i]", i++);
	rc = rc ? rc
	        : tl_buf_printf(b, ",($%d::int8[])[u.i],($%d::int8[])[u.i]%s FROM unnest(", i, i + 1, tail);
	i = first;
	for (int k = 0, t = 0; k < nkey && rc == 0; k++, i++)
		if (strcmp(keytypes[k], "text") == 0)
			rc = tl_buf_printf(b, "%s$%d::text[]", t++ ? "," : "", i);
	rc = rc ? rc : tl_buf_puts(b, ") WITH ORDINALITY AS u(");
	for (int t = 0; t < ntext && rc == 0; t++)
		rc = tl_buf_printf(b, "k%d,", t);
	return rc ? rc : tl_buf_puts(b, "i)");
}

/* Appends ",col=x.col+EXCLUDED.col" for every metric. */
static int put_metric_adds(struct tl_buf *b)
{
	int rc = 0;
	for (int k = 0; k < TL_M__COUNT && rc == 0; k++)
		rc = tl_buf_printf(b, ",%s=x.%s+EXCLUDED.%s", metric_col[k], metric_col[k], metric_col[k]);
	return rc;
}

static int build_counts_sql(struct tl_buf *b)
{
	static const char *const cnt_types[] = {"text", "text", "int8", "text"};
	static const char *const tot_types[] = {"text", "text", "text"};
	const int tot0 = CNT_P0 + CNT_NPAR, cmp0 = tot0 + TOT_NPAR;
	int rc =
	    tl_buf_puts(b, "WITH c AS (INSERT INTO counts AS x(src,tenant,campaign,minute_ms,variant" MCOLS
	                   ",first_ms,last_ms) ");
	rc = rc ? rc : put_select(b, CNT_P0, cnt_types, CNT_NKEY, true, "");
	rc = rc ? rc
	        : tl_buf_puts(b, " ON CONFLICT (src,tenant,campaign,minute_ms,variant) DO UPDATE SET"
	                         " first_ms=LEAST(x.first_ms,EXCLUDED.first_ms),"
	                         "last_ms=GREATEST(x.last_ms,EXCLUDED.last_ms)");
	rc = rc ? rc : put_metric_adds(b);
	rc = rc ? rc
	        : tl_buf_puts(b, "),\nt AS (INSERT INTO totals AS x(src,tenant,campaign,variant" MCOLS
	                         ",first_ms,last_ms,updated_ms,seq) ");
	rc = rc ? rc : put_select(b, tot0, tot_types, TOT_NKEY, true, ",$2::int8,$3::int8");
	rc = rc ? rc
	        : tl_buf_puts(b, " ON CONFLICT (src,tenant,campaign,variant) DO UPDATE SET"
	                         " first_ms=LEAST(x.first_ms,EXCLUDED.first_ms),"
	                         "last_ms=GREATEST(x.last_ms,EXCLUDED.last_ms),"
	                         "updated_ms=EXCLUDED.updated_ms,seq=EXCLUDED.seq");
	rc = rc ? rc : put_metric_adds(b);
	rc = rc ? rc
	        : tl_buf_puts(
	              b, ")\nINSERT INTO campaigns AS x(src,tenant,campaign,first_ms,last_ms,updated_ms,seq)"
	                 " ");
	rc = rc ? rc : put_select(b, cmp0, tot_types, CMP_NKEY, false, ",$2::int8,$3::int8");
	rc = rc ? rc
	        : tl_buf_puts(b, " ON CONFLICT (src,tenant,campaign) DO UPDATE SET"
	                         " first_ms=LEAST(x.first_ms,EXCLUDED.first_ms),"
	                         "last_ms=GREATEST(x.last_ms,EXCLUDED.last_ms),"
	                         "updated_ms=EXCLUDED.updated_ms,seq=EXCLUDED.seq");
	return rc;
}

/* Series of one metric: the bucket is minute_ms floored to a multiple of $4
 * (also below 0); $7 NULL = every variant. */
static int build_series_sql(struct tl_buf *b, enum tl_metric m)
{
	return tl_buf_printf(
	    b,
	    "SELECT bucket,SUM(v)::int8 FROM (SELECT minute_ms-(((minute_ms%%$4::int8)+$4::int8)%%$4::int8)"
	    " AS bucket,%s AS v FROM counts WHERE src=$1::int2 AND tenant=$2::text AND campaign=$3::text"
	    " AND minute_ms>=$5::int8 AND minute_ms<$6::int8 AND ($7::text IS NULL OR variant=$7::text)) s"
	    " GROUP BY bucket ORDER BY bucket",
	    metric_col[m]);
}

/* ---- errors and the connection ------------------------------------------ */

/* SQLSTATE → TL error. Errors that leave the session unusable (the server
 * going away, a read-only server after failover, a prepared statement that
 * disappeared) also mark the connection for a reconnect. */
static int map_sqlstate(struct pg_store *s, const PGresult *r)
{
	const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
	if (!st || strlen(st) != 5)
		return -TL_EIO;
	const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
	bool stale_plan = strcmp(st, "0A000") == 0 && msg && strstr(msg, "cached plan"); /* DDL under us */
	if (memcmp(st, "08", 2) == 0 ||  /* connection exception */
	    memcmp(st, "57P", 3) == 0 || /* shutdown, crash, starting up, database dropped */
	    strcmp(st, "25006") == 0 ||  /* read-only: a failover made this server a replica */
	    strcmp(st, "26000") == 0 ||  /* a prepared statement is gone (DISCARD ALL) */
	    stale_plan) {
		s->broken = true; /* reconnect and prepare again */
		return -TL_EUNAVAIL;
	}
	if (memcmp(st, "40", 2) == 0 || strcmp(st, "55P03") == 0 || strcmp(st, "57014") == 0)
		return -TL_EBUSY; /* serialization failure, deadlock, lock or statement timeout */
	if (strcmp(st, "53100") == 0)
		return -TL_ENOSPC;
	if (strcmp(st, "53200") == 0)
		return -TL_ENOMEM;
	if (memcmp(st, "53", 2) == 0)
		return -TL_EUNAVAIL; /* too many connections, … */
	if (strcmp(st, "23505") == 0)
		return -TL_EEXIST;
	if (strcmp(st, "42501") == 0 || memcmp(st, "28", 2) == 0)
		return -TL_EAUTH; /* insufficient privilege, invalid authorization */
	if (memcmp(st, "22", 2) == 0)
		return -TL_EINVAL; /* data exception: bad encoding, out of range */
	if (strcmp(st, "54000") == 0)
		return -TL_ETOOBIG;
	if (strcmp(st, "0A000") == 0)
		return -TL_EUNSUPPORTED;
	if (strcmp(st, "XX001") == 0 || strcmp(st, "XX002") == 0)
		return -TL_ECORRUPT;
	return -TL_EIO;
}

/* Result status → 0 or a TL error. */
static int result_rc(struct pg_store *s, const PGresult *r)
{
	if (PQstatus(s->conn) == CONNECTION_BAD) {
		s->broken = true;
		return -TL_EUNAVAIL;
	}
	if (!r)
		return -TL_ENOMEM;
	switch (PQresultStatus(r)) {
	case PGRES_COMMAND_OK:
	case PGRES_TUPLES_OK:
		return 0;
	case PGRES_FATAL_ERROR:
		return map_sqlstate(s, r);
	default:
		return -TL_EIO;
	}
}

static void ignore_notice(void *arg, const char *msg)
{
	(void)arg;
	(void)msg; /* a library does not print: NOTICEs are dropped */
}

/* Connects (or reconnects) s->conn. */
static int reconnect(struct pg_store *s)
{
	PQreset(s->conn);
	if (PQstatus(s->conn) != CONNECTION_OK) {
		s->broken = true;
		return -TL_EUNAVAIL;
	}
	memset(s->prepared, 0, sizeof(s->prepared));
	s->broken = false;
	return 0;
}

/* Makes sure the connection is usable. Inside a transaction a lost
 * connection is final (its work is gone); outside, it is re-established. */
int tl_pg_ensure_conn(struct pg_store *s)
{
	if (!s->broken && PQstatus(s->conn) == CONNECTION_OK)
		return 0;
	s->broken = true;
	if (s->in_txn)
		return -TL_EUNAVAIL;
	return reconnect(s);
}

static int ensure_prepared(struct pg_store *s, enum stmt_id id)
{
	if (s->prepared[id])
		return 0;
	const char *sql = stmt_sql[id];
	if (!sql) {
		int rc;
		tl_buf_reset(&s->sql);
		if (id == S_COUNTS)
			rc = build_counts_sql(&s->sql);
		else
			rc = build_series_sql(&s->sql, (enum tl_metric)(id - S_SERIES));
		rc = rc ? rc : tl_buf_putc(&s->sql, '\0');
		if (rc)
			return rc;
		sql = s->sql.data;
	}
	char name[16];
	snprintf(name, sizeof(name), "tl%d", (int)id);
	PGresult *r = PQprepare(s->conn, name, sql, 0, NULL);
	int rc = result_rc(s, r);
	PQclear(r);
	if (rc == 0)
		s->prepared[id] = true;
	return rc;
}

/* Runs prepared statement id with p (NULL = none), binary results. On 0 *out
 * holds the result (the caller PQclear()s it). retry: the statement is safe
 * to run twice, so a connection found lost is re-established and the
 * statement sent once more (outside a transaction only). */
int tl_pg_exec(struct pg_store *s, enum stmt_id id, struct params *p, bool retry, PGresult **out)
{
	*out = NULL;
	if (p)
		params_fix(p, &s->arrays);
	for (int attempt = 0;; attempt++) {
		int rc = tl_pg_ensure_conn(s);
		if (rc == 0)
			rc = ensure_prepared(s, id);
		if (rc == 0) {
			char name[16];
			snprintf(name, sizeof(name), "tl%d", (int)id);
			PGresult *r = PQexecPrepared(s->conn, name, p ? p->n : 0, p ? p->v : NULL,
			                             p ? p->len : NULL, p ? p->fmt : NULL, 1);
			rc = result_rc(s, r);
			if (rc == 0) {
				*out = r;
				return 0;
			}
			PQclear(r);
		}
		if (rc != -TL_EUNAVAIL || !retry || s->in_txn || attempt > 0)
			return rc;
	}
}

/* Runs a statement and drops its result. */
int tl_pg_run(struct pg_store *s, enum stmt_id id, struct params *p, bool retry)
{
	PGresult *r = NULL;
	int rc = tl_pg_exec(s, id, p, retry, &r);
	PQclear(r);
	return rc;
}

/* Runs constant SQL without parameters (transaction control, migrations). */
int tl_pg_simple(struct pg_store *s, const char *sql, PGresult **out)
{
	PGresult *r = PQexec(s->conn, sql);
	int rc = result_rc(s, r);
	if (rc == 0 && out)
		*out = r;
	else
		PQclear(r);
	return rc;
}

/* One-row integer query; *found = whether a row came. */
int tl_pg_one_int(struct pg_store *s, enum stmt_id id, struct params *p, bool retry, int64_t *v, bool *found)
{
	PGresult *r = NULL;
	int rc = tl_pg_exec(s, id, p, retry, &r);
	if (rc == 0) {
		*found = PQntuples(r) > 0 && !PQgetisnull(r, 0, 0);
		*v = *found ? col_i64(r, 0, 0) : 0;
	}
	PQclear(r);
	return rc;
}

static int meta_get(struct pg_store *s, const char *key, int64_t *v)
{
	struct params p;
	params_init(&p);
	p_text(&p, key);
	bool found = false;
	int rc = tl_pg_one_int(s, S_META_GET, &p, !s->in_txn, v, &found);
	if (rc == 0 && !found)
		rc = -TL_ECORRUPT;
	return rc;
}

/* ---- opening and migrating ---------------------------------------------- */

static int record_version(struct pg_store *s, const struct tl_migration *m)
{
	char ver[16], ms[24];
	snprintf(ver, sizeof(ver), "%d", m->version);
	snprintf(ms, sizeof(ms), "%" PRId64, tl_now_ms());
	const char *v[3] = {ver, m->name, ms};
	PGresult *r = PQexecParams(
	    s->conn, "INSERT INTO schema_version(version,name,applied_ms) VALUES($1::int4,$2::text,$3::int8)",
	    3, NULL, v, NULL, NULL, 0);
	int rc = result_rc(s, r);
	PQclear(r);
	return rc;
}

/* The newest applied migration; 0 when schema_version does not exist yet. */
static int schema_version(struct pg_store *s, int64_t *v)
{
	PGresult *r = NULL;
	*v = 0;
	int rc = tl_pg_simple(s, "SELECT to_regclass('schema_version') IS NOT NULL", &r);
	if (rc != 0)
		return rc;
	bool exists = PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] == 't';
	PQclear(r);
	if (!exists)
		return 0;
	if ((rc = tl_pg_simple(s, "SELECT COALESCE(MAX(version),0)::int8::text FROM schema_version", &r)) !=
	    0)
		return rc;
	*v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return 0;
}

/* Applies every migration newer than the database, each in its own
 * transaction together with its schema_version row, under a session
 * advisory lock: concurrent openers wait, then find nothing left to do.
 * -TL_EUNSUPPORTED for a schema newer than this build. */
static int migrate(struct pg_store *s)
{
	const int latest = tl_postgres_migrations[tl_postgres_migrations_count - 1].version;
	int64_t cur = 0;
	int rc = schema_version(s, &cur);
	if (rc != 0 || cur == latest)
		return rc; /* the usual start: no lock, no DDL (a read-only role may open) */
	if (cur > latest)
		return -TL_EUNSUPPORTED;
	if ((rc = tl_pg_simple(s, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", NULL)) != 0)
		return rc;
	rc = tl_pg_simple(s,
	                  "CREATE TABLE IF NOT EXISTS schema_version(version INTEGER PRIMARY KEY,"
	                  " name TEXT NOT NULL, applied_ms BIGINT NOT NULL)",
	                  NULL);
	if (rc == 0)
		rc = schema_version(s, &cur); /* another process may have migrated meanwhile */
	if (rc == 0 && cur > latest)
		rc = -TL_EUNSUPPORTED;
	for (size_t i = 0; rc == 0 && i < tl_postgres_migrations_count; i++) {
		const struct tl_migration *m = &tl_postgres_migrations[i];
		if (m->version <= cur)
			continue;
		rc = tl_pg_simple(s, "BEGIN", NULL);
		rc = rc ? rc : tl_pg_simple(s, m->sql, NULL);
		rc = rc ? rc : record_version(s, m);
		rc = rc ? rc : tl_pg_simple(s, "COMMIT", NULL);
		if (rc != 0 && PQtransactionStatus(s->conn) != PQTRANS_IDLE)
			(void)tl_pg_simple(s, "ROLLBACK", NULL);
	}
	if (PQstatus(s->conn) == CONNECTION_OK)
		(void)tl_pg_simple(s, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")", NULL);
	return rc;
}

static void pg_close(struct tl_store *st)
{
	struct pg_store *s = pg(st);
	if (!s)
		return;
	PQfinish(s->conn); /* an open transaction is rolled back by the server */
	tl_buf_free(&s->arrays);
	tl_buf_free(&s->sql);
	tl_hmap_free(&s->keys);
	tl_pg_aggs_free(s->agg);
	free(s->ord);
	free(s);
}

/* Opens a connection. Keywords before dbname are defaults the URI may
 * override (timeouts, keepalives that notice a dead server in ~1 min);
 * client_encoding after it is forced: keys are exchanged as UTF-8 bytes. */
static int pg_open(const char *uri, struct tl_store **out)
{
	char *perr = NULL;
	PQconninfoOption *opts = PQconninfoParse(uri, &perr);
	PQfreemem(perr);
	if (!opts)
		return -TL_EINVAL;
	PQconninfoFree(opts);

	struct pg_store *s = calloc(1, sizeof(*s));
	if (!s)
		return -TL_ENOMEM;
	s->base.ops = &tl_store_postgres_ops;
	tl_buf_init(&s->arrays, 0);
	tl_buf_init(&s->sql, 0);
	tl_hmap_init(&s->keys);
	if (!(s->agg = tl_pg_aggs_new())) {
		free(s);
		return -TL_ENOMEM;
	}

	static const char *const kw[] = {"connect_timeout",           "keepalives",
	                                 "keepalives_idle",           "keepalives_interval",
	                                 "keepalives_count",          "tcp_user_timeout",
	                                 "fallback_application_name", "dbname",
	                                 "client_encoding",           NULL};
	const char *const val[] = {"10", "1", "30", "10", "3", "60000", "tally", uri, "UTF8", NULL};
	s->conn = PQconnectdbParams(kw, val, 1);
	int rc = 0;
	if (!s->conn) {
		rc = -TL_ENOMEM;
		goto fail;
	}
	PQsetNoticeProcessor(s->conn, ignore_notice, NULL);
	if (PQstatus(s->conn) != CONNECTION_OK) {
		rc = PQconnectionNeedsPassword(s->conn) ? -TL_EAUTH : -TL_EUNAVAIL;
		goto fail;
	}
	if ((rc = migrate(s)) != 0)
		goto fail;
	*out = &s->base;
	return 0;
fail:
	pg_close(&s->base);
	return rc;
}

/* ---- tenants ------------------------------------------------------------ */

static int pg_tenant_add(struct tl_store *st, const char *name, struct tl_tenant *t, char *api_key_out)
{
	(void)api_key_out;
	struct pg_store *s = pg(st);
	if (s->in_txn)
		return -TL_EINVAL; /* a batch transaction is open on this connection */
	struct params p;
	params_init(&p);
	p_text(&p, name);
	p_bin(&p, t->api_key_hash, 32);
	p_bin(&p, t->link_key, TL_KEY_BYTES);
	p_bin(&p, t->salt, TL_KEY_BYTES);
	p_i64(&p, t->created_ms);
	/* Not retried: had a lost answer committed, the retry would say EEXIST. */
	return tl_pg_run(s, S_TENANT_ADD, &p, false);
}

static int pg_tenant_set(struct tl_store *st, const char *name, const char *key, const char *value)
{
	struct pg_store *s = pg(st);
	if (s->in_txn)
		return -TL_EINVAL;
	struct params p;
	params_init(&p);
	p_text(&p, name);
	p_text(&p, key);
	p_text(&p, value);
	PGresult *r = NULL;
	int rc = tl_pg_exec(s, S_TENANT_SET, &p, true, &r); /* setting a value twice is harmless */
	if (rc == 0 && PQntuples(r) == 0)
		rc = -TL_ENOTFOUND;
	PQclear(r);
	return rc;
}

static int cmp_setting(const void *a, const void *b)
{
	return strcmp(((const struct tl_tenant_setting *)a)->key, ((const struct tl_tenant_setting *)b)->key);
}

/* Parses a settings JSON object into t->settings (string values only). */
static int parse_settings(const char *js, size_t len, struct tl_tenant *t)
{
	json_t *obj = json_loadb(js, len, 0, NULL);
	if (!obj || !json_is_object(obj)) {
		json_decref(obj);
		return -TL_ECORRUPT;
	}
	size_t n = json_object_size(obj);
	int rc = 0;
	if (n && !(t->settings = calloc(n, sizeof(*t->settings)))) {
		json_decref(obj);
		return -TL_ENOMEM;
	}
	const char *k;
	json_t *v;
	json_object_foreach(obj, k, v)
	{
		if (!json_is_string(v) || t->n_settings >= n)
			continue;
		struct tl_tenant_setting *e = &t->settings[t->n_settings];
		e->key = strdup(k);
		e->value = strdup(json_string_value(v));
		if (!e->key || !e->value) {
			free(e->key);
			free(e->value);
			e->key = e->value = NULL;
			rc = -TL_ENOMEM;
			break;
		}
		t->n_settings++;
	}
	json_decref(obj);
	if (rc == 0 && t->n_settings > 1)
		qsort(t->settings, t->n_settings, sizeof(*t->settings), cmp_setting);
	return rc;
}

static int read_tenant(const PGresult *r, int row, struct tl_tenant *t)
{
	memset(t, 0, sizeof(*t));
	struct tl_str name = col_str(r, row, 1);
	if (name.n < 1 || name.n > TL_MAX_TENANT || PQgetlength(r, row, 2) != 32 ||
	    PQgetlength(r, row, 3) != TL_KEY_BYTES || PQgetlength(r, row, 4) != TL_KEY_BYTES)
		return -TL_ECORRUPT;
	memcpy(t->name, name.p, name.n);
	t->name[name.n] = '\0';
	memcpy(t->api_key_hash, PQgetvalue(r, row, 2), 32);
	memcpy(t->link_key, PQgetvalue(r, row, 3), TL_KEY_BYTES);
	memcpy(t->salt, PQgetvalue(r, row, 4), TL_KEY_BYTES);
	t->created_ms = col_i64(r, row, 5);
	return parse_settings(PQgetvalue(r, row, 6), (size_t)PQgetlength(r, row, 6), t);
}

static int pg_tenants_load(struct tl_store *st, struct tl_tenant **out, size_t *n, int64_t *version)
{
	struct pg_store *s = pg(st);
	PGresult *r = NULL;
	int rc = tl_pg_exec(s, S_TENANTS_ALL, NULL, !s->in_txn, &r);
	if (rc != 0)
		return rc;
	int rows = PQntuples(r);
	if (rows < 1) {
		PQclear(r);
		return -TL_ECORRUPT; /* no tenants_version row */
	}
	*version = col_i64(r, 0, 0);
	size_t cnt = PQgetisnull(r, 0, 1) ? 0 : (size_t)rows;
	struct tl_tenant *arr = calloc(cnt ? cnt : 1, sizeof(*arr));
	size_t len = 0;
	if (!arr)
		rc = -TL_ENOMEM;
	for (size_t i = 0; rc == 0 && i < cnt; i++) {
		rc = read_tenant(r, (int)i, &arr[i]);
		len++; /* counted even on failure: its settings are freed below */
	}
	PQclear(r); /* key material stays in libpq's freed memory only briefly */
	if (rc != 0) {
		tl_tenants_free(arr, len);
		return rc;
	}
	*out = arr;
	*n = cnt;
	return 0;
}

static int pg_tenants_version(struct tl_store *st, int64_t *version)
{
	return meta_get(pg(st), "tenants_version", version);
}

static int pg_offset_get(struct tl_store *st, const char *consumer, const char *topic, int partition,
                         uint64_t *next)
{
	struct pg_store *s = pg(st);
	struct params p;
	params_init(&p);
	p_text(&p, consumer);
	p_text(&p, topic);
	p_i64(&p, partition);
	int64_t v = 0;
	bool found = false;
	int rc = tl_pg_one_int(s, S_OFFSET_GET, &p, !s->in_txn, &v, &found);
	if (rc == 0)
		*next = found && v > 0 ? (uint64_t)v : 0;
	return s->in_txn ? txn_fail(s, rc) : rc;
}

/* ---- queries ------------------------------------------------------------ */

static void read_counts(const PGresult *r, int row, int col, int64_t counts[TL_M__COUNT])
{
	for (int k = 0; k < TL_M__COUNT; k++)
		counts[k] = col_i64(r, row, col + k);
}

static int pg_campaigns(struct tl_store *st, enum tl_source src, const char *tenant, int64_t since_seq,
                        const char *after, size_t limit, tl_campaign_fn fn, void *arg)
{
	struct pg_store *s = pg(st);
	struct params p;
	params_init(&p);
	p_i64(&p, (int)src);
	p_text(&p, tenant);
	p_i64(&p, since_seq);
	p_text(&p, after);
	p_i64(&p, limit && limit <= INT64_MAX ? (int64_t)limit : INT64_MAX);
	PGresult *r = NULL;
	int rc = tl_pg_exec(s, S_CAMPAIGNS_LIST, &p, !s->in_txn, &r);
	if (rc != 0)
		return rc;
	int rows = PQntuples(r);
	for (int i = 0; i < rows && rc == 0; i++) {
		struct tl_campaign_summary c = {
		    .campaign = PQgetvalue(r, i, 0), /* binary text is NUL-terminated by libpq */
		    .first_ms = col_i64(r, i, 1),
		    .last_ms = col_i64(r, i, 2),
		    .updated_ms = col_i64(r, i, 3),
		    .seq = col_i64(r, i, 4),
		};
		read_counts(r, i, 5, c.counts);
		rc = fn(arg, &c);
	}
	PQclear(r);
	return rc;
}

static int pg_campaign(struct tl_store *st, enum tl_source src, const char *tenant, const char *campaign,
                       const char *variant, struct tl_campaign_summary *out)
{
	struct pg_store *s = pg(st);
	struct params p;
	params_init(&p);
	p_i64(&p, (int)src);
	p_text(&p, tenant);
	p_text(&p, campaign);
	if (variant)
		p_text(&p, variant);
	PGresult *r = NULL;
	int rc = tl_pg_exec(s, variant ? S_CAMPAIGN_VARIANT : S_CAMPAIGN_ALL, &p, !s->in_txn, &r);
	if (rc != 0)
		return rc;
	if (PQntuples(r) > 0 && col_i64(r, 0, 4) > 0) {
		memset(out, 0, sizeof(*out));
		out->campaign = campaign;
		out->first_ms = col_i64(r, 0, 0);
		out->last_ms = col_i64(r, 0, 1);
		out->updated_ms = col_i64(r, 0, 2);
		out->seq = col_i64(r, 0, 3);
		read_counts(r, 0, 5, out->counts);
	} else {
		rc = -TL_ENOTFOUND;
	}
	PQclear(r);
	return rc;
}

static int pg_series(struct tl_store *st, enum tl_source src, const char *tenant, const char *campaign,
                     const char *variant, enum tl_metric m, int64_t granularity_s, int64_t from_ms,
                     int64_t to_ms, tl_point_fn fn, void *arg)
{
	struct pg_store *s = pg(st);
	struct params p;
	params_init(&p);
	p_i64(&p, (int)src);
	p_text(&p, tenant);
	p_text(&p, campaign);
	p_i64(&p, granularity_s * 1000);
	p_i64(&p, from_ms);
	p_i64(&p, to_ms);
	p_text(&p, variant);
	PGresult *r = NULL;
	int rc = tl_pg_exec(s, (enum stmt_id)(S_SERIES + (int)m), &p, !s->in_txn, &r);
	if (rc != 0)
		return rc;
	int rows = PQntuples(r);
	for (int i = 0; i < rows && rc == 0; i++)
		rc = fn(arg, col_i64(r, i, 0), col_i64(r, i, 1));
	PQclear(r);
	return rc;
}

static int pg_last_seq(struct tl_store *st, int64_t *seq)
{
	return meta_get(pg(st), "seq", seq);
}

/* The backend's operations; registered in store.c for both URI schemes. */
#define PG_OPS(name)                                                                                         \
	{                                                                                                    \
		.scheme = name, .open = pg_open, .close = pg_close, .tenant_add = pg_tenant_add,             \
		.tenant_set = pg_tenant_set, .tenants_load = pg_tenants_load,                                \
		.tenants_version = pg_tenants_version, .begin = tl_pg_begin, .dedupe = tl_pg_dedupe,         \
		.uniques = tl_pg_uniques, .add_counts = tl_pg_add_counts, .offsets_set = tl_pg_offsets_set,  \
		.commit = tl_pg_commit, .rollback = tl_pg_rollback, .offset_get = pg_offset_get,             \
		.prune_dedupe_step = tl_pg_prune_dedupe_step, .clear_source = tl_pg_clear_source,            \
		.campaigns = pg_campaigns, .campaign = pg_campaign, .series = pg_series,                     \
		.last_seq = pg_last_seq,                                                                     \
	}

const struct tl_store_ops tl_store_postgres_ops = PG_OPS("postgres");
const struct tl_store_ops tl_store_postgresql_ops = PG_OPS("postgresql");
