/* collect.c — the collector role: its HTTP server and routes, /healthz,
 * /metrics, event ids, and the batch append shared by the write routes.
 *
 * A batch (POST /v1/events, a webhook) is built on the loop thread into one
 * group per (topic, partition); nothing is appended until the whole request
 * was parsed and validated. col_batch_commit then appends every group, defers
 * the response and answers when the last group's durability callback ran:
 * success only if every group is durable, else 503 (the client retries; the
 * event ids make the retry idempotent). */
#include "collect/collect_int.h"

#include "core/clock.h"
#include "core/log.h"
#include "http/http.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define ARENA_BLOCK (64 * 1024)

static const char *const route_names[RT__COUNT] = {"pixel",   "click",   "events",
                                                   "webhook", "healthz", "metrics"};
static const char *const reject_names[RJ__COUNT] = {"bad_token", "bad_signature", "unknown_tenant",
                                                    "token_kind"};
/* dead letters of webhooks have their own topic: `dead` is the enricher's,
 * and a topic has one writing process */
static const char *const topic_names[TP__COUNT] = {TL_TOPIC_EVENTS, TL_TOPIC_DELIVERY,
                                                   TL_TOPIC_DEAD_WEBHOOKS};
static const char *const batch_names[BT__COUNT] = {"accepted", "bad_request", "unauthorized", "too_large",
                                                   "unavailable"};

const char *col_topic_name(enum col_topic t)
{
	return topic_names[t];
}

/* ---- ids ------------------------------------------------------------------ */

static char *put_hex(char *p, uint64_t v, int min_digits)
{
	static const char hex[] = "0123456789abcdef";
	char tmp[16];
	int n = 0;
	do {
		tmp[n++] = hex[v & 15];
		v >>= 4;
	} while (v);
	while (n < min_digits)
		tmp[n++] = '0';
	while (n)
		*p++ = tmp[--n];
	return p;
}

size_t col_new_id(struct tl_collector *c, char *out)
{
	char *p = out;
	*p++ = 'c';
	p = put_hex(p, c->id_prefix, 16);
	*p++ = '-';
	p = put_hex(p, ++c->id_counter, 1);
	*p = '\0';
	return (size_t)(p - out);
}

void col_client_ip(struct tl_collector *c, struct tl_http_req *r, char *out, size_t cap)
{
	if (c->o.trust_forwarded_for) {
		size_t n;
		const char *xff = tl_http_header(r, "X-Forwarded-For", &n);
		if (xff && n) {
			/* the entry our proxy appended: the last one */
			size_t end = n, start;
			while (end && (xff[end - 1] == ' ' || xff[end - 1] == '\t'))
				end--;
			start = end;
			while (start && xff[start - 1] != ',')
				start--;
			while (start < end && (xff[start] == ' ' || xff[start] == '\t'))
				start++;
			size_t len = end - start;
			if (len && len <= TL_MAX_IP && len < cap) {
				memcpy(out, xff + start, len);
				out[len] = '\0';
				/* an address, not whatever bytes the header held */
				unsigned char a[sizeof(struct in6_addr)];
				if (inet_pton(AF_INET, out, a) == 1 || inet_pton(AF_INET6, out, a) == 1)
					return;
			}
		}
	}
	tl_http_peer(r, out, cap);
}

/* ---- batches ---------------------------------------------------------------- */

void col_groups_reset(struct tl_collector *c)
{
	for (int t = 0; t < TP__COUNT; t++)
		for (int p = 0; p < c->parts[t]; p++) {
			struct col_group *g = &c->groups[t][p];
			tl_buf_reset(&g->data);
			tl_buf_reset(&g->keys);
			tl_buf_reset(&g->ids);
			g->n = 0;
		}
}

static int group_reserve(struct col_group *g)
{
	if (g->n < g->cap)
		return TL_OK;
	size_t ncap = g->cap ? g->cap * 2 : 64;
	uint32_t *v = realloc(g->vend, ncap * sizeof *v);
	if (!v)
		return -TL_ENOMEM;
	g->vend = v;
	uint32_t *k = realloc(g->kend, ncap * sizeof *k);
	if (!k)
		return -TL_ENOMEM;
	g->kend = k;
	uint32_t *i = realloc(g->iend, ncap * sizeof *i);
	if (!i)
		return -TL_ENOMEM;
	g->iend = i;
	g->cap = ncap;
	return TL_OK;
}

static struct col_group *group_for(struct tl_collector *c, enum col_topic t, const char *key, size_t key_len)
{
	int p = tl_stream_partition_for(key, key_len, c->parts[t]);
	return &c->groups[t][p];
}

static int group_push(struct col_group *g, const char *key, size_t key_len)
{
	int rc = tl_buf_append(&g->keys, key, key_len);
	if (rc)
		return rc;
	g->vend[g->n] = (uint32_t)g->data.len;
	g->kend[g->n] = (uint32_t)g->keys.len;
	g->iend[g->n] = (uint32_t)g->ids.len;
	g->n++;
	return TL_OK;
}

int col_groups_add(struct tl_collector *c, enum col_topic t, const struct tl_event *ev, const char *key,
                   size_t key_len)
{
	struct col_group *g = group_for(c, t, key, key_len);
	size_t i0 = g->ids.len;
	int rc = group_reserve(g);
	if (!rc && ev->id.n)
		rc = tl_buf_append(&g->ids, ev->tenant.p, ev->tenant.n);
	if (!rc && ev->id.n)
		rc = tl_buf_putc(&g->ids, ':');
	if (!rc && ev->id.n)
		rc = tl_buf_append(&g->ids, ev->id.p, ev->id.n);
	if (!rc)
		rc = tl_event_encode(ev, &g->data);
	if (!rc)
		rc = group_push(g, key, key_len);
	if (rc)
		g->ids.len = i0;
	return rc;
}

int col_groups_add_raw(struct tl_collector *c, enum col_topic t, const void *val, size_t len, const char *key,
                       size_t key_len)
{
	struct col_group *g = group_for(c, t, key, key_len);
	int rc = group_reserve(g);
	if (!rc)
		rc = tl_buf_append(&g->data, val, len);
	return rc ? rc : group_push(g, key, key_len);
}

struct batch_ctx {
	struct tl_collector *c;
	struct tl_http_deferred *d;
	atomic_int pending;
	atomic_int status;
	struct col_batch_info info;
};

static const char *const retry_headers[] = {"Retry-After", "1", NULL};

static void batch_answer(struct batch_ctx *b)
{
	struct tl_collector *c = b->c;
	int status = atomic_load(&b->status);
	char body[256];
	int n;
	if (status) {
		col_count(&c->batches[BT_UNAVAILABLE]);
		n = snprintf(
		    body, sizeof body,
		    "{\"error\":{\"code\":\"unavailable\",\"message\":\"the events could not be made durable "
		    "(%s); retry the whole batch (ids make it idempotent)\"}}",
		    tl_strerror(status));
		tl_http_deferred_complete(b->d, 503, "application/json", body, (size_t)n, retry_headers);
		return;
	}
	col_count(&c->batches[BT_ACCEPTED]);
	for (int t = 0; t < TP__COUNT; t++)
		atomic_fetch_add_explicit(&c->accepted[t], b->info.per_topic[t], memory_order_relaxed);
	if (b->info.kind == ANS_WEBHOOK) {
		tl_webhook_replay_commit(c->replay, &b->info.replay, tl_now_ms());
		n = snprintf(body, sizeof body, "{\"accepted\":%zu,\"dead\":%zu}", b->info.n_events,
		             b->info.n_dead);
		tl_http_deferred_complete(b->d, b->info.ok_status, "application/json", body, (size_t)n, NULL);
	} else {
		n = snprintf(body, sizeof body, "{\"accepted\":%zu}", b->info.n_events);
		tl_http_deferred_complete(b->d, 202, "application/json", body, (size_t)n, NULL);
	}
}

static void batch_release(struct batch_ctx *b)
{
	if (atomic_fetch_sub_explicit(&b->pending, 1, memory_order_acq_rel) != 1)
		return;
	batch_answer(b);
	free(b);
}

static void batch_fail(struct batch_ctx *b, int status)
{
	int zero = 0;
	atomic_compare_exchange_strong(&b->status, &zero, status);
	col_count(&b->c->append_errors);
}

/* Durability callback of one group (backend thread). */
static void batch_done(void *arg, int status, uint64_t first_offset)
{
	struct batch_ctx *b = arg;
	struct tl_collector *c = b->c;
	(void)first_offset;
	if (status)
		batch_fail(b, status);
	batch_release(b);
	col_append_done(c); /* last: c may go right after */
}

int col_batch_commit(struct tl_collector *c, struct tl_http_req *r, const struct col_batch_info *info)
{
	size_t groups = 0, max_n = 0;
	for (int t = 0; t < TP__COUNT; t++)
		for (int p = 0; p < c->parts[t]; p++) {
			size_t n = c->groups[t][p].n;
			if (n) {
				groups++;
				if (n > max_n)
					max_n = n;
			}
		}
	struct batch_ctx *b = calloc(1, sizeof *b);
	struct tl_record *recs = max_n ? calloc(max_n, sizeof *recs) : NULL;
	struct tl_http_deferred *d = (b && (recs || !max_n)) ? tl_http_defer(r) : NULL;
	if (!d) {
		free(b);
		free(recs);
		col_count(&c->batches[BT_UNAVAILABLE]);
		tl_http_respond_error(r, 503, "unavailable", "out of memory");
		return TL_HTTP_DONE;
	}
	b->c = c;
	b->d = d;
	b->info = *info;
	atomic_init(&b->status, 0);
	atomic_init(&b->pending, (int)groups + 1); /* +1: ours until every append is queued */
	for (int t = 0; t < TP__COUNT; t++)
		for (int p = 0; p < c->parts[t]; p++) {
			struct col_group *g = &c->groups[t][p];
			if (!g->n)
				continue;
			uint32_t v0 = 0, k0 = 0, i0 = 0;
			for (size_t i = 0; i < g->n; i++) {
				recs[i] = (struct tl_record){.key = col_at(&g->keys, k0, g->kend[i] - k0),
				                             .key_len = g->kend[i] - k0,
				                             .value = g->data.data + v0,
				                             .value_len = g->vend[i] - v0,
				                             .msg_id = col_at(&g->ids, i0, g->iend[i] - i0),
				                             .msg_id_len = g->iend[i] - i0};
				k0 = g->kend[i];
				v0 = g->vend[i];
				i0 = g->iend[i];
			}
			col_append_begin(c);
			int rc = tl_stream_append(c->o.stream, topic_names[t], p, recs, g->n, batch_done, b);
			if (rc) { /* not queued: done will not run */
				col_append_done(c);
				batch_fail(b, rc);
				atomic_fetch_sub_explicit(&b->pending, 1, memory_order_acq_rel);
			}
		}
	free(recs);
	batch_release(b);
	return TL_HTTP_ASYNC;
}

/* ---- /healthz, /metrics -------------------------------------------------- */

static int on_healthz(void *arg, struct tl_http_req *r)
{
	struct tl_collector *c = arg;
	col_count(&c->requests[RT_HEALTHZ]);
	static const char ok[] = "{\"status\":\"ok\"}";
	tl_http_respond(r, 200, "application/json", ok, sizeof ok - 1, NULL);
	return TL_HTTP_DONE;
}

static int on_metrics(void *arg, struct tl_http_req *r)
{
	struct tl_collector *c = arg;
	col_count(&c->requests[RT_METRICS]);
	struct tl_buf b;
	tl_buf_init(&b, 0);
	if (tl_collector_metrics(c, &b) == 0)
		tl_http_respond(r, 200, "text/plain; version=0.0.4", b.data, b.len, NULL);
	else
		tl_http_respond_error(r, 500, "internal", "out of memory");
	tl_buf_free(&b);
	return TL_HTTP_DONE;
}

static uint64_t load(atomic_uint_fast64_t *v)
{
	return (uint64_t)atomic_load_explicit(v, memory_order_relaxed);
}

int tl_collector_metrics(struct tl_collector *c, struct tl_buf *out)
{
	int rc =
	    tl_buf_puts(out, "# HELP tally_collector_requests_total Requests to the collector by route.\n"
	                     "# TYPE tally_collector_requests_total counter\n");
	for (int i = 0; !rc && i < RT__COUNT; i++)
		rc = tl_buf_printf(out, "tally_collector_requests_total{route=\"%s\"} %llu\n", route_names[i],
		                   (unsigned long long)load(&c->requests[i]));
	if (!rc)
		rc = tl_buf_puts(
		    out, "# HELP tally_rejected_total Tracking hits refused by the collector, by reason.\n"
		         "# TYPE tally_rejected_total counter\n");
	for (int i = 0; !rc && i < RJ__COUNT; i++)
		rc = tl_buf_printf(out, "tally_rejected_total{reason=\"%s\"} %llu\n", reject_names[i],
		                   (unsigned long long)load(&c->rejected[i]));
	if (!rc)
		rc = tl_buf_puts(
		    out,
		    "# HELP tally_events_accepted_total Records made durable by the collector, by topic.\n"
		    "# TYPE tally_events_accepted_total counter\n");
	for (int i = 0; !rc && i < TP__COUNT; i++)
		rc = tl_buf_printf(out, "tally_events_accepted_total{topic=\"%s\"} %llu\n", topic_names[i],
		                   (unsigned long long)load(&c->accepted[i]));
	if (!rc)
		rc = tl_buf_puts(
		    out, "# HELP tally_collector_batches_total Event API and webhook batches by outcome.\n"
		         "# TYPE tally_collector_batches_total counter\n");
	for (int i = 0; !rc && i < BT__COUNT; i++)
		rc = tl_buf_printf(out, "tally_collector_batches_total{result=\"%s\"} %llu\n", batch_names[i],
		                   (unsigned long long)load(&c->batches[i]));
	if (!rc)
		rc = tl_buf_printf(
		    out,
		    "# HELP tally_pixel_dropped_total Open-pixel hits answered but not recorded (stream "
		    "failing).\n"
		    "# TYPE tally_pixel_dropped_total counter\n"
		    "tally_pixel_dropped_total %llu\n"
		    "# HELP tally_click_dropped_total Clicks redirected but not recorded (stream failing).\n"
		    "# TYPE tally_click_dropped_total counter\n"
		    "tally_click_dropped_total %llu\n"
		    "# HELP tally_collector_append_errors_total Stream appends that failed.\n"
		    "# TYPE tally_collector_append_errors_total counter\n"
		    "tally_collector_append_errors_total %llu\n"
		    "# HELP tally_collector_tenant_refresh_errors_total Failed tenant reloads.\n"
		    "# TYPE tally_collector_tenant_refresh_errors_total counter\n"
		    "tally_collector_tenant_refresh_errors_total %llu\n"
		    "# HELP tally_webhook_subscribe_errors_total SNS subscription confirmations that "
		    "failed.\n"
		    "# TYPE tally_webhook_subscribe_errors_total counter\n"
		    "tally_webhook_subscribe_errors_total %llu\n",
		    (unsigned long long)load(&c->pixel_dropped), (unsigned long long)load(&c->click_dropped),
		    (unsigned long long)load(&c->append_errors),
		    (unsigned long long)load(&c->tenant_refresh_errors),
		    (unsigned long long)load(&c->webhook_subscribe_errors));
	if (!rc && c->replay)
		rc = tl_buf_printf(
		    out,
		    "# HELP tally_webhook_replay_evicted_total Unexpired Mailgun tokens evicted "
		    "from a full replay cache.\n"
		    "# TYPE tally_webhook_replay_evicted_total counter\n"
		    "tally_webhook_replay_evicted_total %llu\n",
		    (unsigned long long)tl_webhook_replay_evicted(c->replay));
	return rc;
}

/* ---- the role --------------------------------------------------------------- */

static void refresh_tenants(void *arg)
{
	struct tl_collector *c = arg;
	if (tl_tenant_cache_refresh(c->tenants) != 0)
		col_count(&c->tenant_refresh_errors);
}

static uint64_t random_prefix(void)
{
	uint64_t v = 0;
	if (getrandom(&v, sizeof v, 0) != (ssize_t)sizeof v) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		v = ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 16);
	}
	return v;
}

int tl_collector_create(const struct tl_collector_opts *o, struct tl_collector **out)
{
	*out = NULL;
	if (!o || !o->addr || !o->db_uri || !o->stream)
		return -TL_EINVAL;
	struct tl_collector *c = calloc(1, sizeof *c);
	if (!c)
		return -TL_ENOMEM;
	int rc = -TL_ENOMEM;
	c->o = *o;
	c->addr = strdup(o->addr);
	c->db_uri = strdup(o->db_uri);
	if (!c->addr || !c->db_uri)
		goto fail;
	c->o.addr = c->addr;
	c->o.db_uri = c->db_uri;
	struct tl_http_limits def;
	tl_http_limits_defaults(&def);
	if (!c->o.limits.max_body)
		c->o.limits.max_body = def.max_body;
	if (c->o.limits.read_timeout_ms <= 0)
		c->o.limits.read_timeout_ms = def.read_timeout_ms;
	if (c->o.limits.keepalive_timeout_ms <= 0)
		c->o.limits.keepalive_timeout_ms = def.keepalive_timeout_ms;
	if (!c->o.max_batch_events)
		c->o.max_batch_events = 10000;
	if (c->o.tenant_refresh_ms <= 0)
		c->o.tenant_refresh_ms = 1000;
	c->id_prefix = random_prefix();

	tl_arena_init(&c->arena, ARENA_BLOCK, 8 * c->o.limits.max_body + (1u << 20));
	for (int t = 0; t < TP__COUNT; t++) {
		int p = tl_stream_partitions(c->o.stream, topic_names[t]);
		if (p <= 0) {
			rc = p < 0 ? p : -TL_EIO;
			goto fail;
		}
		c->parts[t] = p;
		c->groups[t] = calloc((size_t)p, sizeof(struct col_group));
		if (!c->groups[t]) {
			rc = -TL_ENOMEM;
			goto fail;
		}
		for (int i = 0; i < p; i++) {
			tl_buf_init(&c->groups[t][i].data, 0);
			tl_buf_init(&c->groups[t][i].keys, 0);
			tl_buf_init(&c->groups[t][i].ids, 0);
		}
	}
	if ((rc = col_hits_init(c)))
		goto fail;
	if ((rc = tl_tenant_cache_open(c->db_uri, c->o.tenant_refresh_ms, &c->tenants)))
		goto fail;
	if ((rc = tl_webhook_replay_create(0, &c->replay)))
		goto fail;
	if ((rc = tl_webhook_http_global_init()))
		goto fail;
	if ((rc = tl_sns_certs_create(0, tl_webhook_http_get, NULL, &c->sns)))
		goto fail;

	const struct tl_http_route routes[] = {
	    {"GET", "/o/*", col_on_pixel, c}, /* GET and HEAD */
	    {"GET", "/c/*", col_on_click, c}, /* GET and HEAD */
	    {"POST", "/v1/events", col_on_events, c}, {"POST", "/v1/webhooks/*", col_on_webhook, c},
	    {"GET", "/healthz", on_healthz, c},       {"GET", "/metrics", on_metrics, c},
	};
	if ((rc = tl_http_server_create("collector", c->addr, &c->o.limits, routes,
	                                sizeof routes / sizeof routes[0], &c->srv)))
		goto fail;
	if ((rc = tl_http_server_every(c->srv, c->o.tenant_refresh_ms, refresh_tenants, c)))
		goto fail;
	*out = c;
	return TL_OK;
fail:
	tl_collector_destroy(c);
	return rc;
}

int tl_collector_port(const struct tl_collector *c)
{
	return tl_http_server_port(c->srv);
}

int tl_collector_tenants_reload(struct tl_collector *c)
{
	return tl_tenant_cache_check_since(c->tenants, tl_now_ms());
}

int tl_collector_run(struct tl_collector *c)
{
	return tl_http_server_run(c->srv);
}

void tl_collector_stop(struct tl_collector *c)
{
	if (c)
		tl_http_server_stop(c->srv);
}

#define DESTROY_WAIT_MS 30000

void tl_collector_destroy(struct tl_collector *c)
{
	if (!c)
		return;
	/* durability callbacks still to come touch c and the server's deferred
	 * responses: wait for them (the stream is not ours to close) */
	int64_t deadline = tl_mono_ms() + DESTROY_WAIT_MS;
	while (atomic_load_explicit(&c->appends_inflight, memory_order_acquire) > 0 &&
	       tl_mono_ms() < deadline)
		usleep(1000);
	if (atomic_load_explicit(&c->appends_inflight, memory_order_acquire) > 0) {
		tl_error("collector: %d stream appends never completed; not freeing the collector",
		         (int)atomic_load(&c->appends_inflight));
		return;
	}
	tl_http_server_destroy(c->srv);
	tl_sns_certs_destroy(c->sns);
	tl_webhook_replay_destroy(c->replay);
	tl_tenant_cache_close(c->tenants);
	for (int t = 0; t < TP__COUNT; t++) {
		if (!c->groups[t])
			continue;
		for (int p = 0; p < c->parts[t]; p++) {
			tl_buf_free(&c->groups[t][p].data);
			tl_buf_free(&c->groups[t][p].keys);
			tl_buf_free(&c->groups[t][p].ids);
			free(c->groups[t][p].iend);
			free(c->groups[t][p].vend);
			free(c->groups[t][p].kend);
		}
		free(c->groups[t]);
	}
	col_hits_free(c);
	tl_arena_free(&c->arena);
	free(c->addr);
	free(c->db_uri);
	free(c);
}
