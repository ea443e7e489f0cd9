/* test_http.c — the HTTP layer over real sockets: a tiny server on port 0
 * run by its own thread, and a raw-socket client in the test. */
#include "http/http.h"

#include "core/clock.h"

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

/* ---- test server ---------------------------------------------------------- */

struct tsrv {
	struct tl_http_server *srv;
	pthread_t th;
	int port;
	int run_rc;
};

static void *run_thread(void *arg)
{
	struct tsrv *t = arg;
	t->run_rc = tl_http_server_run(t->srv);
	return NULL;
}

static void tsrv_start(struct tsrv *t, const struct tl_http_route *routes, size_t n,
                       const struct tl_http_limits *lim)
{
	memset(t, 0, sizeof *t);
	assert_int_equal(tl_http_server_create("test", "127.0.0.1:0", lim, routes, n, &t->srv), 0);
	t->port = tl_http_server_port(t->srv);
	assert_true(t->port > 0);
	assert_int_equal(pthread_create(&t->th, NULL, run_thread, t), 0);
}

static void tsrv_stop(struct tsrv *t)
{
	tl_http_server_stop(t->srv);
	pthread_join(t->th, NULL);
	assert_int_equal(t->run_rc, 0);
	tl_http_server_destroy(t->srv);
	t->srv = NULL;
}

/* ---- raw client ----------------------------------------------------------- */

static int cli_connect(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = {0};
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	return fd;
}

static void cli_send(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
		assert_true(w > 0);
		c += w;
		n -= (size_t)w;
	}
}

static void cli_sends(int fd, const char *s)
{
	cli_send(fd, s, strlen(s));
}

/* Reads what is available into buf (appending at *len) waiting up to the
 * deadline; returns bytes read, 0 on EOF, -1 on timeout/error. */
static ssize_t cli_read_some(int fd, char *buf, size_t cap, size_t *len, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - tl_mono_ms();
		if (left <= 0)
			return -1;
		struct pollfd p = {fd, POLLIN, 0};
		int pr = poll(&p, 1, (int)left);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr <= 0)
			return -1;
		ssize_t r = recv(fd, buf + *len, cap - *len - 1, 0);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (r < 0)
			return errno == ECONNRESET ? 0 : -1;
		*len += (size_t)r;
		buf[*len] = '\0';
		return r;
	}
}

struct resp {
	int status;
	char head[8192];
	char body[2 * 1024 * 1024];
	size_t body_len;
	bool chunked;
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

/* Decodes a complete chunked body in place; returns its length or -1 if incomplete. */
static long dechunk(const char *in, size_t n, char *out)
{
	size_t i = 0, o = 0;
	for (;;) {
		const char *crlf = memmem(in + i, n - i, "\r\n", 2);
		if (!crlf)
			return -1;
		long sz = strtol(in + i, NULL, 16);
		i = (size_t)(crlf - in) + 2;
		if (sz == 0)
			return n - i >= 2 ? (long)o : -1;
		if (n - i < (size_t)sz + 2)
			return -1;
		memcpy(out + o, in + i, (size_t)sz);
		o += (size_t)sz;
		i += (size_t)sz + 2;
	}
}

/* Bytes read past the end of the last response (a pipelined next one). */
static char leftover[65536];
static size_t leftover_len;
static int leftover_fd = -1;

static void keep_leftover(int fd, const char *p, size_t n)
{
	if (n > sizeof leftover)
		n = sizeof leftover;
	memcpy(leftover, p, n);
	leftover_len = n;
	leftover_fd = fd;
}

/* Reads one full response (Content-Length or chunked). head_only for HEAD. */
static int cli_read_response(int fd, struct resp *r, bool head_only)
{
	static char raw[2 * 1024 * 1024 + 8192];
	size_t len = 0;
	int64_t deadline = tl_mono_ms() + DEADLINE_MS;
	memset(r, 0, sizeof *r);
	if (leftover_fd == fd && leftover_len) {
		memcpy(raw, leftover, leftover_len);
		len = leftover_len;
		raw[len] = '\0';
	}
	leftover_len = 0;
	for (;;) {
		char *eoh = strstr(raw, "\r\n\r\n");
		if (len && eoh) {
			size_t hl = (size_t)(eoh - raw) + 4;
			if (hl >= sizeof r->head)
				return -1;
			memcpy(r->head, raw, hl);
			r->head[hl] = '\0';
			r->status = (int)strtol(raw + 9, NULL, 10);
			char v[64];
			size_t blen = len - hl;
			if (head_only) {
				keep_leftover(fd, raw + hl, blen);
				return 0;
			}
			if (resp_header(r, "content-length", v, sizeof v)) {
				size_t cl = strtoul(v, NULL, 10);
				if (blen >= cl) {
					memcpy(r->body, raw + hl, cl);
					r->body_len = cl;
					r->body[cl] = '\0';
					keep_leftover(fd, raw + hl + cl, blen - cl);
					return 0;
				}
			} else if (resp_header(r, "transfer-encoding", v, sizeof v)) {
				r->chunked = true;
				long bl = dechunk(raw + hl, blen, r->body);
				if (bl >= 0) {
					r->body_len = (size_t)bl;
					r->body[bl] = '\0';
					return 0;
				}
			}
		}
		if (len == 0)
			raw[0] = '\0';
		ssize_t got = cli_read_some(fd, raw, sizeof raw, &len, deadline);
		if (got <= 0)
			return -1;
	}
}

/* One request on a fresh connection. */
static void request(int port, const char *req, struct resp *r)
{
	int fd = cli_connect(port);
	cli_sends(fd, req);
	assert_int_equal(cli_read_response(fd, r, strncmp(req, "HEAD ", 5) == 0), 0);
	close(fd);
}

/* Waits until fd reaches EOF (server closed). Returns true on EOF. */
static bool wait_eof(int fd)
{
	char buf[4096];
	int64_t deadline = tl_mono_ms() + DEADLINE_MS;
	for (;;) {
		size_t len = 0;
		ssize_t r = cli_read_some(fd, buf, sizeof buf, &len, deadline);
		if (r == 0)
			return true;
		if (r < 0)
			return false;
	}
}

static bool poll_until(atomic_int *v, int want)
{
	int64_t deadline = tl_mono_ms() + DEADLINE_MS;
	while (atomic_load(v) != want) {
		if (tl_mono_ms() > deadline)
			return false;
		usleep(1000);
	}
	return true;
}

/* ---- handlers --------------------------------------------------------------- */

static atomic_int calls;

static int h_text(void *arg, struct tl_http_req *r)
{
	atomic_fetch_add(&calls, 1);
	const char *body = arg;
	const char *hdrs[] = {"X-Test", "yes", NULL};
	tl_http_respond(r, 200, "text/plain", body, strlen(body), hdrs);
	return TL_HTTP_DONE;
}

/* Echoes method, path, query, a header and query parameter "q". */
static int h_echo(void *arg, struct tl_http_req *r)
{
	(void)arg;
	atomic_fetch_add(&calls, 1);
	size_t ml, pl, ql = 0, hl = 0, bl;
	const char *m = tl_http_method(r, &ml);
	const char *p = tl_http_path(r, &pl);
	const char *q = tl_http_query(r, &ql);
	const char *h = tl_http_header(r, "X-Thing", &hl);
	const char *b = tl_http_body(r, &bl);
	char qp[64];
	int qpl = tl_http_query_param(r, "q", qp, sizeof qp);
	char peer[64];
	tl_http_peer(r, peer, sizeof peer);
	char out[4096];
	int n =
	    snprintf(out, sizeof out, "m=%.*s p=%.*s q=%.*s h=%.*s qp=%s peer=%s b=%.*s", (int)ml, m, (int)pl,
	             p, (int)ql, q ? q : "", (int)hl, h ? h : "", qpl >= 0 ? qp : "(none)", peer, (int)bl, b);
	tl_http_respond(r, 200, "text/plain", out, (size_t)n, NULL);
	return TL_HTTP_DONE;
}

static int h_error(void *arg, struct tl_http_req *r)
{
	(void)arg;
	tl_http_respond_error(r, 400, "bad_event", "line %d: unknown type \"%s\"", 7, "opne");
	return TL_HTTP_DONE;
}

static int h_forgets(void *arg, struct tl_http_req *r)
{
	(void)arg;
	(void)r;
	return TL_HTTP_DONE;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_routing(void **state)
{
	(void)state;
	struct tl_http_route routes[] = {
	    {"GET", "/healthz", h_text, "ok"}, {"GET", "/o/*", h_echo, NULL},
	    {"POST", "/echo", h_echo, NULL},   {NULL, "/any", h_text, "any"},
	    {"GET", "/err", h_error, NULL},    {"GET", "/forgets", h_forgets, NULL},
	};
	struct tsrv t;
	tsrv_start(&t, routes, sizeof routes / sizeof routes[0], NULL);
	static struct resp r;
	char v[256];

	request(t.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "ok");
	assert_non_null(resp_header(&r, "x-test", v, sizeof v));
	assert_string_equal(v, "yes");
	assert_non_null(resp_header(&r, "content-type", v, sizeof v));
	assert_string_equal(v, "text/plain");

	/* exact path: a longer path is not the same route */
	request(t.port, "GET /healthz/x HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	assert_int_equal(r.status, 404);

	request(t.port, "GET /o/abc.gif?q=a%20b&z=1 HTTP/1.1\r\nHost: x\r\nx-THING: hello\r\n\r\n", &r);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "m=GET p=/o/abc.gif q=q=a%20b&z=1 h=hello qp=a b peer=127.0.0.1"));

	request(t.port, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", &r);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "m=POST p=/echo"));
	assert_non_null(strstr(r.body, "b=hello"));
	assert_non_null(strstr(r.body, "qp=(none)"));

	request(t.port, "DELETE /any HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "any");

	/* HEAD on a GET route: headers with the GET length, no body */
	request(t.port, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	assert_int_equal(r.status, 200);
	assert_non_null(resp_header(&r, "content-length", v, sizeof v));
	assert_string_equal(v, "2");

	request(t.port, "GET /err HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	assert_int_equal(r.status, 400);
	assert_string_equal(
	    r.body, "{\"error\":{\"code\":\"bad_event\",\"message\":\"line 7: unknown type \\\"opne\\\"\"}}");

	/* a handler that forgets to answer still gets the client an answer */
	request(t.port, "GET /forgets HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	assert_int_equal(r.status, 500);
	tsrv_stop(&t);
}

static void test_404_405_json(void **state)
{
	(void)state;
	struct tl_http_route routes[] = {
	    {"GET", "/healthz", h_text, "ok"},
	    {"POST", "/v1/events", h_echo, NULL},
	};
	struct tsrv t;
	tsrv_start(&t, routes, 2, NULL);
	static struct resp r;
	char v[256];

	request(t.port, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	assert_int_equal(r.status, 404);
	assert_non_null(resp_header(&r, "content-type", v, sizeof v));
	assert_string_equal(v, "application/json");
	assert_non_null(strstr(r.body, "{\"error\":{\"code\":\"not_found\""));

	request(t.port, "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &r);
	assert_int_equal(r.status, 405);
	assert_non_null(strstr(r.body, "\"code\":\"method_not_allowed\""));
	assert_non_null(resp_header(&r, "allow", v, sizeof v));
	assert_string_equal(v, "GET, HEAD");

	request(t.port, "GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	assert_int_equal(r.status, 405);
	tsrv_stop(&t);
}

static void test_413_body_limit(void **state)
{
	(void)state;
	struct tl_http_route routes[] = {{"POST", "/echo", h_echo, NULL}};
	struct tl_http_limits lim;
	tl_http_limits_defaults(&lim);
	lim.max_body = 100;
	struct tsrv t;
	tsrv_start(&t, routes, 1, &lim);
	static struct resp r;
	char v[256];
	atomic_store(&calls, 0);

	/* announced length over the limit: answered before the body is read */
	int fd = cli_connect(t.port);
	cli_sends(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n");
	assert_int_equal(cli_read_response(fd, &r, false), 0);
	close(fd);
	assert_int_equal(r.status, 413);
	assert_non_null(resp_header(&r, "content-type", v, sizeof v));
	assert_string_equal(v, "application/json");
	assert_non_null(strstr(r.body, "{\"error\":{\"code\":\"too_large\""));
	assert_non_null(strstr(r.body, "100 bytes"));

	/* chunked body growing over the limit */
	fd = cli_connect(t.port);
	char creq[1024];
	size_t cn = (size_t)snprintf(creq, sizeof creq,
	                             "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
	for (int i = 0; i < 3; i++) { /* one send: the server may close once it has seen enough */
		memcpy(creq + cn, "50\r\n", 4);
		cn += 4;
		memset(creq + cn, 'a', 80);
		cn += 80;
		memcpy(creq + cn, "\r\n", 2);
		cn += 2;
	}
	cli_send(fd, creq, cn);
	assert_int_equal(cli_read_response(fd, &r, false), 0);
	close(fd);
	assert_int_equal(r.status, 413);
	assert_non_null(strstr(r.body, "\"too_large\""));
	assert_int_equal(atomic_load(&calls), 0);

	/* headers over the head limit: 431 JSON, before any handler */
	static char big[80 * 1024];
	int bn = snprintf(big, sizeof big, "POST /echo HTTP/1.1\r\nHost: x\r\n");
	for (int i = 0; i < 40; i++) {
		bn += snprintf(big + bn, sizeof big - (size_t)bn, "X-Pad-%d: ", i);
		memset(big + bn, 'p', 1800);
		bn += 1800;
		bn += snprintf(big + bn, sizeof big - (size_t)bn, "\r\n");
	}
	bn += snprintf(big + bn, sizeof big - (size_t)bn, "Content-Length: 0\r\n\r\n");
	fd = cli_connect(t.port);
	cli_send(fd, big, (size_t)bn);
	assert_int_equal(cli_read_response(fd, &r, false), 0);
	close(fd);
	assert_int_equal(r.status, 431);
	assert_non_null(strstr(r.body, "\"code\":\"too_large\""));
	assert_int_equal(atomic_load(&calls), 0);

	/* at the limit: accepted */
	char req[512];
	char body[101];
	memset(body, 'b', 100);
	body[100] = '\0';
	snprintf(req, sizeof req, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n%s", body);
	request(t.port, req, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(atomic_load(&calls), 1);
	tsrv_stop(&t);
}

static void test_keepalive(void **state)
{
	(void)state;
	struct tl_http_route routes[] = {{"GET", "/healthz", h_text, "ok"}, {"POST", "/echo", h_echo, NULL}};
	struct tsrv t;
	tsrv_start(&t, routes, 2, NULL);
	static struct resp r;
	atomic_store(&calls, 0);

	int fd = cli_connect(t.port);
	cli_sends(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_int_equal(cli_read_response(fd, &r, false), 0);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "ok");
	cli_sends(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
	assert_int_equal(cli_read_response(fd, &r, false), 0);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "b=abc"));
	/* errors keep the connection too */
	cli_sends(fd, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_int_equal(cli_read_response(fd, &r, false), 0);
	assert_int_equal(r.status, 404);
	cli_sends(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_int_equal(cli_read_response(fd, &r, false), 0);
	assert_int_equal(r.status, 200);
	close(fd);
	assert_int_equal(atomic_load(&calls), 3);
	tsrv_stop(&t);
}

/* ---- deferred ------------------------------------------------------------- */

static _Atomic(struct tl_http_deferred *) parked;
static atomic_int parked_count;

static void *complete_thread(void *arg)
{
	struct tl_http_deferred *d = arg;
	static const char gif[] = "GIF89a";
	const char *hdrs[] = {"Cache-Control", "no-store", NULL};
	tl_http_deferred_complete(d, 202, "image/gif", gif, sizeof gif - 1, hdrs);
	return NULL;
}

/* Defers and completes from a fresh thread at once. */
static int h_defer_thread(void *arg, struct tl_http_req *r)
{
	(void)arg;
	struct tl_http_deferred *d = tl_http_defer(r);
	assert_non_null(d);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, complete_thread, d), 0);
	pthread_detach(th);
	return TL_HTTP_ASYNC;
}

/* Defers and parks the handle for the test to complete. */
static int h_defer_park(void *arg, struct tl_http_req *r)
{
	(void)arg;
	struct tl_http_deferred *d = tl_http_defer(r);
	assert_non_null(d);
	atomic_store(&parked, d);
	atomic_fetch_add(&parked_count, 1);
	return TL_HTTP_ASYNC;
}

static void complete_parked(void)
{
	struct tl_http_deferred *d = atomic_exchange(&parked, NULL);
	assert_non_null(d);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, complete_thread, d), 0);
	pthread_join(th, NULL);
}

static void test_deferred_from_thread(void **state)
{
	(void)state;
	struct tl_http_route routes[] = {{"GET", "/d", h_defer_thread, NULL},
	                                 {"GET", "/p", h_defer_park, NULL}};
	struct tsrv t;
	tsrv_start(&t, routes, 2, NULL);
	static struct resp r;
	char v[64];

	int fd = cli_connect(t.port);
	for (int i = 0; i < 20; i++) { /* keep-alive, each completed by another thread */
		cli_sends(fd, "GET /d HTTP/1.1\r\nHost: x\r\n\r\n");
		assert_int_equal(cli_read_response(fd, &r, false), 0);
		assert_int_equal(r.status, 202);
		assert_string_equal(r.body, "GIF89a");
		assert_non_null(resp_header(&r, "cache-control", v, sizeof v));
		assert_string_equal(v, "no-store");
	}
	/* HEAD through a deferred response: no body */
	cli_sends(fd, "HEAD /d HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_int_equal(cli_read_response(fd, &r, true), 0);
	assert_int_equal(r.status, 202);
	/* the next response on the connection must start right after the headers */
	cli_sends(fd, "GET /d HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_int_equal(cli_read_response(fd, &r, false), 0);
	assert_int_equal(r.status, 202);
	close(fd);

	/* completed while the handler's thread is long gone */
	atomic_store(&parked_count, 0);
	fd = cli_connect(t.port);
	cli_sends(fd, "GET /p HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_true(poll_until(&parked_count, 1));
	complete_parked();
	assert_int_equal(cli_read_response(fd, &r, false), 0);
	assert_int_equal(r.status, 202);
	close(fd);
	tsrv_stop(&t);
}

/* The client sends its next request while the previous one is still
 * deferred: both are answered, in order, on the one connection. */
static void test_deferred_pipelined(void **state)
{
	(void)state;
	struct tl_http_route routes[] = {{"GET", "/p", h_defer_park, NULL},
	                                 {"GET", "/healthz", h_text, "ok"}};
	struct tsrv t;
	tsrv_start(&t, routes, 2, NULL);
	static struct resp r;
	int fd = cli_connect(t.port);
	for (int i = 0; i < 3; i++) {
		atomic_store(&parked_count, 0);
		cli_sends(fd, "GET /p HTTP/1.1\r\nHost: x\r\n\r\n");
		assert_true(poll_until(&parked_count, 1));
		cli_sends(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
		usleep(20000); /* let the loop see the bytes while the first request waits (not a correctness
		                  wait) */
		complete_parked();
		assert_int_equal(cli_read_response(fd, &r, false), 0);
		assert_int_equal(r.status, 202);
		assert_string_equal(r.body, "GIF89a");
		assert_int_equal(cli_read_response(fd, &r, false), 0);
		assert_int_equal(r.status, 200);
		assert_string_equal(r.body, "ok");
	}
	/* and the connection still serves deferred responses afterwards */
	atomic_store(&parked_count, 0);
	cli_sends(fd, "GET /p HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_true(poll_until(&parked_count, 1));
	complete_parked();
	assert_int_equal(cli_read_response(fd, &r, false), 0);
	assert_int_equal(r.status, 202);
	close(fd);
	tsrv_stop(&t);
}

static void test_deferred_client_gone(void **state)
{
	(void)state;
	struct tl_http_route routes[] = {{"GET", "/p", h_defer_park, NULL},
	                                 {"GET", "/healthz", h_text, "ok"}};
	struct tsrv t;
	tsrv_start(&t, routes, 2, NULL);
	static struct resp r;

	for (int i = 0; i < 5; i++) {
		atomic_store(&parked_count, 0);
		int fd = cli_connect(t.port);
		cli_sends(fd, "GET /p HTTP/1.1\r\nHost: x\r\n\r\n");
		assert_true(poll_until(&parked_count, 1));
		if (i % 2) { /* reset instead of FIN */
			struct linger lg = {1, 0};
			setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
		}
		close(fd); /* client gone before the completion */
		complete_parked();
		/* the server is fine and has processed the completion (FIFO) */
		request(t.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &r);
		assert_int_equal(r.status, 200);
	}
	tsrv_stop(&t);
}

struct stop_ctx {
	struct tsrv *t;
};

static void *stop_thread(void *arg)
{
	struct tsrv *t = arg;
	tl_http_server_stop(t->srv);
	return NULL;
}

/* Stop waits for a deferred response in flight, then returns; a completion
 * arriving after the server stopped is dropped safely. */
static void test_stop_graceful(void **state)
{
	(void)state;
	struct tl_http_route routes[] = {{"GET", "/p", h_defer_park, NULL}};
	struct tsrv t;
	tsrv_start(&t, routes, 1, NULL);
	static struct resp r;

	atomic_store(&parked_count, 0);
	int fd = cli_connect(t.port);
	cli_sends(fd, "GET /p HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_true(poll_until(&parked_count, 1));
	pthread_t st;
	assert_int_equal(pthread_create(&st, NULL, stop_thread, &t), 0);
	pthread_join(st, NULL);
	complete_parked();
	assert_int_equal(cli_read_response(fd, &r, false), 0);
	assert_int_equal(r.status, 202);
	assert_true(wait_eof(fd)); /* no keep-alive while stopping */
	close(fd);
	pthread_join(t.th, NULL);
	assert_int_equal(t.run_rc, 0);

	/* a new connection is refused now */
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {0};
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)t.port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_not_equal(connect(s, (struct sockaddr *)&sa, sizeof sa), 0);
	close(s);
	tl_http_server_destroy(t.srv);
}

static void test_stop_drops_late_completion(void **state)
{
	(void)state;
	struct tl_http_route routes[] = {{"GET", "/p", h_defer_park, NULL},
	                                 {"GET", "/healthz", h_text, "ok"}};
	struct tsrv t;
	tsrv_start(&t, routes, 2, NULL);

	atomic_store(&parked_count, 0);
	int fd = cli_connect(t.port);
	cli_sends(fd, "GET /p HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_true(poll_until(&parked_count, 1));
	close(fd);
	/* idle keep-alive connection: closed by the stop */
	int idle = cli_connect(t.port);
	cli_sends(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
	static struct resp r;
	assert_int_equal(cli_read_response(idle, &r, false), 0);
	tl_http_server_stop(t.srv);
	assert_true(wait_eof(idle));
	close(idle);
	/* the parked request's client is gone; completing after stop must be safe */
	pthread_join(t.th, NULL);
	complete_parked();
	tl_http_server_destroy(t.srv);
}

/* ---- read timeout --------------------------------------------------------------- */

static void test_read_timeout(void **state)
{
	(void)state;
	struct tl_http_route routes[] = {{"GET", "/healthz", h_text, "ok"}};
	struct tl_http_limits lim;
	tl_http_limits_defaults(&lim);
	lim.read_timeout_ms = 200;
	struct tsrv t;
	tsrv_start(&t, routes, 1, &lim);

	/* headers never finished */
	int fd = cli_connect(t.port);
	cli_sends(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n");
	assert_true(wait_eof(fd));
	close(fd);

	/* body never finished */
	fd = cli_connect(t.port);
	cli_sends(fd, "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
	assert_true(wait_eof(fd));
	close(fd);

	/* a prompt client is served */
	static struct resp r;
	request(t.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &r);
	assert_int_equal(r.status, 200);
	tsrv_stop(&t);
}

/* ---- streams --------------------------------------------------------------- */

static struct tl_http_stream *live;
static atomic_int live_closed;
static atomic_int live_ticks;
static atomic_int live_toobig;
static int live_chunk;            /* bytes per tick; 0 = small text */
static volatile bool live_paused; /* ticks send nothing */

static void live_on_close(void *arg)
{
	assert_ptr_equal(arg, &live);
	live = NULL;
	atomic_fetch_add(&live_closed, 1);
}

static int h_live(void *arg, struct tl_http_req *r)
{
	(void)arg;
	live = tl_http_stream_start(r, "text/event-stream", live_on_close, &live);
	assert_non_null(live);
	assert_int_equal(tl_http_stream_send(live, "retry: 1000\n\n", 13), 0);
	return TL_HTTP_DONE;
}

/* Timer on the loop thread: pushes one event per tick. */
static void live_tick(void *arg)
{
	(void)arg;
	if (!live || live_paused)
		return;
	int n = atomic_fetch_add(&live_ticks, 1);
	if (live_chunk) {
		static char big[65536];
		memset(big, 'x', sizeof big);
		int rc = tl_http_stream_send(live, big, (size_t)live_chunk);
		if (rc == -TL_ETOOBIG)
			atomic_store(&live_toobig, 1);
		if (rc)
			live = NULL; /* closed; on_close comes */
		return;
	}
	char ev[64];
	int len = snprintf(ev, sizeof ev, "data: tick %d\n\n", n);
	if (tl_http_stream_send(live, ev, (size_t)len) != 0)
		live = NULL;
	if (n == 4) {
		tl_http_stream_close(live);
		live = NULL;
	}
}

static void test_sse_stream(void **state)
{
	(void)state;
	struct tl_http_route routes[] = {{"GET", "/v1/live", h_live, NULL},
	                                 {"GET", "/healthz", h_text, "ok"}};
	struct tsrv t;
	memset(&t, 0, sizeof t);
	assert_int_equal(tl_http_server_create("test", "127.0.0.1:0", NULL, routes, 2, &t.srv), 0);
	t.port = tl_http_server_port(t.srv);
	assert_int_equal(tl_http_server_every(t.srv, 10, live_tick, NULL), 0);
	assert_int_equal(pthread_create(&t.th, NULL, run_thread, &t), 0);

	/* 1. the client receives every chunk, then the end of the stream */
	live_chunk = 0;
	atomic_store(&live_ticks, 0);
	atomic_store(&live_closed, 0);
	int fd = cli_connect(t.port);
	cli_sends(fd, "GET /v1/live HTTP/1.1\r\nHost: x\r\n\r\n");
	static struct resp r;
	assert_int_equal(cli_read_response(fd, &r, false), 0);
	assert_int_equal(r.status, 200);
	assert_true(r.chunked);
	char v[64];
	assert_non_null(resp_header(&r, "content-type", v, sizeof v));
	assert_string_equal(v, "text/event-stream");
	assert_string_equal(r.body, "retry: 1000\n\ndata: tick 0\n\ndata: tick 1\n\ndata: tick 2\n\n"
	                            "data: tick 3\n\ndata: tick 4\n\n");
	/* the connection stays usable after the stream ended */
	cli_sends(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_int_equal(cli_read_response(fd, &r, false), 0);
	assert_int_equal(r.status, 200);
	close(fd);
	assert_int_equal(atomic_load(&live_closed), 0); /* closed by us: no on_close */

	/* 2a. the client goes away while nothing is being sent: on_close runs at once */
	atomic_store(&live_closed, 0);
	live_paused = true;
	fd = cli_connect(t.port);
	cli_sends(fd, "GET /v1/live HTTP/1.1\r\nHost: x\r\n\r\n");
	{
		char b[4096] = "";
		size_t bl = 0;
		int64_t dl = tl_mono_ms() + DEADLINE_MS;
		while (!strstr(b, "retry: 1000"))
			assert_true(cli_read_some(fd, b, sizeof b, &bl, dl) > 0);
	}
	close(fd);
	assert_true(poll_until(&live_closed, 1));
	live_paused = false;

	/* 2b. the client goes away while events are being sent: on_close runs */
	atomic_store(&live_closed, 0);
	atomic_store(&live_ticks, -1000000); /* never reaches the close */
	fd = cli_connect(t.port);
	cli_sends(fd, "GET /v1/live HTTP/1.1\r\nHost: x\r\n\r\n");
	char buf[4096];
	size_t len = 0;
	int64_t deadline = tl_mono_ms() + DEADLINE_MS;
	while (!strstr(buf, "data: tick"))
		assert_true(cli_read_some(fd, buf, sizeof buf, &len, deadline) > 0);
	close(fd);
	assert_true(poll_until(&live_closed, 1));

	/* 3. a client that does not read: over the unsent cap the stream is cut */
	live_chunk = 65536;
	atomic_store(&live_closed, 0);
	atomic_store(&live_toobig, 0);
	fd = cli_connect(t.port);
	int small = 4096;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
	cli_sends(fd, "GET /v1/live HTTP/1.1\r\nHost: x\r\n\r\n");
	assert_true(poll_until(&live_toobig, 1));
	assert_true(poll_until(&live_closed, 1));
	close(fd);
	live_chunk = 0;

	/* 4. a stream still open when the server stops gets on_close */
	atomic_store(&live_closed, 0);
	atomic_store(&live_ticks, -1000000);
	fd = cli_connect(t.port);
	cli_sends(fd, "GET /v1/live HTTP/1.1\r\nHost: x\r\n\r\n");
	len = 0;
	buf[0] = '\0';
	deadline = tl_mono_ms() + DEADLINE_MS;
	while (!strstr(buf, "data: tick"))
		assert_true(cli_read_some(fd, buf, sizeof buf, &len, deadline) > 0);
	tsrv_stop(&t);
	assert_int_equal(atomic_load(&live_closed), 1);
	close(fd);
}

/* tl_http_server_soon: handlers gather, one callback per loop iteration answers */
static struct tl_http_deferred *gathered[256];
static int n_gathered;
static atomic_int soon_runs;
static bool soon_due;

static void answer_gathered(void *arg)
{
	(void)arg;
	soon_due = false;
	atomic_fetch_add(&soon_runs, 1);
	char body[32];
	int n = snprintf(body, sizeof body, "batch of %d", n_gathered);
	for (int i = 0; i < n_gathered; i++)
		tl_http_deferred_complete(gathered[i], 200, "text/plain", body, (size_t)n, NULL);
	n_gathered = 0;
}

static int h_gather(void *arg, struct tl_http_req *r)
{
	struct tl_http_server **srv = arg;
	if (!soon_due) {
		assert_int_equal(tl_http_server_soon(*srv, answer_gathered, NULL), 0);
		soon_due = true;
	}
	gathered[n_gathered++] = tl_http_defer(r);
	return TL_HTTP_ASYNC;
}

static void test_soon(void **state)
{
	(void)state;
	static struct tl_http_server *srvp;
	struct tl_http_route routes[] = {{"GET", "/g", h_gather, &srvp}};
	struct tsrv t;
	tsrv_start(&t, routes, 1, NULL);
	srvp = t.srv;
	atomic_store(&soon_runs, 0);
	/* requests that arrive together are handled in one iteration, answered together */
	int fds[8];
	for (int i = 0; i < 8; i++)
		fds[i] = cli_connect(t.port);
	for (int i = 0; i < 8; i++)
		cli_sends(fds[i], "GET /g HTTP/1.1\r\nHost: x\r\n\r\n");
	static struct resp r;
	for (int i = 0; i < 8; i++) {
		assert_int_equal(cli_read_response(fds[i], &r, false), 0);
		assert_int_equal(r.status, 200);
		assert_non_null(strstr(r.body, "batch of "));
		close(fds[i]);
	}
	int runs = atomic_load(&soon_runs);
	assert_true(runs >= 1 && runs <= 8);
	/* a missing server is refused */
	assert_int_not_equal(tl_http_server_soon(NULL, answer_gathered, NULL), 0);
	tsrv_stop(&t);
}

static atomic_int ticks;
static void count_tick(void *arg)
{
	(void)arg;
	atomic_fetch_add(&ticks, 1);
}

static void test_every_and_port(void **state)
{
	(void)state;
	struct tl_http_route routes[] = {{"GET", "/healthz", h_text, "ok"}};
	struct tsrv t;
	tsrv_start(&t, routes, 1, NULL);
	/* two servers on port 0 get different ports */
	struct tl_http_server *other;
	assert_int_equal(tl_http_server_create("other", "127.0.0.1:0", NULL, routes, 1, &other), 0);
	assert_int_not_equal(tl_http_server_port(other), t.port);
	/* the same port twice is refused */
	char addr[64];
	snprintf(addr, sizeof addr, "127.0.0.1:%d", t.port);
	struct tl_http_server *dup = NULL;
	assert_int_not_equal(tl_http_server_create("dup", addr, NULL, routes, 1, &dup), 0);
	assert_null(dup);
	assert_int_not_equal(tl_http_server_create("bad", "nonsense", NULL, routes, 1, &dup), 0);

	atomic_store(&ticks, 0);
	assert_int_equal(tl_http_server_every(other, 5, count_tick, NULL), 0);
	struct tsrv t2 = {.srv = other, .port = tl_http_server_port(other)};
	assert_int_equal(pthread_create(&t2.th, NULL, run_thread, &t2), 0);
	int64_t deadline = tl_mono_ms() + DEADLINE_MS;
	while (atomic_load(&ticks) < 3 && tl_mono_ms() < deadline)
		usleep(1000);
	assert_true(atomic_load(&ticks) >= 3);
	tsrv_stop(&t2);
	tsrv_stop(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_routing),
	    cmocka_unit_test(test_404_405_json),
	    cmocka_unit_test(test_413_body_limit),
	    cmocka_unit_test(test_keepalive),
	    cmocka_unit_test(test_deferred_from_thread),
	    cmocka_unit_test(test_deferred_pipelined),
	    cmocka_unit_test(test_deferred_client_gone),
	    cmocka_unit_test(test_stop_graceful),
	    cmocka_unit_test(test_stop_drops_late_completion),
	    cmocka_unit_test(test_read_timeout),
	    cmocka_unit_test(test_sse_stream),
	    cmocka_unit_test(test_every_and_port),
	    cmocka_unit_test(test_soon),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
