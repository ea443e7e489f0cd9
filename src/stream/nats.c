/* nats.c — the `nats://` stream backend: topics on NATS JetStream through
 * libnats (Debian's libnats-dev, the official C client).
 *
 * URI: nats://host:port[,host2:port,…][?option=value&…], options:
 *   replicas=N        stream replicas when a topic is created (default opts->replicas)
 *   prefix=NAME       stream/subject prefix (default "tally": TALLY_EVENTS_0, tally.events.0)
 *   retention_ms=MS   max age of messages (default opts->retention_ms)
 *   dedupe_ms=MS      JetStream duplicate window (default 120000)
 *   retry_ms=MS       how long an append keeps re-publishing before it fails (default 30000)
 *   ack_timeout_ms=MS a publish whose PubAck has not come by then is sent again (default 5000)
 * Layout and payload format: nats_int.h.
 *
 * Producers. An append copies its records into a call, gives every record a
 * Nats-Msg-Id (the record's msg_id, else "<random per stream>-<counter>")
 * and publishes them at once, back to back on the wire (the partition's
 * pub_mu), each with its own reply subject "<inbox><slot>.<gen>.<round>.<i>"
 * on which the PubAck comes back. A PubAck is durability (see
 * docs/operations.md, "Topics on NATS JetStream", for what the server's acknowledgement means).
 *
 * No holes. Record i > 0 of a round also carries Nats-Expected-Last-Msg-Id =
 * the id of record i-1: the server stores it only right after i-1. So when a
 * record is lost (a disconnect, a leader change, a timeout), nothing of the
 * call after it can be stored, and a record that is stored implies every
 * record before it in the call is stored. A round ends when every record
 * has a reply (or the ack timeout passed, or the connection reconnected);
 * then the call is re-published from its first unconfirmed record, as a new
 * chain, with the same msg ids: the server drops the copies it already has
 * (their PubAck says duplicate and gives the original sequence). After
 * retry_ms the call fails (-TL_EUNAVAIL). A consumer that resumes from "the
 * last record" of a partition (the enricher) therefore never skips a record.
 * Another process writing the same partition can break a chain (wrong last
 * msg id): the rest of the call is sent again at once, so under contention
 * the records of one call stay in order but may interleave with others'.
 *
 * Callbacks run in append order per partition (a call that completes early
 * waits for the calls before it), on a libnats thread or the ticker thread.
 * first_offset is the sequence - 1 of the call's first record.
 *
 * Consumers are in nats_consumer.c. */
#include "stream/nats_int.h"

#include "core/clock.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <xxhash.h>

#define TLN_ID_MAX 128        /* a longer or binary msg_id is sent as a hash */
#define TLN_GEN_ID_LEN 33     /* "<16 hex>-<16 hex>" */
#define TLN_DOWN_FAIL_MS 1000 /* disconnected longer than this: appends fail at once */
#define TLN_TICK_MS 20        /* ticker period while calls are in flight */
#define TLN_BACKOFF_MIN_MS 50
#define TLN_BACKOFF_MAX_MS 1000
#define TLN_API_RETRY_MS 100

enum call_state { CALL_SENDING, CALL_WAITING, CALL_RETRY, CALL_DONE };

struct tln_call {
	struct tln_stream *s;
	struct tln_part *p;
	tl_stream_done_fn done;
	void *arg;
	struct tln_call *next; /* partition FIFO */
	uint32_t slot, gen, round;
	size_t n;
	size_t from;        /* first record of the current round (all before are confirmed) */
	size_t outstanding; /* replies the current round still waits for */
	int state;
	int in_send; /* send_round is publishing it: not to be expired or freed */
	int status;
	int round_err; /* worst error of the round (0: none, or only broken chains) */
	int64_t bytes;
	int64_t sent_ms, retry_at_ms, deadline_ms, backoff_ms;
	uint64_t *seq; /* stream sequence of each record, 0 until confirmed */
	uint32_t *doff, *dlen, *ioff;
	char *ids;     /* NUL-terminated msg ids */
	uint8_t *data; /* payloads */
};

/* ---- small helpers ---- */

int tln_err(natsStatus st, jsErrCode jerr)
{
	switch ((int)jerr) {
	case JSStreamNotFoundErr:
	case JSNoMessageFoundErr:
		return -TL_ENOTFOUND;
	case JSStorageResourcesExceededErr:
	case JSInsufficientResourcesErr:
		return -TL_ENOSPC;
	case JSStreamMessageExceedsMaximumErr:
		return -TL_ETOOBIG;
	default:
		break;
	}
	switch (st) {
	case NATS_OK:
		return 0;
	case NATS_NO_MEMORY:
		return -TL_ENOMEM;
	case NATS_NOT_FOUND:
		return -TL_ENOTFOUND;
	case NATS_MAX_PAYLOAD:
		return -TL_ETOOBIG;
	case NATS_INVALID_ARG:
		return -TL_EINVAL;
	case NATS_TIMEOUT:
	case NATS_NO_RESPONDERS:
	case NATS_CONNECTION_CLOSED:
	case NATS_CONNECTION_DISCONNECTED:
	case NATS_NOT_YET_CONNECTED:
	case NATS_NO_SERVER:
	case NATS_IO_ERROR:
	case NATS_STALE_CONNECTION:
	case NATS_INSUFFICIENT_BUFFER:
	case NATS_ERR:
		return -TL_EUNAVAIL;
	default:
		return -TL_EIO;
	}
}

/* A JetStream API failure worth another try (no leader yet, a timeout…). */
static int api_transient(natsStatus st, jsErrCode jerr)
{
	switch ((int)jerr) {
	case JSClusterNotAvailErr:
	case JSClusterNotLeaderErr:
	case JSClusterNoPeersErr:
	case JSStreamOfflineErr:
		return 1;
	default:
		break;
	}
	return st == NATS_TIMEOUT || st == NATS_NO_RESPONDERS || st == NATS_CONNECTION_DISCONNECTED ||
	       st == NATS_NOT_YET_CONNECTED || st == NATS_IO_ERROR;
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void put_u32le(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

int tln_payload_decode(const char *data, int len, const void **key, uint32_t *key_len, const void **value,
                       uint32_t *value_len)
{
	if (len < (int)TLN_KEY_HDR || !data)
		return -TL_ECORRUPT;
	const uint8_t *p = (const uint8_t *)data;
	uint32_t kl = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
	if (kl > (uint32_t)len - TLN_KEY_HDR)
		return -TL_ECORRUPT;
	*key = p + TLN_KEY_HDR;
	*key_len = kl;
	*value = p + TLN_KEY_HDR + kl;
	*value_len = (uint32_t)len - TLN_KEY_HDR - kl;
	return 0;
}

/* ---- msg ids ---- */

static int printable_id(const void *id, uint32_t len)
{
	if (len == 0 || len > TLN_ID_MAX)
		return 0;
	const unsigned char *p = id;
	for (uint32_t i = 0; i < len; i++)
		if (p[i] < 0x21 || p[i] > 0x7e)
			return 0;
	return 1;
}

/* Bytes of the id of r, NUL included. */
static size_t id_size(const struct tl_record *r)
{
	if (r->msg_id_len == 0)
		return TLN_GEN_ID_LEN + 1;
	if (printable_id(r->msg_id, r->msg_id_len))
		return (size_t)r->msg_id_len + 1;
	return 33 + 1; /* "h" + 32 hex digits of XXH3-128 */
}

static void id_write(struct tln_stream *s, const struct tl_record *r, char *out, size_t cap)
{
	if (r->msg_id_len == 0) {
		uint64_t ctr = atomic_fetch_add(&s->id_counter, 1);
		snprintf(out, cap, "%s-%016" PRIx64, s->idbase, ctr);
	} else if (printable_id(r->msg_id, r->msg_id_len)) {
		memcpy(out, r->msg_id, r->msg_id_len);
		out[r->msg_id_len] = '\0';
	} else {
		XXH128_hash_t h = XXH3_128bits(r->msg_id, r->msg_id_len);
		snprintf(out, cap, "h%016" PRIx64 "%016" PRIx64, (uint64_t)h.high64, (uint64_t)h.low64);
	}
}

/* ---- topics ---- */

static int topic_name_ok(const char *n)
{
	size_t len = strlen(n);
	if (len == 0 || len > TLN_TOPIC_NAME_MAX)
		return 0;
	for (size_t i = 0; i < len; i++) {
		char c = n[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

static void upper(char *dst, size_t cap, const char *src)
{
	size_t i = 0;
	for (; src[i] && i + 1 < cap; i++)
		dst[i] = (src[i] >= 'a' && src[i] <= 'z') ? (char)(src[i] - 'a' + 'A') : src[i];
	dst[i] = '\0';
}

static void part_names(struct tln_stream *s, const char *topic, int p, char *stream, char *subject)
{
	char ut[TLN_TOPIC_NAME_MAX + 1];
	upper(ut, sizeof(ut), topic);
	snprintf(stream, TLN_NAME_CAP, "%s_%s_%d", s->nprefix, ut, p);
	snprintf(subject, TLN_NAME_CAP, "%s.%s.%d", s->sprefix, topic, p);
}

/* Parses "… partitions=N" out of a stream description; N or -TL_ECORRUPT. */
static int desc_partitions(const char *desc, const char *topic)
{
	char want[TLN_TOPIC_NAME_MAX + 16];
	snprintf(want, sizeof(want), "topic=%s ", topic);
	const char *q = desc ? strstr(desc, "partitions=") : NULL;
	if (!q || !strstr(desc, want))
		return -TL_ECORRUPT;
	char *end;
	errno = 0;
	long n = strtol(q + 11, &end, 10);
	if (errno || end == q + 11 || n < 1 || n > TLN_MAX_PARTITIONS)
		return -TL_ECORRUPT;
	return (int)n;
}

static void jsopts(struct tln_stream *s, jsOptions *o)
{
	jsOptions_Init(o);
	o->Wait = s->api_wait_ms;
}

/* Creates (or finds, with the same settings) the stream of partition p. */
static int stream_add(struct tln_stream *s, const char *topic, int p, int nparts, int64_t deadline)
{
	char name[TLN_NAME_CAP], subj[TLN_NAME_CAP], desc[TLN_TOPIC_NAME_MAX + 80];
	part_names(s, topic, p, name, subj);
	snprintf(desc, sizeof(desc), "tally topic=%s partition=%d partitions=%d", topic, p, nparts);
	const char *subjects[1] = {subj};
	jsStreamConfig cfg;
	jsStreamConfig_Init(&cfg);
	cfg.Name = name;
	cfg.Description = desc;
	cfg.Subjects = subjects;
	cfg.SubjectsLen = 1;
	cfg.Retention = js_LimitsPolicy;
	cfg.Discard = js_DiscardOld;
	cfg.Storage = js_FileStorage;
	cfg.Replicas = s->replicas;
	cfg.MaxAge = s->opts.retention_ms * 1000000;
	cfg.Duplicates = s->dedupe_ms * 1000000;
	for (;;) {
		jsOptions o;
		jsopts(s, &o);
		jsStreamInfo *si = NULL;
		jsErrCode jerr = 0;
		natsStatus st = js_AddStream(&si, s->js, &cfg, &o, &jerr);
		jsStreamInfo_Destroy(si);
		if (st == NATS_OK || jerr == JSStreamNameExistErr)
			return 0; /* exists: made by another process, maybe with other settings */
		if (!api_transient(st, jerr) || tln_give_up(s, deadline))
			return tln_err(st, jerr);
		sleep_ms(TLN_API_RETRY_MS);
	}
}

/* The partition count of topic as stored on the server: >0, -TL_ENOTFOUND. */
static int stored_partitions(struct tln_stream *s, const char *topic, int64_t deadline)
{
	char name[TLN_NAME_CAP], subj[TLN_NAME_CAP];
	part_names(s, topic, 0, name, subj);
	for (;;) {
		jsOptions o;
		jsopts(s, &o);
		jsStreamInfo *si = NULL;
		jsErrCode jerr = 0;
		natsStatus st = js_GetStreamInfo(&si, s->js, name, &o, &jerr);
		if (st == NATS_OK) {
			int n = desc_partitions(si->Config ? si->Config->Description : NULL, topic);
			jsStreamInfo_Destroy(si);
			return n;
		}
		if (!api_transient(st, jerr) || tln_give_up(s, deadline))
			return tln_err(st, jerr);
		sleep_ms(TLN_API_RETRY_MS);
	}
}

static void topic_free(struct tln_topic *t)
{
	if (!t)
		return;
	if (t->parts)
		for (int i = 0; i < t->nparts; i++)
			pthread_mutex_destroy(&t->parts[i].pub_mu);
	free(t->parts);
	free(t);
}

/* Loads topic name from the server, creating its streams when missing:
 * partition 0 first (its description fixes the partition count), then the
 * others (also when an earlier creator died half-way). */
static int topic_load(struct tln_stream *s, const char *name, struct tln_topic **out)
{
	const int64_t deadline = tl_mono_ms() + s->retry_ms;
	int nparts = stored_partitions(s, name, deadline);
	if (nparts == -TL_ENOTFOUND) {
		int rc = stream_add(s, name, 0, s->opts.partitions, deadline);
		if (rc)
			return rc;
		nparts = stored_partitions(s, name, deadline);
	}
	if (nparts < 0)
		return nparts;
	for (int p = 1; p < nparts; p++) {
		int rc = stream_add(s, name, p, nparts, deadline);
		if (rc)
			return rc;
	}
	struct tln_topic *t = calloc(1, sizeof(*t));
	if (!t)
		return -TL_ENOMEM;
	snprintf(t->name, sizeof(t->name), "%s", name);
	t->parts = calloc((size_t)nparts, sizeof(*t->parts));
	if (!t->parts) {
		free(t);
		return -TL_ENOMEM;
	}
	t->nparts = nparts;
	for (int i = 0; i < nparts; i++) {
		struct tln_part *p = &t->parts[i];
		p->t = t;
		p->idx = i;
		part_names(s, name, i, p->stream, p->subject);
		pthread_mutex_init(&p->pub_mu, NULL);
	}
	*out = t;
	return 0;
}

int tln_topic_get(struct tln_stream *s, const char *name, struct tln_topic **out)
{
	if (!name)
		return -TL_EINVAL;
	size_t n = atomic_load_explicit(&s->ntopics, memory_order_acquire);
	for (size_t i = 0; i < n; i++) {
		if (strcmp(s->topics[i]->name, name) == 0) {
			*out = s->topics[i];
			return 0;
		}
	}
	if (!topic_name_ok(name))
		return -TL_EINVAL;
	pthread_mutex_lock(&s->topics_mu);
	int rc = 0;
	n = atomic_load_explicit(&s->ntopics, memory_order_relaxed);
	for (size_t i = 0; i < n; i++) {
		if (strcmp(s->topics[i]->name, name) == 0) {
			*out = s->topics[i];
			goto out;
		}
	}
	if (n == TLN_MAX_TOPICS) {
		rc = -TL_ETOOBIG;
		goto out;
	}
	struct tln_topic *t;
	rc = topic_load(s, name, &t);
	if (rc == 0) {
		s->topics[n] = t;
		atomic_store_explicit(&s->ntopics, n + 1, memory_order_release);
		*out = t;
	}
out:
	pthread_mutex_unlock(&s->topics_mu);
	return rc;
}

static int part_get(struct tln_stream *s, const char *topic, int partition, struct tln_part **out)
{
	struct tln_topic *t;
	int rc = tln_topic_get(s, topic, &t);
	if (rc)
		return rc;
	if (partition < 0 || partition >= t->nparts)
		return -TL_EINVAL;
	*out = &t->parts[partition];
	return 0;
}

/* ---- producer: calls ---- */

static void call_free(struct tln_call *c)
{
	free(c);
}

/* Builds a call holding copies of recs. */
static int call_make(struct tln_stream *s, struct tln_part *p, const struct tl_record *recs, size_t n,
                     tl_stream_done_fn done, void *arg, struct tln_call **out)
{
	size_t idbytes = 0, databytes = 0;
	for (size_t i = 0; i < n; i++) {
		idbytes += id_size(&recs[i]);
		databytes += TLN_KEY_HDR + (size_t)recs[i].key_len + recs[i].value_len;
	}
	size_t head = (sizeof(struct tln_call) + 7) & ~(size_t)7;
	size_t total = head + n * (sizeof(uint64_t) + 3 * sizeof(uint32_t)) + idbytes + databytes;
	struct tln_call *c = calloc(1, total);
	if (!c)
		return -TL_ENOMEM;
	uint8_t *q = (uint8_t *)c + head;
	c->seq = (uint64_t *)q;
	q += n * sizeof(uint64_t);
	c->doff = (uint32_t *)q;
	q += n * sizeof(uint32_t);
	c->dlen = (uint32_t *)q;
	q += n * sizeof(uint32_t);
	c->ioff = (uint32_t *)q;
	q += n * sizeof(uint32_t);
	c->ids = (char *)q;
	q += idbytes;
	c->data = q;
	size_t io = 0, d = 0;
	for (size_t i = 0; i < n; i++) {
		const struct tl_record *r = &recs[i];
		size_t isz = id_size(r);
		c->ioff[i] = (uint32_t)io;
		id_write(s, r, c->ids + io, isz);
		io += isz;
		c->doff[i] = (uint32_t)d;
		c->dlen[i] = TLN_KEY_HDR + r->key_len + r->value_len;
		put_u32le(c->data + d, r->key_len);
		if (r->key_len)
			memcpy(c->data + d + TLN_KEY_HDR, r->key, r->key_len);
		if (r->value_len)
			memcpy(c->data + d + TLN_KEY_HDR + r->key_len, r->value, r->value_len);
		d += c->dlen[i];
	}
	c->s = s;
	c->p = p;
	c->n = n;
	c->done = done;
	c->arg = arg;
	c->bytes = (int64_t)(idbytes + databytes);
	c->backoff_ms = TLN_BACKOFF_MIN_MS;
	*out = c;
	return 0;
}

/* Gives c a slot. Called with s->mu. */
static int slot_take(struct tln_stream *s, struct tln_call *c)
{
	size_t i;
	if (s->nfree) {
		i = s->freelist[--s->nfree];
	} else {
		if (s->nslots == s->slotcap) {
			size_t ncap = s->slotcap ? s->slotcap * 2 : 256;
			struct tln_call **ns = realloc(s->slots, ncap * sizeof(*ns));
			if (!ns)
				return -TL_ENOMEM;
			s->slots = ns;
			uint32_t *ng = realloc(s->gens, ncap * sizeof(*ng));
			if (!ng)
				return -TL_ENOMEM;
			s->gens = ng;
			uint32_t *nf = realloc(s->freelist, ncap * sizeof(*nf));
			if (!nf)
				return -TL_ENOMEM;
			s->freelist = nf;
			s->slotcap = ncap;
		}
		i = s->nslots++;
		s->gens[i] = 0;
	}
	s->slots[i] = c;
	c->slot = (uint32_t)i;
	c->gen = ++s->gens[i];
	return 0;
}

/* The current round of c ended (every reply in, or given up on). Moves
 * c->from past the confirmed records and decides: done, failed, or another
 * round. Returns 1 when c is DONE. Called with s->mu. */
static int round_complete(struct tln_stream *s, struct tln_call *c)
{
	while (c->from < c->n && c->seq[c->from])
		c->from++;
	const int64_t now = tl_mono_ms();
	if (c->from == c->n) {
		c->state = CALL_DONE;
		c->status = 0;
		return 1;
	}
	if (c->round_err == -TL_ETOOBIG || tln_give_up(s, c->deadline_ms)) {
		c->state = CALL_DONE;
		c->status =
		    c->round_err == -TL_ETOOBIG || c->round_err == -TL_ENOSPC ? c->round_err : -TL_EUNAVAIL;
		return 1;
	}
	c->state = CALL_RETRY;
	if (c->round_err) {
		c->retry_at_ms = now + c->backoff_ms;
		c->backoff_ms =
		    c->backoff_ms * 2 > TLN_BACKOFF_MAX_MS ? TLN_BACKOFF_MAX_MS : c->backoff_ms * 2;
	} else {
		c->retry_at_ms = now; /* only broken chains: go again at once */
	}
	pthread_cond_broadcast(&s->cond);
	return 0;
}

/* Runs the callbacks of p's finished calls, in append order. Any thread;
 * without s->mu. */
static void deliver(struct tln_stream *s, struct tln_part *p)
{
	pthread_mutex_lock(&s->mu);
	if (p->delivering) {
		pthread_mutex_unlock(&s->mu);
		return;
	}
	p->delivering = 1;
	while (p->head && p->head->state == CALL_DONE && !p->head->in_send) {
		struct tln_call *c = p->head;
		p->head = c->next;
		if (!p->head)
			p->tail = NULL;
		s->slots[c->slot] = NULL;
		s->freelist[s->nfree++] = c->slot;
		pthread_mutex_unlock(&s->mu);
		atomic_fetch_sub(&s->pending_bytes, c->bytes);
		if (c->done)
			c->done(c->arg, c->status, c->n && c->seq[0] ? c->seq[0] - 1 : 0);
		call_free(c);
		pthread_mutex_lock(&s->mu);
		s->live--;
	}
	p->delivering = 0;
	if (s->live == 0)
		pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->mu);
}

/* Publishes the records of c from c->from on as one round. c is in state
 * CALL_SENDING and owned by the caller until the round is set up. */
static void send_round(struct tln_stream *s, struct tln_call *c)
{
	struct tln_part *p = c->p;
	pthread_mutex_lock(&p->pub_mu);
	pthread_mutex_lock(&s->mu);
	const uint32_t round = ++c->round;
	const size_t from = c->from;
	c->outstanding = c->n - from;
	c->round_err = 0;
	c->sent_ms = tl_mono_ms();
	c->state = CALL_WAITING;
	c->in_send = 1;
	const size_t n = c->n;
	pthread_mutex_unlock(&s->mu);

	for (size_t i = from; i < n; i++) {
		char reply[sizeof(s->inbox) + 48];
		snprintf(reply, sizeof(reply), "%s%" PRIu32 ".%" PRIu32 ".%" PRIu32 ".%zu", s->inbox, c->slot,
		         c->gen, round, i);
		natsMsg *m = NULL;
		natsStatus st = natsMsg_Create(&m, p->subject, reply, (const char *)c->data + c->doff[i],
		                               (int)c->dlen[i]);
		if (st == NATS_OK)
			st = natsMsgHeader_Set(m, "Nats-Msg-Id", c->ids + c->ioff[i]);
		if (st == NATS_OK && i > from)
			st = natsMsgHeader_Set(m, "Nats-Expected-Last-Msg-Id", c->ids + c->ioff[i - 1]);
		if (st == NATS_OK)
			st = natsConnection_PublishMsg(s->nc, m);
		natsMsg_Destroy(m);
		if (st != NATS_OK) {
			/* the rest of the round is not sent: count it as answered */
			pthread_mutex_lock(&s->mu);
			if (c->state == CALL_WAITING && c->round == round) {
				c->outstanding -= n - i;
				int e = tln_err(st, 0);
				c->round_err = e == -TL_ETOOBIG ? e : -TL_EUNAVAIL;
				if (c->outstanding == 0)
					round_complete(s, c);
			}
			pthread_mutex_unlock(&s->mu);
			break;
		}
	}
	pthread_mutex_lock(&s->mu);
	c->in_send = 0;
	const int completed = c->state == CALL_DONE;
	pthread_mutex_unlock(&s->mu);
	pthread_mutex_unlock(&p->pub_mu);
	if (completed)
		deliver(s, p);
}

/* Parses "<slot>.<gen>.<round>.<idx>". */
static int parse_reply(const char *q, uint64_t v[4])
{
	for (int k = 0; k < 4; k++) {
		if (*q < '0' || *q > '9')
			return -1;
		char *end;
		errno = 0;
		v[k] = strtoull(q, &end, 10);
		if (errno || (k < 3 && *end != '.') || (k == 3 && *end != '\0'))
			return -1;
		q = end + 1;
	}
	return 0;
}

/* The result a PubAck payload gives: >0 the sequence, 0 a broken chain,
 * negative an error. */
static int64_t puback_result(natsMsg *m)
{
	if (natsMsg_IsNoResponders(m))
		return -TL_EUNAVAIL;
	const char *d = natsMsg_GetData(m);
	int len = natsMsg_GetDataLength(m);
	char buf[512];
	if (!d || len <= 0)
		return -TL_EUNAVAIL;
	if (len >= (int)sizeof(buf))
		len = (int)sizeof(buf) - 1;
	memcpy(buf, d, (size_t)len);
	buf[len] = '\0';
	if (strstr(buf, "\"error\"")) {
		const char *e = strstr(buf, "\"err_code\":");
		long code = e ? strtol(e + 11, NULL, 10) : 0;
		if (code == JSStreamWrongLastMsgIDErr)
			return 0;
		int rc = tln_err(NATS_ERR, (jsErrCode)code);
		return rc == -TL_ETOOBIG || rc == -TL_ENOSPC ? rc : -TL_EUNAVAIL;
	}
	const char *q = strstr(buf, "\"seq\":");
	if (!q)
		return -TL_EUNAVAIL;
	unsigned long long seq = strtoull(q + 6, NULL, 10);
	return seq > 0 && seq < (unsigned long long)INT64_MAX ? (int64_t)seq : -TL_EUNAVAIL;
}

/* libnats delivery thread of the reply subscription. */
static void on_ack(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
	(void)nc;
	(void)sub;
	struct tln_stream *s = closure;
	const char *subj = natsMsg_GetSubject(m);
	size_t il = strlen(s->inbox);
	uint64_t v[4];
	if (!subj || strncmp(subj, s->inbox, il) != 0 || parse_reply(subj + il, v) != 0) {
		natsMsg_Destroy(m);
		return;
	}
	const int64_t res = puback_result(m);
	natsMsg_Destroy(m);
	struct tln_part *done_p = NULL;
	pthread_mutex_lock(&s->mu);
	struct tln_call *c = v[0] < s->nslots ? s->slots[v[0]] : NULL;
	if (c && s->gens[v[0]] == v[1] && c->state == CALL_WAITING && c->round == v[2] && v[3] >= c->from &&
	    v[3] < c->n) {
		if (res > 0)
			c->seq[v[3]] = (uint64_t)res;
		else if (res < 0 && (c->round_err == 0 || res == -TL_ETOOBIG))
			c->round_err = (int)res;
		if (--c->outstanding == 0 && round_complete(s, c))
			done_p = c->p;
	}
	pthread_mutex_unlock(&s->mu);
	if (done_p)
		deliver(s, done_p);
}

/* The ticker: ack timeouts, rounds lost to a reconnect, delayed resends. */
static void *ticker_main(void *arg)
{
	struct tln_stream *s = arg;
	struct tln_call **sends = NULL;
	struct tln_part **parts = NULL;
	size_t cap = 0;
	pthread_mutex_lock(&s->mu);
	while (!s->stop) {
		const int64_t now = tl_mono_ms();
		const int recon = atomic_exchange(&s->reconnected, 0);
		if (cap < s->nslots) {
			struct tln_call **ns = realloc(sends, s->nslots * sizeof(*ns));
			if (ns)
				sends = ns;
			struct tln_part **np = realloc(parts, s->nslots * sizeof(*np));
			if (np)
				parts = np;
			if (ns && np)
				cap = s->nslots;
		}
		size_t nsend = 0, npart = 0;
		int64_t next = now + (s->live ? TLN_TICK_MS : 1000);
		const int gone = atomic_load(&s->interrupted);
		for (size_t i = 0; i < s->nslots && i < cap; i++) {
			struct tln_call *c = s->slots[i];
			if (!c)
				continue;
			if (c->state == CALL_WAITING && !c->in_send &&
			    (recon || now - c->sent_ms >= s->ack_timeout_ms)) {
				c->round++; /* late replies of the round are ignored */
				c->outstanding = 0;
				c->round_err = -TL_EUNAVAIL;
				if (round_complete(s, c))
					parts[npart++] = c->p; /* c may be freed once unlocked */
			}
			if (c->state == CALL_RETRY && gone) {
				c->round_err = -TL_EUNAVAIL; /* round_complete fails it */
				if (round_complete(s, c))
					parts[npart++] = c->p;
			} else if (c->state == CALL_RETRY && now >= c->retry_at_ms) {
				c->state = CALL_SENDING; /* owned by this thread until sent */
				sends[nsend++] = c;
			} else if (c->state == CALL_RETRY && c->retry_at_ms < next) {
				next = c->retry_at_ms;
			}
		}
		if (nsend || npart) {
			pthread_mutex_unlock(&s->mu);
			for (size_t k = 0; k < nsend; k++)
				send_round(s, sends[k]);
			for (size_t k = 0; k < npart; k++)
				deliver(s, parts[k]);
			pthread_mutex_lock(&s->mu);
			continue;
		}
		struct timespec ts;
		tl_mono_deadline(&ts, next > now ? next - now : 1);
		pthread_cond_timedwait(&s->cond, &s->mu, &ts);
	}
	pthread_mutex_unlock(&s->mu);
	free(sends);
	free(parts);
	return NULL;
}

/* ---- connection callbacks ---- */

static void on_disconnected(natsConnection *nc, void *closure)
{
	(void)nc;
	struct tln_stream *s = closure;
	int64_t zero = 0;
	atomic_compare_exchange_strong(&s->down_since, &zero, tl_mono_ms());
}

static void on_reconnected(natsConnection *nc, void *closure)
{
	(void)nc;
	struct tln_stream *s = closure;
	atomic_store(&s->down_since, 0);
	atomic_store(&s->reconnected, 1);
	pthread_mutex_lock(&s->mu);
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->mu);
}

/* The last callback libnats runs for a connection: close waits for it. */
static void on_closed(natsConnection *nc, void *closure)
{
	(void)nc;
	struct tln_stream *s = closure;
	pthread_mutex_lock(&s->mu);
	s->closed = 1;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->mu);
}

static void on_async_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
	(void)nc;
	struct tln_stream *s = closure;
	if (sub && sub != s->ack_sub)
		tln_consumer_async_error(s, sub, err);
}

/* ---- the stream ---- */

static int parse_i64(const char *v, size_t n, int64_t lo, int64_t hi, int64_t *out)
{
	char buf[32];
	if (n == 0 || n >= sizeof(buf))
		return -TL_EINVAL;
	memcpy(buf, v, n);
	buf[n] = '\0';
	char *end;
	errno = 0;
	long long x = strtoll(buf, &end, 10);
	if (errno || *end || x < lo || x > hi)
		return -TL_EINVAL;
	*out = x;
	return 0;
}

/* Reads the query options of the URI into s. */
static int parse_query(struct tln_stream *s, const char *q)
{
	while (q && *q) {
		const char *amp = strchr(q, '&');
		size_t len = amp ? (size_t)(amp - q) : strlen(q);
		const char *eq = memchr(q, '=', len);
		if (!eq)
			return -TL_EINVAL;
		size_t kl = (size_t)(eq - q), vl = len - kl - 1;
		const char *v = eq + 1;
		int64_t x = 0;
		int rc;
#define KEY(k) (kl == sizeof(k) - 1 && memcmp(q, k, kl) == 0)
		if (KEY("replicas")) {
			rc = parse_i64(v, vl, 1, 5, &s->replicas);
		} else if (KEY("retention_ms")) {
			rc = parse_i64(v, vl, 1000, INT64_MAX / 1000000, &x);
			s->opts.retention_ms = x;
		} else if (KEY("dedupe_ms")) {
			rc = parse_i64(v, vl, 1000, INT64_MAX / 1000000, &s->dedupe_ms);
		} else if (KEY("retry_ms")) {
			rc = parse_i64(v, vl, 0, 24LL * 3600 * 1000, &s->retry_ms);
		} else if (KEY("ack_timeout_ms")) {
			rc = parse_i64(v, vl, 10, 3600LL * 1000, &s->ack_timeout_ms);
		} else if (KEY("prefix")) {
			if (vl == 0 || vl > TLN_PREFIX_MAX)
				return -TL_EINVAL;
			for (size_t i = 0; i < vl; i++) {
				char c = v[i];
				if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
				      (c >= '0' && c <= '9') || c == '_' || c == '-'))
					return -TL_EINVAL;
				s->sprefix[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
			}
			s->sprefix[vl] = '\0';
			upper(s->nprefix, sizeof(s->nprefix), s->sprefix);
			rc = 0;
		} else {
			rc = -TL_EINVAL;
		}
#undef KEY
		if (rc)
			return rc;
		q = amp ? amp + 1 : NULL;
	}
	return 0;
}

/* Splits "h1:p1,h2:p2" into nats:// URLs (malloc'ed array of malloc'ed strings). */
static int parse_servers(const char *hosts, size_t len, char ***out, int *n)
{
	int cnt = 1;
	for (size_t i = 0; i < len; i++)
		cnt += hosts[i] == ',';
	char **v = calloc((size_t)cnt, sizeof(*v));
	if (!v)
		return -TL_ENOMEM;
	int k = 0;
	size_t start = 0;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && hosts[i] != ',')
			continue;
		size_t l = i - start;
		if (l == 0 || l > 255) {
			for (int j = 0; j < k; j++)
				free(v[j]);
			free(v);
			return -TL_EINVAL;
		}
		if (!(v[k] = malloc(l + 8))) {
			for (int j = 0; j < k; j++)
				free(v[j]);
			free(v);
			return -TL_ENOMEM;
		}
		snprintf(v[k], l + 8, "nats://%.*s", (int)l, hosts + start);
		k++;
		start = i + 1;
	}
	*out = v;
	*n = k;
	return 0;
}

static void nats_interrupt(struct tl_stream *base)
{
	struct tln_stream *s = (struct tln_stream *)base;
	pthread_mutex_lock(&s->mu);
	/* a call waiting for its acks keeps its ack timeout (they may come);
	 * then, as every call due for another round, it fails */
	atomic_store(&s->interrupted, 1);
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->mu);
}

static void nats_close(struct tl_stream *base)
{
	struct tln_stream *s = (struct tln_stream *)base;
	if (!s)
		return;
	if (s->ticker_started) {
		/* every call ends by its deadline at the latest */
		pthread_mutex_lock(&s->mu);
		while (s->live > 0)
			pthread_cond_wait(&s->cond, &s->mu);
		s->stop = 1;
		pthread_cond_broadcast(&s->cond);
		pthread_mutex_unlock(&s->mu);
		pthread_join(s->ticker, NULL);
	}
	if (s->ack_sub) {
		natsSubscription_Unsubscribe(s->ack_sub);
		natsSubscription_Destroy(s->ack_sub);
	}
	jsCtx_Destroy(s->js);
	if (s->nc) {
		natsConnection_Close(s->nc);
		/* connection callbacks run on a libnats thread after Close
		 * returns; the closed callback comes last */
		pthread_mutex_lock(&s->mu);
		while (!s->closed) {
			struct timespec ts;
			tl_mono_deadline(&ts, 10000);
			if (pthread_cond_timedwait(&s->cond, &s->mu, &ts) == ETIMEDOUT)
				break;
		}
		pthread_mutex_unlock(&s->mu);
		natsConnection_Destroy(s->nc);
	}
	size_t nt = atomic_load(&s->ntopics);
	for (size_t i = 0; i < nt; i++)
		topic_free(s->topics[i]);
	free(s->slots);
	free(s->gens);
	free(s->freelist);
	pthread_mutex_destroy(&s->topics_mu);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->cons_mu);
	free(s);
}

static int nats_open(const char *uri, const struct tl_stream_opts *opts, struct tl_stream **out)
{
	if (strncmp(uri, "nats://", 7) != 0)
		return -TL_EINVAL;
	if (opts->partitions < 1 || opts->partitions > TLN_MAX_PARTITIONS || opts->max_pending <= 0 ||
	    opts->retention_ms <= 0 || opts->replicas < 0)
		return -TL_EINVAL;
	const char *hosts = uri + 7;
	const char *qm = strchr(hosts, '?');
	size_t hlen = qm ? (size_t)(qm - hosts) : strlen(hosts);
	if (hlen == 0)
		return -TL_EINVAL;

	struct tln_stream *s = calloc(1, sizeof(*s));
	if (!s)
		return -TL_ENOMEM;
	s->base.ops = &tl_stream_nats_ops;
	s->opts = *opts;
	s->replicas = opts->replicas > 0 ? opts->replicas : 1;
	s->dedupe_ms = 120000;
	s->retry_ms = 30000;
	s->ack_timeout_ms = 5000;
	snprintf(s->sprefix, sizeof(s->sprefix), "tally");
	snprintf(s->nprefix, sizeof(s->nprefix), "TALLY");
	pthread_mutex_init(&s->topics_mu, NULL);
	pthread_mutex_init(&s->mu, NULL);
	(void)tl_cond_init_mono(&s->cond);
	pthread_mutex_init(&s->cons_mu, NULL);
	char **servers = NULL;
	int nservers = 0;
	natsOptions *no = NULL;
	int rc = parse_query(s, qm ? qm + 1 : NULL);
	if (rc)
		goto fail;
	s->api_wait_ms = s->ack_timeout_ms < 5000 ? s->ack_timeout_ms : 5000;
	if ((rc = parse_servers(hosts, hlen, &servers, &nservers)) != 0)
		goto fail;

	uint64_t rnd[2];
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
		rc = -TL_EIO;
		goto fail;
	}
	snprintf(s->idbase, sizeof(s->idbase), "%016" PRIx64, rnd[0]);
	snprintf(s->inbox, sizeof(s->inbox), "_TLACK.%016" PRIx64 ".", rnd[1]);

	natsStatus st = natsOptions_Create(&no);
	if (st == NATS_OK)
		st = natsOptions_SetServers(no, (const char **)servers, nservers);
	if (st == NATS_OK)
		st = natsOptions_SetName(no, "tally");
	if (st == NATS_OK)
		st = natsOptions_SetMaxReconnect(no, -1); /* forever */
	if (st == NATS_OK)
		st = natsOptions_SetReconnectWait(no, 100);
	if (st == NATS_OK)
		st = natsOptions_SetReconnectJitter(no, 100, 1000);
	if (st == NATS_OK) {
		int64_t buf = opts->max_pending < (8 << 20) ? (8 << 20) : opts->max_pending;
		st = natsOptions_SetReconnectBufSize(no, buf > INT_MAX ? INT_MAX : (int)buf);
	}
	if (st == NATS_OK)
		st = natsOptions_SetTimeout(no, 2000);
	if (st == NATS_OK)
		st = natsOptions_SetPingInterval(no, 2000);
	if (st == NATS_OK)
		st = natsOptions_SetMaxPingsOut(no, 3);
	if (st == NATS_OK)
		st = natsOptions_SetDisconnectedCB(no, on_disconnected, s);
	if (st == NATS_OK)
		st = natsOptions_SetReconnectedCB(no, on_reconnected, s);
	if (st == NATS_OK)
		st = natsOptions_SetErrorHandler(no, on_async_error, s);
	if (st == NATS_OK)
		st = natsOptions_SetClosedCB(no, on_closed, s);
	if (st != NATS_OK) {
		rc = st == NATS_NO_MEMORY ? -TL_ENOMEM : -TL_EINVAL;
		goto fail;
	}
	st = natsConnection_Connect(&s->nc, no);
	if (st != NATS_OK) {
		s->nc = NULL;
		rc = -TL_EUNAVAIL;
		goto fail;
	}
	jsOptions jo;
	jsOptions_Init(&jo);
	jo.Wait = s->api_wait_ms;
	if ((st = natsConnection_JetStream(&s->js, s->nc, &jo)) != NATS_OK) {
		rc = tln_err(st, 0);
		goto fail;
	}
	char wild[sizeof(s->inbox) + 2];
	snprintf(wild, sizeof(wild), "%s>", s->inbox);
	st = natsConnection_Subscribe(&s->ack_sub, s->nc, wild, on_ack, s);
	if (st == NATS_OK)
		st = natsSubscription_SetPendingLimits(s->ack_sub, -1, -1);
	if (st != NATS_OK) {
		rc = tln_err(st, 0);
		goto fail;
	}
	if (pthread_create(&s->ticker, NULL, ticker_main, s) != 0) {
		rc = -TL_ENOMEM;
		goto fail;
	}
	s->ticker_started = 1;
	natsOptions_Destroy(no);
	for (int i = 0; i < nservers; i++)
		free(servers[i]);
	free(servers);
	*out = &s->base;
	return 0;
fail:
	natsOptions_Destroy(no);
	for (int i = 0; i < nservers; i++)
		free(servers[i]);
	free(servers);
	nats_close(&s->base);
	return rc;
}

static int nats_partitions(struct tl_stream *base, const char *topic)
{
	struct tln_topic *t;
	int rc = tln_topic_get((struct tln_stream *)base, topic, &t);
	return rc ? rc : t->nparts;
}

static int nats_append(struct tl_stream *base, const char *topic, int partition, const struct tl_record *recs,
                       size_t n, tl_stream_done_fn done, void *arg)
{
	struct tln_stream *s = (struct tln_stream *)base;
	if (n > 0 && !recs)
		return -TL_EINVAL;
	if (atomic_load(&s->interrupted))
		return -TL_EUNAVAIL;
	struct tln_part *p;
	int rc = part_get(s, topic, partition, &p);
	if (rc)
		return rc;
	const int64_t maxp = natsConnection_GetMaxPayload(s->nc);
	size_t bytes = 0;
	for (size_t i = 0; i < n; i++) {
		const struct tl_record *r = &recs[i];
		if ((r->key_len && !r->key) || (r->value_len && !r->value) || (r->msg_id_len && !r->msg_id))
			return -TL_EINVAL;
		const size_t sz = TLN_KEY_HDR + (size_t)r->key_len + r->value_len;
		if (sz + 512 > (size_t)(maxp > 0 ? maxp : 1 << 20))
			return -TL_ETOOBIG;
		bytes += sz + id_size(r);
		if (bytes > (size_t)INT32_MAX)
			return -TL_ETOOBIG;
	}
	if (natsConnection_IsClosed(s->nc))
		return -TL_EUNAVAIL;
	int64_t down = atomic_load(&s->down_since);
	if (down && tl_mono_ms() - down > TLN_DOWN_FAIL_MS)
		return -TL_EUNAVAIL;
	int64_t prev = atomic_fetch_add(&s->pending_bytes, (int64_t)bytes);
	if (prev > 0 && prev + (int64_t)bytes > s->opts.max_pending) {
		atomic_fetch_sub(&s->pending_bytes, (int64_t)bytes);
		return -TL_EAGAIN;
	}
	struct tln_call *c;
	if ((rc = call_make(s, p, recs, n, done, arg, &c)) != 0) {
		atomic_fetch_sub(&s->pending_bytes, (int64_t)bytes);
		return rc;
	}
	c->bytes = (int64_t)bytes;
	c->deadline_ms = tl_mono_ms() + s->retry_ms;
	pthread_mutex_lock(&s->mu);
	if ((rc = slot_take(s, c)) != 0) {
		pthread_mutex_unlock(&s->mu);
		atomic_fetch_sub(&s->pending_bytes, (int64_t)bytes);
		call_free(c);
		return rc;
	}
	if (p->tail)
		p->tail->next = c;
	else
		p->head = c;
	p->tail = c;
	s->live++;
	c->state = n ? CALL_SENDING : CALL_DONE;
	pthread_mutex_unlock(&s->mu);
	if (n)
		send_round(s, c);
	else
		deliver(s, p);
	return 0;
}

/* Stream state of partition p: last sequence (0 if none ever). */
static int part_last_seq(struct tln_stream *s, struct tln_part *p, uint64_t *last)
{
	const int64_t deadline = tl_mono_ms() + s->retry_ms;
	for (;;) {
		jsOptions o;
		jsopts(s, &o);
		jsStreamInfo *si = NULL;
		jsErrCode jerr = 0;
		natsStatus st = js_GetStreamInfo(&si, s->js, p->stream, &o, &jerr);
		if (st == NATS_OK) {
			*last = si->State.LastSeq;
			jsStreamInfo_Destroy(si);
			return 0;
		}
		if (!api_transient(st, jerr) || tln_give_up(s, deadline))
			return tln_err(st, jerr);
		sleep_ms(TLN_API_RETRY_MS);
	}
}

static int nats_end_offset(struct tl_stream *base, const char *topic, int partition, uint64_t *out)
{
	struct tln_stream *s = (struct tln_stream *)base;
	struct tln_part *p;
	int rc = part_get(s, topic, partition, &p);
	if (!rc)
		rc = part_last_seq(s, p, out);
	return rc;
}

static int nats_last(struct tl_stream *base, const char *topic, int partition, struct tl_record *rec,
                     struct tl_buf *storage)
{
	struct tln_stream *s = (struct tln_stream *)base;
	struct tln_part *p;
	int rc = part_get(s, topic, partition, &p);
	if (rc)
		return rc;
	const int64_t deadline = tl_mono_ms() + s->retry_ms;
	natsMsg *m = NULL;
	for (;;) {
		jsOptions o;
		jsopts(s, &o);
		jsErrCode jerr = 0;
		natsStatus st = js_GetLastMsg(&m, s->js, p->stream, p->subject, &o, &jerr);
		if (st == NATS_OK)
			break;
		if (!api_transient(st, jerr) || tln_give_up(s, deadline))
			return tln_err(st, jerr);
		sleep_ms(TLN_API_RETRY_MS);
	}
	const void *k, *v;
	uint32_t kl, vl;
	rc = tln_payload_decode(natsMsg_GetData(m), natsMsg_GetDataLength(m), &k, &kl, &v, &vl);
	uint64_t seq = natsMsg_GetSequence(m);
	int64_t ts_ns = natsMsg_GetTime(m);
	if (!rc && seq == 0)
		rc = -TL_ECORRUPT;
	if (!rc) {
		tl_buf_reset(storage);
		rc = tl_buf_append(storage, k, kl);
		if (!rc)
			rc = tl_buf_append(storage, v, vl);
	}
	natsMsg_Destroy(m);
	if (rc)
		return rc;
	memset(rec, 0, sizeof(*rec));
	rec->offset = seq - 1;
	rec->partition = partition;
	rec->ts_ms = ts_ns / 1000000;
	rec->key = kl ? storage->data : NULL;
	rec->key_len = kl;
	rec->value = storage->data ? (const void *)(storage->data + kl) : (const void *)"";
	rec->value_len = vl;
	return 0;
}

const struct tl_stream_ops tl_stream_nats_ops = {
    .scheme = "nats",
    .open = nats_open,
    .close = nats_close,
    .partitions = nats_partitions,
    .append = nats_append,
    .end_offset = nats_end_offset,
    .last = nats_last,
    .consumer_open = tln_consumer_open,
    .poll = tln_consumer_poll,
    .wakeup = tln_consumer_wakeup,
    .error_detail = tln_consumer_error_detail,
    .consumer_close = tln_consumer_close,
    .interrupt = nats_interrupt,
};
