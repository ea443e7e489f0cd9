/* nats_int.h — internals of the `nats://` stream backend (NATS JetStream
 * through Debian's libnats, the official C client), shared by nats.c
 * (connection, topics, producers, tl_stream_last/end_offset) and
 * nats_consumer.c. Nothing outside src/stream/nats*.c includes this.
 *
 * Layout on the server (one JetStream stream per topic partition):
 *   stream  <PREFIX>_<TOPIC>_<p>      e.g. TALLY_EVENTS_3 (upper case)
 *   subject <prefix>.<topic>.<p>      e.g. tally.events.3, its only subject
 *   description "tally topic=<topic> partition=<p> partitions=<N>": the
 *           partition count every process adopts (the first creator decides)
 * A record's offset is its stream sequence - 1: a stream per partition makes
 * JetStream's own sequence the partition offset (contiguous from 0, nothing
 * to map, and "the last record of a partition" is the stream's last message).
 *
 * Message payload: u32 little-endian key length, the key, the value. The
 * Nats-Msg-Id header carries the record's msg_id (or a generated one). */
#ifndef TL_STREAM_NATS_INT_H
#define TL_STREAM_NATS_INT_H

#include "core/clock.h"
#include "stream/stream.h"

#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define TLN_MAX_TOPICS 64
#define TLN_TOPIC_NAME_MAX 64
#define TLN_PREFIX_MAX 32
#define TLN_MAX_PARTITIONS 1024
#define TLN_NAME_CAP (TLN_PREFIX_MAX + TLN_TOPIC_NAME_MAX + 16)
#define TLN_KEY_HDR 4u /* payload: u32 key length before the key */

struct tln_call;

struct tln_part {
	struct tln_topic *t;
	int idx;
	char stream[TLN_NAME_CAP];  /* JetStream stream name */
	char subject[TLN_NAME_CAP]; /* its only subject */
	pthread_mutex_t pub_mu;     /* one round of one call on the wire at a time */
	/* guarded by the stream's mu: calls in append order (callbacks run in
	 * this order), and whether a thread is running their callbacks */
	struct tln_call *head, *tail;
	int delivering;
};

struct tln_topic {
	char name[TLN_TOPIC_NAME_MAX + 1];
	int nparts;
	struct tln_part *parts;
};

struct tln_stream {
	struct tl_stream base;
	struct tl_stream_opts opts;
	natsConnection *nc;
	jsCtx *js;
	natsSubscription *ack_sub;
	char inbox[48];                   /* reply subject prefix of our publishes, with the dot */
	char idbase[24];                  /* generated msg ids: <idbase>-<counter> */
	char sprefix[TLN_PREFIX_MAX + 1]; /* subject prefix (lower case) */
	char nprefix[TLN_PREFIX_MAX + 1]; /* stream name prefix (upper case) */
	int64_t replicas, dedupe_ms, retry_ms, ack_timeout_ms, api_wait_ms;

	pthread_mutex_t topics_mu;
	struct tln_topic *topics[TLN_MAX_TOPICS];
	_Atomic size_t ntopics;

	/* producers: calls in flight, by slot (the slot is in the reply subject) */
	pthread_mutex_t mu;
	pthread_cond_t cond; /* ticker wakeups and close's wait for the last call */
	struct tln_call **slots;
	uint32_t *gens;
	uint32_t *freelist; /* free slots below nslots */
	size_t nslots, slotcap, nfree;
	size_t live; /* calls not yet delivered */
	int stop;
	int ticker_started;
	pthread_t ticker;
	_Atomic int64_t pending_bytes;
	_Atomic uint64_t id_counter;
	_Atomic int reconnected;    /* replies of rounds in flight at a reconnect are lost */
	_Atomic int64_t down_since; /* mono ms of the last disconnect, 0 while connected */
	int closed;                 /* under mu: libnats ran the closed callback (its last) */
	_Atomic int interrupted;    /* tl_stream_interrupt: every retry gives up */

	/* consumers registered for the connection's async error handler */
	pthread_mutex_t cons_mu;
	struct tln_consumer *consumers;
	char last_error[160];
};

/* Finds (creating on first use) topic name. *out lives until the stream
 * closes. 0, -TL_EINVAL (bad name), -TL_EUNAVAIL, -TL_ECORRUPT, … */
int tln_topic_get(struct tln_stream *s, const char *name, struct tln_topic **out);

/* Whether a retry loop with this deadline (mono ms) must give up. */
static inline int tln_give_up(struct tln_stream *s, int64_t deadline)
{
	return atomic_load_explicit(&s->interrupted, memory_order_relaxed) || tl_mono_ms() >= deadline;
}

/* Maps a libnats status (and JetStream error code, 0 if none) to -TL_E*. */
int tln_err(natsStatus st, jsErrCode jerr);

/* Decodes a message payload into key/value pointers into it. 0 or -TL_ECORRUPT. */
int tln_payload_decode(const char *data, int len, const void **key, uint32_t *key_len, const void **value,
                       uint32_t *value_len);

/* ---- nats_consumer.c ---- */
struct tln_consumer;

int tln_consumer_open(struct tl_stream *s, const struct tl_subscription *subs, size_t n,
                      struct tl_consumer **out);
int tln_consumer_poll(struct tl_consumer *c, struct tl_record *out, size_t max, int timeout_ms);
void tln_consumer_wakeup(struct tl_consumer *c);
const char *tln_consumer_error_detail(struct tl_consumer *c);
void tln_consumer_close(struct tl_consumer *c);

/* Called from the connection's error handler: if sub belongs to one of s's
 * consumers, that subscription is re-created from its next offset. */
void tln_consumer_async_error(struct tln_stream *s, natsSubscription *sub, natsStatus err);

#endif
