/* wire.h — private helpers of the event module (codec and token payloads).
 *
 * Not part of the public interface: only the event module's .c files include it. Every
 * function is static inline, so nothing here has external linkage.
 *
 * Varints are LEB128 (7 bits per byte, least significant group first, high
 * bit = more follows), at most 10 bytes for a uint64_t. Signed integers are
 * zigzag-mapped first so that small negative numbers stay small. The reader
 * rejects overlong and overflowing encodings so that each value has exactly
 * one encoding. */
#ifndef TL_EVENT_WIRE_H
#define TL_EVENT_WIRE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define TL_VARINT_MAX 10

/* Bytes needed to encode v as a varint. */
static inline size_t tl_varint_len(uint64_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

/* Writes v at p (room for TL_VARINT_MAX bytes); returns the bytes written. */
static inline size_t tl_varint_put(unsigned char *p, uint64_t v)
{
	size_t n = 0;
	while (v >= 0x80) {
		p[n++] = (unsigned char)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (unsigned char)v;
	return n;
}

/* Reads a varint from [*pp, end). Advances *pp and returns 0, or returns -1
 * on truncation, overflow or an overlong (non-minimal) encoding. */
static inline int tl_varint_get(const unsigned char **pp, const unsigned char *end, uint64_t *out)
{
	const unsigned char *p = *pp;
	uint64_t v = 0;
	for (unsigned shift = 0; shift < 64; shift += 7) {
		if (p >= end)
			return -1;
		unsigned char b = *p++;
		if (shift == 63 && b > 1)
			return -1; /* more than 64 bits */
		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			if (b == 0 && shift > 0)
				return -1; /* overlong: a trailing zero group */
			*pp = p;
			*out = v;
			return 0;
		}
	}
	return -1;
}

static inline uint64_t tl_zigzag(int64_t v)
{
	return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static inline int64_t tl_unzigzag(uint64_t v)
{
	return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

/* Writes a formatted reason into err (when err is not NULL). */
static inline void __attribute__((format(printf, 3, 4)))
tl_seterr(char *err, size_t errlen, const char *fmt, ...)
{
	if (!err || !errlen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

#endif
