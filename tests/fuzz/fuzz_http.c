/* fuzz_http.c — tally's HTTP layer with the real collector and API behind it.
 *
 * Once per process: a temporary data directory with a file log and a SQLite
 * reporting DB holding tenant "acme" (webhook credentials set, a campaign
 * "spring" with variants A and B counted) and tenant "strict" (no webhook
 * credentials); a real collector and a real API, each on its own
 * tl_http_server on 127.0.0.1:0, run on threads of their own, as `tally
 * serve` runs them. Their request limits are small (16 KiB bodies, 16 events
 * a batch) so that small inputs reach them.
 *
 * Per input: the bytes are the raw request stream of one connection (several
 * pipelined requests, odd line ends and all). Placeholders stand for what
 * only this process knows: @KEY@ for acme's API key, @OPEN@ / @CLICK@ for an
 * open and a click token minted with acme's link key; @SPLIT@ splits the
 * stream into writes of their own, a short pause apart, so the server sees a
 * request arrive in pieces. The stream is written to the collector and then
 * to the API, the write side is shut, and everything is read until the
 * server closes. Properties checked beyond "no crash, no leak, no UB" in
 * either server:
 *  - the server closes the connection within DEADLINE_MS of our shutdown (no
 *    hang: a stuck deferred response, a lost EOF);
 *  - the bytes back parse as a sequence of HTTP/1.x responses: each starts
 *    with a valid "HTTP/1.x NNN" status line, its framing (Content-Length or
 *    chunked) holds, and only a streaming (SSE) response or a connection reset
 *    may end early (a stream that h2o aborts ends with its broken chunk
 *    "\r\n1\r\n");
 *  - no 500: tally's handlers never fail on input;
 *  - every 4xx/5xx with a body is tally's JSON error
 *    {"error":{"code":"…","message":"…"}}, with two documented exceptions:
 *    the click route's HTML "link not found" page (404, text/html) and the
 *    400 that h2o writes itself for a request it cannot parse (text/plain);
 *  - the servers stay healthy: GET /healthz on a fresh connection answers 200
 *    after every input.
 * A request head over 64 KiB is too big for a seed: the set-up checks once
 * that each server answers one with a JSON 431 and stays healthy. */
#include "api/api.h"
#include "collect/collect.h"
#include "core/clock.h"
#include "core/log.h"
#include "event/metrics.h"
#include "event/token.h"
#include "store/store.h"
#include "stream/stream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define DEADLINE_MS 8000     /* a server that has not closed by then hangs */
#define RESP_CAP (1 << 20)   /* response bytes checked per connection */
#define MAX_BODY (16 * 1024) /* the servers' body limit */
#define MAX_BATCH_EVENTS 16
#define MAX_SPLITS 16
#define PAUSE_MS 2 /* between the pieces of a split stream */

static struct {
	bool ready;
	char dir[64];
	char db[128];
	struct tl_stream *stream;
	struct tl_collector *col;
	struct tl_api *api;
	pthread_t col_th, api_th;
	int col_port, api_port;
	char key[TL_API_KEY_MAX];
	struct tl_buf open_tok, click_tok;
} W;

static void fail(const char *what, const char *data, size_t n)
{
	fprintf(stderr, "fuzz_http: %s\n--- response bytes (%zu) ---\n", what, n);
	if (data)
		fwrite(data, 1, n < 2048 ? n : 2048, stderr);
	fputc('\n', stderr);
	abort();
}

static void must(int rc, const char *what)
{
	if (rc) {
		fprintf(stderr, "fuzz_http: set-up: %s: %s\n", what, tl_strerror(rc));
		abort();
	}
}

/* ---- the world ------------------------------------------------------------ */

static void *collector_main(void *arg)
{
	must(tl_collector_run(arg), "collector run");
	return NULL;
}

static void *api_main(void *arg)
{
	must(tl_api_run(arg), "api run");
	return NULL;
}

static void add_counts(struct tl_store *st, const char *variant, int64_t minute_ms, int64_t sent,
                       int64_t opens)
{
	struct tl_count_row row;
	memset(&row, 0, sizeof row);
	row.tenant = tl_str_of("acme", 4);
	row.campaign = tl_str_of("spring", 6);
	row.variant = tl_str_of(variant, strlen(variant));
	row.minute_ms = minute_ms;
	row.delta[TL_M_SENT] = sent;
	row.delta[TL_M_DELIVERED] = sent;
	row.delta[TL_M_OPENS] = opens;
	row.delta[TL_M_UNIQUE_OPENS] = opens;
	row.first_ts_ms = minute_ms + 1000;
	row.last_ts_ms = minute_ms + 59000;
	must(tl_store_begin(st, TL_SOURCE_REALTIME), "store begin");
	must(tl_store_add_counts(st, &row, 1), "store add counts");
	must(tl_store_commit(st), "store commit");
}

static void mint(const struct tl_tenant *t, enum tl_token_kind kind, struct tl_buf *out)
{
	struct tl_token tok;
	memset(&tok, 0, sizeof tok);
	tok.kind = kind;
	tok.issued_ms = tl_now_ms();
	tok.tenant = tl_str_of("acme", 4);
	tok.campaign = tl_str_of("spring", 6);
	tok.variant = tl_str_of("B", 1);
	tok.message = tl_str_of("m-1", 3);
	tok.recipient = tl_str_of("r-1", 3);
	if (kind == TL_TOKEN_CLICK)
		tok.url = tl_str_of("https://example.com/landing?x=1", 31);
	tl_buf_init(out, 0);
	must(tl_token_mint(&tok, t->link_key, sizeof t->link_key, out), "mint");
	must(tl_buf_putc(out, '\0'), "mint");
	out->len--;
}

static void world_down(void)
{
	if (!W.ready)
		return;
	W.ready = false;
	tl_collector_stop(W.col);
	tl_api_stop(W.api);
	pthread_join(W.col_th, NULL);
	pthread_join(W.api_th, NULL);
	tl_collector_destroy(W.col);
	tl_api_destroy(W.api);
	tl_stream_close(W.stream);
	tl_buf_free(&W.open_tok);
	tl_buf_free(&W.click_tok);
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", W.dir);
	if (system(cmd) != 0)
		fprintf(stderr, "fuzz_http: could not remove %s\n", W.dir);
}

static void world_up(void)
{
	if (W.ready)
		return;
	tl_log_set_level(TL_LOG_ERROR);
	snprintf(W.dir, sizeof W.dir, "/tmp/tally-fuzz-http.XXXXXX");
	if (!mkdtemp(W.dir))
		fail("mkdtemp", NULL, 0);
	snprintf(W.db, sizeof W.db, "sqlite:%s/tally.db", W.dir);

	struct tl_store *st;
	must(tl_store_open(W.db, &st), "store open");
	struct tl_tenant acme, strict;
	char strict_key[TL_API_KEY_MAX];
	memset(&acme, 0, sizeof acme);
	memset(&strict, 0, sizeof strict);
	must(tl_store_tenant_add(st, "acme", &acme, W.key), "tenant add");
	must(tl_store_tenant_add(st, "strict", &strict, strict_key), "tenant add");
	static const char *const settings[] = {"sendgrid_verify",
	                                       "false",
	                                       "postmark_auth",
	                                       "fuzz:secret",
	                                       "sparkpost_auth",
	                                       "fuzz:secret",
	                                       "mailgun_signing_key",
	                                       "fuzz-mailgun-signing-key",
	                                       NULL};
	for (size_t i = 0; settings[i]; i += 2)
		must(tl_store_tenant_set(st, "acme", settings[i], settings[i + 1]), "tenant set");
	const int64_t h18 = tl_days_from_civil(2026, 12, 3) * 86400000 + 18 * 3600000; /* 2026-12-03T18:00Z */
	add_counts(st, "A", h18, 10, 3);
	add_counts(st, "B", h18 + 60000, 5, 2);
	add_counts(st, "B", h18 + 3600000, 1, 1);
	mint(&acme, TL_TOKEN_OPEN, &W.open_tok);
	mint(&acme, TL_TOKEN_CLICK, &W.click_tok);
	free(acme.settings);
	free(strict.settings);
	tl_store_close(st);

	char uri[128];
	snprintf(uri, sizeof uri, "file:%s/log", W.dir);
	struct tl_stream_opts so;
	tl_stream_opts_defaults(&so);
	so.partitions = 2;
	so.segment_bytes = 1 << 20;
	must(tl_stream_open(uri, &so, &W.stream), "stream open");

	struct tl_http_limits lim;
	tl_http_limits_defaults(&lim);
	lim.max_body = MAX_BODY;
	struct tl_collector_opts co = {
	    .addr = "127.0.0.1:0",
	    .db_uri = W.db,
	    .stream = W.stream,
	    .limits = lim,
	    .max_batch_events = MAX_BATCH_EVENTS,
	    .tenant_refresh_ms = 1000,
	};
	must(tl_collector_create(&co, &W.col), "collector create");
	struct tl_api_opts ao = {
	    .addr = "127.0.0.1:0",
	    .db_uri = W.db,
	    .limits = lim,
	    .default_source = TL_SOURCE_REALTIME,
	    .live_interval_ms = 100,
	};
	must(tl_api_create(&ao, &W.api), "api create");
	W.col_port = tl_collector_port(W.col);
	W.api_port = tl_api_port(W.api);
	if (pthread_create(&W.col_th, NULL, collector_main, W.col) ||
	    pthread_create(&W.api_th, NULL, api_main, W.api))
		fail("pthread_create", NULL, 0);
	W.ready = true;
	atexit(world_down);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	world_up();
	return 0;
}

/* ---- placeholders ------------------------------------------------------- */

/* A request stream: bytes and where they are split into writes. */
struct stream_in {
	char *data;
	size_t n;
	size_t split[MAX_SPLITS]; /* offsets, ascending */
	int n_split;
};

/* The input with @KEY@, @OPEN@ and @CLICK@ replaced and @SPLIT@ noted. */
static void expand(const char *d, size_t size, struct stream_in *in)
{
	const struct {
		const char *ph;
		size_t phn;
		const char *val;
		size_t valn;
	} subs[] = {
	    {"@KEY@", 5, W.key, strlen(W.key)},
	    {"@OPEN@", 6, (const char *)W.open_tok.data, W.open_tok.len},
	    {"@CLICK@", 7, (const char *)W.click_tok.data, W.click_tok.len},
	    {"@SPLIT@", 7, NULL, 0},
	};
	const size_t n_subs = sizeof subs / sizeof subs[0];
	size_t cap = size + 1;
	for (size_t i = 0; i < size; i++)
		if (d[i] == '@')
			cap += W.open_tok.len + W.click_tok.len + TL_API_KEY_MAX;
	in->data = malloc(cap);
	if (!in->data)
		fail("out of memory", NULL, 0);
	in->n_split = 0;
	size_t o = 0;
	for (size_t i = 0; i < size;) {
		size_t k = n_subs;
		if (d[i] == '@')
			for (k = 0; k < n_subs; k++)
				if (size - i >= subs[k].phn && memcmp(d + i, subs[k].ph, subs[k].phn) == 0)
					break;
		if (k == n_subs) {
			in->data[o++] = d[i++];
			continue;
		}
		if (!subs[k].val) {
			if (in->n_split < MAX_SPLITS)
				in->split[in->n_split++] = o;
		} else {
			memcpy(in->data + o, subs[k].val, subs[k].valn);
			o += subs[k].valn;
		}
		i += subs[k].phn;
	}
	in->n = o;
}

/* ---- the client ------------------------------------------------------------ */

struct reply {
	char *data; /* the first RESP_CAP bytes */
	size_t n;
	bool capped; /* more came than kept */
	bool reset;  /* the connection ended by a reset, not a close */
};

/* Reads what is there into rp; returns 1 at the server's close or reset. */
static int take(int fd, struct reply *rp)
{
	char sink[4096];
	char *dst = rp->n < RESP_CAP ? rp->data + rp->n : sink;
	size_t room = rp->n < RESP_CAP ? RESP_CAP - rp->n : sizeof sink;
	ssize_t r = recv(fd, dst, room, 0);
	if (r == 0)
		return 1;
	if (r < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return 0;
		rp->reset = true; /* e.g. closed with our bytes unread */
		return 1;
	}
	if (dst == sink)
		rp->capped = true;
	else
		rp->n += (size_t)r;
	return 0;
}

/* Writes the stream on a fresh connection to port (piece by piece), shuts
 * the write side (unless keep_open: the request asks the server to close)
 * and reads until the server closes. Aborts past the deadline. */
static void exchange(int port, const struct stream_in *in, bool keep_open, struct reply *rp)
{
	rp->n = 0;
	rp->capped = rp->reset = false;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		fail("socket", NULL, 0);
	struct sockaddr_in sa;
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	/* non-blocking from the start: libFuzzer's timer signal may interrupt a
	 * blocking connect */
	if (fcntl(fd, F_SETFL, O_NONBLOCK) != 0)
		fail("fcntl", NULL, 0);
	int err = 0;
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		err = errno;
		if (err == EINPROGRESS || err == EINTR) {
			struct pollfd p = {fd, POLLOUT, 0};
			int r;
			while ((r = poll(&p, 1, DEADLINE_MS)) < 0 && errno == EINTR)
				;
			socklen_t el = sizeof err;
			if (r <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
				err = r == 0 ? ETIMEDOUT : errno;
		}
	}
	if (err) {
		fprintf(stderr, "fuzz_http: connect to port %d: %s\n", port, strerror(err));
		fail("the server does not accept connections", NULL, 0);
	}
	size_t sent = 0;
	int piece = 0;
	bool shut = false, closed = false;
	int64_t deadline = tl_mono_ms() + DEADLINE_MS;
	while (!closed) {
		if (!shut && sent == in->n) {
			if (!keep_open)
				shutdown(fd, SHUT_WR);
			shut = true;
		}
		size_t upto = piece < in->n_split ? in->split[piece] : in->n;
		if (!shut && sent == upto) { /* end of a piece: let the server read it */
			piece++;
			struct pollfd p = {fd, POLLIN, 0};
			if (poll(&p, 1, PAUSE_MS) > 0)
				closed = take(fd, rp);
			continue;
		}
		int64_t left = deadline - tl_mono_ms();
		if (left <= 0)
			fail("the server did not close the connection in time (hang)", rp->data, rp->n);
		struct pollfd p = {fd, (short)(POLLIN | (shut ? 0 : POLLOUT)), 0};
		if (poll(&p, 1, (int)left) < 0) {
			if (errno == EINTR)
				continue;
			fail("poll", NULL, 0);
		}
		if (!shut && (p.revents & POLLOUT)) {
			ssize_t w = send(fd, in->data + sent, upto - sent, MSG_NOSIGNAL);
			if (w > 0)
				sent += (size_t)w;
			else if (w < 0 && errno != EAGAIN && errno != EINTR)
				sent = in->n, piece = in->n_split; /* the server closed: read its answers */
		}
		if (p.revents & (POLLIN | POLLHUP | POLLERR))
			closed = take(fd, rp);
	}
	/* the server closed: a reset frees its side at once (no TIME_WAIT
	 * there, and none here unless both closed at the same time) */
	struct linger lg = {1, 0};
	(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
	close(fd);
}

/* ---- the response checker -------------------------------------------------- */

static bool starts_http(const char *p, const char *end)
{
	return end - p >= 7 && memcmp(p, "HTTP/1.", 7) == 0;
}

static void check_error_json(const char *body, size_t len, const struct reply *rp)
{
	json_error_t je;
	json_t *root = json_loadb(body, len, 0, &je);
	json_t *err = root ? json_object_get(root, "error") : NULL;
	json_t *code = err ? json_object_get(err, "code") : NULL;
	json_t *msg = err ? json_object_get(err, "message") : NULL;
	bool ok = json_is_object(root) && json_is_object(err) && json_is_string(code) &&
	          json_string_length(code) > 0 && json_is_string(msg);
	json_decref(root);
	if (!ok)
		fail("a JSON error body is not {\"error\":{\"code\":…,\"message\":…}}", rp->data, rp->n);
}

/* h2o ends a chunked response that fails midway (tally's streams, when the
 * client goes away) with this broken chunk, and then closes. */
static const char aborted_chunk[] = "\r\n1\r\n";

/* Checks the chunked body at p; returns its end, or NULL when it is cut off
 * (*aborted set when it ends with aborted_chunk). */
static const char *chunked_end(const char *p, const char *end, const struct reply *rp, bool *aborted)
{
	*aborted = false;
	for (;;) {
		if ((size_t)(end - p) == sizeof aborted_chunk - 1 &&
		    memcmp(p, aborted_chunk, sizeof aborted_chunk - 1) == 0) {
			*aborted = true;
			return NULL;
		}
		const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
		if (!eol)
			return NULL;
		char *xe;
		errno = 0;
		unsigned long long sz = strtoull(p, &xe, 16);
		if (xe == p || errno || xe > eol)
			fail("bad chunk size line", rp->data, rp->n);
		p = eol + 2;
		if (sz == 0) {
			if (end - p < 2)
				return NULL;
			if (memcmp(p, "\r\n", 2) != 0)
				fail("bad last chunk", rp->data, rp->n);
			return p + 2;
		}
		if ((unsigned long long)(end - p) < sz + 2)
			return NULL;
		if (memcmp(p + sz, "\r\n", 2) != 0)
			fail("chunk not followed by CRLF", rp->data, rp->n);
		p += sz + 2;
	}
}

/* Returns the value of header name in [h, he) (NUL-less, *len set) or NULL. */
static const char *header(const char *h, const char *he, const char *name, size_t *len)
{
	size_t nl = strlen(name);
	const char *p = memmem(h, (size_t)(he - h), "\r\n", 2);
	while (p && p + 2 < he) {
		p += 2;
		const char *eol = memmem(p, (size_t)(he - p), "\r\n", 2);
		if (!eol)
			eol = he;
		if ((size_t)(eol - p) > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
			const char *v = p + nl + 1;
			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			*len = (size_t)(eol - v);
			return v;
		}
		p = eol;
	}
	return NULL;
}

static bool value_starts(const char *v, size_t len, const char *prefix)
{
	size_t pl = strlen(prefix);
	return v && len >= pl && strncasecmp(v, prefix, pl) == 0;
}

/* Checks every response in rp; returns how many there were. */
static int check_responses(const struct reply *rp)
{
	const char *p = rp->data, *end = rp->data + rp->n;
	bool may_end_early = rp->reset || rp->capped;
	int count = 0;
	while (p < end) {
		const char *he = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
		if (!he) {
			if (may_end_early)
				return count;
			fail("a response head is cut off", rp->data, rp->n);
		}
		/* "HTTP/1.x NNN" then SP or CRLF */
		if (!starts_http(p, end) || (p[7] != '0' && p[7] != '1') || p[8] != ' ' || p[9] < '1' ||
		    p[9] > '5' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9' ||
		    (p[12] != ' ' && p[12] != '\r'))
			fail("not a valid HTTP/1.x status line", rp->data, rp->n);
		int status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
		count++;
		const char *body = he + 4;
		if (status < 200) { /* 100 Continue: no body, the answer follows */
			p = body;
			continue;
		}
		if (status == 500)
			fail("500 from a handler", rp->data, rp->n);
		size_t cl_len = 0, te_len = 0, ct_len = 0;
		const char *cl = header(p, he + 2, "Content-Length", &cl_len);
		const char *te = header(p, he + 2, "Transfer-Encoding", &te_len);
		const char *ct = header(p, he + 2, "Content-Type", &ct_len);
		bool stream = value_starts(ct, ct_len, "text/event-stream");
		const char *bend;
		if (status == 204 || status == 304 || body == end || starts_http(body, end)) {
			bend = body; /* no body, or the answer to a HEAD */
		} else if (te && value_starts(te, te_len, "chunked")) {
			bool aborted;
			bend = chunked_end(body, end, rp, &aborted);
			if (!bend) {
				if (stream || may_end_early) /* cut or aborted when the client left */
					return count;
				fail(aborted ? "a chunked response other than a stream was aborted"
				             : "a chunked body is cut off",
				     rp->data, rp->n);
			}
		} else if (cl) {
			char *xe;
			unsigned long long want = strtoull(cl, &xe, 10);
			if (xe == cl)
				fail("bad Content-Length", rp->data, rp->n);
			if ((unsigned long long)(end - body) < want) {
				if (may_end_early)
					return count;
				fail("a body is shorter than its Content-Length", rp->data, rp->n);
			}
			bend = body + want;
			if (bend != end && !starts_http(bend, end))
				fail("bytes after a body are not a response", rp->data, rp->n);
		} else {
			if (!stream)
				fail("a body without framing that is not a stream", rp->data, rp->n);
			return count; /* an HTTP/1.0 stream runs to the close */
		}
		if (status >= 400 && bend > body) {
			if (value_starts(ct, ct_len, "application/json"))
				check_error_json(body, (size_t)(bend - body), rp);
			else if (!(status == 404 && value_starts(ct, ct_len, "text/html")) &&
			         !(status == 400 && value_starts(ct, ct_len, "text/plain")))
				fail("an error answered without tally's JSON error body", rp->data, rp->n);
		}
		p = bend;
	}
	return count;
}

static void check_healthy(int port, struct reply *rp)
{
	static char req[] = "GET /healthz HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n";
	struct stream_in in = {.data = req, .n = sizeof req - 1};
	exchange(port, &in, true, rp);
	if (rp->n < 12 || memcmp(rp->data, "HTTP/1.1 200", 12) != 0)
		fail("GET /healthz does not answer 200 after the input", rp->data, rp->n);
}

static struct reply *reply_buf(void)
{
	static struct reply rp;
	if (!rp.data && !(rp.data = malloc(RESP_CAP)))
		fail("out of memory", NULL, 0);
	return &rp;
}

/* A head over the 64 KiB cap is answered 431 with a JSON error. */
static void check_oversized_head(int port)
{
	static const char pre[] = "GET /healthz HTTP/1.1\r\nHost: fuzz\r\nX-Big: ";
	const size_t big = 70 * 1024;
	struct stream_in in = {.n = sizeof pre - 1 + big + 4};
	if (!(in.data = malloc(in.n)))
		fail("out of memory", NULL, 0);
	memcpy(in.data, pre, sizeof pre - 1);
	memset(in.data + sizeof pre - 1, 'b', big);
	memcpy(in.data + in.n - 4, "\r\n\r\n", 4);
	struct reply *rp = reply_buf();
	exchange(port, &in, false, rp);
	free(in.data);
	if (check_responses(rp) != 1 || memcmp(rp->data, "HTTP/1.1 431", 12) != 0 ||
	    !memmem(rp->data, rp->n, "\"too_large\"", 11))
		fail("a request head over 64 KiB is not answered with a JSON 431", rp->data, rp->n);
	check_healthy(port, rp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int debug = -1;
	struct reply *rp = reply_buf();
	world_up();
	if (debug < 0) {
		debug = getenv("FUZZ_HTTP_DEBUG") != NULL;
		check_oversized_head(W.col_port);
		check_oversized_head(W.api_port);
	}
	struct stream_in in;
	expand((const char *)data, size, &in);
	const int ports[2] = {W.col_port, W.api_port};
	for (int i = 0; i < 2; i++) {
		exchange(ports[i], &in, false, rp);
		int count = check_responses(rp);
		if (debug) /* FUZZ_HTTP_DEBUG=1: what each server answered */
			fprintf(stderr, "== %s: %d responses, %zu bytes%s\n%.*s\n", i ? "api" : "collector",
			        count, rp->n, rp->reset ? " (reset)" : "", (int)(rp->n < 1500 ? rp->n : 1500),
			        rp->data);
		check_healthy(ports[i], rp);
	}
	free(in.data);
	return 0;
}
