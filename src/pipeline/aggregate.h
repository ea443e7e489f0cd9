/* aggregate.h — the aggregator role: consumes `metrics` and `delivery`
 * partitions, folds batches and applies each in one store transaction with
 * its input offsets (exactly-once effects, DESIGN.md §3).
 *
 * A batch is applied as soon as the consumer has caught up (no more records
 * ready) or batch_max_events is reached, and at the latest poll_interval_ms
 * after its first record arrived. A failed transaction is retried with
 * backoff; the batch is kept in memory meanwhile (bounded by
 * batch_max_events), and nothing more is read until it lands.
 *
 * tl_aggregator_run blocks the calling thread; tl_aggregator_stop may be
 * called from any thread. */
#ifndef TL_AGGREGATE_H
#define TL_AGGREGATE_H

#include "core/buf.h"
#include "stream/stream.h"

#include <stdint.h>

struct tl_aggregator;

struct tl_aggregator_opts {
	struct tl_stream *stream; /* not owned */
	const char *db_uri;
	uint64_t partitions;      /* bit mask of owned partitions */
	int poll_interval_ms;     /* default 200 */
	size_t batch_max_events;  /* default 50000 */
	int64_t dedupe_window_ms; /* default 72 h */
	int64_t prune_every_ms;   /* between two sweeps of the dedupe window; default 60 s */
};

int tl_aggregator_create(const struct tl_aggregator_opts *o, struct tl_aggregator **out) TL_MUST_CHECK;
/* Runs until stopped; applies what it holds before returning. 0 or error;
 * -TL_ECORRUPT at once when an offset stored in the DB is past the end of
 * its partition (the DB was fed from another stream). */
int tl_aggregator_run(struct tl_aggregator *a);
void tl_aggregator_stop(struct tl_aggregator *a);
void tl_aggregator_destroy(struct tl_aggregator *a);

/* Prometheus text: batches, events, duplicates, retries, dedupe sweeps, lag
 * quantiles. Any thread. */
int tl_aggregator_metrics(struct tl_aggregator *a, struct tl_buf *out) TL_MUST_CHECK;

#endif
