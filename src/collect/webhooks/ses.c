/* ses.c — Amazon SES events through SNS (HTTPS subscription).
 *
 * The body is an SNS envelope (Type Notification, SubscriptionConfirmation or
 * UnsubscribeConfirmation) whose Message is the SES event as a JSON string:
 * either the notification form (notificationType: Bounce, Complaint,
 * Delivery) or the event-publishing form (eventType: Send, Delivery, Bounce,
 * Complaint, Reject, DeliveryDelay, Open, Click, Subscription, Rendering
 * Failure). One SES event names one or more recipients: one canonical event
 * each. Mapping table: docs/providers.md#amazon-ses. */
#include "collect/webhooks/internal.h"

#include <string.h>

enum rcpt_kind {
	R_DEST,    /* mail.destination[] */
	R_STRINGS, /* <detail>.recipients[] (strings) */
	R_OBJECTS, /* <detail>.<list>[].emailAddress */
};

static const struct ses_kind {
	const char *name;
	uint8_t type;
	const char *detail; /* the object holding timestamp etc. */
	enum rcpt_kind rk;
	const char *list;
	bool repeatable; /* may happen several times per (message, recipient): time in the id */
} kinds[] = {
    {"Send", TL_EV_SENT, "send", R_DEST, NULL, false},
    {"Delivery", TL_EV_DELIVERED, "delivery", R_STRINGS, "recipients", false},
    {"Bounce", TL_EV_BOUNCED, "bounce", R_OBJECTS, "bouncedRecipients", false},
    {"Complaint", TL_EV_COMPLAINT, "complaint", R_OBJECTS, "complainedRecipients", false},
    {"Reject", TL_EV_DROPPED, "reject", R_DEST, NULL, false},
    {"DeliveryDelay", TL_EV_DEFERRED, "deliveryDelay", R_OBJECTS, "delayedRecipients", true},
    {"Open", TL_EV_OPEN, "open", R_DEST, NULL, true},
    {"Click", TL_EV_CLICK, "click", R_DEST, NULL, true},
    {"Subscription", TL_EV_UNSUBSCRIBE, "subscription", R_DEST, NULL, true},
    {"Rendering Failure", TL_EV_NONE, "failure", R_DEST, NULL, false},
};

static bool eq(struct tl_str s, const char *lit)
{
	return s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0;
}

/* Header name matches field ("tally_campaign") itself or as "X-Tally-Campaign"
 * ('_' and '-' alike, any case). */
static bool header_matches(struct tl_str name, const char *field)
{
	size_t fn = strlen(field);
	const char *p = name.p;
	size_t n = name.n;
	if (n == fn + 2 && (p[0] == 'x' || p[0] == 'X') && p[1] == '-') {
		p += 2;
		n -= 2;
	}
	if (n != fn)
		return false;
	for (size_t i = 0; i < n; i++) {
		char a = p[i], b = field[i];
		a = (char)(a >= 'A' && a <= 'Z' ? a + 32 : a == '_' ? '-' : a);
		b = (char)(b >= 'A' && b <= 'Z' ? b + 32 : b == '_' ? '-' : b);
		if (a != b)
			return false;
	}
	return true;
}

/* A mapping field from mail.tags (arrays of strings: the first), else from
 * the original headers when SES included them. */
static struct tl_str field(struct wh_ctx *c, const json_t *mail, const char *name)
{
	struct tl_str s = tl_wh_first(c, json_object_get(json_object_get(mail, "tags"), name));
	if (s.n)
		return s;
	const json_t *hs = json_object_get(mail, "headers");
	size_t i;
	const json_t *h;
	json_array_foreach(hs, i, h)
	{
		if (header_matches(tl_wh_str(h, "name"), name))
			return tl_wh_str(h, "value");
	}
	return TL_STR_NULL;
}

/* Whether topic `name` is OptOut in preferences `pref` (NULL: none given). */
static bool topic_out(const json_t *pref, struct tl_str name)
{
	size_t i;
	const json_t *t;
	json_array_foreach(json_object_get(pref, "topicSubscriptionStatus"), i, t)
	{
		struct tl_str tn = tl_wh_str(t, "topicName");
		if (tn.n == name.n && (!tn.n || memcmp(tn.p, name.p, tn.n) == 0))
			return eq(tl_wh_str(t, "subscriptionStatus"), "OptOut");
	}
	return false;
}

/* Subscription events count only when the recipient opted out by this
 * change: unsubscribeAll turned on, or a topic turned to OptOut. A topic
 * that was already out (another topic's change, a re-subscription) is not
 * a new unsubscribe; without oldTopicPreferences every OptOut counts. */
static bool opted_out(const json_t *detail)
{
	const json_t *pref = json_object_get(detail, "newTopicPreferences");
	const json_t *old = json_object_get(detail, "oldTopicPreferences");
	if (json_is_true(json_object_get(pref, "unsubscribeAll")))
		return !json_is_true(json_object_get(old, "unsubscribeAll"));
	size_t i;
	const json_t *t;
	json_array_foreach(json_object_get(pref, "topicSubscriptionStatus"), i, t)
	{
		if (eq(tl_wh_str(t, "subscriptionStatus"), "OptOut") &&
		    !topic_out(old, tl_wh_str(t, "topicName")))
			return true;
	}
	return false;
}

static int recipient_event(struct wh_ctx *c, const struct ses_kind *k, struct tl_str kname,
                           const json_t *mail, struct tl_str rcpt, struct tl_str msgid,
                           const struct wh_item *base)
{
	struct wh_item it = *base;
	it.recipient = rcpt;
	it.recipient_is_email = true;
	struct tl_str r = field(c, mail, c->recipient_field);
	if (r.n) {
		it.recipient = r;
		it.recipient_is_email = false;
	}
	it.hashed = false;
	tl_wh_item_hash(c, &it);
	/* a click's link too: a scanner clicks every link of a message in the
	 * same millisecond, and each is its own click */
	struct tl_str parts[] = {msgid, kname, tl_str_of(it.rhash, strlen(it.rhash)),
	                         k && k->repeatable ? tl_wh_int(c, it.ts_ms) : TL_STR_NULL,
	                         it.type == TL_EV_CLICK ? it.url : TL_STR_NULL};
	it.id = tl_wh_id(c, "ses", parts, sizeof parts / sizeof parts[0]);
	return tl_wh_emit(c, &it);
}

/* One SES event (the decoded Message). sns_id: the SNS MessageId, used as
 * the message id when mail.messageId is missing. */
static int ses_event(struct wh_ctx *c, const json_t *m, struct tl_str sns_id)
{
	struct tl_str kname = tl_wh_str(m, "eventType");
	if (!kname.n)
		kname = tl_wh_str(m, "notificationType");
	if (eq(kname, "AmazonSnsSubscriptionSucceeded"))
		return 0; /* SES housekeeping, not an event */
	const struct ses_kind *k = NULL;
	for (size_t i = 0; i < sizeof kinds / sizeof kinds[0] && !k; i++)
		if (eq(kname, kinds[i].name))
			k = &kinds[i];
	const json_t *mail = json_object_get(m, "mail");
	const json_t *detail = k ? json_object_get(m, k->detail) : NULL;
	struct wh_item base;
	memset(&base, 0, sizeof base);
	base.provider_event = kname;
	if (!k) {
		base.dead = kname.n ? tl_wh_reason(c, "unmapped event type", kname) : "missing eventType";
	} else {
		base.type = k->type;
		if (k->type == TL_EV_NONE)
			base.dead = "rendering failure";
	}
	struct tl_str msgid = tl_wh_str(mail, "messageId");
	if (!msgid.n)
		msgid = sns_id;
	base.message = msgid;
	if (tl_wh_ts(json_object_get(detail, "timestamp"), &base.ts_ms) &&
	    tl_wh_ts(json_object_get(mail, "timestamp"), &base.ts_ms))
		base.ts_ms = 0;
	base.campaign = field(c, mail, c->campaign_field);
	base.variant = field(c, mail, c->variant_field);
	if (base.type == TL_EV_BOUNCED) {
		struct tl_str bt = tl_wh_str(detail, "bounceType");
		struct tl_str st = tl_wh_str(detail, "bounceSubType");
		if (eq(bt, "Permanent") && (eq(st, "Suppressed") || eq(st, "OnAccountSuppressionList")))
			base.type = TL_EV_DROPPED; /* SES did not attempt it: a suppression-list drop */
		else
			base.bounce_class = eq(bt, "Permanent") ? TL_BOUNCE_HARD : TL_BOUNCE_SOFT;
	} else if (base.type == TL_EV_COMPLAINT &&
	           eq(tl_wh_str(detail, "complaintSubType"), "OnAccountSuppressionList")) {
		base.type = TL_EV_DROPPED; /* not sent: the address is on the suppression list */
	} else if (base.type == TL_EV_COMPLAINT &&
	           eq(tl_wh_str(detail, "complaintFeedbackType"), "not-spam")) {
		base.dead = "complaint with feedback type not-spam";
	} else if (base.type == TL_EV_UNSUBSCRIBE && !opted_out(detail)) {
		base.dead = "subscription change without an opt-out";
	} else if (base.type == TL_EV_OPEN || base.type == TL_EV_CLICK) {
		base.user_agent = tl_wh_agent(detail, "userAgent");
		base.ip = tl_wh_str(detail, "ipAddress");
		if (base.type == TL_EV_CLICK)
			base.url = tl_wh_str(detail, "link");
	}
	if (!msgid.n && !base.dead)
		base.dead = "missing mail.messageId";
	const json_t *list = !k                ? NULL
	                     : k->rk == R_DEST ? json_object_get(mail, "destination")
	                                       : json_object_get(detail, k->list);
	size_t n = json_array_size(list);
	if (n == 0) {
		if (!base.dead)
			base.dead = "no recipients";
		return tl_wh_emit(c, &base);
	}
	int rc = 0;
	for (size_t i = 0; i < n && !rc; i++) {
		const json_t *r = json_array_get(list, i);
		struct tl_str addr = k->rk == R_OBJECTS  ? tl_wh_str(r, "emailAddress")
		                     : json_is_string(r) ? tl_wh_jstr(r)
		                                         : TL_STR_NULL;
		rc = recipient_event(c, k, kname, mail, addr, msgid, &base);
	}
	return rc;
}

/* The TopicArn allow-list of the tenant (ses_topic_arn, comma-separated).
 * Any AWS account can have SNS sign a message, so with verification on it
 * is the allow-list that ties the endpoint to the tenant's own topics: it
 * must be set (401, as for another provider's missing credential), and it
 * is checked before the signature, so that no certificate is fetched for
 * a topic that is not the tenant's. Without verification it is optional. */
static int topic_allowed(struct wh_ctx *c, const json_t *env, bool verify)
{
	const char *allow = tl_tenant_setting(c->req->tenant, "ses_topic_arn", NULL);
	if ((!allow || !allow[0]) && verify)
		return tl_wh_fail(c, 401, -TL_EAUTH,
		                  "ses_topic_arn is not set: name the SNS topics this tenant receives from "
		                  "(or set ses_verify=false)");
	if (!allow || !allow[0])
		return 0;
	struct tl_str arn = tl_wh_str(env, "TopicArn");
	const char *p = allow;
	while (*p) {
		while (*p == ' ' || *p == ',')
			p++;
		const char *e = p;
		while (*e && *e != ',')
			e++;
		size_t n = (size_t)(e - p);
		while (n && p[n - 1] == ' ')
			n--;
		if (n && n == arn.n && memcmp(p, arn.p, n) == 0)
			return 0;
		p = e;
	}
	return tl_wh_fail(c, 403, -TL_EAUTH, "TopicArn is not in this tenant's ses_topic_arn");
}

static int envelope(struct wh_ctx *c, const json_t *env, struct tl_str type, bool verify)
{
	size_t hn;
	const char *h = tl_wh_header(c, "x-amz-sns-message-type", &hn);
	if (h && !(hn == type.n && memcmp(h, type.p, hn) == 0))
		return tl_wh_fail(c, 400, -TL_EINVAL, "x-amz-sns-message-type does not match Type");
	int rc;
	if ((rc = topic_allowed(c, env, verify)))
		return rc;
	if (verify && (rc = tl_wh_sns_verify(c, env)))
		return rc;
	if (eq(type, "SubscriptionConfirmation")) {
		struct tl_str url = tl_wh_str(env, "SubscribeURL");
		if (!tl_wh_sns_url_ok(url.p, url.n, false))
			return tl_wh_fail(c, 403, -TL_EAUTH,
			                  "SubscribeURL is not an https URL on sns.<region>.amazonaws.com");
		char *u = tl_arena_strdup(c->req->arena, url.p, url.n);
		if (!u)
			return tl_wh_fail_alloc(c);
		c->out->subscribe_url = u;
		return 0;
	}
	if (eq(type, "UnsubscribeConfirmation"))
		return 0;
	if (!eq(type, "Notification"))
		return tl_wh_fail(c, 400, -TL_EINVAL, "unknown SNS message Type");
	const json_t *msg = json_object_get(env, "Message");
	if (!json_is_string(msg))
		return tl_wh_fail(c, 400, -TL_EINVAL, "SNS Notification without a Message string");
	json_error_t je;
	json_t *m = json_loadb(json_string_value(msg), json_string_length(msg), JSON_ALLOW_NUL, &je);
	if (!m && json_error_code(&je) == json_error_numeric_overflow)
		m = json_loadb(json_string_value(msg), json_string_length(msg),
		               JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &je);
	if (!json_is_object(m)) {
		/* e.g. SES's "Successfully validated SNS topic" text: signed, so not malformed */
		json_decref(m);
		return tl_wh_dead(c, "SNS Message is not an SES event", TL_STR_NULL);
	}
	rc = ses_event(c, m, tl_wh_str(env, "MessageId"));
	json_decref(m);
	return rc;
}

int tl_wh_ses(struct wh_ctx *c)
{
	bool verify = c->verify && tl_wh_setting_bool(c->req->tenant, "ses_verify", true);
	json_t *root = tl_wh_load(c, c->req->body, c->req->len, "body");
	if (!root)
		return -TL_EINVAL;
	int rc;
	struct tl_str type = tl_wh_str(root, "Type");
	if (!json_is_object(root)) {
		rc = tl_wh_fail(c, 400, -TL_EINVAL, "body must be an SNS message (a JSON object)");
	} else if (type.n) {
		rc = envelope(c, root, type, verify);
	} else if (verify) {
		rc = tl_wh_fail(
		    c, 401, -TL_EAUTH,
		    "not an SNS envelope: raw message delivery cannot be verified (set ses_verify=false)");
	} else if (json_object_get(root, "eventType") || json_object_get(root, "notificationType")) {
		rc = ses_event(c, root, TL_STR_NULL); /* SNS raw message delivery */
	} else {
		rc = tl_wh_fail(c, 400, -TL_EINVAL, "body is neither an SNS envelope nor an SES event");
	}
	json_decref(root);
	return rc;
}
