/* response.c — the router, the request accessors and plain responses.
 *
 * Every request lands in tl_http__on_req (the one h2o handler), which picks
 * the first route whose path and method match: 404 JSON when no path
 * matches, 405 JSON (with Allow) when a path matches but no method does. A
 * route for GET also serves HEAD; responses to HEAD carry the headers (and
 * Content-Length) of the GET response without its body.
 *
 * h2o answers some errors itself before any handler runs (413 for a body
 * over the limit, 400 for a broken body encoding, 417): the filter below
 * rewrites those plain-text bodies into tally's JSON error shape. */
#include "http/internal.h"

#include "core/buf.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

h2o_generator_t tl_http_plain_generator = {NULL, NULL};

const char *tl_http__reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 202:
		return "Accepted";
	case 204:
		return "No Content";
	case 301:
		return "Moved Permanently";
	case 302:
		return "Found";
	case 303:
		return "See Other";
	case 304:
		return "Not Modified";
	case 307:
		return "Temporary Redirect";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 409:
		return "Conflict";
	case 413:
		return "Payload Too Large";
	case 415:
		return "Unsupported Media Type";
	case 422:
		return "Unprocessable Entity";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	default:
		break;
	}
	if (status >= 200 && status < 300)
		return "OK";
	if (status >= 300 && status < 400)
		return "Redirect";
	if (status >= 400 && status < 500)
		return "Client Error";
	return "Server Error";
}

/* Adds one response header; name is matched case-insensitively against
 * h2o's known tokens, the value is copied into the request pool. */
static void add_header(h2o_req_t *h, const char *name, const char *value)
{
	size_t nl = strlen(name), vl = strlen(value);
	if (nl == 0)
		return;
	char *lc = h2o_mem_alloc_pool(&h->pool, nl + 1);
	for (size_t i = 0; i < nl; i++)
		lc[i] = (char)tolower((unsigned char)name[i]);
	lc[nl] = '\0';
	h2o_iovec_t v = h2o_strdup(&h->pool, value, vl);
	const h2o_token_t *tok = h2o_lookup_token(lc, nl);
	if (tok)
		h2o_add_header(&h->pool, &h->res.headers, tok, name, v.base, v.len);
	else
		h2o_add_header_by_str(&h->pool, &h->res.headers, lc, nl, 0, name, v.base, v.len);
}

void tl_http__send(h2o_req_t *h, bool is_head, int status, const char *content_type, size_t ctype_len,
                   const void *body, size_t len, const char *const *headers)
{
	h->res.status = status;
	h->res.reason = tl_http__reason(status);
	h->res.content_length = len;
	if (content_type && ctype_len) {
		h2o_iovec_t ct = h2o_strdup(&h->pool, content_type, ctype_len);
		h2o_add_header(&h->pool, &h->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, ct.base, ct.len);
	}
	if (headers)
		for (size_t i = 0; headers[i] && headers[i + 1]; i += 2)
			add_header(h, headers[i], headers[i + 1]);
	h2o_start_response(h, &tl_http_plain_generator);
	if (is_head || len == 0) {
		h2o_send(h, NULL, 0, H2O_SEND_STATE_FINAL);
		return;
	}
	/* h2o may write asynchronously: the bytes must live as long as the request */
	h2o_iovec_t buf = h2o_strdup(&h->pool, body, len);
	h2o_send(h, &buf, 1, H2O_SEND_STATE_FINAL);
}

void tl_http_respond(struct tl_http_req *r, int status, const char *content_type, const void *body,
                     size_t len, const char *const *extra_headers)
{
	if (r->responded)
		return;
	r->responded = true;
	tl_http__send(r->h, r->is_head, status, content_type, content_type ? strlen(content_type) : 0, body,
	              len, extra_headers);
}

/* Appends {"error":{"code":…,"message":…}} to b. */
static int error_json(struct tl_buf *b, const char *code, const char *msg, size_t msg_len)
{
	int rc = tl_buf_puts(b, "{\"error\":{\"code\":");
	if (!rc)
		rc = tl_buf_json_str(b, code, strlen(code));
	if (!rc)
		rc = tl_buf_puts(b, ",\"message\":");
	if (!rc)
		rc = tl_buf_json_str(b, msg, msg_len);
	if (!rc)
		rc = tl_buf_puts(b, "}}");
	return rc;
}

static void send_error(h2o_req_t *h, bool is_head, int status, const char *code, const char *msg,
                       const char *const *headers)
{
	struct tl_buf b;
	tl_buf_init(&b, 0);
	if (error_json(&b, code, msg, strlen(msg)) == 0)
		tl_http__send(h, is_head, status, H2O_STRLIT("application/json"), b.data, b.len, headers);
	else
		tl_http__send(h, is_head, 500, H2O_STRLIT("application/json"), H2O_STRLIT("{\"error\":{}}"),
		              headers);
	tl_buf_free(&b);
}

void tl_http_respond_error(struct tl_http_req *r, int status, const char *code, const char *fmt, ...)
{
	if (r->responded)
		return;
	r->responded = true;
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (n < 0)
		msg[0] = '\0';
	send_error(r->h, r->is_head, status, code, msg, NULL);
}

/* ---- routing ------------------------------------------------------------ */

static bool path_matches(const char *pattern, const char *path, size_t len)
{
	size_t pl = strlen(pattern);
	if (pl && pattern[pl - 1] == '*')
		return len >= pl - 1 && memcmp(pattern, path, pl - 1) == 0;
	return len == pl && memcmp(pattern, path, pl) == 0;
}

static bool method_matches(const char *want, h2o_iovec_t m, bool is_head)
{
	if (!want)
		return true;
	size_t wl = strlen(want);
	if (m.len == wl && memcmp(want, m.base, wl) == 0)
		return true;
	return is_head && wl == 3 && memcmp(want, "GET", 3) == 0;
}

static void allow_add(char *allow, size_t cap, const char *m)
{
	size_t len = strlen(allow), ml = strlen(m);
	/* skip duplicates ("GET" twice) */
	for (const char *p = allow; (p = strstr(p, m)) != NULL; p += ml)
		if ((p == allow || p[-1] == ' ') && (p[ml] == ',' || p[ml] == '\0'))
			return;
	if (len + ml + 3 >= cap)
		return;
	snprintf(allow + len, cap - len, "%s%s", len ? ", " : "", m);
}

/* Bytes of the request head as received (near enough: separators counted
 * as in HTTP/1.1). */
static size_t head_bytes(const h2o_req_t *req)
{
	size_t n = req->input.method.len + req->input.path.len + req->input.authority.len + 32;
	for (size_t i = 0; i < req->headers.size; i++)
		n += req->headers.entries[i].name->len + req->headers.entries[i].value.len + 4;
	return n;
}

int tl_http__on_req(h2o_handler_t *self, h2o_req_t *req)
{
	struct tl_http_server *srv = ((struct tl_http_handler *)self)->srv;
	size_t plen = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
	bool is_head = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
	bool path_found = false;
	char allow[128] = "";

	/* h2o itself caps a request head at 100 header lines and drops the
	 * connection beyond its buffer; tally answers anything over
	 * TL_HTTP_MAX_HEAD with a JSON 431 and closes */
	if (head_bytes(req) > TL_HTTP_MAX_HEAD) {
		req->http1_is_persistent = 0;
		char msg[64];
		snprintf(msg, sizeof msg, "request head over %d bytes", TL_HTTP_MAX_HEAD);
		send_error(req, is_head, 431, "too_large", msg, NULL);
		return 0;
	}

	for (size_t i = 0; i < srv->n_routes; i++) {
		const struct tl_http_route *rt = &srv->routes[i];
		if (!path_matches(rt->path, req->path.base, plen))
			continue;
		path_found = true;
		if (!method_matches(rt->method, req->method, is_head)) {
			allow_add(allow, sizeof allow, rt->method);
			if (strcmp(rt->method, "GET") == 0)
				allow_add(allow, sizeof allow, "HEAD");
			continue;
		}
		struct tl_http_req *r = h2o_mem_alloc_pool(&req->pool, sizeof *r);
		r->h = req;
		r->srv = srv;
		r->is_head = is_head;
		r->responded = false;
		int rc = rt->fn(rt->arg, r);
		if (!r->responded) {
			/* a handler bug: never leave the client hanging */
			r->responded = true;
			send_error(req, is_head, 500, "internal",
			           rc == TL_HTTP_ASYNC ? "handler deferred without tl_http_defer"
			                               : "handler did not respond",
			           NULL);
		}
		return 0;
	}
	if (path_found) {
		const char *hdrs[] = {"Allow", allow, NULL};
		send_error(req, is_head, 405, "method_not_allowed", "method not allowed", hdrs);
	} else {
		send_error(req, is_head, 404, "not_found", "no such route", NULL);
	}
	return 0;
}

/* ---- JSON bodies for h2o's own errors ----------------------------------- */

struct errjson_ostream {
	h2o_ostream_t super;
	struct tl_http_server *srv;
};

static const char *error_code(int status)
{
	switch (status) {
	case 400:
		return "bad_request";
	case 404:
		return "not_found";
	case 405:
		return "method_not_allowed";
	case 408:
		return "timeout";
	case 413:
		return "too_large";
	case 417:
		return "expectation_failed";
	case 503:
		return "unavailable";
	default:
		return status >= 500 ? "internal" : "bad_request";
	}
}

static void errjson_do_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *inbufs, size_t inbufcnt,
                            h2o_send_state_t state)
{
	struct errjson_ostream *os = (struct errjson_ostream *)self;
	if (h2o_send_state_is_in_progress(state)) {
		/* h2o's inline errors are sent in one piece; drop anything else */
		h2o_ostream_send_next(self, req, NULL, 0, state);
		return;
	}
	char msg[256];
	size_t n = 0;
	if (req->res.status == 413) {
		n = (size_t)snprintf(msg, sizeof msg, "request body over %zu bytes",
		                     os->srv->limits.max_body);
	} else {
		for (size_t i = 0; i < inbufcnt && n < sizeof msg - 1; i++) {
			size_t k = inbufs[i].len < sizeof msg - 1 - n ? inbufs[i].len : sizeof msg - 1 - n;
			memcpy(msg + n, inbufs[i].base, k);
			n += k;
		}
		while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
			n--;
		if (n == 0)
			n = (size_t)snprintf(msg, sizeof msg, "%s",
			                     req->res.reason ? req->res.reason : "error");
	}
	if (n >= sizeof msg)
		n = sizeof msg - 1;
	struct tl_buf b;
	tl_buf_init(&b, 0);
	h2o_iovec_t body = {NULL, 0};
	if (error_json(&b, error_code(req->res.status), msg, n) == 0)
		body = h2o_strdup(&req->pool, b.data, b.len);
	tl_buf_free(&b);
	req->res.content_length = body.len; /* headers are not flattened yet */
	if (body.len && !h2o_memis(req->input.method.base, req->input.method.len, H2O_STRLIT("HEAD")))
		h2o_ostream_send_next(self, req, &body, 1, state);
	else
		h2o_ostream_send_next(self, req, NULL, 0, state);
}

void tl_http__filter_setup(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
	struct tl_http_filter *f = (struct tl_http_filter *)self;
	const h2o_generator_t *g = req->_generator;
	if (req->res.status >= 400 && g != &tl_http_plain_generator && !tl_http__is_stream_generator(g)) {
		struct errjson_ostream *os = (void *)h2o_add_ostream(req, sizeof *os, slot);
		os->super.do_send = errjson_do_send;
		os->srv = f->srv;
		h2o_set_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE,
		               H2O_STRLIT("application/json"), 1);
		slot = &os->super.next;
	}
	h2o_setup_next_ostream(req, slot);
}

/* ---- request accessors --------------------------------------------------- */

const char *tl_http_method(struct tl_http_req *r, size_t *len)
{
	*len = r->h->method.len;
	return r->h->method.base;
}

const char *tl_http_path(struct tl_http_req *r, size_t *len)
{
	h2o_req_t *h = r->h;
	*len = h->query_at != SIZE_MAX ? h->query_at : h->path.len;
	return h->path.base;
}

const char *tl_http_query(struct tl_http_req *r, size_t *len)
{
	h2o_req_t *h = r->h;
	if (h->query_at == SIZE_MAX) {
		*len = 0;
		return NULL;
	}
	*len = h->path.len - h->query_at - 1;
	return h->path.base + h->query_at + 1;
}

const char *tl_http_header(struct tl_http_req *r, const char *name, size_t *len)
{
	char lc[128];
	size_t n = strlen(name);
	*len = 0;
	if (n == 0 || n >= sizeof lc)
		return NULL;
	for (size_t i = 0; i < n; i++)
		lc[i] = (char)tolower((unsigned char)name[i]);
	lc[n] = '\0';
	h2o_req_t *h = r->h;
	if (n == 4 && memcmp(lc, "host", 4) == 0) { /* h2o keeps Host as the authority */
		if (!h->input.authority.base)
			return NULL;
		*len = h->input.authority.len;
		return h->input.authority.base;
	}
	ssize_t i = h2o_find_header_by_str(&h->headers, lc, n, -1);
	if (i < 0)
		return NULL;
	*len = h->headers.entries[i].value.len;
	return h->headers.entries[i].value.base;
}

const char *tl_http_body(struct tl_http_req *r, size_t *len)
{
	if (!r->h->entity.base) {
		*len = 0;
		return "";
	}
	*len = r->h->entity.len;
	return r->h->entity.base;
}

void tl_http_peer(struct tl_http_req *r, char *buf, size_t cap)
{
	struct sockaddr_storage ss;
	h2o_conn_t *c = r->h->conn;
	if (cap == 0)
		return;
	buf[0] = '\0';
	socklen_t sl = c->callbacks->get_peername ? c->callbacks->get_peername(c, (struct sockaddr *)&ss) : 0;
	if (sl == 0)
		return;
	if (ss.ss_family == AF_INET) {
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, buf, (socklen_t)cap);
	} else if (ss.ss_family == AF_INET6) {
		struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a))
			inet_ntop(AF_INET, &a->s6_addr[12], buf, (socklen_t)cap);
		else
			inet_ntop(AF_INET6, a, buf, (socklen_t)cap);
	}
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* URL-decodes s[0..n) into out (cap bytes, NUL added); returns the length,
 * or -1 when it does not fit. */
static long url_decode(const char *s, size_t n, char *out, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '+') {
			c = ' ';
		} else if (c == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
			c = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
			i += 2;
		}
		if (o + 1 >= cap)
			return -1;
		out[o++] = c;
	}
	if (cap)
		out[o] = '\0';
	return (long)o;
}

int tl_http_query_param(struct tl_http_req *r, const char *name, char *buf, size_t cap)
{
	size_t qn;
	const char *q = tl_http_query(r, &qn);
	if (!q)
		return -1;
	size_t name_len = strlen(name);
	const char *end = q + qn;
	while (q < end) {
		const char *amp = memchr(q, '&', (size_t)(end - q));
		const char *pe = amp ? amp : end;
		const char *eq = memchr(q, '=', (size_t)(pe - q));
		const char *ke = eq ? eq : pe;
		char key[256];
		long kl = url_decode(q, (size_t)(ke - q), key, sizeof key);
		if (kl >= 0 && (size_t)kl == name_len && memcmp(key, name, name_len) == 0) {
			const char *v = eq ? eq + 1 : pe;
			long vl = url_decode(v, (size_t)(pe - v), buf, cap);
			return vl < 0 ? -TL_ETOOBIG : (int)vl;
		}
		q = pe + 1;
	}
	return -1;
}
