/* memstore.c — the batch's in-memory staging store (see memstore.h). */
#include "batch/memstore.h"

#include "core/buf.h"
#include "core/hmap.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define NSHARD 64

/* ---- sharded fingerprint sets -------------------------------------------- */

/* A shard is an open-addressing table of buckets, one cache line each: four
 * entries of a 128-bit fingerprint (lo, hi; 0,0 = empty), filled in order,
 * a full bucket continuing into the next. A lookup is then one random
 * access, mostly, even with the table 85 % full. The member set keeps a
 * value per entry in a parallel array. */
#define BUCKET 4    /* entries per bucket: 4 x 16 bytes */
#define FILL_PCT 85 /* highest fill before a shard grows */
#define SHARD_MIN_BUCKETS 256

struct shard {
	pthread_mutex_t mu;
	uint64_t *fp;  /* nb * BUCKET * 2 words */
	uint64_t *val; /* nb * BUCKET values, for a set with values */
	size_t nb, count, max;
} __attribute__((aligned(64)));

struct fpset {
	bool values;
	struct shard sh[NSHARD];
};

static void set_init(struct fpset *s, bool values)
{
	s->values = values;
	for (int i = 0; i < NSHARD; i++) {
		pthread_mutex_init(&s->sh[i].mu, NULL);
		s->sh[i].fp = s->sh[i].val = NULL;
		s->sh[i].nb = s->sh[i].count = s->sh[i].max = 0;
	}
}

static size_t set_count(const struct fpset *s)
{
	size_t n = 0;
	for (int i = 0; i < NSHARD; i++)
		n += s->sh[i].count;
	return n;
}

static inline unsigned shard_of(uint64_t hi)
{
	return (unsigned)(hi >> 58);
}

/* Home bucket of lo among nb: its high bits scaled to nb (nb need not be a
 * power of two, so a table can be sized to what it will hold). */
static inline size_t home(uint64_t lo, size_t nb)
{
#if defined(__SIZEOF_INT128__)
	return (size_t)(((unsigned __int128)lo * nb) >> 64);
#else
	return (size_t)(lo % nb);
#endif
}

/* Zeroed memory. Tables from MAP_MIN up come straight from mmap, their
 * pages faulted in for writing (MADV_POPULATE_WRITE) here, all at once.
 * Left to the inserts (as calloc leaves fresh pages), a page is first read
 * by a probe, which maps the shared zero page, and then written: that
 * copy-on-write flushes the TLB of every CPU running a worker, an IPI and a
 * VM exit per page on a virtual machine (2-3 % of the batch's CPU as the
 * unique sets grew, when MAP_MIN was 2 MiB).
 *
 * The tables take the kernel's default page size. Transparent huge pages
 * (fewer TLB misses on the random probes) measured slower on the VMs tally
 * is benchmarked on: a fresh huge page there mostly comes from memory the
 * guest has handed back to the host, and faulting 420 MB in took 0.8 s of
 * both threads, against ~0.15 s on 4 KiB pages; the run as a whole was
 * ~0.7 s faster without them (docs/benchmarks.md). */
#define MAP_MIN (64u << 10)

static size_t map_bytes(size_t words)
{
	return (words * sizeof(uint64_t) + 4095) / 4096 * 4096;
}

static uint64_t *words_alloc(size_t words)
{
	if (words * sizeof(uint64_t) < MAP_MIN)
		return calloc(words ? words : 1, sizeof(uint64_t));
	size_t bytes = map_bytes(words);
	char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
#if defined(MADV_POPULATE_WRITE)
	if (madvise(p, bytes, MADV_POPULATE_WRITE) == 0)
		return (uint64_t *)(void *)p;
#endif
	for (size_t off = 0; off < bytes; off += 4096) /* older kernels: a write per page */
		((volatile char *)p)[off] = 0;
	return (uint64_t *)(void *)p;
}

static void words_free(uint64_t *p, size_t words)
{
	if (!p)
		return;
	if (words * sizeof(uint64_t) < MAP_MIN)
		free(p);
	else
		munmap(p, map_bytes(words));
}

/* The entry of (lo, hi) in s, or of the empty slot where it goes. */
static inline size_t shard_probe(const struct shard *s, uint64_t lo, uint64_t hi, bool *found)
{
	size_t b = home(lo, s->nb);
	for (;;) {
		const uint64_t *e = &s->fp[b * BUCKET * 2];
		for (int k = 0; k < BUCKET; k++) {
			if (e[2 * k] == lo && e[2 * k + 1] == hi) {
				*found = true;
				return b * BUCKET + (size_t)k;
			}
			if (!e[2 * k] && !e[2 * k + 1]) {
				*found = false;
				return b * BUCKET + (size_t)k;
			}
		}
		b = b + 1 == s->nb ? 0 : b + 1;
	}
}

/* Rehashes s into nb buckets (more than it has). */
static int shard_resize(struct shard *s, bool values, size_t nb)
{
	struct shard n = {.nb = nb, .count = s->count, .max = nb * BUCKET * FILL_PCT / 100};
	n.fp = words_alloc(nb * BUCKET * 2);
	n.val = values ? words_alloc(nb * BUCKET) : NULL;
	if (!n.fp || (values && !n.val)) {
		words_free(n.fp, nb * BUCKET * 2);
		words_free(n.val, nb * BUCKET);
		return -TL_ENOMEM;
	}
	for (size_t i = 0; i < s->nb * BUCKET; i++) {
		const uint64_t *o = &s->fp[2 * i];
		if (!o[0] && !o[1])
			continue;
		bool found;
		size_t j = shard_probe(&n, o[0], o[1], &found);
		n.fp[2 * j] = o[0];
		n.fp[2 * j + 1] = o[1];
		if (values)
			n.val[j] = s->val[i];
	}
	words_free(s->fp, s->nb * BUCKET * 2);
	words_free(s->val, s->nb * BUCKET);
	s->fp = n.fp;
	s->val = n.val;
	s->nb = n.nb;
	s->max = n.max;
	return TL_OK;
}

static void set_free(struct fpset *s)
{
	for (int i = 0; i < NSHARD; i++) {
		pthread_mutex_destroy(&s->sh[i].mu);
		words_free(s->sh[i].fp, s->sh[i].nb * BUCKET * 2);
		words_free(s->sh[i].val, s->sh[i].nb * BUCKET);
	}
}

/* Sizes every shard for n keys in all, so that they need not grow (each
 * growth rehashes the shard and faults in fresh memory). The shards are
 * split among `threads` threads: faulting in fresh memory costs about as
 * much CPU as the inserts that fill it, and it would otherwise run alone
 * before the workers start. */
struct reserve_part {
	struct fpset *s;
	size_t nb;
	int first, step, rc;
	pthread_t th;
};

static void *reserve_part_main(void *arg)
{
	struct reserve_part *p = arg;
	for (int i = p->first; i < NSHARD && !p->rc; i += p->step) {
		struct shard *sh = &p->s->sh[i];
		pthread_mutex_lock(&sh->mu);
		p->rc = p->nb > sh->nb ? shard_resize(sh, p->s->values, p->nb) : TL_OK;
		pthread_mutex_unlock(&sh->mu);
	}
	return NULL;
}

static int set_reserve(struct fpset *s, size_t n, int threads)
{
	size_t per = n / NSHARD + n / NSHARD / 64 + 64; /* the shards fill evenly: +1.6 % */
	size_t nb = per * 100 / FILL_PCT / BUCKET + 1;
	struct reserve_part parts[8];
	bool running[8] = {false};
	int t = threads < 1 ? 1 : threads > 8 ? 8 : threads;
	for (int k = 0; k < t; k++)
		parts[k] = (struct reserve_part){.s = s, .nb = nb, .first = k, .step = t};
	for (int k = 1; k < t; k++)
		running[k] = pthread_create(&parts[k].th, NULL, reserve_part_main, &parts[k]) == 0;
	int rc = TL_OK;
	for (int k = 0; k < t; k++) { /* the caller's part, and any without a thread */
		if (!running[k])
			reserve_part_main(&parts[k]);
	}
	for (int k = 0; k < t; k++) {
		if (running[k])
			pthread_join(parts[k].th, NULL);
		if (!rc)
			rc = parts[k].rc;
	}
	return rc;
}

static inline void shard_prefetch(const struct shard *s, uint64_t lo)
{
	if (s->nb)
		__builtin_prefetch(&s->fp[home(lo, s->nb) * BUCKET * 2], 1);
}

/* Inserts (lo, hi) with val; returns 1 when new, 0 when present (*old = its
 * value), or -TL_ENOMEM. Caller holds s->mu. */
static int shard_insert(struct shard *s, bool values, uint64_t lo, uint64_t hi, uint64_t val, uint64_t *old)
{
	if (!lo && !hi)
		lo = 1; /* (0,0) marks an empty entry */
	if (s->count + 1 > s->max) {
		int rc = shard_resize(s, values, s->nb ? s->nb * 2 : SHARD_MIN_BUCKETS);
		if (rc)
			return rc;
	}
	bool found;
	size_t j = shard_probe(s, lo, hi, &found);
	if (found) {
		if (old)
			*old = values ? s->val[j] : 0;
		return 0;
	}
	s->fp[2 * j] = lo;
	s->fp[2 * j + 1] = hi;
	if (values)
		s->val[j] = val;
	s->count++;
	return 1;
}

/* ---- campaigns and connections ------------------------------------------- */

enum { M_NONE, M_LOADING, M_READY };

struct camp {
	uint32_t cid;
	uint64_t seed;
	char *tenant, *campaign;
	size_t tn, cn;
	int mstate; /* members of other days: M_* (under tl_mem.mu) */
	int load_rc;
	char **variants; /* under tl_mem.mu */
	size_t n_var, cap_var;
};

struct row {
	uint32_t cid, vid;
	int64_t minute;
	int64_t d[TL_M__COUNT];
	int64_t first, last;
};

struct rowset {
	struct row *v;
	size_t n, cap;
	struct tl_hmap map;
};

/* The counter rows of every connection, by (campaign, variant, minute),
 * sharded by campaign, so that a shard holds whole campaigns (and the
 * threads rarely wait for one another). A row that tl_mem_rows_flush wrote
 * is clean (first = INT64_MAX, deltas 0) until it is added to again. */
#define RSHARD 64
#define ROW_CLEAN INT64_MAX

struct rowshard {
	pthread_mutex_t mu;
	struct rowset rs;
} __attribute__((aligned(64)));

struct cached_camp {
	struct camp *c;
	bool ready; /* its other days' members are loaded */
};

struct cached_var {
	uint32_t cid, vid;
	const char *name; /* the camp's copy */
	size_t len;
};

/* The last (tenant, campaign, variant) seen in a slot, for the counter rows:
 * a direct-mapped cache in front of conn_camp and conn_variant, with a hash
 * far cheaper than theirs (a wrong guess only costs the slow way). */
#define RCACHE 4096

struct rcache_ent {
	uint64_t h;
	const struct camp *p; /* NULL: empty */
	const char *vname;    /* the camp's copy */
	size_t vlen;
	uint32_t vid;
};

#define CCACHE 1024
#define RHINT 16384

struct ccache_ent {
	uint64_t h;
	uint32_t idx1; /* index in conn.cc + 1; 0: empty */
};

struct fkey {
	uint64_t lo, hi, val;
	uint32_t idx;
};

/* The members one connection credited to one campaign on one day, as they
 * are found: the day's state file takes them as they are, so the set is
 * never scanned for them at the end. */
struct mlog {
	int32_t day;
	size_t n, cap;
	uint8_t *fp; /* n canonical fingerprints */
};

struct mlogs {
	struct mlog *v; /* usually one: the run's day */
	size_t n, cap;
	size_t last; /* the log used last (a run of many days credits mostly one at a time) */
};

struct conn {
	struct tl_store base; /* first */
	struct tl_mem *m;
	struct tl_hmap cmap; /* campaign cache */
	struct cached_camp *cc;
	size_t n_cc, cap_cc;
	struct tl_hmap vmap; /* variant cache */
	struct cached_var *cv;
	size_t n_cv, cap_cv;
	/* scratch of one call: the keys, and the same grouped by shard */
	struct fkey *keys, *sorted;
	size_t cap_keys, cap_sorted;
	struct rcache_ent *rcache; /* RCACHE entries */
	struct ccache_ent *ccache; /* CCACHE entries */
	uint32_t *rhint;           /* RHINT guesses of a row's index in its shard, by row hash */
	struct staged *stage;      /* rows of one add_counts, and their order by shard */
	uint32_t *sorder;
	size_t cap_stage, cap_sorder;
	struct mlogs *logs; /* by cid; kept until tl_mem_destroy */
	size_t cap_logs;
	struct conn *next;
};

struct tl_mem {
	tl_mem_preload_fn preload;
	void *arg;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct camp **camps; /* by cid; grows under mu (readers use struct camp pointers) */
	size_t n_camps, cap_camps;
	struct tl_hmap cmap;
	struct fpset ids, members;
	struct conn *conns;
	struct rowshard rows[RSHARD];
	_Atomic size_t n_rows_live; /* rows in all shards, as they are added */
};

struct ckey {
	struct tl_str tenant, campaign;
};

static inline bool str_is(const char *p, size_t n, struct tl_str s)
{
	return n == s.n && tl_str_eq(tl_str_of(p, n), s);
}

static int mem_camp_eq(const void *arg, uint32_t idx, const void *key)
{
	const struct tl_mem *m = arg;
	const struct ckey *k = key;
	const struct camp *c = m->camps[idx];
	return str_is(c->campaign, c->cn, k->campaign) && str_is(c->tenant, c->tn, k->tenant);
}

static int conn_camp_eq(const void *arg, uint32_t idx, const void *key)
{
	const struct conn *c = arg;
	const struct ckey *k = key;
	const struct camp *p = c->cc[idx].c;
	return str_is(p->campaign, p->cn, k->campaign) && str_is(p->tenant, p->tn, k->tenant);
}

uint64_t tl_mem_campaign_seed(struct tl_str tenant, struct tl_str campaign)
{
	return XXH3_64bits_withSeed(campaign.p, campaign.n, XXH3_64bits(tenant.p, tenant.n));
}

static void member_hash(uint64_t seed, uint8_t kind, struct tl_str rcpt, uint64_t *lo, uint64_t *hi)
{
	XXH128_hash_t h = XXH3_128bits_withSeed(rcpt.p, rcpt.n, seed ^ kind);
	*lo = h.low64;
	*hi = h.high64;
}

void tl_mem_member_fp(uint64_t campaign_seed, uint8_t kind, struct tl_str recipient, uint8_t fp[TL_FP_BYTES])
{
	XXH128_hash_t h;
	member_hash(campaign_seed, kind, recipient, &h.low64, &h.high64);
	XXH128_canonical_t c;
	XXH128_canonicalFromHash(&c, h);
	memcpy(fp, c.digest, TL_FP_BYTES);
}

/* Finds or registers a campaign (under m->mu). */
static int mem_camp(struct tl_mem *m, uint64_t seed, struct ckey *k, struct camp **out)
{
	pthread_mutex_lock(&m->mu);
	int rc = TL_OK;
	long idx = tl_hmap_find(&m->cmap, seed, k, mem_camp_eq, m);
	if (idx >= 0) {
		*out = m->camps[idx];
		goto out;
	}
	struct camp *c = calloc(1, sizeof *c);
	if (!c || tl_array_grow((void **)&m->camps, &m->cap_camps, m->n_camps + 1, sizeof *m->camps)) {
		free(c);
		rc = -TL_ENOMEM;
		goto out;
	}
	c->cid = (uint32_t)m->n_camps;
	c->seed = seed;
	c->tn = k->tenant.n;
	c->cn = k->campaign.n;
	c->tenant = strndup(k->tenant.p ? k->tenant.p : "", k->tenant.n);
	c->campaign = strndup(k->campaign.p ? k->campaign.p : "", k->campaign.n);
	if (!c->tenant || !c->campaign) {
		free(c->tenant);
		free(c->campaign);
		free(c);
		rc = -TL_ENOMEM;
		goto out;
	}
	int ins;
	long r = tl_hmap_upsert(&m->cmap, seed, k, mem_camp_eq, m, c->cid, &ins);
	if (r < 0) {
		free(c->tenant);
		free(c->campaign);
		free(c);
		rc = (int)r;
		goto out;
	}
	m->camps[m->n_camps++] = c;
	*out = c;
out:
	pthread_mutex_unlock(&m->mu);
	return rc;
}

/* The connection's cached entry for (tenant, campaign). */
static int conn_camp(struct conn *c, struct tl_str tenant, struct tl_str campaign, struct cached_camp **out)
{
	struct ckey k = {tenant, campaign};
	uint64_t seed = tl_mem_campaign_seed(tenant, campaign);
	long idx = tl_hmap_find(&c->cmap, seed, &k, conn_camp_eq, c);
	if (idx >= 0) {
		*out = &c->cc[idx];
		return TL_OK;
	}
	struct camp *p = NULL;
	int rc = mem_camp(c->m, seed, &k, &p);
	if (rc || (rc = tl_array_grow((void **)&c->cc, &c->cap_cc, c->n_cc + 1, sizeof *c->cc)))
		return rc;
	c->cc[c->n_cc] = (struct cached_camp){p, false};
	int ins;
	long r = tl_hmap_upsert(&c->cmap, seed, &k, conn_camp_eq, c, (uint32_t)c->n_cc, &ins);
	if (r < 0)
		return (int)r;
	*out = &c->cc[c->n_cc++];
	return TL_OK;
}

/* Runs the preload of a campaign once (other threads wait for it). */
static int ensure_members(struct conn *c, struct cached_camp *cc)
{
	if (cc->ready)
		return TL_OK;
	struct tl_mem *m = c->m;
	struct camp *p = cc->c;
	pthread_mutex_lock(&m->mu);
	while (p->mstate == M_LOADING)
		pthread_cond_wait(&m->cv, &m->mu);
	if (p->mstate == M_NONE) {
		p->mstate = M_LOADING;
		pthread_mutex_unlock(&m->mu);
		int rc = m->preload ? m->preload(m->arg, m, p->cid, p->tenant, p->campaign) : TL_OK;
		pthread_mutex_lock(&m->mu);
		p->load_rc = rc;
		p->mstate = M_READY;
		pthread_cond_broadcast(&m->cv);
	}
	int rc = p->load_rc;
	pthread_mutex_unlock(&m->mu);
	cc->ready = rc == TL_OK;
	return rc;
}

static int var_eq(const void *arg, uint32_t idx, const void *key)
{
	const struct conn *c = arg;
	const struct cached_var *a = &c->cv[idx], *b = key;
	return a->cid == b->cid && tl_str_eq(tl_str_of(a->name, a->len), tl_str_of(b->name, b->len));
}

/* Variant index of v in campaign p (interned in p, cached per connection). */
static int conn_variant(struct conn *c, struct camp *p, struct tl_str v, uint32_t *vid)
{
	struct cached_var key = {.cid = p->cid, .name = v.p, .len = v.n};
	uint64_t h = XXH3_64bits_withSeed(v.p, v.n, p->seed);
	long idx = tl_hmap_find(&c->vmap, h, &key, var_eq, c);
	if (idx >= 0) {
		*vid = c->cv[idx].vid;
		return TL_OK;
	}
	struct tl_mem *m = c->m;
	int rc = TL_OK;
	pthread_mutex_lock(&m->mu);
	size_t i = 0;
	while (i < p->n_var && !(strlen(p->variants[i]) == v.n && memcmp(p->variants[i], v.p, v.n) == 0))
		i++;
	if (i == p->n_var) {
		char *s = strndup(v.p ? v.p : "", v.n);
		if (!s ||
		    tl_array_grow((void **)&p->variants, &p->cap_var, p->n_var + 1, sizeof *p->variants)) {
			free(s);
			rc = -TL_ENOMEM;
		} else {
			p->variants[p->n_var++] = s;
		}
	}
	const char *name = rc ? NULL : p->variants[i];
	pthread_mutex_unlock(&m->mu);
	if (rc || (rc = tl_array_grow((void **)&c->cv, &c->cap_cv, c->n_cv + 1, sizeof *c->cv)))
		return rc;
	c->cv[c->n_cv] = (struct cached_var){p->cid, (uint32_t)i, name, v.n};
	int ins;
	long r = tl_hmap_upsert(&c->vmap, h, &key, var_eq, c, (uint32_t)c->n_cv, &ins);
	if (r < 0)
		return (int)r;
	c->n_cv++;
	*vid = (uint32_t)i;
	return TL_OK;
}

/* ---- rows ----------------------------------------------------------------- */

static int row_eq(const void *arg, uint32_t idx, const void *key)
{
	const struct rowset *rs = arg;
	const struct row *a = &rs->v[idx], *b = key;
	return a->cid == b->cid && a->vid == b->vid && a->minute == b->minute;
}

/* The map indexes by the low bits: mix every input bit into them. */
static inline uint64_t row_hash(uint32_t cid, uint32_t vid, int64_t minute)
{
	uint64_t x = ((uint64_t)cid << 32 | vid) ^ ((uint64_t)minute / 60000) * 0x9E3779B97F4A7C15ULL;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
	return x ^ (x >> 31);
}

/* A row of one add_counts call, before it goes into its shard. */
struct staged {
	struct row r;
	uint64_t hash;
	uint32_t *hint; /* the connection's guess of the row's index in its shard */
};

/* Adds d etc. to row `row` of rs (its key is checked by the caller). */
static inline void row_accumulate(struct row *row, const int64_t *d, int64_t first, int64_t last)
{
	for (int k = 0; k < TL_M__COUNT; k++)
		row->d[k] += d[k];
	if (first < row->first)
		row->first = first;
	if (last > row->last)
		row->last = last;
}

static inline unsigned rshard_of(uint32_t cid)
{
	return cid % RSHARD;
}

/* Adds to the row of (cid, vid, minute), inserting it; returns its index in
 * rs, or -TL_ENOMEM. */
static long rows_add(struct rowset *rs, uint64_t hash, uint32_t cid, uint32_t vid, int64_t minute,
                     const int64_t *d, int64_t first, int64_t last)
{
	struct row key = {.cid = cid, .vid = vid, .minute = minute};
	int rc = tl_array_grow((void **)&rs->v, &rs->cap, rs->n + 1, sizeof *rs->v);
	if (rc)
		return rc;
	int ins;
	long r = tl_hmap_upsert(&rs->map, hash, &key, row_eq, rs, (uint32_t)rs->n, &ins);
	if (r < 0)
		return r;
	struct row *row = &rs->v[r];
	if (ins) {
		*row = key;
		row->first = first;
		row->last = last;
		rs->n++;
	}
	row_accumulate(row, d, first, last);
	return r;
}

/* ---- the store ops --------------------------------------------------------- */

static inline struct conn *cn(struct tl_store *st)
{
	return (struct conn *)st;
}

static int scratch(struct conn *c, size_t n)
{
	if (tl_array_grow((void **)&c->keys, &c->cap_keys, n, sizeof *c->keys) ||
	    tl_array_grow((void **)&c->sorted, &c->cap_sorted, n, sizeof *c->sorted))
		return -TL_ENOMEM;
	return TL_OK;
}

/* Inserts c->keys[0..n) into set: grouped by shard (one lock per shard
 * touched) into a contiguous array, so that the slot of a key a few places
 * ahead can be prefetched while the current one is probed. */
static int insert_many(struct conn *c, struct fpset *set, size_t n, uint8_t *is_new)
{
	size_t start[NSHARD + 1] = {0};
	for (size_t i = 0; i < n; i++)
		start[shard_of(c->keys[i].hi) + 1]++;
	for (int s = 0; s < NSHARD; s++)
		start[s + 1] += start[s];
	size_t pos[NSHARD];
	memcpy(pos, start, sizeof pos);
	for (size_t i = 0; i < n; i++) {
		c->keys[i].idx = (uint32_t)i;
		c->sorted[pos[shard_of(c->keys[i].hi)]++] = c->keys[i];
	}
	for (int s = 0; s < NSHARD; s++) {
		if (start[s] == start[s + 1])
			continue;
		struct shard *sh = &set->sh[s];
		pthread_mutex_lock(&sh->mu);
		int rc = TL_OK;
		for (size_t j = start[s]; j < start[s] + 8 && j < start[s + 1]; j++)
			shard_prefetch(sh, c->sorted[j].lo); /* then 8 ahead in the loop */
		for (size_t j = start[s]; j < start[s + 1] && rc >= 0; j++) {
			if (j + 8 < start[s + 1])
				shard_prefetch(sh, c->sorted[j + 8].lo);
			const struct fkey *k = &c->sorted[j];
			rc = shard_insert(sh, set->values, k->lo, k->hi, k->val, NULL);
			is_new[k->idx] = rc == 1;
		}
		pthread_mutex_unlock(&sh->mu);
		if (rc < 0)
			return rc;
	}
	return TL_OK;
}

static int op_begin(struct tl_store *st, enum tl_source src)
{
	(void)st;
	return src == TL_SOURCE_BATCH ? TL_OK : -TL_EINVAL;
}

static int op_dedupe(struct tl_store *st, const struct tl_dedupe_key *keys, size_t n, uint8_t *is_new)
{
	struct conn *c = cn(st);
	int rc = scratch(c, n);
	if (rc)
		return rc;
	struct tl_str tenant = TL_STR_NULL;
	uint64_t seed = 0;
	for (size_t i = 0; i < n; i++) {
		if (i == 0 || !str_is(tenant.p, tenant.n, keys[i].tenant)) { /* mostly one tenant */
			tenant = keys[i].tenant;
			seed = XXH3_64bits(tenant.p, tenant.n);
		}
		XXH128_hash_t h = XXH3_128bits_withSeed(keys[i].id.p, keys[i].id.n, seed);
		c->keys[i] = (struct fkey){.lo = h.low64, .hi = h.high64};
	}
	return insert_many(c, &c->m->ids, n, is_new);
}

static int64_t day_of(int64_t ms)
{
	int64_t d = ms / 86400000LL;
	return ms < 0 && d * 86400000LL != ms ? d - 1 : d;
}

/* The connection's entry for (tenant, campaign) through the campaign cache:
 * direct-mapped, by a hash far cheaper than conn_camp's, verified by the
 * strings (unique keys come in event order, their campaigns interleaved). */
static int camp_of(struct conn *c, struct tl_str tenant, struct tl_str campaign, struct cached_camp **out)
{
	uint64_t h = tl_str_hash_quick(tl_str_hash_quick(0, tenant), campaign);
	struct ccache_ent *e = &c->ccache[h & (CCACHE - 1)];
	if (e->idx1 && e->h == h) {
		struct cached_camp *cc = &c->cc[e->idx1 - 1];
		if (str_is(cc->c->campaign, cc->c->cn, campaign) &&
		    str_is(cc->c->tenant, cc->c->tn, tenant)) {
			*out = cc;
			return TL_OK;
		}
	}
	int rc = conn_camp(c, tenant, campaign, out);
	if (!rc)
		*e = (struct ccache_ent){.h = h, .idx1 = (uint32_t)(*out - c->cc) + 1};
	return rc;
}

/* Records a member k just credited (cid and day in k->val) in the
 * connection's log of its campaign and day. The logs hold what the set
 * credited this run, no more: they are bounded as the set is, by the
 * members of the days being recomputed. On failure the member is in the
 * set but not in the log: the call fails, and a failed call fails the
 * batch run (it is never retried on the same store). */
static int log_member(struct conn *c, const struct fkey *k)
{
	uint32_t cid = (uint32_t)(k->val >> 32);
	int32_t day = (int32_t)(uint32_t)k->val;
	if (cid >= c->cap_logs) {
		size_t old = c->cap_logs;
		if (tl_array_grow((void **)&c->logs, &c->cap_logs, (size_t)cid + 1, sizeof *c->logs))
			return -TL_ENOMEM;
		memset(c->logs + old, 0, (c->cap_logs - old) * sizeof *c->logs);
	}
	struct mlogs *ls = &c->logs[cid];
	struct mlog *l = ls->last < ls->n && ls->v[ls->last].day == day ? &ls->v[ls->last] : NULL;
	for (size_t j = 0; j < ls->n && !l; j++)
		if (ls->v[j].day == day)
			l = &ls->v[j];
	if (!l) {
		if (tl_array_grow((void **)&ls->v, &ls->cap, ls->n + 1, sizeof *ls->v))
			return -TL_ENOMEM;
		l = &ls->v[ls->n++];
		*l = (struct mlog){.day = day};
	}
	ls->last = (size_t)(l - ls->v);
	if (tl_array_grow((void **)&l->fp, &l->cap, l->n + 1, TL_FP_BYTES))
		return -TL_ENOMEM;
	/* as the set holds it: (0,0) marks an empty entry there */
	XXH128_hash_t h = {.low64 = k->lo || k->hi ? k->lo : 1, .high64 = k->hi};
	XXH128_canonical_t canon;
	XXH128_canonicalFromHash(&canon, h);
	memcpy(l->fp + l->n++ * TL_FP_BYTES, canon.digest, TL_FP_BYTES);
	return TL_OK;
}

static int op_uniques(struct tl_store *st, const struct tl_unique_key *keys, size_t n, uint8_t *is_new)
{
	struct conn *c = cn(st);
	int rc = scratch(c, n);
	if (rc)
		return rc;
	if (!c->ccache && !(c->ccache = calloc(CCACHE, sizeof *c->ccache)))
		return -TL_ENOMEM;
	struct cached_camp *cc = NULL;
	for (size_t i = 0; i < n; i++) {
		const struct tl_unique_key *k = &keys[i];
		if (!cc || !str_is(cc->c->campaign, cc->c->cn, k->campaign) ||
		    !str_is(cc->c->tenant, cc->c->tn, k->tenant)) {
			if ((rc = camp_of(c, k->tenant, k->campaign, &cc)) || (rc = ensure_members(c, cc)))
				return rc;
		}
		member_hash(cc->c->seed, k->kind, k->recipient, &c->keys[i].lo, &c->keys[i].hi);
		c->keys[i].val = (uint64_t)cc->c->cid << 32 | (uint32_t)(int32_t)day_of(k->ts_ms);
	}
	if ((rc = insert_many(c, &c->m->members, n, is_new)))
		return rc;
	for (size_t i = 0; i < n; i++)
		if (is_new[i] && (rc = log_member(c, &c->keys[i])))
			return rc;
	return TL_OK;
}

/* Campaign and variant of row r: from the row cache when it holds them. */
static int row_ids(struct conn *c, const struct tl_count_row *r, uint32_t *cid, uint32_t *vid)
{
	uint64_t h = tl_str_hash_quick(tl_str_hash_quick(0, r->tenant), r->campaign);
	h = tl_str_hash_quick(h, r->variant);
	struct rcache_ent *e = &c->rcache[h & (RCACHE - 1)];
	if (e->p && e->h == h && str_is(e->vname, e->vlen, r->variant) &&
	    str_is(e->p->campaign, e->p->cn, r->campaign) && str_is(e->p->tenant, e->p->tn, r->tenant)) {
		*cid = e->p->cid;
		*vid = e->vid;
		return TL_OK;
	}
	struct cached_camp *cc;
	int rc = conn_camp(c, r->tenant, r->campaign, &cc);
	if (!rc)
		rc = conn_variant(c, cc->c, r->variant, vid);
	if (rc)
		return rc;
	pthread_mutex_lock(&c->m->mu); /* the camp's variants array may move while others add */
	const char *vname = cc->c->variants[*vid];
	pthread_mutex_unlock(&c->m->mu);
	*e = (struct rcache_ent){.h = h, .p = cc->c, .vname = vname, .vlen = r->variant.n, .vid = *vid};
	*cid = cc->c->cid;
	return TL_OK;
}

/* Resolves the rows' campaigns and variants (through the connection's
 * caches), then adds them shard by shard, one lock each. */
static int op_add_counts(struct tl_store *st, const struct tl_count_row *rows, size_t n)
{
	struct conn *c = cn(st);
	if (tl_array_grow((void **)&c->stage, &c->cap_stage, n, sizeof *c->stage) ||
	    tl_array_grow((void **)&c->sorder, &c->cap_sorder, n, sizeof *c->sorder))
		return -TL_ENOMEM;
	if (!c->rcache && !(c->rcache = calloc(RCACHE, sizeof *c->rcache)))
		return -TL_ENOMEM;
	if (!c->rhint && !(c->rhint = calloc(RHINT, sizeof *c->rhint)))
		return -TL_ENOMEM;
	size_t start[RSHARD + 1] = {0};
	for (size_t i = 0; i < n; i++) {
		const struct tl_count_row *r = &rows[i];
		uint32_t cid = 0, vid = 0;
		int rc = row_ids(c, r, &cid, &vid);
		if (rc)
			return rc;
		struct staged *sg = &c->stage[i];
		sg->r.cid = cid;
		sg->r.vid = vid;
		sg->r.minute = r->minute_ms;
		memcpy(sg->r.d, r->delta, sizeof sg->r.d);
		sg->r.first = r->first_ts_ms ? r->first_ts_ms : r->minute_ms;
		sg->r.last = r->last_ts_ms ? r->last_ts_ms : r->minute_ms;
		sg->hash = row_hash(cid, vid, r->minute_ms);
		sg->hint = &c->rhint[sg->hash & (RHINT - 1)];
		start[rshard_of(cid) + 1]++;
	}
	for (int k = 0; k < RSHARD; k++)
		start[k + 1] += start[k];
	size_t pos[RSHARD];
	memcpy(pos, start, sizeof pos);
	for (size_t i = 0; i < n; i++)
		c->sorder[pos[rshard_of(c->stage[i].r.cid)]++] = (uint32_t)i;
	for (int k = 0; k < RSHARD; k++) {
		if (start[k] == start[k + 1])
			continue;
		struct rowshard *sh = &c->m->rows[k];
		int rc = TL_OK;
		pthread_mutex_lock(&sh->mu);
		size_t n0 = sh->rs.n;
		for (size_t j = start[k]; j < start[k + 1] && !rc; j++) {
			const struct staged *sg = &c->stage[c->sorder[j]];
			/* where the row was the last time: no map lookup if it still is */
			struct row *h = *sg->hint < sh->rs.n ? &sh->rs.v[*sg->hint] : NULL;
			if (h && h->cid == sg->r.cid && h->vid == sg->r.vid && h->minute == sg->r.minute) {
				row_accumulate(h, sg->r.d, sg->r.first, sg->r.last);
				continue;
			}
			long idx = rows_add(&sh->rs, sg->hash, sg->r.cid, sg->r.vid, sg->r.minute, sg->r.d,
			                    sg->r.first, sg->r.last);
			if (idx < 0)
				rc = (int)idx;
			else
				*sg->hint = (uint32_t)idx;
		}
		atomic_fetch_add(&c->m->n_rows_live, sh->rs.n - n0);
		pthread_mutex_unlock(&sh->mu);
		if (rc)
			return rc;
	}
	return TL_OK;
}

static int op_offsets_set(struct tl_store *st, const char *consumer, const struct tl_offset *o, size_t n)
{
	(void)st;
	(void)consumer;
	(void)o;
	(void)n;
	return TL_OK;
}

static int op_commit(struct tl_store *st)
{
	(void)st;
	return TL_OK;
}

static void op_rollback(struct tl_store *st)
{
	(void)st; /* a failed apply is retried by the caller with the same events */
}

static void op_close(struct tl_store *st)
{
	struct conn *c = cn(st);
	tl_hmap_free(&c->cmap);
	tl_hmap_free(&c->vmap);
	free(c->cc);
	free(c->cv);
	free(c->keys);
	free(c->sorted);
	free(c->stage);
	free(c->sorder);
	free(c->rcache);
	free(c->ccache);
	free(c->rhint);
	/* the connection itself stays until tl_mem_destroy */
}

static const struct tl_store_ops mem_ops = {
    .scheme = "mem",
    .close = op_close,
    .begin = op_begin,
    .dedupe = op_dedupe,
    .dedupe_repeats = true, /* insert_many keeps the order within a shard, and a key has one shard */
    .uniques = op_uniques,
    .add_counts = op_add_counts,
    .offsets_set = op_offsets_set,
    .commit = op_commit,
    .rollback = op_rollback,
};

/* ---- the shared part ------------------------------------------------------- */

int tl_mem_create(tl_mem_preload_fn preload, void *arg, struct tl_mem **out)
{
	struct tl_mem *m = calloc(1, sizeof *m);
	if (!m)
		return -TL_ENOMEM;
	m->preload = preload;
	m->arg = arg;
	pthread_mutex_init(&m->mu, NULL);
	pthread_cond_init(&m->cv, NULL);
	tl_hmap_init(&m->cmap);
	set_init(&m->ids, false);
	set_init(&m->members, true);
	for (int k = 0; k < RSHARD; k++) {
		pthread_mutex_init(&m->rows[k].mu, NULL);
		tl_hmap_init(&m->rows[k].rs.map);
	}
	*out = m;
	return TL_OK;
}

void tl_mem_destroy(struct tl_mem *m)
{
	if (!m)
		return;
	for (struct conn *c = m->conns, *next; c; c = next) {
		next = c->next;
		for (size_t i = 0; i < c->cap_logs; i++) {
			for (size_t j = 0; j < c->logs[i].n; j++)
				free(c->logs[i].v[j].fp);
			free(c->logs[i].v);
		}
		free(c->logs);
		free(c);
	}
	for (int k = 0; k < RSHARD; k++) {
		pthread_mutex_destroy(&m->rows[k].mu);
		free(m->rows[k].rs.v);
		tl_hmap_free(&m->rows[k].rs.map);
	}
	for (size_t i = 0; i < m->n_camps; i++) {
		struct camp *p = m->camps[i];
		for (size_t j = 0; j < p->n_var; j++)
			free(p->variants[j]);
		free(p->variants);
		free(p->tenant);
		free(p->campaign);
		free(p);
	}
	free(m->camps);
	tl_hmap_free(&m->cmap);
	set_free(&m->ids);
	set_free(&m->members);
	pthread_mutex_destroy(&m->mu);
	pthread_cond_destroy(&m->cv);
	free(m);
}

int tl_mem_conn_open(struct tl_mem *m, struct tl_store **out)
{
	struct conn *c = calloc(1, sizeof *c);
	if (!c)
		return -TL_ENOMEM;
	c->base.ops = &mem_ops;
	c->m = m;
	tl_hmap_init(&c->cmap);
	tl_hmap_init(&c->vmap);
	pthread_mutex_lock(&m->mu);
	c->next = m->conns;
	m->conns = c;
	pthread_mutex_unlock(&m->mu);
	*out = &c->base;
	return TL_OK;
}

int tl_mem_reserve_ids(struct tl_mem *m, size_t n, int threads)
{
	return set_reserve(&m->ids, n, threads);
}

int tl_mem_add_preloaded(struct tl_mem *m, uint32_t cid, const uint8_t fp[TL_FP_BYTES])
{
	XXH128_canonical_t canon;
	memcpy(canon.digest, fp, TL_FP_BYTES);
	XXH128_hash_t h = XXH128_hashFromCanonical(&canon);
	struct shard *sh = &m->members.sh[shard_of(h.high64)];
	pthread_mutex_lock(&sh->mu);
	uint64_t old;
	int rc =
	    shard_insert(sh, true, h.low64, h.high64, (uint64_t)cid << 32 | (uint32_t)TL_MEM_PRELOADED, &old);
	pthread_mutex_unlock(&sh->mu);
	return rc < 0 ? rc : TL_OK;
}

size_t tl_mem_campaigns_count(const struct tl_mem *m)
{
	return m->n_camps;
}

void tl_mem_campaign_get(const struct tl_mem *m, uint32_t cid, struct tl_mem_campaign *out)
{
	const struct camp *p = m->camps[cid];
	*out = (struct tl_mem_campaign){p->tenant, p->campaign, (const char *const *)p->variants, p->n_var};
}

size_t tl_mem_rows_live(struct tl_mem *m)
{
	return atomic_load(&m->n_rows_live);
}

int tl_mem_rows_flush(struct tl_mem *m, tl_mem_rows_fn fn, void *arg)
{
	return tl_mem_rows_flush_until(m, fn, arg, NULL);
}

int tl_mem_rows_flush_until(struct tl_mem *m, tl_mem_rows_fn fn, void *arg, const atomic_bool *stop)
{
	struct tl_count_row *out = NULL;
	uint32_t *oc = NULL, *ov = NULL;
	size_t cap = 0;
	int rc = TL_OK;
	for (int k = 0; k < RSHARD && !rc && !(stop && atomic_load(stop)); k++) {
		struct rowshard *sh = &m->rows[k];
		pthread_mutex_lock(&sh->mu);
		if (sh->rs.n > cap) {
			size_t nc = sh->rs.n * 2;
			struct tl_count_row *no = realloc(out, nc * sizeof *no);
			if (no)
				out = no;
			uint32_t *nc1 = realloc(oc, nc * sizeof *nc1);
			if (nc1)
				oc = nc1;
			uint32_t *nv = realloc(ov, nc * sizeof *nv);
			if (nv)
				ov = nv;
			if (!no || !nc1 || !nv)
				rc = -TL_ENOMEM;
			else
				cap = nc;
		}
		size_t n = 0;
		pthread_mutex_lock(&m->mu); /* the campaigns and their variants, which workers may add to */
		for (size_t i = 0; i < sh->rs.n && !rc; i++) {
			struct row *r = &sh->rs.v[i];
			if (r->first == ROW_CLEAN)
				continue;
			const struct camp *p = m->camps[r->cid];
			const char *v = p->variants[r->vid];
			out[n] = (struct tl_count_row){.tenant = tl_str_of(p->tenant, p->tn),
			                               .campaign = tl_str_of(p->campaign, p->cn),
			                               .variant = tl_str_of(v, strlen(v)),
			                               .minute_ms = r->minute,
			                               .first_ts_ms = r->first,
			                               .last_ts_ms = r->last};
			memcpy(out[n].delta, r->d, sizeof r->d);
			oc[n] = r->cid;
			ov[n] = r->vid;
			n++;
			memset(r->d, 0, sizeof r->d);
			r->first = ROW_CLEAN;
			r->last = INT64_MIN;
		}
		pthread_mutex_unlock(&m->mu);
		pthread_mutex_unlock(&sh->mu);
		/* the strings stay valid: campaigns and variants are never freed before tl_mem_destroy */
		if (!rc && n)
			rc = fn(arg, out, oc, ov, n);
	}
	free(out);
	free(oc);
	free(ov);
	return rc;
}

int tl_mem_row_keys(const struct tl_mem *m, tl_mem_key_fn fn, void *arg)
{
	for (int k = 0; k < RSHARD; k++) {
		const struct rowset *rs = &m->rows[k].rs;
		for (size_t i = 0; i < rs->n; i++) {
			int rc = fn(arg, rs->v[i].cid, rs->v[i].vid, rs->v[i].minute);
			if (rc)
				return rc;
		}
	}
	return TL_OK;
}

uint64_t tl_mem_credited_total(const struct tl_mem *m)
{
	uint64_t n = 0;
	for (const struct conn *c = m->conns; c; c = c->next)
		for (size_t i = 0; i < c->cap_logs; i++)
			for (size_t j = 0; j < c->logs[i].n; j++)
				n += c->logs[i].v[j].n;
	return n;
}

int tl_mem_credited(const struct tl_mem *m, uint32_t cid, int32_t day, tl_mem_fps_fn fn, void *arg)
{
	for (const struct conn *c = m->conns; c; c = c->next) {
		if (cid >= c->cap_logs)
			continue;
		const struct mlogs *ls = &c->logs[cid];
		for (size_t j = 0; j < ls->n; j++) {
			if (ls->v[j].day != day || !ls->v[j].n)
				continue;
			int rc = fn(arg, ls->v[j].fp, ls->v[j].n);
			if (rc)
				return rc;
		}
	}
	return TL_OK;
}

size_t tl_mem_ids(const struct tl_mem *m)
{
	return set_count(&m->ids);
}

size_t tl_mem_member_count(const struct tl_mem *m)
{
	return set_count(&m->members);
}
