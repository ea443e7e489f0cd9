/* Unit tests of the batch fold: dedupe by id (within and across batches),
 * exact uniques, counter deltas per minute bucket and variant, offsets stored
 * in the same transaction, and a failed apply leaving no trace. */
#include "core/buf.h"
#include "core/clock.h"
#include "event/metrics.h"
#include "pipeline/aggregate.h"
#include "pipeline/fold.h"
#include "store/store.h"
#include "stream/stream.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define T0 1764784800000LL /* 2025-12-03T18:00:00Z, a minute boundary */

struct ctx {
	char dir[64];
	char uri[128];
	struct tl_store *st;
	struct tl_fold *f;
};

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof *c);
	snprintf(c->dir, sizeof c->dir, "/tmp/tally-fold-XXXXXX");
	assert_non_null(mkdtemp(c->dir));
	snprintf(c->uri, sizeof c->uri, "sqlite:%s/t.db", c->dir);
	assert_int_equal(tl_store_open(c->uri, &c->st), 0);
	assert_int_equal(tl_fold_create(1000, &c->f), 0);
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;
	tl_fold_destroy(c->f);
	tl_store_close(c->st);
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", c->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup failed\n");
	free(c);
	return 0;
}

static struct tl_event ev(enum tl_event_type type, const char *id, const char *campaign, const char *variant,
                          const char *rcpt, int64_t ts, uint16_t flags)
{
	struct tl_event e = {
	    .type = (uint8_t)type, .flags = (uint16_t)(flags | TL_EVF_HASHED), .ts_ms = ts, .arrival_ms = ts};
	e.tenant = TL_STR("acme");
	e.campaign = tl_str_of(campaign, strlen(campaign));
	e.variant = tl_str_of(variant, strlen(variant));
	e.recipient = tl_str_of(rcpt, strlen(rcpt));
	e.id = tl_str_of(id, strlen(id));
	return e;
}

static void add(struct ctx *c, struct tl_event e)
{
	assert_int_equal(tl_fold_add(c->f, &e), 0);
}

static void counts(struct ctx *c, const char *campaign, const char *variant, int64_t out[TL_M__COUNT])
{
	struct tl_campaign_summary s;
	assert_int_equal(tl_store_campaign(c->st, TL_SOURCE_REALTIME, "acme", campaign, variant, &s), 0);
	memcpy(out, s.counts, sizeof s.counts);
}

static void test_dedupe_and_counts(void **state)
{
	struct ctx *c = *state;
	add(c, ev(TL_EV_SENT, "s1", "spring", "A", "r1", T0, 0));
	add(c, ev(TL_EV_DELIVERED, "d1", "spring", "A", "r1", T0 + 1000, 0));
	add(c, ev(TL_EV_DELIVERED, "d1", "spring", "A", "r1", T0 + 1000, 0)); /* duplicate in batch */
	add(c, ev(TL_EV_OPEN, "o1", "spring", "A", "r1", T0 + 2000, TL_EVF_MACHINE));
	add(c, ev(TL_EV_OPEN, "o2", "spring", "A", "r1", T0 + 70000, 0));
	add(c, ev(TL_EV_CLICK, "c1", "spring", "A", "r1", T0 + 71000, TL_EVF_BOT));
	struct tl_event b = ev(TL_EV_BOUNCED, "b1", "spring", "B", "r2", T0, 0);
	b.bounce_class = TL_BOUNCE_HARD;
	add(c, b);
	struct tl_offset off = {"metrics", 3, 42};
	struct tl_fold_stats s;
	assert_int_equal(tl_fold_apply(c->f, c->st, TL_SOURCE_REALTIME, "aggregate", &off, 1, &s), 0);
	assert_int_equal(s.events, 7);
	assert_int_equal(s.duplicates, 1);
	assert_int_equal(s.counted, 6);
	tl_fold_reset(c->f);

	int64_t a[TL_M__COUNT];
	counts(c, "spring", "A", a);
	assert_int_equal(a[TL_M_SENT], 1);
	assert_int_equal(a[TL_M_DELIVERED], 1);
	assert_int_equal(a[TL_M_OPENS], 2);
	assert_int_equal(a[TL_M_MACHINE_OPENS], 1);
	assert_int_equal(a[TL_M_UNIQUE_OPENS], 1);
	assert_int_equal(a[TL_M_UNIQUE_HUMAN_OPENS], 1);
	assert_int_equal(a[TL_M_CLICKS], 1);
	assert_int_equal(a[TL_M_BOT_CLICKS], 1);
	assert_int_equal(a[TL_M_UNIQUE_CLICKS], 1);
	assert_int_equal(a[TL_M_UNIQUE_HUMAN_CLICKS], 0);
	assert_int_equal(a[TL_M_BOUNCED], 0);
	int64_t all[TL_M__COUNT];
	counts(c, "spring", NULL, all);
	assert_int_equal(all[TL_M_BOUNCED], 1);
	assert_int_equal(all[TL_M_HARD_BOUNCED], 1);
	assert_int_equal(all[TL_M_SENT], 1);

	uint64_t next = 0;
	assert_int_equal(tl_store_offset_get(c->st, "aggregate", "metrics", 3, &next), 0);
	assert_int_equal(next, 42);

	/* second batch: a retried id, a repeat open (not unique again), a new human click */
	add(c, ev(TL_EV_OPEN, "o2", "spring", "A", "r1", T0 + 70000, 0));
	add(c, ev(TL_EV_OPEN, "o3", "spring", "A", "r1", T0 + 80000, 0));
	add(c, ev(TL_EV_CLICK, "c2", "spring", "A", "r1", T0 + 81000, 0));
	off.next = 45;
	assert_int_equal(tl_fold_apply(c->f, c->st, TL_SOURCE_REALTIME, "aggregate", &off, 1, &s), 0);
	assert_int_equal(s.duplicates, 1);
	tl_fold_reset(c->f);
	counts(c, "spring", "A", a);
	assert_int_equal(a[TL_M_OPENS], 3);
	assert_int_equal(a[TL_M_UNIQUE_OPENS], 1);
	assert_int_equal(a[TL_M_UNIQUE_HUMAN_OPENS], 1);
	assert_int_equal(a[TL_M_CLICKS], 2);
	assert_int_equal(a[TL_M_UNIQUE_CLICKS], 1);
	assert_int_equal(a[TL_M_UNIQUE_HUMAN_CLICKS], 1);
	assert_int_equal(tl_store_offset_get(c->st, "aggregate", "metrics", 3, &next), 0);
	assert_int_equal(next, 45);
}

static int sum_points(void *arg, int64_t bucket, int64_t v)
{
	int64_t *acc = arg;
	acc[0]++;
	acc[1] += v;
	acc[2] = bucket;
	return 0;
}

static void test_minute_buckets(void **state)
{
	struct ctx *c = *state;
	for (int i = 0; i < 5; i++) {
		char id[16], r[16];
		snprintf(id, sizeof id, "o%d", i);
		snprintf(r, sizeof r, "r%d", i);
		/* minutes 0,0,1,2,2 (late and out of order) */
		int64_t ts = T0 + (int64_t)((int[]){4, 30, 61, 150, 125}[i]) * 1000;
		add(c, ev(TL_EV_OPEN, id, "fall", "", r, ts, 0));
	}
	assert_int_equal(tl_fold_apply(c->f, c->st, TL_SOURCE_REALTIME, "aggregate", NULL, 0, NULL), 0);
	tl_fold_reset(c->f);
	int64_t acc[3] = {0};
	assert_int_equal(tl_store_series(c->st, TL_SOURCE_REALTIME, "acme", "fall", NULL, TL_M_OPENS, 60, T0,
	                                 T0 + 3600000, sum_points, acc),
	                 0);
	assert_int_equal(acc[0], 3);
	assert_int_equal(acc[1], 5);
	assert_int_equal(acc[2], T0 + 120000);
	int64_t a[TL_M__COUNT];
	counts(c, "fall", "", a);
	assert_int_equal(a[TL_M_UNIQUE_OPENS], 5);
}

/* Events of many (tenant, campaign, variant) groups in one fold, more than
 * its group cache holds: ids are per tenant, unique sets per campaign (over
 * its variants), and the groups start afresh after a reset. */
static void test_groups(void **state)
{
	struct ctx *c = *state;
	struct tl_fold *f;
	assert_int_equal(tl_fold_create(20000, &f), 0);
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 3000; i++) {
			char id[32], camp[32];
			snprintf(id, sizeof id, "s-%d-%d", round, i);
			snprintf(camp, sizeof camp, "c%04d", i);
			struct tl_event e = ev(TL_EV_SENT, id, camp, i % 3 ? "A" : "", "r1", T0 + i, 0);
			assert_int_equal(tl_fold_add(f, &e), 0);
			assert_int_equal(tl_fold_add(f, &e), 0); /* the same id again */
		}
		struct tl_event o = ev(TL_EV_OPEN, "x1", "spring", "A", "r1", T0, 0);
		assert_int_equal(tl_fold_add(f, &o), 0);
		o = ev(TL_EV_OPEN, "x2", "spring", "B", "r1", T0 + 1, 0); /* same recipient, other variant */
		assert_int_equal(tl_fold_add(f, &o), 0);
		o = ev(TL_EV_OPEN, "x1", "spring", "A", "r1", T0, 0); /* same id, other tenant */
		o.tenant = TL_STR("beta");
		assert_int_equal(tl_fold_add(f, &o), 0);
		struct tl_fold_stats s;
		assert_int_equal(tl_fold_apply(f, c->st, TL_SOURCE_REALTIME, "aggregate", NULL, 0, &s), 0);
		assert_int_equal(s.events, 6003);
		assert_int_equal(s.duplicates, round ? 3003 : 3000);
		tl_fold_reset(f);
	}
	tl_fold_destroy(f);
	int64_t a[TL_M__COUNT];
	counts(c, "c0000", "", a);
	assert_int_equal(a[TL_M_SENT], 2);
	counts(c, "c2999", "A", a);
	assert_int_equal(a[TL_M_SENT], 2);
	counts(c, "c2999", NULL, a);
	assert_int_equal(a[TL_M_SENT], 2);
	counts(c, "spring", "A", a);
	assert_int_equal(a[TL_M_OPENS], 1);
	assert_int_equal(a[TL_M_UNIQUE_OPENS], 1);
	counts(c, "spring", "B", a);
	assert_int_equal(a[TL_M_OPENS], 1);
	assert_int_equal(a[TL_M_UNIQUE_OPENS], 0);
	counts(c, "spring", NULL, a);
	assert_int_equal(a[TL_M_UNIQUE_OPENS], 1);
	struct tl_campaign_summary b;
	assert_int_equal(tl_store_campaign(c->st, TL_SOURCE_REALTIME, "beta", "spring", NULL, &b), 0);
	assert_int_equal(b.counts[TL_M_OPENS], 1);
	assert_int_equal(b.counts[TL_M_UNIQUE_OPENS], 1);
}

static void test_full_fold(void **state)
{
	struct ctx *c = *state;
	struct tl_fold *small;
	assert_int_equal(tl_fold_create(2, &small), 0);
	struct tl_event e = ev(TL_EV_SENT, "x", "c", "", "r", T0, 0);
	assert_int_equal(tl_fold_add(small, &e), 0);
	assert_int_equal(tl_fold_add(small, &e), 0);
	assert_int_equal(tl_fold_add(small, &e), -TL_ETOOBIG);
	tl_fold_destroy(small);
	(void)c;
}

/* The aggregator role stops before a record of a newer codec version (a
 * rolling upgrade that reached the writers first) instead of skipping it
 * and committing past it: read again once it is upgraded. */
static void test_role_stops_on_newer_codec(void **state)
{
	struct ctx *c = *state;
	char suri[128];
	snprintf(suri, sizeof suri, "file:%s/log", c->dir);
	struct tl_stream_opts so;
	tl_stream_opts_defaults(&so);
	so.partitions = 1;
	struct tl_stream *s;
	assert_int_equal(tl_stream_open(suri, &so, &s), 0);
	struct tl_buf good, newer;
	tl_buf_init(&good, 0);
	tl_buf_init(&newer, 0);
	struct tl_event e = ev(TL_EV_SENT, "s1", "spring", "A", "r1", T0, 0);
	assert_int_equal(tl_event_encode(&e, &good), 0);
	e.id = TL_STR("s2");
	assert_int_equal(tl_event_encode(&e, &newer), 0);
	newer.data[0] = TL_CODEC_VERSION + 1;
	struct tl_record recs[2] = {{.value = good.data, .value_len = (uint32_t)good.len},
	                            {.value = newer.data, .value_len = (uint32_t)newer.len}};
	assert_int_equal(tl_stream_append_sync(s, TL_TOPIC_METRICS, 0, recs, 2), 0);

	struct tl_aggregator_opts o = {
	    .stream = s, .db_uri = c->uri, .partitions = 1, .poll_interval_ms = 20};
	struct tl_aggregator *a;
	assert_int_equal(tl_aggregator_create(&o, &a), 0);
	assert_int_equal(tl_aggregator_run(a), -TL_EUNSUPPORTED); /* returns by itself */
	tl_aggregator_destroy(a);
	uint64_t next = 0;
	int rc = tl_store_offset_get(c->st, "aggregate", TL_TOPIC_METRICS, 0, &next);
	assert_true(rc == 0 || rc == -TL_ENOTFOUND);
	assert_true(next <= 1); /* never past the newer record */
	tl_buf_free(&good);
	tl_buf_free(&newer);
	tl_stream_close(s);
}

/* ---- the dedupe window's pruning ---- */

#define HOUR_MS 3600000LL

/* Appends one event of id `id` arrived at `arrival` to topic/partition;
 * metrics records carry the events offset they were made from (src). */
static void put(struct tl_stream *s, const char *topic, int p, const char *id, int64_t arrival, uint64_t src)
{
	struct tl_event e = ev(TL_EV_SENT, id, "spring", "A", "r1", arrival, 0);
	if (!strcmp(topic, TL_TOPIC_METRICS))
		e.flags |= TL_EVF_ENRICHED;
	e.src_offset = src;
	struct tl_buf b;
	tl_buf_init(&b, 0);
	assert_int_equal(tl_event_encode(&e, &b), 0);
	struct tl_record r = {.value = b.data, .value_len = (uint32_t)b.len};
	assert_int_equal(tl_stream_append_sync(s, topic, p, &r, 1), 0);
	tl_buf_free(&b);
}

static void *agg_main(void *arg)
{
	(void)tl_aggregator_run(arg);
	return NULL;
}

static uint64_t agg_sweeps(struct tl_aggregator *a)
{
	struct tl_buf b;
	tl_buf_init(&b, 0);
	assert_int_equal(tl_aggregator_metrics(a, &b), 0);
	assert_int_equal(tl_buf_putc(&b, '\0'), 0);
	const char *k = "\ntally_aggregate_dedupe_sweeps_total ";
	const char *v = strstr(b.data, k);
	assert_non_null(v);
	uint64_t n = strtoull(v + strlen(k), NULL, 10);
	tl_buf_free(&b);
	return n;
}

static uint64_t stored_offset(struct ctx *c, int p)
{
	uint64_t next = 0;
	int rc = tl_store_offset_get(c->st, "aggregate", TL_TOPIC_METRICS, p, &next);
	assert_true(rc == 0 || rc == -TL_ENOTFOUND);
	return next;
}

/* Waits (10 s at most) until metrics/p is applied up to `next`, then until
 * two more sweeps of the dedupe window have ended: one began after it. */
static void wait_applied_and_swept(struct ctx *c, struct tl_aggregator *a, int p, uint64_t next)
{
	int i = 0;
	for (; i < 1000 && stored_offset(c, p) < next; i++)
		usleep(10000);
	assert_true(stored_offset(c, p) >= next);
	uint64_t s0 = agg_sweeps(a);
	for (i = 0; i < 1000 && agg_sweeps(a) < s0 + 2; i++)
		usleep(10000);
	assert_true(agg_sweeps(a) >= s0 + 2);
}

static struct tl_stream *open_log(struct ctx *c, int partitions)
{
	char suri[128];
	snprintf(suri, sizeof suri, "file:%s/log", c->dir);
	struct tl_stream_opts so;
	tl_stream_opts_defaults(&so);
	so.partitions = partitions;
	struct tl_stream *s;
	assert_int_equal(tl_stream_open(suri, &so, &s), 0);
	return s;
}

/* The window is between two arrivals of an id, however late the input is
 * read: while the enricher works through days of backlog, the aggregator
 * is at the end of `metrics` but an id that arrived 96 h ago must stay
 * until the records a window (72 h) after it have been read. Ids a window
 * older than the backlog's next record do go. */
static void test_prune_waits_for_the_enricher(void **state)
{
	struct ctx *c = *state;
	struct tl_stream *s = open_log(c, 1);
	int64_t now = tl_now_ms();
	/* the collector's records; the enricher has made metrics of the first two */
	put(s, TL_TOPIC_EVENTS, 0, "old", now - 240 * HOUR_MS, 0);
	put(s, TL_TOPIC_EVENTS, 0, "evt-1", now - 96 * HOUR_MS, 0);
	put(s, TL_TOPIC_EVENTS, 0, "evt-1", now - 96 * HOUR_MS + 1000, 0); /* a repeat */
	put(s, TL_TOPIC_EVENTS, 0, "old", now - 96 * HOUR_MS + 2000, 0);   /* past old's window */
	put(s, TL_TOPIC_METRICS, 0, "old", now - 240 * HOUR_MS, 0);
	put(s, TL_TOPIC_METRICS, 0, "evt-1", now - 96 * HOUR_MS, 1);

	struct tl_aggregator_opts o = {
	    .stream = s, .db_uri = c->uri, .partitions = 1, .poll_interval_ms = 20, .prune_every_ms = 20};
	struct tl_aggregator *a;
	assert_int_equal(tl_aggregator_create(&o, &a), 0);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, agg_main, a), 0);
	wait_applied_and_swept(c, a, 0, 2);

	/* the enricher catches up */
	put(s, TL_TOPIC_METRICS, 0, "evt-1", now - 96 * HOUR_MS + 1000, 2);
	put(s, TL_TOPIC_METRICS, 0, "old", now - 96 * HOUR_MS + 2000, 3);
	wait_applied_and_swept(c, a, 0, 4);
	tl_aggregator_stop(a);
	pthread_join(th, NULL);
	tl_aggregator_destroy(a);

	int64_t n[TL_M__COUNT];
	counts(c, "spring", NULL, n);
	/* old, evt-1 and old again (pruned: its first arrival is 144 h before
	 * the second); not evt-1's repeat (it was pruned with a wall-clock mark) */
	assert_int_equal(n[TL_M_SENT], 3);
	tl_stream_close(s);
}

/* Two aggregators share a DB, one per partition (DESIGN.md §2): the one
 * that is caught up must not prune the ids of the one that is days behind. */
static void test_prune_spares_a_lagging_aggregator(void **state)
{
	struct ctx *c = *state;
	struct tl_stream *s = open_log(c, 2);
	int64_t now = tl_now_ms();
	put(s, TL_TOPIC_EVENTS, 1, "evt-1", now - 96 * HOUR_MS, 0);
	put(s, TL_TOPIC_EVENTS, 1, "evt-1", now - 96 * HOUR_MS + 1000, 0);
	put(s, TL_TOPIC_METRICS, 1, "evt-1", now - 96 * HOUR_MS, 0);
	put(s, TL_TOPIC_EVENTS, 0, "new-1", now, 0);
	put(s, TL_TOPIC_METRICS, 0, "new-1", now, 0);

	/* B, partition 1: applies what its enricher has made so far, then stops */
	struct tl_aggregator_opts ob = {
	    .stream = s, .db_uri = c->uri, .partitions = 2, .poll_interval_ms = 20};
	struct tl_aggregator *b;
	assert_int_equal(tl_aggregator_create(&ob, &b), 0);
	pthread_t tb;
	assert_int_equal(pthread_create(&tb, NULL, agg_main, b), 0);
	for (int i = 0; i < 1000 && stored_offset(c, 1) < 1; i++)
		usleep(10000);
	tl_aggregator_stop(b);
	pthread_join(tb, NULL);
	tl_aggregator_destroy(b);
	assert_int_equal(stored_offset(c, 1), 1);

	/* A, partition 0, caught up: sweeps while B is away */
	struct tl_aggregator_opts oa = {
	    .stream = s, .db_uri = c->uri, .partitions = 1, .poll_interval_ms = 20, .prune_every_ms = 20};
	struct tl_aggregator *a;
	assert_int_equal(tl_aggregator_create(&oa, &a), 0);
	pthread_t ta;
	assert_int_equal(pthread_create(&ta, NULL, agg_main, a), 0);
	wait_applied_and_swept(c, a, 0, 1);
	tl_aggregator_stop(a);
	pthread_join(ta, NULL);
	tl_aggregator_destroy(a);

	/* B's enricher makes the repeat; B comes back and reads it */
	put(s, TL_TOPIC_METRICS, 1, "evt-1", now - 96 * HOUR_MS + 1000, 1);
	assert_int_equal(tl_aggregator_create(&ob, &b), 0);
	assert_int_equal(pthread_create(&tb, NULL, agg_main, b), 0);
	for (int i = 0; i < 1000 && stored_offset(c, 1) < 2; i++)
		usleep(10000);
	assert_int_equal(stored_offset(c, 1), 2);
	tl_aggregator_stop(b);
	pthread_join(tb, NULL);
	tl_aggregator_destroy(b);

	int64_t n[TL_M__COUNT];
	counts(c, "spring", NULL, n);
	assert_int_equal(n[TL_M_SENT], 2); /* new-1 and evt-1, once */
	tl_stream_close(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_dedupe_and_counts, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_minute_buckets, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_groups, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_full_fold, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_role_stops_on_newer_codec, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_prune_waits_for_the_enricher, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_prune_spares_a_lagging_aggregator, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
