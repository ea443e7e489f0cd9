#include "core/hmap.h"

#include <stdlib.h>
#include <string.h>

void tl_hmap_init(struct tl_hmap *m)
{
	memset(m, 0, sizeof *m);
}

void tl_hmap_free(struct tl_hmap *m)
{
	if (!m)
		return;
	free(m->hashes);
	free(m->indices);
	memset(m, 0, sizeof *m);
}

void tl_hmap_clear(struct tl_hmap *m)
{
	if (m->hashes)
		memset(m->hashes, 0, m->cap * sizeof *m->hashes);
	m->count = 0;
}

static inline uint64_t fix(uint64_t h)
{
	return h ? h : 1;
}

long tl_hmap_find(const struct tl_hmap *m, uint64_t hash, const void *key, tl_hmap_eq_fn eq, const void *arg)
{
	if (!m->cap)
		return -1;
	hash = fix(hash);
	size_t mask = m->cap - 1;
	for (size_t i = hash & mask;; i = (i + 1) & mask) {
		if (m->hashes[i] == 0)
			return -1;
		if (m->hashes[i] == hash && eq(arg, m->indices[i], key))
			return m->indices[i];
	}
}

static int grow(struct tl_hmap *m)
{
	size_t ncap = m->cap ? m->cap * 2 : 1024;
	uint64_t *nh = calloc(ncap, sizeof *nh);
	uint32_t *ni = malloc(ncap * sizeof *ni);
	if (!nh || !ni) {
		free(nh);
		free(ni);
		return -TL_ENOMEM;
	}
	size_t mask = ncap - 1;
	for (size_t i = 0; i < m->cap; i++) {
		if (!m->hashes[i])
			continue;
		size_t j = m->hashes[i] & mask;
		while (nh[j])
			j = (j + 1) & mask;
		nh[j] = m->hashes[i];
		ni[j] = m->indices[i];
	}
	free(m->hashes);
	free(m->indices);
	m->hashes = nh;
	m->indices = ni;
	m->cap = ncap;
	return TL_OK;
}

long tl_hmap_upsert(struct tl_hmap *m, uint64_t hash, const void *key, tl_hmap_eq_fn eq, const void *arg,
                    uint32_t new_index, int *inserted)
{
	*inserted = 0;
	if ((m->count + 1) * 4 > m->cap * 3) {
		int rc = grow(m);
		if (rc)
			return rc;
	}
	hash = fix(hash);
	size_t mask = m->cap - 1;
	size_t i = hash & mask;
	for (;; i = (i + 1) & mask) {
		if (m->hashes[i] == 0)
			break;
		if (m->hashes[i] == hash && eq(arg, m->indices[i], key))
			return m->indices[i];
	}
	m->hashes[i] = hash;
	m->indices[i] = new_index;
	m->count++;
	*inserted = 1;
	return new_index;
}
