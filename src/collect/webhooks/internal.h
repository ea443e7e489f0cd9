/* internal.h — what the provider files of the webhooks module share.
 *
 * Not part of the public interface: only the .c files of this folder, the unit
 * test and the fuzz targets include it. */
#ifndef TL_WEBHOOKS_INTERNAL_H
#define TL_WEBHOOKS_INTERNAL_H

#include "collect/webhooks/webhooks.h"
#include "event/token.h"

#include <jansson.h>
#include <stdbool.h>

#define TL_WH_MAX_AGE_MS (72LL * 3600 * 1000) /* signed timestamps older than this are refused */
#define TL_WH_MAX_SKEW_MS (15LL * 60 * 1000)  /* … and those further in the future */
#define TL_WH_MAILGUN_WINDOW_MS (5LL * 60 * 1000)

/* The state of one tl_webhook_handle call. */
struct wh_ctx {
	const struct tl_webhook_req *req;
	struct tl_webhook_out *out;
	const char *provider; /* "sendgrid", … */
	const char *campaign_field, *variant_field, *recipient_field;
	size_t ev_cap, dead_cap;
	bool verify; /* false only in tests and fuzz targets (tl_wh_handle_opts) */
	int status;
	char *err;
	size_t errlen;
};

/* One provider event before bounding, hashing and copying: views into the
 * parsed JSON (or the arena). tl_wh_emit turns it into an event or a dead
 * letter. */
struct wh_item {
	uint8_t type; /* enum tl_event_type; TL_EV_NONE with dead set */
	uint8_t bounce_class;
	uint16_t flags;
	int64_t ts_ms; /* 0 = missing or bad */
	struct tl_str campaign, variant, recipient, message, id, url, user_agent, ip;
	bool recipient_is_email;          /* normalise (trim, lowercase) before hashing */
	struct tl_str provider_event;     /* the provider's own event name */
	const char *dead;                 /* non-NULL: a dead letter with this reason */
	char rhash[TL_RCPT_HASH_LEN + 1]; /* filled by tl_wh_item_hash */
	bool hashed;
};

/* A provider event name → canonical type (and bounce class). */
struct wh_map {
	const char *name;
	uint8_t type;
	uint8_t bounce_class;
};

/* Finds name (exact) in m[0..n); NULL when absent. */
const struct wh_map *tl_wh_lookup(const struct wh_map *m, size_t n, struct tl_str name);

/* Sets it->type / bounce_class from the table, or it->dead to "missing event
 * type" / "unmapped event type \"name\"". */
void tl_wh_map_type(struct wh_ctx *c, const struct wh_map *m, size_t n, struct tl_str name,
                    struct wh_item *it);

/* Provider entry points: check the credential, parse, emit. */
int tl_wh_sendgrid(struct wh_ctx *c) TL_MUST_CHECK;
int tl_wh_ses(struct wh_ctx *c) TL_MUST_CHECK;
int tl_wh_mailgun(struct wh_ctx *c) TL_MUST_CHECK;
int tl_wh_postmark(struct wh_ctx *c) TL_MUST_CHECK;
int tl_wh_sparkpost(struct wh_ctx *c) TL_MUST_CHECK;

/* tl_webhook_handle with verification switchable off whatever the tenant
 * says (verify=false), for the fuzz targets and the tests. */
int tl_wh_handle_opts(const char *provider, size_t provider_len, const struct tl_webhook_req *req,
                      struct tl_webhook_out *out, int *http_status, char *err, size_t errlen,
                      bool verify) TL_MUST_CHECK;

/* Sets c->status and err (printf-style), returns rc. */
int tl_wh_fail(struct wh_ctx *c, int status, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* An arena allocation failed: 413 when the arena has a cap (the request
 * expanded past it), else 500. Returns the error code. */
int tl_wh_fail_alloc(struct wh_ctx *c);

/* Parses the body (or another buffer) as JSON. Integers beyond 64 bits make
 * the parse fall back to reading every integer as a double (callers that need
 * an exact integer check json_is_integer). NULL with 400 set on failure. */
json_t *tl_wh_load(struct wh_ctx *c, const char *buf, size_t len, const char *what);

/* Header value or NULL. */
const char *tl_wh_header(struct wh_ctx *c, const char *name, size_t *len);

/* Boolean tenant setting (see webhooks.h). */
bool tl_wh_setting_bool(const struct tl_tenant *t, const char *key, bool def);

/* A JSON string's text; empty when it holds a NUL. Bodies are read with
 * NULs allowed, so that one event's "\u0000" does not reject the whole
 * batch (the provider would retry it, then drop every event in it), but
 * nothing downstream takes a NUL (PostgreSQL text cannot hold one): such a
 * value counts as missing (a dead letter where it is required). */
struct tl_str tl_wh_jstr(const json_t *v);

/* String member `key` of obj as a view (NULL/empty view when absent, not a
 * string, or holding a NUL). */
struct tl_str tl_wh_str(const json_t *obj, const char *key);

/* A user agent: string member `key` of obj up to its first NUL (free text a
 * recipient's client chose; what precedes the NUL still classifies). */
struct tl_str tl_wh_agent(const json_t *obj, const char *key);

/* A JSON value as text: a string as is (tl_wh_jstr), an integer in decimal
 * (copied into the arena), and so a real that holds an integer exactly (a
 * body with one integer past 64 bits is read with every integer as a
 * real). Empty view for anything else. */
struct tl_str tl_wh_text(struct wh_ctx *c, const json_t *v);

/* An event time: integer or real unix seconds, a string of unix seconds
 * (fraction allowed), or an RFC 3339 string. Returns 0 or -1. */
int tl_wh_ts(const json_t *v, int64_t *ms);

/* The first string of v if it is an array, v itself if a string (text as
 * tl_wh_text), else empty. */
struct tl_str tl_wh_first(struct wh_ctx *c, const json_t *v);

/* Applies the tenant's field mapping from the provider's custom metadata
 * object meta (may be NULL): campaign/variant/recipient are set from
 * meta[campaign_field] … when present (string or integer). Fields already
 * set stay unless the metadata has them. Recipient from metadata is not
 * treated as an email. */
void tl_wh_map_meta(struct wh_ctx *c, const json_t *meta, struct wh_item *it);

/* Computes it->rhash (the tenant-keyed recipient hash) if not done yet.
 * Empty recipient → empty hash. */
void tl_wh_item_hash(struct wh_ctx *c, struct wh_item *it);

/* Builds a deterministic id "<prefix>-<p0>-<p1>…" (parts with n == 0 are
 * skipped); when it would exceed TL_MAX_ID, or a part holds bytes other than
 * printable ASCII, the id is "<prefix>-h-" + hex(SHA-256 of the parts).
 * Copied into the arena; empty view on allocation failure. */
struct tl_str tl_wh_id(struct wh_ctx *c, const char *prefix, const struct tl_str *parts, size_t n);

/* Formats an int64 in decimal into the arena. */
struct tl_str tl_wh_int(struct wh_ctx *c, long long v);

/* Appends an event or a dead letter for it. Returns 0, -TL_ENOMEM or
 * -TL_ETOOBIG (arena cap), with c->status set on failure. */
int tl_wh_emit(struct wh_ctx *c, struct wh_item *it) TL_MUST_CHECK;

/* Makes room for n more events (the array doubles as it grows; nothing is
 * reserved ahead for input arrays, so a body of tiny elements does not turn
 * into a large allocation). 0 or error with status. */
int tl_wh_reserve(struct wh_ctx *c, size_t n) TL_MUST_CHECK;

/* A dead letter without a usable item (e.g. an array element that is not an
 * object): reason copied. */
int tl_wh_dead(struct wh_ctx *c, const char *reason, struct tl_str provider_event) TL_MUST_CHECK;

/* Formats a reason into the arena ("unmapped event type \"x\"", with the
 * quoted name cut to 48 bytes and sanitised). Returns a static fallback on
 * allocation failure. */
const char *tl_wh_reason(struct wh_ctx *c, const char *what, struct tl_str name);

/* Standard base64 (with or without padding; no whitespace). Returns bytes
 * written or -1. */
long tl_wh_b64decode(const char *in, size_t n, unsigned char *out, size_t cap);

/* Constant-time equality of two secrets of any length (compares SHA-256
 * digests). Returns true when equal. */
bool tl_wh_secret_eq(const void *a, size_t an, const void *b, size_t bn);

/* Checks an "Authorization: Basic …" value against "user:password".
 * Returns 0, or fails with 401 (missing/malformed) / 403 (wrong). */
int tl_wh_check_basic(struct wh_ctx *c, const char *hdr, size_t hdr_len, const char *expected) TL_MUST_CHECK;

/* Lowercase ASCII compare of n bytes against a NUL-terminated literal. */
bool tl_wh_ieq(const char *s, size_t n, const char *lit);

/* True when key (a SHA-256 digest) is in the replay cache and unexpired at
 * now_ms (replay.c). r may be NULL (never seen). */
bool tl_wh_replay_seen(struct tl_webhook_replay *r, const unsigned char key[32], int64_t now_ms);

/* SNS (sns.c): verifies an SNS envelope root against its signing certificate;
 * checks URLs of the envelope. 0 or fails with status set. */
int tl_wh_sns_verify(struct wh_ctx *c, const json_t *env) TL_MUST_CHECK;
/* True when url is https://sns.<region>.amazonaws.com<path> with nothing odd;
 * pem additionally requires a path ending in ".pem" and no query. */
bool tl_wh_sns_url_ok(const char *url, size_t n, bool pem);

#endif
