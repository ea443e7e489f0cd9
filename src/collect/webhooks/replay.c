/* replay.c — the Mailgun token replay cache (webhooks.h).
 *
 * A ring of (digest, expiry) entries in insertion order plus a chained hash
 * index over them. Inserting into a full ring evicts the oldest entry;
 * expired entries at the head are dropped as new ones come in; lookups
 * ignore expired entries wherever they sit. Everything is O(1) amortised. */
#include "collect/webhooks/internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct entry {
	unsigned char key[32];
	int64_t expires_ms;
	uint32_t next; /* index + 1 of the next entry in the bucket chain, 0 = end */
};

struct tl_webhook_replay {
	pthread_mutex_t mu;
	size_t cap;  /* ring entries */
	size_t mask; /* buckets - 1 */
	struct entry *e;
	uint32_t *bucket; /* index + 1 of the chain head, 0 = empty */
	size_t head, count;
	uint64_t evicted;
};

int tl_webhook_replay_create(size_t capacity, struct tl_webhook_replay **out)
{
	*out = NULL;
	if (capacity == 0)
		capacity = 65536;
	if (capacity > (1u << 24))
		capacity = 1u << 24;
	size_t nb = 16;
	while (nb < capacity)
		nb *= 2;
	struct tl_webhook_replay *r = calloc(1, sizeof *r);
	if (!r)
		goto fail;
	r->cap = capacity;
	r->mask = nb - 1;
	r->e = calloc(capacity, sizeof *r->e);
	r->bucket = calloc(nb, sizeof *r->bucket);
	if (!r->e || !r->bucket || pthread_mutex_init(&r->mu, NULL) != 0)
		goto fail;
	*out = r;
	return 0;
fail:
	if (r) {
		free(r->e);
		free(r->bucket);
		free(r);
	}
	return -TL_ENOMEM;
}

void tl_webhook_replay_destroy(struct tl_webhook_replay *r)
{
	if (!r)
		return;
	pthread_mutex_destroy(&r->mu);
	free(r->e);
	free(r->bucket);
	free(r);
}

static size_t bucket_of(const struct tl_webhook_replay *r, const unsigned char key[32])
{
	uint64_t h;
	memcpy(&h, key, sizeof h);
	return (size_t)h & r->mask;
}

static long find(const struct tl_webhook_replay *r, const unsigned char key[32])
{
	for (uint32_t i = r->bucket[bucket_of(r, key)]; i; i = r->e[i - 1].next)
		if (memcmp(r->e[i - 1].key, key, 32) == 0)
			return (long)i - 1;
	return -1;
}

static void unlink_entry(struct tl_webhook_replay *r, size_t idx)
{
	uint32_t *pp = &r->bucket[bucket_of(r, r->e[idx].key)];
	while (*pp && *pp != idx + 1)
		pp = &r->e[*pp - 1].next;
	if (*pp)
		*pp = r->e[idx].next;
	r->e[idx].next = 0;
}

/* Drops the oldest entry. */
static void pop_head(struct tl_webhook_replay *r)
{
	unlink_entry(r, r->head);
	r->head = (r->head + 1) % r->cap;
	r->count--;
}

bool tl_wh_replay_seen(struct tl_webhook_replay *r, const unsigned char key[32], int64_t now_ms)
{
	if (!r)
		return false;
	pthread_mutex_lock(&r->mu);
	long i = find(r, key);
	bool seen = i >= 0 && r->e[i].expires_ms > now_ms;
	pthread_mutex_unlock(&r->mu);
	return seen;
}

/* Appends a new entry (lock held). */
static void insert(struct tl_webhook_replay *r, const unsigned char key[32], int64_t expires_ms,
                   int64_t now_ms)
{
	while (r->count && r->e[r->head].expires_ms <= now_ms)
		pop_head(r);
	if (r->count == r->cap) {
		r->evicted++;
		pop_head(r);
	}
	size_t idx = (r->head + r->count) % r->cap;
	struct entry *e = &r->e[idx];
	memcpy(e->key, key, 32);
	e->expires_ms = expires_ms;
	size_t b = bucket_of(r, e->key);
	e->next = r->bucket[b];
	r->bucket[b] = (uint32_t)idx + 1;
	r->count++;
}

void tl_webhook_replay_commit(struct tl_webhook_replay *r, const struct tl_webhook_out *out, int64_t now_ms)
{
	if (!r || !out || out->replay_expires_ms <= 0)
		return;
	pthread_mutex_lock(&r->mu);
	long i = find(r, out->replay_key);
	if (i >= 0) {
		if (r->e[i].expires_ms < out->replay_expires_ms)
			r->e[i].expires_ms = out->replay_expires_ms;
	} else {
		insert(r, out->replay_key, out->replay_expires_ms, now_ms);
	}
	pthread_mutex_unlock(&r->mu);
}

int tl_webhook_replay_reserve(struct tl_webhook_replay *r, const struct tl_webhook_out *out, int64_t now_ms)
{
	if (!r || !out || out->replay_expires_ms <= 0)
		return 0;
	int64_t until = now_ms + TL_WEBHOOK_REPLAY_PENDING_MS;
	if (until > out->replay_expires_ms)
		until = out->replay_expires_ms;
	int rc = 0;
	pthread_mutex_lock(&r->mu);
	long i = find(r, out->replay_key);
	if (i >= 0 && r->e[i].expires_ms > now_ms)
		rc = -TL_EAUTH; /* in flight or accepted: a replay */
	else if (i >= 0)
		r->e[i].expires_ms = until; /* an expired or released entry: reuse it */
	else
		insert(r, out->replay_key, until, now_ms);
	pthread_mutex_unlock(&r->mu);
	return rc;
}

void tl_webhook_replay_release(struct tl_webhook_replay *r, const struct tl_webhook_out *out)
{
	if (!r || !out || out->replay_expires_ms <= 0)
		return;
	pthread_mutex_lock(&r->mu);
	long i = find(r, out->replay_key);
	if (i >= 0)
		r->e[i].expires_ms = 0; /* lookups ignore it; the ring drops it in turn */
	pthread_mutex_unlock(&r->mu);
}

size_t tl_webhook_replay_size(struct tl_webhook_replay *r)
{
	if (!r)
		return 0;
	pthread_mutex_lock(&r->mu);
	size_t n = r->count;
	pthread_mutex_unlock(&r->mu);
	return n;
}

uint64_t tl_webhook_replay_evicted(struct tl_webhook_replay *r)
{
	if (!r)
		return 0;
	pthread_mutex_lock(&r->mu);
	uint64_t n = r->evicted;
	pthread_mutex_unlock(&r->mu);
	return n;
}
