/* test_codec.c — binary event codec: round trips, truncation, corruption. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/utf8.h"
#include "event/event.h"

#include <stdlib.h>
#include <string.h>

static struct tl_event full_event(void)
{
	struct tl_event ev = {0};
	ev.type = TL_EV_BOUNCED;
	ev.bounce_class = TL_BOUNCE_SOFT;
	ev.flags = TL_EVF_MACHINE | TL_EVF_BOT | TL_EVF_HEAD | TL_EVF_HIT | TL_EVF_HASHED | TL_EVF_ENRICHED |
	           TL_EVF_PROVIDER_MACHINE;
	ev.ts_ms = 1796320800123;
	ev.arrival_ms = 1796320800456;
	ev.sent_ms = -5; /* zigzag of a negative value */
	ev.src_offset = UINT64_MAX;
	ev.tenant = TL_STR("acme");
	ev.campaign = TL_STR("spring-sale");
	ev.variant = TL_STR("B");
	ev.recipient = TL_STR("r-1842");
	ev.message = TL_STR("m-99812");
	ev.id = TL_STR("evt-7f3a");
	ev.url = TL_STR("https://shop.example/sale?x=\xc3\xa9");
	ev.user_agent = TL_STR("Mozilla/5.0 (X11; Linux x86_64)");
	ev.ip = TL_STR("203.0.113.7");
	ev.provider = TL_STR("sendgrid");
	ev.token = TL_STR("v1.abc.def");
	return ev;
}

static void assert_str_eq(struct tl_str a, struct tl_str b)
{
	assert_int_equal(a.n, b.n);
	if (a.n)
		assert_memory_equal(a.p, b.p, a.n);
}

static void assert_event_eq(const struct tl_event *a, const struct tl_event *b)
{
	assert_int_equal(a->type, b->type);
	assert_int_equal(a->bounce_class, b->bounce_class);
	assert_int_equal(a->flags, b->flags);
	assert_true(a->ts_ms == b->ts_ms);
	assert_true(a->arrival_ms == b->arrival_ms);
	assert_true(a->sent_ms == b->sent_ms);
	assert_true(a->src_offset == b->src_offset);
	assert_str_eq(a->tenant, b->tenant);
	assert_str_eq(a->campaign, b->campaign);
	assert_str_eq(a->variant, b->variant);
	assert_str_eq(a->recipient, b->recipient);
	assert_str_eq(a->message, b->message);
	assert_str_eq(a->id, b->id);
	assert_str_eq(a->url, b->url);
	assert_str_eq(a->user_agent, b->user_agent);
	assert_str_eq(a->ip, b->ip);
	assert_str_eq(a->provider, b->provider);
	assert_str_eq(a->token, b->token);
}

/* Decodes from an exact-size heap copy so ASan catches any read past the end. */
static int decode_exact(const char *p, size_t n, struct tl_event *ev, char **copy)
{
	*copy = malloc(n ? n : 1);
	assert_non_null(*copy);
	if (n)
		memcpy(*copy, p, n);
	return tl_event_decode(*copy, n, ev);
}

static void test_roundtrip_full(void **state)
{
	(void)state;
	struct tl_event ev = full_event(), out;
	struct tl_buf b;
	tl_buf_init(&b, 0);
	assert_int_equal(tl_event_encode(&ev, &b), 0);
	assert_int_equal((unsigned char)b.data[0], TL_CODEC_VERSION);
	char *copy;
	assert_int_equal(decode_exact(b.data, b.len, &out, &copy), 0);
	assert_event_eq(&ev, &out);
	/* zero-copy: the strings are views into the input */
	assert_true(out.campaign.p >= copy && out.campaign.p < copy + b.len);
	assert_true(out.token.p >= copy && out.token.p + out.token.n <= copy + b.len);
	free(copy);
	tl_buf_free(&b);
}

/* Each field on its own survives a round trip, and an empty field decodes to
 * an empty non-NULL view. */
static void test_roundtrip_each_field(void **state)
{
	(void)state;
	struct tl_event full = full_event();
	struct tl_str *src[] = {&full.tenant,  &full.campaign, &full.variant, &full.recipient,
	                        &full.message, &full.id,       &full.url,     &full.user_agent,
	                        &full.ip,      &full.provider, &full.token};
	for (size_t i = 0; i < sizeof src / sizeof src[0]; i++) {
		struct tl_event ev = {0}, out;
		ev.type = TL_EV_OPEN;
		ev.ts_ms = 1;
		struct tl_str *dst = (struct tl_str *)((char *)&ev + ((char *)src[i] - (char *)&full));
		*dst = *src[i];
		struct tl_buf b;
		tl_buf_init(&b, 0);
		assert_int_equal(tl_event_encode(&ev, &b), 0);
		char *copy;
		assert_int_equal(decode_exact(b.data, b.len, &out, &copy), 0);
		assert_event_eq(&ev, &out);
		assert_non_null(out.tenant.p);
		assert_non_null(out.token.p);
		free(copy);
		tl_buf_free(&b);
	}
	/* numeric fields and every type/bounce class */
	for (int t = 1; t < TL_EV__COUNT; t++) {
		for (int c = 0; c <= TL_BOUNCE_BLOCK; c++) {
			struct tl_event ev = {0}, out;
			ev.type = (uint8_t)t;
			ev.bounce_class = (uint8_t)c;
			ev.ts_ms = INT64_MAX;
			ev.arrival_ms = INT64_MIN;
			ev.sent_ms = 0;
			ev.src_offset = (uint64_t)t * 1000003u;
			ev.flags = (uint16_t)(1u << (t % 7));
			struct tl_buf b;
			tl_buf_init(&b, 0);
			assert_int_equal(tl_event_encode(&ev, &b), 0);
			char *copy;
			assert_int_equal(decode_exact(b.data, b.len, &out, &copy), 0);
			assert_event_eq(&ev, &out);
			free(copy);
			tl_buf_free(&b);
		}
	}
}

static void test_roundtrip_limits(void **state)
{
	(void)state;
	static char big[TL_MAX_TOKEN];
	memset(big, 'x', sizeof big);
	struct tl_event ev = full_event(), out;
	ev.tenant = tl_str_of(big, TL_MAX_TENANT);
	ev.campaign = tl_str_of(big, TL_MAX_CAMPAIGN);
	ev.variant = tl_str_of(big, TL_MAX_VARIANT);
	ev.recipient = tl_str_of(big, TL_MAX_RECIPIENT);
	ev.message = tl_str_of(big, TL_MAX_MESSAGE);
	ev.id = tl_str_of(big, TL_MAX_ID);
	ev.url = tl_str_of(big, TL_MAX_URL);
	ev.user_agent = tl_str_of(big, TL_MAX_USER_AGENT);
	ev.ip = tl_str_of(big, TL_MAX_IP);
	ev.provider = tl_str_of(big, TL_MAX_PROVIDER);
	ev.token = tl_str_of(big, TL_MAX_TOKEN);
	struct tl_buf b;
	tl_buf_init(&b, 0);
	assert_int_equal(tl_event_encode(&ev, &b), 0);
	char *copy;
	assert_int_equal(decode_exact(b.data, b.len, &out, &copy), 0);
	assert_event_eq(&ev, &out);
	free(copy);

	/* one byte over any limit: encode refuses, out untouched */
	size_t before = b.len;
	ev.campaign = tl_str_of(big, TL_MAX_CAMPAIGN + 1);
	assert_int_equal(tl_event_encode(&ev, &b), -TL_ETOOBIG);
	assert_int_equal(b.len, before);
	tl_buf_free(&b);
}

static void test_every_truncation_rejected(void **state)
{
	(void)state;
	struct tl_event ev = full_event(), out;
	struct tl_buf b;
	tl_buf_init(&b, 0);
	assert_int_equal(tl_event_encode(&ev, &b), 0);
	for (size_t n = 0; n < b.len; n++) {
		char *copy;
		assert_int_equal(decode_exact(b.data, n, &out, &copy), -TL_ECORRUPT);
		free(copy);
	}
	/* the same for a minimal event (every string empty) */
	struct tl_event small = {.type = TL_EV_SENT, .ts_ms = 1};
	tl_buf_reset(&b);
	assert_int_equal(tl_event_encode(&small, &b), 0);
	for (size_t n = 0; n < b.len; n++) {
		char *copy;
		assert_int_equal(decode_exact(b.data, n, &out, &copy), -TL_ECORRUPT);
		free(copy);
	}
	tl_buf_free(&b);
}

static void test_trailing_and_garbled(void **state)
{
	(void)state;
	struct tl_event ev = full_event(), out;
	struct tl_buf b;
	tl_buf_init(&b, 0);
	assert_int_equal(tl_event_encode(&ev, &b), 0);
	size_t n = b.len;
	char *p = malloc(n + 1);
	memcpy(p, b.data, n);

	/* a trailing byte */
	p[n] = 0;
	assert_int_equal(tl_event_decode(p, n + 1, &out), -TL_ECORRUPT);

	/* unknown version */
	p[0] = 2;
	assert_int_equal(tl_event_decode(p, n, &out), -TL_EUNSUPPORTED);
	p[0] = TL_CODEC_VERSION;

	/* bad type and bounce class */
	p[1] = 0;
	assert_int_equal(tl_event_decode(p, n, &out), -TL_ECORRUPT);
	p[1] = TL_EV__COUNT;
	assert_int_equal(tl_event_decode(p, n, &out), -TL_ECORRUPT);
	p[1] = TL_EV_BOUNCED;
	p[2] = 4;
	assert_int_equal(tl_event_decode(p, n, &out), -TL_ECORRUPT);
	p[2] = TL_BOUNCE_SOFT;
	assert_int_equal(tl_event_decode(p, n, &out), 0);

	/* every single-byte change decodes or fails cleanly, never out of bounds */
	for (size_t i = 0; i < n; i++) {
		char saved = p[i];
		static const unsigned char vals[] = {0x00, 0x01, 0x7f, 0x80, 0xff};
		for (size_t k = 0; k < sizeof vals; k++) {
			p[i] = (char)vals[k];
			int rc = tl_event_decode(p, n, &out);
			assert_true(rc == 0 || rc == -TL_ECORRUPT || rc == -TL_EUNSUPPORTED);
		}
		p[i] = saved;
	}
	free(p);
	tl_buf_free(&b);
}

static void test_bad_varints_and_lengths(void **state)
{
	(void)state;
	struct tl_event out;
	/* flags with an unknown bit */
	unsigned char unknown_flag[] = {1, 1, 0, 0x80, 0x02, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
	assert_int_equal(tl_event_decode(unknown_flag, sizeof unknown_flag, &out), -TL_ECORRUPT);
	/* an overlong varint (0 written as 0x80 0x00) */
	unsigned char overlong[] = {1, 1, 0, 0x80, 0x00, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
	assert_int_equal(tl_event_decode(overlong, sizeof overlong, &out), -TL_ECORRUPT);
	/* a varint that never ends */
	unsigned char endless[] = {1,    1,    0,    0,    0xff, 0xff, 0xff, 0xff,
	                           0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	assert_int_equal(tl_event_decode(endless, sizeof endless, &out), -TL_ECORRUPT);
	/* a varint wider than 64 bits */
	unsigned char wide[] = {1, 1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0,
	                        0, 0, 0, 0, 0,    0,    0,    0,    0,    0,    0,    0,    0,    0};
	assert_int_equal(tl_event_decode(wide, sizeof wide, &out), -TL_ECORRUPT);
	/* the minimal valid record, then a string length past the end */
	unsigned char ok[] = {1, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
	assert_int_equal(tl_event_decode(ok, sizeof ok, &out), 0);
	assert_true(out.ts_ms == 1);
	unsigned char past[] = {1, 1, 0, 0, 2, 0, 0, 0, 50, 'a', 'b', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
	assert_int_equal(tl_event_decode(past, sizeof past, &out), -TL_ECORRUPT);
	/* a tenant length over TL_MAX_TENANT, even with exactly the bytes present */
	unsigned char over[9 + TL_MAX_TENANT + 1 + 10] = {1, 1, 0, 0, 2, 0, 0, 0, TL_MAX_TENANT + 1};
	assert_int_equal(tl_event_decode(over, sizeof over, &out), -TL_ECORRUPT);
	unsigned char at[9 + TL_MAX_TENANT + 10] = {1, 1, 0, 0, 2, 0, 0, 0, TL_MAX_TENANT};
	assert_int_equal(tl_event_decode(at, sizeof at, &out), 0);
	assert_int_equal(out.tenant.n, TL_MAX_TENANT);
	assert_int_equal(tl_event_decode(NULL, 0, &out), -TL_ECORRUPT);
}

static void test_encode_refuses_invalid(void **state)
{
	(void)state;
	struct tl_buf b;
	tl_buf_init(&b, 0);
	struct tl_event ev = full_event();
	ev.type = TL_EV_NONE;
	assert_int_equal(tl_event_encode(&ev, &b), -TL_EINVAL);
	ev = full_event();
	ev.bounce_class = 9;
	assert_int_equal(tl_event_encode(&ev, &b), -TL_EINVAL);
	ev = full_event();
	ev.flags = 0x100;
	assert_int_equal(tl_event_encode(&ev, &b), -TL_EINVAL);
	assert_int_equal(b.len, 0);
	tl_buf_free(&b);

	/* a capped output buffer */
	tl_buf_init(&b, 10);
	ev = full_event();
	assert_int_equal(tl_event_encode(&ev, &b), -TL_ETOOBIG);
	assert_int_equal(b.len, 0);
	tl_buf_free(&b);
}

static void test_appends(void **state)
{
	(void)state;
	struct tl_buf b;
	tl_buf_init(&b, 0);
	struct tl_event a = full_event(), c = full_event(), out;
	c.campaign = TL_STR("other");
	assert_int_equal(tl_event_encode(&a, &b), 0);
	size_t first = b.len;
	assert_int_equal(tl_event_encode(&c, &b), 0);
	assert_int_equal(tl_event_decode(b.data, first, &out), 0);
	assert_event_eq(&a, &out);
	assert_int_equal(tl_event_decode(b.data + first, b.len - first, &out), 0);
	assert_event_eq(&c, &out);
	tl_buf_free(&b);
}

/* tl_str_eq: every length up to 40 (each of its word paths and memcmp), equal, and one byte
 * differing at each position; the bytes around the strings differ too, so
 * a comparison that strayed past either end would be caught. */
/* Header text made valid UTF-8: invalid bytes become '?' one for one, a
 * sequence that does not fit is left out, nothing grows. */
static void test_utf8_sanitize(void **state)
{
	(void)state;
	char out[16];
	const char ok[] = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";
	assert_int_equal(tl_utf8_sanitize(ok, sizeof ok - 1, out, sizeof out), sizeof ok - 1);
	assert_memory_equal(out, ok, sizeof ok - 1);
	assert_true(tl_utf8_valid(ok, sizeof ok - 1));
	/* a stray continuation byte, an overlong form, a surrogate, a lone lead byte */
	const char bad[] = "a\x80"
	                   "b\xc0\xaf"
	                   "c\xed\xa0\x80"
	                   "d\xe2";
	size_t n = tl_utf8_sanitize(bad, sizeof bad - 1, out, sizeof out);
	assert_int_equal(n, sizeof bad - 1);
	assert_memory_equal(out, "a?b??c???d?", n);
	assert_false(tl_utf8_valid(bad, sizeof bad - 1));
	/* cut at the cap: the euro sign (3 bytes) does not fit in 5 - 3 */
	n = tl_utf8_sanitize("abc\xe2\x82\xac", 6, out, 5);
	assert_int_equal(n, 3);
	assert_true(tl_utf8_valid(out, n));
	/* every 2-byte input: the output is valid and never longer */
	for (unsigned a = 0; a < 256; a++)
		for (unsigned b = 0; b < 256; b++) {
			char in[2] = {(char)a, (char)b};
			n = tl_utf8_sanitize(in, 2, out, 2);
			assert_true(n <= 2);
			assert_true(tl_utf8_valid(out, n));
		}
}

static void test_str_eq(void **state)
{
	(void)state;
	char a[64], b[64];
	for (uint32_t n = 0; n <= 40; n++) {
		memset(a, 'x', sizeof a);
		memset(b, 'y', sizeof b);
		for (uint32_t i = 0; i < n; i++)
			a[8 + i] = b[8 + i] = (char)('a' + i % 26);
		struct tl_str x = tl_str_of(a + 8, n), y = tl_str_of(b + 8, n);
		assert_true(tl_str_eq(x, y));
		if (n)
			assert_false(tl_str_eq(x, tl_str_of(b + 8, n - 1)));
		for (uint32_t i = 0; i < n; i++) {
			b[8 + i] ^= 0x20;
			assert_false(tl_str_eq(x, y));
			b[8 + i] ^= 0x20;
		}
	}
	assert_true(tl_str_eq(TL_STR_NULL, tl_str_of("", 0)));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roundtrip_full),
	    cmocka_unit_test(test_roundtrip_each_field),
	    cmocka_unit_test(test_roundtrip_limits),
	    cmocka_unit_test(test_every_truncation_rejected),
	    cmocka_unit_test(test_trailing_and_garbled),
	    cmocka_unit_test(test_bad_varints_and_lengths),
	    cmocka_unit_test(test_encode_refuses_invalid),
	    cmocka_unit_test(test_appends),
	    cmocka_unit_test(test_str_eq),
	    cmocka_unit_test(test_utf8_sanitize),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
