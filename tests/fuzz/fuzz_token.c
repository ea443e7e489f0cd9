/* fuzz_token.c — token parsing, minting, base64url and hex on arbitrary bytes.
 *
 * 1. The input as token text: tl_token_peek and tl_token_verify must agree
 *    (verify never accepts what peek refuses) and never crash.
 * 2. The input split at '\n' into kind+issued, tenant, campaign, variant,
 *    message, recipient, url: a token that mints must verify with the same
 *    key to the same fields, and fail with any other key.
 * 3. base64url / hex decoders are strict: what decodes re-encodes to the
 *    input. */
#include "event/token.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The key the seed corpus tokens were minted with (see corpus/fuzz_token). */
static const unsigned char key[TL_LINK_KEY_LEN] = "tally-fuzz-link-key-0123456789ab";
static const unsigned char other[TL_LINK_KEY_LEN] = "another-tenant-key-0123456789abc";

static int str_eq(struct tl_str a, struct tl_str b)
{
	return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

static void check_text(const char *text, size_t n)
{
	static unsigned char s1[TL_MAX_TOKEN], s2[TL_MAX_TOKEN];
	struct tl_token p, v;
	int rp = tl_token_peek(text, n, s1, sizeof s1, &p);
	int rv = tl_token_verify(text, n, key, sizeof key, s2, sizeof s2, &v);
	if (rp != 0 && rp != -TL_EINVAL)
		abort();
	if (rv != 0 && rv != -TL_EINVAL && rv != -TL_EAUTH)
		abort();
	if ((rp == 0) != (rv != -TL_EINVAL))
		abort(); /* format errors are the same for both */
	if (rv == 0 && (p.kind != v.kind || p.issued_ms != v.issued_ms || !str_eq(p.url, v.url) ||
	                !str_eq(p.tenant, v.tenant)))
		abort();
}

static void check_mint(const char *d, size_t n)
{
	struct tl_str f[7];
	size_t k = 0, start = 0;
	for (size_t i = 0; i <= n && k < 7; i++) {
		if (i == n || d[i] == '\n') {
			f[k++] = tl_str_of(d + start, i - start);
			start = i + 1;
		}
	}
	if (k < 7)
		return;
	struct tl_token t = {0};
	t.kind = f[0].n && f[0].p[0] == 'c' ? TL_TOKEN_CLICK : TL_TOKEN_OPEN;
	t.issued_ms = (int64_t)f[0].n * 1000003;
	t.tenant = f[1];
	t.campaign = f[2];
	t.variant = f[3];
	t.message = f[4];
	t.recipient = f[5];
	t.url = f[6];
	struct tl_buf b;
	tl_buf_init(&b, 0);
	if (tl_token_mint(&t, key, sizeof key, &b) == 0) {
		static unsigned char s[TL_MAX_TOKEN];
		struct tl_token v;
		if (tl_token_verify(b.data, b.len, key, sizeof key, s, sizeof s, &v) != 0)
			abort();
		if (v.kind != t.kind || v.issued_ms != t.issued_ms || !str_eq(v.tenant, t.tenant) ||
		    !str_eq(v.campaign, t.campaign) || !str_eq(v.variant, t.variant) ||
		    !str_eq(v.message, t.message) || !str_eq(v.recipient, t.recipient) ||
		    !str_eq(v.url, t.url))
			abort();
		if (tl_token_verify(b.data, b.len, other, sizeof other, s, sizeof s, &v) != -TL_EAUTH)
			abort();
	}
	tl_buf_free(&b);
}

static void check_codecs(const char *d, size_t n)
{
	static unsigned char out[TL_MAX_TOKEN];
	if (n > TL_MAX_TOKEN)
		return;
	long m = tl_base64url_decode(d, n, out, sizeof out);
	if (m >= 0) {
		struct tl_buf b;
		tl_buf_init(&b, 0);
		if (tl_base64url_encode(out, (size_t)m, &b) != 0 || b.len != n || memcmp(b.data, d, n))
			abort();
		tl_buf_free(&b);
	}
	m = tl_hex_decode(d, n, out, sizeof out);
	if (m >= 0) {
		static char hex[2 * TL_MAX_TOKEN + 1];
		tl_hex_encode(out, (size_t)m, hex);
		for (size_t i = 0; i < n; i++) {
			char c = d[i] >= 'A' && d[i] <= 'F' ? (char)(d[i] + 32) : d[i];
			if (hex[i] != c)
				abort();
		}
	}
	char h[TL_RCPT_HASH_LEN + 1];
	tl_recipient_hash(key, sizeof key, d, n, h);
	if (strlen(h) != TL_RCPT_HASH_LEN)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *d = (const char *)data;
	check_text(d, size);
	check_mint(d, size);
	check_codecs(d, size);
	return 0;
}
