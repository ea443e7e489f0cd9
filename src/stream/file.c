/* file.c — the embedded `file:` stream backend: a partitioned, segmented,
 * CRC-framed log on local disk with group commit.
 *
 * Appends from any thread encode their frames into the partition's pending
 * batch under the partition mutex and, when the partition is idle, put it
 * on the stream's ready list. A writer thread takes every partition on the
 * list (up to TLF_CYCLE_MAX), swaps each one's pending batch out and writes
 * it with one pwrite per segment; then it makes them durable together (one
 * device flush for all the pure overwrites: cycle_flush in file_writer.c),
 * publishes the
 * new durable ends (in memory for consumers of this process, in
 * <p>/durable for other processes) and runs the done callbacks in order.
 * Appends that arrive meanwhile form the next group, so the group grows
 * with the load. A write or sync error fails that group and everything
 * queued behind it, truncates the segment back to the durable end and
 * leaves the partition ready for the next append.
 *
 * One process writes a topic: it holds <topic>/.lock (flock, released by
 * the kernel when the process dies, however it dies). A stream locks the
 * topics it declared in opts.write_topics at open — so a second writer is
 * refused at start — and any other topic when it first appends to it;
 * taking the lock recovers the topic's partitions (torn tails truncated).
 * Topics it does not write it reads as other processes publish them.
 *
 * Formats live in file_segment.c, the write side (batches, writer threads,
 * retention) in file_writer.c, consumers in file_consumer.c. */
#include "stream/file_int.h"

#include "core/clock.h"
#include "core/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* Writer threads per stream, so that fdatasyncs of partitions overlap: one
 * per core, 2 to 4. More than the cores only take CPU from the threads the
 * group commits wait for (bench/pixel.sh on 2 cores: 2 writers ~10 % more
 * hits/s than 4, 8 fewer still). */
#define TLF_WRITERS_MIN 2
#define TLF_WRITERS_MAX 4
#define TLF_MAX_PARTITIONS 4096

/* ---- files ---- */

/* Creates the directory buf (NUL-terminated, inside a larger path) and
 * makes its entry durable in its parent; an existing one is fine. */
static int mkdir_durable(char *buf)
{
	if (mkdir(buf, 0755) != 0)
		return errno == EEXIST ? 0 : tl_err_from_errno(errno);
	char *slash = strrchr(buf, '/');
	if (!slash)
		return tlf_fsync_dir(".");
	if (slash == buf)
		return tlf_fsync_dir("/");
	*slash = '\0';
	int rc = tlf_fsync_dir(buf);
	*slash = '/';
	return rc;
}

/* mkdir -p, each directory it creates synced into its parent. */
static int mkdir_p(const char *path)
{
	char buf[4096];
	int rc = tlf_path(buf, sizeof(buf), "%s", path);
	if (rc)
		return rc;
	for (char *q = buf + 1; *q; q++) {
		if (*q != '/')
			continue;
		*q = '\0';
		rc = mkdir_durable(buf);
		*q = '/';
		if (rc)
			return rc;
	}
	return mkdir_durable(buf);
}

static int write_all_fd(int fd, const void *p, size_t n)
{
	size_t done = 0;
	while (done < n) {
		ssize_t r = write(fd, (const char *)p + done, n - done);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return tl_err_from_errno(errno);
		done += (size_t)r;
	}
	return 0;
}

/* ---- partitions: open and recovery ---- */

/* Opens p for writing: probes its filesystem (and opens its flush file
 * where the shared flush needs one), recovers the last segment (torn tail
 * truncated, corruption in the middle left for consumers to report, what
 * is kept made durable), rewrites the durable file, applies retention. */
static int part_open_writer(struct tlf_stream *s, struct tlf_part *p, const char *tdir)
{
	char path[4096];
	int rc;
	if (mkdir(p->path, 0755) != 0) {
		if (errno != EEXIST)
			return tl_err_from_errno(errno);
	} else if ((rc = tlf_fsync_dir(tdir)) != 0) {
		return rc;
	}
	p->dir_fd = open(p->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (p->dir_fd < 0)
		return tl_err_from_errno(errno);
	p->overwrite_flush = tlf_fs_overwrite_flush(p->dir_fd, &p->dev);
	if (p->overwrite_flush == TLF_FLUSH_DIRTY) {
		/* needed: without it even a group's own fdatasync may not flush */
		p->flush_fd = openat(p->dir_fd, "flush", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
		if (p->flush_fd < 0)
			return tl_err_from_errno(errno);
		struct stat fst;
		if (fstat(p->flush_fd, &fst) != 0)
			return tl_err_from_errno(errno);
		if (!S_ISREG(fst.st_mode))
			return -TL_EINVAL;
		p->flush_size = fst.st_size != 0;
	}
	if ((rc = tlf_path(path, sizeof(path), "%s/durable", p->path)) != 0)
		return rc;
	p->dur_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (p->dur_fd < 0)
		return tl_err_from_errno(errno);
	struct tlf_durable prev;
	int have_prev = tlf_durable_read(p->dur_fd, &prev) == 0;

	uint64_t *segs;
	size_t nsegs;
	if ((rc = tlf_seg_list(p->path, &segs, &nsegs)) != 0)
		return rc;
	p->segs = segs;
	p->nsegs = p->segcap = nsegs;
	if (nsegs == 0) {
		if ((rc = tlf_seg_create(p, 0, &p->seg_fd)) != 0 || (rc = tlf_segs_push(p, 0)) != 0)
			return rc;
	} else {
		char name[TLF_SEG_NAME_LEN + 1];
		tlf_seg_name(name, sizeof(name), segs[nsegs - 1]);
		p->seg_fd = openat(p->dir_fd, name, O_RDWR | O_CLOEXEC);
		if (p->seg_fd < 0)
			return tl_err_from_errno(errno);
	}
	const uint64_t base = p->segs[p->nsegs - 1];
	struct stat st;
	if (fstat(p->seg_fd, &st) != 0)
		return tl_err_from_errno(errno);
	const uint64_t size = (uint64_t)st.st_size;

	struct tlf_durable d;
	if (have_prev && (prev.flags & TLF_DURABLE_CLEAN) && prev.seg_base == base && prev.seg_pos == size &&
	    prev.end >= base && (prev.last_pos == TLF_NONE || prev.last_pos < size)) {
		d = prev; /* closed cleanly and untouched since: no scan needed */
	} else {
		struct tlf_scan sc;
		if ((rc = tlf_scan_fd(p->seg_fd, size, base, &sc)) != 0)
			return rc;
		/* Groups are written one at a time, each synced before the next,
		 * so only the last one can be torn by a crash — and in the
		 * preallocated space, the sectors of it that never reached the
		 * disk read as zeros, possibly before some that did. Such a hole
		 * past what the durable file last said was durable is that torn
		 * group (never acknowledged: cut it off); anything else is
		 * corruption, kept for the consumers to report. */
		uint64_t acked = 0; /* known durable bytes of this segment */
		if (have_prev && prev.seg_base == base)
			acked = prev.seg_pos;
		else if (have_prev && prev.seg_base > base)
			acked = UINT64_MAX; /* a segment newer than the last one is gone */
		if (sc.corrupt && sc.hole_zero_sector && sc.corrupt_pos >= acked) {
			tl_warn("%s: cut off a write torn by a crash at byte %" PRIu64 " of segment %" PRIu64
			        " (records from offset %" PRIu64 " on, never acknowledged)",
			        p->path, sc.corrupt_pos, base, sc.hole_next_offset);
			sc.valid_end = sc.corrupt_pos;
			sc.next_offset = sc.hole_next_offset;
			sc.last_pos = sc.hole_last_pos;
		}
		if (sc.valid_end < size && ftruncate(p->seg_fd, (off_t)sc.valid_end) != 0) /* torn tail */
			return tl_err_from_errno(errno);
		/* What is kept becomes readable: it must be on the disk first (a
		 * writer that died between a write and its fdatasync left that
		 * write in the page cache only). */
		if (fdatasync(p->seg_fd) != 0)
			return tl_err_from_errno(errno);
		/* that fdatasync flushes the disk only if the file changed, there */
		if (p->overwrite_flush == TLF_FLUSH_DIRTY) {
			const struct tl_file_hooks none = {0};
			if ((rc = tlf_device_flush(&none, p)) != 0)
				return rc;
		}
		d.end = sc.next_offset;
		d.seg_base = base;
		d.seg_pos = sc.valid_end;
		d.last_pos = sc.last_pos;
	}
	d.flags = 0;
	p->dur = d;
	p->next_offset = d.end;
	p->alloc_end = d.seg_pos; /* the file was cut to it, or is exactly that long */
	p->meta_end = d.seg_pos;
	tlf_durable_write(p, &d);
	tlf_part_retention(s, p);
	return 0;
}

/* Gives up p's write side: marks the durable file clean (when asked),
 * closes the partition's files, frees its batches and segment list. */
static void part_writer_close(struct tlf_part *p, int clean)
{
	if (p->dur_fd >= 0) {
		/* a clean close leaves the active segment exactly as long as its
		 * data (no preallocated tail), so the next open need not scan it */
		if (clean && p->seg_fd >= 0 && p->alloc_end > p->dur.seg_pos &&
		    (ftruncate(p->seg_fd, (off_t)p->dur.seg_pos) != 0 || fdatasync(p->seg_fd) != 0))
			clean = 0;
		if (clean) {
			struct tlf_durable d = p->dur;
			d.flags = TLF_DURABLE_CLEAN;
			tlf_durable_write(p, &d);
			(void)fdatasync(p->dur_fd);
		}
		close(p->dur_fd);
		p->dur_fd = -1;
	}
	if (p->seg_fd >= 0)
		close(p->seg_fd);
	if (p->dir_fd >= 0)
		close(p->dir_fd);
	if (p->flush_fd >= 0)
		close(p->flush_fd);
	p->seg_fd = p->dir_fd = p->flush_fd = -1;
	tlf_batch_free(&p->pending);
	tlf_batch_free(&p->flush);
	free(p->segs);
	p->segs = NULL;
	p->nsegs = p->segcap = 0;
}

static void part_close(struct tlf_part *p, int clean)
{
	part_writer_close(p, clean);
	free(p->path);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->idle);
}

/* ---- topics ---- */

static int topic_name_ok(const char *n)
{
	size_t len = strlen(n);
	if (len == 0 || len > TLF_TOPIC_NAME_MAX || n[0] == '.')
		return 0;
	for (size_t i = 0; i < len; i++) {
		char c = n[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-' || c == '.'))
			return 0;
	}
	return 1;
}

/* Reads <tdir>/meta: partition count, -TL_ENOTFOUND, -TL_ECORRUPT. */
static int meta_read(const char *tdir)
{
	char path[4096], buf[64];
	int rc = tlf_path(path, sizeof(path), "%s/meta", tdir);
	if (rc)
		return rc;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return tl_err_from_errno(errno);
	ssize_t r = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (r < 0)
		return -TL_EIO;
	buf[r] = '\0';
	if (strncmp(buf, "partitions=", 11) != 0)
		return -TL_ECORRUPT;
	char *end;
	errno = 0;
	long n = strtol(buf + 11, &end, 10);
	if (errno || end == buf + 11 || (*end != '\n' && *end != '\0') || n < 1 || n > TLF_MAX_PARTITIONS)
		return -TL_ECORRUPT;
	return (int)n;
}

static void topic_free(struct tlf_topic *t, int clean)
{
	if (!t)
		return;
	if (t->parts)
		for (int i = 0; i < t->nparts; i++)
			part_close(&t->parts[i], clean);
	if (t->lock_fd >= 0)
		close(t->lock_fd); /* releases the flock */
	free(t->parts);
	free(t);
}

/* Creates <tdir>/meta for the stream's partition count unless it exists.
 * The content goes to a temporary file that is then linked in: creators
 * racing in several processes all end up reading the first one's. */
static int meta_create(struct tlf_stream *s, const char *tdir)
{
	char tmp[4096], dst[4096], meta[32];
	int rc = mkdir_p(tdir);
	if (!rc)
		rc = tlf_fsync_dir(s->dir);
	if (!rc)
		rc = tlf_path(tmp, sizeof(tmp), "%s/meta.%ld.tmp", tdir, (long)getpid());
	if (!rc)
		rc = tlf_path(dst, sizeof(dst), "%s/meta", tdir);
	if (rc)
		return rc;
	int n = snprintf(meta, sizeof(meta), "partitions=%d\n", s->opts.partitions);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return tl_err_from_errno(errno);
	rc = write_all_fd(fd, meta, (size_t)n);
	if (!rc && fsync(fd) != 0)
		rc = tl_err_from_errno(errno);
	close(fd);
	if (!rc && link(tmp, dst) != 0 && errno != EEXIST) {
		/* a filesystem without hard links: rename (last creator wins) */
		if ((errno == EPERM || errno == ENOSYS || errno == EOPNOTSUPP) && rename(tmp, dst) == 0)
			return tlf_fsync_dir(tdir);
		rc = tl_err_from_errno(errno);
	}
	unlink(tmp);
	return rc ? rc : tlf_fsync_dir(tdir);
}

/* Loads topic name from disk, creating its meta file when it does not
 * exist yet (a stream that cannot create it gets -TL_ENOTFOUND). The
 * topic is not locked: topic_lock makes it writable. */
static int topic_load(struct tlf_stream *s, const char *name, struct tlf_topic **out)
{
	char tdir[4096];
	int rc = tlf_path(tdir, sizeof(tdir), "%s/%s", s->dir, name);
	if (rc)
		return rc;
	int nparts = meta_read(tdir);
	if (nparts == -TL_ENOTFOUND) {
		rc = meta_create(s, tdir);
		if (rc) /* a reader that cannot create it waits for the writer */
			return s->read_only ? -TL_ENOTFOUND : rc;
		nparts = meta_read(tdir);
	}
	if (nparts < 0)
		return nparts;

	struct tlf_topic *t = calloc(1, sizeof(*t));
	if (!t)
		return -TL_ENOMEM;
	snprintf(t->name, sizeof(t->name), "%s", name);
	t->lock_fd = -1;
	t->parts = calloc((size_t)nparts, sizeof(*t->parts));
	if (!t->parts) {
		free(t);
		return -TL_ENOMEM;
	}
	t->nparts = nparts;
	for (int i = 0; i < nparts; i++) {
		struct tlf_part *p = &t->parts[i];
		p->t = t;
		p->idx = i;
		p->seg_fd = p->dir_fd = p->dur_fd = p->flush_fd = -1;
		pthread_mutex_init(&p->mu, NULL);
		pthread_cond_init(&p->idle, NULL);
	}
	for (int i = 0; i < nparts; i++) {
		char pdir[4096];
		if ((rc = tlf_path(pdir, sizeof(pdir), "%s/%d", tdir, i)) != 0)
			goto fail;
		if (!(t->parts[i].path = strdup(pdir))) {
			rc = -TL_ENOMEM;
			goto fail;
		}
	}
	*out = t;
	return 0;
fail:
	topic_free(t, 0);
	return rc;
}

/* Describes the holder of the lock open on fd for an error message. */
static void lock_detail(struct tlf_stream *s, struct tlf_topic *t, int fd, const char *path)
{
	if (!s->opts.err || !s->opts.err_len)
		return;
	char buf[32];
	ssize_t r = pread(fd, buf, sizeof(buf) - 1, 0);
	long pid = 0;
	if (r > 0) {
		buf[r] = '\0';
		char *end;
		pid = strtol(buf, &end, 10);
		if (end == buf || pid <= 0)
			pid = 0;
	}
	if (pid)
		snprintf(s->opts.err, s->opts.err_len,
		         "topic %s is written by another process (pid %ld holds %s): stop it first", t->name,
		         pid, path);
	else
		snprintf(s->opts.err, s->opts.err_len, "topic %s is written by another process (it holds %s)",
		         t->name, path);
}

/* Makes this stream the writer of t: takes <topic>/.lock (-TL_ELOCKED when
 * another process holds it), recovers every partition and publishes their
 * durable ends. Called with s->topics_mu held. */
static int topic_lock(struct tlf_stream *s, struct tlf_topic *t)
{
	if (tlf_topic_writable(t))
		return 0;
	if (s->read_only)
		return -TL_EINVAL;
	char tdir[4096], lock[4096];
	int rc = tlf_path(tdir, sizeof(tdir), "%s/%s", s->dir, t->name);
	if (!rc)
		rc = tlf_path(lock, sizeof(lock), "%s/.lock", tdir);
	if (rc)
		return rc;
	int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return tl_err_from_errno(errno);
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		rc = errno == EWOULDBLOCK ? -TL_ELOCKED : tl_err_from_errno(errno);
		if (rc == -TL_ELOCKED)
			lock_detail(s, t, fd, lock);
		close(fd);
		return rc;
	}
	char pid[24];
	int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) == 0) {
		ssize_t w = pwrite(fd, pid, (size_t)n, 0);
		(void)w; /* only for messages */
	}
	for (int i = 0; i < t->nparts; i++) {
		if ((rc = part_open_writer(s, &t->parts[i], tdir)) != 0) {
			for (int k = 0; k <= i; k++)
				part_writer_close(&t->parts[k], 0);
			close(fd);
			return rc;
		}
	}
	t->lock_fd = fd;
	atomic_store_explicit(&t->writable, 1, memory_order_release);
	return 0;
}

/* Finds (or loads) topic name; with lock, also makes this stream its writer. */
static int topic_get(struct tlf_stream *s, const char *name, int lock, struct tlf_topic **out)
{
	if (!name)
		return -TL_EINVAL;
	size_t n = atomic_load_explicit(&s->ntopics, memory_order_acquire);
	for (size_t i = 0; i < n; i++) {
		struct tlf_topic *t = s->topics[i];
		if (strcmp(t->name, name) == 0 && (!lock || tlf_topic_writable(t))) {
			*out = t;
			return 0;
		}
	}
	if (!topic_name_ok(name))
		return -TL_EINVAL;
	pthread_mutex_lock(&s->topics_mu);
	int rc = 0;
	struct tlf_topic *t = NULL;
	n = atomic_load_explicit(&s->ntopics, memory_order_relaxed);
	for (size_t i = 0; i < n && !t; i++)
		if (strcmp(s->topics[i]->name, name) == 0)
			t = s->topics[i];
	if (!t) {
		if (n == TLF_MAX_TOPICS) {
			rc = -TL_ETOOBIG;
			goto out;
		}
		if ((rc = topic_load(s, name, &t)) != 0)
			goto out;
		s->topics[n] = t;
		atomic_store_explicit(&s->ntopics, n + 1, memory_order_release);
	}
	if (lock)
		rc = topic_lock(s, t);
	if (!rc)
		*out = t;
out:
	pthread_mutex_unlock(&s->topics_mu);
	return rc;
}

int tlf_topic_get(struct tlf_stream *s, const char *name, struct tlf_topic **out)
{
	return topic_get(s, name, s->write_all, out);
}

/* Loads (and locks: the stream writes every topic) every topic already in
 * the log directory: recovery + retention. */
static int load_existing_topics(struct tlf_stream *s)
{
	DIR *d = opendir(s->dir);
	if (!d)
		return tl_err_from_errno(errno);
	struct dirent *e;
	int rc = 0;
	while (!rc && (e = readdir(d)) != NULL) {
		if (!topic_name_ok(e->d_name))
			continue;
		char meta[4096];
		if (tlf_path(meta, sizeof(meta), "%s/%s/meta", s->dir, e->d_name) != 0 ||
		    access(meta, F_OK) != 0)
			continue;
		struct tlf_topic *t;
		rc = topic_get(s, e->d_name, 1, &t);
	}
	closedir(d);
	return rc;
}

/* ---- the stream ---- */

static void file_close(struct tl_stream *base)
{
	struct tlf_stream *s = (struct tlf_stream *)base;
	if (!s)
		return;
	pthread_mutex_lock(&s->wmu);
	s->stop = 1;
	pthread_cond_broadcast(&s->wcond);
	pthread_mutex_unlock(&s->wmu);
	for (int i = 0; i < s->nwriters; i++)
		pthread_join(s->writers[i], NULL);
	size_t nt = atomic_load(&s->ntopics);
	for (size_t i = 0; i < nt; i++)
		topic_free(s->topics[i], tlf_topic_writable(s->topics[i]));
	pthread_mutex_destroy(&s->topics_mu);
	pthread_mutex_destroy(&s->wmu);
	pthread_cond_destroy(&s->wcond);
	pthread_mutex_destroy(&s->pub_mu);
	pthread_cond_destroy(&s->pub_cond);
	free(s->dir);
	free(s);
}

static int file_open(const char *uri, const struct tl_stream_opts *opts, struct tl_stream **out)
{
	const char *path;
	if (strncmp(uri, "file://", 7) == 0)
		path = uri + 7;
	else if (strncmp(uri, "file:", 5) == 0)
		path = uri + 5;
	else
		return -TL_EINVAL;
	if (!*path || opts->partitions < 1 || opts->partitions > TLF_MAX_PARTITIONS ||
	    opts->segment_bytes <= 0 || opts->max_pending <= 0)
		return -TL_EINVAL;

	struct tlf_stream *s = calloc(1, sizeof(*s));
	if (!s)
		return -TL_ENOMEM;
	s->base.ops = &tl_stream_file_ops;
	s->opts = *opts;
	s->opts.write_topics = NULL; /* the caller's array: used here only */
	s->read_only = opts->read_only;
	s->write_all = !opts->read_only && !opts->write_topics;
	pthread_mutex_init(&s->topics_mu, NULL);
	pthread_mutex_init(&s->wmu, NULL);
	tl_cond_init_mono(&s->wcond);
	pthread_mutex_init(&s->pub_mu, NULL);
	tl_cond_init_mono(&s->pub_cond);
	s->next_retention_ms = tl_mono_ms() + TLF_RETENTION_EVERY_MS;
	int rc = 0;
	size_t plen = strlen(path);
	while (plen > 1 && path[plen - 1] == '/')
		plen--;
	if (!(s->dir = strndup(path, plen))) {
		rc = -TL_ENOMEM;
		goto fail;
	}
	if (!opts->read_only) {
		if ((rc = mkdir_p(s->dir)) != 0)
			goto fail;
		if (s->write_all) {
			rc = load_existing_topics(s);
		} else {
			for (size_t i = 0; !rc && opts->write_topics[i]; i++) {
				struct tlf_topic *t;
				rc = topic_get(s, opts->write_topics[i], 1, &t);
			}
		}
		if (rc)
			goto fail;
		long nw = sysconf(_SC_NPROCESSORS_ONLN);
		if (nw < TLF_WRITERS_MIN)
			nw = TLF_WRITERS_MIN;
		if (nw > TLF_WRITERS_MAX)
			nw = TLF_WRITERS_MAX;
		for (int i = 0; i < nw; i++) {
			if (pthread_create(&s->writers[i], NULL, tlf_writer_main, s) != 0) {
				rc = -TL_ENOMEM;
				goto fail;
			}
			s->nwriters++;
		}
	}
	s->opts.err = NULL; /* the caller's buffer: only for open */
	*out = &s->base;
	return 0;
fail:
	file_close(&s->base);
	return rc;
}

static int file_partitions(struct tl_stream *base, const char *topic)
{
	struct tlf_topic *t;
	int rc = tlf_topic_get((struct tlf_stream *)base, topic, &t);
	return rc ? rc : t->nparts;
}

static int file_append(struct tl_stream *base, const char *topic, int partition, const struct tl_record *recs,
                       size_t n, tl_stream_done_fn done, void *arg)
{
	struct tlf_stream *s = (struct tlf_stream *)base;
	if (s->read_only || (n > 0 && !recs))
		return -TL_EINVAL;
	struct tlf_topic *t;
	int rc = topic_get(s, topic, 1, &t);
	if (rc)
		return rc;
	if (partition < 0 || partition >= t->nparts)
		return -TL_EINVAL;
	size_t bytes = 0;
	for (size_t i = 0; i < n; i++) {
		const struct tl_record *r = &recs[i];
		if ((size_t)r->key_len + r->value_len > TLF_MAX_RECORD)
			return -TL_ETOOBIG;
		if ((r->key_len && !r->key) || (r->value_len && !r->value))
			return -TL_EINVAL;
		bytes += tlf_frame_size(r->key_len, r->value_len);
		if (bytes > UINT32_MAX)
			return -TL_ETOOBIG;
	}
	int64_t prev = atomic_fetch_add(&s->pending_bytes, (int64_t)bytes);
	if (prev > 0 && prev + (int64_t)bytes > s->opts.max_pending) {
		atomic_fetch_sub(&s->pending_bytes, (int64_t)bytes);
		return -TL_EAGAIN;
	}

	struct tlf_part *p = &t->parts[partition];
	pthread_mutex_lock(&p->mu);
	struct tlf_batch *b = &p->pending;
	rc = tlf_batch_reserve(b, bytes);
	if (rc) {
		pthread_mutex_unlock(&p->mu);
		atomic_fetch_sub(&s->pending_bytes, (int64_t)bytes);
		return rc;
	}
	const int64_t ts = tl_now_ms();
	const uint64_t first = p->next_offset;
	uint8_t *dst = b->data + b->len;
	size_t rel = 0, last_rel = 0;
	for (size_t i = 0; i < n; i++) {
		const struct tl_record *r = &recs[i];
		tlf_frame_encode(dst + rel, first + i, ts, r->key, r->key_len, r->value, r->value_len);
		last_rel = rel;
		rel += tlf_frame_size(r->key_len, r->value_len);
	}
	b->len += bytes;
	b->cbs[b->ncb++] = (struct tlf_cb){.done = done,
	                                   .arg = arg,
	                                   .first = first,
	                                   .nrec = (uint32_t)n,
	                                   .last_rel = (uint32_t)last_rel,
	                                   .bytes = bytes};
	p->next_offset += n;
	int k = !p->queued && !p->in_flight;
	if (k)
		p->queued = 1;
	pthread_mutex_unlock(&p->mu);
	if (k)
		tlf_kick(s, p);
	return 0;
}

/* The durable view of a partition, from memory (writer) or from the
 * durable file (read-only). A partition nobody wrote yet is empty. */
static int part_view_any(struct tlf_stream *s, const char *topic, int partition, struct tlf_durable *d,
                         char *pdir, size_t pdir_cap)
{
	memset(d, 0, sizeof(*d));
	d->last_pos = TLF_NONE;
	struct tlf_topic *t;
	int rc = tlf_topic_get(s, topic, &t);
	if (rc == -TL_ENOTFOUND) /* cannot be created here: nothing written yet */
		return partition >= 0 ? tlf_path(pdir, pdir_cap, "%s/%s/%d", s->dir, topic, partition)
		                      : -TL_EINVAL;
	if (rc)
		return rc;
	if (partition < 0 || partition >= t->nparts)
		return -TL_EINVAL;
	struct tlf_part *p = &t->parts[partition];
	if ((rc = tlf_path(pdir, pdir_cap, "%s", p->path)) != 0)
		return rc;
	if (tlf_topic_writable(t)) {
		tlf_part_view(p, d);
		return 0;
	}
	char path[4096];
	if ((rc = tlf_path(path, sizeof(path), "%s/durable", p->path)) != 0)
		return rc;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : tl_err_from_errno(errno);
	rc = tlf_durable_read(fd, d);
	close(fd);
	if (rc == -TL_ENOTFOUND) {
		memset(d, 0, sizeof(*d));
		d->last_pos = TLF_NONE;
		rc = 0;
	}
	return rc;
}

static int file_end_offset(struct tl_stream *base, const char *topic, int partition, uint64_t *out)
{
	struct tlf_durable d;
	char pdir[4096];
	int rc = part_view_any((struct tlf_stream *)base, topic, partition, &d, pdir, sizeof(pdir));
	if (rc == 0)
		*out = d.end;
	return rc;
}

static int file_last(struct tl_stream *base, const char *topic, int partition, struct tl_record *rec,
                     struct tl_buf *storage)
{
	struct tlf_durable d;
	char pdir[4096], path[4096 + TLF_SEG_NAME_LEN + 2], name[TLF_SEG_NAME_LEN + 1];
	int rc = part_view_any((struct tlf_stream *)base, topic, partition, &d, pdir, sizeof(pdir));
	if (rc)
		return rc;
	if (d.end == 0)
		return -TL_ENOTFOUND;
	uint64_t seg = d.seg_base, pos = d.last_pos;
	if (pos == TLF_NONE) {
		/* The active segment holds nothing yet: the last record ends
		 * the segment before it. */
		uint64_t *segs;
		size_t n;
		if ((rc = tlf_seg_list(pdir, &segs, &n)) != 0)
			return rc;
		size_t i = n;
		while (i > 0 && segs[i - 1] >= d.seg_base)
			i--;
		seg = i > 0 ? segs[i - 1] : TLF_NONE;
		free(segs);
		if (seg == TLF_NONE)
			return -TL_ECORRUPT; /* d.end > 0: there was a last record */
	}
	tlf_seg_name(name, sizeof(name), seg);
	if ((rc = tlf_path(path, sizeof(path), "%s/%s", pdir, name)) != 0)
		return rc;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return tl_err_from_errno(errno);
	if (pos == TLF_NONE) {
		struct stat st;
		struct tlf_scan sc;
		rc = fstat(fd, &st) != 0 ? tl_err_from_errno(errno)
		                         : tlf_scan_fd(fd, (uint64_t)st.st_size, seg, &sc);
		if (!rc && sc.last_pos == TLF_NONE)
			rc = -TL_ECORRUPT;
		pos = rc ? 0 : sc.last_pos;
	}
	if (!rc)
		rc = tlf_read_record_at(fd, pos, rec, storage);
	close(fd);
	if (rc)
		return rc;
	if (rec->offset != d.end - 1)
		return -TL_ECORRUPT;
	rec->partition = partition;
	return 0;
}

int tl_stream_file_set_hooks(struct tl_stream *base, const struct tl_file_hooks *hooks)
{
	if (!base || base->ops != &tl_stream_file_ops)
		return -TL_EINVAL;
	struct tlf_stream *s = (struct tlf_stream *)base;
	if (s->read_only)
		return -TL_EINVAL;
	pthread_mutex_lock(&s->wmu);
	if (hooks)
		s->hooks = *hooks;
	else
		memset(&s->hooks, 0, sizeof(s->hooks));
	pthread_mutex_unlock(&s->wmu);
	return 0;
}

int tl_stream_file_retention(struct tl_stream *base)
{
	if (!base || base->ops != &tl_stream_file_ops)
		return -TL_EINVAL;
	struct tlf_stream *s = (struct tlf_stream *)base;
	if (s->read_only)
		return -TL_EINVAL;
	tlf_retention_all(s);
	return 0;
}

const struct tl_stream_ops tl_stream_file_ops = {
    .scheme = "file",
    .open = file_open,
    .close = file_close,
    .partitions = file_partitions,
    .append = file_append,
    .end_offset = file_end_offset,
    .last = file_last,
    .consumer_open = tlf_consumer_open,
    .poll = tlf_consumer_poll,
    .wakeup = tlf_consumer_wakeup,
    .error_detail = tlf_consumer_error_detail,
    .consumer_close = tlf_consumer_close,
};
