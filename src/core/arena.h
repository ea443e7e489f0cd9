/* arena.h — bump allocator for per-request and per-batch scratch memory.
 *
 * Allocations live until tl_arena_reset(); the arena keeps its first block
 * across resets so steady-state work does not touch malloc. An arena has a
 * cap (0 = none): going over it returns NULL. One owner thread. */
#ifndef TL_ARENA_H
#define TL_ARENA_H

#include <stddef.h>

struct tl_arena_block;

struct tl_arena {
	struct tl_arena_block *head;
	size_t block_size;
	size_t used_total; /* bytes handed out since the last reset */
	size_t max;
};

/* Initialises an arena that allocates blocks of block_size bytes and hands
 * out at most max bytes between resets (0 = no cap). */
void tl_arena_init(struct tl_arena *a, size_t block_size, size_t max);

/* Returns n bytes aligned to 16, or NULL when out of memory / over the cap. */
void *tl_arena_alloc(struct tl_arena *a, size_t n);

/* Copies n bytes (plus a NUL) into the arena; NULL on failure. */
char *tl_arena_strdup(struct tl_arena *a, const char *s, size_t n);

/* Releases everything allocated, keeping the first block. */
void tl_arena_reset(struct tl_arena *a);

/* Frees all blocks. NULL-safe. */
void tl_arena_free(struct tl_arena *a);

#endif
