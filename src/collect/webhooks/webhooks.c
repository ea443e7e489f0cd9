/* webhooks.c — the provider table and what every provider parser shares:
 * JSON helpers, field mapping, deterministic ids, bounding, recipient
 * hashing, and the event / dead-letter output (webhooks.h, internal.h). */
#include "collect/webhooks/internal.h"

#include "core/clock.h"
#include "event/token.h"

#include <math.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const struct {
	const char *name;
	int (*fn)(struct wh_ctx *c);
} providers[] = {
    {"sendgrid", tl_wh_sendgrid},   {"ses", tl_wh_ses},
    {"mailgun", tl_wh_mailgun},     {"postmark", tl_wh_postmark},
    {"sparkpost", tl_wh_sparkpost},
};

/* ---- errors ------------------------------------------------------------- */

int tl_wh_fail(struct wh_ctx *c, int status, int rc, const char *fmt, ...)
{
	c->status = status;
	if (c->err && c->errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(c->err, c->errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}

int tl_wh_fail_alloc(struct wh_ctx *c)
{
	if (c->req->arena->max) /* a capped arena: almost surely the cap, not malloc */
		return tl_wh_fail(c, 413, -TL_ETOOBIG, "request too large to process");
	return tl_wh_fail(c, 500, -TL_ENOMEM, "out of memory");
}

/* Copies at most 48 bytes of s for quoting inside an error or a reason:
 * quotes, backslashes and bytes outside printable ASCII become '?'. */
static void quote(struct tl_str s, char dst[56])
{
	size_t m = s.n > 48 ? 48 : s.n;
	for (size_t i = 0; i < m; i++) {
		unsigned char ch = (unsigned char)s.p[i];
		dst[i] = (ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\') ? '?' : (char)ch;
	}
	if (m < s.n) {
		memcpy(dst + m, "...", 3);
		m += 3;
	}
	dst[m] = '\0';
}

const char *tl_wh_reason(struct wh_ctx *c, const char *what, struct tl_str name)
{
	char q[56];
	quote(name, q);
	size_t cap = strlen(what) + sizeof q + 4;
	char *p = tl_arena_alloc(c->req->arena, cap);
	if (!p)
		return what;
	snprintf(p, cap, "%s \"%s\"", what, q);
	return p;
}

/* ---- JSON helpers ------------------------------------------------------- */

json_t *tl_wh_load(struct wh_ctx *c, const char *buf, size_t len, const char *what)
{
	json_error_t e;
	json_t *root = json_loadb(buf ? buf : "", len, JSON_ALLOW_NUL, &e);
	if (!root && json_error_code(&e) == json_error_numeric_overflow)
		root = json_loadb(buf, len, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &e);
	if (!root) {
		tl_wh_fail(c, 400, -TL_EINVAL, "%s is not valid JSON: %s (line %d, column %d)", what, e.text,
		           e.line, e.column);
		return NULL;
	}
	return root;
}

const char *tl_wh_header(struct wh_ctx *c, const char *name, size_t *len)
{
	*len = 0;
	if (!c->req->header)
		return NULL;
	size_t n = 0;
	const char *v = c->req->header(c->req->header_arg, name, &n);
	if (v)
		*len = n;
	return v;
}

bool tl_wh_ieq(const char *s, size_t n, const char *lit)
{
	size_t m = strlen(lit);
	if (n != m)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char a = (unsigned char)s[i], b = (unsigned char)lit[i];
		if (a >= 'A' && a <= 'Z')
			a = (unsigned char)(a + 32);
		if (b >= 'A' && b <= 'Z')
			b = (unsigned char)(b + 32);
		if (a != b)
			return false;
	}
	return true;
}

bool tl_wh_setting_bool(const struct tl_tenant *t, const char *key, bool def)
{
	const char *v = tl_tenant_setting(t, key, NULL);
	if (!v)
		return def;
	size_t n = strlen(v);
	if (tl_wh_ieq(v, n, "false") || tl_wh_ieq(v, n, "0") || tl_wh_ieq(v, n, "no") ||
	    tl_wh_ieq(v, n, "off"))
		return false;
	return true;
}

struct tl_str tl_wh_jstr(const json_t *v)
{
	if (!json_is_string(v))
		return TL_STR_NULL;
	const char *s = json_string_value(v);
	size_t n = json_string_length(v);
	return memchr(s, '\0', n) ? TL_STR_NULL : tl_str_of(s, n);
}

struct tl_str tl_wh_str(const json_t *obj, const char *key)
{
	return tl_wh_jstr(json_is_object(obj) ? json_object_get(obj, key) : NULL);
}

struct tl_str tl_wh_agent(const json_t *obj, const char *key)
{
	const json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
	if (!json_is_string(v))
		return TL_STR_NULL;
	const char *s = json_string_value(v);
	size_t n = json_string_length(v);
	const char *nul = memchr(s, '\0', n);
	return tl_str_of(s, nul ? (size_t)(nul - s) : n);
}

struct tl_str tl_wh_int(struct wh_ctx *c, long long v)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof tmp, "%lld", v);
	char *p = tl_arena_strdup(c->req->arena, tmp, (size_t)n);
	return p ? tl_str_of(p, (size_t)n) : TL_STR_NULL;
}

struct tl_str tl_wh_text(struct wh_ctx *c, const json_t *v)
{
	if (json_is_string(v))
		return tl_wh_jstr(v);
	if (json_is_integer(v))
		return tl_wh_int(c, (long long)json_integer_value(v));
	if (json_is_real(v)) {
		double d = json_real_value(v);
		if (d == floor(d) && fabs(d) < 9007199254740992.0) /* below 2^53: exact */
			return tl_wh_int(c, (long long)d);
	}
	return TL_STR_NULL;
}

struct tl_str tl_wh_first(struct wh_ctx *c, const json_t *v)
{
	if (json_is_array(v))
		v = json_array_size(v) ? json_array_get(v, 0) : NULL;
	return tl_wh_text(c, v);
}

#define TS_MAX_S 253402300799LL /* 9999-12-31T23:59:59Z */

static int secs_to_ms(double s, int64_t *ms)
{
	if (!isfinite(s) || s <= 0 || s > (double)TS_MAX_S)
		return -1;
	*ms = (int64_t)llround(s * 1000.0);
	return *ms > 0 ? 0 : -1;
}

int tl_wh_ts(const json_t *v, int64_t *ms)
{
	if (json_is_integer(v)) {
		json_int_t s = json_integer_value(v);
		if (s <= 0 || s > TS_MAX_S)
			return -1;
		*ms = (int64_t)s * 1000;
		return 0;
	}
	if (json_is_real(v))
		return secs_to_ms(json_real_value(v), ms);
	if (!json_is_string(v))
		return -1;
	const char *s = json_string_value(v);
	size_t n = json_string_length(v);
	if (n == 0 || n > 64)
		return -1;
	size_t i = 0;
	int64_t secs = 0;
	while (i < n && s[i] >= '0' && s[i] <= '9' && i < 12)
		secs = secs * 10 + (s[i++] - '0');
	if (i > 0 && (i == n || s[i] == '.')) { /* unix seconds as text, maybe with a fraction */
		int64_t frac = 0, scale = 100;
		if (i < n) {
			size_t f = ++i;
			for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
				frac += (s[i] - '0') * scale;
				scale /= 10;
			}
			if (i != n || i == f)
				return -1;
		}
		if (secs <= 0 || secs > TS_MAX_S)
			return -1;
		*ms = secs * 1000 + frac;
		return 0;
	}
	int64_t t;
	if (tl_time_parse_iso(s, n, &t) != 0 || t <= 0)
		return -1;
	*ms = t;
	return 0;
}

void tl_wh_map_meta(struct wh_ctx *c, const json_t *meta, struct wh_item *it)
{
	if (!json_is_object(meta))
		return;
	struct tl_str s = tl_wh_text(c, json_object_get(meta, c->campaign_field));
	if (s.n)
		it->campaign = s;
	s = tl_wh_text(c, json_object_get(meta, c->variant_field));
	if (s.n)
		it->variant = s;
	s = tl_wh_text(c, json_object_get(meta, c->recipient_field));
	if (s.n) {
		it->recipient = s;
		it->recipient_is_email = false;
		it->hashed = false;
	}
}

const struct wh_map *tl_wh_lookup(const struct wh_map *m, size_t n, struct tl_str name)
{
	for (size_t i = 0; i < n; i++)
		if (strlen(m[i].name) == name.n && memcmp(m[i].name, name.p, name.n) == 0)
			return &m[i];
	return NULL;
}

void tl_wh_map_type(struct wh_ctx *c, const struct wh_map *m, size_t n, struct tl_str name,
                    struct wh_item *it)
{
	it->provider_event = name;
	const struct wh_map *e = name.n ? tl_wh_lookup(m, n, name) : NULL;
	if (e) {
		it->type = e->type;
		it->bounce_class = e->bounce_class;
	} else {
		it->type = TL_EV_NONE;
		it->dead = name.n ? tl_wh_reason(c, "unmapped event type", name) : "missing event type";
	}
}

/* ---- ids, hashing, bounding -------------------------------------------- */

struct tl_str tl_wh_id(struct wh_ctx *c, const char *prefix, const struct tl_str *parts, size_t n)
{
	size_t plen = strlen(prefix), len = plen;
	bool plain = true;
	for (size_t i = 0; i < n; i++) {
		if (!parts[i].n)
			continue;
		len += 1 + parts[i].n;
		for (size_t j = 0; j < parts[i].n && plain; j++) {
			unsigned char ch = (unsigned char)parts[i].p[j];
			if (ch <= 0x20 || ch >= 0x7f)
				plain = false;
		}
	}
	if (plain && len <= TL_MAX_ID) {
		char *p = tl_arena_alloc(c->req->arena, len + 1);
		if (!p)
			return TL_STR_NULL;
		memcpy(p, prefix, plen);
		size_t o = plen;
		for (size_t i = 0; i < n; i++) {
			if (!parts[i].n)
				continue;
			p[o++] = '-';
			memcpy(p + o, parts[i].p, parts[i].n);
			o += parts[i].n;
		}
		p[o] = '\0';
		return tl_str_of(p, o);
	}
	unsigned char d[32];
	tl_fields_digest(parts, n, d);
	len = plen + 3 + 64;
	char *p = tl_arena_alloc(c->req->arena, len + 1);
	if (!p)
		return TL_STR_NULL;
	memcpy(p, prefix, plen);
	memcpy(p + plen, "-h-", 3);
	tl_hex_encode(d, 32, p + plen + 3);
	return tl_str_of(p, len);
}

void tl_wh_item_hash(struct wh_ctx *c, struct wh_item *it)
{
	if (it->hashed)
		return;
	it->hashed = true;
	it->rhash[0] = '\0';
	if (!it->recipient.n)
		return;
	const char *p = it->recipient.p;
	size_t n = it->recipient.n;
	char norm[TL_MAX_RECIPIENT];
	if (it->recipient_is_email) {
		/* trim; "Name <addr>" → addr; trim; lowercase: providers disagree on case */
		for (int pass = 0; pass < 2; pass++) {
			while (n && (*p == ' ' || *p == '\t'))
				p++, n--;
			while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
				n--;
			const char *lt = pass == 0 && n ? memchr(p, '<', n) : NULL;
			if (lt && p[n - 1] == '>') {
				n -= (size_t)(lt + 1 - p) + 1;
				p = lt + 1;
			}
		}
		if (n == 0) { /* nothing left ("<>"): hash what was given */
			p = it->recipient.p;
			n = it->recipient.n;
		} else if (n <= sizeof norm) {
			for (size_t i = 0; i < n; i++)
				norm[i] = (p[i] >= 'A' && p[i] <= 'Z') ? (char)(p[i] + 32) : p[i];
			p = norm;
		}
	}
	tl_recipient_hash(c->req->tenant->salt, sizeof c->req->tenant->salt, p, n, it->rhash);
}

static int grow(struct wh_ctx *c, void **arr, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return 0;
	size_t ncap = *cap ? *cap : 16;
	while (ncap < need)
		ncap *= 2;
	void *p = tl_arena_alloc(c->req->arena, ncap * elem);
	if (!p)
		return tl_wh_fail_alloc(c);
	if (*cap)
		memcpy(p, *arr, *cap * elem);
	*arr = p;
	*cap = ncap;
	return 0;
}

int tl_wh_reserve(struct wh_ctx *c, size_t n)
{
	void *arr = c->out->events;
	int rc = grow(c, &arr, &c->ev_cap, c->out->n + n, sizeof(struct tl_event));
	c->out->events = arr;
	return rc;
}

/* Copies s into the arena cut to max bytes at a UTF-8 boundary. */
static int copy_cut(struct wh_ctx *c, struct tl_str s, size_t max, struct tl_str *out)
{
	if (s.n > max) {
		size_t n = max;
		while (n > 0 && ((unsigned char)s.p[n] & 0xc0) == 0x80)
			n--;
		s.n = (uint32_t)n;
	}
	if (!s.n) {
		*out = TL_STR_NULL;
		return 0;
	}
	char *p = tl_arena_strdup(c->req->arena, s.p, s.n);
	if (!p)
		return tl_wh_fail_alloc(c);
	*out = tl_str_of(p, s.n);
	return 0;
}

/* Copies s when it fits, else leaves the field empty. */
static int copy_or_drop(struct wh_ctx *c, struct tl_str s, size_t max, struct tl_str *out)
{
	if (s.n > max)
		s = TL_STR_NULL;
	return copy_cut(c, s, max, out);
}

/* Copies s when it fits, else its "<provider>-h-<sha256>" form. */
static int copy_or_hash(struct wh_ctx *c, struct tl_str s, size_t max, struct tl_str *out)
{
	if (s.n <= max)
		return copy_cut(c, s, max, out);
	*out = tl_wh_id(c, c->provider, &s, 1);
	return out->n ? 0 : tl_wh_fail_alloc(c);
}

static const char *check(const struct wh_item *it)
{
	if (it->dead)
		return it->dead;
	if (it->type == TL_EV_NONE || it->type >= TL_EV__COUNT)
		return "unknown event type";
	if (!it->recipient.n)
		return "no recipient";
	if (it->recipient.n > TL_MAX_RECIPIENT)
		return "recipient too long";
	if (!it->campaign.n)
		return "no campaign";
	if (it->campaign.n > TL_MAX_CAMPAIGN)
		return "campaign too long";
	if (it->variant.n > TL_MAX_VARIANT)
		return "variant too long";
	if (it->ts_ms <= 0)
		return "missing or bad timestamp";
	if (!it->id.n)
		return "no event id";
	return NULL;
}

static int push_dead(struct wh_ctx *c, const struct tl_event *ev, const char *reason, struct tl_str pe)
{
	void *arr = c->out->dead;
	int rc = grow(c, &arr, &c->dead_cap, c->out->n_dead + 1, sizeof(struct tl_webhook_dead));
	c->out->dead = arr;
	if (rc)
		return rc;
	struct tl_str pev;
	if ((rc = copy_cut(c, pe, 64, &pev)))
		return rc;
	char *r = tl_arena_strdup(c->req->arena, reason, strlen(reason));
	if (!r)
		return tl_wh_fail_alloc(c);
	struct tl_webhook_dead *d = &c->out->dead[c->out->n_dead++];
	d->ev = *ev;
	d->reason = r;
	d->provider_event = pev.n ? pev.p : "";
	return 0;
}

int tl_wh_emit(struct wh_ctx *c, struct wh_item *it)
{
	const char *reason = check(it);
	struct tl_event ev;
	memset(&ev, 0, sizeof ev);
	ev.type = it->type < TL_EV__COUNT ? it->type : TL_EV_NONE;
	ev.bounce_class = it->type == TL_EV_BOUNCED ? it->bounce_class : TL_BOUNCE_NONE;
	ev.flags = (uint16_t)(TL_EVF_HASHED | (it->flags & TL_EVF_PROVIDER_MACHINE));
	ev.ts_ms = it->ts_ms > 0 ? it->ts_ms : 0;
	ev.arrival_ms = c->req->now_ms;
	const char *tn = c->req->tenant->name;
	int rc = copy_cut(c, tl_str_of(tn, strnlen(tn, TL_MAX_TENANT)), TL_MAX_TENANT, &ev.tenant);
	if (!rc)
		rc = copy_cut(c, tl_str_of(c->provider, strlen(c->provider)), TL_MAX_PROVIDER, &ev.provider);
	/* attribution fields: exact, or cut only in a dead letter */
	if (!rc)
		rc = copy_cut(c, it->campaign, TL_MAX_CAMPAIGN, &ev.campaign);
	if (!rc)
		rc = copy_cut(c, it->variant, TL_MAX_VARIANT, &ev.variant);
	if (!rc && it->recipient.n) {
		tl_wh_item_hash(c, it);
		rc = copy_cut(c, tl_str_of(it->rhash, TL_RCPT_HASH_LEN), TL_RCPT_HASH_LEN, &ev.recipient);
	}
	if (!rc)
		rc = copy_or_hash(c, it->id, TL_MAX_ID, &ev.id);
	if (!rc)
		rc = copy_or_hash(c, it->message, TL_MAX_MESSAGE, &ev.message);
	/* informational fields: dropped or cut when over their limit */
	if (!rc)
		rc = copy_or_drop(c, it->url, TL_MAX_URL, &ev.url);
	if (!rc)
		rc = copy_cut(c, it->user_agent, TL_MAX_USER_AGENT, &ev.user_agent);
	if (!rc)
		rc = copy_or_drop(c, it->ip, TL_MAX_IP, &ev.ip);
	if (rc)
		return rc;
	char verr[96];
	if (!reason && tl_event_validate(&ev, verr, sizeof verr) != 0)
		reason = verr; /* a safety net: check() should have caught it */
	if (reason)
		return push_dead(c, &ev, reason, it->provider_event);
	if ((rc = tl_wh_reserve(c, 1)))
		return rc;
	c->out->events[c->out->n++] = ev;
	return 0;
}

int tl_wh_dead(struct wh_ctx *c, const char *reason, struct tl_str provider_event)
{
	struct wh_item it;
	memset(&it, 0, sizeof it);
	it.dead = reason;
	it.provider_event = provider_event;
	return tl_wh_emit(c, &it);
}

/* ---- secrets ------------------------------------------------------------ */

long tl_wh_b64decode(const char *in, size_t n, unsigned char *out, size_t cap)
{
	while (n && in[n - 1] == '=')
		n--;
	if (n % 4 == 1)
		return -1;
	uint32_t acc = 0;
	int bits = 0;
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)in[i];
		int v;
		if (ch >= 'A' && ch <= 'Z')
			v = ch - 'A';
		else if (ch >= 'a' && ch <= 'z')
			v = ch - 'a' + 26;
		else if (ch >= '0' && ch <= '9')
			v = ch - '0' + 52;
		else if (ch == '+')
			v = 62;
		else if (ch == '/')
			v = 63;
		else
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o >= cap)
				return -1;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	return (long)o;
}

bool tl_wh_secret_eq(const void *a, size_t an, const void *b, size_t bn)
{
	unsigned char da[32], db[32];
	SHA256(a, an, da);
	SHA256(b, bn, db);
	return CRYPTO_memcmp(da, db, 32) == 0;
}

int tl_wh_check_basic(struct wh_ctx *c, const char *hdr, size_t n, const char *expected)
{
	if (!hdr || n < 6 || !tl_wh_ieq(hdr, 5, "basic") || (hdr[5] != ' ' && hdr[5] != '\t'))
		return tl_wh_fail(c, 401, -TL_EAUTH, "missing Basic authorization");
	size_t i = 6;
	while (i < n && (hdr[i] == ' ' || hdr[i] == '\t'))
		i++;
	while (n > i && (hdr[n - 1] == ' ' || hdr[n - 1] == '\t'))
		n--;
	unsigned char buf[768];
	long m = n - i <= 1024 ? tl_wh_b64decode(hdr + i, n - i, buf, sizeof buf) : -1;
	if (m < 0)
		return tl_wh_fail(c, 401, -TL_EAUTH, "malformed Basic authorization");
	bool ok = tl_wh_secret_eq(buf, (size_t)m, expected, strlen(expected));
	OPENSSL_cleanse(buf, sizeof buf);
	return ok ? 0 : tl_wh_fail(c, 403, -TL_EAUTH, "wrong credentials");
}

/* ---- entry points ------------------------------------------------------- */

static const char *field_setting(const struct tl_tenant *t, const char *key, const char *def)
{
	const char *v = tl_tenant_setting(t, key, NULL);
	return v && v[0] ? v : def;
}

int tl_wh_handle_opts(const char *provider, size_t provider_len, const struct tl_webhook_req *req,
                      struct tl_webhook_out *out, int *http_status, char *err, size_t errlen, bool verify)
{
	memset(out, 0, sizeof *out);
	if (err && errlen)
		err[0] = '\0';
	struct wh_ctx c = {
	    .req = req, .out = out, .verify = verify, .err = err, .errlen = errlen, .status = 500};
	int (*fn)(struct wh_ctx *) = NULL;
	for (size_t i = 0; i < sizeof providers / sizeof providers[0]; i++) {
		if (provider && provider_len == strlen(providers[i].name) &&
		    memcmp(provider, providers[i].name, provider_len) == 0) {
			fn = providers[i].fn;
			c.provider = providers[i].name;
		}
	}
	int rc;
	char q[56];
	if (!fn) {
		quote(tl_str_of(provider ? provider : "", provider ? provider_len : 0), q);
		rc = tl_wh_fail(&c, 404, -TL_ENOTFOUND, "unknown provider \"%s\"", q);
	} else if (!req || !req->tenant) {
		rc = tl_wh_fail(&c, 404, -TL_ENOTFOUND, "unknown tenant");
	} else if (!req->arena || (!req->body && req->len)) {
		rc = tl_wh_fail(&c, 500, -TL_EINVAL, "bad webhook request");
	} else {
		c.campaign_field = field_setting(req->tenant, "campaign_field", "tally_campaign");
		c.variant_field = field_setting(req->tenant, "variant_field", "tally_variant");
		c.recipient_field = field_setting(req->tenant, "recipient_field", "tally_recipient");
		rc = fn(&c);
		if (!rc)
			c.status = 200;
	}
	if (rc) {
		memset(out, 0, sizeof *out); /* nothing of a refused request is written */
		if (err && errlen && !err[0])
			snprintf(err, errlen, "%s", tl_strerror(rc));
	}
	*http_status = c.status;
	return rc;
}

int tl_webhook_handle(const char *provider, size_t provider_len, const struct tl_webhook_req *req,
                      struct tl_webhook_out *out, int *http_status, char *err, size_t errlen)
{
	return tl_wh_handle_opts(provider, provider_len, req, out, http_status, err, errlen, true);
}

const char *tl_webhook_status_code(int s)
{
	switch (s) {
	case 400:
		return "bad_request";
	case 401:
		return "unauthorized";
	case 403:
		return "forbidden";
	case 404:
		return "not_found";
	case 413:
		return "too_large";
	case 503:
		return "unavailable";
	default:
		return "internal";
	}
}

static int put(struct tl_buf *b, bool *first, const char *key, struct tl_str v)
{
	if (!v.n)
		return 0;
	int rc = tl_buf_printf(b, "%s\"%s\":", *first ? "" : ",", key);
	*first = false;
	return rc ? rc : tl_buf_json_str(b, v.p, v.n);
}

int tl_webhook_dead_to_json(const struct tl_webhook_dead *d, struct tl_buf *b)
{
	const struct tl_event *ev = &d->ev;
	size_t start = b->len;
	bool first = true;
	const char *pe = d->provider_event ? d->provider_event : "";
	const char *type = tl_event_type_name((enum tl_event_type)ev->type);
	const char *bc = tl_bounce_class_name((enum tl_bounce_class)ev->bounce_class);
	char ts[TL_TIME_ISO_MAX], arr[TL_TIME_ISO_MAX];
	size_t tsn = ev->ts_ms > 0 ? tl_time_format_iso(ev->ts_ms, ts, sizeof ts) : 0;
	size_t arrn = ev->arrival_ms > 0 ? tl_time_format_iso(ev->arrival_ms, arr, sizeof arr) : 0;
	int rc = tl_buf_putc(b, '{');
	if (!rc)
		rc = put(b, &first, "reason", tl_str_of(d->reason, strlen(d->reason)));
	if (!rc)
		rc = put(b, &first, "provider", ev->provider);
	if (!rc)
		rc = put(b, &first, "provider_event", tl_str_of(pe, strlen(pe)));
	if (!rc)
		rc = put(b, &first, "tenant", ev->tenant);
	if (!rc)
		rc = tl_buf_puts(b, ",\"event\":{");
	first = true;
	if (!rc && type)
		rc = put(b, &first, "type", tl_str_of(type, strlen(type)));
	if (!rc)
		rc = put(b, &first, "tenant", ev->tenant);
	if (!rc)
		rc = put(b, &first, "campaign", ev->campaign);
	if (!rc)
		rc = put(b, &first, "variant", ev->variant);
	if (!rc)
		rc = put(b, &first, "recipient", ev->recipient);
	if (!rc)
		rc = put(b, &first, "message", ev->message);
	if (!rc)
		rc = put(b, &first, "id", ev->id);
	if (!rc)
		rc = put(b, &first, "ts", tl_str_of(ts, tsn));
	if (!rc)
		rc = put(b, &first, "arrival", tl_str_of(arr, arrn));
	if (!rc)
		rc = put(b, &first, "url", ev->url);
	if (!rc)
		rc = put(b, &first, "user_agent", ev->user_agent);
	if (!rc)
		rc = put(b, &first, "ip", ev->ip);
	if (!rc && bc)
		rc = put(b, &first, "bounce_class", tl_str_of(bc, strlen(bc)));
	if (!rc)
		rc = put(b, &first, "provider", ev->provider);
	if (!rc && (ev->flags & TL_EVF_HASHED) && ev->recipient.n)
		rc = tl_buf_puts(b, first ? "\"hashed\":true" : ",\"hashed\":true");
	if (!rc)
		rc = tl_buf_puts(b, "}}");
	if (rc)
		b->len = start;
	return rc;
}
