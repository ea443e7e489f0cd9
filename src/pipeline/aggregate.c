#include "pipeline/aggregate.h"

#include "core/clock.h"
#include "core/log.h"
#include "event/event.h"
#include "pipeline/fold.h"
#include "pipeline/lagstat.h"
#include "store/store.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CONSUMER "aggregate"
#define MAX_SUBS 128
#define POLL_MAX 2048
#define PRUNE_EVERY_MS 60000 /* default: a sweep starts this long after the previous one ended */

struct tl_aggregator {
	struct tl_aggregator_opts o;
	char *db_uri;
	struct tl_store *st;
	struct tl_consumer_slot cons;
	struct tl_fold *fold;
	struct tl_subscription subs[MAX_SUBS];
	struct tl_offset offs[MAX_SUBS];
	size_t n_subs;
	int64_t *arrivals; /* arrival time of each event held, for lag */
	struct tl_record recs[POLL_MAX];
	atomic_int stopping;
	/* dedupe pruning: a sweep in small steps, at most ~5 % of the time */
	int64_t prune_next_ms;  /* wall clock: when the next sweep starts */
	int64_t prune_before;   /* the sweep deletes ids that arrived before this */
	int64_t prune_after_ns; /* monotonic: no step before this */
	bool pruning;
	/* statistics */
	_Atomic uint64_t batches, events, duplicates, retries, dead, undecodable, sweeps;
	struct tl_lagstat lag;
};

static const char *const topics[] = {TL_TOPIC_METRICS, TL_TOPIC_DELIVERY};

int tl_aggregator_create(const struct tl_aggregator_opts *o, struct tl_aggregator **out)
{
	int rc = -TL_ENOMEM;
	struct tl_aggregator *a = calloc(1, sizeof *a);
	if (!a)
		goto fail;
	tl_consumer_slot_init(&a->cons);
	a->o = *o;
	if (!a->o.poll_interval_ms)
		a->o.poll_interval_ms = 200;
	if (!a->o.batch_max_events)
		a->o.batch_max_events = 50000;
	if (!a->o.dedupe_window_ms)
		a->o.dedupe_window_ms = 72LL * 3600 * 1000;
	if (!a->o.prune_every_ms)
		a->o.prune_every_ms = PRUNE_EVERY_MS;
	a->db_uri = strdup(o->db_uri);
	a->arrivals = malloc(a->o.batch_max_events * sizeof *a->arrivals);
	if (!a->db_uri || !a->arrivals)
		goto fail;
	if ((rc = tl_fold_create(a->o.batch_max_events, &a->fold)))
		goto fail;
	for (size_t t = 0; t < 2; t++) {
		int P = tl_stream_partitions(o->stream, topics[t]);
		if (P < 0) {
			rc = P;
			goto fail;
		}
		for (int p = 0; p < P && p < 64; p++) {
			if (!(o->partitions & (1ULL << p)) || a->n_subs >= MAX_SUBS)
				continue;
			a->subs[a->n_subs] = (struct tl_subscription){topics[t], p, 0};
			a->offs[a->n_subs] = (struct tl_offset){topics[t], p, 0};
			a->n_subs++;
		}
	}
	*out = a;
	return TL_OK;
fail:
	tl_aggregator_destroy(a);
	return rc;
}

void tl_aggregator_destroy(struct tl_aggregator *a)
{
	if (!a)
		return;
	tl_consumer_slot_destroy(&a->cons);
	tl_store_close(a->st);
	tl_fold_destroy(a->fold);
	free(a->arrivals);
	free(a->db_uri);
	free(a);
}

void tl_aggregator_stop(struct tl_aggregator *a)
{
	atomic_store(&a->stopping, 1);
	tl_consumer_slot_wakeup(&a->cons);
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

/* Opens the store (retrying while it is unavailable) and reads the offsets. */
static int connect_store(struct tl_aggregator *a)
{
	int64_t backoff = 50;
	for (;;) {
		int rc = tl_store_open(a->db_uri, &a->st);
		if (!rc) {
			for (size_t i = 0; i < a->n_subs && !rc; i++) {
				rc = tl_store_offset_get(a->st, CONSUMER, a->subs[i].topic,
				                         a->subs[i].partition, &a->subs[i].start);
				a->offs[i].next = a->subs[i].start;
			}
			if (!rc)
				return TL_OK;
			tl_store_close(a->st);
			a->st = NULL;
		}
		if (atomic_load(&a->stopping))
			return -TL_ECLOSED;
		tl_warn("aggregate: store %s: %s; retrying in %lld ms", a->db_uri, tl_strerror(rc),
		        (long long)backoff);
		sleep_ms(backoff);
		backoff = backoff * 2 > 2000 ? 2000 : backoff * 2;
	}
}

/* Applies the held batch, retrying with backoff until it lands or we stop.
 * At a stop with the store still failing the batch is dropped: its offsets
 * were not committed, so it is read again on start. That is a clean stop
 * (nothing accepted is lost), not a failure of the role. */
static int apply(struct tl_aggregator *a)
{
	int64_t backoff = 20;
	for (;;) {
		struct tl_fold_stats s;
		int rc = tl_fold_apply(a->fold, a->st, TL_SOURCE_REALTIME, CONSUMER, a->offs, a->n_subs, &s);
		if (!rc) {
			int64_t now = tl_now_ms();
			size_t n = tl_fold_count(a->fold);
			for (size_t i = 0; i < n; i++)
				tl_lagstat_add(&a->lag, now - a->arrivals[i]);
			atomic_fetch_add(&a->batches, 1);
			atomic_fetch_add(&a->events, s.events);
			atomic_fetch_add(&a->duplicates, s.duplicates);
			tl_fold_reset(a->fold);
			/* the store was away (a clean stop); anything else is a failure */
			return rc == -TL_EUNAVAIL || rc == -TL_EBUSY ? TL_OK : rc;
		}
		atomic_fetch_add(&a->retries, 1);
		if (atomic_load(&a->stopping) && backoff > 1000) {
			tl_warn(
			    "aggregate: giving up on the held batch at shutdown (%s); it is re-read on start",
			    tl_strerror(rc));
			tl_fold_reset(a->fold);
			return TL_OK;
		}
		tl_warn("aggregate: applying a batch of %zu events failed: %s; retrying in %lld ms",
		        tl_fold_count(a->fold), tl_strerror(rc), (long long)backoff);
		sleep_ms(backoff);
		backoff = backoff * 2 > 2000 ? 2000 : backoff * 2;
	}
}

#define PRUNE_SKEW_MS 600000 /* arrival times from several collectors' clocks: this much slack */
#define PRUNE_DUTY 20        /* a step of d ns is followed by (PRUNE_DUTY - 1) * d ns without */

/* Ids older than the dedupe window go in sweeps of bounded steps
 * (tl_store_prune_dedupe_step), spread so that pruning takes at most
 * 1/PRUNE_DUTY of the aggregator's time: a large window never stalls the
 * batches (a whole-table sweep at once took seconds at ten million ids). */

/* The arrival time of the record at offset `from` of topic/partition (the
 * first one after it, if retention took it), into *arrival. 0, or a
 * negative error when it cannot be read. */
static int arrival_at(struct tl_aggregator *a, const char *topic, int partition, uint64_t from,
                      int64_t *arrival)
{
	struct tl_subscription sub = {topic, partition, from};
	struct tl_consumer *c;
	int rc = tl_consumer_open(a->o.stream, &sub, 1, &c);
	if (rc)
		return rc;
	struct tl_record r;
	int n = tl_consumer_poll(c, &r, 1, 1000);
	if (n == 1) {
		struct tl_event ev;
		*arrival = tl_event_decode(r.value, r.value_len, &ev) == 0 && ev.arrival_ms > 0
		               ? ev.arrival_ms
		               : r.ts_ms;
	}
	rc = n < 0 ? n : n == 0 ? -TL_EAGAIN : TL_OK;
	tl_consumer_close(c);
	return rc;
}

/* Lowers *mark to the arrival of the first record of partition p of
 * `metrics` that has not been applied yet, looking through the enricher:
 * when the aggregator has read all of metrics/p, what comes next is made
 * from events/p after the source offset of metrics/p's last record. 0 or a
 * negative error (the mark is then unknown). */
static int mark_metrics(struct tl_aggregator *a, int p, uint64_t next, uint64_t end, int64_t *mark)
{
	int64_t arr = 0;
	if (next < end) {
		int rc = arrival_at(a, TL_TOPIC_METRICS, p, next, &arr);
		if (!rc && arr < *mark)
			*mark = arr;
		return rc;
	}
	uint64_t src = 0, eend;
	struct tl_buf storage;
	tl_buf_init(&storage, 0);
	struct tl_record last;
	int rc = tl_stream_last(a->o.stream, TL_TOPIC_METRICS, p, &last, &storage);
	if (!rc) {
		struct tl_event ev;
		rc = tl_event_decode(last.value, last.value_len, &ev);
		src = ev.src_offset + 1;
	} else if (rc == -TL_ENOTFOUND) {
		rc = TL_OK;
	}
	tl_buf_free(&storage);
	if (!rc)
		rc = tl_stream_end_offset(a->o.stream, TL_TOPIC_EVENTS, p, &eend);
	if (!rc && src < eend && !(rc = arrival_at(a, TL_TOPIC_EVENTS, p, src, &arr)) && arr < *mark)
		*mark = arr;
	return rc;
}

/* How far the input has got, in arrival time: the sweep may delete ids
 * that arrived a window (plus the clocks' skew) before it. The window is
 * between two arrivals of an id, not between its first arrival and now:
 * while days of log are still to be read (a restored database, a long
 * stop, an enricher far behind, another aggregator of the same DB behind),
 * an id must stay until the records a window after it have been read. So
 * the mark is the earliest arrival of any record not yet applied to this
 * DB, in every partition of its topics whoever owns it (the offsets stored
 * in the DB), looking through the enricher for `metrics`; now when there is
 * none. false when it cannot be known (no sweep). Called between batches,
 * when every record read is applied (the DB's offsets are this
 * aggregator's own). */
static bool prune_mark(struct tl_aggregator *a, int64_t now, int64_t *mark)
{
	*mark = now;
	for (size_t t = 0; t < sizeof topics / sizeof *topics; t++) {
		const char *topic = topics[t];
		int P = tl_stream_partitions(a->o.stream, topic);
		if (P < 0)
			return false;
		for (int p = 0; p < P; p++) {
			uint64_t next, end;
			int64_t arr;
			int rc = tl_store_offset_get(a->st, CONSUMER, topic, p, &next);
			if (!rc)
				rc = tl_stream_end_offset(a->o.stream, topic, p, &end);
			if (!rc && !strcmp(topic, TL_TOPIC_METRICS))
				rc = mark_metrics(a, p, next, end, mark);
			else if (!rc && next < end && !(rc = arrival_at(a, topic, p, next, &arr)) &&
			         arr < *mark)
				*mark = arr; /* delivery: written by the collectors, nothing upstream */
			if (rc) {
				tl_warn("aggregate: dedupe pruning put off: the arrival time of the next "
				        "record of %s/%d is unknown (%s)",
				        topic, p, tl_strerror(rc));
				return false;
			}
		}
	}
	return true;
}

static void maybe_prune(struct tl_aggregator *a)
{
	int64_t now_ns = tl_mono_ns();
	if (now_ns < a->prune_after_ns || tl_fold_count(a->fold))
		return;
	if (!a->pruning) {
		int64_t now = tl_now_ms(), mark;
		if (now < a->prune_next_ms)
			return;
		if (!prune_mark(a, now, &mark)) {
			a->prune_next_ms = now + a->o.prune_every_ms;
			return;
		}
		a->pruning = true;
		a->prune_before = mark - a->o.dedupe_window_ms - PRUNE_SKEW_MS;
	}
	int rc = tl_store_prune_dedupe_step(a->st, a->prune_before);
	int64_t end_ns = tl_mono_ns();
	a->prune_after_ns = end_ns + (end_ns - now_ns) * (PRUNE_DUTY - 1);
	if (rc > 0)
		return;
	if (rc < 0)
		tl_warn("aggregate: pruning the dedupe window: %s", tl_strerror(rc));
	a->pruning = false;
	a->prune_next_ms = tl_now_ms() + a->o.prune_every_ms;
	atomic_fetch_add(&a->sweeps, 1);
}

/* A stored offset past the end of its partition means the reporting DB was
 * fed from another stream (a different --stream or prefix, a log deleted
 * and created again, or a stream server that lost acknowledged records).
 * Reading on would silently skip this stream's first records: stop, an
 * operator must look. A stream that cannot answer now is not checked. */
static int check_offsets(struct tl_aggregator *a)
{
	for (size_t i = 0; i < a->n_subs; i++) {
		uint64_t end;
		int rc = tl_stream_end_offset(a->o.stream, a->subs[i].topic, a->subs[i].partition, &end);
		if (rc) {
			tl_warn(
			    "aggregate: %s/%d: end of the stream unknown (%s); stored offsets not checked",
			    a->subs[i].topic, a->subs[i].partition, tl_strerror(rc));
			return TL_OK;
		}
		if (a->subs[i].start > end) {
			tl_error("aggregate: the reporting DB has counted %s/%d up to offset %llu but the "
			         "stream ends "
			         "at %llu: this DB was fed from another stream (--stream, its prefix) or the "
			         "stream "
			         "lost records; refusing to skip records silently",
			         a->subs[i].topic, a->subs[i].partition, (unsigned long long)a->subs[i].start,
			         (unsigned long long)end);
			return -TL_ECORRUPT;
		}
	}
	return TL_OK;
}

int tl_aggregator_run(struct tl_aggregator *a)
{
	int rc = connect_store(a);
	if (rc)
		return rc == -TL_ECLOSED ? TL_OK : rc;
	if ((rc = check_offsets(a)))
		return rc;
	if ((rc = tl_consumer_slot_open(&a->cons, a->o.stream, a->subs, a->n_subs))) {
		tl_error("aggregate: opening the consumer: %s", tl_strerror(rc));
		return rc;
	}
	a->prune_next_ms = tl_now_ms() + a->o.prune_every_ms;
	int64_t deadline = 0;
	while (!atomic_load(&a->stopping)) {
		size_t held = tl_fold_count(a->fold);
		size_t room = a->o.batch_max_events - held;
		size_t want = room < POLL_MAX ? room : POLL_MAX;
		int timeout = a->o.poll_interval_ms;
		if (held) {
			int64_t left = deadline - tl_mono_ms();
			timeout = left > 0 ? (int)left : 0;
		}
		int n = want ? tl_consumer_poll(a->cons.c, a->recs, want, timeout) : 0;
		if (n < 0) {
			tl_error("aggregate: reading: %s at %s", tl_strerror(n),
			         tl_consumer_error_detail(a->cons.c));
			if (n == -TL_ECORRUPT)
				return n; /* never skip silently: an operator must look */
			sleep_ms(100);
			continue;
		}
		for (int i = 0; i < n; i++) {
			const struct tl_record *r = &a->recs[i];
			a->offs[r->sub].next = r->offset + 1;
			struct tl_event ev;
			int drc = tl_event_decode(r->value, r->value_len, &ev);
			if (drc == -TL_EUNSUPPORTED) {
				/* written by a newer version: read it again after the upgrade */
				tl_error(
				    "aggregate: record %s/%d@%llu has a codec version this build does not "
				    "read; stopping before it (upgrade the aggregator)",
				    a->subs[r->sub].topic, r->partition, (unsigned long long)r->offset);
				return drc;
			}
			if (drc) {
				atomic_fetch_add(&a->undecodable, 1);
				tl_warn("aggregate: undecodable record %s/%d@%llu skipped",
				        a->subs[r->sub].topic, r->partition, (unsigned long long)r->offset);
				continue;
			}
			if (ev.flags & (TL_EVF_DEAD | TL_EVF_HIT)) {
				atomic_fetch_add(&a->dead, 1);
				continue;
			}
			if (!tl_fold_count(a->fold))
				deadline = tl_mono_ms() + a->o.poll_interval_ms;
			a->arrivals[tl_fold_count(a->fold)] = ev.arrival_ms ? ev.arrival_ms : r->ts_ms;
			rc = tl_fold_add(a->fold, &ev);
			if (rc) {
				tl_error("aggregate: folding: %s", tl_strerror(rc));
				return rc;
			}
		}
		held = tl_fold_count(a->fold);
		int caught_up = (size_t)n < want;
		/* Offsets move even when only skipped records were read. */
		if (held ? (caught_up || held >= a->o.batch_max_events || tl_mono_ms() >= deadline) : n > 0) {
			if ((rc = apply(a)))
				return rc;
		}
		maybe_prune(a);
	}
	/* drain what is held */
	if (tl_fold_count(a->fold))
		return apply(a);
	return TL_OK;
}

int tl_aggregator_metrics(struct tl_aggregator *a, struct tl_buf *out)
{
	int rc = tl_buf_printf(
	    out,
	    "# TYPE tally_aggregate_batches_total counter\ntally_aggregate_batches_total %llu\n"
	    "# TYPE tally_aggregate_events_total counter\ntally_aggregate_events_total %llu\n"
	    "# TYPE tally_aggregate_duplicates_total counter\ntally_aggregate_duplicates_total %llu\n"
	    "# TYPE tally_aggregate_retries_total counter\ntally_aggregate_retries_total %llu\n"
	    "# TYPE tally_aggregate_skipped_total counter\ntally_aggregate_skipped_total{reason=\"dead\"} "
	    "%llu\n"
	    "tally_aggregate_skipped_total{reason=\"undecodable\"} %llu\n"
	    "# TYPE tally_aggregate_dedupe_sweeps_total counter\ntally_aggregate_dedupe_sweeps_total %llu\n",
	    (unsigned long long)atomic_load(&a->batches), (unsigned long long)atomic_load(&a->events),
	    (unsigned long long)atomic_load(&a->duplicates), (unsigned long long)atomic_load(&a->retries),
	    (unsigned long long)atomic_load(&a->dead), (unsigned long long)atomic_load(&a->undecodable),
	    (unsigned long long)atomic_load(&a->sweeps));
	if (!rc)
		rc = tl_lagstat_prometheus(&a->lag, "tally_event_lag_ms",
		                           "event arrival at the collector to committed in the reporting DB",
		                           out);
	return rc;
}
