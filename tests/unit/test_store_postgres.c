/* test_store_postgres.c — the PostgreSQL store backend.
 *
 * Starts its own throwaway PostgreSQL cluster on 127.0.0.1 through
 * scripts/pg-test.sh (a watchdog removes it should this process die), runs
 * the backend-neutral store contract (store_contract.c) on a fresh database
 * per test, then what only a server backend has: connection loss mid
 * transaction, a server restart between batches, a server that is down for a
 * while, deadlocks reported as retryable. Exits 77 (ctest: skipped) with a
 * message when the PostgreSQL binaries are not installed. */
#include "store_contract.h"

#include "core/clock.h"
#include "store/store.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define T0 1796320800000LL /* 2026-12-03T18:00:00Z */

struct cluster {
	char script[512];
	char dir[256];
	char port[16];
	int next_db;
};

/* The cluster is made once in main() and read by every test. */
static struct cluster cl;

static void uri_for(const char *db, char *out, size_t cap)
{
	snprintf(out, cap, "postgres://postgres@127.0.0.1:%s/%s", cl.port, db);
}

/* Runs pg-test.sh with a command; returns its exit status (-1 if it could not run). */
static int script(const char *cmd)
{
	char line[1024];
	snprintf(line, sizeof(line), "bash '%s' %s '%s' >/dev/null", cl.script, cmd, cl.dir);
	int st = system(line);
	return st == -1 || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
}

static PGconn *connect_db(const char *uri)
{
	PGconn *c = PQconnectdb(uri);
	if (PQstatus(c) != CONNECTION_OK) {
		print_error("connect %s: %s", uri, PQerrorMessage(c));
		PQfinish(c);
		return NULL;
	}
	return c;
}

static int admin_exec(const char *sql)
{
	char uri[256];
	uri_for("postgres", uri, sizeof(uri));
	PGconn *c = connect_db(uri);
	if (!c)
		return -1;
	PGresult *r = PQexec(c, sql);
	int rc = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK ? 0 : -1;
	if (rc)
		print_error("%s: %s", sql, PQresultErrorMessage(r));
	PQclear(r);
	PQfinish(c);
	return rc;
}

/* ---- the contract's hooks ------------------------------------------------ */

static int pg_fresh(void *arg, char *uri, size_t cap)
{
	(void)arg;
	char db[32], sql[96];
	snprintf(db, sizeof(db), "t_%d", ++cl.next_db);
	snprintf(sql, sizeof(sql), "CREATE DATABASE %s", db);
	if (admin_exec(sql) != 0)
		return -1;
	uri_for(db, uri, cap);
	return 0;
}

static void pg_drop(void *arg, const char *uri)
{
	(void)arg;
	const char *db = strrchr(uri, '/');
	char sql[96];
	snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", db ? db + 1 : "none");
	(void)admin_exec(sql);
}

static int64_t pg_raw_int(void *arg, const char *uri, const char *sql)
{
	(void)arg;
	PGconn *c = connect_db(uri);
	assert_non_null(c);
	PGresult *r = PQexec(c, sql);
	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
		fail_msg("%s: %s", sql, PQresultErrorMessage(r));
	int64_t v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	PQfinish(c);
	return v;
}

static int pg_raw_exec(void *arg, const char *uri, const char *sql)
{
	(void)arg;
	PGconn *c = connect_db(uri);
	if (!c)
		return -1;
	PGresult *r = PQexec(c, sql);
	int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : -1;
	PQclear(r);
	PQfinish(c);
	return rc;
}

static const struct store_contract_backend backend = {
    .name = "postgres",
    .fresh = pg_fresh,
    .drop = pg_drop,
    .raw_int = pg_raw_int,
    .raw_exec = pg_raw_exec,
};

/* ---- fixture for the PostgreSQL tests ------------------------------------ */

struct fx {
	char uri[256];
	struct tl_store *st;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	assert_int_equal(pg_fresh(NULL, f->uri, sizeof(f->uri)), 0);
	/* A name the tests can find this connection by in pg_stat_activity. */
	strncat(f->uri, "?application_name=tl_victim", sizeof(f->uri) - strlen(f->uri) - 1);
	assert_int_equal(tl_store_open(f->uri, &f->st), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	tl_store_close(f->st);
	char *q = strchr(f->uri, '?');
	if (q)
		*q = '\0';
	pg_drop(NULL, f->uri);
	free(f);
	return 0;
}

/* One batch of the ids [first, first+n): dedupe, counts of the new ones,
 * offset; the whole transaction. 0 or the first error (rolled back). */
static int batch(struct tl_store *st, int first, int n, uint64_t offset)
{
	struct tl_dedupe_key k[64];
	char ids[64][16];
	uint8_t nw[64];
	for (int i = 0; i < n; i++) {
		int l = snprintf(ids[i], sizeof(ids[i]), "ev-%d", first + i);
		k[i] = (struct tl_dedupe_key){TL_STR("acme"), tl_str_of(ids[i], (size_t)l), T0};
	}
	int rc = tl_store_begin(st, TL_SOURCE_REALTIME);
	if (rc)
		return rc;
	struct tl_count_row r;
	memset(&r, 0, sizeof(r));
	r.tenant = TL_STR("acme");
	r.campaign = TL_STR("c");
	r.variant = TL_STR("");
	r.minute_ms = T0;
	struct tl_offset o = {"metrics", 0, offset};
	if ((rc = tl_store_dedupe(st, k, (size_t)n, nw)))
		goto fail;
	for (int i = 0; i < n; i++)
		r.delta[TL_M_SENT] += nw[i];
	if (r.delta[TL_M_SENT] && (rc = tl_store_add_counts(st, &r, 1)))
		goto fail;
	if ((rc = tl_store_offsets_set(st, "aggregate", &o, 1)))
		goto fail;
	return tl_store_commit(st);
fail:
	tl_store_rollback(st);
	return rc;
}

/* The aggregator's loop: retry the whole batch on a retryable error until
 * it commits or the deadline passes. Returns the last result; *failures
 * counts the failed attempts. */
static int batch_retry(struct tl_store *st, int first, int n, uint64_t offset, int *failures)
{
	int64_t deadline = tl_mono_ms() + 60000;
	for (;;) {
		int rc = batch(st, first, n, offset);
		if (rc == 0 || (rc != -TL_EUNAVAIL && rc != -TL_EBUSY) || tl_mono_ms() > deadline)
			return rc;
		(*failures)++;
		usleep(20000); /* backoff between attempts, as the aggregator does */
	}
}

static void assert_sent(struct tl_store *st, int64_t want, uint64_t want_offset)
{
	struct tl_campaign_summary s;
	assert_int_equal(tl_store_campaign(st, TL_SOURCE_REALTIME, "acme", "c", NULL, &s), 0);
	assert_int_equal(s.counts[TL_M_SENT], want);
	uint64_t next = 0;
	assert_int_equal(tl_store_offset_get(st, "aggregate", "metrics", 0, &next), 0);
	assert_int_equal(next, want_offset);
}

static int64_t server_started(void)
{
	char uri[256];
	uri_for("postgres", uri, sizeof(uri));
	return pg_raw_int(NULL, uri, "SELECT (extract(epoch FROM pg_postmaster_start_time())*1000000)::int8");
}

/* ---- tests --------------------------------------------------------------- */

static void test_uri_schemes_and_errors(void **state)
{
	struct fx *f = *state;
	struct tl_store *st = NULL;
	char uri[300];
	/* "postgresql://" is the same backend. */
	snprintf(uri, sizeof(uri), "postgresql%s", strchr(f->uri, ':'));
	assert_int_equal(tl_store_open(uri, &st), 0);
	int64_t v = -1;
	assert_int_equal(tl_store_tenants_version(st, &v), 0);
	assert_int_equal(v, 0);
	tl_store_close(st);
	/* Nothing listening: unavailable (retryable), not a crash or a hang. */
	st = (struct tl_store *)1;
	assert_int_equal(tl_store_open("postgres://postgres@127.0.0.1:1/x?connect_timeout=2", &st),
	                 -TL_EUNAVAIL);
	assert_null(st);
	assert_int_equal(tl_store_open("postgres://h/db?no_such_option=1", &st), -TL_EINVAL);
}

/* A role that may only read (an API process's) opens a database whose
 * schema is current: no DDL, no lock; reads work, writes are refused. */
static void test_open_read_only_role(void **state)
{
	struct fx *f = *state;
	char db[64], uri[256], sql[256];
	const char *slash = strrchr(f->uri, '/');
	snprintf(db, sizeof(db), "%.*s", (int)strcspn(slash + 1, "?"), slash + 1);
	char base[256];
	uri_for(db, base, sizeof(base));
	snprintf(sql, sizeof(sql),
	         "CREATE ROLE ro_%s LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO ro_%s", db, db);
	assert_int_equal(pg_raw_exec(NULL, base, sql), 0);
	snprintf(uri, sizeof(uri), "postgres://ro_%s@127.0.0.1:%s/%s", db, cl.port, db);
	struct tl_store *ro = NULL;
	assert_int_equal(tl_store_open(uri, &ro), 0);
	int64_t v = -1;
	assert_int_equal(tl_store_tenants_version(ro, &v), 0);
	struct tl_campaign_summary s;
	assert_int_equal(tl_store_campaign(ro, TL_SOURCE_REALTIME, "acme", "c", NULL, &s), -TL_ENOTFOUND);
	assert_int_equal(batch(ro, 0, 1, 1), -TL_EAUTH); /* permission denied: not retryable */
	assert_int_equal(batch(ro, 0, 1, 1), -TL_EAUTH); /* and the connection is still fine */
	tl_store_close(ro);
	snprintf(sql, sizeof(sql), "DROP OWNED BY ro_%s; DROP ROLE ro_%s", db, db);
	assert_int_equal(pg_raw_exec(NULL, base, sql), 0);
}

/* The server restarts between two batches: the next batch still commits
 * (after at most a retry), nothing is lost or counted twice. */
static void test_restart_between_batches(void **state)
{
	struct fx *f = *state;
	int failures = 0;
	assert_int_equal(batch_retry(f->st, 0, 20, 20, &failures), 0);
	int64_t started = server_started();
	assert_int_equal(script("restart"), 0);
	assert_true(server_started() != started);
	/* Overlapping ids: 10..19 were counted before the restart. */
	assert_int_equal(batch_retry(f->st, 10, 20, 40, &failures), 0);
	assert_sent(f->st, 30, 40);
	print_message("restart between batches: %d failed attempts before the commit\n", failures);
}

/* The connection dies inside a transaction: the next call says unavailable,
 * the commit refuses, and the retried batch counts everything once. */
static void test_loss_mid_transaction(void **state)
{
	struct fx *f = *state;
	int failures = 0;
	assert_int_equal(batch_retry(f->st, 0, 10, 10, &failures), 0);

	struct tl_dedupe_key k = {TL_STR("acme"), TL_STR("ev-100"), T0};
	uint8_t nw[1];
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), 0);
	assert_int_equal(tl_store_dedupe(f->st, &k, 1, nw), 0);
	assert_int_equal(nw[0], 1);
	assert_int_equal(admin_exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
	                            " WHERE application_name='tl_victim'"),
	                 0);
	struct tl_offset o = {"metrics", 0, 999};
	assert_int_equal(tl_store_offsets_set(f->st, "aggregate", &o, 1), -TL_EUNAVAIL);
	assert_int_not_equal(tl_store_commit(f->st), 0);
	tl_store_rollback(f->st); /* harmless after a failed commit */

	/* Reads outside a transaction reconnect by themselves. */
	assert_sent(f->st, 10, 10);
	/* The whole batch again: ev-100 is new, since its first insert died. */
	assert_int_equal(batch_retry(f->st, 95, 10, 20, &failures), 0);
	assert_sent(f->st, 20, 20);
}

/* The server is down for a while: calls fail fast as unavailable, and the
 * same store works again once it is back. */
static void test_server_down_then_up(void **state)
{
	struct fx *f = *state;
	int failures = 0;
	assert_int_equal(batch_retry(f->st, 0, 10, 10, &failures), 0);
	assert_int_equal(script("stop"), 0);
	assert_int_equal(batch(f->st, 5, 10, 20), -TL_EUNAVAIL);
	struct tl_campaign_summary s;
	assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_REALTIME, "acme", "c", NULL, &s), -TL_EUNAVAIL);
	int64_t seq = 0;
	assert_int_equal(tl_store_last_seq(f->st, &seq), -TL_EUNAVAIL);
	assert_int_equal(script("start"), 0);
	assert_int_equal(batch_retry(f->st, 5, 10, 20, &failures), 0);
	assert_sent(f->st, 15, 20);
}

struct locker {
	struct tl_store *st;
	const char *id;
	int rc;
};

static void *lock_second(void *arg)
{
	struct locker *l = arg;
	struct tl_dedupe_key k = {TL_STR("acme"), tl_str_of(l->id, strlen(l->id)), T0};
	uint8_t nw[1];
	l->rc = tl_store_dedupe(l->st, &k, 1, nw);
	if (l->rc)
		tl_store_rollback(l->st); /* the deadlock victim lets the other one go on */
	return NULL;
}

/* Two transactions that wait for each other: PostgreSQL breaks the
 * deadlock and the victim sees -TL_EBUSY (retryable). */
static void test_deadlock_is_busy(void **state)
{
	struct fx *f = *state;
	struct tl_store *b = NULL;
	assert_int_equal(tl_store_open(f->uri, &b), 0);
	uint8_t nw[1];
	struct tl_dedupe_key ka = {TL_STR("acme"), TL_STR("a"), T0}, kb = {TL_STR("acme"), TL_STR("b"), T0};
	assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), 0);
	assert_int_equal(tl_store_begin(b, TL_SOURCE_REALTIME), 0);
	assert_int_equal(tl_store_dedupe(f->st, &ka, 1, nw), 0);
	assert_int_equal(tl_store_dedupe(b, &kb, 1, nw), 0);
	struct locker l = {f->st, "b", 1};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, lock_second, &l), 0); /* f->st waits for b's "b" */
	/* Wait until the thread's statement is blocked on the lock, then close the cycle. */
	char admin[256];
	uri_for("postgres", admin, sizeof(admin));
	int64_t deadline = tl_mono_ms() + 30000;
	while (pg_raw_int(NULL, admin,
	                  "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type='Lock'") == 0) {
		assert_true(tl_mono_ms() < deadline);
		usleep(10000);
	}
	int rc = tl_store_dedupe(b, &ka, 1, nw);
	if (rc)
		tl_store_rollback(b);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_true((rc == -TL_EBUSY) != (l.rc == -TL_EBUSY)); /* exactly one victim */
	assert_true(rc == 0 || l.rc == 0);
	if (rc == 0)
		assert_int_equal(tl_store_commit(b), 0);
	else
		assert_int_equal(tl_store_commit(f->st), 0);
	tl_store_rollback(f->st);
	tl_store_rollback(b);
	tl_store_close(b);
}

/* ---- measurement (printed, not asserted) -------------------------------- */

static double secs_since(int64_t t0)
{
	return (double)(tl_mono_ns() - t0) / 1e9;
}

/* DESIGN.md §7's reference, PostgreSQL 15 upserting 1,000 rows per
 * transaction through unnest, into a two-column table, measured in the same
 * run as tally's 1,000-row counter transactions (23 columns, plus the totals
 * and campaign upserts), alternating so both see the same machine load. */
static void test_measure_vs_reference(void **state)
{
	struct fx *f = *state;
	char *q = strchr(f->uri, '?');
	*q = '\0';
	PGconn *c = connect_db(f->uri);
	*q = '?';
	assert_non_null(c);
	PGresult *r = PQexec(c, "CREATE TABLE ref(k TEXT PRIMARY KEY, n BIGINT NOT NULL)");
	assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
	PQclear(r);
	r = PQprepare(c, "up",
	              "INSERT INTO ref AS x SELECT * FROM unnest($1::text[],$2::int8[])"
	              " ON CONFLICT (k) DO UPDATE SET n=x.n+EXCLUDED.n",
	              0, NULL);
	assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
	PQclear(r);

	enum { ROWS = 1000, ROUNDS = 20 };
	static char keys[ROWS * 16 + 4], ones[ROWS * 2 + 4];
	size_t kl = 0, ol = 0;
	keys[kl++] = ones[ol++] = '{';
	for (int i = 0; i < ROWS; i++) {
		kl += (size_t)snprintf(keys + kl, sizeof(keys) - kl, "%sk%d", i ? "," : "", i);
		ol += (size_t)snprintf(ones + ol, sizeof(ones) - ol, "%s1", i ? "," : "");
	}
	keys[kl++] = ones[ol++] = '}';

	struct tl_count_row *rows = calloc(ROWS, sizeof(*rows));
	char(*camp)[16] = calloc(ROWS, 16);
	assert_true(rows && camp);
	for (int i = 0; i < ROWS; i++) {
		int l = snprintf(camp[i], 16, "c-%d", i / 2);
		rows[i].tenant = TL_STR("acme");
		rows[i].campaign = tl_str_of(camp[i], (size_t)l);
		rows[i].variant = i % 2 ? TL_STR("A") : TL_STR("B");
		rows[i].minute_ms = T0;
		rows[i].delta[TL_M_SENT] = 1;
		rows[i].delta[TL_M_OPENS] = 2;
	}
	double ref_s = 0, ours_s = 0;
	for (int round = 0; round < ROUNDS; round++) {
		int64_t t0 = tl_mono_ns();
		const char *v[2] = {keys, ones};
		r = PQexec(c, "BEGIN");
		PQclear(r);
		r = PQexecPrepared(c, "up", 2, v, NULL, NULL, 0);
		assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
		PQclear(r);
		r = PQexec(c, "COMMIT");
		PQclear(r);
		ref_s += secs_since(t0);

		t0 = tl_mono_ns();
		assert_int_equal(tl_store_begin(f->st, TL_SOURCE_REALTIME), 0);
		assert_int_equal(tl_store_add_counts(f->st, rows, ROWS), 0);
		assert_int_equal(tl_store_commit(f->st), 0);
		ours_s += secs_since(t0);
	}
	PQfinish(c);
	struct tl_campaign_summary s;
	assert_int_equal(tl_store_campaign(f->st, TL_SOURCE_REALTIME, "acme", "c-7", NULL, &s), 0);
	assert_int_equal(s.counts[TL_M_OPENS], 2 * 2 * ROUNDS);
	print_message("1,000-row upsert transactions, same run: reference (2 columns) %.0f rows/s,"
	              " tally counters (minute + totals + campaigns) %.0f rows/s, ratio %.2f\n",
	              ROWS * ROUNDS / ref_s, ROWS * ROUNDS / ours_s, ref_s / ours_s);
	free(rows);
	free(camp);
}

/* ---- main ---------------------------------------------------------------- */

static void rm_rf(const char *dir)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
}

/* Starts the cluster; 0, 77 when PostgreSQL is not installed, or 1. */
static int start_cluster(void)
{
	const char *src = getenv("TALLY_SRC");
	if (src && *src)
		snprintf(cl.script, sizeof(cl.script), "%s/scripts/pg-test.sh", src);
	else /* tests/unit/<this file> → scripts/ */
		snprintf(cl.script, sizeof(cl.script), "%.*s/../../scripts/pg-test.sh",
		         (int)(strrchr(__FILE__, '/') ? strrchr(__FILE__, '/') - __FILE__ : 1),
		         strrchr(__FILE__, '/') ? __FILE__ : ".");
	const char *tmp = getenv("TMPDIR");
	snprintf(cl.dir, sizeof(cl.dir), "%s/tl-pg-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(cl.dir)) {
		perror("mkdtemp");
		return 1;
	}
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "bash '%s' start '%s' --owner %d", cl.script, cl.dir, (int)getpid());
	FILE *p = popen(cmd, "r");
	if (!p)
		return 1;
	char line[256] = "";
	if (!fgets(line, sizeof(line), p))
		line[0] = '\0';
	int st = pclose(p);
	int code = st == -1 || !WIFEXITED(st) ? 1 : WEXITSTATUS(st);
	if (code == 77) {
		printf("SKIP: PostgreSQL server binaries are not installed (scripts/deps.sh --test installs "
		       "them)\n");
		rm_rf(cl.dir);
		return 77;
	}
	const char *colon = strrchr(line, ':');
	if (code != 0 || !colon || sscanf(colon + 1, "%15[0-9]", cl.port) != 1) {
		fprintf(stderr, "pg-test.sh start failed (status %d): %s\n", code, line);
		rm_rf(cl.dir);
		return 1;
	}
	return 0;
}

int main(void)
{
	int rc = start_cluster();
	if (rc != 0)
		return rc;
	struct CMUnitTest tests[48];
	size_t n = store_contract_tests(&backend, tests, 40);
	const struct CMUnitTest own[] = {
	    cmocka_unit_test_setup_teardown(test_uri_schemes_and_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_read_only_role, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_loss_mid_transaction, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_restart_between_batches, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_server_down_then_up, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_deadlock_is_busy, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_measure_vs_reference, setup, teardown),
	};
	for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
		tests[n++] = own[i];
	const char *only = getenv("TL_TEST_FILTER"); /* e.g. TL_TEST_FILTER='test_measure*' */
	if (only && *only)
		cmocka_set_test_filter(only);
	rc = _cmocka_run_group_tests("store_postgres", tests, n, NULL, NULL);
	(void)script("stop");
	rm_rf(cl.dir);
	return rc;
}
