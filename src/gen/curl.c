/* curl.c — the libcurl driver of the simulator: tl_gen_run_http (gen.h).
 *
 * One curl multi handle and `concurrency` easy handles, each reused for
 * request after request so its connection stays alive. Each handle takes the
 * next request from the tl_gen as soon as it is free, so a token minted
 * "now" is on the wire within the same loop turn.
 *
 * Retries: an answer of 503 or 429, or a failure to connect (nothing was
 * sent), is retried for every request after a short backoff; any other
 * failure without an answer is retried only for retry_safe requests
 * (deduplicated event batches, hits carrying an idempotency key) — an
 * unkeyed pixel or click hit whose answer was lost may have been counted,
 * so re-sending it could count it twice: that is reported as an error.
 * With retry_until_ms (runs that kill the collector) retries are bounded by
 * time instead of attempts, with a backoff of at most 1 s. */
#include "gen/gen.h"

#include "core/clock.h"

#include <curl/curl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SNIPPET_MAX 200
#define USER_AGENT_DEFAULT "tally-gen/1"

struct slot {
	CURL *easy;
	struct tl_gen_request *r;       /* NULL = free */
	bool running;                   /* added to the multi handle */
	int64_t retry_at_ms;            /* when !running and r: start at this time */
	int64_t first_ms;               /* first attempt of r */
	struct curl_slist *hit_headers; /* GET/HEAD: the Idempotency-Key of r */
	struct tl_buf url;
	char location[TL_MAX_URL + 1];
	size_t location_len;
	char snippet[SNIPPET_MAX + 1]; /* start of the answer body, for error messages */
	size_t snippet_len;
	char curl_err[CURL_ERROR_SIZE];
};

struct driver {
	struct tl_gen *g;
	const struct tl_gen_http_opts *o;
	CURLM *multi;
	struct slot *slots;
	int n;
	struct curl_slist *post_headers;
	char *base; /* collector URL without a trailing slash */
	int rc;     /* first failure */
	bool exhausted;
};

static size_t on_body(char *p, size_t size, size_t nmemb, void *arg)
{
	struct slot *s = arg;
	size_t n = size * nmemb;
	size_t room = SNIPPET_MAX - s->snippet_len;
	size_t take = n < room ? n : room;
	memcpy(s->snippet + s->snippet_len, p, take);
	s->snippet_len += take;
	s->snippet[s->snippet_len] = '\0';
	return n;
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *arg)
{
	struct slot *s = arg;
	size_t n = size * nmemb;
	if (n > 9 && strncasecmp(p, "location:", 9) == 0) {
		const char *v = p + 9;
		const char *end = p + n;
		while (v < end && (*v == ' ' || *v == '\t'))
			v++;
		while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
			end--;
		size_t len = (size_t)(end - v);
		if (len > TL_MAX_URL)
			len = TL_MAX_URL;
		memcpy(s->location, v, len);
		s->location[len] = '\0';
		s->location_len = len;
	}
	return n;
}

static void set_err(struct driver *d, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void set_err(struct driver *d, int rc, const char *fmt, ...)
{
	if (!d->rc)
		d->rc = rc;
	if (d->o->err && d->o->errlen && !d->o->err[0]) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(d->o->err, d->o->errlen, fmt, ap);
		va_end(ap);
	}
}

/* Configures s->easy for s->r and adds it to the multi handle. */
static int start(struct driver *d, struct slot *s)
{
	struct tl_gen_request *r = s->r;
	CURL *e = s->easy;
	tl_buf_reset(&s->url);
	if (tl_buf_puts(&s->url, d->base) || tl_buf_puts(&s->url, r->path))
		return -TL_ENOMEM;
	s->location[0] = '\0';
	s->location_len = 0;
	s->snippet[0] = '\0';
	s->snippet_len = 0;
	s->curl_err[0] = '\0';
	curl_easy_setopt(e, CURLOPT_URL, s->url.data);
	curl_easy_setopt(e, CURLOPT_USERAGENT, r->user_agent ? r->user_agent : USER_AGENT_DEFAULT);
	if (strcmp(r->method, "POST") == 0) {
		curl_easy_setopt(e, CURLOPT_NOBODY, 0L);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
		curl_easy_setopt(e, CURLOPT_HTTPHEADER, d->post_headers);
	} else {
		curl_slist_free_all(s->hit_headers);
		s->hit_headers = NULL;
		if (r->idempotency_key) {
			char h[128];
			snprintf(h, sizeof h, "Idempotency-Key: %s", r->idempotency_key);
			if (!(s->hit_headers = curl_slist_append(NULL, h)))
				return -TL_ENOMEM;
		}
		curl_easy_setopt(e, CURLOPT_HTTPHEADER, s->hit_headers);
		curl_easy_setopt(e, CURLOPT_NOBODY, 0L);
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
		if (strcmp(r->method, "HEAD") == 0)
			curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	}
	r->attempts++;
	if (curl_multi_add_handle(d->multi, e) != CURLM_OK)
		return -TL_ENOMEM;
	s->running = true;
	return TL_OK;
}

static void finish(struct driver *d, struct slot *s, int status)
{
	char err[512];
	err[0] = '\0';
	if (tl_gen_complete(d->g, s->r, status, s->location_len ? s->location : NULL, err, sizeof err)) {
		if (s->curl_err[0])
			set_err(d, -TL_EINVAL, "%s (%s)", err, s->curl_err);
		else
			set_err(d, -TL_EINVAL, "%s: %s", err, s->snippet);
	}
	s->r = NULL;
}

/* Handles the end of one attempt on slot s. */
static void done(struct driver *d, struct slot *s, CURLcode cc)
{
	curl_multi_remove_handle(d->multi, s->easy);
	s->running = false;
	long status = 0;
	if (cc == CURLE_OK)
		curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
	else
		snprintf(s->curl_err, sizeof s->curl_err, "%s", curl_easy_strerror(cc));
	bool nothing_sent = cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST;
	if (d->o->retry_until_ms > 0) {
		bool unanswered = cc != CURLE_OK || status >= 500 || status == 429;
		if (unanswered && (nothing_sent || status == 503 || status == 429 || s->r->retry_safe)) {
			if (tl_mono_ms() - s->first_ms < d->o->retry_until_ms) {
				int a = s->r->attempts < 6 ? s->r->attempts : 6;
				int64_t backoff = 20LL << a; /* 40 ms … 1.28 s */
				s->retry_at_ms = tl_mono_ms() + (backoff > 1000 ? 1000 : backoff);
				return;
			}
			set_err(d, -TL_EUNAVAIL, "%s: no answer within --retry-until (%s)", s->r->path,
			        s->curl_err[0] ? s->curl_err : "5xx/429");
		}
		finish(d, s, (int)status);
		return;
	}
	bool retry = status == 503 || status == 429 || nothing_sent ||
	             (s->r->retry_safe && (cc != CURLE_OK || status == 502 || status == 504));
	if (retry && s->r->attempts < d->o->max_attempts) {
		int64_t backoff = 20LL << (s->r->attempts < 8 ? s->r->attempts : 8); /* 40 ms … 5 s */
		s->retry_at_ms = tl_mono_ms() + backoff;
		return;
	}
	if (retry) {
		set_err(d, -TL_EUNAVAIL, "%s: gave up after retries (%s)", s->r->path,
		        s->curl_err[0] ? s->curl_err : "503/429");
		finish(d, s, (int)status);
		return;
	}
	finish(d, s, (int)status);
}

static void progress(struct driver *d, int64_t t0, bool final)
{
	if (!d->o->progress)
		return;
	struct tl_gen_progress p = {.done = final};
	tl_gen_stats(d->g, &p.stats);
	p.elapsed_ms = tl_mono_ms() - t0;
	p.events_per_s = p.elapsed_ms > 0 ? (double)p.stats.events_sent * 1000.0 / (double)p.elapsed_ms : 0;
	d->o->progress(d->o->progress_arg, &p);
}

static int setup(struct driver *d)
{
	const struct tl_gen_http_opts *o = d->o;
	size_t bl = strlen(o->collector);
	while (bl && o->collector[bl - 1] == '/')
		bl--;
	d->base = strndup(o->collector, bl);
	size_t hl = strlen(o->api_key ? o->api_key : "") + 32;
	char *auth = malloc(hl);
	if (!d->base || !auth) {
		free(auth);
		return -TL_ENOMEM;
	}
	snprintf(auth, hl, "Authorization: Bearer %s", o->api_key ? o->api_key : "");
	struct curl_slist *h = curl_slist_append(NULL, auth);
	free(auth);
	if (h)
		d->post_headers = h;
	h = h ? curl_slist_append(d->post_headers, "Content-Type: application/x-ndjson") : NULL;
	h = h ? curl_slist_append(d->post_headers, "Expect:") : NULL; /* no 100-continue round trip */
	if (!h)
		return -TL_ENOMEM;
	if (!(d->multi = curl_multi_init()))
		return -TL_ENOMEM;
	curl_multi_setopt(d->multi, CURLMOPT_MAXCONNECTS, (long)d->n);
	curl_multi_setopt(d->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)d->n);
	if (!(d->slots = calloc((size_t)d->n, sizeof *d->slots)))
		return -TL_ENOMEM;
	for (int i = 0; i < d->n; i++) {
		struct slot *s = &d->slots[i];
		tl_buf_init(&s->url, 0);
		if (!(s->easy = curl_easy_init()))
			return -TL_ENOMEM;
		curl_easy_setopt(s->easy, CURLOPT_PRIVATE, s);
		curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, on_body);
		curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, s);
		curl_easy_setopt(s->easy, CURLOPT_HEADERFUNCTION, on_header);
		curl_easy_setopt(s->easy, CURLOPT_HEADERDATA, s);
		curl_easy_setopt(s->easy, CURLOPT_ERRORBUFFER, s->curl_err);
		curl_easy_setopt(s->easy, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(s->easy, CURLOPT_TIMEOUT_MS, (long)o->timeout_ms);
		curl_easy_setopt(s->easy, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
		curl_easy_setopt(s->easy, CURLOPT_FOLLOWLOCATION, 0L);
		curl_easy_setopt(s->easy, CURLOPT_TCP_NODELAY, 1L);
		curl_easy_setopt(s->easy, CURLOPT_PROXY, ""); /* never through an environment proxy */
	}
	return TL_OK;
}

static void teardown(struct driver *d)
{
	if (d->slots) {
		for (int i = 0; i < d->n; i++) {
			struct slot *s = &d->slots[i];
			if (s->running)
				curl_multi_remove_handle(d->multi, s->easy);
			if (s->easy)
				curl_easy_cleanup(s->easy);
			curl_slist_free_all(s->hit_headers);
			tl_buf_free(&s->url);
		}
	}
	free(d->slots);
	if (d->multi)
		curl_multi_cleanup(d->multi);
	curl_slist_free_all(d->post_headers);
	free(d->base);
}

int tl_gen_run_http(struct tl_gen *g, const struct tl_gen_http_opts *opts)
{
	struct tl_gen_http_opts o = *opts;
	if (!o.collector || !*o.collector)
		return -TL_EINVAL;
	if (o.concurrency < 1)
		o.concurrency = 8;
	if (o.max_attempts < 1)
		o.max_attempts = 20;
	if (o.timeout_ms <= 0)
		o.timeout_ms = 30000;
	if (o.progress_ms <= 0)
		o.progress_ms = 1000;
	if (o.err && o.errlen)
		o.err[0] = '\0';
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return -TL_ENOMEM;
	struct driver d = {.g = g, .o = &o, .n = o.concurrency};
	int rc = setup(&d);
	int64_t t0 = tl_mono_ms(), next_progress = t0 + o.progress_ms;
	while (!rc) {
		int64_t now = tl_mono_ms();
		int active = 0;
		int64_t wake = now + 1000;
		for (int i = 0; i < d.n && !rc; i++) {
			struct slot *s = &d.slots[i];
			if (!s->r && !d.exhausted) {
				if ((rc = tl_gen_next(g, &s->r)))
					break;
				if (!s->r) {
					d.exhausted = true;
					continue;
				}
				s->retry_at_ms = 0;
				s->first_ms = now;
			}
			if (s->r && !s->running) {
				if (s->retry_at_ms <= now) {
					if (s->r->attempts > 0)
						rc = tl_gen_refresh(g, s->r);
					rc = rc ? rc : start(&d, s);
				} else if (s->retry_at_ms < wake)
					wake = s->retry_at_ms;
			}
			active += s->r != NULL;
		}
		if (rc || !active)
			break;
		int still;
		if (curl_multi_perform(d.multi, &still) != CURLM_OK) {
			rc = -TL_EIO;
			break;
		}
		CURLMsg *m;
		int left;
		bool any_done = false;
		while ((m = curl_multi_info_read(d.multi, &left))) {
			if (m->msg != CURLMSG_DONE)
				continue;
			struct slot *s;
			curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
			done(&d, s, m->data.result);
			any_done = true;
		}
		if (!any_done) {
			int64_t t = wake - tl_mono_ms();
			int timeout = t < 1 ? 1 : t > 1000 ? 1000 : (int)t;
			if (curl_multi_poll(d.multi, NULL, 0, timeout, NULL) != CURLM_OK) {
				rc = -TL_EIO;
				break;
			}
		}
		if (tl_mono_ms() >= next_progress) {
			progress(&d, t0, false);
			next_progress += o.progress_ms;
		}
	}
	if (!rc && d.rc)
		rc = d.rc;
	/* hand back whatever is still owned (after a setup or generator failure) */
	for (int i = 0; d.slots && i < d.n; i++) {
		struct slot *s = &d.slots[i];
		if (s->running) {
			curl_multi_remove_handle(d.multi, s->easy);
			s->running = false;
		}
		if (s->r) {
			(void)tl_gen_complete(g, s->r, 0, NULL, NULL, 0);
			s->r = NULL;
		}
	}
	progress(&d, t0, true);
	teardown(&d);
	curl_global_cleanup();
	return rc;
}
