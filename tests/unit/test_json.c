/* test_json.c — canonical JSON events: accepted lines, refused lines with
 * their exact reasons, and the to_json round trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "event/event.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FULL                                                                                                 \
	"{\"type\":\"bounced\",\"tenant\":\"acme\",\"campaign\":\"spring-sale\",\"variant\":\"B\","          \
	"\"recipient\":\"r-1842\",\"message\":\"m-99812\",\"id\":\"evt-7f3a\","                              \
	"\"ts\":\"2026-12-03T18:00:00.123Z\",\"url\":\"https://shop.example/sale\","                         \
	"\"user_agent\":\"Mozilla/5.0 (X11)\",\"ip\":\"203.0.113.7\",\"bounce_class\":\"hard\","             \
	"\"provider\":\"sendgrid\"}"

static struct tl_arena arena;

static int setup(void **state)
{
	(void)state;
	tl_arena_init(&arena, 4096, 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	tl_arena_free(&arena);
	return 0;
}

static int parse(const char *json, struct tl_event *ev, char *err, size_t errlen)
{
	return tl_event_from_json(json, strlen(json), &arena, ev, err, errlen);
}

static void assert_field(struct tl_str s, const char *want)
{
	assert_int_equal(s.n, strlen(want));
	assert_memory_equal(s.p, want, s.n);
}

static void test_full_event(void **state)
{
	(void)state;
	struct tl_event ev;
	char err[128];
	assert_int_equal(parse(FULL, &ev, err, sizeof err), 0);
	assert_int_equal(ev.type, TL_EV_BOUNCED);
	assert_int_equal(ev.bounce_class, TL_BOUNCE_HARD);
	assert_int_equal(ev.flags, 0);
	assert_field(ev.tenant, "acme");
	assert_field(ev.campaign, "spring-sale");
	assert_field(ev.variant, "B");
	assert_field(ev.recipient, "r-1842");
	assert_field(ev.message, "m-99812");
	assert_field(ev.id, "evt-7f3a");
	assert_field(ev.url, "https://shop.example/sale");
	assert_field(ev.user_agent, "Mozilla/5.0 (X11)");
	assert_field(ev.ip, "203.0.113.7");
	assert_field(ev.provider, "sendgrid");
	assert_true(ev.ts_ms == 1796320800123LL);
	assert_int_equal(tl_event_validate(&ev, err, sizeof err), 0);

	/* strings live in the arena, not in the input */
	char *copy = strdup(FULL);
	assert_int_equal(parse(copy, &ev, err, sizeof err), 0);
	memset(copy, 'X', strlen(copy));
	free(copy);
	assert_field(ev.campaign, "spring-sale");
}

static void test_minimal_and_variants(void **state)
{
	(void)state;
	struct tl_event ev;
	char err[128];
	assert_int_equal(parse("{\"type\":\"sent\",\"campaign\":\"c\",\"recipient\":\"r\",\"id\":\"1\","
	                       "\"ts\":\"2026-12-03T19:00:00+01:00\"}",
	                       &ev, err, sizeof err),
	                 0);
	assert_int_equal(ev.type, TL_EV_SENT);
	assert_true(ev.ts_ms == 1796320800000LL);
	assert_int_equal(ev.tenant.n, 0);
	assert_int_equal(ev.variant.n, 0);

	/* a bounce without a class is accepted as NONE */
	assert_int_equal(parse("{\"type\":\"bounced\",\"campaign\":\"c\",\"recipient\":\"r\",\"id\":\"1\","
	                       "\"ts\":\"2026-12-03T18:00:00Z\"}",
	                       &ev, err, sizeof err),
	                 0);
	assert_int_equal(ev.bounce_class, TL_BOUNCE_NONE);
	static const char *classes[] = {"hard", "soft", "block"};
	for (int c = 0; c < 3; c++) {
		char line[256];
		snprintf(line, sizeof line,
		         "{\"type\":\"bounced\",\"campaign\":\"c\",\"recipient\":\"r\",\"id\":\"1\","
		         "\"ts\":\"2026-12-03T18:00:00Z\",\"bounce_class\":\"%s\"}",
		         classes[c]);
		assert_int_equal(parse(line, &ev, err, sizeof err), 0);
		assert_int_equal(ev.bounce_class, c + 1);
	}

	/* every type name */
	for (int t = 1; t < TL_EV__COUNT; t++) {
		char line[256];
		snprintf(line, sizeof line,
		         "{\"type\":\"%s\",\"campaign\":\"c\",\"recipient\":\"r\",\"id\":\"1\","
		         "\"ts\":\"2026-12-03T18:00:00Z\"}",
		         tl_event_type_name((enum tl_event_type)t));
		assert_int_equal(parse(line, &ev, err, sizeof err), 0);
		assert_int_equal(ev.type, t);
	}

	/* provider machine open, unknown keys ignored, null optional fields */
	assert_int_equal(parse("{\"type\":\"open\",\"campaign\":\"c\",\"recipient\":\"r\",\"id\":\"1\","
	                       "\"ts\":\"2026-12-03T18:00:00Z\",\"machine\":true,\"variant\":null,"
	                       "\"extra\":{\"nested\":[1,2,3]},\"sg_event_id\":\"x\"}",
	                       &ev, err, sizeof err),
	                 0);
	assert_int_equal(ev.flags, TL_EVF_PROVIDER_MACHINE);
	assert_int_equal(ev.variant.n, 0);
	assert_int_equal(parse("{\"type\":\"open\",\"campaign\":\"c\",\"recipient\":\"r\",\"id\":\"1\","
	                       "\"ts\":\"2026-12-03T18:00:00Z\",\"machine\":false}",
	                       &ev, err, sizeof err),
	                 0);
	assert_int_equal(ev.flags, 0);

	/* a raw hit: the token stands for campaign and recipient */
	assert_int_equal(parse("{\"type\":\"click\",\"id\":\"h1\",\"ts\":\"2026-12-03T18:00:00Z\","
	                       "\"token\":\"v1.abc.def\",\"head\":true,"
	                       "\"arrival\":\"2026-12-03T18:00:01Z\"}",
	                       &ev, err, sizeof err),
	                 0);
	assert_int_equal(ev.flags, TL_EVF_HIT | TL_EVF_HEAD);
	assert_field(ev.token, "v1.abc.def");
	assert_true(ev.arrival_ms == 1796320801000LL);

	/* unicode survives */
	assert_int_equal(parse("{\"type\":\"open\",\"campaign\":\"\\u00e9t\\u00e9\",\"recipient\":\"r\","
	                       "\"id\":\"1\",\"ts\":\"2026-12-03\"}",
	                       &ev, err, sizeof err),
	                 0);
	assert_field(ev.campaign, "\xc3\xa9t\xc3\xa9");
}

struct bad {
	const char *json;
	int rc;
	const char *reason;
};

#define BASE "\"campaign\":\"c\",\"recipient\":\"r\",\"id\":\"1\",\"ts\":\"2026-12-03T18:00:00Z\""

static void test_bad_lines(void **state)
{
	(void)state;
	static const struct bad cases[] = {
	    {"[1,2]", -TL_EINVAL, "event must be a JSON object"},
	    {"{" BASE "}", -TL_EINVAL, "missing type"},
	    {"{\"type\":null," BASE "}", -TL_EINVAL, "missing type"},
	    {"{\"type\":\"opne\"," BASE "}", -TL_EINVAL, "unknown type \"opne\""},
	    {"{\"type\":\"Open\"," BASE "}", -TL_EINVAL, "unknown type \"Open\""},
	    {"{\"type\":\"a\\\"b\"," BASE "}", -TL_EINVAL, "unknown type \"a?b\""},
	    {"{\"type\":7," BASE "}", -TL_EINVAL, "field type must be a string"},
	    {"{\"type\":\"open\",\"recipient\":\"r\",\"id\":\"1\",\"ts\":\"2026-12-03T18:00:00Z\"}",
	     -TL_EINVAL, "missing campaign"},
	    {"{\"type\":\"open\",\"campaign\":\"\",\"recipient\":\"r\",\"id\":\"1\",\"ts\":\"2026-12-03\"}",
	     -TL_EINVAL, "missing campaign"},
	    {"{\"type\":\"open\",\"campaign\":\"c\",\"id\":\"1\",\"ts\":\"2026-12-03T18:00:00Z\"}",
	     -TL_EINVAL, "missing recipient"},
	    {"{\"type\":\"open\",\"campaign\":\"c\",\"recipient\":\"r\",\"ts\":\"2026-12-03T18:00:00Z\"}",
	     -TL_EINVAL, "missing id"},
	    {"{\"type\":\"open\",\"campaign\":\"c\",\"recipient\":\"r\",\"id\":\"1\"}", -TL_EINVAL,
	     "missing ts"},
	    {"{\"type\":\"open\",\"campaign\":\"c\",\"recipient\":\"r\",\"id\":\"1\",\"ts\":\"yesterday\"}",
	     -TL_EINVAL, "bad ts \"yesterday\""},
	    {"{\"type\":\"open\",\"campaign\":\"c\",\"recipient\":\"r\",\"id\":\"1\",\"ts\":\"2026-02-30\"}",
	     -TL_EINVAL, "bad ts \"2026-02-30\""},
	    {"{\"type\":\"open\",\"campaign\":\"c\",\"recipient\":\"r\",\"id\":\"1\",\"ts\":1796320800}",
	     -TL_EINVAL, "field ts must be a string"},
	    {"{\"type\":\"open\"," BASE ",\"bounce_class\":\"hard\"}", -TL_EINVAL,
	     "bounce_class only for bounced"},
	    {"{\"type\":\"bounced\"," BASE ",\"bounce_class\":\"medium\"}", -TL_EINVAL,
	     "unknown bounce_class \"medium\""},
	    {"{\"type\":\"bounced\"," BASE ",\"bounce_class\":1}", -TL_EINVAL,
	     "field bounce_class must be a string"},
	    {"{\"type\":\"open\",\"campaign\":5,\"recipient\":\"r\",\"id\":\"1\",\"ts\":\"2026-12-03\"}",
	     -TL_EINVAL, "field campaign must be a string"},
	    {"{\"type\":\"open\"," BASE ",\"user_agent\":[\"x\"]}", -TL_EINVAL,
	     "field user_agent must be a string"},
	    {"{\"type\":\"open\"," BASE ",\"tenant\":true}", -TL_EINVAL, "field tenant must be a string"},
	    {"{\"type\":\"open\",\"campaign\":\"a\\u0000b\",\"recipient\":\"r\",\"id\":\"1\",\"ts\":\"2026-"
	     "12-03\"}",
	     -TL_EINVAL, "field campaign contains a NUL byte"},
	    {"{\"type\":\"open\"," BASE ",\"machine\":\"yes\"}", -TL_EINVAL,
	     "field machine must be a boolean"},
	    {"{\"type\":\"click\"," BASE ",\"machine\":true}", -TL_EINVAL, "machine only for open"},
	    {"{\"type\":\"open\"," BASE ",\"bot\":true}", -TL_EINVAL, "bot only for click"},
	    {"{\"type\":\"sent\"," BASE ",\"head\":true}", -TL_EINVAL, "head only for open or click"},
	    {"{\"type\":\"sent\"," BASE ",\"token\":\"v1.a.b\"}", -TL_EINVAL, "token only for open or click"},
	    {"{\"type\":\"open\"," BASE ",\"arrival\":\"soon\"}", -TL_EINVAL, "bad arrival \"soon\""},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct tl_event ev;
		char err[128] = "";
		int rc = parse(cases[i].json, &ev, err, sizeof err);
		if (rc != cases[i].rc || strcmp(err, cases[i].reason) != 0)
			fail_msg("case %zu %s: got %d \"%s\", want %d \"%s\"", i, cases[i].json, rc, err,
			         cases[i].rc, cases[i].reason);
		/* a refused line leaves an empty event */
		assert_int_equal(ev.type, TL_EV_NONE);
	}
}

static void test_bad_json_syntax(void **state)
{
	(void)state;
	struct tl_event ev;
	char err[160];
	static const struct {
		const char *json;
		const char *column; /* the suffix the reason must end with */
	} cases[] = {
	    {"{\"type\":\"open\",}", " at column 16"},
	    {"{\"type\":\"open\"", " at column 14"},
	    {"", " at column 0"},
	    {"{\"type\":\"open\",\"type\":\"click\"}", " at column 21"},
	    {"{\"type\":\"open\"} trailing", " at column 24"},
	    {"not json", " at column 3"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int rc = parse(cases[i].json, &ev, err, sizeof err);
		assert_int_equal(rc, -TL_EINVAL);
		size_t n = strlen(err), m = strlen(cases[i].column);
		if (strncmp(err, "bad JSON: ", 10) != 0 || n < m || strcmp(err + n - m, cases[i].column))
			fail_msg("case %zu %s: got \"%s\", want \"bad JSON: …%s\"", i, cases[i].json, err,
			         cases[i].column);
	}
	/* jansson's own wording for duplicates is passed through */
	assert_int_equal(parse("{\"type\":\"open\",\"type\":\"click\"}", &ev, err, sizeof err), -TL_EINVAL);
	assert_non_null(strstr(err, "duplicate"));
}

static void test_too_long(void **state)
{
	(void)state;
	struct tl_event ev;
	char err[128];
	char line[512];
	char camp[TL_MAX_CAMPAIGN + 2];
	memset(camp, 'c', sizeof camp);
	camp[TL_MAX_CAMPAIGN + 1] = '\0';
	snprintf(
	    line, sizeof line,
	    "{\"type\":\"open\",\"campaign\":\"%s\",\"recipient\":\"r\",\"id\":\"1\",\"ts\":\"2026-12-03\"}",
	    camp);
	assert_int_equal(parse(line, &ev, err, sizeof err), -TL_ETOOBIG);
	assert_string_equal(err, "campaign too long");
	camp[TL_MAX_CAMPAIGN] = '\0'; /* exactly at the limit is fine */
	snprintf(
	    line, sizeof line,
	    "{\"type\":\"open\",\"campaign\":\"%s\",\"recipient\":\"r\",\"id\":\"1\",\"ts\":\"2026-12-03\"}",
	    camp);
	assert_int_equal(parse(line, &ev, err, sizeof err), 0);
	assert_int_equal(ev.campaign.n, TL_MAX_CAMPAIGN);

	char tenant[TL_MAX_TENANT + 2];
	memset(tenant, 't', sizeof tenant);
	tenant[TL_MAX_TENANT + 1] = '\0';
	snprintf(line, sizeof line, "{\"type\":\"open\"," BASE ",\"tenant\":\"%s\"}", tenant);
	assert_int_equal(parse(line, &ev, err, sizeof err), -TL_ETOOBIG);
	assert_string_equal(err, "tenant too long");

	/* the whole line over TL_MAX_EVENT_JSON */
	size_t big = TL_MAX_EVENT_JSON + 1;
	char *huge = malloc(big + 1);
	memset(huge, ' ', big);
	huge[big] = '\0';
	assert_int_equal(tl_event_from_json(huge, big, &arena, &ev, err, sizeof err), -TL_ETOOBIG);
	assert_non_null(strstr(err, "event too long"));
	free(huge);
}

static void test_arena_exhausted(void **state)
{
	(void)state;
	struct tl_arena small;
	tl_arena_init(&small, 64, 32);
	struct tl_event ev;
	char err[128];
	int rc = tl_event_from_json(FULL, strlen(FULL), &small, &ev, err, sizeof err);
	assert_int_equal(rc, -TL_ENOMEM);
	tl_arena_free(&small);
	/* err may be NULL */
	rc = tl_event_from_json("{}", 2, &arena, &ev, NULL, 0);
	assert_int_equal(rc, -TL_EINVAL);
}

static void test_to_json_canonical(void **state)
{
	(void)state;
	struct tl_event ev;
	char err[128];
	assert_int_equal(parse(FULL, &ev, err, sizeof err), 0);
	struct tl_buf b;
	tl_buf_init(&b, 0);
	assert_int_equal(tl_event_to_json(&ev, &b), 0);
	assert_string_equal(b.data, FULL);

	/* flags, token, escaping; empty fields omitted */
	struct tl_event h = {0};
	h.type = TL_EV_CLICK;
	h.flags = TL_EVF_BOT | TL_EVF_HEAD | TL_EVF_HIT;
	h.id = TL_STR("h\"1");
	h.ts_ms = 1796320800000LL;
	h.arrival_ms = 1796320800001LL;
	h.user_agent = TL_STR("a\\b\n");
	h.token = TL_STR("v1.x.y");
	tl_buf_reset(&b);
	assert_int_equal(tl_event_to_json(&h, &b), 0);
	assert_string_equal(b.data,
	                    "{\"type\":\"click\",\"id\":\"h\\\"1\",\"ts\":\"2026-12-03T18:00:00.000Z\","
	                    "\"arrival\":\"2026-12-03T18:00:00.001Z\",\"user_agent\":\"a\\\\b\\u000a\","
	                    "\"bot\":true,\"head\":true,\"token\":\"v1.x.y\"}");

	/* a classified machine open and a provider machine open both say machine */
	struct tl_event o = {.type = TL_EV_OPEN, .flags = TL_EVF_MACHINE | TL_EVF_HASHED, .ts_ms = 1000};
	tl_buf_reset(&b);
	assert_int_equal(tl_event_to_json(&o, &b), 0);
	assert_string_equal(b.data, "{\"type\":\"open\",\"ts\":\"1970-01-01T00:00:01.000Z\",\"machine\":true,"
	                            "\"hashed\":true}");

	/* a time JSON cannot hold is refused (found by fuzz_event_codec) */
	struct tl_event far = {.type = TL_EV_SENT, .ts_ms = INT64_MIN};
	size_t before = b.len;
	assert_int_equal(tl_event_to_json(&far, &b), -TL_EINVAL);
	far.ts_ms = 253402300800000LL; /* year 10000 */
	assert_int_equal(tl_event_to_json(&far, &b), -TL_EINVAL);
	far.ts_ms = 253402300799999LL;
	far.arrival_ms = -1;
	assert_int_equal(tl_event_to_json(&far, &b), -TL_EINVAL);
	assert_int_equal(b.len, before);
	far.arrival_ms = 0;
	assert_int_equal(tl_event_to_json(&far, &b), 0);
	assert_non_null(strstr(b.data + before, "\"ts\":\"9999-12-31T23:59:59.999Z\""));

	/* an unknown type is refused and out is unchanged */
	struct tl_event bad = {.type = 42};
	size_t len = b.len;
	assert_int_equal(tl_event_to_json(&bad, &b), -TL_EINVAL);
	assert_int_equal(b.len, len);
	tl_buf_free(&b);
}

static void test_roundtrip(void **state)
{
	(void)state;
	static const char *lines[] = {
	    FULL,
	    "{\"type\":\"open\",\"tenant\":\"t\",\"campaign\":\"c\",\"recipient\":\"r\",\"id\":\"1\","
	    "\"ts\":\"2026-12-03T18:00:00.999Z\",\"user_agent\":\"Mozilla/5.0\",\"machine\":true}",
	    "{\"type\":\"click\",\"id\":\"h1\",\"ts\":\"2026-12-03T18:00:00.000Z\","
	    "\"arrival\":\"2026-12-03T18:00:00.002Z\",\"ip\":\"::1\",\"head\":true,\"token\":\"v1.a.b\"}",
	    "{\"type\":\"unsubscribe\",\"campaign\":\"\xc3\xa9\\\"\\\\\",\"recipient\":\"x@y\",\"id\":\"u\","
	    "\"ts\":\"2030-01-01T00:00:00.000Z\",\"hashed\":true}",
	};
	for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
		struct tl_event a, c;
		char err[128];
		assert_int_equal(parse(lines[i], &a, err, sizeof err), 0);
		struct tl_buf b;
		tl_buf_init(&b, 0);
		assert_int_equal(tl_event_to_json(&a, &b), 0);
		assert_string_equal(b.data, lines[i]);
		assert_int_equal(tl_event_from_json(b.data, b.len, &arena, &c, err, sizeof err), 0);
		assert_int_equal(a.type, c.type);
		assert_int_equal(a.flags, c.flags);
		assert_int_equal(a.bounce_class, c.bounce_class);
		assert_true(a.ts_ms == c.ts_ms && a.arrival_ms == c.arrival_ms);
		assert_int_equal(a.campaign.n, c.campaign.n);
		assert_memory_equal(a.campaign.p, c.campaign.p, a.campaign.n);
		tl_buf_free(&b);
	}
}

static void test_validate(void **state)
{
	(void)state;
	char err[128];
	struct tl_event ev = {.type = TL_EV_OPEN, .ts_ms = 1};
	ev.tenant = TL_STR("t");
	ev.campaign = TL_STR("c");
	ev.recipient = TL_STR("r");
	ev.id = TL_STR("i");
	assert_int_equal(tl_event_validate(&ev, err, sizeof err), 0);

	struct tl_event e = ev;
	e.type = 0;
	assert_int_equal(tl_event_validate(&e, err, sizeof err), -TL_EINVAL);
	assert_string_equal(err, "unknown type 0");
	e = ev;
	e.tenant = TL_STR_NULL;
	assert_int_equal(tl_event_validate(&e, err, sizeof err), -TL_EINVAL);
	assert_string_equal(err, "missing tenant");
	e = ev;
	e.id = TL_STR_NULL;
	assert_int_equal(tl_event_validate(&e, err, sizeof err), -TL_EINVAL);
	assert_string_equal(err, "missing id");
	e = ev;
	e.ts_ms = 0;
	assert_int_equal(tl_event_validate(&e, err, sizeof err), -TL_EINVAL);
	assert_string_equal(err, "missing ts");
	e = ev;
	e.bounce_class = TL_BOUNCE_HARD;
	assert_int_equal(tl_event_validate(&e, err, sizeof err), -TL_EINVAL);
	assert_string_equal(err, "bounce_class only for bounced");
	e.type = TL_EV_BOUNCED;
	assert_int_equal(tl_event_validate(&e, err, sizeof err), 0);
	e.bounce_class = 7;
	assert_int_equal(tl_event_validate(&e, err, sizeof err), -TL_EINVAL);
	assert_string_equal(err, "unknown bounce_class");
	e = ev;
	e.flags = 0x8000;
	assert_int_equal(tl_event_validate(&e, err, sizeof err), -TL_EINVAL);
	assert_string_equal(err, "unknown flags 0x8000");
	e = ev;
	e.ip = tl_str_of("x", TL_MAX_IP + 1);
	assert_int_equal(tl_event_validate(&e, err, sizeof err), -TL_EINVAL);
	assert_string_equal(err, "ip too long");

	/* a hit needs only its token */
	struct tl_event h = {.type = TL_EV_CLICK, .flags = TL_EVF_HIT, .ts_ms = 1};
	assert_int_equal(tl_event_validate(&h, err, sizeof err), -TL_EINVAL);
	assert_string_equal(err, "missing token");
	h.token = TL_STR("v1.a.b");
	assert_int_equal(tl_event_validate(&h, err, sizeof err), 0);
	h.type = TL_EV_SENT;
	assert_int_equal(tl_event_validate(&h, err, sizeof err), -TL_EINVAL);
	assert_string_equal(err, "a hit must be an open or a click");
}

static void test_names(void **state)
{
	(void)state;
	for (int t = 1; t < TL_EV__COUNT; t++) {
		const char *n = tl_event_type_name((enum tl_event_type)t);
		assert_non_null(n);
		assert_int_equal(tl_event_type_parse(n, strlen(n)), t);
	}
	assert_null(tl_event_type_name(TL_EV_NONE));
	assert_null(tl_event_type_name(TL_EV__COUNT));
	assert_int_equal(tl_event_type_parse("ope", 3), TL_EV_NONE);
	assert_int_equal(tl_event_type_parse("opens", 5), TL_EV_NONE);
	assert_int_equal(tl_event_type_parse("open", 4), TL_EV_OPEN);
	assert_string_equal(tl_bounce_class_name(TL_BOUNCE_BLOCK), "block");
	assert_int_equal(tl_bounce_class_parse("soft", 4), TL_BOUNCE_SOFT);
	assert_int_equal(tl_bounce_class_parse("", 0), -1);
	assert_int_equal(tl_bounce_class_parse("hardx", 5), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_full_event, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_minimal_and_variants, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_lines, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_json_syntax, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_too_long, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_arena_exhausted, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_to_json_canonical, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_validate, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_names, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
