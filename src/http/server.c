/* server.c — one listening socket, one h2o evloop, one thread.
 *
 * tl_http_server_create binds and listens (so the port is known at once)
 * and prepares the h2o configuration; every h2o loop object (evloop,
 * context, sockets, timers, the multithread queue) is created, run and torn
 * down by tl_http_server_run on the calling thread, because h2o keeps
 * per-thread allocator state that must not be shared between loops.
 *
 * Stop sequence (tl_http_server_stop → run returns): close the listener,
 * wait up to STOP_DEFERRED_MS for deferred responses still in flight, then
 * end the live streams, shut the read side of the remaining connections so
 * idle keep-alive ones close, wait up to STOP_CONNS_MS for them, and
 * dispose of the loop. */
#include "http/internal.h"

#include "core/clock.h"
#include "core/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define STOP_DEFERRED_MS 5000
#define STOP_CONNS_MS 2000
#define ACCEPT_BURST 64

void tl_http_limits_defaults(struct tl_http_limits *l)
{
	l->max_body = 1024 * 1024;
	l->read_timeout_ms = 10000;
	l->keepalive_timeout_ms = 30000;
}

/* Splits "host:port", "[v6]:port" or ":port" into host (maybe empty) and port. */
static int split_addr(const char *addr, char *host, size_t host_cap, char *port, size_t port_cap)
{
	const char *colon;
	const char *h = addr;
	size_t hn;
	if (addr[0] == '[') {
		const char *end = strchr(addr, ']');
		if (!end || end[1] != ':')
			return -TL_EINVAL;
		h = addr + 1;
		hn = (size_t)(end - h);
		colon = end + 1;
	} else {
		colon = strrchr(addr, ':');
		if (!colon)
			return -TL_EINVAL;
		hn = (size_t)(colon - addr);
	}
	size_t pn = strlen(colon + 1);
	if (hn >= host_cap || pn == 0 || pn >= port_cap)
		return -TL_EINVAL;
	for (size_t i = 0; i < pn; i++)
		if (colon[1 + i] < '0' || colon[1 + i] > '9')
			return -TL_EINVAL;
	memcpy(host, h, hn);
	host[hn] = '\0';
	memcpy(port, colon + 1, pn);
	port[pn] = '\0';
	return TL_OK;
}

/* Creates a non-blocking listening socket on addr; fills the bound port and
 * numeric host. Returns the fd or a negative TL_E* code. */
static int listen_on(const char *addr, char *host_out, size_t host_cap, int *port_out)
{
	char host[256], port[16];
	int rc = split_addr(addr, host, sizeof host, port, sizeof port);
	if (rc)
		return rc;
	struct addrinfo hints = {0}, *res = NULL;
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if (getaddrinfo(host[0] ? host : NULL, port, &hints, &res) != 0 || !res)
		return -TL_EINVAL;
	int fd = -1;
	rc = -TL_EIO;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			rc = tl_err_from_errno(errno);
			continue;
		}
		int on = 1;
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0) {
			rc = TL_OK;
			break;
		}
		rc = errno == EADDRINUSE ? -TL_EBUSY : tl_err_from_errno(errno);
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (rc)
		return rc;

	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
		rc = tl_err_from_errno(errno);
		close(fd);
		return rc;
	}
	if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		*port_out = ntohs(s6->sin6_port);
		char tmp[INET6_ADDRSTRLEN];
		inet_ntop(AF_INET6, &s6->sin6_addr, tmp, sizeof tmp);
		snprintf(host_out, host_cap, "[%s]", tmp);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		*port_out = ntohs(s4->sin_port);
		inet_ntop(AF_INET, &s4->sin_addr, host_out, (socklen_t)host_cap);
	}
	return fd;
}

static void free_routes(struct tl_http_route *routes, size_t n)
{
	if (!routes)
		return;
	for (size_t i = 0; i < n; i++) {
		free((char *)routes[i].method);
		free((char *)routes[i].path);
	}
	free(routes);
}

/* A peer closing while we write must be an EPIPE, not a process-killing
 * SIGPIPE: h2o writes with writev(2). Only a default disposition is changed. */
static void ignore_sigpipe(void)
{
	struct sigaction old;
	if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = SIG_IGN;
		sigemptyset(&sa.sa_mask);
		(void)sigaction(SIGPIPE, &sa, NULL);
	}
}

int tl_http_server_create(const char *role, const char *addr, const struct tl_http_limits *limits,
                          const struct tl_http_route *routes, size_t n_routes, struct tl_http_server **out)
{
	*out = NULL;
	if (!role || !addr || (n_routes && !routes))
		return -TL_EINVAL;
	for (size_t i = 0; i < n_routes; i++)
		if (!routes[i].path || !routes[i].fn)
			return -TL_EINVAL;

	struct tl_http_server *srv = calloc(1, sizeof *srv);
	if (!srv)
		return -TL_ENOMEM;
	int rc;
	srv->fd = -1;
	snprintf(srv->role, sizeof srv->role, "%s", role);
	if (limits)
		srv->limits = *limits;
	else
		tl_http_limits_defaults(&srv->limits);
	struct tl_http_limits def;
	tl_http_limits_defaults(&def);
	if (srv->limits.max_body == 0)
		srv->limits.max_body = def.max_body;
	if (srv->limits.read_timeout_ms <= 0)
		srv->limits.read_timeout_ms = def.read_timeout_ms;
	if (srv->limits.keepalive_timeout_ms <= 0)
		srv->limits.keepalive_timeout_ms = def.keepalive_timeout_ms;
	pthread_mutex_init(&srv->mu, NULL);
	atomic_init(&srv->stop_requested, false);

	if (n_routes) {
		srv->routes = calloc(n_routes, sizeof *srv->routes);
		if (!srv->routes) {
			rc = -TL_ENOMEM;
			goto fail;
		}
		srv->n_routes = n_routes;
		for (size_t i = 0; i < n_routes; i++) {
			srv->routes[i] = routes[i];
			srv->routes[i].method = routes[i].method ? strdup(routes[i].method) : NULL;
			srv->routes[i].path = strdup(routes[i].path);
			if ((routes[i].method && !srv->routes[i].method) || !srv->routes[i].path) {
				rc = -TL_ENOMEM;
				goto fail;
			}
		}
	}

	rc = listen_on(addr, srv->host, sizeof srv->host, &srv->port);
	if (rc < 0)
		goto fail;
	srv->fd = rc;

	h2o_config_init(&srv->config);
	srv->config.server_name = h2o_iovec_init(H2O_STRLIT("")); /* no Server header */
	srv->config.max_request_entity_size = srv->limits.max_body;
	/* h2o 2.2 HTTP/1 has one timer per request: it starts when the server
	 * waits for a request (also on an idle keep-alive connection) and runs
	 * until headers and body are in. */
	int rt = srv->limits.read_timeout_ms;
	if (srv->limits.keepalive_timeout_ms < rt)
		rt = srv->limits.keepalive_timeout_ms;
	srv->config.http1.req_timeout = (uint64_t)rt;
	srv->config.http1.upgrade_to_http2 = 0;
	srv->hostconf = h2o_config_register_host(&srv->config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
	/* No paths registered: every request lands on the fallback path, whose
	 * one handler is tally's router. */
	h2o_pathconf_t *pc = &srv->hostconf->fallback_path;
	struct tl_http_handler *hd = (void *)h2o_create_handler(pc, sizeof *hd);
	hd->super.on_req = tl_http__on_req;
	hd->srv = srv;
	struct tl_http_filter *ft = (void *)h2o_create_filter(pc, sizeof *ft);
	ft->super.on_setup_ostream = tl_http__filter_setup;
	ft->srv = srv;
	h2o_chunked_register(pc); /* streaming responses on HTTP/1.1 keep-alive */

	ignore_sigpipe();
	*out = srv;
	return TL_OK;
fail:
	free_routes(srv->routes, srv->n_routes);
	if (srv->fd >= 0)
		close(srv->fd);
	pthread_mutex_destroy(&srv->mu);
	free(srv);
	return rc;
}

int tl_http_server_port(const struct tl_http_server *srv)
{
	return srv->port;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
	struct tl_http_server *srv = listener->data;
	if (err)
		return;
	for (int i = 0; i < ACCEPT_BURST; i++) {
		if (atomic_load_explicit(&srv->stop_requested, memory_order_relaxed))
			return;
		h2o_socket_t *sock = h2o_evloop_socket_accept(listener);
		if (!sock)
			return;
		int on = 1;
		(void)setsockopt(h2o_socket_get_fd(sock), IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
		h2o_accept(&srv->accept_ctx, sock);
	}
}

static void on_timer(h2o_timeout_entry_t *entry)
{
	struct tl_http_timer *t = H2O_STRUCT_FROM_MEMBER(struct tl_http_timer, entry, entry);
	struct tl_http_server *srv = t->srv;
	t->fn(t->arg);
	if (t->armed && !atomic_load_explicit(&srv->stop_requested, memory_order_relaxed))
		h2o_timeout_link(srv->loop, &t->timeout, &t->entry);
}

static void arm_timer(struct tl_http_server *srv, struct tl_http_timer *t)
{
	h2o_timeout_init(srv->loop, &t->timeout, (uint64_t)t->interval_ms);
	t->entry.cb = on_timer;
	t->armed = true;
	h2o_timeout_link(srv->loop, &t->timeout, &t->entry);
}

static void disarm_timer(struct tl_http_server *srv, struct tl_http_timer *t)
{
	if (!t->armed)
		return;
	if (h2o_timeout_is_linked(&t->entry))
		h2o_timeout_unlink(&t->entry);
	h2o_timeout_dispose(srv->loop, &t->timeout);
	t->armed = false;
}

int tl_http_server_every(struct tl_http_server *srv, int interval_ms, void (*fn)(void *arg), void *arg)
{
	if (!srv || interval_ms <= 0 || !fn)
		return -TL_EINVAL;
	struct tl_http_timer *t = calloc(1, sizeof *t);
	if (!t)
		return -TL_ENOMEM;
	t->srv = srv;
	t->interval_ms = interval_ms;
	t->fn = fn;
	t->arg = arg;
	t->next = srv->timers;
	srv->timers = t;
	if (srv->ctx_ready)
		arm_timer(srv, t);
	return TL_OK;
}

struct soon {
	h2o_timeout_entry_t entry;
	void (*fn)(void *arg);
	void *arg;
};

static void on_soon(h2o_timeout_entry_t *entry)
{
	struct soon *s = H2O_STRUCT_FROM_MEMBER(struct soon, entry, entry);
	void (*fn)(void *) = s->fn;
	void *arg = s->arg;
	free(s);
	fn(arg);
}

int tl_http_server_soon(struct tl_http_server *srv, void (*fn)(void *arg), void *arg)
{
	if (!srv || !fn || !srv->ctx_ready)
		return -TL_EINVAL;
	struct soon *s = calloc(1, sizeof *s);
	if (!s)
		return -TL_ENOMEM;
	s->entry.cb = on_soon;
	s->fn = fn;
	s->arg = arg;
	/* the zero timeout runs after this iteration's I/O callbacks */
	h2o_timeout_link(srv->loop, &srv->ctx.zero_timeout, &s->entry);
	return TL_OK;
}

static int shut_read_cb(h2o_req_t *req, void *cbdata)
{
	int how = *(int *)cbdata;
	h2o_socket_t *sock = req->conn->callbacks->get_socket(req->conn);
	if (sock)
		(void)shutdown(h2o_socket_get_fd(sock), how);
	return 0;
}

/* Runs the loop until cond(srv) is false or ms passed. */
static void run_while(struct tl_http_server *srv, bool (*cond)(struct tl_http_server *), int64_t ms)
{
	int64_t deadline = tl_mono_ms() + ms;
	while (cond(srv)) {
		int64_t left = deadline - tl_mono_ms();
		if (left <= 0)
			break;
		h2o_evloop_run(srv->loop, (int32_t)(left < 50 ? left : 50));
	}
}

static bool has_deferred(struct tl_http_server *srv)
{
	return srv->n_deferred > 0;
}

static bool has_conns(struct tl_http_server *srv)
{
	return !h2o_linklist_is_empty(&srv->ctx.http1._conns);
}

static bool has_messages(struct tl_http_server *srv)
{
	return !h2o_linklist_is_empty(&srv->receiver._messages);
}

/* h2o keeps freed socket buffers and memory-pool chunks in per-thread
 * caches. A loop thread that ends would strand them (LeakSanitizer reports
 * them at exit), so the thread hands them back to malloc when its loop is
 * gone. The pool cache is private to h2o: chunks are pulled out of it by
 * allocating from a scratch pool and freed through their first member, the
 * `next` link (h2o 2.2's memory.c layout). */
static void release_thread_caches(void)
{
	h2o_mem_recycle_t *a = &h2o_socket_buffer_prototype.allocator;
	while (a->cnt)
		free(h2o_mem_alloc_recycle(a, 1));
#if H2O_VERSION_MAJOR == 2 && H2O_VERSION_MINOR <= 2
	enum { CHUNK_BYTES = 4096 - 2 * sizeof(void *), PER_CHUNK = 4, CACHED_MAX = 16 };
	h2o_mem_pool_t pool;
	h2o_mem_init_pool(&pool);
	for (int i = 0; i < PER_CHUNK * (CACHED_MAX + 1); i++)
		(void)h2o_mem_alloc_pool(&pool, CHUNK_BYTES / PER_CHUNK - 1);
	struct chunk {
		struct chunk *next;
	} *c = (struct chunk *)(void *)pool.chunks;
	while (c) {
		struct chunk *next = c->next;
		free(c);
		c = next;
	}
#endif
}

static void teardown(struct tl_http_server *srv)
{
	/* 1. stop accepting */
	if (srv->listener) {
		h2o_socket_read_stop(srv->listener);
		h2o_socket_close(srv->listener); /* closes srv->fd */
		srv->listener = NULL;
		srv->fd = -1;
	}
	/* no keep-alive from now on (what h2o_context_request_shutdown does for
	 * HTTP/1, without arming HTTP/2's goaway timer) */
	srv->ctx.shutdown_requested = 1;
	for (struct tl_http_timer *t = srv->timers; t; t = t->next)
		disarm_timer(srv, t);

	/* 2. let deferred responses complete (bounded) */
	run_while(srv, has_deferred, STOP_DEFERRED_MS);
	if (srv->n_deferred) {
		tl_warn("%s: stopping: %zu deferred responses not completed in time, answering 503",
		        srv->role, srv->n_deferred);
		tl_http__deferred_abandon(srv);
	}

	/* 3. end streams, close idle connections (their next read sees EOF) */
	tl_http__streams_shutdown(srv);
	int (*each)(h2o_context_t *, int (*)(h2o_req_t *, void *), void *) =
	    srv->ctx.globalconf->http1.callbacks.foreach_request;
	int how = SHUT_RD;
	if (each)
		each(&srv->ctx, shut_read_cb, &how);
	run_while(srv, has_conns, STOP_CONNS_MS / 2);
	if (has_conns(srv) && each) {
		how = SHUT_RDWR;
		each(&srv->ctx, shut_read_cb, &how);
		run_while(srv, has_conns, STOP_CONNS_MS / 2);
	}

	/* 4. no more cross-thread messages; handle the ones that raced in */
	pthread_mutex_lock(&srv->mu);
	srv->loop_alive = false;
	pthread_mutex_unlock(&srv->mu);
	run_while(srv, has_messages, 1000);
	tl_http__streams_flush(srv);
	/* work handed to tl_http_server_soon / on_close still due */
	for (int i = 0; i < 100 && !h2o_linklist_is_empty(&srv->ctx.zero_timeout._entries); i++)
		h2o_evloop_run(srv->loop, 0);
	srv->ctx_ready = false;
	tl_http__deferred_free_all(srv);

	if (has_conns(srv) || has_messages(srv) || !h2o_linklist_is_empty(&srv->ctx.zero_timeout._entries)) {
		/* a connection h2o cannot close: leave the loop allocated rather
		 * than free memory a socket still points to */
		tl_warn("%s: connections still open at stop; leaving them", srv->role);
		srv->loop = NULL;
		return;
	}
	h2o_multithread_unregister_receiver(srv->ctx.queue, &srv->receiver);
	h2o_multithread_queue_t *queue = srv->ctx.queue;
	h2o_context_dispose(&srv->ctx);
	h2o_evloop_run(srv->loop, 0); /* frees the sockets closed by the dispose */
#if H2O_VERSION_MAJOR == 2 && H2O_VERSION_MINOR <= 2
	free(queue); /* h2o 2.2's h2o_multithread_destroy_queue does not */
#else
	(void)queue;
#endif
	h2o_evloop_destroy(srv->loop);
	srv->loop = NULL;
	release_thread_caches();
}

int tl_http_server_run(struct tl_http_server *srv)
{
	if (!srv || srv->fd < 0 || srv->loop)
		return -TL_EINVAL;
	srv->loop_thread = pthread_self();
	srv->loop = h2o_evloop_create();
	h2o_context_init(&srv->ctx, srv->loop, &srv->config);
	h2o_multithread_register_receiver(srv->ctx.queue, &srv->receiver, tl_http__on_messages);
	srv->accept_ctx.ctx = &srv->ctx;
	srv->accept_ctx.hosts = srv->config.hosts;
	srv->listener = h2o_evloop_socket_create(srv->loop, srv->fd, H2O_SOCKET_FLAG_DONT_READ);
	srv->listener->data = srv;
	h2o_socket_read_start(srv->listener, on_accept);
	srv->ctx_ready = true;
	for (struct tl_http_timer *t = srv->timers; t; t = t->next)
		arm_timer(srv, t);

	pthread_mutex_lock(&srv->mu);
	srv->loop_alive = true;
	pthread_mutex_unlock(&srv->mu);

	tl_info("listening %s %s:%d", srv->role, srv->host, srv->port);
	while (!atomic_load_explicit(&srv->stop_requested, memory_order_acquire))
		h2o_evloop_run(srv->loop, INT32_MAX);
	teardown(srv);
	return TL_OK;
}

void tl_http_server_stop(struct tl_http_server *srv)
{
	if (!srv)
		return;
	atomic_store_explicit(&srv->stop_requested, true, memory_order_release);
	pthread_mutex_lock(&srv->mu);
	if (srv->loop_alive)
		h2o_multithread_send_message(&srv->receiver, NULL); /* wakes the loop */
	pthread_mutex_unlock(&srv->mu);
}

void tl_http_server_destroy(struct tl_http_server *srv)
{
	if (!srv)
		return;
	while (srv->timers) {
		struct tl_http_timer *t = srv->timers;
		srv->timers = t->next;
		free(t);
	}
	if (srv->fd >= 0)
		close(srv->fd);
	h2o_config_dispose(&srv->config);
	free_routes(srv->routes, srv->n_routes);
	pthread_mutex_destroy(&srv->mu);
	free(srv);
}
