/* metrics.c — counted metrics, unique kinds and rates (DESIGN.md §4). */
#include "event/metrics.h"

#include <inttypes.h>
#include <string.h>

static const char *const metric_names[TL_M__COUNT] = {
    [TL_M_SENT] = "sent",
    [TL_M_DELIVERED] = "delivered",
    [TL_M_DEFERRED] = "deferred",
    [TL_M_BOUNCED] = "bounced",
    [TL_M_HARD_BOUNCED] = "hard_bounced",
    [TL_M_SOFT_BOUNCED] = "soft_bounced",
    [TL_M_DROPPED] = "dropped",
    [TL_M_COMPLAINTS] = "complaints",
    [TL_M_UNSUBSCRIBES] = "unsubscribes",
    [TL_M_OPENS] = "opens",
    [TL_M_MACHINE_OPENS] = "machine_opens",
    [TL_M_UNIQUE_OPENS] = "unique_opens",
    [TL_M_UNIQUE_HUMAN_OPENS] = "unique_human_opens",
    [TL_M_CLICKS] = "clicks",
    [TL_M_BOT_CLICKS] = "bot_clicks",
    [TL_M_UNIQUE_CLICKS] = "unique_clicks",
    [TL_M_UNIQUE_HUMAN_CLICKS] = "unique_human_clicks",
};

static const char *const rate_names[TL_R__COUNT] = {
    [TL_R_DELIVERY] = "delivery_rate",   [TL_R_BOUNCE] = "bounce_rate",
    [TL_R_OPEN] = "open_rate",           [TL_R_HUMAN_OPEN] = "human_open_rate",
    [TL_R_CLICK] = "click_rate",         [TL_R_CLICK_TO_OPEN] = "click_to_open_rate",
    [TL_R_COMPLAINT] = "complaint_rate", [TL_R_UNSUBSCRIBE] = "unsubscribe_rate",
};

/* numerator / denominator of each rate */
static const struct {
	enum tl_metric num, den;
} rate_def[TL_R__COUNT] = {
    [TL_R_DELIVERY] = {TL_M_DELIVERED, TL_M_SENT},
    [TL_R_BOUNCE] = {TL_M_BOUNCED, TL_M_SENT},
    [TL_R_OPEN] = {TL_M_UNIQUE_OPENS, TL_M_DELIVERED},
    [TL_R_HUMAN_OPEN] = {TL_M_UNIQUE_HUMAN_OPENS, TL_M_DELIVERED},
    [TL_R_CLICK] = {TL_M_UNIQUE_CLICKS, TL_M_DELIVERED},
    [TL_R_CLICK_TO_OPEN] = {TL_M_UNIQUE_CLICKS, TL_M_UNIQUE_OPENS},
    [TL_R_COMPLAINT] = {TL_M_COMPLAINTS, TL_M_DELIVERED},
    [TL_R_UNSUBSCRIBE] = {TL_M_UNSUBSCRIBES, TL_M_DELIVERED},
};

/* Returns the JSON key of metric m, NULL when out of range. Any thread. */
const char *tl_metric_name(enum tl_metric m)
{
	if ((unsigned)m >= TL_M__COUNT)
		return NULL;
	return metric_names[m];
}

/* Parses a metric name of n bytes; returns the metric or -1. Any thread. */
int tl_metric_parse(const char *s, size_t n)
{
	if (!s)
		return -1;
	for (int m = 0; m < TL_M__COUNT; m++) {
		if (strlen(metric_names[m]) == n && memcmp(metric_names[m], s, n) == 0)
			return m;
	}
	return -1;
}

/* Returns the JSON key of rate r, NULL when out of range. Any thread. */
const char *tl_rate_name(enum tl_rate r)
{
	if ((unsigned)r >= TL_R__COUNT)
		return NULL;
	return rate_names[r];
}

/* The metric that unique kind k increments. Any thread. */
enum tl_metric tl_unique_metric(enum tl_unique_kind k)
{
	switch (k) {
	case TL_U_OPEN:
		return TL_M_UNIQUE_OPENS;
	case TL_U_HUMAN_OPEN:
		return TL_M_UNIQUE_HUMAN_OPENS;
	case TL_U_CLICK:
		return TL_M_UNIQUE_CLICKS;
	case TL_U_HUMAN_CLICK:
	default:
		return TL_M_UNIQUE_HUMAN_CLICKS;
	}
}

static bool is_machine(const struct tl_event *ev)
{
	return (ev->flags & (TL_EVF_MACHINE | TL_EVF_PROVIDER_MACHINE)) != 0;
}

/* Adds the non-unique counts of one deduplicated event to delta (see
 * metrics.h). Unknown types add nothing. Any thread. */
void tl_metrics_count_event(const struct tl_event *ev, int64_t delta[TL_M__COUNT])
{
	switch ((enum tl_event_type)ev->type) {
	case TL_EV_SENT:
		delta[TL_M_SENT]++;
		break;
	case TL_EV_DELIVERED:
		delta[TL_M_DELIVERED]++;
		break;
	case TL_EV_DEFERRED:
		delta[TL_M_DEFERRED]++;
		break;
	case TL_EV_BOUNCED:
		delta[TL_M_BOUNCED]++;
		if (ev->bounce_class == TL_BOUNCE_HARD)
			delta[TL_M_HARD_BOUNCED]++;
		else if (ev->bounce_class == TL_BOUNCE_SOFT)
			delta[TL_M_SOFT_BOUNCED]++;
		break;
	case TL_EV_DROPPED:
		delta[TL_M_DROPPED]++;
		break;
	case TL_EV_COMPLAINT:
		delta[TL_M_COMPLAINTS]++;
		break;
	case TL_EV_UNSUBSCRIBE:
		delta[TL_M_UNSUBSCRIBES]++;
		break;
	case TL_EV_OPEN:
		delta[TL_M_OPENS]++;
		if (is_machine(ev))
			delta[TL_M_MACHINE_OPENS]++;
		break;
	case TL_EV_CLICK:
		delta[TL_M_CLICKS]++;
		if (ev->flags & TL_EVF_BOT)
			delta[TL_M_BOT_CLICKS]++;
		break;
	case TL_EV_NONE:
	case TL_EV__COUNT:
	default:
		break;
	}
}

/* Bitmask (1u << tl_unique_kind) of the unique sets ev belongs to. Any thread. */
unsigned tl_metrics_unique_kinds(const struct tl_event *ev)
{
	if (ev->type == TL_EV_OPEN)
		return (1u << TL_U_OPEN) | (is_machine(ev) ? 0 : 1u << TL_U_HUMAN_OPEN);
	if (ev->type == TL_EV_CLICK)
		return (1u << TL_U_CLICK) | (ev->flags & TL_EVF_BOT ? 0 : 1u << TL_U_HUMAN_CLICK);
	return 0;
}

/* Computes every rate; valid[r] is false (rate[r] = 0) when its denominator
 * is 0 or negative. Any thread. */
void tl_rates_compute(const int64_t counts[TL_M__COUNT], double rate[TL_R__COUNT], bool valid[TL_R__COUNT])
{
	for (int r = 0; r < TL_R__COUNT; r++) {
		int64_t den = counts[rate_def[r].den];
		valid[r] = den > 0;
		rate[r] = den > 0 ? (double)counts[rate_def[r].num] / (double)den : 0.0;
	}
}

/* Appends {"sent":N,…} with all TL_M__COUNT keys in enum order. 0 or a
 * tl_buf error; out is unchanged on failure. Any thread. */
int tl_metrics_counts_json(const int64_t counts[TL_M__COUNT], struct tl_buf *out)
{
	size_t start = out->len;
	int rc = tl_buf_putc(out, '{');
	for (int m = 0; !rc && m < TL_M__COUNT; m++)
		rc = tl_buf_printf(out, "%s\"%s\":%" PRId64, m ? "," : "", metric_names[m], counts[m]);
	if (!rc)
		rc = tl_buf_putc(out, '}');
	if (rc) {
		out->len = start;
		if (out->data)
			out->data[start] = '\0';
	}
	return rc;
}

/* Appends {"delivery_rate":0.98,…} with all TL_R__COUNT keys in enum order;
 * a rate whose denominator is 0 is null, others use up to 6 significant
 * digits. 0 or a tl_buf error; out is unchanged on failure. Any thread. */
int tl_metrics_rates_json(const int64_t counts[TL_M__COUNT], struct tl_buf *out)
{
	double rate[TL_R__COUNT];
	bool valid[TL_R__COUNT];
	tl_rates_compute(counts, rate, valid);
	size_t start = out->len;
	int rc = tl_buf_putc(out, '{');
	for (int r = 0; !rc && r < TL_R__COUNT; r++) {
		if (valid[r])
			rc = tl_buf_printf(out, "%s\"%s\":%.6g", r ? "," : "", rate_names[r], rate[r]);
		else
			rc = tl_buf_printf(out, "%s\"%s\":null", r ? "," : "", rate_names[r]);
	}
	if (!rc)
		rc = tl_buf_putc(out, '}');
	if (rc) {
		out->len = start;
		if (out->data)
			out->data[start] = '\0';
	}
	return rc;
}
