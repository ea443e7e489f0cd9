/* events.c — POST /v1/events: NDJSON of canonical events from the mailer.
 *
 * Authorization: Bearer <tenant API key> names the tenant (401 otherwise).
 * Every line is parsed and validated before anything is written; the first
 * bad line rejects the whole batch (400 bad_event, naming the line and the
 * reason). Accepted events get the key's tenant, a recipient replaced by the
 * tenant-keyed hash (TL_EVF_HASHED; the raw address goes no further) and the
 * arrival time; open/click go to `events`, everything else to `delivery`,
 * partitioned by the hashed recipient. The answer, 202 {"accepted":N}, comes
 * once every record is durable; 503 otherwise (retry: the ids dedupe). */
#include "collect/collect_int.h"

#include "core/clock.h"
#include "event/token.h"
#include "http/http.h"

#include <stdio.h>
#include <string.h>

/* Flags a producer may set; the rest belong to the pipeline. */
#define API_FLAGS (TL_EVF_HEAD | TL_EVF_PROVIDER_MACHINE)

static int bad_request(struct tl_collector *c, struct tl_http_req *r, enum col_batch why, int status,
                       const char *code, const char *msg)
{
	col_count(&c->batches[why]);
	tl_http_respond_error(r, status, code, "%s", msg);
	return TL_HTTP_DONE;
}

static bool blank(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
			return false;
	return true;
}

int col_on_events(void *arg, struct tl_http_req *r)
{
	struct tl_collector *c = arg;
	col_count(&c->requests[RT_EVENTS]);
	size_t hl;
	const char *auth = tl_http_header(r, "Authorization", &hl);
	const struct tl_tenant *tenant = auth ? tl_tenant_cache_by_bearer(c->tenants, auth, hl) : NULL;
	if (!tenant) {
		col_count(&c->batches[BT_UNAUTHORIZED]);
		const char *hdrs[] = {"WWW-Authenticate", "Bearer", NULL};
		static const char body[] =
		    "{\"error\":{\"code\":\"unauthorized\",\"message\":\"missing or unknown API key\"}}";
		tl_http_respond(r, 401, "application/json", body, sizeof body - 1, hdrs);
		return TL_HTTP_DONE;
	}
	size_t len;
	const char *body = tl_http_body(r, &len);
	size_t tnl = strlen(tenant->name);
	int64_t now = tl_now_ms();
	struct col_batch_info info = {.kind = ANS_EVENTS};
	char err[256], msg[320];

	tl_arena_reset(&c->arena);
	col_groups_reset(c);
	size_t line_no = 0;
	for (size_t pos = 0; pos < len;) {
		const char *nl = memchr(body + pos, '\n', len - pos);
		size_t end = nl ? (size_t)(nl - body) : len;
		const char *line = body + pos;
		size_t ll = end - pos;
		pos = end + 1;
		line_no++;
		if (ll && line[ll - 1] == '\r')
			ll--;
		if (blank(line, ll))
			continue;
		if (info.n_events == c->o.max_batch_events) {
			snprintf(msg, sizeof msg, "more than %zu events in one batch", c->o.max_batch_events);
			return bad_request(c, r, BT_TOO_LARGE, 413, "too_large", msg);
		}
		struct tl_event ev;
		int rc = tl_event_from_json(line, ll, &c->arena, &ev, err, sizeof err);
		if (rc == -TL_ENOMEM)
			return bad_request(c, r, BT_TOO_LARGE, 413, "too_large", "batch too large to parse");
		if (!rc && (ev.flags & TL_EVF_HIT)) {
			snprintf(err, sizeof err,
			         "raw hits (\"token\") are recorded by /o/ and /c/, not here");
			rc = -TL_EINVAL;
		}
		if (!rc && ev.tenant.n &&
		    (ev.tenant.n != tnl || memcmp(ev.tenant.p, tenant->name, tnl) != 0)) {
			snprintf(err, sizeof err, "tenant does not match API key");
			rc = -TL_EINVAL;
		}
		if (!rc) {
			ev.tenant = tl_str_of(tenant->name, tnl);
			ev.flags &= API_FLAGS;
			ev.arrival_ms = now;
			ev.src_offset = 0;
			rc = tl_event_validate(&ev, err, sizeof err);
		}
		if (rc) {
			snprintf(msg, sizeof msg, "line %zu: %s", line_no, err);
			return bad_request(c, r, BT_BAD_REQUEST, 400, "bad_event", msg);
		}
		char *h = tl_arena_alloc(&c->arena, TL_RCPT_HASH_LEN + 1);
		if (!h)
			return bad_request(c, r, BT_TOO_LARGE, 413, "too_large", "batch too large to parse");
		tl_recipient_hash(tenant->salt, sizeof tenant->salt, ev.recipient.p, ev.recipient.n, h);
		ev.recipient = tl_str_of(h, TL_RCPT_HASH_LEN);
		ev.flags |= TL_EVF_HASHED;
		enum col_topic t =
		    (ev.type == TL_EV_OPEN || ev.type == TL_EV_CLICK) ? TP_EVENTS : TP_DELIVERY;
		if ((rc = col_groups_add(c, t, &ev, h, TL_RCPT_HASH_LEN)))
			return bad_request(c, r, BT_TOO_LARGE, 413, "too_large", "batch too large to encode");
		info.per_topic[t]++;
		info.n_events++;
	}
	if (info.n_events == 0)
		return bad_request(c, r, BT_BAD_REQUEST, 400, "bad_request",
		                   "empty body: send NDJSON, one event a line");
	return col_batch_commit(c, r, &info);
}
