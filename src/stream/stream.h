/* stream.h — the topic interface (DESIGN.md §2–3, Kafka model).
 *
 * A stream is a connection to one backend ("file:<dir>", "nats://host:4222").
 * A topic has P partitions; a record has a key, a value and an offset that
 * grows by one per record in its partition, starting at 0. Producers append
 * and are told once records are durable. Consumers keep their own offsets.
 * Nothing above this header knows which backend is in use.
 *
 * Threading: a struct tl_stream may be shared by threads for appends
 * (tl_stream_append is thread-safe). A consumer belongs to one thread. */
#ifndef TL_STREAM_H
#define TL_STREAM_H

#include "core/buf.h"
#include "core/err.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

struct tl_stream;
struct tl_consumer;

/* Topic names used by tally. */
#define TL_TOPIC_EVENTS "events"
#define TL_TOPIC_DELIVERY "delivery"
#define TL_TOPIC_METRICS "metrics"
#define TL_TOPIC_DEAD "dead"                   /* enricher rejects, with reason */
#define TL_TOPIC_DEAD_WEBHOOKS "dead-webhooks" /* collector: webhook events it could not map */

struct tl_stream_opts {
	int partitions;        /* partitions of topics this stream creates (default 8) */
	int64_t retention_ms;  /* delete segments/messages older than this (default 7 days) */
	int64_t segment_bytes; /* file backend: roll segments at this size (default 64 MiB) */
	int64_t
	    max_pending; /* bytes accepted but not yet durable before append says EAGAIN (default 64 MiB) */
	int replicas;    /* nats: stream replicas (default 1) */
	int read_only;   /* open for consuming only (no writer lock taken) */
	/* file: the topics this stream appends to (NULL-terminated). Their
	 * writer locks are taken at open, so a second writer of one of them
	 * is refused at start (-TL_ELOCKED, detail in err). Other topics are
	 * read as another process publishes them; appending to one takes its
	 * lock then. NULL (the default): the stream writes every topic it
	 * touches, each locked when first loaded (existing ones at open).
	 * Ignored when read_only and by backends without writer locks. */
	const char *const *write_topics;
	/* Optional: on a failed open the backend may write a human-readable
	 * detail here (e.g. "topic events is written by pid 1234"). */
	char *err;
	size_t err_len;
};

/* Fills o with the defaults above. */
void tl_stream_opts_defaults(struct tl_stream_opts *o);

struct tl_record {
	uint64_t offset;
	int partition;
	int sub;       /* index of the subscription (tl_consumer_open) it came from */
	int64_t ts_ms; /* append time, set by the backend */
	const void *key;
	uint32_t key_len;
	const void *value;
	uint32_t value_len;
	/* Optional idempotency id of the record for appends (msg_id_len 0 = none).
	 * Backends with server-side dedupe use it: nats sends it as Nats-Msg-Id,
	 * so appending a record again with the same id within the stream's
	 * duplicate window stores it once (printable ids up to 128 bytes go as
	 * they are, others as a hash). Give the same id to the same logical
	 * record when it is appended again (e.g. the enricher: source
	 * topic/partition/offset); without one, nats generates an id unique to
	 * the call, which still makes its own re-sends safe. The file backend
	 * ignores it. Not set on records read back. */
	const void *msg_id;
	uint32_t msg_id_len;
};

/* Called exactly once per tl_stream_append call that returned 0: status 0 when
 * every record of the call is durable (file: fdatasync done; nats: PubAck
 * received), negative when they may not be (-TL_ENOSPC, -TL_EIO, -TL_EUNAVAIL).
 * first_offset is the offset given to the first record. Runs on a backend
 * thread: keep it short and do not call back into the stream. */
typedef void (*tl_stream_done_fn)(void *arg, int status, uint64_t first_offset);

/* Opens the backend named by uri. Returns 0, -TL_EUNSUPPORTED (unknown
 * scheme), -TL_ELOCKED (file: a topic to write is held by another writer
 * process; opts->err names it and the holder's pid), -TL_EIO… */
int tl_stream_open(const char *uri, const struct tl_stream_opts *opts, struct tl_stream **out) TL_MUST_CHECK;

/* Flushes and waits for pending appends (their callbacks run), then frees
 * everything. NULL-safe. Not concurrently with other calls on s. */
void tl_stream_close(struct tl_stream *s);

/* Ends the waits on an unreachable server now, for a shutdown that should
 * not sit out the retry budget: appends still retrying fail (-TL_EUNAVAIL,
 * their callbacks run), new appends fail, and the end_offset, last and
 * consumer (re)subscription retries give up. A request already sent still
 * runs to its own timeout. Irreversible; from any thread. A backend that
 * never waits on a server (file:) does nothing. */
void tl_stream_interrupt(struct tl_stream *s);

/* Number of partitions of topic (created if it does not exist, with the
 * stream's opts.partitions; file: a read-only stream creates it too when
 * the directory is writable, else -TL_ENOTFOUND). >0 or negative error. */
int tl_stream_partitions(struct tl_stream *s, const char *topic);

/* Partition of a key: a stable hash of the key modulo partitions. */
int tl_stream_partition_for(const void *key, size_t len, int partitions);

/* Appends n records (keys/values copied before return; offsets ignored) to one
 * partition of topic, in order, atomically visible in that order. done(arg, …)
 * is called once they are durable or failed. Returns 0 when queued;
 * -TL_EAGAIN when more than max_pending bytes wait (back-pressure),
 * -TL_ENOSPC / -TL_EUNAVAIL when the backend is known to be failing (done is
 * then NOT called). Thread-safe. */
int tl_stream_append(struct tl_stream *s, const char *topic, int partition, const struct tl_record *recs,
                     size_t n, tl_stream_done_fn done, void *arg) TL_MUST_CHECK;

/* Appends and waits until durable; returns the final status. Thread-safe. */
int tl_stream_append_sync(struct tl_stream *s, const char *topic, int partition, const struct tl_record *recs,
                          size_t n) TL_MUST_CHECK;

/* The offset the next appended record of the partition will get (0 if empty),
 * counting only durable records. */
int tl_stream_end_offset(struct tl_stream *s, const char *topic, int partition, uint64_t *out) TL_MUST_CHECK;

/* Copies the last durable record of the partition into *rec; its key/value
 * point into storage (reset first). -TL_ENOTFOUND when the partition is empty;
 * file: -TL_ECORRUPT when it had records but that one is gone (the segment
 * holding it was removed by hand: retention keeps it). */
int tl_stream_last(struct tl_stream *s, const char *topic, int partition, struct tl_record *rec,
                   struct tl_buf *storage) TL_MUST_CHECK;

/* One (topic, partition) a consumer reads, from offset start. */
struct tl_subscription {
	const char *topic;
	int partition;
	uint64_t start;
};

/* Opens a consumer over n subscriptions (any topics/partitions of s). */
int tl_consumer_open(struct tl_stream *s, const struct tl_subscription *subs, size_t n,
                     struct tl_consumer **out) TL_MUST_CHECK;

/* Returns up to max durable records (>= 0 = how many), waiting up to
 * timeout_ms (0 = don't wait, -1 = forever) when none is ready; it wakes
 * promptly (well under a millisecond in-process) when records arrive. Records
 * (and their key/value memory) stay valid until the next poll or close.
 * Records of one subscription come in offset order. -TL_ECORRUPT when a
 * record fails its check in the middle of a segment (the consumer stops; the
 * error is sticky). Not thread-safe: one consumer, one thread. */
int tl_consumer_poll(struct tl_consumer *c, struct tl_record *out, size_t max, int timeout_ms) TL_MUST_CHECK;

/* Makes a blocked tl_consumer_poll return 0 now (from any thread): for shutdown. */
void tl_consumer_wakeup(struct tl_consumer *c);

/* Human-readable position of the last error (e.g. "events/3/00000000000000000000.seg at offset 1234"). */
const char *tl_consumer_error_detail(struct tl_consumer *c);

void tl_consumer_close(struct tl_consumer *c);

/* A role's consumer, which the role's thread opens, replaces and closes
 * while a stop may come from another thread: the slot's writes and the
 * stop's wakeup go through mu (a stop never wakes a consumer being closed);
 * the role's own thread reads c as it is. */
struct tl_consumer_slot {
	pthread_mutex_t mu;
	struct tl_consumer *c;
};
void tl_consumer_slot_init(struct tl_consumer_slot *s);
/* Closes the consumer held and frees the slot's mutex. */
void tl_consumer_slot_destroy(struct tl_consumer_slot *s);
/* Holds c (NULL: none) and closes the consumer held before. Role thread. */
void tl_consumer_slot_set(struct tl_consumer_slot *s, struct tl_consumer *c);
/* Opens a consumer on subs and holds it (the one held before is closed
 * first). Role thread. 0 or tl_consumer_open's error (then none is held). */
int tl_consumer_slot_open(struct tl_consumer_slot *s, struct tl_stream *st,
                          const struct tl_subscription *subs, size_t n) TL_MUST_CHECK;
/* Wakes the consumer held, if any. Any thread. */
void tl_consumer_slot_wakeup(struct tl_consumer_slot *s);

/* ---- backend registry ---------------------------------------------------
 * A backend is one file + one entry in the table in stream.c. */
struct tl_stream_ops {
	const char *scheme; /* "file", "nats" */
	int (*open)(const char *uri, const struct tl_stream_opts *opts, struct tl_stream **out);
	void (*close)(struct tl_stream *s);
	int (*partitions)(struct tl_stream *s, const char *topic);
	int (*append)(struct tl_stream *s, const char *topic, int partition, const struct tl_record *recs,
	              size_t n, tl_stream_done_fn done, void *arg);
	int (*end_offset)(struct tl_stream *s, const char *topic, int partition, uint64_t *out);
	int (*last)(struct tl_stream *s, const char *topic, int partition, struct tl_record *rec,
	            struct tl_buf *storage);
	int (*consumer_open)(struct tl_stream *s, const struct tl_subscription *subs, size_t n,
	                     struct tl_consumer **out);
	int (*poll)(struct tl_consumer *c, struct tl_record *out, size_t max, int timeout_ms);
	void (*wakeup)(struct tl_consumer *c);
	const char *(*error_detail)(struct tl_consumer *c);
	void (*consumer_close)(struct tl_consumer *c);
	void (*interrupt)(struct tl_stream *s); /* NULL: nothing to interrupt */
};

/* Every backend object starts with this header so stream.c can dispatch. */
struct tl_stream {
	const struct tl_stream_ops *ops;
};
struct tl_consumer {
	const struct tl_stream_ops *ops;
};

extern const struct tl_stream_ops tl_stream_file_ops;
extern const struct tl_stream_ops tl_stream_nats_ops;

#endif
