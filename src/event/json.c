/* json.c — the canonical JSON form of an event (DESIGN.md §4), used at the
 * edges: the POST /v1/events body (NDJSON) and the archive.
 *
 * Parsing rejects duplicate keys and gives a precise reason for every
 * refusal. Unknown keys are ignored so producers can add fields. Besides the
 * keys in DESIGN.md §4 it understands the flags that tl_event_to_json
 * writes, so the archive round-trips: "machine":true (a provider-classified
 * machine open, TL_EVF_PROVIDER_MACHINE), "bot":true, "head":true,
 * "hashed":true, "token" (a raw pixel/click hit, TL_EVF_HIT) and "arrival"
 * (collector receive time, RFC 3339).
 *
 * Two stages. The syntax stage turns a line into a table of the known keys'
 * values (absent, null, string, true, false, other). The meaning stage,
 * decode(), turns that table into an event or a reason, and is shared by
 * both syntax parsers:
 *
 * - the fast path (scan_fast) takes the lines mailers send — one flat
 *   object whose strings have no escapes and are valid UTF-8, and whose
 *   values are strings, true, false or null — straight out of the input
 *   (~6x cheaper than building a jansson tree: the collector's main cost);
 * - jansson takes everything else (escapes, numbers, nested values,
 *   duplicate keys, syntax errors), and words every syntax error.
 *
 * The fast path never refuses anything: it either produces the same table
 * jansson would, or hands the line over. tests/unit/test_json_fast.c runs
 * both on the fuzz corpus and on generated lines and requires identical
 * results. */
#include "event/event.h"

#include "core/clock.h"
#include "core/utf8.h"
#include "event/json_int.h"
#include "event/wire.h"

#include <jansson.h>
#include <string.h>

#define QUOTE_MAX 48             /* bytes of an offending value quoted in a reason */
#define TS_MAX 253402300799999LL /* 9999-12-31T23:59:59.999Z */
#define UNKNOWN_MAX 8            /* distinct unknown keys the fast path tracks (for duplicates) */

/* Copies at most QUOTE_MAX bytes of s into dst for use inside "…" in an error
 * message: quotes, backslashes and control bytes become '?', and "..." marks
 * a cut. */
static const char *quote(const char *s, size_t n, char dst[QUOTE_MAX + 4])
{
	size_t m = n > QUOTE_MAX ? QUOTE_MAX : n;
	for (size_t i = 0; i < m; i++) {
		unsigned char c = (unsigned char)s[i];
		dst[i] = (c < 0x20 || c == 0x7f || c == '"' || c == '\\') ? '?' : (char)c;
	}
	if (m < n) {
		memcpy(dst + m, "...", 3);
		m += 3;
	}
	dst[m] = '\0';
	return dst;
}

/* ---- the table of known keys ------------------------------------------- */

enum key {
	K_TYPE,
	K_TENANT,
	K_CAMPAIGN,
	K_VARIANT,
	K_RECIPIENT,
	K_MESSAGE,
	K_ID,
	K_URL,
	K_UA,
	K_IP,
	K_PROVIDER,
	K_TOKEN,
	K_TS,
	K_ARRIVAL,
	K_BOUNCE,
	K_MACHINE,
	K_BOT,
	K_HEAD,
	K_HASHED,
	K__N
};

static const char *const key_names[K__N] = {
    [K_TYPE] = "type",
    [K_TENANT] = "tenant",
    [K_CAMPAIGN] = "campaign",
    [K_VARIANT] = "variant",
    [K_RECIPIENT] = "recipient",
    [K_MESSAGE] = "message",
    [K_ID] = "id",
    [K_URL] = "url",
    [K_UA] = "user_agent",
    [K_IP] = "ip",
    [K_PROVIDER] = "provider",
    [K_TOKEN] = "token",
    [K_TS] = "ts",
    [K_ARRIVAL] = "arrival",
    [K_BOUNCE] = "bounce_class",
    [K_MACHINE] = "machine",
    [K_BOT] = "bot",
    [K_HEAD] = "head",
    [K_HASHED] = "hashed",
};

enum jkind { J_ABSENT = 0, J_NULL, J_STRING, J_TRUE, J_FALSE, J_OTHER };

struct jval {
	uint8_t kind;  /* enum jkind */
	uint32_t n;    /* J_STRING: bytes */
	const char *s; /* J_STRING: the decoded bytes (may hold NULs from \u0000) */
};

struct jobj {
	struct jval v[K__N];
};

/* ---- meaning: table → event --------------------------------------------- */

/* Reads optional string key k. Returns 0 with *out set (copied into the
 * arena; absent or null leave it empty), or a negative error with the
 * reason in err. */
static int get_str(const struct jobj *o, enum key k, uint32_t max, struct tl_arena *a, struct tl_str *out,
                   char *err, size_t errlen)
{
	const struct jval *v = &o->v[k];
	*out = TL_STR_NULL;
	if (v->kind == J_ABSENT || v->kind == J_NULL)
		return 0;
	if (v->kind != J_STRING) {
		tl_seterr(err, errlen, "field %s must be a string", key_names[k]);
		return -TL_EINVAL;
	}
	if (v->n > max) {
		tl_seterr(err, errlen, "%s too long", key_names[k]);
		return -TL_ETOOBIG;
	}
	if (memchr(v->s, '\0', v->n)) {
		tl_seterr(err, errlen, "field %s contains a NUL byte", key_names[k]);
		return -TL_EINVAL;
	}
	if (v->n == 0) {
		out->p = "";
		return 0;
	}
	char *copy = tl_arena_strdup(a, v->s, v->n);
	if (!copy) {
		tl_seterr(err, errlen, "out of memory");
		return -TL_ENOMEM;
	}
	*out = tl_str_of(copy, v->n);
	return 0;
}

/* Reads optional boolean key k: 1 when true, 0 when false, absent or null,
 * a negative error on anything else. */
static int get_bool(const struct jobj *o, enum key k, char *err, size_t errlen)
{
	const struct jval *v = &o->v[k];
	if (v->kind == J_ABSENT || v->kind == J_NULL)
		return 0;
	if (v->kind != J_TRUE && v->kind != J_FALSE) {
		tl_seterr(err, errlen, "field %s must be a boolean", key_names[k]);
		return -TL_EINVAL;
	}
	return v->kind == J_TRUE ? 1 : 0;
}

/* Parses a required (or optional) RFC 3339 key into *ms. */
static int get_time(const struct jobj *o, enum key k, bool required, int64_t *ms, char *err, size_t errlen)
{
	const struct jval *v = &o->v[k];
	*ms = 0;
	if (v->kind == J_ABSENT || v->kind == J_NULL) {
		if (!required)
			return 0;
		tl_seterr(err, errlen, "missing %s", key_names[k]);
		return -TL_EINVAL;
	}
	if (v->kind != J_STRING) {
		tl_seterr(err, errlen, "field %s must be a string", key_names[k]);
		return -TL_EINVAL;
	}
	if (tl_time_parse_iso(v->s, v->n, ms) != 0 || *ms <= 0) {
		char q[QUOTE_MAX + 4];
		tl_seterr(err, errlen, "bad %s \"%s\"", key_names[k], quote(v->s, v->n, q));
		return -TL_EINVAL;
	}
	return 0;
}

static int decode(const struct jobj *o, struct tl_arena *a, struct tl_event *ev, char *err, size_t errlen)
{
	char q[QUOTE_MAX + 4];
	int rc;

	/* type first: every later check depends on it */
	const struct jval *tv = &o->v[K_TYPE];
	if (tv->kind == J_ABSENT || tv->kind == J_NULL) {
		tl_seterr(err, errlen, "missing type");
		return -TL_EINVAL;
	}
	if (tv->kind != J_STRING) {
		tl_seterr(err, errlen, "field type must be a string");
		return -TL_EINVAL;
	}
	ev->type = (uint8_t)tl_event_type_parse(tv->s, tv->n);
	if (ev->type == TL_EV_NONE) {
		tl_seterr(err, errlen, "unknown type \"%s\"", quote(tv->s, tv->n, q));
		return -TL_EINVAL;
	}

	static const struct {
		uint8_t key;
		size_t off;
		uint32_t max;
	} fields[] = {
	    {K_TENANT, offsetof(struct tl_event, tenant), TL_MAX_TENANT},
	    {K_CAMPAIGN, offsetof(struct tl_event, campaign), TL_MAX_CAMPAIGN},
	    {K_VARIANT, offsetof(struct tl_event, variant), TL_MAX_VARIANT},
	    {K_RECIPIENT, offsetof(struct tl_event, recipient), TL_MAX_RECIPIENT},
	    {K_MESSAGE, offsetof(struct tl_event, message), TL_MAX_MESSAGE},
	    {K_ID, offsetof(struct tl_event, id), TL_MAX_ID},
	    {K_URL, offsetof(struct tl_event, url), TL_MAX_URL},
	    {K_UA, offsetof(struct tl_event, user_agent), TL_MAX_USER_AGENT},
	    {K_IP, offsetof(struct tl_event, ip), TL_MAX_IP},
	    {K_PROVIDER, offsetof(struct tl_event, provider), TL_MAX_PROVIDER},
	    {K_TOKEN, offsetof(struct tl_event, token), TL_MAX_TOKEN},
	};
	for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
		struct tl_str *dst = (struct tl_str *)(void *)((char *)ev + fields[i].off);
		rc = get_str(o, (enum key)fields[i].key, fields[i].max, a, dst, err, errlen);
		if (rc < 0)
			return rc;
	}

	bool is_hit = ev->token.n > 0;
	bool open_or_click = ev->type == TL_EV_OPEN || ev->type == TL_EV_CLICK;
	if (is_hit) {
		if (!open_or_click) {
			tl_seterr(err, errlen, "token only for open or click");
			return -TL_EINVAL;
		}
		ev->flags |= TL_EVF_HIT;
	} else {
		if (!ev->campaign.n) {
			tl_seterr(err, errlen, "missing campaign");
			return -TL_EINVAL;
		}
		if (!ev->recipient.n) {
			tl_seterr(err, errlen, "missing recipient");
			return -TL_EINVAL;
		}
	}
	if (!ev->id.n) {
		tl_seterr(err, errlen, "missing id");
		return -TL_EINVAL;
	}
	if ((rc = get_time(o, K_TS, true, &ev->ts_ms, err, errlen)) < 0)
		return rc;
	if ((rc = get_time(o, K_ARRIVAL, false, &ev->arrival_ms, err, errlen)) < 0)
		return rc;

	/* bounce_class: optional on bounced (NONE when absent), refused elsewhere */
	const struct jval *bv = &o->v[K_BOUNCE];
	if (bv->kind != J_ABSENT && bv->kind != J_NULL) {
		if (bv->kind != J_STRING) {
			tl_seterr(err, errlen, "field bounce_class must be a string");
			return -TL_EINVAL;
		}
		if (bv->n > 0 && ev->type != TL_EV_BOUNCED) {
			tl_seterr(err, errlen, "bounce_class only for bounced");
			return -TL_EINVAL;
		}
		int c = bv->n ? tl_bounce_class_parse(bv->s, bv->n) : TL_BOUNCE_NONE;
		if (c < 0) {
			tl_seterr(err, errlen, "unknown bounce_class \"%s\"", quote(bv->s, bv->n, q));
			return -TL_EINVAL;
		}
		ev->bounce_class = (uint8_t)c;
	}

	static const struct {
		uint8_t key;
		uint16_t flag;
		uint8_t only; /* the type the flag is allowed on, 0 = open or click, 255 = any */
	} flags[] = {
	    {K_MACHINE, TL_EVF_PROVIDER_MACHINE, TL_EV_OPEN},
	    {K_BOT, TL_EVF_BOT, TL_EV_CLICK},
	    {K_HEAD, TL_EVF_HEAD, 0},
	    {K_HASHED, TL_EVF_HASHED, 255},
	};
	for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
		rc = get_bool(o, (enum key)flags[i].key, err, errlen);
		if (rc < 0)
			return rc;
		if (!rc)
			continue;
		const char *name = key_names[flags[i].key];
		if (flags[i].only == 0 && !open_or_click) {
			tl_seterr(err, errlen, "%s only for open or click", name);
			return -TL_EINVAL;
		}
		if (flags[i].only != 0 && flags[i].only != 255 && flags[i].only != ev->type) {
			tl_seterr(err, errlen, "%s only for %s", name,
			          tl_event_type_name((enum tl_event_type)flags[i].only));
			return -TL_EINVAL;
		}
		ev->flags |= flags[i].flag;
	}
	return TL_OK;
}

/* ---- syntax, general: jansson ------------------------------------------- */

static void from_jansson(json_t *root, struct jobj *o)
{
	for (int k = 0; k < K__N; k++) {
		json_t *v = json_object_get(root, key_names[k]);
		struct jval *d = &o->v[k];
		if (!v) {
			d->kind = J_ABSENT;
		} else if (json_is_null(v)) {
			d->kind = J_NULL;
		} else if (json_is_string(v)) {
			d->kind = J_STRING;
			d->s = json_string_value(v);
			d->n = (uint32_t)json_string_length(v);
		} else if (json_is_true(v)) {
			d->kind = J_TRUE;
		} else if (json_is_false(v)) {
			d->kind = J_FALSE;
		} else {
			d->kind = J_OTHER;
		}
	}
}

static void reset_out(struct tl_event *ev, char *err, size_t errlen)
{
	memset(ev, 0, sizeof *ev);
	if (err && errlen)
		err[0] = '\0';
}

static int check_len(size_t len, char *err, size_t errlen)
{
	if (len > TL_MAX_EVENT_JSON) {
		tl_seterr(err, errlen, "event too long (%zu bytes, max %d)", len, TL_MAX_EVENT_JSON);
		return -TL_ETOOBIG;
	}
	return TL_OK;
}

int tl_event_from_json_jansson(const char *json, size_t len, struct tl_arena *a, struct tl_event *ev,
                               char *err, size_t errlen)
{
	reset_out(ev, err, errlen);
	int rc = check_len(len, err, errlen);
	if (rc)
		return rc;
	json_error_t je;
	json_t *root =
	    json_loadb(json ? json : "", json ? len : 0, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
	if (!root) {
		tl_seterr(err, errlen, "bad JSON: %s at column %d", je.text,
		          je.column > 0 ? je.column : (int)je.position);
		return -TL_EINVAL;
	}
	if (!json_is_object(root)) {
		tl_seterr(err, errlen, "event must be a JSON object");
		rc = -TL_EINVAL;
	} else {
		struct jobj o;
		from_jansson(root, &o);
		rc = decode(&o, a, ev, err, errlen);
	}
	json_decref(root);
	if (rc)
		memset(ev, 0, sizeof *ev);
	return rc;
}

/* ---- syntax, fast path -------------------------------------------------- */

static inline bool is_ws(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static inline const char *skip_ws(const char *p, const char *end)
{
	while (p < end && is_ws((unsigned char)*p))
		p++;
	return p;
}

/* The known key of n bytes at k, or -1. */
static int key_lookup(const char *k, size_t n)
{
	switch (n) {
	case 2:
		return k[0] == 'i' ? (k[1] == 'd'   ? K_ID
		                      : k[1] == 'p' ? K_IP
		                                    : -1)
		                   : (k[0] == 't' && k[1] == 's' ? K_TS : -1);
	case 3:
		return !memcmp(k, "url", 3) ? K_URL : !memcmp(k, "bot", 3) ? K_BOT : -1;
	case 4:
		return !memcmp(k, "type", 4) ? K_TYPE : !memcmp(k, "head", 4) ? K_HEAD : -1;
	case 5:
		return !memcmp(k, "token", 5) ? K_TOKEN : -1;
	case 6:
		return !memcmp(k, "tenant", 6) ? K_TENANT : !memcmp(k, "hashed", 6) ? K_HASHED : -1;
	case 7:
		return !memcmp(k, "variant", 7)   ? K_VARIANT
		       : !memcmp(k, "message", 7) ? K_MESSAGE
		       : !memcmp(k, "arrival", 7) ? K_ARRIVAL
		       : !memcmp(k, "machine", 7) ? K_MACHINE
		                                  : -1;
	case 8:
		return !memcmp(k, "campaign", 8) ? K_CAMPAIGN : !memcmp(k, "provider", 8) ? K_PROVIDER : -1;
	case 9:
		return !memcmp(k, "recipient", 9) ? K_RECIPIENT : -1;
	case 10:
		return !memcmp(k, "user_agent", 10) ? K_UA : -1;
	case 12:
		return !memcmp(k, "bounce_class", 12) ? K_BOUNCE : -1;
	default:
		return -1;
	}
}

/* The end of the string whose first byte is at p (just after its opening
 * quote): the closing quote, or NULL when the string has an escape, a
 * control byte or invalid UTF-8, or is not closed (jansson decides then). */
static const char *string_end(const char *p, const char *end)
{
	const unsigned char *u = (const unsigned char *)p, *e = (const unsigned char *)end;
	for (;;) {
		/* eight plain ASCII bytes at a time: none < 0x20, >= 0x80, '"' or '\\' */
		while (e - u >= 8) {
			uint64_t w;
			memcpy(&w, u, 8);
			uint64_t hi = w & 0x8080808080808080ULL;
			uint64_t ctl = (w - 0x2020202020202020ULL) & ~w & 0x8080808080808080ULL;
			uint64_t q = w ^ 0x2222222222222222ULL, b = w ^ 0x5c5c5c5c5c5c5c5cULL;
			uint64_t zq = (q - 0x0101010101010101ULL) & ~q & 0x8080808080808080ULL;
			uint64_t zb = (b - 0x0101010101010101ULL) & ~b & 0x8080808080808080ULL;
			if (hi | ctl | zq | zb)
				break;
			u += 8;
		}
		if (u >= e)
			return NULL;
		unsigned c = *u;
		if (c == '"')
			return (const char *)u;
		if (c == '\\' || c < 0x20)
			return NULL;
		if (c < 0x80) {
			u++;
			continue;
		}
		size_t n = tl_utf8_seq(u, (size_t)(e - u));
		if (!n)
			return NULL;
		u += n;
	}
}

/* Fills o from a flat JSON object whose strings need no decoding. Returns 0,
 * or 1 when the line is anything else (then nothing is decided). */
static int scan_fast(const char *s, size_t n, struct jobj *o)
{
	const char *p = s, *end = s + n;
	struct tl_str unknown[UNKNOWN_MAX];
	int n_unknown = 0;
	memset(o, 0, sizeof *o);
	p = skip_ws(p, end);
	if (p == end || *p != '{')
		return 1;
	p = skip_ws(p + 1, end);
	if (p < end && *p == '}') {
		p++;
		goto done;
	}
	for (;;) {
		if (p == end || *p != '"')
			return 1;
		const char *k = ++p;
		const char *ke = string_end(k, end);
		if (!ke)
			return 1;
		size_t kn = (size_t)(ke - k);
		int key = key_lookup(k, kn);
		struct jval *d = NULL;
		if (key >= 0) {
			d = &o->v[key];
			if (d->kind != J_ABSENT)
				return 1; /* duplicate key */
		} else {
			for (int i = 0; i < n_unknown; i++)
				if (unknown[i].n == kn && !memcmp(unknown[i].p, k, kn))
					return 1; /* duplicate key */
			if (n_unknown == UNKNOWN_MAX)
				return 1;
			unknown[n_unknown++] = tl_str_of(k, kn);
		}
		p = skip_ws(ke + 1, end);
		if (p == end || *p != ':')
			return 1;
		p = skip_ws(p + 1, end);
		if (p == end)
			return 1;
		struct jval v = {0};
		switch (*p) {
		case '"': {
			const char *ve = string_end(p + 1, end);
			if (!ve)
				return 1;
			v.kind = J_STRING;
			v.s = p + 1;
			v.n = (uint32_t)(ve - p - 1);
			p = ve + 1;
			break;
		}
		case 't':
			if (end - p < 4 || memcmp(p, "true", 4))
				return 1;
			v.kind = J_TRUE;
			p += 4;
			break;
		case 'f':
			if (end - p < 5 || memcmp(p, "false", 5))
				return 1;
			v.kind = J_FALSE;
			p += 5;
			break;
		case 'n':
			if (end - p < 4 || memcmp(p, "null", 4))
				return 1;
			v.kind = J_NULL;
			p += 4;
			break;
		default:
			return 1; /* numbers, objects, arrays, junk: jansson */
		}
		if (d)
			*d = v;
		p = skip_ws(p, end); /* anything but ',' or '}' here ("truex") is jansson's to word */
		if (p == end)
			return 1;
		if (*p == '}') {
			p++;
			break;
		}
		if (*p != ',')
			return 1;
		p = skip_ws(p + 1, end);
	}
done:
	return skip_ws(p, end) == end ? 0 : 1;
}

int tl_event_from_json_fast(const char *json, size_t len, struct tl_arena *a, struct tl_event *ev, char *err,
                            size_t errlen)
{
	reset_out(ev, err, errlen);
	int rc = check_len(len, err, errlen);
	if (rc)
		return rc;
	struct jobj o;
	if (!json || scan_fast(json, len, &o))
		return TL_JSON_FALLBACK;
	rc = decode(&o, a, ev, err, errlen);
	if (rc)
		memset(ev, 0, sizeof *ev);
	return rc;
}

/* Parses one canonical JSON event (see event.h). Returns 0, -TL_EINVAL or
 * -TL_ETOOBIG with the reason in err, or -TL_ENOMEM. ev is zeroed first.
 * Any thread (a is the caller's). */
int tl_event_from_json(const char *json, size_t len, struct tl_arena *a, struct tl_event *ev, char *err,
                       size_t errlen)
{
	int rc = tl_event_from_json_fast(json, len, a, ev, err, errlen);
	if (rc != TL_JSON_FALLBACK)
		return rc;
	return tl_event_from_json_jansson(json, len, a, ev, err, errlen);
}

/* ---- writing ------------------------------------------------------------ */

/* Appends ,"key": (no comma before the first key). key is a literal: its
 * length is known, no strlen per key and event. */
static int put_key_n(struct tl_buf *out, bool *first, const char *key, size_t n)
{
	char tmp[32];
	size_t k = 0;
	if (!*first)
		tmp[k++] = ',';
	*first = false;
	tmp[k++] = '"';
	memcpy(tmp + k, key, n);
	k += n;
	tmp[k++] = '"';
	tmp[k++] = ':';
	return tl_buf_append(out, tmp, k);
}

#define KEY(lit) (lit), (sizeof(lit) - 1)

static int put_str(struct tl_buf *out, bool *first, const char *key, size_t kn, struct tl_str s)
{
	if (!s.n)
		return 0;
	int rc = put_key_n(out, first, key, kn);
	return rc ? rc : tl_buf_json_str(out, s.p, s.n);
}

static char *put2(char *p, unsigned v)
{
	p[0] = (char)('0' + v / 10);
	p[1] = (char)('0' + v % 10);
	return p + 2;
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" (with the quotes) for 0 <= ms <= TS_MAX: the
 * bytes tl_time_format_iso writes, without its snprintf, which was the
 * archiver's largest single cost. Returns the length (26). */
static size_t iso_quoted(int64_t ms, char out[32])
{
	int64_t secs = ms / 1000, days = secs / 86400, sod = secs % 86400;
	int64_t y;
	unsigned m, d;
	tl_civil_from_days(days, &y, &m, &d);
	char *p = out;
	*p++ = '"';
	p = put2(p, (unsigned)(y / 100));
	p = put2(p, (unsigned)(y % 100));
	*p++ = '-';
	p = put2(p, m);
	*p++ = '-';
	p = put2(p, d);
	*p++ = 'T';
	p = put2(p, (unsigned)(sod / 3600));
	*p++ = ':';
	p = put2(p, (unsigned)(sod / 60 % 60));
	*p++ = ':';
	p = put2(p, (unsigned)(sod % 60));
	*p++ = '.';
	unsigned msr = (unsigned)(ms % 1000);
	*p++ = (char)('0' + msr / 100);
	p = put2(p, msr % 100);
	*p++ = 'Z';
	*p++ = '"';
	return (size_t)(p - out);
}

static int put_time(struct tl_buf *out, bool *first, const char *key, size_t kn, int64_t ms)
{
	char t[32];
	size_t n = iso_quoted(ms, t);
	int rc = put_key_n(out, first, key, kn);
	return rc ? rc : tl_buf_append(out, t, n);
}

static int put_true(struct tl_buf *out, bool *first, const char *key, size_t kn, bool on)
{
	if (!on)
		return 0;
	int rc = put_key_n(out, first, key, kn);
	return rc ? rc : tl_buf_append(out, "true", 4);
}

/* RFC 3339 has four-digit years: 1970-01-01 up to 9999-12-31T23:59:59.999Z. */
static bool ts_ok(int64_t ms)
{
	return ms >= 0 && ms <= TS_MAX;
}

/* Appends ev as one canonical JSON object (see event.h). Returns 0,
 * -TL_EINVAL (unknown type or bounce class, or ts / arrival outside the
 * years 1970..9999), -TL_ETOOBIG or -TL_ENOMEM; out is unchanged on failure. sent_ms and src_offset are not
 * part of the JSON form. Any thread. */
int tl_event_to_json(const struct tl_event *ev, struct tl_buf *out)
{
	const char *type = tl_event_type_name((enum tl_event_type)ev->type);
	const char *bc = tl_bounce_class_name((enum tl_bounce_class)ev->bounce_class);
	if (!type || !bc || !ts_ok(ev->ts_ms) || (ev->arrival_ms && !ts_ok(ev->arrival_ms)))
		return -TL_EINVAL;
	size_t start = out->len;
	bool first = true;
	int rc = tl_buf_putc(out, '{');
	if (!rc)
		rc = put_str(out, &first, KEY("type"), tl_str_of(type, strlen(type)));
	if (!rc)
		rc = put_str(out, &first, KEY("tenant"), ev->tenant);
	if (!rc)
		rc = put_str(out, &first, KEY("campaign"), ev->campaign);
	if (!rc)
		rc = put_str(out, &first, KEY("variant"), ev->variant);
	if (!rc)
		rc = put_str(out, &first, KEY("recipient"), ev->recipient);
	if (!rc)
		rc = put_str(out, &first, KEY("message"), ev->message);
	if (!rc)
		rc = put_str(out, &first, KEY("id"), ev->id);
	if (!rc)
		rc = put_time(out, &first, KEY("ts"), ev->ts_ms);
	if (!rc && ev->arrival_ms > 0)
		rc = put_time(out, &first, KEY("arrival"), ev->arrival_ms);
	if (!rc)
		rc = put_str(out, &first, KEY("url"), ev->url);
	if (!rc)
		rc = put_str(out, &first, KEY("user_agent"), ev->user_agent);
	if (!rc)
		rc = put_str(out, &first, KEY("ip"), ev->ip);
	if (!rc)
		rc = put_str(out, &first, KEY("bounce_class"), tl_str_of(bc, strlen(bc)));
	if (!rc)
		rc = put_str(out, &first, KEY("provider"), ev->provider);
	if (!rc)
		rc = put_true(out, &first, KEY("machine"),
		              ev->flags & (TL_EVF_MACHINE | TL_EVF_PROVIDER_MACHINE));
	if (!rc)
		rc = put_true(out, &first, KEY("bot"), ev->flags & TL_EVF_BOT);
	if (!rc)
		rc = put_true(out, &first, KEY("head"), ev->flags & TL_EVF_HEAD);
	if (!rc)
		rc = put_true(out, &first, KEY("hashed"), ev->flags & TL_EVF_HASHED);
	if (!rc)
		rc = put_str(out, &first, KEY("token"), ev->token);
	if (!rc)
		rc = tl_buf_putc(out, '}');
	if (rc) {
		out->len = start;
		if (out->data)
			out->data[start] = '\0';
	}
	return rc;
}
