/* api.h — the API role: JSON query routes, SSE live stream, dashboard,
 * /metrics and /healthz over the reporting database (DESIGN.md §6).
 *
 * Create on any thread; tl_api_run blocks the calling thread (the HTTP loop);
 * tl_api_stop may be called from any thread. */
#ifndef TL_API_H
#define TL_API_H

#include "core/buf.h"
#include "http/http.h"
#include "store/store.h"

struct tl_api;

/* Extra Prometheus text from other roles in the same process (serve). Called
 * on the API thread. */
typedef int (*tl_api_metrics_fn)(void *arg, struct tl_buf *out);

struct tl_api_opts {
	const char *addr;   /* "127.0.0.1:8081" */
	const char *db_uri; /* the reporting DB (the API opens its own connection) */
	struct tl_http_limits limits;
	enum tl_source default_source; /* read_source setting */
	int live_interval_ms;          /* SSE poll of the store, default 100 */
	tl_api_metrics_fn extra_metrics;
	void *extra_metrics_arg;
};

int tl_api_create(const struct tl_api_opts *o, struct tl_api **out) TL_MUST_CHECK;
int tl_api_port(const struct tl_api *a);
/* Reloads the tenants now, not at the next refresh: for one added just
 * before the API runs (the demo tenant). Before tl_api_run. */
int tl_api_tenants_reload(struct tl_api *a) TL_MUST_CHECK;
int tl_api_run(struct tl_api *a);
void tl_api_stop(struct tl_api *a);
void tl_api_destroy(struct tl_api *a);

/* Switches the default source at run time (SIGHUP reload). Any thread. */
void tl_api_set_default_source(struct tl_api *a, enum tl_source src);

#endif
