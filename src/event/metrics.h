/* metrics.h — the counted metrics and the rates derived from them (DESIGN.md §4).
 *
 * Pure functions; any thread. */
#ifndef TL_METRICS_H
#define TL_METRICS_H

#include "event/event.h"

#include <stdbool.h>
#include <stdint.h>

/* Column order of every counts array and of the store's counter columns. */
enum tl_metric {
	TL_M_SENT,
	TL_M_DELIVERED,
	TL_M_DEFERRED,
	TL_M_BOUNCED,
	TL_M_HARD_BOUNCED,
	TL_M_SOFT_BOUNCED,
	TL_M_DROPPED,
	TL_M_COMPLAINTS,
	TL_M_UNSUBSCRIBES,
	TL_M_OPENS,
	TL_M_MACHINE_OPENS,
	TL_M_UNIQUE_OPENS,
	TL_M_UNIQUE_HUMAN_OPENS,
	TL_M_CLICKS,
	TL_M_BOT_CLICKS,
	TL_M_UNIQUE_CLICKS,
	TL_M_UNIQUE_HUMAN_CLICKS,
	TL_M__COUNT
};

/* Kinds of exact-unique sets: distinct recipients per (tenant, campaign, kind). */
enum tl_unique_kind {
	TL_U_OPEN,        /* any open            -> unique_opens */
	TL_U_HUMAN_OPEN,  /* a non-machine open  -> unique_human_opens */
	TL_U_CLICK,       /* any click           -> unique_clicks */
	TL_U_HUMAN_CLICK, /* a non-bot click     -> unique_human_clicks */
	TL_U__COUNT
};

enum tl_rate {
	TL_R_DELIVERY,      /* delivered / sent */
	TL_R_BOUNCE,        /* bounced / sent */
	TL_R_OPEN,          /* unique_opens / delivered */
	TL_R_HUMAN_OPEN,    /* unique_human_opens / delivered */
	TL_R_CLICK,         /* unique_clicks / delivered */
	TL_R_CLICK_TO_OPEN, /* unique_clicks / unique_opens */
	TL_R_COMPLAINT,     /* complaints / delivered */
	TL_R_UNSUBSCRIBE,   /* unsubscribes / delivered */
	TL_R__COUNT
};

/* "sent", "unique_human_opens", …; NULL when out of range. */
const char *tl_metric_name(enum tl_metric m);
/* Returns the metric, or -1 when the name is unknown. */
int tl_metric_parse(const char *s, size_t n);
/* "delivery_rate", …; the JSON key of each rate. */
const char *tl_rate_name(enum tl_rate r);
/* The metric a unique kind increments. */
enum tl_metric tl_unique_metric(enum tl_unique_kind k);

/* Adds to delta[] the non-unique counts of one (deduplicated) event:
 * sent → sent; bounced → bounced (+ hard_bounced / soft_bounced by class;
 * block counts as bounced only); open → opens (+ machine_opens when
 * TL_EVF_MACHINE|TL_EVF_PROVIDER_MACHINE); click → clicks (+ bot_clicks when
 * TL_EVF_BOT); and so on. */
void tl_metrics_count_event(const struct tl_event *ev, int64_t delta[TL_M__COUNT]);

/* Returns a bitmask of the unique kinds (1u << tl_unique_kind) this event
 * is a candidate for (opens: OPEN, and HUMAN_OPEN if not machine; clicks:
 * CLICK, and HUMAN_CLICK if not bot). */
unsigned tl_metrics_unique_kinds(const struct tl_event *ev);

/* Computes every rate from counts; valid[r] is false when the denominator is 0
 * (the rate is JSON null). */
void tl_rates_compute(const int64_t counts[TL_M__COUNT], double rate[TL_R__COUNT], bool valid[TL_R__COUNT]);

/* Appends {"sent":1,…} and {"delivery_rate":0.98,…|null} objects. */
int tl_metrics_counts_json(const int64_t counts[TL_M__COUNT], struct tl_buf *out) TL_MUST_CHECK;
int tl_metrics_rates_json(const int64_t counts[TL_M__COUNT], struct tl_buf *out) TL_MUST_CHECK;

#endif
