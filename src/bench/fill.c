/* fill.c — `tally bench fill`: a reporting DB with many campaigns and many
 * days of minute buckets, written through the store interface
 * (tl_store_add_counts, the aggregator's own write), for the API read
 * benchmark.
 *
 * Campaign <prefix>-<n> has data on every one of `days` days, in one run of
 * `active_minutes` consecutive minutes per day whose start depends on the
 * campaign and the day, one row per variant and minute. Counts are plausible
 * (deliveries below sends, opens below deliveries) and deterministic. */
#include "bench/bench.h"

#include "core/clock.h"
#include "event/metrics.h"
#include "store/store.h"

#include <stdlib.h>
#include <string.h>

#define DAY_MS 86400000LL
#define MAX_VARIANTS 26

void tl_bench_fill_defaults(struct tl_bench_fill_opts *o)
{
	memset(o, 0, sizeof *o);
	o->prefix = "c";
	o->campaigns = 10000;
	o->days = 30;
	o->active_minutes = 120;
	o->variants = 2;
	o->txn_rows = 20000;
}

static uint64_t mixu(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

static void plausible(uint64_t h, int64_t d[TL_M__COUNT])
{
	memset(d, 0, sizeof(int64_t) * TL_M__COUNT);
	int64_t sent = 20 + (int64_t)(h % 200);
	d[TL_M_SENT] = sent;
	d[TL_M_DELIVERED] = sent - (int64_t)((h >> 8) % 8);
	d[TL_M_DEFERRED] = (int64_t)((h >> 12) % 3);
	d[TL_M_BOUNCED] = sent - d[TL_M_DELIVERED];
	d[TL_M_HARD_BOUNCED] = d[TL_M_BOUNCED] / 2;
	d[TL_M_SOFT_BOUNCED] = d[TL_M_BOUNCED] - d[TL_M_HARD_BOUNCED];
	d[TL_M_DROPPED] = (int64_t)((h >> 16) % 2);
	d[TL_M_COMPLAINTS] = (int64_t)((h >> 18) % 2);
	d[TL_M_UNSUBSCRIBES] = (int64_t)((h >> 20) % 3);
	d[TL_M_OPENS] = d[TL_M_DELIVERED] / 3 + (int64_t)((h >> 24) % 10);
	d[TL_M_MACHINE_OPENS] = d[TL_M_OPENS] / 4;
	d[TL_M_UNIQUE_OPENS] = d[TL_M_OPENS] * 2 / 3;
	d[TL_M_UNIQUE_HUMAN_OPENS] = d[TL_M_UNIQUE_OPENS] - d[TL_M_MACHINE_OPENS] / 2;
	d[TL_M_CLICKS] = d[TL_M_OPENS] / 5;
	d[TL_M_BOT_CLICKS] = d[TL_M_CLICKS] / 6;
	d[TL_M_UNIQUE_CLICKS] = d[TL_M_CLICKS] * 3 / 4;
	d[TL_M_UNIQUE_HUMAN_CLICKS] = d[TL_M_UNIQUE_CLICKS] - d[TL_M_BOT_CLICKS] / 2;
}

static int flush(struct tl_store *st, struct tl_count_row *rows, size_t n)
{
	if (!n)
		return TL_OK;
	int rc = tl_store_begin(st, TL_SOURCE_REALTIME);
	if (rc)
		return rc;
	if ((rc = tl_store_add_counts(st, rows, n))) {
		tl_store_rollback(st);
		return rc;
	}
	return tl_store_commit(st);
}

int tl_bench_fill_run(const struct tl_bench_fill_opts *o, struct tl_bench_fill_result *res)
{
	memset(res, 0, sizeof *res);
	if (!o->db_uri || !o->tenant || o->campaigns < 1 || o->days < 1 || o->active_minutes < 1 ||
	    o->active_minutes > 1440 || o->variants < 0 || o->variants > MAX_VARIANTS || o->txn_rows < 1)
		return -TL_EINVAL;
	const char *prefix = o->prefix ? o->prefix : "c";
	int nv = o->variants ? o->variants : 1;
	size_t per_day = (size_t)o->active_minutes * (size_t)nv;
	size_t cap = (size_t)o->txn_rows > per_day ? (size_t)o->txn_rows : per_day;
	struct tl_store *st = NULL;
	struct tl_count_row *rows = calloc(cap, sizeof *rows);
	char *names = calloc((size_t)o->campaigns, 80);
	static const char *const variant_names[MAX_VARIANTS] = {"A", "B", "C", "D", "E", "F", "G", "H", "I",
	                                                        "J", "K", "L", "M", "N", "O", "P", "Q", "R",
	                                                        "S", "T", "U", "V", "W", "X", "Y", "Z"};
	int rc = -TL_ENOMEM;
	if (!rows || !names)
		goto out;
	if ((rc = tl_store_open(o->db_uri, &st)))
		goto out;
	int64_t end = o->end_ms ? o->end_ms : tl_now_ms();
	end -= end % DAY_MS;
	int64_t first_day = end - (int64_t)o->days * DAY_MS;
	int64_t t0 = tl_mono_ns(), last_report = t0;
	size_t n = 0;
	struct tl_str tenant = tl_str_of(o->tenant, strlen(o->tenant));
	for (int c = 0; c < o->campaigns; c++) {
		char *name = names + (size_t)c * 80;
		int nl = snprintf(name, 80, "%s-%d", prefix, c);
		struct tl_str camp = tl_str_of(name, (size_t)nl);
		for (int d = 0; d < o->days; d++) {
			uint64_t h = mixu(((uint64_t)c << 20) ^ (uint64_t)d);
			int start =
			    o->active_minutes >= 1440 ? 0 : (int)(h % (uint64_t)(1440 - o->active_minutes));
			int64_t day = first_day + (int64_t)d * DAY_MS;
			if (n + per_day > cap) {
				if ((rc = flush(st, rows, n)))
					goto out;
				res->rows += n;
				n = 0;
			}
			for (int m = 0; m < o->active_minutes; m++) {
				int64_t minute = day + (int64_t)(start + m) * 60000;
				for (int v = 0; v < nv; v++) {
					struct tl_count_row *r = &rows[n++];
					r->tenant = tenant;
					r->campaign = camp;
					r->variant =
					    o->variants ? tl_str_of(variant_names[v], 1) : tl_str_of("", 0);
					r->minute_ms = minute;
					r->first_ts_ms = minute + 1000;
					r->last_ts_ms = minute + 59000;
					plausible(mixu(h + (uint64_t)m * 31 + (uint64_t)v), r->delta);
				}
			}
		}
		int64_t now = tl_mono_ns();
		if (o->progress && now - last_report > 5000000000LL) {
			last_report = now;
			double s = (double)(now - t0) / 1e9;
			fprintf(o->progress, "fill: %d/%d campaigns, %llu rows, %.0f rows/s\n", c + 1,
			        o->campaigns, (unsigned long long)(res->rows + n),
			        (double)(res->rows + n) / s);
			fflush(o->progress);
		}
	}
	if ((rc = flush(st, rows, n)))
		goto out;
	res->rows += n;
	res->seconds = (double)(tl_mono_ns() - t0) / 1e9;
	rc = TL_OK;
out:
	tl_store_close(st);
	free(rows);
	free(names);
	return rc;
}
