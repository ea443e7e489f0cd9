/* store_contract.c — backend-neutral store tests (store_contract.h).
 *
 * The behaviours are those of store.h: migrations, tenants, the batch
 * transaction (dedupe, uniques, counter upserts, offsets, atomic commit and
 * rollback), the per-tenant queries, pruning and the batch re-run. Checks
 * that need to look under the interface use the backend's raw SQL hooks with
 * table and column names both schemas share. */
#include "store_contract.h"

#include "core/clock.h"
#include "store/store.h"
#include "store/tenants.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIN_MS 60000LL
#define T0 1796320800000LL /* 2026-12-03T18:00:00Z */

struct fx {
	const struct store_contract_backend *b;
	char uri[512];
	struct tl_store *st;
};

static int setup(void **state)
{
	const struct store_contract_backend *b = *state;
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->b = b;
	assert_int_equal(b->fresh(b->arg, f->uri, sizeof(f->uri)), 0);
	assert_int_equal(tl_store_open(f->uri, &f->st), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	tl_store_close(f->st);
	f->b->drop(f->b->arg, f->uri);
	free(f);
	return 0;
}

static int64_t raw_int(struct fx *f, const char *sql)
{
	return f->b->raw_int(f->b->arg, f->uri, sql);
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

/* Applies rows in one committed transaction. */
static void apply_counts(struct tl_store *st, enum tl_source src, const struct tl_count_row *rows, size_t n)
{
	assert_int_equal(tl_store_begin(st, src), 0);
	assert_int_equal(tl_store_add_counts(st, rows, n), 0);
	assert_int_equal(tl_store_commit(st), 0);
}

/* ---- open / migrations ------------------------------------------------- */

static void test_open_migrations_idempotent(void **state)
{
	struct fx *f = *state;
	/* A second and third open of the same database: nothing re-applied. */
	struct tl_store *b = NULL, *c = NULL;
	assert_int_equal(tl_store_open(f->uri, &b), 0);
	tl_store_close(b);
	assert_int_equal(tl_store_open(f->uri, &c), 0);
	int64_t nver = raw_int(f, "SELECT COUNT(*) FROM schema_version");
	assert_true(nver >= 1);
	assert_int_equal(raw_int(f, "SELECT MAX(version) FROM schema_version"), nver); /* 1..n, each once */
	assert_int_equal(raw_int(f, "SELECT MIN(version) FROM schema_version"), 1);
	assert_int_equal(raw_int(f, "SELECT COUNT(*) FROM meta"), 2);
	tl_store_close(c);

	/* A schema newer than this build is refused. */
	assert_int_equal(
	    f->b->raw_exec(f->b->arg, f->uri, "INSERT INTO schema_version VALUES(999,'future',0)"), 0);
	b = (struct tl_store *)1;
	assert_int_equal(tl_store_open(f->uri, &b), -TL_EUNSUPPORTED);
	assert_null(b);

	assert_int_equal(tl_store_open("nosuch:/x", &b), -TL_EUNSUPPORTED);
	assert_int_equal(tl_store_open("no-scheme", &b), -TL_EINVAL);
}

struct opener {
	const char *uri;
	int rc;
};

static void *open_thread(void *arg)
{
	struct opener *o = arg;
	struct tl_store *st = NULL;
	o->rc = tl_store_open(o->uri, &st);
	tl_store_close(st);
	return NULL;
}

/* Several processes starting at once on an empty database: every one
 * succeeds and the migrations are applied once. */
static void test_concurrent_open(void **state)
{
	const struct store_contract_backend *b = *state;
	char uri[512];
	assert_int_equal(b->fresh(b->arg, uri, sizeof(uri)), 0);
	enum { N = 4 };
	pthread_t th[N];
	struct opener o[N];
	for (int i = 0; i < N; i++) {
		o[i] = (struct opener){uri, 1};
		assert_int_equal(pthread_create(&th[i], NULL, open_thread, &o[i]), 0);
	}
	for (int i = 0; i < N; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(o[i].rc, 0);
	}
	int64_t nver = b->raw_int(b->arg, uri, "SELECT COUNT(*) FROM schema_version");
	assert_int_equal(b->raw_int(b->arg, uri, "SELECT MAX(version) FROM schema_version"), nver);
	assert_int_equal(b->raw_int(b->arg, uri, "SELECT COUNT(*) FROM meta"), 2);
	b->drop(b->arg, uri);
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
	unsigned char d[32];
	unsigned int dl = 0;
	assert_int_equal(EVP_Digest(ka, strlen(ka), d, &dl, EVP_sha256(), NULL), 1);
	assert_memory_equal(d, a.api_key_hash, 32);
	assert_string_not_equal(ka, kb);
	assert_memory_not_equal(a.link_key, b.link_key, TL_KEY_BYTES);
	assert_true(a.created_ms > 0);

	/* Duplicates and bad names. */
	char k[TL_API_KEY_MAX];
	assert_int_equal(tl_store_tenant_add(f->st, "acme", NULL, k), -TL_EEXIST);
	const char *bad[] = {"",
	                     "a b",
	                     "a/b",
	                     "caf\xc3\xa9",
	                     "x';DROP TABLE tenants;--",
	                     "12345678901234567890123456789012345678901234567890123456789012345"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(tl_store_tenant_add(f->st, bad[i], NULL, k), -TL_EINVAL);
	assert_int_equal(
	    tl_store_tenant_add(f->st, "1234567890123456789012345678901234567890123456789012345678901234",
	                        NULL, NULL),
	    0);

	/* Settings: set, overwrite, remove; the version moves each time. */
	assert_int_equal(tl_store_tenant_set(f->st, "acme", "sendgrid_verify", "false"), 0);
	assert_int_equal(tl_store_tenant_set(f->st, "acme", "campaign_field", "cid"), 0);
	assert_int_equal(tl_store_tenant_set(f->st, "acme", "campaign_field", "camp"), 0);
	assert_int_equal(tl_store_tenant_set(f->st, "acme", "mailgun_signing_key", "k\"ey\\1'"), 0);
	assert_int_equal(tl_store_tenants_version(f->st, &v2), 0);
	assert_true(v2 != v1);
	assert_int_equal(tl_store_tenant_set(f->st, "acme", "mailgun_signing_key", NULL), 0);
	assert_int_equal(tl_store_tenants_version(f->st, &v3), 0);
	assert_true(v3 != v2);
	assert_int_equal(tl_store_tenant_set(f->st, "nobody", "x", "y"), -TL_ENOTFOUND);
	assert_int_equal(tl_store_tenant_set(f->st, "acme", "bad key", "y"), -TL_EINVAL);
	assert_int_equal(tl_store_tenant_set(f->st, "acme", "utf8", "\xff\xfe"), -TL_EINVAL);
	assert_int_equal(tl_store_tenant_set(f->st, "Beta_2-x", "quote", "it's \"x\""), 0);

	struct tl_tenant *all = NULL;
	size_t n = 0;
	int64_t lv = 0;
	assert_int_equal(tl_store_tenants_load(f->st, &all, &n, &lv), 0);
	assert_int_equal(n, 3);
	int64_t vq = 0;
	assert_int_equal(tl_store_tenants_version(f->st, &vq), 0);
	assert_int_equal(lv, vq);
	const struct tl_tenant *acme = NULL, *beta = NULL;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(all[i].name, "acme") == 0)
			acme = &all[i];
		if (strcmp(all[i].name, "Beta_2-x") == 0)
			beta = &all[i];
	}
	assert_non_null(acme);
	assert_non_null(beta);
	assert_memory_equal(acme->api_key_hash, a.api_key_hash, 32);
	assert_memory_equal(acme->link_key, a.link_key, TL_KEY_BYTES);
	assert_memory_equal(acme->salt, a.salt, TL_KEY_BYTES);
	assert_int_equal(acme->created_ms, a.created_ms);
	assert_int_equal(acme->n_settings, 2);
	assert_string_equal(acme->settings[0].key, "campaign_field"); /* sorted */
	assert_string_equal(acme->settings[1].key, "sendgrid_verify");
	assert_string_equal(tl_tenant_setting(acme, "campaign_field", "d"), "camp");
	assert_string_equal(tl_tenant_setting(acme, "mailgun_signing_key", "none"), "none");
	assert_string_equal(tl_tenant_setting(beta, "quote", "d"), "it's \"x\"");
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
	assert_memory_equal(nw, ((uint8_t[]){1, 1}), 2);
	struct tl_dedupe_key k2[] = {dk("acme", "e1", T0), dk("acme", "e3", T0)};
	assert_int_equal(tl_store_dedupe(f->st, k2, 2, nw), 0);
	assert_memory_equal(nw, ((uint8_t[]){0, 1}), 2);
	assert_int_equal(tl_store_commit(f->st), 0);

	/* Across transactions; tenants' id spaces are separate, so is the batch
	 * source; ids are bytes (a prefix, a case change, a NUL are other ids). */
	struct tl_dedupe_key k3[] = {dk("acme", "e1", T0), dk("acme", "e2", T0),
	                             dk("acme", "e3", T0), dk("acme", "e4", T0),
	                             dk("beta", "e1", T0), dk("acme", "E1", T0),
	                             dk("acme", "e", T0),  {TL_STR("acme"), {"e1\0x", 4}, T0}};
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), 0);
	assert_int_equal(tl_store_dedupe(f->st, k3, 8, nw), 0);
	assert_memory_equal(nw, ((uint8_t[]){0, 0, 0, 1, 1, 1, 1, 1}), 8);
	assert_int_equal(tl_store_commit(f->st), 0);
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_BATCH), 0);
	assert_int_equal(tl_store_dedupe(f->st, k3, 1, nw), 0);
	assert_int_equal(nw[0], 1);
	assert_int_equal(tl_store_dedupe(f->st, k3, 0, nw), 0);
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
	assert_int_equal(raw_int(f, "SELECT COUNT(*) FROM uniques"), 6);
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
	r[1] = row("acme", "spring", "A", T0 + MIN_MS + 30000); /* not on the minute: floored */
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
	assert_int_equal(seq, 2);
	assert_int_equal(s.seq, seq);
	assert_int_equal(raw_int(f, "SELECT COUNT(*) FROM counts"), 2);
	assert_int_equal(raw_int(f, "SELECT sent FROM counts WHERE minute_ms=1796320800000"), 30);
	assert_int_equal(raw_int(f, "SELECT sent FROM counts WHERE minute_ms=1796320860000"), 1);

	/* Every metric lands in its own column, in enum order. */
	struct tl_count_row all = row("acme", "cols", "", T0);
	for (int m = 0; m < TL_M__COUNT; m++)
		all.delta[m] = 100 + m;
	apply_counts(f->st, TL_SOURCE_REALTIME, &all, 1);
	assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_REALTIME, "acme", "cols", NULL, &s), 0);
	for (int m = 0; m < TL_M__COUNT; m++)
		assert_int_equal(s.counts[m], 100 + m);
	assert_int_equal(raw_int(f, "SELECT unique_human_clicks FROM counts WHERE campaign='cols'"), 116);
	assert_int_equal(raw_int(f, "SELECT hard_bounced FROM totals WHERE campaign='cols'"), 104);
	/* Negative deltas and large values are carried exactly. */
	all.delta[TL_M_SENT] = -100;
	all.delta[TL_M_OPENS] = 4000000000LL;
	apply_counts(f->st, TL_SOURCE_REALTIME, &all, 1);
	assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_REALTIME, "acme", "cols", NULL, &s), 0);
	assert_int_equal(s.counts[TL_M_SENT], 0);
	assert_int_equal(s.counts[TL_M_OPENS], 4000000000LL + 109);
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
	/* Large offsets; one partition given twice in a call: the last wins. */
	struct tl_offset o2[] = {{"metrics", 0, 1}, {"metrics", 3, 8}, {"metrics", 0, 5000000000ULL}};
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), 0);
	assert_int_equal(tl_store_offsets_set(f->st, "aggregate", o2, 3), 0);
	assert_int_equal(tl_store_commit(f->st), 0);
	assert_int_equal(tl_store_offset_get(f->st, "aggregate", "metrics", 0, &next), 0);
	assert_int_equal(next, 5000000000ULL);
	assert_int_equal(tl_store_offset_get(f->st, "aggregate", "metrics", 3, &next), 0);
	assert_int_equal(next, 8);
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
	bad.campaign.n = 0x80000000u; /* over every backend's parameter limit: fails before reading */
	assert_int_not_equal(tl_store_add_counts(f->st, &bad, 1), 0);
	uint8_t nw[1];
	struct tl_dedupe_key d = dk("acme", "ev-2", T0);
	assert_int_not_equal(tl_store_dedupe(f->st, &d, 1, nw), 0); /* the transaction is failed */
	assert_int_not_equal(tl_store_commit(f->st), 0);
	assert_nothing_written(f->st);
}

/* Child: begin, write a batch, then die before commit or right after it. */
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
	run_child(f->uri, false); /* killed before COMMIT: nothing */
	assert_nothing_written(f->st);
	run_child(f->uri, true); /* killed right after COMMIT: counters and offsets */
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

static void series(struct fx *f, const char *variant, enum tl_metric m, int64_t g, int64_t from, int64_t to,
                   struct points *p)
{
	size_t stop = p->stop_after;
	memset(p, 0, sizeof(*p));
	p->stop_after = stop;
	assert_int_equal(tl_store_series(f->st, TL_SOURCE_REALTIME, "acme", "spring", variant, m, g, from, to,
	                                 on_point, p),
	                 stop ? 7 : 0);
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
	series(f, NULL, TL_M_OPENS, 60, 0, INT64_MAX, &p);
	assert_int_equal(p.n, 5);
	for (int i = 0; i < 5; i++) {
		assert_int_equal(p.t[i], at[i]);
		assert_int_equal(p.v[i], 1LL << i);
	}
	series(f, NULL, TL_M_OPENS, 3600, 0, INT64_MAX, &p);
	assert_int_equal(p.n, 3);
	assert_int_equal(p.t[0], T0);
	assert_int_equal(p.v[0], 7);
	assert_int_equal(p.t[1], T0 + H);
	assert_int_equal(p.v[1], 8);
	assert_int_equal(p.t[2], T0 + D);
	assert_int_equal(p.v[2], 16);
	series(f, NULL, TL_M_OPENS, 86400, 0, INT64_MAX, &p);
	assert_int_equal(p.n, 2);
	assert_int_equal(p.t[0], T0 - 18 * H); /* midnight UTC */
	assert_int_equal(p.v[0], 15);
	assert_int_equal(p.t[1], T0 - 18 * H + D);
	assert_int_equal(p.v[1], 16);
	/* [from, to): 18:01 included, 19:00 excluded. */
	series(f, NULL, TL_M_OPENS, 60, T0 + MIN_MS, T0 + H, &p);
	assert_int_equal(p.n, 2);
	assert_int_equal(p.v[0], 2);
	assert_int_equal(p.v[1], 4);
	/* Variant filter. */
	series(f, "A", TL_M_OPENS, 3600, 0, INT64_MAX, &p);
	assert_int_equal(p.n, 2);
	assert_int_equal(p.v[0], 5);
	assert_int_equal(p.v[1], 8);
	series(f, "", TL_M_OPENS, 60, 0, INT64_MAX, &p);
	assert_int_equal(p.n, 1);
	assert_int_equal(p.v[0], 16);
	/* Every metric reads its own column; a stop from the callback is returned. */
	for (int m = 0; m < TL_M__COUNT; m++) {
		series(f, NULL, (enum tl_metric)m, 86400, 0, INT64_MAX, &p);
		assert_int_equal(p.n, 2); /* buckets with rows, whatever this column holds */
		assert_int_equal(p.v[0], m == TL_M_OPENS ? 15 : m == TL_M_SENT ? 400 : 0);
	}
	p.stop_after = 2;
	series(f, NULL, TL_M_SENT, 60, 0, INT64_MAX, &p);
	assert_int_equal(p.n, 2);
	assert_int_equal(p.v[0], 100);
	assert_int_equal(tl_store_series(f->st, TL_SOURCE_REALTIME, "acme", "spring", NULL, TL_M__COUNT, 60,
	                                 0, INT64_MAX, on_point, &p),
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
	struct tl_count_row r[4];
	r[0] = row("acme", "zeta", "A", T0);
	r[0].delta[TL_M_SENT] = 1;
	r[1] = row("acme", "alpha", "", T0);
	r[1].delta[TL_M_SENT] = 2;
	r[2] = row("acme", "zeta", "B", T0);
	r[2].delta[TL_M_SENT] = 4;
	r[3] = row("acme", "Zulu", "", T0); /* byte order: upper case first */
	r[3].delta[TL_M_SENT] = 16;
	apply_counts(f->st, TL_SOURCE_REALTIME, r, 4);
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
	assert_int_equal(l.n, 4);
	assert_string_equal(l.name[0], "Zulu");
	assert_string_equal(l.name[1], "alpha");
	assert_string_equal(l.name[2], "middle");
	assert_string_equal(l.name[3], "zeta");
	assert_int_equal(l.sent[0], 16);
	assert_int_equal(l.sent[1], 2);
	assert_int_equal(l.sent[2], 8);
	assert_int_equal(l.sent[3], 5); /* variants summed */
	assert_int_equal(l.seq[1], s1);
	assert_int_equal(l.seq[2], s3);

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

	/* pages, in byte order: after a name, at most limit */
	memset(&l, 0, sizeof(l));
	assert_int_equal(tl_store_campaigns_page(f->st, TL_SOURCE_REALTIME, "acme", NULL, 2, on_campaign, &l),
	                 0);
	assert_int_equal(l.n, 2);
	assert_string_equal(l.name[0], "Zulu");
	assert_string_equal(l.name[1], "alpha");
	memset(&l, 0, sizeof(l));
	assert_int_equal(
	    tl_store_campaigns_page(f->st, TL_SOURCE_REALTIME, "acme", "alpha", 2, on_campaign, &l), 0);
	assert_int_equal(l.n, 2);
	assert_string_equal(l.name[0], "middle");
	assert_string_equal(l.name[1], "zeta");
	assert_int_equal(l.sent[1], 5);
	memset(&l, 0, sizeof(l));
	assert_int_equal(
	    tl_store_campaigns_page(f->st, TL_SOURCE_REALTIME, "acme", "zeta", 2, on_campaign, &l), 0);
	assert_int_equal(l.n, 0);
	memset(&l, 0, sizeof(l));
	assert_int_equal(tl_store_campaigns_page(f->st, TL_SOURCE_REALTIME, "acme", "b", 0, on_campaign, &l),
	                 0);
	assert_int_equal(l.n, 2); /* "middle", "zeta" */
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
	/* Names are compared exactly: no prefix, no case folding, no SQL. */
	assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_REALTIME, "ACME", "secret", NULL, &s),
	                 -TL_ENOTFOUND);
	assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_REALTIME, "acm", "secret", NULL, &s),
	                 -TL_ENOTFOUND);
	assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_REALTIME, "x' OR '1'='1", "secret", NULL, &s),
	                 -TL_ENOTFOUND);
	assert_int_equal(tl_store_campaigns(f->st, TL_SOURCE_REALTIME, "%", 0, on_campaign, &l), 0);
	assert_int_equal(l.n, 0);
	struct tl_dedupe_key db = dk("beta", "ev", T0);
	struct tl_unique_key ub = uk("beta", "secret", TL_U_CLICK, "r", T0);
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), 0);
	assert_int_equal(tl_store_dedupe(f->st, &db, 1, nw), 0);
	assert_int_equal(nw[0], 1);
	assert_int_equal(tl_store_uniques(f->st, &ub, 1, nw), 0);
	assert_int_equal(nw[0], 1);
	tl_store_rollback(f->st);
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
	assert_true(k && ids && nw);
	for (int i = 0; i < N; i++) {
		int len = snprintf(ids[i], 16, "id%d", i);
		k[i] = (struct tl_dedupe_key){TL_STR("acme"), tl_str_of(ids[i], (size_t)len),
		                              i < N - 2 ? 1000 : 3000};
	}
	k[N - 2].ts_ms = 2000;
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), 0);
	assert_int_equal(tl_store_dedupe(f->st, k, N, nw), 0);
	assert_int_equal(tl_store_commit(f->st), 0);
	struct tl_dedupe_key other[] = {dk("beta", "old", 10), dk("beta", "new", 9000), dk("0", "old", 1),
	                                dk("zzz", "new", 2500)};
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), 0);
	assert_int_equal(tl_store_dedupe(f->st, other, 4, nw), 0);
	assert_int_equal(tl_store_commit(f->st), 0);
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_BATCH), 0);
	assert_int_equal(tl_store_dedupe(f->st, other, 4, nw), 0);
	assert_int_equal(tl_store_commit(f->st), 0);
	assert_int_equal(raw_int(f, "SELECT COUNT(*) FROM dedupe"), N + 8);

	assert_int_equal(tl_store_prune_dedupe(f->st, 2500), 0);
	assert_int_equal(raw_int(f, "SELECT COUNT(*) FROM dedupe"), 1 + 4);
	assert_int_equal(raw_int(f, "SELECT COUNT(*) FROM dedupe WHERE ts_ms<2500"), 0);
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
	assert_int_equal(raw_int(f, "SELECT COUNT(*) FROM dedupe"), 1 + 4);
	free(k);
	free(ids);
	free(nw);
}

/* Pruning in bounded steps: a sweep over more rows than one step takes
 * several steps (1 = call again), ends with 0, and leaves exactly the rows
 * inside the window; ids added while a sweep runs are pruned by a later one. */
static void test_prune_dedupe_steps(void **state)
{
	struct fx *f = *state;
	enum { N = 30000 };
	struct tl_dedupe_key *k = calloc(N, sizeof(*k));
	char(*ids)[16] = calloc(N, 16);
	uint8_t *nw = calloc(N, 1);
	assert_true(k && ids && nw);
	for (int i = 0; i < N; i++) {
		int len = snprintf(ids[i], 16, "s%05d", i);
		k[i] = (struct tl_dedupe_key){TL_STR("acme"), tl_str_of(ids[i], (size_t)len),
		                              i % 3 ? 1000 : 5000};
	}
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), 0);
	assert_int_equal(tl_store_dedupe(f->st, k, N, nw), 0);
	assert_int_equal(tl_store_commit(f->st), 0);

	int steps = 0, rc;
	while ((rc = tl_store_prune_dedupe_step(f->st, 2000)) == 1) {
		steps++;
		assert_true(steps < N); /* it ends */
		if (steps == 1) {
			/* an old id added behind the sweep: left for the next one */
			struct tl_dedupe_key late = dk("acme", "a-late", 10);
			assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), 0);
			assert_int_equal(tl_store_dedupe(f->st, &late, 1, nw), 0);
			assert_int_equal(tl_store_commit(f->st), 0);
		}
	}
	assert_int_equal(rc, 0);
	assert_true(steps >= 1); /* more rows than one step takes */
	int64_t left = raw_int(f, "SELECT COUNT(*) FROM dedupe WHERE ts_ms<2000");
	assert_true(left <= 1); /* at most the late id */
	assert_int_equal(raw_int(f, "SELECT COUNT(*) FROM dedupe WHERE ts_ms>=2000"), N / 3);
	assert_int_equal(tl_store_prune_dedupe(f->st, 2000), 0); /* a whole new sweep */
	assert_int_equal(raw_int(f, "SELECT COUNT(*) FROM dedupe WHERE ts_ms<2000"), 0);
	assert_int_equal(raw_int(f, "SELECT COUNT(*) FROM dedupe"), N / 3);
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
	int64_t seq0 = 0, seq1 = 0;
	assert_int_equal(tl_store_last_seq(f->st, &seq0), 0);
	assert_int_equal(tl_store_clear_source(f->st, TL_SOURCE_BATCH, day1, day2), -TL_EINVAL); /* no txn */
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_BATCH), 0);
	assert_int_equal(tl_store_clear_source(f->st, TL_SOURCE_BATCH, day1, day2), 0);
	assert_int_equal(tl_store_commit(f->st), 0);
	assert_int_equal(tl_store_last_seq(f->st, &seq1), 0);
	assert_true(seq1 > seq0); /* a re-run is a change the live stream must see */

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

/* ---- tenant cache over the backend -------------------------------------- */

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
	assert_ptr_equal(tl_tenant_cache_by_api_key(c, ka, strlen(ka)), t);
	assert_string_equal(tl_tenant_cache_by_api_key(c, kb, strlen(kb))->name, "beta");
	assert_null(tl_tenant_cache_by_api_key(c, ka, strlen(ka) - 1));

	/* A setting and a tenant added through another connection show up on refresh. */
	struct tl_store *other = NULL;
	assert_int_equal(tl_store_open(f->uri, &other), 0);
	assert_int_equal(tl_store_tenant_set(other, "acme", "campaign_field", "cid"), 0);
	char kg[TL_API_KEY_MAX];
	assert_int_equal(tl_store_tenant_add(other, "gamma", NULL, kg), 0);
	assert_int_equal(tl_tenant_cache_refresh(c), 0);
	t = tl_tenant_cache_by_name(c, "acme", 4);
	assert_non_null(t);
	assert_string_equal(tl_tenant_setting(t, "campaign_field", NULL), "cid");
	assert_string_equal(tl_tenant_cache_by_api_key(c, kg, strlen(kg))->name, "gamma");
	tl_tenant_cache_close(c);
	tl_store_close(other);
}

/* ---- concurrency -------------------------------------------------------- */

/* One aggregator-like writer: batches of event ids (some shared with the
 * other writer), each applied as dedupe → uniques → counts → offsets in one
 * transaction, retried whole on a retryable error, as the aggregator does. */
struct writer {
	const char *uri;
	int first, step, n, batch, part;
	int applied_new; /* ids this writer counted */
	int err;         /* first non-retryable error */
	int retries;
};

static int apply_ids(struct tl_store *st, const int *ids, int n, int part, uint64_t off, int *counted)
{
	struct tl_dedupe_key dk_[64];
	struct tl_unique_key uk_[64];
	char idb[64][24], rb[64][24];
	uint8_t nw[64];
	int rc = tl_store_begin(st, TL_SOURCE_REALTIME);
	if (rc)
		return rc;
	for (int i = 0; i < n; i++) {
		int l = snprintf(idb[i], sizeof(idb[i]), "ev-%d", ids[i]);
		dk_[i] = (struct tl_dedupe_key){TL_STR("acme"), tl_str_of(idb[i], (size_t)l), T0};
	}
	if ((rc = tl_store_dedupe(st, dk_, (size_t)n, nw)))
		goto fail;
	struct tl_count_row r = row("acme", "race", "", T0);
	int nu = 0;
	for (int i = 0; i < n; i++) {
		if (!nw[i])
			continue;
		r.delta[TL_M_OPENS]++;
		int l = snprintf(rb[nu], sizeof(rb[nu]), "r-%d", ids[i] % 50);
		uk_[nu] = uk("acme", "race", TL_U_OPEN, "", T0);
		uk_[nu].recipient = tl_str_of(rb[nu], (size_t)l);
		bool dup = false; /* keys distinct within one call */
		for (int j = 0; j < nu && !dup; j++)
			dup = strcmp(rb[j], rb[nu]) == 0;
		if (!dup)
			nu++;
	}
	if (nu && (rc = tl_store_uniques(st, uk_, (size_t)nu, nw)))
		goto fail;
	for (int i = 0; i < nu; i++)
		r.delta[TL_M_UNIQUE_OPENS] += nw[i];
	if (r.delta[TL_M_OPENS] && (rc = tl_store_add_counts(st, &r, 1)))
		goto fail;
	struct tl_offset o = {"metrics", part, off};
	if ((rc = tl_store_offsets_set(st, "aggregate", &o, 1)))
		goto fail;
	if ((rc = tl_store_commit(st)))
		return rc;
	*counted = (int)r.delta[TL_M_OPENS];
	return 0;
fail:
	tl_store_rollback(st);
	return rc;
}

static void *writer_thread(void *arg)
{
	struct writer *w = arg;
	struct tl_store *st = NULL;
	if ((w->err = tl_store_open(w->uri, &st)) != 0)
		return NULL;
	int ids[64];
	for (int b0 = 0; b0 < w->n && !w->err; b0 += w->batch) {
		int n = 0;
		for (int i = b0; i < w->n && i < b0 + w->batch; i++)
			ids[n++] = w->first + i * w->step;
		int64_t deadline = tl_mono_ms() + 30000;
		for (;;) {
			int counted = 0;
			int rc = apply_ids(st, ids, n, w->part, (uint64_t)(b0 + n), &counted);
			if (rc == 0) {
				w->applied_new += counted;
				break;
			}
			if ((rc != -TL_EBUSY && rc != -TL_EUNAVAIL) || tl_mono_ms() > deadline) {
				w->err = rc;
				break;
			}
			w->retries++;
		}
	}
	tl_store_close(st);
	return NULL;
}

/* Two connections apply batches at the same time over overlapping ids (one
 * ascending, one descending, so they meet in the middle with rows each
 * other has locked): every id is counted exactly once, every recipient is
 * unique once, and each committed batch got its own sequence number. */
static void test_concurrent_overlap(void **state)
{
	struct fx *f = *state;
	enum { N = 600, B = 40 };
	/* A: ids 0..599 ascending; B: ids 899..300 descending. Overlap 300..599. */
	struct writer w[2] = {{f->uri, 0, 1, N, B, 0, 0, 0, 0}, {f->uri, 899, -1, N, B, 1, 0, 0, 0}};
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, writer_thread, &w[i]), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	assert_int_equal(w[0].err, 0);
	assert_int_equal(w[1].err, 0);
	assert_int_equal(w[0].applied_new + w[1].applied_new, 900);
	struct tl_campaign_summary s;
	assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_REALTIME, "acme", "race", NULL, &s), 0);
	assert_int_equal(s.counts[TL_M_OPENS], 900);
	assert_int_equal(s.counts[TL_M_UNIQUE_OPENS], 50);
	assert_int_equal(raw_int(f, "SELECT COUNT(*) FROM dedupe"), 900);
	uint64_t next = 0;
	assert_int_equal(tl_store_offset_get(f->st, "aggregate", "metrics", 0, &next), 0);
	assert_int_equal(next, N);
	assert_int_equal(tl_store_offset_get(f->st, "aggregate", "metrics", 1, &next), 0);
	assert_int_equal(next, N);
	/* seq counts the batches that changed counters, without gaps or repeats. */
	int64_t seq = 0;
	assert_int_equal(tl_store_last_seq(f->st, &seq), 0);
	assert_true(seq >= N / B && seq <= 2 * N / B);
	assert_int_equal(raw_int(f, "SELECT MAX(seq) FROM campaigns"), seq);
	print_message("[%s] concurrent writers: %d + %d retries\n", f->b->name, w[0].retries, w[1].retries);
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
	double total_s = 0, counts_s = 0;
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
		int64_t t1 = tl_mono_ns();
		assert_int_equal(tl_store_add_counts(f->st, rows, NROWS), 0);
		int64_t t2 = tl_mono_ns();
		struct tl_offset o = {"metrics", 0, (uint64_t)round};
		assert_int_equal(tl_store_offsets_set(f->st, "aggregate", &o, 1), 0);
		assert_int_equal(tl_store_commit(f->st), 0);
		total_s += (double)(tl_mono_ns() - t0) / 1e9;
		counts_s += (double)(t2 - t1) / 1e9;
		for (int i = 0; i < NKEYS; i++)
			assert_int_equal(nw[i], 1);
	}
	print_message("[%s] batch of 10k count rows + 20k dedupe keys: %.1f ms/batch, %.0f rows/s;"
	              " the 10k-row counter upsert alone: %.0f rows/s\n",
	              f->b->name, total_s * 1000 / ROUNDS, (NROWS + NKEYS) * ROUNDS / total_s,
	              NROWS * ROUNDS / counts_s);

	/* 1,000-row counter transactions (the DESIGN.md §7 reference shape). */
	int64_t t0 = tl_mono_ns();
	for (int b = 0; b < 20; b++) {
		for (int i = 0; i < 1000; i++)
			rows[i].minute_ms = T0 + (100 + b) * MIN_MS;
		apply_counts(f->st, TL_SOURCE_REALTIME, rows, 1000);
	}
	print_message("[%s] 1,000-row counter transactions: %.0f rows/s\n", f->b->name,
	              20 * 1000 / ((double)(tl_mono_ns() - t0) / 1e9));

	struct tl_campaign_summary s;
	t0 = tl_mono_ns();
	for (int i = 0; i < 1000; i++)
		assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_REALTIME, "acme", camp[i], NULL, &s), 0);
	print_message("[%s] campaign summary: %.1f us/query\n", f->b->name,
	              (double)(tl_mono_ns() - t0) / 1e3 / 1000);
	assert_int_equal(s.counts[TL_M_SENT], 3 * 10 * ROUNDS + 3 * 20);
	free(rows);
	free(keys);
	free(camp);
	free(ids);
	free(nw);
}

/* ---- the list ----------------------------------------------------------- */

size_t store_contract_tests(const struct store_contract_backend *b, struct CMUnitTest *tests, size_t cap)
{
	const struct CMUnitTest all[] = {
	    cmocka_unit_test_setup_teardown(test_open_migrations_idempotent, setup, teardown),
	    cmocka_unit_test(test_concurrent_open),
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
	    cmocka_unit_test_setup_teardown(test_prune_dedupe_steps, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_clear_source, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tenant_cache, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_concurrent_overlap, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_measure_apply, setup, teardown),
	};
	size_t n = 0;
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]) && n < cap; i++) {
		tests[n] = all[i];
		tests[n].initial_state = (void *)b;
		n++;
	}
	return n;
}
