/* batch.c — the batch recompute (see batch.h): workers read, parse, enrich
 * and fold archive files into the staging store; the calling thread reports
 * progress, then writes the day state files and replaces the days in the
 * reporting DB in one transaction. */
#include "batch/batch.h"

#include "batch/memstore.h"
#include "batch/reader.h"
#include "batch/state.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/hmap.h"
#include "pipeline/enrich.h"
#include "pipeline/fold.h"
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DAY_MS 86400000LL
#define MAX_THREADS 64

static const char *const reason_names[TL_BATCH_REASONS] = {"bad_token",  "bad_signature", "unknown_tenant",
                                                           "token_kind", "invalid_event", "other"};

const char *tl_batch_reason_name(int i)
{
	return i >= 0 && i < TL_BATCH_REASONS ? reason_names[i] : NULL;
}

/* ---- the run's shared state ------------------------------------------------ */

struct other_day {
	int64_t day;
	uint64_t runid;
	struct tl_bstate *state; /* opened on first need, under run.mu */
	int open_rc;
	bool opened;
};

struct run {
	const struct tl_batch_opts *o;
	struct tl_batch_stats *st;
	int64_t from_ms, to_ms;
	struct tl_tenant *tenants;
	size_t n_tenants;
	struct tl_archive_file *files;
	size_t n_files;
	_Atomic size_t next_file;
	struct tl_mem *mem;
	struct other_day *others;
	size_t n_others;
	pthread_mutex_t mu; /* others[], first error, done */
	pthread_cond_t cv;
	int workers_done, n_workers; /* n_workers: set before the first starts */
	int failed;
	/* progress */
	_Atomic uint64_t files_done, bytes_done, lines;
	atomic_bool reading_done; /* every worker has ended: an early pass stops */
};

static void set_error(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(struct run *r, const char *fmt, ...)
{
	pthread_mutex_lock(&r->mu);
	if (!r->st->error[0]) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(r->st->error, sizeof r->st->error, fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&r->mu);
}

/* Remembers the first line that is not a valid event. */
static void note_bad(struct run *r, const char *path, uint64_t line, const char *why)
{
	pthread_mutex_lock(&r->mu);
	if (!r->st->first_bad[0])
		snprintf(r->st->first_bad, sizeof r->st->first_bad, "%s:%" PRIu64 ": %s", path, line, why);
	pthread_mutex_unlock(&r->mu);
}

/* ---- tenants for the enrichment ------------------------------------------- */

static int cmp_tenant(const void *a, const void *b)
{
	return strcmp(((const struct tl_tenant *)a)->name, ((const struct tl_tenant *)b)->name);
}

struct name_key {
	const char *p;
	size_t n;
};

static int cmp_name_key(const void *k, const void *t)
{
	const struct name_key *key = k;
	const char *name = ((const struct tl_tenant *)t)->name;
	size_t n = strlen(name), m = key->n < n ? key->n : n;
	int r = m ? memcmp(key->p, name, m) : 0;
	return r ? r : (key->n > n) - (key->n < n);
}

/* tl_tenant_lookup_fn over the sorted, read-only table of the run. */
static const struct tl_tenant *lookup(void *arg, const char *name, size_t len)
{
	const struct run *r = arg;
	struct name_key k = {name, len};
	return r->n_tenants ? bsearch(&k, r->tenants, r->n_tenants, sizeof *r->tenants, cmp_name_key) : NULL;
}

/* ---- other days' members (the preload) -------------------------------------- */

static int other_state(struct run *r, struct other_day *d, struct tl_bstate **out)
{
	pthread_mutex_lock(&r->mu);
	if (!d->opened) {
		char path[PATH_MAX];
		d->open_rc = tl_bstate_path(r->o->state_dir, d->day, d->runid, path, sizeof path);
		if (!d->open_rc)
			d->open_rc = tl_bstate_open(path, &d->state);
		d->opened = true;
	}
	int rc = d->open_rc;
	*out = d->state;
	pthread_mutex_unlock(&r->mu);
	return rc;
}

static int preload(void *arg, struct tl_mem *m, uint32_t cid, const char *tenant, const char *campaign)
{
	struct run *r = arg;
	for (size_t i = 0; i < r->n_others; i++) {
		struct other_day *d = &r->others[i];
		struct tl_bstate *s;
		int rc = other_state(r, d, &s);
		if (rc) {
			char dt[32];
			if (tl_bstate_topic(d->day, dt, sizeof dt))
				dt[0] = '\0';
			set_error(r, "state of %s (run %" PRIu64 ") in %s: %s; recompute that day", dt,
			          d->runid, r->o->state_dir, tl_strerror(rc));
			return rc;
		}
		const struct tl_bstate_campaign *c = tl_bstate_find(s, tenant, campaign);
		if (!c || !c->count)
			continue;
		uint8_t *fps = malloc((size_t)c->count * TL_FP_BYTES);
		if (!fps)
			return -TL_ENOMEM;
		rc = tl_bstate_members(s, c, fps);
		for (uint64_t k = 0; k < c->count && !rc; k++)
			rc = tl_mem_add_preloaded(m, cid, fps + k * TL_FP_BYTES);
		free(fps);
		if (rc) {
			set_error(r, "state file %s: %s", s->path, tl_strerror(rc));
			return rc;
		}
	}
	return TL_OK;
}

struct span_ctx {
	int64_t *days;
	size_t n, cap;
};

static int add_day(struct span_ctx *sc, int64_t d)
{
	if (sc->n == sc->cap) {
		size_t nc = sc->cap ? sc->cap * 2 : 64;
		int64_t *nv = realloc(sc->days, nc * sizeof *nv);
		if (!nv)
			return -TL_ENOMEM;
		sc->days = nv;
		sc->cap = nc;
	}
	sc->days[sc->n++] = d;
	return TL_OK;
}

/* tl_campaign_fn: the days of a batch campaign's [first, last]. */
static int span_days(void *arg, const struct tl_campaign_summary *c)
{
	int64_t a = c->first_ms / DAY_MS, b = c->last_ms / DAY_MS;
	int rc = TL_OK;
	for (int64_t d = a; d <= b && d - a < 100000 && !rc; d++)
		rc = add_day(arg, d);
	return rc;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

/* Days outside the run that a previous run committed: those the state
 * directory has and those the batch campaigns span; each must have its file. */
static int find_other_days(struct run *r, struct tl_store *st)
{
	struct span_ctx sc = {0};
	int rc = tl_archive_days_list(r->o->state_dir, INT32_MIN, INT32_MAX, &sc.days, &sc.n);
	sc.cap = sc.n;
	for (size_t t = 0; t < r->n_tenants && !rc; t++)
		rc = tl_store_campaigns(st, TL_SOURCE_BATCH, r->tenants[t].name, 0, span_days, &sc);
	if (!rc && sc.n)
		qsort(sc.days, sc.n, sizeof *sc.days, cmp_i64);
	for (size_t i = 0; i < sc.n && !rc; i++) {
		int64_t day = sc.days[i];
		if ((i && day == sc.days[i - 1]) || (day >= r->o->from_day && day <= r->o->to_day))
			continue;
		char topic[32], path[PATH_MAX];
		uint64_t runid = 0;
		if ((rc = tl_bstate_topic(day, topic, sizeof topic)) ||
		    (rc = tl_store_offset_get(st, TL_BSTATE_CONSUMER, topic, 0, &runid)))
			break;
		if (!runid)
			continue; /* never committed: leftovers of a failed run */
		if ((rc = tl_bstate_path(r->o->state_dir, day, runid, path, sizeof path)))
			break;
		struct stat sb;
		if (stat(path, &sb)) {
			set_error(r,
			          "the reporting DB says %s was recomputed by run %" PRIu64
			          " but %s is missing; "
			          "recompute that day (or every day of its campaigns) in this run",
			          topic, runid, path);
			rc = -TL_ENOTFOUND;
			break;
		}
		struct other_day *nd = realloc(r->others, (r->n_others + 1) * sizeof *nd);
		if (!nd) {
			rc = -TL_ENOMEM;
			break;
		}
		r->others = nd;
		r->others[r->n_others++] = (struct other_day){.day = day, .runid = runid};
	}
	free(sc.days);
	return rc;
}

/* ---- workers ---------------------------------------------------------------- */

struct worker {
	struct run *r;
	pthread_t th;
	int rc;
	struct tl_store *conn;
	struct tl_fold *fold;
	struct tl_arena arena;
	struct tl_enrich_scratch scratch;
	struct tl_enrich_ctx ctx;
	struct tl_archive_reader *reader; /* reused for every file */
	/* counters, summed by the calling thread at the end */
	uint64_t lines, bad, out_of_range, rejected[TL_BATCH_REASONS], skipped, folded;
	struct tl_fold_stats fs;
};

static int apply(struct worker *w)
{
	struct tl_fold_stats s;
	int rc = tl_fold_apply(w->fold, w->conn, TL_SOURCE_BATCH, TL_BSTATE_CONSUMER, NULL, 0, &s);
	if (rc)
		return rc; /* the staging store cannot roll back: the run fails */
	w->fs.duplicates += s.duplicates;
	w->fs.counted += s.counted;
	w->fs.uniques_new += s.uniques_new;
	tl_fold_reset(w->fold);
	return TL_OK;
}

static int reason_index(const char *reason)
{
	for (int i = 0; i < TL_BATCH_REASONS - 1; i++)
		if (!strcmp(reason, reason_names[i]))
			return i;
	return TL_BATCH_REASONS - 1;
}

static int process_file(struct worker *w, const struct tl_archive_file *f)
{
	struct run *r = w->r;
	bool events = !strcmp(f->name.topic, TL_TOPIC_EVENTS);
	if (!events && strcmp(f->name.topic, TL_TOPIC_DELIVERY)) {
		atomic_fetch_add(&r->bytes_done, f->size);
		return TL_OK; /* not a topic the pipeline counts */
	}
	struct tl_archive_reader *rd = w->reader;
	int rc = rd ? tl_archive_reader_reopen(rd, f->path) : tl_archive_reader_open(f->path, &w->reader);
	rd = w->reader;
	if (rc) {
		set_error(r, "%s: %s", f->path, tl_strerror(rc));
		return rc;
	}
	uint64_t line_no = 0, rep_bytes = 0, rep_lines = 0;
	const char *line;
	size_t len;
	char err[256];
	while ((rc = tl_archive_reader_next(rd, &line, &len)) == 1) {
		line_no++;
		if ((line_no & 0xffff) == 0) {
			uint64_t off = tl_archive_reader_offset(rd);
			atomic_fetch_add(&r->bytes_done, off - rep_bytes);
			atomic_fetch_add(&r->lines, line_no - rep_lines);
			rep_bytes = off;
			rep_lines = line_no;
		}
		if (!len)
			continue;
		struct tl_event ev;
		bool arena_used = false;
		if (tl_batch_parse_fast(line, len, &ev) == 0) {
			rc = TL_OK;
		} else {
			arena_used = true;
			rc = tl_event_from_json(line, len, &w->arena, &ev, err, sizeof err);
		}
		bool fold = false;
		if (rc) {
			w->bad++;
			note_bad(r, f->path, line_no, err);
		} else if (ev.ts_ms < r->from_ms || ev.ts_ms >= r->to_ms) {
			w->out_of_range++;
		} else if (events) {
			const char *reason = NULL;
			if (tl_enrich_event(&w->ctx, &ev, &w->scratch, &reason))
				w->rejected[reason_index(reason ? reason : "")]++;
			else
				fold = true;
		} else if (ev.flags & (TL_EVF_DEAD | TL_EVF_HIT)) {
			w->skipped++; /* the aggregator skips these too */
		} else {
			fold = true;
		}
		rc = TL_OK;
		if (fold) {
			if ((rc = tl_fold_add(w->fold, &ev)) == -TL_ETOOBIG && !(rc = apply(w)))
				rc = tl_fold_add(w->fold, &ev);
			if (rc)
				break;
			w->folded++;
		}
		if (arena_used)
			tl_arena_reset(&w->arena);
	}
	if (rc < 0)
		set_error(r, "%s: %s after line %" PRIu64, f->path, tl_strerror(rc), line_no);
	atomic_fetch_add(&r->bytes_done, f->size > rep_bytes ? f->size - rep_bytes : 0);
	atomic_fetch_add(&r->lines, line_no - rep_lines);
	atomic_fetch_add(&r->files_done, 1);
	w->lines += line_no;
	return rc < 0 ? rc : TL_OK;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct run *r = w->r;
	int rc = TL_OK;
	for (;;) {
		pthread_mutex_lock(&r->mu);
		bool failed = r->failed;
		pthread_mutex_unlock(&r->mu);
		size_t i = atomic_fetch_add(&r->next_file, 1);
		if (failed || i >= r->n_files)
			break;
		if ((rc = process_file(w, &r->files[i])))
			break;
	}
	if (!rc && tl_fold_count(w->fold) && (rc = apply(w)))
		set_error(r, "folding: %s", tl_strerror(rc));
	w->rc = rc;
	pthread_mutex_lock(&r->mu);
	if (rc)
		r->failed = 1;
	if (++r->workers_done == r->n_workers)
		atomic_store(&r->reading_done,
		             true); /* the rest is written at once, after the state files start */
	pthread_cond_signal(&r->cv);
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

/* ---- writing the results ------------------------------------------------------ */

/* The pieces of the campaigns' members of one day (tl_mem_credited). */
struct chunks_ctx {
	struct tl_bstate_chunk *v;
	size_t n, cap;
	uint64_t count;
};

static int collect_chunk(void *arg, const uint8_t *fps, size_t n)
{
	struct chunks_ctx *ch = arg;
	if (tl_array_grow((void **)&ch->v, &ch->cap, ch->n + 1, sizeof *ch->v))
		return -TL_ENOMEM;
	ch->v[ch->n++] = (struct tl_bstate_chunk){.fps = fps, .n = n};
	ch->count += n;
	return TL_OK;
}

struct kv {
	uint32_t key, vid;
};

static int cmp_kv(const void *a, const void *b)
{
	const struct kv *x = a, *y = b;
	if (x->key != y->key)
		return x->key < y->key ? -1 : 1;
	return (x->vid > y->vid) - (x->vid < y->vid);
}

/* The distinct (day and campaign, variant) pairs of the rows: a few per
 * campaign, from hundreds of thousands of minute rows. */
struct kv_ctx {
	struct run *r;
	size_t n_camps;
	struct kv *kv;
	size_t n, cap;
	struct tl_hmap map;
};

static int kv_eq(const void *arg, uint32_t index, const void *key)
{
	const struct kv *a = &((const struct kv_ctx *)arg)->kv[index], *b = key;
	return a->key == b->key && a->vid == b->vid;
}

/* tl_mem_key_fn: adds the pair of one row. */
static int collect_kv(void *arg, uint32_t cid, uint32_t vid, int64_t minute_ms)
{
	struct kv_ctx *kc = arg;
	int64_t day = minute_ms / DAY_MS;
	struct kv k = {(uint32_t)((uint64_t)(day - kc->r->o->from_day) * kc->n_camps + cid), vid};
	if (tl_array_grow((void **)&kc->kv, &kc->cap, kc->n + 1, sizeof *kc->kv))
		return -TL_ENOMEM;
	int ins = 0;
	long i = tl_hmap_upsert(&kc->map, tl_mix64((uint64_t)k.key << 32 | k.vid), &k, kv_eq, kc,
	                        (uint32_t)kc->n, &ins);
	if (i < 0)
		return (int)i;
	if (ins)
		kc->kv[kc->n++] = k;
	return TL_OK;
}

/* Writes one state file per day of the run: every campaign with rows or
 * credited members that day, its variants that day, its members (as the
 * connections logged them: no sorting, no copy). */
static int write_states(struct run *r, uint64_t runid)
{
	size_t n_camps = tl_mem_campaigns_count(r->mem);
	uint64_t n_days = (uint64_t)(r->o->to_day - r->o->from_day + 1);
	if (n_camps && n_days * n_camps > UINT32_MAX)
		return -TL_ETOOBIG;
	/* (key, variant) pairs of the rows */
	struct kv_ctx kc = {.r = r, .n_camps = n_camps};
	tl_hmap_init(&kc.map);
	int rc = tl_mem_row_keys(r->mem, collect_kv, &kc);
	tl_hmap_free(&kc.map);
	struct kv *kv = kc.kv;
	size_t n_kv = kc.n;
	if (!rc && n_kv)
		qsort(kv, n_kv, sizeof *kv, cmp_kv);
	struct tl_bstate_campaign *camps = rc ? NULL : calloc(n_camps + 1, sizeof *camps);
	size_t *first = rc ? NULL : calloc(n_camps + 1, sizeof *first); /* a campaign's first chunk */
	const char **vnames = rc ? NULL : calloc(n_kv + 1, sizeof *vnames);
	if (!rc && (!camps || !first || !vnames))
		rc = -TL_ENOMEM;
	if (rc)
		set_error(r, "collecting the day state: %s", tl_strerror(rc));
	struct chunks_ctx ch = {0};
	uint64_t written = 0;
	size_t j = 0, vn = 0;
	for (uint64_t d = 0; d < n_days && !rc; d++) {
		int64_t day = r->o->from_day + (int64_t)d;
		size_t nc = 0;
		ch.n = 0;
		for (size_t cid = 0; cid < n_camps && !rc; cid++) {
			uint32_t key = (uint32_t)(d * n_camps + cid);
			size_t v0 = vn;
			struct tl_mem_campaign mcp;
			tl_mem_campaign_get(r->mem, (uint32_t)cid, &mcp);
			while (j < n_kv && kv[j].key < key)
				j++;
			for (; j < n_kv && kv[j].key == key; j++)
				if (vn == v0 || strcmp(vnames[vn - 1], mcp.variants[kv[j].vid]))
					vnames[vn++] = mcp.variants[kv[j].vid];
			uint64_t before = ch.count;
			size_t c0 = ch.n;
			if ((rc = tl_mem_credited(r->mem, (uint32_t)cid, (int32_t)day, collect_chunk, &ch))) {
				set_error(r, "collecting the state of day %" PRId64 ": %s", day,
				          tl_strerror(rc));
				break;
			}
			uint64_t count = ch.count - before;
			if (vn == v0 && !count)
				continue;
			first[nc] = c0;
			camps[nc++] = (struct tl_bstate_campaign){.tenant = mcp.tenant,
			                                          .campaign = mcp.campaign,
			                                          .variants = &vnames[v0],
			                                          .n_variants = vn - v0,
			                                          .n_chunks = ch.n - c0,
			                                          .count = count};
		}
		if (rc)
			break;
		for (size_t i = 0; i < nc; i++) {
			camps[i].chunks = ch.v + first[i];
			written += camps[i].count;
		}
		rc = tl_bstate_write(r->o->state_dir, day, runid, camps, nc);
		if (rc)
			set_error(r, "writing the state of day %" PRId64 " to %s: %s", day, r->o->state_dir,
			          tl_strerror(rc));
	}
	/* cannot happen (events outside the days are not folded), but a member
	 * left out would be credited again by the next run of another day */
	if (!rc && written != tl_mem_credited_total(r->mem)) {
		rc = -TL_EINVAL;
		set_error(r, "the day states hold %" PRIu64 " of the %" PRIu64 " members credited", written,
		          tl_mem_credited_total(r->mem));
	}
	free(ch.v);
	free(kv);
	free(camps);
	free(first);
	free(vnames);
	return rc;
}

/* The state files are written on a thread of their own while the rows go
 * into the reporting DB; the transaction commits only once they are on
 * disk. */
struct states_job {
	struct run *r;
	uint64_t runid;
	pthread_t th;
	bool started, joined;
	int rc;
};

static void *states_main(void *arg)
{
	struct states_job *j = arg;
	j->rc = write_states(j->r, j->runid);
	return NULL;
}

static int states_wait(struct states_job *j)
{
	if (j->started && !j->joined) {
		pthread_join(j->th, NULL);
		j->joined = true;
	}
	return j->rc;
}

/* tl_mem_rows_fn: one chunk of rows into the transaction. */
static int add_rows(void *arg, const struct tl_count_row *rows, const uint32_t *cids, const uint32_t *vids,
                    size_t n)
{
	(void)cids;
	(void)vids;
	return n ? tl_store_add_counts(arg, rows, n) : TL_OK;
}

/* Begins the one transaction and clears the days in it, waiting for a busy
 * DB (another writer, the aggregator, holds it briefly). */
static int db_begin(struct tl_store *db, const struct run *r)
{
	int rc;
	for (int attempt = 0;; attempt++) {
		rc = tl_store_begin(db, TL_SOURCE_BATCH);
		if (!rc && (rc = tl_store_clear_source(db, TL_SOURCE_BATCH, r->from_ms, r->to_ms)))
			tl_store_rollback(db);
		if (rc != -TL_EBUSY || attempt == 20)
			return rc;
		struct timespec ts = {0, 250 * 1000000L};
		nanosleep(&ts, NULL);
	}
}

/* Writing the rows overlaps the end of the reading: once most of the bytes
 * are read (write_from_pct), the calling thread begins the transaction and
 * adds the rows folded so far, then again at every progress tick; after the
 * workers are done only the rows touched since are left. (A row added to
 * again is written again, with its new deltas: the upserts add up.) Before
 * that point the reporting DB is not held: the real-time aggregator writes
 * to it too. */
#define WRITE_FROM_PCT 75

static int early_rows(struct run *r, struct tl_store *db, bool *txn)
{
	if (!*txn) {
		int pct = r->o->write_from_pct ? r->o->write_from_pct : WRITE_FROM_PCT;
		if (pct != TL_BATCH_WRITE_FROM_START &&
		    atomic_load(&r->bytes_done) * 100 < r->st->bytes * (uint64_t)pct)
			return TL_OK;
		int rc = tl_store_begin(db, TL_SOURCE_BATCH);
		if (!rc && (rc = tl_store_clear_source(db, TL_SOURCE_BATCH, r->from_ms, r->to_ms)))
			tl_store_rollback(db);
		if (rc == -TL_EBUSY)
			return TL_OK; /* another writer holds the DB: try at the next tick */
		if (rc)
			return rc;
		*txn = true;
	}
	r->st->db_passes++;
	return tl_mem_rows_flush_until(r->mem, add_rows, db, &r->reading_done);
}

/* The one transaction: clear the days (unless txn says it is open and done
 * so), add the rows, record the runs; it commits once the state files of job
 * are written. Returns with job done. */
static int write_db(struct run *r, struct tl_store *db, uint64_t runid, struct states_job *job, bool txn)
{
	size_t n_days = (size_t)(r->o->to_day - r->o->from_day + 1);
	struct tl_offset *offs = calloc(n_days, sizeof *offs);
	char(*topics)[32] = calloc(n_days, sizeof *topics);
	int rc = offs && topics ? TL_OK : -TL_ENOMEM;
	for (size_t d = 0; d < n_days && !rc; d++) {
		rc = tl_bstate_topic(r->o->from_day + (int64_t)d, topics[d], sizeof topics[d]);
		offs[d] = (struct tl_offset){topics[d], 0, runid};
	}
	if (!rc && !txn)
		txn = (rc = db_begin(db, r)) == TL_OK;
	if (!rc) {
		r->st->db_passes++;
		rc = tl_mem_rows_flush(r->mem, add_rows, db);
	}
	if (!rc)
		rc = tl_store_offsets_set(db, TL_BSTATE_CONSUMER, offs, n_days);
	int jrc = states_wait(job);
	if (rc)
		set_error(r, "writing the reporting DB %s: %s", r->o->db_uri, tl_strerror(rc));
	else
		rc = jrc;
	if (txn && !rc) {
		if ((rc = tl_store_commit(db))) /* rolls back itself on failure */
			set_error(r, "writing the reporting DB %s: %s", r->o->db_uri, tl_strerror(rc));
	} else if (txn) {
		tl_store_rollback(db);
	}
	free(offs);
	free(topics);
	return rc;
}

/* ---- the run ------------------------------------------------------------------- */

/* Orders the files so that the workers move through the day together: a
 * partition's files are in time order (offsets grow with arrival), so the
 * i-th of n files of every partition is read at about the same point. The
 * folds then meet few distinct minutes per batch, which keeps their counter
 * rows few. (Files of a partition come from the listing in offset order.) */
struct pos {
	double at;
	size_t i;
};

static int cmp_pos(const void *a, const void *b)
{
	const struct pos *x = a, *y = b;
	if (x->at != y->at)
		return x->at < y->at ? -1 : 1;
	return (x->i > y->i) - (x->i < y->i);
}

static int interleave(struct tl_archive_file *f, size_t n)
{
	struct pos *p = malloc((n + 1) * sizeof *p);
	struct tl_archive_file *tmp = malloc((n + 1) * sizeof *tmp);
	if (!p || !tmp) {
		free(p);
		free(tmp);
		return -TL_ENOMEM;
	}
	for (size_t a = 0, b; a < n; a = b) {
		for (b = a; b < n && f[b].day == f[a].day && f[b].name.partition == f[a].name.partition &&
		            !strcmp(f[b].name.topic, f[a].name.topic);
		     b++)
			;
		for (size_t k = a; k < b; k++)
			p[k] = (struct pos){(double)f[k].day + (double)(k - a) / (double)(b - a), k};
	}
	qsort(p, n, sizeof *p, cmp_pos);
	for (size_t k = 0; k < n; k++)
		tmp[k] = f[p[k].i];
	memcpy(f, tmp, n * sizeof *f);
	free(p);
	free(tmp);
	return TL_OK;
}

/* About how many event ids the files hold, to size the dedupe set once:
 * a file holds at most the records of its roll's offset range (a roll may
 * spread over several days' files), and surely not more lines than one per
 * 16 compressed bytes (every line has an id and a recipient hash). */
static size_t expected_ids(const struct tl_archive_file *f, size_t n)
{
	uint64_t sum = 0;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(f[i].name.topic, TL_TOPIC_EVENTS) && strcmp(f[i].name.topic, TL_TOPIC_DELIVERY))
			continue;
		uint64_t range = f[i].name.last >= f[i].name.first ? f[i].name.last - f[i].name.first + 1 : 0;
		uint64_t bound = f[i].size / 16 + 1;
		sum += range < bound ? range : bound;
	}
	return sum < SIZE_MAX / 2 ? (size_t)sum : SIZE_MAX / 2;
}

static int lock_state(const char *dir, int *fd)
{
	char path[PATH_MAX];
	if (mkdir(dir, 0755) && errno != EEXIST)
		return tl_err_from_errno(errno);
	if (snprintf(path, sizeof path, "%s/.lock", dir) >= (int)sizeof path)
		return -TL_EINVAL;
	*fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (*fd < 0)
		return tl_err_from_errno(errno);
	if (flock(*fd, LOCK_EX | LOCK_NB))
		return errno == EWOULDBLOCK ? -TL_ELOCKED : tl_err_from_errno(errno);
	return TL_OK;
}

static void progress(struct run *r, int64_t t0)
{
	if (!r->o->progress)
		return;
	struct tl_batch_progress p = {
	    .files = r->n_files,
	    .files_done = atomic_load(&r->files_done),
	    .bytes = r->st->bytes,
	    .bytes_done = atomic_load(&r->bytes_done),
	    .lines = atomic_load(&r->lines),
	    .elapsed_ms = tl_mono_ms() - t0,
	};
	r->o->progress(r->o->progress_arg, &p);
}

int tl_batch_run(const struct tl_batch_opts *o, struct tl_batch_stats *st)
{
	memset(st, 0, sizeof *st);
	if (o->from_day > o->to_day || o->to_day - o->from_day > 3660)
		return -TL_EINVAL;
	struct run r = {.o = o, .st = st, .from_ms = o->from_day * DAY_MS, .to_ms = (o->to_day + 1) * DAY_MS};
	pthread_mutex_init(&r.mu, NULL);
	pthread_cond_init(&r.cv, NULL);
	int threads = o->threads > 0 ? (o->threads < MAX_THREADS ? o->threads : MAX_THREADS) : 2;
	size_t fold_events = o->fold_events ? o->fold_events : 8192;
	struct worker w[MAX_THREADS];
	memset(w, 0, sizeof w);
	int started = 0, lock_fd = -1;
	bool txn = false; /* the reporting DB's transaction is open (early_rows) */
	struct tl_store *db = NULL;
	int64_t t0 = tl_mono_ms();
	st->runid = ((uint64_t)tl_now_ms() << 12) | ((uint64_t)getpid() & 0xfff);

	int rc = lock_state(o->state_dir, &lock_fd);
	if (rc) {
		set_error(&r, rc == -TL_ELOCKED ? "another batch run holds %s" : "state directory %s: %s",
		          o->state_dir, tl_strerror(rc));
		goto out;
	}
	if ((rc = tl_store_open(o->db_uri, &db))) {
		set_error(&r, "reporting DB %s: %s", o->db_uri, tl_strerror(rc));
		goto out;
	}
	int64_t version;
	if ((rc = tl_store_tenants_load(db, &r.tenants, &r.n_tenants, &version))) {
		set_error(&r, "loading tenants: %s", tl_strerror(rc));
		goto out;
	}
	if (r.n_tenants)
		qsort(r.tenants, r.n_tenants, sizeof *r.tenants, cmp_tenant);
	if ((rc = find_other_days(&r, db))) {
		set_error(&r, "finding the days recomputed before: %s", tl_strerror(rc));
		goto out;
	}
	if ((rc = tl_archive_files_list(o->archive_dir, o->from_day, o->to_day, &r.files, &r.n_files))) {
		set_error(&r, "listing %s: %s", o->archive_dir, tl_strerror(rc));
		goto out;
	}
	if ((rc = interleave(r.files, r.n_files)))
		goto out;
	st->files = r.n_files;
	for (size_t i = 0; i < r.n_files; i++)
		st->bytes += r.files[i].size;
	if ((rc = tl_mem_create(preload, &r, &r.mem)))
		goto out;
	if ((rc = tl_mem_reserve_ids(r.mem, expected_ids(r.files, r.n_files), threads)))
		goto out;

	if ((size_t)threads > r.n_files)
		threads = r.n_files ? (int)r.n_files : 1;
	r.n_workers = threads;
	for (int i = 0; i < threads; i++) {
		w[i].r = &r;
		w[i].ctx = (struct tl_enrich_ctx){lookup, &r, o->classify};
		tl_arena_init(&w[i].arena, 64 * 1024, 0);
		if ((rc = tl_mem_conn_open(r.mem, &w[i].conn)) ||
		    (rc = tl_fold_create(fold_events, &w[i].fold)))
			goto stop;
		if (pthread_create(&w[i].th, NULL, worker_main, &w[i])) {
			rc = -TL_ENOMEM;
			goto stop;
		}
		started++;
	}
stop:
	if (!rc && (rc = early_rows(&r, db, &txn))) /* at once, when asked to */
		set_error(&r, "writing the reporting DB %s: %s", o->db_uri, tl_strerror(rc));
	pthread_mutex_lock(&r.mu);
	if (rc)
		r.failed = 1;
	while (r.workers_done < started) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 250 * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&r.cv, &r.mu, &until);
		bool skip = r.failed || r.workers_done == started; /* failed, or done: no early pass */
		pthread_mutex_unlock(&r.mu);
		progress(&r, t0);
		int frc = skip ? TL_OK : early_rows(&r, db, &txn);
		if (frc)
			set_error(&r, "writing the reporting DB %s: %s", o->db_uri, tl_strerror(frc));
		pthread_mutex_lock(&r.mu);
		if (frc) {
			r.failed = 1;
			rc = frc;
		}
	}
	pthread_mutex_unlock(&r.mu);
	for (int i = 0; i < started; i++) {
		pthread_join(w[i].th, NULL);
		if (w[i].rc && !rc)
			rc = w[i].rc;
	}
	for (int i = 0; i < threads; i++) {
		st->lines += w[i].lines;
		st->bad_lines += w[i].bad;
		st->out_of_range += w[i].out_of_range;
		st->skipped += w[i].skipped;
		st->folded += w[i].folded;
		st->duplicates += w[i].fs.duplicates;
		st->counted += w[i].fs.counted;
		st->uniques_new += w[i].fs.uniques_new;
		for (int k = 0; k < TL_BATCH_REASONS; k++)
			st->rejected[k] += w[i].rejected[k];
		tl_store_close(w[i].conn);
		w[i].conn = NULL;
		tl_fold_destroy(w[i].fold);
		tl_arena_free(&w[i].arena);
		tl_archive_reader_close(w[i].reader);
	}
	st->read_ms = tl_mono_ms() - t0;
	if (rc) {
		if (txn)
			tl_store_rollback(db);
		goto out;
	}

	int64_t t1 = tl_mono_ms();
	st->rows = tl_mem_rows_live(r.mem);
	st->campaigns = tl_mem_campaigns_count(r.mem);
	struct states_job job = {.r = &r, .runid = st->runid};
	job.started = pthread_create(&job.th, NULL, states_main, &job) == 0;
	if (!job.started)
		job.rc = write_states(&r, st->runid); /* no thread: one after the other */
	if ((rc = write_db(&r, db, st->runid, &job, txn)))
		goto cleanup_states;
	/* committed: the older runs of these days are garbage now */
	for (int64_t d = o->from_day; d <= o->to_day; d++)
		if (tl_bstate_prune(o->state_dir, d, st->runid) != TL_OK)
			continue; /* what stays is ignored, and removed by the next run of that day */
	st->write_ms = tl_mono_ms() - t1;
	goto out;
cleanup_states:
	for (int64_t d = o->from_day; d <= o->to_day; d++) {
		char path[PATH_MAX];
		if (!tl_bstate_path(o->state_dir, d, st->runid, path, sizeof path))
			unlink(path);
	}
out:
	tl_mem_destroy(r.mem);
	for (size_t i = 0; i < r.n_others; i++)
		tl_bstate_close(r.others[i].state);
	free(r.others);
	tl_archive_files_free(r.files, r.n_files);
	tl_tenants_free(r.tenants, r.n_tenants);
	tl_store_close(db);
	if (lock_fd >= 0)
		close(lock_fd);
	pthread_mutex_destroy(&r.mu);
	pthread_cond_destroy(&r.cv);
	if (rc && !st->error[0])
		snprintf(st->error, sizeof st->error, "%s", tl_strerror(rc));
	return rc;
}
