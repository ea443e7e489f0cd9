/* file_segment.c — the file backend's on-disk formats: record frames,
 * segment names and listings, the recovery scan, the durable-position file.
 * Pure functions plus a few file helpers; no stream state. */
#include "stream/file_int.h"

#include "core/buf.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

void tlf_frame_encode(uint8_t *dst, uint64_t offset, int64_t ts_ms, const void *key, uint32_t key_len,
                      const void *value, uint32_t value_len)
{
	uint32_t len = (uint32_t)tlf_frame_size(key_len, value_len);
	put32(dst + 4, len);
	put64(dst + 8, offset);
	put64(dst + 16, (uint64_t)ts_ms);
	put32(dst + 24, key_len);
	if (key_len)
		memcpy(dst + TLF_FRAME_HDR, key, key_len);
	if (value_len)
		memcpy(dst + TLF_FRAME_HDR + key_len, value, value_len);
	put32(dst, tlf_crc32c(0, dst + 4, len - 4));
}

enum tlf_decode tlf_frame_decode(const uint8_t *p, size_t avail, struct tlf_frame *f, size_t *need)
{
	if (avail < TLF_FRAME_HDR) {
		*need = TLF_FRAME_HDR;
		return TLF_SHORT;
	}
	uint32_t len = get32(p + 4);
	if (len < TLF_FRAME_HDR || len > TLF_MAX_FRAME)
		return TLF_BAD;
	if (avail < len) {
		*need = len;
		return TLF_SHORT;
	}
	if (tlf_crc32c(0, p + 4, len - 4) != get32(p))
		return TLF_BAD;
	uint32_t kl = get32(p + 24);
	if (kl > len - TLF_FRAME_HDR)
		return TLF_BAD;
	f->frame_len = len;
	f->offset = get64(p + 8);
	f->ts_ms = (int64_t)get64(p + 16);
	f->key = p + TLF_FRAME_HDR;
	f->key_len = kl;
	f->value = p + TLF_FRAME_HDR + kl;
	f->value_len = len - TLF_FRAME_HDR - kl;
	return TLF_OK;
}

void tlf_seg_name(char *out, size_t cap, uint64_t base)
{
	snprintf(out, cap, "%020llu.seg", (unsigned long long)base);
}

int tlf_seg_parse(const char *name, uint64_t *base)
{
	uint64_t v = 0;
	for (int i = 0; i < 20; i++) {
		if (name[i] < '0' || name[i] > '9')
			return -TL_EINVAL;
		uint64_t d = (uint64_t)(name[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -TL_EINVAL;
		v = v * 10 + d;
	}
	if (strcmp(name + 20, ".seg") != 0)
		return -TL_EINVAL;
	*base = v;
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

int tlf_seg_list(const char *pdir, uint64_t **out, size_t *n)
{
	*out = NULL;
	*n = 0;
	DIR *d = opendir(pdir);
	if (!d)
		return errno == ENOENT ? 0 : tl_err_from_errno(errno);
	uint64_t *v = NULL;
	size_t len = 0, cap = 0;
	struct dirent *e;
	int rc = 0;
	while ((e = readdir(d)) != NULL) {
		uint64_t base;
		if (tlf_seg_parse(e->d_name, &base) != 0)
			continue;
		if (len == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			uint64_t *nv = realloc(v, ncap * sizeof(*nv));
			if (!nv) {
				rc = -TL_ENOMEM;
				break;
			}
			v = nv;
			cap = ncap;
		}
		v[len++] = base;
	}
	closedir(d);
	if (rc) {
		free(v);
		return rc;
	}
	if (len)
		qsort(v, len, sizeof(*v), cmp_u64);
	*out = v;
	*n = len;
	return 0;
}

/* Quick test from the raw header, before the checksum: could the frame
 * that follows an invalid one at pos (which should have had offset expect)
 * start at q? */
static int plausible_at(const uint8_t *d, size_t len, size_t pos, size_t q, uint64_t expect)
{
	if (len - q < TLF_FRAME_HDR)
		return 0;
	uint32_t flen = get32(d + q + 4);
	if (flen < TLF_FRAME_HDR || flen > len - q || flen > TLF_MAX_FRAME)
		return 0;
	uint64_t off = get64(d + q + 8);
	/* the records expect..off-1 lie between pos and q, a header at least each */
	return off >= expect && off - expect <= (q - pos) / TLF_FRAME_HDR;
}

/* Whether data[from, to) holds a 512-byte sector of zeros (aligned in
 * the file: data starts at the segment's first byte). */
static int has_zero_sector(const uint8_t *data, size_t from, size_t to)
{
	for (size_t a = (from + 511) & ~(size_t)511; a + 512 <= to; a += 512) {
		size_t i = 0;
		while (i < 512 && data[a + i] == 0)
			i++;
		if (i == 512)
			return 1;
	}
	return 0;
}

/* Looks for a valid frame with offset >= expect after the invalid one at pos. */
static int resync(const uint8_t *d, size_t len, size_t pos, uint64_t expect, size_t *q_out)
{
	struct tlf_frame f;
	size_t need;
	/* If the length field survived, the next frame is right behind. */
	if (len - pos >= TLF_FRAME_HDR) {
		uint32_t flen = get32(d + pos + 4);
		size_t q = pos + flen;
		if (flen >= TLF_FRAME_HDR && flen <= len - pos && q < len &&
		    plausible_at(d, len, pos, q, expect) &&
		    tlf_frame_decode(d + q, len - q, &f, &need) == TLF_OK) {
			*q_out = q;
			return 1;
		}
	}
	for (size_t q = pos + 1; q + TLF_FRAME_HDR <= len; q++) {
		if (plausible_at(d, len, pos, q, expect) &&
		    tlf_frame_decode(d + q, len - q, &f, &need) == TLF_OK) {
			*q_out = q;
			return 1;
		}
	}
	return 0;
}

void tlf_scan_mem(const uint8_t *data, size_t len, uint64_t base, struct tlf_scan *o)
{
	memset(o, 0, sizeof(*o));
	o->last_pos = TLF_NONE;
	uint64_t expect = base;
	size_t pos = 0;
	while (pos < len) {
		struct tlf_frame f;
		size_t need;
		if (tlf_frame_decode(data + pos, len - pos, &f, &need) == TLF_OK && f.offset == expect) {
			o->last_pos = pos;
			pos += f.frame_len;
			o->valid_end = pos;
			o->nframes++;
			expect++;
			continue;
		}
		size_t q;
		if (!resync(data, len, pos, expect, &q))
			break; /* torn tail: nothing valid after pos */
		if (!o->corrupt) {
			o->corrupt = 1;
			o->corrupt_pos = pos;
			o->hole_next_offset = expect;
			o->hole_last_pos = o->last_pos;
			o->hole_zero_sector = has_zero_sector(data, pos, q);
		}
		/* resync checked the frame at q; continue from it */
		pos = q;
		expect = get64(data + q + 8);
	}
	o->next_offset = expect;
}

int tlf_scan_fd(int fd, uint64_t size, uint64_t base, struct tlf_scan *out)
{
	if (size == 0) {
		tlf_scan_mem(NULL, 0, base, out);
		return 0;
	}
	if (size > SIZE_MAX)
		return -TL_ETOOBIG;
	void *m = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (m == MAP_FAILED)
		return tl_err_from_errno(errno);
	tlf_scan_mem(m, (size_t)size, base, out);
	munmap(m, (size_t)size);
	return 0;
}

void tlf_durable_encode(uint8_t out[TLF_DURABLE_SIZE], const struct tlf_durable *d)
{
	put64(out, d->end);
	put64(out + 8, d->seg_base);
	put64(out + 16, d->seg_pos);
	put64(out + 24, d->last_pos);
	put32(out + 32, d->flags);
	put32(out + 36, tlf_crc32c(0, out, 36));
}

int tlf_durable_decode(const uint8_t in[TLF_DURABLE_SIZE], struct tlf_durable *d)
{
	if (tlf_crc32c(0, in, 36) != get32(in + 36))
		return -TL_ECORRUPT;
	d->end = get64(in);
	d->seg_base = get64(in + 8);
	d->seg_pos = get64(in + 16);
	d->last_pos = get64(in + 24);
	d->flags = get32(in + 32);
	return 0;
}

int tlf_durable_read(int fd, struct tlf_durable *d)
{
	uint8_t b[TLF_DURABLE_SIZE];
	/* The writer replaces the 40 bytes with one pwrite; a read racing it
	 * can see a mix, which the checksum catches: read again. */
	for (int tries = 0; tries < 100; tries++) {
		ssize_t r = pread(fd, b, sizeof(b), 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return tl_err_from_errno(errno);
		if (r < (ssize_t)sizeof(b))
			return -TL_ENOTFOUND;
		if (tlf_durable_decode(b, d) == 0)
			return 0;
		sched_yield();
	}
	return -TL_ECORRUPT;
}

static int pread_full(int fd, void *buf, size_t n, uint64_t off)
{
	size_t done = 0;
	while (done < n) {
		ssize_t r = pread(fd, (char *)buf + done, n - done, (off_t)(off + done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return tl_err_from_errno(errno);
		if (r == 0)
			return -TL_ECORRUPT; /* shorter than the durable position says */
		done += (size_t)r;
	}
	return 0;
}

int tlf_read_record_at(int fd, uint64_t pos, struct tl_record *rec, struct tl_buf *storage)
{
	uint8_t hdr[TLF_FRAME_HDR];
	int rc = pread_full(fd, hdr, sizeof(hdr), pos);
	if (rc)
		return rc;
	uint32_t len = get32(hdr + 4);
	if (len < TLF_FRAME_HDR || len > TLF_MAX_FRAME)
		return -TL_ECORRUPT;
	tl_buf_reset(storage);
	rc = tl_buf_reserve(storage, len);
	if (rc)
		return rc;
	rc = pread_full(fd, storage->data, len, pos);
	if (rc)
		return rc;
	struct tlf_frame f;
	size_t need;
	if (tlf_frame_decode((const uint8_t *)storage->data, len, &f, &need) != TLF_OK)
		return -TL_ECORRUPT;
	storage->len = len;
	rec->offset = f.offset;
	rec->ts_ms = f.ts_ms;
	rec->sub = 0;
	rec->key = f.key;
	rec->key_len = f.key_len;
	rec->value = f.value;
	rec->value_len = f.value_len;
	return 0;
}

int tlf_fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return tl_err_from_errno(errno);
	int rc = fsync(fd) == 0 ? 0 : tl_err_from_errno(errno);
	close(fd);
	return rc;
}

int tlf_path(char *out, size_t cap, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(out, cap, fmt, ap);
	va_end(ap);
	return n < 0 || (size_t)n >= cap ? -TL_ETOOBIG : 0;
}
