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
 * The record key is the tenant-keyed recipient hash when the tenant is
 * known (so every record about one recipient shares a partition, whichever
 * route it came through), else the recipient the token carries. */
#include "collect/collect_int.h"

#include "core/clock.h"
#include "event/token.h"
#include "http/http.h"

#include <stdlib.h>
#include <string.h>

static const unsigned char gif43[43] = {
	0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00,
	0x00, 0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00,
	0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
};
static const char *const gif_headers[] = {"Cache-Control", "no-cache, no-store, must-revalidate, private",
					  "Pragma",	   "no-cache",
					  "Expires",	   "0",
					  NULL};
static const char not_found_page[] = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Link not "
				     "found</title></head>\n<body><h1>Link not found</h1><p>This link is not "
				     "valid.</p></body></html>\n";

/* A hit waiting for its record to be durable. */
struct hit {
	struct tl_collector *c;
	struct tl_http_deferred *d;
	bool click;
	char url[]; /* click: the redirect target, NUL-terminated */
};

static void answer_gif_now(struct tl_http_req *r)
{
	tl_http_respond(r, 200, "image/gif", gif43, sizeof gif43, gif_headers);
}

static void hit_answer(struct hit *h)
{
	if (h->click) {
		const char *hdrs[] = {"Location", h->url, "Cache-Control", "no-store", NULL};
		tl_http_deferred_complete(h->d, 302, NULL, NULL, 0, hdrs);
	} else {
		tl_http_deferred_complete(h->d, 200, "image/gif", gif43, sizeof gif43, gif_headers);
	}
}

static void hit_dropped(struct hit *h)
{
	col_count(h->click ? &h->c->click_dropped : &h->c->pixel_dropped);
}

/* Durability callback (backend thread). */
static void hit_done(void *arg, int status, uint64_t first_offset)
{
	struct hit *h = arg;
	(void)first_offset;
	if (status) {
		col_count(&h->c->append_errors);
		hit_dropped(h);
	} else {
		col_count(&h->c->accepted[TP_EVENTS]);
	}
	hit_answer(h);
	free(h);
}

/* Records the hit ev keyed by key and answers through a deferred response.
 * url is the click's redirect target (NULL for the pixel). */
static int record_hit(struct tl_collector *c, struct tl_http_req *r, const struct tl_event *ev, const char *key,
		      size_t key_len, const struct tl_str *url)
{
	bool click = url != NULL;
	size_t ul = click ? url->n : 0;
	tl_buf_reset(&c->enc);
	struct hit *h = malloc(sizeof *h + ul + 1);
	if (!h || tl_event_encode(ev, &c->enc) != 0) {
		free(h);
		goto now;
	}
	h->c = c;
	h->click = click;
	if (click)
		memcpy(h->url, url->p, ul);
	h->url[ul] = '\0';
	h->d = tl_http_defer(r);
	if (!h->d) {
		free(h);
		goto now;
	}
	struct tl_record rec = {.key = key, .key_len = (uint32_t)key_len, .value = c->enc.data,
				.value_len = (uint32_t)c->enc.len};
	int rc = tl_stream_append(c->o.stream, TL_TOPIC_EVENTS, tl_stream_partition_for(key, key_len, c->parts[TP_EVENTS]),
				  &rec, 1, hit_done, h);
	if (rc) { /* not queued: hit_done will not run */
		col_count(&c->append_errors);
		hit_dropped(h);
		hit_answer(h);
		free(h);
	}
	return TL_HTTP_ASYNC;
now:
	col_count(click ? &c->click_dropped : &c->pixel_dropped);
	if (click) {
		/* the user must reach the shop even when nothing can be recorded */
		char *u = malloc(ul + 1);
		if (u) {
			memcpy(u, url->p, ul);
			u[ul] = '\0';
			const char *hdrs[] = {"Location", u, "Cache-Control", "no-store", NULL};
			tl_http_respond(r, 302, NULL, NULL, 0, hdrs);
			free(u);
			return TL_HTTP_DONE;
		}
		tl_http_respond_error(r, 503, "unavailable", "out of memory");
	} else {
		answer_gif_now(r);
	}
	return TL_HTTP_DONE;
}

/* Fills the parts of a hit event common to both routes. */
static void hit_event(struct tl_collector *c, struct tl_http_req *r, struct tl_event *ev, enum tl_event_type type,
		      const char *token, size_t tn, char *id, char *ip)
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
	if (ua)
		ev->user_agent = tl_str_of(ua, ual > TL_MAX_USER_AGENT ? TL_MAX_USER_AGENT : ual);
	col_client_ip(c, r, ip, TL_MAX_IP + 1);
	ev->ip = tl_str_of(ip, strlen(ip));
	ev->id = tl_str_of(id, col_new_id(c, id));
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

int col_on_pixel(void *arg, struct tl_http_req *r)
{
	struct tl_collector *c = arg;
	col_count(&c->requests[RT_PIXEL]);
	size_t tn;
	const char *token = route_token(r, true, &tn);
	struct tl_token t;
	if (tn == 0 || tn > TL_MAX_TOKEN ||
	    tl_token_peek(token, tn, c->token_scratch, sizeof c->token_scratch, &t) != 0) {
		col_count(&c->rejected[RJ_BAD_TOKEN]);
		answer_gif_now(r);
		return TL_HTTP_DONE;
	}
	if (t.kind != TL_TOKEN_OPEN) {
		col_count(&c->rejected[RJ_TOKEN_KIND]);
		answer_gif_now(r);
		return TL_HTTP_DONE;
	}
	char key[TL_RCPT_HASH_LEN + 1];
	const char *kp = t.recipient.p;
	size_t kn = t.recipient.n;
	const struct tl_tenant *tenant = tl_tenant_cache_by_name(c->tenants, t.tenant.p, t.tenant.n);
	if (tenant) {
		tl_recipient_hash(tenant->salt, sizeof tenant->salt, t.recipient.p, t.recipient.n, key);
		kp = key;
		kn = TL_RCPT_HASH_LEN;
	}
	struct tl_event ev;
	char id[48], ip[TL_MAX_IP + 1];
	hit_event(c, r, &ev, TL_EV_OPEN, token, tn, id, ip);
	return record_hit(c, r, &ev, kp, kn, NULL);
}

static int click_not_found(struct tl_collector *c, struct tl_http_req *r, enum col_reject why)
{
	col_count(&c->rejected[why]);
	tl_http_respond(r, 404, "text/html; charset=utf-8", not_found_page, sizeof not_found_page - 1, NULL);
	return TL_HTTP_DONE;
}

/* A redirect target must be a plain http(s) URL: nothing that could split
 * the response header. */
static bool url_ok(struct tl_str u)
{
	if (!((u.n > 7 && memcmp(u.p, "http://", 7) == 0) || (u.n > 8 && memcmp(u.p, "https://", 8) == 0)))
		return false;
	for (uint32_t i = 0; i < u.n; i++) {
		unsigned char ch = (unsigned char)u.p[i];
		if (ch <= 0x20 || ch == 0x7f)
			return false;
	}
	return true;
}

int col_on_click(void *arg, struct tl_http_req *r)
{
	struct tl_collector *c = arg;
	col_count(&c->requests[RT_CLICK]);
	size_t tn;
	const char *token = route_token(r, false, &tn);
	struct tl_token t;
	if (tn == 0 || tn > TL_MAX_TOKEN ||
	    tl_token_peek(token, tn, c->token_scratch, sizeof c->token_scratch, &t) != 0)
		return click_not_found(c, r, RJ_BAD_TOKEN);
	const struct tl_tenant *tenant = tl_tenant_cache_by_name(c->tenants, t.tenant.p, t.tenant.n);
	if (!tenant)
		return click_not_found(c, r, RJ_UNKNOWN_TENANT);
	int rc = tl_token_verify(token, tn, tenant->link_key, sizeof tenant->link_key, c->token_scratch,
				 sizeof c->token_scratch, &t);
	if (rc)
		return click_not_found(c, r, rc == -TL_EAUTH ? RJ_BAD_SIGNATURE : RJ_BAD_TOKEN);
	if (t.kind != TL_TOKEN_CLICK)
		return click_not_found(c, r, RJ_TOKEN_KIND);
	if (!url_ok(t.url))
		return click_not_found(c, r, RJ_BAD_TOKEN);
	char key[TL_RCPT_HASH_LEN + 1];
	tl_recipient_hash(tenant->salt, sizeof tenant->salt, t.recipient.p, t.recipient.n, key);
	struct tl_event ev;
	char id[48], ip[TL_MAX_IP + 1];
	hit_event(c, r, &ev, TL_EV_CLICK, token, tn, id, ip);
	return record_hit(c, r, &ev, key, TL_RCPT_HASH_LEN, &t.url);
}
