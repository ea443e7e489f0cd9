#include "pipeline/enrich.h"

#include "core/clock.h"
#include "core/log.h"
#include "event/token.h"
#include "store/tenants.h"

#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- the pure part ------------------------------------------------------ */

/* The reason enrich_one looks again for; compared by address. */
static const char reason_unknown_tenant[] = "unknown_tenant";

int tl_enrich_event(const struct tl_enrich_ctx *ctx, struct tl_event *ev, struct tl_enrich_scratch *scratch,
                    const char **reason)
{
	*reason = NULL;
	if (ev->type != TL_EV_OPEN && ev->type != TL_EV_CLICK) {
		*reason = "invalid_event";
		return -TL_EINVAL;
	}
	if (ev->flags & TL_EVF_HIT) {
		struct tl_token t;
		if (tl_token_peek(ev->token.p, ev->token.n, scratch->token, sizeof scratch->token, &t)) {
			*reason = "bad_token";
			return -TL_EINVAL;
		}
		const struct tl_tenant *tn = ctx->lookup(ctx->lookup_arg, t.tenant.p, t.tenant.n);
		if (!tn) {
			*reason = reason_unknown_tenant;
			return -TL_EAUTH;
		}
		int rc = tl_token_verify(ev->token.p, ev->token.n, tn->link_key, sizeof tn->link_key,
		                         scratch->token, sizeof scratch->token, &t);
		if (rc) {
			*reason = rc == -TL_EAUTH ? "bad_signature" : "bad_token";
			return rc;
		}
		if ((ev->type == TL_EV_OPEN) != (t.kind == TL_TOKEN_OPEN)) {
			*reason = "token_kind";
			return -TL_EINVAL;
		}
		ev->tenant = t.tenant;
		ev->campaign = t.campaign;
		ev->variant = t.variant;
		ev->message = t.message;
		ev->url = t.url;
		ev->sent_ms = t.issued_ms;
		tl_recipient_hash(tn->salt, sizeof tn->salt, t.recipient.p, t.recipient.n,
		                  scratch->rcpt_hash);
		ev->recipient = tl_str_of(scratch->rcpt_hash, TL_RCPT_HASH_LEN);
		ev->token = TL_STR_NULL;
		ev->flags = (uint16_t)((ev->flags & ~TL_EVF_HIT) | TL_EVF_HASHED);
	} else if (!(ev->flags & TL_EVF_HASHED)) {
		const struct tl_tenant *tn = ctx->lookup(ctx->lookup_arg, ev->tenant.p, ev->tenant.n);
		if (!tn) {
			*reason = reason_unknown_tenant;
			return -TL_EAUTH;
		}
		tl_recipient_hash(tn->salt, sizeof tn->salt, ev->recipient.p, ev->recipient.n,
		                  scratch->rcpt_hash);
		ev->recipient = tl_str_of(scratch->rcpt_hash, TL_RCPT_HASH_LEN);
		ev->flags |= TL_EVF_HASHED;
	}
	if (!ev->campaign.n || !ev->tenant.n) {
		*reason = "invalid_event";
		return -TL_EINVAL;
	}
	tl_classify(&ctx->classify, ev);
	ev->flags |= TL_EVF_ENRICHED;
	return TL_OK;
}

/* ---- the role ----------------------------------------------------------- */

#define MAX_PARTS 64
#define N_REASONS 5

static const char *const reasons[N_REASONS] = {"bad_token", "bad_signature", "unknown_tenant", "token_kind",
                                               "invalid_event"};

struct out_part {
	struct tl_buf data; /* encoded values, back to back */
	size_t *ends;       /* end of each value in data */
	uint64_t *src;      /* source offset of each record: its idempotency id */
	char (*ids)[32];    /* "events/<p>/<offset>", for backends that drop re-sends */
	struct tl_record *recs;
	size_t n;
};

struct waitgroup {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int pending;
	int status;
};

struct tl_enricher {
	struct tl_enricher_opts o;
	char *db_uri;
	struct tl_tenant_cache *tenants;
	struct tl_consumer_slot cons;
	struct tl_subscription subs[MAX_PARTS];
	size_t n_subs;
	int P;
	struct tl_record *in;
	struct out_part out[MAX_PARTS];
	struct tl_buf dead;
	size_t *dead_ends;
	struct tl_record *dead_recs;
	size_t n_dead;
	struct tl_enrich_scratch scratch;
	struct waitgroup wg;
	atomic_int stopping;
	_Atomic uint64_t processed, machine, bot, rejected[N_REASONS], append_failures;
};

static const struct tl_tenant *lookup(void *arg, const char *name, size_t len)
{
	return tl_tenant_cache_by_name(arg, name, len);
}

int tl_enricher_create(const struct tl_enricher_opts *o, struct tl_enricher **out)
{
	int rc = -TL_ENOMEM;
	struct tl_enricher *e = calloc(1, sizeof *e);
	if (!e)
		goto fail;
	tl_consumer_slot_init(&e->cons);
	e->o = *o;
	if (!e->o.batch_max)
		e->o.batch_max = 4096;
	pthread_mutex_init(&e->wg.mu, NULL);
	pthread_cond_init(&e->wg.cv, NULL);
	e->db_uri = strdup(o->db_uri);
	e->in = malloc(e->o.batch_max * sizeof *e->in);
	e->dead_ends = malloc(e->o.batch_max * sizeof *e->dead_ends);
	e->dead_recs = malloc(e->o.batch_max * sizeof *e->dead_recs);
	if (!e->db_uri || !e->in || !e->dead_ends || !e->dead_recs)
		goto fail;
	tl_buf_init(&e->dead, 0);
	e->P = tl_stream_partitions(o->stream, TL_TOPIC_EVENTS);
	if (e->P < 0) {
		rc = e->P;
		goto fail;
	}
	int pm = tl_stream_partitions(o->stream, TL_TOPIC_METRICS);
	if (pm != e->P) {
		rc = pm < 0 ? pm : -TL_EINVAL; /* partition p of events feeds partition p of metrics */
		goto fail;
	}
	if (tl_stream_partitions(o->stream, TL_TOPIC_DEAD) < 0)
		goto fail;
	for (int p = 0; p < e->P && p < MAX_PARTS; p++) {
		tl_buf_init(&e->out[p].data, 0);
		e->out[p].ends = malloc(e->o.batch_max * sizeof(size_t));
		e->out[p].src = malloc(e->o.batch_max * sizeof(uint64_t));
		e->out[p].ids = malloc(e->o.batch_max * sizeof *e->out[p].ids);
		e->out[p].recs = malloc(e->o.batch_max * sizeof(struct tl_record));
		if (!e->out[p].ends || !e->out[p].src || !e->out[p].ids || !e->out[p].recs)
			goto fail;
		if (o->partitions & (1ULL << p))
			e->subs[e->n_subs++] = (struct tl_subscription){TL_TOPIC_EVENTS, p, 0};
	}
	*out = e;
	return TL_OK;
fail:
	tl_enricher_destroy(e);
	return rc;
}

void tl_enricher_destroy(struct tl_enricher *e)
{
	if (!e)
		return;
	tl_consumer_slot_destroy(&e->cons);
	tl_tenant_cache_close(e->tenants);
	for (int p = 0; p < MAX_PARTS; p++) {
		tl_buf_free(&e->out[p].data);
		free(e->out[p].ends);
		free(e->out[p].src);
		free(e->out[p].ids);
		free(e->out[p].recs);
	}
	tl_buf_free(&e->dead);
	free(e->dead_ends);
	free(e->dead_recs);
	free(e->in);
	free(e->db_uri);
	pthread_mutex_destroy(&e->wg.mu);
	pthread_cond_destroy(&e->wg.cv);
	free(e);
}

void tl_enricher_stop(struct tl_enricher *e)
{
	atomic_store(&e->stopping, 1);
	tl_consumer_slot_wakeup(&e->cons);
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

/* Where to resume partition p of `events`: after the source offset carried
 * by the last record of partition p of `metrics`. */
static int resume_offset(struct tl_enricher *e, int p, uint64_t *start)
{
	struct tl_buf storage;
	tl_buf_init(&storage, 0);
	struct tl_record last;
	int rc = tl_stream_last(e->o.stream, TL_TOPIC_METRICS, p, &last, &storage);
	if (rc == -TL_ENOTFOUND) {
		*start = 0;
		rc = TL_OK;
	} else if (!rc) {
		struct tl_event ev;
		rc = tl_event_decode(last.value, last.value_len, &ev);
		if (!rc)
			*start = ev.src_offset + 1;
	}
	tl_buf_free(&storage);
	return rc;
}

static int open_consumer(struct tl_enricher *e)
{
	for (size_t i = 0; i < e->n_subs; i++) {
		int rc = resume_offset(e, e->subs[i].partition, &e->subs[i].start);
		if (rc) {
			tl_error("enrich: finding the resume point of partition %d: %s", e->subs[i].partition,
			         tl_strerror(rc));
			return rc;
		}
	}
	return tl_consumer_slot_open(&e->cons, e->o.stream, e->subs, e->n_subs);
}

static void done_cb(void *arg, int status, uint64_t first)
{
	(void)first;
	struct waitgroup *wg = arg;
	pthread_mutex_lock(&wg->mu);
	if (status && !wg->status)
		wg->status = status;
	if (--wg->pending == 0)
		pthread_cond_signal(&wg->cv);
	pthread_mutex_unlock(&wg->mu);
}

static int dead_copy(struct tl_enricher *e, const struct tl_event *ev, const char *reason)
{
	size_t start = e->dead.len;
	int rc = tl_buf_printf(&e->dead, "{\"reason\":\"%s\",\"partition_offset\":%llu,\"event\":", reason,
	                       (unsigned long long)ev->src_offset);
	if (!rc)
		rc = tl_event_to_json(ev, &e->dead);
	if (!rc)
		rc = tl_buf_putc(&e->dead, '}');
	if (rc) {
		e->dead.len = start;
		return rc;
	}
	e->dead_ends[e->n_dead++] = e->dead.len;
	return TL_OK;
}

/* tl_enrich_event, looking again when the tenant is unknown: one added
 * after the cache's last check, but before the event arrived (its tokens
 * and API key came after it), is loaded first — the batch recompute, which
 * loads the tenants when it starts, would count that event. 0 with *reason
 * set or not; an error (the check failed: the database may be down) when
 * the event cannot be decided now. */
static int enrich_one(struct tl_enricher *e, const struct tl_record *r, struct tl_event *ev,
                      const char **reason)
{
	const struct tl_enrich_ctx ctx = {lookup, e->tenants, e->o.classify};
	if (tl_enrich_event(&ctx, ev, &e->scratch, reason) == 0)
		return TL_OK;
	if (*reason != reason_unknown_tenant || ev->arrival_ms <= 0)
		return TL_OK;
	int rc = tl_tenant_cache_check_since(e->tenants, ev->arrival_ms);
	if (rc)
		return rc;
	if ((rc = tl_event_decode(r->value, r->value_len, ev)) != 0)
		return rc; /* decoded before: cannot fail */
	*reason = NULL;
	if (tl_enrich_event(&ctx, ev, &e->scratch, reason) != 0 && !*reason)
		*reason = "invalid_event";
	return TL_OK;
}

/* Enriches one polled batch into per-partition output buffers. */
static int process(struct tl_enricher *e, int n)
{
	for (int i = 0; i < n; i++) {
		const struct tl_record *r = &e->in[i];
		struct out_part *op = &e->out[r->partition];
		struct tl_event ev;
		int rc = tl_event_decode(r->value, r->value_len, &ev);
		const char *reason = NULL;
		if (rc == -TL_EUNSUPPORTED) {
			/* written by a newer version: read it again after the upgrade */
			tl_error(
			    "enrich: record events/%d@%llu has a codec version this build does not read; "
			    "stopping before it (upgrade the enricher)",
			    r->partition, (unsigned long long)r->offset);
			return rc;
		}
		if (rc) {
			/* keep one output per input: a dead placeholder */
			memset(&ev, 0, sizeof ev);
			ev.type = TL_EV_OPEN;
			reason = "invalid_event";
		} else if ((rc = enrich_one(e, r, &ev, &reason)) != 0) {
			return rc; /* not decided: the batch is retried */
		}
		ev.src_offset = r->offset;
		if (reason) {
			for (int k = 0; k < N_REASONS; k++)
				if (!strcmp(reasons[k], reason))
					atomic_fetch_add(&e->rejected[k], 1);
			ev.flags |= TL_EVF_DEAD;
			if (dead_copy(e, &ev, reason))
				tl_warn("enrich: dead-letter copy of %d@%llu dropped (too large)",
				        r->partition, (unsigned long long)r->offset);
		} else {
			if (ev.flags & TL_EVF_MACHINE)
				atomic_fetch_add(&e->machine, 1);
			if (ev.flags & TL_EVF_BOT)
				atomic_fetch_add(&e->bot, 1);
		}
		if ((rc = tl_event_encode(&ev, &op->data)))
			return rc;
		op->ends[op->n] = op->data.len;
		op->src[op->n] = r->offset;
		op->n++;
		atomic_fetch_add(&e->processed, 1);
	}
	return TL_OK;
}

/* Writes the dead-letter copies, then every partition's output, and waits
 * until all are durable. Dead letters first: the output is the resume
 * point, so once it is durable its inputs are never read again — their
 * dead letters must be durable by then (at least once: a failure or a
 * crash in between writes them again when the inputs are re-read). */
static int flush(struct tl_enricher *e)
{
	if (e->n_dead) {
		size_t start = 0;
		for (size_t i = 0; i < e->n_dead; i++) {
			e->dead_recs[i] = (struct tl_record){
			    .value = e->dead.data + start, .value_len = (uint32_t)(e->dead_ends[i] - start)};
			start = e->dead_ends[i];
		}
		int drc = tl_stream_append_sync(e->o.stream, TL_TOPIC_DEAD, 0, e->dead_recs, e->n_dead);
		if (drc)
			return drc;
	}
	pthread_mutex_lock(&e->wg.mu);
	e->wg.pending = 1; /* held by us until every append is queued */
	e->wg.status = 0;
	pthread_mutex_unlock(&e->wg.mu);
	int rc = TL_OK;
	for (int p = 0; p < e->P; p++) {
		struct out_part *op = &e->out[p];
		if (!op->n)
			continue;
		size_t start = 0;
		for (size_t i = 0; i < op->n; i++) {
			int idn = snprintf(op->ids[i], sizeof op->ids[i], "events/%d/%llu", p,
			                   (unsigned long long)op->src[i]);
			op->recs[i] = (struct tl_record){.value = op->data.data + start,
			                                 .value_len = (uint32_t)(op->ends[i] - start),
			                                 .msg_id = op->ids[i],
			                                 .msg_id_len = (uint32_t)idn};
			start = op->ends[i];
		}
		pthread_mutex_lock(&e->wg.mu);
		e->wg.pending++;
		pthread_mutex_unlock(&e->wg.mu);
		int arc =
		    tl_stream_append(e->o.stream, TL_TOPIC_METRICS, p, op->recs, op->n, done_cb, &e->wg);
		if (arc) {
			rc = arc;
			pthread_mutex_lock(&e->wg.mu);
			e->wg.pending--;
			pthread_mutex_unlock(&e->wg.mu);
		}
	}
	pthread_mutex_lock(&e->wg.mu);
	e->wg.pending--;
	while (e->wg.pending > 0)
		pthread_cond_wait(&e->wg.cv, &e->wg.mu);
	if (!rc)
		rc = e->wg.status;
	pthread_mutex_unlock(&e->wg.mu);

	for (int p = 0; p < e->P; p++) {
		tl_buf_reset(&e->out[p].data);
		e->out[p].n = 0;
	}
	tl_buf_reset(&e->dead);
	e->n_dead = 0;
	return rc;
}

int tl_enricher_run(struct tl_enricher *e)
{
	int rc;
	int64_t backoff = 50;
	while ((rc = tl_tenant_cache_open(e->db_uri, 1000, &e->tenants))) {
		if (atomic_load(&e->stopping))
			return TL_OK;
		tl_warn("enrich: tenants from %s: %s; retrying", e->db_uri, tl_strerror(rc));
		sleep_ms(backoff);
		backoff = backoff * 2 > 2000 ? 2000 : backoff * 2;
	}
	if ((rc = open_consumer(e))) {
		tl_error("enrich: opening the consumer: %s", tl_strerror(rc));
		return rc;
	}
	backoff = 50;
	while (!atomic_load(&e->stopping)) {
		int n = tl_consumer_poll(e->cons.c, e->in, e->o.batch_max, 200);
		(void)tl_tenant_cache_refresh(e->tenants);
		if (n < 0) {
			tl_error("enrich: reading: %s at %s", tl_strerror(n),
			         tl_consumer_error_detail(e->cons.c));
			if (n == -TL_ECORRUPT)
				return n;
			sleep_ms(100);
			continue;
		}
		if (n == 0)
			continue;
		if ((rc = process(e, n)) == -TL_EUNSUPPORTED)
			return rc;
		if (rc == TL_OK)
			rc = flush(e);
		if (rc) {
			/* nothing after the last durable output is assumed: re-read from there */
			atomic_fetch_add(&e->append_failures, 1);
			tl_warn("enrich: writing the output: %s; resuming from the last durable record in "
			        "%lld ms",
			        tl_strerror(rc), (long long)backoff);
			for (int p = 0; p < e->P; p++) {
				tl_buf_reset(&e->out[p].data);
				e->out[p].n = 0;
			}
			tl_buf_reset(&e->dead);
			e->n_dead = 0;
			sleep_ms(backoff);
			backoff = backoff * 2 > 2000 ? 2000 : backoff * 2;
			while ((rc = open_consumer(e)) && !atomic_load(&e->stopping)) {
				if (rc == -TL_ECORRUPT)
					return rc; /* the resume point itself is damaged: an operator must
					              look */
				sleep_ms(backoff);
			}
			continue;
		}
		backoff = 50;
	}
	return TL_OK;
}

int tl_enricher_metrics(struct tl_enricher *e, struct tl_buf *out)
{
	int rc = tl_buf_printf(out,
	                       "# TYPE tally_enrich_events_total counter\ntally_enrich_events_total %llu\n"
	                       "# TYPE tally_enrich_classified_total counter\n"
	                       "tally_enrich_classified_total{class=\"machine_open\"} %llu\n"
	                       "tally_enrich_classified_total{class=\"bot_click\"} %llu\n"
	                       "# TYPE tally_enrich_dead_total counter\n",
	                       (unsigned long long)atomic_load(&e->processed),
	                       (unsigned long long)atomic_load(&e->machine),
	                       (unsigned long long)atomic_load(&e->bot));
	for (int k = 0; k < N_REASONS && !rc; k++)
		rc = tl_buf_printf(out, "tally_enrich_dead_total{reason=\"%s\"} %llu\n", reasons[k],
		                   (unsigned long long)atomic_load(&e->rejected[k]));
	return rc;
}
