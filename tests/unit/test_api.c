/* test_api.c — the API role end to end over a temporary SQLite store: auth,
 * tenant isolation, JSON shapes, errors, series buckets, SSE live events,
 * dashboard assets, /metrics, /healthz, the default-source switch. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api/api.h"
#include "core/clock.h"
#include "event/metrics.h"
#include "store/store.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define DEADLINE_MS 10000

struct fixture {
	char dir[64];
	char uri[128];
	struct tl_store *st; /* the test's own writer connection */
	char key_acme[TL_API_KEY_MAX];
	char key_globex[TL_API_KEY_MAX];
	struct tl_api *api;
	pthread_t thread;
	int port;
};

static struct fixture fx;

/* 2026-12-03T18:00:00Z */
static int64_t t0(void)
{
	return tl_days_from_civil(2026, 12, 3) * 86400000 + 18 * 3600000;
}

static void add_counts(enum tl_source src, const char *tenant, const char *campaign, const char *variant,
                       int64_t minute_ms, const int64_t delta[TL_M__COUNT])
{
	struct tl_count_row row = {0};
	row.tenant = tl_str_of(tenant, strlen(tenant));
	row.campaign = tl_str_of(campaign, strlen(campaign));
	row.variant = tl_str_of(variant, strlen(variant));
	row.minute_ms = minute_ms;
	memcpy(row.delta, delta, sizeof row.delta);
	row.first_ts_ms = minute_ms + 123;
	row.last_ts_ms = minute_ms + 59000;
	assert_int_equal(tl_store_begin(fx.st, src), 0);
	assert_int_equal(tl_store_add_counts(fx.st, &row, 1), 0);
	assert_int_equal(tl_store_commit(fx.st), 0);
}

static void add_one(const char *tenant, const char *campaign, const char *variant, int64_t minute_ms,
                    enum tl_metric m, int64_t v)
{
	int64_t d[TL_M__COUNT] = {0};
	d[m] = v;
	add_counts(TL_SOURCE_REALTIME, tenant, campaign, variant, minute_ms, d);
}

static int extra_metrics(void *arg, struct tl_buf *out)
{
	(void)arg;
	return tl_buf_puts(out, "test_extra_metric 1\n");
}

static void *api_thread(void *arg)
{
	(void)tl_api_run(arg);
	return NULL;
}

static int group_setup(void **state)
{
	(void)state;
	memset(&fx, 0, sizeof fx);
	snprintf(fx.dir, sizeof fx.dir, "/tmp/tally-test-api-XXXXXX");
	if (!mkdtemp(fx.dir))
		return -1;
	snprintf(fx.uri, sizeof fx.uri, "sqlite:%s/tally.db", fx.dir);
	if (tl_store_open(fx.uri, &fx.st))
		return -1;
	struct tl_tenant t;
	memset(&t, 0, sizeof t);
	if (tl_store_tenant_add(fx.st, "acme", &t, fx.key_acme))
		return -1;
	if (tl_store_tenant_add(fx.st, "globex", &t, fx.key_globex))
		return -1;

	/* acme: spring-sale (variants A and B, three minutes), fall; globex: secret */
	const int64_t h18 = t0();
	int64_t d[TL_M__COUNT] = {0};
	d[TL_M_SENT] = 10, d[TL_M_DELIVERED] = 8, d[TL_M_OPENS] = 3, d[TL_M_UNIQUE_OPENS] = 2;
	d[TL_M_CLICKS] = 1, d[TL_M_UNIQUE_CLICKS] = 1;
	add_counts(TL_SOURCE_REALTIME, "acme", "spring-sale", "A", h18, d);
	d[TL_M_SENT] = 5, d[TL_M_DELIVERED] = 4, d[TL_M_OPENS] = 2, d[TL_M_UNIQUE_OPENS] = 2;
	d[TL_M_CLICKS] = 0, d[TL_M_UNIQUE_CLICKS] = 0;
	add_counts(TL_SOURCE_REALTIME, "acme", "spring-sale", "B", h18 + 60000, d);
	add_one("acme", "spring-sale", "A", h18 + 90 * 60000, TL_M_OPENS, 5); /* 19:30 */
	add_one("acme", "fall", "", h18, TL_M_SENT, 7);
	add_one("acme", "a b/c", "", h18, TL_M_SENT, 1);
	add_one("globex", "secret", "", h18, TL_M_SENT, 99);
	int64_t b[TL_M__COUNT] = {0};
	b[TL_M_SENT] = 1234;
	add_counts(TL_SOURCE_BATCH, "acme", "spring-sale", "A", h18, b);

	struct tl_api_opts o = {0};
	o.addr = "127.0.0.1:0";
	o.db_uri = fx.uri;
	tl_http_limits_defaults(&o.limits);
	o.default_source = TL_SOURCE_REALTIME;
	o.live_interval_ms = 20;
	o.extra_metrics = extra_metrics;
	if (tl_api_create(&o, &fx.api))
		return -1;
	fx.port = tl_api_port(fx.api);
	if (fx.port <= 0 || pthread_create(&fx.thread, NULL, api_thread, fx.api))
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	tl_api_stop(fx.api);
	pthread_join(fx.thread, NULL);
	tl_api_destroy(fx.api);
	tl_store_close(fx.st);
	char path[128];
	const char *files[] = {"tally.db", "tally.db-wal", "tally.db-shm"};
	for (size_t i = 0; i < 3; i++) {
		snprintf(path, sizeof path, "%s/%s", fx.dir, files[i]);
		unlink(path);
	}
	rmdir(fx.dir);
	return 0;
}

/* ---- a raw HTTP/1.0 client ---------------------------------------------- */

struct resp {
	int status;
	char raw[1 << 20];
	size_t len;
	const char *body; /* into raw */
};

static int dial(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)fx.port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	return fd;
}

static void send_all(int fd, const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, s, n);
		if (w < 0 && errno == EINTR)
			continue;
		assert_true(w > 0);
		s += w, n -= (size_t)w;
	}
}

static void send_request(int fd, const char *method, const char *path, const char *key)
{
	char req[2048];
	int n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: localhost\r\n%s%s%s\r\n", method, path,
	                 key ? "Authorization: Bearer " : "", key ? key : "", key ? "\r\n" : "");
	assert_true(n > 0 && (size_t)n < sizeof req);
	send_all(fd, req, (size_t)n);
}

/* Reads what is available within wait_ms into buf; returns bytes read, 0 on EOF, -1 on timeout. */
static ssize_t read_some(int fd, char *buf, size_t cap, int wait_ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	int rc = poll(&p, 1, wait_ms);
	if (rc <= 0)
		return -1;
	ssize_t r = read(fd, buf, cap);
	return r < 0 ? 0 : r;
}

static struct resp *request(const char *method, const char *path, const char *key)
{
	static struct resp r;
	memset(&r, 0, sizeof r);
	int fd = dial();
	send_request(fd, method, path, key);
	int64_t deadline = tl_mono_ms() + DEADLINE_MS;
	for (;;) {
		assert_true(tl_mono_ms() < deadline);
		assert_true(r.len < sizeof r.raw - 1);
		ssize_t n = read_some(fd, r.raw + r.len, sizeof r.raw - 1 - r.len, 100);
		if (n == 0)
			break;
		if (n > 0)
			r.len += (size_t)n;
	}
	close(fd);
	r.raw[r.len] = '\0';
	assert_int_equal(sscanf(r.raw, "HTTP/1.%*d %d", &r.status), 1);
	const char *sep = strstr(r.raw, "\r\n\r\n");
	assert_non_null(sep);
	r.body = sep + 4;
	return &r;
}

/* Value of a response header (case-insensitive name), copied into a static buffer. */
static const char *header(const struct resp *r, const char *name)
{
	static char v[256];
	size_t nl = strlen(name);
	const char *end = strstr(r->raw, "\r\n\r\n");
	for (const char *p = strstr(r->raw, "\r\n"); p && p < end; p = strstr(p + 2, "\r\n")) {
		const char *h = p + 2;
		if (strncasecmp(h, name, nl) == 0 && h[nl] == ':') {
			h += nl + 1;
			while (*h == ' ')
				h++;
			size_t n = strcspn(h, "\r");
			if (n >= sizeof v)
				n = sizeof v - 1;
			memcpy(v, h, n);
			v[n] = '\0';
			return v;
		}
	}
	return NULL;
}

static json_t *get_json(const char *path, const char *key, int want_status)
{
	struct resp *r = request("GET", path, key);
	if (r->status != want_status)
		fprintf(stderr, "GET %s: %d %s\n", path, r->status, r->body);
	assert_int_equal(r->status, want_status);
	const char *ct = header(r, "content-type");
	assert_non_null(ct);
	assert_non_null(strstr(ct, "application/json"));
	json_error_t err;
	json_t *j = json_loads(r->body, 0, &err);
	if (!j)
		fprintf(stderr, "bad JSON from %s: %s\n%s\n", path, err.text, r->body);
	assert_non_null(j);
	return j;
}

/* Checks an error body and that its message starts with param (if given). */
static void expect_error(const char *path, const char *key, int status, const char *code, const char *param)
{
	json_t *j = get_json(path, key, status);
	json_t *e = json_object_get(j, "error");
	assert_non_null(e);
	assert_string_equal(json_string_value(json_object_get(e, "code")), code);
	const char *msg = json_string_value(json_object_get(e, "message"));
	assert_non_null(msg);
	if (param)
		assert_int_equal(strncmp(msg, param, strlen(param)), 0);
	json_decref(j);
}

static int64_t count_of(json_t *obj, const char *metric)
{
	json_t *v = json_object_get(json_object_get(obj, "counts"), metric);
	assert_true(json_is_integer(v));
	return json_integer_value(v);
}

/* ---- tests ---------------------------------------------------------------- */

static void test_auth(void **state)
{
	(void)state;
	expect_error("/v1/campaigns", NULL, 401, "unauthorized", NULL);
	expect_error("/v1/campaigns", "not-a-key", 401, "unauthorized", NULL);
	expect_error("/v1/campaigns/spring-sale/metrics", "x", 401, "unauthorized", NULL);
	expect_error("/v1/campaigns/spring-sale/series?metric=opens", NULL, 401, "unauthorized", NULL);
	/* ?key= is only for /v1/live */
	char path[256];
	snprintf(path, sizeof path, "/v1/campaigns?key=%s", fx.key_acme);
	expect_error(path, NULL, 401, "unauthorized", NULL);
	expect_error("/v1/live", NULL, 401, "unauthorized", NULL);
	expect_error("/v1/live?key=nope", NULL, 401, "unauthorized", NULL);
	struct resp *r = request("GET", "/v1/campaigns", NULL);
	assert_non_null(header(r, "www-authenticate"));
}

static json_t *find_campaign(json_t *list, const char *name)
{
	size_t i;
	json_t *c;
	json_array_foreach(list, i, c)
	{
		if (strcmp(json_string_value(json_object_get(c, "campaign")), name) == 0)
			return c;
	}
	return NULL;
}

static void test_campaigns(void **state)
{
	(void)state;
	json_t *j = get_json("/v1/campaigns", fx.key_acme, 200);
	json_t *list = json_object_get(j, "campaigns");
	assert_true(json_is_array(list));
	assert_int_equal(json_array_size(list), 3);
	/* ordered by name */
	assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "campaign")), "a b/c");
	assert_string_equal(json_string_value(json_object_get(json_array_get(list, 1), "campaign")), "fall");
	json_t *c = find_campaign(list, "spring-sale");
	assert_non_null(c);
	assert_null(find_campaign(list, "secret"));
	assert_int_equal(json_object_size(json_object_get(c, "counts")), TL_M__COUNT);
	assert_int_equal(json_object_size(json_object_get(c, "rates")), TL_R__COUNT);
	assert_int_equal(count_of(c, "sent"), 15);
	assert_int_equal(count_of(c, "delivered"), 12);
	assert_int_equal(count_of(c, "opens"), 10);
	assert_int_equal(count_of(c, "unique_opens"), 4);
	json_t *rates = json_object_get(c, "rates");
	assert_true(json_is_real(json_object_get(rates, "delivery_rate")));
	assert_true(json_real_value(json_object_get(rates, "delivery_rate")) > 0.79 &&
	            json_real_value(json_object_get(rates, "delivery_rate")) < 0.81);
	assert_string_equal(json_string_value(json_object_get(c, "first_event")), "2026-12-03T18:00:00.123Z");
	assert_string_equal(json_string_value(json_object_get(c, "last_event")), "2026-12-03T19:30:59.000Z");
	/* a campaign with no deliveries has null rates */
	json_t *fall = find_campaign(list, "fall");
	assert_true(json_is_null(json_object_get(json_object_get(fall, "rates"), "open_rate")));
	assert_true(json_is_null(json_object_get(json_object_get(fall, "rates"), "delivery_rate")) == 0);
	json_decref(j);

	/* the other tenant sees only its own */
	j = get_json("/v1/campaigns", fx.key_globex, 200);
	list = json_object_get(j, "campaigns");
	assert_int_equal(json_array_size(list), 1);
	c = find_campaign(list, "secret");
	assert_non_null(c);
	assert_int_equal(count_of(c, "sent"), 99);
	json_decref(j);

	expect_error("/v1/campaigns?source=weekly", fx.key_acme, 400, "bad_parameter", "source");
}

static void test_metrics(void **state)
{
	(void)state;
	json_t *j = get_json("/v1/campaigns/spring-sale/metrics", fx.key_acme, 200);
	assert_string_equal(json_string_value(json_object_get(j, "tenant")), "acme");
	assert_string_equal(json_string_value(json_object_get(j, "campaign")), "spring-sale");
	assert_true(json_is_null(json_object_get(j, "variant")));
	assert_string_equal(json_string_value(json_object_get(j, "source")), "realtime");
	assert_int_equal(json_object_size(json_object_get(j, "counts")), TL_M__COUNT);
	assert_int_equal(json_object_size(json_object_get(j, "rates")), TL_R__COUNT);
	assert_int_equal(count_of(j, "sent"), 15);
	assert_true(json_is_string(json_object_get(j, "updated_at")));
	json_t *rates = json_object_get(j, "rates");
	/* click_to_open = unique_clicks / unique_opens = 1 / 4 */
	assert_true(json_real_value(json_object_get(rates, "click_to_open_rate")) > 0.249 &&
	            json_real_value(json_object_get(rates, "click_to_open_rate")) < 0.251);
	json_decref(j);

	j = get_json("/v1/campaigns/spring-sale/metrics?variant=A", fx.key_acme, 200);
	assert_string_equal(json_string_value(json_object_get(j, "variant")), "A");
	assert_int_equal(count_of(j, "sent"), 10);
	assert_int_equal(count_of(j, "opens"), 8);
	json_decref(j);

	/* percent-decoded campaign names */
	j = get_json("/v1/campaigns/a%20b%2Fc/metrics", fx.key_acme, 200);
	assert_string_equal(json_string_value(json_object_get(j, "campaign")), "a b/c");
	assert_int_equal(count_of(j, "sent"), 1);
	json_decref(j);

	/* batch source is its own set of tables */
	j = get_json("/v1/campaigns/spring-sale/metrics?source=batch", fx.key_acme, 200);
	assert_string_equal(json_string_value(json_object_get(j, "source")), "batch");
	assert_int_equal(count_of(j, "sent"), 1234);
	json_decref(j);

	/* isolation: globex cannot read acme's campaign, and vice versa */
	expect_error("/v1/campaigns/spring-sale/metrics", fx.key_globex, 404, "not_found", NULL);
	expect_error("/v1/campaigns/secret/metrics", fx.key_acme, 404, "not_found", NULL);
	expect_error("/v1/campaigns/nope/metrics", fx.key_acme, 404, "not_found", NULL);
	expect_error("/v1/campaigns/spring-sale/metrics?variant=Z", fx.key_acme, 404, "not_found", NULL);
	expect_error("/v1/campaigns/fall/metrics?source=batch", fx.key_acme, 404, "not_found", NULL);
	expect_error("/v1/campaigns/spring-sale/metrics?source=nightly", fx.key_acme, 400, "bad_parameter",
	             "source");
	expect_error("/v1/campaigns/bad%zz/metrics", fx.key_acme, 400, "bad_parameter", "campaign");
	expect_error("/v1/campaigns/nul%00/metrics", fx.key_acme, 400, "bad_parameter", "campaign");
	/* not UTF-8 (a stray byte, an overlong NUL): no stored name can match, and
	 * PostgreSQL would refuse the parameter */
	expect_error("/v1/campaigns/bad%FF/metrics", fx.key_acme, 400, "bad_parameter",
	             "campaign: not valid UTF-8");
	expect_error("/v1/campaigns/spring-sale/metrics?variant=%C0%80", fx.key_acme, 400, "bad_parameter",
	             "variant: not valid UTF-8");
	expect_error("/v1/campaigns/%C3%A9t%C3%A9/metrics", fx.key_acme, 404, "not_found", NULL);
	char path[512];
	int n = snprintf(path, sizeof path, "/v1/campaigns/");
	memset(path + n, 'x', TL_MAX_CAMPAIGN + 1);
	snprintf(path + n + TL_MAX_CAMPAIGN + 1, sizeof path - (size_t)n - TL_MAX_CAMPAIGN - 1, "/metrics");
	expect_error(path, fx.key_acme, 400, "bad_parameter", "campaign");
	expect_error("/v1/campaigns/spring-sale/other", fx.key_acme, 404, "not_found", NULL);
	expect_error("/v1/campaigns/spring-sale", fx.key_acme, 404, "not_found", NULL);
}

static void expect_point(json_t *points, size_t i, const char *ts, int64_t v)
{
	json_t *p = json_array_get(points, i);
	assert_true(json_is_array(p));
	assert_int_equal(json_array_size(p), 2);
	assert_string_equal(json_string_value(json_array_get(p, 0)), ts);
	assert_int_equal(json_integer_value(json_array_get(p, 1)), v);
}

static void test_series(void **state)
{
	(void)state;
	json_t *j = get_json("/v1/campaigns/spring-sale/series?metric=opens&granularity=minute"
	                     "&from=2026-12-03T18:00:00Z&to=2026-12-03T20:00:00Z",
	                     fx.key_acme, 200);
	assert_string_equal(json_string_value(json_object_get(j, "metric")), "opens");
	assert_string_equal(json_string_value(json_object_get(j, "granularity")), "minute");
	json_t *pts = json_object_get(j, "points");
	assert_int_equal(json_array_size(pts), 3);
	expect_point(pts, 0, "2026-12-03T18:00:00Z", 3);
	expect_point(pts, 1, "2026-12-03T18:01:00Z", 2);
	expect_point(pts, 2, "2026-12-03T19:30:00Z", 5);
	json_decref(j);

	j = get_json("/v1/campaigns/spring-sale/series?metric=opens&granularity=hour"
	             "&from=2026-12-03T00:00:00Z&to=2026-12-04T00:00:00Z",
	             fx.key_acme, 200);
	pts = json_object_get(j, "points");
	assert_int_equal(json_array_size(pts), 2);
	expect_point(pts, 0, "2026-12-03T18:00:00Z", 5);
	expect_point(pts, 1, "2026-12-03T19:00:00Z", 5);
	json_decref(j);

	j = get_json("/v1/campaigns/spring-sale/series?metric=opens&granularity=day&variant=A"
	             "&from=2026-12-01&to=2026-12-05",
	             fx.key_acme, 200);
	pts = json_object_get(j, "points");
	assert_int_equal(json_array_size(pts), 1);
	expect_point(pts, 0, "2026-12-03T00:00:00Z", 8);
	json_decref(j);

	/* [from, to): to excludes its own minute */
	j = get_json("/v1/campaigns/spring-sale/series?metric=opens&from=2026-12-03T18:00:00Z"
	             "&to=2026-12-03T18:01:00Z",
	             fx.key_acme, 200);
	pts = json_object_get(j, "points");
	assert_int_equal(json_array_size(pts), 1);
	expect_point(pts, 0, "2026-12-03T18:00:00Z", 3);
	json_decref(j);

	/* bounds inside a bucket are widened to whole buckets, and echoed */
	j = get_json("/v1/campaigns/spring-sale/series?metric=opens&granularity=hour"
	             "&from=2026-12-03T18:35:00Z&to=2026-12-03T19:00:00Z",
	             fx.key_acme, 200);
	assert_string_equal(json_string_value(json_object_get(j, "from")), "2026-12-03T18:00:00.000Z");
	assert_string_equal(json_string_value(json_object_get(j, "to")), "2026-12-03T19:00:00.000Z");
	pts = json_object_get(j, "points");
	assert_int_equal(json_array_size(pts), 1);
	expect_point(pts, 0, "2026-12-03T18:00:00Z", 5);
	json_decref(j);
	j = get_json("/v1/campaigns/spring-sale/series?metric=opens"
	             "&from=2026-12-03T18:00:10Z&to=2026-12-03T18:00:20Z",
	             fx.key_acme, 200);
	assert_string_equal(json_string_value(json_object_get(j, "to")), "2026-12-03T18:01:00.000Z");
	pts = json_object_get(j, "points");
	assert_int_equal(json_array_size(pts), 1);
	expect_point(pts, 0, "2026-12-03T18:00:00Z", 3);
	json_decref(j);
	/* an offset's '+' left unencoded (form decoding makes it a space) */
	j = get_json("/v1/campaigns/spring-sale/series?metric=opens"
	             "&from=2026-12-03T19:00:00+01:00&to=2026-12-03T18:01:00Z",
	             fx.key_acme, 200);
	pts = json_object_get(j, "points");
	assert_int_equal(json_array_size(pts), 1);
	expect_point(pts, 0, "2026-12-03T18:00:00Z", 3);
	json_decref(j);
	/* a bucket with rows of other metrics only is left out like an empty one */
	add_one("acme", "zeros", "", INT64_C(1796320800000), TL_M_SENT, 1); /* 2026-12-03T18:00Z */
	j = get_json("/v1/campaigns/zeros/series?metric=opens&from=2026-12-03T18:00:00Z"
	             "&to=2026-12-03T18:10:00Z",
	             fx.key_acme, 200);
	assert_int_equal(json_array_size(json_object_get(j, "points")), 0);
	json_decref(j);

	const char *base = "/v1/campaigns/spring-sale/series";
	char path[512];
	snprintf(path, sizeof path, "%s?metric=opens&from=0000-01-01T00:00:00Z&to=2026-01-01", base);
	expect_error(path, fx.key_acme, 400, "bad_parameter", "from");
	expect_error("/v1/campaigns/spring-sale/series", fx.key_acme, 400, "bad_parameter", "metric");
	snprintf(path, sizeof path, "%s?metric=open", base);
	expect_error(path, fx.key_acme, 400, "bad_parameter", "metric");
	snprintf(path, sizeof path, "%s?metric=opens&granularity=week", base);
	expect_error(path, fx.key_acme, 400, "bad_parameter", "granularity");
	snprintf(path, sizeof path, "%s?metric=opens&from=yesterday", base);
	expect_error(path, fx.key_acme, 400, "bad_parameter", "from");
	snprintf(path, sizeof path, "%s?metric=opens&from=2026-12-03&to=2026-13-01", base);
	expect_error(path, fx.key_acme, 400, "bad_parameter", "to");
	snprintf(path, sizeof path, "%s?metric=opens&from=2026-12-04&to=2026-12-03", base);
	expect_error(path, fx.key_acme, 400, "bad_parameter", "from");
	/* 6 years of minutes is over the bucket cap; of days it is fine */
	snprintf(path, sizeof path, "%s?metric=opens&granularity=minute&from=2020-01-01&to=2026-01-01", base);
	expect_error(path, fx.key_acme, 400, "bad_parameter", "to");
	snprintf(path, sizeof path, "%s?metric=opens&granularity=day&from=2020-01-01&to=2027-01-01", base);
	json_decref(get_json(path, fx.key_acme, 200));
	/* the other tenant's campaign does not exist for acme */
	expect_error("/v1/campaigns/secret/series?metric=sent", fx.key_acme, 404, "not_found", NULL);
	/* default range: the last 24 h for minutes (relative to now) */
	int64_t now_min = tl_now_ms() / 60000 * 60000;
	add_one("acme", "recent", "", now_min, TL_M_OPENS, 4);
	add_one("acme", "recent", "", now_min - 2 * 86400000, TL_M_OPENS, 6);
	j = get_json("/v1/campaigns/recent/series?metric=opens", fx.key_acme, 200);
	pts = json_object_get(j, "points");
	assert_int_equal(json_array_size(pts), 1);
	assert_int_equal(json_integer_value(json_array_get(json_array_get(pts, 0), 1)), 4);
	json_decref(j);
	j = get_json("/v1/campaigns/recent/series?metric=opens&granularity=hour", fx.key_acme, 200);
	pts = json_object_get(j, "points");
	assert_int_equal(json_array_size(pts), 2);
	json_decref(j);
}

/* ---- SSE ---------------------------------------------------------------- */

struct sse {
	int fd;
	char buf[1 << 18];
	size_t len;
	size_t seen; /* bytes already matched */
};

static void sse_open(struct sse *s, const char *path, const char *key)
{
	memset(s, 0, sizeof *s);
	s->fd = dial();
	send_request(s->fd, "GET", path, key);
}

/* Waits for needle in the data after s->seen; advances seen past it. */
static bool sse_wait(struct sse *s, const char *needle, int wait_ms)
{
	int64_t deadline = tl_mono_ms() + wait_ms;
	for (;;) {
		s->buf[s->len] = '\0';
		char *hit = strstr(s->buf + s->seen, needle);
		if (hit) {
			s->seen = (size_t)(hit - s->buf) + strlen(needle);
			return true;
		}
		int64_t left = deadline - tl_mono_ms();
		if (left <= 0 || s->len >= sizeof s->buf - 1)
			return false;
		ssize_t n = read_some(s->fd, s->buf + s->len, sizeof s->buf - 1 - s->len, (int)left);
		if (n == 0)
			return false;
		if (n > 0)
			s->len += (size_t)n;
	}
}

static void test_live(void **state)
{
	(void)state;
	static struct sse acme, globex, hdr;
	char path[256];
	snprintf(path, sizeof path, "/v1/live?key=%s", fx.key_acme);
	sse_open(&acme, path, NULL);
	sse_open(&globex, "/v1/live", fx.key_globex); /* header auth works too */
	assert_true(sse_wait(&acme, "\r\n\r\n", DEADLINE_MS));
	assert_non_null(strstr(acme.buf, " 200"));
	assert_non_null(strcasestr(acme.buf, "content-type: text/event-stream"));
	assert_true(sse_wait(&acme, ": connected", DEADLINE_MS));
	assert_true(sse_wait(&globex, ": connected", DEADLINE_MS));

	/* a commit for acme reaches acme's client with that campaign's summary */
	add_one("acme", "fall", "", t0() + 60000, TL_M_DELIVERED, 3);
	assert_true(sse_wait(&acme, "event: batch\ndata: {\"seq\":", DEADLINE_MS));
	assert_true(sse_wait(&acme,
	                     "\"campaigns\":[{\"campaign\":\"fall\",\"counts\":{\"sent\":7,\"delivered\":3",
	                     DEADLINE_MS));
	assert_true(sse_wait(&acme, "}]}\n\n", DEADLINE_MS));

	/* then one for globex reaches globex, which never saw acme's data */
	add_one("globex", "secret", "", t0(), TL_M_SENT, 1);
	assert_true(sse_wait(&globex, "event: batch\ndata: ", DEADLINE_MS));
	assert_true(sse_wait(&globex, "\"campaign\":\"secret\"", DEADLINE_MS));
	assert_null(strstr(globex.buf, "fall"));
	assert_null(strstr(globex.buf, "spring-sale"));

	/* and acme got nothing about globex's commit */
	add_one("acme", "spring-sale", "B", t0(), TL_M_CLICKS, 1);
	assert_true(sse_wait(&acme, "\"campaign\":\"spring-sale\"", DEADLINE_MS));
	assert_null(strstr(acme.buf, "secret"));

	/* live clients are counted; a closed one is released */
	close(globex.fd);
	sse_open(&hdr, "/v1/live", fx.key_acme);
	assert_true(sse_wait(&hdr, ": connected", DEADLINE_MS));
	/* an idle stream's disconnect shows on a write: keep globex's stream busy */
	int64_t deadline = tl_mono_ms() + DEADLINE_MS;
	for (;;) {
		struct resp *r = request("GET", "/metrics", NULL);
		if (strstr(r->body, "tally_api_live_clients 2\n"))
			break;
		assert_non_null(strstr(r->body, "tally_api_live_clients 3\n"));
		assert_true(tl_mono_ms() < deadline);
		add_one("globex", "secret", "", t0(), TL_M_SENT, 1);
		usleep(20000);
	}
	close(hdr.fd);
	close(acme.fd);
}

/* A batch changing more campaigns than fit one event (> 256 KiB) comes as
 * a `resync` event naming how many changed, and the client stays
 * connected: as one event it went over the stream's cap on unsent bytes,
 * which cut the client off as a slow one and lost the batch. */
static void test_live_resync(void **state)
{
	(void)state;
	static struct sse s;
	sse_open(&s, "/v1/live", fx.key_globex);
	assert_true(sse_wait(&s, ": connected", DEADLINE_MS));
	enum { N = 1000 };
	static char names[N][16];
	static struct tl_count_row rows[N];
	for (int i = 0; i < N; i++) {
		snprintf(names[i], sizeof names[i], "bulk-%04d", i);
		rows[i] = (struct tl_count_row){.tenant = TL_STR("globex"),
		                                .campaign = tl_str_of(names[i], strlen(names[i])),
		                                .variant = TL_STR(""),
		                                .minute_ms = t0(),
		                                .first_ts_ms = t0(),
		                                .last_ts_ms = t0()};
		rows[i].delta[TL_M_SENT] = 1;
	}
	assert_int_equal(tl_store_begin(fx.st, TL_SOURCE_REALTIME), 0);
	assert_int_equal(tl_store_add_counts(fx.st, rows, N), 0);
	assert_int_equal(tl_store_commit(fx.st), 0);
	assert_true(sse_wait(&s, "event: resync\ndata: {\"seq\":", DEADLINE_MS));
	assert_true(sse_wait(&s, ",\"changed\":1000}\n\n", DEADLINE_MS));
	assert_null(strstr(s.buf, "bulk-"));
	/* still connected: the next small batch arrives as usual */
	add_one("globex", "after-bulk", "", t0(), TL_M_SENT, 1);
	assert_true(sse_wait(&s, "event: batch\ndata: ", DEADLINE_MS));
	assert_true(sse_wait(&s, "\"campaign\":\"after-bulk\"", DEADLINE_MS));
	close(s.fd);
}

/* /v1/campaigns?limit=N[&after=…]: pages in name order that together are
 * the whole list; "next" names the after of the following page. */
static void test_campaign_pages(void **state)
{
	(void)state;
	json_t *all = get_json("/v1/campaigns", fx.key_globex, 200);
	json_t *list = json_object_get(all, "campaigns");
	size_t total = json_array_size(list);
	assert_true(total > 1000); /* test_live_resync's campaigns */
	assert_null(json_object_get(all, "next"));
	size_t seen = 0;
	char after[256] = "", path[512];
	for (int page = 0; page < 10; page++) {
		snprintf(path, sizeof path, "/v1/campaigns?limit=300%s%s", after[0] ? "&after=" : "", after);
		json_t *j = get_json(path, fx.key_globex, 200);
		json_t *cs = json_object_get(j, "campaigns");
		for (size_t i = 0; i < json_array_size(cs); i++, seen++)
			assert_string_equal(
			    json_string_value(json_object_get(json_array_get(cs, i), "campaign")),
			    json_string_value(json_object_get(json_array_get(list, seen), "campaign")));
		json_t *next = json_object_get(j, "next");
		if (json_array_size(cs) < 300) {
			assert_null(next);
			json_decref(j);
			break;
		}
		assert_string_equal(
		    json_string_value(next),
		    json_string_value(json_object_get(json_array_get(list, seen - 1), "campaign")));
		snprintf(after, sizeof after, "%s", json_string_value(next));
		json_decref(j);
	}
	assert_int_equal(seen, total);
	json_decref(all);
	expect_error("/v1/campaigns?limit=0", fx.key_globex, 400, "bad_parameter", "limit");
	expect_error("/v1/campaigns?limit=10001", fx.key_globex, 400, "bad_parameter", "limit");
	expect_error("/v1/campaigns?limit=ten", fx.key_globex, 400, "bad_parameter", "limit");
	expect_error("/v1/campaigns?limit=5&after=%ff", fx.key_globex, 400, "bad_parameter", "after");
}

static void test_assets_and_misc(void **state)
{
	(void)state;
	struct resp *r = request("GET", "/", NULL);
	assert_int_equal(r->status, 200);
	assert_non_null(strstr(header(r, "content-type"), "text/html"));
	assert_non_null(strstr(r->body, "<canvas"));
	assert_non_null(strstr(r->body, "/assets/app.js"));

	r = request("GET", "/assets/app.js", NULL);
	assert_int_equal(r->status, 200);
	assert_non_null(strstr(header(r, "content-type"), "javascript"));
	assert_non_null(strstr(r->body, "EventSource"));
	r = request("GET", "/assets/style.css", NULL);
	assert_int_equal(r->status, 200);
	assert_non_null(strstr(header(r, "content-type"), "text/css"));
	expect_error("/assets/nope.js", NULL, 404, "not_found", NULL);
	expect_error("/assets/", NULL, 404, "not_found", NULL);
	expect_error("/nope", NULL, 404, "not_found", NULL);
	expect_error("/v1/nope", fx.key_acme, 404, "not_found", NULL);

	r = request("POST", "/v1/campaigns", fx.key_acme);
	assert_int_equal(r->status, 405);
	assert_non_null(strstr(r->body, "\"method_not_allowed\""));
	assert_string_equal(header(r, "allow"), "GET, HEAD");
	r = request("DELETE", "/v1/campaigns/spring-sale/metrics", fx.key_acme);
	assert_int_equal(r->status, 405);

	json_t *j = get_json("/healthz", NULL, 200);
	assert_string_equal(json_string_value(json_object_get(j, "status")), "ok");
	json_decref(j);

	r = request("GET", "/metrics", NULL);
	assert_int_equal(r->status, 200);
	assert_non_null(strstr(header(r, "content-type"), "text/plain"));
	assert_non_null(strstr(r->body, "# TYPE tally_api_requests_total counter\n"));
	assert_non_null(strstr(r->body, "tally_api_requests_total{route=\"campaigns\",status=\"401\"} "));
	assert_non_null(
	    strstr(r->body, "tally_api_requests_total{route=\"campaign_metrics\",status=\"200\"} "));
	assert_non_null(
	    strstr(r->body, "tally_api_requests_total{route=\"campaign_series\",status=\"400\"} "));
	assert_non_null(strstr(r->body, "tally_api_requests_total{route=\"other\",status=\"404\"} "));
	assert_non_null(strstr(r->body, "tally_api_requests_total{route=\"campaigns\",status=\"405\"} 1\n"));
	assert_non_null(strstr(r->body, "test_extra_metric 1\n"));
}

static void test_default_source(void **state)
{
	(void)state;
	tl_api_set_default_source(fx.api, TL_SOURCE_BATCH);
	json_t *j = get_json("/v1/campaigns/spring-sale/metrics", fx.key_acme, 200);
	assert_string_equal(json_string_value(json_object_get(j, "source")), "batch");
	assert_int_equal(count_of(j, "sent"), 1234);
	json_decref(j);
	j = get_json("/v1/campaigns/spring-sale/metrics?source=realtime", fx.key_acme, 200);
	assert_int_equal(count_of(j, "sent"), 15);
	json_decref(j);
	tl_api_set_default_source(fx.api, TL_SOURCE_REALTIME);
	j = get_json("/v1/campaigns/spring-sale/metrics", fx.key_acme, 200);
	assert_string_equal(json_string_value(json_object_get(j, "source")), "realtime");
	json_decref(j);
}

static void test_new_tenant_picked_up(void **state)
{
	(void)state;
	struct tl_tenant t;
	char key[TL_API_KEY_MAX];
	memset(&t, 0, sizeof t);
	assert_int_equal(tl_store_tenant_add(fx.st, "initech", &t, key), 0);
	/* the cache refreshes every second: poll until the key is accepted */
	int64_t deadline = tl_mono_ms() + DEADLINE_MS;
	for (;;) {
		struct resp *r = request("GET", "/v1/campaigns", key);
		if (r->status == 200) {
			assert_string_equal(r->body, "{\"campaigns\":[]}");
			break;
		}
		assert_int_equal(r->status, 401);
		assert_true(tl_mono_ms() < deadline);
		usleep(50000);
	}
}

/* One tenant cannot take every live-stream slot: past its own limit it
 * gets 503, and another tenant still connects. */
static void test_live_per_tenant_limit(void **state)
{
	(void)state;
	enum { PER_TENANT = 64 };
	struct sse *mine = calloc(PER_TENANT + 1, sizeof *mine);
	struct sse *other = calloc(1, sizeof *other);
	assert_non_null(mine);
	assert_non_null(other);
	for (int i = 0; i < PER_TENANT; i++) {
		sse_open(&mine[i], "/v1/live", fx.key_globex);
		assert_true(sse_wait(&mine[i], ": connected", DEADLINE_MS));
	}
	struct sse *over = &mine[PER_TENANT];
	sse_open(over, "/v1/live", fx.key_globex);
	assert_true(sse_wait(over, " 503", DEADLINE_MS));
	assert_true(sse_wait(over, "\"too_many_clients\"", DEADLINE_MS));
	assert_true(sse_wait(over, "per tenant", DEADLINE_MS));
	sse_open(other, "/v1/live", fx.key_acme);
	assert_true(sse_wait(other, ": connected", DEADLINE_MS));
	for (int i = 0; i <= PER_TENANT; i++)
		close(mine[i].fd);
	close(other->fd);
	free(mine);
	free(other);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_auth),
	    cmocka_unit_test(test_campaigns),
	    cmocka_unit_test(test_metrics),
	    cmocka_unit_test(test_series),
	    cmocka_unit_test(test_live),
	    cmocka_unit_test(test_assets_and_misc),
	    cmocka_unit_test(test_default_source),
	    cmocka_unit_test(test_new_tenant_picked_up),
	    cmocka_unit_test(test_live_per_tenant_limit),
	    cmocka_unit_test(test_live_resync),
	    cmocka_unit_test(test_campaign_pages),
	};
	const char *only = getenv("TEST_FILTER"); /* e.g. TEST_FILTER=test_live */
	if (only)
		cmocka_set_test_filter(only);
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
