/* sendgrid.c — SendGrid Event Webhook: JSON array batches, Signed Event
 * Webhook verification (ECDSA P-256 / SHA-256 over timestamp + raw body).
 * Mapping table: docs/providers.md#sendgrid. */
#include "collect/webhooks/internal.h"

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <string.h>

#define SIG_HDR "X-Twilio-Email-Event-Webhook-Signature"
#define TS_HDR "X-Twilio-Email-Event-Webhook-Timestamp"

static const struct wh_map types[] = {
    {"processed", TL_EV_SENT, 0},
    {"delivered", TL_EV_DELIVERED, 0},
    {"deferred", TL_EV_DEFERRED, 0},
    {"bounce", TL_EV_BOUNCED, TL_BOUNCE_HARD}, /* "type":"blocked" → block, below */
    {"blocked", TL_EV_BOUNCED, TL_BOUNCE_BLOCK},
    {"dropped", TL_EV_DROPPED, 0},
    {"spamreport", TL_EV_COMPLAINT, 0},
    {"unsubscribe", TL_EV_UNSUBSCRIBE, 0},
    {"group_unsubscribe", TL_EV_UNSUBSCRIBE, 0},
    {"open", TL_EV_OPEN, 0},
    {"click", TL_EV_CLICK, 0},
};

/* Decodes the configured key: base64 DER SubjectPublicKeyInfo as SendGrid
 * shows it, optionally wrapped as a PEM block, whitespace ignored. */
static EVP_PKEY *parse_key(const char *key)
{
	char b64[1024];
	size_t n = 0;
	const char *p = key;
	while (*p) {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) : strlen(p);
		if (!(len >= 5 && memcmp(p, "-----", 5) == 0)) { /* skip PEM armour lines */
			for (size_t i = 0; i < len; i++) {
				char ch = p[i];
				if (ch == ' ' || ch == '\t' || ch == '\r')
					continue;
				if (n >= sizeof b64)
					return NULL;
				b64[n++] = ch;
			}
		}
		p += len + (eol ? 1 : 0);
	}
	unsigned char der[768];
	long m = tl_wh_b64decode(b64, n, der, sizeof der);
	if (m <= 0)
		return NULL;
	const unsigned char *q = der;
	EVP_PKEY *pk = d2i_PUBKEY(NULL, &q, m);
	if (pk && (q != der + m || EVP_PKEY_base_id(pk) != EVP_PKEY_EC)) {
		EVP_PKEY_free(pk);
		return NULL;
	}
	return pk;
}

static int verify(struct wh_ctx *c)
{
	const char *key = tl_tenant_setting(c->req->tenant, "sendgrid_public_key", NULL);
	if (!key || !key[0])
		return tl_wh_fail(
		    c, 401, -TL_EAUTH,
		    "sendgrid_public_key is not set for this tenant (or set sendgrid_verify=false)");
	size_t sig_n, ts_n;
	const char *sig = tl_wh_header(c, SIG_HDR, &sig_n);
	const char *ts = tl_wh_header(c, TS_HDR, &ts_n);
	if (!sig || !sig_n || !ts || !ts_n)
		return tl_wh_fail(c, 401, -TL_EAUTH, "missing " SIG_HDR " or " TS_HDR " header");
	int64_t secs = 0;
	bool digits = ts_n <= 12;
	for (size_t i = 0; i < ts_n && digits; i++) {
		if (ts[i] < '0' || ts[i] > '9')
			digits = false;
		else
			secs = secs * 10 + (ts[i] - '0');
	}
	if (!digits)
		return tl_wh_fail(c, 403, -TL_EAUTH, "bad " TS_HDR " header");
	int64_t now = c->req->now_ms;
	if (secs * 1000 < now - TL_WH_MAX_AGE_MS || secs * 1000 > now + TL_WH_MAX_SKEW_MS)
		return tl_wh_fail(c, 403, -TL_EAUTH, "signature timestamp too old or in the future");
	unsigned char der[256];
	long der_n = sig_n <= 512 ? tl_wh_b64decode(sig, sig_n, der, sizeof der) : -1;
	if (der_n <= 0)
		return tl_wh_fail(c, 403, -TL_EAUTH, "bad signature encoding");
	EVP_PKEY *pk = parse_key(key);
	if (!pk)
		return tl_wh_fail(c, 401, -TL_EAUTH, "sendgrid_public_key is not a base64 EC public key");
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ok = md && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pk) == 1 &&
	         EVP_DigestVerifyUpdate(md, ts, ts_n) == 1 &&
	         (c->req->len == 0 || EVP_DigestVerifyUpdate(md, c->req->body, c->req->len) == 1) &&
	         EVP_DigestVerifyFinal(md, der, (size_t)der_n) == 1;
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(pk);
	return ok ? 0 : tl_wh_fail(c, 403, -TL_EAUTH, "bad signature");
}

static int one(struct wh_ctx *c, const json_t *o)
{
	if (!json_is_object(o))
		return tl_wh_dead(c, "event is not a JSON object", TL_STR_NULL);
	struct wh_item it;
	memset(&it, 0, sizeof it);
	struct tl_str name = tl_wh_str(o, "event");
	tl_wh_map_type(c, types, sizeof types / sizeof types[0], name, &it);
	if (it.type == TL_EV_BOUNCED) {
		struct tl_str bt = tl_wh_str(o, "type");
		if (bt.n == 7 && memcmp(bt.p, "blocked", 7) == 0)
			it.bounce_class = TL_BOUNCE_BLOCK;
	}
	if (it.type == TL_EV_OPEN && json_is_true(json_object_get(o, "sg_machine_open")))
		it.flags |= TL_EVF_PROVIDER_MACHINE;
	if (tl_wh_ts(json_object_get(o, "timestamp"), &it.ts_ms))
		it.ts_ms = 0;
	it.recipient = tl_wh_str(o, "email");
	it.recipient_is_email = true;
	it.message = tl_wh_str(o, "sg_message_id");
	it.campaign = tl_wh_first(c, json_object_get(o, "category"));
	if (!it.campaign.n)
		it.campaign = tl_wh_str(o, "singlesend_name");
	if (!it.campaign.n)
		it.campaign = tl_wh_str(o, "marketing_campaign_name");
	tl_wh_map_meta(c, o, &it); /* custom args are top-level keys */
	if (it.type == TL_EV_OPEN || it.type == TL_EV_CLICK) {
		it.user_agent = tl_wh_agent(o, "useragent");
		it.ip = tl_wh_str(o, "ip");
	}
	if (it.type == TL_EV_CLICK)
		it.url = tl_wh_str(o, "url");
	it.id = tl_wh_text(c, json_object_get(o, "sg_event_id"));
	if (!it.id.n) { /* deterministic, so that a retried batch dedupes */
		tl_wh_item_hash(c, &it);
		struct tl_str parts[] = {name, it.message, tl_wh_int(c, it.ts_ms),
		                         tl_str_of(it.rhash, strlen(it.rhash)), it.url};
		it.id = tl_wh_id(c, "sg", parts, sizeof parts / sizeof parts[0]);
	}
	return tl_wh_emit(c, &it);
}

int tl_wh_sendgrid(struct wh_ctx *c)
{
	int rc;
	if (c->verify && tl_wh_setting_bool(c->req->tenant, "sendgrid_verify", true) && (rc = verify(c)))
		return rc;
	json_t *root = tl_wh_load(c, c->req->body, c->req->len, "body");
	if (!root)
		return -TL_EINVAL;
	rc = 0;
	if (json_is_array(root)) {
		size_t n = json_array_size(root);
		for (size_t i = 0; i < n && !rc; i++)
			rc = one(c, json_array_get(root, i));
	} else if (json_is_object(root)) { /* a single event, as some test tools send */
		rc = one(c, root);
	} else {
		rc = tl_wh_fail(c, 400, -TL_EINVAL, "body must be a JSON array of events");
	}
	json_decref(root);
	return rc;
}
