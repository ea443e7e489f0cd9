/* event.c — names of event types and bounce classes, and the invariants every
 * accepted event satisfies (DESIGN.md §4). */
#include "event/event.h"

#include "event/wire.h"

#include <string.h>

static const char *const type_names[TL_EV__COUNT] = {
    [TL_EV_NONE] = NULL,
    [TL_EV_SENT] = "sent",
    [TL_EV_DELIVERED] = "delivered",
    [TL_EV_DEFERRED] = "deferred",
    [TL_EV_BOUNCED] = "bounced",
    [TL_EV_DROPPED] = "dropped",
    [TL_EV_COMPLAINT] = "complaint",
    [TL_EV_UNSUBSCRIBE] = "unsubscribe",
    [TL_EV_OPEN] = "open",
    [TL_EV_CLICK] = "click",
};

static const char *const bounce_names[] = {
    [TL_BOUNCE_NONE] = "",
    [TL_BOUNCE_HARD] = "hard",
    [TL_BOUNCE_SOFT] = "soft",
    [TL_BOUNCE_BLOCK] = "block",
};

#define TL_EVF__ALL                                                                                          \
	(TL_EVF_MACHINE | TL_EVF_BOT | TL_EVF_HEAD | TL_EVF_HIT | TL_EVF_HASHED | TL_EVF_ENRICHED |          \
	 TL_EVF_PROVIDER_MACHINE)

/* Returns the JSON name of t ("open"), or NULL for TL_EV_NONE / out of range. */
const char *tl_event_type_name(enum tl_event_type t)
{
	if ((unsigned)t >= TL_EV__COUNT)
		return NULL;
	return type_names[t];
}

/* Parses a type name of n bytes (exact, case-sensitive); TL_EV_NONE when unknown. */
enum tl_event_type tl_event_type_parse(const char *s, size_t n)
{
	if (!s)
		return TL_EV_NONE;
	for (int t = 1; t < TL_EV__COUNT; t++) {
		const char *name = type_names[t];
		if (strlen(name) == n && memcmp(name, s, n) == 0)
			return (enum tl_event_type)t;
	}
	return TL_EV_NONE;
}

/* Returns "hard" / "soft" / "block", "" for TL_BOUNCE_NONE, NULL when out of range. */
const char *tl_bounce_class_name(enum tl_bounce_class c)
{
	if ((unsigned)c > TL_BOUNCE_BLOCK)
		return NULL;
	return bounce_names[c];
}

/* Parses "hard" / "soft" / "block"; returns the class or -1 when unknown. */
int tl_bounce_class_parse(const char *s, size_t n)
{
	if (!s)
		return -1;
	for (int c = TL_BOUNCE_HARD; c <= TL_BOUNCE_BLOCK; c++) {
		const char *name = bounce_names[c];
		if (strlen(name) == n && memcmp(name, s, n) == 0)
			return c;
	}
	return -1;
}

struct field_limit {
	const char *name;
	size_t off;
	uint32_t max;
};

#define FIELD(f, m)                                                                                          \
	{                                                                                                    \
#f, offsetof(struct tl_event, f), (m)                                                        \
	}
static const struct field_limit limits[] = {
    FIELD(tenant, TL_MAX_TENANT),   FIELD(campaign, TL_MAX_CAMPAIGN),
    FIELD(variant, TL_MAX_VARIANT), FIELD(recipient, TL_MAX_RECIPIENT),
    FIELD(message, TL_MAX_MESSAGE), FIELD(id, TL_MAX_ID),
    FIELD(url, TL_MAX_URL),         FIELD(user_agent, TL_MAX_USER_AGENT),
    FIELD(ip, TL_MAX_IP),           FIELD(provider, TL_MAX_PROVIDER),
    FIELD(token, TL_MAX_TOKEN),
};
#undef FIELD

static const struct tl_str *field_at(const struct tl_event *ev, size_t off)
{
	return (const struct tl_str *)(const void *)((const char *)ev + off);
}

/* Checks the invariants of an accepted event; 0 or -TL_EINVAL with the reason in err. */
int tl_event_validate(const struct tl_event *ev, char *err, size_t errlen)
{
	const char *tname = tl_event_type_name((enum tl_event_type)ev->type);
	if (!tname) {
		tl_seterr(err, errlen, "unknown type %u", (unsigned)ev->type);
		return -TL_EINVAL;
	}
	if (ev->flags & ~(unsigned)TL_EVF__ALL) {
		tl_seterr(err, errlen, "unknown flags 0x%x", (unsigned)ev->flags);
		return -TL_EINVAL;
	}
	for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
		const struct tl_str *s = field_at(ev, limits[i].off);
		if (s->n > limits[i].max) {
			tl_seterr(err, errlen, "%s too long", limits[i].name);
			return -TL_EINVAL;
		}
		if (s->n && !s->p) {
			tl_seterr(err, errlen, "%s has a length but no bytes", limits[i].name);
			return -TL_EINVAL;
		}
	}
	if (ev->flags & TL_EVF_HIT) {
		if (ev->type != TL_EV_OPEN && ev->type != TL_EV_CLICK) {
			tl_seterr(err, errlen, "a hit must be an open or a click");
			return -TL_EINVAL;
		}
		if (!ev->token.n) {
			tl_seterr(err, errlen, "missing token");
			return -TL_EINVAL;
		}
	} else {
		static const struct {
			const char *name;
			size_t off;
		} required[] = {
		    {"tenant", offsetof(struct tl_event, tenant)},
		    {"campaign", offsetof(struct tl_event, campaign)},
		    {"recipient", offsetof(struct tl_event, recipient)},
		    {"id", offsetof(struct tl_event, id)},
		};
		for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
			if (!field_at(ev, required[i].off)->n) {
				tl_seterr(err, errlen, "missing %s", required[i].name);
				return -TL_EINVAL;
			}
		}
	}
	if (ev->bounce_class > TL_BOUNCE_BLOCK) {
		tl_seterr(err, errlen, "unknown bounce_class");
		return -TL_EINVAL;
	}
	if (ev->bounce_class != TL_BOUNCE_NONE && ev->type != TL_EV_BOUNCED) {
		tl_seterr(err, errlen, "bounce_class only for bounced");
		return -TL_EINVAL;
	}
	if (ev->ts_ms <= 0) {
		tl_seterr(err, errlen, "missing ts");
		return -TL_EINVAL;
	}
	return TL_OK;
}
