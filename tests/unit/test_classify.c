/* test_classify.c — every classifier rule, positive and negative, and the
 * order in which they apply (docs/classifier.md). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "event/classify.h"

#include <stdio.h>
#include <string.h>

#define T0 1796320800000LL

static const char *const human_agents[] = {
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.6099.144 Mobile Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
    "",
};

static struct tl_event ev_of(enum tl_event_type type, const char *ua)
{
	struct tl_event ev = {0};
	ev.type = (uint8_t)type;
	ev.ts_ms = T0 + 3600 * 1000;
	ev.sent_ms = T0;
	ev.tenant = TL_STR("t");
	ev.campaign = TL_STR("c");
	ev.recipient = TL_STR("r");
	ev.id = TL_STR("i");
	ev.user_agent = tl_str_of(ua, strlen(ua));
	return ev;
}

static struct tl_classify_opts opts(void)
{
	struct tl_classify_opts o;
	tl_classify_defaults(&o);
	return o;
}

/* Classifies ev and checks the rule name and the flag it implies. */
static void expect(struct tl_event ev, const char *rule)
{
	struct tl_classify_opts o = opts();
	const char *got = tl_classify(&o, &ev);
	if ((rule == NULL) != (got == NULL) || (rule && strcmp(rule, got) != 0))
		fail_msg("type %d ua \"%.*s\": got %s, want %s", ev.type, (int)ev.user_agent.n,
		         ev.user_agent.p, got ? got : "NULL", rule ? rule : "NULL");
	unsigned flag = ev.type == TL_EV_OPEN ? TL_EVF_MACHINE : TL_EVF_BOT;
	assert_int_equal((ev.flags & flag) != 0, rule != NULL);
}

static void test_defaults(void **state)
{
	(void)state;
	struct tl_classify_opts o = opts();
	assert_true(o.machine_open_window_ms == 2000);
	assert_true(o.bot_click_window_ms == 2000);
}

static void test_humans(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof human_agents / sizeof human_agents[0]; i++) {
		expect(ev_of(TL_EV_OPEN, human_agents[i]), NULL);
		expect(ev_of(TL_EV_CLICK, human_agents[i]), NULL);
	}
	/* Outlook desktop fetches images itself: a human open, but a scanner click */
	const char *outlook = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17126; Pro)";
	expect(ev_of(TL_EV_OPEN, outlook), NULL);
	expect(ev_of(TL_EV_CLICK, outlook), "scanner_agent");
}

static void test_provider_machine_open(void **state)
{
	(void)state;
	struct tl_event ev = ev_of(TL_EV_OPEN, human_agents[0]);
	ev.flags |= TL_EVF_PROVIDER_MACHINE;
	expect(ev, "provider_machine_open");
	/* it is the first rule: it wins over every other one */
	ev = ev_of(TL_EV_OPEN, "Mozilla/5.0");
	ev.flags |= TL_EVF_PROVIDER_MACHINE | TL_EVF_HEAD;
	ev.ts_ms = ev.sent_ms;
	expect(ev, "provider_machine_open");
	/* the provider flag means nothing on a click */
	ev = ev_of(TL_EV_CLICK, human_agents[0]);
	ev.flags |= TL_EVF_PROVIDER_MACHINE;
	expect(ev, NULL);
}

static void test_apple_mpp_agent(void **state)
{
	(void)state;
	expect(ev_of(TL_EV_OPEN, "Mozilla/5.0"), "apple_mpp_agent");
	expect(ev_of(TL_EV_OPEN, "Mozilla/5.0 "), NULL);
	expect(ev_of(TL_EV_OPEN, "mozilla/5.0"), NULL);
	expect(ev_of(TL_EV_OPEN, "Mozilla/5.0 (iPhone)"), NULL);
	expect(ev_of(TL_EV_OPEN, "Mozilla/5"), NULL);
	/* an open rule only */
	expect(ev_of(TL_EV_CLICK, "Mozilla/5.0"), NULL);
	/* wins over the send window and HEAD */
	struct tl_event ev = ev_of(TL_EV_OPEN, "Mozilla/5.0");
	ev.ts_ms = ev.sent_ms + 1;
	ev.flags |= TL_EVF_HEAD;
	expect(ev, "apple_mpp_agent");
}

static void test_mail_proxy_agent(void **state)
{
	(void)state;
	expect(
	    ev_of(
	        TL_EV_OPEN,
	        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"),
	    "mail_proxy_agent");
	expect(ev_of(TL_EV_OPEN, "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"),
	       "mail_proxy_agent");
	expect(ev_of(TL_EV_OPEN, "googleimageproxy"), "mail_proxy_agent");
	expect(ev_of(TL_EV_OPEN, "GoogleImage Proxy"), NULL);
	expect(ev_of(TL_EV_OPEN, "YahooMail"), NULL);
	/* an open rule only */
	expect(ev_of(TL_EV_CLICK, "Mozilla/5.0 (via ggpht.com GoogleImageProxy)"), NULL);
}

static void test_open_within_send_window(void **state)
{
	(void)state;
	struct tl_event ev = ev_of(TL_EV_OPEN, human_agents[0]);
	ev.ts_ms = ev.sent_ms;
	expect(ev, "open_within_send_window");
	ev.ts_ms = ev.sent_ms + 1999;
	expect(ev, "open_within_send_window");
	ev.ts_ms = ev.sent_ms + 2000; /* the window is half-open */
	expect(ev, NULL);
	ev.ts_ms = ev.sent_ms - 1; /* before the send: clock skew, not a prefetch */
	expect(ev, NULL);
	ev.ts_ms = T0 + 10;
	ev.sent_ms = 0; /* send time unknown */
	expect(ev, NULL);
	ev.sent_ms = T0; /* extreme times from a decoded record must not overflow (UBSan) */
	ev.ts_ms = INT64_MIN;
	expect(ev, NULL);
	ev.ts_ms = INT64_MAX;
	expect(ev, NULL);

	struct tl_classify_opts o = opts();
	ev = ev_of(TL_EV_OPEN, human_agents[0]);
	ev.ts_ms = ev.sent_ms + 4000;
	o.machine_open_window_ms = 5000;
	assert_string_equal(tl_classify(&o, &ev), "open_within_send_window");
	o.machine_open_window_ms = 0; /* disabled */
	ev.ts_ms = ev.sent_ms;
	assert_null(tl_classify(&o, &ev));
	assert_int_equal(ev.flags & TL_EVF_MACHINE, 0);
	/* the click window does not apply to opens */
	o = opts();
	o.machine_open_window_ms = 0;
	o.bot_click_window_ms = 100000;
	ev.ts_ms = ev.sent_ms + 10;
	assert_null(tl_classify(&o, &ev));
}

static void test_head_request(void **state)
{
	(void)state;
	struct tl_event ev = ev_of(TL_EV_OPEN, human_agents[0]);
	ev.flags |= TL_EVF_HEAD;
	expect(ev, "head_request");
	ev = ev_of(TL_EV_CLICK, human_agents[0]);
	ev.flags |= TL_EVF_HEAD;
	expect(ev, "head_request");
	/* for clicks it is the first rule */
	ev = ev_of(TL_EV_CLICK, "curl/8.4.0");
	ev.flags |= TL_EVF_HEAD;
	ev.ts_ms = ev.sent_ms;
	expect(ev, "head_request");
	/* for opens the send window is checked before it */
	ev = ev_of(TL_EV_OPEN, human_agents[0]);
	ev.flags |= TL_EVF_HEAD;
	ev.ts_ms = ev.sent_ms;
	expect(ev, "open_within_send_window");
}

static void test_scanner_agent(void **state)
{
	(void)state;
	static const char *const scanners[] = {
	    "Mozilla/5.0 (compatible; Barracuda Sentinel)",
	    "Mimecast-URL-Protect/1.0",
	    "Proofpoint URL Defense",
	    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Word 16.0.4266)",
	    "Microsoft Office Existence Discovery",
	    "ms-office; MSOffice 16",
	    "Symantec Email Security",
	    "TrendMicro URL filter",
	    "Forcepoint",
	    "FireEye",
	    "python-requests/2.31.0",
	    "Python-urllib/3.11",
	    "curl/8.4.0",
	    "Wget/1.21.3",
	    "Go-http-client/1.1",
	    "Java/17.0.2",
	    "okhttp/4.12.0",
	    "Apache-HttpClient/4.5.14 (Java/17)",
	    "libwww-perl/6.72",
	    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0 "
	    "Safari/537.36",
	    "Mozilla/4.0 (compatible; MSIE 7.0; PhantomJS)",
	    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
	    "facebookexternalhit/1.1",
	    "WhatsApp/2.23.20.0",
	    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
	    "Mozilla/5.0 (compatible; Baiduspider/2.0)",
	    "Some Crawler 1.0",
	    "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5",
	    "BingPreview/1.0b",
	    "URL Scanner",
	    "CURL/8.0", /* case-insensitive */
	};
	for (size_t i = 0; i < sizeof scanners / sizeof scanners[0]; i++) {
		expect(ev_of(TL_EV_CLICK, scanners[i]), "scanner_agent");
		/* a click rule only: the same agent fetching the pixel is not a scanner rule */
		expect(ev_of(TL_EV_OPEN, scanners[i]), NULL);
	}
	/* wins over the send window */
	struct tl_event ev = ev_of(TL_EV_CLICK, "curl/8.4.0");
	ev.ts_ms = ev.sent_ms;
	expect(ev, "scanner_agent");
	/* near misses */
	expect(ev_of(TL_EV_CLICK, "curl 8"), NULL);
	expect(ev_of(TL_EV_CLICK, "Microsoft Office"), NULL);
	expect(ev_of(TL_EV_CLICK, "b o t"), NULL);

	/* a token beyond TL_MAX_USER_AGENT bytes is not looked at; one within is */
	static char longua[TL_MAX_USER_AGENT + 100];
	memset(longua, 'x', sizeof longua - 1);
	longua[sizeof longua - 1] = '\0';
	memcpy(longua + TL_MAX_USER_AGENT + 10, "bot", 3);
	expect(ev_of(TL_EV_CLICK, longua), NULL);
	memcpy(longua + TL_MAX_USER_AGENT - 3, "bot", 3);
	expect(ev_of(TL_EV_CLICK, longua), "scanner_agent");
}

/* The per-thread memo of agent verdicts changes no answer: many agents,
 * more than its slots, interleaved and repeated, each as often classified as
 * the first time, and one agent longer than the memo takes. */
static void test_agent_memo(void **state)
{
	(void)state;
	char agents[300][64];
	for (int i = 0; i < 300; i++)
		snprintf(agents[i], sizeof agents[i], i % 3 ? "Mozilla/5.0 client %d" : "Proofpoint %d", i);
	static char longua[400];
	memset(longua, 'y', sizeof longua - 1);
	memcpy(longua + 300, "curl/", 5);
	for (int round = 0; round < 4; round++) {
		for (int i = 0; i < 300; i++) {
			int k = (i * 7 + round * 13) % 300;
			expect(ev_of(TL_EV_CLICK, agents[k]), k % 3 ? NULL : "scanner_agent");
			expect(ev_of(TL_EV_OPEN, agents[k]), NULL);
		}
		expect(ev_of(TL_EV_CLICK, longua), "scanner_agent");
		expect(ev_of(TL_EV_OPEN, "Mozilla/5.0 (via ggpht.com GoogleImageProxy)"), "mail_proxy_agent");
	}
}

static void test_click_within_send_window(void **state)
{
	(void)state;
	struct tl_event ev = ev_of(TL_EV_CLICK, human_agents[1]);
	ev.ts_ms = ev.sent_ms + 500;
	expect(ev, "click_within_send_window");
	ev.ts_ms = ev.sent_ms + 1999;
	expect(ev, "click_within_send_window");
	ev.ts_ms = ev.sent_ms + 2000;
	expect(ev, NULL);
	ev.ts_ms = ev.sent_ms - 5;
	expect(ev, NULL);
	ev.sent_ms = 0;
	ev.ts_ms = 100;
	expect(ev, NULL);

	struct tl_classify_opts o = opts();
	o.bot_click_window_ms = 60000;
	ev = ev_of(TL_EV_CLICK, human_agents[1]);
	ev.ts_ms = ev.sent_ms + 30000;
	assert_string_equal(tl_classify(&o, &ev), "click_within_send_window");
	o.bot_click_window_ms = -1;
	assert_null(tl_classify(&o, &ev));
	/* the open window does not apply to clicks */
	o = opts();
	o.bot_click_window_ms = 0;
	o.machine_open_window_ms = 100000;
	ev.ts_ms = ev.sent_ms + 10;
	assert_null(tl_classify(&o, &ev));
}

static void test_other_types_and_reclassify(void **state)
{
	(void)state;
	struct tl_classify_opts o = opts();
	for (int t = 1; t < TL_EV__COUNT; t++) {
		if (t == TL_EV_OPEN || t == TL_EV_CLICK)
			continue;
		struct tl_event ev = ev_of((enum tl_event_type)t, "curl/8.4.0");
		ev.flags = TL_EVF_HEAD | TL_EVF_PROVIDER_MACHINE;
		ev.ts_ms = ev.sent_ms;
		assert_null(tl_classify(&o, &ev));
		assert_int_equal(ev.flags, TL_EVF_HEAD | TL_EVF_PROVIDER_MACHINE);
	}
	/* a stale flag from an earlier classification is cleared */
	struct tl_event ev = ev_of(TL_EV_CLICK, human_agents[0]);
	ev.flags = TL_EVF_BOT | TL_EVF_HIT;
	assert_null(tl_classify(&o, &ev));
	assert_int_equal(ev.flags, TL_EVF_HIT);
	ev = ev_of(TL_EV_OPEN, human_agents[0]);
	ev.flags = TL_EVF_MACHINE;
	assert_null(tl_classify(&o, &ev));
	assert_int_equal(ev.flags, 0);
	/* and classifying twice gives the same answer */
	ev = ev_of(TL_EV_OPEN, "Mozilla/5.0");
	assert_string_equal(tl_classify(&o, &ev), "apple_mpp_agent");
	assert_string_equal(tl_classify(&o, &ev), "apple_mpp_agent");
	assert_int_equal(ev.flags, TL_EVF_MACHINE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_humans),
	    cmocka_unit_test(test_provider_machine_open),
	    cmocka_unit_test(test_apple_mpp_agent),
	    cmocka_unit_test(test_mail_proxy_agent),
	    cmocka_unit_test(test_open_within_send_window),
	    cmocka_unit_test(test_head_request),
	    cmocka_unit_test(test_scanner_agent),
	    cmocka_unit_test(test_click_within_send_window),
	    cmocka_unit_test(test_agent_memo),
	    cmocka_unit_test(test_other_types_and_reclassify),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
