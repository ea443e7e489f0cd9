/* mailgun.c — Mailgun webhooks (2018+ JSON form): {"signature":{timestamp,
 * token, signature}, "event-data":{…}}. The signature is
 * hex(HMAC-SHA256(signing key, timestamp + token)); timestamps more than 5
 * minutes away from now and tokens already seen are refused.
 * Mapping table: docs/providers.md#mailgun. */
#include "collect/webhooks/internal.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

static const struct wh_map types[] = {
    {"accepted", TL_EV_SENT, 0},
    {"delivered", TL_EV_DELIVERED, 0},
    {"failed", TL_EV_BOUNCED, 0}, /* by severity and reason, below */
    {"rejected", TL_EV_DROPPED, 0},
    {"opened", TL_EV_OPEN, 0},
    {"clicked", TL_EV_CLICK, 0},
    {"complained", TL_EV_COMPLAINT, 0},
    {"unsubscribed", TL_EV_UNSUBSCRIBE, 0},
};

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

static int verify(struct wh_ctx *c, const json_t *sig)
{
	const char *key = tl_tenant_setting(c->req->tenant, "mailgun_signing_key", NULL);
	if (!key || !key[0])
		return tl_wh_fail(c, 401, -TL_EAUTH, "mailgun_signing_key is not set for this tenant");
	struct tl_str ts = tl_wh_text(c, json_object_get(sig, "timestamp"));
	struct tl_str token = tl_wh_str(sig, "token");
	struct tl_str mac = tl_wh_str(sig, "signature");
	if (!ts.n || !token.n || !mac.n)
		return tl_wh_fail(c, 401, -TL_EAUTH, "missing signature.timestamp, token or signature");
	if (ts.n > 12 || token.n > 512)
		return tl_wh_fail(c, 403, -TL_EAUTH, "bad signature fields");
	int64_t secs = 0;
	for (size_t i = 0; i < ts.n; i++) {
		if (ts.p[i] < '0' || ts.p[i] > '9')
			return tl_wh_fail(c, 403, -TL_EAUTH, "bad signature.timestamp");
		secs = secs * 10 + (ts.p[i] - '0');
	}
	/* the MAC first: an unauthenticated sender learns nothing about the window */
	unsigned char want[EVP_MAX_MD_SIZE], got[32];
	unsigned int want_n = 0;
	unsigned char msg[12 + 512];
	memcpy(msg, ts.p, ts.n);
	memcpy(msg + ts.n, token.p, token.n);
	if (!HMAC(EVP_sha256(), key, (int)strlen(key), msg, ts.n + token.n, want, &want_n) || want_n != 32)
		return tl_wh_fail(c, 500, -TL_ENOMEM, "HMAC failed");
	bool ok = mac.n == 64;
	for (size_t i = 0; ok && i < 32; i++) {
		int hi = hexval(mac.p[2 * i]), lo = hexval(mac.p[2 * i + 1]);
		if (hi < 0 || lo < 0)
			ok = false;
		else
			got[i] = (unsigned char)(hi << 4 | lo);
	}
	if (!ok || CRYPTO_memcmp(want, got, 32) != 0)
		return tl_wh_fail(c, 403, -TL_EAUTH, "bad signature");
	int64_t now = c->req->now_ms, t = secs * 1000;
	if (t < now - TL_WH_MAILGUN_WINDOW_MS || t > now + TL_WH_MAILGUN_WINDOW_MS)
		return tl_wh_fail(c, 403, -TL_EAUTH, "stale signature timestamp");
	/* replay key: digest of (tenant, token); committed once the request is durable */
	const char *tn = c->req->tenant->name;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int dl = 0;
	int dok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) && EVP_DigestUpdate(md, "mailgun", 8) &&
	          EVP_DigestUpdate(md, tn, strlen(tn) + 1) && EVP_DigestUpdate(md, token.p, token.n) &&
	          EVP_DigestFinal_ex(md, c->out->replay_key, &dl);
	EVP_MD_CTX_free(md);
	if (!dok)
		return tl_wh_fail(c, 500, -TL_ENOMEM, "digest failed");
	if (tl_wh_replay_seen(c->req->replay, c->out->replay_key, now))
		return tl_wh_fail(c, 403, -TL_EAUTH, "replayed token");
	c->out->replay_expires_ms = t + TL_WH_MAILGUN_WINDOW_MS + 1000;
	return 0;
}

static void failed(struct wh_ctx *c, const json_t *ed, struct wh_item *it)
{
	struct tl_str sev = tl_wh_str(ed, "severity");
	struct tl_str reason = tl_wh_str(ed, "reason");
	if (sev.n == 9 && memcmp(sev.p, "temporary", 9) == 0) {
		it->type = TL_EV_DEFERRED; /* Mailgun retries these */
	} else if (sev.n == 9 && memcmp(sev.p, "permanent", 9) == 0) {
		if (reason.n >= 9 && memcmp(reason.p, "suppress-", 9) == 0)
			it->type = TL_EV_DROPPED; /* never attempted: on a suppression list */
		else if (reason.n == 3 && memcmp(reason.p, "old", 3) == 0)
			it->bounce_class = TL_BOUNCE_SOFT; /* gave up after retrying temporary failures */
		else if (reason.n == 8 && memcmp(reason.p, "espblock", 8) == 0)
			it->bounce_class = TL_BOUNCE_BLOCK;
		else
			it->bounce_class = TL_BOUNCE_HARD;
	} else {
		it->type = TL_EV_NONE;
		it->dead = tl_wh_reason(c, "failed event with unknown severity", sev);
	}
}

static int parse(struct wh_ctx *c, const json_t *ed)
{
	struct wh_item it;
	memset(&it, 0, sizeof it);
	tl_wh_map_type(c, types, sizeof types / sizeof types[0], tl_wh_str(ed, "event"), &it);
	if (it.type == TL_EV_BOUNCED)
		failed(c, ed, &it);
	if (tl_wh_ts(json_object_get(ed, "timestamp"), &it.ts_ms))
		it.ts_ms = 0;
	it.recipient = tl_wh_str(ed, "recipient");
	it.recipient_is_email = true;
	it.id = tl_wh_text(c, json_object_get(ed, "id"));
	const json_t *msg = json_object_get(ed, "message");
	it.message = tl_wh_str(json_object_get(msg, "headers"), "message-id");
	it.campaign = tl_wh_first(c, json_object_get(ed, "tags"));
	if (!it.campaign.n) {
		const json_t *camps = json_object_get(ed, "campaigns");
		const json_t *c0 = json_is_array(camps) ? json_array_get(camps, 0) : NULL;
		it.campaign = tl_wh_str(c0, "name");
		if (!it.campaign.n)
			it.campaign = tl_wh_text(c, json_object_get(c0, "id"));
	}
	tl_wh_map_meta(c, json_object_get(ed, "user-variables"), &it);
	if (it.type == TL_EV_OPEN || it.type == TL_EV_CLICK) {
		it.ip = tl_wh_str(ed, "ip");
		it.user_agent = tl_wh_agent(json_object_get(ed, "client-info"), "user-agent");
	}
	if (it.type == TL_EV_CLICK)
		it.url = tl_wh_str(ed, "url");
	if (!it.id.n) {
		tl_wh_item_hash(c, &it);
		struct tl_str parts[] = {it.provider_event, it.message, tl_wh_int(c, it.ts_ms),
		                         tl_str_of(it.rhash, strlen(it.rhash)), it.url};
		it.id = tl_wh_id(c, "mg", parts, sizeof parts / sizeof parts[0]);
	}
	return tl_wh_emit(c, &it);
}

int tl_wh_mailgun(struct wh_ctx *c)
{
	json_t *root = tl_wh_load(c, c->req->body, c->req->len, "body");
	if (!root)
		return -TL_EINVAL;
	const json_t *sig = json_object_get(root, "signature");
	const json_t *ed = json_object_get(root, "event-data");
	int rc = 0;
	if (!json_is_object(root) || !json_is_object(sig) || !json_is_object(ed))
		rc = tl_wh_fail(c, 400, -TL_EINVAL, "body must be {\"signature\":{…},\"event-data\":{…}}");
	if (!rc && c->verify)
		rc = verify(c, sig);
	if (!rc)
		rc = parse(c, ed);
	json_decref(root);
	return rc;
}
