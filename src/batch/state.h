/* state.h — the batch recompute's day state files.
 *
 * Unique counts are per campaign over all days, so recomputing one day needs
 * to know which recipients other days already credited. The batch keeps that
 * outside the reporting DB, one file per recomputed day:
 *
 *     <state>/dt=YYYY-MM-DD/<runid>.state
 *
 * holding, for every campaign with events that day, its variants and the
 * member fingerprints (memstore.h) of the unique sets credited that day. The
 * reporting DB says which run of a day is the current one: the batch's
 * transaction records offset `runid` for consumer "batch", topic
 * "dt=YYYY-MM-DD", partition 0 (tl_store_offsets_set) together with the
 * day's counters. A state file is written (to a temporary, fsynced, renamed)
 * BEFORE that transaction commits; files of other runs of the day are left-
 * overs of a run that failed or was replaced, and are removed.
 *
 * Format (integers little-endian):
 *   header  "TLBST001", u64 runid, i64 day, u64 index_len, u64 XXH3-64(index)
 *   index   u32 n, then per campaign: u16+tenant, u16+campaign, u16 n_variants,
 *           (u16+variant)…, u64 offset, u64 count, u64 XXH3-64(section)
 *   sections: count × 16-byte fingerprints, at offset (from the file start)
 * Reading an index does not read the sections; a section is read (and its
 * checksum checked) only for a campaign that needs it.
 *
 * Library code: no logging; any thread (one index per thread, or read-only
 * sharing after tl_bstate_open). */
#ifndef TL_BATCH_STATE_H
#define TL_BATCH_STATE_H

#include "batch/memstore.h"
#include "core/err.h"

#include <stddef.h>
#include <stdint.h>

#define TL_BSTATE_CONSUMER "batch"

/* Writing: a piece of a campaign's section. */
struct tl_bstate_chunk {
	const uint8_t *fps;
	size_t n;
};

struct tl_bstate_campaign {
	const char *tenant, *campaign;
	const char *const *variants;
	size_t n_variants;
	const uint8_t *fps;                   /* writing: count fingerprints, or (n_chunks > 0) ... */
	const struct tl_bstate_chunk *chunks; /* ... these pieces, count in all, in order */
	size_t n_chunks;
	uint64_t count;
	uint64_t offset, xxh; /* reading */
};

struct tl_bstate {
	int64_t day;
	uint64_t runid;
	struct tl_bstate_campaign *c; /* sorted by (tenant, campaign) */
	size_t n;
	char *path;
	char *blob; /* the index bytes the strings point into */
	char **vstore;
};

/* "<dir>/dt=YYYY-MM-DD" and "<dir>/dt=YYYY-MM-DD/<runid>.state". */
int tl_bstate_day_dir(const char *dir, int64_t day, char *buf, size_t cap) TL_MUST_CHECK;
int tl_bstate_path(const char *dir, int64_t day, uint64_t runid, char *buf, size_t cap) TL_MUST_CHECK;

/* "dt=YYYY-MM-DD" (the topic recorded in the DB for a day). */
int tl_bstate_topic(int64_t day, char *buf, size_t cap) TL_MUST_CHECK;

/* Writes the state of one day durably (temporary, fsync, rename, fsync of
 * the directory, which is created if needed). */
int tl_bstate_write(const char *dir, int64_t day, uint64_t runid, const struct tl_bstate_campaign *c,
                    size_t n) TL_MUST_CHECK;

/* Reads the header and index of a state file. -TL_ENOTFOUND when missing,
 * -TL_ECORRUPT when it fails its checks. */
int tl_bstate_open(const char *path, struct tl_bstate **out) TL_MUST_CHECK;
void tl_bstate_close(struct tl_bstate *s); /* NULL-safe */

/* The campaign's entry, or NULL. */
const struct tl_bstate_campaign *tl_bstate_find(const struct tl_bstate *s, const char *tenant,
                                                const char *campaign);

/* Reads the fingerprints of one campaign into out (count × 16 bytes),
 * checking its checksum. */
int tl_bstate_members(const struct tl_bstate *s, const struct tl_bstate_campaign *c,
                      uint8_t *out) TL_MUST_CHECK;

/* Deletes every state file of the day but keep_runid's (and temporaries). */
int tl_bstate_prune(const char *dir, int64_t day, uint64_t keep_runid) TL_MUST_CHECK;

#endif
