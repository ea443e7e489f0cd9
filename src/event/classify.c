/* classify.c — machine-open and bot-click rules (docs/classifier.md).
 *
 * Each rule is a named predicate over one event and the options; the first
 * that matches decides. Agent matching lowercases the user agent once into a
 * stack buffer and looks for fixed lowercase substrings (no regex, no
 * allocation); a small per-thread memo keeps the verdicts of the agents
 * seen last. */
#include "event/classify.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <xxhash.h>

#define DEFAULT_WINDOW_MS 2000

/* Fills o with the defaults (both windows 2000 ms). Any thread. */
void tl_classify_defaults(struct tl_classify_opts *o)
{
	o->machine_open_window_ms = DEFAULT_WINDOW_MS;
	o->bot_click_window_ms = DEFAULT_WINDOW_MS;
}

struct needle {
	const char *s;
	size_t n;
};

/* clang-format off */
#define N(lit) {(lit), sizeof(lit) - 1}
/* clang-format on */

/* Mail-provider image proxies that fetch the pixel themselves: the hit is not
 * the recipient's own client (see docs/classifier.md for the caveats). */
static const struct needle proxy_agents[] = {
    N("googleimageproxy"), /* Gmail: "… (via ggpht.com GoogleImageProxy)" */
    N("yahoomailproxy"),   /* Yahoo Mail / AOL: "YahooMailProxy; https://help.yahoo.com/…" */
};

/* Link scanners, security gateways, preview fetchers and HTTP libraries.
 * Matched case-insensitively anywhere in the user agent. */
static const struct needle scanner_agents[] = {
    N("barracuda"),
    N("mimecast"),
    N("proofpoint"),
    N("microsoft office/"),
    N("microsoft office existence discovery"),
    N("ms-office"),
    N("symantec"),
    N("trendmicro"),
    N("forcepoint"),
    N("fireeye"),
    N("python-requests"),
    N("python-urllib"),
    N("curl/"),
    N("wget/"),
    N("go-http-client"),
    N("java/"),
    N("okhttp"),
    N("apache-httpclient"),
    N("libwww-perl"),
    N("headlesschrome"),
    N("phantomjs"),
    N("slackbot"),
    N("facebookexternalhit"),
    N("whatsapp"),
    N("bot"),
    N("spider"),
    N("crawler"),
    N("preview"),
    N("scanner"),
};

#undef N

#define NEEDLES_MAX 64 /* indexes are chained in bytes, 0xff ends a chain */
_Static_assert(sizeof scanner_agents / sizeof scanner_agents[0] <= NEEDLES_MAX, "too many needles");
_Static_assert(sizeof proxy_agents / sizeof proxy_agents[0] <= NEEDLES_MAX, "too many needles");

static inline unsigned pair_hash(unsigned char a, unsigned char b)
{
	return ((unsigned)a << 5 ^ b) & 4095u;
}

/* Lowercases the user agent into buf (at most TL_MAX_USER_AGENT bytes kept). */
static size_t lower_agent(struct tl_str ua, char buf[TL_MAX_USER_AGENT])
{
	size_t n = ua.n < TL_MAX_USER_AGENT ? ua.n : TL_MAX_USER_AGENT;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)ua.p[i];
		buf[i] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
	}
	return n;
}

/* A needle table with its index: a bitmap of the needles' first two bytes
 * and, per first byte, the chain of needles starting with it. Built once, on
 * first use (pthread_once), then read by any thread. */
struct needle_set {
	const struct needle *tab;
	size_t count;
	pthread_once_t once;
	uint64_t pairs[64]; /* 4096 bits, indexed by pair_hash() */
	unsigned char head[256], next[NEEDLES_MAX];
};

#define NEEDLE_SET(t)                                                                                        \
	{                                                                                                    \
		(t), sizeof(t) / sizeof(t)[0], PTHREAD_ONCE_INIT, {0}, {0},                                  \
		{                                                                                            \
			0                                                                                    \
		}                                                                                            \
	}
static struct needle_set proxy_set = NEEDLE_SET(proxy_agents);
static struct needle_set scanner_set = NEEDLE_SET(scanner_agents);

static void index_needles(struct needle_set *ns)
{
	memset(ns->pairs, 0, sizeof ns->pairs);
	memset(ns->head, 0xff, sizeof ns->head);
	for (size_t k = ns->count; k-- > 0;) {
		unsigned char c = (unsigned char)ns->tab[k].s[0];
		unsigned h = pair_hash(c, (unsigned char)ns->tab[k].s[1]);
		ns->pairs[h >> 6] |= 1ull << (h & 63);
		ns->next[k] = ns->head[c];
		ns->head[c] = (unsigned char)k;
	}
}

static void index_proxy(void)
{
	index_needles(&proxy_set);
}

static void index_scanner(void)
{
	index_needles(&scanner_set);
}

/* True when the lowercased agent lc (n bytes) contains any needle of ns.
 * The bitmap lets the scan skip almost every position with one
 * well-predicted test; only where the pair matches are the needles starting
 * with that byte compared. Every needle has at least two bytes. */
static bool agent_has_any(const char *lc, size_t n, const struct needle_set *ns)
{
	for (size_t i = 0; i + 1 < n; i++) {
		unsigned char c = (unsigned char)lc[i];
		unsigned h = pair_hash(c, (unsigned char)lc[i + 1]);
		if (!(ns->pairs[h >> 6] >> (h & 63) & 1))
			continue;
		for (unsigned k = ns->head[c]; k != 0xff; k = ns->next[k]) {
			if (ns->tab[k].n <= n - i && memcmp(lc + i, ns->tab[k].s, ns->tab[k].n) == 0)
				return true;
		}
	}
	return false;
}

/* The last verdicts per thread and table: agents repeat (a few mail clients
 * and proxies make most of the traffic), and lowering and scanning one
 * costs several times its hash and a compare. Direct-mapped by the hash of
 * the agent as it came, verified byte for byte; agents longer than
 * AGENT_MEMO_MAX are scanned every time. A per-thread cache, not state: no
 * verdict depends on it (test_agent_memo), so tl_classify keeps its
 * signature; it costs ~27 KB of thread-local storage per thread. */
#define AGENT_MEMO 64 /* power of two */
#define AGENT_MEMO_MAX 200

struct agent_memo {
	uint64_t h;
	uint32_t n; /* 0: empty (an empty agent is never looked up) */
	bool hit;
	char s[AGENT_MEMO_MAX];
};

static _Thread_local struct agent_memo proxy_memo[AGENT_MEMO], scanner_memo[AGENT_MEMO];

/* Whether ua (not empty) holds a needle of ns, case-insensitively. */
static bool agent_matches(struct tl_str ua, const struct needle_set *ns, struct agent_memo *memo)
{
	struct agent_memo *m = NULL;
	uint64_t h = 0;
	if (ua.n <= AGENT_MEMO_MAX) {
		h = XXH3_64bits(ua.p, ua.n);
		m = &memo[h & (AGENT_MEMO - 1)];
		if (m->h == h && tl_str_eq(tl_str_of(m->s, m->n), ua))
			return m->hit;
	}
	char lc[TL_MAX_USER_AGENT];
	size_t n = lower_agent(ua, lc);
	bool hit = agent_has_any(lc, n, ns);
	if (m) {
		m->h = h;
		m->n = ua.n;
		m->hit = hit;
		memcpy(m->s, ua.p, ua.n);
	}
	return hit;
}

static bool within_window(const struct tl_event *ev, int64_t window_ms)
{
	if (ev->sent_ms <= 0 || window_ms <= 0)
		return false;
	/* ts >= sent > 0, so the difference cannot overflow */
	return ev->ts_ms >= ev->sent_ms && ev->ts_ms - ev->sent_ms < window_ms;
}

/* Apple Mail Privacy Protection fetches remote content through Apple's
 * proxies with the bare agent "Mozilla/5.0" and nothing after it. */
static bool is_apple_mpp(struct tl_str ua)
{
	static const char mpp[] = "Mozilla/5.0";
	return ua.n == sizeof mpp - 1 && memcmp(ua.p, mpp, ua.n) == 0;
}

static const char *classify_open(const struct tl_classify_opts *o, const struct tl_event *ev)
{
	if (ev->flags & TL_EVF_PROVIDER_MACHINE)
		return "provider_machine_open";
	if (is_apple_mpp(ev->user_agent))
		return "apple_mpp_agent";
	if (ev->user_agent.n) {
		pthread_once(&proxy_set.once, index_proxy);
		if (agent_matches(ev->user_agent, &proxy_set, proxy_memo))
			return "mail_proxy_agent";
	}
	if (within_window(ev, o->machine_open_window_ms))
		return "open_within_send_window";
	if (ev->flags & TL_EVF_HEAD)
		return "head_request";
	return NULL;
}

static const char *classify_click(const struct tl_classify_opts *o, const struct tl_event *ev)
{
	if (ev->flags & TL_EVF_HEAD)
		return "head_request";
	if (ev->user_agent.n) {
		pthread_once(&scanner_set.once, index_scanner);
		if (agent_matches(ev->user_agent, &scanner_set, scanner_memo))
			return "scanner_agent";
	}
	if (within_window(ev, o->bot_click_window_ms))
		return "click_within_send_window";
	return NULL;
}

/* Classifies an open or click (see classify.h). Clears any previous
 * TL_EVF_MACHINE / TL_EVF_BOT first, so classifying twice gives the same
 * answer. Other event types are left untouched and give NULL. Any thread. */
const char *tl_classify(const struct tl_classify_opts *o, struct tl_event *ev)
{
	const char *rule;
	if (ev->type == TL_EV_OPEN) {
		ev->flags &= (uint16_t)~TL_EVF_MACHINE;
		rule = classify_open(o, ev);
		if (rule)
			ev->flags |= TL_EVF_MACHINE;
		return rule;
	}
	if (ev->type == TL_EV_CLICK) {
		ev->flags &= (uint16_t)~TL_EVF_BOT;
		rule = classify_click(o, ev);
		if (rule)
			ev->flags |= TL_EVF_BOT;
		return rule;
	}
	return NULL;
}
