/* test_webhooks.c — provider webhooks: every sample of tests/samples/webhooks
 * (the providers' own payloads, see its SOURCES.md) parses to the expected
 * canonical events, and
 * the edge cases of issue 5 (missing fields, wrong types, huge numbers, bad
 * UTF-8, a 5 MB body, category arrays, multi-recipient SES notifications,
 * bad signatures per provider, replayed and stale Mailgun tokens, SNS URLs
 * off amazonaws.com, providers without a credential). */
#include "collect/webhooks/internal.h"

#include "core/clock.h"
#include "event/token.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cmocka.h>

#define NOW_MS 1767225600000LL /* 2026-01-01T00:00:00Z: a fixed clock, never the wall clock */

/* ---- fixture ------------------------------------------------------------ */

struct hdr {
	const char *name, *value;
};

struct fx {
	struct tl_tenant t;
	struct tl_arena a;
	struct hdr h[8];
	size_t nh;
	struct tl_webhook_req req;
	struct tl_webhook_out out;
	int status;
	char err[256];
};

static int cmp_setting(const void *a, const void *b)
{
	return strcmp(((const struct tl_tenant_setting *)a)->key, ((const struct tl_tenant_setting *)b)->key);
}

/* Sets the tenant's settings from key, value, …, NULL (replacing them). */
static void settings(struct fx *f, ...)
{
	free(f->t.settings);
	f->t.settings = calloc(16, sizeof *f->t.settings);
	f->t.n_settings = 0;
	va_list ap;
	va_start(ap, f);
	const char *k;
	while ((k = va_arg(ap, const char *)) != NULL) {
		const char *v = va_arg(ap, const char *);
		f->t.settings[f->t.n_settings].key = (char *)k;
		f->t.settings[f->t.n_settings].value = (char *)v;
		f->t.n_settings++;
	}
	va_end(ap);
	qsort(f->t.settings, f->t.n_settings, sizeof *f->t.settings, cmp_setting);
}

static const char *hdr_fn(void *arg, const char *name, size_t *len)
{
	struct fx *f = arg;
	for (size_t i = 0; i < f->nh; i++) {
		if (strcasecmp(f->h[i].name, name) == 0) {
			*len = strlen(f->h[i].value);
			return f->h[i].value;
		}
	}
	return NULL;
}

static void header(struct fx *f, const char *name, const char *value)
{
	f->h[f->nh++] = (struct hdr){name, value};
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	snprintf(f->t.name, sizeof f->t.name, "acme");
	for (size_t i = 0; i < sizeof f->t.salt; i++)
		f->t.salt[i] = (unsigned char)(i * 7 + 1);
	tl_arena_init(&f->a, 64 * 1024, 0);
	f->req.header = hdr_fn;
	f->req.header_arg = f;
	f->req.tenant = &f->t;
	f->req.now_ms = NOW_MS;
	f->req.arena = &f->a;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	tl_arena_free(&f->a);
	free(f->t.settings);
	free(f);
	return 0;
}

/* Every accepted event satisfies the contract of webhooks.h. */
static void check_events(struct fx *f, const char *provider)
{
	for (size_t i = 0; i < f->out.n; i++) {
		const struct tl_event *ev = &f->out.events[i];
		char err[128];
		assert_int_equal(tl_event_validate(ev, err, sizeof err), 0);
		assert_true(ev->flags & TL_EVF_HASHED);
		assert_int_equal(ev->recipient.n, TL_RCPT_HASH_LEN);
		assert_int_equal(ev->tenant.n, 4);
		assert_memory_equal(ev->tenant.p, "acme", 4);
		assert_int_equal(ev->provider.n, strlen(provider));
		assert_memory_equal(ev->provider.p, provider, ev->provider.n);
		assert_int_equal(ev->arrival_ms, f->req.now_ms);
		assert_true(ev->id.n > 0 && ev->id.n <= TL_MAX_ID);
		if (ev->type != TL_EV_BOUNCED)
			assert_int_equal(ev->bounce_class, TL_BOUNCE_NONE);
	}
	for (size_t i = 0; i < f->out.n_dead; i++) {
		const struct tl_webhook_dead *d = &f->out.dead[i];
		assert_non_null(d->reason);
		assert_true(d->reason[0]);
		assert_true(d->ev.recipient.n == 0 || d->ev.recipient.n == TL_RCPT_HASH_LEN);
		struct tl_buf b;
		tl_buf_init(&b, 0);
		assert_int_equal(tl_webhook_dead_to_json(d, &b), 0);
		json_error_t je;
		json_t *j = json_loadb(b.data, b.len, 0, &je);
		assert_non_null(j);
		assert_string_equal(json_string_value(json_object_get(j, "reason")), d->reason);
		json_decref(j);
		tl_buf_free(&b);
	}
}

static int run_opts(struct fx *f, const char *provider, const char *body, size_t len, bool verify)
{
	tl_arena_reset(&f->a);
	f->req.body = body;
	f->req.len = len;
	int rc = tl_wh_handle_opts(provider, strlen(provider), &f->req, &f->out, &f->status, f->err,
	                           sizeof f->err, verify);
	assert_int_equal(rc == 0, f->status == 200);
	if (rc) {
		assert_int_equal(f->out.n, 0);
		assert_int_equal(f->out.n_dead, 0);
		assert_null(f->out.subscribe_url);
		assert_true(f->err[0] != '\0');
	} else {
		check_events(f, provider);
	}
	return rc;
}

static int run(struct fx *f, const char *provider, const char *body)
{
	return run_opts(f, provider, body, strlen(body), true);
}

static char *sample(const char *name, size_t *len)
{
	const char *dir = getenv("TALLY_SAMPLES");
	char path[1024];
	snprintf(path, sizeof path, "%s/webhooks/%s", dir ? dir : "tests/samples", name);
	FILE *fp = fopen(path, "rb");
	if (!fp)
		fail_msg("cannot open %s", path);
	fseek(fp, 0, SEEK_END);
	long n = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	char *buf = malloc((size_t)n + 1);
	assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
	buf[n] = '\0';
	fclose(fp);
	if (len)
		*len = (size_t)n;
	return buf;
}

static void assert_str(struct tl_str s, const char *want)
{
	if (s.n != strlen(want) || memcmp(s.p, want, s.n) != 0)
		fail_msg("got \"%.*s\", want \"%s\"", (int)s.n, s.p ? s.p : "", want);
}

static void assert_rcpt(struct fx *f, struct tl_str s, const char *raw)
{
	char h[TL_RCPT_HASH_LEN + 1];
	tl_recipient_hash(f->t.salt, sizeof f->t.salt, raw, strlen(raw), h);
	assert_str(s, h);
}

static const struct tl_webhook_dead *find_dead(struct fx *f, const char *reason_prefix)
{
	for (size_t i = 0; i < f->out.n_dead; i++)
		if (strncmp(f->out.dead[i].reason, reason_prefix, strlen(reason_prefix)) == 0)
			return &f->out.dead[i];
	fail_msg("no dead letter \"%s\" among %zu", reason_prefix, f->out.n_dead);
	return NULL;
}

static int64_t iso(const char *s)
{
	int64_t ms = 0;
	assert_int_equal(tl_time_parse_iso(s, strlen(s), &ms), 0);
	return ms;
}

/* ---- common ------------------------------------------------------------- */

static void test_unknown_provider_and_tenant(void **state)
{
	struct fx *f = *state;
	assert_int_equal(run(f, "mandrill", "[]"), -TL_ENOTFOUND);
	assert_int_equal(f->status, 404);
	assert_int_equal(run(f, "SendGrid", "[]"), -TL_ENOTFOUND); /* exact lowercase names */
	f->req.tenant = NULL;
	assert_int_equal(run(f, "sendgrid", "[]"), -TL_ENOTFOUND);
	assert_int_equal(f->status, 404);
	assert_string_equal(tl_webhook_status_code(403), "forbidden");
	assert_string_equal(tl_webhook_status_code(400), "bad_request");
}

static void test_no_credential_401(void **state)
{
	struct fx *f = *state;
	settings(f, NULL);
	const char *bodies[][2] = {
	    {"sendgrid", "[]"},
	    {"ses", "{\"Type\":\"Notification\",\"Message\":\"{}\"}"},
	    {"mailgun",
	     "{\"signature\":{\"timestamp\":\"1\",\"token\":\"t\",\"signature\":\"00\"},\"event-data\":{}}"},
	    {"postmark", "{}"},
	    {"sparkpost", "[]"},
	};
	for (size_t i = 0; i < 5; i++) {
		assert_int_equal(run(f, bodies[i][0], bodies[i][1]), -TL_EAUTH);
		assert_int_equal(f->status, 401);
	}
	/* verification switched off where it can be */
	settings(f, "sendgrid_verify", "false", "ses_verify", "FALSE", NULL);
	assert_int_equal(run(f, "sendgrid", "[]"), 0);
	assert_int_equal(run(f, "ses", "{\"Type\":\"UnsubscribeConfirmation\",\"Message\":\"x\"}"), 0);
	settings(f, "sendgrid_verify", "true", NULL);
	assert_int_equal(run(f, "sendgrid", "[]"), -TL_EAUTH);
}

static void test_arena_cap_413(void **state)
{
	struct fx *f = *state;
	settings(f, "sendgrid_verify", "false", NULL);
	struct tl_arena small;
	tl_arena_init(&small, 1024, 2048);
	f->req.arena = &small;
	struct tl_buf b;
	tl_buf_init(&b, 0);
	assert_int_equal(tl_buf_putc(&b, '['), 0);
	for (int i = 0; i < 200; i++)
		assert_int_equal(
		    tl_buf_printf(
		        &b,
		        "%s{\"event\":\"delivered\",\"email\":\"a%d@x.io\",\"timestamp\":1700000000,"
		        "\"category\":\"c\",\"sg_event_id\":\"e%d\"}",
		        i ? "," : "", i, i),
		    0);
	assert_int_equal(tl_buf_putc(&b, ']'), 0);
	tl_arena_reset(&small);
	f->req.body = b.data;
	f->req.len = b.len;
	int rc = tl_webhook_handle("sendgrid", 8, &f->req, &f->out, &f->status, f->err, sizeof f->err);
	assert_int_equal(rc, -TL_ETOOBIG);
	assert_int_equal(f->status, 413);
	assert_int_equal(f->out.n, 0);
	tl_buf_free(&b);
	tl_arena_free(&small);
	f->req.arena = &f->a;
}

/* ---- SendGrid ----------------------------------------------------------- */

static void test_sendgrid_sample_batch(void **state)
{
	struct fx *f = *state;
	settings(f, "sendgrid_verify", "false", NULL);
	char *body = sample("sendgrid-event-batch.json", NULL);
	assert_int_equal(run(f, "sendgrid", body), 0);
	static const uint8_t want[] = {TL_EV_SENT,    TL_EV_DEFERRED,    TL_EV_DELIVERED,
	                               TL_EV_OPEN,    TL_EV_CLICK,       TL_EV_BOUNCED,
	                               TL_EV_DROPPED, TL_EV_UNSUBSCRIBE, TL_EV_UNSUBSCRIBE};
	assert_int_equal(f->out.n, sizeof want);
	for (size_t i = 0; i < f->out.n; i++) {
		const struct tl_event *ev = &f->out.events[i];
		assert_int_equal(ev->type, want[i]);
		assert_str(ev->campaign, "cat facts");
		assert_str(ev->id, "sg_event_id");
		assert_str(ev->message, "sg_message_id");
		assert_rcpt(f, ev->recipient, "example@test.com");
		assert_int_equal(ev->ts_ms, 1513299569000LL);
		assert_int_equal(ev->variant.n, 0);
	}
	assert_int_equal(f->out.events[5].bounce_class, TL_BOUNCE_HARD);
	assert_false(f->out.events[3].flags & TL_EVF_PROVIDER_MACHINE); /* sg_machine_open false */
	assert_str(f->out.events[3].ip, "255.255.255.255");
	assert_true(f->out.events[3].user_agent.n > 10);
	assert_str(f->out.events[4].url, "http://www.sendgrid.com/");
	assert_int_equal(f->out.events[2].ip.n, 0); /* the sending IP of a delivery is not the recipient's */
	/* spamreport has no category: not attributable; group_resubscribe is not counted */
	assert_int_equal(f->out.n_dead, 2);
	const struct tl_webhook_dead *d = find_dead(f, "no campaign");
	assert_int_equal(d->ev.type, TL_EV_COMPLAINT);
	assert_string_equal(d->provider_event, "spamreport");
	assert_rcpt(f, d->ev.recipient, "example@test.com");
	d = find_dead(f, "unmapped event type \"group_resubscribe\"");
	assert_int_equal(d->ev.type, TL_EV_NONE);
	free(body);
}

static void test_sendgrid_fields(void **state)
{
	struct fx *f = *state;
	settings(f, "sendgrid_verify", "false", NULL);
	const char *body =
	    "[{\"event\":\"bounce\",\"type\":\"blocked\",\"email\":\" Ana <A@X.io> "
	    "\",\"timestamp\":1700000000,"
	    "\"category\":[\"spring\",\"other\"],\"sg_event_id\":\"e1\"},"
	    "{\"event\":\"open\",\"sg_machine_open\":true,\"email\":\"a@x.io\",\"timestamp\":1700000001,"
	    "\"category\":\"cat\",\"tally_campaign\":\"sale\",\"tally_variant\":\"B\",\"tally_recipient\":"
	    "\"user-42\","
	    "\"sg_event_id\":\"e2\"},"
	    "{\"event\":\"delivered\",\"email\":\"a@x.io\",\"timestamp\":1700000002,\"category\":\"c\"},"
	    "\"not an object\","
	    "{\"email\":\"a@x.io\",\"timestamp\":1700000003,\"category\":\"c\",\"sg_event_id\":\"e4\"},"
	    "{\"event\":\"delivered\",\"email\":7,\"timestamp\":1700000004,\"category\":\"c\",\"sg_event_"
	    "id\":\"e5\"},"
	    "{\"event\":\"delivered\",\"email\":\"a@x.io\",\"timestamp\":\"yesterday\",\"category\":\"c\","
	    "\"sg_event_id\":\"e6\"},"
	    "{\"event\":\"delivered\",\"email\":\"a@x.io\",\"timestamp\":1e30,\"category\":\"c\",\"sg_event_"
	    "id\":\"e7\"},"
	    "{\"event\":\"deferred\",\"email\":\"a@x.io\",\"timestamp\":1700000008,\"category\":[],"
	    "\"marketing_campaign_name\":\"mc\","
	    "\"sg_event_id\":9}]";
	assert_int_equal(run(f, "sendgrid", body), 0);
	assert_int_equal(f->out.n, 4);
	const struct tl_event *ev = &f->out.events[0];
	assert_int_equal(ev->type, TL_EV_BOUNCED);
	assert_int_equal(ev->bounce_class, TL_BOUNCE_BLOCK);
	assert_str(ev->campaign, "spring");      /* category array: the first */
	assert_rcpt(f, ev->recipient, "a@x.io"); /* addresses are lowercased before hashing */
	ev = &f->out.events[1];
	assert_int_equal(ev->type, TL_EV_OPEN);
	assert_true(ev->flags & TL_EVF_PROVIDER_MACHINE);
	assert_str(ev->campaign, "sale"); /* custom args win over category */
	assert_str(ev->variant, "B");
	assert_rcpt(f, ev->recipient, "user-42");
	ev = &f->out.events[2]; /* no sg_event_id: a deterministic id */
	assert_int_equal(ev->type, TL_EV_DELIVERED);
	assert_true(ev->id.n > 3 && memcmp(ev->id.p, "sg-", 3) == 0);
	char id1[300];
	snprintf(id1, sizeof id1, "%.*s", (int)ev->id.n, ev->id.p);
	ev = &f->out.events[3];
	assert_int_equal(ev->type, TL_EV_DEFERRED);
	assert_str(ev->campaign, "mc");
	assert_str(ev->id, "9");
	assert_int_equal(f->out.n_dead, 5);
	find_dead(f, "event is not a JSON object");
	find_dead(f, "missing event type");
	find_dead(f, "no recipient");
	const struct tl_webhook_dead *d = find_dead(f, "missing or bad timestamp");
	assert_int_equal(d->ev.type, TL_EV_DELIVERED);
	/* a retry of the same batch gives the same ids */
	assert_int_equal(run(f, "sendgrid", body), 0);
	assert_string_equal(id1, tl_arena_strdup(&f->a, f->out.events[2].id.p, f->out.events[2].id.n));
}

static void test_sendgrid_limits(void **state)
{
	struct fx *f = *state;
	settings(f, "sendgrid_verify", "false", "campaign_field", "camp", NULL);
	char big[5200], camp[TL_MAX_CAMPAIGN + 2], id[300];
	memset(big, 'u', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	memset(camp, 'c', sizeof camp - 1);
	camp[sizeof camp - 1] = '\0';
	memset(id, 'i', sizeof id - 1);
	id[sizeof id - 1] = '\0';
	struct tl_buf b;
	tl_buf_init(&b, 0);
	assert_int_equal(
	    tl_buf_printf(
	        &b,
	        "[{\"event\":\"click\",\"email\":\"a@x.io\",\"timestamp\":1700000000,\"camp\":\"ok\","
	        "\"sg_event_id\":\"%s\",\"url\":\"https://x.io/%s\",\"useragent\":\"%s\","
	        "\"huge\":123456789012345678901234567890},"
	        "{\"event\":\"click\",\"email\":\"a@x.io\",\"timestamp\":1700000000,\"camp\":\"%s\","
	        "\"sg_event_id\":\"x\"},"
	        "{\"event\":\"click\",\"email\":\"a@x.io\",\"timestamp\":1700000000,\"camp\":\"%.*s\","
	        "\"sg_event_id\":\"y\"}]",
	        id, big, big, camp, TL_MAX_CAMPAIGN, camp),
	    0);
	assert_int_equal(run_opts(f, "sendgrid", b.data, b.len, true), 0);
	assert_int_equal(f->out.n, 2);
	const struct tl_event *ev = &f->out.events[0];
	assert_int_equal(ev->url.n, 0); /* over TL_MAX_URL: dropped, the click still counts */
	assert_int_equal(ev->user_agent.n, TL_MAX_USER_AGENT); /* cut */
	assert_true(ev->id.n <= TL_MAX_ID);
	assert_true(memcmp(ev->id.p, "sendgrid-h-", 11) == 0); /* too long: its hash, still deterministic */
	assert_int_equal(f->out.events[1].campaign.n, TL_MAX_CAMPAIGN);
	find_dead(f, "campaign too long");
	tl_buf_free(&b);
}

static void test_sendgrid_malformed(void **state)
{
	struct fx *f = *state;
	settings(f, "sendgrid_verify", "false", NULL);
	const char *bad[] = {"", "not json", "42", "\"str\"", "[{\"event\":\"open\"}", "null"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_int_equal(run(f, "sendgrid", bad[i]), -TL_EINVAL);
		assert_int_equal(f->status, 400);
	}
	const char utf8[] = "[{\"event\":\"delivered\",\"email\":\"a\xff\xfe@x.io\",\"timestamp\":1700000000,"
	                    "\"category\":\"c\",\"sg_event_id\":\"e\"}]";
	assert_int_equal(run(f, "sendgrid", utf8), -TL_EINVAL);
	assert_int_equal(f->status, 400);
	/* a "\u0000" rejects no batch: in a user agent (which a recipient's
	 * client chose) the text before it is kept; an address with one is no
	 * address (a dead letter), never a prefix of it */
	const char nul[] =
	    "[{\"event\":\"delivered\",\"email\":\"a\\u0000b\",\"timestamp\":1700000000,\"category\":"
	    "\"c\",\"sg_event_id\":\"n1\"},"
	    "{\"event\":\"open\",\"email\":\"a@x.io\",\"timestamp\":1700000000,\"category\":\"c\","
	    "\"useragent\":\"Mozilla\\u0000x\",\"sg_event_id\":\"n2\"}]";
	assert_int_equal(run(f, "sendgrid", nul), 0);
	assert_int_equal(f->out.n, 1);
	assert_int_equal(f->out.events[0].type, TL_EV_OPEN);
	assert_str(f->out.events[0].user_agent, "Mozilla");
	find_dead(f, "no recipient");
	/* one integer past 64 bits makes every integer a real: another event's
	 * integer campaign is still read */
	const char huge[] =
	    "[{\"event\":\"delivered\",\"email\":\"a@x.io\",\"timestamp\":1700000000,"
	    "\"tally_campaign\":7,\"sg_event_id\":\"h1\"},"
	    "{\"event\":\"delivered\",\"email\":\"b@x.io\",\"timestamp\":1700000000,\"category\":\"c\","
	    "\"other\":123456789012345678901234,\"sg_event_id\":\"h2\"}]";
	assert_int_equal(run(f, "sendgrid", huge), 0);
	assert_int_equal(f->out.n, 2);
	assert_str(f->out.events[0].campaign, "7");
	/* a NUL byte inside the body */
	const char raw_nul[] = "[{\"event\":\"open\"}]\0garbage";
	assert_int_equal(run_opts(f, "sendgrid", raw_nul, sizeof raw_nul - 1, true), -TL_EINVAL);
}

static void test_sendgrid_5mb_body(void **state)
{
	struct fx *f = *state;
	settings(f, "sendgrid_verify", "false", NULL);
	struct tl_buf b;
	tl_buf_init(&b, 0);
	assert_int_equal(tl_buf_putc(&b, '['), 0);
	size_t n = 0;
	while (b.len < 5u * 1024 * 1024) {
		assert_int_equal(
		    tl_buf_printf(&b,
		                  "%s{\"event\":\"delivered\",\"email\":\"user%zu@example.com\","
		                  "\"timestamp\":1700000000,\"category\":\"big\",\"sg_event_id\":\"ev-%zu\","
		                  "\"sg_message_id\":\"msg-%zu.filter0001p1las1-12345-5F0A1B2C-3.0\"}",
		                  n ? "," : "", n, n, n),
		    0);
		n++;
	}
	assert_int_equal(tl_buf_putc(&b, ']'), 0);
	assert_int_equal(run_opts(f, "sendgrid", b.data, b.len, true), 0);
	assert_int_equal(f->out.n, n);
	assert_int_equal(f->out.n_dead, 0);
	char want[32];
	snprintf(want, sizeof want, "ev-%zu", n - 1);
	assert_str(f->out.events[n - 1].id, want);
	tl_buf_free(&b);
}

static void test_sendgrid_signature(void **state)
{
	struct fx *f = *state;
	char *vec = sample("sendgrid-signed-webhook-test-vector.json", NULL);
	json_error_t je;
	json_t *v = json_loads(vec, 0, &je);
	assert_non_null(v);
	const char *key = json_string_value(json_object_get(v, "public_key_base64_der"));
	const char *body = json_string_value(json_object_get(v, "raw_body"));
	json_t *hs = json_object_get(v, "headers");
	const char *sig = json_string_value(json_object_get(hs, "X-Twilio-Email-Event-Webhook-Signature"));
	const char *ts = json_string_value(json_object_get(hs, "X-Twilio-Email-Event-Webhook-Timestamp"));
	json_t *neg = json_object_get(v, "negative_cases");
	f->req.now_ms = 1588788367000LL + 5000;

	settings(f, "sendgrid_public_key", key, NULL);
	header(f, "X-Twilio-Email-Event-Webhook-Signature", sig);
	header(f, "x-twilio-email-event-webhook-timestamp", ts);
	assert_int_equal(run(f, "sendgrid", body), 0);
	assert_int_equal(f->out.n, 0);                      /* "test_event" is not a delivery event … */
	find_dead(f, "unmapped event type \"test_event\""); /* … but is not lost */

	/* the same key as a PEM block */
	char pem[512];
	snprintf(pem, sizeof pem, "-----BEGIN PUBLIC KEY-----\n%.64s\n%s\n-----END PUBLIC KEY-----\n", key,
	         key + 64);
	settings(f, "sendgrid_public_key", pem, NULL);
	assert_int_equal(run(f, "sendgrid", body), 0);

	settings(f, "sendgrid_public_key", json_string_value(json_object_get(neg, "wrong_public_key")), NULL);
	assert_int_equal(run(f, "sendgrid", body), -TL_EAUTH);
	assert_int_equal(f->status, 403);

	settings(f, "sendgrid_public_key", key, NULL);
	assert_int_equal(run(f, "sendgrid", json_string_value(json_object_get(neg, "bad_payload"))),
	                 -TL_EAUTH);
	assert_int_equal(f->status, 403);
	f->h[0].value = json_string_value(json_object_get(neg, "tampered_signature"));
	assert_int_equal(run(f, "sendgrid", body), -TL_EAUTH);
	assert_int_equal(f->status, 403);
	f->h[0].value = sig;
	f->h[1].value = json_string_value(json_object_get(neg, "bad_timestamp"));
	assert_int_equal(run(f, "sendgrid", body), -TL_EAUTH);
	assert_int_equal(f->status, 403);
	f->h[1].value = ts;
	f->req.now_ms = 1588788367000LL + TL_WH_MAX_AGE_MS + 1000; /* a replay after the dedupe window */
	assert_int_equal(run(f, "sendgrid", body), -TL_EAUTH);
	assert_int_equal(f->status, 403);
	f->req.now_ms = 1588788367000LL;
	f->nh = 0;
	assert_int_equal(run(f, "sendgrid", body), -TL_EAUTH);
	assert_int_equal(f->status, 401);
	settings(f, "sendgrid_public_key", "not base64 !!", NULL);
	header(f, "X-Twilio-Email-Event-Webhook-Signature", sig);
	header(f, "X-Twilio-Email-Event-Webhook-Timestamp", ts);
	assert_int_equal(run(f, "sendgrid", body), -TL_EAUTH);
	assert_int_equal(f->status, 401);
	json_decref(v);
	free(vec);
}

/* ---- Mailgun ------------------------------------------------------------ */

#define MG_KEY "TEST_WEBHOOK_SIGNING_KEY"

/* Builds a signed Mailgun body around event-data JSON text. */
static char *mg_body(const char *ts, const char *token, const char *event_data)
{
	unsigned char mac[32];
	unsigned int n = 0;
	char msg[256];
	snprintf(msg, sizeof msg, "%s%s", ts, token);
	HMAC(EVP_sha256(), MG_KEY, (int)strlen(MG_KEY), (const unsigned char *)msg, strlen(msg), mac, &n);
	char hex[65];
	tl_hex_encode(mac, 32, hex);
	size_t cap = strlen(event_data) + 512;
	char *b = malloc(cap);
	snprintf(
	    b, cap,
	    "{\"signature\":{\"timestamp\":\"%s\",\"token\":\"%s\",\"signature\":\"%s\"},\"event-data\":%s}",
	    ts, token, hex, event_data);
	return b;
}

static void test_mailgun_samples(void **state)
{
	struct fx *f = *state;
	settings(f, "mailgun_signing_key", MG_KEY, NULL);
	char *body = sample("mailgun-opened.json", NULL);
	f->req.now_ms = 1534109600000LL + 2000;
	assert_int_equal(run(f, "mailgun", body), 0);
	assert_int_equal(f->out.n, 1);
	const struct tl_event *ev = &f->out.events[0];
	assert_int_equal(ev->type, TL_EV_OPEN);
	assert_str(ev->campaign, "welcome"); /* tags[0] */
	assert_rcpt(f, ev->recipient, "recipient@example.com");
	assert_int_equal(ev->ts_ms, 1534109600090LL);
	assert_str(ev->ip, "888.222.444.111");
	assert_str(ev->user_agent, "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_13_6)...");
	assert_str(ev->message, "20180812213139.1.BC6694A917BB7E6A@example.org");
	assert_true(memcmp(ev->id.p, "mg-", 3) == 0); /* this sample has no id: a deterministic one */
	/* the tenant's campaign field from user-variables */
	settings(f, "mailgun_signing_key", MG_KEY, "campaign_field", "cohort", NULL);
	assert_int_equal(run(f, "mailgun", body), 0);
	assert_str(f->out.events[0].campaign, "2018-08-B");
	free(body);

	settings(f, "mailgun_signing_key", MG_KEY, NULL);
	body = sample("mailgun-delivered.json", NULL);
	f->req.now_ms = 1534108637000LL;
	assert_int_equal(run(f, "mailgun", body), 0);
	assert_int_equal(f->out.n, 0);
	const struct tl_webhook_dead *d = find_dead(f, "no campaign"); /* empty tags, campaigns, variables */
	assert_int_equal(d->ev.type, TL_EV_DELIVERED);
	assert_str(d->ev.id, "hTWCTD81RtiDN-...");
	assert_rcpt(f, d->ev.recipient, "recipient@example.com");
	free(body);

	body = sample("mailgun-failed-permanent.json", NULL);
	f->req.now_ms = 1534110422000LL;
	assert_int_equal(run(f, "mailgun", body), 0);
	d = find_dead(f, "no campaign");
	assert_int_equal(d->ev.type, TL_EV_BOUNCED);
	assert_int_equal(d->ev.bounce_class, TL_BOUNCE_HARD);
	free(body);
}

static void test_mailgun_mapping(void **state)
{
	struct fx *f = *state;
	settings(f, "mailgun_signing_key", MG_KEY, NULL);
	f->req.now_ms = 1700000000000LL;
	static const struct {
		const char *ed;
		uint8_t type, bc;
	} cases[] = {
	    {"{\"event\":\"failed\",\"severity\":\"temporary\",\"reason\":\"generic\"", TL_EV_DEFERRED, 0},
	    {"{\"event\":\"failed\",\"severity\":\"permanent\",\"reason\":\"bounce\"", TL_EV_BOUNCED,
	     TL_BOUNCE_HARD},
	    {"{\"event\":\"failed\",\"severity\":\"permanent\",\"reason\":\"old\"", TL_EV_BOUNCED,
	     TL_BOUNCE_SOFT},
	    {"{\"event\":\"failed\",\"severity\":\"permanent\",\"reason\":\"suppress-bounce\"", TL_EV_DROPPED,
	     0},
	    {"{\"event\":\"accepted\"", TL_EV_SENT, 0},
	    {"{\"event\":\"clicked\",\"url\":\"https://shop.example/x\"", TL_EV_CLICK, 0},
	    {"{\"event\":\"complained\"", TL_EV_COMPLAINT, 0},
	    {"{\"event\":\"unsubscribed\"", TL_EV_UNSUBSCRIBE, 0},
	    {"{\"event\":\"rejected\"", TL_EV_DROPPED, 0},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char ed[512], tok[32];
		snprintf(ed, sizeof ed,
		         "%s,\"id\":\"id-%zu\",\"timestamp\":1700000000.25,\"recipient\":\"r@x.io\","
		         "\"campaigns\":[{\"id\":\"c1\",\"name\":\"Camp "
		         "One\"}],\"user-variables\":{\"tally_variant\":\"A\"}}",
		         cases[i].ed, i);
		snprintf(tok, sizeof tok, "tok%zu", i);
		char *body = mg_body("1700000000", tok, ed);
		assert_int_equal(run(f, "mailgun", body), 0);
		assert_int_equal(f->out.n, 1);
		const struct tl_event *ev = &f->out.events[0];
		assert_int_equal(ev->type, cases[i].type);
		assert_int_equal(ev->bounce_class, cases[i].bc);
		assert_str(ev->campaign, "Camp One"); /* campaigns[0].name */
		assert_str(ev->variant, "A");
		assert_int_equal(ev->ts_ms, 1700000000250LL);
		if (ev->type == TL_EV_CLICK)
			assert_str(ev->url, "https://shop.example/x");
		free(body);
	}
	char *body =
	    mg_body("1700000000", "tokx", "{\"event\":\"stored\",\"id\":\"s\",\"recipient\":\"r@x.io\"}");
	assert_int_equal(run(f, "mailgun", body), 0);
	find_dead(f, "unmapped event type \"stored\"");
	free(body);
	body = mg_body("1700000000", "toky", "{\"event\":\"failed\",\"id\":\"s\",\"recipient\":\"r@x.io\"}");
	assert_int_equal(run(f, "mailgun", body), 0);
	find_dead(f, "failed event with unknown severity");
	free(body);
}

static void test_mailgun_signature_replay_stale(void **state)
{
	struct fx *f = *state;
	struct tl_webhook_replay *rp;
	assert_int_equal(tl_webhook_replay_create(4, &rp), 0);
	f->req.replay = rp;
	settings(f, "mailgun_signing_key", MG_KEY, NULL);
	const char *ed =
	    "{\"event\":\"delivered\",\"id\":\"d1\",\"timestamp\":1700000000,\"recipient\":\"r@x.io\","
	    "\"tags\":[\"t\"]}";
	char *body = mg_body("1700000000", "token-1", ed);
	f->req.now_ms = 1700000000000LL + 60 * 1000;

	assert_int_equal(run(f, "mailgun", body), 0);
	/* not committed (say the append failed): the provider's retry must pass */
	assert_int_equal(run(f, "mailgun", body), 0);
	tl_webhook_replay_commit(rp, &f->out, f->req.now_ms);
	assert_int_equal(tl_webhook_replay_size(rp), 1);
	assert_int_equal(run(f, "mailgun", body), -TL_EAUTH);
	assert_int_equal(f->status, 403);
	assert_non_null(strstr(f->err, "replayed"));
	/* another tenant with the same token is not a replay */
	snprintf(f->t.name, sizeof f->t.name, "other");
	f->req.now_ms += 1;
	tl_arena_reset(&f->a);
	f->req.body = body;
	f->req.len = strlen(body);
	assert_int_equal(tl_webhook_handle("mailgun", 7, &f->req, &f->out, &f->status, f->err, sizeof f->err),
	                 0);
	snprintf(f->t.name, sizeof f->t.name, "acme");

	/* stale and future timestamps (signature valid) */
	f->req.now_ms = 1700000000000LL + 5 * 60 * 1000 + 1000;
	char *b2 = mg_body("1700000000", "token-2", ed);
	assert_int_equal(run(f, "mailgun", b2), -TL_EAUTH);
	assert_int_equal(f->status, 403);
	assert_non_null(strstr(f->err, "stale"));
	f->req.now_ms = 1700000000000LL - 5 * 60 * 1000 - 1000;
	assert_int_equal(run(f, "mailgun", b2), -TL_EAUTH);
	f->req.now_ms = 1700000000000LL;
	assert_int_equal(run(f, "mailgun", b2), 0);

	/* after its window a token is forgotten; the ring evicts the oldest when full */
	for (int i = 0; i < 6; i++) {
		char tok[16];
		snprintf(tok, sizeof tok, "t%d", i);
		char *b = mg_body("1700000000", tok, ed);
		assert_int_equal(run(f, "mailgun", b), 0);
		tl_webhook_replay_commit(rp, &f->out, f->req.now_ms);
		free(b);
	}
	assert_int_equal(tl_webhook_replay_size(rp), 4);
	assert_true(tl_webhook_replay_evicted(rp) >= 2);

	/* a bad signature */
	char *b3 = strdup(b2);
	char *s = strstr(b3, "\"signature\":\"") + 13;
	s[0] = s[0] == 'a' ? 'b' : 'a';
	assert_int_equal(run(f, "mailgun", b3), -TL_EAUTH);
	assert_int_equal(f->status, 403);
	/* wrong key */
	settings(f, "mailgun_signing_key", "another-key", NULL);
	assert_int_equal(run(f, "mailgun", b2), -TL_EAUTH);
	assert_int_equal(f->status, 403);
	/* malformed envelope */
	settings(f, "mailgun_signing_key", MG_KEY, NULL);
	assert_int_equal(run(f, "mailgun", "{\"event-data\":{}}"), -TL_EINVAL);
	assert_int_equal(f->status, 400);
	assert_int_equal(run(f, "mailgun", "token=x&signature=y"), -TL_EINVAL); /* legacy form posts */
	assert_int_equal(run(f, "mailgun", "{\"signature\":{},\"event-data\":{}}"), -TL_EAUTH);
	assert_int_equal(f->status, 401);
	free(b3);
	free(b2);
	free(body);
	tl_webhook_replay_destroy(rp);
	f->req.replay = NULL;
}

/* ---- Postmark ----------------------------------------------------------- */

static void postmark_auth(struct fx *f)
{
	settings(f, "postmark_auth", "user:pass", NULL);
	f->nh = 0;
	header(f, "Authorization", "Basic dXNlcjpwYXNz"); /* user:pass */
}

static void test_postmark_samples(void **state)
{
	struct fx *f = *state;
	postmark_auth(f);
	char *body = sample("postmark-delivery.json", NULL);
	assert_int_equal(run(f, "postmark", body), 0);
	assert_int_equal(f->out.n, 1);
	const struct tl_event *ev = &f->out.events[0];
	assert_int_equal(ev->type, TL_EV_DELIVERED);
	assert_str(ev->campaign, "welcome-email");
	assert_rcpt(f, ev->recipient, "john@example.com");
	assert_int_equal(ev->ts_ms, iso("2019-11-05T16:33:54.907Z")); /* 7 fractional digits */
	assert_str(ev->message, "883953f4-6105-42a2-a16a-77a8eac79483");
	char rh[TL_RCPT_HASH_LEN + 1], want[256];
	tl_recipient_hash(f->t.salt, sizeof f->t.salt, "john@example.com", 16, rh);
	snprintf(want, sizeof want, "pm-Delivery-883953f4-6105-42a2-a16a-77a8eac79483-%s", rh);
	assert_str(ev->id, want);
	free(body);

	body = sample("postmark-bounce.json", NULL);
	assert_int_equal(run(f, "postmark", body), 0);
	assert_int_equal(f->out.n, 1);
	ev = &f->out.events[0];
	assert_int_equal(ev->type, TL_EV_BOUNCED);
	assert_int_equal(ev->bounce_class, TL_BOUNCE_HARD);
	assert_str(ev->id, "pm-Bounce-4323372036854775807"); /* beyond 2^53, kept exact */
	assert_str(ev->campaign, "Test");
	assert_rcpt(f, ev->recipient, "john@example.com"); /* "Email" */
	free(body);

	body = sample("postmark-open.json", NULL);
	assert_int_equal(run(f, "postmark", body), 0);
	assert_int_equal(f->out.n, 1);
	ev = &f->out.events[0];
	assert_int_equal(ev->type, TL_EV_OPEN);
	assert_str(ev->ip, "188.2.95.4");
	assert_str(ev->user_agent, "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_7_5) AppleWebKit/537.36");
	free(body);
}

static void test_postmark_mapping(void **state)
{
	struct fx *f = *state;
	postmark_auth(f);
	static const struct {
		const char *type;
		uint8_t ev, bc;
	} bounces[] = {
	    {"HardBounce", TL_EV_BOUNCED, TL_BOUNCE_HARD},
	    {"SoftBounce", TL_EV_BOUNCED, TL_BOUNCE_SOFT},
	    {"Transient", TL_EV_BOUNCED, TL_BOUNCE_SOFT},
	    {"Blocked", TL_EV_BOUNCED, TL_BOUNCE_BLOCK},
	    {"SpamNotification", TL_EV_BOUNCED, TL_BOUNCE_BLOCK},
	    {"SpamComplaint", TL_EV_COMPLAINT, 0},
	    {"ManuallyDeactivated", TL_EV_DROPPED, 0},
	    {"SomethingNew", TL_EV_BOUNCED, TL_BOUNCE_SOFT},
	};
	for (size_t i = 0; i < sizeof bounces / sizeof bounces[0]; i++) {
		char body[512];
		snprintf(body, sizeof body,
		         "{\"RecordType\":\"Bounce\",\"ID\":%zu,\"Type\":\"%s\",\"Email\":\"j@x.io\",\"Tag\":"
		         "\"t\","
		         "\"MessageID\":\"m\",\"BouncedAt\":\"2019-11-05T11:33:54.9070259-05:00\","
		         "\"Metadata\":{\"tally_campaign\":\"meta\"}}",
		         i + 1, bounces[i].type);
		assert_int_equal(run(f, "postmark", body), 0);
		assert_int_equal(f->out.n, 1);
		assert_int_equal(f->out.events[0].type, bounces[i].ev);
		assert_int_equal(f->out.events[0].bounce_class, bounces[i].bc);
		assert_str(f->out.events[0].campaign, "meta"); /* Metadata wins over Tag */
		assert_int_equal(f->out.events[0].ts_ms,
		                 iso("2019-11-05T16:33:54.907Z")); /* offset applied */
	}
	assert_int_equal(
	    run(f, "postmark",
	        "{\"RecordType\":\"Bounce\",\"ID\":1,\"Type\":\"AutoResponder\",\"Email\":\"j@x.io\","
	        "\"Tag\":\"t\",\"BouncedAt\":\"2019-11-05T16:33:54Z\"}"),
	    0);
	assert_int_equal(f->out.n, 0);
	find_dead(f, "bounce record that is not a delivery failure");

	/* an ID beyond 64 bits: still parsed, the id falls back to message + recipient + time */
	assert_int_equal(
	    run(f, "postmark",
	        "{\"RecordType\":\"Bounce\",\"ID\":98765432109876543210987,\"Type\":\"HardBounce\","
	        "\"Email\":\"j@x.io\",\"Tag\":\"t\",\"MessageID\":\"m-1\",\"BouncedAt\":\"2019-11-05T16:33:"
	        "54Z\"}"),
	    0);
	assert_int_equal(f->out.n, 1);
	assert_true(strncmp(f->out.events[0].id.p, "pm-Bounce-m-1-", 14) == 0);

	/* SubscriptionChange: only a manual suppression is an unsubscribe */
#define sc                                                                                                   \
	"{\"RecordType\":\"SubscriptionChange\",\"MessageID\":\"m\",\"Recipient\":\"j@x.io\",\"Tag\":\"t\"," \
	"\"ChangedAt\":\"2020-01-01T00:00:00Z\",\"SuppressSending\":%s%s}"
	char body[512];
	snprintf(body, sizeof body, sc, "true", ",\"SuppressionReason\":\"ManualSuppression\"");
	assert_int_equal(run(f, "postmark", body), 0);
	assert_int_equal(f->out.n, 1);
	assert_int_equal(f->out.events[0].type, TL_EV_UNSUBSCRIBE);
	snprintf(body, sizeof body, sc, "true", ",\"SuppressionReason\":\"HardBounce\"");
	assert_int_equal(run(f, "postmark", body), 0);
	assert_int_equal(f->out.n, 0);
	find_dead(f, "suppression counted by its own event");
	snprintf(body, sizeof body, sc, "false", "");
	assert_int_equal(run(f, "postmark", body), 0);
	find_dead(f, "subscription reactivated");

	/* every Open record counts; two opens of one message have distinct ids */
#define op                                                                                                   \
	"{\"RecordType\":\"Open\",\"FirstOpen\":%s,\"MessageID\":\"m\",\"Recipient\":\"j@x.io\",\"Tag\":"    \
	"\"t\","                                                                                             \
	"\"ReceivedAt\":\"%s\"}"
	snprintf(body, sizeof body, op, "true", "2020-01-01T00:00:00Z");
	assert_int_equal(run(f, "postmark", body), 0);
	char id1[256];
	snprintf(id1, sizeof id1, "%.*s", (int)f->out.events[0].id.n, f->out.events[0].id.p);
	snprintf(body, sizeof body, op, "false", "2020-01-01T00:05:00Z");
	assert_int_equal(run(f, "postmark", body), 0);
	assert_int_equal(f->out.n, 1);
	assert_false(f->out.events[0].id.n == strlen(id1) &&
	             memcmp(f->out.events[0].id.p, id1, strlen(id1)) == 0);

	assert_int_equal(
	    run(f, "postmark",
	        "{\"RecordType\":\"Click\",\"MessageID\":\"m\",\"Recipient\":\"j@x.io\",\"Tag\":\"t\","
	        "\"ReceivedAt\":\"2020-01-01T00:00:00Z\",\"OriginalLink\":\"https://x.io/a\"}"),
	    0);
	assert_int_equal(f->out.events[0].type, TL_EV_CLICK);
	assert_str(f->out.events[0].url, "https://x.io/a");

	assert_int_equal(run(f, "postmark", "{\"RecordType\":\"Inbound\"}"), 0);
	find_dead(f, "unmapped record type");
	assert_int_equal(run(f, "postmark", "{\"RecordType\":5}"), 0);
	find_dead(f, "missing RecordType");
	assert_int_equal(run(f, "postmark", "[{\"RecordType\":\"Delivery\"}]"), -TL_EINVAL);
	assert_int_equal(f->status, 400);
}

static void test_postmark_auth(void **state)
{
	struct fx *f = *state;
	const char *body = "{\"RecordType\":\"Delivery\"}";
	postmark_auth(f);
	f->h[0].value = "Basic dXNlcjp3cm9uZw=="; /* user:wrong */
	assert_int_equal(run(f, "postmark", body), -TL_EAUTH);
	assert_int_equal(f->status, 403);
	f->h[0].value = "Bearer dXNlcjpwYXNz";
	assert_int_equal(run(f, "postmark", body), -TL_EAUTH);
	assert_int_equal(f->status, 401);
	f->h[0].value = "Basic %%%";
	assert_int_equal(run(f, "postmark", body), -TL_EAUTH);
	assert_int_equal(f->status, 401);
	f->h[0].value = "basic   dXNlcjpwYXNz  "; /* scheme in any case, spaces around */
	assert_int_equal(run(f, "postmark", body), 0);
	f->nh = 0;
	assert_int_equal(run(f, "postmark", body), -TL_EAUTH);
	assert_int_equal(f->status, 401);
}

/* ---- SparkPost ---------------------------------------------------------- */

static void test_sparkpost_sample_and_auth(void **state)
{
	struct fx *f = *state;
	settings(f, "sparkpost_auth", "hook:s3cret", NULL);
	header(f, "X-MessageSystems-Webhook-Token", "hook:s3cret");
	char *body = sample("sparkpost-bounce-batch.json", NULL);
	assert_int_equal(run(f, "sparkpost", body), 0);
	assert_int_equal(f->out.n, 1);
	const struct tl_event *ev = &f->out.events[0];
	assert_int_equal(ev->type, TL_EV_BOUNCED);
	assert_int_equal(ev->bounce_class, TL_BOUNCE_SOFT); /* class 1: undetermined */
	assert_str(ev->campaign, "Example Campaign Name");
	assert_str(ev->id, "92356927693813856");
	assert_str(ev->message, "000443ee14578172be22");
	assert_int_equal(ev->ts_ms, 1454442600000LL);
	assert_rcpt(f, ev->recipient, "recipient@example.com");
	assert_int_equal(ev->ip.n, 0);

	f->h[0].value = "hook:wrong";
	assert_int_equal(run(f, "sparkpost", body), -TL_EAUTH);
	assert_int_equal(f->status, 403);
	f->nh = 0;
	assert_int_equal(run(f, "sparkpost", body), -TL_EAUTH);
	assert_int_equal(f->status, 401);
	header(f, "Authorization", "Basic aG9vazpzM2NyZXQ="); /* hook:s3cret */
	assert_int_equal(run(f, "sparkpost", body), 0);
	assert_int_equal(f->out.n, 1);
	free(body);
}

static void test_sparkpost_mapping(void **state)
{
	struct fx *f = *state;
	settings(f, "sparkpost_auth", "t", NULL);
	header(f, "X-MessageSystems-Webhook-Token", "t");
	const char *pings[] = {"[]", "{}", "[{\"msys\":{}}]", "[{}]"};
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(run(f, "sparkpost", pings[i]), 0);
		assert_int_equal(f->out.n + f->out.n_dead, 0);
	}
	const char *body =
	    "[{\"msys\":{\"message_event\":{\"type\":\"bounce\",\"bounce_class\":10,\"event_id\":\"1\","
	    "\"timestamp\":\"1454442600\",\"rcpt_to\":\"a@x.io\",\"campaign_id\":\"c\"}}},"
	    "{\"msys\":{\"message_event\":{\"type\":\"out_of_band\",\"bounce_class\":\"51\",\"event_id\":"
	    "\"2\","
	    "\"timestamp\":1454442600,\"rcpt_to\":\"a@x.io\",\"campaign_id\":\"c\"}}},"
	    "{\"msys\":{\"message_event\":{\"type\":\"bounce\",\"bounce_class\":\"80\",\"event_id\":\"3\","
	    "\"timestamp\":\"1454442600\",\"rcpt_to\":\"a@x.io\",\"campaign_id\":\"c\"}}},"
	    "{\"msys\":{\"track_event\":{\"type\":\"click\",\"event_id\":\"4\",\"timestamp\":\"1454442600\","
	    "\"rcpt_to\":\"a@x.io\",\"campaign_id\":\"c\",\"target_link_url\":\"https://x.io/\","
	    "\"ip_address\":\"203.0.113.7\",\"user_agent\":\"UA\","
	    "\"rcpt_meta\":{\"tally_campaign\":\"meta\",\"tally_variant\":\"B\"}}}},"
	    "{\"msys\":{\"track_event\":{\"type\":\"amp_initial_open\",\"event_id\":\"5\",\"timestamp\":"
	    "\"1454442600\","
	    "\"rcpt_to\":\"a@x.io\",\"campaign_id\":\"c\"}}},"
	    "{\"msys\":{\"gen_event\":{\"type\":\"generation_failure\",\"event_id\":\"6\",\"timestamp\":"
	    "\"1454442600\","
	    "\"rcpt_to\":\"a@x.io\",\"campaign_id\":\"c\"}}},"
	    "{\"msys\":{\"unsubscribe_event\":{\"type\":\"list_unsubscribe\",\"event_id\":\"7\","
	    "\"timestamp\":\"1454442600\",\"rcpt_to\":\"a@x.io\",\"campaign_id\":\"c\"}}},"
	    "{\"msys\":{\"relay_event\":{\"type\":\"relay_injection\",\"event_id\":\"8\"}}},"
	    "{\"msys\":{\"message_event\":{\"type\":\"delay\",\"event_id\":\"9\",\"timestamp\":"
	    "\"1454442600\","
	    "\"rcpt_to\":\"a@x.io\"}}},"
	    "{\"msys\":[]}, 5]";
	assert_int_equal(run(f, "sparkpost", body), 0);
	static const struct {
		uint8_t type, bc;
	} want[] = {{TL_EV_BOUNCED, TL_BOUNCE_HARD},
	            {TL_EV_BOUNCED, TL_BOUNCE_BLOCK},
	            {TL_EV_CLICK, 0},
	            {TL_EV_OPEN, 0},
	            {TL_EV_DROPPED, 0},
	            {TL_EV_UNSUBSCRIBE, 0}};
	assert_int_equal(f->out.n, 6);
	for (size_t i = 0; i < 6; i++) {
		assert_int_equal(f->out.events[i].type, want[i].type);
		assert_int_equal(f->out.events[i].bounce_class, want[i].bc);
	}
	assert_str(f->out.events[2].campaign, "meta");
	assert_str(f->out.events[2].variant, "B");
	assert_str(f->out.events[2].url, "https://x.io/");
	assert_str(f->out.events[2].ip, "203.0.113.7");
	assert_int_equal(f->out.n_dead, 5);
	find_dead(f, "bounce_class 80");
	find_dead(f, "unmapped event type \"relay_injection\"");
	find_dead(f, "no campaign"); /* the delay without campaign_id */
	find_dead(f, "msys is not a JSON object");
	find_dead(f, "batch element is not a JSON object");
	assert_int_equal(run(f, "sparkpost", "\"x\""), -TL_EINVAL);
}

/* ---- Amazon SES --------------------------------------------------------- */

/* Wraps an SES message (JSON text) into an unsigned SNS Notification. */
static char *sns_wrap(const char *type, const char *message, const char *extra_key, const char *extra_val)
{
	json_t *env = json_pack("{s:s, s:s, s:s, s:s, s:s}", "Type", type, "MessageId", "sns-msg-1",
	                        "TopicArn", "arn:aws:sns:us-east-1:123456789012:ses", "Message", message,
	                        "Timestamp", "2025-12-31T23:59:59.000Z");
	if (extra_key)
		json_object_set_new(env, extra_key, json_string(extra_val));
	char *s = json_dumps(env, JSON_COMPACT);
	json_decref(env);
	return s;
}

static void test_ses_envelope_sample(void **state)
{
	struct fx *f = *state;
	/* the anymail envelope: its campaign is in the X-Tag header of the original mail */
	settings(f, "ses_verify", "false", "campaign_field", "tag", NULL);
	char *body = sample("ses-bounce-sns-http-envelope.json", NULL);
	header(f, "x-amz-sns-message-type", "Notification");
	assert_int_equal(run(f, "ses", body), 0);
	assert_int_equal(f->out.n, 1); /* one bounced recipient of three */
	const struct tl_event *ev = &f->out.events[0];
	assert_int_equal(ev->type, TL_EV_BOUNCED);
	assert_int_equal(ev->bounce_class, TL_BOUNCE_HARD);
	assert_str(ev->campaign, "tag 1");
	assert_rcpt(f, ev->recipient, "jane@example.com");
	assert_int_equal(ev->ts_ms, iso("2016-01-27T14:59:44.101Z"));
	assert_str(ev->message, "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000");
	char rh[TL_RCPT_HASH_LEN + 1], want[256];
	tl_recipient_hash(f->t.salt, sizeof f->t.salt, "jane@example.com", 16, rh);
	snprintf(want, sizeof want,
	         "ses-00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000-Bounce-%s", rh);
	assert_str(ev->id, want);
	/* a header naming another Type is refused */
	f->h[0].value = "SubscriptionConfirmation";
	assert_int_equal(run(f, "ses", body), -TL_EINVAL);
	f->nh = 0;
	/* ses_verify on (the default) and no topic allow-list: refused as having
	 * no credential, nothing emitted */
	settings(f, "campaign_field", "tag", NULL);
	assert_int_equal(run(f, "ses", body), -TL_EAUTH);
	assert_int_equal(f->status, 401);
	/* with the sample's topic allowed: its fake signature is refused */
	settings(f, "campaign_field", "tag", "ses_topic_arn", "arn:aws:sns:us-east-1:1234567890:SES_Events",
	         NULL);
	assert_int_equal(run(f, "ses", body), -TL_EAUTH);
	assert_int_equal(f->status, 403); /* signed by SNS, but its Timestamp is years old */
	free(body);
}

static void test_ses_samples(void **state)
{
	struct fx *f = *state;
	static const struct {
		const char *file, *field, *campaign, *rcpt, *ts;
		uint8_t type, bc;
	} cases[] = {
	    {"ses-bounce-sns.json", "Subject", "Hello", "jane@example.com", "2016-01-27T14:59:38.237Z",
	     TL_EV_BOUNCED, TL_BOUNCE_HARD},
	    {"ses-delivery-sns.json", "Subject", "Hello", "jane@example.com", "2016-01-27T14:59:38.237Z",
	     TL_EV_DELIVERED, 0},
	    {"ses-event-bounce.json", "ses:configuration-set", "ConfigSet", "recipient@example.com",
	     "2017-08-05T00:41:02.669Z", TL_EV_BOUNCED, TL_BOUNCE_HARD},
	    {"ses-event-delivery.json", "myCustomTag1", "myCustomTagValue1", "recipient@example.com",
	     "2016-10-19T23:21:04.133Z", TL_EV_DELIVERED, 0},
	    {"ses-event-open.json", "myCustomTag2", "myCustomValue2", "recipient@example.com",
	     "2017-08-09T22:00:19.652Z", TL_EV_OPEN, 0},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		settings(f, "ses_verify", "false", "campaign_field", cases[i].field, NULL);
		char *msg = sample(cases[i].file, NULL);
		for (int raw = 0; raw < 2; raw++) { /* in an SNS envelope, and as SNS raw message delivery */
			char *body = raw ? strdup(msg) : sns_wrap("Notification", msg, NULL, NULL);
			assert_int_equal(run(f, "ses", body), 0);
			assert_int_equal(f->out.n, 1);
			const struct tl_event *ev = &f->out.events[0];
			assert_int_equal(ev->type, cases[i].type);
			assert_int_equal(ev->bounce_class, cases[i].bc);
			assert_str(ev->campaign, cases[i].campaign);
			assert_rcpt(f, ev->recipient, cases[i].rcpt);
			assert_int_equal(ev->ts_ms, iso(cases[i].ts));
			if (ev->type == TL_EV_OPEN) {
				assert_str(ev->ip, "192.0.2.1");
				assert_true(ev->user_agent.n > 20);
			}
			free(body);
		}
		/* without a campaign mapping: a dead letter, never a silent drop */
		settings(f, "ses_verify", "false", NULL);
		char *body = sns_wrap("Notification", msg, NULL, NULL);
		assert_int_equal(run(f, "ses", body), 0);
		assert_int_equal(f->out.n, 0);
		assert_int_equal(find_dead(f, "no campaign")->ev.type, cases[i].type);
		free(body);
		free(msg);
	}
	/* raw message delivery cannot be verified */
	settings(f, NULL);
	char *msg = sample("ses-event-open.json", NULL);
	assert_int_equal(run(f, "ses", msg), -TL_EAUTH);
	assert_int_equal(f->status, 401);
	free(msg);
}

static void test_ses_multi_recipient_and_classes(void **state)
{
	struct fx *f = *state;
	settings(f, "ses_verify", "false", NULL);
#define tmpl                                                                                                 \
	"{\"notificationType\":\"Bounce\",\"bounce\":{\"bounceType\":\"%s\",\"bounceSubType\":\"%s\","       \
	"\"bouncedRecipients\":[{\"emailAddress\":\"a@x.io\"},{\"emailAddress\":\"B@x.io\"},"                \
	"{\"emailAddress\":\"c@x.io\"}],\"timestamp\":\"2020-01-01T00:00:00.000Z\"},"                        \
	"\"mail\":{\"messageId\":\"m-1\",\"timestamp\":\"2020-01-01T00:00:00.000Z\","                        \
	"\"destination\":[\"a@x.io\",\"b@x.io\",\"c@x.io\",\"d@x.io\"],"                                     \
	"\"tags\":{\"tally_campaign\":[\"spring\",\"ignored\"],\"tally_variant\":[\"B\"]}}}"
	static const struct {
		const char *type, *sub;
		uint8_t ev, bc;
	} cls[] = {{"Permanent", "General", TL_EV_BOUNCED, TL_BOUNCE_HARD},
	           {"Transient", "MailboxFull", TL_EV_BOUNCED, TL_BOUNCE_SOFT},
	           {"Undetermined", "Undetermined", TL_EV_BOUNCED, TL_BOUNCE_SOFT},
	           {"Permanent", "Suppressed", TL_EV_DROPPED, 0},
	           {"Permanent", "OnAccountSuppressionList", TL_EV_DROPPED, 0}};
	for (size_t k = 0; k < sizeof cls / sizeof cls[0]; k++) {
		char msg[1024];
		snprintf(msg, sizeof msg, tmpl, cls[k].type, cls[k].sub);
		char *body = sns_wrap("Notification", msg, "Subject", "Amazon SES Email Event Notification");
		assert_int_equal(run(f, "ses", body), 0);
		assert_int_equal(f->out.n, 3); /* the bounced recipients, not all destinations */
		for (size_t i = 0; i < 3; i++) {
			assert_int_equal(f->out.events[i].type, cls[k].ev);
			assert_int_equal(f->out.events[i].bounce_class, cls[k].bc);
			assert_str(f->out.events[i].campaign, "spring");
			assert_str(f->out.events[i].variant, "B");
		}
		assert_rcpt(f, f->out.events[1].recipient, "b@x.io");
		/* distinct ids, the same on a retry */
		assert_false(f->out.events[0].id.n == f->out.events[1].id.n &&
		             memcmp(f->out.events[0].id.p, f->out.events[1].id.p, f->out.events[0].id.n) ==
		                 0);
		char id0[256];
		snprintf(id0, sizeof id0, "%.*s", (int)f->out.events[0].id.n, f->out.events[0].id.p);
		assert_int_equal(run(f, "ses", body), 0);
		assert_str(f->out.events[0].id, id0);
		free(body);
	}
	/* Delivery to several recipients, event-publishing Send to every destination */
	const char *deliv =
	    "{\"eventType\":\"Delivery\",\"mail\":{\"messageId\":\"m-2\",\"timestamp\":"
	    "\"2020-01-01T00:00:00Z\",\"destination\":[\"a@x.io\",\"b@x.io\"],\"tags\":{\"tally_campaign\":"
	    "[\"c\"]}},\"delivery\":{\"timestamp\":\"2020-01-01T00:00:05Z\",\"recipients\":[\"a@x.io\",\"b@x."
	    "io\"]}}";
	char *body = sns_wrap("Notification", deliv, NULL, NULL);
	assert_int_equal(run(f, "ses", body), 0);
	assert_int_equal(f->out.n, 2);
	assert_int_equal(f->out.events[1].ts_ms, iso("2020-01-01T00:00:05Z"));
	free(body);
	const char *other[][3] = {
	    {"Send", "\"send\":{}", "sent"},
	    {"Reject", "\"reject\":{\"reason\":\"Bad content\"}", "dropped"},
	    {"DeliveryDelay",
	     "\"deliveryDelay\":{\"timestamp\":\"2020-01-01T00:01:00Z\",\"delayedRecipients\":"
	     "[{\"emailAddress\":\"a@x.io\"}]}",
	     "deferred"},
	    {"Click", "\"click\":{\"timestamp\":\"2020-01-01T00:01:00Z\",\"link\":\"https://x.io/\"}",
	     "click"},
	    {"Complaint",
	     "\"complaint\":{\"timestamp\":\"2020-01-01T00:01:00Z\",\"complainedRecipients\":"
	     "[{\"emailAddress\":\"a@x.io\"}]}",
	     "complaint"},
	    {"Subscription",
	     "\"subscription\":{\"timestamp\":\"2020-01-01T00:01:00Z\",\"newTopicPreferences\":"
	     "{\"unsubscribeAll\":true}}",
	     "unsubscribe"},
	    /* SES accepted it but never sent it: the address is suppressed */
	    {"Complaint",
	     "\"complaint\":{\"timestamp\":\"2020-01-01T00:01:00Z\",\"complaintSubType\":"
	     "\"OnAccountSuppressionList\",\"complainedRecipients\":[{\"emailAddress\":\"a@x.io\"}]}",
	     "dropped"},
	    /* topic B turned to OptOut (A was out before) */
	    {"Subscription",
	     "\"subscription\":{\"timestamp\":\"2020-01-01T00:01:00Z\",\"oldTopicPreferences\":"
	     "{\"unsubscribeAll\":false,\"topicSubscriptionStatus\":[{\"topicName\":\"A\","
	     "\"subscriptionStatus\":\"OptOut\"},{\"topicName\":\"B\",\"subscriptionStatus\":\"OptIn\"}]},"
	     "\"newTopicPreferences\":{\"unsubscribeAll\":false,\"topicSubscriptionStatus\":[{"
	     "\"topicName\":\"A\",\"subscriptionStatus\":\"OptOut\"},{\"topicName\":\"B\","
	     "\"subscriptionStatus\":\"OptOut\"}]}}",
	     "unsubscribe"},
	};
	for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
		char msg[1024];
		snprintf(msg, sizeof msg,
		         "{\"eventType\":\"%s\",\"mail\":{\"messageId\":\"m-3\",\"timestamp\":\"2020-01-"
		         "01T00:00:00Z\","
		         "\"destination\":[\"a@x.io\"],\"tags\":{\"tally_campaign\":[\"c\"]}},%s}",
		         other[i][0], other[i][1]);
		body = sns_wrap("Notification", msg, NULL, NULL);
		assert_int_equal(run(f, "ses", body), 0);
		assert_int_equal(f->out.n, 1);
		assert_string_equal(tl_event_type_name(f->out.events[0].type), other[i][2]);
		free(body);
	}
	/* a scanner clicks two links of a message in the same millisecond: two clicks */
	char id1[256];
	for (int l = 0; l < 2; l++) {
		char msg[1024];
		snprintf(msg, sizeof msg,
		         "{\"eventType\":\"Click\",\"mail\":{\"messageId\":\"m-4\",\"timestamp\":"
		         "\"2020-01-01T00:00:00Z\",\"destination\":[\"a@x.io\"],\"tags\":{\"tally_campaign\":"
		         "[\"c\"]}},\"click\":{\"timestamp\":\"2020-01-01T00:01:00Z\",\"link\":"
		         "\"https://x.io/%d\"}}",
		         l);
		body = sns_wrap("Notification", msg, NULL, NULL);
		assert_int_equal(run(f, "ses", body), 0);
		assert_int_equal(f->out.n, 1);
		if (l == 0)
			snprintf(id1, sizeof id1, "%.*s", (int)f->out.events[0].id.n, f->out.events[0].id.p);
		else
			assert_false(strlen(id1) == f->out.events[0].id.n &&
			             memcmp(id1, f->out.events[0].id.p, f->out.events[0].id.n) == 0);
		free(body);
	}
	const char *dead[][2] = {
	    {"{\"eventType\":\"Rendering "
	     "Failure\",\"mail\":{\"messageId\":\"m\",\"destination\":[\"a@x.io\"]},"
	     "\"failure\":{}}",
	     "rendering failure"},
	    {"{\"eventType\":\"Subscription\",\"mail\":{\"messageId\":\"m\",\"destination\":[\"a@x.io\"]},"
	     "\"subscription\":{\"newTopicPreferences\":{\"unsubscribeAll\":false}}}",
	     "subscription change"},
	    /* a re-subscription to B while A stays out: not a new unsubscribe */
	    {"{\"eventType\":\"Subscription\",\"mail\":{\"messageId\":\"m\",\"destination\":[\"a@x.io\"]},"
	     "\"subscription\":{\"oldTopicPreferences\":{\"topicSubscriptionStatus\":[{\"topicName\":"
	     "\"A\",\"subscriptionStatus\":\"OptOut\"},{\"topicName\":\"B\",\"subscriptionStatus\":"
	     "\"OptOut\"}]},\"newTopicPreferences\":{\"topicSubscriptionStatus\":[{\"topicName\":\"A\","
	     "\"subscriptionStatus\":\"OptOut\"},{\"topicName\":\"B\",\"subscriptionStatus\":"
	     "\"OptIn\"}]}}}",
	     "subscription change"},
	    /* unsubscribeAll already on */
	    {"{\"eventType\":\"Subscription\",\"mail\":{\"messageId\":\"m\",\"destination\":[\"a@x.io\"]},"
	     "\"subscription\":{\"oldTopicPreferences\":{\"unsubscribeAll\":true},"
	     "\"newTopicPreferences\":{\"unsubscribeAll\":true}}}",
	     "subscription change"},
	    {"{\"eventType\":\"Teleport\",\"mail\":{\"messageId\":\"m\",\"destination\":[\"a@x.io\"]}}",
	     "unmapped event type \"Teleport\""},
	    {"{\"notificationType\":\"Bounce\",\"mail\":{\"messageId\":\"m\"},\"bounce\":{}}",
	     "no recipients"},
	    {"{\"notificationType\":\"Delivery\",\"mail\":{\"messageId\":\"m\"},\"delivery\":{\"recipients\":"
	     "[7]}}",
	     "no recipient"},
	};
	for (size_t i = 0; i < sizeof dead / sizeof dead[0]; i++) {
		body = sns_wrap("Notification", dead[i][0], NULL, NULL);
		assert_int_equal(run(f, "ses", body), 0);
		assert_int_equal(f->out.n, 0);
		find_dead(f, dead[i][1]);
		free(body);
	}
	body = sns_wrap("Notification", "Successfully validated SNS topic for Amazon SES event publishing.",
	                NULL, NULL);
	assert_int_equal(run(f, "ses", body), 0);
	find_dead(f, "SNS Message is not an SES event");
	free(body);
	body = sns_wrap("Notification",
	                "{\"notificationType\":\"AmazonSnsSubscriptionSucceeded\",\"message\":\"ok\"}", NULL,
	                NULL);
	assert_int_equal(run(f, "ses", body), 0);
	assert_int_equal(f->out.n + f->out.n_dead, 0);
	free(body);
	assert_int_equal(run(f, "ses", "{\"Type\":\"Notification\"}"), -TL_EINVAL);
	assert_int_equal(run(f, "ses", "{\"Type\":\"Party\",\"Message\":\"x\"}"), -TL_EINVAL);
	assert_int_equal(run(f, "ses", "[1]"), -TL_EINVAL);
	assert_int_equal(run(f, "ses", "{\"hello\":1}"), -TL_EINVAL);
}

static void test_sns_urls(void **state)
{
	(void)state;
	static const char *ok[] = {
	    "https://sns.us-east-1.amazonaws.com/"
	    "?Action=ConfirmSubscription&TopicArn=arn:aws:sns:x&Token=abc",
	    "https://sns.eu-west-3.amazonaws.com/",
	    "https://sns.us-gov-west-1.amazonaws.com/",
	    "https://sns.ap-southeast-2.amazonaws.com/",
	};
	static const char *bad[] = {
	    "http://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription",
	    "https://sns.us-east-1.amazonaws.com.evil.com/?Action=ConfirmSubscription",
	    "https://evil.com/?x=https://sns.us-east-1.amazonaws.com/",
	    "https://sns.us-east-1.amazonaws.com@evil.com/",
	    "https://user@sns.us-east-1.amazonaws.com/",
	    "https://sns.us-east-1.amazonaws.com:8443/",
	    "https://sns.us-east-1.amazonaws.com:443/",
	    "https://sns.us-east-1-attacker-example/",
	    "https://sns.us-east-1.amazonaws.org/",
	    "https://sns.evil.com.amazonaws.com/",
	    "https://sqs.us-east-1.amazonaws.com/",
	    "https://sns.amazonaws.com/",
	    "https://sns..amazonaws.com/",
	    "https://sns.US-EAST-1.amazonaws.com/",
	    "https://sns.us-east-1.amazonaws.com",
	    "https://sns.us-east-1.amazonaws.com?x=/",
	    "https://sns.us-east-1.amazonaws.com\\@evil.com/",
	    "https://sns.us-east-1.amazonaws.com/ x",
	    "https://sns.us-east-1.amazonaws.com/#frag",
	    "https://sns.cn-north-1.amazonaws.com.cn/",
	    /* S3 under Amazon's wildcard certificate: the bucket "sns" */
	    "https://sns.s3.amazonaws.com/",
	    "https://sns.s3-accelerate.amazonaws.com/",
	    "https://sns.s3-external-1.amazonaws.com/",
	    "https://sns.us-east.amazonaws.com/",
	    "https://sns.us-east-123.amazonaws.com/",
	    "https://sns.u-east-1.amazonaws.com/",
	    "",
	};
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
		assert_true(tl_wh_sns_url_ok(ok[i], strlen(ok[i]), false));
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (tl_wh_sns_url_ok(bad[i], strlen(bad[i]), false))
			fail_msg("accepted %s", bad[i]);
	const char *pem = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-12345abcde.pem";
	assert_true(tl_wh_sns_url_ok(pem, strlen(pem), true));
	const char *notpem[] = {"https://sns.us-east-1.amazonaws.com/x.pem?y=1",
	                        "https://sns.us-east-1.amazonaws.com/x.txt",
	                        "https://sns.us-east-1.amazonaws.com/.pe",
	                        "https://sns.us-east-1.amazonaws.com/evil.pem",
	                        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-.pem",
	                        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-XY.pem",
	                        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-ab.pem?x",
	                        "https://sns.us-east-1.amazonaws.com/a/SimpleNotificationService-ab.pem"};
	for (size_t i = 0; i < sizeof notpem / sizeof notpem[0]; i++)
		assert_false(tl_wh_sns_url_ok(notpem[i], strlen(notpem[i]), true));
}

static void test_ses_subscription_confirmation(void **state)
{
	struct fx *f = *state;
	settings(f, "ses_verify", "false", NULL);
	const char *good =
	    "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:"
	    "us-west-2:123456789012:MyTopic&Token=2336412f37";
	char *body =
	    sns_wrap("SubscriptionConfirmation", "You have chosen to subscribe…", "SubscribeURL", good);
	assert_int_equal(run(f, "ses", body), 0);
	assert_string_equal(f->out.subscribe_url, good);
	assert_int_equal(f->out.n + f->out.n_dead, 0);
	free(body);
	const char *evil[] = {"https://attacker.example/?Action=ConfirmSubscription",
	                      "https://sns.us-west-2.amazonaws.com.attacker.example/",
	                      "http://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription",
	                      "https://sns.us-west-2.amazonaws.com:81/"};
	for (size_t i = 0; i < sizeof evil / sizeof evil[0]; i++) {
		body = sns_wrap("SubscriptionConfirmation", "x", "SubscribeURL", evil[i]);
		assert_int_equal(run(f, "ses", body), -TL_EAUTH);
		assert_int_equal(f->status, 403);
		assert_null(f->out.subscribe_url);
		free(body);
	}
	/* the tenant's topic allow-list */
	settings(f, "ses_verify", "false", "ses_topic_arn",
	         "arn:aws:sns:us-east-1:999:other, arn:aws:sns:x:1:y", NULL);
	body = sns_wrap("SubscriptionConfirmation", "x", "SubscribeURL", good);
	assert_int_equal(run(f, "ses", body), -TL_EAUTH);
	assert_int_equal(f->status, 403);
	settings(f, "ses_verify", "false", "ses_topic_arn",
	         "arn:aws:sns:x:1:y,arn:aws:sns:us-east-1:123456789012:ses", NULL);
	assert_int_equal(run(f, "ses", body), 0);
	free(body);
}

/* A self-made signing certificate, generated here, served through the
 * fetch callback as if from sns.us-east-1.amazonaws.com. */
struct fake_sns {
	EVP_PKEY *key;
	char *pem;
	int fetches;
	int fail;        /* a TL_E* code to return instead */
	int delay_ms;    /* a slow server */
	atomic_int done; /* fetches finished */
};

#define CERT_URL "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-7e57.pem"

static int fake_fetch(void *arg, const char *url, struct tl_buf *out)
{
	struct fake_sns *s = arg;
	s->fetches++;
	if (s->delay_ms)
		usleep((useconds_t)s->delay_ms * 1000);
	int rc = s->fail ? s->fail : strcmp(url, CERT_URL) != 0 ? -TL_ENOTFOUND : tl_buf_puts(out, s->pem);
	atomic_fetch_add(&s->done, 1);
	return rc;
}

static void fake_sns_init(struct fake_sns *s)
{
	memset(s, 0, sizeof *s);
	s->key = EVP_RSA_gen(2048);
	assert_non_null(s->key);
	X509 *x = X509_new();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	ASN1_TIME_set(X509_getm_notBefore(x), (time_t)(NOW_MS / 1000 - 86400));
	ASN1_TIME_set(X509_getm_notAfter(x), (time_t)(NOW_MS / 1000 + 86400 * 30));
	X509_set_pubkey(x, s->key);
	X509_NAME *nm = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)"sns.amazonaws.com", -1, -1,
	                           0);
	X509_set_issuer_name(x, nm);
	assert_true(X509_sign(x, s->key, EVP_sha256()) > 0);
	BIO *bio = BIO_new(BIO_s_mem());
	PEM_write_bio_X509(bio, x);
	char *p;
	long n = BIO_get_mem_data(bio, &p);
	s->pem = strndup(p, (size_t)n);
	BIO_free(bio);
	X509_free(x);
}

static void fake_sns_free(struct fake_sns *s)
{
	EVP_PKEY_free(s->key);
	free(s->pem);
}

/* Signs env (adds SignatureVersion, SigningCertURL, Signature) the way SNS
 * does and returns the body. */
static char *sns_sign(struct fake_sns *s, json_t *env, const char *version, const char *cert_url)
{
	const char *type = json_string_value(json_object_get(env, "Type"));
	static const char *notif[] = {"Message",  "MessageId", "Subject", "Timestamp",
	                              "TopicArn", "Type",      NULL};
	static const char *sub[] = {"Message", "MessageId", "SubscribeURL", "Timestamp",
	                            "Token",   "TopicArn",  "Type",         NULL};
	const char **keys = strcmp(type, "Notification") == 0 ? notif : sub;
	struct tl_buf b;
	tl_buf_init(&b, 0);
	for (size_t i = 0; keys[i]; i++) {
		json_t *v = json_object_get(env, keys[i]);
		if (!v || json_is_null(v))
			continue;
		assert_int_equal(tl_buf_printf(&b, "%s\n%s\n", keys[i], json_string_value(v)), 0);
	}
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char sig[512];
	size_t sig_n = sizeof sig;
	assert_int_equal(
	    EVP_DigestSignInit(md, NULL, strcmp(version, "1") == 0 ? EVP_sha1() : EVP_sha256(), NULL, s->key),
	    1);
	assert_int_equal(EVP_DigestSign(md, sig, &sig_n, (unsigned char *)b.data, b.len), 1);
	EVP_MD_CTX_free(md);
	unsigned char b64[1024];
	int n = EVP_EncodeBlock(b64, sig, (int)sig_n);
	json_object_set_new(env, "SignatureVersion", json_string(version));
	json_object_set_new(env, "SigningCertURL", json_string(cert_url));
	json_object_set_new(env, "Signature", json_stringn((char *)b64, (size_t)n));
	tl_buf_free(&b);
	return json_dumps(env, JSON_COMPACT);
}

static json_t *sns_env(const char *type, const char *message)
{
	char ts[TL_TIME_ISO_MAX];
	tl_time_format_iso(NOW_MS - 2000, ts, sizeof ts);
	return json_pack("{s:s, s:s, s:s, s:s, s:s}", "Type", type, "MessageId",
	                 "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324", "TopicArn",
	                 "arn:aws:sns:us-east-1:123456789012:ses", "Message", message, "Timestamp", ts);
}

static void test_ses_signature(void **state)
{
	struct fx *f = *state;
	struct fake_sns s;
	fake_sns_init(&s);
	struct tl_sns_certs *certs;
	assert_int_equal(tl_sns_certs_create(4, fake_fetch, &s, &certs), 0);
	tl_sns_certs_set_wait(certs, 30000); /* each fetch here ends well within it */
	f->req.sns_certs = certs;
	/* ses_verify defaults to true; then the topic allow-list is required */
	settings(f, "campaign_field", "ses:configuration-set", NULL);
	char *msg = sample("ses-event-bounce.json", NULL);
	json_t *env0 = sns_env("Notification", msg);
	char *body0 = sns_sign(&s, env0, "2", CERT_URL);
	assert_int_equal(run(f, "ses", body0), -TL_EAUTH);
	assert_int_equal(f->status, 401);
	assert_int_equal(f->out.n, 0);
	/* a correctly signed message from a topic that is not the tenant's:
	 * refused before any certificate is fetched */
	settings(f, "campaign_field", "ses:configuration-set", "ses_topic_arn",
	         "arn:aws:sns:us-east-1:999:theirs", NULL);
	assert_int_equal(run(f, "ses", body0), -TL_EAUTH);
	assert_int_equal(f->status, 403);
	assert_int_equal(s.fetches, 0);
	free(body0);
	json_decref(env0);
	settings(f, "campaign_field", "ses:configuration-set", "ses_topic_arn",
	         "arn:aws:sns:us-east-1:123456789012:ses", NULL);

	for (int v = 1; v <= 2; v++) {
		json_t *env = sns_env("Notification", msg);
		json_object_set_new(env, "Subject", json_string("Amazon SES Email Event Notification"));
		char *body = sns_sign(&s, env, v == 1 ? "1" : "2", CERT_URL);
		assert_int_equal(run(f, "ses", body), 0);
		assert_int_equal(f->out.n, 1);
		assert_int_equal(f->out.events[0].type, TL_EV_BOUNCED);
		/* the Message changed after signing */
		json_object_set_new(env, "Message", json_string("{\"eventType\":\"Send\"}"));
		char *forged = json_dumps(env, JSON_COMPACT);
		assert_int_equal(run(f, "ses", forged), -TL_EAUTH);
		assert_int_equal(f->status, 403);
		free(forged);
		free(body);
		json_decref(env);
	}
	assert_int_equal(s.fetches, 1); /* cached */

	/* "Subject": null is left out of the signed string, like an absent one */
	json_t *envn = sns_env("Notification", msg);
	json_object_set_new(envn, "Subject", json_null());
	char *bn = sns_sign(&s, envn, "2", CERT_URL);
	assert_int_equal(run(f, "ses", bn), 0);
	assert_int_equal(f->out.n, 1);
	free(bn);
	json_decref(envn);

	/* a certificate URL off amazonaws.com is never fetched */
	json_t *env = sns_env("Notification", msg);
	char *body = sns_sign(&s, env, "2", "https://attacker.example/cert.pem");
	assert_int_equal(run(f, "ses", body), -TL_EAUTH);
	assert_int_equal(f->status, 403);
	assert_int_equal(s.fetches, 1);
	free(body);
	/* an unknown amazonaws URL: fetched once (404), then remembered */
	body = sns_sign(&s, env, "2", "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0e.pem");
	assert_int_equal(run(f, "ses", body), -TL_EAUTH);
	assert_int_equal(f->status, 403);
	assert_int_equal(run(f, "ses", body), -TL_EAUTH);
	assert_int_equal(s.fetches, 2);
	free(body);
	/* more forged URLs than the cache holds (4), each in a budget window of
	 * its own: the real certificate is not pushed out by their failures */
	const int64_t was = f->req.now_ms;
	for (int i = 1; i <= 8; i++) {
		char url[128];
		f->req.now_ms += 61 * 1000;
		snprintf(url, sizeof url,
		         "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-%x0.pem", i);
		body = sns_sign(&s, env, "2", url);
		assert_int_equal(run(f, "ses", body), -TL_EAUTH);
		free(body);
	}
	assert_int_equal(s.fetches, 10);
	body = sns_sign(&s, env, "2", CERT_URL);
	assert_int_equal(run(f, "ses", body), 0);
	assert_int_equal(s.fetches, 10); /* still cached */
	free(body);
	f->req.now_ms = was;
	/* unsupported version, missing signature */
	body = sns_sign(&s, env, "3", CERT_URL);
	assert_int_equal(run(f, "ses", body), -TL_EAUTH);
	assert_int_equal(f->status, 403);
	free(body);
	json_object_del(env, "Signature");
	body = json_dumps(env, JSON_COMPACT);
	assert_int_equal(run(f, "ses", body), -TL_EAUTH);
	assert_int_equal(f->status, 401);
	free(body);
	json_decref(env);

	/* a stale envelope (a replay past the dedupe window) */
	env = sns_env("Notification", msg);
	json_object_set_new(env, "Timestamp", json_string("2025-12-01T00:00:00.000Z"));
	body = sns_sign(&s, env, "2", CERT_URL);
	assert_int_equal(run(f, "ses", body), -TL_EAUTH);
	assert_int_equal(f->status, 403);
	free(body);
	json_decref(env);

	/* signed SubscriptionConfirmation */
	env = sns_env("SubscriptionConfirmation", "You have chosen to subscribe to the topic");
	json_object_set_new(env, "Token", json_string("2336412f37fb687f5d51e6e241d"));
	json_object_set_new(
	    env, "SubscribeURL",
	    json_string("https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=2336"));
	body = sns_sign(&s, env, "1", CERT_URL);
	assert_int_equal(run(f, "ses", body), 0);
	assert_non_null(f->out.subscribe_url);
	free(body);
	json_decref(env);

	/* the certificate cannot be fetched now: retryable */
	struct tl_sns_certs *c2;
	assert_int_equal(tl_sns_certs_create(0, fake_fetch, &s, &c2), 0);
	tl_sns_certs_set_wait(c2, 30000);
	f->req.sns_certs = c2;
	s.fail = -TL_EUNAVAIL;
	env = sns_env("Notification", msg);
	body = sns_sign(&s, env, "2", CERT_URL);
	assert_int_equal(run(f, "ses", body), -TL_EUNAVAIL);
	assert_int_equal(f->status, 503);
	f->req.sns_certs = NULL;
	assert_int_equal(run(f, "ses", body), -TL_EUNAVAIL);
	assert_int_equal(f->status, 503);
	/* and the fetch budget holds against a flood of URLs */
	s.fail = 0;
	f->req.sns_certs = c2;
	f->req.now_ms += 11 * 1000; /* past the short memory of the network failure */
	int refused = 0;
	for (int i = 0; i < 20; i++) {
		char url[128];
		snprintf(url, sizeof url,
		         "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-f%d.pem", i);
		char *b2 = sns_sign(&s, env, "2", url);
		run(f, "ses", b2);
		refused += f->status == 503;
		free(b2);
	}
	assert_true(refused >= 10);
	f->req.now_ms = NOW_MS;
	free(body);
	json_decref(env);

	tl_sns_certs_destroy(c2);
	tl_sns_certs_destroy(certs);
	f->req.sns_certs = NULL;
	free(msg);
	fake_sns_free(&s);
}

/* A slow certificate server: the request that needs the certificate waits
 * a bounded time, not the fetch's, and gets a retryable 503 (the collector's
 * loop is not held); the fetch goes on behind it, once, and the sender's
 * retry finds the certificate cached. */
static void test_ses_slow_certificate(void **state)
{
	struct fx *f = *state;
	struct fake_sns s;
	fake_sns_init(&s);
	s.delay_ms = 1500;
	struct tl_sns_certs *certs;
	assert_int_equal(tl_sns_certs_create(0, fake_fetch, &s, &certs), 0);
	tl_sns_certs_set_wait(certs, 50);
	f->req.sns_certs = certs;
	settings(f, "campaign_field", "ses:configuration-set", "ses_topic_arn",
	         "arn:aws:sns:us-east-1:123456789012:ses", NULL);
	char *msg = sample("ses-event-bounce.json", NULL);
	json_t *env = sns_env("Notification", msg);
	char *body = sns_sign(&s, env, "2", CERT_URL);
	assert_int_equal(run(f, "ses", body), -TL_EUNAVAIL);
	assert_int_equal(f->status, 503);
	assert_int_equal(f->out.n, 0);
	/* retried while the fetch runs: no second fetch */
	assert_int_equal(run(f, "ses", body), -TL_EUNAVAIL);
	assert_int_equal(f->status, 503);
	int rc = -TL_EUNAVAIL;
	for (int i = 0; i < 1000 && rc == -TL_EUNAVAIL; i++) {
		usleep(10000);
		rc = run(f, "ses", body);
	}
	assert_int_equal(rc, 0);
	assert_int_equal(f->out.n, 1);
	assert_int_equal(f->out.events[0].type, TL_EV_BOUNCED);
	assert_int_equal(atomic_load(&s.done), 1);
	assert_int_equal(s.fetches, 1);
	free(body);
	json_decref(env);
	free(msg);
	f->req.sns_certs = NULL;
	tl_sns_certs_destroy(certs);
	fake_sns_free(&s);
}

static void test_http_get_refuses_plain_http(void **state)
{
	(void)state;
	assert_int_equal(tl_webhook_http_global_init(), 0);
	struct tl_buf b;
	tl_buf_init(&b, 0);
	assert_int_equal(tl_webhook_http_get(NULL, "http://127.0.0.1:1/x.pem", &b), -TL_EINVAL);
	assert_int_equal(tl_webhook_http_get(NULL, "file:///etc/passwd", &b), -TL_EINVAL);
	/* nothing listens on port 1: a retryable failure, quickly */
	struct tl_webhook_http_opts o = {.timeout_ms = 2000, .max_bytes = 1024};
	int rc = tl_webhook_http_get(&o, "https://127.0.0.1:1/x.pem", &b);
	assert_true(rc == -TL_EUNAVAIL || rc == -TL_ETIMEDOUT || rc == -TL_EIO);
	tl_buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_unknown_provider_and_tenant, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_credential_401, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_arena_cap_413, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sendgrid_sample_batch, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sendgrid_fields, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sendgrid_limits, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sendgrid_malformed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sendgrid_5mb_body, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sendgrid_signature, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_mailgun_samples, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_mailgun_mapping, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_mailgun_signature_replay_stale, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_postmark_samples, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_postmark_mapping, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_postmark_auth, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sparkpost_sample_and_auth, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sparkpost_mapping, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ses_envelope_sample, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ses_samples, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ses_multi_recipient_and_classes, setup, teardown),
	    cmocka_unit_test(test_sns_urls),
	    cmocka_unit_test_setup_teardown(test_ses_subscription_confirmation, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ses_signature, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ses_slow_certificate, setup, teardown),
	    cmocka_unit_test(test_http_get_refuses_plain_http),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
