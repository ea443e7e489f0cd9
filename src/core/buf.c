#include "core/buf.h"

#include "core/utf8.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tl_buf_init(struct tl_buf *b, size_t max)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->max = max;
}

void tl_buf_free(struct tl_buf *b)
{
	if (!b)
		return;
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

int tl_buf_reserve(struct tl_buf *b, size_t extra)
{
	size_t need = b->len + extra + 1; /* room for a NUL terminator */
	if (b->max && b->len + extra > b->max)
		return -TL_ETOOBIG;
	if (need <= b->cap)
		return TL_OK;
	size_t ncap = b->cap ? b->cap : 256;
	while (ncap < need)
		ncap *= 2;
	if (b->max && ncap > b->max + 1)
		ncap = b->max + 1;
	char *p = realloc(b->data, ncap);
	if (!p)
		return -TL_ENOMEM;
	b->data = p;
	b->cap = ncap;
	return TL_OK;
}

int tl_buf_append(struct tl_buf *b, const void *p, size_t n)
{
	int rc = tl_buf_reserve(b, n);
	if (rc)
		return rc;
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return TL_OK;
}

int tl_buf_puts(struct tl_buf *b, const char *s)
{
	return tl_buf_append(b, s, strlen(s));
}

int tl_buf_putc(struct tl_buf *b, char c)
{
	return tl_buf_append(b, &c, 1);
}

int tl_buf_printf(struct tl_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -TL_EINVAL;
	int rc = tl_buf_reserve(b, (size_t)n);
	if (rc)
		return rc;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return TL_OK;
}

int tl_buf_json_escape(struct tl_buf *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;
	int rc;
	while (i < n) {
		size_t run = i;
		while (run < n && p[run] >= 0x20 && p[run] < 0x80 && p[run] != '"' && p[run] != '\\')
			run++;
		if (run > i) {
			if ((rc = tl_buf_append(b, s + i, run - i)))
				return rc;
			i = run;
			continue;
		}
		unsigned char c = p[i];
		if (c == '"' || c == '\\') {
			char esc[2] = {'\\', (char)c};
			rc = tl_buf_append(b, esc, 2);
			i++;
		} else if (c < 0x20) {
			char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
			rc = tl_buf_append(b, esc, 6);
			i++;
		} else {
			size_t l = tl_utf8_seq(p + i, n - i);
			if (l == 0) {
				rc = tl_buf_append(b, "\xEF\xBF\xBD", 3);
				i++;
			} else {
				rc = tl_buf_append(b, s + i, l);
				i += l;
			}
		}
		if (rc)
			return rc;
	}
	return TL_OK;
}

int tl_buf_json_str(struct tl_buf *b, const char *s, size_t n)
{
	int rc = tl_buf_putc(b, '"');
	if (!rc)
		rc = tl_buf_json_escape(b, s, n);
	if (!rc)
		rc = tl_buf_putc(b, '"');
	return rc;
}

int tl_array_grow(void **p, size_t *cap, size_t need, size_t size)
{
	if (need <= *cap)
		return TL_OK;
	size_t nc = *cap ? *cap : 16;
	while (nc < need) {
		if (nc > SIZE_MAX / 2)
			return -TL_ENOMEM;
		nc *= 2;
	}
	if (size && nc > SIZE_MAX / size)
		return -TL_ENOMEM;
	void *q = realloc(*p, nc * size);
	if (!q)
		return -TL_ENOMEM;
	*p = q;
	*cap = nc;
	return TL_OK;
}
