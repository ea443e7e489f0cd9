/* test_collect.c — the collector over real HTTP: open pixel, click redirect,
 * POST /v1/events, /healthz, /metrics, and what happens when the stream
 * fails. The stream is an in-memory fake backend (records kept for the test
 * to inspect, durability reported from another thread, failures on demand);
 * tenants live in a temporary SQLite store. */
#include "collect/collect.h"

#include "core/clock.h"
#include "event/token.h"
#include "store/store.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#define DEADLINE_MS 10000

/* ---- a fake stream backend -------------------------------------------------- */

struct frec {
	char topic[16];
	int partition;
	char key[512];
	size_t key_len;
	unsigned char val[20000];
	size_t val_len;
	char msg_id[512];
};

struct fake {
	struct tl_stream base;
	pthread_mutex_t mu;
	int append_rc;   /* what append returns (0 = queued) */
	int done_status; /* what the durability callback reports */
	struct frec recs[64];
	size_t n;
	atomic_int pending_done;
	bool hold; /* keep durability callbacks for fake_release */
	struct done_job *held[16];
	size_t n_held;
};

struct done_job {
	struct fake *f;
	tl_stream_done_fn done;
	void *arg;
	int status;
};

static void *done_thread(void *arg)
{
	struct done_job *j = arg;
	j->done(j->arg, j->status, 0);
	atomic_fetch_sub(&j->f->pending_done, 1);
	free(j);
	return NULL;
}

static int fake_partitions(struct tl_stream *s, const char *topic)
{
	(void)s;
	(void)topic;
	return 8;
}

static int fake_append(struct tl_stream *s, const char *topic, int partition, const struct tl_record *recs,
                       size_t n, tl_stream_done_fn done, void *arg)
{
	struct fake *f = (struct fake *)s;
	pthread_mutex_lock(&f->mu);
	int rc = f->append_rc;
	if (!rc && f->done_status == 0) {
		for (size_t i = 0; i < n; i++) {
			assert_true(f->n < sizeof f->recs / sizeof f->recs[0]);
			struct frec *r = &f->recs[f->n++];
			snprintf(r->topic, sizeof r->topic, "%s", topic);
			r->partition = partition;
			assert_true(recs[i].key_len < sizeof r->key && recs[i].value_len <= sizeof r->val);
			if (recs[i].key_len)
				memcpy(r->key, recs[i].key, recs[i].key_len);
			r->key[recs[i].key_len] = '\0';
			r->key_len = recs[i].key_len;
			memcpy(r->val, recs[i].value, recs[i].value_len);
			r->val_len = recs[i].value_len;
			assert_true(recs[i].msg_id_len < sizeof r->msg_id);
			if (recs[i].msg_id_len)
				memcpy(r->msg_id, recs[i].msg_id, recs[i].msg_id_len);
			r->msg_id[recs[i].msg_id_len] = '\0';
		}
	}
	int status = f->done_status;
	pthread_mutex_unlock(&f->mu);
	if (rc)
		return rc;
	struct done_job *j = malloc(sizeof *j);
	*j = (struct done_job){f, done, arg, status};
	atomic_fetch_add(&f->pending_done, 1);
	pthread_mutex_lock(&f->mu);
	if (f->hold) {
		f->held[f->n_held++] = j;
		pthread_mutex_unlock(&f->mu);
		return 0;
	}
	pthread_mutex_unlock(&f->mu);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, done_thread, j), 0);
	pthread_detach(th);
	return 0;
}

static const struct tl_stream_ops fake_ops = {
    .scheme = "fake",
    .partitions = fake_partitions,
    .append = fake_append,
};

static void fake_set(struct fake *f, int append_rc, int done_status)
{
	pthread_mutex_lock(&f->mu);
	f->append_rc = append_rc;
	f->done_status = done_status;
	pthread_mutex_unlock(&f->mu);
}

static size_t fake_held(struct fake *f)
{
	pthread_mutex_lock(&f->mu);
	size_t n = f->n_held;
	pthread_mutex_unlock(&f->mu);
	return n;
}

/* Runs the held durability callbacks on this thread. */
static void fake_release(struct fake *f)
{
	pthread_mutex_lock(&f->mu);
	size_t n = f->n_held;
	f->n_held = 0;
	f->hold = false;
	pthread_mutex_unlock(&f->mu);
	for (size_t i = 0; i < n; i++)
		done_thread(f->held[i]);
}

static size_t fake_count(struct fake *f)
{
	pthread_mutex_lock(&f->mu);
	size_t n = f->n;
	pthread_mutex_unlock(&f->mu);
	return n;
}

/* ---- fixture ---------------------------------------------------------------- */

struct fix {
	char dir[64];
	char db[128];
	struct fake f;
	struct tl_store *st;
	struct tl_tenant acme;
	char acme_key[TL_API_KEY_MAX];
	struct tl_collector *col;
	pthread_t th;
	int port;
	bool stopped; /* the test stopped and destroyed the collector itself */
};

static void *run_thread(void *arg)
{
	struct fix *x = arg;
	assert_int_equal(tl_collector_run(x->col), 0);
	return NULL;
}

static int setup(void **state)
{
	struct fix *x = calloc(1, sizeof *x);
	snprintf(x->dir, sizeof x->dir, "/tmp/tally-test-collect.XXXXXX");
	assert_non_null(mkdtemp(x->dir));
	snprintf(x->db, sizeof x->db, "sqlite:%s/tally.db", x->dir);
	x->f.base.ops = &fake_ops;
	pthread_mutex_init(&x->f.mu, NULL);
	assert_int_equal(tl_store_open(x->db, &x->st), 0);
	assert_int_equal(tl_store_tenant_add(x->st, "acme", &x->acme, x->acme_key), 0);

	struct tl_collector_opts o = {
	    .addr = "127.0.0.1:0",
	    .db_uri = x->db,
	    .stream = &x->f.base,
	    .max_batch_events = 5,
	    .tenant_refresh_ms = 50,
	};
	tl_http_limits_defaults(&o.limits);
	assert_int_equal(tl_collector_create(&o, &x->col), 0);
	x->port = tl_collector_port(x->col);
	assert_true(x->port > 0);
	assert_int_equal(pthread_create(&x->th, NULL, run_thread, x), 0);
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	struct fix *x = *state;
	int64_t deadline = tl_mono_ms() + DEADLINE_MS;
	while (atomic_load(&x->f.pending_done) && tl_mono_ms() < deadline)
		usleep(1000);
	if (!x->stopped) {
		tl_collector_stop(x->col);
		pthread_join(x->th, NULL);
		tl_collector_destroy(x->col);
	}
	free(x->acme.settings);
	tl_store_close(x->st);
	char cmd[160];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", x->dir);
	assert_int_equal(system(cmd), 0);
	pthread_mutex_destroy(&x->f.mu);
	free(x);
	return 0;
}

/* ---- raw HTTP client ----------------------------------------------------------- */

struct resp {
	int status;
	char head[8192];
	char body[65536];
	size_t body_len;
};

static const char *resp_header(const struct resp *r, const char *name, char *out, size_t cap)
{
	size_t nl = strlen(name);
	const char *p = strstr(r->head, "\r\n");
	while (p && p[2] != '\r') {
		p += 2;
		if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			const char *v = p + nl + 1;
			while (*v == ' ')
				v++;
			const char *e = strstr(v, "\r\n");
			size_t n = (size_t)(e - v) < cap - 1 ? (size_t)(e - v) : cap - 1;
			memcpy(out, v, n);
			out[n] = '\0';
			return out;
		}
		p = strstr(p, "\r\n");
	}
	return NULL;
}

/* Sends raw and reads one Content-Length response. */
static void http(int port, const char *raw, struct resp *r)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {0};
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	size_t n = strlen(raw);
	assert_int_equal(send(fd, raw, n, MSG_NOSIGNAL), (ssize_t)n);
	static char buf[1 << 17];
	size_t len = 0;
	int64_t deadline = tl_mono_ms() + DEADLINE_MS;
	bool head_req = strncmp(raw, "HEAD ", 5) == 0;
	memset(r, 0, sizeof *r);
	for (;;) {
		buf[len] = '\0';
		char *eoh = strstr(buf, "\r\n\r\n");
		if (eoh) {
			size_t hl = (size_t)(eoh - buf) + 4;
			memcpy(r->head, buf, hl);
			r->head[hl] = '\0';
			r->status = (int)strtol(buf + 9, NULL, 10);
			char v[32];
			size_t cl = resp_header(r, "content-length", v, sizeof v) ? strtoul(v, NULL, 10) : 0;
			if (head_req)
				cl = 0;
			if (len - hl >= cl) {
				memcpy(r->body, buf + hl, cl);
				r->body_len = cl;
				r->body[cl] = '\0';
				break;
			}
		}
		int left = (int)(deadline - tl_mono_ms());
		assert_true(left > 0);
		struct pollfd p = {fd, POLLIN, 0};
		assert_true(poll(&p, 1, left) > 0);
		ssize_t got = recv(fd, buf + len, sizeof buf - 1 - len, 0);
		assert_true(got > 0);
		len += (size_t)got;
	}
	close(fd);
}

static void get(int port, const char *method, const char *path, struct resp *r)
{
	char raw[16384];
	snprintf(raw, sizeof raw, "%s %s HTTP/1.1\r\nHost: x\r\nUser-Agent: test-agent/1.0\r\n\r\n", method,
	         path);
	http(port, raw, r);
}

static void post_events(int port, const char *key, const char *body, struct resp *r)
{
	static char raw[65536];
	char auth[160] = "";
	if (key)
		snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", key);
	snprintf(raw, sizeof raw, "POST /v1/events HTTP/1.1\r\nHost: x\r\n%sContent-Length: %zu\r\n\r\n%s",
	         auth, strlen(body), body);
	http(port, raw, r);
}

/* Mints a token path ("/o/<token>.gif" or "/c/<token>") with key. */
static void mint(const unsigned char *key, const char *tenant, enum tl_token_kind kind, const char *url,
                 char *out, size_t cap)
{
	struct tl_token t = {
	    .kind = kind,
	    .issued_ms = tl_now_ms(),
	    .tenant = tl_str_of(tenant, strlen(tenant)),
	    .campaign = TL_STR("spring"),
	    .variant = TL_STR("B"),
	    .message = TL_STR("m-1"),
	    .recipient = TL_STR("r-1842"),
	    .url = url ? tl_str_of(url, strlen(url)) : TL_STR_NULL,
	};
	struct tl_buf b;
	tl_buf_init(&b, 0);
	assert_int_equal(tl_token_mint(&t, key, TL_LINK_KEY_LEN, &b), 0);
	snprintf(out, cap, "/%c/%.*s%s", kind == TL_TOKEN_OPEN ? 'o' : 'c', (int)b.len, b.data,
	         kind == TL_TOKEN_OPEN ? ".gif" : "");
	tl_buf_free(&b);
}

static long metric(struct fix *x, const char *name)
{
	struct tl_buf b;
	tl_buf_init(&b, 0);
	assert_int_equal(tl_collector_metrics(x->col, &b), 0);
	assert_int_equal(tl_buf_putc(&b, '\0'), 0);
	const char *p = b.data;
	long v = -1;
	size_t nl = strlen(name);
	while ((p = strstr(p, name)) != NULL) {
		if ((p == b.data || p[-1] == '\n') && p[nl] == ' ') {
			v = strtol(p + nl + 1, NULL, 10);
			break;
		}
		p += nl;
	}
	tl_buf_free(&b);
	return v;
}

static const unsigned char gif43[43] = {
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00,
    0x00, 0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00,
    0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
};

static void assert_gif(const struct resp *r)
{
	char v[128];
	assert_int_equal(r->status, 200);
	assert_int_equal(r->body_len, 43);
	assert_memory_equal(r->body, gif43, 43);
	assert_non_null(resp_header(r, "content-type", v, sizeof v));
	assert_string_equal(v, "image/gif");
	assert_non_null(resp_header(r, "cache-control", v, sizeof v));
	assert_string_equal(v, "no-cache, no-store, must-revalidate, private");
	assert_non_null(resp_header(r, "pragma", v, sizeof v));
	assert_string_equal(v, "no-cache");
	assert_non_null(resp_header(r, "expires", v, sizeof v));
	assert_string_equal(v, "0");
}

static void rcpt_hash(struct fix *x, const char *rcpt, char out[TL_RCPT_HASH_LEN + 1])
{
	tl_recipient_hash(x->acme.salt, sizeof x->acme.salt, rcpt, strlen(rcpt), out);
}

/* ---- tests -------------------------------------------------------------------- */

static void test_pixel(void **state)
{
	struct fix *x = *state;
	static struct resp r;
	char path[1024], h[TL_RCPT_HASH_LEN + 1];
	mint(x->acme.link_key, "acme", TL_TOKEN_OPEN, NULL, path, sizeof path);
	get(x->port, "GET", path, &r);
	assert_gif(&r);
	assert_int_equal(fake_count(&x->f), 1); /* written before the answer */

	struct frec *rec = &x->f.recs[0];
	struct tl_event ev;
	assert_string_equal(rec->topic, "events");
	assert_int_equal(tl_event_decode(rec->val, rec->val_len, &ev), 0);
	assert_int_equal(ev.type, TL_EV_OPEN);
	assert_int_equal(ev.flags, TL_EVF_HIT);
	size_t tn = strlen(path) - 3 - 4;
	assert_int_equal(ev.token.n, tn);
	assert_memory_equal(ev.token.p, path + 3, tn);
	assert_int_equal(ev.user_agent.n, strlen("test-agent/1.0"));
	assert_memory_equal(ev.ip.p, "127.0.0.1", ev.ip.n);
	assert_true(ev.id.n > 16 && ev.id.p[0] == 'c');
	/* the stream msg id is the hit id within its tenant, as for the event API */
	assert_int_equal(strlen(rec->msg_id), 5 + ev.id.n);
	assert_memory_equal(rec->msg_id, "acme:", 5);
	assert_memory_equal(rec->msg_id + 5, ev.id.p, ev.id.n);
	assert_true(ev.ts_ms > 0 && ev.ts_ms == ev.arrival_ms);
	(void)h;
	assert_string_equal(rec->key, "r-1842"); /* keyed by the recipient in the token */
	assert_int_equal(rec->partition, tl_stream_partition_for("r-1842", 6, 8));

	/* HEAD: same answer without a body, flagged */
	get(x->port, "HEAD", path, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(fake_count(&x->f), 2);
	assert_int_equal(tl_event_decode(x->f.recs[1].val, x->f.recs[1].val_len, &ev), 0);
	assert_int_equal(ev.flags, TL_EVF_HIT | TL_EVF_HEAD);
	char id0[64];
	assert_int_equal(tl_event_decode(x->f.recs[0].val, x->f.recs[0].val_len, &ev), 0);
	snprintf(id0, sizeof id0, "%.*s", (int)ev.id.n, ev.id.p);
	assert_int_equal(tl_event_decode(x->f.recs[1].val, x->f.recs[1].val_len, &ev), 0);
	assert_false(strlen(id0) == ev.id.n && memcmp(id0, ev.id.p, ev.id.n) == 0); /* unique ids */

	/* junk: the GIF all the same, nothing written, counted */
	get(x->port, "GET", "/o/v1.garbage.gif", &r);
	assert_gif(&r);
	get(x->port, "GET", "/o/.gif", &r);
	assert_gif(&r);
	/* a click token on the pixel route */
	char cpath[1024];
	mint(x->acme.link_key, "acme", TL_TOKEN_CLICK, "https://shop.example/sale", cpath, sizeof cpath);
	char opath[1100];
	snprintf(opath, sizeof opath, "/o/%s.gif", cpath + 3);
	get(x->port, "GET", opath, &r);
	assert_gif(&r);
	/* forged for a tenant the collector knows (signed with another key):
	 * the GIF, nothing written */
	unsigned char other[TL_LINK_KEY_LEN];
	memset(other, 7, sizeof other);
	mint(other, "acme", TL_TOKEN_OPEN, NULL, opath, sizeof opath);
	get(x->port, "GET", opath, &r);
	assert_gif(&r);
	assert_int_equal(fake_count(&x->f), 2);
	assert_int_equal(metric(x, "tally_rejected_total{reason=\"bad_signature\"}"), 1);
	/* a tenant it does not know (yet): recorded, the enricher decides */
	mint(other, "newcomer", TL_TOKEN_OPEN, NULL, opath, sizeof opath);
	get(x->port, "GET", opath, &r);
	assert_gif(&r);
	assert_int_equal(fake_count(&x->f), 3);
	assert_int_equal(metric(x, "tally_rejected_total{reason=\"bad_token\"}"), 2);
	assert_int_equal(metric(x, "tally_rejected_total{reason=\"token_kind\"}"), 1);
	assert_int_equal(metric(x, "tally_events_accepted_total{topic=\"events\"}"), 3);
	assert_int_equal(metric(x, "tally_collector_requests_total{route=\"pixel\"}"), 7);
}

/* Idempotency-Key: a re-sent hit carries the same event id (the aggregator
 * counts it once) and stream msg id "<tenant>:<id>", also when its link was
 * re-minted (another issue time); the id is derived from the key and what
 * the token names, so another recipient's hit or a click sent with the
 * same key is another event; a key outside the accepted form is ignored. */
static void test_hit_idempotency_key(void **state)
{
	struct fix *x = *state;
	static struct resp r;
	char path[1024], raw[2048];
	mint(x->acme.link_key, "acme", TL_TOKEN_OPEN, NULL, path, sizeof path);
	static const char *const keys[] = {"g0123-1a", "g0123-1a", "bad key", "", NULL};
	for (int i = 0; keys[i]; i++) {
		snprintf(raw, sizeof raw, "GET %s HTTP/1.1\r\nHost: x\r\nIdempotency-Key: %s\r\n\r\n", path,
		         keys[i]);
		http(x->port, raw, &r);
		assert_gif(&r);
	}
	char longkey[80];
	memset(longkey, 'a', 65);
	longkey[65] = '\0';
	snprintf(raw, sizeof raw, "GET %s HTTP/1.1\r\nHost: x\r\nIdempotency-Key: %s\r\n\r\n", path, longkey);
	http(x->port, raw, &r);
	assert_gif(&r);
	/* the same key on another token: a click of the same tenant */
	char cpath[1024];
	mint(x->acme.link_key, "acme", TL_TOKEN_CLICK, "https://shop.example/", cpath, sizeof cpath);
	snprintf(raw, sizeof raw, "GET %s HTTP/1.1\r\nHost: x\r\nIdempotency-Key: g0123-1a\r\n\r\n", cpath);
	http(x->port, raw, &r);
	assert_int_equal(r.status, 302);
	/* the same open re-minted for its retry (another issue time): the same hit */
	usleep(3000);
	char rpath[1024];
	mint(x->acme.link_key, "acme", TL_TOKEN_OPEN, NULL, rpath, sizeof rpath);
	assert_string_not_equal(rpath, path);
	snprintf(raw, sizeof raw, "GET %s HTTP/1.1\r\nHost: x\r\nIdempotency-Key: g0123-1a\r\n\r\n", rpath);
	http(x->port, raw, &r);
	assert_gif(&r);
	/* another recipient's open with the same key: another hit */
	struct tl_token ot = {.kind = TL_TOKEN_OPEN,
	                      .issued_ms = tl_now_ms(),
	                      .tenant = TL_STR("acme"),
	                      .campaign = TL_STR("spring"),
	                      .variant = TL_STR("B"),
	                      .message = TL_STR("m-1"),
	                      .recipient = TL_STR("r-7")};
	struct tl_buf ob;
	tl_buf_init(&ob, 0);
	assert_int_equal(tl_token_mint(&ot, x->acme.link_key, TL_LINK_KEY_LEN, &ob), 0);
	snprintf(raw, sizeof raw, "GET /o/%.*s.gif HTTP/1.1\r\nHost: x\r\nIdempotency-Key: g0123-1a\r\n\r\n",
	         (int)ob.len, ob.data);
	tl_buf_free(&ob);
	http(x->port, raw, &r);
	assert_gif(&r);
	assert_int_equal(fake_count(&x->f), 8);
	struct tl_event ev[8];
	for (int i = 0; i < 8; i++)
		assert_int_equal(tl_event_decode(x->f.recs[i].val, x->f.recs[i].val_len, &ev[i]), 0);
	assert_int_equal(ev[0].id.n, 34); /* "k-" + 32 hex digits */
	assert_memory_equal(ev[0].id.p, "k-", 2);
	assert_int_equal(ev[1].id.n, ev[0].id.n);
	assert_memory_equal(ev[1].id.p, ev[0].id.p, ev[0].id.n);
	assert_int_equal(ev[5].id.n, 34);
	assert_memory_equal(ev[5].id.p, "k-", 2);
	assert_memory_not_equal(ev[5].id.p, ev[0].id.p, 34);
	assert_int_equal(ev[6].id.n, 34);
	assert_memory_equal(ev[6].id.p, ev[0].id.p, 34); /* re-minted: the same id */
	assert_int_equal(ev[7].id.n, 34);
	assert_memory_not_equal(ev[7].id.p, ev[0].id.p, 34); /* another recipient */
	/* a stream that deduplicates by msg id (JetStream) holds every tenant's
	 * hits: the key is only unique within its tenant */
	char want[64];
	snprintf(want, sizeof want, "acme:%.*s", (int)ev[0].id.n, ev[0].id.p);
	assert_string_equal(x->f.recs[0].msg_id, want);
	assert_string_equal(x->f.recs[1].msg_id, want);
	for (int i = 2; i < 5; i++) /* refused keys: a fresh collector id */
		assert_true(ev[i].id.n > 16 && ev[i].id.p[0] == 'c');
}

/* Behind a trusted proxy (--trust-forwarded-for) a hit's IP is the last
 * X-Forwarded-For entry when that is an address; anything else there gives
 * the peer's address, not the header's bytes. */
static void test_forwarded_for(void **state)
{
	struct fix *x = *state;
	tl_collector_stop(x->col);
	pthread_join(x->th, NULL);
	tl_collector_destroy(x->col);
	struct tl_collector_opts o = {.addr = "127.0.0.1:0",
	                              .db_uri = x->db,
	                              .stream = &x->f.base,
	                              .max_batch_events = 5,
	                              .tenant_refresh_ms = 50,
	                              .trust_forwarded_for = 1};
	tl_http_limits_defaults(&o.limits);
	assert_int_equal(tl_collector_create(&o, &x->col), 0);
	x->port = tl_collector_port(x->col);
	assert_int_equal(pthread_create(&x->th, NULL, run_thread, x), 0);
	static struct resp r;
	char path[1024], raw[2048];
	mint(x->acme.link_key, "acme", TL_TOKEN_OPEN, NULL, path, sizeof path);
	static const char *const xff[] = {"10.0.0.1, 203.0.113.7", "2001:db8::1", "<script>x</script>",
	                                  "1.2.3.4.5"};
	static const char *const want[] = {"203.0.113.7", "2001:db8::1", "127.0.0.1", "127.0.0.1"};
	for (int i = 0; i < 4; i++) {
		snprintf(raw, sizeof raw, "GET %s HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: %s\r\n\r\n", path,
		         xff[i]);
		http(x->port, raw, &r);
		assert_gif(&r);
		assert_int_equal(fake_count(&x->f), (size_t)i + 1);
		struct tl_event ev;
		assert_int_equal(tl_event_decode(x->f.recs[i].val, x->f.recs[i].val_len, &ev), 0);
		assert_int_equal(ev.ip.n, strlen(want[i]));
		assert_memory_equal(ev.ip.p, want[i], ev.ip.n);
	}
}

static void test_click(void **state)
{
	struct fix *x = *state;
	static struct resp r;
	char path[2048], v[256];
	const char *url = "https://shop.example/sale?x=1&y=2";
	mint(x->acme.link_key, "acme", TL_TOKEN_CLICK, url, path, sizeof path);
	get(x->port, "GET", path, &r);
	assert_int_equal(r.status, 302);
	assert_non_null(resp_header(&r, "location", v, sizeof v));
	assert_string_equal(v, url);
	assert_non_null(resp_header(&r, "cache-control", v, sizeof v));
	assert_string_equal(v, "no-store");
	assert_int_equal(fake_count(&x->f), 1);
	struct tl_event ev;
	assert_int_equal(tl_event_decode(x->f.recs[0].val, x->f.recs[0].val_len, &ev), 0);
	assert_int_equal(ev.type, TL_EV_CLICK);
	assert_int_equal(ev.flags, TL_EVF_HIT);
	/* a scheme in capitals is minted, so it is redirected too */
	mint(x->acme.link_key, "acme", TL_TOKEN_CLICK, "HTTPS://Shop.Example/A", path, sizeof path);
	get(x->port, "GET", path, &r);
	assert_int_equal(r.status, 302);
	assert_non_null(resp_header(&r, "location", v, sizeof v));
	assert_string_equal(v, "HTTPS://Shop.Example/A");
	assert_int_equal(fake_count(&x->f), 2);

	/* forged: signed with another key */
	unsigned char other[TL_LINK_KEY_LEN];
	memset(other, 7, sizeof other);
	mint(other, "acme", TL_TOKEN_CLICK, "https://evil.example/", path, sizeof path);
	get(x->port, "GET", path, &r);
	assert_int_equal(r.status, 404);
	assert_non_null(resp_header(&r, "content-type", v, sizeof v));
	assert_non_null(strstr(v, "text/html"));
	assert_null(resp_header(&r, "location", v, sizeof v));
	/* unknown tenant */
	mint(other, "nobody", TL_TOKEN_CLICK, "https://evil.example/", path, sizeof path);
	get(x->port, "GET", path, &r);
	assert_int_equal(r.status, 404);
	/* truncated */
	mint(x->acme.link_key, "acme", TL_TOKEN_CLICK, url, path, sizeof path);
	path[strlen(path) - 5] = '\0';
	get(x->port, "GET", path, &r);
	assert_int_equal(r.status, 404);
	/* an open token on the click route */
	mint(x->acme.link_key, "acme", TL_TOKEN_OPEN, NULL, path, sizeof path);
	path[1] = 'c';
	path[strlen(path) - 4] = '\0';
	get(x->port, "GET", path, &r);
	assert_int_equal(r.status, 404);
	get(x->port, "GET", "/c/", &r);
	assert_int_equal(r.status, 404);

	assert_int_equal(fake_count(&x->f), 2);
	assert_int_equal(metric(x, "tally_rejected_total{reason=\"bad_signature\"}"), 1);
	assert_int_equal(metric(x, "tally_rejected_total{reason=\"unknown_tenant\"}"), 1);
	assert_int_equal(metric(x, "tally_rejected_total{reason=\"bad_token\"}"), 2);
	assert_int_equal(metric(x, "tally_rejected_total{reason=\"token_kind\"}"), 1);
}

static void test_events_api(void **state)
{
	struct fix *x = *state;
	static struct resp r;
	char v[64];
	const char *open = "{\"type\":\"open\",\"campaign\":\"spring\",\"recipient\":\"r-1\",\"id\":\"e1\","
	                   "\"ts\":\"2026-12-03T18:00:00Z\"}";
	const char *deliv =
	    "{\"type\":\"delivered\",\"tenant\":\"acme\",\"campaign\":\"spring\",\"recipient\":\"r-2\","
	    "\"id\":\"e2\",\"ts\":\"2026-12-03T18:00:01Z\"}";
	const char *bounce =
	    "{\"type\":\"bounced\",\"campaign\":\"spring\",\"recipient\":\"r-3\",\"id\":\"e3\","
	    "\"ts\":\"2026-12-03T18:00:02Z\",\"bounce_class\":\"hard\"}";
	char body[4096];

	post_events(x->port, NULL, open, &r);
	assert_int_equal(r.status, 401);
	assert_non_null(strstr(r.body, "\"code\":\"unauthorized\""));
	post_events(x->port, "tk_nonsense", open, &r);
	assert_int_equal(r.status, 401);
	post_events(x->port, x->acme_key, "", &r);
	assert_int_equal(r.status, 400);
	post_events(x->port, x->acme_key, "\n\n", &r);
	assert_int_equal(r.status, 400);

	/* one bad line rejects the batch, naming the line */
	snprintf(body, sizeof body,
	         "%s\n{\"type\":\"opne\",\"campaign\":\"c\",\"recipient\":\"r\",\"id\":\"x\","
	         "\"ts\":\"2026-12-03T18:00:00Z\"}\n%s\n",
	         open, deliv);
	post_events(x->port, x->acme_key, body, &r);
	assert_int_equal(r.status, 400);
	assert_string_equal(
	    r.body, "{\"error\":{\"code\":\"bad_event\",\"message\":\"line 2: unknown type \\\"opne\\\"\"}}");
	snprintf(body, sizeof body,
	         "%s\n%s\n{\"type\":\"open\",\"tenant\":\"other\",\"campaign\":\"c\","
	         "\"recipient\":\"r\",\"id\":\"x\",\"ts\":\"2026-12-03T18:00:00Z\"}\n",
	         open, deliv);
	post_events(x->port, x->acme_key, body, &r);
	assert_int_equal(r.status, 400);
	assert_non_null(strstr(r.body, "line 3: tenant does not match API key"));
	snprintf(body, sizeof body,
	         "%s\n{\"type\":\"open\",\"campaign\":\"c\",\"id\":\"x\",\"ts\":\"2026-12-03T18:00:00Z\"}\n",
	         open);
	post_events(x->port, x->acme_key, body, &r);
	assert_int_equal(r.status, 400);
	assert_non_null(strstr(r.body, "line 2: missing recipient"));
	/* over max_batch_events (5) */
	snprintf(body, sizeof body, "%s\n%s\n%s\n%s\n%s\n%s\n", open, open, open, open, open, open);
	post_events(x->port, x->acme_key, body, &r);
	assert_int_equal(r.status, 413);
	assert_int_equal(fake_count(&x->f), 0); /* nothing written by any of those */

	/* accepted: CRLF lines, a blank line, no final newline */
	snprintf(body, sizeof body, "%s\r\n\r\n%s\n%s", open, deliv, bounce);
	post_events(x->port, x->acme_key, body, &r);
	assert_int_equal(r.status, 202);
	assert_string_equal(r.body, "{\"accepted\":3}");
	assert_non_null(resp_header(&r, "content-type", v, sizeof v));
	assert_string_equal(v, "application/json");
	assert_int_equal(fake_count(&x->f), 3);
	int seen_events = 0, seen_delivery = 0;
	for (size_t i = 0; i < 3; i++) {
		struct frec *rec = &x->f.recs[i];
		struct tl_event ev;
		assert_int_equal(tl_event_decode(rec->val, rec->val_len, &ev), 0);
		assert_memory_equal(ev.tenant.p, "acme", 4);
		assert_true(ev.flags & TL_EVF_HASHED);
		assert_true(ev.arrival_ms > 0);
		char want[TL_RCPT_HASH_LEN + 1];
		rcpt_hash(x,
		          ev.type == TL_EV_OPEN        ? "r-1"
		          : ev.type == TL_EV_DELIVERED ? "r-2"
		                                       : "r-3",
		          want);
		assert_int_equal(ev.recipient.n, TL_RCPT_HASH_LEN);
		assert_memory_equal(ev.recipient.p, want, TL_RCPT_HASH_LEN);
		assert_string_equal(rec->key, want);
		char mid[64];
		snprintf(mid, sizeof mid, "acme:%.*s", (int)ev.id.n, ev.id.p);
		assert_string_equal(rec->msg_id, mid); /* per-tenant idempotency id */
		assert_int_equal(rec->partition, tl_stream_partition_for(want, TL_RCPT_HASH_LEN, 8));
		if (ev.type == TL_EV_OPEN) {
			assert_string_equal(rec->topic, "events");
			seen_events++;
		} else {
			assert_string_equal(rec->topic, "delivery");
			seen_delivery++;
		}
	}
	assert_int_equal(seen_events, 1);
	assert_int_equal(seen_delivery, 2);
	assert_int_equal(metric(x, "tally_events_accepted_total{topic=\"delivery\"}"), 2);
	assert_int_equal(metric(x, "tally_collector_batches_total{result=\"accepted\"}"), 1);
	assert_int_equal(metric(x, "tally_collector_batches_total{result=\"bad_request\"}"), 5);
}

static void test_stream_failures(void **state)
{
	struct fix *x = *state;
	static struct resp r;
	char opath[1024], cpath[1024], v[256];
	mint(x->acme.link_key, "acme", TL_TOKEN_OPEN, NULL, opath, sizeof opath);
	mint(x->acme.link_key, "acme", TL_TOKEN_CLICK, "https://shop.example/", cpath, sizeof cpath);
	const char *open = "{\"type\":\"open\",\"campaign\":\"spring\",\"recipient\":\"r-1\",\"id\":\"e1\","
	                   "\"ts\":\"2026-12-03T18:00:00Z\"}";
	const int modes[][2] = {{-TL_EAGAIN, 0}, {-TL_ENOSPC, 0}, {0, -TL_EIO}};
	for (int m = 0; m < 3; m++) {
		fake_set(&x->f, modes[m][0], modes[m][1]);
		get(x->port, "GET", opath, &r);
		assert_gif(&r);
		get(x->port, "GET", cpath, &r);
		assert_int_equal(r.status, 302); /* the user still reaches the shop */
		assert_non_null(resp_header(&r, "location", v, sizeof v));
		assert_string_equal(v, "https://shop.example/");
		post_events(x->port, x->acme_key, open, &r);
		assert_int_equal(r.status, 503);
		assert_non_null(strstr(r.body, "\"code\":\"unavailable\""));
		assert_non_null(resp_header(&r, "retry-after", v, sizeof v));
		assert_string_equal(v, "1");
	}
	assert_int_equal(fake_count(&x->f), 0);
	assert_int_equal(metric(x, "tally_pixel_dropped_total"), 3);
	assert_int_equal(metric(x, "tally_click_dropped_total"), 3);
	assert_int_equal(metric(x, "tally_collector_batches_total{result=\"unavailable\"}"), 3);
	assert_int_equal(metric(x, "tally_events_accepted_total{topic=\"events\"}"), 0);
	fake_set(&x->f, 0, 0);
	post_events(x->port, x->acme_key, open, &r);
	assert_int_equal(r.status, 202);
}

static void test_routes(void **state)
{
	struct fix *x = *state;
	static struct resp r;
	get(x->port, "GET", "/healthz", &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "{\"status\":\"ok\"}");
	get(x->port, "GET", "/metrics", &r);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "tally_collector_requests_total{route=\"healthz\"} 1\n"));
	assert_non_null(strstr(r.body, "# TYPE tally_pixel_dropped_total counter\n"));
	get(x->port, "GET", "/nope", &r);
	assert_int_equal(r.status, 404);
	assert_non_null(strstr(r.body, "{\"error\":{\"code\":\"not_found\""));
	get(x->port, "DELETE", "/healthz", &r);
	assert_int_equal(r.status, 405);
	get(x->port, "GET", "/v1/events", &r);
	assert_int_equal(r.status, 405);
	http(x->port, "POST /v1/webhooks/sendgrid HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n[]", &r);
	assert_int_equal(r.status, 404);
	http(x->port, "POST /v1/webhooks/nosuch/acme HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n[]", &r);
	assert_int_equal(r.status, 404);
}

static void post_webhook(int port, const char *path, const char *body, struct resp *r)
{
	static char raw[65536];
	snprintf(
	    raw, sizeof raw,
	    "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
	    path, strlen(body), body);
	http(port, raw, r);
}

/* The webhook route: credential check first, then events and dead letters
 * appended, answered once durable. */
static void test_webhook(void **state)
{
	struct fix *x = *state;
	static struct resp r;
	char body[1024];
	long now_s = (long)(tl_now_ms() / 1000);
	snprintf(body, sizeof body,
	         "[{\"event\":\"delivered\",\"email\":\"a@example.com\",\"timestamp\":%ld,\"sg_event_id\":"
	         "\"sg-1\","
	         "\"tally_campaign\":\"spring\"},"
	         "{\"event\":\"group_resubscribe\",\"email\":\"b@example.com\",\"timestamp\":%ld,\"sg_event_"
	         "id\":\"sg-2\","
	         "\"tally_campaign\":\"spring\"}]",
	         now_s, now_s);
	/* no key configured and verification on: refused, nothing written */
	post_webhook(x->port, "/v1/webhooks/sendgrid/acme", body, &r);
	assert_int_equal(r.status, 401);
	assert_non_null(strstr(r.body, "\"code\":\"unauthorized\""));
	post_webhook(x->port, "/v1/webhooks/sendgrid/nobody", body, &r);
	assert_int_equal(r.status, 404);
	assert_int_equal(fake_count(&x->f), 0);

	assert_int_equal(tl_store_tenant_set(x->st, "acme", "sendgrid_verify", "false"), 0);
	int64_t deadline = tl_mono_ms() + DEADLINE_MS;
	do { /* the collector picks the setting up within its refresh period */
		post_webhook(x->port, "/v1/webhooks/sendgrid/acme", body, &r);
		if (r.status != 401)
			break;
		usleep(10000);
	} while (tl_mono_ms() < deadline);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "{\"accepted\":1,\"dead\":1}");
	assert_int_equal(fake_count(&x->f), 2);
	bool delivery = false, dead = false;
	for (size_t i = 0; i < 2; i++) {
		struct frec *rec = &x->f.recs[i];
		if (!strcmp(rec->topic, "delivery")) {
			struct tl_event ev;
			assert_int_equal(tl_event_decode(rec->val, rec->val_len, &ev), 0);
			assert_int_equal(ev.type, TL_EV_DELIVERED);
			assert_true(ev.flags & TL_EVF_HASHED);
			assert_string_equal(rec->msg_id, "acme:sg-1");
			delivery = true;
		} else {
			assert_string_equal(rec->topic, "dead-webhooks");
			assert_int_equal(rec->val[0], '{'); /* a JSON dead letter */
			dead = true;
		}
	}
	assert_true(delivery && dead);
	assert_int_equal(metric(x, "tally_events_accepted_total{topic=\"dead-webhooks\"}"), 1);

	/* a failing stream: 503, so the provider retries */
	fake_set(&x->f, -TL_EUNAVAIL, 0);
	post_webhook(x->port, "/v1/webhooks/sendgrid/acme", body, &r);
	assert_int_equal(r.status, 503);
	fake_set(&x->f, 0, 0);
}

struct late {
	struct fix *x;
	atomic_int go;
};

static void *late_release(void *arg)
{
	struct late *l = arg;
	while (!atomic_load(&l->go))
		usleep(1000);
	usleep(50000); /* let destroy start waiting (its correctness does not depend on it) */
	fake_release(&l->x->f);
	return NULL;
}

/* A durability callback that arrives after the collector stopped: destroy
 * waits for it instead of freeing what it uses (ASan would catch it). */
static void test_destroy_waits_for_appends(void **state)
{
	struct fix *x = *state;
	char path[1024];
	mint(x->acme.link_key, "acme", TL_TOKEN_OPEN, NULL, path, sizeof path);
	pthread_mutex_lock(&x->f.mu);
	x->f.hold = true;
	pthread_mutex_unlock(&x->f.mu);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {0};
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)x->port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	char raw[2048];
	int n = snprintf(raw, sizeof raw, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
	assert_int_equal(send(fd, raw, (size_t)n, MSG_NOSIGNAL), n);
	int64_t deadline = tl_mono_ms() + DEADLINE_MS;
	while (fake_held(&x->f) == 0 && tl_mono_ms() < deadline)
		usleep(1000);
	assert_int_equal(fake_held(&x->f), 1);

	struct late l = {.x = x};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, late_release, &l), 0);
	tl_collector_stop(x->col); /* answers the waiting hit 503 after its grace period */
	pthread_join(x->th, NULL);
	atomic_store(&l.go, 1);
	tl_collector_destroy(x->col); /* returns only after the callback ran */
	x->stopped = true;
	pthread_join(th, NULL);
	assert_int_equal(atomic_load(&x->f.pending_done), 0);
	close(fd);
}

/* A tenant added while the collector runs is usable within the refresh period. */
static void test_tenant_refresh(void **state)
{
	struct fix *x = *state;
	static struct resp r;
	struct tl_tenant t;
	char key[TL_API_KEY_MAX];
	assert_int_equal(tl_store_tenant_add(x->st, "newco", &t, key), 0);
	free(t.settings);
	const char *open = "{\"type\":\"open\",\"campaign\":\"spring\",\"recipient\":\"r-1\",\"id\":\"e1\","
	                   "\"ts\":\"2026-12-03T18:00:00Z\"}";
	int64_t deadline = tl_mono_ms() + DEADLINE_MS;
	do {
		post_events(x->port, key, open, &r);
		if (r.status == 202)
			break;
		assert_int_equal(r.status, 401);
		usleep(10000);
	} while (tl_mono_ms() < deadline);
	assert_int_equal(r.status, 202);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_pixel, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hit_idempotency_key, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_forwarded_for, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_click, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_events_api, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stream_failures, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_routes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_webhook, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tenant_refresh, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_destroy_waits_for_appends, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
