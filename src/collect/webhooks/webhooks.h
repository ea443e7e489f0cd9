/* webhooks.h — email-provider webhooks: one parser + verifier per provider.
 *
 * The pure part of `POST /v1/webhooks/<provider>/<tenant>` (DESIGN.md §4, §6,
 * issue 5). The collector looks the tenant up, fills a struct tl_webhook_req
 * and calls tl_webhook_handle(). That call checks the provider's signature or
 * credential, parses the body and maps every provider event to a canonical
 * event — or, when an event cannot be counted, to a dead letter with a reason.
 * It does no I/O except, for Amazon SES, fetching an SNS signing certificate
 * through the pluggable fetcher of struct tl_sns_certs (once per URL, cached).
 *
 * What the collector does with the result:
 *   1. on failure: answer *http_status with {"error":{"code":…,"message":err}}
 *      (codes: tl_webhook_status_code()), write nothing;
 *   2. on success: append out->events (open/click to `events`, where the
 *      enricher classifies machine opens and bot clicks; every other type to
 *      `delivery`; partition key = ev.recipient, which is already the keyed
 *      hash) and the dead letters (tl_webhook_dead_to_json() to `dead`);
 *   3. once every record is durable: tl_webhook_replay_commit(req.replay, out),
 *      then answer *http_status (200) — or 503 if an append failed, without
 *      committing, so the provider retries and nothing is lost or refused as
 *      a replay;
 *   4. if out->subscribe_url is set (SNS SubscriptionConfirmation): GET it
 *      (tl_webhook_http_get, off the loop thread if it can) to confirm the
 *      subscription. It has already been checked to be https on
 *      sns.<region>.amazonaws.com.
 *
 * Every event in out->events satisfies tl_event_validate(): type known,
 * tenant = tenant->name, campaign non-empty, recipient = the tenant-keyed hash
 * (tl_recipient_hash, TL_EVF_HASHED set; the raw address is never kept), id =
 * the provider's own event id or a deterministic one built from the payload
 * (so that provider retries dedupe), ts = event time, arrival_ms = now_ms,
 * provider = the provider name, every string within the TL_MAX_* limits.
 * docs/providers.md has the mapping table of each provider.
 *
 * Status codes:
 *   200  accepted (events and/or dead letters, possibly none: pings,
 *        subscription confirmations, SES housekeeping notifications)
 *   400  malformed body (not JSON, bad UTF-8, wrong top-level shape, a Mailgun
 *        body without signature/event-data, an SNS envelope without Message)
 *   401  the tenant has no credential for this provider and its verification
 *        is not switched off, or the request carries no signature/credential
 *   403  a signature or credential is present but wrong; stale timestamp;
 *        replayed Mailgun token; SNS certificate or SubscribeURL not on an
 *        allowed amazonaws.com URL; SNS topic not allowed (ses_topic_arn)
 *   404  unknown provider (or no tenant given)
 *   413  the scratch arena is over its cap (req->arena's max)
 *   500  out of memory
 *   503  the SNS signing certificate could not be fetched now (retryable)
 *
 * Tenant settings read (tl_tenant_setting): sendgrid_public_key,
 * sendgrid_verify, mailgun_signing_key, postmark_auth, sparkpost_auth,
 * ses_verify, ses_topic_arn (comma-separated allowed TopicArns: SES's
 * credential, required while ses_verify is on),
 * campaign_field, variant_field, recipient_field (defaults tally_campaign,
 * tally_variant, tally_recipient). Boolean settings are false for "false",
 * "0", "no", "off" (any case) and true otherwise.
 *
 * Threading: tl_webhook_handle is pure and may run on any thread, as many at
 * once as there are arenas. The replay cache and the SNS certificate cache
 * are internally locked and may be shared by every thread of one collector. */
#ifndef TL_WEBHOOKS_H
#define TL_WEBHOOKS_H

#include "core/arena.h"
#include "core/buf.h"
#include "core/err.h"
#include "event/event.h"
#include "store/store.h"

#include <stddef.h>
#include <stdint.h>

struct tl_webhook_replay;
struct tl_sns_certs;

/* Returns the value of request header `name` (case-insensitive) and its
 * length in *len, or NULL when absent. Matches tl_http_header() through a
 * one-line wrapper. The value must stay valid for the whole handle call. */
typedef const char *(*tl_webhook_header_fn)(void *arg, const char *name, size_t *len);

struct tl_webhook_req {
	const char *body; /* raw request body, exactly as received (signatures cover it) */
	size_t len;
	tl_webhook_header_fn header; /* may be NULL: no headers */
	void *header_arg;
	const struct tl_tenant *tenant;   /* from the URL; NULL answers 404 */
	int64_t now_ms;                   /* arrival time, ms since the epoch (tl_now_ms()) */
	struct tl_arena *arena;           /* per-request scratch: out's memory lives here.
	                                     Give it a cap (max) of about 4 × the body
	                                     limit: each event or dead letter takes ~250
	                                     bytes plus its strings; over the cap is 413 */
	struct tl_webhook_replay *replay; /* Mailgun token replay cache; NULL = no replay check */
	struct tl_sns_certs *sns_certs;   /* SNS certificate cache; NULL = SES signature
	                                     verification unavailable (answers 503) */
};

/* An event that cannot be counted, with why. ev is best effort: fields the
 * payload had, cut to the TL_MAX_* limits, recipient hashed (or empty); its
 * type may be TL_EV_NONE, so serialise it with tl_webhook_dead_to_json(),
 * not tl_event_to_json(). */
struct tl_webhook_dead {
	struct tl_event ev;
	const char *reason;         /* "no campaign", "unmapped event type \"group_resubscribe\"", … */
	const char *provider_event; /* the provider's own event name, "" when unknown */
};

struct tl_webhook_out {
	struct tl_event *events; /* canonical, ready to append (see above) */
	size_t n;
	struct tl_webhook_dead *dead; /* for the `dead` topic; never silently dropped */
	size_t n_dead;
	const char *subscribe_url; /* SNS SubscriptionConfirmation: URL to GET, else NULL */

	/* Private to tl_webhook_replay_commit: the Mailgun token to remember. */
	unsigned char replay_key[32];
	int64_t replay_expires_ms; /* 0 = nothing to commit */
};

/* Handles one webhook request for provider ("sendgrid", "ses", "mailgun",
 * "postmark", "sparkpost"; provider_len bytes, exact lowercase). Fills *out
 * (zeroed first; all its memory comes from req->arena and stays valid until
 * that arena is reset; strings point nowhere else, so the request body and
 * the tenant may go away after the call) and *http_status (always).
 * Returns 0 (status 200) or a negative TL_E* code: -TL_EINVAL (400),
 * -TL_EAUTH (401/403), -TL_ENOTFOUND (404), -TL_ETOOBIG (413), -TL_ENOMEM
 * (500), -TL_EUNAVAIL (503); then out is empty and err (errlen bytes, always
 * NUL-terminated, may be NULL) says what was wrong, in words fit for the JSON
 * error body (never a secret). Any thread. */
int tl_webhook_handle(const char *provider, size_t provider_len, const struct tl_webhook_req *req,
                      struct tl_webhook_out *out, int *http_status, char *err, size_t errlen) TL_MUST_CHECK;

/* The short error code for the JSON error body of a status:
 * 400 "bad_request", 401 "unauthorized", 403 "forbidden", 404 "not_found",
 * 413 "too_large", 503 "unavailable", others "internal". */
const char *tl_webhook_status_code(int http_status);

/* Appends one dead letter as a JSON object (no newline):
 * {"reason":…,"provider":…,"provider_event":…,"tenant":…,"event":{"type":…
 * (omitted when unknown),"campaign":…,"variant":…,"recipient":<hash>,"id":…,
 * "message":…,"ts":…,"arrival":…,"url":…,"bounce_class":…}} with empty fields
 * omitted. 0, -TL_ENOMEM or -TL_ETOOBIG (out's cap). Any thread. */
int tl_webhook_dead_to_json(const struct tl_webhook_dead *d, struct tl_buf *out) TL_MUST_CHECK;

/* ---- Mailgun replay cache ---------------------------------------------- */

/* A bounded cache of recently accepted Mailgun (tenant, token) pairs, kept
 * until the token's timestamp leaves the 5-minute acceptance window. Only
 * SHA-256 digests are stored. When full, the oldest entry is evicted even if
 * unexpired (replays are still deduplicated downstream by event id); size it
 * for the request rate: capacity / 600 s ≥ peak Mailgun requests per second.
 * capacity 0 = 65536. Returns 0 or -TL_ENOMEM. Internally locked: one cache
 * per collector, shared by its threads. */
int tl_webhook_replay_create(size_t capacity, struct tl_webhook_replay **out) TL_MUST_CHECK;
void tl_webhook_replay_destroy(struct tl_webhook_replay *r); /* NULL-safe */

/* Remembers the token of a handled request (no-op when out has none or r is
 * NULL). Call it only once the request's records are durable: a request that
 * failed later (503) must stay retryable. Any thread. */
void tl_webhook_replay_commit(struct tl_webhook_replay *r, const struct tl_webhook_out *out, int64_t now_ms);

/* How long a reservation holds a token whose request is still in flight. */
#define TL_WEBHOOK_REPLAY_PENDING_MS (60LL * 1000)

/* Reserves the token of a handled request before its records are written
 * (returns 0 and does nothing when out has none or r is NULL).
 * tl_webhook_handle only checks the cache and the commit comes once the
 * records are durable, so without this every concurrent copy of one signed
 * request would pass the check. Returns -TL_EAUTH (answer 403: a replay) when
 * the token is already reserved or remembered. The reservation lasts
 * TL_WEBHOOK_REPLAY_PENDING_MS (at most until the token's window ends) unless
 * tl_webhook_replay_commit extends it to the whole window or
 * tl_webhook_replay_release drops it: a request that failed with 503 can be
 * retried with the same token once it has lapsed (Mailgun retries after 10
 * minutes, freshly signed). Any thread. */
int tl_webhook_replay_reserve(struct tl_webhook_replay *r, const struct tl_webhook_out *out,
                              int64_t now_ms) TL_MUST_CHECK;

/* Drops the reservation of out's token (a request that failed before any
 * append was queued), so that a retry is not refused. No-op when there is
 * none. Any thread. */
void tl_webhook_replay_release(struct tl_webhook_replay *r, const struct tl_webhook_out *out);

/* Entries currently held, and unexpired entries evicted because the cache
 * was full (a sign it is too small). Any thread. */
size_t tl_webhook_replay_size(struct tl_webhook_replay *r);
uint64_t tl_webhook_replay_evicted(struct tl_webhook_replay *r);

/* ---- SNS signing certificates ----------------------------------------- */

/* Fetches url (already checked: https://sns.<region>.amazonaws.com/….pem)
 * into out (a tl_buf whose max is the size cap). Returns 0, or -TL_ENOTFOUND
 * (the server said no: 4xx), -TL_ETOOBIG, or a retryable -TL_EUNAVAIL /
 * -TL_ETIMEDOUT / -TL_EIO. May block: it runs on the cache's fetcher
 * thread, once per certificate URL. */
typedef int (*tl_webhook_fetch_fn)(void *arg, const char *url, struct tl_buf *out);

/* Creates a certificate cache of at most max_entries URLs (0 = 16) that fetches
 * through fetch(arg, …) and keeps the parsed X.509 certificate per URL (LRU).
 * Failed fetches are remembered for a while (a 4xx or a bad PEM for 10
 * minutes, a network failure for 10 s) and at most 10 fetches a minute are
 * made, so a stream of forged URLs cannot turn the collector into a
 * downloader. Fetches run on a thread of the cache (started at the first),
 * one at a time; a request that needs a certificate not cached waits for
 * its fetch at most 500 ms, then gets a retryable 503 and the sender's retry
 * finds it cached: a slow or unreachable server never stalls the
 * collector's loop for the fetch's timeout. Returns 0 or -TL_ENOMEM.
 * Internally locked. Destroying it waits for a fetch in flight. */
int tl_sns_certs_create(size_t max_entries, tl_webhook_fetch_fn fetch, void *arg,
                        struct tl_sns_certs **out) TL_MUST_CHECK;
/* How long a request waits for a fetch it needs (default 500 ms). */
void tl_sns_certs_set_wait(struct tl_sns_certs *c, int wait_ms);
void tl_sns_certs_destroy(struct tl_sns_certs *c); /* NULL-safe */

/* Options of tl_webhook_http_get; NULL = the defaults. */
struct tl_webhook_http_opts {
	int timeout_ms;   /* whole transfer, default 5000 (connect: half of it) */
	size_t max_bytes; /* response body cap, default 64 KiB (a PEM is ~2 KiB) */
};

/* GETs an https URL with libcurl (https only, no redirects, TLS peer and host
 * verified, timeouts, size cap) into out. opts is a const struct
 * tl_webhook_http_opts * (or NULL), so that it plugs in as a
 * tl_webhook_fetch_fn: tl_sns_certs_create(0, tl_webhook_http_get, &opts, …).
 * Also what confirms an SNS subscription (GET out->subscribe_url). Returns 0
 * (a 2xx answer), -TL_EINVAL (not an https URL), -TL_ENOTFOUND (4xx),
 * -TL_ETOOBIG, -TL_ETIMEDOUT, -TL_EUNAVAIL (connect/TLS failure, 5xx), -TL_EIO.
 * Blocks. Needs curl_global_init(CURL_GLOBAL_DEFAULT) once at process start
 * (tl_webhook_http_global_init does it). Any thread. */
int tl_webhook_http_get(void *opts, const char *url, struct tl_buf *out) TL_MUST_CHECK;
int tl_webhook_http_global_init(void) TL_MUST_CHECK;

#endif
