/* hmap.h — an open-addressing index from 64-bit hashes to entry numbers.
 *
 * The caller keeps its entries in its own array and supplies the equality
 * test; the map only stores (hash, index) pairs, so it never owns keys.
 * Used for per-batch folding where the whole map is cleared between batches
 * (tl_hmap_clear keeps the memory). Not thread-safe. */
#ifndef TL_HMAP_H
#define TL_HMAP_H

#include "core/err.h"

#include <stddef.h>
#include <stdint.h>

struct tl_hmap {
	uint64_t *hashes; /* 0 = empty slot (hash 0 is remapped to 1) */
	uint32_t *indices;
	size_t cap; /* power of two */
	size_t count;
};

/* A 64-bit finalizer (splitmix64's): spreads an integer key over the hash
 * space, for keys that are already small integers. */
static inline uint64_t tl_mix64(uint64_t x)
{
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
	return x ^ (x >> 31);
}

/* eq(arg, index, key) returns non-zero when entry `index` equals key. */
typedef int (*tl_hmap_eq_fn)(const void *arg, uint32_t index, const void *key);

void tl_hmap_init(struct tl_hmap *m);
void tl_hmap_free(struct tl_hmap *m);
void tl_hmap_clear(struct tl_hmap *m);

/* Finds key; returns its index, or -1. */
long tl_hmap_find(const struct tl_hmap *m, uint64_t hash, const void *key, tl_hmap_eq_fn eq, const void *arg);

/* Finds key or inserts new_index for it. Returns the existing index, or
 * new_index when inserted (then *inserted = 1), or -TL_ENOMEM. */
long tl_hmap_upsert(struct tl_hmap *m, uint64_t hash, const void *key, tl_hmap_eq_fn eq, const void *arg,
                    uint32_t new_index, int *inserted);

#endif
