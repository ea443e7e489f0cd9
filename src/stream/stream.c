/* stream.c — the stream interface: backend registry and dispatch, plus the
 * backend-independent helpers (defaults, partitioning, synchronous append).
 * A backend is one file and one entry in `backends` below. */
#include "stream/stream.h"

#include <pthread.h>
#include <string.h>
#include <xxhash.h>

static const struct tl_stream_ops *const backends[] = {
    &tl_stream_file_ops,
    &tl_stream_nats_ops,
};

void tl_stream_opts_defaults(struct tl_stream_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->partitions = 8;
	o->retention_ms = 7LL * 24 * 3600 * 1000;
	o->segment_bytes = 64LL << 20;
	o->max_pending = 64LL << 20;
	o->replicas = 1;
	o->read_only = 0;
}

int tl_stream_open(const char *uri, const struct tl_stream_opts *opts, struct tl_stream **out)
{
	if (!uri || !out)
		return -TL_EINVAL;
	const char *colon = strchr(uri, ':');
	if (!colon)
		return -TL_EUNSUPPORTED;
	size_t len = (size_t)(colon - uri);
	struct tl_stream_opts defaults;
	if (!opts) {
		tl_stream_opts_defaults(&defaults);
		opts = &defaults;
	}
	for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
		const struct tl_stream_ops *ops = backends[i];
		if (strlen(ops->scheme) == len && strncmp(ops->scheme, uri, len) == 0)
			return ops->open(uri, opts, out);
	}
	return -TL_EUNSUPPORTED;
}

void tl_stream_close(struct tl_stream *s)
{
	if (s)
		s->ops->close(s);
}

void tl_stream_interrupt(struct tl_stream *s)
{
	if (s && s->ops->interrupt)
		s->ops->interrupt(s);
}

int tl_stream_partitions(struct tl_stream *s, const char *topic)
{
	return s->ops->partitions(s, topic);
}

int tl_stream_partition_for(const void *key, size_t len, int partitions)
{
	if (partitions <= 1)
		return 0;
	return (int)(XXH3_64bits(key, len) % (uint64_t)partitions);
}

int tl_stream_append(struct tl_stream *s, const char *topic, int partition, const struct tl_record *recs,
                     size_t n, tl_stream_done_fn done, void *arg)
{
	return s->ops->append(s, topic, partition, recs, n, done, arg);
}

struct sync_wait {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	int done;
	int status;
};

static void sync_done(void *arg, int status, uint64_t first_offset)
{
	struct sync_wait *w = arg;
	(void)first_offset;
	pthread_mutex_lock(&w->mu);
	w->status = status;
	w->done = 1;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->mu);
}

int tl_stream_append_sync(struct tl_stream *s, const char *topic, int partition, const struct tl_record *recs,
                          size_t n)
{
	struct sync_wait w = {.done = 0, .status = 0};
	pthread_mutex_init(&w.mu, NULL);
	pthread_cond_init(&w.cond, NULL);
	int rc = s->ops->append(s, topic, partition, recs, n, sync_done, &w);
	if (rc == 0) {
		pthread_mutex_lock(&w.mu);
		while (!w.done)
			pthread_cond_wait(&w.cond, &w.mu);
		pthread_mutex_unlock(&w.mu);
		rc = w.status;
	}
	pthread_mutex_destroy(&w.mu);
	pthread_cond_destroy(&w.cond);
	return rc;
}

int tl_stream_end_offset(struct tl_stream *s, const char *topic, int partition, uint64_t *out)
{
	return s->ops->end_offset(s, topic, partition, out);
}

int tl_stream_last(struct tl_stream *s, const char *topic, int partition, struct tl_record *rec,
                   struct tl_buf *storage)
{
	return s->ops->last(s, topic, partition, rec, storage);
}

int tl_consumer_open(struct tl_stream *s, const struct tl_subscription *subs, size_t n,
                     struct tl_consumer **out)
{
	return s->ops->consumer_open(s, subs, n, out);
}

int tl_consumer_poll(struct tl_consumer *c, struct tl_record *out, size_t max, int timeout_ms)
{
	return c->ops->poll(c, out, max, timeout_ms);
}

void tl_consumer_wakeup(struct tl_consumer *c)
{
	c->ops->wakeup(c);
}

const char *tl_consumer_error_detail(struct tl_consumer *c)
{
	return c->ops->error_detail(c);
}

void tl_consumer_close(struct tl_consumer *c)
{
	if (c)
		c->ops->consumer_close(c);
}

void tl_consumer_slot_init(struct tl_consumer_slot *s)
{
	pthread_mutex_init(&s->mu, NULL);
	s->c = NULL;
}

void tl_consumer_slot_destroy(struct tl_consumer_slot *s)
{
	tl_consumer_slot_set(s, NULL);
	pthread_mutex_destroy(&s->mu);
}

void tl_consumer_slot_set(struct tl_consumer_slot *s, struct tl_consumer *c)
{
	pthread_mutex_lock(&s->mu);
	struct tl_consumer *old = s->c;
	s->c = c;
	pthread_mutex_unlock(&s->mu);
	tl_consumer_close(old); /* out of the stop's reach now */
}

int tl_consumer_slot_open(struct tl_consumer_slot *s, struct tl_stream *st,
                          const struct tl_subscription *subs, size_t n)
{
	tl_consumer_slot_set(s, NULL);
	struct tl_consumer *c = NULL;
	int rc = tl_consumer_open(st, subs, n, &c);
	if (!rc)
		tl_consumer_slot_set(s, c);
	return rc;
}

void tl_consumer_slot_wakeup(struct tl_consumer_slot *s)
{
	pthread_mutex_lock(&s->mu);
	if (s->c)
		tl_consumer_wakeup(s->c);
	pthread_mutex_unlock(&s->mu);
}
