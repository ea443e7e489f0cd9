/* aggbench.c — `tally bench agg`: the aggregator's apply path alone
 * (tl_fold_add + tl_fold_apply on a real store), without HTTP, streams or
 * other threads: what one event costs the aggregator in CPU at a given batch
 * size, as the reporting DB grows. Events follow the load mix (mix.c): same
 * types, campaigns, variants and recipient spread, recipients already
 * hashed as the collector hashes them. */
#include "bench/bench.h"

#include "core/arena.h"
#include "core/clock.h"
#include "event/event.h"
#include "event/token.h"
#include "pipeline/fold.h"
#include "store/store.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void tl_bench_agg_defaults(struct tl_bench_agg_opts *o)
{
	memset(o, 0, sizeof *o);
	o->events = 2000000;
	o->batch = 5000;
	tl_bench_mix_defaults(&o->mix);
}

int tl_bench_agg_run(const struct tl_bench_agg_opts *o, struct tl_bench_agg_result *res)
{
	memset(res, 0, sizeof *res);
	if (!o->db_uri || o->batch < 1 || o->events < 1)
		return -TL_EINVAL;
	struct tl_store *st = NULL;
	struct tl_fold *fold = NULL;
	struct tl_buf text;
	tl_buf_init(&text, 0);
	struct tl_arena arena;
	tl_arena_init(&arena, 1 << 20, 0);
	static const unsigned char salt[TL_KEY_BYTES] = {1, 2, 3};
	struct tl_event *evs = calloc((size_t)o->batch, sizeof *evs);
	int rc = evs ? tl_store_open(o->db_uri, &st) : -TL_ENOMEM;
	if (!rc)
		rc = tl_fold_create((size_t)o->batch, &fold);
	struct tl_bench_mix m = o->mix;
	if (!m.id_prefix)
		m.id_prefix = "A";
	struct tl_bench_gen g;
	tl_bench_gen_init(&g, &m, 7);
	int64_t cpu = 0, wall = 0, done = 0, batches = 0;
	int64_t last_report = tl_mono_ns();
	uint64_t next = 0;
	while (!rc && done < o->events) {
		/* a batch of events as the collector would pass them on */
		tl_buf_reset(&text);
		tl_arena_reset(&arena);
		int64_t now = tl_now_ms();
		if ((rc = tl_bench_gen_batch(&g, (size_t)o->batch, now, &text)))
			break;
		size_t ne = 0;
		for (size_t pos = 0; pos < text.len && !rc;) {
			const char *line = text.data + pos;
			const char *nl = memchr(line, '\n', text.len - pos);
			size_t n = (size_t)(nl - line);
			pos += n + 1;
			struct tl_event *ev = &evs[ne];
			char err[256];
			if ((rc = tl_event_from_json(line, n, &arena, ev, err, sizeof err)))
				break;
			char *h = tl_arena_alloc(&arena, TL_RCPT_HASH_LEN + 1);
			if (!h) {
				rc = -TL_ENOMEM;
				break;
			}
			tl_recipient_hash(salt, sizeof salt, ev->recipient.p, ev->recipient.n, h);
			ev->recipient = tl_str_of(h, TL_RCPT_HASH_LEN);
			ev->tenant = TL_STR("bench");
			ev->flags |= TL_EVF_HASHED | TL_EVF_ENRICHED;
			ev->arrival_ms = now;
			ne++;
		}
		/* generating and parsing are the collector's work: the aggregator's starts here */
		int64_t c0 = cpu_ns(), w0 = tl_mono_ns();
		for (size_t i = 0; i < ne && !rc; i++)
			rc = tl_fold_add(fold, &evs[i]);
		struct tl_offset off = {"delivery", 0, next += (uint64_t)o->batch};
		struct tl_fold_stats s;
		if (!rc)
			rc = tl_fold_apply(fold, st, TL_SOURCE_REALTIME, "bench", &off, 1, &s);
		tl_fold_reset(fold);
		cpu += cpu_ns() - c0;
		wall += tl_mono_ns() - w0;
		done += o->batch;
		batches++;
		if (o->progress && tl_mono_ns() - last_report > 5000000000LL) {
			last_report = tl_mono_ns();
			fprintf(o->progress, "agg: %lld events, %.2f CPU us/event so far\n", (long long)done,
			        (double)cpu / 1e3 / (double)done);
		}
	}
	res->events = done;
	res->batches = batches;
	res->cpu_us_per_event = done ? (double)cpu / 1e3 / (double)done : 0;
	res->wall_us_per_event = done ? (double)wall / 1e3 / (double)done : 0;
	res->cpu_ms_per_batch = batches ? (double)cpu / 1e6 / (double)batches : 0;
	tl_fold_destroy(fold);
	tl_store_close(st);
	free(evs);
	tl_buf_free(&text);
	tl_arena_free(&arena);
	return rc;
}
