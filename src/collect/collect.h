/* collect.h — the collector role: open pixel, click redirect, event API and
 * (later) provider webhooks, over HTTP, writing to the `events` and
 * `delivery` topics. It answers only once what it accepted is durable.
 *
 * Create on any thread; tl_collector_run blocks the calling thread (the HTTP
 * loop); tl_collector_stop may be called from any thread. */
#ifndef TL_COLLECT_H
#define TL_COLLECT_H

#include "core/buf.h"
#include "http/http.h"
#include "stream/stream.h"

struct tl_collector;

struct tl_collector_opts {
	const char *addr;         /* "127.0.0.1:8080" */
	const char *db_uri;       /* tenants (keys, settings) */
	struct tl_stream *stream; /* shared, not owned */
	struct tl_http_limits limits;
	size_t max_batch_events; /* lines per POST /v1/events (default 10000) */
	int tenant_refresh_ms;   /* default 1000 */
	int trust_forwarded_for; /* behind one trusted reverse proxy: the client IP of a
	                            hit is the last X-Forwarded-For entry (default 0: the peer) */
};

int tl_collector_create(const struct tl_collector_opts *o, struct tl_collector **out) TL_MUST_CHECK;
int tl_collector_port(const struct tl_collector *c);
/* Reloads the tenants now, not at the next refresh: for one added just
 * before the collector runs (the demo tenant). Before tl_collector_run. */
int tl_collector_tenants_reload(struct tl_collector *c) TL_MUST_CHECK;
int tl_collector_run(struct tl_collector *c);
void tl_collector_stop(struct tl_collector *c);
void tl_collector_destroy(struct tl_collector *c);

/* Appends the collector's counters in Prometheus text format
 * (tally_collector_requests_total{route}, tally_rejected_total{reason},
 * tally_events_accepted_total{topic}, tally_pixel_dropped_total, …). Any thread. */
int tl_collector_metrics(struct tl_collector *c, struct tl_buf *out) TL_MUST_CHECK;

#endif
