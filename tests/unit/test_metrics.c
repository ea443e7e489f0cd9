/* test_metrics.c — metric names, counting per event type, unique kinds,
 * rates (with nulls) and their JSON. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "event/metrics.h"

#include <jansson.h>
#include <string.h>

static const char *const names[TL_M__COUNT] = {
    "sent",
    "delivered",
    "deferred",
    "bounced",
    "hard_bounced",
    "soft_bounced",
    "dropped",
    "complaints",
    "unsubscribes",
    "opens",
    "machine_opens",
    "unique_opens",
    "unique_human_opens",
    "clicks",
    "bot_clicks",
    "unique_clicks",
    "unique_human_clicks",
};

static void test_names(void **state)
{
	(void)state;
	for (int m = 0; m < TL_M__COUNT; m++) {
		assert_string_equal(tl_metric_name((enum tl_metric)m), names[m]);
		assert_int_equal(tl_metric_parse(names[m], strlen(names[m])), m);
	}
	assert_null(tl_metric_name(TL_M__COUNT));
	assert_int_equal(tl_metric_parse("open", 4), -1);
	assert_int_equal(tl_metric_parse("opens2", 6), -1);
	assert_int_equal(tl_metric_parse("", 0), -1);
	assert_int_equal(tl_metric_parse("opens", 4), -1);

	static const char *const rates[TL_R__COUNT] = {
	    "delivery_rate", "bounce_rate",        "open_rate",      "human_open_rate",
	    "click_rate",    "click_to_open_rate", "complaint_rate", "unsubscribe_rate",
	};
	for (int r = 0; r < TL_R__COUNT; r++)
		assert_string_equal(tl_rate_name((enum tl_rate)r), rates[r]);
	assert_null(tl_rate_name(TL_R__COUNT));

	assert_int_equal(tl_unique_metric(TL_U_OPEN), TL_M_UNIQUE_OPENS);
	assert_int_equal(tl_unique_metric(TL_U_HUMAN_OPEN), TL_M_UNIQUE_HUMAN_OPENS);
	assert_int_equal(tl_unique_metric(TL_U_CLICK), TL_M_UNIQUE_CLICKS);
	assert_int_equal(tl_unique_metric(TL_U_HUMAN_CLICK), TL_M_UNIQUE_HUMAN_CLICKS);
}

/* Counts one event into a zeroed delta and checks that exactly the listed
 * metrics (terminated by -1) went up by one. */
static void expect_counts(uint8_t type, uint8_t bounce, uint16_t flags, ...)
{
	struct tl_event ev = {.type = type, .bounce_class = bounce, .flags = flags, .ts_ms = 1};
	int64_t delta[TL_M__COUNT] = {0};
	int64_t want[TL_M__COUNT] = {0};
	va_list ap;
	va_start(ap, flags);
	for (int m; (m = va_arg(ap, int)) >= 0;)
		want[m] = 1;
	va_end(ap);
	tl_metrics_count_event(&ev, delta);
	for (int m = 0; m < TL_M__COUNT; m++) {
		if (delta[m] != want[m])
			fail_msg("type %d bounce %d flags 0x%x: %s is %lld, want %lld", type, bounce, flags,
			         names[m], (long long)delta[m], (long long)want[m]);
	}
	/* counting adds to what is there */
	tl_metrics_count_event(&ev, delta);
	for (int m = 0; m < TL_M__COUNT; m++)
		assert_true(delta[m] == 2 * want[m]);
}

static void test_count_each_type(void **state)
{
	(void)state;
	expect_counts(TL_EV_SENT, 0, 0, TL_M_SENT, -1);
	expect_counts(TL_EV_DELIVERED, 0, 0, TL_M_DELIVERED, -1);
	expect_counts(TL_EV_DEFERRED, 0, 0, TL_M_DEFERRED, -1);
	expect_counts(TL_EV_BOUNCED, TL_BOUNCE_NONE, 0, TL_M_BOUNCED, -1);
	expect_counts(TL_EV_BOUNCED, TL_BOUNCE_HARD, 0, TL_M_BOUNCED, TL_M_HARD_BOUNCED, -1);
	expect_counts(TL_EV_BOUNCED, TL_BOUNCE_SOFT, 0, TL_M_BOUNCED, TL_M_SOFT_BOUNCED, -1);
	expect_counts(TL_EV_BOUNCED, TL_BOUNCE_BLOCK, 0, TL_M_BOUNCED, -1);
	expect_counts(TL_EV_DROPPED, 0, 0, TL_M_DROPPED, -1);
	expect_counts(TL_EV_COMPLAINT, 0, 0, TL_M_COMPLAINTS, -1);
	expect_counts(TL_EV_UNSUBSCRIBE, 0, 0, TL_M_UNSUBSCRIBES, -1);
	expect_counts(TL_EV_OPEN, 0, 0, TL_M_OPENS, -1);
	expect_counts(TL_EV_OPEN, 0, TL_EVF_HEAD, TL_M_OPENS, -1);
	expect_counts(TL_EV_OPEN, 0, TL_EVF_MACHINE, TL_M_OPENS, TL_M_MACHINE_OPENS, -1);
	expect_counts(TL_EV_OPEN, 0, TL_EVF_PROVIDER_MACHINE, TL_M_OPENS, TL_M_MACHINE_OPENS, -1);
	expect_counts(TL_EV_OPEN, 0, TL_EVF_MACHINE | TL_EVF_PROVIDER_MACHINE, TL_M_OPENS, TL_M_MACHINE_OPENS,
	              -1);
	expect_counts(TL_EV_OPEN, 0, TL_EVF_BOT, TL_M_OPENS, -1);
	expect_counts(TL_EV_CLICK, 0, 0, TL_M_CLICKS, -1);
	expect_counts(TL_EV_CLICK, 0, TL_EVF_BOT, TL_M_CLICKS, TL_M_BOT_CLICKS, -1);
	expect_counts(TL_EV_CLICK, 0, TL_EVF_MACHINE, TL_M_CLICKS, -1);
	expect_counts(TL_EV_NONE, 0, 0, -1);
	expect_counts(200, 0, 0, -1);
}

static unsigned kinds(uint8_t type, uint16_t flags)
{
	struct tl_event ev = {.type = type, .flags = flags};
	return tl_metrics_unique_kinds(&ev);
}

static void test_unique_kinds(void **state)
{
	(void)state;
	assert_int_equal(kinds(TL_EV_OPEN, 0), (1u << TL_U_OPEN) | (1u << TL_U_HUMAN_OPEN));
	assert_int_equal(kinds(TL_EV_OPEN, TL_EVF_MACHINE), 1u << TL_U_OPEN);
	assert_int_equal(kinds(TL_EV_OPEN, TL_EVF_PROVIDER_MACHINE), 1u << TL_U_OPEN);
	assert_int_equal(kinds(TL_EV_CLICK, 0), (1u << TL_U_CLICK) | (1u << TL_U_HUMAN_CLICK));
	assert_int_equal(kinds(TL_EV_CLICK, TL_EVF_BOT), 1u << TL_U_CLICK);
	for (int t = 0; t < TL_EV__COUNT; t++) {
		if (t != TL_EV_OPEN && t != TL_EV_CLICK)
			assert_int_equal(kinds((uint8_t)t, 0), 0);
	}
}

static void test_rates(void **state)
{
	(void)state;
	int64_t c[TL_M__COUNT] = {0};
	double r[TL_R__COUNT];
	bool v[TL_R__COUNT];
	tl_rates_compute(c, r, v);
	for (int i = 0; i < TL_R__COUNT; i++)
		assert_false(v[i]);

	c[TL_M_SENT] = 1000;
	c[TL_M_DELIVERED] = 980;
	c[TL_M_BOUNCED] = 20;
	c[TL_M_UNIQUE_OPENS] = 490;
	c[TL_M_UNIQUE_HUMAN_OPENS] = 245;
	c[TL_M_UNIQUE_CLICKS] = 49;
	c[TL_M_COMPLAINTS] = 1;
	c[TL_M_UNSUBSCRIBES] = 7;
	tl_rates_compute(c, r, v);
	for (int i = 0; i < TL_R__COUNT; i++)
		assert_true(v[i]);
	assert_true(r[TL_R_DELIVERY] == 0.98);
	assert_true(r[TL_R_BOUNCE] == 0.02);
	assert_true(r[TL_R_OPEN] == 0.5);
	assert_true(r[TL_R_HUMAN_OPEN] == 0.25);
	assert_true(r[TL_R_CLICK] == 0.05);
	assert_true(r[TL_R_CLICK_TO_OPEN] == 0.1);
	assert_true(r[TL_R_COMPLAINT] == 1.0 / 980);
	assert_true(r[TL_R_UNSUBSCRIBE] == 7.0 / 980);

	/* only the rates over sent exist before anything is delivered */
	int64_t s[TL_M__COUNT] = {0};
	s[TL_M_SENT] = 4;
	s[TL_M_BOUNCED] = 1;
	tl_rates_compute(s, r, v);
	assert_true(v[TL_R_DELIVERY] && r[TL_R_DELIVERY] == 0.0);
	assert_true(v[TL_R_BOUNCE] && r[TL_R_BOUNCE] == 0.25);
	for (int i = TL_R_OPEN; i < TL_R__COUNT; i++)
		assert_false(v[i]);
	/* click-to-open needs opens, not deliveries */
	int64_t d[TL_M__COUNT] = {0};
	d[TL_M_DELIVERED] = 10;
	d[TL_M_UNIQUE_CLICKS] = 2;
	tl_rates_compute(d, r, v);
	assert_false(v[TL_R_CLICK_TO_OPEN]);
	assert_true(v[TL_R_CLICK] && r[TL_R_CLICK] == 0.2);
	assert_false(v[TL_R_DELIVERY]);
}

static void test_counts_json(void **state)
{
	(void)state;
	int64_t c[TL_M__COUNT];
	for (int m = 0; m < TL_M__COUNT; m++)
		c[m] = m * 10;
	c[TL_M_UNIQUE_HUMAN_CLICKS] = INT64_MAX;
	struct tl_buf b;
	tl_buf_init(&b, 0);
	assert_int_equal(tl_buf_puts(&b, "x"), 0);
	assert_int_equal(tl_metrics_counts_json(c, &b), 0);
	assert_string_equal(
	    b.data, "x{\"sent\":0,\"delivered\":10,\"deferred\":20,\"bounced\":30,\"hard_bounced\":40,"
	            "\"soft_bounced\":50,\"dropped\":60,\"complaints\":70,\"unsubscribes\":80,"
	            "\"opens\":90,\"machine_opens\":100,\"unique_opens\":110,"
	            "\"unique_human_opens\":120,\"clicks\":130,\"bot_clicks\":140,"
	            "\"unique_clicks\":150,\"unique_human_clicks\":9223372036854775807}");
	/* a capped buffer: refused, unchanged */
	struct tl_buf s;
	tl_buf_init(&s, 40);
	assert_int_equal(tl_metrics_counts_json(c, &s), -TL_ETOOBIG);
	assert_int_equal(s.len, 0);
	tl_buf_free(&s);
	tl_buf_free(&b);
}

static void test_rates_json(void **state)
{
	(void)state;
	int64_t c[TL_M__COUNT] = {0};
	struct tl_buf b;
	tl_buf_init(&b, 0);
	assert_int_equal(tl_metrics_rates_json(c, &b), 0);
	assert_string_equal(b.data, "{\"delivery_rate\":null,\"bounce_rate\":null,\"open_rate\":null,"
	                            "\"human_open_rate\":null,\"click_rate\":null,"
	                            "\"click_to_open_rate\":null,\"complaint_rate\":null,"
	                            "\"unsubscribe_rate\":null}");
	c[TL_M_SENT] = 3;
	c[TL_M_DELIVERED] = 2;
	c[TL_M_BOUNCED] = 1;
	c[TL_M_UNIQUE_OPENS] = 2;
	c[TL_M_UNIQUE_HUMAN_OPENS] = 1;
	c[TL_M_UNIQUE_CLICKS] = 3; /* rates may exceed 1 when counts disagree */
	tl_buf_reset(&b);
	assert_int_equal(tl_metrics_rates_json(c, &b), 0);
	assert_string_equal(b.data, "{\"delivery_rate\":0.666667,\"bounce_rate\":0.333333,\"open_rate\":1,"
	                            "\"human_open_rate\":0.5,\"click_rate\":1.5,\"click_to_open_rate\":1.5,"
	                            "\"complaint_rate\":0,\"unsubscribe_rate\":0}");
	/* valid JSON with every key */
	json_error_t je;
	json_t *j = json_loads(b.data, 0, &je);
	assert_non_null(j);
	assert_int_equal(json_object_size(j), TL_R__COUNT);
	json_decref(j);

	c[TL_M_SENT] = 10000000;
	c[TL_M_BOUNCED] = 1;
	tl_buf_reset(&b);
	assert_int_equal(tl_metrics_rates_json(c, &b), 0);
	assert_non_null(strstr(b.data, "\"bounce_rate\":1e-07,"));
	j = json_loads(b.data, 0, &je);
	assert_non_null(j);
	json_decref(j);
	tl_buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_names),        cmocka_unit_test(test_count_each_type),
	    cmocka_unit_test(test_unique_kinds), cmocka_unit_test(test_rates),
	    cmocka_unit_test(test_counts_json),  cmocka_unit_test(test_rates_json),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
