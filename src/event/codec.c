/* codec.c — the compact binary encoding of a tl_event, used between roles.
 *
 * Layout (version 1), all varints LEB128 (see wire.h):
 *
 *   u8      version        TL_CODEC_VERSION
 *   u8      type           enum tl_event_type, 1..9
 *   u8      bounce_class   enum tl_bounce_class, 0..3
 *   varint  flags          TL_EVF_* bits; unknown bits are rejected
 *   varint  ts_ms          zigzag
 *   varint  arrival_ms     zigzag
 *   varint  sent_ms        zigzag
 *   varint  src_offset
 *   11 ×    varint length + bytes, in this order: tenant, campaign, variant,
 *           recipient, message, id, url, user_agent, ip, provider, token
 *
 * The record must end exactly after the last string: trailing bytes are
 * corruption, as is any length over the field's TL_MAX_* limit. Decoding is
 * zero-copy (strings are views into the input) and never reads outside
 * [buf, buf + len). Neither direction allocates, apart from the caller's
 * output buffer growing (once, to the exact size) in encode. */
#include "event/event.h"

#include "event/wire.h"

#include <string.h>

#define NSTR 11
#define FIXED_MAX (3 + 5 * TL_VARINT_MAX)
#define FLAGS_ALL 0xffu /* TL_EVF_MACHINE … TL_EVF_DEAD */
_Static_assert(FLAGS_ALL == (TL_EVF_MACHINE | TL_EVF_BOT | TL_EVF_HEAD | TL_EVF_HIT | TL_EVF_HASHED |
                             TL_EVF_ENRICHED | TL_EVF_PROVIDER_MACHINE | TL_EVF_DEAD),
               "a new TL_EVF_* flag must be added to the codec");

static const uint32_t str_max[NSTR] = {
    TL_MAX_TENANT, TL_MAX_CAMPAIGN,   TL_MAX_VARIANT, TL_MAX_RECIPIENT, TL_MAX_MESSAGE, TL_MAX_ID,
    TL_MAX_URL,    TL_MAX_USER_AGENT, TL_MAX_IP,      TL_MAX_PROVIDER,  TL_MAX_TOKEN,
};

static void strs_of(const struct tl_event *ev, const struct tl_str *out[NSTR])
{
	out[0] = &ev->tenant;
	out[1] = &ev->campaign;
	out[2] = &ev->variant;
	out[3] = &ev->recipient;
	out[4] = &ev->message;
	out[5] = &ev->id;
	out[6] = &ev->url;
	out[7] = &ev->user_agent;
	out[8] = &ev->ip;
	out[9] = &ev->provider;
	out[10] = &ev->token;
}

/* Appends the binary encoding of ev to out: 0, -TL_EINVAL (unknown type,
 * bounce class or flag), -TL_ETOOBIG (a field over its limit, or out is
 * capped) or -TL_ENOMEM. out is unchanged on failure. Any thread. */
int tl_event_encode(const struct tl_event *ev, struct tl_buf *out)
{
	if (ev->type == TL_EV_NONE || ev->type >= TL_EV__COUNT || ev->bounce_class > TL_BOUNCE_BLOCK ||
	    (ev->flags & ~FLAGS_ALL))
		return -TL_EINVAL;
	const struct tl_str *s[NSTR];
	strs_of(ev, s);
	size_t total = FIXED_MAX;
	for (int i = 0; i < NSTR; i++) {
		if (s[i]->n > str_max[i])
			return -TL_ETOOBIG;
		if (s[i]->n && !s[i]->p)
			return -TL_EINVAL;
		total += tl_varint_len(s[i]->n) + s[i]->n;
	}
	int rc = tl_buf_reserve(out, total);
	if (rc)
		return rc;
	unsigned char *start = (unsigned char *)out->data + out->len;
	unsigned char *p = start;
	*p++ = TL_CODEC_VERSION;
	*p++ = ev->type;
	*p++ = ev->bounce_class;
	p += tl_varint_put(p, ev->flags);
	p += tl_varint_put(p, tl_zigzag(ev->ts_ms));
	p += tl_varint_put(p, tl_zigzag(ev->arrival_ms));
	p += tl_varint_put(p, tl_zigzag(ev->sent_ms));
	p += tl_varint_put(p, ev->src_offset);
	for (int i = 0; i < NSTR; i++) {
		p += tl_varint_put(p, s[i]->n);
		if (s[i]->n) {
			memcpy(p, s[i]->p, s[i]->n);
			p += s[i]->n;
		}
	}
	out->len += (size_t)(p - start);
	out->data[out->len] = '\0';
	return TL_OK;
}

/* Fills ev with views into buf (len bytes): 0, -TL_EUNSUPPORTED for another
 * codec version, -TL_ECORRUPT for anything truncated or malformed. ev is
 * fully overwritten on success and left in an unspecified state on failure.
 * Any thread. */
int tl_event_decode(const void *buf, size_t len, struct tl_event *ev)
{
	const unsigned char *p = buf;
	const unsigned char *end = p + len;
	if (!buf || len < 3)
		return len && buf && p[0] != TL_CODEC_VERSION ? -TL_EUNSUPPORTED : -TL_ECORRUPT;
	if (p[0] != TL_CODEC_VERSION)
		return -TL_EUNSUPPORTED;
	memset(ev, 0, sizeof *ev);
	ev->type = p[1];
	ev->bounce_class = p[2];
	if (ev->type == TL_EV_NONE || ev->type >= TL_EV__COUNT || ev->bounce_class > TL_BOUNCE_BLOCK)
		return -TL_ECORRUPT;
	p += 3;
	uint64_t v;
	if (tl_varint_get(&p, end, &v) || (v & ~(uint64_t)FLAGS_ALL))
		return -TL_ECORRUPT;
	ev->flags = (uint16_t)v;
	if (tl_varint_get(&p, end, &v))
		return -TL_ECORRUPT;
	ev->ts_ms = tl_unzigzag(v);
	if (tl_varint_get(&p, end, &v))
		return -TL_ECORRUPT;
	ev->arrival_ms = tl_unzigzag(v);
	if (tl_varint_get(&p, end, &v))
		return -TL_ECORRUPT;
	ev->sent_ms = tl_unzigzag(v);
	if (tl_varint_get(&p, end, &ev->src_offset))
		return -TL_ECORRUPT;
	struct tl_str *s[NSTR] = {&ev->tenant,  &ev->campaign, &ev->variant, &ev->recipient,
	                          &ev->message, &ev->id,       &ev->url,     &ev->user_agent,
	                          &ev->ip,      &ev->provider, &ev->token};
	for (int i = 0; i < NSTR; i++) {
		if (tl_varint_get(&p, end, &v) || v > str_max[i] || v > (uint64_t)(end - p))
			return -TL_ECORRUPT;
		/* an empty field still points at valid memory, never NULL */
		s[i]->p = (const char *)p;
		s[i]->n = (uint32_t)v;
		p += v;
	}
	if (p != end)
		return -TL_ECORRUPT;
	return TL_OK;
}
