/* internal.h — what the files of the http module share (not a public header).
 *
 * The server (server.c) owns one h2o evloop + context, run by one thread.
 * response.c holds the router, the request accessors and the responses;
 * async.c holds deferred responses and streaming (SSE) responses. Every
 * h2o object is created, used and destroyed on the loop thread; the only
 * cross-thread entry points are tl_http_server_stop and
 * tl_http_deferred_complete, which go through srv->mu + the h2o multithread
 * queue. */
#ifndef TL_HTTP_INTERNAL_H
#define TL_HTTP_INTERNAL_H

#ifndef H2O_USE_LIBUV
#define H2O_USE_LIBUV 0 /* Debian's libh2o-evloop: h2o's own epoll loop */
#endif
#include <h2o.h>

#include "http/http.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#define TL_HTTP_MAX_HEAD (64 * 1024) /* request line + headers, bytes */

struct tl_http_timer {
	struct tl_http_timer *next;
	struct tl_http_server *srv;
	h2o_timeout_t timeout;
	h2o_timeout_entry_t entry;
	int interval_ms;
	bool armed;
	void (*fn)(void *arg);
	void *arg;
};

struct tl_http_handler {
	h2o_handler_t super;
	struct tl_http_server *srv;
};

struct tl_http_filter {
	h2o_filter_t super;
	struct tl_http_server *srv;
};

struct tl_http_server {
	char role[32];
	char host[64]; /* numeric host as bound, for the log line */
	int port;
	int fd; /* listening socket, bound and listening since create; -1 once handed to h2o */
	struct tl_http_limits limits;
	struct tl_http_route *routes;
	size_t n_routes;

	h2o_globalconf_t config;
	h2o_hostconf_t *hostconf;

	/* loop-thread state (valid while run() is inside its loop) */
	h2o_evloop_t *loop;
	h2o_context_t ctx;
	h2o_accept_ctx_t accept_ctx;
	h2o_socket_t *listener;
	h2o_multithread_receiver_t receiver;    /* deferred completions + wake-ups */
	size_t n_deferred;                      /* deferred responses not yet completed */
	struct tl_http_deferred *deferred;      /* those, listed */
	struct tl_http_deferred *free_deferred; /* recycled objects (loop thread) */
	size_t n_free_deferred;
	pthread_t loop_thread;
	struct tl_http_timer *timers;
	struct tl_http_stream *streams; /* live streaming responses */
	bool ctx_ready;

	pthread_mutex_t mu; /* guards loop_alive against tl_http_deferred_complete/stop */
	bool loop_alive;
	atomic_bool stop_requested;
};

/* A request as the handlers see it: a view of the h2o request plus the
 * server it came through. Lives in the request's pool. */
struct tl_http_req {
	h2o_req_t *h;
	struct tl_http_server *srv;
	bool is_head;
	bool responded; /* respond / defer / stream_start happened */
};

/* The generator of every response tally itself produces (plain responses,
 * deferred completions). The JSON error filter leaves those alone and turns
 * h2o's own plain-text errors (413, 400, …) into JSON. */
extern h2o_generator_t tl_http_plain_generator;

/* response.c */
int tl_http__on_req(h2o_handler_t *self, h2o_req_t *req);
void tl_http__filter_setup(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot);
const char *tl_http__reason(int status);
/* Sends a complete response on h (loop thread). headers: NULL-terminated
 * name/value pairs. The body is copied into the request pool. */
void tl_http__send(h2o_req_t *h, bool is_head, int status, const char *content_type, size_t ctype_len,
                   const void *body, size_t len, const char *const *headers);

/* async.c */
void tl_http__on_messages(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages);
/* Frees the recycled deferred objects (loop teardown). */
void tl_http__deferred_free_all(struct tl_http_server *srv);
/* Answers 503 to every deferred response still waiting (stop deadline passed). */
void tl_http__deferred_abandon(struct tl_http_server *srv);
bool tl_http__is_stream_generator(const h2o_generator_t *g);
/* Ends every live stream (server stopping); their on_close callbacks run. */
void tl_http__streams_shutdown(struct tl_http_server *srv);
/* Runs the on_close callbacks still scheduled (loop teardown). */
void tl_http__streams_flush(struct tl_http_server *srv);

#endif
