/* collect_int.h — what the files of the collector share (not a public header).
 *
 * collect.c   the role: create/run/stop, routes, /healthz, /metrics, ids,
 *             and the durable batch append every write route uses
 * hits.c      GET|HEAD /o/<token>.gif (open pixel) and /c/<token> (click)
 * events.c    POST /v1/events (NDJSON of canonical events)
 * webhook.c   POST /v1/webhooks/<provider>/<tenant>
 *
 * Every handler runs on the collector's one HTTP loop thread; the stream's
 * durability callbacks run on backend threads and touch only their own
 * heap-allocated context, the atomic counters and tl_http_deferred_complete. */
#ifndef TL_COLLECT_INT_H
#define TL_COLLECT_INT_H

#include "collect/collect.h"
#include "collect/webhooks/webhooks.h"
#include "core/arena.h"
#include "event/event.h"
#include "store/tenants.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* Counter labels. */
enum col_route { RT_PIXEL, RT_CLICK, RT_EVENTS, RT_WEBHOOK, RT_HEALTHZ, RT_METRICS, RT__COUNT };
enum col_reject { RJ_BAD_TOKEN, RJ_BAD_SIGNATURE, RJ_UNKNOWN_TENANT, RJ_TOKEN_KIND, RJ__COUNT };
enum col_topic { TP_EVENTS, TP_DELIVERY, TP_DEAD, TP__COUNT };
enum col_batch { BT_ACCEPTED, BT_BAD_REQUEST, BT_UNAUTHORIZED, BT_TOO_LARGE, BT_UNAVAILABLE, BT__COUNT };

/* One (topic, partition) group of a batch being built (loop thread). */
struct col_group {
	struct tl_buf data;           /* encoded values, back to back */
	struct tl_buf keys;           /* keys, back to back */
	struct tl_buf ids;            /* stream msg ids ("<tenant>:<event id>"), back to back */
	uint32_t *vend, *kend, *iend; /* end offsets of each record in data / keys / ids */
	size_t n, cap;
};

struct tl_collector {
	struct tl_collector_opts o;
	char *addr;
	char *db_uri;
	struct tl_http_server *srv;
	struct tl_tenant_cache *tenants;
	int parts[TP__COUNT]; /* partitions of events, delivery, dead */

	/* loop-thread scratch */
	struct tl_arena arena; /* per request, reset at its start */
	unsigned char token_scratch[TL_MAX_TOKEN];
	struct col_group *groups[TP__COUNT]; /* [topic][partition] */
	struct hit_pending *hits;            /* [partition of events]: hits of this iteration */
	struct tl_record *hit_recs;          /* scratch for one group's append */
	bool hits_scheduled;                 /* flush_hits is due at the end of the iteration */

	/* ids: random boot prefix + counter (loop thread) */
	uint64_t id_prefix;
	uint64_t id_counter;

	/* webhooks */
	struct tl_webhook_replay *replay;
	struct tl_sns_certs *sns;

	/* counters (any thread) */
	atomic_uint_fast64_t requests[RT__COUNT];
	atomic_uint_fast64_t rejected[RJ__COUNT];
	atomic_uint_fast64_t accepted[TP__COUNT];
	atomic_uint_fast64_t batches[BT__COUNT];
	atomic_uint_fast64_t pixel_dropped;
	atomic_uint_fast64_t click_dropped;
	atomic_uint_fast64_t hits_written;
	atomic_uint_fast64_t append_errors;
	atomic_uint_fast64_t tenant_refresh_errors;
	atomic_uint_fast64_t webhook_subscribe_errors;

	atomic_int appends_inflight; /* appends whose durability callback has not returned */
};

/* Bracket every tl_stream_append: begin before it, done when its callback
 * has finished with c (or at once when the append was refused).
 * tl_collector_destroy waits for the count to drop to zero. */
static inline void col_append_begin(struct tl_collector *c)
{
	atomic_fetch_add_explicit(&c->appends_inflight, 1, memory_order_relaxed);
}

static inline void col_append_done(struct tl_collector *c)
{
	atomic_fetch_sub_explicit(&c->appends_inflight, 1, memory_order_release);
}

static inline void col_count(atomic_uint_fast64_t *c)
{
	atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/* The bytes [off, off + len) of b, or NULL when len is 0 (b may be empty). */
static inline const void *col_at(const struct tl_buf *b, uint32_t off, uint32_t len)
{
	return len ? b->data + off : NULL;
}

/* Stream topic name of a col_topic. */
const char *col_topic_name(enum col_topic t);

/* Writes a fresh collector event id ("c<16 hex>-<hex counter>") into out
 * (>= 40 bytes); returns its length. Loop thread. */
size_t col_new_id(struct tl_collector *c, char *out);

/* Peer address of r, or the first X-Forwarded-For entry when the collector
 * trusts a proxy (opts.trust_forwarded_for). Writes a NUL-terminated string
 * of at most TL_MAX_IP bytes into out (>= TL_MAX_IP + 1). */
void col_client_ip(struct tl_collector *c, struct tl_http_req *r, char *out, size_t cap);

/* ---- batches: group records per (topic, partition), append every group,
 * answer once all are durable ------------------------------------------- */

/* Empties every group (loop thread, start of a request). */
void col_groups_reset(struct tl_collector *c);

/* Encodes ev into the group of (topic, partition of key), with the stream
 * msg id "<tenant>:<event id>" (backends that dedupe drop a re-sent copy;
 * ids are per tenant, tenant names have no ':'). 0 or -TL_ENOMEM /
 * -TL_ETOOBIG. */
int col_groups_add(struct tl_collector *c, enum col_topic t, const struct tl_event *ev, const char *key,
                   size_t key_len) TL_MUST_CHECK;

/* Adds a raw value (already serialised) to the group of (topic, key). */
int col_groups_add_raw(struct tl_collector *c, enum col_topic t, const void *val, size_t len, const char *key,
                       size_t key_len) TL_MUST_CHECK;

/* What to answer once every group of a batch is durable (or failed). */
enum col_answer { ANS_EVENTS, ANS_WEBHOOK };

struct col_batch_info {
	enum col_answer kind;
	size_t n_events; /* accepted events, for {"accepted":N} */
	size_t n_dead;
	size_t per_topic[TP__COUNT];
	struct tl_webhook_out replay; /* ANS_WEBHOOK: the replay token to commit (pointers cleared) */
	int ok_status;                /* ANS_WEBHOOK: status on success */
};

/* Appends every non-empty group and defers r; answers 202 {"accepted":N}
 * (ANS_EVENTS) or ok_status {"accepted":N,"dead":M} (ANS_WEBHOOK) once all
 * are durable, 503 (Retry-After: 1) when any failed. Returns TL_HTTP_ASYNC
 * or TL_HTTP_DONE (answered already). Loop thread. */
int col_batch_commit(struct tl_collector *c, struct tl_http_req *r, const struct col_batch_info *info);

/* Per-partition hit batches (hits.c): allocated once partitions are known,
 * freed with the collector. */
int col_hits_init(struct tl_collector *c) TL_MUST_CHECK;
void col_hits_free(struct tl_collector *c);

/* ---- route handlers ----------------------------------------------------- */
int col_on_pixel(void *arg, struct tl_http_req *r);
int col_on_click(void *arg, struct tl_http_req *r);
int col_on_events(void *arg, struct tl_http_req *r);
int col_on_webhook(void *arg, struct tl_http_req *r);

#endif
