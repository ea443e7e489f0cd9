/* memstore.h — the batch recompute's staging store: a struct tl_store whose
 * transaction lives in memory, so that the batch folds with the very same
 * tl_fold code as the streaming aggregator (pipeline/fold.h) on several
 * threads at once, and writes the reporting DB once, in one transaction, at
 * the end (batch.c).
 *
 * One struct tl_mem holds what all threads share: the event-id dedupe set,
 * the unique-recipient sets, the counter rows and the campaigns seen. Each
 * worker thread opens its own connection (tl_mem_conn_open) and gives it to
 * tl_fold_apply. The rows are sharded by key, and the sets are sharded
 * hash sets of 128-bit fingerprints (XXH3-128), behind one mutex per shard:
 *
 *   dedupe:  XXH3_128(id, seed = XXH3_64(tenant))
 *   member:  XXH3_128(recipient, seed = campaign_seed ^ kind)
 *            campaign_seed = XXH3_64(campaign, seed = XXH3_64(tenant))
 *
 * The member fingerprint is stored in the batch state files (state.h), so
 * this definition is a file format: never change it. Two distinct keys share
 * a fingerprint with probability ~2^-128 per pair (~10^-24 for 20 million
 * ids): exact for every practical purpose, at 16 bytes a key.
 *
 * A campaign's unique sets are complete only with the members other days
 * already credited: the first time any thread meets a campaign's unique
 * candidate, the preload callback runs once for it (other threads needing
 * that campaign wait) and adds those members with tl_mem_add_preloaded; they
 * are never new again and never written back as this run's. */
#ifndef TL_BATCH_MEMSTORE_H
#define TL_BATCH_MEMSTORE_H

#include "store/store.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TL_FP_BYTES 16
#define TL_MEM_PRELOADED INT32_MIN /* day of a member credited on another day */

struct tl_mem;

/* Adds, for one campaign, the members other days credited. Runs on a worker
 * thread, once per campaign; returns 0 or an error (which fails the fold). */
typedef int (*tl_mem_preload_fn)(void *arg, struct tl_mem *m, uint32_t cid, const char *tenant,
                                 const char *campaign);

int tl_mem_create(tl_mem_preload_fn preload, void *arg, struct tl_mem **out) TL_MUST_CHECK;
void tl_mem_destroy(struct tl_mem *m); /* after every connection is closed; NULL-safe */

/* Sizes the event-id set for about n ids (an estimate: more still fit, the
 * set then grows), before the connections insert, faulting its memory in on
 * `threads` threads. */
int tl_mem_reserve_ids(struct tl_mem *m, size_t n, int threads) TL_MUST_CHECK;

/* A connection for one thread (close it with tl_store_close). */
int tl_mem_conn_open(struct tl_mem *m, struct tl_store **out) TL_MUST_CHECK;

/* Campaign seed and member fingerprint (see above); fp is 16 bytes, the
 * XXH128 canonical (big-endian) form. */
uint64_t tl_mem_campaign_seed(struct tl_str tenant, struct tl_str campaign);
void tl_mem_member_fp(uint64_t campaign_seed, uint8_t kind, struct tl_str recipient, uint8_t fp[TL_FP_BYTES]);

/* Marks a member as credited on another day (from the preload callback). */
int tl_mem_add_preloaded(struct tl_mem *m, uint32_t cid, const uint8_t fp[TL_FP_BYTES]) TL_MUST_CHECK;

/* ---- results (after every connection is closed) -------------------------- */

struct tl_mem_campaign {
	const char *tenant, *campaign;
	const char *const *variants; /* every variant met, "" for none */
	size_t n_variants;
};

/* Campaign cid (0 .. tl_mem_campaigns_count-1). */
size_t tl_mem_campaigns_count(const struct tl_mem *m);
void tl_mem_campaign_get(const struct tl_mem *m, uint32_t cid, struct tl_mem_campaign *out);

/* A chunk of counter rows: rows[i].tenant etc. point into m; cids[i] and
 * vids[i] are the campaign and variant index of row i. The arrays are valid
 * during the call only. */
typedef int (*tl_mem_rows_fn)(void *arg, const struct tl_count_row *rows, const uint32_t *cids,
                              const uint32_t *vids, size_t n);

/* How many counter rows there are (any thread, also while connections add
 * rows). */
size_t tl_mem_rows_live(struct tl_mem *m);

/* Calls fn with the rows added to since the last
 * flush — their deltas since then — shard by shard, each chunk holding every
 * such row of its campaigns, and leaves them at zero: adding the chunks up
 * gives the rows. May run while connections add rows (on one thread at a
 * time); fn runs without any lock held. Returns 0 or what fn returned. */
int tl_mem_rows_flush(struct tl_mem *m, tl_mem_rows_fn fn, void *arg) TL_MUST_CHECK;
/* The same, stopping (with 0) before the next shard once *stop is set: the
 * rows not handed out yet stay for the next flush. */
int tl_mem_rows_flush_until(struct tl_mem *m, tl_mem_rows_fn fn, void *arg,
                            const atomic_bool *stop) TL_MUST_CHECK;

/* Calls fn with the key of every counter row (flushed or not), until fn
 * returns non-zero (which it returns), once no connection adds rows any
 * more; a flush may run meanwhile. */
typedef int (*tl_mem_key_fn)(void *arg, uint32_t cid, uint32_t vid, int64_t minute_ms);
int tl_mem_row_keys(const struct tl_mem *m, tl_mem_key_fn fn, void *arg) TL_MUST_CHECK;

/* The members this run credited to campaign cid on day (not the preloaded
 * ones): fn(arg, fps, n) for each chunk of n canonical fingerprints, in no
 * particular order, until fn returns non-zero (which it returns). Call once
 * no connection adds members any more. */
typedef int (*tl_mem_fps_fn)(void *arg, const uint8_t *fps, size_t n);
int tl_mem_credited(const struct tl_mem *m, uint32_t cid, int32_t day, tl_mem_fps_fn fn,
                    void *arg) TL_MUST_CHECK;
/* All the members this run credited, on any day (to check that every one
 * was written somewhere). */
uint64_t tl_mem_credited_total(const struct tl_mem *m);

/* Sizes, for statistics. */
size_t tl_mem_ids(const struct tl_mem *m);
size_t tl_mem_member_count(const struct tl_mem *m);

#endif
