/* Unit tests of tl_enrich_event: token verification and resolution, the
 * recipient keyed hash, classification, and every reject reason. */
#include "event/token.h"
#include "pipeline/enrich.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

static struct tl_tenant acme, other;

static const struct tl_tenant *lookup(void *arg, const char *name, size_t len)
{
	(void)arg;
	if (len == 4 && !memcmp(name, "acme", 4))
		return &acme;
	if (len == 5 && !memcmp(name, "other", 5))
		return &other;
	return NULL;
}

static struct tl_enrich_ctx ctx;
static struct tl_enrich_scratch scratch;

static int setup(void **state)
{
	(void)state;
	memset(&acme, 0, sizeof acme);
	memset(&other, 0, sizeof other);
	memcpy(acme.name, "acme", 5);
	memcpy(other.name, "other", 6);
	for (int i = 0; i < TL_KEY_BYTES; i++) {
		acme.link_key[i] = (unsigned char)i;
		acme.salt[i] = (unsigned char)(100 + i);
		other.link_key[i] = (unsigned char)(200 - i);
		other.salt[i] = (unsigned char)(50 + i);
	}
	ctx.lookup = lookup;
	tl_classify_defaults(&ctx.classify);
	return 0;
}

static void mint(struct tl_buf *b, enum tl_token_kind kind, const struct tl_tenant *signer,
                 const char *tenant, int64_t issued)
{
	struct tl_token t = {.kind = kind,
	                     .issued_ms = issued,
	                     .tenant = tl_str_of(tenant, strlen(tenant)),
	                     .campaign = TL_STR("spring"),
	                     .variant = TL_STR("B"),
	                     .message = TL_STR("m1"),
	                     .recipient = TL_STR("r-1842"),
	                     .url =
	                         kind == TL_TOKEN_CLICK ? TL_STR("https://shop.example/sale") : TL_STR_NULL};
	tl_buf_init(b, 0);
	assert_int_equal(tl_token_mint(&t, signer->link_key, sizeof signer->link_key, b), 0);
}

static struct tl_event hit(enum tl_event_type type, const struct tl_buf *tok, const char *ua, int64_t ts)
{
	struct tl_event e = {.type = (uint8_t)type, .flags = TL_EVF_HIT, .ts_ms = ts, .arrival_ms = ts};
	e.token = tl_str_of(tok->data, tok->len);
	e.user_agent = tl_str_of(ua, strlen(ua));
	e.id = TL_STR("h-1");
	return e;
}

#define CHROME                                                                                               \
	"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
#define T0 1764784800000LL

static void test_open_resolved_and_hashed(void **state)
{
	(void)state;
	struct tl_buf tok;
	mint(&tok, TL_TOKEN_OPEN, &acme, "acme", T0);
	struct tl_event e = hit(TL_EV_OPEN, &tok, CHROME, T0 + 3600000);
	const char *reason;
	assert_int_equal(tl_enrich_event(&ctx, &e, &scratch, &reason), 0);
	assert_null(reason);
	assert_true(e.tenant.n == 4 && !memcmp(e.tenant.p, "acme", 4));
	assert_true(e.campaign.n == 6 && !memcmp(e.campaign.p, "spring", 6));
	assert_true(e.variant.n == 1 && e.variant.p[0] == 'B');
	assert_int_equal(e.sent_ms, T0);
	assert_true(e.flags & TL_EVF_HASHED);
	assert_true(e.flags & TL_EVF_ENRICHED);
	assert_false(e.flags & (TL_EVF_HIT | TL_EVF_MACHINE));
	char expect[TL_RCPT_HASH_LEN + 1];
	tl_recipient_hash(acme.salt, sizeof acme.salt, "r-1842", 6, expect);
	assert_int_equal(e.recipient.n, TL_RCPT_HASH_LEN);
	assert_memory_equal(e.recipient.p, expect, TL_RCPT_HASH_LEN);
	tl_buf_free(&tok);
}

static void test_machine_open_rules(void **state)
{
	(void)state;
	struct tl_buf tok;
	mint(&tok, TL_TOKEN_OPEN, &acme, "acme", T0);
	const char *reason;
	struct tl_event e = hit(TL_EV_OPEN, &tok, "Mozilla/5.0", T0 + 3600000); /* Apple MPP proxy */
	assert_int_equal(tl_enrich_event(&ctx, &e, &scratch, &reason), 0);
	assert_true(e.flags & TL_EVF_MACHINE);
	e = hit(TL_EV_OPEN, &tok, CHROME, T0 + 500); /* within the send window */
	assert_int_equal(tl_enrich_event(&ctx, &e, &scratch, &reason), 0);
	assert_true(e.flags & TL_EVF_MACHINE);
	tl_buf_free(&tok);
}

static void test_click_bot_and_url(void **state)
{
	(void)state;
	struct tl_buf tok;
	mint(&tok, TL_TOKEN_CLICK, &acme, "acme", T0);
	const char *reason;
	struct tl_event e = hit(TL_EV_CLICK, &tok, CHROME, T0 + 3600000);
	assert_int_equal(tl_enrich_event(&ctx, &e, &scratch, &reason), 0);
	assert_false(e.flags & TL_EVF_BOT);
	assert_true(e.url.n == 25 && !memcmp(e.url.p, "https://shop.example/sale", 25));
	e = hit(TL_EV_CLICK, &tok, CHROME, T0 + 3600000);
	e.flags |= TL_EVF_HEAD;
	assert_int_equal(tl_enrich_event(&ctx, &e, &scratch, &reason), 0);
	assert_true(e.flags & TL_EVF_BOT);
	tl_buf_free(&tok);
}

static void test_rejects(void **state)
{
	(void)state;
	const char *reason;
	struct tl_buf tok;
	/* signed with the other tenant's key but naming acme */
	mint(&tok, TL_TOKEN_OPEN, &other, "acme", T0);
	struct tl_event e = hit(TL_EV_OPEN, &tok, CHROME, T0 + 3600000);
	assert_int_not_equal(tl_enrich_event(&ctx, &e, &scratch, &reason), 0);
	assert_string_equal(reason, "bad_signature");
	tl_buf_free(&tok);

	mint(&tok, TL_TOKEN_OPEN, &acme, "nobody", T0);
	e = hit(TL_EV_OPEN, &tok, CHROME, T0 + 3600000);
	assert_int_not_equal(tl_enrich_event(&ctx, &e, &scratch, &reason), 0);
	assert_string_equal(reason, "unknown_tenant");
	tl_buf_free(&tok);

	mint(&tok, TL_TOKEN_OPEN, &acme, "acme", T0);
	e = hit(TL_EV_CLICK, &tok, CHROME, T0 + 3600000); /* an open token on the click route */
	assert_int_not_equal(tl_enrich_event(&ctx, &e, &scratch, &reason), 0);
	assert_string_equal(reason, "token_kind");
	/* truncated */
	tok.len -= 5;
	e = hit(TL_EV_OPEN, &tok, CHROME, T0 + 3600000);
	assert_int_not_equal(tl_enrich_event(&ctx, &e, &scratch, &reason), 0);
	assert_true(!strcmp(reason, "bad_token") || !strcmp(reason, "bad_signature"));
	tl_buf_free(&tok);

	struct tl_buf junk;
	tl_buf_init(&junk, 0);
	assert_int_equal(tl_buf_puts(&junk, "v1.!!!.???"), 0);
	e = hit(TL_EV_OPEN, &junk, CHROME, T0);
	assert_int_not_equal(tl_enrich_event(&ctx, &e, &scratch, &reason), 0);
	assert_string_equal(reason, "bad_token");
	tl_buf_free(&junk);

	struct tl_event sent = {.type = TL_EV_SENT, .tenant = TL_STR("acme"), .campaign = TL_STR("c")};
	assert_int_not_equal(tl_enrich_event(&ctx, &sent, &scratch, &reason), 0);
	assert_string_equal(reason, "invalid_event");
}

static void test_api_event_hashed_once(void **state)
{
	(void)state;
	const char *reason;
	struct tl_event e = {.type = TL_EV_OPEN, .ts_ms = T0};
	e.tenant = TL_STR("acme");
	e.campaign = TL_STR("c");
	e.recipient = TL_STR("r-9");
	e.id = TL_STR("x");
	e.user_agent = TL_STR(CHROME);
	assert_int_equal(tl_enrich_event(&ctx, &e, &scratch, &reason), 0);
	char expect[TL_RCPT_HASH_LEN + 1];
	tl_recipient_hash(acme.salt, sizeof acme.salt, "r-9", 3, expect);
	assert_memory_equal(e.recipient.p, expect, TL_RCPT_HASH_LEN);
	/* already hashed by the collector: left alone */
	struct tl_event h = e;
	h.recipient = TL_STR("0123456789abcdef0123456789abcdef");
	h.flags = TL_EVF_HASHED;
	assert_int_equal(tl_enrich_event(&ctx, &h, &scratch, &reason), 0);
	assert_memory_equal(h.recipient.p, "0123456789abcdef0123456789abcdef", 32);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_open_resolved_and_hashed), cmocka_unit_test(test_machine_open_rules),
	    cmocka_unit_test(test_click_bot_and_url),        cmocka_unit_test(test_rejects),
	    cmocka_unit_test(test_api_event_hashed_once),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
