/* utf8.h — UTF-8 validation, shared by the JSON parser, the JSON escaper
 * and the API's path and query checks.
 *
 * Valid means what jansson accepts: no overlong forms, no surrogates
 * (U+D800..U+DFFF), nothing above U+10FFFF. */
#ifndef TL_UTF8_H
#define TL_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* Length (1-4) of the valid UTF-8 sequence at p, of the n bytes there
 * (n >= 1), or 0 when it is not one. */
static inline size_t tl_utf8_seq(const unsigned char *p, size_t n)
{
	unsigned c = p[0];
	size_t len;
	unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF) {
		len = 2;
	} else if (c >= 0xE0 && c <= 0xEF) {
		len = 3;
		if (c == 0xE0)
			lo = 0xA0; /* overlong */
		else if (c == 0xED)
			hi = 0x9F; /* surrogates */
	} else if (c >= 0xF0 && c <= 0xF4) {
		len = 4;
		if (c == 0xF0)
			lo = 0x90; /* overlong */
		else if (c == 0xF4)
			hi = 0x8F; /* above U+10FFFF */
	} else {
		return 0;
	}
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (p[i] < 0x80 || p[i] > 0xBF)
			return 0;
	return len;
}

/* Whether the n bytes at s are valid UTF-8 (NUL bytes count as valid). */
static inline bool tl_utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;
	while (i < n) {
		if (p[i] < 0x80) {
			i++;
			continue;
		}
		size_t l = tl_utf8_seq(p + i, n - i);
		if (l == 0)
			return false;
		i += l;
	}
	return true;
}

/* Copies up to cap bytes of the n at in to out as valid UTF-8: each byte
 * that does not start a valid sequence becomes '?' (one for one, so the
 * length does not grow), and a sequence that would not fit whole is left
 * out. Returns the bytes written. For text from outside (HTTP headers). */
static inline size_t tl_utf8_sanitize(const char *in, size_t n, char *out, size_t cap)
{
	const unsigned char *p = (const unsigned char *)in;
	size_t i = 0, o = 0;
	while (i < n && o < cap) {
		size_t l = tl_utf8_seq(p + i, n - i);
		if (l == 0) {
			out[o++] = '?';
			i++;
			continue;
		}
		if (o + l > cap)
			break;
		for (size_t k = 0; k < l; k++)
			out[o++] = (char)p[i + k];
		i += l;
	}
	return o;
}

#endif
