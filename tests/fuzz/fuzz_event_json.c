/* fuzz_event_json.c — tl_event_from_json on arbitrary bytes.
 *
 * Properties checked beyond "no crash, no leak": an accepted event converts
 * back with tl_event_to_json, and that JSON parses to the same event; the
 * event also survives the binary codec unchanged. */
#include "event/classify.h"
#include "event/metrics.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int str_eq(struct tl_str a, struct tl_str b)
{
	return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

static int event_eq(const struct tl_event *a, const struct tl_event *b)
{
	return a->type == b->type && a->bounce_class == b->bounce_class && a->flags == b->flags &&
	       a->ts_ms == b->ts_ms && a->arrival_ms == b->arrival_ms && a->sent_ms == b->sent_ms &&
	       a->src_offset == b->src_offset && str_eq(a->tenant, b->tenant) &&
	       str_eq(a->campaign, b->campaign) && str_eq(a->variant, b->variant) &&
	       str_eq(a->recipient, b->recipient) && str_eq(a->message, b->message) && str_eq(a->id, b->id) &&
	       str_eq(a->url, b->url) && str_eq(a->user_agent, b->user_agent) && str_eq(a->ip, b->ip) &&
	       str_eq(a->provider, b->provider) && str_eq(a->token, b->token);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tl_arena a;
	tl_arena_init(&a, 4096, 1 << 20);
	struct tl_event ev;
	char err[256];
	int rc = tl_event_from_json((const char *)data, size, &a, &ev, err, sizeof err);
	if (rc == 0) {
		struct tl_buf b;
		tl_buf_init(&b, 0);
		if (tl_event_to_json(&ev, &b) != 0)
			abort();
		/* canonical ts/arrival may be longer than what came in */
		if (b.len <= TL_MAX_EVENT_JSON) {
			struct tl_event back;
			if (tl_event_from_json(b.data, b.len, &a, &back, err, sizeof err) != 0)
				abort();
			if (!event_eq(&ev, &back))
				abort();
		}
		tl_buf_reset(&b);
		if (tl_event_encode(&ev, &b) != 0)
			abort();
		struct tl_event dec;
		if (tl_event_decode(b.data, b.len, &dec) != 0 || !event_eq(&ev, &dec))
			abort();
		tl_buf_free(&b);

		/* a parsed event satisfies every invariant once the caller sets the tenant */
		if (!ev.tenant.n)
			ev.tenant = TL_STR("t");
		if (tl_event_validate(&ev, err, sizeof err) != 0)
			abort();
		struct tl_classify_opts o;
		tl_classify_defaults(&o);
		(void)tl_classify(&o, &ev);
		int64_t delta[TL_M__COUNT] = {0};
		tl_metrics_count_event(&ev, delta);
		(void)tl_metrics_unique_kinds(&ev);
	} else if (err[0] == '\0') {
		abort(); /* every refusal says why */
	}
	tl_arena_free(&a);
	return 0;
}
