/* webhook.c — POST /v1/webhooks/<provider>/<tenant>: the HTTP side of the
 * provider webhooks (the parsing and signature checks live in webhooks/).
 *
 * The tenant comes from the URL; tl_webhook_handle checks the provider's
 * credential and maps the payload to canonical events and dead letters.
 * Events go to `events` (open/click) or `delivery`, dead letters (JSON) to
 * `dead`; the answer — and the Mailgun replay-cache entry — come only once
 * every record is durable, else 503 so the provider retries; in between the
 * token is reserved, so concurrent copies of one signed request are refused
 * as replays (a 503'd request can reuse it once the reservation lapses). An SNS
 * subscription confirmation is fetched on a short-lived thread, never on the
 * loop. */
#include "collect/collect_int.h"

#include "core/clock.h"
#include "core/log.h"
#include "http/http.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static const char *header_of(void *arg, const char *name, size_t *len)
{
	return tl_http_header(arg, name, len);
}

/* The confirmation thread owns only its URL: it may outlive the collector. */
struct confirm {
	char url[1];
};

static void *confirm_main(void *arg)
{
	struct confirm *k = arg;
	struct tl_buf b;
	tl_buf_init(&b, 64 * 1024);
	int rc = tl_webhook_http_get(NULL, k->url, &b);
	if (rc) {
		tl_warn("collector: SNS subscription confirmation failed: %s", tl_strerror(rc));
	} else {
		tl_info("collector: SNS subscription confirmed");
	}
	tl_buf_free(&b);
	free(k);
	return NULL;
}

static void confirm_subscription(struct tl_collector *c, const char *url)
{
	size_t n = strlen(url);
	struct confirm *k = malloc(sizeof *k + n);
	if (!k) {
		col_count(&c->webhook_subscribe_errors);
		return;
	}
	memcpy(k->url, url, n + 1);
	pthread_t th;
	pthread_attr_t at;
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&th, &at, confirm_main, k) != 0) {
		col_count(&c->webhook_subscribe_errors);
		free(k);
	}
	pthread_attr_destroy(&at);
}

int col_on_webhook(void *arg, struct tl_http_req *r)
{
	struct tl_collector *c = arg;
	col_count(&c->requests[RT_WEBHOOK]);
	size_t pl;
	const char *path = tl_http_path(r, &pl);
	static const char prefix[] = "/v1/webhooks/";
	const char *prov = path + sizeof prefix - 1;
	const char *end = path + pl;
	const char *slash = memchr(prov, '/', (size_t)(end - prov));
	if (!slash || slash == prov || slash + 1 == end ||
	    memchr(slash + 1, '/', (size_t)(end - slash - 1))) {
		tl_http_respond_error(r, 404, "not_found", "use /v1/webhooks/<provider>/<tenant>");
		return TL_HTTP_DONE;
	}
	const char *tname = slash + 1;
	const struct tl_tenant *tenant = tl_tenant_cache_by_name(c->tenants, tname, (size_t)(end - tname));

	tl_arena_reset(&c->arena);
	struct tl_webhook_req req = {
	    .body = NULL,
	    .header = header_of,
	    .header_arg = r,
	    .tenant = tenant,
	    .now_ms = tl_now_ms(),
	    .arena = &c->arena,
	    .replay = c->replay,
	    .sns_certs = c->sns,
	};
	req.body = tl_http_body(r, &req.len);
	struct tl_webhook_out out;
	int status = 0;
	char err[256];
	int rc = tl_webhook_handle(prov, (size_t)(slash - prov), &req, &out, &status, err, sizeof err);
	if (rc) {
		col_count(&c->batches[status == 401 || status == 403 ? BT_UNAUTHORIZED
		                      : status == 413                ? BT_TOO_LARGE
		                      : status >= 500                ? BT_UNAVAILABLE
		                                                     : BT_BAD_REQUEST]);
		tl_http_respond_error(r, status, tl_webhook_status_code(status), "%s", err);
		return TL_HTTP_DONE;
	}

	/* The handler only checked the Mailgun token: hold it now, so that a copy
	 * of this request arriving before the commit is refused as a replay. */
	if (tl_webhook_replay_reserve(c->replay, &out, req.now_ms)) {
		col_count(&c->batches[BT_UNAUTHORIZED]);
		tl_http_respond_error(r, 403, "forbidden",
		                      "replayed token (a request with it is in progress)");
		return TL_HTTP_DONE;
	}

	struct col_batch_info info = {.kind = ANS_WEBHOOK, .ok_status = status ? status : 200};
	col_groups_reset(c);
	for (size_t i = 0; i < out.n && !rc; i++) {
		const struct tl_event *ev = &out.events[i];
		enum col_topic t =
		    (ev->type == TL_EV_OPEN || ev->type == TL_EV_CLICK) ? TP_EVENTS : TP_DELIVERY;
		rc = col_groups_add(c, t, ev, ev->recipient.p, ev->recipient.n);
		info.per_topic[t]++;
	}
	struct tl_buf dj;
	tl_buf_init(&dj, 0);
	for (size_t i = 0; i < out.n_dead && !rc; i++) {
		const struct tl_webhook_dead *dl = &out.dead[i];
		tl_buf_reset(&dj);
		rc = tl_webhook_dead_to_json(dl, &dj);
		if (!rc)
			rc = col_groups_add_raw(c, TP_DEAD, dj.data, dj.len, dl->ev.recipient.p,
			                        dl->ev.recipient.n);
		info.per_topic[TP_DEAD]++;
	}
	tl_buf_free(&dj);
	if (rc) {
		tl_webhook_replay_release(c->replay, &out);
		col_count(&c->batches[BT_UNAVAILABLE]);
		tl_http_respond_error(r, 500, "internal", "cannot encode the events: %s", tl_strerror(rc));
		return TL_HTTP_DONE;
	}
	info.n_events = out.n;
	info.n_dead = out.n_dead;
	info.replay = out;
	info.replay.events = NULL; /* the arena is reused before the commit */
	info.replay.dead = NULL;
	info.replay.n = info.replay.n_dead = 0;
	info.replay.subscribe_url = NULL;
	if (out.subscribe_url)
		confirm_subscription(c, out.subscribe_url);
	return col_batch_commit(c, r, &info);
}
