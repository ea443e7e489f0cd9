/* archive.c — the archiver role (see archive.h for the layout and the
 * exactly-once argument): naming, recovery, partition locks, and the loop
 * that turns records into zstd-compressed NDJSON rolls. */
#include "pipeline/archive.h"

#include "core/clock.h"
#include "core/log.h"
#include "event/event.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#define DAY_MS 86400000LL
#define OFF_DIGITS 20
#define SUFFIX ".ndjson.zst"
#define TMP_SUFFIX ".ndjson.zst.tmp"
#define IN_CHUNK (256 * 1024) /* uncompressed bytes buffered per day file before compressing */
#define MAX_PARTS 128         /* subscriptions: 2 topics x 64 partitions */
#define END_EVERY_MS 250      /* the lag metric asks for one partition's end this often */

/* ---- naming -------------------------------------------------------------- */

static bool topic_ok(const char *t, size_t n)
{
	if (n == 0 || n >= TL_ARCHIVE_TOPIC_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = t[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
			return false;
	}
	return true;
}

int tl_archive_name_format(const struct tl_archive_name *n, char *buf, size_t cap)
{
	if (!topic_ok(n->topic, strlen(n->topic)) || n->partition < 0 || n->first > n->last)
		return -TL_EINVAL;
	int len = snprintf(buf, cap, "%s-p%d-%0*llu-%0*llu" SUFFIX, n->topic, n->partition, OFF_DIGITS,
	                   (unsigned long long)n->first, OFF_DIGITS, (unsigned long long)n->last);
	return len < 0 || (size_t)len >= cap ? -TL_EINVAL : len;
}

/* Parses 1..20 decimal digits at *p (advancing it) into *v. */
static bool parse_u64(const char **p, uint64_t *v)
{
	const char *s = *p;
	uint64_t x = 0;
	size_t n = 0;
	while (s[n] >= '0' && s[n] <= '9') {
		unsigned d = (unsigned)(s[n] - '0');
		if (n >= 20 || x > (UINT64_MAX - d) / 10)
			return false;
		x = x * 10 + d;
		n++;
	}
	if (!n)
		return false;
	*p = s + n;
	*v = x;
	return true;
}

/* "<topic>-p<P>-<first>" at the start of name; *rest points after it. */
static bool parse_head(const char *name, char topic[TL_ARCHIVE_TOPIC_MAX], int *partition, uint64_t *first,
                       const char **rest)
{
	const char *dash = strchr(name, '-');
	if (!dash || !topic_ok(name, (size_t)(dash - name)) || dash[1] != 'p')
		return false;
	memcpy(topic, name, (size_t)(dash - name));
	topic[dash - name] = '\0';
	const char *p = dash + 2;
	uint64_t part;
	if (!parse_u64(&p, &part) || part > 4095 || *p != '-')
		return false;
	p++;
	if (!parse_u64(&p, first))
		return false;
	*partition = (int)part;
	*rest = p;
	return true;
}

int tl_archive_name_parse(const char *name, struct tl_archive_name *out)
{
	const char *p;
	struct tl_archive_name n;
	if (!parse_head(name, n.topic, &n.partition, &n.first, &p) || *p != '-')
		return -TL_EINVAL;
	p++;
	if (!parse_u64(&p, &n.last) || strcmp(p, SUFFIX) != 0 || n.first > n.last)
		return -TL_EINVAL;
	*out = n;
	return TL_OK;
}

/* ".<topic>-p<P>-<first>.ndjson.zst.tmp" */
static int tmp_name_format(const char *topic, int partition, uint64_t first, char *buf, size_t cap)
{
	int len = snprintf(buf, cap, ".%s-p%d-%0*llu" TMP_SUFFIX, topic, partition, OFF_DIGITS,
	                   (unsigned long long)first);
	return len < 0 || (size_t)len >= cap ? -TL_EINVAL : len;
}

static bool tmp_name_parse(const char *name, char topic[TL_ARCHIVE_TOPIC_MAX], int *partition,
                           uint64_t *first)
{
	const char *p;
	return name[0] == '.' && parse_head(name + 1, topic, partition, first, &p) &&
	       strcmp(p, TMP_SUFFIX) == 0;
}

int64_t tl_archive_day_of(int64_t ts_ms)
{
	int64_t d = ts_ms / DAY_MS;
	if (ts_ms < 0 && d * DAY_MS != ts_ms)
		d--;
	return d;
}

int tl_archive_day_format(int64_t day, char *buf, size_t cap)
{
	int64_t y;
	unsigned m, d;
	tl_civil_from_days(day, &y, &m, &d);
	if (y < 0 || y > 9999)
		return -TL_EINVAL;
	int n = snprintf(buf, cap, "dt=%04lld-%02u-%02u", (long long)y, m, d);
	return n < 0 || (size_t)n >= cap ? -TL_EINVAL : n;
}

int tl_archive_day_parse(const char *s, int64_t *day)
{
	if (strlen(s) != 13 || strncmp(s, "dt=", 3) != 0 || s[7] != '-' || s[10] != '-')
		return -TL_EINVAL;
	int v[8], k = 0;
	for (int i = 3; i < 13; i++) {
		if (i == 7 || i == 10)
			continue;
		if (s[i] < '0' || s[i] > '9')
			return -TL_EINVAL;
		v[k++] = s[i] - '0';
	}
	int64_t y = v[0] * 1000 + v[1] * 100 + v[2] * 10 + v[3];
	unsigned m = (unsigned)(v[4] * 10 + v[5]), d = (unsigned)(v[6] * 10 + v[7]);
	if (m < 1 || m > 12 || d < 1 || d > 31)
		return -TL_EINVAL;
	int64_t z = tl_days_from_civil(y, m, d);
	int64_t yy;
	unsigned mm, dd;
	tl_civil_from_days(z, &yy, &mm, &dd);
	if (yy != y || mm != m || dd != d)
		return -TL_EINVAL; /* 2026-02-30 */
	*day = z;
	return TL_OK;
}

/* ---- small file-system helpers ------------------------------------------ */

static int fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return tl_err_from_errno(errno);
	int rc = fsync(fd) ? tl_err_from_errno(errno) : TL_OK;
	close(fd);
	return rc;
}

static int path_join(char *buf, size_t cap, const char *a, const char *b)
{
	int n = snprintf(buf, cap, "%s/%s", a, b);
	return n < 0 || (size_t)n >= cap ? -TL_EINVAL : TL_OK;
}

/* mkdir that fsyncs the parent when it created the directory. */
static int mkdir_durable(const char *path, const char *parent)
{
	if (mkdir(path, 0755) == 0)
		return fsync_dir(parent);
	return errno == EEXIST ? TL_OK : tl_err_from_errno(errno);
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

/* ---- recovery ------------------------------------------------------------ */

struct range {
	uint64_t first, last;
};

struct tmpfile {
	char dir[PATH_MAX];
	char name[TL_ARCHIVE_NAME_MAX];
	uint64_t first;
};

struct scan {
	struct range *fin;
	size_t n_fin, cap_fin;
	struct tmpfile *tmp;
	size_t n_tmp, cap_tmp;
};

static int cmp_range(const void *a, const void *b)
{
	const struct range *x = a, *y = b;
	return (x->first > y->first) - (x->first < y->first);
}

static int grow(void **p, size_t *cap, size_t n, size_t size)
{
	if (n < *cap)
		return TL_OK;
	size_t nc = *cap ? *cap * 2 : 64;
	void *q = realloc(*p, nc * size);
	if (!q)
		return -TL_ENOMEM;
	*p = q;
	*cap = nc;
	return TL_OK;
}

static int scan_day(struct scan *s, const char *daydir, const char *topic, int partition)
{
	DIR *d = opendir(daydir);
	if (!d)
		return errno == ENOENT ? TL_OK : tl_err_from_errno(errno);
	int rc = TL_OK;
	struct dirent *e;
	while (!rc && (e = readdir(d))) {
		struct tl_archive_name n;
		char t[TL_ARCHIVE_TOPIC_MAX];
		int p;
		uint64_t first;
		if (tl_archive_name_parse(e->d_name, &n) == TL_OK) {
			if (n.partition != partition || strcmp(n.topic, topic) != 0)
				continue;
			if (!(rc = grow((void **)&s->fin, &s->cap_fin, s->n_fin, sizeof *s->fin)))
				s->fin[s->n_fin++] = (struct range){n.first, n.last};
		} else if (strlen(e->d_name) < TL_ARCHIVE_NAME_MAX &&
		           tmp_name_parse(e->d_name, t, &p, &first) && p == partition && !strcmp(t, topic)) {
			if ((rc = grow((void **)&s->tmp, &s->cap_tmp, s->n_tmp, sizeof *s->tmp)))
				break;
			struct tmpfile *tf = &s->tmp[s->n_tmp++];
			snprintf(tf->dir, sizeof tf->dir, "%s", daydir);
			memcpy(tf->name, e->d_name, strlen(e->d_name) + 1);
			tf->first = first;
		}
	}
	closedir(d);
	return rc;
}

int tl_archive_recover(const char *dir, const char *topic, int partition, struct tl_archive_recovery *out)
{
	memset(out, 0, sizeof *out);
	DIR *d = opendir(dir);
	if (!d)
		return errno == ENOENT ? TL_OK : tl_err_from_errno(errno);
	struct scan s = {0};
	int rc = TL_OK;
	struct dirent *e;
	char path[PATH_MAX];
	while (!rc && (e = readdir(d))) {
		int64_t day;
		if (tl_archive_day_parse(e->d_name, &day) != TL_OK)
			continue;
		if (!(rc = path_join(path, sizeof path, dir, e->d_name)))
			rc = scan_day(&s, path, topic, partition);
	}
	closedir(d);
	if (rc)
		goto out;
	if (s.n_fin)
		qsort(s.fin, s.n_fin, sizeof *s.fin, cmp_range);
	for (size_t i = 0; i < s.n_tmp && !rc; i++) {
		struct tmpfile *tf = &s.tmp[i];
		struct range key = {tf->first, 0};
		const struct range *r =
		    s.n_fin ? bsearch(&key, s.fin, s.n_fin, sizeof *s.fin, cmp_range) : NULL;
		char from[PATH_MAX];
		if ((rc = path_join(from, sizeof from, tf->dir, tf->name)))
			break;
		if (r) {
			/* a sibling of this roll is visible: every temporary of it was
			 * complete before the first rename, so finish the rename */
			struct tl_archive_name n = {
			    .partition = partition, .first = r->first, .last = r->last};
			snprintf(n.topic, sizeof n.topic, "%s", topic);
			char name[TL_ARCHIVE_NAME_MAX];
			int len = tl_archive_name_format(&n, name, sizeof name);
			if (len < 0 || (rc = path_join(path, sizeof path, tf->dir, name))) {
				rc = len < 0 ? len : rc;
				break;
			}
			if (rename(from, path))
				rc = tl_err_from_errno(errno);
			else
				out->rolled_forward++;
		} else {
			if (unlink(from) && errno != ENOENT)
				rc = tl_err_from_errno(errno);
			else
				out->deleted++;
		}
		if (!rc)
			rc = fsync_dir(tf->dir);
	}
	if (!rc && s.n_fin) {
		uint64_t max = 0;
		for (size_t i = 0; i < s.n_fin; i++)
			if (s.fin[i].last > max)
				max = s.fin[i].last;
		out->next = max + 1;
	}
out:
	free(s.fin);
	free(s.tmp);
	return rc;
}

/* ---- the role ------------------------------------------------------------ */

struct dayfile {
	int64_t day;
	int fd;
	ZSTD_CCtx *cctx;
	struct tl_buf in; /* uncompressed lines not yet given to zstd */
	uint64_t records;
};

struct part {
	const char *topic;
	int partition;
	int lock_fd;
	_Atomic uint64_t next; /* committed: resume offset */
	_Atomic uint64_t end;  /* end of the partition when last asked (for the lag metric) */
	atomic_bool end_known;
	_Atomic uint64_t seen; /* 1 + the highest offset read (the end is at least this) */
	bool open;             /* a roll is being written */
	uint64_t first, last;  /* offsets of the open roll */
	int64_t bytes;         /* its uncompressed size */
	int64_t opened_ms;     /* monotonic time it was opened */
	struct dayfile *days;
	size_t n_days;
};

struct tl_archiver {
	struct tl_archiver_opts o;
	char *dir;
	struct part parts[MAX_PARTS];
	size_t n_parts;
	struct tl_subscription subs[MAX_PARTS];
	struct tl_consumer_slot cons;
	struct tl_record *recs;
	struct tl_buf line;
	void *zout;
	size_t zout_cap;
	ZSTD_CCtx **pool; /* idle compression contexts */
	size_t n_pool;
	atomic_int stopping;
	size_t end_rr;      /* the partition whose end is asked next */
	int64_t end_due_ms; /* when */
	_Atomic uint64_t records, files, rolls, raw_bytes, zbytes, undecodable, errors, rolled_forward,
	    deleted;
};

static const char *const topics[] = {TL_TOPIC_EVENTS, TL_TOPIC_DELIVERY};

static int lock_part(struct tl_archiver *a, struct part *p)
{
	char locks[PATH_MAX], path[PATH_MAX], name[64];
	int rc = path_join(locks, sizeof locks, a->dir, ".locks");
	if (rc || (rc = mkdir_durable(locks, a->dir)))
		return rc;
	snprintf(name, sizeof name, "%s-p%d.lock", p->topic, p->partition);
	if ((rc = path_join(path, sizeof path, locks, name)))
		return rc;
	p->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (p->lock_fd < 0)
		return tl_err_from_errno(errno);
	if (flock(p->lock_fd, LOCK_EX | LOCK_NB))
		return errno == EWOULDBLOCK ? -TL_ELOCKED : tl_err_from_errno(errno);
	return TL_OK;
}

static int recover_all(struct tl_archiver *a)
{
	for (size_t i = 0; i < a->n_parts; i++) {
		struct part *p = &a->parts[i];
		struct tl_archive_recovery r;
		int rc = tl_archive_recover(a->dir, p->topic, p->partition, &r);
		if (rc)
			return rc;
		atomic_store(&p->next, r.next);
		atomic_fetch_add(&a->rolled_forward, r.rolled_forward);
		atomic_fetch_add(&a->deleted, r.deleted);
	}
	return TL_OK;
}

int tl_archiver_create(const struct tl_archiver_opts *o, struct tl_archiver **out)
{
	int rc = -TL_ENOMEM;
	struct tl_archiver *a = calloc(1, sizeof *a);
	if (!a)
		goto fail;
	tl_consumer_slot_init(&a->cons);
	for (size_t i = 0; i < MAX_PARTS; i++)
		a->parts[i].lock_fd = -1;
	a->o = *o;
	if (a->o.roll_bytes <= 0)
		a->o.roll_bytes = 64LL << 20;
	if (a->o.roll_interval_ms <= 0)
		a->o.roll_interval_ms = 60000;
	if (a->o.zstd_level == 0)
		a->o.zstd_level = 1;
	if (!a->o.max_open_days)
		a->o.max_open_days = 16;
	if (!a->o.batch_max)
		a->o.batch_max = 4096;
	a->dir = strdup(o->dir);
	a->recs = malloc(a->o.batch_max * sizeof *a->recs);
	a->zout_cap = ZSTD_CStreamOutSize();
	a->zout = malloc(a->zout_cap);
	a->pool = calloc(MAX_PARTS * a->o.max_open_days, sizeof *a->pool);
	if (!a->dir || !a->recs || !a->zout || !a->pool)
		goto fail;
	tl_buf_init(&a->line, TL_MAX_EVENT_JSON * 2);
	if (mkdir(a->dir, 0755) && errno != EEXIST) {
		rc = tl_err_from_errno(errno);
		goto fail;
	}
	for (size_t t = 0; t < 2; t++) {
		int P = tl_stream_partitions(o->stream, topics[t]);
		if (P < 0) {
			rc = P;
			goto fail;
		}
		for (int p = 0; p < P && p < 64; p++) {
			if (!(o->partitions & (1ULL << p)))
				continue;
			struct part *pp = &a->parts[a->n_parts++];
			pp->topic = topics[t];
			pp->partition = p;
			if ((rc = lock_part(a, pp)))
				goto fail;
		}
	}
	if ((rc = recover_all(a)))
		goto fail;
	*out = a;
	return TL_OK;
fail:
	tl_archiver_destroy(a);
	return rc;
}

static void drop_roll(struct tl_archiver *a, struct part *p)
{
	for (size_t i = 0; i < p->n_days; i++) {
		struct dayfile *df = &p->days[i];
		if (df->fd >= 0)
			close(df->fd);
		if (df->cctx) {
			ZSTD_CCtx_reset(df->cctx, ZSTD_reset_session_and_parameters);
			if (a->n_pool < MAX_PARTS * a->o.max_open_days)
				a->pool[a->n_pool++] = df->cctx;
			else
				ZSTD_freeCCtx(df->cctx);
		}
		tl_buf_free(&df->in);
	}
	free(p->days);
	p->days = NULL;
	p->n_days = 0;
	p->open = false;
}

void tl_archiver_destroy(struct tl_archiver *a)
{
	if (!a)
		return;
	tl_consumer_slot_destroy(&a->cons);
	for (size_t i = 0; i < MAX_PARTS; i++) {
		drop_roll(a, &a->parts[i]); /* temporaries stay: recovery removes them */
		if (a->parts[i].lock_fd >= 0)
			close(a->parts[i].lock_fd);
	}
	for (size_t i = 0; i < a->n_pool; i++)
		ZSTD_freeCCtx(a->pool[i]);
	free(a->pool);
	free(a->zout);
	free(a->recs);
	tl_buf_free(&a->line);
	free(a->dir);
	free(a);
}

void tl_archiver_stop(struct tl_archiver *a)
{
	atomic_store(&a->stopping, 1);
	tl_consumer_slot_wakeup(&a->cons);
}

int tl_archiver_committed(struct tl_archiver *a, const char *topic, int partition, uint64_t *next)
{
	for (size_t i = 0; i < a->n_parts; i++) {
		if (a->parts[i].partition == partition && !strcmp(a->parts[i].topic, topic)) {
			*next = atomic_load(&a->parts[i].next);
			return TL_OK;
		}
	}
	return -TL_ENOTFOUND;
}

static int day_path(struct tl_archiver *a, int64_t day, char *buf, size_t cap)
{
	char dt[32];
	int n = tl_archive_day_format(day, dt, sizeof dt);
	return n < 0 ? n : path_join(buf, cap, a->dir, dt);
}

/* Compresses what is buffered in df; ZSTD_e_end also closes the frame. */
static int zflush(struct tl_archiver *a, struct dayfile *df, ZSTD_EndDirective mode)
{
	ZSTD_inBuffer in = {df->in.data, df->in.len, 0};
	for (;;) {
		ZSTD_outBuffer out = {a->zout, a->zout_cap, 0};
		size_t r = ZSTD_compressStream2(df->cctx, &out, &in, mode);
		if (ZSTD_isError(r))
			return -TL_EIO;
		if (out.pos) {
			int rc = write_all(df->fd, a->zout, out.pos);
			if (rc)
				return rc;
			atomic_fetch_add(&a->zbytes, out.pos);
		}
		if (mode == ZSTD_e_end ? r == 0 : in.pos == in.size)
			break;
	}
	tl_buf_reset(&df->in);
	return TL_OK;
}

static int open_day(struct tl_archiver *a, struct part *p, int64_t day, struct dayfile **out)
{
	char dir[PATH_MAX], name[TL_ARCHIVE_NAME_MAX], path[PATH_MAX];
	int rc = day_path(a, day, dir, sizeof dir);
	if (rc || (rc = mkdir_durable(dir, a->dir)))
		return rc;
	if ((rc = tmp_name_format(p->topic, p->partition, p->first, name, sizeof name)) < 0 ||
	    (rc = path_join(path, sizeof path, dir, name)))
		return rc;
	struct dayfile *days = realloc(p->days, (p->n_days + 1) * sizeof *days);
	if (!days)
		return -TL_ENOMEM;
	p->days = days;
	struct dayfile *df = &days[p->n_days];
	*df = (struct dayfile){.day = day, .fd = -1};
	tl_buf_init(&df->in, 0);
	df->cctx = a->n_pool ? a->pool[--a->n_pool] : ZSTD_createCCtx();
	if (!df->cctx)
		return -TL_ENOMEM;
	p->n_days++; /* from here drop_roll releases it */
	if (ZSTD_isError(ZSTD_CCtx_setParameter(df->cctx, ZSTD_c_compressionLevel, a->o.zstd_level)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(df->cctx, ZSTD_c_checksumFlag, 1)))
		return -TL_EINVAL;
	df->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (df->fd < 0)
		return tl_err_from_errno(errno);
	*out = df;
	return TL_OK;
}

/* Commits the open roll of p: every day file is finished and fsynced, the
 * day directories fsynced, then each file renamed to its final name and the
 * directories fsynced again (see archive.h). */
static int commit_roll(struct tl_archiver *a, struct part *p)
{
	if (!p->open)
		return TL_OK;
	char dir[PATH_MAX], from[PATH_MAX], to[PATH_MAX], tmp[TL_ARCHIVE_NAME_MAX], fin[TL_ARCHIVE_NAME_MAX];
	int rc = TL_OK;
	for (size_t i = 0; i < p->n_days && !rc; i++) {
		struct dayfile *df = &p->days[i];
		rc = zflush(a, df, ZSTD_e_end);
		if (!rc && fsync(df->fd))
			rc = tl_err_from_errno(errno);
		if (!rc && close(df->fd))
			rc = tl_err_from_errno(errno);
		df->fd = -1;
	}
	for (size_t i = 0; i < p->n_days && !rc; i++)
		if (!(rc = day_path(a, p->days[i].day, dir, sizeof dir)))
			rc = fsync_dir(dir);
	if (rc)
		return rc; /* nothing renamed: the roll is simply not there */
	struct tl_archive_name n = {.partition = p->partition, .first = p->first, .last = p->last};
	snprintf(n.topic, sizeof n.topic, "%s", p->topic);
	for (size_t i = 0; i < p->n_days && !rc; i++) {
		int k;
		if ((rc = day_path(a, p->days[i].day, dir, sizeof dir)) ||
		    (k = tmp_name_format(p->topic, p->partition, p->first, tmp, sizeof tmp)) < 0 ||
		    (k = tl_archive_name_format(&n, fin, sizeof fin)) < 0 ||
		    (rc = path_join(from, sizeof from, dir, tmp)) ||
		    (rc = path_join(to, sizeof to, dir, fin))) {
			rc = rc ? rc : -TL_EINVAL;
			break;
		}
		if (rename(from, to))
			rc = tl_err_from_errno(errno);
	}
	for (size_t i = 0; i < p->n_days && !rc; i++)
		if (!(rc = day_path(a, p->days[i].day, dir, sizeof dir)))
			rc = fsync_dir(dir);
	if (rc)
		return rc; /* partly renamed: recovery finishes it */
	atomic_fetch_add(&a->files, p->n_days);
	atomic_fetch_add(&a->rolls, 1);
	atomic_store(&p->next, p->last + 1);
	drop_roll(a, p);
	return TL_OK;
}

static struct dayfile *find_day(struct part *p, int64_t day)
{
	for (size_t i = 0; i < p->n_days; i++)
		if (p->days[i].day == day)
			return &p->days[i];
	return NULL;
}

/* Appends one record to the open roll of p (opening or rolling as needed). */
static int archive_record(struct tl_archiver *a, struct part *p, const struct tl_record *r)
{
	struct tl_event ev;
	if (r->offset + 1 > atomic_load(&p->seen))
		atomic_store(&p->seen, r->offset + 1);
	tl_buf_reset(&a->line);
	if (tl_event_decode(r->value, r->value_len, &ev) || tl_event_to_json(&ev, &a->line) ||
	    tl_buf_putc(&a->line, '\n')) {
		atomic_fetch_add(&a->undecodable, 1);
		if (p->open)
			p->last = r->offset; /* covered by the roll's range, in no file */
		tl_warn("archive: record %s/%d@%llu is undecodable; skipped", p->topic, p->partition,
		        (unsigned long long)r->offset);
		return TL_OK;
	}
	int64_t day = tl_archive_day_of(ev.ts_ms);
	struct dayfile *df = p->open ? find_day(p, day) : NULL;
	int rc;
	if (p->open && !df && p->n_days >= a->o.max_open_days && (rc = commit_roll(a, p)))
		return rc; /* a roll holds at most max_open_days files: start another */
	if (!p->open) {
		p->open = true;
		p->first = r->offset;
		p->bytes = 0;
		p->opened_ms = tl_mono_ms();
	}
	if (!df && (rc = open_day(a, p, day, &df)))
		return rc;
	if ((rc = tl_buf_append(&df->in, a->line.data, a->line.len)))
		return rc;
	if (df->in.len >= IN_CHUNK && (rc = zflush(a, df, ZSTD_e_continue)))
		return rc;
	df->records++;
	p->last = r->offset;
	p->bytes += (int64_t)a->line.len;
	atomic_fetch_add(&a->records, 1);
	atomic_fetch_add(&a->raw_bytes, a->line.len);
	return p->bytes >= a->o.roll_bytes ? commit_roll(a, p) : TL_OK;
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

static int open_consumer(struct tl_archiver *a)
{
	for (size_t i = 0; i < a->n_parts; i++)
		a->subs[i] = (struct tl_subscription){a->parts[i].topic, a->parts[i].partition,
		                                      atomic_load(&a->parts[i].next)};
	return tl_consumer_slot_open(&a->cons, a->o.stream, a->subs, a->n_parts);
}

/* Commits the rolls that are due (or all of them). */
static int commit_due(struct tl_archiver *a, bool all)
{
	int64_t now = tl_mono_ms();
	for (size_t i = 0; i < a->n_parts; i++) {
		struct part *p = &a->parts[i];
		if (p->open && (all || now - p->opened_ms >= a->o.roll_interval_ms)) {
			int rc = commit_roll(a, p);
			if (rc)
				return rc;
		}
	}
	return TL_OK;
}

/* Milliseconds until the next roll is due, capped at 200. */
static int next_timeout(struct tl_archiver *a)
{
	int64_t now = tl_mono_ms(), best = 200;
	for (size_t i = 0; i < a->n_parts; i++) {
		const struct part *p = &a->parts[i];
		if (p->open) {
			int64_t left = p->opened_ms + a->o.roll_interval_ms - now;
			if (left < best)
				best = left < 0 ? 0 : left;
		}
	}
	return (int)best;
}

/* Asks the stream for the end of one partition every END_EVERY_MS, round
 * robin, for the lag metric. Done here and not in tl_archiver_metrics: on a
 * remote stream (nats) it is a request to the server, which may take long
 * under load, and the metrics are rendered on the API's event loop. */
static void refresh_end(struct tl_archiver *a)
{
	int64_t now = tl_mono_ms();
	if (now < a->end_due_ms || !a->n_parts)
		return;
	a->end_due_ms = now + END_EVERY_MS;
	struct part *p = &a->parts[a->end_rr++ % a->n_parts];
	uint64_t end;
	if (tl_stream_end_offset(a->o.stream, p->topic, p->partition, &end) == TL_OK) {
		atomic_store(&p->end, end);
		atomic_store(&p->end_known, true);
	}
}

/* After a failure: forget the open rolls (their temporaries stay on disk),
 * let recovery settle the files, and read again from what is committed. */
static int restart(struct tl_archiver *a)
{
	for (size_t i = 0; i < a->n_parts; i++)
		drop_roll(a, &a->parts[i]);
	int rc = recover_all(a);
	return rc ? rc : open_consumer(a);
}

int tl_archiver_run(struct tl_archiver *a)
{
	int rc = open_consumer(a);
	if (rc) {
		tl_error("archive: opening the consumer: %s", tl_strerror(rc));
		return rc;
	}
	int64_t backoff = 50;
	while (!atomic_load(&a->stopping)) {
		int n = tl_consumer_poll(a->cons.c, a->recs, a->o.batch_max, next_timeout(a));
		if (n < 0) {
			tl_error("archive: reading: %s at %s", tl_strerror(n),
			         tl_consumer_error_detail(a->cons.c));
			if (n == -TL_ECORRUPT)
				return n; /* never skip silently: an operator must look */
			sleep_ms(100);
			continue;
		}
		refresh_end(a);
		rc = TL_OK;
		for (int i = 0; i < n && !rc; i++)
			rc = archive_record(a, &a->parts[a->recs[i].sub], &a->recs[i]);
		if (!rc)
			rc = commit_due(a, false);
		if (!rc) {
			backoff = 50;
			continue;
		}
		atomic_fetch_add(&a->errors, 1);
		tl_warn("archive: writing to %s: %s; re-reading from the last committed rolls in %lld ms",
		        a->dir, tl_strerror(rc), (long long)backoff);
		do {
			sleep_ms(backoff);
			backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
			rc = restart(a);
			if (rc)
				tl_warn("archive: recovering %s: %s", a->dir, tl_strerror(rc));
		} while (rc && !atomic_load(&a->stopping));
	}
	rc = commit_due(a, true);
	if (rc) {
		tl_warn("archive: committing the open rolls at shutdown: %s; they are re-read on start",
		        tl_strerror(rc));
		for (size_t i = 0; i < a->n_parts; i++)
			drop_roll(a, &a->parts[i]);
	}
	return TL_OK;
}

int tl_archiver_metrics(struct tl_archiver *a, struct tl_buf *out)
{
	int rc = tl_buf_printf(
	    out,
	    "# TYPE tally_archive_records_total counter\ntally_archive_records_total %llu\n"
	    "# TYPE tally_archive_files_total counter\ntally_archive_files_total %llu\n"
	    "# TYPE tally_archive_rolls_total counter\ntally_archive_rolls_total %llu\n"
	    "# TYPE tally_archive_bytes_total counter\ntally_archive_bytes_total{kind=\"ndjson\"} %llu\n"
	    "tally_archive_bytes_total{kind=\"zstd\"} %llu\n"
	    "# TYPE tally_archive_undecodable_total counter\ntally_archive_undecodable_total %llu\n"
	    "# TYPE tally_archive_errors_total counter\ntally_archive_errors_total %llu\n"
	    "# TYPE tally_archive_recovered_total counter\n"
	    "tally_archive_recovered_total{action=\"rolled_forward\"} %llu\n"
	    "tally_archive_recovered_total{action=\"deleted\"} %llu\n"
	    "# TYPE tally_archive_lag_records gauge\n",
	    (unsigned long long)atomic_load(&a->records), (unsigned long long)atomic_load(&a->files),
	    (unsigned long long)atomic_load(&a->rolls), (unsigned long long)atomic_load(&a->raw_bytes),
	    (unsigned long long)atomic_load(&a->zbytes), (unsigned long long)atomic_load(&a->undecodable),
	    (unsigned long long)atomic_load(&a->errors), (unsigned long long)atomic_load(&a->rolled_forward),
	    (unsigned long long)atomic_load(&a->deleted));
	/* records of the stream not yet in a committed roll, per partition: the
	 * end is the larger of what the archiver read and what the stream said
	 * at its last look (refresh_end; at most n_parts x END_EVERY_MS old) */
	for (size_t i = 0; i < a->n_parts && !rc; i++) {
		const struct part *p = &a->parts[i];
		uint64_t end = atomic_load(&p->end), seen = atomic_load(&p->seen),
		         next = atomic_load(&p->next);
		if (!atomic_load(&p->end_known) && !seen)
			continue;
		if (seen > end)
			end = seen;
		rc = tl_buf_printf(out, "tally_archive_lag_records{topic=\"%s\",partition=\"%d\"} %llu\n",
		                   p->topic, p->partition, (unsigned long long)(end > next ? end - next : 0));
	}
	return rc;
}
