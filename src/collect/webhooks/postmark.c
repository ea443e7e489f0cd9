/* postmark.c — Postmark webhooks: one JSON object per POST, told apart by
 * RecordType; HTTP Basic auth against the tenant's postmark_auth.
 * Mapping table: docs/providers.md#postmark. */
#include "collect/webhooks/internal.h"

#include <string.h>

/* Bounce "Type" → canonical. TL_EV_NONE = not a delivery failure (a dead
 * letter); a Type missing from this table counts as a soft bounce. */
static const struct wh_map bounce_types[] = {
    {"HardBounce", TL_EV_BOUNCED, TL_BOUNCE_HARD},
    {"BadEmailAddress", TL_EV_BOUNCED, TL_BOUNCE_HARD},
    {"SoftBounce", TL_EV_BOUNCED, TL_BOUNCE_SOFT},
    {"Transient", TL_EV_BOUNCED, TL_BOUNCE_SOFT},
    {"DnsError", TL_EV_BOUNCED, TL_BOUNCE_SOFT},
    {"Unknown", TL_EV_BOUNCED, TL_BOUNCE_SOFT},
    {"ChallengeVerification", TL_EV_BOUNCED, TL_BOUNCE_SOFT},
    {"Blocked", TL_EV_BOUNCED, TL_BOUNCE_BLOCK},
    {"DMARCPolicy", TL_EV_BOUNCED, TL_BOUNCE_BLOCK},
    {"SpamNotification", TL_EV_BOUNCED, TL_BOUNCE_BLOCK},
    {"VirusNotification", TL_EV_BOUNCED, TL_BOUNCE_BLOCK},
    {"SpamComplaint", TL_EV_COMPLAINT, 0},
    {"Unsubscribe", TL_EV_UNSUBSCRIBE, 0},
    {"ManuallyDeactivated", TL_EV_DROPPED, 0},
    {"SMTPApiError", TL_EV_DROPPED, 0},
    {"TemplateRenderingFailed", TL_EV_DROPPED, 0},
    {"Unconfirmed", TL_EV_DROPPED, 0},
    {"AutoResponder", TL_EV_NONE, 0},
    {"AddressChange", TL_EV_NONE, 0},
    {"Subscribe", TL_EV_NONE, 0},
    {"OpenRelayTest", TL_EV_NONE, 0},
    {"InboundError", TL_EV_NONE, 0},
};

static bool eq(struct tl_str s, const char *lit)
{
	return s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0;
}

/* Bounce / SpamComplaint "ID": an int64 kept exact as text. Empty when it
 * is not exact (a real: the body had an integer beyond 64 bits) or absent;
 * the caller then builds the id from the message instead. */
static struct tl_str bounce_id(struct wh_ctx *c, const json_t *o)
{
	const json_t *v = json_object_get(o, "ID");
	if (json_is_integer(v) && json_integer_value(v) >= 0)
		return tl_wh_int(c, (long long)json_integer_value(v));
	struct tl_str s = tl_wh_str(o, "ID");
	for (size_t i = 0; i < s.n; i++)
		if (s.p[i] < '0' || s.p[i] > '9')
			return TL_STR_NULL;
	return s;
}

static int parse(struct wh_ctx *c, const json_t *o)
{
	struct wh_item it;
	memset(&it, 0, sizeof it);
	struct tl_str rt = tl_wh_str(o, "RecordType");
	it.provider_event = rt;
	const char *ts_key = NULL;
	bool repeatable = false; /* several events per (message, recipient): time in the id */
	if (eq(rt, "Delivery")) {
		it.type = TL_EV_DELIVERED;
		ts_key = "DeliveredAt";
	} else if (eq(rt, "Bounce")) {
		struct tl_str bt = tl_wh_str(o, "Type");
		const struct wh_map *m =
		    tl_wh_lookup(bounce_types, sizeof bounce_types / sizeof bounce_types[0], bt);
		it.type = m ? m->type : TL_EV_BOUNCED;
		it.bounce_class = m ? m->bounce_class : TL_BOUNCE_SOFT;
		if (it.type == TL_EV_NONE)
			it.dead = tl_wh_reason(c, "bounce record that is not a delivery failure:", bt);
		ts_key = "BouncedAt";
	} else if (eq(rt, "SpamComplaint")) {
		it.type = TL_EV_COMPLAINT;
		ts_key = "BouncedAt";
	} else if (eq(rt, "Open")) {
		it.type = TL_EV_OPEN; /* every Open record counts, FirstOpen or not */
		ts_key = "ReceivedAt";
		repeatable = true;
	} else if (eq(rt, "Click")) {
		it.type = TL_EV_CLICK;
		ts_key = "ReceivedAt";
		repeatable = true;
		it.url = tl_wh_str(o, "OriginalLink");
	} else if (eq(rt, "SubscriptionChange")) {
		ts_key = "ChangedAt";
		repeatable = true;
		struct tl_str why = tl_wh_str(o, "SuppressionReason");
		if (!json_is_true(json_object_get(o, "SuppressSending")))
			it.dead = "subscription reactivated (not counted)";
		else if (why.n && !eq(why, "ManualSuppression"))
			it.dead = tl_wh_reason(c, "suppression counted by its own event:", why);
		else
			it.type = TL_EV_UNSUBSCRIBE;
	} else {
		it.dead = rt.n ? tl_wh_reason(c, "unmapped record type", rt) : "missing RecordType";
	}
	if (!ts_key || tl_wh_ts(json_object_get(o, ts_key), &it.ts_ms))
		it.ts_ms = 0;
	it.recipient = tl_wh_str(o, "Recipient");
	if (!it.recipient.n)
		it.recipient = tl_wh_str(o, "Email");
	it.recipient_is_email = true;
	it.message = tl_wh_str(o, "MessageID");
	it.campaign = tl_wh_str(o, "Tag");
	tl_wh_map_meta(c, json_object_get(o, "Metadata"), &it);
	if (it.type == TL_EV_OPEN || it.type == TL_EV_CLICK) {
		it.user_agent = tl_wh_agent(o, "UserAgent");
		it.ip = tl_wh_str(json_object_get(o, "Geo"), "IP");
	}
	struct tl_str id = (eq(rt, "Bounce") || eq(rt, "SpamComplaint")) ? bounce_id(c, o) : TL_STR_NULL;
	tl_wh_item_hash(c, &it);
	if (id.n) {
		struct tl_str parts[] = {rt, id};
		it.id = tl_wh_id(c, "pm", parts, 2);
	} else {
		struct tl_str parts[] = {
		    rt, it.message, tl_str_of(it.rhash, strlen(it.rhash)),
		    repeatable || eq(rt, "Bounce") ? tl_wh_int(c, it.ts_ms) : TL_STR_NULL, it.url};
		it.id = tl_wh_id(c, "pm", parts, sizeof parts / sizeof parts[0]);
	}
	return tl_wh_emit(c, &it);
}

int tl_wh_postmark(struct wh_ctx *c)
{
	int rc;
	if (c->verify) {
		const char *want = tl_tenant_setting(c->req->tenant, "postmark_auth", NULL);
		if (!want || !want[0])
			return tl_wh_fail(c, 401, -TL_EAUTH, "postmark_auth is not set for this tenant");
		size_t n;
		const char *h = tl_wh_header(c, "Authorization", &n);
		if ((rc = tl_wh_check_basic(c, h, n, want)))
			return rc;
	}
	json_t *root = tl_wh_load(c, c->req->body, c->req->len, "body");
	if (!root)
		return -TL_EINVAL;
	if (json_is_object(root))
		rc = parse(c, root);
	else
		rc = tl_wh_fail(c, 400, -TL_EINVAL, "body must be one JSON object");
	json_decref(root);
	return rc;
}
