/* json.c — the canonical JSON form of an event (DESIGN.md §4), used at the
 * edges: the POST /v1/events body (NDJSON) and the archive.
 *
 * Parsing uses jansson, rejects duplicate keys and gives a precise reason for
 * every refusal. Unknown keys are ignored so producers can add fields. Besides
 * the keys in DESIGN.md §4 it understands the flags that tl_event_to_json
 * writes, so the archive round-trips: "machine":true (a provider-classified
 * machine open, TL_EVF_PROVIDER_MACHINE), "bot":true, "head":true,
 * "hashed":true, "token" (a raw pixel/click hit, TL_EVF_HIT) and "arrival"
 * (collector receive time, RFC 3339). */
#include "event/event.h"

#include "core/clock.h"
#include "event/wire.h"

#include <jansson.h>
#include <string.h>

#define QUOTE_MAX 48             /* bytes of an offending value quoted in a reason */
#define TS_MAX 253402300799999LL /* 9999-12-31T23:59:59.999Z */

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

enum { F_ABSENT = 1 };

/* Reads optional string member key of obj. Returns 0 with *out set (copied
 * into the arena), F_ABSENT when absent or null, or a negative error with
 * the reason in err. */
static int get_str(json_t *obj, const char *key, uint32_t max, struct tl_arena *a, struct tl_str *out,
                   char *err, size_t errlen)
{
	json_t *v = json_object_get(obj, key);
	*out = TL_STR_NULL;
	if (!v || json_is_null(v))
		return F_ABSENT;
	if (!json_is_string(v)) {
		tl_seterr(err, errlen, "field %s must be a string", key);
		return -TL_EINVAL;
	}
	const char *s = json_string_value(v);
	size_t n = json_string_length(v);
	if (n > max) {
		tl_seterr(err, errlen, "%s too long", key);
		return -TL_ETOOBIG;
	}
	if (memchr(s, '\0', n)) {
		tl_seterr(err, errlen, "field %s contains a NUL byte", key);
		return -TL_EINVAL;
	}
	if (n == 0) {
		out->p = "";
		return 0;
	}
	char *copy = tl_arena_strdup(a, s, n);
	if (!copy) {
		tl_seterr(err, errlen, "out of memory");
		return -TL_ENOMEM;
	}
	*out = tl_str_of(copy, n);
	return 0;
}

/* Reads optional boolean member key of obj: 1 when true, 0 when false,
 * absent or null, a negative error on anything else. */
static int get_bool(json_t *obj, const char *key, char *err, size_t errlen)
{
	json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_boolean(v)) {
		tl_seterr(err, errlen, "field %s must be a boolean", key);
		return -TL_EINVAL;
	}
	return json_is_true(v) ? 1 : 0;
}

/* Parses a required (or optional) RFC 3339 member into *ms. */
static int get_time(json_t *obj, const char *key, bool required, int64_t *ms, char *err, size_t errlen)
{
	json_t *v = json_object_get(obj, key);
	*ms = 0;
	if (!v || json_is_null(v)) {
		if (!required)
			return 0;
		tl_seterr(err, errlen, "missing %s", key);
		return -TL_EINVAL;
	}
	if (!json_is_string(v)) {
		tl_seterr(err, errlen, "field %s must be a string", key);
		return -TL_EINVAL;
	}
	const char *s = json_string_value(v);
	size_t n = json_string_length(v);
	if (tl_time_parse_iso(s, n, ms) != 0 || *ms <= 0) {
		char q[QUOTE_MAX + 4];
		tl_seterr(err, errlen, "bad %s \"%s\"", key, quote(s, n, q));
		return -TL_EINVAL;
	}
	return 0;
}

static int parse_obj(json_t *obj, struct tl_arena *a, struct tl_event *ev, char *err, size_t errlen)
{
	char q[QUOTE_MAX + 4];
	int rc;

	/* type first: every later check depends on it */
	json_t *tv = json_object_get(obj, "type");
	if (!tv || json_is_null(tv)) {
		tl_seterr(err, errlen, "missing type");
		return -TL_EINVAL;
	}
	if (!json_is_string(tv)) {
		tl_seterr(err, errlen, "field type must be a string");
		return -TL_EINVAL;
	}
	const char *ts = json_string_value(tv);
	size_t tn = json_string_length(tv);
	ev->type = (uint8_t)tl_event_type_parse(ts, tn);
	if (ev->type == TL_EV_NONE) {
		tl_seterr(err, errlen, "unknown type \"%s\"", quote(ts, tn, q));
		return -TL_EINVAL;
	}

	static const struct {
		const char *key;
		size_t off;
		uint32_t max;
	} fields[] = {
	    {"tenant", offsetof(struct tl_event, tenant), TL_MAX_TENANT},
	    {"campaign", offsetof(struct tl_event, campaign), TL_MAX_CAMPAIGN},
	    {"variant", offsetof(struct tl_event, variant), TL_MAX_VARIANT},
	    {"recipient", offsetof(struct tl_event, recipient), TL_MAX_RECIPIENT},
	    {"message", offsetof(struct tl_event, message), TL_MAX_MESSAGE},
	    {"id", offsetof(struct tl_event, id), TL_MAX_ID},
	    {"url", offsetof(struct tl_event, url), TL_MAX_URL},
	    {"user_agent", offsetof(struct tl_event, user_agent), TL_MAX_USER_AGENT},
	    {"ip", offsetof(struct tl_event, ip), TL_MAX_IP},
	    {"provider", offsetof(struct tl_event, provider), TL_MAX_PROVIDER},
	    {"token", offsetof(struct tl_event, token), TL_MAX_TOKEN},
	};
	for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
		struct tl_str *dst = (struct tl_str *)(void *)((char *)ev + fields[i].off);
		rc = get_str(obj, fields[i].key, fields[i].max, a, dst, err, errlen);
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
	if ((rc = get_time(obj, "ts", true, &ev->ts_ms, err, errlen)) < 0)
		return rc;
	if ((rc = get_time(obj, "arrival", false, &ev->arrival_ms, err, errlen)) < 0)
		return rc;

	/* bounce_class: optional on bounced (NONE when absent), refused elsewhere */
	json_t *bv = json_object_get(obj, "bounce_class");
	if (bv && !json_is_null(bv)) {
		if (!json_is_string(bv)) {
			tl_seterr(err, errlen, "field bounce_class must be a string");
			return -TL_EINVAL;
		}
		const char *bs = json_string_value(bv);
		size_t bn = json_string_length(bv);
		if (bn > 0 && ev->type != TL_EV_BOUNCED) {
			tl_seterr(err, errlen, "bounce_class only for bounced");
			return -TL_EINVAL;
		}
		int c = bn ? tl_bounce_class_parse(bs, bn) : TL_BOUNCE_NONE;
		if (c < 0) {
			tl_seterr(err, errlen, "unknown bounce_class \"%s\"", quote(bs, bn, q));
			return -TL_EINVAL;
		}
		ev->bounce_class = (uint8_t)c;
	}

	static const struct {
		const char *key;
		uint16_t flag;
		uint8_t only; /* the type the flag is allowed on, 0 = open or click, 255 = any */
	} flags[] = {
	    {"machine", TL_EVF_PROVIDER_MACHINE, TL_EV_OPEN},
	    {"bot", TL_EVF_BOT, TL_EV_CLICK},
	    {"head", TL_EVF_HEAD, 0},
	    {"hashed", TL_EVF_HASHED, 255},
	};
	for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
		rc = get_bool(obj, flags[i].key, err, errlen);
		if (rc < 0)
			return rc;
		if (!rc)
			continue;
		if (flags[i].only == 0 && !open_or_click) {
			tl_seterr(err, errlen, "%s only for open or click", flags[i].key);
			return -TL_EINVAL;
		}
		if (flags[i].only != 0 && flags[i].only != 255 && flags[i].only != ev->type) {
			tl_seterr(err, errlen, "%s only for %s", flags[i].key,
			          tl_event_type_name((enum tl_event_type)flags[i].only));
			return -TL_EINVAL;
		}
		ev->flags |= flags[i].flag;
	}
	return TL_OK;
}

/* Parses one canonical JSON event (see event.h). Returns 0, -TL_EINVAL or
 * -TL_ETOOBIG with the reason in err, or -TL_ENOMEM. ev is zeroed first.
 * Any thread (a is the caller's). */
int tl_event_from_json(const char *json, size_t len, struct tl_arena *a, struct tl_event *ev, char *err,
                       size_t errlen)
{
	memset(ev, 0, sizeof *ev);
	if (err && errlen)
		err[0] = '\0';
	if (len > TL_MAX_EVENT_JSON) {
		tl_seterr(err, errlen, "event too long (%zu bytes, max %d)", len, TL_MAX_EVENT_JSON);
		return -TL_ETOOBIG;
	}
	json_error_t je;
	json_t *root =
	    json_loadb(json ? json : "", json ? len : 0, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
	if (!root) {
		tl_seterr(err, errlen, "bad JSON: %s at column %d", je.text,
		          je.column > 0 ? je.column : (int)je.position);
		return -TL_EINVAL;
	}
	int rc;
	if (!json_is_object(root)) {
		tl_seterr(err, errlen, "event must be a JSON object");
		rc = -TL_EINVAL;
	} else {
		rc = parse_obj(root, a, ev, err, errlen);
	}
	json_decref(root);
	if (rc)
		memset(ev, 0, sizeof *ev);
	return rc;
}

static int put_key(struct tl_buf *out, bool *first, const char *key)
{
	int rc = tl_buf_puts(out, *first ? "\"" : ",\"");
	*first = false;
	if (!rc)
		rc = tl_buf_puts(out, key);
	if (!rc)
		rc = tl_buf_puts(out, "\":");
	return rc;
}

static int put_str(struct tl_buf *out, bool *first, const char *key, struct tl_str s)
{
	if (!s.n)
		return 0;
	int rc = put_key(out, first, key);
	return rc ? rc : tl_buf_json_str(out, s.p, s.n);
}

static int put_time(struct tl_buf *out, bool *first, const char *key, int64_t ms)
{
	char t[TL_TIME_ISO_MAX];
	size_t n = tl_time_format_iso(ms, t, sizeof t);
	int rc = put_key(out, first, key);
	return rc ? rc : tl_buf_json_str(out, t, n);
}

static int put_true(struct tl_buf *out, bool *first, const char *key, bool on)
{
	if (!on)
		return 0;
	int rc = put_key(out, first, key);
	return rc ? rc : tl_buf_puts(out, "true");
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
		rc = put_str(out, &first, "type", tl_str_of(type, strlen(type)));
	if (!rc)
		rc = put_str(out, &first, "tenant", ev->tenant);
	if (!rc)
		rc = put_str(out, &first, "campaign", ev->campaign);
	if (!rc)
		rc = put_str(out, &first, "variant", ev->variant);
	if (!rc)
		rc = put_str(out, &first, "recipient", ev->recipient);
	if (!rc)
		rc = put_str(out, &first, "message", ev->message);
	if (!rc)
		rc = put_str(out, &first, "id", ev->id);
	if (!rc)
		rc = put_time(out, &first, "ts", ev->ts_ms);
	if (!rc && ev->arrival_ms > 0)
		rc = put_time(out, &first, "arrival", ev->arrival_ms);
	if (!rc)
		rc = put_str(out, &first, "url", ev->url);
	if (!rc)
		rc = put_str(out, &first, "user_agent", ev->user_agent);
	if (!rc)
		rc = put_str(out, &first, "ip", ev->ip);
	if (!rc)
		rc = put_str(out, &first, "bounce_class", tl_str_of(bc, strlen(bc)));
	if (!rc)
		rc = put_str(out, &first, "provider", ev->provider);
	if (!rc)
		rc = put_true(out, &first, "machine", ev->flags & (TL_EVF_MACHINE | TL_EVF_PROVIDER_MACHINE));
	if (!rc)
		rc = put_true(out, &first, "bot", ev->flags & TL_EVF_BOT);
	if (!rc)
		rc = put_true(out, &first, "head", ev->flags & TL_EVF_HEAD);
	if (!rc)
		rc = put_true(out, &first, "hashed", ev->flags & TL_EVF_HASHED);
	if (!rc)
		rc = put_str(out, &first, "token", ev->token);
	if (!rc)
		rc = tl_buf_putc(out, '}');
	if (rc) {
		out->len = start;
		if (out->data)
			out->data[start] = '\0';
	}
	return rc;
}
