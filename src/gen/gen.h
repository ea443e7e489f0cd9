/* gen.h — the campaign simulator behind `tally gen` (DESIGN.md §8).
 *
 * A tl_gen plans email campaigns deterministically from a seed — sends,
 * deliveries, bounces, drops, deferrals, complaints, unsubscribes, human and
 * machine opens, human and bot clicks — and turns them into the HTTP requests
 * a mail platform and its recipients would make against a collector: NDJSON
 * batches for POST /v1/events and open-pixel / click-redirect hits with
 * signed tokens. On top it mixes traffic that must NOT count: duplicate
 * events (re-sent lines, whole batches retried), batches with one bad line
 * (the collector must answer 400 and keep nothing), forged tokens and tokens
 * signed with another tenant's key. While planning it keeps the exact counts
 * the pipeline must end up with (the ground truth).
 *
 * The simulator does no I/O itself: a driver pulls requests with
 * tl_gen_next(), performs them, and reports each outcome with
 * tl_gen_complete(). tl_gen_run_http() is the libcurl driver; tests can drive
 * a tl_gen with anything else. The truth assumes every request got its
 * expected answer: tl_gen_complete() counts every deviation, and a run with
 * errors has an unreliable truth.
 *
 * One tl_gen belongs to one thread at a time. */
#ifndef TL_GEN_H
#define TL_GEN_H

#include "core/buf.h"
#include "event/metrics.h"
#include "event/token.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TL_GEN_MAX_VARIANTS 16

struct tl_gen_opts {
	const char *tenant;                       /* tenant name (required) */
	unsigned char link_key[TL_LINK_KEY_LEN];  /* the tenant's link key */
	unsigned char other_key[TL_LINK_KEY_LEN]; /* another tenant's key (when has_other_key) */
	bool has_other_key;
	const char *campaign_prefix; /* campaigns are "<prefix>-<n>" (default "camp") */
	int campaigns;               /* default 5 */
	int64_t recipients;          /* per campaign (default 1000); ignored when events > 0 */
	int64_t events;              /* approximate total to submit; 0 = use recipients */
	const char *variants;        /* "A,B" (default); "" = no variants */
	uint64_t seed;
	bool junk;            /* duplicates, bad batches, forged/foreign tokens (default on) */
	int batch_lines;      /* NDJSON lines per batch (default 800) */
	const char *base_url; /* prefix of click destinations (default https://shop.example) */
	/* Non-NULL: every hit carries the idempotency key "<prefix>-<n>" (n
	 * counts the run's hits; prefix up to 40 of [A-Za-z0-9_.-], unique per
	 * run) for the collector's Idempotency-Key header. The collector makes
	 * it the hit's event id, so a hit re-sent after a lost answer counts
	 * once: keyed hits are retry_safe. NULL (default): no key, and a hit
	 * whose answer was lost cannot be retried. */
	const char *hit_id_prefix;
};

/* Fills o with the defaults above (tenant NULL, keys zero). */
void tl_gen_defaults(struct tl_gen_opts *o);

struct tl_gen;

/* Plans nothing yet; validates o and copies what it needs (o may be freed
 * after). Returns 0 and *out, -TL_EINVAL (bad option: no tenant, more than
 * TL_GEN_MAX_VARIANTS variants, …) or -TL_ENOMEM. */
int tl_gen_create(const struct tl_gen_opts *o, struct tl_gen **out) TL_MUST_CHECK;

/* Frees g and every request it still owns. NULL-safe. */
void tl_gen_destroy(struct tl_gen *g);

/* Recipients per campaign actually simulated (derived from opts.events when set). */
int64_t tl_gen_recipients(const struct tl_gen *g);

enum tl_gen_req_kind { TL_GEN_REQ_EVENTS, TL_GEN_REQ_PIXEL, TL_GEN_REQ_CLICK };

/* One HTTP request to perform against the collector. Owned by the tl_gen; the
 * driver reads it and may re-send it (see retry_safe) until it hands it back
 * with tl_gen_complete(). */
struct tl_gen_request {
	enum tl_gen_req_kind kind;
	const char *method;     /* "GET", "HEAD" or "POST" */
	const char *path;       /* "/v1/events", "/o/<token>.gif", "/c/<token>" */
	const char *user_agent; /* NULL = the driver's own */
	const char *body;       /* POST body (NDJSON), else NULL */
	size_t body_len;
	size_t events;               /* events this request submits (lines, or 1 per hit) */
	int expect_status;           /* 400, 404, 302, 200; 0 = any 2xx */
	const char *expect_location; /* for 302: the destination the token holds */
	bool retry_safe; /* safe to re-send after an ambiguous failure (deduplicated batches, keyed hits) */
	const char *idempotency_key; /* hits with opts.hit_id_prefix: send as Idempotency-Key; else NULL */
	int attempts;                /* incremented by the driver per try */
};

/* Returns the next request in *out, or *out = NULL when the simulation is
 * over. Tokens are minted here, at hand-out time, so a token meant to be hit
 * "within the send window" carries issued_ms = now - 250 ms: the driver must
 * send it right away (the window is 2 s). Returns 0, or -TL_ENOMEM / a tl_token_mint error. */
int tl_gen_next(struct tl_gen *g, struct tl_gen_request **out) TL_MUST_CHECK;

/* Call before re-sending r: a hit meant to land within the send window
 * gets a token minted anew (r->path changes), so a retry after a backoff is
 * still inside the window. Other requests are left as they are. Returns 0
 * or a tl_token_mint error. */
int tl_gen_refresh(struct tl_gen *g, struct tl_gen_request *r) TL_MUST_CHECK;

/* Hands r back after its final attempt: status is the HTTP status (0 when
 * the request failed without an answer), location the Location header (or
 * NULL). Frees r. Returns 0 when the answer was the expected one, else
 * -TL_EINVAL with a reason in err (and counts an error). */
int tl_gen_complete(struct tl_gen *g, struct tl_gen_request *r, int status, const char *location, char *err,
                    size_t errlen);

struct tl_gen_stats {
	int64_t events_sent;    /* events submitted (lines + hits, duplicates and junk included) */
	int64_t events_counted; /* events the ground truth counts */
	int64_t requests;       /* requests handed out and completed */
	int64_t attempts;       /* HTTP attempts (requests + retries) */
	int64_t errors;         /* unexpected answers */
	int64_t batches, junk_batches, dup_lines, retried_batches, hits, forged_hits;
};

/* Fills st with the counters so far. */
void tl_gen_stats(const struct tl_gen *g, struct tl_gen_stats *st);

/* Counts for one (campaign, variant); variant index -1 = the campaign total.
 * Returns 0 or -TL_ENOTFOUND. Exposed for tests and the JSON writer. */
int tl_gen_truth(const struct tl_gen *g, int campaign, int variant,
                 int64_t counts[TL_M__COUNT]) TL_MUST_CHECK;

/* Appends the ground truth JSON:
 * {"tenant":…,"events_sent":N,"events_counted":N,"requests":N,"errors":N,"seed":N,
 *  "campaigns":{"<c>":{"total":{17 metrics},"variants":{"A":{…},…}}}}
 * (variant key "" when there are no variants). Returns 0 or a tl_buf error. */
int tl_gen_truth_json(const struct tl_gen *g, struct tl_buf *out) TL_MUST_CHECK;

/* Progress of a running driver. */
struct tl_gen_progress {
	struct tl_gen_stats stats;
	int64_t elapsed_ms;
	double events_per_s;
	bool done;
};
typedef void (*tl_gen_progress_fn)(void *arg, const struct tl_gen_progress *p);

struct tl_gen_http_opts {
	const char *collector; /* base URL, "http://127.0.0.1:8080" */
	const char *api_key;   /* Bearer for POST /v1/events */
	int concurrency;       /* parallel keep-alive connections (default 8) */
	int max_attempts;      /* per request, for retryable failures (default 20) */
	/* > 0: "retry until" mode, for runs that kill the collector: a request
	 * that gets no answer (connection refused or reset, timeout) or a 5xx
	 * or 429 is re-sent with a backoff of at most 1 s until it gets an
	 * answer, for up to this long after its first attempt (max_attempts is
	 * then ignored). Only retry_safe requests are re-sent after the request
	 * may have reached the collector, so hits need opts.hit_id_prefix. */
	int64_t retry_until_ms;
	int64_t timeout_ms;  /* per attempt (default 30 s) */
	int64_t progress_ms; /* interval between progress calls (default 1000) */
	tl_gen_progress_fn progress;
	void *progress_arg;
	char *err; /* receives the first error (may be NULL) */
	size_t errlen;
};

/* Runs the whole simulation against a collector with libcurl (multi
 * interface, keep-alive connections). Retries 503/429 answers and failures
 * to connect; re-sends deduplicated batches after any failure. Returns 0
 * when every request got its expected answer, -TL_EINVAL when some did not
 * (tl_gen_stats().errors, first reason in o->err), -TL_EUNAVAIL when a
 * request ran out of attempts, or -TL_ENOMEM. Calling thread only; calls
 * o->progress on it. */
int tl_gen_run_http(struct tl_gen *g, const struct tl_gen_http_opts *o) TL_MUST_CHECK;

#endif
