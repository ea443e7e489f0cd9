/* nats_consumer.c — consumers of the `nats://` backend.
 *
 * Each subscription is an ephemeral push consumer on its partition's stream
 * with no acks and no durable state on the server (tally keeps the
 * offsets), delivering from sequence start + 1, with flow control and idle
 * heartbeats. Its messages land in a per-subscription ring (the delivery
 * thread blocks while the ring is full, which holds back flow-control
 * replies and so the server); polls take from the rings round-robin, like
 * the file backend.
 *
 * The subscription is re-created here from the next offset tally expects
 * when: a record arrives past a gap (only the first record may jump, over
 * records removed by retention), the connection reports an asynchronous
 * error for it (missed heartbeats: its server died; a sequence mismatch),
 * or it stays silent while its stream holds records it has not delivered
 * (checked at most every WATCHDOG_MS, only by polls that wait). Records
 * before the expected offset (redeliveries after a reset) are dropped, so
 * every offset comes once. libnats' own "ordered consumer" would do the
 * resets itself, but in libnats 3.4 its reset thread races with
 * natsSubscription_Unsubscribe (a use-after-free seen under ASan), so the
 * resets are done here, where unsubscribing is ordered with them. */
#include "stream/nats_int.h"

#include "core/clock.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RING_CAP 2048             /* messages buffered per subscription */
#define HEARTBEAT_NS 2000000000LL /* idle heartbeat of the ordered consumers */
#define WATCHDOG_MS 5000
#define WAIT_SLICE_MS 500

/* The closure of one libnats subscription (a reset makes a new one). */
struct nsub_h {
	struct tln_consumer *c;
	size_t idx;
	int dead;      /* under c->mu: drop whatever still comes */
	int completed; /* under c->mu: libnats will not call on_msg again */
};

struct nsub {
	struct tln_part *p;
	natsSubscription *sub;
	struct nsub_h *h;
	uint64_t next; /* next offset to hand out */
	int started;   /* a record was handed out (later jumps are gaps) */
	natsMsg **ring;
	size_t rhead, rlen;
	int need_reset;
	int64_t last_rx_ms, last_check_ms;
};

struct tln_consumer {
	struct tl_consumer base;
	struct tln_stream *s;
	struct tln_consumer *next_reg; /* s->consumers list */
	struct nsub *subs;
	size_t n, rr;
	pthread_mutex_t mu;
	pthread_cond_t cond;  /* data arrived, wakeup, reset needed */
	pthread_cond_t space; /* ring space freed, a subscription completed */
	int wake;
	int err;
	natsMsg **held; /* handed out by the last poll */
	size_t nheld, heldcap;
	char detail[256];
};

/* libnats delivery thread of a subscription. */
static void on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *m, void *closure)
{
	(void)nc;
	(void)sub;
	struct nsub_h *h = closure;
	struct tln_consumer *c = h->c;
	pthread_mutex_lock(&c->mu);
	struct nsub *sb = &c->subs[h->idx];
	while (!h->dead && sb->rlen == RING_CAP)
		pthread_cond_wait(&c->space, &c->mu);
	if (h->dead) {
		pthread_mutex_unlock(&c->mu);
		natsMsg_Destroy(m);
		return;
	}
	sb->ring[(sb->rhead + sb->rlen) % RING_CAP] = m;
	sb->rlen++;
	sb->last_rx_ms = tl_mono_ms();
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->mu);
}

static void on_complete(void *closure)
{
	struct nsub_h *h = closure;
	struct tln_consumer *c = h->c;
	pthread_mutex_lock(&c->mu);
	h->completed = 1;
	pthread_cond_broadcast(&c->space);
	pthread_mutex_unlock(&c->mu);
}

/* Whether tl_consumer_wakeup came (a stop): retries give up. Without c->mu. */
static int consumer_woken(struct tln_consumer *c)
{
	pthread_mutex_lock(&c->mu);
	int w = c->wake;
	pthread_mutex_unlock(&c->mu);
	return w;
}

/* Subscribes sub i from its next offset; gives up early on a wakeup or an
 * interrupt of the stream. Without c->mu. */
static int sub_start(struct tln_consumer *c, size_t i)
{
	struct tln_stream *s = c->s;
	struct nsub *sb = &c->subs[i];
	struct nsub_h *h = calloc(1, sizeof(*h));
	if (!h)
		return -TL_ENOMEM;
	h->c = c;
	h->idx = i;
	const int64_t deadline = tl_mono_ms() + s->retry_ms;
	natsSubscription *sub = NULL;
	for (;;) {
		jsSubOptions so;
		jsSubOptions_Init(&so);
		so.Stream = sb->p->stream;
		so.Config.AckPolicy = js_AckNone;
		so.Config.DeliverPolicy = js_DeliverByStartSequence;
		so.Config.OptStartSeq = sb->next + 1;
		so.Config.FlowControl = true;
		so.Config.Heartbeat = HEARTBEAT_NS;
		jsOptions o;
		jsOptions_Init(&o);
		o.Wait = s->api_wait_ms;
		jsErrCode jerr = 0;
		natsStatus st = js_Subscribe(&sub, s->js, sb->p->subject, on_msg, h, &o, &so, &jerr);
		if (st == NATS_OK)
			break;
		sub = NULL;
		int transient = st == NATS_TIMEOUT || st == NATS_NO_RESPONDERS ||
		                st == NATS_CONNECTION_DISCONNECTED || st == NATS_NOT_YET_CONNECTED ||
		                st == NATS_IO_ERROR || jerr == JSClusterNotAvailErr ||
		                jerr == JSStreamOfflineErr || jerr == JSClusterNotLeaderErr;
		if (transient && consumer_woken(c)) {
			free(h);
			return -TL_EAGAIN; /* stopping: the next poll tries again */
		}
		if (!transient || tln_give_up(s, deadline)) {
			snprintf(c->detail, sizeof(c->detail), "%s: subscribing from offset %llu: %s (%d)",
			         sb->p->stream, (unsigned long long)sb->next, natsStatus_GetText(st),
			         (int)jerr);
			free(h);
			return tln_err(st, jerr);
		}
		struct timespec ts = {0, 100 * 1000000};
		nanosleep(&ts, NULL);
	}
	natsStatus st = natsSubscription_SetOnCompleteCB(sub, on_complete, h);
	if (st == NATS_OK)
		st = natsSubscription_SetPendingLimits(sub, -1, -1);
	pthread_mutex_lock(&c->mu);
	sb->sub = sub;
	sb->h = h;
	sb->need_reset = st != NATS_OK;
	sb->last_rx_ms = sb->last_check_ms = tl_mono_ms();
	pthread_mutex_unlock(&c->mu);
	return 0;
}

/* Closes sub i's subscription, waits until libnats is done with it and
 * drops what it buffered. Without c->mu. */
static void sub_stop(struct tln_consumer *c, size_t i)
{
	struct nsub *sb = &c->subs[i];
	pthread_mutex_lock(&c->mu);
	natsSubscription *sub = sb->sub;
	struct nsub_h *h = sb->h;
	sb->sub = NULL;
	sb->h = NULL;
	if (h) {
		h->dead = 1;
		pthread_cond_broadcast(&c->space);
	}
	pthread_mutex_unlock(&c->mu);
	if (sub) {
		/* Unsubscribe also deletes the server's consumer: a request, which
		 * waits out its timeout while the server is unreachable (40
		 * subscriptions: minutes, at a stop). Then the interest alone is
		 * dropped (Destroy; libnats >= 3.4 leaves the consumer), and the
		 * server removes an ephemeral consumer without interest itself. */
		struct tln_stream *s = c->s;
		int reachable = !atomic_load(&s->interrupted) &&
		                natsConnection_Status(s->nc) == NATS_CONN_STATUS_CONNECTED;
		if (reachable)
			natsSubscription_Unsubscribe(sub);
		else
			natsSubscription_Destroy(sub);
		pthread_mutex_lock(&c->mu);
		while (!h->completed)
			pthread_cond_wait(&c->space, &c->mu);
		pthread_mutex_unlock(&c->mu);
		if (reachable)
			natsSubscription_Destroy(sub);
	}
	free(h);
	pthread_mutex_lock(&c->mu);
	while (sb->rlen) {
		natsMsg_Destroy(sb->ring[sb->rhead]);
		sb->rhead = (sb->rhead + 1) % RING_CAP;
		sb->rlen--;
	}
	pthread_mutex_unlock(&c->mu);
}

/* Parses the stream sequence and timestamp (ns) out of a JetStream reply
 * subject: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
 * or the longer form with domain and account hash after "$JS.ACK.". */
static int parse_ack_reply(const char *r, uint64_t *sseq, int64_t *ts)
{
	if (!r || strncmp(r, "$JS.ACK.", 8) != 0)
		return -1;
	const char *tok[16];
	size_t nt = 0;
	const char *q = r;
	tok[nt++] = q;
	while ((q = strchr(q, '.')) != NULL && nt < 16)
		tok[nt++] = ++q;
	size_t base;
	if (nt == 9)
		base = 2; /* stream at 2 */
	else if (nt >= 11)
		base = 4; /* $JS.ACK.<domain>.<hash>.<stream>… */
	else
		return -1;
	char *end;
	errno = 0;
	unsigned long long seq = strtoull(tok[base + 3], &end, 10);
	if (errno || *end != '.' || seq == 0)
		return -1;
	long long t = strtoll(tok[base + 5], &end, 10);
	if (errno || *end != '.')
		return -1;
	*sseq = seq;
	*ts = t;
	return 0;
}

static void held_release(struct tln_consumer *c)
{
	for (size_t i = 0; i < c->nheld; i++)
		natsMsg_Destroy(c->held[i]);
	c->nheld = 0;
}

/* Takes up to quota records of sub i. Called with c->mu. */
static size_t sub_take(struct tln_consumer *c, size_t i, struct tl_record *out, size_t quota)
{
	struct nsub *sb = &c->subs[i];
	size_t got = 0;
	while (got < quota && sb->rlen && !sb->need_reset && !c->err) {
		natsMsg *m = sb->ring[sb->rhead];
		sb->rhead = (sb->rhead + 1) % RING_CAP;
		sb->rlen--;
		pthread_cond_signal(&c->space);
		uint64_t seq;
		int64_t ts;
		if (parse_ack_reply(natsMsg_GetReply(m), &seq, &ts) != 0) {
			natsMsg_Destroy(m); /* not a stream message */
			continue;
		}
		const uint64_t off = seq - 1;
		if (off < sb->next) {
			natsMsg_Destroy(m); /* already handed out */
			continue;
		}
		if (off > sb->next && sb->started) {
			natsMsg_Destroy(m); /* a gap: read again from next */
			sb->need_reset = 1;
			break;
		}
		struct tl_record *rec = &out[got];
		memset(rec, 0, sizeof(*rec));
		if (tln_payload_decode(natsMsg_GetData(m), natsMsg_GetDataLength(m), &rec->key, &rec->key_len,
		                       &rec->value, &rec->value_len) != 0) {
			snprintf(c->detail, sizeof(c->detail),
			         "%s at offset %llu: payload is not a tally record", sb->p->stream,
			         (unsigned long long)off);
			c->err = -TL_ECORRUPT;
			natsMsg_Destroy(m);
			break;
		}
		if (rec->key_len == 0)
			rec->key = NULL;
		rec->offset = off;
		rec->partition = sb->p->idx;
		rec->sub = (int)i;
		rec->ts_ms = ts / 1000000;
		c->held[c->nheld++] = m;
		sb->next = off + 1;
		sb->started = 1;
		got++;
	}
	return got;
}

/* One round-robin sweep. Called with c->mu. */
static size_t gather(struct tln_consumer *c, struct tl_record *out, size_t max)
{
	const size_t first = c->rr;
	c->rr = (c->rr + 1) % c->n;
	size_t got = 0;
	int progress = 1;
	while (got < max && progress && !c->err) {
		progress = 0;
		size_t quota = (max - got) / c->n;
		if (quota == 0)
			quota = 1;
		for (size_t k = 0; k < c->n && got < max && !c->err; k++) {
			size_t i = (first + k) % c->n;
			size_t q = max - got < quota ? max - got : quota;
			size_t r = sub_take(c, i, out + got, q);
			if (r) {
				got += r;
				progress = 1;
			}
		}
	}
	return got;
}

/* Re-creates the subscriptions that need it. Called with c->mu; drops it. */
static int resets(struct tln_consumer *c)
{
	for (size_t i = 0; i < c->n && !c->wake; i++) {
		if (!c->subs[i].need_reset)
			continue;
		c->subs[i].need_reset = 0;
		pthread_mutex_unlock(&c->mu);
		sub_stop(c, i);
		int rc = sub_start(c, i);
		pthread_mutex_lock(&c->mu);
		if (rc == -TL_EAGAIN) {
			c->subs[i].need_reset = 1; /* woken: the caller returns */
			return 0;
		}
		if (rc) {
			c->subs[i].need_reset = 1; /* try again on the next poll */
			return rc;
		}
	}
	return 0;
}

/* Subscriptions silent for WATCHDOG_MS while their stream has more: reset.
 * Called with c->mu; drops it around the requests. */
static void watchdog(struct tln_consumer *c)
{
	struct tln_stream *s = c->s;
	const int64_t now = tl_mono_ms();
	for (size_t i = 0; i < c->n && !c->wake; i++) {
		struct nsub *sb = &c->subs[i];
		if (sb->rlen || now - sb->last_rx_ms < WATCHDOG_MS || now - sb->last_check_ms < WATCHDOG_MS)
			continue;
		sb->last_check_ms = now;
		const uint64_t next = sb->next;
		char stream[TLN_NAME_CAP];
		snprintf(stream, sizeof(stream), "%s", sb->p->stream);
		pthread_mutex_unlock(&c->mu);
		jsOptions o;
		jsOptions_Init(&o);
		o.Wait = s->api_wait_ms;
		jsStreamInfo *si = NULL;
		jsErrCode jerr = 0;
		natsStatus st = js_GetStreamInfo(&si, s->js, stream, &o, &jerr);
		/* a stored message at a sequence past next: it should have come */
		int behind = st == NATS_OK && si->State.Msgs > 0 && si->State.LastSeq > next;
		jsStreamInfo_Destroy(si);
		pthread_mutex_lock(&c->mu);
		if (behind && sb->next == next && sb->rlen == 0)
			sb->need_reset = 1;
	}
}

int tln_consumer_poll(struct tl_consumer *base, struct tl_record *out, size_t max, int timeout_ms)
{
	struct tln_consumer *c = (struct tln_consumer *)base;
	if (max == 0 || !out)
		return max == 0 ? 0 : -TL_EINVAL;
	if (max > INT_MAX)
		max = INT_MAX;
	held_release(c);
	if (c->heldcap < max) {
		natsMsg **nh = realloc(c->held, max * sizeof(*nh));
		if (!nh)
			return -TL_ENOMEM;
		c->held = nh;
		c->heldcap = max;
	}
	const int64_t deadline = timeout_ms > 0 ? tl_mono_ms() + timeout_ms : -1;
	int rc = 0;
	pthread_mutex_lock(&c->mu);
	for (;;) {
		if (c->err) {
			rc = c->err;
			break;
		}
		size_t got = gather(c, out, max);
		if (got) {
			rc = (int)got;
			break;
		}
		if (c->wake) { /* before the resets: a stop must not wait for them */
			c->wake = 0;
			break;
		}
		int need = 0;
		for (size_t i = 0; i < c->n; i++)
			need |= c->subs[i].need_reset;
		if (need) {
			int r = resets(c);
			if (r) {
				rc = r;
				break;
			}
			continue;
		}
		if (timeout_ms == 0)
			break;
		const int64_t now = tl_mono_ms();
		if (deadline >= 0 && now >= deadline)
			break;
		watchdog(c);
		need = 0;
		for (size_t i = 0; i < c->n; i++)
			need |= c->subs[i].need_reset;
		if (c->wake || need)
			continue;
		int64_t slice = WAIT_SLICE_MS;
		if (deadline >= 0 && deadline - now < slice)
			slice = deadline - now;
		struct timespec ts;
		tl_mono_deadline(&ts, slice > 0 ? slice : 1);
		pthread_cond_timedwait(&c->cond, &c->mu, &ts);
	}
	pthread_mutex_unlock(&c->mu);
	return rc;
}

void tln_consumer_wakeup(struct tl_consumer *base)
{
	struct tln_consumer *c = (struct tln_consumer *)base;
	pthread_mutex_lock(&c->mu);
	c->wake = 1;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->mu);
}

const char *tln_consumer_error_detail(struct tl_consumer *base)
{
	struct tln_consumer *c = (struct tln_consumer *)base;
	return c->detail;
}

void tln_consumer_async_error(struct tln_stream *s, natsSubscription *sub, natsStatus err)
{
	pthread_mutex_lock(&s->cons_mu);
	for (struct tln_consumer *c = s->consumers; c; c = c->next_reg) {
		pthread_mutex_lock(&c->mu);
		for (size_t i = 0; i < c->n; i++) {
			if (c->subs[i].sub == sub) {
				c->subs[i].need_reset = 1;
				snprintf(c->detail, sizeof(c->detail), "%s: %s (re-subscribing)",
				         c->subs[i].p->stream, natsStatus_GetText(err));
				pthread_cond_broadcast(&c->cond);
			}
		}
		pthread_mutex_unlock(&c->mu);
	}
	pthread_mutex_unlock(&s->cons_mu);
}

void tln_consumer_close(struct tl_consumer *base)
{
	struct tln_consumer *c = (struct tln_consumer *)base;
	if (!c)
		return;
	struct tln_stream *s = c->s;
	pthread_mutex_lock(&s->cons_mu);
	for (struct tln_consumer **pp = &s->consumers; *pp; pp = &(*pp)->next_reg) {
		if (*pp == c) {
			*pp = c->next_reg;
			break;
		}
	}
	pthread_mutex_unlock(&s->cons_mu);
	if (c->subs) {
		for (size_t i = 0; i < c->n; i++) {
			sub_stop(c, i);
			free(c->subs[i].ring);
		}
	}
	held_release(c);
	free(c->held);
	free(c->subs);
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cond);
	pthread_cond_destroy(&c->space);
	free(c);
}

int tln_consumer_open(struct tl_stream *base, const struct tl_subscription *subs, size_t n,
                      struct tl_consumer **out)
{
	struct tln_stream *s = (struct tln_stream *)base;
	if (!subs || n == 0)
		return -TL_EINVAL;
	struct tln_consumer *c = calloc(1, sizeof(*c));
	if (!c)
		return -TL_ENOMEM;
	c->base.ops = base->ops;
	c->s = s;
	pthread_mutex_init(&c->mu, NULL);
	(void)tl_cond_init_mono(&c->cond);
	(void)tl_cond_init_mono(&c->space);
	int rc = 0;
	if (!(c->subs = calloc(n, sizeof(*c->subs)))) {
		free(c);
		return -TL_ENOMEM;
	}
	c->n = n;
	for (size_t i = 0; i < n; i++) {
		struct tln_topic *t;
		if ((rc = tln_topic_get(s, subs[i].topic, &t)) != 0)
			goto fail;
		if (subs[i].partition < 0 || subs[i].partition >= t->nparts) {
			rc = -TL_EINVAL;
			goto fail;
		}
		c->subs[i].p = &t->parts[subs[i].partition];
		c->subs[i].next = subs[i].start;
		if (!(c->subs[i].ring = malloc(RING_CAP * sizeof(natsMsg *)))) {
			rc = -TL_ENOMEM;
			goto fail;
		}
	}
	pthread_mutex_lock(&s->cons_mu);
	c->next_reg = s->consumers;
	s->consumers = c;
	pthread_mutex_unlock(&s->cons_mu);
	for (size_t i = 0; i < n; i++)
		if ((rc = sub_start(c, i)) != 0)
			goto fail;
	*out = &c->base;
	return 0;
fail:
	tln_consumer_close(&c->base);
	return rc;
}
