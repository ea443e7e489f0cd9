/* fold.h — folding a batch of events into counter deltas, applied to the
 * store in ONE transaction together with the input offsets (DESIGN.md §3).
 *
 * Shared by the streaming aggregator and the batch recompute: the two paths
 * differ only in where events come from. A fold owns copies of the events
 * added to it (bounded by max_events), so the caller's buffers may be reused
 * right after tl_fold_add. One thread per fold. */
#ifndef TL_FOLD_H
#define TL_FOLD_H

#include "event/event.h"
#include "store/store.h"

struct tl_fold;

struct tl_fold_stats {
	size_t events;      /* events given to apply */
	size_t duplicates;  /* dropped by id (in the batch or seen before) */
	size_t counted;     /* events whose counts were added */
	size_t rows;        /* counter rows upserted */
	size_t uniques_new; /* new unique-set members */
};

/* Creates a fold that holds at most max_events events. */
int tl_fold_create(size_t max_events, struct tl_fold **out) TL_MUST_CHECK;
void tl_fold_destroy(struct tl_fold *f); /* NULL-safe */

/* Copies ev into the fold. -TL_ETOOBIG when the fold is full, -TL_ENOMEM. */
int tl_fold_add(struct tl_fold *f, const struct tl_event *ev) TL_MUST_CHECK;

size_t tl_fold_count(const struct tl_fold *f);
/* Smallest arrival time among the events held (0 when empty), for lag. */
int64_t tl_fold_min_arrival(const struct tl_fold *f);

/* Applies everything held plus offs (consumer's next offsets; may be NULL/0)
 * as one store transaction: begin → dedupe ids → unique sets → counter
 * deltas → offsets → commit. On failure the transaction is rolled back, the
 * fold keeps its events and apply may simply be called again. */
int tl_fold_apply(struct tl_fold *f, struct tl_store *st, enum tl_source src, const char *consumer,
                  const struct tl_offset *offs, size_t n_offs, struct tl_fold_stats *stats) TL_MUST_CHECK;

/* Forgets every event held (after a successful apply). */
void tl_fold_reset(struct tl_fold *f);

#endif
