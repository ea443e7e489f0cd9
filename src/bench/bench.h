/* bench.h — the measuring tools behind `tally bench` (DESIGN.md §7).
 *
 * - load: a load generator for POST /v1/events (libcurl multi, keep-alive
 *   connections) that sends NDJSON batches of canonical events with unique
 *   ids at a fixed rate or as fast as the collector answers, and follows the
 *   pipeline's progress through the API's /metrics (events folded by the
 *   aggregator, the event→queryable lag histogram) and the server's RSS and
 *   CPU time (/proc/<pid>), once per second.
 * - lag: an external event→queryable probe: posts one marked event, polls
 *   the API until the campaign shows it, many times.
 * - fill: fills a store with minute buckets for many campaigns through
 *   tl_store_add_counts, for the API read benchmark.
 * - json: times tl_event_from_json per line (hand-written fast path and the
 *   jansson path) over generated canonical lines.
 *
 * These are tools, not library code for the pipeline: they print progress to
 * the FILE they are given. Calling thread only. */
#ifndef TL_BENCH_H
#define TL_BENCH_H

#include "core/buf.h"
#include "core/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- the event mix ------------------------------------------------------ */

struct tl_bench_mix {
	int campaigns;         /* campaigns "<prefix>-<n>" (default 100) */
	int variants;          /* variants A, B, … per campaign (0 = none; default 2) */
	int64_t recipients;    /* distinct recipients per campaign (default 100000) */
	const char *prefix;    /* campaign prefix (default "bench") */
	const char *id_prefix; /* unique per run: event ids are "<id_prefix>-<n>" */
};

/* Fills m with the defaults above (id_prefix NULL). */
void tl_bench_mix_defaults(struct tl_bench_mix *m);

/* The generator state for one run: an id counter and a random stream. */
struct tl_bench_gen {
	struct tl_bench_mix m;
	uint64_t next_id;
	uint64_t rng;
};

/* Starts a generator over m (m's strings must outlive g), seeded by seed. */
void tl_bench_gen_init(struct tl_bench_gen *g, const struct tl_bench_mix *m, uint64_t seed);

/* Appends n NDJSON lines (each ending in '\n') of canonical events with
 * event time ts_ms and fresh unique ids to out. The mix per 100 events:
 * 30 sent, 27 delivered, 2 deferred, 3 bounced (hard/soft/block), 1 dropped,
 * 1 complaint, 1 unsubscribe, 25 open (with a user agent), 10 click (with a
 * URL). Returns 0 or -TL_ENOMEM / -TL_ETOOBIG (out's cap). */
int tl_bench_gen_batch(struct tl_bench_gen *g, size_t n, int64_t ts_ms, struct tl_buf *out) TL_MUST_CHECK;

/* ---- load --------------------------------------------------------------- */

struct tl_bench_load_opts {
	const char *collector; /* base URL of the collector (required) */
	const char *api;       /* base URL of the API (its /metrics), NULL = not followed */
	const char *api_key;   /* Bearer (required) */
	double rate;           /* offered events/s; 0 = as fast as answered */
	double seconds;        /* sending time, warm-up included */
	double warmup;         /* first seconds left out of the figures */
	int batch;             /* lines per POST (default 1000) */
	int connections;       /* parallel keep-alive connections (default 8) */
	int server_pid;        /* > 0: sample its RSS and CPU time every second */
	double drain_timeout;  /* after sending: seconds to wait for the aggregator to catch up */
	struct tl_bench_mix mix;
	uint64_t seed;
	FILE *progress; /* one line per second, NULL = quiet */
};

/* Fills o with the defaults (batch 1000, 8 connections, 30 s, 5 s warm-up,
 * drain 60 s, the default mix). */
void tl_bench_load_defaults(struct tl_bench_load_opts *o);

/* One per-second sample. */
struct tl_bench_sample {
	double t;          /* seconds since the start */
	uint64_t accepted; /* events answered 202 so far */
	int64_t processed; /* events folded by the aggregator since the start (-1 = unknown) */
	int64_t rss_kb;    /* server RSS (-1 = unknown) */
	double server_cpu; /* server CPU seconds since the start (-1 = unknown) */
};

struct tl_bench_lag {
	uint64_t count;             /* observations in the window */
	double p50, p90, p99, mean; /* ms; quantiles interpolated within histogram buckets */
	double p99_le;              /* upper bound of the bucket holding p99 */
};

struct tl_bench_load_result {
	double window_s;                   /* measured window (after the warm-up) */
	double accepted_per_s;             /* events answered 202 per second in the window */
	double processed_per_s;            /* events folded per second in the window (0 = unknown) */
	double backlog_start, backlog_end; /* accepted - processed at the window's ends (events) */
	double backlog_growth_per_s;       /* slope of the backlog over the window */
	double drain_s; /* after sending, until processed caught up (-1 = not within the timeout) */
	uint64_t requests, accepted, rejected_503, errors;
	double post_p50_ms, post_p99_ms; /* POST answer times in the window */
	double gen_cpu_s, gen_cpu_share; /* this process: CPU seconds in the window, and per wall second */
	double server_cpu_share;         /* server CPU seconds per wall second in the window (-1 = unknown) */
	double agg_batches_per_s, agg_events_per_batch; /* the aggregator's transactions in the window */
	struct tl_bench_lag lag;                        /* tally_event_lag_ms over the window */
	struct tl_bench_sample *samples;                /* owned: free with tl_bench_load_result_free */
	size_t n_samples;
	char first_error[256];
};

/* Runs the load (see the top of this file). Returns 0, -TL_EINVAL (bad
 * options), -TL_EUNAVAIL (collector or API unreachable at the start) or
 * -TL_ENOMEM; errors during the run are counted in res, not returned. */
int tl_bench_load_run(const struct tl_bench_load_opts *o, struct tl_bench_load_result *res) TL_MUST_CHECK;

/* Frees res->samples. */
void tl_bench_load_result_free(struct tl_bench_load_result *res);

/* Appends res as one JSON object. */
int tl_bench_load_result_json(const struct tl_bench_load_result *res, struct tl_buf *out) TL_MUST_CHECK;

/* ---- Prometheus text (the API's /metrics) -------------------------------- */

#define TL_BENCH_HIST_MAX 32

struct tl_bench_hist {
	int n;                         /* buckets, +Inf last */
	double le[TL_BENCH_HIST_MAX];  /* upper bounds (+Inf = INFINITY) */
	double cum[TL_BENCH_HIST_MAX]; /* cumulative counts */
	double sum, count;
};

/* Value of the sample line `name` (with its labels exactly, e.g.
 * tally_aggregate_skipped_total{reason="dead"}) in text; -1 when absent. */
double tl_bench_prom_value(const char *text, const char *name);

/* Reads histogram `name` (its _bucket, _sum and _count lines). Returns 0 or -TL_ENOTFOUND. */
int tl_bench_prom_hist(const char *text, const char *name, struct tl_bench_hist *h) TL_MUST_CHECK;

/* Quantiles of the difference b - a of two readings of one histogram. */
void tl_bench_hist_lag(const struct tl_bench_hist *a, const struct tl_bench_hist *b,
                       struct tl_bench_lag *out);

/* ---- lag probe ---------------------------------------------------------- */

struct tl_bench_probe_opts {
	const char *collector, *api, *api_key; /* required */
	int probes;                            /* default 200 */
	int interval_ms;                       /* mean pause between probes (jittered ±50 %; default 100) */
	int poll_us;                           /* pause between visibility polls (default 1000) */
	int timeout_ms;                        /* give up on one probe after (default 10000) */
	const char *campaign;                  /* the marker campaign (default "lag-probe-<random>") */
	FILE *progress;
};

void tl_bench_probe_defaults(struct tl_bench_probe_opts *o);

struct tl_bench_probe_result {
	int probes, timeouts;
	double ack_p50_ms, ack_p99_ms;                         /* POST → 202 (the event is durable) */
	double vis_p50_ms, vis_p90_ms, vis_p99_ms, vis_max_ms; /* POST → visible in the API */
	double poll_mean_ms; /* mean time of one visibility poll (the resolution) */
};

/* Runs the probes. Returns 0, -TL_EINVAL, -TL_EUNAVAIL or -TL_ENOMEM. */
int tl_bench_probe_run(const struct tl_bench_probe_opts *o, struct tl_bench_probe_result *res) TL_MUST_CHECK;

/* ---- fill --------------------------------------------------------------- */

struct tl_bench_fill_opts {
	const char *db_uri; /* required */
	const char *tenant; /* required (must exist for the API to answer) */
	const char *prefix; /* campaign prefix (default "c") */
	int campaigns;      /* default 10000 */
	int days;           /* default 30 */
	int active_minutes; /* minutes with data per campaign per day (default 120; 1440 = every minute) */
	int variants;       /* default 2 */
	int64_t end_ms;     /* the last day ends here (default now, floored to the day) */
	int txn_rows;       /* rows per transaction (default 20000) */
	FILE *progress;
};

void tl_bench_fill_defaults(struct tl_bench_fill_opts *o);

struct tl_bench_fill_result {
	uint64_t rows;
	double seconds;
};

/* Writes campaigns × days × active_minutes × max(variants, 1) minute rows
 * (source realtime) in transactions of txn_rows. Returns 0 or a store error. */
int tl_bench_fill_run(const struct tl_bench_fill_opts *o, struct tl_bench_fill_result *res) TL_MUST_CHECK;

/* ---- agg: the aggregator's apply path alone ----------------------------- */

struct tl_bench_agg_opts {
	const char *db_uri; /* required: a fresh store is best */
	int64_t events;     /* total (default 2,000,000) */
	int batch;          /* events per transaction (default 5000) */
	struct tl_bench_mix mix;
	FILE *progress;
};

void tl_bench_agg_defaults(struct tl_bench_agg_opts *o);

struct tl_bench_agg_result {
	int64_t events, batches;
	double cpu_us_per_event;  /* tl_fold_add + tl_fold_apply, this thread's CPU time */
	double wall_us_per_event; /* the same in wall time (includes waiting for fsync) */
	double cpu_ms_per_batch;
};

/* Folds and applies o->events events of the load mix in batches of o->batch
 * to the store at o->db_uri. Returns 0 or a store/fold error. */
int tl_bench_agg_run(const struct tl_bench_agg_opts *o, struct tl_bench_agg_result *res) TL_MUST_CHECK;

/* ---- json --------------------------------------------------------------- */

struct tl_bench_json_result {
	double bytes_per_line;
	double us_per_line;         /* tl_event_from_json (fast path, jansson fallback) */
	double jansson_us_per_line; /* the jansson parser alone */
	double fast_share;          /* share of lines the fast path decided */
	double to_json_us;          /* tl_event_to_json per event (the archiver's per-event work) */
};

/* Parses `lines` generated canonical lines (the load mix) `rounds` times
 * with each parser; reports the median round. Returns 0, -TL_EINVAL (a line
 * did not parse) or -TL_ENOMEM. */
int tl_bench_json_run(size_t lines, int rounds, uint64_t seed,
                      struct tl_bench_json_result *res) TL_MUST_CHECK;

#endif
