/* hits.c — the tracking hits: the open pixel and the click redirect.
 *
 * GET|HEAD /o/<token>.gif always answers the 43-byte transparent GIF. A
 * token that decodes (tl_token_peek; the enricher verifies the signature
 * later) is recorded first: one TL_EVF_HIT record in `events`, and the GIF
 * goes out once that record is durable. A stream that fails still gets the
 * mail client its GIF (counted in tally_pixel_dropped_total); a token that
 * does not decode is answered, not written, and counted as rejected.
 *
 * GET|HEAD /c/<token> verifies the token with the tenant's link key before
 * anything else: the only URL the collector ever redirects to is the one
 * inside a valid signature (no open redirect). Anything wrong answers a
 * small 404 page. A valid click is recorded like a pixel hit and answered
 * 302 to its URL once durable — or at once, uncounted but redirected, when
 * the stream fails (tally_click_dropped_total).
 *
 * Hits are batched: a handler encodes its record into the pending group of
 * its partition and defers; once the loop iteration's requests are handled
 * (tl_http_server_soon) each partition's group is appended in one call, and
 * its durability callback answers every hit of the group. The record key is
 * the recipient the token carries.
 *
 * A client that may re-send a hit whose answer it lost (tally gen
 * --retry-until) sends an Idempotency-Key header: it becomes the hit's event
 * id, so the aggregator counts the hit once however often it arrives. */
#include "collect/collect_int.h"

#include "core/clock.h"
#include "core/utf8.h"
#include "event/token.h"
#include "http/http.h"

#include <stdlib.h>
#include <string.h>

static const unsigned char gif43[43] = {
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00,
    0x00, 0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00,
    0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
};
static const char *const gif_headers[] = {"Cache-Control",
                                          "no-cache, no-store, must-revalidate, private",
                                          "Pragma",
                                          "no-cache",
                                          "Expires",
                                          "0",
                                          NULL};
static const char not_found_page[] = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Link not "
                                     "found</title></head>\n<body><h1>Link not found</h1><p>This link is not "
                                     "valid.</p></body></html>\n";

/* How to answer one hit once its group is durable. */
struct hit_ans {
	struct tl_http_deferred *d;
	uint32_t url_off, url_len; /* click: the redirect target in urls; url_len 0 = pixel */
};

/* The hits of one partition gathered during the current loop iteration. */
struct hit_pending {
	struct tl_buf data, keys, urls, ids;
	uint32_t *vend, *kend, *iend;
	struct hit_ans *ans;
	size_t n, cap;
};

/* A group in flight: what its durability callback answers. */
struct hit_flight {
	struct tl_collector *c;
	size_t n;
	struct hit_ans *ans; /* points into this allocation */
	char *urls;          /* ditto */
};

#define HIT_GROUP_MAX 4096 /* hits per append; a fuller group is appended at once */

static void answer_gif_now(struct tl_http_req *r)
{
	tl_http_respond(r, 200, "image/gif", gif43, sizeof gif43, gif_headers);
}

static void answer_hit(struct hit_ans *a, const char *urls)
{
	if (a->url_len) {
		char url[TL_MAX_URL + 1];
		memcpy(url, urls + a->url_off, a->url_len);
		url[a->url_len] = '\0';
		const char *hdrs[] = {"Location", url, "Cache-Control", "no-store", NULL};
		tl_http_deferred_complete(a->d, 302, NULL, NULL, 0, hdrs);
	} else {
		tl_http_deferred_complete(a->d, 200, "image/gif", gif43, sizeof gif43, gif_headers);
	}
}

/* Answers every hit of a group; status != 0: they were not recorded. The
 * counters move first: a client that got its answer sees them counted. */
static void answer_all(struct tl_collector *c, struct hit_ans *ans, size_t n, const char *urls, int status)
{
	size_t clicks = 0;
	for (size_t i = 0; i < n; i++)
		clicks += ans[i].url_len != 0;
	if (status) {
		col_count(&c->append_errors);
		atomic_fetch_add_explicit(&c->click_dropped, clicks, memory_order_relaxed);
		atomic_fetch_add_explicit(&c->pixel_dropped, n - clicks, memory_order_relaxed);
	} else {
		atomic_fetch_add_explicit(&c->accepted[TP_EVENTS], n, memory_order_relaxed);
	}
	for (size_t i = 0; i < n; i++)
		answer_hit(&ans[i], urls);
}

/* Durability callback of a group (backend thread). */
static void flight_done(void *arg, int status, uint64_t first_offset)
{
	struct hit_flight *f = arg;
	struct tl_collector *c = f->c;
	(void)first_offset;
	answer_all(c, f->ans, f->n, f->urls, status);
	free(f);
	col_append_done(c); /* last: c may go right after */
}

static void pending_flush(struct tl_collector *c, int p)
{
	struct hit_pending *hp = &c->hits[p];
	if (!hp->n)
		return;
	size_t n = hp->n;
	hp->n = 0;
	struct hit_flight *f = malloc(sizeof *f + n * sizeof(struct hit_ans) + hp->urls.len + 1);
	struct tl_record *recs = c->hit_recs;
	if (!f) { /* answer without recording */
		answer_all(c, hp->ans, n, hp->urls.data, -TL_ENOMEM);
		goto out;
	}
	f->c = c;
	f->n = n;
	f->ans = (struct hit_ans *)(void *)(f + 1);
	f->urls = (char *)(f->ans + n);
	memcpy(f->ans, hp->ans, n * sizeof(struct hit_ans));
	if (hp->urls.len)
		memcpy(f->urls, hp->urls.data, hp->urls.len);
	uint32_t v0 = 0, k0 = 0, i0 = 0;
	for (size_t i = 0; i < n; i++) {
		recs[i] = (struct tl_record){
		    .key = col_at(&hp->keys, k0, hp->kend[i] - k0),
		    .key_len = hp->kend[i] - k0,
		    .value = hp->data.data + v0,
		    .value_len = hp->vend[i] - v0,
		    .msg_id = col_at(&hp->ids, i0, hp->iend[i] - i0), /* "<tenant>:<hit id>" */
		    .msg_id_len = hp->iend[i] - i0};
		k0 = hp->kend[i];
		v0 = hp->vend[i];
		i0 = hp->iend[i];
	}
	col_append_begin(c);
	int rc = tl_stream_append(c->o.stream, TL_TOPIC_EVENTS, p, recs, n, flight_done, f);
	if (rc) { /* not queued: flight_done will not run */
		col_append_done(c);
		answer_all(c, f->ans, n, f->urls, rc);
		free(f);
	}
out:
	tl_buf_reset(&hp->data);
	tl_buf_reset(&hp->keys);
	tl_buf_reset(&hp->urls);
	tl_buf_reset(&hp->ids);
}

/* Appends every partition's gathered hits (loop thread, once per iteration). */
static void flush_hits(void *arg)
{
	struct tl_collector *c = arg;
	c->hits_scheduled = false;
	for (int p = 0; p < c->parts[TP_EVENTS]; p++)
		pending_flush(c, p);
}

static int pending_reserve(struct hit_pending *hp)
{
	if (hp->n < hp->cap)
		return TL_OK;
	size_t ncap = hp->cap ? hp->cap * 2 : 64;
	uint32_t *v = realloc(hp->vend, ncap * sizeof *v);
	if (!v)
		return -TL_ENOMEM;
	hp->vend = v;
	uint32_t *k = realloc(hp->kend, ncap * sizeof *k);
	if (!k)
		return -TL_ENOMEM;
	hp->kend = k;
	uint32_t *ie = realloc(hp->iend, ncap * sizeof *ie);
	if (!ie)
		return -TL_ENOMEM;
	hp->iend = ie;
	struct hit_ans *a = realloc(hp->ans, ncap * sizeof *a);
	if (!a)
		return -TL_ENOMEM;
	hp->ans = a;
	hp->cap = ncap;
	return TL_OK;
}

/* Gathers the hit ev of tenant (from its token) keyed by key into its
 * partition's group and defers the answer. url is the click's redirect
 * target (NULL for the pixel). */
static int record_hit(struct tl_collector *c, struct tl_http_req *r, const struct tl_event *ev,
                      const struct tl_str *tenant, const char *key, size_t key_len, const struct tl_str *url)
{
	int p = tl_stream_partition_for(key, key_len, c->parts[TP_EVENTS]);
	struct hit_pending *hp = &c->hits[p];
	size_t d0 = hp->data.len, k0 = hp->keys.len, u0 = hp->urls.len, i0 = hp->ids.len;
	struct tl_http_deferred *d = NULL;
	if (!c->hits_scheduled) {
		if (tl_http_server_soon(c->srv, flush_hits, c) != 0)
			goto now;
		c->hits_scheduled = true;
	}
	/* stream msg id "<tenant>:<event id>", as col_groups_add: an Idempotency-Key
	 * is unique only within its tenant, and JetStream dedupes per stream */
	if (pending_reserve(hp) || tl_event_encode(ev, &hp->data) || tl_buf_append(&hp->keys, key, key_len) ||
	    tl_buf_append(&hp->ids, tenant->p, tenant->n) || tl_buf_putc(&hp->ids, ':') ||
	    tl_buf_append(&hp->ids, ev->id.p, ev->id.n) ||
	    (url && tl_buf_append(&hp->urls, url->p, url->n)) || !(d = tl_http_defer(r))) {
		hp->data.len = d0; /* undo the partial add */
		hp->keys.len = k0;
		hp->urls.len = u0;
		hp->ids.len = i0;
		goto now;
	}
	hp->vend[hp->n] = (uint32_t)hp->data.len;
	hp->kend[hp->n] = (uint32_t)hp->keys.len;
	hp->iend[hp->n] = (uint32_t)hp->ids.len;
	hp->ans[hp->n] = (struct hit_ans){.d = d, .url_off = (uint32_t)u0, .url_len = url ? url->n : 0};
	hp->n++;
	if (hp->n >= HIT_GROUP_MAX)
		pending_flush(c, p);
	return TL_HTTP_ASYNC;
now:
	col_count(url ? &c->click_dropped : &c->pixel_dropped);
	if (url) {
		/* the user must reach the shop even when nothing can be recorded */
		char u[TL_MAX_URL + 1];
		memcpy(u, url->p, url->n);
		u[url->n] = '\0';
		const char *hdrs[] = {"Location", u, "Cache-Control", "no-store", NULL};
		tl_http_respond(r, 302, NULL, NULL, 0, hdrs);
	} else {
		answer_gif_now(r);
	}
	return TL_HTTP_DONE;
}

int col_hits_init(struct tl_collector *c)
{
	int P = c->parts[TP_EVENTS];
	c->hits = calloc((size_t)P, sizeof *c->hits);
	c->hit_recs = calloc(HIT_GROUP_MAX, sizeof *c->hit_recs);
	if (!c->hits || !c->hit_recs)
		return -TL_ENOMEM;
	for (int p = 0; p < P; p++) {
		tl_buf_init(&c->hits[p].data, 0);
		tl_buf_init(&c->hits[p].keys, 0);
		tl_buf_init(&c->hits[p].urls, 0);
		tl_buf_init(&c->hits[p].ids, 0);
	}
	return TL_OK;
}

void col_hits_free(struct tl_collector *c)
{
	if (c->hits) {
		for (int p = 0; p < c->parts[TP_EVENTS]; p++) {
			struct hit_pending *hp = &c->hits[p];
			tl_buf_free(&hp->data);
			tl_buf_free(&hp->keys);
			tl_buf_free(&hp->urls);
			tl_buf_free(&hp->ids);
			free(hp->iend);
			free(hp->vend);
			free(hp->kend);
			free(hp->ans);
		}
		free(c->hits);
	}
	free(c->hit_recs);
}

/* A hit's event id: with an acceptable Idempotency-Key (1..HIT_KEY_MAX of
 * [A-Za-z0-9_.-]) "k-" + hex of the first 16 bytes of SHA-256 over the key
 * and what the token names (kind, tenant, campaign, variant, message,
 * recipient, url; not its issue time, which a client re-minting a link
 * for a retry may change), so that a hit re-sent after a lost answer
 * carries the same id and counts once — and only that hit: the key alone,
 * which the client picks, would let a holder of any one token of the
 * tenant suppress every other hit (any recipient, any link) sent with the
 * same key. Else a fresh collector id. An unacceptable key is ignored.
 * Returns the id's length. */
#define HIT_KEY_MAX 64
#define HIT_ID_CAP 48

static size_t hit_id(struct tl_collector *c, struct tl_http_req *r, const struct tl_token *t, char *id)
{
	size_t n = 0;
	const char *k = tl_http_header(r, "Idempotency-Key", &n);
	bool ok = k && n > 0 && n <= HIT_KEY_MAX;
	for (size_t i = 0; ok && i < n; i++) {
		char ch = k[i];
		ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		     ch == '_' || ch == '.' || ch == '-';
	}
	if (!ok)
		return col_new_id(c, id);
	const char kind = (char)t->kind;
	const struct tl_str fields[] = {tl_str_of(k, n), tl_str_of(&kind, 1), t->tenant,    t->campaign,
	                                t->variant,      t->message,          t->recipient, t->url};
	unsigned char d[32];
	tl_fields_digest(fields, sizeof fields / sizeof fields[0], d);
	memcpy(id, "k-", 2);
	tl_hex_encode(d, 16, id + 2);
	return 34;
}

/* Fills the parts of a hit event common to both routes. */
static void hit_event(struct tl_collector *c, struct tl_http_req *r, struct tl_event *ev,
                      enum tl_event_type type, const char *token, size_t tn, const struct tl_token *t,
                      char *id, char *ip, char ua_buf[TL_MAX_USER_AGENT])
{
	size_t ml, ual = 0;
	const char *m = tl_http_method(r, &ml);
	const char *ua = tl_http_header(r, "User-Agent", &ual);
	memset(ev, 0, sizeof *ev);
	ev->type = (uint8_t)type;
	ev->flags = TL_EVF_HIT;
	if (ml == 4 && memcmp(m, "HEAD", 4) == 0)
		ev->flags |= TL_EVF_HEAD;
	ev->ts_ms = ev->arrival_ms = tl_now_ms();
	ev->token = tl_str_of(token, tn);
	/* header bytes are anything: made valid UTF-8 without growing, so the
	 * archive's JSON of the event decodes back to the same agent */
	if (ua)
		ev->user_agent = tl_str_of(ua_buf, tl_utf8_sanitize(ua, ual, ua_buf, TL_MAX_USER_AGENT));
	col_client_ip(c, r, ip, TL_MAX_IP + 1);
	ev->ip = tl_str_of(ip, strlen(ip));
	ev->id = tl_str_of(id, hit_id(c, r, t, id));
}

/* The token of /o/<token>.gif or /c/<token>: what follows the 3-byte prefix. */
static const char *route_token(struct tl_http_req *r, bool strip_gif, size_t *n)
{
	size_t pl;
	const char *p = tl_http_path(r, &pl);
	const char *t = p + 3;
	size_t tn = pl - 3;
	if (strip_gif && tn >= 4 && memcmp(t + tn - 4, ".gif", 4) == 0)
		tn -= 4;
	*n = tn;
	return t;
}

/* Reads the token of a hit route into *t: peeked, then verified with its
 * tenant's link key when this collector knows the tenant (*known says
 * whether it does; t then holds the verified fields). RJ__COUNT when it
 * holds, else why it is refused. */
static enum col_reject hit_token(struct tl_collector *c, const char *token, size_t tn, struct tl_token *t,
                                 bool *known)
{
	*known = false;
	if (tn == 0 || tn > TL_MAX_TOKEN ||
	    tl_token_peek(token, tn, c->token_scratch, sizeof c->token_scratch, t) != 0)
		return RJ_BAD_TOKEN;
	const struct tl_tenant *tenant = tl_tenant_cache_by_name(c->tenants, t->tenant.p, t->tenant.n);
	if (!tenant)
		return RJ__COUNT;
	*known = true;
	int rc = tl_token_verify(token, tn, tenant->link_key, sizeof tenant->link_key, c->token_scratch,
	                         sizeof c->token_scratch, t);
	return !rc ? RJ__COUNT : rc == -TL_EAUTH ? RJ_BAD_SIGNATURE : RJ_BAD_TOKEN;
}

int col_on_pixel(void *arg, struct tl_http_req *r)
{
	struct tl_collector *c = arg;
	col_count(&c->requests[RT_PIXEL]);
	size_t tn;
	const char *token = route_token(r, true, &tn);
	struct tl_token t;
	bool known;
	/* A forged hit of a tenant this collector knows is answered (the GIF,
	 * as always) but never written. One of a tenant it does not know yet
	 * (added since the cache's last refresh) is recorded: the enricher
	 * looks the tenant up again and decides. */
	enum col_reject why = hit_token(c, token, tn, &t, &known);
	if (why == RJ__COUNT && t.kind != TL_TOKEN_OPEN)
		why = RJ_TOKEN_KIND;
	if (why != RJ__COUNT) {
		col_count(&c->rejected[why]);
		answer_gif_now(r);
		return TL_HTTP_DONE;
	}
	struct tl_event ev;
	char id[HIT_ID_CAP], ip[TL_MAX_IP + 1], ua[TL_MAX_USER_AGENT];
	hit_event(c, r, &ev, TL_EV_OPEN, token, tn, &t, id, ip, ua);
	return record_hit(c, r, &ev, &t.tenant, t.recipient.p, t.recipient.n, NULL);
}

static int click_not_found(struct tl_collector *c, struct tl_http_req *r, enum col_reject why)
{
	col_count(&c->rejected[why]);
	tl_http_respond(r, 404, "text/html; charset=utf-8", not_found_page, sizeof not_found_page - 1, NULL);
	return TL_HTTP_DONE;
}

int col_on_click(void *arg, struct tl_http_req *r)
{
	struct tl_collector *c = arg;
	col_count(&c->requests[RT_CLICK]);
	size_t tn;
	const char *token = route_token(r, false, &tn);
	struct tl_token t;
	bool known;
	/* a click redirects: only with a signature checked here */
	enum col_reject why = hit_token(c, token, tn, &t, &known);
	if (why == RJ__COUNT && !known)
		why = RJ_UNKNOWN_TENANT;
	if (why != RJ__COUNT)
		return click_not_found(c, r, why);
	if (t.kind != TL_TOKEN_CLICK)
		return click_not_found(c, r, RJ_TOKEN_KIND);
	if (!tl_token_url_ok(t.url)) /* as at minting: nothing that could split the answer */
		return click_not_found(c, r, RJ_BAD_TOKEN);
	struct tl_event ev;
	char id[HIT_ID_CAP], ip[TL_MAX_IP + 1], ua[TL_MAX_USER_AGENT];
	hit_event(c, r, &ev, TL_EV_CLICK, token, tn, &t, id, ip, ua);
	return record_hit(c, r, &ev, &t.tenant, t.recipient.p, t.recipient.n, &t.url);
}
