/* event.h — the canonical event, the unit of data that flows through tally.
 *
 * DESIGN.md §4. Strings are (pointer, length) views: an event never owns its
 * bytes. Whoever fills one says where the bytes live (an arena, an input
 * buffer, a decoded record) and for how long. */
#ifndef TL_EVENT_H
#define TL_EVENT_H

#include "core/arena.h"
#include "core/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct tl_str {
	const char *p;
	uint32_t n;
};

#define TL_STR(lit) ((struct tl_str){(lit), (uint32_t)(sizeof(lit) - 1)})
#define TL_STR_NULL ((struct tl_str){NULL, 0})

static inline struct tl_str tl_str_of(const char *p, size_t n)
{
	return (struct tl_str){p, (uint32_t)n};
}

/* Non-zero where the 8 (4) bytes at p and q differ: one unaligned load each. */
static inline uint64_t tl__diff8(const char *p, const char *q)
{
	uint64_t x, y;
	memcpy(&x, p, 8);
	memcpy(&y, q, 8);
	return x ^ y;
}

static inline uint32_t tl__diff4(const char *p, const char *q)
{
	uint32_t x, y;
	memcpy(&x, p, 4);
	memcpy(&y, q, 4);
	return x ^ y;
}

/* Whether a and b hold the same bytes. Inline loads for the short strings
 * events are made of (tenants, campaigns, variants, recipients: the fold
 * compares several per event), as overlapping words from both ends;
 * memcmp beyond 32 bytes. */
static inline bool tl_str_eq(struct tl_str a, struct tl_str b)
{
	uint32_t n = a.n;
	if (n != b.n)
		return false;
	const char *p = a.p, *q = b.p;
	if (n > 16 && n <= 32) /* hashed recipients: 32 */
		return (tl__diff8(p, q) | tl__diff8(p + 8, q + 8) | tl__diff8(p + n - 16, q + n - 16) |
		        tl__diff8(p + n - 8, q + n - 8)) == 0;
	if (n >= 8 && n <= 16)
		return (tl__diff8(p, q) | tl__diff8(p + n - 8, q + n - 8)) == 0;
	if (n >= 4 && n < 8)
		return (tl__diff4(p, q) | tl__diff4(p + n - 4, q + n - 4)) == 0;
	if (n < 4) /* first, middle and last byte: all of them */
		return n == 0 || (p[0] == q[0] && p[n / 2] == q[n / 2] && p[n - 1] == q[n - 1]);
	return memcmp(p, q, n) == 0;
}

/* A cheap hash of s mixed into h, for direct-mapped caches in front of an
 * exact lookup (a collision costs that lookup, never a wrong answer): the
 * length and up to 16 bytes from both ends. Not for hash maps. */
static inline uint64_t tl_str_hash_quick(uint64_t h, struct tl_str s)
{
	uint64_t a = 0, b = 0;
	if (s.n >= 8) {
		memcpy(&a, s.p, 8);
		memcpy(&b, s.p + s.n - 8, 8);
	} else if (s.n >= 4) {
		uint32_t x, y;
		memcpy(&x, s.p, 4);
		memcpy(&y, s.p + s.n - 4, 4);
		a = x;
		b = y;
	} else if (s.n) {
		a = (uint8_t)s.p[0] | (uint64_t)(uint8_t)s.p[s.n / 2] << 8 |
		    (uint64_t)(uint8_t)s.p[s.n - 1] << 16;
	}
	h = (h ^ a) * 0x9E3779B97F4A7C15ULL;
	h = (h ^ (h >> 29) ^ b ^ s.n) * 0xBF58476D1CE4E5B9ULL;
	return h ^ (h >> 32);
}

/* Event types. Numeric values are part of the binary codec: never renumber. */
enum tl_event_type {
	TL_EV_NONE = 0,
	TL_EV_SENT = 1,
	TL_EV_DELIVERED = 2,
	TL_EV_DEFERRED = 3,
	TL_EV_BOUNCED = 4,
	TL_EV_DROPPED = 5,
	TL_EV_COMPLAINT = 6,
	TL_EV_UNSUBSCRIBE = 7,
	TL_EV_OPEN = 8,
	TL_EV_CLICK = 9,
	TL_EV__COUNT
};

/* Bounce classes (bounced events only). Part of the codec: never renumber. */
enum tl_bounce_class {
	TL_BOUNCE_NONE = 0,
	TL_BOUNCE_HARD = 1,
	TL_BOUNCE_SOFT = 2,
	TL_BOUNCE_BLOCK = 3,
};

/* Event flags (bit set). Part of the codec. */
enum {
	TL_EVF_MACHINE = 1u << 0,          /* open classified as a machine open */
	TL_EVF_BOT = 1u << 1,              /* click classified as a bot click */
	TL_EVF_HEAD = 1u << 2,             /* the hit was a HEAD request */
	TL_EVF_HIT = 1u << 3,              /* raw pixel/click hit: fields are in `token`, unverified */
	TL_EVF_HASHED = 1u << 4,           /* `recipient` is already the tenant-keyed hash */
	TL_EVF_ENRICHED = 1u << 5,         /* passed the enricher (classified, resolved) */
	TL_EVF_PROVIDER_MACHINE = 1u << 6, /* provider says machine open (e.g. sg_machine_open) */
	TL_EVF_DEAD = 1u << 7,             /* rejected by the enricher: a placeholder, never counted */
};

/* Size limits of each field, enforced by every parser (DESIGN.md §4). */
#define TL_MAX_TENANT 64
#define TL_MAX_CAMPAIGN 128
#define TL_MAX_VARIANT 64
#define TL_MAX_RECIPIENT 320
#define TL_MAX_MESSAGE 256
#define TL_MAX_ID 256
#define TL_MAX_URL 4096
#define TL_MAX_USER_AGENT 1024
#define TL_MAX_IP 64
#define TL_MAX_PROVIDER 32
#define TL_MAX_TOKEN 8192
#define TL_MAX_EVENT_JSON 16384 /* one NDJSON line */

struct tl_event {
	uint8_t type;         /* enum tl_event_type */
	uint8_t bounce_class; /* enum tl_bounce_class */
	uint16_t flags;       /* TL_EVF_* */
	int64_t ts_ms;        /* event time, ms since epoch */
	int64_t arrival_ms;   /* when the collector received it */
	int64_t sent_ms;      /* send time of the message if known (token issue time), else 0 */
	uint64_t src_offset;  /* offset of the source record in `events` (enriched events only) */
	struct tl_str tenant;
	struct tl_str campaign;
	struct tl_str variant;   /* empty = no variant */
	struct tl_str recipient; /* raw id, or the keyed hash when TL_EVF_HASHED */
	struct tl_str message;
	struct tl_str id; /* idempotency key */
	struct tl_str url;
	struct tl_str user_agent;
	struct tl_str ip;
	struct tl_str provider;
	struct tl_str token; /* raw tracking token (TL_EVF_HIT records) */
};

/* Names of types and bounce classes as they appear in JSON. */
const char *tl_event_type_name(enum tl_event_type t);
/* Parses a type name of n bytes; returns TL_EV_NONE when unknown. */
enum tl_event_type tl_event_type_parse(const char *s, size_t n);
const char *tl_bounce_class_name(enum tl_bounce_class c);
/* Returns the class, or -1 when the name is unknown. */
int tl_bounce_class_parse(const char *s, size_t n);

/* Binary codec (between roles). Version byte first; see codec.c for the layout.
 * tl_event_encode appends the encoding of ev to out (0, -TL_ETOOBIG, -TL_ENOMEM).
 * tl_event_decode fills ev with views INTO buf (valid as long as buf is);
 * returns 0 or -TL_ECORRUPT / -TL_EUNSUPPORTED (unknown version). Any thread. */
#define TL_CODEC_VERSION 1
int tl_event_encode(const struct tl_event *ev, struct tl_buf *out) TL_MUST_CHECK;
int tl_event_decode(const void *buf, size_t len, struct tl_event *ev) TL_MUST_CHECK;

/* Parses one canonical JSON event (DESIGN.md §4) of len bytes. Strings are
 * copied into arena a. On failure returns -TL_EINVAL (or -TL_ETOOBIG for an
 * oversized line or field) and writes a short reason ("bad JSON at column 7",
 * "unknown type \"opne\"", "missing campaign", "bad ts") into err. The tenant
 * field, if present, is parsed but the caller decides whether it is allowed.
 * Any thread (a is the caller's). */
int tl_event_from_json(const char *json, size_t len, struct tl_arena *a, struct tl_event *ev, char *err,
                       size_t errlen) TL_MUST_CHECK;

/* Appends ev as one canonical JSON object (no trailing newline). Fields that
 * are empty are omitted; flags appear as "machine":true / "bot":true; hits
 * carry "token". Any thread. */
int tl_event_to_json(const struct tl_event *ev, struct tl_buf *out) TL_MUST_CHECK;

/* Checks the invariants every accepted event must satisfy (type known,
 * tenant/campaign/recipient/id non-empty unless a hit, bounce class only on
 * bounces, field lengths within limits, ts set). Returns 0 or -TL_EINVAL with
 * the reason in err. */
int tl_event_validate(const struct tl_event *ev, char *err, size_t errlen) TL_MUST_CHECK;

#endif
