/* file_writer.c — the write side of the `file:` stream backend: the
 * pending batches, the writer threads and their group commits, the
 * active segment's preallocation and roll, retention, and the probe of
 * what a filesystem needs to make an overwrite durable. The stream, its
 * topics, the appends and recovery are in file.c; the overview of the
 * whole backend is at the top of file.c. */
#include "stream/file_int.h"

#include "core/buf.h"
#include "core/clock.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define TLF_SHRINK_BYTES (8u << 20) /* free a flushed batch's buffer above this */
#define TLF_PREALLOC (1u << 20)     /* the active segment grows by this much at a time */
#define TLF_CYCLE_MAX 16            /* partitions a writer makes durable together */

/* ---- batches ---- */

int tlf_batch_reserve(struct tlf_batch *b, size_t bytes)
{
	if (tl_array_grow((void **)&b->data, &b->cap, b->len + bytes, 1) ||
	    tl_array_grow((void **)&b->cbs, &b->cbcap, b->ncb + 1, sizeof *b->cbs))
		return -TL_ENOMEM;
	return 0;
}

void tlf_batch_free(struct tlf_batch *b)
{
	free(b->data);
	free(b->cbs);
	memset(b, 0, sizeof(*b));
}

/* Empties b, giving its memory back when a burst made it large. */
static void batch_clear(struct tlf_batch *b)
{
	b->len = 0;
	b->ncb = 0;
	if (b->cap > TLF_SHRINK_BYTES || b->cbcap > TLF_SHRINK_BYTES / sizeof(struct tlf_cb))
		tlf_batch_free(b);
}

static void batch_complete(struct tlf_batch *b, int status)
{
	for (size_t i = 0; i < b->ncb; i++)
		if (b->cbs[i].done)
			b->cbs[i].done(b->cbs[i].arg, status, b->cbs[i].first);
}

/* ---- I/O of the writer threads, through the test hooks ---- */

static int io_write(const struct tl_file_hooks *h, int fd, const uint8_t *p, size_t n, uint64_t off)
{
	size_t done = 0;
	while (done < n) {
		ssize_t r = h->pwrite ? h->pwrite(h->ctx, fd, p + done, n - done, (off_t)(off + done))
		                      : pwrite(fd, p + done, n - done, (off_t)(off + done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return tl_err_from_errno(errno);
		if (r == 0)
			return -TL_EIO;
		done += (size_t)r;
	}
	return 0;
}

static int io_sync(const struct tl_file_hooks *h, int fd)
{
	int r = h->fdatasync ? h->fdatasync(h->ctx, fd) : fdatasync(fd);
	return r == 0 ? 0 : tl_err_from_errno(errno);
}

/* Makes the segment open on fd at least `end` bytes long ahead of the
 * write, TLF_PREALLOC at a time (up to seg_bytes), by writing zeros: a
 * group commit's fdatasync then has only its data to write. An append
 * that grows the file makes the fdatasync write the inode too (measured:
 * 125 -> 88 us per append + fdatasync), and one into fallocate'd space
 * converts an unwritten extent, a journal commit whenever a group reaches
 * a new block (pixel load, 2 writers: 215 -> 160 us per fdatasync, 72 k ->
 * 90 k hits/s). The zeros cost one larger flush per TLF_PREALLOC (about
 * 0.9 ms for 1 MiB). The bytes past the durable end are zeros, which
 * recovery treats as a torn tail; a sealed segment is cut to its data
 * first (seal_segment). Best effort: where a write of zeros fails (no
 * space) the data write just grows the file. */
static void seg_reserve(const struct tl_file_hooks *h, int fd, uint64_t *alloc, uint64_t end,
                        uint64_t seg_bytes)
{
	static const uint8_t zeros[64 * 1024];
	if (end <= *alloc)
		return;
	uint64_t want = (end + TLF_PREALLOC - 1) / TLF_PREALLOC * TLF_PREALLOC;
	if (want > seg_bytes)
		want = seg_bytes > end ? seg_bytes : end;
	while (*alloc < want) {
		size_t n = want - *alloc < sizeof zeros ? (size_t)(want - *alloc) : sizeof zeros;
		ssize_t r = h->pwrite ? h->pwrite(h->ctx, fd, zeros, n, (off_t)*alloc)
		                      : pwrite(fd, zeros, n, (off_t)*alloc);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return;
		*alloc += (uint64_t)r;
	}
}

/* The file's written size after data was written at [pos, end): a write of
 * zeros that stopped short left *alloc below what the data then grew the
 * file to, and the next reservation must start past the data, never write
 * zeros over it. */
static void seg_written(uint64_t *alloc, uint64_t end)
{
	if (*alloc < end)
		*alloc = end;
}

/* The byte range of a segment written back without a device flush yet. */
struct tlf_range {
	uint64_t off, len;
};

/* Starts the write-back of [off, off+len) of fd (no wait, no flush). */
static int range_start(int fd, uint64_t off, uint64_t len)
{
	if (sync_file_range(fd, (off_t)off, (off_t)len, SYNC_FILE_RANGE_WRITE) != 0)
		return tl_err_from_errno(errno);
	return 0;
}

/* Waits until [off, off+len) of fd is written back (not flushed). */
static int range_wait(int fd, uint64_t off, uint64_t len)
{
	if (sync_file_range(fd, (off_t)off, (off_t)len,
	                    SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
	                        SYNC_FILE_RANGE_WAIT_AFTER) != 0)
		return tl_err_from_errno(errno);
	return 0;
}

/* Cuts a segment about to be sealed to its data (end bytes) and syncs
 * that: readers take a sealed segment's end of file as its end. The file's
 * own size decides, not what seg_reserve tracked: a write of zeros that
 * failed (ENOSPC) may still have grown the file part of the way. */
static int seal_segment(const struct tl_file_hooks *h, int fd, uint64_t end)
{
	struct stat st;
	if (fstat(fd, &st) != 0)
		return tl_err_from_errno(errno);
	if ((uint64_t)st.st_size <= end)
		return 0;
	if (ftruncate(fd, (off_t)end) != 0)
		return tl_err_from_errno(errno);
	return io_sync(h, fd);
}

void tlf_durable_write(struct tlf_part *p, const struct tlf_durable *d)
{
	uint8_t b[TLF_DURABLE_SIZE];
	tlf_durable_encode(b, d);
	/* One pwrite: readers in other processes get an inotify IN_MODIFY and
	 * a checksum to reject a torn read. Not synced: recovery rebuilds it. */
	ssize_t r;
	do
		r = pwrite(p->dur_fd, b, sizeof(b), 0);
	while (r < 0 && errno == EINTR);
}

/* ---- partitions: ownership of the write side ---- */

/* Waits until no thread owns p's write side, then owns it. Called with p->mu. */
static void part_claim_locked(struct tlf_part *p)
{
	while (p->in_flight)
		pthread_cond_wait(&p->idle, &p->mu);
	p->in_flight = 1;
}

void tlf_kick(struct tlf_stream *s, struct tlf_part *p)
{
	pthread_mutex_lock(&s->wmu);
	p->next_ready = NULL;
	if (s->ready_tail)
		s->ready_tail->next_ready = p;
	else
		s->ready_head = p;
	s->ready_tail = p;
	pthread_cond_signal(&s->wcond);
	pthread_mutex_unlock(&s->wmu);
}

/* Gives up the write side; queues p again when appends arrived meanwhile. */
static void part_release(struct tlf_stream *s, struct tlf_part *p)
{
	pthread_mutex_lock(&p->mu);
	p->in_flight = 0;
	pthread_cond_broadcast(&p->idle);
	int again = p->pending.ncb > 0 && !p->queued;
	if (again)
		p->queued = 1;
	pthread_mutex_unlock(&p->mu);
	if (again)
		tlf_kick(s, p);
}

void tlf_part_view(struct tlf_part *p, struct tlf_durable *d)
{
	pthread_mutex_lock(&p->mu);
	*d = p->dur;
	pthread_mutex_unlock(&p->mu);
}

int tlf_segs_push(struct tlf_part *p, uint64_t base)
{
	if (p->nsegs == p->segcap) {
		size_t ncap = p->segcap ? p->segcap * 2 : 16;
		uint64_t *n = realloc(p->segs, ncap * sizeof(*n));
		if (!n)
			return -TL_ENOMEM;
		p->segs = n;
		p->segcap = ncap;
	}
	p->segs[p->nsegs++] = base;
	return 0;
}

/* Creates an empty segment named base and makes its directory entry durable. */
int tlf_seg_create(struct tlf_part *p, uint64_t base, int *fd_out)
{
	char name[TLF_SEG_NAME_LEN + 1];
	tlf_seg_name(name, sizeof(name), base);
	int fd = openat(p->dir_fd, name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return tl_err_from_errno(errno);
	if (fsync(p->dir_fd) != 0) {
		int rc = tl_err_from_errno(errno);
		close(fd);
		unlinkat(p->dir_fd, name, 0);
		return rc;
	}
	*fd_out = fd;
	return 0;
}

/* Deletes the oldest segments whose last modification is older than
 * retention_ms, never the active one. Caller owns p's write side. */
void tlf_part_retention(struct tlf_stream *s, struct tlf_part *p)
{
	if (s->opts.retention_ms <= 0 || p->dir_fd < 0)
		return;
	int64_t cutoff = tl_now_ms() - s->opts.retention_ms;
	/* Never the active segment; nor, while that holds no record yet, the
	 * one before it: its last record is the partition's last
	 * (tl_stream_last, which the enricher resumes from). */
	size_t keep = p->dur.last_pos == TLF_NONE ? 2 : 1;
	size_t drop = 0;
	while (drop + keep < p->nsegs) {
		char name[TLF_SEG_NAME_LEN + 1];
		tlf_seg_name(name, sizeof(name), p->segs[drop]);
		struct stat st;
		if (fstatat(p->dir_fd, name, &st, 0) == 0) {
			int64_t mtime = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
			if (mtime >= cutoff)
				break;
			if (unlinkat(p->dir_fd, name, 0) != 0 && errno != ENOENT)
				break;
		}
		drop++;
	}
	if (drop) {
		memmove(p->segs, p->segs + drop, (p->nsegs - drop) * sizeof(*p->segs));
		p->nsegs -= drop;
		(void)fsync(p->dir_fd);
	}
}

static void part_cut_back(struct tlf_part *p, const struct tl_file_hooks *h, uint64_t end);

/* Writes p->flush: one pwrite per segment touched, rolling at call
 * boundaries past segment_bytes, one fdatasync per segment — except that
 * the last write, when it is a pure overwrite (below meta_end, on a
 * filesystem where that needs no metadata: p->overwrite_flush), is only
 * written back and left in *defer for the cycle's shared device flush.
 * On success sets *nd to the new durable view (durable once *defer is
 * flushed); on failure undoes everything (new segments removed, active
 * segment truncated back to the durable end). */
static int part_write(struct tlf_stream *s, struct tlf_part *p, const struct tl_file_hooks *h,
                      struct tlf_durable *nd, int *rolled, struct tlf_range *defer)
{
	const struct tlf_durable d0 = p->dur; /* only this thread changes it */
	const struct tlf_batch *b = &p->flush;
	const uint64_t seg_bytes = (uint64_t)s->opts.segment_bytes;
	int fd = p->seg_fd;
	uint64_t alloc = p->alloc_end; /* of fd */
	uint64_t base = d0.seg_base, pos = d0.seg_pos, last_pos = d0.last_pos;
	size_t chunk_start = 0, chunk_len = 0, nnew = 0;
	int rc = 0;

	/* A failed write whose rollback could not truncate left bytes past
	 * the durable end; they must be gone before this segment can seal. */
	if (p->tail_dirty) {
		if (ftruncate(p->seg_fd, (off_t)d0.seg_pos) != 0)
			return tl_err_from_errno(errno);
		p->tail_dirty = 0;
		p->alloc_end = alloc = d0.seg_pos;
		p->meta_end = d0.seg_pos;
	}

	for (size_t i = 0; i < b->ncb; i++) {
		const struct tlf_cb *e = &b->cbs[i];
		if (e->bytes == 0)
			continue;
		if (pos + chunk_len > 0 && pos + chunk_len + e->bytes > seg_bytes) {
			if (chunk_len) {
				seg_reserve(h, fd, &alloc, pos + chunk_len, seg_bytes);
				rc = io_write(h, fd, b->data + chunk_start, chunk_len, pos);
				if (!rc)
					seg_written(&alloc, pos + chunk_len);
				if (!rc)
					rc = io_sync(h, fd);
				if (rc)
					goto fail;
			}
			if ((rc = seal_segment(h, fd, pos + chunk_len)) != 0)
				goto fail;
			int nfd;
			rc = tlf_seg_create(p, e->first, &nfd);
			if (!rc) {
				rc = tlf_segs_push(p, e->first);
				if (rc) {
					char name[TLF_SEG_NAME_LEN + 1];
					tlf_seg_name(name, sizeof(name), e->first);
					unlinkat(p->dir_fd, name, 0);
					close(nfd);
				}
			}
			if (rc)
				goto fail;
			if (fd != p->seg_fd)
				close(fd); /* an intermediate new segment, complete and synced */
			fd = nfd;
			alloc = 0;
			nnew++;
			chunk_start += chunk_len;
			chunk_len = 0;
			base = e->first;
			pos = 0;
		}
		last_pos = pos + chunk_len + e->last_rel;
		chunk_len += e->bytes;
	}
	uint64_t meta = nnew ? 0 : p->meta_end;
	defer->len = 0;
	if (chunk_len) {
		seg_reserve(h, fd, &alloc, pos + chunk_len, seg_bytes);
		rc = io_write(h, fd, b->data + chunk_start, chunk_len, pos);
		if (!rc)
			seg_written(&alloc, pos + chunk_len);
		if (!rc && p->overwrite_flush && pos + chunk_len <= meta) {
			/* a pure overwrite: start its write-back; the cycle waits for
			 * it and flushes the device once for every partition */
			rc = range_start(fd, pos, chunk_len);
			if (!rc) {
				defer->off = pos;
				defer->len = chunk_len;
			}
		} else if (!rc) {
			rc = io_sync(h, fd);
			meta = alloc; /* the zeros written ahead and their blocks too */
		}
		if (rc)
			goto fail;
		pos += chunk_len;
	}
	p->meta_end = meta;
	if (fd != p->seg_fd) {
		close(p->seg_fd);
		p->seg_fd = fd;
	}
	p->alloc_end = alloc;
	const struct tlf_cb *last = &b->cbs[b->ncb - 1];
	nd->end = last->first + last->nrec;
	nd->seg_base = base;
	nd->seg_pos = pos;
	nd->last_pos = last_pos;
	nd->flags = 0;
	*rolled = nnew > 0;
	return 0;

fail:
	if (fd != p->seg_fd)
		close(fd);
	for (; nnew > 0; nnew--) {
		char name[TLF_SEG_NAME_LEN + 1];
		tlf_seg_name(name, sizeof(name), p->segs[--p->nsegs]);
		unlinkat(p->dir_fd, name, 0);
	}
	part_cut_back(p, h, d0.seg_pos);
	return rc;
}

/* Undoes a failed write of the active segment: cuts it back to the durable
 * end `end` (best effort: the failed bytes must not come back after a
 * crash). Caller owns p's write side. */
static void part_cut_back(struct tlf_part *p, const struct tl_file_hooks *h, uint64_t end)
{
	if (ftruncate(p->seg_fd, (off_t)end) == 0)
		(void)io_sync(h, p->seg_fd);
	else
		p->tail_dirty = 1;
	p->alloc_end = end;
	p->meta_end = end;
	(void)fsync(p->dir_fd);
}

/* One partition's group in a writer cycle. */
struct tlf_job {
	struct tlf_part *p;
	struct tlf_durable d0;  /* the durable view before the group */
	struct tlf_durable nd;  /* after it, once durable */
	struct tlf_range defer; /* written back without a flush yet (len 0: synced) */
	int rolled;
	int st;
};

/* Takes p's pending group and writes it (job->st < 0: failed and undone).
 * Runs on a writer thread, p came off the ready list; p stays owned until
 * part_finish. */
static void part_begin(struct tlf_stream *s, struct tlf_job *j, const struct tl_file_hooks *h)
{
	struct tlf_part *p = j->p;
	pthread_mutex_lock(&p->mu);
	part_claim_locked(p);
	p->queued = 0;
	struct tlf_batch tmp = p->pending;
	p->pending = p->flush;
	p->flush = tmp;
	pthread_mutex_unlock(&p->mu);
	j->d0 = p->dur;   /* only this thread changes it */
	j->defer.len = 0; /* part_write sets it when it runs */
	j->rolled = 0;
	j->st = p->flush.ncb ? part_write(s, p, h, &j->nd, &j->rolled, &j->defer) : 0;
}

/* Publishes (st == 0) or fails p's group, then gives p up. */
static void part_finish(struct tlf_stream *s, struct tlf_job *j)
{
	struct tlf_part *p = j->p;
	if (p->flush.ncb == 0) {
		part_release(s, p);
		return;
	}
	if (j->st == 0) {
		tlf_durable_write(p, &j->nd);
		batch_complete(&p->flush, 0);
		if (j->rolled)
			tlf_part_retention(s, p);
	} else {
		/* Everything queued behind the failed group carries offsets
		 * that will now be reused: fail it too. */
		struct tlf_batch stolen;
		pthread_mutex_lock(&p->mu);
		stolen = p->pending;
		memset(&p->pending, 0, sizeof(p->pending));
		p->next_offset = p->dur.end;
		pthread_mutex_unlock(&p->mu);
		atomic_fetch_sub(&s->pending_bytes, (int64_t)(p->flush.len + stolen.len));
		batch_complete(&p->flush, j->st);
		batch_complete(&stolen, j->st);
		tlf_batch_free(&stolen);
	}
	batch_clear(&p->flush);
	part_release(s, p);
}

int tlf_device_flush(const struct tl_file_hooks *h, struct tlf_part *p)
{
	if (p->overwrite_flush != TLF_FLUSH_DIRTY)
		return io_sync(h, p->seg_fd);
	if (ftruncate(p->flush_fd, p->flush_size ? 0 : 1) != 0)
		return tl_err_from_errno(errno);
	p->flush_size = !p->flush_size;
	return io_sync(h, p->flush_fd);
}

/* Makes the groups of n partitions durable together: each is written
 * (part_begin); the pure overwrites among them (their segment's blocks
 * already allocated, written and synced: no metadata to write) are only
 * written back there, then waited for here, and one device cache flush
 * (tlf_device_flush) makes them all durable at once: a flush per cycle
 * instead of one per partition (on this VM's virtual disk, 8 partitions
 * in ~370 us instead of ~1,400). The others were synced on their own.
 * Then the groups are published, in-process consumers woken once, and
 * the partitions given up. */
static void cycle_flush(struct tlf_stream *s, struct tlf_job *jobs, size_t n, const struct tl_file_hooks *h)
{
	for (size_t i = 0; i < n; i++)
		part_begin(s, &jobs[i], h);
	struct tlf_part *flusher = NULL;
	for (size_t i = 0; i < n; i++) {
		struct tlf_job *j = &jobs[i];
		if (j->st || !j->defer.len)
			continue;
		j->st = range_wait(j->p->seg_fd, j->defer.off, j->defer.len);
		if (!j->st && !flusher) {
			flusher = j->p;
		} else if (!j->st && j->p->dev != flusher->dev) {
			/* another device: a flush of its own (on failure the
			 * range stays marked, to be cut back below) */
			j->st = tlf_device_flush(h, j->p);
			if (!j->st)
				j->defer.len = 0;
		}
	}
	int fst = flusher ? tlf_device_flush(h, flusher) : 0;
	int published = 0;
	for (size_t i = 0; i < n; i++) {
		struct tlf_job *j = &jobs[i];
		struct tlf_part *p = j->p;
		if (!j->st && j->defer.len)
			j->st = fst;
		if (!p->flush.ncb)
			continue;
		if (j->st) {
			if (j->defer.len) /* written, not known durable: undo */
				part_cut_back(p, h, j->d0.seg_pos);
			continue;
		}
		pthread_mutex_lock(&p->mu);
		p->dur = j->nd;
		pthread_mutex_unlock(&p->mu);
		atomic_fetch_sub(&s->pending_bytes, (int64_t)p->flush.len);
		published = 1;
	}
	/* consumers of this process first, then other processes, then producers */
	if (published) {
		pthread_mutex_lock(&s->pub_mu);
		atomic_fetch_add(&s->pub_gen, 1);
		pthread_cond_broadcast(&s->pub_cond);
		pthread_mutex_unlock(&s->pub_mu);
	}
	for (size_t i = 0; i < n; i++)
		part_finish(s, &jobs[i]);
}

void tlf_retention_all(struct tlf_stream *s)
{
	size_t nt = atomic_load_explicit(&s->ntopics, memory_order_acquire);
	for (size_t i = 0; i < nt; i++) {
		struct tlf_topic *t = s->topics[i];
		if (!tlf_topic_writable(t))
			continue;
		for (int k = 0; k < t->nparts; k++) {
			struct tlf_part *p = &t->parts[k];
			pthread_mutex_lock(&p->mu);
			part_claim_locked(p);
			pthread_mutex_unlock(&p->mu);
			tlf_part_retention(s, p);
			part_release(s, p);
		}
	}
}

void *tlf_writer_main(void *arg)
{
	struct tlf_stream *s = arg;
	struct tlf_job jobs[TLF_CYCLE_MAX];
	pthread_mutex_lock(&s->wmu);
	for (;;) {
		if (s->ready_head) {
			/* partitions whose groups can share a flush go together; any
			 * other alone, so that their fdatasyncs overlap across writers */
			size_t n = 0;
			do {
				struct tlf_part *p = s->ready_head;
				s->ready_head = p->next_ready;
				jobs[n++].p = p;
			} while (s->ready_head && jobs[0].p->overwrite_flush &&
			         s->ready_head->overwrite_flush && n < TLF_CYCLE_MAX);
			if (!s->ready_head)
				s->ready_tail = NULL;
			struct tl_file_hooks h = s->hooks;
			pthread_mutex_unlock(&s->wmu);
			cycle_flush(s, jobs, n, &h);
			pthread_mutex_lock(&s->wmu);
			continue;
		}
		if (s->stop)
			break;
		int64_t now = tl_mono_ms();
		if (now >= s->next_retention_ms) {
			s->next_retention_ms = now + TLF_RETENTION_EVERY_MS;
			pthread_mutex_unlock(&s->wmu);
			tlf_retention_all(s);
			pthread_mutex_lock(&s->wmu);
			continue;
		}
		struct timespec ts = {.tv_sec = s->next_retention_ms / 1000,
		                      .tv_nsec = (s->next_retention_ms % 1000) * 1000000};
		pthread_cond_timedwait(&s->wcond, &s->wmu, &ts);
	}
	pthread_mutex_unlock(&s->wmu);
	return NULL;
}

int tlf_fs_overwrite_flush(int dir_fd, dev_t *dev)
{
	struct stat st;
	struct statfs sf;
	if (fstat(dir_fd, &st) != 0 || fstatfs(dir_fd, &sf) != 0)
		return 0;
	*dev = st.st_dev;
	if (sf.f_type != 0xEF53) /* ext2/3/4 only: XFS may share extents (reflink) */
		return 0;
	/* A journal is there only where /proc/fs/jbd2/<dev>-<inode> says so;
	 * whatever cannot be read counts as none: the flush file then makes
	 * every flush real, whatever the kernel (TLF_FLUSH_DIRTY). */
	char link[512], path[600];
	snprintf(path, sizeof path, "/sys/dev/block/%u:%u", major(st.st_dev), minor(st.st_dev));
	ssize_t n = readlink(path, link, sizeof link - 1);
	if (n <= 0)
		return TLF_FLUSH_DIRTY;
	link[n] = '\0';
	const char *name = strrchr(link, '/');
	name = name ? name + 1 : link;
	DIR *d = opendir("/proc/fs/jbd2");
	int journal = 0;
	size_t nl = strlen(name);
	struct dirent *e;
	while (d && (e = readdir(d)) != NULL)
		journal |= strncmp(e->d_name, name, nl) == 0 && e->d_name[nl] == '-';
	if (d)
		closedir(d);
	if (!journal)
		return TLF_FLUSH_DIRTY;
	/* With a journal, file data may go through it: files created here
	 * inherit chattr +j; the mount's data mode is among every option ext4
	 * has in force (mount options and the superblock's defaults) in
	 * /proc/fs/ext4/<dev>/options. Then every group syncs alone (an fsync
	 * of journalled data commits the journal). */
	int flags = 0;
	if (ioctl(dir_fd, FS_IOC_GETFLAGS, &flags) == 0 && (flags & FS_JOURNAL_DATA_FL))
		return 0;
	snprintf(path, sizeof path, "/proc/fs/ext4/%s/options", name);
	FILE *f = fopen(path, "re");
	if (!f)
		return 0;
	char line[256];
	int data_journal = 0;
	while (fgets(line, sizeof line, f))
		data_journal |= strncmp(line, "data=journal", 12) == 0;
	fclose(f);
	return data_journal ? 0 : TLF_FLUSH_ANY;
}
