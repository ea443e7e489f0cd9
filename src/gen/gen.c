/* gen.c — the campaign simulator: plans recipients, turns them into
 * requests, keeps the ground truth (see gen.h).
 *
 * Planning is a pure function of the seed: the PRNG is consulted in the
 * same order whatever the driver does, so two runs with one seed submit the
 * same events (only the issued_ms of tokens follows the clock).
 *
 * The truth is computed here, independently of the pipeline's own metric
 * code, from what each recipient was made to do. Traffic that must not count
 * (duplicates, bad batches, forged and foreign tokens) never touches it. */
#include "gen/gen.h"

#include "core/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EST_RECIPIENTS 2000 /* sample planned to scale --events to recipients */
#define DUP_RING 4096       /* recently sent lines that duplicates are drawn from */
#define HOUR_MS 3600000LL
/* A "within the send window" hit carries a token minted this long before it
 * is handed out: well inside the 2 s window, and never "before the send" even
 * if the collector's clock reading is a little stale. */
#define WINDOW_HIT_AGE_MS 250

/* User agents. The classifier decides machine/bot from them
 * (docs/classifier.md); the simulator only uses agents whose verdict is
 * unambiguous: current desktop browsers are human, "Mozilla/5.0" alone is
 * Apple Mail Privacy Protection, the scanners are named link scanners. */
static const char *const human_agents[] = {
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
    "Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 "
    "Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
};
#define N_HUMAN_AGENTS (sizeof human_agents / sizeof human_agents[0])
static const char apple_mpp_agent[] = "Mozilla/5.0";
static const char *const scanner_agents[] = {
    "Barracuda Sentinel (EE)",
    "Mozilla/5.0 (compatible; Mimecast)",
};
#define N_SCANNER_AGENTS (sizeof scanner_agents / sizeof scanner_agents[0])

/* ---- PRNG: splitmix64 seeds xoshiro256** ---- */

struct rng {
	uint64_t s[4];
};

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void rng_seed(struct rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(struct rng *r)
{
	uint64_t *s = r->s;
	uint64_t out = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return out;
}

/* Uniform in [0, n). */
static uint64_t rng_below(struct rng *r, uint64_t n)
{
	return n ? rng_next(r) % n : 0;
}

/* True with probability p. */
static bool rng_chance(struct rng *r, double p)
{
	return (double)(rng_next(r) >> 11) * 0x1.0p-53 < p;
}

/* ---- state ---- */

enum forge { FORGE_NONE, FORGE_FLIP, FORGE_OTHER_KEY };

/* A pixel or click hit, planned now and minted when handed out. */
struct hit {
	uint32_t campaign;
	uint32_t variant;
	int64_t rcpt;
	uint8_t kind;  /* TL_TOKEN_OPEN / TL_TOKEN_CLICK */
	uint8_t forge; /* enum forge */
	uint8_t head;  /* HEAD instead of GET */
	uint8_t now;   /* issued_ms = hand-out time (within the send window) */
	uint8_t link;  /* which link of the message */
	const char *ua;
	int64_t issued_ms; /* when !now */
};

struct req {
	struct tl_gen_request pub; /* first: tl_gen_request * <-> struct req * */
	struct req *next;
	struct tl_buf path;
	struct tl_buf body;
	struct tl_buf location;
	uint64_t release_seq; /* delayed retries: hand out at or after this sequence number */
	struct hit hit;       /* for hits: what the token says */
	bool is_hit;
	char key[64];      /* hits: the idempotency key (opts.hit_id_prefix) */
	bool counts_lines; /* a good batch whose lines may feed duplicates */
};

struct reqq {
	struct req *head, *tail;
	size_t n;
};

struct tl_gen {
	struct tl_gen_opts o;
	char *tenant, *prefix, *variants_str, *base_url, *hit_id_prefix;
	int nv;                             /* number of variants (0 = none) */
	char *variant[TL_GEN_MAX_VARIANTS]; /* names */
	int nslots;                         /* max(nv, 1) */
	char **camp;                        /* campaign names */
	int64_t recipients;
	int64_t *truth; /* [campaign][slot][metric] */
	struct rng rng;
	int64_t t0_ms; /* planning clock: create time */

	/* planning cursor */
	int cur_campaign;
	int64_t cur_rcpt;
	bool planned_all, flushed;

	/* NDJSON lines waiting to be shuffled into batches */
	char **pool;
	size_t pool_n, pool_cap;
	/* lines already sent in good batches, for duplicates */
	char *ring[DUP_RING];
	size_t ring_n, ring_pos;

	struct hit *hits;
	size_t hits_head, hits_n, hits_cap;

	struct reqq batches;
	struct reqq delayed;
	uint64_t seq;
	bool prefer_batch;
	uint64_t junk_seq;

	struct tl_gen_stats st;
	uint64_t hit_seq; /* keyed hits handed out */
	struct tl_buf scratch;
	bool estimating; /* a sample run: no fixed extras that would skew the rate */
};

static int64_t *truth_at(struct tl_gen *g, int c, int slot)
{
	return g->truth + ((size_t)c * (size_t)g->nslots + (size_t)slot) * TL_M__COUNT;
}

static void reqq_push(struct reqq *q, struct req *r)
{
	r->next = NULL;
	if (q->tail)
		q->tail->next = r;
	else
		q->head = r;
	q->tail = r;
	q->n++;
}

static struct req *reqq_pop(struct reqq *q)
{
	struct req *r = q->head;
	if (!r)
		return NULL;
	q->head = r->next;
	if (!q->head)
		q->tail = NULL;
	q->n--;
	r->next = NULL;
	return r;
}

static void req_free(struct req *r)
{
	if (!r)
		return;
	tl_buf_free(&r->path);
	tl_buf_free(&r->body);
	tl_buf_free(&r->location);
	free(r);
}

static struct req *req_new(void)
{
	struct req *r = calloc(1, sizeof *r);
	if (!r)
		return NULL;
	tl_buf_init(&r->path, 0);
	tl_buf_init(&r->body, 0);
	tl_buf_init(&r->location, 0);
	return r;
}

void tl_gen_defaults(struct tl_gen_opts *o)
{
	memset(o, 0, sizeof *o);
	o->campaign_prefix = "camp";
	o->campaigns = 5;
	o->recipients = 1000;
	o->variants = "A,B";
	o->seed = 1;
	o->junk = true;
	o->batch_lines = 800;
	o->base_url = "https://shop.example";
}

static int parse_variants(struct tl_gen *g)
{
	const char *s = g->variants_str;
	g->nv = 0;
	while (*s) {
		const char *comma = strchr(s, ',');
		size_t n = comma ? (size_t)(comma - s) : strlen(s);
		if (n == 0 || n > TL_MAX_VARIANT || g->nv >= TL_GEN_MAX_VARIANTS)
			return -TL_EINVAL;
		for (int i = 0; i < g->nv; i++)
			if (strlen(g->variant[i]) == n && memcmp(g->variant[i], s, n) == 0)
				return -TL_EINVAL; /* duplicate name */
		g->variant[g->nv] = strndup(s, n);
		if (!g->variant[g->nv])
			return -TL_ENOMEM;
		g->nv++;
		if (!comma)
			break;
		s = comma + 1;
		if (!*s)
			return -TL_EINVAL; /* trailing comma */
	}
	return TL_OK;
}

static int estimate_recipients(const struct tl_gen_opts *o, int64_t *out);

int tl_gen_create(const struct tl_gen_opts *o, struct tl_gen **out)
{
	*out = NULL;
	if (!o->tenant || !*o->tenant || strlen(o->tenant) > TL_MAX_TENANT || o->campaigns < 1 ||
	    o->campaigns > 100000 || o->recipients < 0 || o->events < 0 || o->batch_lines < 1 ||
	    o->batch_lines > 100000)
		return -TL_EINVAL;
	const char *prefix = o->campaign_prefix ? o->campaign_prefix : "camp";
	if (!*prefix || strlen(prefix) > TL_MAX_CAMPAIGN - 12)
		return -TL_EINVAL;
	if (o->hit_id_prefix) {
		size_t n = strlen(o->hit_id_prefix);
		if (n == 0 || n > 40 ||
		    strspn(o->hit_id_prefix, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		                             "0123456789_.-") != n)
			return -TL_EINVAL;
	}
	int rc = -TL_ENOMEM;
	struct tl_gen *g = calloc(1, sizeof *g);
	if (!g)
		return -TL_ENOMEM;
	g->o = *o;
	tl_buf_init(&g->scratch, 0);
	g->tenant = strdup(o->tenant);
	g->prefix = strdup(prefix);
	g->variants_str = strdup(o->variants ? o->variants : "");
	g->base_url = strdup(o->base_url ? o->base_url : "https://shop.example");
	g->hit_id_prefix = o->hit_id_prefix ? strdup(o->hit_id_prefix) : NULL;
	if (!g->tenant || !g->prefix || !g->variants_str || !g->base_url ||
	    (o->hit_id_prefix && !g->hit_id_prefix))
		goto fail;
	g->o.hit_id_prefix = g->hit_id_prefix;
	g->o.tenant = g->tenant;
	g->o.campaign_prefix = g->prefix;
	g->o.variants = g->variants_str;
	g->o.base_url = g->base_url;
	if ((rc = parse_variants(g)))
		goto fail;
	g->nslots = g->nv ? g->nv : 1;

	g->recipients = o->recipients;
	if (o->events > 0 && (rc = estimate_recipients(o, &g->recipients)))
		goto fail;
	rc = -TL_ENOMEM;
	g->camp = calloc((size_t)o->campaigns, sizeof *g->camp);
	g->truth = calloc((size_t)o->campaigns * (size_t)g->nslots * TL_M__COUNT, sizeof *g->truth);
	if (!g->camp || !g->truth)
		goto fail;
	for (int c = 0; c < o->campaigns; c++) {
		size_t n = strlen(prefix) + 16;
		if (!(g->camp[c] = malloc(n)))
			goto fail;
		snprintf(g->camp[c], n, "%s-%d", prefix, c);
	}
	rng_seed(&g->rng, o->seed);
	g->t0_ms = tl_now_ms();
	if (g->recipients == 0)
		g->planned_all = true;
	*out = g;
	return TL_OK;
fail:
	tl_gen_destroy(g);
	return rc;
}

void tl_gen_destroy(struct tl_gen *g)
{
	if (!g)
		return;
	struct req *r;
	while ((r = reqq_pop(&g->batches)))
		req_free(r);
	while ((r = reqq_pop(&g->delayed)))
		req_free(r);
	for (size_t i = 0; i < g->pool_n; i++)
		free(g->pool[i]);
	free(g->pool);
	for (size_t i = 0; i < g->ring_n; i++)
		free(g->ring[i]);
	free(g->hits);
	if (g->camp)
		for (int c = 0; c < g->o.campaigns; c++)
			free(g->camp[c]);
	free(g->camp);
	free(g->truth);
	for (int i = 0; i < g->nv; i++)
		free(g->variant[i]);
	free(g->tenant);
	free(g->prefix);
	free(g->variants_str);
	free(g->base_url);
	free(g->hit_id_prefix);
	tl_buf_free(&g->scratch);
	free(g);
}

int64_t tl_gen_recipients(const struct tl_gen *g)
{
	return g->recipients;
}

/* ---- planning ---- */

/* One canonical event of a recipient, as an NDJSON line into the pool. */
struct line {
	enum tl_event_type type;
	int c, slot;
	int64_t rcpt;
	int64_t ts_ms;
	const char *id_kind; /* "e" counted, "j" junk */
	unsigned k;          /* event number within the recipient */
	enum tl_bounce_class bounce;
	int link;       /* click url, -1 = none */
	bool machine;   /* "machine":true (provider-reported machine open) */
	const char *ua; /* user_agent, NULL = none */
};

static int link_url(struct tl_gen *g, int c, int link, struct tl_buf *out)
{
	return tl_buf_printf(out, "%s/%s/offer-%d?utm_campaign=%s", g->base_url, g->camp[c], link,
	                     g->camp[c]);
}

static int format_line(struct tl_gen *g, const struct line *l, struct tl_buf *b)
{
	char ts[TL_TIME_ISO_MAX];
	tl_time_format_iso(l->ts_ms, ts, sizeof ts);
	int rc = tl_buf_printf(b, "{\"type\":\"%s\",\"tenant\":", tl_event_type_name(l->type));
	rc = rc ? rc : tl_buf_json_str(b, g->tenant, strlen(g->tenant));
	rc = rc ? rc : tl_buf_puts(b, ",\"campaign\":");
	rc = rc ? rc : tl_buf_json_str(b, g->camp[l->c], strlen(g->camp[l->c]));
	if (g->nv) {
		rc = rc ? rc : tl_buf_puts(b, ",\"variant\":");
		rc = rc ? rc : tl_buf_json_str(b, g->variant[l->slot], strlen(g->variant[l->slot]));
	}
	rc = rc ? rc
	        : tl_buf_printf(b,
	                        ",\"recipient\":\"r%lld@example.test\",\"message\":\"m-%llu-%d-%lld\","
	                        "\"id\":\"%s-%s-%llu-%d-%lld-%u\",\"ts\":\"%s\",\"provider\":\"gen\"",
	                        (long long)l->rcpt, (unsigned long long)g->o.seed, l->c, (long long)l->rcpt,
	                        l->id_kind, g->prefix, (unsigned long long)g->o.seed, l->c,
	                        (long long)l->rcpt, l->k, ts);
	if (l->type == TL_EV_BOUNCED)
		rc = rc ? rc : tl_buf_printf(b, ",\"bounce_class\":\"%s\"", tl_bounce_class_name(l->bounce));
	if (l->link >= 0) {
		rc = rc ? rc : tl_buf_puts(b, ",\"url\":\"");
		size_t at = b->len;
		rc = rc ? rc : link_url(g, l->c, l->link, b);
		if (!rc) { /* urls we build hold no quotes or backslashes; keep it that way */
			for (size_t i = at; i < b->len; i++)
				if (b->data[i] == '"' || b->data[i] == '\\')
					b->data[i] = '_';
		}
		rc = rc ? rc : tl_buf_putc(b, '"');
	}
	if (l->machine)
		rc = rc ? rc : tl_buf_puts(b, ",\"machine\":true");
	if (l->ua) {
		rc = rc ? rc : tl_buf_puts(b, ",\"user_agent\":");
		rc = rc ? rc : tl_buf_json_str(b, l->ua, strlen(l->ua));
	}
	return rc ? rc : tl_buf_putc(b, '}');
}

static int pool_add(struct tl_gen *g, char *s)
{
	if (g->pool_n == g->pool_cap) {
		size_t ncap = g->pool_cap ? g->pool_cap * 2 : 1024;
		char **p = realloc(g->pool, ncap * sizeof *p);
		if (!p)
			return -TL_ENOMEM;
		g->pool = p;
		g->pool_cap = ncap;
	}
	g->pool[g->pool_n++] = s;
	return TL_OK;
}

/* Adds a counted event to the pool and to the truth. */
static int emit(struct tl_gen *g, struct line *l)
{
	tl_buf_reset(&g->scratch);
	int rc = format_line(g, l, &g->scratch);
	if (rc)
		return rc;
	char *s = strndup(g->scratch.data, g->scratch.len);
	if (!s || pool_add(g, s)) {
		free(s);
		return -TL_ENOMEM;
	}
	int64_t *t = truth_at(g, l->c, l->slot);
	switch (l->type) {
	case TL_EV_SENT:
		t[TL_M_SENT]++;
		break;
	case TL_EV_DELIVERED:
		t[TL_M_DELIVERED]++;
		break;
	case TL_EV_DEFERRED:
		t[TL_M_DEFERRED]++;
		break;
	case TL_EV_DROPPED:
		t[TL_M_DROPPED]++;
		break;
	case TL_EV_COMPLAINT:
		t[TL_M_COMPLAINTS]++;
		break;
	case TL_EV_UNSUBSCRIBE:
		t[TL_M_UNSUBSCRIBES]++;
		break;
	case TL_EV_BOUNCED:
		t[TL_M_BOUNCED]++;
		if (l->bounce == TL_BOUNCE_HARD)
			t[TL_M_HARD_BOUNCED]++;
		else if (l->bounce == TL_BOUNCE_SOFT)
			t[TL_M_SOFT_BOUNCED]++;
		break;
	case TL_EV_OPEN:
		t[TL_M_OPENS]++;
		if (l->machine)
			t[TL_M_MACHINE_OPENS]++;
		break;
	case TL_EV_CLICK:
		t[TL_M_CLICKS]++;
		if (l->ua) /* only scanner agents are given */
			t[TL_M_BOT_CLICKS]++;
		break;
	default:
		break;
	}
	g->st.events_counted++;
	return TL_OK;
}

static int hit_add(struct tl_gen *g, const struct hit *h)
{
	if (g->hits_head > 0 && g->hits_head == g->hits_n) {
		g->hits_head = g->hits_n = 0;
	}
	if (g->hits_n == g->hits_cap) {
		if (g->hits_head > g->hits_cap / 2) { /* compact */
			memmove(g->hits, g->hits + g->hits_head,
			        (g->hits_n - g->hits_head) * sizeof *g->hits);
			g->hits_n -= g->hits_head;
			g->hits_head = 0;
		} else {
			size_t ncap = g->hits_cap ? g->hits_cap * 2 : 256;
			struct hit *p = realloc(g->hits, ncap * sizeof *p);
			if (!p)
				return -TL_ENOMEM;
			g->hits = p;
			g->hits_cap = ncap;
		}
	}
	g->hits[g->hits_n++] = *h;
	return TL_OK;
}

/* Records a counted hit in the truth (the classifier's verdict is
 * predicted by how the hit is made: see plan_recipient). */
static void count_hit(struct tl_gen *g, const struct hit *h, bool flagged)
{
	int64_t *t = truth_at(g, (int)h->campaign, (int)h->variant);
	if (h->kind == TL_TOKEN_OPEN) {
		t[TL_M_OPENS]++;
		if (flagged)
			t[TL_M_MACHINE_OPENS]++;
	} else {
		t[TL_M_CLICKS]++;
		if (flagged)
			t[TL_M_BOT_CLICKS]++;
	}
	g->st.events_counted++;
}

static const char *human_agent(struct tl_gen *g)
{
	return human_agents[rng_below(&g->rng, N_HUMAN_AGENTS)];
}

/* Issue time of a token a human hits: an hour or more before now. */
static int64_t human_issued(struct tl_gen *g)
{
	return g->t0_ms - HOUR_MS - (int64_t)rng_below(&g->rng, 30 * 60 * 1000);
}

/* Plans everything that happens to recipient i of campaign c. */
static int plan_recipient(struct tl_gen *g, int c, int64_t i)
{
	struct rng *r = &g->rng;
	int slot = g->nv ? (int)rng_below(r, (uint64_t)g->nv) : 0;
	bool late = rng_chance(r, 0.10);
	int64_t base = late ? g->t0_ms - 2 * HOUR_MS - (int64_t)rng_below(r, 10 * HOUR_MS)
	                    : g->t0_ms - HOUR_MS - (int64_t)rng_below(r, 30 * 60 * 1000);
	struct line l = {.c = c, .slot = slot, .rcpt = i, .id_kind = "e", .link = -1};
	unsigned k = 0;
	int rc;
#define EMIT(TYPE, TS)                                                                                       \
	do {                                                                                                 \
		l.type = (TYPE);                                                                             \
		l.ts_ms = (TS);                                                                              \
		l.k = k++;                                                                                   \
		if ((rc = emit(g, &l)))                                                                      \
			return rc;                                                                           \
	} while (0)

	EMIT(TL_EV_SENT, base);
	double fate = (double)(rng_next(r) >> 11) * 0x1.0p-53;
	if (fate < 0.03) {
		EMIT(TL_EV_DROPPED, base + 200);
		return TL_OK;
	}
	if (fate < 0.08) {
		uint64_t b = rng_below(r, 100);
		l.bounce = b < 45 ? TL_BOUNCE_HARD : b < 80 ? TL_BOUNCE_SOFT : TL_BOUNCE_BLOCK;
		EMIT(TL_EV_BOUNCED, base + 1500 + (int64_t)rng_below(r, 5000));
		l.bounce = TL_BOUNCE_NONE;
		return TL_OK;
	}
	int64_t dts = base + 800 + (int64_t)rng_below(r, 4000);
	if (rng_chance(r, 0.05)) { /* deferred (once or twice), then delivered */
		int n = 1 + (int)rng_below(r, 2);
		for (int j = 0; j < n; j++)
			EMIT(TL_EV_DEFERRED, base + 500 + j * 60000);
		dts = base + n * 60000 + 5000;
	}
	EMIT(TL_EV_DELIVERED, dts);

	bool any_open = false, any_human_open = false, any_click = false, any_human_click = false;
	struct hit h = {.campaign = (uint32_t)c, .variant = (uint32_t)slot, .rcpt = i};

	/* Apple Mail Privacy Protection prefetch: agent "Mozilla/5.0", once or twice */
	if (rng_chance(r, 0.18)) {
		int n = rng_chance(r, 0.2) ? 2 : 1;
		for (int j = 0; j < n; j++) {
			h.kind = TL_TOKEN_OPEN;
			h.ua = apple_mpp_agent;
			h.now = 0;
			h.head = 0;
			h.issued_ms = human_issued(g);
			if ((rc = hit_add(g, &h)))
				return rc;
			count_hit(g, &h, true);
		}
		any_open = true;
	}
	/* a prefetch within the send window: browser agent, token minted at hit time */
	if (rng_chance(r, 0.03)) {
		h.kind = TL_TOKEN_OPEN;
		h.ua = human_agent(g);
		h.now = 1;
		h.head = 0;
		if ((rc = hit_add(g, &h)))
			return rc;
		count_hit(g, &h, true);
		any_open = true;
	}
	/* human opens through the pixel, some repeated */
	bool human_opener = rng_chance(r, 0.32);
	if (human_opener) {
		int n = 1;
		while (n < 5 && rng_chance(r, 0.4))
			n++;
		const char *ua = human_agent(g);
		for (int j = 0; j < n; j++) {
			h.kind = TL_TOKEN_OPEN;
			h.ua = ua;
			h.now = 0;
			h.head = 0;
			h.issued_ms = human_issued(g);
			if ((rc = hit_add(g, &h)))
				return rc;
			count_hit(g, &h, false);
		}
		any_open = any_human_open = true;
	}
	/* provider-reported opens through the event API (human, or "machine":true) */
	if (rng_chance(r, 0.05)) {
		EMIT(TL_EV_OPEN, dts + 600000 + (int64_t)rng_below(r, 600000));
		any_open = any_human_open = true;
	}
	if (rng_chance(r, 0.03)) {
		l.machine = true;
		EMIT(TL_EV_OPEN, dts + 1000);
		l.machine = false;
		any_open = true;
	}
	/* human clicks: openers follow one to three links */
	if (human_opener && rng_chance(r, 0.35)) {
		int n = 1 + (int)rng_below(r, 3);
		const char *ua = human_agent(g);
		for (int j = 0; j < n; j++) {
			h.kind = TL_TOKEN_CLICK;
			h.ua = ua;
			h.now = 0;
			h.head = 0;
			h.link = (uint8_t)rng_below(r, 3);
			h.issued_ms = human_issued(g);
			if ((rc = hit_add(g, &h)))
				return rc;
			count_hit(g, &h, false);
		}
		any_click = any_human_click = true;
	}
	/* a link scanner follows every link of the message */
	if (rng_chance(r, 0.05)) {
		const char *ua = scanner_agents[rng_below(r, N_SCANNER_AGENTS)];
		int n = 1 + (int)rng_below(r, 3);
		for (int j = 0; j < n; j++) {
			h.kind = TL_TOKEN_CLICK;
			h.ua = ua;
			h.now = 0;
			h.head = 0;
			h.link = (uint8_t)j;
			h.issued_ms = human_issued(g);
			if ((rc = hit_add(g, &h)))
				return rc;
			count_hit(g, &h, true);
		}
		any_click = true;
	}
	/* a HEAD request on a link (a prefetcher checking it) */
	if (rng_chance(r, 0.02)) {
		h.kind = TL_TOKEN_CLICK;
		h.ua = human_agent(g);
		h.now = 0;
		h.head = 1;
		h.link = 0;
		h.issued_ms = human_issued(g);
		if ((rc = hit_add(g, &h)))
			return rc;
		count_hit(g, &h, true);
		any_click = true;
	}
	/* a click within the send window */
	if (rng_chance(r, 0.02)) {
		h.kind = TL_TOKEN_CLICK;
		h.ua = human_agent(g);
		h.now = 1;
		h.head = 0;
		h.link = 1;
		if ((rc = hit_add(g, &h)))
			return rc;
		count_hit(g, &h, true);
		any_click = true;
	}
	/* a provider-reported human click */
	if (rng_chance(r, 0.02)) {
		l.link = (int)rng_below(r, 3);
		EMIT(TL_EV_CLICK, dts + 900000);
		l.link = -1;
		any_click = any_human_click = true;
	}
	/* a provider-reported click that carries a scanner's agent. ("bot":true
	 * alone is not kept: the enricher re-classifies every click.) */
	if (rng_chance(r, 0.01)) {
		l.link = 0;
		l.ua = scanner_agents[rng_below(r, N_SCANNER_AGENTS)];
		EMIT(TL_EV_CLICK, dts + 1500);
		l.ua = NULL;
		l.link = -1;
		any_click = true;
	}
	if (rng_chance(r, 0.004))
		EMIT(TL_EV_COMPLAINT, dts + 2 * HOUR_MS / 3);
	if (rng_chance(r, 0.012))
		EMIT(TL_EV_UNSUBSCRIBE, dts + HOUR_MS / 2);
#undef EMIT

	/* junk hits: never counted */
	if (g->o.junk) {
		struct hit j = h;
		j.now = 0;
		j.head = 0;
		j.ua = human_agent(g);
		j.issued_ms = human_issued(g);
		if (rng_chance(r, 0.01)) {
			j.kind = TL_TOKEN_OPEN;
			j.forge = FORGE_FLIP;
			if ((rc = hit_add(g, &j)))
				return rc;
		}
		if (rng_chance(r, 0.01)) {
			j.kind = TL_TOKEN_CLICK;
			j.forge = FORGE_FLIP;
			j.link = 2;
			if ((rc = hit_add(g, &j)))
				return rc;
		}
		if (g->o.has_other_key && rng_chance(r, 0.01)) {
			j.kind = rng_chance(r, 0.5) ? TL_TOKEN_OPEN : TL_TOKEN_CLICK;
			j.forge = FORGE_OTHER_KEY;
			j.link = 1;
			if ((rc = hit_add(g, &j)))
				return rc;
		}
	}

	int64_t *t = truth_at(g, c, slot);
	t[TL_M_UNIQUE_OPENS] += any_open;
	t[TL_M_UNIQUE_HUMAN_OPENS] += any_human_open;
	t[TL_M_UNIQUE_CLICKS] += any_click;
	t[TL_M_UNIQUE_HUMAN_CLICKS] += any_human_click;
	return TL_OK;
}

/* ---- batches ---- */

static void shuffle_pool(struct tl_gen *g, size_t n)
{
	for (size_t i = n; i > 1; i--) {
		size_t j = (size_t)rng_below(&g->rng, i);
		char *t = g->pool[i - 1];
		g->pool[i - 1] = g->pool[j];
		g->pool[j] = t;
	}
}

static void ring_put(struct tl_gen *g, char *s)
{
	if (g->ring_n < DUP_RING) {
		g->ring[g->ring_n++] = s;
		return;
	}
	free(g->ring[g->ring_pos]);
	g->ring[g->ring_pos] = s;
	g->ring_pos = (g->ring_pos + 1) % DUP_RING;
}

static int append_line(struct tl_buf *b, const char *s)
{
	int rc = tl_buf_puts(b, s);
	return rc ? rc : tl_buf_putc(b, '\n');
}

static void batch_request(struct req *q)
{
	q->pub.kind = TL_GEN_REQ_EVENTS;
	q->pub.method = "POST";
	q->pub.path = "/v1/events";
	q->pub.body = q->body.data;
	q->pub.body_len = q->body.len;
}

/* A batch of fresh, valid-looking events with one bad line: the collector
 * must refuse it whole (400), so none of it is in the truth. */
static int make_junk_batch(struct tl_gen *g)
{
	struct req *q = req_new();
	if (!q)
		return -TL_ENOMEM;
	struct rng *r = &g->rng;
	size_t n = 50 + (size_t)rng_below(r, 250);
	size_t bad_at = (size_t)rng_below(r, n + 1);
	uint64_t bad_kind = g->junk_seq++ % 7;
	int rc = TL_OK;
	static const enum tl_event_type types[] = {TL_EV_SENT, TL_EV_DELIVERED, TL_EV_OPEN, TL_EV_CLICK,
	                                           TL_EV_BOUNCED};
	for (size_t i = 0; i <= n && !rc; i++) {
		if (i == bad_at) {
			switch (bad_kind) {
			case 0:
				rc = append_line(&q->body, "{\"type\":\"delivered\",\"campaign\":\"x\"");
				break;
			case 1:
				rc = tl_buf_printf(&q->body,
				                   "{\"type\":\"opne\",\"campaign\":\"%s\",\"recipient\":"
				                   "\"r1@example.test\","
				                   "\"id\":\"bad-%llu\",\"ts\":\"2026-01-01T00:00:00Z\"}\n",
				                   g->camp[0], (unsigned long long)g->junk_seq);
				break;
			case 2:
				rc = tl_buf_printf(&q->body,
				                   "{\"type\":\"delivered\",\"campaign\":\"%s\","
				                   "\"recipient\":\"r1@example.test\","
				                   "\"ts\":\"2026-01-01T00:00:00Z\"}\n",
				                   g->camp[0]);
				break;
			case 3:
				rc = tl_buf_printf(&q->body,
				                   "{\"type\":\"delivered\",\"campaign\":\"%s\","
				                   "\"recipient\":\"r1@example.test\","
				                   "\"id\":\"bad-%llu\",\"ts\":\"2026-01-01T00:00:00Z\","
				                   "\"bounce_class\":\"hard\"}\n",
				                   g->camp[0], (unsigned long long)g->junk_seq);
				break;
			case 4:
				rc = append_line(&q->body, "this is not json");
				break;
			case 5:
				rc = tl_buf_printf(&q->body,
				                   "{\"type\":\"sent\",\"campaign\":\"%s\",\"recipient\":"
				                   "\"r1@example.test\","
				                   "\"id\":\"bad-%llu\",\"ts\":\"yesterday\"}\n",
				                   g->camp[0], (unsigned long long)g->junk_seq);
				break;
			default:
				rc = tl_buf_printf(&q->body,
				                   "{\"type\":\"bounced\",\"campaign\":\"%s\",\"recipient\":"
				                   "\"r1@example.test\","
				                   "\"id\":\"bad-%llu\",\"ts\":\"2026-01-01T00:00:00Z\","
				                   "\"bounce_class\":\"mushy\"}\n",
				                   g->camp[0], (unsigned long long)g->junk_seq);
				break;
			}
			continue;
		}
		struct line l = {
		    .type = types[rng_below(r, sizeof types / sizeof types[0])],
		    .c = (int)rng_below(r, (uint64_t)g->o.campaigns),
		    .slot = g->nv ? (int)rng_below(r, (uint64_t)g->nv) : 0,
		    .rcpt = (int64_t)rng_below(r, (uint64_t)(g->recipients ? g->recipients : 1)),
		    .ts_ms = g->t0_ms - (int64_t)rng_below(r, HOUR_MS),
		    .id_kind = "j",
		    .k = (unsigned)(g->junk_seq * 1000 + i),
		    .link = -1,
		};
		if (l.type == TL_EV_BOUNCED)
			l.bounce = TL_BOUNCE_HARD;
		if (l.type == TL_EV_CLICK)
			l.link = 0;
		rc = format_line(g, &l, &q->body);
		rc = rc ? rc : tl_buf_putc(&q->body, '\n');
	}
	if (rc) {
		req_free(q);
		return rc;
	}
	batch_request(q);
	q->pub.events = n + 1;
	q->pub.expect_status = 400;
	q->pub.retry_safe = true; /* refused whole: nothing to double count */
	reqq_push(&g->batches, q);
	g->st.junk_batches++;
	return TL_OK;
}

/* Moves up to n lines from the front of the (shuffled) pool into a batch. */
static int make_batch(struct tl_gen *g, size_t n)
{
	struct rng *r = &g->rng;
	struct req *q = req_new();
	if (!q)
		return -TL_ENOMEM;
	if (n > g->pool_n)
		n = g->pool_n;
	size_t lines = 0;
	int rc = TL_OK;
	for (size_t i = 0; i < n && !rc; i++) {
		rc = append_line(&q->body, g->pool[i]);
		lines++;
		/* the same event again, from an earlier batch */
		if (!rc && g->o.junk && g->ring_n && rng_chance(r, 0.02)) {
			rc = append_line(&q->body, g->ring[rng_below(r, g->ring_n)]);
			lines++;
			g->st.dup_lines++;
		}
	}
	if (rc) {
		req_free(q);
		return rc;
	}
	for (size_t i = 0; i < n; i++)
		ring_put(g, g->pool[i]);
	memmove(g->pool, g->pool + n, (g->pool_n - n) * sizeof *g->pool);
	g->pool_n -= n;

	batch_request(q);
	q->pub.events = lines;
	q->pub.expect_status = 0;
	q->pub.retry_safe = true;
	q->counts_lines = true;

	/* a whole batch retried later (the mailer did not see the answer);
	 * always the second batch, so even a short run has one */
	if (g->o.junk && (rng_chance(r, 0.03) || (g->st.batches == 1 && !g->estimating))) {
		struct req *dup = req_new();
		if (!dup || tl_buf_append(&dup->body, q->body.data, q->body.len)) {
			req_free(dup);
			req_free(q);
			return -TL_ENOMEM;
		}
		batch_request(dup);
		dup->pub.events = lines;
		dup->pub.expect_status = 0;
		dup->pub.retry_safe = true;
		dup->release_seq = g->seq + 5 + rng_below(r, 200);
		reqq_push(&g->delayed, dup);
		g->st.retried_batches++;
	}
	reqq_push(&g->batches, q);
	g->st.batches++;
	/* a batch with a bad line: the fourth batch, and now and then */
	if (g->o.junk && (rng_chance(r, 0.025) || (g->st.batches == 3 && !g->estimating)))
		return make_junk_batch(g);
	return TL_OK;
}

/* Plans recipients until a request is ready or everything is planned. */
static int plan_more(struct tl_gen *g)
{
	size_t B = (size_t)g->o.batch_lines;
	while (!g->planned_all && g->batches.n == 0 && g->hits_head == g->hits_n) {
		int rc = plan_recipient(g, g->cur_campaign, g->cur_rcpt);
		if (rc)
			return rc;
		if (++g->cur_rcpt >= g->recipients) {
			g->cur_rcpt = 0;
			if (++g->cur_campaign >= g->o.campaigns)
				g->planned_all = true;
		}
		if (g->pool_n >= 2 * B) { /* shuffle across two batches: order is lost between them too */
			shuffle_pool(g, g->pool_n);
			if ((rc = make_batch(g, B)))
				return rc;
		}
	}
	if (g->planned_all && !g->flushed && g->batches.n == 0 && g->hits_head == g->hits_n) {
		shuffle_pool(g, g->pool_n);
		while (g->pool_n) {
			int rc = make_batch(g, B);
			if (rc)
				return rc;
		}
		g->flushed = true;
	}
	return TL_OK;
}

/* Writes q's path: the token of q->hit, minted now. */
static int mint_path(struct tl_gen *g, struct req *q)
{
	const struct hit *h = &q->hit;
	char rcpt[48], msg[96];
	snprintf(rcpt, sizeof rcpt, "r%lld@example.test", (long long)h->rcpt);
	snprintf(msg, sizeof msg, "m-%llu-%u-%lld", (unsigned long long)g->o.seed, h->campaign,
	         (long long)h->rcpt);
	struct tl_token t = {
	    .kind = (enum tl_token_kind)h->kind,
	    .issued_ms = h->now ? tl_now_ms() - WINDOW_HIT_AGE_MS : h->issued_ms,
	    .tenant = tl_str_of(g->tenant, strlen(g->tenant)),
	    .campaign = tl_str_of(g->camp[h->campaign], strlen(g->camp[h->campaign])),
	    .variant =
	        g->nv ? tl_str_of(g->variant[h->variant], strlen(g->variant[h->variant])) : TL_STR_NULL,
	    .message = tl_str_of(msg, strlen(msg)),
	    .recipient = tl_str_of(rcpt, strlen(rcpt)),
	    .url = h->kind == TL_TOKEN_CLICK ? tl_str_of(q->location.data, q->location.len) : TL_STR_NULL,
	};
	const unsigned char *key = h->forge == FORGE_OTHER_KEY ? g->o.other_key : g->o.link_key;
	tl_buf_reset(&q->path);
	int rc = tl_buf_puts(&q->path, h->kind == TL_TOKEN_OPEN ? "/o/" : "/c/");
	size_t tok_at = q->path.len;
	rc = rc ? rc : tl_token_mint(&t, key, TL_LINK_KEY_LEN, &q->path);
	if (!rc && h->forge == FORGE_FLIP) { /* flip one MAC byte: a character inside the MAC part */
		char *dot = memrchr(q->path.data + tok_at, '.', q->path.len - tok_at);
		if (!dot || (size_t)(q->path.data + q->path.len - dot) < 4)
			rc = -TL_EINVAL;
		else
			dot[2] = dot[2] == 'A' ? 'B' : 'A';
	}
	if (!rc && h->kind == TL_TOKEN_OPEN)
		rc = tl_buf_puts(&q->path, ".gif");
	q->pub.path = q->path.data;
	return rc;
}

/* Turns h into a request with a freshly minted token. */
static int make_hit(struct tl_gen *g, const struct hit *h, struct req **out)
{
	*out = NULL;
	struct req *q = req_new();
	if (!q)
		return -TL_ENOMEM;
	q->hit = *h;
	q->is_hit = true;
	int rc = TL_OK;
	if (h->kind == TL_TOKEN_CLICK)
		rc = link_url(g, (int)h->campaign, h->link, &q->location);
	rc = rc ? rc : mint_path(g, q);
	if (rc) {
		req_free(q);
		return rc;
	}
	q->pub.kind = h->kind == TL_TOKEN_OPEN ? TL_GEN_REQ_PIXEL : TL_GEN_REQ_CLICK;
	q->pub.method = h->head ? "HEAD" : "GET";
	q->pub.user_agent = h->ua;
	q->pub.events = 1;
	/* every hit counts: a lost answer can only be retried when the key
	 * makes the collector count the hit once */
	q->pub.retry_safe = false;
	if (g->o.hit_id_prefix) {
		snprintf(q->key, sizeof q->key, "%s-%llx", g->o.hit_id_prefix,
		         (unsigned long long)++g->hit_seq);
		q->pub.idempotency_key = q->key;
		q->pub.retry_safe = true;
	}
	if (h->kind == TL_TOKEN_OPEN) {
		q->pub.expect_status = 200; /* forged or not: the GIF */
	} else if (h->forge != FORGE_NONE) {
		q->pub.expect_status = 404;
	} else {
		q->pub.expect_status = 302;
		q->pub.expect_location = q->location.data;
	}
	g->st.hits++;
	if (h->forge != FORGE_NONE)
		g->st.forged_hits++;
	*out = q;
	return TL_OK;
}

int tl_gen_refresh(struct tl_gen *g, struct tl_gen_request *pub)
{
	struct req *q = (struct req *)pub;
	if (!q->is_hit || !q->hit.now)
		return TL_OK;
	return mint_path(g, q);
}

int tl_gen_next(struct tl_gen *g, struct tl_gen_request **out)
{
	*out = NULL;
	struct req *q = NULL;
	if (g->delayed.head && g->delayed.head->release_seq <= g->seq) {
		q = reqq_pop(&g->delayed);
	} else {
		int rc = plan_more(g);
		if (rc)
			return rc;
		bool have_hit = g->hits_head < g->hits_n;
		if (g->batches.n && (!have_hit || g->prefer_batch)) {
			q = reqq_pop(&g->batches);
			g->prefer_batch = false;
		} else if (have_hit) {
			if ((rc = make_hit(g, &g->hits[g->hits_head], &q)))
				return rc;
			g->hits_head++;
			g->prefer_batch = true;
		} else if (g->delayed.head) { /* the end: the remaining retries */
			q = reqq_pop(&g->delayed);
		}
	}
	if (!q)
		return TL_OK;
	g->seq++;
	g->st.events_sent += (int64_t)q->pub.events;
	*out = &q->pub;
	return TL_OK;
}

int tl_gen_complete(struct tl_gen *g, struct tl_gen_request *pub, int status, const char *location, char *err,
                    size_t errlen)
{
	struct req *q = (struct req *)pub;
	g->st.requests++;
	g->st.attempts += pub->attempts > 0 ? pub->attempts : 1;
	bool ok = pub->expect_status ? status == pub->expect_status : status >= 200 && status < 300;
	if (ok && pub->expect_location && (!location || strcmp(location, pub->expect_location) != 0))
		ok = false;
	if (!ok) {
		g->st.errors++;
		if (err && errlen)
			snprintf(err, errlen, "%s %.*s%s: got %d%s%s, expected %d%s%s", pub->method, 80,
			         pub->path, strlen(pub->path) > 80 ? "…" : "", status, location ? " -> " : "",
			         location ? location : "", pub->expect_status ? pub->expect_status : 200,
			         pub->expect_location ? " -> " : "",
			         pub->expect_location ? pub->expect_location : "");
	}
	req_free(q);
	return ok ? TL_OK : -TL_EINVAL;
}

void tl_gen_stats(const struct tl_gen *g, struct tl_gen_stats *st)
{
	*st = g->st;
}

int tl_gen_truth(const struct tl_gen *g, int campaign, int variant, int64_t counts[TL_M__COUNT])
{
	if (campaign < 0 || campaign >= g->o.campaigns || variant < -1 || variant >= g->nslots)
		return -TL_ENOTFOUND;
	memset(counts, 0, TL_M__COUNT * sizeof *counts);
	for (int s = 0; s < g->nslots; s++) {
		if (variant >= 0 && s != variant)
			continue;
		const int64_t *t = truth_at((struct tl_gen *)g, campaign, s);
		for (int m = 0; m < TL_M__COUNT; m++)
			counts[m] += t[m];
	}
	return TL_OK;
}

static int counts_json(const int64_t c[TL_M__COUNT], struct tl_buf *out)
{
	int rc = tl_buf_putc(out, '{');
	for (int m = 0; m < TL_M__COUNT && !rc; m++)
		rc = tl_buf_printf(out, "%s\"%s\":%lld", m ? "," : "", tl_metric_name((enum tl_metric)m),
		                   (long long)c[m]);
	return rc ? rc : tl_buf_putc(out, '}');
}

int tl_gen_truth_json(const struct tl_gen *g, struct tl_buf *out)
{
	int rc = tl_buf_puts(out, "{\"tenant\":");
	rc = rc ? rc : tl_buf_json_str(out, g->tenant, strlen(g->tenant));
	rc = rc ? rc
	        : tl_buf_printf(out,
	                        ",\"seed\":%llu,\"recipients_per_campaign\":%lld,\"events_sent\":%lld,"
	                        "\"events_counted\":%lld,\"requests\":%lld,\"errors\":%lld,\"campaigns\":{",
	                        (unsigned long long)g->o.seed, (long long)g->recipients,
	                        (long long)g->st.events_sent, (long long)g->st.events_counted,
	                        (long long)g->st.requests, (long long)g->st.errors);
	int64_t c[TL_M__COUNT];
	for (int k = 0; k < g->o.campaigns && !rc; k++) {
		rc = k ? tl_buf_putc(out, ',') : TL_OK;
		rc = rc ? rc : tl_buf_json_str(out, g->camp[k], strlen(g->camp[k]));
		rc = rc ? rc : tl_buf_puts(out, ":{\"total\":");
		rc = rc ? rc : tl_gen_truth(g, k, -1, c);
		rc = rc ? rc : counts_json(c, out);
		rc = rc ? rc : tl_buf_puts(out, ",\"variants\":{");
		for (int s = 0; s < g->nslots && !rc; s++) {
			rc = s ? tl_buf_putc(out, ',') : TL_OK;
			const char *name = g->nv ? g->variant[s] : "";
			rc = rc ? rc : tl_buf_json_str(out, name, strlen(name));
			rc = rc ? rc : tl_buf_putc(out, ':');
			rc = rc ? rc : tl_gen_truth(g, k, s, c);
			rc = rc ? rc : counts_json(c, out);
		}
		rc = rc ? rc : tl_buf_puts(out, "}}");
	}
	return rc ? rc : tl_buf_puts(out, "}}\n");
}

/* Plans a sample of recipients (same options, fresh state) and scales
 * opts.events to recipients per campaign from the events each submitted. */
static int estimate_recipients(const struct tl_gen_opts *o, int64_t *out)
{
	struct tl_gen_opts e = *o;
	e.events = 0;
	e.recipients = EST_RECIPIENTS;
	e.campaigns = 1;
	struct tl_gen *g;
	int rc = tl_gen_create(&e, &g);
	if (rc)
		return rc;
	g->estimating = true;
	for (;;) {
		struct tl_gen_request *r;
		if ((rc = tl_gen_next(g, &r)) || !r)
			break;
		(void)tl_gen_complete(g, r, r->expect_status ? r->expect_status : 200, r->expect_location,
		                      NULL, 0);
	}
	if (!rc) {
		double per = (double)g->st.events_sent / EST_RECIPIENTS;
		double n = (double)o->events / ((double)o->campaigns * (per > 0 ? per : 1));
		*out = n < 1 ? 1 : (int64_t)(n + 0.5);
	}
	tl_gen_destroy(g);
	return rc;
}
