/* test_json_fast.c — the hand-written fast path of the event parser against
 * the jansson path (event/json_int.h): on every input both must give the
 * same return code, the same reason and the same event. The fast path may
 * hand a line over (TL_JSON_FALLBACK) but never decide differently.
 *
 * Inputs: the fuzz corpus of tests/fuzz/corpus/fuzz_event_json (each file,
 * each of its lines and each prefix), and lines generated from canonical
 * events: whitespace, key order, unknown and duplicate keys, other value
 * types, escapes, UTF-8 (valid and not), literals, truncations and random
 * byte edits. The test also requires the fast path to take the plain lines
 * mailers send, so it fails if the fast path silently stops engaging. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/clock.h"
#include "event/event.h"
#include "event/json_int.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct tl_arena arena_fast, arena_slow;
static uint64_t rng = 0x2545F4914F6CDD1DULL;
static long n_compared, n_fast;

static uint64_t rnd(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 0x2545F4914F6CDD1DULL;
}

static unsigned rn(unsigned n)
{
	return (unsigned)(rnd() % n);
}

static int setup(void **state)
{
	(void)state;
	tl_arena_init(&arena_fast, 4096, 0);
	tl_arena_init(&arena_slow, 4096, 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	tl_arena_free(&arena_fast);
	tl_arena_free(&arena_slow);
	return 0;
}

static void str_equal(const char *what, struct tl_str a, struct tl_str b, const char *in, size_t n)
{
	if (a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0))
		return;
	fail_msg("%s differs on %.*s", what, (int)n, in);
}

/* Runs both paths on in[0..n) and requires the same outcome. Returns 1 when
 * the fast path decided. */
static int compare(const char *in, size_t n)
{
	struct tl_event f, s, pub;
	char ef[256], es[256], ep[256];
	/* heap copy of exactly n bytes, so ASan sees any read past the end */
	char *buf = malloc(n ? n : 1);
	assert_non_null(buf);
	if (n)
		memcpy(buf, in, n);
	int rf = tl_event_from_json_fast(buf, n, &arena_fast, &f, ef, sizeof ef);
	int rs = tl_event_from_json_jansson(buf, n, &arena_slow, &s, es, sizeof es);
	int rp = tl_event_from_json(buf, n, &arena_fast, &pub, ep, sizeof ep);
	n_compared++;
	if (rp != rs || strcmp(ep, es) != 0)
		fail_msg("public parser: %d \"%s\" vs jansson %d \"%s\" on %.*s", rp, ep, rs, es, (int)n, in);
	int decided = rf != TL_JSON_FALLBACK;
	if (decided) {
		n_fast++;
		if (rf != rs || strcmp(ef, es) != 0)
			fail_msg("fast %d \"%s\" vs jansson %d \"%s\" on %.*s", rf, ef, rs, es, (int)n, in);
		if (rf == 0) {
			if (f.type != s.type || f.bounce_class != s.bounce_class || f.flags != s.flags ||
			    f.ts_ms != s.ts_ms || f.arrival_ms != s.arrival_ms || f.sent_ms != s.sent_ms ||
			    f.src_offset != s.src_offset)
				fail_msg("scalar fields differ on %.*s", (int)n, in);
			str_equal("tenant", f.tenant, s.tenant, in, n);
			str_equal("campaign", f.campaign, s.campaign, in, n);
			str_equal("variant", f.variant, s.variant, in, n);
			str_equal("recipient", f.recipient, s.recipient, in, n);
			str_equal("message", f.message, s.message, in, n);
			str_equal("id", f.id, s.id, in, n);
			str_equal("url", f.url, s.url, in, n);
			str_equal("user_agent", f.user_agent, s.user_agent, in, n);
			str_equal("ip", f.ip, s.ip, in, n);
			str_equal("provider", f.provider, s.provider, in, n);
			str_equal("token", f.token, s.token, in, n);
		}
	} else {
		/* a hand-over leaves nothing behind */
		static const struct tl_event zero;
		assert_memory_equal(&f, &zero, sizeof zero);
		assert_string_equal(ef, "");
	}
	free(buf);
	tl_arena_reset(&arena_fast);
	tl_arena_reset(&arena_slow);
	return decided;
}

/* ---- the fuzz corpus ---------------------------------------------------- */

static void run_corpus_file(const char *path)
{
	FILE *fp = fopen(path, "rb");
	assert_non_null(fp);
	char *data = malloc(1 << 20);
	assert_non_null(data);
	size_t n = fread(data, 1, 1 << 20, fp);
	fclose(fp);
	compare(data, n);
	for (size_t i = 0; i < n && i < 4096; i++) /* every proper prefix */
		compare(data, i);
	for (size_t pos = 0; pos < n;) { /* every line, as the collector splits a body */
		const char *nl = memchr(data + pos, '\n', n - pos);
		size_t end = nl ? (size_t)(nl - data) : n;
		compare(data + pos, end - pos);
		pos = end + 1;
	}
	free(data);
}

static void test_fuzz_corpus(void **state)
{
	(void)state;
	const char *src = getenv("TALLY_SRC");
	char dir[4096];
	snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus/fuzz_event_json", src ? src : ".");
	DIR *d = opendir(dir);
	if (!d)
		fail_msg("cannot open the corpus %s (set TALLY_SRC)", dir);
	int files = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char path[8192];
		snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
		run_corpus_file(path);
		files++;
	}
	closedir(d);
	assert_true(files >= 10);
}

/* ---- generated lines ----------------------------------------------------- */

struct kv {
	const char *k, *v; /* v is raw JSON */
};

static const char *const types[] = {"sent",      "delivered",   "deferred", "bounced", "dropped",
                                    "complaint", "unsubscribe", "open",     "click",   "opne"};

/* A random canonical-ish event as key/value pairs (values are raw JSON). */
static size_t base_event(struct kv *kv, char bufs[][128])
{
	size_t n = 0;
	const char *type = types[rn(10)];
	snprintf(bufs[0], 128, "\"%s\"", type);
	kv[n++] = (struct kv){"type", bufs[0]};
	if (rn(4) == 0)
		kv[n++] = (struct kv){"tenant", "\"acme\""};
	snprintf(bufs[1], 128, "\"camp-%u\"", rn(1000));
	if (rn(20))
		kv[n++] = (struct kv){"campaign", bufs[1]};
	if (rn(2))
		kv[n++] = (struct kv){"variant", rn(2) ? "\"A\"" : "\"\""};
	snprintf(bufs[2], 128, "\"r-%u@example.com\"", rn(100000));
	if (rn(20))
		kv[n++] = (struct kv){"recipient", bufs[2]};
	if (rn(2))
		kv[n++] = (struct kv){"message", "\"m-1\""};
	snprintf(bufs[3], 128, "\"evt-%llx\"", (unsigned long long)rnd());
	if (rn(20))
		kv[n++] = (struct kv){"id", bufs[3]};
	static const char *const times[] = {"\"2026-12-03T18:00:00.123Z\"",
	                                    "\"2026-12-03T18:00:00Z\"",
	                                    "\"2026-12-03\"",
	                                    "\"2026-12-03T18:00:00+02:00\"",
	                                    "\"yesterday\"",
	                                    "\"1970-01-01T00:00:00Z\""};
	if (rn(20))
		kv[n++] = (struct kv){"ts", times[rn(6)]};
	if (rn(6) == 0)
		kv[n++] = (struct kv){"arrival", times[rn(6)]};
	if (rn(3) == 0)
		kv[n++] = (struct kv){"url", "\"https://shop.example/sale?x=1&y=2\""};
	if (rn(3) == 0)
		kv[n++] = (struct kv){"user_agent", "\"Mozilla/5.0 (X11; Linux x86_64)\""};
	if (rn(4) == 0)
		kv[n++] = (struct kv){"ip", "\"203.0.113.7\""};
	if (rn(3) == 0 || !strcmp(type, "bounced"))
		kv[n++] =
		    (struct kv){"bounce_class", rn(5) ? (rn(2) ? "\"hard\"" : "\"block\"") : "\"weird\""};
	if (rn(6) == 0)
		kv[n++] = (struct kv){"provider", "\"sendgrid\""};
	static const char *const flags[] = {"machine", "bot", "head", "hashed"};
	if (rn(5) == 0)
		kv[n++] = (struct kv){flags[rn(4)], rn(3) ? "true" : "false"};
	if (rn(10) == 0)
		kv[n++] = (struct kv){"token", "\"v1.abc.def\""};
	return n;
}

static const char *const other_values[] = {
    "null",
    "true",
    "false",
    "0",
    "-1.5e3",
    "12345678901234567890123",
    "{}",
    "{\"a\":1}",
    "[]",
    "[1,2]",
    "\"\"",
    "\"x\\\"y\"",
    "\"caf\\u00e9\"",
    "\"\\u0000\"",
    "\"a\\nb\"",
    "tru",
    "truex",
    "nul",
    "nulll",
    "fals",
    "\"d\xc3\xa9j\xc3\xa0\"",
    "\"\xe2\x82\xac\"",
    "\"\xf0\x9f\x98\x80\"",
    "\"\xc0\xaf\"",
    "\"\xed\xa0\x80\"",
    "\"\xf4\x90\x80\x80\"",
    "\"\xe0\x80\xaf\"",
    "\"\xc3\"",
    "\"\xff\"",
    "\"\x7f\"",
    "\"\x01\"",
    "\"\t\"",
    "'x'",
    "\"unterminated",
};

static const char *const ws[] = {"", " ", "  ", "\t", "\r", "\n", " \t "};

/* Serializes kv with random separators / whitespace. */
static size_t emit(const struct kv *kv, size_t n, char *out, size_t cap, bool spaced)
{
	size_t len = 0;
#define PUT(s)                                                                                               \
	do {                                                                                                 \
		const char *s_ = (s);                                                                        \
		size_t l_ = strlen(s_);                                                                      \
		if (len + l_ < cap) {                                                                        \
			memcpy(out + len, s_, l_);                                                           \
			len += l_;                                                                           \
		}                                                                                            \
	} while (0)
	const char *w = spaced ? ws[rn(7)] : "";
	PUT(w);
	PUT("{");
	for (size_t i = 0; i < n; i++) {
		if (i)
			PUT(",");
		PUT(spaced ? ws[rn(7)] : "");
		PUT("\"");
		PUT(kv[i].k);
		PUT("\"");
		PUT(spaced ? ws[rn(7)] : "");
		PUT(":");
		PUT(spaced ? ws[rn(7)] : "");
		PUT(kv[i].v);
		PUT(spaced ? ws[rn(7)] : "");
	}
	PUT("}");
	PUT(spaced ? ws[rn(7)] : "");
#undef PUT
	return len;
}

static void shuffle(struct kv *kv, size_t n)
{
	for (size_t i = n; i > 1; i--) {
		size_t j = rn((unsigned)i);
		struct kv t = kv[i - 1];
		kv[i - 1] = kv[j];
		kv[j] = t;
	}
}

static void test_canonical_lines_take_the_fast_path(void **state)
{
	(void)state;
	char line[4096];
	for (int i = 0; i < 5000; i++) {
		struct kv kv[32];
		char bufs[4][128];
		size_t n = base_event(kv, bufs);
		size_t len = emit(kv, n, line, sizeof line, i % 2);
		/* plain lines: the fast path decides every one (accepted or refused) */
		assert_true(compare(line, len));
	}
	/* the exact line tl_event_to_json writes */
	struct tl_event ev = {.type = TL_EV_OPEN,
	                      .ts_ms = 1796320800123LL,
	                      .tenant = TL_STR("acme"),
	                      .campaign = TL_STR("spring-sale"),
	                      .recipient = TL_STR("r-1"),
	                      .id = TL_STR("e-1"),
	                      .user_agent = TL_STR("Mozilla/5.0")};
	struct tl_buf b;
	tl_buf_init(&b, 0);
	assert_int_equal(tl_event_to_json(&ev, &b), 0);
	assert_true(compare(b.data, b.len));
	tl_buf_free(&b);
}

static void test_generated_variations(void **state)
{
	(void)state;
	char line[8192];
	int whole_decided = 0;
	for (int i = 0; i < 20000; i++) {
		struct kv kv[40];
		char bufs[4][128];
		size_t n = base_event(kv, bufs);
		switch (rn(6)) {
		case 0: /* unknown keys with any value */
			for (unsigned j = rn(4) + 1; j > 0 && n < 38; j--)
				kv[n++] = (struct kv){
				    rn(2) ? "meta" : (rn(2) ? "x" : "sg_event_id"),
				    other_values[rn(sizeof other_values / sizeof other_values[0])]};
			break;
		case 1: /* a known key with another kind of value */
			kv[rn((unsigned)n)].v =
			    other_values[rn(sizeof other_values / sizeof other_values[0])];
			break;
		case 2: /* duplicate key */
			kv[n] = kv[rn((unsigned)n)];
			n++;
			break;
		case 3: /* many unknown keys (the fast path tracks 8) */
			for (unsigned j = 0; j < 10 && n < 38; j++) {
				static const char *const names[] = {"a", "b", "c", "d", "e",
				                                    "f", "g", "h", "i", "j"};
				kv[n++] = (struct kv){names[j], rn(2) ? "\"v\"" : "null"};
			}
			break;
		default:
			break;
		}
		if (rn(2))
			shuffle(kv, n);
		size_t len = emit(kv, n, line, sizeof line, rn(2));
		whole_decided += compare(line, len);
		/* truncations */
		compare(line, rn((unsigned)len + 1));
		/* random byte edits */
		size_t m = len;
		for (unsigned e = rn(3) + 1; e > 0 && m > 0; e--) {
			size_t at = rn((unsigned)m);
			switch (rn(3)) {
			case 0:
				line[at] = (char)rn(256);
				break;
			case 1: /* delete */
				memmove(line + at, line + at + 1, m - at - 1);
				m--;
				break;
			default: /* insert */
				if (m + 1 < sizeof line) {
					memmove(line + at + 1, line + at, m - at);
					line[at] = (char)rn(256);
					m++;
				}
			}
		}
		compare(line, m);
	}
	/* half the variations keep the line plain: the fast path must decide those */
	assert_true(whole_decided > 20000 / 3);
}

/* Appends n bytes to out at *len (bounded by cap). */
static void put(char *out, size_t *len, size_t cap, const char *p, size_t n)
{
	if (*len + n <= cap) {
		memcpy(out + *len, p, n);
		*len += n;
	}
}

/* Strings of random bytes (UTF-8 edge cases above all, NULs included) as a
 * known field's value and as an unknown key. */
static void test_random_string_bytes(void **state)
{
	(void)state;
	static const unsigned char interesting[] = {0x00, 0x01, 0x1f, 0x20, 0x22, 0x5c, 0x7f, 0x80, 0x8f,
	                                            0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xdf, 0xe0,
	                                            0xed, 0xef, 0xf0, 0xf4, 0xf5, 0xff, 'a',  'z'};
	static const char head[] = "{\"type\":\"click\",\"campaign\":\"c\",\"recipient\":\"r\",\"id\":\"i\","
	                           "\"ts\":\"2026-12-03T18:00:00Z\",";
	char line[512];
	for (int i = 0; i < 30000; i++) {
		char val[16];
		size_t vn = rn(8);
		for (size_t j = 0; j < vn; j++)
			val[j] = rn(3) ? (char)interesting[rn(sizeof interesting)] : (char)rn(256);
		size_t len = 0;
		put(line, &len, sizeof line, head, sizeof head - 1);
		if (rn(2)) { /* "url":"<bytes>" */
			put(line, &len, sizeof line, "\"url\":\"", 7);
			put(line, &len, sizeof line, val, vn);
			put(line, &len, sizeof line, "\"}", 2);
		} else { /* "<bytes>":null */
			put(line, &len, sizeof line, "\"", 1);
			put(line, &len, sizeof line, val, vn);
			put(line, &len, sizeof line, "\":null}", 7);
		}
		compare(line, len);
	}
}

/* Field lengths at and past each limit; the line at and past its cap; a
 * too-small arena. */
static void test_limits(void **state)
{
	(void)state;
	static const struct {
		const char *key;
		size_t max;
	} f[] = {{"campaign", TL_MAX_CAMPAIGN},
	         {"recipient", TL_MAX_RECIPIENT},
	         {"url", TL_MAX_URL},
	         {"user_agent", TL_MAX_USER_AGENT},
	         {"id", TL_MAX_ID},
	         {"ip", TL_MAX_IP},
	         {"tenant", TL_MAX_TENANT}};
	size_t cap = TL_MAX_EVENT_JSON + 64;
	char *line = malloc(cap);
	assert_non_null(line);
	for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
		for (size_t n = f[i].max - 1; n <= f[i].max + 1; n++) {
			size_t m = (size_t)snprintf(
			    line, cap,
			    "{\"type\":\"click\",\"ts\":\"2026-12-03T18:00:00Z\",\"recipient\":\"r2\","
			    "\"id\":\"i2\",\"campaign\":\"c\",\"%s\":\"",
			    f[i].key);
			memset(line + m, 'x', n);
			m += n;
			put(line, &m, cap, "\"}", 2);
			compare(line, m); /* keys other than the tested one repeat: jansson words that */
		}
		for (size_t n = f[i].max - 1; n <= f[i].max + 1; n++) {
			size_t m = (size_t)snprintf(
			    line, cap, "{\"type\":\"click\",\"ts\":\"2026-12-03T18:00:00Z\",\"%s\":\"",
			    f[i].key);
			memset(line + m, 'x', n);
			m += n;
			put(line, &m, cap, "\"}", 2);
			compare(line, m);
		}
	}
	for (size_t total = TL_MAX_EVENT_JSON - 1; total <= TL_MAX_EVENT_JSON + 1; total++) {
		memset(line, ' ', total);
		line[0] = '{';
		line[total - 1] = '}';
		compare(line, total);
	}
	free(line);

	struct tl_arena small_f, small_s;
	tl_arena_init(&small_f, 64, 32);
	tl_arena_init(&small_s, 64, 32);
	static const char full[] =
	    "{\"type\":\"open\",\"campaign\":\"a-long-campaign-name-here\",\"recipient\":"
	    "\"someone@example.com\",\"id\":\"evt-1\",\"ts\":\"2026-12-03T18:00:00Z\"}";
	struct tl_event a, b;
	char ea[128], eb[128];
	int ra = tl_event_from_json_fast(full, sizeof full - 1, &small_f, &a, ea, sizeof ea);
	int rb = tl_event_from_json_jansson(full, sizeof full - 1, &small_s, &b, eb, sizeof eb);
	assert_int_equal(ra, -TL_ENOMEM);
	assert_int_equal(ra, rb);
	assert_string_equal(ea, eb);
	tl_arena_free(&small_f);
	tl_arena_free(&small_s);
}

/* tl_event_to_json formats times by hand: the bytes must be
 * tl_time_format_iso's, over the whole range it accepts. */
static void test_to_json_times(void **state)
{
	(void)state;
	static const int64_t edges[] = {0,
	                                1,
	                                999,
	                                1000,
	                                59999,
	                                60000,
	                                86399999,
	                                86400000,
	                                951782400000LL /* 2000-02-29 */,
	                                4107542399999LL /* 2100-02-28T23:59:59.999 */,
	                                1796320800123LL,
	                                253402300799999LL /* the last accepted */};
	struct tl_buf b;
	tl_buf_init(&b, 0);
	for (int i = 0; i < 200000; i++) {
		int64_t ts = i < (int)(sizeof edges / sizeof edges[0])
		                 ? edges[i]
		                 : (int64_t)(rnd() % 253402300800000ULL);
		int64_t arrival = (i & 1) ? (int64_t)(rnd() % 253402300800000ULL) : 0;
		struct tl_event ev = {.type = TL_EV_SENT,
		                      .ts_ms = ts,
		                      .arrival_ms = arrival,
		                      .campaign = TL_STR("c"),
		                      .recipient = TL_STR("r"),
		                      .id = TL_STR("i")};
		tl_buf_reset(&b);
		assert_int_equal(tl_event_to_json(&ev, &b), 0);
		char want[TL_TIME_ISO_MAX + 32], t[TL_TIME_ISO_MAX];
		tl_time_format_iso(ts, t, sizeof t);
		snprintf(want, sizeof want, "\"ts\":\"%s\"", t);
		if (!strstr(b.data, want))
			fail_msg("ts %lld: %s lacks %s", (long long)ts, b.data, want);
		if (arrival > 0) {
			tl_time_format_iso(arrival, t, sizeof t);
			snprintf(want, sizeof want, "\"arrival\":\"%s\"", t);
			if (!strstr(b.data, want))
				fail_msg("arrival %lld: %s lacks %s", (long long)arrival, b.data, want);
		}
	}
	/* outside the years 1970..9999: refused, out unchanged */
	struct tl_event bad = {.type = TL_EV_SENT,
	                       .ts_ms = 253402300800000LL,
	                       .campaign = TL_STR("c"),
	                       .recipient = TL_STR("r"),
	                       .id = TL_STR("i")};
	tl_buf_reset(&b);
	assert_int_equal(tl_event_to_json(&bad, &b), -TL_EINVAL);
	assert_int_equal(b.len, 0);
	tl_buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_fuzz_corpus, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_canonical_lines_take_the_fast_path, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_generated_variations, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_random_string_bytes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_to_json_times, setup, teardown),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	fprintf(stderr, "test_json_fast: %ld inputs compared, %ld decided by the fast path\n", n_compared,
	        n_fast);
	return rc;
}
