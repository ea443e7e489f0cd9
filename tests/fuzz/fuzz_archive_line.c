/* fuzz_archive_line.c — the batch's archive line parser on arbitrary bytes
 * (src/batch/reader.h).
 *
 * Differential: whenever the fast path accepts a line, tl_event_from_json
 * must accept it too and give the same event; and tl_batch_parse_line must
 * always answer exactly as tl_event_from_json does. */
#include "batch/reader.h"

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
	const char *line = (const char *)data;
	struct tl_arena a;
	tl_arena_init(&a, 4096, 1 << 20);
	struct tl_event fast, full, any;
	char err[256];
	int f = tl_batch_parse_fast(line, size, &fast);
	int rc = tl_event_from_json(line, size, &a, &full, err, sizeof err);
	if (f == 0 && (rc != 0 || !event_eq(&fast, &full)))
		abort(); /* the fast path accepted what the full parser refuses, or read it differently */
	if (tl_batch_parse_line(line, size, &a, &any, err, sizeof err) != rc)
		abort();
	if (rc == 0 && !event_eq(&any, &full))
		abort();
	tl_arena_free(&a);
	return 0;
}
