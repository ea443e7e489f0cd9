/* sparkpost.c — SparkPost webhooks: arrays of {"msys":{"<class>":{…}}}
 * (the test ping is [], {} or [{"msys":{}}]); HTTP Basic auth or an
 * X-MessageSystems-Webhook-Token header against the tenant's sparkpost_auth.
 * Mapping table: docs/providers.md#sparkpost. */
#include "collect/webhooks/internal.h"

#include <string.h>

#define TOKEN_HDR "X-MessageSystems-Webhook-Token"

static const struct wh_map types[] = {
    {"injection", TL_EV_SENT, 0},
    {"delivery", TL_EV_DELIVERED, 0},
    {"bounce", TL_EV_BOUNCED, 0}, /* class from bounce_class, below */
    {"out_of_band", TL_EV_BOUNCED, 0},
    {"delay", TL_EV_DEFERRED, 0},
    {"policy_rejection", TL_EV_DROPPED, 0},
    {"generation_failure", TL_EV_DROPPED, 0},
    {"generation_rejection", TL_EV_DROPPED, 0},
    {"spam_complaint", TL_EV_COMPLAINT, 0},
    {"list_unsubscribe", TL_EV_UNSUBSCRIBE, 0},
    {"link_unsubscribe", TL_EV_UNSUBSCRIBE, 0},
    {"open", TL_EV_OPEN, 0},
    {"initial_open", TL_EV_OPEN, 0},
    {"amp_open", TL_EV_OPEN, 0},
    {"amp_initial_open", TL_EV_OPEN, 0},
    {"click", TL_EV_CLICK, 0},
    {"amp_click", TL_EV_CLICK, 0},
};

/* SparkPost bounce classification code → class. Returns -1 for code 80
 * (a subscribe request: not a delivery failure). Unknown codes are soft. */
static int classify(long code)
{
	switch (code) {
	case 10: /* invalid recipient */
	case 25: /* admin failure (policy, suppression) */
	case 26: /* smart send suppression */
	case 30: /* generic bounce: no RCPT */
	case 90: /* unsubscribe / removal request */
		return TL_BOUNCE_HARD;
	case 50: /* mail block */
	case 51: /* spam block */
	case 52: /* spam content */
	case 53: /* prohibited attachment */
	case 54: /* relaying denied */
		return TL_BOUNCE_BLOCK;
	case 80:
		return -1;
	default: /* 1 undetermined, 20–24 soft/DNS/mailbox full/too large/timeout, 40 generic,
	            60 auto-reply, 70 transient, 100 challenge-response, and anything new */
		return TL_BOUNCE_SOFT;
	}
}

static long code_of(const json_t *v)
{
	if (json_is_integer(v))
		return json_integer_value(v) >= 0 && json_integer_value(v) < 1000
		           ? (long)json_integer_value(v)
		           : -1;
	if (!json_is_string(v))
		return -1;
	const char *s = json_string_value(v);
	size_t n = json_string_length(v);
	if (n == 0 || n > 3)
		return -1;
	long code = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		code = code * 10 + (s[i] - '0');
	}
	return code;
}

static int one(struct wh_ctx *c, const json_t *o, const char *cls)
{
	if (!json_is_object(o))
		return tl_wh_dead(c,
		                  tl_wh_reason(c, "event is not a JSON object:", tl_str_of(cls, strlen(cls))),
		                  tl_str_of(cls, strlen(cls)));
	struct wh_item it;
	memset(&it, 0, sizeof it);
	struct tl_str name = tl_wh_str(o, "type");
	tl_wh_map_type(c, types, sizeof types / sizeof types[0], name, &it);
	if (it.type == TL_EV_BOUNCED) {
		long code = code_of(json_object_get(o, "bounce_class"));
		int bc = classify(code);
		if (bc < 0) {
			it.type = TL_EV_NONE;
			it.dead = "bounce_class 80 (subscribe request) is not a delivery failure";
		} else {
			it.bounce_class = (uint8_t)bc;
		}
	}
	if (tl_wh_ts(json_object_get(o, "timestamp"), &it.ts_ms))
		it.ts_ms = 0;
	it.recipient = tl_wh_str(o, "rcpt_to");
	if (!it.recipient.n)
		it.recipient = tl_wh_str(o, "raw_rcpt_to");
	it.recipient_is_email = true;
	it.message = tl_wh_str(o, "message_id");
	it.campaign = tl_wh_str(o, "campaign_id");
	tl_wh_map_meta(c, json_object_get(o, "rcpt_meta"), &it);
	if (it.type == TL_EV_OPEN || it.type == TL_EV_CLICK) {
		it.user_agent = tl_wh_agent(o, "user_agent");
		it.ip = tl_wh_str(o, "ip_address");
	}
	if (it.type == TL_EV_CLICK)
		it.url = tl_wh_str(o, "target_link_url");
	it.id = tl_wh_text(c, json_object_get(o, "event_id"));
	if (!it.id.n) {
		tl_wh_item_hash(c, &it);
		struct tl_str parts[] = {name, it.message, tl_wh_int(c, it.ts_ms),
		                         tl_str_of(it.rhash, strlen(it.rhash)), it.url};
		it.id = tl_wh_id(c, "sp", parts, sizeof parts / sizeof parts[0]);
	}
	return tl_wh_emit(c, &it);
}

/* One element of the batch: {"msys":{"message_event":{…}}}; {} and
 * {"msys":{}} are pings. */
static int element(struct wh_ctx *c, const json_t *el)
{
	if (!json_is_object(el))
		return tl_wh_dead(c, "batch element is not a JSON object", TL_STR_NULL);
	const json_t *msys = json_object_get(el, "msys");
	if (!msys)
		return json_object_size(el) == 0 ? 0
		                                 : tl_wh_dead(c, "batch element without msys", TL_STR_NULL);
	if (!json_is_object(msys))
		return tl_wh_dead(c, "msys is not a JSON object", TL_STR_NULL);
	const char *cls;
	json_t *ev;
	int rc = 0;
	json_object_foreach((json_t *)msys, cls, ev)
	{
		if ((rc = one(c, ev, cls)))
			break;
	}
	return rc;
}

static int auth(struct wh_ctx *c)
{
	const char *want = tl_tenant_setting(c->req->tenant, "sparkpost_auth", NULL);
	if (!want || !want[0])
		return tl_wh_fail(c, 401, -TL_EAUTH, "sparkpost_auth is not set for this tenant");
	size_t n;
	const char *tok = tl_wh_header(c, TOKEN_HDR, &n);
	if (tok)
		return tl_wh_secret_eq(tok, n, want, strlen(want))
		           ? 0
		           : tl_wh_fail(c, 403, -TL_EAUTH, "wrong " TOKEN_HDR);
	const char *h = tl_wh_header(c, "Authorization", &n);
	if (!h)
		return tl_wh_fail(c, 401, -TL_EAUTH, "missing Basic authorization or " TOKEN_HDR " header");
	return tl_wh_check_basic(c, h, n, want);
}

int tl_wh_sparkpost(struct wh_ctx *c)
{
	int rc;
	if (c->verify && (rc = auth(c)))
		return rc;
	json_t *root = tl_wh_load(c, c->req->body, c->req->len, "body");
	if (!root)
		return -TL_EINVAL;
	rc = 0;
	if (json_is_array(root)) {
		size_t n = json_array_size(root);
		for (size_t i = 0; i < n && !rc; i++)
			rc = element(c, json_array_get(root, i));
	} else if (json_is_object(root)) {
		rc = element(c, root);
	} else {
		rc = tl_wh_fail(c, 400, -TL_EINVAL, "body must be a JSON array of {\"msys\":{…}}");
	}
	json_decref(root);
	return rc;
}
