/* Unit tests of the batch recompute (src/batch): the fast line parser
 * against tl_event_from_json, the day state files, and tl_batch_run over an
 * archive written in the archiver's layout — its numbers equal the streaming
 * fold's on the same events (checked by tl_reconcile), uniques count once
 * per campaign across days whatever order days are recomputed in, a re-run
 * replaces a day instead of adding to it, a failed run changes nothing, and
 * reconcile names a tampered number. */
#include "batch/batch.h"
#include "batch/memstore.h"
#include "batch/reader.h"
#include "batch/reconcile.h"
#include "batch/state.h"
#include "core/clock.h"
#include "event/metrics.h"
#include "event/token.h"
#include "pipeline/archive.h"
#include "pipeline/enrich.h"
#include "pipeline/fold.h"
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <cmocka.h>

#define DAY_MS 86400000LL
#define D0 20424LL /* 2025-12-02 */

/* ---- the fast parser ------------------------------------------------------ */

static uint64_t rng_state = 42;
static uint64_t rnd(void)
{
	rng_state += 0x9E3779B97F4A7C15ULL;
	uint64_t z = rng_state;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

static bool str_eq(struct tl_str a, struct tl_str b)
{
	return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0) && (a.p == NULL) == (b.p == NULL);
}

static void assert_same_event(const struct tl_event *a, const struct tl_event *b, const char *line)
{
	bool same = a->type == b->type && a->bounce_class == b->bounce_class && a->flags == b->flags &&
	            a->ts_ms == b->ts_ms && a->arrival_ms == b->arrival_ms && a->sent_ms == b->sent_ms &&
	            a->src_offset == b->src_offset && str_eq(a->tenant, b->tenant) &&
	            str_eq(a->campaign, b->campaign) && str_eq(a->variant, b->variant) &&
	            str_eq(a->recipient, b->recipient) && str_eq(a->message, b->message) &&
	            str_eq(a->id, b->id) && str_eq(a->url, b->url) && str_eq(a->user_agent, b->user_agent) &&
	            str_eq(a->ip, b->ip) && str_eq(a->provider, b->provider) && str_eq(a->token, b->token);
	if (!same)
		fail_msg("fast and full parser disagree on: %s", line);
}

/* Checks one line: when the fast path accepts it, the full parser accepts it
 * too with the same event. Returns whether the fast path took it. */
static bool check_line(const char *line, size_t n)
{
	struct tl_arena a;
	tl_arena_init(&a, 4096, 0);
	struct tl_event fast, full;
	char err[160];
	int f = tl_batch_parse_fast(line, n, &fast);
	int rc = tl_event_from_json(line, n, &a, &full, err, sizeof err);
	if (f == 0) {
		if (rc)
			fail_msg("the fast path accepts what the full parser refuses (%s): %.*s", err, (int)n,
			         line);
		assert_same_event(&fast, &full, line);
	}
	/* and tl_batch_parse_line answers like the full parser */
	struct tl_event ev;
	assert_int_equal(tl_batch_parse_line(line, n, &a, &ev, err, sizeof err), rc);
	tl_arena_free(&a);
	return f == 0;
}

static const char *pick(const char *const *v, size_t n)
{
	return v[rnd() % n];
}

static void random_event(struct tl_event *e, char *token_buf)
{
	static const char *const agents[] = {"Mozilla/5.0",
	                                     "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X)",
	                                     "curl/8.1",
	                                     "Outlook \"quoted\" agent",
	                                     "Agent\\with\\backslashes",
	                                     "Ünïcödé Agent/1.0",
	                                     "tab\there"};
	static const char *const campaigns[] = {"spring-sale", "c1", "a/b test", "x"};
	memset(e, 0, sizeof *e);
	e->type = (uint8_t)(1 + rnd() % 9);
	e->ts_ms = (int64_t)(rnd() % 253402300799999ULL) + 1;
	if (rnd() % 2)
		e->arrival_ms = e->ts_ms + (int64_t)(rnd() % 100000);
	e->tenant = TL_STR("acme");
	e->campaign = tl_str_of(pick(campaigns, 4), strlen(campaigns[0]));
	e->campaign.n = (uint32_t)strlen(e->campaign.p);
	e->variant = rnd() % 3 ? TL_STR("B") : TL_STR_NULL;
	e->recipient = TL_STR("0123456789abcdef0123456789abcdef");
	e->message = rnd() % 2 ? TL_STR("m-1") : TL_STR_NULL;
	e->id = TL_STR("evt-7f3a");
	e->provider = rnd() % 2 ? TL_STR("sendgrid") : TL_STR_NULL;
	if (rnd() % 4 == 0)
		e->flags |= TL_EVF_HASHED;
	if (e->type == TL_EV_BOUNCED)
		e->bounce_class = (uint8_t)(rnd() % 4);
	if (e->type == TL_EV_OPEN || e->type == TL_EV_CLICK) {
		const char *ua = pick(agents, 7);
		e->user_agent = tl_str_of(ua, strlen(ua));
		e->ip = TL_STR("203.0.113.7");
		if (rnd() % 3 == 0)
			e->flags |= TL_EVF_HEAD;
		if (e->type == TL_EV_OPEN && rnd() % 3 == 0)
			e->flags |= TL_EVF_PROVIDER_MACHINE;
		if (e->type == TL_EV_CLICK) {
			e->url = TL_STR("https://shop.example/sale?x=1&y=\"2\"");
			if (rnd() % 3 == 0)
				e->flags |= TL_EVF_BOT;
		}
		if (rnd() % 3 == 0) { /* a raw hit */
			snprintf(token_buf, 64, "v1.AQK4k-DSx2gEYWNtZQ.oHGIG0JWu0lsLrCcNta%llx",
			         (unsigned long long)rnd());
			e->token = tl_str_of(token_buf, strlen(token_buf));
			e->flags |= TL_EVF_HIT;
			e->campaign = e->recipient = e->tenant = TL_STR_NULL;
		}
	}
}

static void test_parse_equivalence(void **state)
{
	(void)state;
	char token[64];
	size_t fast = 0, canonical = 0, lines = 0;
	for (int i = 0; i < 20000; i++) {
		struct tl_event e;
		random_event(&e, token);
		struct tl_buf b;
		tl_buf_init(&b, 0);
		assert_int_equal(tl_event_to_json(&e, &b), 0);
		bool plain = true;
		for (size_t k = 0; k < b.len; k++)
			plain &= b.data[k] != '\\' && (unsigned char)b.data[k] < 0x80;
		bool f = check_line(b.data, b.len);
		lines++;
		fast += f;
		canonical += plain;
		if (plain && !f)
			fail_msg("a canonical ASCII line missed the fast path: %s", b.data);
		/* mutations: each must be either refused by the fast path or parsed identically */
		char m[TL_MAX_EVENT_JSON + 64];
		size_t n = b.len;
		for (int k = 0; k < 12; k++) {
			memcpy(m, b.data, n);
			size_t len = n, at = 1 + rnd() % (n - 1);
			switch (k) {
			case 0:
				m[at] = ' ';
				break; /* a space anywhere */
			case 1:
				m[at] = (char)(rnd() % 256);
				break; /* any byte anywhere */
			case 2:
				len = at;
				break; /* cut */
			case 3:
				memmove(m + at + 1, m + at, n - at), m[at] = '"', len++;
				break;
			case 4:
				memmove(m + at + 1, m + at, n - at), m[at] = ',', len++;
				break;
			case 5: /* an unknown key */
				len = (size_t)snprintf(m, sizeof m, "{\"zzz\":1,%.*s", (int)(n - 1),
				                       b.data + 1);
				break;
			case 6: /* a repeated key */
				len = (size_t)snprintf(m, sizeof m, "{\"id\":\"dup\",%.*s", (int)(n - 1),
				                       b.data + 1);
				break;
			case 7: /* a null value */
				len = (size_t)snprintf(m, sizeof m, "{\"variant\":null,%.*s", (int)(n - 1),
				                       b.data + 1);
				break;
			case 8: /* false */
				len = (size_t)snprintf(m, sizeof m, "{\"hashed\":false,%.*s", (int)(n - 1),
				                       b.data + 1);
				break;
			case 9: /* an empty string */
				len = (size_t)snprintf(m, sizeof m, "{\"message\":\"\",%.*s", (int)(n - 1),
				                       b.data + 1);
				break;
			case 10: /* a number where a string belongs */
				len = (size_t)snprintf(m, sizeof m, "{\"url\":5,%.*s", (int)(n - 1),
				                       b.data + 1);
				break;
			default: /* trailing garbage */
				memcpy(m + n, "x", 1), len = n + 1;
			}
			check_line(m, len);
		}
		tl_buf_free(&b);
	}
	assert_true(canonical > lines / 2);
	assert_int_equal(fast, canonical);

	/* timestamps: the fast path takes only the canonical form, others go to the full parser */
	static const char *const ts[] = {
	    "2026-12-03T18:00:00.123Z",      "2026-12-03T18:00:00Z",
	    "2026-12-03T19:00:00.123+01:00", "2026-02-29T00:00:00.000Z",
	    "2024-02-29T00:00:00.000Z",      "2026-12-03T24:00:00.000Z",
	    "2026-12-03T23:59:60.000Z",      "2026-13-03T00:00:00.000Z",
	    "0000-01-01T00:00:00.000Z",      "1970-01-01T00:00:00.000Z",
	    "1970-01-01T00:00:00.001Z",      "9999-12-31T23:59:59.999Z",
	    "2026-12-03t18:00:00.123z",      "2026-12-03",
	    "2026-04-31T00:00:00.000Z",      "1900-02-29T00:00:00.000Z",
	    "2000-02-29T12:34:56.789Z",
	};
	for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
		char line[256];
		int n = snprintf(
		    line, sizeof line,
		    "{\"type\":\"sent\",\"tenant\":\"a\",\"campaign\":\"c\",\"recipient\":\"r\",\"id\":\"i\","
		    "\"ts\":\"%s\",\"arrival\":\"%s\"}",
		    ts[i], ts[(i + 3) % (sizeof ts / sizeof ts[0])]);
		check_line(line, (size_t)n);
	}
	for (int i = 0; i < 20000;
	     i++) { /* every canonical time, parsed the fast way, equals the full parse */
		int64_t ms = (int64_t)(rnd() % 253402300799999ULL) + 1, a = 0, b = 0;
		char t[TL_TIME_ISO_MAX], line[160];
		size_t tn = tl_time_format_iso(ms, t, sizeof t);
		assert_int_equal(tl_time_parse_iso(t, tn, &a), 0);
		int n = snprintf(
		    line, sizeof line,
		    "{\"type\":\"sent\",\"campaign\":\"c\",\"recipient\":\"r\",\"id\":\"i\",\"ts\":\"%s\"}",
		    t);
		struct tl_event ev;
		assert_int_equal(tl_batch_parse_fast(line, (size_t)n, &ev), 0);
		b = ev.ts_ms;
		assert_int_equal(a, ms);
		assert_int_equal(b, ms);
	}
	/* runs of times on a few days, as in an archive file (the fast path
	 * remembers the last date it converted), with bad dates and hours
	 * after good ones of the same month and day */
	static const char *const after[] = {"2026-02-29T00:00:00.000Z", "2026-12-03T24:00:00.000Z",
	                                    "2026-12-32T00:00:00.000Z"};
	for (int i = 0; i < 3000; i++) {
		int64_t ms = 1796083200000LL + (int64_t)(rnd() % (4 * 86400000ULL)), a = 0;
		char t[TL_TIME_ISO_MAX], line[160];
		size_t tn = tl_time_format_iso(ms, t, sizeof t);
		assert_int_equal(tl_time_parse_iso(t, tn, &a), 0);
		int n = snprintf(line, sizeof line,
		                 "{\"type\":\"sent\",\"campaign\":\"c\",\"recipient\":\"r\",\"id\":\"i\","
		                 "\"ts\":\"%s\"}",
		                 i % 100 == 99 ? after[i / 100 % 3] : t);
		if (i % 100 == 99) {
			check_line(line, (size_t)n); /* rejected or taken exactly as the full parser does */
			continue;
		}
		struct tl_event ev;
		assert_int_equal(tl_batch_parse_fast(line, (size_t)n, &ev), 0);
		assert_int_equal(ev.ts_ms, ms);
	}
}

/* ---- state files ------------------------------------------------------------ */

struct dir {
	char path[64];
};

static void mktmp(struct dir *d, const char *what)
{
	snprintf(d->path, sizeof d->path, "/tmp/tally-%s-XXXXXX", what);
	assert_non_null(mkdtemp(d->path));
}

static void rmtmp(struct dir *d)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", d->path);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup of %s failed\n", d->path);
}

static void test_state_files(void **state)
{
	(void)state;
	struct dir d;
	mktmp(&d, "bstate");
	uint8_t fps[5 * TL_FP_BYTES];
	for (size_t i = 0; i < sizeof fps; i++)
		fps[i] = (uint8_t)rnd();
	const char *va[] = {"A", "B"}, *vnone[] = {""};
	/* autumn's section is written from two pieces (as the batch hands them) */
	const struct tl_bstate_chunk pieces[] = {{fps + 48, 1}, {fps + 64, 1}};
	struct tl_bstate_campaign c[] = {
	    {.tenant = "acme", .campaign = "spring", .variants = va, .n_variants = 2, .fps = fps, .count = 3},
	    {.tenant = "acme",
	     .campaign = "autumn",
	     .variants = vnone,
	     .n_variants = 1,
	     .chunks = pieces,
	     .n_chunks = 2,
	     .count = 2},
	    {.tenant = "beta",
	     .campaign = "spring",
	     .variants = NULL,
	     .n_variants = 0,
	     .fps = NULL,
	     .count = 0},
	};
	assert_int_equal(tl_bstate_write(d.path, D0, 77, c, 3), 0);
	assert_int_equal(tl_bstate_write(d.path, D0, 78, c, 1), 0);
	char path[256];
	assert_int_equal(tl_bstate_path(d.path, D0, 77, path, sizeof path), 0);
	struct tl_bstate *s;
	assert_int_equal(tl_bstate_open(path, &s), 0);
	assert_int_equal(s->runid, 77);
	assert_int_equal(s->day, D0);
	assert_int_equal(s->n, 3);
	const struct tl_bstate_campaign *e = tl_bstate_find(s, "acme", "spring");
	assert_non_null(e);
	assert_int_equal(e->n_variants, 2);
	assert_string_equal(e->variants[1], "B");
	uint8_t got[5 * TL_FP_BYTES];
	assert_int_equal(tl_bstate_members(s, e, got), 0);
	assert_memory_equal(got, fps, 3 * TL_FP_BYTES);
	e = tl_bstate_find(s, "acme", "autumn");
	assert_non_null(e);
	assert_string_equal(e->variants[0], "");
	assert_int_equal(tl_bstate_members(s, e, got), 0);
	assert_memory_equal(got, fps + 48, 2 * TL_FP_BYTES);
	assert_null(tl_bstate_find(s, "acme", "winter"));
	assert_non_null(tl_bstate_find(s, "beta", "spring"));

	/* a flipped byte in a section is caught when that section is read */
	e = tl_bstate_find(s, "acme", "spring");
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	uint8_t x;
	assert_int_equal(pread(fd, &x, 1, (off_t)e->offset + 5), 1);
	x ^= 1;
	assert_int_equal(pwrite(fd, &x, 1, (off_t)e->offset + 5), 1);
	assert_int_equal(tl_bstate_members(s, e, got), -TL_ECORRUPT);
	tl_bstate_close(s);
	/* and one in the index when the file is opened */
	assert_int_equal(pwrite(fd, "Z", 1, 45), 1);
	close(fd);
	assert_int_equal(tl_bstate_open(path, &s), -TL_ECORRUPT);

	/* prune keeps only the named run */
	assert_int_equal(tl_bstate_prune(d.path, D0, 78), 0);
	assert_int_equal(tl_bstate_open(path, &s), -TL_ENOTFOUND);
	assert_int_equal(tl_bstate_path(d.path, D0, 78, path, sizeof path), 0);
	assert_int_equal(tl_bstate_open(path, &s), 0);
	tl_bstate_close(s);
	rmtmp(&d);
}

/* ---- the recompute ------------------------------------------------------------ */

struct world {
	struct dir d;
	char arch[128], state[128], uri[160];
	struct tl_store *st;
	struct tl_tenant tenant;
	struct tl_event *evs; /* every event written, per file */
	size_t n;
	char **strings;
	size_t n_strings;
};

static const char *keep(struct world *w, const char *s)
{
	w->strings = realloc(w->strings, (w->n_strings + 1) * sizeof *w->strings);
	w->strings[w->n_strings] = strdup(s);
	return w->strings[w->n_strings++];
}

static int w_setup(void **state)
{
	struct world *w = calloc(1, sizeof *w);
	mktmp(&w->d, "batch");
	snprintf(w->arch, sizeof w->arch, "%s/archive", w->d.path);
	snprintf(w->state, sizeof w->state, "%s/batch", w->d.path);
	snprintf(w->uri, sizeof w->uri, "sqlite:%s/t.db", w->d.path);
	assert_int_equal(tl_store_open(w->uri, &w->st), 0);
	char key[TL_API_KEY_MAX];
	assert_int_equal(tl_store_tenant_add(w->st, "acme", &w->tenant, key), 0);
	*state = w;
	return 0;
}

static int w_teardown(void **state)
{
	struct world *w = *state;
	tl_store_close(w->st);
	rmtmp(&w->d);
	for (size_t i = 0; i < w->n_strings; i++)
		free(w->strings[i]);
	free(w->strings);
	free(w->evs);
	free(w);
	return 0;
}

/* Writes events as one archive file of (topic, partition) in its day dir. */
static void write_file(struct world *w, const char *topic, int part, uint64_t first,
                       const struct tl_event *evs, size_t n, bool corrupt)
{
	char dt[32], dir[256], path[512], name[TL_ARCHIVE_NAME_MAX];
	assert_true(tl_archive_day_format(tl_archive_day_of(evs[0].ts_ms), dt, sizeof dt) > 0);
	mkdir(w->arch, 0755);
	snprintf(dir, sizeof dir, "%s/%s", w->arch, dt);
	mkdir(dir, 0755);
	struct tl_archive_name nm = {.partition = part, .first = first, .last = first + n - 1};
	snprintf(nm.topic, sizeof nm.topic, "%s", topic);
	assert_true(tl_archive_name_format(&nm, name, sizeof name) > 0);
	snprintf(path, sizeof path, "%s/%s", dir, name);
	struct tl_buf b;
	tl_buf_init(&b, 0);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(tl_event_to_json(&evs[i], &b), 0);
		assert_int_equal(tl_buf_putc(&b, '\n'), 0);
	}
	size_t cap = ZSTD_compressBound(b.len);
	char *z = malloc(cap);
	size_t zn = ZSTD_compress(z, cap, b.data, b.len, 1);
	assert_false(ZSTD_isError(zn));
	if (corrupt)
		zn /= 2; /* a truncated frame */
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(z, 1, zn, f), zn);
	fclose(f);
	free(z);
	tl_buf_free(&b);
}

static struct tl_event mk(struct world *w, enum tl_event_type type, const char *campaign, const char *variant,
                          int rcpt, int64_t ts, const char *id)
{
	char r[40];
	snprintf(r, sizeof r, "%032d", rcpt);
	struct tl_event e = {
	    .type = (uint8_t)type, .flags = TL_EVF_HASHED, .ts_ms = ts, .arrival_ms = ts + 5};
	e.tenant = TL_STR("acme");
	e.campaign = tl_str_of(keep(w, campaign), strlen(campaign));
	e.variant = tl_str_of(keep(w, variant), strlen(variant));
	const char *rr = keep(w, r);
	e.recipient = tl_str_of(rr, strlen(rr));
	const char *ii = keep(w, id);
	e.id = tl_str_of(ii, strlen(ii));
	if (type == TL_EV_OPEN || type == TL_EV_CLICK)
		e.user_agent = TL_STR("Mozilla/5.0 (X11; Linux x86_64)");
	if (type == TL_EV_CLICK)
		e.url = TL_STR("https://shop.example/x");
	return e;
}

/* A signed open hit for recipient "rcpt-<n>" (the enricher hashes it). */
static struct tl_event hit(struct world *w, const char *campaign, int rcpt, int64_t ts, const char *id,
                           bool forged)
{
	char r[32];
	snprintf(r, sizeof r, "rcpt-%d", rcpt);
	struct tl_token t = {.kind = TL_TOKEN_OPEN, .issued_ms = ts - 3600000};
	t.tenant = TL_STR("acme");
	t.campaign = tl_str_of(campaign, strlen(campaign));
	t.variant = TL_STR("A");
	t.message = TL_STR("m-1");
	t.recipient = tl_str_of(r, strlen(r));
	struct tl_buf b;
	tl_buf_init(&b, 0);
	unsigned char key[TL_KEY_BYTES];
	memcpy(key, w->tenant.link_key, sizeof key);
	if (forged)
		key[0] ^= 1;
	assert_int_equal(tl_token_mint(&t, key, sizeof key, &b), 0);
	struct tl_event e = {.type = TL_EV_OPEN, .flags = TL_EVF_HIT, .ts_ms = ts, .arrival_ms = ts};
	const char *tok = keep(w, b.data);
	e.token = tl_str_of(tok, strlen(tok));
	e.user_agent = TL_STR("Mozilla/5.0");
	const char *ii = keep(w, id);
	e.id = tl_str_of(ii, strlen(ii));
	tl_buf_free(&b);
	return e;
}

/* The same events through the streaming path: tl_enrich_event on the
 * `events` ones, tl_fold into the real-time tables. */
static const struct tl_tenant *one_tenant(void *arg, const char *name, size_t len)
{
	const struct tl_tenant *t = arg;
	return strlen(t->name) == len && !memcmp(t->name, name, len) ? t : NULL;
}

static void realtime(struct world *w, const struct tl_event *evs, size_t n, bool events_topic)
{
	struct tl_fold *f;
	assert_int_equal(tl_fold_create(n + 1, &f), 0);
	struct tl_enrich_ctx ctx = {.lookup = one_tenant, .lookup_arg = &w->tenant};
	tl_classify_defaults(&ctx.classify);
	for (size_t i = 0; i < n; i++) {
		struct tl_event e = evs[i];
		struct tl_enrich_scratch scratch;
		const char *reason;
		if (events_topic && tl_enrich_event(&ctx, &e, &scratch, &reason))
			continue;
		assert_int_equal(tl_fold_add(f, &e), 0);
	}
	assert_int_equal(tl_fold_apply(f, w->st, TL_SOURCE_REALTIME, "aggregate", NULL, 0, NULL), 0);
	tl_fold_destroy(f);
}

static int write_from_pct; /* of the runs below: 0 = the default */

static int run_batch(struct world *w, int64_t from, int64_t to, struct tl_batch_stats *st)
{
	struct tl_batch_opts o = {.archive_dir = w->arch,
	                          .state_dir = w->state,
	                          .db_uri = w->uri,
	                          .from_day = from,
	                          .to_day = to,
	                          .threads = 2,
	                          .fold_events = 7,
	                          .write_from_pct = write_from_pct};
	tl_classify_defaults(&o.classify);
	return tl_batch_run(&o, st);
}

static void batch_ok(struct world *w, int64_t from, int64_t to)
{
	struct tl_batch_stats st;
	int rc = run_batch(w, from, to, &st);
	if (rc)
		fail_msg("batch %lld..%lld: %s", (long long)from, (long long)to, st.error);
}

static void totals(struct world *w, enum tl_source src, const char *campaign, const char *variant,
                   int64_t c[TL_M__COUNT])
{
	struct tl_campaign_summary s;
	int rc = tl_store_campaign(w->st, src, "acme", campaign, variant, &s);
	if (rc == -TL_ENOTFOUND) {
		memset(c, 0, TL_M__COUNT * sizeof *c);
		return;
	}
	assert_int_equal(rc, 0);
	memcpy(c, s.counts, TL_M__COUNT * sizeof *c);
}

static size_t reconcile(struct world *w, int64_t from, int64_t to, struct tl_reconcile_result *r)
{
	struct tl_reconcile_opts o = {
	    .db_uri = w->uri, .archive_dir = w->arch, .state_dir = w->state, .from_day = from, .to_day = to};
	assert_int_equal(tl_reconcile(&o, r), 0);
	return r->n_diffs + r->n_notes;
}

/* Two days of events: recipients who open on both days, duplicates within a
 * day, hits (one forged), a variant-less campaign. */
static void two_days(struct world *w)
{
	int64_t t1 = D0 * DAY_MS + 3600000, t2 = (D0 + 1) * DAY_MS + 7200000;
	struct tl_event ev1[] = {
	    mk(w, TL_EV_OPEN, "spring", "A", 1, t1, "o1"),
	    mk(w, TL_EV_OPEN, "spring", "A", 1, t1 + 60000, "o2"),
	    mk(w, TL_EV_OPEN, "spring", "A", 1, t1 + 60000, "o2"), /* duplicate id */
	    mk(w, TL_EV_OPEN, "spring", "B", 2, t1 + 120000, "o3"),
	    mk(w, TL_EV_CLICK, "spring", "B", 2, t1 + 180000, "c1"),
	    mk(w, TL_EV_OPEN, "plain", "", 9, t1 + 5000, "p1"),
	    hit(w, "spring", 77, t1 + 240000, "h1", false),
	    hit(w, "spring", 78, t1 + 240000, "h2", true), /* forged: rejected */
	};
	struct tl_event dl1[] = {
	    mk(w, TL_EV_SENT, "spring", "A", 1, t1 - 600000, "s1"),
	    mk(w, TL_EV_SENT, "spring", "B", 2, t1 - 600000, "s2"),
	    mk(w, TL_EV_DELIVERED, "spring", "A", 1, t1 - 590000, "d1"),
	    mk(w, TL_EV_SENT, "plain", "", 9, t1 - 600000, "s9"),
	    mk(w, TL_EV_SENT, "plain", "", 9, t1 - 600000, "s9"), /* duplicate id */
	};
	struct tl_event ev2[] = {
	    mk(w, TL_EV_OPEN, "spring", "A", 1, t2, "o4"),         /* unique on day 1 already */
	    mk(w, TL_EV_OPEN, "spring", "A", 3, t2 + 1000, "o5"),  /* new on day 2 */
	    mk(w, TL_EV_CLICK, "spring", "A", 1, t2 + 2000, "c2"), /* first click of 1: day 2 */
	    mk(w, TL_EV_OPEN, "plain", "", 9, t2 + 3000, "p2"),
	    hit(w, "spring", 77, t2 + 240000, "h3", false), /* the same recipient as h1 */
	};
	struct tl_event dl2[] = {
	    mk(w, TL_EV_BOUNCED, "spring", "B", 4, t2 - 1000, "b1"),
	};
	dl2[0].bounce_class = TL_BOUNCE_HARD;
	write_file(w, TL_TOPIC_EVENTS, 0, 0, ev1, 8, false);
	write_file(w, TL_TOPIC_DELIVERY, 0, 0, dl1, 3, false);
	write_file(w, TL_TOPIC_DELIVERY, 1, 0, dl1 + 3, 2, false);
	write_file(w, TL_TOPIC_EVENTS, 0, 8, ev2, 5, false);
	write_file(w, TL_TOPIC_DELIVERY, 0, 3, dl2, 1, false);
	realtime(w, ev1, 8, true);
	realtime(w, dl1, 5, false);
	realtime(w, ev2, 5, true);
	realtime(w, dl2, 1, false);
}

static void assert_batch_equals_realtime(struct world *w)
{
	static const char *const camps[] = {"spring", "plain"};
	static const char *const vars[] = {NULL, "A", "B", ""};
	for (size_t c = 0; c < 2; c++)
		for (size_t v = 0; v < 4; v++) {
			int64_t rt[TL_M__COUNT], bt[TL_M__COUNT];
			totals(w, TL_SOURCE_REALTIME, camps[c], vars[v], rt);
			totals(w, TL_SOURCE_BATCH, camps[c], vars[v], bt);
			for (int m = 0; m < TL_M__COUNT; m++)
				if (rt[m] != bt[m])
					fail_msg("%s/%s %s: realtime %lld, batch %lld", camps[c],
					         vars[v] ? vars[v] : "*", tl_metric_name((enum tl_metric)m),
					         (long long)rt[m], (long long)bt[m]);
		}
}

static void test_batch_equals_stream(void **state)
{
	struct world *w = *state;
	two_days(w);
	/* day by day, then the second day again, then the first: order does not matter */
	batch_ok(w, D0, D0);
	batch_ok(w, D0 + 1, D0 + 1);
	assert_batch_equals_realtime(w);
	batch_ok(w, D0 + 1, D0 + 1);
	batch_ok(w, D0, D0);
	assert_batch_equals_realtime(w);
	/* by hand: spring has unique opens 1, 2, 3, hit 77 = 4, opens 4 + 3; clicks 2 (rcpt 2 and 1) */
	int64_t c[TL_M__COUNT];
	totals(w, TL_SOURCE_BATCH, "spring", NULL, c);
	assert_int_equal(c[TL_M_UNIQUE_OPENS], 4);
	assert_int_equal(c[TL_M_OPENS], 7);
	assert_int_equal(c[TL_M_UNIQUE_CLICKS], 2);
	assert_int_equal(c[TL_M_SENT], 2);
	assert_int_equal(c[TL_M_HARD_BOUNCED], 1);
	totals(w, TL_SOURCE_BATCH, "plain", "", c);
	assert_int_equal(c[TL_M_SENT], 1);
	assert_int_equal(c[TL_M_UNIQUE_OPENS], 1);
	/* both days in one run: the same */
	batch_ok(w, D0, D0 + 1);
	assert_batch_equals_realtime(w);

	struct tl_reconcile_result r;
	if (reconcile(w, D0, D0 + 1, &r))
		fail_msg("reconcile: %zu differences, %zu notes (%s)", r.n_diffs, r.n_notes,
		         r.n_notes ? r.notes[0] : "");
	assert_true(r.comparisons > 0);
	tl_reconcile_free(&r);
	assert_int_equal(reconcile(w, D0 + 1, D0 + 1, &r), 0);
	tl_reconcile_free(&r);
}

/* Unique counts are compared only when every archived day of the campaign
 * was recomputed: with day 2 alone, reconcile says what to run. */
static void test_reconcile_coverage(void **state)
{
	struct world *w = *state;
	two_days(w);
	batch_ok(w, D0 + 1, D0 + 1);
	struct tl_reconcile_result r;
	assert_true(reconcile(w, D0 + 1, D0 + 1, &r) > 0);
	assert_int_equal(r.n_diffs, 0); /* the additive metrics of day 2 agree */
	assert_true(r.n_notes >= 1);
	assert_non_null(strstr(r.notes[0], "tally batch --from 2025-12-02 --to 2025-12-03"));
	tl_reconcile_free(&r);
	assert_true(reconcile(w, D0, D0, &r) > 0); /* day 1 not recomputed at all */
	tl_reconcile_free(&r);
}

/* A number changed in the real-time tables is named: campaign, variant, metric. */
static void test_reconcile_names_difference(void **state)
{
	struct world *w = *state;
	two_days(w);
	batch_ok(w, D0, D0 + 1);
	/* one more real-time click of spring/B on day 1, counted nowhere else */
	struct tl_event extra = mk(w, TL_EV_CLICK, "spring", "B", 2, D0 * DAY_MS + 9000000, "extra");
	realtime(w, &extra, 1, false);
	struct tl_reconcile_result r;
	assert_int_equal(reconcile(w, D0, D0 + 1, &r), 2); /* (all) and B */
	for (size_t i = 0; i < r.n_diffs; i++) {
		assert_string_equal(r.diffs[i].campaign, "spring");
		assert_int_equal(r.diffs[i].metric, TL_M_CLICKS);
		assert_true(!r.diffs[i].variant || !strcmp(r.diffs[i].variant, "B"));
		assert_int_equal(r.diffs[i].realtime - r.diffs[i].batch, 1);
	}
	tl_reconcile_free(&r);
}

/* A run that fails (a damaged archive file) changes nothing; a concurrent
 * run is refused. */
static void test_failed_run_changes_nothing(void **state)
{
	struct world *w = *state;
	two_days(w);
	batch_ok(w, D0, D0 + 1);
	int64_t before[TL_M__COUNT], after[TL_M__COUNT];
	totals(w, TL_SOURCE_BATCH, "spring", NULL, before);
	struct tl_event more[] = {mk(w, TL_EV_OPEN, "spring", "A", 50, D0 * DAY_MS + 100, "late")};
	write_file(w, TL_TOPIC_EVENTS, 1, 0, more, 1, true); /* truncated */
	struct tl_batch_stats st;
	assert_int_equal(run_batch(w, D0, D0, &st), -TL_ECORRUPT);
	assert_non_null(strstr(st.error, "events-p1-"));
	totals(w, TL_SOURCE_BATCH, "spring", NULL, after);
	assert_memory_equal(before, after, sizeof before);

	char lock[256];
	snprintf(lock, sizeof lock, "%s/.lock", w->state);
	int fd = open(lock, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(flock(fd, LOCK_EX), 0);
	assert_int_equal(run_batch(w, D0 + 1, D0 + 1, &st), -TL_ELOCKED);
	close(fd);
	batch_ok(w, D0 + 1, D0 + 1);
	totals(w, TL_SOURCE_BATCH, "spring", NULL, after);
	assert_memory_equal(before, after, sizeof before);
}

/* The rows going into the reporting DB from the start of the reading, in
 * several passes (a row written again adds its new deltas): the same
 * numbers, and a run that fails after the transaction began changes
 * nothing. */
static void test_write_from_start(void **state)
{
	struct world *w = *state;
	two_days(w);
	write_from_pct = TL_BATCH_WRITE_FROM_START;
	struct tl_batch_stats st;
	if (run_batch(w, D0, D0 + 1, &st))
		fail_msg("batch: %s", st.error);
	assert_true(st.db_passes >= 2);
	assert_batch_equals_realtime(w);
	int64_t before[TL_M__COUNT], after[TL_M__COUNT];
	totals(w, TL_SOURCE_BATCH, "spring", NULL, before);
	struct tl_event more[] = {mk(w, TL_EV_OPEN, "spring", "A", 50, D0 * DAY_MS + 100, "late")};
	write_file(w, TL_TOPIC_EVENTS, 1, 0, more, 1, true); /* truncated */
	assert_int_equal(run_batch(w, D0, D0, &st), -TL_ECORRUPT);
	write_from_pct = 0;
	totals(w, TL_SOURCE_BATCH, "spring", NULL, after);
	assert_memory_equal(before, after, sizeof before);
}

struct flushed {
	int64_t sent[4];
	size_t rows;
};

static int collect_flush(void *arg, const struct tl_count_row *rows, const uint32_t *cids,
                         const uint32_t *vids, size_t n)
{
	struct flushed *f = arg;
	for (size_t i = 0; i < n; i++) {
		assert_true(cids[i] < 2 && vids[i] < 2);
		f->sent[cids[i] * 2 + vids[i]] += rows[i].delta[TL_M_SENT];
		f->rows++;
	}
	return TL_OK;
}

/* tl_mem_rows_flush hands out each row's deltas since the last flush, and
 * only the rows added to since. */
static void test_mem_rows_flush(void **state)
{
	(void)state;
	struct tl_mem *m;
	struct tl_store *conn;
	assert_int_equal(tl_mem_create(NULL, NULL, &m), 0);
	assert_int_equal(tl_mem_conn_open(m, &conn), 0);
	struct tl_count_row rows[3] = {
	    {.tenant = TL_STR("acme"), .campaign = TL_STR("a"), .variant = TL_STR(""), .minute_ms = 60000},
	    {.tenant = TL_STR("acme"), .campaign = TL_STR("a"), .variant = TL_STR("B"), .minute_ms = 60000},
	    {.tenant = TL_STR("acme"), .campaign = TL_STR("b"), .variant = TL_STR(""), .minute_ms = 120000},
	};
	rows[0].delta[TL_M_SENT] = 1;
	rows[1].delta[TL_M_SENT] = 2;
	rows[2].delta[TL_M_SENT] = 3;
	assert_int_equal(tl_store_begin(conn, TL_SOURCE_BATCH), 0);
	assert_int_equal(tl_store_add_counts(conn, rows, 3), 0);
	struct flushed f = {0};
	assert_int_equal(tl_mem_rows_flush(m, collect_flush, &f), 0);
	assert_int_equal(f.rows, 3);
	assert_int_equal(f.sent[0] + f.sent[1] + f.sent[2], 6);
	memset(&f, 0, sizeof f);
	assert_int_equal(tl_mem_rows_flush(m, collect_flush, &f), 0);
	assert_int_equal(f.rows, 0); /* nothing new */
	rows[1].delta[TL_M_SENT] = 10;
	assert_int_equal(tl_store_add_counts(conn, &rows[1], 1), 0);
	assert_int_equal(tl_store_add_counts(conn, &rows[1], 1), 0);
	assert_int_equal(tl_mem_rows_flush(m, collect_flush, &f), 0);
	assert_int_equal(f.rows, 1);
	assert_int_equal(f.sent[1], 20);
	assert_int_equal(tl_mem_rows_live(m), 3);
	assert_int_equal(tl_store_commit(conn), 0);
	tl_store_close(conn);
	tl_mem_destroy(m);
}

/* The staging store takes ids repeated within one call (the fold then
 * skips its own pass): only the first occurrence is new, per tenant, many
 * keys apart (they are grouped by shard before the inserts), and in the
 * calls after. The fold over it counts a repeated id once. */
static void test_mem_dedupe_repeats(void **state)
{
	(void)state;
	struct tl_mem *m;
	struct tl_store *conn;
	assert_int_equal(tl_mem_create(NULL, NULL, &m), 0);
	assert_int_equal(tl_mem_conn_open(m, &conn), 0);
	assert_true(tl_store_dedupe_repeats(conn));
	enum { N = 3000 };
	static struct tl_dedupe_key keys[N];
	static char ids[N][16];
	static uint8_t is_new[N];
	for (int i = 0; i < N; i++) {
		/* ids 0..999 three times over, the third time under another tenant */
		snprintf(ids[i], sizeof ids[i], "e%d", i % 1000);
		keys[i] = (struct tl_dedupe_key){i < 2000 ? TL_STR("acme") : TL_STR("beta"),
		                                 tl_str_of(ids[i], strlen(ids[i])), 1000};
	}
	assert_int_equal(tl_store_begin(conn, TL_SOURCE_BATCH), 0);
	assert_int_equal(tl_store_dedupe(conn, keys, N, is_new), 0);
	for (int i = 0; i < N; i++)
		assert_int_equal(is_new[i], i < 1000 || i >= 2000);
	assert_int_equal(tl_store_dedupe(conn, keys, N, is_new), 0);
	for (int i = 0; i < N; i++)
		assert_int_equal(is_new[i], 0);

	struct tl_fold *f;
	assert_int_equal(tl_fold_create(16, &f), 0);
	struct tl_event ev = {.type = TL_EV_SENT,
	                      .tenant = TL_STR("acme"),
	                      .campaign = TL_STR("c"),
	                      .recipient = TL_STR("r1"),
	                      .id = TL_STR("x1"),
	                      .ts_ms = 60000};
	assert_int_equal(tl_fold_add(f, &ev), 0);
	assert_int_equal(tl_fold_add(f, &ev), 0);
	ev.id = TL_STR("x2");
	assert_int_equal(tl_fold_add(f, &ev), 0);
	struct tl_fold_stats fs;
	assert_int_equal(tl_fold_apply(f, conn, TL_SOURCE_BATCH, "batch", NULL, 0, &fs), 0);
	assert_int_equal(fs.counted, 2);
	assert_int_equal(fs.duplicates, 1);
	tl_fold_destroy(f);
	tl_store_close(conn);
	tl_mem_destroy(m);
}

/* A committed day whose state file is gone: the run refuses instead of
 * counting that day's recipients again. */
static void test_missing_state(void **state)
{
	struct world *w = *state;
	two_days(w);
	batch_ok(w, D0, D0);
	char cmd[256];
	snprintf(cmd, sizeof cmd, "rm -f %s/dt=2025-12-02/*.state", w->state);
	assert_int_equal(system(cmd), 0);
	struct tl_batch_stats st;
	assert_int_equal(run_batch(w, D0 + 1, D0 + 1, &st), -TL_ENOTFOUND);
	assert_non_null(strstr(st.error, "2025-12-02"));
	batch_ok(w, D0, D0 + 1); /* recomputing both days together repairs it */
	assert_batch_equals_realtime(w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_equivalence),
	    cmocka_unit_test(test_state_files),
	    cmocka_unit_test_setup_teardown(test_batch_equals_stream, w_setup, w_teardown),
	    cmocka_unit_test_setup_teardown(test_reconcile_coverage, w_setup, w_teardown),
	    cmocka_unit_test_setup_teardown(test_reconcile_names_difference, w_setup, w_teardown),
	    cmocka_unit_test_setup_teardown(test_failed_run_changes_nothing, w_setup, w_teardown),
	    cmocka_unit_test_setup_teardown(test_missing_state, w_setup, w_teardown),
	    cmocka_unit_test_setup_teardown(test_write_from_start, w_setup, w_teardown),
	    cmocka_unit_test(test_mem_rows_flush),
	    cmocka_unit_test(test_mem_dedupe_repeats),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
