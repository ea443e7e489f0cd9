#include "core/arena.h"

#include <stdlib.h>
#include <string.h>

struct tl_arena_block {
	struct tl_arena_block *next;
	size_t size;
	size_t used;
	_Alignas(16) unsigned char data[];
};

void tl_arena_init(struct tl_arena *a, size_t block_size, size_t max)
{
	a->head = NULL;
	a->block_size = block_size ? block_size : 64 * 1024;
	a->used_total = 0;
	a->max = max;
}

void *tl_arena_alloc(struct tl_arena *a, size_t n)
{
	n = (n + 15) & ~(size_t)15;
	if (a->max && a->used_total + n > a->max)
		return NULL;
	struct tl_arena_block *b = a->head;
	if (!b || b->size - b->used < n) {
		size_t size = n > a->block_size ? n : a->block_size;
		b = malloc(sizeof *b + size);
		if (!b)
			return NULL;
		b->size = size;
		b->used = 0;
		b->next = a->head;
		a->head = b;
	}
	void *p = b->data + b->used;
	b->used += n;
	a->used_total += n;
	return p;
}

char *tl_arena_strdup(struct tl_arena *a, const char *s, size_t n)
{
	char *p = tl_arena_alloc(a, n + 1);
	if (!p)
		return NULL;
	if (n)
		memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

void tl_arena_reset(struct tl_arena *a)
{
	struct tl_arena_block *b = a->head;
	if (!b)
		return;
	/* keep the oldest block (the last in the list), free the rest */
	while (b->next) {
		struct tl_arena_block *next = b->next;
		free(b);
		b = next;
	}
	b->used = 0;
	a->head = b;
	a->used_total = 0;
}

void tl_arena_free(struct tl_arena *a)
{
	if (!a)
		return;
	struct tl_arena_block *b = a->head;
	while (b) {
		struct tl_arena_block *next = b->next;
		free(b);
		b = next;
	}
	a->head = NULL;
	a->used_total = 0;
}
