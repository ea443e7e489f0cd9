/* test_token.c — tracking tokens, HMAC, recipient hash, base64url and hex. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "event/token.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>

static const unsigned char key_a[TL_LINK_KEY_LEN] = "0123456789abcdef0123456789abcdef";
static const unsigned char key_b[TL_LINK_KEY_LEN] = "fedcba9876543210fedcba9876543210";

static struct tl_token click_token(void)
{
	struct tl_token t = {0};
	t.kind = TL_TOKEN_CLICK;
	t.issued_ms = 1796320800123LL;
	t.tenant = TL_STR("acme");
	t.campaign = TL_STR("spring-sale");
	t.variant = TL_STR("B");
	t.message = TL_STR("m-99812");
	t.recipient = TL_STR("r-1842");
	t.url = TL_STR("https://shop.example/sale?a=1&b=%20");
	return t;
}

static void assert_str(struct tl_str s, struct tl_str want)
{
	assert_int_equal(s.n, want.n);
	if (want.n)
		assert_memory_equal(s.p, want.p, want.n);
}

static void assert_token_eq(const struct tl_token *a, const struct tl_token *b)
{
	assert_int_equal(a->kind, b->kind);
	assert_true(a->issued_ms == b->issued_ms);
	assert_str(a->tenant, b->tenant);
	assert_str(a->campaign, b->campaign);
	assert_str(a->variant, b->variant);
	assert_str(a->message, b->message);
	assert_str(a->recipient, b->recipient);
	assert_str(a->url, b->url);
}

/* Verifies from an exact-size heap copy so ASan sees any over-read. */
static int verify(const char *text, size_t len, const unsigned char *key, struct tl_token *t)
{
	static unsigned char scratch[TL_MAX_TOKEN];
	char *copy = malloc(len ? len : 1);
	memcpy(copy, text, len);
	int rc = tl_token_verify(copy, len, key, TL_LINK_KEY_LEN, scratch, sizeof scratch, t);
	free(copy);
	return rc;
}

static void test_mint_verify(void **state)
{
	(void)state;
	struct tl_token t = click_token(), out;
	struct tl_buf b;
	tl_buf_init(&b, 0);
	assert_int_equal(tl_token_mint(&t, key_a, sizeof key_a, &b), 0);
	assert_memory_equal(b.data, "v1.", 3);
	const char *dot = strrchr(b.data, '.');
	assert_int_equal(strlen(dot + 1), 22); /* 16 MAC bytes, unpadded */
	assert_null(strpbrk(b.data, "+/="));   /* url-safe, no padding */
	assert_int_equal(verify(b.data, b.len, key_a, &out), 0);
	assert_token_eq(&out, &t);

	/* an open token, no variant, no url */
	struct tl_token o = {.kind = TL_TOKEN_OPEN, .issued_ms = 5};
	o.tenant = TL_STR("t");
	o.campaign = TL_STR("c");
	o.recipient = TL_STR("r");
	tl_buf_reset(&b);
	assert_int_equal(tl_token_mint(&o, key_a, sizeof key_a, &b), 0);
	assert_int_equal(verify(b.data, b.len, key_a, &out), 0);
	assert_token_eq(&out, &o);
	tl_buf_free(&b);
}

static void test_peek_then_verify(void **state)
{
	(void)state;
	struct tl_token t = click_token(), peeked, out;
	struct tl_buf b;
	tl_buf_init(&b, 0);
	assert_int_equal(tl_token_mint(&t, key_b, sizeof key_b, &b), 0);
	unsigned char scratch[TL_MAX_TOKEN];
	assert_int_equal(tl_token_peek(b.data, b.len, scratch, sizeof scratch, &peeked), 0);
	assert_str(peeked.tenant, TL_STR("acme"));
	/* peek does not check the MAC: it reads a token signed with any key */
	assert_int_equal(verify(b.data, b.len, key_b, &out), 0);
	assert_int_equal(verify(b.data, b.len, key_a, &out), -TL_EAUTH);
	/* scratch too small for the payload */
	unsigned char tiny[8];
	assert_int_equal(tl_token_peek(b.data, b.len, tiny, sizeof tiny, &peeked), -TL_EINVAL);
	assert_int_equal(tl_token_verify(b.data, b.len, key_b, sizeof key_b, tiny, sizeof tiny, &out),
	                 -TL_EINVAL);
	tl_buf_free(&b);
}

/* The MAC matches OpenSSL's HMAC() over the decoded payload. */
static void test_mac_matches_openssl(void **state)
{
	(void)state;
	struct tl_token t = click_token();
	struct tl_buf b;
	tl_buf_init(&b, 0);
	assert_int_equal(tl_token_mint(&t, key_a, sizeof key_a, &b), 0);
	const char *p = b.data + 3;
	const char *dot = strchr(p, '.');
	unsigned char payload[TL_MAX_TOKEN], mac[16];
	long n = tl_base64url_decode(p, (size_t)(dot - p), payload, sizeof payload);
	assert_true(n > 0);
	assert_int_equal(tl_base64url_decode(dot + 1, strlen(dot + 1), mac, sizeof mac), 16);
	unsigned char want[32];
	unsigned wlen = 0;
	assert_non_null(HMAC(EVP_sha256(), key_a, sizeof key_a, payload, (size_t)n, want, &wlen));
	assert_memory_equal(mac, want, 16);
	/* payload layout: version 1, kind */
	assert_int_equal(payload[0], 1);
	assert_int_equal(payload[1], TL_TOKEN_CLICK);
	tl_buf_free(&b);
}

static void test_forged_and_tampered(void **state)
{
	(void)state;
	struct tl_token t = click_token(), out;
	struct tl_buf b;
	tl_buf_init(&b, 0);
	assert_int_equal(tl_token_mint(&t, key_a, sizeof key_a, &b), 0);
	char *text = strdup(b.data);
	size_t len = b.len;
	char *mac = strrchr(text, '.') + 1;

	/* forged MAC: every change of the first MAC character */
	char saved = mac[0];
	for (const char *c = "ABCabc019-_"; *c; c++) {
		if (*c == saved)
			continue;
		mac[0] = *c;
		assert_int_equal(verify(text, len, key_a, &out), -TL_EAUTH);
	}
	mac[0] = saved;
	assert_int_equal(verify(text, len, key_a, &out), 0);

	/* a MAC made with another tenant's key */
	assert_int_equal(verify(text, len, key_b, &out), -TL_EAUTH);

	/* tampered payload: change the url, re-encode, keep the MAC */
	const char *p = text + 3;
	const char *dot = strchr(p, '.');
	unsigned char payload[TL_MAX_TOKEN];
	long n = tl_base64url_decode(p, (size_t)(dot - p), payload, sizeof payload);
	assert_true(n > 10);
	unsigned char *evil = memchr(payload, 's', (size_t)n); /* first 's' is in "spring-sale" */
	assert_non_null(evil);
	*evil = 'S';
	struct tl_buf f;
	tl_buf_init(&f, 0);
	assert_int_equal(tl_buf_puts(&f, "v1."), 0);
	assert_int_equal(tl_base64url_encode(payload, (size_t)n, &f), 0);
	assert_int_equal(tl_buf_puts(&f, dot), 0);
	assert_int_equal(verify(f.data, f.len, key_a, &out), -TL_EAUTH);
	unsigned char scratch[TL_MAX_TOKEN];
	assert_int_equal(tl_token_peek(f.data, f.len, scratch, sizeof scratch, &out), 0);
	assert_str(out.campaign, TL_STR("Spring-sale"));

	tl_buf_free(&f);
	free(text);
	tl_buf_free(&b);
}

static void test_truncated_and_malformed(void **state)
{
	(void)state;
	struct tl_token t = click_token(), out;
	struct tl_buf b;
	tl_buf_init(&b, 0);
	assert_int_equal(tl_token_mint(&t, key_a, sizeof key_a, &b), 0);
	for (size_t n = 0; n < b.len; n++)
		assert_int_equal(verify(b.data, n, key_a, &out), -TL_EINVAL);

	static const char *bad[] = {
	    "",
	    "v1.",
	    "v1..",
	    "v2.AQI.AAAAAAAAAAAAAAAAAAAAAA",
	    "v1.AQI.AAAAAAAAAAAAAAAAAAAAAA",  /* payload too short */
	    "v1.AQI=.AAAAAAAAAAAAAAAAAAAAAA", /* padding */
	    "v1.A.AAAAAAAAAAAAAAAAAAAAAA",    /* impossible base64 length */
	    "v1.AQI.AAAAAAAAAAAAAAAAAAAAA",   /* short MAC */
	    "v1.AQI.AAAAAAAAAAAAAAAAAAAAAAA", /* long MAC */
	    "v1.AQI.AAAAAAAAAAAAAAAAAAAAAB",  /* MAC with stray low bits */
	    "v1.AQI.AAAAAAAAAAAAAAAAAAAA+A",  /* standard, not url-safe, alphabet */
	    "v1.AQI.AAAAAAAAAAAAA.AAAAAAAA",
	    "v1.AQI.AAAAAAAAAAAAAAAAAAAAAA.",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if (verify(bad[i], strlen(bad[i]), key_a, &out) != -TL_EINVAL)
			fail_msg("token %zu \"%s\" not refused as malformed", i, bad[i]);
	}
	/* a trailing character after a valid token */
	assert_int_equal(tl_buf_putc(&b, 'A'), 0);
	assert_int_equal(verify(b.data, b.len, key_a, &out), -TL_EINVAL);
	/* a NULL or empty key */
	b.len--;
	unsigned char scratch[TL_MAX_TOKEN];
	assert_int_equal(tl_token_verify(b.data, b.len, NULL, 0, scratch, sizeof scratch, &out), -TL_EINVAL);
	/* over TL_MAX_TOKEN */
	char *huge = malloc(TL_MAX_TOKEN + 10);
	memset(huge, 'A', TL_MAX_TOKEN + 10);
	memcpy(huge, "v1.", 3);
	assert_int_equal(verify(huge, TL_MAX_TOKEN + 10, key_a, &out), -TL_EINVAL);
	free(huge);
	tl_buf_free(&b);
}

static void test_mint_refuses(void **state)
{
	(void)state;
	struct tl_buf b;
	tl_buf_init(&b, 0);
	static const char *bad_urls[] = {
	    "javascript:alert(1)", "ftp://host/x", "https://",      "http://",
	    "https:///path",       "//host/x",     "host/x",        "https://a b",
	    "https://a\nb",        "https://a\rb", "https://a\tb",  "https://a\x7f",
	    "data:text/html,x",    "httpx://host", " https://host",
	};
	for (size_t i = 0; i < sizeof bad_urls / sizeof bad_urls[0]; i++) {
		struct tl_token t = click_token();
		t.url = tl_str_of(bad_urls[i], strlen(bad_urls[i]));
		if (tl_token_mint(&t, key_a, sizeof key_a, &b) != -TL_EINVAL)
			fail_msg("url %zu \"%s\" accepted", i, bad_urls[i]);
		/* open tokens may omit the url, but one that is there must be http(s) too */
		t.kind = TL_TOKEN_OPEN;
		assert_int_equal(tl_token_mint(&t, key_a, sizeof key_a, &b), -TL_EINVAL);
	}
	struct tl_token t = click_token();
	t.url = TL_STR("HTTP://Shop.Example");
	assert_int_equal(tl_token_mint(&t, key_a, sizeof key_a, &b), 0);

	t = click_token();
	t.url = TL_STR_NULL;
	assert_int_equal(tl_token_mint(&t, key_a, sizeof key_a, &b), -TL_EINVAL); /* click without url */
	t = click_token();
	t.kind = 3;
	assert_int_equal(tl_token_mint(&t, key_a, sizeof key_a, &b), -TL_EINVAL);
	t = click_token();
	t.tenant = TL_STR_NULL;
	assert_int_equal(tl_token_mint(&t, key_a, sizeof key_a, &b), -TL_EINVAL);
	t = click_token();
	t.recipient = TL_STR_NULL;
	assert_int_equal(tl_token_mint(&t, key_a, sizeof key_a, &b), -TL_EINVAL);
	t = click_token();
	t.campaign = tl_str_of("c\0d", 3);
	assert_int_equal(tl_token_mint(&t, key_a, sizeof key_a, &b), -TL_EINVAL);
	/* not UTF-8: the API could never name it */
	t = click_token();
	t.campaign = TL_STR("caf\xe9");
	assert_int_equal(tl_token_mint(&t, key_a, sizeof key_a, &b), -TL_EINVAL);
	t = click_token();
	t.url = TL_STR("https://shop.example/\xff");
	assert_int_equal(tl_token_mint(&t, key_a, sizeof key_a, &b), -TL_EINVAL);
	t = click_token();
	t.campaign = TL_STR("caf\xc3\xa9");
	assert_int_equal(tl_token_mint(&t, key_a, sizeof key_a, &b), 0);
	static char big[TL_MAX_URL + 2];
	memset(big, 'a', sizeof big);
	t = click_token();
	t.campaign = tl_str_of(big, TL_MAX_CAMPAIGN + 1);
	assert_int_equal(tl_token_mint(&t, key_a, sizeof key_a, &b), -TL_EINVAL);
	t = click_token();
	assert_int_equal(tl_token_mint(&t, key_a, 0, &b), -TL_EINVAL);
	assert_int_equal(tl_token_mint(&t, NULL, 32, &b), -TL_EINVAL);
	size_t len = b.len;

	/* a capped output buffer */
	struct tl_buf small;
	tl_buf_init(&small, 20);
	assert_int_equal(tl_token_mint(&t, key_a, sizeof key_a, &small), -TL_ETOOBIG);
	assert_int_equal(small.len, 0);
	tl_buf_free(&small);
	assert_int_equal(b.len, len);
	tl_buf_free(&b);
}

static void test_limits(void **state)
{
	(void)state;
	static char big[TL_MAX_URL];
	memset(big, 'x', sizeof big);
	memcpy(big, "https://", 8);
	struct tl_token t = {.kind = TL_TOKEN_CLICK, .issued_ms = -1};
	t.tenant = tl_str_of(big + 8, TL_MAX_TENANT);
	t.campaign = tl_str_of(big + 8, TL_MAX_CAMPAIGN);
	t.variant = tl_str_of(big + 8, TL_MAX_VARIANT);
	t.message = tl_str_of(big + 8, TL_MAX_MESSAGE);
	t.recipient = tl_str_of(big + 8, TL_MAX_RECIPIENT);
	t.url = tl_str_of(big, TL_MAX_URL);
	struct tl_buf b;
	tl_buf_init(&b, 0);
	assert_int_equal(tl_token_mint(&t, key_a, sizeof key_a, &b), 0);
	assert_true(b.len <= TL_MAX_TOKEN);
	struct tl_token out;
	assert_int_equal(verify(b.data, b.len, key_a, &out), 0);
	assert_token_eq(&out, &t);
	tl_buf_free(&b);
}

/* RFC 4231 vectors through tl_recipient_hash (the first 16 bytes, hex). */
static void test_recipient_hash(void **state)
{
	(void)state;
	char out[TL_RCPT_HASH_LEN + 1];
	tl_recipient_hash((const unsigned char *)"Jefe", 4, "what do ya want for nothing?", 28, out);
	assert_string_equal(out, "5bdcc146bf60754e6a042426089575c7");
	unsigned char k20[20];
	memset(k20, 0x0b, sizeof k20);
	tl_recipient_hash(k20, sizeof k20, "Hi There", 8, out);
	assert_string_equal(out, "b0344c61d8db38535ca8afceaf0bf12b");
	unsigned char k131[131];
	memset(k131, 0xaa, sizeof k131);
	const char *m = "Test Using Larger Than Block-Size Key - Hash Key First";
	tl_recipient_hash(k131, sizeof k131, m, strlen(m), out);
	assert_string_equal(out, "60e431591ee0b67f0d8a26aacbf5b77f");

	/* keyed: another salt gives another hash; same input, same hash */
	char a[33], b[33], c[33];
	tl_recipient_hash((const unsigned char *)"salt1", 5, "x@example.com", 13, a);
	tl_recipient_hash((const unsigned char *)"salt2", 5, "x@example.com", 13, b);
	tl_recipient_hash((const unsigned char *)"salt1", 5, "x@example.com", 13, c);
	assert_string_not_equal(a, b);
	assert_string_equal(a, c);
	assert_int_equal(strlen(a), TL_RCPT_HASH_LEN);
}

static void test_base64url(void **state)
{
	(void)state;
	unsigned char in[64], dec[64];
	for (size_t i = 0; i < sizeof in; i++)
		in[i] = (unsigned char)(i * 37 + 250);
	for (size_t n = 0; n <= sizeof in; n++) {
		struct tl_buf b;
		tl_buf_init(&b, 0);
		assert_int_equal(tl_base64url_encode(in, n, &b), 0);
		assert_int_equal(b.len, n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0));
		assert_int_equal(tl_base64url_decode(b.data, b.len, dec, sizeof dec), (long)n);
		if (n)
			assert_memory_equal(dec, in, n);
		if (n > 0) /* output buffer one byte short */
			assert_int_equal(tl_base64url_decode(b.data, b.len, dec, n - 1), -TL_EINVAL);
		tl_buf_free(&b);
	}
	struct tl_buf b;
	tl_buf_init(&b, 0);
	assert_int_equal(tl_base64url_encode((const unsigned char *)"\xfb\xff", 2, &b), 0);
	assert_string_equal(b.data, "-_8");
	tl_buf_free(&b);
	assert_int_equal(tl_base64url_decode("QQ", 2, dec, sizeof dec), 1);
	assert_int_equal(dec[0], 'A');
	assert_int_equal(tl_base64url_decode("QR", 2, dec, sizeof dec), -TL_EINVAL);
	assert_int_equal(tl_base64url_decode("QUI", 3, dec, sizeof dec), 2);
	assert_int_equal(tl_base64url_decode("QUJ", 3, dec, sizeof dec), -TL_EINVAL);
	assert_int_equal(tl_base64url_decode("QUJD", 4, dec, sizeof dec), 3);
	assert_int_equal(tl_base64url_decode("QUJD=", 5, dec, sizeof dec), -TL_EINVAL);
	assert_int_equal(tl_base64url_decode("QU+D", 4, dec, sizeof dec), -TL_EINVAL);
	assert_int_equal(tl_base64url_decode("QU/D", 4, dec, sizeof dec), -TL_EINVAL);
	assert_int_equal(tl_base64url_decode("QU\0D", 4, dec, sizeof dec), -TL_EINVAL);
}

static void test_hex_and_ct(void **state)
{
	(void)state;
	unsigned char raw[4] = {0x00, 0x9f, 0xab, 0xff}, back[4];
	char hex[9];
	tl_hex_encode(raw, 4, hex);
	assert_string_equal(hex, "009fabff");
	assert_int_equal(tl_hex_decode(hex, 8, back, sizeof back), 4);
	assert_memory_equal(raw, back, 4);
	assert_int_equal(tl_hex_decode("009FABFF", 8, back, sizeof back), 4);
	assert_memory_equal(raw, back, 4);
	assert_int_equal(tl_hex_decode("009", 3, back, sizeof back), -TL_EINVAL);
	assert_int_equal(tl_hex_decode("0g", 2, back, sizeof back), -TL_EINVAL);
	assert_int_equal(tl_hex_decode(hex, 8, back, 3), -TL_EINVAL);
	assert_int_equal(tl_hex_decode("", 0, back, 0), 0);

	assert_int_equal(tl_ct_equal("abcd", "abcd", 4), 1);
	assert_int_equal(tl_ct_equal("abcd", "abce", 4), 0);
	assert_int_equal(tl_ct_equal("xbcd", "abcd", 4), 0);
	assert_int_equal(tl_ct_equal("a", "b", 0), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_mint_verify),
	    cmocka_unit_test(test_peek_then_verify),
	    cmocka_unit_test(test_mac_matches_openssl),
	    cmocka_unit_test(test_forged_and_tampered),
	    cmocka_unit_test(test_truncated_and_malformed),
	    cmocka_unit_test(test_mint_refuses),
	    cmocka_unit_test(test_limits),
	    cmocka_unit_test(test_recipient_hash),
	    cmocka_unit_test(test_base64url),
	    cmocka_unit_test(test_hex_and_ct),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
