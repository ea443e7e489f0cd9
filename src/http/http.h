/* http.h — the HTTP/1.1 server layer every listener of tally uses.
 *
 * Built on libh2o-evloop (see docs/architecture.md for the measurement that
 * chose it). One server = one listening socket + one event loop, run by one
 * thread (tl_http_server_run). Handlers run on that thread. A handler either
 * responds before it returns, or defers: it takes a tl_http_deferred and
 * completes it later from ANY thread (e.g. the stream's durability
 * callback); the completion is posted back to the loop.
 *
 * Limits (header size, body size, read timeout, keep-alive) come from
 * struct tl_http_limits and are enforced before handlers run: an oversized
 * body is answered 413 with a JSON error and never reaches a handler. */
#ifndef TL_HTTP_H
#define TL_HTTP_H

#include "core/err.h"

#include <stddef.h>
#include <stdint.h>

struct tl_http_server;
struct tl_http_req;
struct tl_http_deferred;
struct tl_http_stream; /* a long-lived streaming response (SSE) */

/* With h2o 2.2's HTTP/1 one timer covers both waits: a connection is closed
 * when no complete request (headers and body) arrived within
 * read_timeout_ms of accepting it or of the previous response. Idle
 * keep-alive is therefore bounded by min(read_timeout_ms,
 * keepalive_timeout_ms) = read_timeout_ms with the defaults. Request heads
 * are capped at 64 KiB (431 JSON). A head h2o cannot parse (over 100 header
 * lines, a malformed line, an unknown HTTP version) gets h2o's own
 * plain-text 400, which no filter here sees. h2o 2.2 frames a request with
 * two Content-Lengths by the first and one with Content-Length and chunked
 * Transfer-Encoding as chunked, and removes those headers before a handler
 * runs: a proxy in front must refuse such requests (docs/operations.md). */
struct tl_http_limits {
	size_t max_body;          /* bytes, default 1 MiB */
	int read_timeout_ms;      /* header + body read timeout, default 10000 */
	int keepalive_timeout_ms; /* idle keep-alive, default 30000 */
};

void tl_http_limits_defaults(struct tl_http_limits *l);

/* Handler return values. */
#define TL_HTTP_DONE 0  /* responded */
#define TL_HTTP_ASYNC 1 /* deferred: will respond via tl_http_deferred_complete */

typedef int (*tl_http_handler_fn)(void *arg, struct tl_http_req *req);

/* A route matches method (NULL = any; "GET" also matches HEAD) and a path:
 * exact ("/healthz") or a prefix when it ends with '*' (the path "/o/" + '*'
 * matches "/o/<anything>"). First match wins; no match = 404 JSON, a path
 * that matches with another method = 405 JSON. */
struct tl_http_route {
	const char *method;
	const char *path;
	tl_http_handler_fn fn;
	void *arg;
};

/* Creates a server listening on addr ("127.0.0.1:8080"; port 0 = pick a free
 * one). Routes are copied. role names the listener in the log line
 * "listening <role> <addr>:<port>" printed by tl_http_server_run once it
 * accepts connections. */
int tl_http_server_create(const char *role, const char *addr, const struct tl_http_limits *limits,
                          const struct tl_http_route *routes, size_t n_routes,
                          struct tl_http_server **out) TL_MUST_CHECK;

/* The bound port (after create). */
int tl_http_server_port(const struct tl_http_server *srv);

/* Runs the loop on the calling thread until tl_http_server_stop. */
int tl_http_server_run(struct tl_http_server *srv);

/* Asks the loop to stop accepting, finish in-flight deferred responses (up to
 * a bound), and return from run. Thread-safe, async-signal-unsafe. */
void tl_http_server_stop(struct tl_http_server *srv);

/* Runs fn(arg) on the loop thread every interval_ms (e.g. SSE pushes).
 * Call before tl_http_server_run or from the loop thread. */
int tl_http_server_every(struct tl_http_server *srv, int interval_ms, void (*fn)(void *arg),
                         void *arg) TL_MUST_CHECK;

/* Runs fn(arg) once on the loop thread as soon as the requests that arrived
 * in the current loop iteration have been handled: handlers can gather work
 * (e.g. records to append) and do it once per iteration. Loop thread only
 * (from a handler or a callback of the loop). 0 or -TL_ENOMEM. */
int tl_http_server_soon(struct tl_http_server *srv, void (*fn)(void *arg), void *arg) TL_MUST_CHECK;

void tl_http_server_destroy(struct tl_http_server *srv); /* NULL-safe, after run returned */

/* ---- request accessors (loop thread, valid until responded/deferred completes) */
const char *tl_http_method(struct tl_http_req *r, size_t *len);
const char *tl_http_path(struct tl_http_req *r, size_t *len);                     /* without the query */
const char *tl_http_query(struct tl_http_req *r, size_t *len);                    /* after '?', or NULL */
const char *tl_http_header(struct tl_http_req *r, const char *name, size_t *len); /* case-insensitive */
const char *tl_http_body(struct tl_http_req *r, size_t *len);
/* Peer IP as text into buf (>= 64). */
void tl_http_peer(struct tl_http_req *r, char *buf, size_t cap);
/* Copies the URL-decoded value of query parameter name into buf; returns
 * its length, or -1 when absent / -TL_ETOOBIG when it does not fit. */
int tl_http_query_param(struct tl_http_req *r, const char *name, char *buf, size_t cap);

/* ---- responses (loop thread) */
/* Sends status with body; extra_headers is NULL or an array of name/value
 * pairs terminated by NULL ("Location", url, NULL). The body is copied. */
void tl_http_respond(struct tl_http_req *r, int status, const char *content_type, const void *body,
                     size_t len, const char *const *extra_headers);
/* {"error":{"code":code,"message":message}} with status. */
void tl_http_respond_error(struct tl_http_req *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Defers the response; the handler then returns TL_HTTP_ASYNC. */
struct tl_http_deferred *tl_http_defer(struct tl_http_req *r);
/* Completes a deferred response from any thread (body copied). If the client
 * went away meanwhile, the response is dropped silently. */
void tl_http_deferred_complete(struct tl_http_deferred *d, int status, const char *content_type,
                               const void *body, size_t len, const char *const *extra_headers);

/* Starts a streaming response (e.g. text/event-stream) with status 200.
 * Loop thread only. on_close(arg) runs exactly once, from the loop (never
 * inside tl_http_stream_send/close), when the stream ends without
 * tl_http_stream_close: client gone, write error, slow client, server
 * stopping. The handle is invalid once on_close returned or
 * tl_http_stream_close was called; until then a send on an ended stream
 * returns -TL_ECLOSED. A client that goes away is noticed when it closes
 * its side of the connection (or at the next send). */
struct tl_http_stream *tl_http_stream_start(struct tl_http_req *r, const char *content_type,
                                            void (*on_close)(void *arg), void *arg);
/* Queues bytes on a stream (loop thread). Returns 0 or -TL_ECLOSED /
 * -TL_ETOOBIG (slow client: too much unsent data; the stream is closed). */
int tl_http_stream_send(struct tl_http_stream *s, const void *data, size_t len) TL_MUST_CHECK;
void tl_http_stream_close(struct tl_http_stream *s);

#endif
