/* buf.h — a growable byte buffer with a hard cap.
 *
 * Every buffer that grows with outside input is a tl_buf whose max comes from
 * configuration; going over it returns -TL_ETOOBIG, never grows further.
 * Not thread-safe: one owner at a time. */
#ifndef TL_BUF_H
#define TL_BUF_H

#include "core/err.h"

#include <stddef.h>
#include <stdint.h>

struct tl_buf {
	char *data;
	size_t len;
	size_t cap;
	size_t max; /* 0 = no cap (only for internally bounded data) */
};

/* Initialises an empty buffer that may grow to max bytes (0 = unbounded). */
void tl_buf_init(struct tl_buf *b, size_t max);

/* Frees the storage; the buffer may be reused after tl_buf_init. NULL-safe. */
void tl_buf_free(struct tl_buf *b);

/* Empties the buffer, keeping its storage. */
static inline void tl_buf_reset(struct tl_buf *b)
{
	b->len = 0;
}

/* Ensures room for extra more bytes. 0, -TL_ENOMEM or -TL_ETOOBIG. */
int tl_buf_reserve(struct tl_buf *b, size_t extra) TL_MUST_CHECK;

/* Appends n bytes / a NUL-terminated string / one byte. Same returns as reserve. */
int tl_buf_append(struct tl_buf *b, const void *p, size_t n) TL_MUST_CHECK;
int tl_buf_puts(struct tl_buf *b, const char *s) TL_MUST_CHECK;
int tl_buf_putc(struct tl_buf *b, char c) TL_MUST_CHECK;

/* printf-style append. Same returns as reserve. */
int tl_buf_printf(struct tl_buf *b, const char *fmt, ...) TL_MUST_CHECK __attribute__((format(printf, 2, 3)));

/* Appends s as the inside of a JSON string (escaping quotes, backslashes,
 * control characters; invalid UTF-8 bytes become U+FFFD). No quotes added. */
int tl_buf_json_escape(struct tl_buf *b, const char *s, size_t n) TL_MUST_CHECK;

/* Appends "s" as a quoted JSON string. */
int tl_buf_json_str(struct tl_buf *b, const char *s, size_t n) TL_MUST_CHECK;

/* Grows the array *p of *cap elements of size bytes to hold at least need
 * (doubling, from 16): 0, or -TL_ENOMEM with *p and *cap unchanged. */
int tl_array_grow(void **p, size_t *cap, size_t need, size_t size) TL_MUST_CHECK;

#endif
