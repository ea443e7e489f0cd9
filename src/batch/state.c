/* state.c — the batch's day state files (see state.h for the format). */
#include "batch/state.h"

#include "core/buf.h"
#include "pipeline/archive.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define MAGIC "TLBST001"
#define HDR_LEN 40
#define INDEX_MAX (1u << 30)

int tl_bstate_topic(int64_t day, char *buf, size_t cap)
{
	int n = tl_archive_day_format(day, buf, cap);
	return n < 0 ? n : TL_OK;
}

int tl_bstate_day_dir(const char *dir, int64_t day, char *buf, size_t cap)
{
	char dt[32];
	int rc = tl_bstate_topic(day, dt, sizeof dt);
	if (rc)
		return rc;
	int n = snprintf(buf, cap, "%s/%s", dir, dt);
	return n < 0 || (size_t)n >= cap ? -TL_EINVAL : TL_OK;
}

int tl_bstate_path(const char *dir, int64_t day, uint64_t runid, char *buf, size_t cap)
{
	char d[PATH_MAX];
	int rc = tl_bstate_day_dir(dir, day, d, sizeof d);
	if (rc)
		return rc;
	int n = snprintf(buf, cap, "%s/%" PRIu64 ".state", d, runid);
	return n < 0 || (size_t)n >= cap ? -TL_EINVAL : TL_OK;
}

/* ---- writing ------------------------------------------------------------- */

static int put_u16(struct tl_buf *b, uint16_t v)
{
	unsigned char x[2] = {(unsigned char)v, (unsigned char)(v >> 8)};
	return tl_buf_append(b, x, 2);
}

static int put_u32(struct tl_buf *b, uint32_t v)
{
	unsigned char x[4];
	for (int i = 0; i < 4; i++)
		x[i] = (unsigned char)(v >> (8 * i));
	return tl_buf_append(b, x, 4);
}

static int put_u64(struct tl_buf *b, uint64_t v)
{
	unsigned char x[8];
	for (int i = 0; i < 8; i++)
		x[i] = (unsigned char)(v >> (8 * i));
	return tl_buf_append(b, x, 8);
}

static int put_str(struct tl_buf *b, const char *s)
{
	size_t n = strlen(s);
	if (n > UINT16_MAX)
		return -TL_ETOOBIG;
	int rc = put_u16(b, (uint16_t)n);
	return rc ? rc : tl_buf_append(b, s, n);
}

static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t w = write(fd, c, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return tl_err_from_errno(errno);
		}
		c += w;
		n -= (size_t)w;
	}
	return TL_OK;
}

static int fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return tl_err_from_errno(errno);
	int rc = fsync(fd) ? tl_err_from_errno(errno) : TL_OK;
	close(fd);
	return rc;
}

static int mkdir_p(const char *path)
{
	char tmp[PATH_MAX];
	size_t n = strlen(path);
	if (n >= sizeof tmp)
		return -TL_EINVAL;
	memcpy(tmp, path, n + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) && errno != EEXIST)
			return tl_err_from_errno(errno);
		*p = '/';
	}
	if (mkdir(tmp, 0755) && errno != EEXIST)
		return tl_err_from_errno(errno);
	return TL_OK;
}

/* XXH3-64 of a campaign's section (bytes long) as written. */
static int section_hash(const struct tl_bstate_campaign *c, size_t bytes, uint64_t *out)
{
	if (!c->n_chunks) {
		*out = XXH3_64bits(c->fps, bytes);
		return TL_OK;
	}
	XXH3_state_t *st = XXH3_createState();
	if (!st)
		return -TL_ENOMEM;
	XXH3_64bits_reset(st);
	for (size_t k = 0; k < c->n_chunks; k++)
		XXH3_64bits_update(st, c->chunks[k].fps, c->chunks[k].n * TL_FP_BYTES);
	*out = XXH3_64bits_digest(st);
	XXH3_freeState(st);
	return TL_OK;
}

int tl_bstate_write(const char *dir, int64_t day, uint64_t runid, const struct tl_bstate_campaign *c,
                    size_t n)
{
	char ddir[PATH_MAX], path[PATH_MAX], tmp[PATH_MAX + 8];
	int rc = tl_bstate_day_dir(dir, day, ddir, sizeof ddir);
	if (rc || (rc = tl_bstate_path(dir, day, runid, path, sizeof path)))
		return rc;
	if (n > UINT32_MAX)
		return -TL_ETOOBIG;
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	if ((rc = mkdir_p(ddir)))
		return rc;

	/* the index: section offsets follow it */
	struct tl_buf idx;
	tl_buf_init(&idx, 0);
	size_t fixed = 4;
	for (size_t i = 0; i < n; i++) {
		fixed += 2 + strlen(c[i].tenant) + 2 + strlen(c[i].campaign) + 2 + 24;
		for (size_t v = 0; v < c[i].n_variants; v++)
			fixed += 2 + strlen(c[i].variants[v]);
	}
	uint64_t off = HDR_LEN + fixed;
	rc = put_u32(&idx, (uint32_t)n);
	for (size_t i = 0; i < n && !rc; i++) {
		rc = put_str(&idx, c[i].tenant);
		if (!rc)
			rc = put_str(&idx, c[i].campaign);
		if (!rc)
			rc = c[i].n_variants > UINT16_MAX ? -TL_ETOOBIG
			                                  : put_u16(&idx, (uint16_t)c[i].n_variants);
		for (size_t v = 0; v < c[i].n_variants && !rc; v++)
			rc = put_str(&idx, c[i].variants[v]);
		size_t bytes = (size_t)c[i].count * TL_FP_BYTES;
		if (!rc)
			rc = put_u64(&idx, off);
		if (!rc)
			rc = put_u64(&idx, c[i].count);
		uint64_t xxh = 0;
		if (!rc)
			rc = section_hash(&c[i], bytes, &xxh);
		if (!rc)
			rc = put_u64(&idx, xxh);
		off += bytes;
	}
	if (!rc && idx.len != fixed)
		rc = -TL_EINVAL;
	struct tl_buf hdr;
	tl_buf_init(&hdr, 0);
	if (!rc)
		rc = tl_buf_append(&hdr, MAGIC, 8);
	if (!rc)
		rc = put_u64(&hdr, runid);
	if (!rc)
		rc = put_u64(&hdr, (uint64_t)day);
	if (!rc)
		rc = put_u64(&hdr, idx.len);
	if (!rc)
		rc = put_u64(&hdr, XXH3_64bits(idx.data, idx.len));

	int fd = -1;
	if (!rc) {
		fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0)
			rc = tl_err_from_errno(errno);
	}
	if (!rc)
		rc = write_all(fd, hdr.data, hdr.len);
	if (!rc)
		rc = write_all(fd, idx.data, idx.len);
	for (size_t i = 0; i < n && !rc; i++) {
		if (!c[i].n_chunks)
			rc = write_all(fd, c[i].fps, (size_t)c[i].count * TL_FP_BYTES);
		for (size_t k = 0; k < c[i].n_chunks && !rc; k++)
			rc = write_all(fd, c[i].chunks[k].fps, c[i].chunks[k].n * TL_FP_BYTES);
	}
	if (!rc && fsync(fd))
		rc = tl_err_from_errno(errno);
	if (fd >= 0 && close(fd) && !rc)
		rc = tl_err_from_errno(errno);
	if (!rc && rename(tmp, path))
		rc = tl_err_from_errno(errno);
	if (!rc)
		rc = fsync_dir(ddir);
	if (rc)
		unlink(tmp);
	tl_buf_free(&idx);
	tl_buf_free(&hdr);
	return rc;
}

/* ---- reading ------------------------------------------------------------- */

static uint64_t get_u64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static int read_at(int fd, void *buf, size_t n, uint64_t off)
{
	char *p = buf;
	while (n) {
		ssize_t r = pread(fd, p, n, (off_t)off);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return tl_err_from_errno(errno);
		}
		if (r == 0)
			return -TL_ECORRUPT; /* shorter than its index says */
		p += r;
		n -= (size_t)r;
		off += (uint64_t)r;
	}
	return TL_OK;
}

struct cursor {
	const unsigned char *p, *end;
	int bad;
};

static uint64_t cur_int(struct cursor *c, int bytes)
{
	if (c->end - c->p < bytes) {
		c->bad = 1;
		return 0;
	}
	uint64_t v = 0;
	for (int i = bytes - 1; i >= 0; i--)
		v = v << 8 | c->p[i];
	c->p += bytes;
	return v;
}

/* A u16-prefixed string copied NUL-terminated to *dst (advancing it). */
static const char *cur_str(struct cursor *c, char **dst)
{
	size_t n = (size_t)cur_int(c, 2);
	if (c->bad || (size_t)(c->end - c->p) < n) {
		c->bad = 1;
		return "";
	}
	char *s = *dst;
	memcpy(s, c->p, n);
	s[n] = '\0';
	*dst += n + 1;
	c->p += n;
	return s;
}

static int cmp_camp(const void *a, const void *b)
{
	const struct tl_bstate_campaign *x = a, *y = b;
	int r = strcmp(x->tenant, y->tenant);
	return r ? r : strcmp(x->campaign, y->campaign);
}

static int parse_index(struct tl_bstate *s, const unsigned char *idx, size_t len, uint64_t file_size)
{
	struct cursor c = {idx, idx + len, 0};
	uint64_t n = cur_int(&c, 4);
	if (c.bad || n > len / 30 + 1)
		return -TL_ECORRUPT;
	/* pass 1: count variants */
	size_t nvar = 0;
	struct cursor d = c;
	for (uint64_t i = 0; i < n && !d.bad; i++) {
		for (int k = 0; k < 2; k++) {
			size_t sl = (size_t)cur_int(&d, 2);
			if ((size_t)(d.end - d.p) < sl)
				d.bad = 1;
			else
				d.p += sl;
		}
		size_t nv = (size_t)cur_int(&d, 2);
		for (size_t v = 0; v < nv && !d.bad; v++) {
			size_t sl = (size_t)cur_int(&d, 2);
			if ((size_t)(d.end - d.p) < sl)
				d.bad = 1;
			else
				d.p += sl;
		}
		nvar += nv;
		d.p += 24;
		if (d.p > d.end)
			d.bad = 1;
	}
	if (d.bad || d.p != d.end)
		return -TL_ECORRUPT;
	s->c = calloc(n ? n : 1, sizeof *s->c);
	s->vstore = calloc(nvar ? nvar : 1, sizeof *s->vstore);
	s->blob = malloc(len + 3 * (n + nvar) + 1);
	if (!s->c || !s->vstore || !s->blob)
		return -TL_ENOMEM;
	char *dst = s->blob;
	size_t vi = 0;
	for (uint64_t i = 0; i < n; i++) {
		struct tl_bstate_campaign *e = &s->c[i];
		e->tenant = cur_str(&c, &dst);
		e->campaign = cur_str(&c, &dst);
		e->n_variants = (size_t)cur_int(&c, 2);
		e->variants = (const char *const *)&s->vstore[vi];
		for (size_t v = 0; v < e->n_variants; v++)
			s->vstore[vi++] = (char *)cur_str(&c, &dst);
		e->offset = cur_int(&c, 8);
		e->count = cur_int(&c, 8);
		e->xxh = cur_int(&c, 8);
		if (c.bad || e->count > file_size / TL_FP_BYTES || e->offset > file_size ||
		    e->offset + e->count * TL_FP_BYTES > file_size)
			return -TL_ECORRUPT;
	}
	s->n = (size_t)n;
	if (s->n)
		qsort(s->c, s->n, sizeof *s->c, cmp_camp);
	return TL_OK;
}

int tl_bstate_open(const char *path, struct tl_bstate **out)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -TL_ENOTFOUND : tl_err_from_errno(errno);
	struct tl_bstate *s = calloc(1, sizeof *s);
	unsigned char hdr[HDR_LEN];
	unsigned char *idx = NULL;
	struct stat st;
	int rc = s ? TL_OK : -TL_ENOMEM;
	if (!rc && fstat(fd, &st))
		rc = tl_err_from_errno(errno);
	if (!rc)
		rc = read_at(fd, hdr, HDR_LEN, 0);
	uint64_t ilen = rc ? 0 : get_u64(hdr + 24);
	if (!rc && (memcmp(hdr, MAGIC, 8) != 0 || ilen > INDEX_MAX || ilen + HDR_LEN > (uint64_t)st.st_size))
		rc = -TL_ECORRUPT;
	if (!rc && !(idx = malloc(ilen ? ilen : 1)))
		rc = -TL_ENOMEM;
	if (!rc)
		rc = read_at(fd, idx, (size_t)ilen, HDR_LEN);
	if (!rc && XXH3_64bits(idx, (size_t)ilen) != get_u64(hdr + 32))
		rc = -TL_ECORRUPT;
	if (!rc) {
		s->runid = get_u64(hdr + 8);
		s->day = (int64_t)get_u64(hdr + 16);
		rc = parse_index(s, idx, (size_t)ilen, (uint64_t)st.st_size);
	}
	if (!rc && !(s->path = strdup(path)))
		rc = -TL_ENOMEM;
	free(idx);
	close(fd);
	if (rc) {
		tl_bstate_close(s);
		return rc;
	}
	*out = s;
	return TL_OK;
}

void tl_bstate_close(struct tl_bstate *s)
{
	if (!s)
		return;
	free(s->c);
	free(s->vstore);
	free(s->blob);
	free(s->path);
	free(s);
}

const struct tl_bstate_campaign *tl_bstate_find(const struct tl_bstate *s, const char *tenant,
                                                const char *campaign)
{
	struct tl_bstate_campaign key = {.tenant = tenant, .campaign = campaign};
	return s->n ? bsearch(&key, s->c, s->n, sizeof *s->c, cmp_camp) : NULL;
}

int tl_bstate_members(const struct tl_bstate *s, const struct tl_bstate_campaign *c, uint8_t *out)
{
	if (!c->count)
		return TL_OK;
	int fd = open(s->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return tl_err_from_errno(errno);
	size_t bytes = (size_t)c->count * TL_FP_BYTES;
	int rc = read_at(fd, out, bytes, c->offset);
	close(fd);
	if (!rc && XXH3_64bits(out, bytes) != c->xxh)
		rc = -TL_ECORRUPT;
	return rc;
}

int tl_bstate_prune(const char *dir, int64_t day, uint64_t keep_runid)
{
	char ddir[PATH_MAX], keep[64];
	int rc = tl_bstate_day_dir(dir, day, ddir, sizeof ddir);
	if (rc)
		return rc;
	snprintf(keep, sizeof keep, "%" PRIu64 ".state", keep_runid);
	DIR *d = opendir(ddir);
	if (!d)
		return errno == ENOENT ? TL_OK : tl_err_from_errno(errno);
	struct dirent *e;
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name);
		bool ours = (n > 6 && !strcmp(e->d_name + n - 6, ".state")) ||
		            (n > 10 && !strcmp(e->d_name + n - 10, ".state.tmp"));
		if (!ours || !strcmp(e->d_name, keep))
			continue;
		char path[PATH_MAX + 256];
		snprintf(path, sizeof path, "%s/%s", ddir, e->d_name);
		if (unlink(path) && errno != ENOENT && !rc)
			rc = tl_err_from_errno(errno);
	}
	closedir(d);
	return rc;
}
