/* sqlite.c — the SQLite backend of the store ("sqlite:<path>").
 *
 * One struct sq_store per connection (per thread). The schema lives in
 * migrations/sqlite.c; this file opens and tunes the connection, applies the
 * pending migrations, prepares every statement once (persistent, bound
 * parameters only: identifiers that are pasted into SQL text come from the
 * constant column table below, never from data) and implements the ops.
 *
 * Durability: WAL with synchronous=FULL. In WAL mode NORMAL only fsyncs the
 * WAL at checkpoints, so a power loss can drop the last committed batches.
 * Counters and offsets would go back together (still consistent, and the
 * aggregator would re-read those records), but numbers already served by the
 * API and sequence numbers already sent on the live stream would go backwards
 * and be reissued with other contents, and records the stream has since
 * deleted by retention could not be re-read at all. FULL costs one fsync of
 * the WAL per commit, and the aggregator commits once per ≤200 ms batch.
 * Measured on batches of 10k count rows + 20k dedupe keys, FULL and NORMAL
 * commits were within run-to-run noise of each other (~50–60 ms, dominated
 * by writing the dirty pages, not by the fsync).
 *
 * Batch transactions take the write lock up front (BEGIN IMMEDIATE) so a
 * writer never has to upgrade a read lock, which in WAL mode can fail with
 * SQLITE_BUSY without waiting; busy_timeout makes writers queue instead.
 * SQLITE_BUSY/SQLITE_LOCKED become -TL_EBUSY (retryable). */
#include "store/sqlite_int.h"

#include "core/clock.h"
#include "store/migrations/migrations.h"

#include <jansson.h>
#include <openssl/crypto.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#define BUSY_TIMEOUT_MS 5000

#define COUNT_TUPLE "(?,?,?,?,?" MPARAMS ",?,?)"
#define COUNT_TUPLE4 COUNT_TUPLE "," COUNT_TUPLE "," COUNT_TUPLE "," COUNT_TUPLE
#define COUNT_TUPLE16 COUNT_TUPLE4 "," COUNT_TUPLE4 "," COUNT_TUPLE4 "," COUNT_TUPLE4
#define COUNT_UPDATE                                                                                         \
	" ON CONFLICT DO UPDATE SET "                                                                        \
	"first_ms=min(first_ms,excluded.first_ms),last_ms=max(last_ms,excluded.last_ms)" MADD
_Static_assert(COUNT_ROWS_PER_STMT == 16, "COUNT_TUPLE16 holds COUNT_ROWS_PER_STMT tuples");

const char *const tl_sqlite_stmt_sql[S__COUNT] = {
    [S_BEGIN_WRITE] = "BEGIN IMMEDIATE",
    [S_BEGIN_READ] = "BEGIN",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_META_GET] = "SELECT value FROM meta WHERE key=?1",
    [S_META_SET] = "UPDATE meta SET value=?2 WHERE key=?1",
    [S_META_BUMP] = "UPDATE meta SET value=value+1 WHERE key=?1",
    [S_TENANT_INSERT] = "INSERT INTO tenants(name,api_key_hash,link_key,salt,created_ms,settings)"
                        " VALUES(?1,?2,?3,?4,?5,'{}')",
    [S_TENANT_SETTINGS_GET] = "SELECT settings FROM tenants WHERE name=?1",
    [S_TENANT_SETTINGS_SET] = "UPDATE tenants SET settings=?2 WHERE name=?1",
    [S_TENANTS_ALL] = "SELECT name,api_key_hash,link_key,salt,created_ms,settings FROM tenants ORDER BY name",
    [S_DEDUPE] = "INSERT INTO dedupe(src,tenant,id,ts_ms) VALUES(?1,?2,?3,?4) ON CONFLICT DO NOTHING",
    [S_UNIQUE] = "INSERT INTO uniques(src,tenant,campaign,kind,recipient,ts_ms) VALUES(?1,?2,?3,?4,?5,?6)"
                 " ON CONFLICT DO NOTHING",
    [S_COUNT_UPSERT] = "INSERT INTO counts(src,tenant,campaign,minute_ms,variant" MCOLS ",first_ms,last_ms)"
                       " VALUES" COUNT_TUPLE COUNT_UPDATE,
    [S_COUNT_UPSERT_N] = "INSERT INTO counts(src,tenant,campaign,minute_ms,variant" MCOLS ",first_ms,last_ms)"
                         " VALUES" COUNT_TUPLE16 COUNT_UPDATE,
    [S_TOTAL_UPSERT] =
        "INSERT INTO totals(src,tenant,campaign,variant" MCOLS ",first_ms,last_ms,updated_ms,seq)"
        " VALUES(?,?,?,?" MPARAMS ",?,?,?,?) ON CONFLICT DO UPDATE SET"
        " first_ms=min(first_ms,excluded.first_ms),last_ms=max(last_ms,excluded.last_ms),"
        "updated_ms=excluded.updated_ms,seq=excluded.seq" MADD,
    [S_CAMPAIGN_UPSERT] = "INSERT INTO campaigns(src,tenant,campaign,first_ms,last_ms,updated_ms,seq)"
                          " VALUES(?1,?2,?3,?4,?5,?6,?7) ON CONFLICT DO UPDATE SET"
                          " first_ms=min(first_ms,excluded.first_ms),last_ms=max(last_ms,excluded.last_ms),"
                          "updated_ms=excluded.updated_ms,seq=excluded.seq",
    [S_OFFSET_SET] = "INSERT INTO offsets(consumer,topic,partition,next) VALUES(?1,?2,?3,?4)"
                     " ON CONFLICT DO UPDATE SET next=excluded.next",
    [S_OFFSET_GET] = "SELECT next FROM offsets WHERE consumer=?1 AND topic=?2 AND partition=?3",
    [S_PRUNE_SCAN] = "SELECT src,tenant,id FROM dedupe WHERE (src,tenant,id)>(?1,?2,?3)"
                     " ORDER BY src,tenant,id LIMIT 1 OFFSET ?4",
    [S_PRUNE_RANGE] = "DELETE FROM dedupe WHERE (src,tenant,id)>(?1,?2,?3) AND (src,tenant,id)<=(?4,?5,?6)"
                      " AND ts_ms<?7",
    [S_PRUNE_TAIL] = "DELETE FROM dedupe WHERE (src,tenant,id)>(?1,?2,?3) AND ts_ms<?4",
    [S_CLR_KEYS_RESET] = "DELETE FROM temp.clear_keys",
    [S_CLR_KEYS_FILL] =
        "INSERT INTO temp.clear_keys(tenant,campaign,variant) SELECT DISTINCT tenant,campaign,"
        "variant FROM counts WHERE src=?1 AND minute_ms>=?2 AND minute_ms<?3",
    [S_CLR_COUNTS] = "DELETE FROM counts WHERE src=?1 AND minute_ms>=?2 AND minute_ms<?3",
    [S_CLR_TOTALS_DEL] = "DELETE FROM totals WHERE src=?1 AND (tenant,campaign,variant) IN"
                         " (SELECT tenant,campaign,variant FROM temp.clear_keys)",
    [S_CLR_TOTALS_INS] =
        "INSERT INTO totals(src,tenant,campaign,variant" MCOLS ",first_ms,last_ms,updated_ms,seq)"
        " SELECT ?1,c.tenant,c.campaign,c.variant" METRIC_COLUMNS(
            C_SUMC) ",MIN(c.first_ms),MAX(c.last_ms),?2,?3 FROM temp.clear_keys k JOIN counts c"
                    " ON c.src=?1 AND c.tenant=k.tenant AND c.campaign=k.campaign AND c.variant=k.variant"
                    " GROUP BY c.tenant,c.campaign,c.variant",
    [S_CLR_CAMPAIGNS_DEL] = "DELETE FROM campaigns WHERE src=?1 AND (tenant,campaign) IN"
                            " (SELECT tenant,campaign FROM temp.clear_keys)",
    [S_CLR_CAMPAIGNS_INS] =
        "INSERT INTO campaigns(src,tenant,campaign,first_ms,last_ms,updated_ms,seq)"
        " SELECT ?1,tenant,campaign,MIN(first_ms),MAX(last_ms),?2,?3 FROM totals"
        " WHERE src=?1 AND (tenant,campaign) IN (SELECT tenant,campaign FROM temp.clear_keys)"
        " GROUP BY tenant,campaign",
    [S_CLR_DEDUPE] = "DELETE FROM dedupe WHERE src=?1 AND ts_ms>=?2 AND ts_ms<?3",
    [S_CLR_UNIQUES] = "DELETE FROM uniques WHERE src=?1 AND ts_ms>=?2 AND ts_ms<?3",
    [S_CAMPAIGNS_LIST] = "SELECT c.campaign,c.first_ms,c.last_ms,c.updated_ms,c.seq" METRIC_COLUMNS(
        C_SUMT) " FROM campaigns c JOIN totals t ON t.src=c.src AND t.tenant=c.tenant"
                " AND t.campaign=c.campaign WHERE c.src=?1 AND c.tenant=?2 AND c.seq>?3"
                " AND c.campaign>?4 GROUP BY c.campaign ORDER BY c.campaign LIMIT ?5",
    /* The live stream asks for what changed since a recent seq: a few rows of
     * the seq index instead of every campaign of the tenant. */
    [S_CAMPAIGNS_SINCE] = "SELECT c.campaign,c.first_ms,c.last_ms,c.updated_ms,c.seq" METRIC_COLUMNS(
        C_SUMT) " FROM campaigns c INDEXED BY campaigns_seq JOIN totals t ON t.src=c.src"
                " AND t.tenant=c.tenant AND t.campaign=c.campaign WHERE c.src=?1 AND c.tenant=?2"
                " AND c.seq>?3 AND c.campaign>?4 GROUP BY c.campaign ORDER BY c.campaign LIMIT ?5",
    [S_CAMPAIGN_ALL] = "SELECT MIN(first_ms),MAX(last_ms),MAX(updated_ms),MAX(seq),COUNT(*)" METRIC_COLUMNS(
        C_SUM) " FROM totals WHERE src=?1 AND tenant=?2 AND campaign=?3",
    [S_CAMPAIGN_VARIANT] = "SELECT first_ms,last_ms,updated_ms,seq,1" MCOLS
                           " FROM totals WHERE src=?1 AND tenant=?2 AND campaign=?3 AND variant=?4",
};

static int meta_bump(struct sq_store *s, const char *key)
{
	sqlite3_stmt *q = s->stmt[S_META_BUMP];
	int rc = bind_cstr(q, 1, key);
	return rc != SQLITE_OK ? sq_err(rc) : run(q);
}

static int exec_sql(sqlite3 *db, const char *sql)
{
	return sq_err(sqlite3_exec(db, sql, NULL, NULL, NULL));
}

/* Creates the parent directories of path (mkdir -p of its dirname). */
static int make_parents(const char *path)
{
	char buf[PATH_MAX];
	size_t n = strlen(path);
	if (n >= sizeof(buf))
		return -TL_EINVAL;
	memcpy(buf, path, n + 1);
	for (size_t i = 1; i < n; i++) {
		if (buf[i] != '/')
			continue;
		buf[i] = '\0';
		if (mkdir(buf, 0755) != 0 && errno != EEXIST)
			return tl_err_from_errno(errno);
		buf[i] = '/';
	}
	return 0;
}

/* ---- opening and migrating ---------------------------------------------- */

static int schema_version(sqlite3 *db, int64_t *v)
{
	sqlite3_stmt *q = NULL;
	bool found = false;
	*v = 0;
	int rc = sqlite3_prepare_v2(
	    db, "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'", -1, &q, NULL);
	if (rc != SQLITE_OK)
		return sq_err(rc);
	int64_t one = 0;
	rc = one_int(q, &one, &found);
	sqlite3_finalize(q);
	if (rc != 0 || !found)
		return rc;
	rc = sqlite3_prepare_v2(db, "SELECT COALESCE(MAX(version),0) FROM schema_version", -1, &q, NULL);
	if (rc != SQLITE_OK)
		return sq_err(rc);
	rc = one_int(q, v, &found);
	sqlite3_finalize(q);
	return rc;
}

static int record_version(sqlite3 *db, const struct tl_migration *m)
{
	sqlite3_stmt *q = NULL;
	int rc = sqlite3_prepare_v2(
	    db, "INSERT INTO schema_version(version,name,applied_ms) VALUES(?1,?2,?3)", -1, &q, NULL);
	if (rc != SQLITE_OK)
		return sq_err(rc);
	sqlite3_bind_int(q, 1, m->version);
	sqlite3_bind_text(q, 2, m->name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(q, 3, tl_now_ms());
	rc = run(q);
	sqlite3_finalize(q);
	return rc;
}

/* Applies every migration newer than the database, all in one write
 * transaction; concurrent openers serialise on the write lock and the loser
 * finds nothing left to do. -TL_EUNSUPPORTED for a schema newer than us. */
static int migrate(sqlite3 *db)
{
	const int latest = tl_sqlite_migrations[tl_sqlite_migrations_count - 1].version;
	int64_t cur = 0;
	int rc = schema_version(db, &cur);
	if (rc != 0)
		return rc;
	if (cur > latest)
		return -TL_EUNSUPPORTED;
	if (cur == latest)
		return 0;

	rc = exec_sql(db, "BEGIN IMMEDIATE");
	if (rc != 0)
		return rc;
	rc = exec_sql(db, "CREATE TABLE IF NOT EXISTS schema_version(version INTEGER PRIMARY KEY,"
	                  " name TEXT NOT NULL, applied_ms INTEGER NOT NULL)");
	if (rc == 0)
		rc = schema_version(db, &cur);
	for (size_t i = 0; rc == 0 && i < tl_sqlite_migrations_count; i++) {
		const struct tl_migration *m = &tl_sqlite_migrations[i];
		if (m->version <= cur)
			continue;
		rc = exec_sql(db, m->sql);
		if (rc == 0)
			rc = record_version(db, m);
	}
	if (rc == 0)
		rc = exec_sql(db, "COMMIT");
	if (rc != 0 && !sqlite3_get_autocommit(db))
		(void)exec_sql(db, "ROLLBACK");
	return rc;
}

static void sq_close(struct tl_store *st)
{
	struct sq_store *s = sq(st);
	if (!s)
		return;
	if (s->db && !sqlite3_get_autocommit(s->db))
		(void)exec_sql(s->db, "ROLLBACK");
	for (int i = 0; i < S__COUNT; i++)
		sqlite3_finalize(s->stmt[i]);
	for (int i = 0; i < TL_M__COUNT; i++)
		sqlite3_finalize(s->series[i]);
	tl_sqlite_ckpt_destroy(s->ckpt); /* first: the last connection to close checkpoints */
	sqlite3_close_v2(s->db);
	free(s->idx);
	tl_sqlite_prune_cursor_reset(&s->prune);
	free(s);
}

static int set_pragmas(sqlite3 *db)
{
	sqlite3_stmt *q = NULL;
	int rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &q, NULL);
	if (rc != SQLITE_OK)
		return sq_err(rc);
	rc = sqlite3_step(q);
	/* An in-memory database answers "memory"; anything else must be WAL. */
	bool ok =
	    rc == SQLITE_ROW && (sqlite3_stricmp((const char *)sqlite3_column_text(q, 0), "wal") == 0 ||
	                         sqlite3_stricmp((const char *)sqlite3_column_text(q, 0), "memory") == 0);
	rc = rc == SQLITE_ROW ? 0 : sq_err(rc);
	sqlite3_finalize(q);
	if (rc != 0)
		return rc;
	if (!ok)
		return -TL_EUNSUPPORTED;
	return exec_sql(db, "PRAGMA synchronous=FULL;"
	                    "PRAGMA foreign_keys=OFF;"
	                    "PRAGMA cache_size=-65536;"
	                    "PRAGMA temp_store=MEMORY;"
	                    /* checkpoints: sqlite_ckpt.c, off the writer's thread */
	                    "PRAGMA journal_size_limit=67108864;");
}

static int sq_open(const char *uri, struct tl_store **out)
{
	static const char scheme[] = "sqlite:";
	if (strncmp(uri, scheme, sizeof(scheme) - 1) != 0)
		return -TL_EINVAL;
	const char *path = uri + sizeof(scheme) - 1;
	if (path[0] == '/' && path[1] == '/')
		path += 2; /* sqlite:///abs/path */
	if (!*path)
		return -TL_EINVAL;

	struct sq_store *s = calloc(1, sizeof(*s));
	if (!s)
		return -TL_ENOMEM;
	s->base.ops = &tl_store_sqlite_ops;
	s->prune.src = -1;
	int rc = 0;
	if (strcmp(path, ":memory:") != 0 && (rc = make_parents(path)) != 0)
		goto fail;
	int src = sqlite3_open_v2(path, &s->db,
	                          SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (src != SQLITE_OK) {
		rc = src == SQLITE_CANTOPEN ? -TL_EIO : sq_err(src);
		goto fail;
	}
	sqlite3_extended_result_codes(s->db, 1);
	sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
	if ((rc = set_pragmas(s->db)) != 0 || (rc = migrate(s->db)) != 0)
		goto fail;
	if (strcmp(path, ":memory:") != 0) {
		if ((rc = tl_sqlite_ckpt_create(path, &s->ckpt)) != 0)
			goto fail;
		sqlite3_wal_hook(s->db, tl_sqlite_wal_hook, s->ckpt); /* replaces the automatic checkpoint */
	}
	rc = exec_sql(s->db,
	              "CREATE TEMP TABLE IF NOT EXISTS clear_keys(tenant TEXT, campaign TEXT, variant TEXT,"
	              " PRIMARY KEY(tenant,campaign,variant)) WITHOUT ROWID");
	if (rc != 0)
		goto fail;
	for (int i = 0; i < S__COUNT; i++) {
		src = sqlite3_prepare_v3(s->db, tl_sqlite_stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
		                         &s->stmt[i], NULL);
		if (src != SQLITE_OK) {
			rc = sq_err(src);
			goto fail;
		}
	}
	*out = &s->base;
	return 0;
fail:
	sq_close(&s->base);
	return rc;
}

/* ---- tenants ------------------------------------------------------------ */

/* Runs a write transaction body under BEGIN IMMEDIATE … COMMIT. */
static int write_begin(struct sq_store *s)
{
	if (s->in_txn)
		return -TL_EINVAL; /* a batch transaction is open on this connection */
	return run(s->stmt[S_BEGIN_WRITE]);
}

static int write_end(struct sq_store *s, int rc)
{
	if (rc == 0)
		rc = run(s->stmt[S_COMMIT]);
	if (rc != 0 && !sqlite3_get_autocommit(s->db))
		(void)run(s->stmt[S_ROLLBACK]);
	return rc;
}

static int sq_tenant_add(struct tl_store *st, const char *name, struct tl_tenant *t, char *api_key_out)
{
	(void)api_key_out;
	struct sq_store *s = sq(st);
	int rc = write_begin(s);
	if (rc != 0)
		return rc;
	sqlite3_stmt *q = s->stmt[S_TENANT_INSERT];
	if (bind_cstr(q, 1, name) != SQLITE_OK || bind_blob(q, 2, t->api_key_hash, 32) != SQLITE_OK ||
	    bind_blob(q, 3, t->link_key, TL_KEY_BYTES) != SQLITE_OK ||
	    bind_blob(q, 4, t->salt, TL_KEY_BYTES) != SQLITE_OK ||
	    sqlite3_bind_int64(q, 5, t->created_ms) != SQLITE_OK)
		rc = -TL_ENOMEM;
	if (rc == 0)
		rc = run(q);
	sqlite3_clear_bindings(q); /* no key material left bound */
	if (rc == 0)
		rc = meta_bump(s, "tenants_version");
	return write_end(s, rc);
}

static int sq_tenant_set(struct tl_store *st, const char *name, const char *key, const char *value)
{
	struct sq_store *s = sq(st);
	json_t *obj = NULL;
	char *dump = NULL;
	int rc = write_begin(s);
	if (rc != 0)
		return rc;
	sqlite3_stmt *q = s->stmt[S_TENANT_SETTINGS_GET];
	if (bind_cstr(q, 1, name) != SQLITE_OK) {
		rc = -TL_ENOMEM;
		goto out;
	}
	int src = sqlite3_step(q);
	if (src == SQLITE_ROW) {
		obj = json_loadb((const char *)sqlite3_column_text(q, 0), (size_t)sqlite3_column_bytes(q, 0),
		                 0, NULL);
		if (!obj || !json_is_object(obj))
			rc = -TL_ECORRUPT;
	} else {
		rc = src == SQLITE_DONE ? -TL_ENOTFOUND : sq_err(src);
	}
	sqlite3_reset(q);
	if (rc != 0)
		goto out;
	if (value) {
		json_t *v = json_string(value);
		if (!v) {
			rc = -TL_EINVAL; /* not UTF-8 */
			goto out;
		}
		if (json_object_set_new(obj, key, v) != 0) {
			rc = -TL_ENOMEM;
			goto out;
		}
	} else {
		(void)json_object_del(obj, key);
	}
	dump = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
	if (!dump) {
		rc = -TL_ENOMEM;
		goto out;
	}
	q = s->stmt[S_TENANT_SETTINGS_SET];
	if (bind_cstr(q, 1, name) != SQLITE_OK || bind_cstr(q, 2, dump) != SQLITE_OK)
		rc = -TL_ENOMEM;
	if (rc == 0)
		rc = run(q);
	sqlite3_clear_bindings(q);
	if (rc == 0)
		rc = meta_bump(s, "tenants_version");
out:
	rc = write_end(s, rc);
	if (dump) {
		OPENSSL_cleanse(dump, strlen(dump));
		free(dump);
	}
	json_decref(obj);
	return rc;
}

static int cmp_setting(const void *a, const void *b)
{
	return strcmp(((const struct tl_tenant_setting *)a)->key, ((const struct tl_tenant_setting *)b)->key);
}

/* Parses a settings JSON object into t->settings (string values only). */
static int parse_settings(const char *json, size_t len, struct tl_tenant *t)
{
	json_t *obj = json_loadb(json, len, 0, NULL);
	if (!obj || !json_is_object(obj)) {
		json_decref(obj);
		return -TL_ECORRUPT;
	}
	int rc = 0;
	size_t n = json_object_size(obj);
	if (n) {
		t->settings = calloc(n, sizeof(*t->settings));
		if (!t->settings) {
			json_decref(obj);
			return -TL_ENOMEM;
		}
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

static int read_tenant(sqlite3_stmt *q, struct tl_tenant *t)
{
	memset(t, 0, sizeof(*t));
	const char *name = (const char *)sqlite3_column_text(q, 0);
	size_t nlen = (size_t)sqlite3_column_bytes(q, 0);
	if (!name || nlen < 1 || nlen > TL_MAX_TENANT || sqlite3_column_bytes(q, 1) != 32 ||
	    sqlite3_column_bytes(q, 2) != TL_KEY_BYTES || sqlite3_column_bytes(q, 3) != TL_KEY_BYTES)
		return -TL_ECORRUPT;
	memcpy(t->name, name, nlen);
	t->name[nlen] = '\0';
	memcpy(t->api_key_hash, sqlite3_column_blob(q, 1), 32);
	memcpy(t->link_key, sqlite3_column_blob(q, 2), TL_KEY_BYTES);
	memcpy(t->salt, sqlite3_column_blob(q, 3), TL_KEY_BYTES);
	t->created_ms = sqlite3_column_int64(q, 4);
	const char *js = (const char *)sqlite3_column_text(q, 5);
	return parse_settings(js ? js : "{}", js ? (size_t)sqlite3_column_bytes(q, 5) : 2, t);
}

static int sq_tenants_load(struct tl_store *st, struct tl_tenant **out, size_t *n, int64_t *version)
{
	struct sq_store *s = sq(st);
	struct tl_tenant *arr = NULL;
	size_t len = 0, cap = 0;
	int rc = 0;
	/* One read transaction: the version matches the rows. */
	bool own = !s->in_txn;
	if (own && (rc = run(s->stmt[S_BEGIN_READ])) != 0)
		return rc;
	rc = meta_get(s, "tenants_version", version);
	sqlite3_stmt *q = s->stmt[S_TENANTS_ALL];
	while (rc == 0) {
		int r = sqlite3_step(q);
		if (r == SQLITE_DONE)
			break;
		if (r != SQLITE_ROW) {
			rc = sq_err(r);
			break;
		}
		if (len == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			struct tl_tenant *na = realloc(arr, ncap * sizeof(*na));
			if (!na) {
				rc = -TL_ENOMEM;
				break;
			}
			arr = na;
			cap = ncap;
		}
		rc = read_tenant(q, &arr[len]);
		len++; /* counted even on failure: its settings are freed below */
	}
	sqlite3_reset(q);
	if (own) {
		int rc2 = run(s->stmt[rc == 0 ? S_COMMIT : S_ROLLBACK]);
		if (rc == 0)
			rc = rc2;
	}
	if (rc != 0) {
		tl_tenants_free(arr, len);
		return rc;
	}
	*out = arr;
	*n = len;
	return 0;
}

static int sq_tenants_version(struct tl_store *st, int64_t *version)
{
	return meta_get(sq(st), "tenants_version", version);
}

const struct tl_store_ops tl_store_sqlite_ops = {
    .scheme = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .tenant_add = sq_tenant_add,
    .tenant_set = sq_tenant_set,
    .tenants_load = sq_tenants_load,
    .tenants_version = sq_tenants_version,
    .begin = tl_sqlite_begin,
    .dedupe = tl_sqlite_dedupe,
    .uniques = tl_sqlite_uniques,
    .add_counts = tl_sqlite_add_counts,
    .offsets_set = tl_sqlite_offsets_set,
    .commit = tl_sqlite_commit,
    .rollback = tl_sqlite_rollback,
    .offset_get = tl_sqlite_offset_get,
    .prune_dedupe_step = tl_sqlite_prune_dedupe_step,
    .clear_source = tl_sqlite_clear_source,
    .campaigns = tl_sqlite_campaigns,
    .campaign = tl_sqlite_campaign,
    .series = tl_sqlite_series,
    .last_seq = tl_sqlite_last_seq,
};
