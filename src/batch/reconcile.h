/* reconcile.h — real-time vs batch, per tenant, campaign, variant and metric
 * (DESIGN.md §1, docs/batch.md).
 *
 * For the days from_day..to_day it compares, for every campaign with data
 * in those days in either source, the whole campaign (variant NULL) and each
 * variant the batch met in those days:
 *
 * - additive metrics (sent … bot_clicks, everything but the unique counts):
 *   the sums of the minute rows within the days. These are exact per day.
 * - unique metrics (unique_opens, unique_human_opens, unique_clicks,
 *   unique_human_clicks): the campaign totals over all days, because a
 *   recipient counts once per campaign, on whichever day the pipeline first
 *   met them (that day can differ between the paths when events arrive late
 *   across midnight). They are compared only when the batch has recomputed
 *   every archived day of the campaign; otherwise a note says which days to
 *   recompute, and the result is incomplete.
 *
 * Library code: no logging; any thread (it opens its own connection). */
#ifndef TL_BATCH_RECONCILE_H
#define TL_BATCH_RECONCILE_H

#include "core/err.h"
#include "event/metrics.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tl_reconcile_opts {
	const char *db_uri;
	const char *archive_dir;
	const char *state_dir;
	int64_t from_day, to_day; /* inclusive */
};

struct tl_reconcile_diff {
	char *tenant, *campaign;
	char *variant; /* NULL = all variants together */
	enum tl_metric metric;
	int64_t realtime, batch;
};

struct tl_reconcile_result {
	struct tl_reconcile_diff *diffs;
	size_t n_diffs;
	char **notes; /* why something could not be compared */
	size_t n_notes;
	size_t campaigns, comparisons; /* campaigns looked at, numbers compared */
};

/* Whether a metric is a unique count (compared as campaign totals). */
bool tl_reconcile_is_unique(enum tl_metric m);

/* Compares; fills res (free with tl_reconcile_free). 0 or a negative error
 * (the DB unreachable, …) — differences are not errors. */
int tl_reconcile(const struct tl_reconcile_opts *o, struct tl_reconcile_result *res) TL_MUST_CHECK;
void tl_reconcile_free(struct tl_reconcile_result *res);

#endif
