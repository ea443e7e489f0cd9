/* test_store_sqlite.c — the SQLite store backend and the tenant cache. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/clock.h"
#include "store/sqlite_int.h"
#include "store/store.h"
#include "store/tenants.h"

#include <ftw.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MIN_MS 60000LL
#define T0 1796320800000LL /* 2026-12-03T18:00:00Z */

struct fx {
	char dir[256];
	char uri[320];
	char path[300];
	struct tl_store *st;
};

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	const char *tmp = getenv("TMPDIR");
	snprintf(f->dir, sizeof(f->dir), "%s/tl_store_XXXXXX", tmp && *tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(f->dir));
	/* Nested directories that do not exist yet: open must create them. */
	snprintf(f->path, sizeof(f->path), "%s/a/b/tally.db", f->dir);
	snprintf(f->uri, sizeof(f->uri), "sqlite:%s", f->path);
	assert_int_equal(tl_store_open(f->uri, &f->st), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	tl_store_close(f->st);
	nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static struct tl_count_row row(const char *tenant, const char *campaign, const char *variant,
                               int64_t minute_ms)
{
	struct tl_count_row r;
	memset(&r, 0, sizeof(r));
	r.tenant = tl_str_of(tenant, strlen(tenant));
	r.campaign = tl_str_of(campaign, strlen(campaign));
	r.variant = tl_str_of(variant, strlen(variant));
	r.minute_ms = minute_ms;
	return r;
}

static struct tl_dedupe_key dk(const char *tenant, const char *id, int64_t ts)
{
	return (struct tl_dedupe_key){tl_str_of(tenant, strlen(tenant)), tl_str_of(id, strlen(id)), ts};
}

static struct tl_unique_key uk(const char *tenant, const char *campaign, uint8_t kind, const char *rcpt,
                               int64_t ts)
{
	struct tl_unique_key k = {tl_str_of(tenant, strlen(tenant)), tl_str_of(campaign, strlen(campaign)),
	                          kind, tl_str_of(rcpt, strlen(rcpt)), ts};
	return k;
}

/* Applies rows in one committed realtime transaction. */
static void apply_counts(struct tl_store *st, enum tl_source src, const struct tl_count_row *rows, size_t n)
{
	assert_int_equal(tl_store_begin(st, src), 0);
	assert_int_equal(tl_store_add_counts(st, rows, n), 0);
	assert_int_equal(tl_store_commit(st), 0);
}

static int64_t raw_int(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *q = NULL;
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &q, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(q), SQLITE_ROW);
	int64_t v = sqlite3_column_int64(q, 0);
	sqlite3_finalize(q);
	sqlite3_close(db);
	return v;
}

/* ---- open / migrations ------------------------------------------------- */

static void test_open_migrations_idempotent(void **state)
{
	struct fx *f = *state;
	/* A second and third open of the same file: nothing re-applied. */
	struct tl_store *b = NULL, *c = NULL;
	assert_int_equal(tl_store_open(f->uri, &b), 0);
	tl_store_close(b);
	assert_int_equal(tl_store_open(f->uri, &c), 0);
	assert_int_equal(raw_int(f->path, "SELECT COUNT(*) FROM schema_version"), 1);
	assert_int_equal(raw_int(f->path, "SELECT MAX(version) FROM schema_version"), 1);
	assert_int_equal(raw_int(f->path, "SELECT COUNT(*) FROM meta"), 2);
	tl_store_close(c);

	/* WAL mode is persistent in the file. */
	sqlite3 *db = NULL;
	sqlite3_stmt *q = NULL;
	assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(q), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(q, 0), "wal");
	sqlite3_finalize(q);
	sqlite3_close(db);

	/* A schema newer than this build is refused. */
	assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	assert_int_equal(
	    sqlite3_exec(db, "INSERT INTO schema_version VALUES(999,'future',0)", NULL, NULL, NULL),
	    SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(tl_store_open(f->uri, &b), -TL_EUNSUPPORTED);
	assert_null(b);

	assert_int_equal(tl_store_open("nosuch:/x", &b), -TL_EUNSUPPORTED);
	assert_int_equal(tl_store_open("sqlite:", &b), -TL_EINVAL);
	assert_int_equal(tl_store_open("no-scheme", &b), -TL_EINVAL);
}

/* ---- tenants ------------------------------------------------------------ */

static void test_tenants(void **state)
{
	struct fx *f = *state;
	int64_t v0 = -1, v1 = -1, v2 = -1, v3 = -1;
	assert_int_equal(tl_store_tenants_version(f->st, &v0), 0);

	struct tl_tenant a, b;
	char ka[TL_API_KEY_MAX], kb[TL_API_KEY_MAX];
	assert_int_equal(tl_store_tenant_add(f->st, "acme", &a, ka), 0);
	assert_int_equal(tl_store_tenants_version(f->st, &v1), 0);
	assert_true(v1 != v0);
	assert_int_equal(tl_store_tenant_add(f->st, "Beta_2-x", &b, kb), 0);

	/* Key format: "tk_" + 43 base64url characters; only its SHA-256 stored. */
	assert_int_equal(strlen(ka), 46);
	assert_memory_equal(ka, "tk_", 3);
	for (size_t i = 3; i < 46; i++)
		assert_non_null(
		    strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", ka[i]));
	unsigned char d[32];
	unsigned int dl = 0;
	assert_int_equal(EVP_Digest(ka, strlen(ka), d, &dl, EVP_sha256(), NULL), 1);
	assert_memory_equal(d, a.api_key_hash, 32);
	assert_string_not_equal(ka, kb);
	assert_memory_not_equal(a.link_key, b.link_key, TL_KEY_BYTES);
	assert_memory_not_equal(a.link_key, a.salt, TL_KEY_BYTES);
	assert_true(a.created_ms > 0);

	/* Duplicates and bad names. */
	char k[TL_API_KEY_MAX];
	assert_int_equal(tl_store_tenant_add(f->st, "acme", NULL, k), -TL_EEXIST);
	const char *bad[] = {"",
	                     "a b",
	                     "a/b",
	                     "a.b",
	                     "caf\xc3\xa9",
	                     "x;DROP TABLE tenants",
	                     "12345678901234567890123456789012345678901234567890123456789012345"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(tl_store_tenant_add(f->st, bad[i], NULL, k), -TL_EINVAL);
	/* 64 characters is the limit, inclusive. */
	assert_int_equal(
	    tl_store_tenant_add(f->st, "1234567890123456789012345678901234567890123456789012345678901234",
	                        NULL, NULL),
	    0);

	/* Settings: set, overwrite, remove; the version moves each time. */
	assert_int_equal(tl_store_tenant_set(f->st, "acme", "sendgrid_verify", "false"), 0);
	assert_int_equal(tl_store_tenant_set(f->st, "acme", "campaign_field", "cid"), 0);
	assert_int_equal(tl_store_tenant_set(f->st, "acme", "campaign_field", "camp"), 0);
	assert_int_equal(tl_store_tenant_set(f->st, "acme", "mailgun_signing_key", "k\"ey\\1"), 0);
	assert_int_equal(tl_store_tenants_version(f->st, &v2), 0);
	assert_true(v2 != v1);
	assert_int_equal(tl_store_tenant_set(f->st, "acme", "mailgun_signing_key", NULL), 0);
	assert_int_equal(tl_store_tenants_version(f->st, &v3), 0);
	assert_true(v3 != v2);
	assert_int_equal(tl_store_tenant_set(f->st, "nobody", "x", "y"), -TL_ENOTFOUND);
	assert_int_equal(tl_store_tenant_set(f->st, "acme", "", "y"), -TL_EINVAL);
	assert_int_equal(tl_store_tenant_set(f->st, "acme", "bad key", "y"), -TL_EINVAL);
	assert_int_equal(tl_store_tenant_set(f->st, "acme", "utf8", "\xff\xfe"), -TL_EINVAL);

	struct tl_tenant *all = NULL;
	size_t n = 0;
	int64_t lv = 0;
	assert_int_equal(tl_store_tenants_load(f->st, &all, &n, &lv), 0);
	assert_int_equal(n, 3);
	assert_int_equal(lv, v3);
	const struct tl_tenant *acme = NULL;
	for (size_t i = 0; i < n; i++)
		if (strcmp(all[i].name, "acme") == 0)
			acme = &all[i];
	assert_non_null(acme);
	assert_memory_equal(acme->api_key_hash, a.api_key_hash, 32);
	assert_memory_equal(acme->link_key, a.link_key, TL_KEY_BYTES);
	assert_memory_equal(acme->salt, a.salt, TL_KEY_BYTES);
	assert_int_equal(acme->created_ms, a.created_ms);
	assert_int_equal(acme->n_settings, 2);
	assert_string_equal(acme->settings[0].key, "campaign_field"); /* sorted */
	assert_string_equal(acme->settings[1].key, "sendgrid_verify");
	assert_string_equal(tl_tenant_setting(acme, "campaign_field", "d"), "camp");
	assert_string_equal(tl_tenant_setting(acme, "sendgrid_verify", "d"), "false");
	assert_string_equal(tl_tenant_setting(acme, "mailgun_signing_key", "none"), "none");
	assert_string_equal(tl_tenant_setting(acme, "zzz", "def"), "def");
	tl_tenants_free(all, n);
}

/* ---- dedupe / uniques --------------------------------------------------- */

static void test_dedupe(void **state)
{
	struct fx *f = *state;
	uint8_t nw[8];
	struct tl_dedupe_key k1[] = {dk("acme", "e1", T0), dk("acme", "e2", T0)};
	assert_int_equal(tl_store_dedupe(f->st, k1, 2, nw), -TL_EINVAL); /* outside a transaction */
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), 0);
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), -TL_EINVAL); /* nested */
	assert_int_equal(tl_store_dedupe(f->st, k1, 2, nw), 0);
	assert_int_equal(nw[0], 1);
	assert_int_equal(nw[1], 1);
	/* Within the same transaction: e1 seen, e3 new. */
	struct tl_dedupe_key k2[] = {dk("acme", "e1", T0), dk("acme", "e3", T0)};
	assert_int_equal(tl_store_dedupe(f->st, k2, 2, nw), 0);
	assert_int_equal(nw[0], 0);
	assert_int_equal(nw[1], 1);
	assert_int_equal(tl_store_commit(f->st), 0);

	/* Across transactions; another tenant's id space is separate; so is the batch source. */
	struct tl_dedupe_key k3[] = {dk("acme", "e1", T0), dk("acme", "e2", T0), dk("acme", "e3", T0),
	                             dk("acme", "e4", T0), dk("beta", "e1", T0)};
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), 0);
	assert_int_equal(tl_store_dedupe(f->st, k3, 5, nw), 0);
	assert_memory_equal(nw, ((uint8_t[]){0, 0, 0, 1, 1}), 5);
	assert_int_equal(tl_store_commit(f->st), 0);
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_BATCH), 0);
	assert_int_equal(tl_store_dedupe(f->st, k3, 1, nw), 0);
	assert_int_equal(nw[0], 1);
	assert_int_equal(tl_store_commit(f->st), 0);
}

static void test_uniques(void **state)
{
	struct fx *f = *state;
	uint8_t nw[8];
	struct tl_unique_key k1[] = {uk("acme", "c1", TL_U_OPEN, "r1", T0),
	                             uk("acme", "c1", TL_U_HUMAN_OPEN, "r1", T0),
	                             uk("acme", "c1", TL_U_OPEN, "r2", T0)};
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), 0);
	assert_int_equal(tl_store_uniques(f->st, k1, 3, nw), 0);
	assert_memory_equal(nw, ((uint8_t[]){1, 1, 1}), 3);
	struct tl_unique_key k2[] = {
	    uk("acme", "c1", TL_U_OPEN, "r1", T0 + 5), uk("acme", "c2", TL_U_OPEN, "r1", T0),
	    uk("beta", "c1", TL_U_OPEN, "r1", T0), uk("acme", "c1", TL_U_CLICK, "r1", T0)};
	assert_int_equal(tl_store_uniques(f->st, k2, 4, nw), 0);
	assert_memory_equal(nw, ((uint8_t[]){0, 1, 1, 1}), 4);
	assert_int_equal(tl_store_commit(f->st), 0);
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), 0);
	assert_int_equal(tl_store_uniques(f->st, k1, 3, nw), 0);
	assert_memory_equal(nw, ((uint8_t[]){0, 0, 0}), 3);
	assert_int_equal(tl_store_commit(f->st), 0);
}

/* ---- counters ----------------------------------------------------------- */

static void test_add_counts_upsert(void **state)
{
	struct fx *f = *state;
	struct tl_count_row r[3];
	r[0] = row("acme", "spring", "A", T0);
	r[0].delta[TL_M_SENT] = 10;
	r[0].delta[TL_M_OPENS] = 3;
	r[0].first_ts_ms = T0 + 100;
	r[0].last_ts_ms = T0 + 200;
	r[1] = row("acme", "spring", "A", T0 + MIN_MS);
	r[1].delta[TL_M_SENT] = 1;
	r[1].delta[TL_M_UNIQUE_HUMAN_CLICKS] = 7;
	r[1].first_ts_ms = T0 + MIN_MS + 5;
	r[1].last_ts_ms = T0 + MIN_MS + 6;
	r[2] = r[0]; /* same bucket twice in one call: summed */
	r[2].first_ts_ms = T0 + 50;
	r[2].last_ts_ms = T0 + 150;
	apply_counts(f->st, TL_SOURCE_REALTIME, r, 3);
	apply_counts(f->st, TL_SOURCE_REALTIME, r, 1); /* and again in a later transaction */

	struct tl_campaign_summary s;
	assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_REALTIME, "acme", "spring", NULL, &s), 0);
	assert_string_equal(s.campaign, "spring");
	assert_int_equal(s.counts[TL_M_SENT], 31);
	assert_int_equal(s.counts[TL_M_OPENS], 9);
	assert_int_equal(s.counts[TL_M_UNIQUE_HUMAN_CLICKS], 7);
	assert_int_equal(s.counts[TL_M_DELIVERED], 0);
	assert_int_equal(s.first_ms, T0 + 50);
	assert_int_equal(s.last_ms, T0 + MIN_MS + 6);
	assert_true(s.updated_ms > 0);
	int64_t seq = 0;
	assert_int_equal(tl_store_last_seq(f->st, &seq), 0);
	assert_int_equal(s.seq, seq);
	assert_int_equal(raw_int(f->path, "SELECT COUNT(*) FROM counts"), 2);
	assert_int_equal(raw_int(f->path, "SELECT sent FROM counts WHERE minute_ms=1796320800000"), 30);

	/* Every metric lands in its own column, in enum order. */
	struct tl_count_row all = row("acme", "cols", "", T0);
	for (int m = 0; m < TL_M__COUNT; m++)
		all.delta[m] = 100 + m;
	apply_counts(f->st, TL_SOURCE_REALTIME, &all, 1);
	assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_REALTIME, "acme", "cols", NULL, &s), 0);
	for (int m = 0; m < TL_M__COUNT; m++)
		assert_int_equal(s.counts[m], 100 + m);
	assert_int_equal(raw_int(f->path, "SELECT unique_human_clicks FROM counts WHERE campaign='cols'"),
	                 116);
	assert_int_equal(raw_int(f->path, "SELECT hard_bounced FROM totals WHERE campaign='cols'"), 104);
}

static void test_offsets(void **state)
{
	struct fx *f = *state;
	uint64_t next = 99;
	assert_int_equal(tl_store_offset_get(f->st, "aggregate", "metrics", 0, &next), 0);
	assert_int_equal(next, 0);
	struct tl_offset o[] = {{"metrics", 0, 100}, {"metrics", 3, 7}, {"delivery", 0, 55}};
	assert_int_equal(tl_store_offsets_set(f->st, "aggregate", o, 3),
	                 -TL_EINVAL); /* outside a transaction */
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), 0);
	assert_int_equal(tl_store_offsets_set(f->st, "aggregate", o, 3), 0);
	assert_int_equal(tl_store_commit(f->st), 0);
	assert_int_equal(tl_store_offset_get(f->st, "aggregate", "metrics", 0, &next), 0);
	assert_int_equal(next, 100);
	assert_int_equal(tl_store_offset_get(f->st, "aggregate", "metrics", 3, &next), 0);
	assert_int_equal(next, 7);
	assert_int_equal(tl_store_offset_get(f->st, "aggregate", "delivery", 0, &next), 0);
	assert_int_equal(next, 55);
	assert_int_equal(tl_store_offset_get(f->st, "other", "metrics", 0, &next), 0);
	assert_int_equal(next, 0);
	struct tl_offset o2 = {"metrics", 0, 5000000000ULL};
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), 0);
	assert_int_equal(tl_store_offsets_set(f->st, "aggregate", &o2, 1), 0);
	assert_int_equal(tl_store_commit(f->st), 0);
	assert_int_equal(tl_store_offset_get(f->st, "aggregate", "metrics", 0, &next), 0);
	assert_int_equal(next, 5000000000ULL);
}

/* Everything one batch writes: dedupe, uniques, counts, offsets. */
static void write_batch(struct tl_store *st, uint64_t offset)
{
	uint8_t nw[2];
	struct tl_dedupe_key d = dk("acme", "ev-1", T0);
	struct tl_unique_key u = uk("acme", "c", TL_U_OPEN, "r1", T0);
	struct tl_count_row r = row("acme", "c", "", T0);
	r.delta[TL_M_OPENS] = 1;
	struct tl_offset o = {"metrics", 1, offset};
	assert_int_equal(tl_store_dedupe(st, &d, 1, nw), 0);
	assert_int_equal(tl_store_uniques(st, &u, 1, nw), 0);
	assert_int_equal(tl_store_add_counts(st, &r, 1), 0);
	assert_int_equal(tl_store_offsets_set(st, "aggregate", &o, 1), 0);
}

static void assert_nothing_written(struct tl_store *st)
{
	struct tl_campaign_summary s;
	uint64_t next = 1;
	int64_t seq = -1;
	uint8_t nw[1];
	assert_int_equal(tl_store_campaign(st, TL_SOURCE_REALTIME, "acme", "c", NULL, &s), -TL_ENOTFOUND);
	assert_int_equal(tl_store_offset_get(st, "aggregate", "metrics", 1, &next), 0);
	assert_int_equal(next, 0);
	assert_int_equal(tl_store_last_seq(st, &seq), 0);
	assert_int_equal(seq, 0);
	struct tl_dedupe_key d = dk("acme", "ev-1", T0);
	struct tl_unique_key u = uk("acme", "c", TL_U_OPEN, "r1", T0);
	assert_int_equal(tl_store_begin(st, TL_SOURCE_REALTIME), 0);
	assert_int_equal(tl_store_dedupe(st, &d, 1, nw), 0);
	assert_int_equal(nw[0], 1);
	assert_int_equal(tl_store_uniques(st, &u, 1, nw), 0);
	assert_int_equal(nw[0], 1);
	tl_store_rollback(st);
}

static void test_rollback_leaves_nothing(void **state)
{
	struct fx *f = *state;
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), 0);
	write_batch(f->st, 42);
	tl_store_rollback(f->st);
	assert_int_equal(tl_store_commit(f->st), -TL_EINVAL); /* nothing open any more */
	assert_nothing_written(f->st);

	/* A failure inside the transaction: commit refuses and keeps nothing. */
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), 0);
	write_batch(f->st, 42);
	struct tl_count_row bad = row("acme", "c", "", T0);
	bad.campaign.n = 0x80000000u; /* larger than SQLite binds: fails before reading */
	assert_int_not_equal(tl_store_add_counts(f->st, &bad, 1), 0);
	assert_int_not_equal(tl_store_commit(f->st), 0);
	assert_nothing_written(f->st);
}

/* Child: begin, write a batch, then either die before commit or after it. */
static void child_batch(const char *uri, bool commit)
{
	struct tl_store *st = NULL;
	if (tl_store_open(uri, &st) != 0 || tl_store_begin(st, TL_SOURCE_REALTIME) != 0)
		_exit(3);
	write_batch(st, 42);
	if (commit && tl_store_commit(st) != 0)
		_exit(4);
	raise(SIGKILL);
	_exit(5);
}

static void run_child(const char *uri, bool commit)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		child_batch(uri, commit);
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGKILL);
}

static void test_commit_atomic_kill(void **state)
{
	struct fx *f = *state;
	/* Killed after writing everything but before COMMIT: neither. */
	run_child(f->uri, false);
	assert_nothing_written(f->st);
	/* Killed right after COMMIT returned: both counters and offsets. */
	run_child(f->uri, true);
	struct tl_campaign_summary s;
	uint64_t next = 0;
	assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_REALTIME, "acme", "c", NULL, &s), 0);
	assert_int_equal(s.counts[TL_M_OPENS], 1);
	assert_int_equal(tl_store_offset_get(f->st, "aggregate", "metrics", 1, &next), 0);
	assert_int_equal(next, 42);
}

/* ---- queries ------------------------------------------------------------ */

static void test_campaign_variants(void **state)
{
	struct fx *f = *state;
	struct tl_count_row r[4];
	r[0] = row("acme", "spring", "A", T0);
	r[0].delta[TL_M_DELIVERED] = 10;
	r[1] = row("acme", "spring", "B", T0 + MIN_MS);
	r[1].delta[TL_M_DELIVERED] = 20;
	r[2] = row("acme", "spring", "", T0 + 2 * MIN_MS);
	r[2].delta[TL_M_DELIVERED] = 4;
	r[3] = row("acme", "spring", "B", T0 + 3 * MIN_MS);
	r[3].delta[TL_M_DELIVERED] = 1;
	apply_counts(f->st, TL_SOURCE_REALTIME, r, 4);

	struct tl_campaign_summary s;
	assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_REALTIME, "acme", "spring", NULL, &s), 0);
	assert_int_equal(s.counts[TL_M_DELIVERED], 35);
	assert_int_equal(s.first_ms, T0);
	assert_int_equal(s.last_ms, T0 + 3 * MIN_MS);
	assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_REALTIME, "acme", "spring", "B", &s), 0);
	assert_int_equal(s.counts[TL_M_DELIVERED], 21);
	assert_int_equal(s.first_ms, T0 + MIN_MS);
	assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_REALTIME, "acme", "spring", "", &s), 0);
	assert_int_equal(s.counts[TL_M_DELIVERED], 4);
	assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_REALTIME, "acme", "spring", "Z", &s),
	                 -TL_ENOTFOUND);
	assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_REALTIME, "acme", "autumn", NULL, &s),
	                 -TL_ENOTFOUND);
	/* The batch tables are separate. */
	assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_BATCH, "acme", "spring", NULL, &s),
	                 -TL_ENOTFOUND);
}

struct points {
	int64_t t[64], v[64];
	size_t n;
	size_t stop_after; /* 0 = never */
};

static int on_point(void *arg, int64_t t, int64_t v)
{
	struct points *p = arg;
	if (p->n < 64) {
		p->t[p->n] = t;
		p->v[p->n] = v;
	}
	p->n++;
	return p->stop_after && p->n >= p->stop_after ? 7 : 0;
}

static void test_series(void **state)
{
	struct fx *f = *state;
	const int64_t H = 60 * MIN_MS, D = 24 * H;
	/* T0 is 18:00 on a day. Opens: 1 at 18:00 (A), 2 at 18:01 (B), 4 at 18:59 (A),
	 * 8 at 19:00 (A), 16 at 18:00 the next day (""). */
	struct tl_count_row r[5];
	const int64_t at[] = {T0, T0 + MIN_MS, T0 + 59 * MIN_MS, T0 + H, T0 + D};
	const char *var[] = {"A", "B", "A", "A", ""};
	for (int i = 0; i < 5; i++) {
		r[i] = row("acme", "spring", var[i], at[i]);
		r[i].delta[TL_M_OPENS] = 1LL << i;
		r[i].delta[TL_M_SENT] = 100;
	}
	apply_counts(f->st, TL_SOURCE_REALTIME, r + 3, 2); /* out of order on purpose */
	apply_counts(f->st, TL_SOURCE_REALTIME, r, 3);

	struct points p = {0};
	assert_int_equal(tl_store_series(f->st, TL_SOURCE_REALTIME, "acme", "spring", NULL, TL_M_OPENS, 60, 0,
	                                 INT64_MAX, on_point, &p),
	                 0);
	assert_int_equal(p.n, 5);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(p.t[i], at[i]);
		assert_int_equal(p.v[i], 1LL << i);
	}

	memset(&p, 0, sizeof(p));
	assert_int_equal(tl_store_series(f->st, TL_SOURCE_REALTIME, "acme", "spring", NULL, TL_M_OPENS, 3600,
	                                 0, INT64_MAX, on_point, &p),
	                 0);
	assert_int_equal(p.n, 3);
	assert_int_equal(p.t[0], T0);
	assert_int_equal(p.v[0], 7);
	assert_int_equal(p.t[1], T0 + H);
	assert_int_equal(p.v[1], 8);
	assert_int_equal(p.t[2], T0 + D);
	assert_int_equal(p.v[2], 16);

	memset(&p, 0, sizeof(p));
	assert_int_equal(tl_store_series(f->st, TL_SOURCE_REALTIME, "acme", "spring", NULL, TL_M_OPENS, 86400,
	                                 0, INT64_MAX, on_point, &p),
	                 0);
	assert_int_equal(p.n, 2);
	assert_int_equal(p.t[0], T0 - 18 * H); /* midnight UTC */
	assert_int_equal(p.v[0], 15);
	assert_int_equal(p.t[1], T0 - 18 * H + D);
	assert_int_equal(p.v[1], 16);

	/* [from, to): 18:01 included, 19:00 excluded. */
	memset(&p, 0, sizeof(p));
	assert_int_equal(tl_store_series(f->st, TL_SOURCE_REALTIME, "acme", "spring", NULL, TL_M_OPENS, 60,
	                                 T0 + MIN_MS, T0 + H, on_point, &p),
	                 0);
	assert_int_equal(p.n, 2);
	assert_int_equal(p.v[0], 2);
	assert_int_equal(p.v[1], 4);

	/* Variant filter. */
	memset(&p, 0, sizeof(p));
	assert_int_equal(tl_store_series(f->st, TL_SOURCE_REALTIME, "acme", "spring", "A", TL_M_OPENS, 3600,
	                                 0, INT64_MAX, on_point, &p),
	                 0);
	assert_int_equal(p.n, 2);
	assert_int_equal(p.v[0], 5);
	assert_int_equal(p.v[1], 8);
	memset(&p, 0, sizeof(p));
	assert_int_equal(tl_store_series(f->st, TL_SOURCE_REALTIME, "acme", "spring", "", TL_M_OPENS, 60, 0,
	                                 INT64_MAX, on_point, &p),
	                 0);
	assert_int_equal(p.n, 1);
	assert_int_equal(p.v[0], 16);

	/* Another metric, a stop from the callback, bad arguments. */
	memset(&p, 0, sizeof(p));
	p.stop_after = 2;
	assert_int_equal(tl_store_series(f->st, TL_SOURCE_REALTIME, "acme", "spring", NULL, TL_M_SENT, 60, 0,
	                                 INT64_MAX, on_point, &p),
	                 7);
	assert_int_equal(p.n, 2);
	assert_int_equal(p.v[0], 100);
	assert_int_equal(tl_store_series(f->st, TL_SOURCE_REALTIME, "acme", "spring", NULL, TL_M__COUNT, 60,
	                                 0, INT64_MAX, on_point, &p),
	                 -TL_EINVAL);
	assert_int_equal(tl_store_series(f->st, TL_SOURCE_REALTIME, "acme", "spring", NULL, TL_M_SENT, 0, 0,
	                                 INT64_MAX, on_point, &p),
	                 -TL_EINVAL);
}

struct clist {
	char name[8][32];
	int64_t sent[8], seq[8];
	size_t n;
};

static int on_campaign(void *arg, const struct tl_campaign_summary *c)
{
	struct clist *l = arg;
	if (l->n < 8) {
		snprintf(l->name[l->n], sizeof(l->name[0]), "%s", c->campaign);
		l->sent[l->n] = c->counts[TL_M_SENT];
		l->seq[l->n] = c->seq;
	}
	l->n++;
	return 0;
}

static int stop_first(void *arg, const struct tl_campaign_summary *c)
{
	(void)c;
	(*(int *)arg)++;
	return 42;
}

static void test_campaigns_list(void **state)
{
	struct fx *f = *state;
	struct tl_count_row r[3];
	r[0] = row("acme", "zeta", "A", T0);
	r[0].delta[TL_M_SENT] = 1;
	r[1] = row("acme", "alpha", "", T0);
	r[1].delta[TL_M_SENT] = 2;
	r[2] = row("acme", "zeta", "B", T0);
	r[2].delta[TL_M_SENT] = 4;
	apply_counts(f->st, TL_SOURCE_REALTIME, r, 3);
	int64_t s1 = 0, s2 = 0, s3 = 0;
	assert_int_equal(tl_store_last_seq(f->st, &s1), 0);
	assert_int_equal(s1, 1);

	/* A commit without counter changes does not move seq. */
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), 0);
	assert_int_equal(tl_store_commit(f->st), 0);
	assert_int_equal(tl_store_last_seq(f->st, &s2), 0);
	assert_int_equal(s2, s1);

	struct tl_count_row m = row("acme", "middle", "", T0);
	m.delta[TL_M_SENT] = 8;
	apply_counts(f->st, TL_SOURCE_REALTIME, &m, 1);
	assert_int_equal(tl_store_last_seq(f->st, &s3), 0);
	assert_int_equal(s3, s1 + 1);

	struct clist l = {0};
	assert_int_equal(tl_store_campaigns(f->st, TL_SOURCE_REALTIME, "acme", 0, on_campaign, &l), 0);
	assert_int_equal(l.n, 3);
	assert_string_equal(l.name[0], "alpha");
	assert_string_equal(l.name[1], "middle");
	assert_string_equal(l.name[2], "zeta");
	assert_int_equal(l.sent[0], 2);
	assert_int_equal(l.sent[1], 8);
	assert_int_equal(l.sent[2], 5); /* variants summed */
	assert_int_equal(l.seq[0], s1);
	assert_int_equal(l.seq[1], s3);

	memset(&l, 0, sizeof(l));
	assert_int_equal(tl_store_campaigns(f->st, TL_SOURCE_REALTIME, "acme", s1, on_campaign, &l), 0);
	assert_int_equal(l.n, 1);
	assert_string_equal(l.name[0], "middle");
	memset(&l, 0, sizeof(l));
	assert_int_equal(tl_store_campaigns(f->st, TL_SOURCE_REALTIME, "acme", s3, on_campaign, &l), 0);
	assert_int_equal(l.n, 0);
	memset(&l, 0, sizeof(l));
	assert_int_equal(tl_store_campaigns(f->st, TL_SOURCE_BATCH, "acme", 0, on_campaign, &l), 0);
	assert_int_equal(l.n, 0);

	int calls = 0;
	assert_int_equal(tl_store_campaigns(f->st, TL_SOURCE_REALTIME, "acme", 0, stop_first, &calls), 42);
	assert_int_equal(calls, 1);
}

static void test_tenant_isolation(void **state)
{
	struct fx *f = *state;
	uint8_t nw[1];
	struct tl_count_row r = row("acme", "secret", "A", T0);
	r.delta[TL_M_CLICKS] = 5;
	struct tl_dedupe_key d = dk("acme", "ev", T0);
	struct tl_unique_key u = uk("acme", "secret", TL_U_CLICK, "r", T0);
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), 0);
	assert_int_equal(tl_store_add_counts(f->st, &r, 1), 0);
	assert_int_equal(tl_store_dedupe(f->st, &d, 1, nw), 0);
	assert_int_equal(tl_store_uniques(f->st, &u, 1, nw), 0);
	assert_int_equal(tl_store_commit(f->st), 0);

	struct clist l = {0};
	struct points p = {0};
	struct tl_campaign_summary s;
	assert_int_equal(tl_store_campaigns(f->st, TL_SOURCE_REALTIME, "beta", 0, on_campaign, &l), 0);
	assert_int_equal(l.n, 0);
	assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_REALTIME, "beta", "secret", NULL, &s),
	                 -TL_ENOTFOUND);
	assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_REALTIME, "beta", "secret", "A", &s),
	                 -TL_ENOTFOUND);
	assert_int_equal(tl_store_series(f->st, TL_SOURCE_REALTIME, "beta", "secret", NULL, TL_M_CLICKS, 60,
	                                 0, INT64_MAX, on_point, &p),
	                 0);
	assert_int_equal(p.n, 0);
	/* Tenant names are compared exactly (no prefix or case folding). */
	assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_REALTIME, "ACME", "secret", NULL, &s),
	                 -TL_ENOTFOUND);
	assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_REALTIME, "acm", "secret", NULL, &s),
	                 -TL_ENOTFOUND);
	struct tl_dedupe_key db = dk("beta", "ev", T0);
	struct tl_unique_key ub = uk("beta", "secret", TL_U_CLICK, "r", T0);
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), 0);
	assert_int_equal(tl_store_dedupe(f->st, &db, 1, nw), 0);
	assert_int_equal(nw[0], 1);
	assert_int_equal(tl_store_uniques(f->st, &ub, 1, nw), 0);
	assert_int_equal(nw[0], 1);
	tl_store_rollback(f->st);
	/* And acme still sees its own. */
	assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_REALTIME, "acme", "secret", NULL, &s), 0);
	assert_int_equal(s.counts[TL_M_CLICKS], 5);
}

static void test_prune_dedupe(void **state)
{
	struct fx *f = *state;
	/* More rows than one prune chunk, so the chunk loop runs more than once. */
	enum { N = 45000 };
	struct tl_dedupe_key *k = calloc(N, sizeof(*k));
	char(*ids)[16] = calloc(N, 16);
	uint8_t *nw = calloc(N, 1);
	assert_non_null(k);
	assert_non_null(ids);
	assert_non_null(nw);
	for (int i = 0; i < N; i++) {
		int len = snprintf(ids[i], 16, "id%d", i);
		k[i] = (struct tl_dedupe_key){TL_STR("acme"), tl_str_of(ids[i], (size_t)len),
		                              i < N - 2 ? 1000 : 3000};
	}
	k[N - 2].ts_ms = 2000;
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), 0);
	assert_int_equal(tl_store_dedupe(f->st, k, N, nw), 0);
	assert_int_equal(tl_store_commit(f->st), 0);
	/* Other tenants and the batch source are pruned by the same rule. */
	struct tl_dedupe_key other[] = {dk("beta", "old", 10), dk("beta", "new", 9000), dk("0", "old", 1),
	                                dk("zzz", "new", 2500)};
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), 0);
	assert_int_equal(tl_store_dedupe(f->st, other, 4, nw), 0);
	assert_int_equal(tl_store_commit(f->st), 0);
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_BATCH), 0);
	assert_int_equal(tl_store_dedupe(f->st, other, 4, nw), 0);
	assert_int_equal(tl_store_commit(f->st), 0);
	assert_int_equal(raw_int(f->path, "SELECT COUNT(*) FROM dedupe"), N + 8);

	assert_int_equal(tl_store_prune_dedupe(f->st, 2500), 0);
	assert_int_equal(raw_int(f->path, "SELECT COUNT(*) FROM dedupe"), 1 + 4);
	assert_int_equal(raw_int(f->path, "SELECT COUNT(*) FROM dedupe WHERE ts_ms<2500"), 0);
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), 0);
	assert_int_equal(tl_store_dedupe(f->st, k + N - 3, 3, nw), 0);
	assert_memory_equal(nw, ((uint8_t[]){1, 1, 0}), 3); /* 1000, 2000 pruned; 3000 kept */
	assert_int_equal(tl_store_dedupe(f->st, other, 4, nw), 0);
	assert_memory_equal(nw, ((uint8_t[]){1, 0, 1, 0}), 4);
	tl_store_rollback(f->st);
	/* Inside a batch transaction too (part of it, undone by a rollback). */
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), 0);
	assert_int_equal(tl_store_prune_dedupe(f->st, INT64_MAX), 0);
	assert_int_equal(tl_store_dedupe(f->st, other + 1, 1, nw), 0);
	assert_int_equal(nw[0], 1);
	tl_store_rollback(f->st);
	assert_int_equal(raw_int(f->path, "SELECT COUNT(*) FROM dedupe"), 1 + 4);
	free(k);
	free(ids);
	free(nw);
}

static void test_clear_source(void **state)
{
	struct fx *f = *state;
	const int64_t D = 86400000LL, day1 = T0 - 18 * 3600000LL, day2 = day1 + D;
	uint8_t nw[4];
	for (int src = TL_SOURCE_REALTIME; src <= TL_SOURCE_BATCH; src++) {
		struct tl_count_row r[3];
		r[0] = row("acme", "c", "A", day1 + MIN_MS);
		r[0].delta[TL_M_SENT] = 1;
		r[1] = row("acme", "c", "A", day2 + MIN_MS);
		r[1].delta[TL_M_SENT] = 2;
		r[2] = row("acme", "only-day1", "", day1 + 5 * MIN_MS);
		r[2].delta[TL_M_SENT] = 4;
		struct tl_dedupe_key d[] = {dk("acme", "e1", day1 + 1), dk("acme", "e2", day2 + 1)};
		struct tl_unique_key u[] = {uk("acme", "c", TL_U_OPEN, "r1", day1 + 1),
		                            uk("acme", "c", TL_U_OPEN, "r2", day2 + 1)};
		assert_int_equal(tl_store_begin(f->st, (enum tl_source)src), 0);
		assert_int_equal(tl_store_add_counts(f->st, r, 3), 0);
		assert_int_equal(tl_store_dedupe(f->st, d, 2, nw), 0);
		assert_int_equal(tl_store_uniques(f->st, u, 2, nw), 0);
		assert_int_equal(tl_store_commit(f->st), 0);
	}
	assert_int_equal(tl_store_clear_source(f->st, TL_SOURCE_BATCH, day1, day2), -TL_EINVAL); /* no txn */
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_BATCH), 0);
	assert_int_equal(tl_store_clear_source(f->st, TL_SOURCE_BATCH, day1, day2), 0);
	assert_int_equal(tl_store_commit(f->st), 0);

	struct tl_campaign_summary s;
	assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_BATCH, "acme", "c", NULL, &s), 0);
	assert_int_equal(s.counts[TL_M_SENT], 2);
	assert_int_equal(s.first_ms, day2 + MIN_MS);
	assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_BATCH, "acme", "c", "A", &s), 0);
	assert_int_equal(s.counts[TL_M_SENT], 2);
	assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_BATCH, "acme", "only-day1", NULL, &s),
	                 -TL_ENOTFOUND);
	struct clist l = {0};
	assert_int_equal(tl_store_campaigns(f->st, TL_SOURCE_BATCH, "acme", 0, on_campaign, &l), 0);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.sent[0], 2);
	struct points p = {0};
	assert_int_equal(tl_store_series(f->st, TL_SOURCE_BATCH, "acme", "c", NULL, TL_M_SENT, 60, 0,
	                                 INT64_MAX, on_point, &p),
	                 0);
	assert_int_equal(p.n, 1);
	assert_int_equal(p.t[0], day2 + MIN_MS);

	/* The realtime source is untouched. */
	assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_REALTIME, "acme", "c", NULL, &s), 0);
	assert_int_equal(s.counts[TL_M_SENT], 3);
	assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_REALTIME, "acme", "only-day1", NULL, &s), 0);

	/* Day 1's dedupe ids and unique members are gone from batch only. */
	struct tl_dedupe_key d[] = {dk("acme", "e1", day1 + 1), dk("acme", "e2", day2 + 1)};
	struct tl_unique_key u[] = {uk("acme", "c", TL_U_OPEN, "r1", day1 + 1),
	                            uk("acme", "c", TL_U_OPEN, "r2", day2 + 1)};
	for (int src = TL_SOURCE_REALTIME; src <= TL_SOURCE_BATCH; src++) {
		uint8_t want = src == TL_SOURCE_BATCH;
		assert_int_equal(tl_store_begin(f->st, (enum tl_source)src), 0);
		assert_int_equal(tl_store_dedupe(f->st, d, 2, nw), 0);
		assert_int_equal(nw[0], want);
		assert_int_equal(nw[1], 0);
		assert_int_equal(tl_store_uniques(f->st, u, 2, nw), 0);
		assert_int_equal(nw[0], want);
		assert_int_equal(nw[1], 0);
		tl_store_rollback(f->st);
	}
}

/* ---- tenant cache ------------------------------------------------------- */

static void test_tenant_cache(void **state)
{
	struct fx *f = *state;
	char ka[TL_API_KEY_MAX], kb[TL_API_KEY_MAX];
	assert_int_equal(tl_store_tenant_add(f->st, "acme", NULL, ka), 0);
	assert_int_equal(tl_store_tenant_add(f->st, "beta", NULL, kb), 0);

	struct tl_tenant_cache *c = NULL;
	assert_int_equal(tl_tenant_cache_open(f->uri, 0, &c), 0);
	const struct tl_tenant *t = tl_tenant_cache_by_name(c, "acme", 4);
	assert_non_null(t);
	assert_string_equal(t->name, "acme");
	assert_ptr_equal(tl_tenant_cache_by_name(c, "acmeXYZ", 4), t); /* len bytes only */
	assert_null(tl_tenant_cache_by_name(c, "acm", 3));
	assert_null(tl_tenant_cache_by_name(c, "acmee", 5));
	assert_null(tl_tenant_cache_by_name(c, "gamma", 5));
	assert_null(tl_tenant_cache_by_name(c, "", 0));

	assert_ptr_equal(tl_tenant_cache_by_api_key(c, ka, strlen(ka)), t);
	const struct tl_tenant *tb = tl_tenant_cache_by_api_key(c, kb, strlen(kb));
	assert_non_null(tb);
	assert_string_equal(tb->name, "beta");
	char wrong[TL_API_KEY_MAX];
	memcpy(wrong, ka, strlen(ka) + 1);
	wrong[10] = wrong[10] == 'A' ? 'B' : 'A';
	assert_null(tl_tenant_cache_by_api_key(c, wrong, strlen(wrong)));
	assert_null(tl_tenant_cache_by_api_key(c, ka, strlen(ka) - 1));
	assert_null(tl_tenant_cache_by_api_key(c, "", 0));

	char hdr[160];
	snprintf(hdr, sizeof(hdr), "Bearer %s", ka);
	assert_ptr_equal(tl_tenant_cache_by_bearer(c, hdr, strlen(hdr)), t);
	snprintf(hdr, sizeof(hdr), "bEaReR    %s", ka);
	assert_ptr_equal(tl_tenant_cache_by_bearer(c, hdr, strlen(hdr)), t);
	snprintf(hdr, sizeof(hdr), "Bearer %s", kb);
	assert_ptr_equal(tl_tenant_cache_by_bearer(c, hdr, strlen(hdr)), tb);
	snprintf(hdr, sizeof(hdr), "Bearer%s", ka);
	assert_null(tl_tenant_cache_by_bearer(c, hdr, strlen(hdr)));
	snprintf(hdr, sizeof(hdr), "Basic %s", ka);
	assert_null(tl_tenant_cache_by_bearer(c, hdr, strlen(hdr)));
	snprintf(hdr, sizeof(hdr), "Bearer %s extra", ka);
	assert_null(tl_tenant_cache_by_bearer(c, hdr, strlen(hdr)));
	snprintf(hdr, sizeof(hdr), "Bearer %s", wrong);
	assert_null(tl_tenant_cache_by_bearer(c, hdr, strlen(hdr)));
	assert_null(tl_tenant_cache_by_bearer(c, "Bearer ", 7));
	assert_null(tl_tenant_cache_by_bearer(c, "Bearer", 6));
	assert_null(tl_tenant_cache_by_bearer(c, "", 0));

	/* A setting and a tenant added through another connection show up on refresh. */
	assert_null(tl_tenant_setting(t, "campaign_field", NULL));
	struct tl_store *other = NULL;
	assert_int_equal(tl_store_open(f->uri, &other), 0);
	assert_int_equal(tl_store_tenant_set(other, "acme", "campaign_field", "cid"), 0);
	char kg[TL_API_KEY_MAX];
	assert_int_equal(tl_store_tenant_add(other, "gamma", NULL, kg), 0);
	assert_int_equal(tl_tenant_cache_refresh(c), 0);
	t = tl_tenant_cache_by_name(c, "acme", 4);
	assert_non_null(t);
	assert_string_equal(tl_tenant_setting(t, "campaign_field", NULL), "cid");
	assert_non_null(tl_tenant_cache_by_name(c, "gamma", 5));
	assert_string_equal(tl_tenant_cache_by_api_key(c, kg, strlen(kg))->name, "gamma");
	assert_ptr_equal(tl_tenant_cache_by_api_key(c, ka, strlen(ka)), t);
	tl_tenant_cache_close(c);

	/* With a long refresh interval the cache keeps what it has. */
	const int64_t opened = tl_now_ms();
	assert_int_equal(tl_tenant_cache_open(f->uri, 3600 * 1000, &c), 0);
	assert_int_equal(tl_store_tenant_set(other, "acme", "campaign_field", "changed"), 0);
	assert_int_equal(tl_tenant_cache_refresh(c), 0);
	t = tl_tenant_cache_by_name(c, "acme", 4);
	assert_string_equal(tl_tenant_setting(t, "campaign_field", NULL), "cid");
	/* ... unless asked about something made after a change: a hit that
	 * arrived after a tenant was added finds it (tl_tenant_cache_check_since) */
	char kd[TL_API_KEY_MAX];
	assert_int_equal(tl_store_tenant_add(other, "delta", NULL, kd), 0);
	assert_int_equal(tl_tenant_cache_check_since(c, opened), 0); /* checked since: no query */
	assert_null(tl_tenant_cache_by_name(c, "delta", 5));
	usleep(2000);
	assert_int_equal(tl_tenant_cache_check_since(c, tl_now_ms()), 0);
	assert_non_null(tl_tenant_cache_by_name(c, "delta", 5));
	assert_string_equal(tl_tenant_setting(tl_tenant_cache_by_name(c, "acme", 4), "campaign_field", NULL),
	                    "changed");
	tl_tenant_cache_close(c);
	tl_store_close(other);
}

/* ---- WAL checkpoints off the writer's thread (sqlite_ckpt.c) ------------- */

static int64_t file_size(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0 ? (int64_t)sb.st_size : -1;
}

/* Batches that dirty pages all over a large unique set: the WAL is copied
 * back into the database file by the checkpointer while the store is open
 * (SQLite's own checkpoint is off on this connection), it stays bounded, and
 * every member is there. */
static void test_wal_checkpointed(void **state)
{
	struct fx *f = *state;
	enum { BATCHES = 60, PER = 4000 };
	struct tl_unique_key *k = calloc(PER, sizeof(*k));
	char(*r)[40] = calloc(PER, 40);
	uint8_t *nw = calloc(PER, 1);
	assert_true(k && r && nw);
	char wal[330];
	snprintf(wal, sizeof wal, "%s-wal", f->path);
	uint64_t x = 88172645463325252ULL;
	int64_t wal_max = 0;
	for (int b = 0; b < BATCHES; b++) {
		for (int i = 0; i < PER; i++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* random recipients: pages all over */
			int len = snprintf(r[i], 40, "%016llx%016llx", (unsigned long long)x,
			                   (unsigned long long)~x);
			k[i] = (struct tl_unique_key){TL_STR("acme"), TL_STR("c"), TL_U_OPEN,
			                              tl_str_of(r[i], (size_t)len), T0};
		}
		assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), 0);
		assert_int_equal(tl_store_uniques(f->st, k, PER, nw), 0);
		assert_int_equal(tl_store_commit(f->st), 0);
		int64_t w = file_size(wal);
		if (w > wal_max)
			wal_max = w;
	}
	struct sq_store *s = (struct sq_store *)f->st;
	/* the checkpointer runs on its own: wait (bounded) for it to copy pages back */
	int64_t deadline = tl_mono_ms() + 20000;
	while ((tl_sqlite_ckpt_runs(s->ckpt) == 0 || file_size(f->path) < 4 * 1024 * 1024) &&
	       tl_mono_ms() < deadline) {
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	print_message("WAL checkpointer: %llu runs, db %lld bytes, WAL at most %lld bytes\n",
	              (unsigned long long)tl_sqlite_ckpt_runs(s->ckpt), (long long)file_size(f->path),
	              (long long)wal_max);
	assert_true(tl_sqlite_ckpt_runs(s->ckpt) > 0);
	assert_true(file_size(f->path) >= 4 * 1024 * 1024); /* pages reached the database file */
	assert_true(wal_max < 128LL * 1024 * 1024);         /* started over before the writer's hard limit */
	assert_int_equal(raw_int(f->path, "SELECT COUNT(*) FROM uniques"), BATCHES * PER);
	free(k);
	free(r);
	free(nw);
}

/* ---- measurement (printed, not asserted) -------------------------------- */

static void test_measure_apply(void **state)
{
	struct fx *f = *state;
	enum { NROWS = 10000, NKEYS = 20000, ROUNDS = 5 };
	struct tl_count_row *rows = calloc(NROWS, sizeof(*rows));
	struct tl_dedupe_key *keys = calloc(NKEYS, sizeof(*keys));
	char(*camp)[24] = calloc(NROWS, 24);
	char(*ids)[40] = calloc((size_t)NKEYS * ROUNDS, 40);
	uint8_t *nw = calloc(NKEYS, 1);
	assert_true(rows && keys && camp && ids && nw);
	double best = 0, total_s = 0;
	for (int round = 0; round < ROUNDS; round++) {
		/* 1,000 campaigns × 2 variants × 5 minutes; minutes move on each round. */
		for (int i = 0; i < NROWS; i++) {
			int len = snprintf(camp[i], 24, "campaign-%04d", i % 1000);
			rows[i] =
			    row("acme", "", (i / 1000) % 2 ? "B" : "A", T0 + (round * 5 + i / 2000) * MIN_MS);
			rows[i].campaign = tl_str_of(camp[i], (size_t)len);
			rows[i].delta[TL_M_SENT] = 3;
			rows[i].delta[TL_M_OPENS] = 1;
		}
		for (int i = 0; i < NKEYS; i++) {
			char *id = ids[(size_t)round * NKEYS + (size_t)i];
			int len = snprintf(id, 40, "evt-%08x-%06d-%d", (unsigned)(i * 2654435761u), i, round);
			keys[i] = (struct tl_dedupe_key){TL_STR("acme"), tl_str_of(id, (size_t)len), T0 + i};
		}
		int64_t t0 = tl_mono_ns();
		assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), 0);
		assert_int_equal(tl_store_dedupe(f->st, keys, NKEYS, nw), 0);
		assert_int_equal(tl_store_add_counts(f->st, rows, NROWS), 0);
		struct tl_offset o = {"metrics", 0, (uint64_t)round};
		assert_int_equal(tl_store_offsets_set(f->st, "aggregate", &o, 1), 0);
		assert_int_equal(tl_store_commit(f->st), 0);
		double s = (double)(tl_mono_ns() - t0) / 1e9;
		total_s += s;
		double rate = (NROWS + NKEYS) / s;
		if (rate > best)
			best = rate;
		for (int i = 0; i < NKEYS; i++)
			assert_int_equal(nw[i], 1);
	}
	print_message("apply 10k count rows + 20k dedupe keys: mean %.1f ms/batch, %.0f rows/s (best %.0f)\n",
	              total_s * 1000 / ROUNDS, (NROWS + NKEYS) * ROUNDS / total_s, best);

	/* Summary query over 1,000 campaigns of this tenant. */
	struct tl_campaign_summary s;
	int64_t t0 = tl_mono_ns();
	for (int i = 0; i < 1000; i++)
		assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_REALTIME, "acme", camp[i], NULL, &s), 0);
	print_message("campaign summary: %.1f us/query\n", (double)(tl_mono_ns() - t0) / 1e3 / 1000);
	assert_int_equal(s.counts[TL_M_SENT], 3 * 10 * ROUNDS);
	free(rows);
	free(keys);
	free(camp);
	free(ids);
	free(nw);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_open_migrations_idempotent, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tenants, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dedupe, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_uniques, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_add_counts_upsert, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_offsets, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rollback_leaves_nothing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_commit_atomic_kill, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_campaign_variants, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_series, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_campaigns_list, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tenant_isolation, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_prune_dedupe, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_clear_source, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tenant_cache, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_wal_checkpointed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_measure_apply, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
