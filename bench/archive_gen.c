/* archive_gen.c — writes a synthetic day of archived events straight into
 * the archive layout, as `tally archive` would have written it from
 * event-API traffic, for bench/batch-vs-duckdb.sh (which builds it against
 * the tally build):
 *
 *   archive_gen DIR YYYY-MM-DD EVENTS [TENANT] [CAMPAIGNS] [THREADS] [ROLL_SECONDS]
 *
 * The day of a big sender: every message is sent; most are delivered (some
 * deferred first), a few bounce (hard, soft, block) or are dropped; about a
 * third of the delivered are opened, often more than once, a good share by
 * Apple Mail Privacy Protection (agent "Mozilla/5.0") or Gmail's image proxy;
 * some openers click (1-3 links), some clicks are security scanners; a few
 * unsubscribe or complain. Recipients are the tenant-keyed hashes the
 * collector stores ("hashed":true), shared across campaigns; campaigns have
 * variants A and B (every tenth has none). Event ids are unique — no
 * duplicates — so a plain SQL count is the exact answer.
 *
 * Like the real archive: records are partitioned by recipient (8
 * partitions); opens and clicks go to `events`, the rest to `delivery`; a
 * partition's records are in arrival (= event time) order; lines are written
 * by tl_event_to_json, the archiver's own writer; a partition's file rolls at
 * 64 MiB of NDJSON or ROLL_SECONDS (default 60, the archiver's default) of
 * time; names follow src/pipeline/archive.h. Deterministic. */
#include "core/clock.h"
#include "event/event.h"
#include "stream/stream.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>
#include <zstd.h>

#define PARTS 8
#define ROLL_BYTES (64u << 20)
#define DAY_MS 86400000LL

struct gen {
	const char *dir, *tenant;
	int64_t day, msgs;
	int campaigns, threads;
	int64_t roll_ms;
	_Atomic int next_part;
	_Atomic int64_t written;
};

/* One event, compact; its strings are derived from (msg, rcpt, camp). */
struct rec {
	int64_t ts;
	int64_t msg;
	uint64_t rcpt;
	uint32_t seq;
	uint16_t camp;
	uint8_t type, extra; /* extra: bounce class, agent, link */
};

enum { UA_HUMAN0 = 0, UA_MPP = 8, UA_GMAIL, UA_SCANNER };

static const char *const human_ua[] = {
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Mobile/15E148",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 "
    "Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile "
    "Safari/537.36",
};

static uint64_t rng_next(uint64_t *s)
{
	*s += 0x9E3779B97F4A7C15ULL;
	uint64_t z = *s;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s)
{
	return (double)(rng_next(s) >> 11) / 9007199254740992.0;
}

static void die(const char *what)
{
	fprintf(stderr, "archive_gen: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void day_dir(int64_t day, char *buf, size_t cap)
{
	int64_t y;
	unsigned m, d;
	tl_civil_from_days(day, &y, &m, &d);
	snprintf(buf, cap, "dt=%04lld-%02u-%02u", (long long)y, m, d);
}

/* ---- simulating one partition's messages --------------------------------- */

struct recs {
	struct rec *v;
	size_t n, cap;
};

static void add(struct recs *rs, const struct rec *r)
{
	if (rs->n == rs->cap) {
		rs->cap = rs->cap ? rs->cap * 2 : 1 << 16;
		rs->v = realloc(rs->v, rs->cap * sizeof *rs->v);
		if (!rs->v)
			die("realloc");
	}
	rs->v[rs->n++] = *r;
}

static uint64_t recipient_of(int64_t m, int campaigns, int *camp)
{
	uint64_t s = (uint64_t)m * 0x2545F4914F6CDD1DULL + 7;
	*camp = (int)(rng_next(&s) % (uint64_t)campaigns);
	return rng_next(&s) % 6000000; /* the tenant's audience */
}

static int partition_of(uint64_t rcpt)
{
	XXH128_hash_t h = XXH3_128bits(&rcpt, sizeof rcpt);
	return (int)(h.low64 % PARTS);
}

static void simulate(const struct gen *g, int part, struct recs *ev, struct recs *dl)
{
	int64_t t0 = g->day * DAY_MS;
	for (int64_t m = 0; m < g->msgs; m++) {
		int c;
		uint64_t r = recipient_of(m, g->campaigns, &c);
		if (partition_of(r) != part)
			continue;
		uint64_t s = (uint64_t)m * 0x9E3779B97F4A7C15ULL + 11;
		struct rec e = {.msg = m, .rcpt = r, .camp = (uint16_t)c};
		int64_t sent = t0 + (int64_t)(rng_unit(&s) * 20 * 3600000.0);
#define EMIT(RS, TYPE, TS, EXTRA)                                                                            \
	do {                                                                                                 \
		e.type = (TYPE);                                                                             \
		e.ts = (TS) < t0 + DAY_MS ? (TS) : t0 + DAY_MS - 1;                                          \
		e.extra = (uint8_t)(EXTRA);                                                                  \
		add((RS), &e);                                                                               \
		e.seq++;                                                                                     \
	} while (0)
		EMIT(dl, TL_EV_SENT, sent, 0);
		double u = rng_unit(&s);
		if (u < 0.005) {
			EMIT(dl, TL_EV_DROPPED, sent + 50, 0);
			continue;
		}
		int64_t at = sent + 800 + (int64_t)(rng_unit(&s) * 4000);
		if (u < 0.045) {
			EMIT(dl, TL_EV_DEFERRED, at, 0);
			at += 60000 + (int64_t)(rng_unit(&s) * 600000);
		}
		if (u > 0.98) {
			double b = rng_unit(&s);
			EMIT(dl, TL_EV_BOUNCED, at,
			     b < 0.6   ? TL_BOUNCE_HARD
			     : b < 0.9 ? TL_BOUNCE_SOFT
			               : TL_BOUNCE_BLOCK);
			continue;
		}
		EMIT(dl, TL_EV_DELIVERED, at, 0);
		double o = rng_unit(&s);
		if (o < 0.13) /* Apple MPP fetches on delivery */
			EMIT(ev, TL_EV_OPEN, at + 3000 + (int64_t)(rng_unit(&s) * 60000), UA_MPP);
		if (o < 0.36) { /* read, maybe several times */
			int64_t when = at + 60000 + (int64_t)(rng_unit(&s) * 8 * 3600000.0);
			int opens = 1 + (rng_unit(&s) < 0.45) + (rng_unit(&s) < 0.2);
			int ua = rng_unit(&s) < 0.25 ? UA_GMAIL : (int)(r % 4);
			for (int k = 0; k < opens; k++) {
				EMIT(ev, TL_EV_OPEN, when, ua);
				when += 30000 + (int64_t)(rng_unit(&s) * 3600000.0);
			}
			if (rng_unit(&s) < 0.14) {
				int clicks = 1 + (rng_unit(&s) < 0.4) + (rng_unit(&s) < 0.15);
				for (int k = 0; k < clicks; k++)
					EMIT(ev, TL_EV_CLICK, when + 5000 + k * 20000,
					     (rng_next(&s) % 40) << 2 | (r % 4));
			}
			if (rng_unit(&s) < 0.006)
				EMIT(dl, TL_EV_UNSUBSCRIBE, when + 60000, 0);
		}
		if (rng_unit(&s) < 0.03) /* a security gateway clicks every link */
			EMIT(ev, TL_EV_CLICK, at + 1500, 0xff);
		if (rng_unit(&s) < 0.0006)
			EMIT(dl, TL_EV_COMPLAINT, at + 7200000, 0);
#undef EMIT
	}
}

static int cmp_rec(const void *a, const void *b)
{
	const struct rec *x = a, *y = b;
	if (x->ts != y->ts)
		return x->ts < y->ts ? -1 : 1;
	if (x->msg != y->msg)
		return x->msg < y->msg ? -1 : 1;
	return (x->seq > y->seq) - (x->seq < y->seq);
}

/* ---- writing one topic of one partition ----------------------------------- */

struct writer {
	const struct gen *g;
	const char *topic;
	int part;
	uint64_t first, next;
	int64_t roll_start;
	size_t raw;
	FILE *f;
	char tmp[4096];
	ZSTD_CCtx *z;
	struct tl_buf in;
	char *zout;
	size_t zcap;
};

static void zflush(struct writer *w, ZSTD_EndDirective mode)
{
	ZSTD_inBuffer in = {w->in.data, w->in.len, 0};
	for (;;) {
		ZSTD_outBuffer out = {w->zout, w->zcap, 0};
		size_t r = ZSTD_compressStream2(w->z, &out, &in, mode);
		if (ZSTD_isError(r)) {
			fprintf(stderr, "archive_gen: zstd: %s\n", ZSTD_getErrorName(r));
			exit(1);
		}
		if (out.pos && fwrite(w->zout, 1, out.pos, w->f) != out.pos)
			die("write");
		if (mode == ZSTD_e_end ? r == 0 : in.pos == in.size)
			break;
	}
	tl_buf_reset(&w->in);
}

static void roll(struct writer *w)
{
	if (!w->f)
		return;
	zflush(w, ZSTD_e_end);
	if (fclose(w->f))
		die("close");
	w->f = NULL;
	char dt[32], path[4096 + 256];
	day_dir(w->g->day, dt, sizeof dt);
	snprintf(path, sizeof path, "%s/%s/%s-p%d-%020llu-%020llu.ndjson.zst", w->g->dir, dt, w->topic,
	         w->part, (unsigned long long)w->first, (unsigned long long)(w->next - 1));
	if (rename(w->tmp, path))
		die("rename");
}

static void write_topic(const struct gen *g, const char *topic, int part, struct recs *rs)
{
	qsort(rs->v, rs->n, sizeof *rs->v, cmp_rec);
	struct writer w = {.g = g, .topic = topic, .part = part};
	w.z = ZSTD_createCCtx();
	w.zcap = ZSTD_CStreamOutSize();
	w.zout = malloc(w.zcap);
	tl_buf_init(&w.in, 0);
	char dt[32], rcpt[40], camp[32], msg[32], id[40], url[128];
	day_dir(g->day, dt, sizeof dt);
	for (size_t i = 0; i < rs->n; i++) {
		const struct rec *r = &rs->v[i];
		if (w.f && (w.raw >= ROLL_BYTES || r->ts - w.roll_start >= g->roll_ms))
			roll(&w);
		if (!w.f) {
			snprintf(w.tmp, sizeof w.tmp, "%s/%s/.%s-p%d.gen.tmp", g->dir, dt, topic, part);
			if (!(w.f = fopen(w.tmp, "wb")))
				die(w.tmp);
			ZSTD_CCtx_reset(w.z, ZSTD_reset_session_and_parameters);
			ZSTD_CCtx_setParameter(w.z, ZSTD_c_compressionLevel, 1);
			ZSTD_CCtx_setParameter(w.z, ZSTD_c_checksumFlag, 1);
			w.first = w.next;
			w.roll_start = r->ts;
			w.raw = 0;
		}
		XXH128_hash_t h = XXH3_128bits(&r->rcpt, sizeof r->rcpt);
		snprintf(rcpt, sizeof rcpt, "%016llx%016llx", (unsigned long long)h.high64,
		         (unsigned long long)h.low64);
		snprintf(camp, sizeof camp, "c%03u-newsletter", r->camp);
		snprintf(msg, sizeof msg, "m-%llx", (unsigned long long)r->msg);
		snprintf(id, sizeof id, "%llx.%u", (unsigned long long)r->msg, r->seq);
		const char *variant = r->camp % 10 == 0 ? "" : (r->rcpt & 1) ? "B" : "A";
		struct tl_event ev = {.type = r->type,
		                      .flags = TL_EVF_HASHED,
		                      .ts_ms = r->ts,
		                      .arrival_ms = r->ts,
		                      .tenant = tl_str_of(g->tenant, strlen(g->tenant)),
		                      .campaign = tl_str_of(camp, strlen(camp)),
		                      .variant = tl_str_of(variant, strlen(variant)),
		                      .recipient = tl_str_of(rcpt, 32),
		                      .message = tl_str_of(msg, strlen(msg)),
		                      .id = tl_str_of(id, strlen(id)),
		                      .provider = TL_STR("sendgrid")};
		if (r->type == TL_EV_BOUNCED)
			ev.bounce_class = r->extra;
		if (r->type == TL_EV_OPEN) {
			ev.ip = TL_STR("203.0.113.77");
			if (r->extra == UA_MPP) {
				ev.user_agent = TL_STR("Mozilla/5.0");
				ev.ip = TL_STR("17.58.101.23");
			} else if (r->extra == UA_GMAIL) {
				ev.user_agent =
				    TL_STR("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
				           "(via ggpht.com GoogleImageProxy)");
			} else {
				ev.user_agent =
				    tl_str_of(human_ua[r->extra & 3], strlen(human_ua[r->extra & 3]));
			}
		} else if (r->type == TL_EV_CLICK) {
			snprintf(url, sizeof url, "https://shop.example/%s/item-%d?utm_campaign=%s", camp,
			         r->extra == 0xff ? 0 : r->extra >> 2, camp);
			ev.url = tl_str_of(url, strlen(url));
			ev.ip = TL_STR("203.0.113.77");
			ev.user_agent =
			    r->extra == 0xff
			        ? TL_STR("Mozilla/5.0 (compatible; Barracuda Sentinel)")
			        : tl_str_of(human_ua[r->extra & 3], strlen(human_ua[r->extra & 3]));
		}
		size_t before = w.in.len;
		if (tl_event_to_json(&ev, &w.in) || tl_buf_putc(&w.in, '\n'))
			exit(1);
		w.raw += w.in.len - before;
		w.next++;
		if (w.in.len >= (1u << 20))
			zflush(&w, ZSTD_e_continue);
	}
	roll(&w);
	ZSTD_freeCCtx(w.z);
	free(w.zout);
	tl_buf_free(&w.in);
}

static void *run(void *arg)
{
	struct gen *g = arg;
	for (int p; (p = g->next_part++) < PARTS;) {
		struct recs ev = {0}, dl = {0};
		simulate(g, p, &ev, &dl);
		write_topic(g, TL_TOPIC_EVENTS, p, &ev);
		write_topic(g, TL_TOPIC_DELIVERY, p, &dl);
		g->written += (int64_t)(ev.n + dl.n);
		free(ev.v);
		free(dl.v);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: archive_gen DIR YYYY-MM-DD EVENTS [TENANT] [CAMPAIGNS] [THREADS] "
		                "[ROLL_SECONDS]\n");
		return 2;
	}
	struct gen g = {.dir = argv[1],
	                .tenant = argc > 4 ? argv[4] : "acme",
	                .campaigns = argc > 5 ? atoi(argv[5]) : 200,
	                .threads = argc > 6 ? atoi(argv[6]) : 2,
	                .roll_ms = (argc > 7 ? atoll(argv[7]) : 60) * 1000};
	long long events = strtoll(argv[3], NULL, 10);
	unsigned y, mo, d;
	if (sscanf(argv[2], "%4u-%2u-%2u", &y, &mo, &d) != 3 || events <= 0 || g.campaigns <= 0 ||
	    g.campaigns > 60000 || g.threads < 1 || g.threads > PARTS || g.roll_ms <= 0)
		return 2;
	g.day = tl_days_from_civil(y, mo, d);
	g.msgs = (int64_t)((double)events / 2.6); /* about 2.6 events per message with the rates above */
	char dt[32], path[4096];
	day_dir(g.day, dt, sizeof dt);
	snprintf(path, sizeof path, "%s/%s", g.dir, dt);
	if (mkdir(g.dir, 0755) && errno != EEXIST)
		die(g.dir);
	if (mkdir(path, 0755) && errno != EEXIST)
		die(path);
	pthread_t th[PARTS];
	for (int i = 0; i < g.threads; i++)
		if (pthread_create(&th[i], NULL, run, &g))
			die("pthread_create");
	for (int i = 0; i < g.threads; i++)
		pthread_join(th[i], NULL);
	printf("%lld\n", (long long)g.written);
	return 0;
}
