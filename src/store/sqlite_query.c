/* sqlite_query.c — the SQLite backend's read side: offsets, campaign list,
 * campaign summary, time series, last sequence. Every query is scoped to one
 * tenant and one source by its bound parameters. */
#include "store/sqlite_int.h"

#include <stdio.h>

static const char *const metric_col[] = {METRIC_COLUMNS(C_NAME)};

int tl_sqlite_offset_get(struct tl_store *st, const char *consumer, const char *topic, int partition,
                         uint64_t *next)
{
	struct sq_store *s = sq(st);
	sqlite3_stmt *q = s->stmt[S_OFFSET_GET];
	if (bind_cstr(q, 1, consumer) | bind_cstr(q, 2, topic) | sqlite3_bind_int(q, 3, partition))
		return -TL_ETOOBIG;
	int64_t v = 0;
	bool found = false;
	int rc = one_int(q, &v, &found);
	if (rc == 0)
		*next = found && v > 0 ? (uint64_t)v : 0;
	return rc;
}

static void read_counts(sqlite3_stmt *q, int col, int64_t counts[TL_M__COUNT])
{
	for (int k = 0; k < TL_M__COUNT; k++)
		counts[k] = sqlite3_column_int64(q, col + k);
}

int tl_sqlite_campaigns(struct tl_store *st, enum tl_source src, const char *tenant, int64_t since_seq,
                        const char *after, size_t limit, tl_campaign_fn fn, void *arg)
{
	struct sq_store *s = sq(st);
	sqlite3_stmt *q = s->stmt[since_seq > 0 ? S_CAMPAIGNS_SINCE : S_CAMPAIGNS_LIST];
	if (sqlite3_bind_int(q, 1, (int)src) | bind_cstr(q, 2, tenant) | sqlite3_bind_int64(q, 3, since_seq) |
	    bind_cstr(q, 4, after) |
	    sqlite3_bind_int64(q, 5, limit && limit <= INT64_MAX ? (int64_t)limit : -1)) /* -1: all */
		return -TL_EINVAL;
	int rc = 0;
	for (;;) {
		int r = sqlite3_step(q);
		if (r == SQLITE_DONE)
			break;
		if (r != SQLITE_ROW) {
			rc = sq_err(r);
			break;
		}
		struct tl_campaign_summary c = {
		    .campaign = (const char *)sqlite3_column_text(q, 0),
		    .first_ms = sqlite3_column_int64(q, 1),
		    .last_ms = sqlite3_column_int64(q, 2),
		    .updated_ms = sqlite3_column_int64(q, 3),
		    .seq = sqlite3_column_int64(q, 4),
		};
		read_counts(q, 5, c.counts);
		if (!c.campaign) {
			rc = -TL_ENOMEM;
			break;
		}
		if ((rc = fn(arg, &c)) != 0)
			break;
	}
	sqlite3_reset(q);
	return rc;
}

int tl_sqlite_campaign(struct tl_store *st, enum tl_source src, const char *tenant, const char *campaign,
                       const char *variant, struct tl_campaign_summary *out)
{
	struct sq_store *s = sq(st);
	sqlite3_stmt *q = s->stmt[variant ? S_CAMPAIGN_VARIANT : S_CAMPAIGN_ALL];
	int b = sqlite3_bind_int(q, 1, (int)src) | bind_cstr(q, 2, tenant) | bind_cstr(q, 3, campaign);
	if (variant)
		b |= bind_cstr(q, 4, variant);
	if (b != SQLITE_OK)
		return -TL_EINVAL;
	int rc = sqlite3_step(q);
	if (rc == SQLITE_ROW && sqlite3_column_int64(q, 4) > 0) {
		memset(out, 0, sizeof(*out));
		out->campaign = campaign;
		out->first_ms = sqlite3_column_int64(q, 0);
		out->last_ms = sqlite3_column_int64(q, 1);
		out->updated_ms = sqlite3_column_int64(q, 2);
		out->seq = sqlite3_column_int64(q, 3);
		read_counts(q, 5, out->counts);
		rc = 0;
	} else {
		rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? -TL_ENOTFOUND : sq_err(rc);
	}
	sqlite3_reset(q);
	return rc;
}

static sqlite3_stmt *series_stmt(struct sq_store *s, enum tl_metric m, int *err)
{
	if (s->series[m])
		return s->series[m];
	char sql[640];
	/* The bucket is minute_ms floored to a multiple of ?4 (also below 0). */
	int n = snprintf(
	    sql, sizeof(sql),
	    "SELECT b,SUM(v) FROM (SELECT minute_ms-(((minute_ms%%?4)+?4)%%?4) AS b,%s AS v FROM counts"
	    " WHERE src=?1 AND tenant=?2 AND campaign=?3 AND minute_ms>=?5 AND minute_ms<?6"
	    " AND (?7 IS NULL OR variant=?7)) GROUP BY b ORDER BY b",
	    metric_col[m]);
	if (n < 0 || (size_t)n >= sizeof(sql)) {
		*err = -TL_EINVAL;
		return NULL;
	}
	int rc = sqlite3_prepare_v3(s->db, sql, n, SQLITE_PREPARE_PERSISTENT, &s->series[m], NULL);
	if (rc != SQLITE_OK) {
		*err = sq_err(rc);
		return NULL;
	}
	return s->series[m];
}

int tl_sqlite_series(struct tl_store *st, enum tl_source src, const char *tenant, const char *campaign,
                     const char *variant, enum tl_metric m, int64_t granularity_s, int64_t from_ms,
                     int64_t to_ms, tl_point_fn fn, void *arg)
{
	struct sq_store *s = sq(st);
	int rc = 0;
	sqlite3_stmt *q = series_stmt(s, m, &rc);
	if (!q)
		return rc;
	int b = sqlite3_bind_int(q, 1, (int)src) | bind_cstr(q, 2, tenant) | bind_cstr(q, 3, campaign) |
	        sqlite3_bind_int64(q, 4, granularity_s * 1000) | sqlite3_bind_int64(q, 5, from_ms) |
	        sqlite3_bind_int64(q, 6, to_ms);
	b |= variant ? bind_cstr(q, 7, variant) : sqlite3_bind_null(q, 7);
	if (b != SQLITE_OK)
		return -TL_EINVAL;
	for (;;) {
		int r = sqlite3_step(q);
		if (r == SQLITE_DONE)
			break;
		if (r != SQLITE_ROW) {
			rc = sq_err(r);
			break;
		}
		if ((rc = fn(arg, sqlite3_column_int64(q, 0), sqlite3_column_int64(q, 1))) != 0)
			break;
	}
	sqlite3_reset(q);
	return rc;
}

int tl_sqlite_last_seq(struct tl_store *st, int64_t *seq)
{
	return meta_get(sq(st), "seq", seq);
}
