/* batch.h — the batch recompute (DESIGN.md §1, docs/batch.md).
 *
 * tl_batch_run reads the archive files of days from_day..to_day and runs
 * them through the same code as the streaming path: tl_enrich_event on
 * `events` records (token verification against the tenants in the DB,
 * recipient hashing, classification), and tl_fold on the results and on
 * `delivery` records (dedupe by id, exact unique sets, counter rows by
 * minute). Worker threads read, parse, enrich and fold files in parallel into
 * a shared in-memory staging store (memstore.h); at the end ONE reporting-DB
 * transaction replaces the batch source (TL_SOURCE_BATCH) for those days:
 * clear_source, the counter rows, and the day runs (state.h). Readers see the
 * old days or the new ones, never a mix, and a failed run changes nothing.
 *
 * Uniques are per campaign over all days (as in real time): a recipient
 * counts once, on the first day the batch met them. Recomputing a day keeps
 * what other days credited (their state files) and credits the rest to this
 * day. So the batch totals of a campaign equal the exact distinct counts
 * over the days recomputed, in whatever order days are (re)computed.
 *
 * Event ids are deduplicated within one run (the real-time window is 72 h of
 * arrival); two copies of one id with event times on different days count
 * once only if both days are recomputed in the same run.
 *
 * Runs on the calling thread plus `threads` workers; one run at a time per
 * state directory (an exclusive lock, -TL_ELOCKED otherwise). */
#ifndef TL_BATCH_H
#define TL_BATCH_H

#include "core/err.h"
#include "event/classify.h"

#include <stddef.h>
#include <stdint.h>

struct tl_batch_progress {
	uint64_t files, files_done;
	uint64_t bytes, bytes_done; /* compressed */
	uint64_t lines;
	int64_t elapsed_ms;
};

/* Called on the calling thread about every 250 ms while workers run. */
typedef void (*tl_batch_progress_fn)(void *arg, const struct tl_batch_progress *p);

struct tl_batch_opts {
	const char *archive_dir;
	const char *state_dir;
	const char *db_uri;
	int64_t from_day, to_day; /* inclusive, days since 1970-01-01 (UTC) */
	int threads;              /* worker threads, default 2 */
	size_t fold_events;       /* events a fold holds before it applies, default 8192 */
	int write_from_pct;       /* the rows start going into the reporting DB once this share of
	                             the bytes is read (1..100; 0 = 75), or at once with
	                             TL_BATCH_WRITE_FROM_START */
	struct tl_classify_opts classify;
	tl_batch_progress_fn progress;
	void *progress_arg;
};

#define TL_BATCH_WRITE_FROM_START (-1)

#define TL_BATCH_REASONS 6 /* enrich rejects, by reason (see tl_batch_reason_name) */

struct tl_batch_stats {
	uint64_t runid;
	uint64_t files, bytes;
	uint64_t lines;        /* lines read */
	uint64_t bad_lines;    /* not a valid event (counted nowhere) */
	uint64_t out_of_range; /* event time outside the days (file in the wrong directory) */
	uint64_t rejected[TL_BATCH_REASONS];
	uint64_t skipped; /* delivery records flagged dead or hit, as the aggregator skips them */
	uint64_t folded;  /* events given to the fold */
	uint64_t duplicates, counted, uniques_new;
	uint64_t rows;      /* counter rows written */
	uint64_t db_passes; /* passes of the rows into the reporting DB (the last one included) */
	uint64_t campaigns;
	int64_t read_ms, write_ms;
	char error[512];     /* what failed */
	char first_bad[512]; /* the first bad line: "file:line: reason" */
};

/* Name of reject reason i ("bad_token", …). */
const char *tl_batch_reason_name(int i);

/* Recomputes the days. 0 or a negative error with st->error explaining it.
 * Nothing is written to the reporting DB unless everything succeeded. */
int tl_batch_run(const struct tl_batch_opts *o, struct tl_batch_stats *st) TL_MUST_CHECK;

#endif
