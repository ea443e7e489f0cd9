/* async.c — responses that finish after the handler returned.
 *
 * Deferred responses. tl_http_defer allocates a tl_http_deferred (malloc,
 * not the request pool: the completing thread may hold it after the client
 * went away) and a small guard in the request pool whose dispose callback
 * runs when h2o frees the request. Both hold a reference (atomic count):
 *  - the guard's reference is dropped when the request goes away (the
 *    deferred then forgets its request: its response is dropped) or when
 *    the response is sent;
 *  - the completer's reference travels with the completion message through
 *    h2o's multithread queue to the loop thread, which sends the response if
 *    the request is still there, then drops it.
 * After the server stopped, a completion is not queued; its reference is
 * dropped on the completing thread.
 *
 * Streams (SSE). A tl_http_stream is h2o's generator for one response with
 * no Content-Length (chunked). h2o allows one write in flight: bytes sent
 * while one is in flight wait in `pending` and go out when h2o calls
 * proceed. Unsent bytes are capped (STREAM_MAX_UNSENT): over the cap the
 * client is too slow and the connection is cut. on_close(arg) runs exactly
 * once, from the loop (never from inside tl_http_stream_send/close), when
 * the stream ends for any reason other than tl_http_stream_close — client
 * gone, write error, slow client, server stopping; the handle is invalid
 * once on_close returned or tl_http_stream_close was called. */
#include "http/internal.h"

#include "core/buf.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define STREAM_MAX_UNSENT (1024 * 1024)
#define STREAM_KEEP_BYTES (64 * 1024) /* a written buffer larger than this is freed */

/* ---- deferred responses -------------------------------------------------- */

struct deferred_guard {
	struct tl_http_deferred *d;
};

struct tl_http_deferred {
	h2o_multithread_message_t msg;
	struct tl_http_server *srv;
	atomic_int refs;
	/* loop thread only */
	struct tl_http_deferred *prev, *next; /* srv->deferred while counted */
	h2o_req_t *req;                       /* NULL once the request is gone */
	h2o_socket_t *sock;                   /* parked connection socket (valid while req is) */
	struct deferred_guard *guard;
	bool counted; /* still counted in srv->n_deferred */
	bool is_head;
	/* written by the completing thread before the message is posted */
	int status;
	char *ctype;
	size_t ctype_len;
	char *body;
	size_t len;
	const char **headers;
	char *data; /* holds ctype, body, headers: small, or one allocation */
	_Alignas(void *) char small[256];
};

#define DEFERRED_FREE_MAX 1024 /* recycled deferred objects kept by a server */

static void deferred_release(struct tl_http_deferred *d)
{
	if (atomic_fetch_sub_explicit(&d->refs, 1, memory_order_acq_rel) != 1)
		return;
	if (d->data != d->small)
		free(d->data);
	struct tl_http_server *srv = d->srv;
	/* the loop thread recycles (a burst of deferred responses otherwise
	 * churns malloc); any other thread frees */
	if (pthread_equal(pthread_self(), srv->loop_thread) && srv->ctx_ready &&
	    srv->n_free_deferred < DEFERRED_FREE_MAX) {
		d->next = srv->free_deferred;
		srv->free_deferred = d;
		srv->n_free_deferred++;
		return;
	}
	free(d);
}

static struct tl_http_deferred *deferred_alloc(struct tl_http_server *srv)
{
	struct tl_http_deferred *d = srv->free_deferred;
	if (!d)
		return calloc(1, sizeof *d);
	srv->free_deferred = d->next;
	srv->n_free_deferred--;
	memset(d, 0, offsetof(struct tl_http_deferred, small));
	return d;
}

void tl_http__deferred_free_all(struct tl_http_server *srv)
{
	while (srv->free_deferred) {
		struct tl_http_deferred *d = srv->free_deferred;
		srv->free_deferred = d->next;
		free(d);
	}
	srv->n_free_deferred = 0;
}

static void deferred_uncount(struct tl_http_deferred *d)
{
	if (!d->counted)
		return;
	struct tl_http_server *srv = d->srv;
	d->counted = false;
	srv->n_deferred--;
	if (d->prev)
		d->prev->next = d->next;
	else
		srv->deferred = d->next;
	if (d->next)
		d->next->prev = d->prev;
	d->prev = d->next = NULL;
}

static void guard_dispose(void *p)
{
	struct deferred_guard *g = p;
	struct tl_http_deferred *d = g->d;
	if (!d)
		return;
	g->d = NULL;
	d->req = NULL;
	d->sock = NULL; /* goes with the connection */
	d->guard = NULL;
	deferred_uncount(d);
	deferred_release(d);
}

/* Parking. h2o's HTTP/1 stops reading a connection while its request is
 * handled and starts again once the response is written. For a deferred
 * response that spans loop iterations this costs two epoll_ctl calls per
 * request (interest dropped, then restored). Instead the socket stays
 * polled, with DONT_READ so that nothing is read into the buffer the
 * request still points into; should the client send anything (pipelining)
 * or close meanwhile, park_read_cb simply stops polling, as h2o would have.
 * Just before the response is sent the socket is handed back unchanged:
 * not reading, DONT_READ cleared. */
static void park_read_cb(h2o_socket_t *sock, const char *err)
{
	(void)err;
	h2o_socket_read_stop(sock);
}

static void park(struct tl_http_deferred *d, h2o_req_t *req)
{
	h2o_conn_t *conn = req->conn;
	h2o_socket_t *sock = conn->callbacks->get_socket ? conn->callbacks->get_socket(conn) : NULL;
	if (!sock || h2o_socket_is_reading(sock))
		return;
	h2o_socket_dont_read(sock, 1);
	h2o_socket_read_start(sock, park_read_cb);
	d->sock = sock;
}

static void unpark(struct tl_http_deferred *d)
{
	h2o_socket_t *sock = d->sock;
	if (!sock)
		return;
	d->sock = NULL;
	if (sock->_cb.read == park_read_cb)
		h2o_socket_read_stop(sock);
	h2o_socket_dont_read(sock, 0);
}

struct tl_http_deferred *tl_http_defer(struct tl_http_req *r)
{
	if (!r || r->responded)
		return NULL;
	struct tl_http_deferred *d = deferred_alloc(r->srv);
	if (!d)
		return NULL;
	struct deferred_guard *g = h2o_mem_alloc_shared(&r->h->pool, sizeof *g, guard_dispose);
	g->d = d;
	d->srv = r->srv;
	atomic_init(&d->refs, 2);
	d->req = r->h;
	d->guard = g;
	d->is_head = r->is_head;
	d->counted = true;
	r->srv->n_deferred++;
	d->next = r->srv->deferred;
	if (d->next)
		d->next->prev = d;
	r->srv->deferred = d;
	r->responded = true;
	park(d, r->h);
	return d;
}

/* Copies the response into one allocation owned by d. On failure d answers 500. */
static void deferred_fill(struct tl_http_deferred *d, int status, const char *content_type, const void *body,
                          size_t len, const char *const *extra_headers)
{
	size_t n_hdr = 0, hdr_bytes = 0;
	if (extra_headers)
		for (; extra_headers[n_hdr] && extra_headers[n_hdr + 1]; n_hdr += 2)
			hdr_bytes += strlen(extra_headers[n_hdr]) + strlen(extra_headers[n_hdr + 1]) + 2;
	size_t ct_len = content_type ? strlen(content_type) : 0;
	size_t ptrs = (n_hdr + 1) * sizeof(char *);
	size_t total = ptrs + ct_len + 1 + len + hdr_bytes;
	char *p = total <= sizeof d->small ? d->small : malloc(total);
	if (!p) {
		static const char oom[] = "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}";
		d->status = 500;
		d->ctype = (char *)"application/json";
		d->ctype_len = strlen(d->ctype);
		d->body = (char *)oom;
		d->len = sizeof oom - 1;
		d->headers = NULL;
		return;
	}
	d->data = p;
	d->headers = (const char **)(void *)p;
	char *w = p + ptrs;
	for (size_t i = 0; i < n_hdr; i++) {
		size_t l = strlen(extra_headers[i]) + 1;
		memcpy(w, extra_headers[i], l);
		d->headers[i] = w;
		w += l;
	}
	d->headers[n_hdr] = NULL;
	d->ctype = w;
	d->ctype_len = ct_len;
	if (ct_len)
		memcpy(w, content_type, ct_len);
	w[ct_len] = '\0';
	w += ct_len + 1;
	d->body = w;
	d->len = len;
	if (len)
		memcpy(w, body, len);
	d->status = status;
}

void tl_http_deferred_complete(struct tl_http_deferred *d, int status, const char *content_type,
                               const void *body, size_t len, const char *const *extra_headers)
{
	if (!d)
		return;
	deferred_fill(d, status, content_type, body, len, extra_headers);
	struct tl_http_server *srv = d->srv;
	pthread_mutex_lock(&srv->mu);
	bool alive = srv->loop_alive;
	if (alive)
		h2o_multithread_send_message(&srv->receiver, &d->msg);
	pthread_mutex_unlock(&srv->mu);
	if (!alive)
		deferred_release(d); /* server gone: nobody to answer */
}

/* Unhooks d from its request (loop thread) and returns the request, or
 * NULL when it is gone. Drops the guard's reference: d may be freed by the
 * time this returns unless the caller holds the completer's reference. */
static h2o_req_t *deferred_detach(struct tl_http_deferred *d)
{
	h2o_req_t *req = d->req;
	if (!req)
		return NULL;
	unpark(d);
	d->guard->d = NULL;
	d->guard = NULL;
	d->req = NULL;
	deferred_uncount(d);
	deferred_release(d); /* the guard's reference */
	return req;
}

void tl_http__on_messages(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
	(void)receiver;
	while (!h2o_linklist_is_empty(messages)) {
		h2o_multithread_message_t *m =
		    H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, messages->next);
		h2o_linklist_unlink(&m->link);
		struct tl_http_deferred *d = H2O_STRUCT_FROM_MEMBER(struct tl_http_deferred, msg, m);
		/* detach from the request first: sending may free it */
		h2o_req_t *req = deferred_detach(d);
		if (req)
			tl_http__send(req, d->is_head, d->status, d->ctype, d->ctype_len, d->body, d->len,
			              d->headers);
		deferred_release(d); /* the completer's reference */
	}
}

void tl_http__deferred_abandon(struct tl_http_server *srv)
{
	static const char body[] = "{\"error\":{\"code\":\"unavailable\",\"message\":\"server stopping\"}}";
	while (srv->deferred) {
		struct tl_http_deferred *d = srv->deferred;
		bool is_head = d->is_head;
		/* the completer still holds its reference: d stays valid */
		h2o_req_t *req = deferred_detach(d);
		if (req)
			tl_http__send(req, is_head, 503, H2O_STRLIT("application/json"), body,
			              sizeof body - 1, NULL);
	}
}

/* ---- streams ------------------------------------------------------------- */

struct tl_http_stream {
	h2o_generator_t gen; /* h2o calls proceed/stop with &gen */
	struct tl_http_server *srv;
	struct tl_http_stream *prev, *next; /* srv's live streams */
	h2o_req_t *req;                     /* NULL once the response ended */
	void (*on_close)(void *arg);
	void *arg;
	struct tl_buf pending;  /* queued, not yet handed to h2o */
	struct tl_buf inflight; /* handed to h2o, write not finished */
	bool writing;           /* waiting for proceed */
	bool user_closed;
	bool failed;                /* aborting (slow client / no memory) */
	bool in_on_close;           /* on_close is running */
	h2o_timeout_entry_t notify; /* runs on_close from the loop */
	h2o_socket_t *sock;         /* parked: polled to notice the client leaving */
};

static void stream_proceed(h2o_generator_t *g, h2o_req_t *req);
static void stream_stop(h2o_generator_t *g, h2o_req_t *req);

bool tl_http__is_stream_generator(const h2o_generator_t *g)
{
	return g && g->proceed == stream_proceed;
}

static void stream_free(struct tl_http_stream *s)
{
	struct tl_http_server *srv = s->srv;
	if (s->prev)
		s->prev->next = s->next;
	else if (srv->streams == s)
		srv->streams = s->next;
	if (s->next)
		s->next->prev = s->prev;
	if (h2o_timeout_is_linked(&s->notify))
		h2o_timeout_unlink(&s->notify);
	tl_buf_free(&s->pending);
	tl_buf_free(&s->inflight);
	free(s);
}

static void stream_notify_cb(h2o_timeout_entry_t *e)
{
	struct tl_http_stream *s = H2O_STRUCT_FROM_MEMBER(struct tl_http_stream, notify, e);
	if (!s->user_closed && s->on_close) {
		s->in_on_close = true;
		s->on_close(s->arg);
		s->in_on_close = false;
	}
	stream_free(s);
}

/* The response is over (request gone or final chunk sent) without the user
 * closing it: tell them from the loop, then free. */
static void stream_ended(struct tl_http_stream *s)
{
	s->req = NULL;
	s->sock = NULL; /* goes with the connection; unparked already if still open */
	s->writing = false;
	if (s->user_closed) {
		stream_free(s);
		return;
	}
	if (!h2o_timeout_is_linked(&s->notify))
		h2o_timeout_link(s->srv->ctx.loop, &s->srv->ctx.zero_timeout, &s->notify);
}

/* Streams park their socket like deferred responses do (see park()): a
 * client that goes away while nothing is being written is noticed at once
 * instead of at the next send. Before the response ends (final or error
 * chunk) the socket is handed back as h2o left it. */
static void stream_park_cb(h2o_socket_t *sock, const char *err);

static void stream_park(struct tl_http_stream *s)
{
	h2o_conn_t *conn = s->req->conn;
	h2o_socket_t *sock = conn->callbacks->get_socket ? conn->callbacks->get_socket(conn) : NULL;
	if (!sock || h2o_socket_is_reading(sock))
		return;
	h2o_socket_dont_read(sock, 1);
	h2o_socket_read_start(sock, stream_park_cb);
	s->sock = sock;
}

static void stream_unpark(struct tl_http_stream *s)
{
	h2o_socket_t *sock = s->sock;
	if (!sock)
		return;
	s->sock = NULL;
	if (sock->_cb.read == stream_park_cb)
		h2o_socket_read_stop(sock);
	h2o_socket_dont_read(sock, 0);
}

/* Ends the response as an error (the connection closes); the user hears
 * on_close. Nothing may be in flight. */
static void stream_error_end(struct tl_http_stream *s)
{
	h2o_req_t *req = s->req;
	stream_unpark(s);
	stream_ended(s);
	h2o_send(req, NULL, 0, H2O_SEND_STATE_ERROR);
}

static void stream_park_cb(h2o_socket_t *sock, const char *err)
{
	(void)err;
	h2o_socket_read_stop(sock);
	h2o_conn_t *conn = sock->data;
	struct tl_http_server *srv = H2O_STRUCT_FROM_MEMBER(struct tl_http_server, ctx, conn->ctx);
	struct tl_http_stream *s = srv->streams;
	while (s && s->sock != sock)
		s = s->next;
	if (!s || !s->req || s->failed)
		return;
	char c;
	ssize_t n = recv(h2o_socket_get_fd(sock), &c, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR)))
		return; /* the client sent something: stop watching, h2o reads it later */
	/* EOF or reset: the client is gone */
	s->failed = true;
	if (s->writing)
		(void)shutdown(h2o_socket_get_fd(sock), SHUT_RDWR); /* the write fails, h2o stops us */
	else
		stream_error_end(s);
}

static void stream_flush(struct tl_http_stream *s)
{
	struct tl_buf tmp = s->inflight; /* empty: nothing is in flight */
	s->inflight = s->pending;
	s->pending = tmp;
	tl_buf_reset(&s->pending);
	h2o_iovec_t iov = h2o_iovec_init(s->inflight.data, s->inflight.len);
	s->writing = true;
	h2o_send(s->req, &iov, 1, H2O_SEND_STATE_IN_PROGRESS);
}

/* Sends what is pending as the last chunk; the response ends. */
static void stream_finish(struct tl_http_stream *s)
{
	h2o_req_t *req = s->req;
	stream_unpark(s);
	h2o_iovec_t iov = h2o_strdup(&req->pool, s->pending.data ? s->pending.data : "", s->pending.len);
	tl_buf_reset(&s->pending);
	s->req = NULL;
	h2o_send(req, &iov, iov.len ? 1 : 0, H2O_SEND_STATE_FINAL);
}

/* Cuts the connection under a response h2o is still writing: the write
 * fails, h2o disposes of the request and calls stream_stop. */
static void stream_abort(struct tl_http_stream *s)
{
	s->failed = true;
	h2o_socket_t *sock = s->req->conn->callbacks->get_socket(s->req->conn);
	if (sock)
		(void)shutdown(h2o_socket_get_fd(sock), SHUT_RDWR);
	if (!s->writing)
		stream_error_end(s); /* nothing in flight to fail */
}

static void stream_proceed(h2o_generator_t *g, h2o_req_t *req)
{
	struct tl_http_stream *s = (struct tl_http_stream *)g;
	(void)req;
	s->writing = false;
	tl_buf_reset(&s->inflight);
	if (s->inflight.cap > STREAM_KEEP_BYTES) { /* a burst is over: give its memory back */
		tl_buf_free(&s->inflight);
		tl_buf_init(&s->inflight, STREAM_MAX_UNSENT);
	}
	if (s->failed) {
		stream_error_end(s);
	} else if (s->user_closed) {
		stream_finish(s);
		stream_free(s);
	} else if (s->pending.len) {
		stream_flush(s);
	}
}

static void stream_stop(h2o_generator_t *g, h2o_req_t *req)
{
	struct tl_http_stream *s = (struct tl_http_stream *)g;
	(void)req;
	stream_ended(s);
}

struct tl_http_stream *tl_http_stream_start(struct tl_http_req *r, const char *content_type,
                                            void (*on_close)(void *arg), void *arg)
{
	if (!r || r->responded)
		return NULL;
	struct tl_http_stream *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	h2o_req_t *h = r->h;
	s->gen.proceed = stream_proceed;
	s->gen.stop = stream_stop;
	s->srv = r->srv;
	s->req = h;
	s->on_close = on_close;
	s->arg = arg;
	s->notify.cb = stream_notify_cb;
	tl_buf_init(&s->pending, STREAM_MAX_UNSENT);
	tl_buf_init(&s->inflight, STREAM_MAX_UNSENT);
	s->next = r->srv->streams;
	if (s->next)
		s->next->prev = s;
	r->srv->streams = s;
	r->responded = true;

	h->res.status = 200;
	h->res.reason = "OK";
	h->res.content_length = SIZE_MAX;
	if (content_type) {
		h2o_iovec_t ct = h2o_strdup(&h->pool, content_type, strlen(content_type));
		h2o_add_header(&h->pool, &h->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, ct.base, ct.len);
	}
	h2o_add_header(&h->pool, &h->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-cache"));
	h2o_start_response(h, &s->gen);
	if (r->is_head) {
		stream_ended(s); /* headers only; the user hears on_close */
		h2o_send(h, NULL, 0, H2O_SEND_STATE_FINAL);
		return s;
	}
	/* send the headers now so the client sees the stream open */
	s->writing = true;
	h2o_send(h, NULL, 0, H2O_SEND_STATE_IN_PROGRESS);
	if (s->req)
		stream_park(s);
	return s;
}

int tl_http_stream_send(struct tl_http_stream *s, const void *data, size_t len)
{
	if (!s || !s->req || s->user_closed || s->failed)
		return -TL_ECLOSED;
	if (len == 0)
		return TL_OK;
	if (s->pending.len + s->inflight.len + len > STREAM_MAX_UNSENT) {
		stream_abort(s);
		return -TL_ETOOBIG;
	}
	int rc = tl_buf_append(&s->pending, data, len);
	if (rc) {
		stream_abort(s);
		return rc;
	}
	if (!s->writing)
		stream_flush(s);
	return TL_OK;
}

void tl_http_stream_close(struct tl_http_stream *s)
{
	if (!s || s->user_closed)
		return;
	s->user_closed = true;
	if (s->in_on_close)
		return; /* freed when on_close returns */
	if (!s->req) {
		/* already ended; on_close was still to come: drop it */
		stream_free(s);
		return;
	}
	if (s->failed || s->writing)
		return; /* freed by stream_stop / stream_proceed */
	stream_finish(s);
	stream_free(s);
}

void tl_http__streams_shutdown(struct tl_http_server *srv)
{
	for (struct tl_http_stream *s = srv->streams, *next; s; s = next) {
		next = s->next;
		if (!s->req || s->user_closed || s->failed)
			continue;
		if (s->writing) {
			/* a slow write: cutting the connection ends it */
			stream_abort(s);
			continue;
		}
		h2o_req_t *req = s->req;
		stream_unpark(s);
		stream_ended(s);
		h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
	}
}

void tl_http__streams_flush(struct tl_http_server *srv)
{
	for (struct tl_http_stream *s = srv->streams, *next; s; s = next) {
		next = s->next;
		if (h2o_timeout_is_linked(&s->notify)) {
			h2o_timeout_unlink(&s->notify);
			stream_notify_cb(&s->notify);
		}
	}
}
