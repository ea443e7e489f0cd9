/* mix.c — the event mix of the load generator: NDJSON lines of canonical
 * events (DESIGN.md §4) with unique ids, written without printf so that
 * generating a line costs far less than the collector spends on it. */
#include "bench/bench.h"

#include "core/clock.h"

#include <string.h>

void tl_bench_mix_defaults(struct tl_bench_mix *m)
{
	*m = (struct tl_bench_mix){
	    .campaigns = 100,
	    .variants = 2,
	    .recipients = 100000,
	    .prefix = "bench",
	};
}

void tl_bench_gen_init(struct tl_bench_gen *g, const struct tl_bench_mix *m, uint64_t seed)
{
	g->m = *m;
	if (g->m.campaigns < 1)
		g->m.campaigns = 1;
	if (g->m.recipients < 1)
		g->m.recipients = 1;
	if (!g->m.prefix)
		g->m.prefix = "bench";
	if (!g->m.id_prefix)
		g->m.id_prefix = "b";
	g->next_id = 0;
	g->rng = seed ? seed : 0x9E3779B97F4A7C15ULL;
}

/* xorshift64* */
static uint64_t rnd(struct tl_bench_gen *g)
{
	uint64_t x = g->rng;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	g->rng = x;
	return x * 0x2545F4914F6CDD1DULL;
}

/* Writes v in decimal at p; returns the end. */
static char *put_u64(char *p, uint64_t v)
{
	char tmp[20];
	int n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		*p++ = tmp[--n];
	return p;
}

static char *put_s(char *p, const char *s, size_t n)
{
	memcpy(p, s, n);
	return p + n;
}

#define PUT_LIT(p, lit) put_s((p), (lit), sizeof(lit) - 1)

/* Per 100 events; see bench.h. */
static const struct {
	const char *name;
	int weight;
	int extra; /* 0 none, 1 bounce class, 2 user agent, 3 url */
} mix[] = {
    {"sent", 30, 0},     {"delivered", 27, 0},  {"deferred", 2, 0}, {"bounced", 3, 1}, {"dropped", 1, 0},
    {"complaint", 1, 0}, {"unsubscribe", 1, 0}, {"open", 25, 2},    {"click", 10, 3},
};

static const char *const bounce_classes[] = {"hard", "soft", "block"};

int tl_bench_gen_batch(struct tl_bench_gen *g, size_t n, int64_t ts_ms, struct tl_buf *out)
{
	char ts[TL_TIME_ISO_MAX];
	size_t tsn = tl_time_format_iso(ts_ms, ts, sizeof ts);
	size_t pl = strlen(g->m.prefix), il = strlen(g->m.id_prefix);
	if (pl > 64 || il > 64)
		return -TL_EINVAL;
	for (size_t i = 0; i < n; i++) {
		char line[512];
		uint64_t r = rnd(g);
		int w = (int)(r % 100);
		size_t k = 0;
		while (w >= mix[k].weight) {
			w -= mix[k].weight;
			k++;
		}
		uint64_t camp = (r >> 8) % (uint64_t)g->m.campaigns;
		uint64_t rcpt = rnd(g) % (uint64_t)g->m.recipients;
		char *p = line;
		p = PUT_LIT(p, "{\"type\":\"");
		p = put_s(p, mix[k].name, strlen(mix[k].name));
		p = PUT_LIT(p, "\",\"campaign\":\"");
		p = put_s(p, g->m.prefix, pl);
		*p++ = '-';
		p = put_u64(p, camp);
		if (g->m.variants > 0) {
			p = PUT_LIT(p, "\",\"variant\":\"");
			*p++ = (char)('A' + (int)(rcpt % (uint64_t)g->m.variants % 26));
		}
		p = PUT_LIT(p, "\",\"recipient\":\"r-");
		p = put_u64(p, rcpt);
		p = PUT_LIT(p, "@example.com\",\"message\":\"m-");
		p = put_u64(p, camp);
		*p++ = '-';
		p = put_u64(p, rcpt);
		p = PUT_LIT(p, "\",\"id\":\"");
		p = put_s(p, g->m.id_prefix, il);
		*p++ = '-';
		p = put_u64(p, g->next_id++);
		p = PUT_LIT(p, "\",\"ts\":\"");
		p = put_s(p, ts, tsn);
		*p++ = '"';
		switch (mix[k].extra) {
		case 1: {
			const char *bc = bounce_classes[(r >> 40) % 3];
			p = PUT_LIT(p, ",\"bounce_class\":\"");
			p = put_s(p, bc, strlen(bc));
			*p++ = '"';
			break;
		}
		case 2:
			p = PUT_LIT(p, ",\"user_agent\":\"Mozilla/5.0 (Windows NT 10.0; Win64; x64) "
			               "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\","
			               "\"ip\":\"198.51.100.");
			p = put_u64(p, (r >> 32) % 250 + 1);
			*p++ = '"';
			break;
		case 3:
			p = PUT_LIT(p, ",\"url\":\"https://shop.example/p/");
			p = put_u64(p, (r >> 32) % 1000);
			p = PUT_LIT(
			    p,
			    "\",\"user_agent\":\"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)\"");
			break;
		default:
			break;
		}
		p = PUT_LIT(p, "}\n");
		int rc = tl_buf_append(out, line, (size_t)(p - line));
		if (rc)
			return rc;
	}
	return TL_OK;
}
