/* token.h — signed tracking tokens (DESIGN.md §5).
 *
 * Format: "v1." base64url(payload) "." base64url(HMAC-SHA256(link_key, payload)[:16])
 * with unpadded base64url. The payload is a compact binary record (kind,
 * issued-at, tenant, campaign, variant, message, recipient, url). The
 * tenant name is readable before verification so the verifier can find the
 * key; nothing else in a token is trusted until tl_token_verify succeeds.
 * All functions are pure and thread-safe. */
#ifndef TL_TOKEN_H
#define TL_TOKEN_H

#include "event/event.h"

#define TL_TOKEN_MAC_LEN 16
#define TL_LINK_KEY_LEN 32 /* raw key bytes; tenants store it hex-encoded */

enum tl_token_kind { TL_TOKEN_OPEN = 1, TL_TOKEN_CLICK = 2 };

struct tl_token {
	enum tl_token_kind kind;
	int64_t issued_ms; /* when the link was minted (≈ send time) */
	struct tl_str tenant, campaign, variant, message, recipient, url;
};

/* Whether u is a URL a click may redirect to: http:// or https:// (any
 * case) followed by a host, no control characters or spaces. */
bool tl_token_url_ok(struct tl_str u);

/* Appends the token text for t, signed with key (key_len bytes), to out.
 * Returns 0, -TL_EINVAL (a field over its limit or not UTF-8, a click
 * without url, or a url that tl_token_url_ok refuses), -TL_ETOOBIG or
 * -TL_ENOMEM. Parsing applies the same rules. */
int tl_token_mint(const struct tl_token *t, const unsigned char *key, size_t key_len,
                  struct tl_buf *out) TL_MUST_CHECK;

/* Decodes the payload of text (len bytes) WITHOUT checking the signature, into
 * t (strings point into scratch, which must hold at least len bytes). Use it
 * only to learn t->tenant before tl_token_verify. Returns 0 or -TL_EINVAL. */
int tl_token_peek(const char *text, size_t len, unsigned char *scratch, size_t scratch_len,
                  struct tl_token *t) TL_MUST_CHECK;

/* Decodes and verifies text with key (constant-time MAC comparison). On
 * success fills t like tl_token_peek and returns 0; a bad format returns
 * -TL_EINVAL, a bad signature -TL_EAUTH. */
int tl_token_verify(const char *text, size_t len, const unsigned char *key, size_t key_len,
                    unsigned char *scratch, size_t scratch_len, struct tl_token *t) TL_MUST_CHECK;

/* base64url without padding. encode appends; decode writes at most out_cap
 * bytes and returns the decoded length or -TL_EINVAL. */
int tl_base64url_encode(const unsigned char *in, size_t n, struct tl_buf *out) TL_MUST_CHECK;
long tl_base64url_decode(const char *in, size_t n, unsigned char *out, size_t out_cap);

/* SHA-256 of n fields, each preceded by its length (4 bytes, big-endian):
 * no two different lists of fields share a digest. For ids derived from
 * fields (a hit's Idempotency-Key id, a webhook event's hashed id). Any
 * thread; no allocation. */
void tl_fields_digest(const struct tl_str *fields, size_t n, unsigned char out[32]);

/* Hex helpers for keys stored as text. decode returns bytes written or -TL_EINVAL. */
void tl_hex_encode(const unsigned char *in, size_t n, char *out /* 2n+1 */);
long tl_hex_decode(const char *in, size_t n, unsigned char *out, size_t out_cap);

/* Keyed hash of a recipient (DESIGN.md §4): hex(HMAC-SHA256(salt, recipient)[:16]),
 * 32 characters + NUL into out. The raw recipient is never stored. */
#define TL_RCPT_HASH_LEN 32
void tl_recipient_hash(const unsigned char *salt, size_t salt_len, const char *rcpt, size_t n,
                       char out[TL_RCPT_HASH_LEN + 1]);

/* Constant-time comparison; returns 1 when equal. */
int tl_ct_equal(const void *a, const void *b, size_t n);

#endif
