/* jsonbench.c — `tally bench json`: the cost of parsing one canonical NDJSON
 * event line (the collector's per-event work on POST /v1/events). */
#include "bench/bench.h"

#include "core/arena.h"
#include "core/clock.h"
#include "event/event.h"
#include "event/json_int.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int (*parse_fn)(const char *json, size_t len, struct tl_arena *a, struct tl_event *ev, char *err,
                        size_t errlen);

/* CPU time of this thread: the figure does not depend on what else the
 * machine runs (wall time would, on a shared 2-core box). */
static int64_t cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Median CPU µs per line of `rounds` passes of fn over the lines of text. */
static int time_parser(parse_fn fn, const struct tl_buf *text, size_t lines, int rounds, double *us)
{
	double *r = calloc((size_t)rounds, sizeof *r);
	if (!r)
		return -TL_ENOMEM;
	struct tl_arena a;
	tl_arena_init(&a, 1 << 20, 0);
	char err[256];
	int rc = TL_OK;
	for (int k = 0; k < rounds && !rc; k++) {
		int64_t t0 = cpu_ns();
		for (size_t pos = 0, i = 0; pos < text->len; i++) {
			const char *line = text->data + pos;
			const char *nl = memchr(line, '\n', text->len - pos);
			size_t n = (size_t)(nl - line);
			struct tl_event ev;
			if (fn(line, n, &a, &ev, err, sizeof err)) {
				rc = -TL_EINVAL;
				break;
			}
			pos += n + 1;
			if ((i & 1023) == 1023)
				tl_arena_reset(&a);
		}
		r[k] = (double)(cpu_ns() - t0) / 1e3 / (double)lines;
	}
	qsort(r, (size_t)rounds, sizeof *r, cmp_double);
	*us = r[rounds / 2];
	tl_arena_free(&a);
	free(r);
	return rc;
}

/* Median CPU µs of tl_event_to_json per event over the parsed lines. */
static int time_to_json(const struct tl_buf *text, size_t lines, int rounds, double *us)
{
	struct tl_arena a;
	tl_arena_init(&a, 1 << 20, 0);
	struct tl_event *evs = calloc(lines, sizeof *evs);
	double *r = calloc((size_t)rounds, sizeof *r);
	struct tl_buf out;
	tl_buf_init(&out, 0);
	char err[256];
	int rc = evs && r ? TL_OK : -TL_ENOMEM;
	size_t n = 0;
	for (size_t pos = 0; !rc && pos < text->len && n < lines; n++) {
		const char *line = text->data + pos;
		const char *nl = memchr(line, '\n', text->len - pos);
		size_t len = (size_t)(nl - line);
		if (tl_event_from_json(line, len, &a, &evs[n], err, sizeof err))
			rc = -TL_EINVAL;
		pos += len + 1;
	}
	for (int k = 0; k < rounds && !rc; k++) {
		int64_t t0 = cpu_ns();
		for (size_t i = 0; i < n && !rc; i++) {
			tl_buf_reset(&out);
			rc = tl_event_to_json(&evs[i], &out);
		}
		r[k] = (double)(cpu_ns() - t0) / 1e3 / (double)n;
	}
	if (!rc) {
		qsort(r, (size_t)rounds, sizeof *r, cmp_double);
		*us = r[rounds / 2];
	}
	tl_buf_free(&out);
	free(evs);
	free(r);
	tl_arena_free(&a);
	return rc;
}

int tl_bench_json_run(size_t lines, int rounds, uint64_t seed, struct tl_bench_json_result *res)
{
	memset(res, 0, sizeof *res);
	if (!lines || rounds < 1)
		return -TL_EINVAL;
	struct tl_bench_mix m;
	tl_bench_mix_defaults(&m);
	m.id_prefix = "Ljsonbench0001";
	struct tl_bench_gen g;
	tl_bench_gen_init(&g, &m, seed ? seed : 42);
	struct tl_buf text;
	tl_buf_init(&text, 0);
	int rc = tl_bench_gen_batch(&g, lines, tl_now_ms(), &text);
	if (!rc)
		rc = time_parser(tl_event_from_json, &text, lines, rounds, &res->us_per_line);
	if (!rc)
		rc = time_parser(tl_event_from_json_jansson, &text, lines, rounds, &res->jansson_us_per_line);
	if (!rc) { /* the share of lines the fast path decides on its own */
		struct tl_arena a;
		tl_arena_init(&a, 1 << 20, 0);
		size_t fast = 0;
		char err[256];
		for (size_t pos = 0; pos < text.len;) {
			const char *line = text.data + pos;
			const char *nl = memchr(line, '\n', text.len - pos);
			size_t n = (size_t)(nl - line);
			struct tl_event ev;
			fast +=
			    tl_event_from_json_fast(line, n, &a, &ev, err, sizeof err) != TL_JSON_FALLBACK;
			pos += n + 1;
			tl_arena_reset(&a);
		}
		tl_arena_free(&a);
		res->fast_share = (double)fast / (double)lines;
	}
	if (!rc)
		rc = time_to_json(&text, lines, rounds, &res->to_json_us);
	res->bytes_per_line = (double)text.len / (double)lines;
	tl_buf_free(&text);
	return rc;
}
