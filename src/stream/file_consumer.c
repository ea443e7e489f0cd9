/* file_consumer.c — consumers of the `file:` backend.
 *
 * Each subscription reads its partition's segments with pread in big chunks
 * into its own buffer and hands out records pointing into it, never past
 * the partition's durable end. The durable end comes from memory when the
 * stream writes the topic, else from <p>/durable, which the writing process
 * rewrites (one pwrite) after each fdatasync. A consumer whose topics are all
 * written by its own stream waits on the stream's publication condvar;
 * any other waits on inotify events on the durable files of its partitions
 * (the writer's pwrite wakes it, in whatever process the writer runs), with
 * a 5 ms poll while a file does not exist yet. */
#include "stream/file_int.h"

#include "core/clock.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#define SUB_BUF_BYTES (256u * 1024) /* initial read buffer per subscription */
#define MISSING_POLL_MS 5           /* wait step while a durable file is missing */
#define WATCH_POLL_MS 1000          /* safety re-check while watching */

struct csub {
	struct tlf_part *p; /* writer streams: in-memory durable view */
	char *pdir;
	char label[TLF_TOPIC_NAME_MAX + 16]; /* "topic/p" */
	int partition;
	uint64_t next; /* next offset to hand out */
	int fd;        /* current segment, -1 none */
	uint64_t seg_base;
	uint64_t seg_next; /* offset after the last frame parsed in the segment */
	uint64_t file_pos; /* segment bytes read into buf */
	uint8_t *buf;
	size_t cap, start, end;
	int dur_fd; /* read-only: <pdir>/durable */
	int wd;     /* read-only: inotify watch on it */
	struct tlf_durable view;
	int returned; /* records handed out in this poll */
	int dry;      /* a refill found nothing new in this poll */
};

struct tlf_consumer {
	struct tl_consumer base;
	struct tlf_stream *s;
	struct csub *subs;
	size_t n;
	size_t rr;
	int err;
	int local; /* every subscription is on a topic this stream writes */
	int ino_fd, ev_fd;
	_Atomic int wake;
	char detail[512];
};

static int corrupt(struct tlf_consumer *c, struct csub *sb, uint64_t pos, const char *why)
{
	char name[TLF_SEG_NAME_LEN + 1];
	tlf_seg_name(name, sizeof(name), sb->seg_base);
	snprintf(c->detail, sizeof(c->detail), "%s/%s at offset %llu (%s, expected record %llu)", sb->label,
	         name, (unsigned long long)pos, why, (unsigned long long)sb->next);
	c->err = -TL_ECORRUPT;
	return c->err;
}

static void sub_view(struct tlf_consumer *c, struct csub *sb, struct tlf_durable *d)
{
	if (sb->p) {
		tlf_part_view(sb->p, d);
		return;
	}
	(void)c;
	if (sb->dur_fd < 0) {
		char path[4096];
		if (tlf_path(path, sizeof(path), "%s/durable", sb->pdir) == 0)
			sb->dur_fd = open(path, O_RDONLY | O_CLOEXEC);
	}
	struct tlf_durable nd;
	if (sb->dur_fd >= 0 && tlf_durable_read(sb->dur_fd, &nd) == 0)
		sb->view = nd;
	*d = sb->view;
}

/* Opens the segment holding sb->next among those with a base above after
 * (TLF_NONE: any). Returns 1 when a segment was opened, 0 when none fits. */
static int sub_open_segment(struct csub *sb, uint64_t after)
{
	uint64_t *segs;
	size_t n;
	int rc = tlf_seg_list(sb->pdir, &segs, &n);
	if (rc)
		return rc;
	size_t lo = 0;
	if (after != TLF_NONE)
		while (lo < n && segs[lo] <= after)
			lo++;
	if (lo == n) {
		free(segs);
		return 0;
	}
	size_t pick = lo;
	for (size_t i = lo; i < n && segs[i] <= sb->next; i++)
		pick = i;
	uint64_t base = segs[pick];
	free(segs);
	char name[TLF_SEG_NAME_LEN + 1], path[4096 + TLF_SEG_NAME_LEN + 2];
	tlf_seg_name(name, sizeof(name), base);
	if ((rc = tlf_path(path, sizeof(path), "%s/%s", sb->pdir, name)) != 0)
		return rc;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : tl_err_from_errno(errno);
	if (sb->fd >= 0)
		close(sb->fd);
	sb->fd = fd;
	sb->seg_base = sb->seg_next = base;
	sb->file_pos = 0;
	sb->start = sb->end = 0;
	if (sb->next < base) {
		/* Older records were removed by retention before this consumer
		 * read them: what it counts from them is lost, so say so. */
		tl_warn("%s: records %" PRIu64 "..%" PRIu64
		        " were removed by retention before they were read; "
		        "going on from %" PRIu64,
		        sb->pdir, sb->next, base - 1, base);
		sb->next = base;
	}
	return 1;
}

/* Reads more of the partition into sb->buf so that it may hold need bytes
 * from sb->start. 1 when bytes were added, 0 when nothing new is durable,
 * negative on error. */
static int sub_refill(struct tlf_consumer *c, struct csub *sb, size_t need)
{
	struct tlf_durable d;
	sub_view(c, sb, &d);
	if (sb->next >= d.end)
		return 0;
	if (sb->fd < 0) {
		int r = sub_open_segment(sb, TLF_NONE);
		if (r <= 0)
			return r;
	}
	if (sb->start > 0) {
		memmove(sb->buf, sb->buf + sb->start, sb->end - sb->start);
		sb->end -= sb->start;
		sb->start = 0;
	}
	if (need < SUB_BUF_BYTES)
		need = SUB_BUF_BYTES;
	if (sb->cap < need) {
		uint8_t *nb = realloc(sb->buf, need);
		if (!nb)
			return -TL_ENOMEM;
		sb->buf = nb;
		sb->cap = need;
	}
	for (;;) {
		if (sb->seg_base > d.seg_base)
			return 0; /* not durable yet */
		const int sealed = sb->seg_base < d.seg_base;
		const uint64_t limit = sealed ? UINT64_MAX : d.seg_pos;
		if (sb->file_pos < limit) {
			size_t want = sb->cap - sb->end;
			if (limit - sb->file_pos < want)
				want = (size_t)(limit - sb->file_pos);
			ssize_t r = pread(sb->fd, sb->buf + sb->end, want, (off_t)sb->file_pos);
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0)
				return tl_err_from_errno(errno);
			if (r > 0) {
				sb->end += (size_t)r;
				sb->file_pos += (uint64_t)r;
				return 1;
			}
			if (!sealed)
				return corrupt(c, sb, sb->file_pos, "segment shorter than its durable size");
		}
		const uint64_t at = sb->file_pos - (sb->end - sb->start);
		if (!sealed)
			return corrupt(c, sb, at, "durable records missing");
		if (sb->end > sb->start)
			return corrupt(c, sb, at, "incomplete record at the end of a segment");
		/* Sealed and read to the end: on to the next segment, named
		 * after the offset that follows this one's last record. */
		const uint64_t old = sb->seg_base;
		char name[TLF_SEG_NAME_LEN + 1], path[4096 + TLF_SEG_NAME_LEN + 2];
		tlf_seg_name(name, sizeof(name), sb->seg_next);
		int rc = tlf_path(path, sizeof(path), "%s/%s", sb->pdir, name);
		if (rc)
			return rc;
		int fd = sb->seg_next > old ? open(path, O_RDONLY | O_CLOEXEC) : -1;
		if (fd >= 0) {
			close(sb->fd);
			sb->fd = fd;
			sb->seg_base = sb->seg_next;
			sb->file_pos = 0;
			sb->start = sb->end = 0;
		} else {
			int r = sub_open_segment(sb, old);
			if (r <= 0)
				return r;
		}
	}
}

/* Hands out up to quota records of sub i. */
static int sub_take(struct tlf_consumer *c, struct csub *sb, size_t i, struct tl_record *out, size_t quota)
{
	size_t n = 0;
	while (n < quota) {
		const size_t avail = sb->end - sb->start;
		struct tlf_frame f;
		size_t need;
		enum tlf_decode r =
		    sb->buf ? tlf_frame_decode(sb->buf + sb->start, avail, &f, &need) : TLF_SHORT;
		if (!sb->buf)
			need = TLF_FRAME_HDR;
		if (r == TLF_OK) {
			const uint64_t at = sb->file_pos - avail;
			if (f.offset != sb->seg_next)
				return n ? (int)n : corrupt(c, sb, at, "record out of sequence");
			sb->seg_next++;
			sb->start += f.frame_len;
			if (f.offset < sb->next)
				continue; /* seeking to the subscription's start */
			struct tl_record *rec = &out[n++];
			rec->offset = f.offset;
			rec->partition = sb->partition;
			rec->sub = (int)i;
			rec->ts_ms = f.ts_ms;
			rec->key = f.key;
			rec->key_len = f.key_len;
			rec->value = f.value;
			rec->value_len = f.value_len;
			sb->next++;
			sb->returned++;
			continue;
		}
		if (r == TLF_BAD) {
			int rc = corrupt(c, sb, sb->file_pos - avail, "checksum or length mismatch");
			return n ? (int)n : rc;
		}
		if (sb->returned || sb->dry)
			break; /* refilling would move records already handed out */
		int rc = sub_refill(c, sb, need);
		if (rc < 0)
			return n ? (int)n : rc;
		if (rc == 0) {
			sb->dry = 1;
			break;
		}
	}
	return (int)n;
}

/* One round-robin sweep over the subscriptions. */
static int gather(struct tlf_consumer *c, struct tl_record *out, size_t max)
{
	for (size_t i = 0; i < c->n; i++)
		c->subs[i].returned = c->subs[i].dry = 0;
	const size_t first = c->rr;
	c->rr = (c->rr + 1) % c->n;
	size_t got = 0;
	int progress = 1;
	while (got < max && progress && !c->err) {
		progress = 0;
		size_t quota = (max - got) / c->n;
		if (quota == 0)
			quota = 1;
		for (size_t k = 0; k < c->n && got < max && !c->err; k++) {
			size_t i = (first + k) % c->n;
			size_t q = max - got < quota ? max - got : quota;
			int r = sub_take(c, &c->subs[i], i, out + got, q);
			if (r < 0) {
				if (!c->err)
					c->err = r;
				break;
			}
			if (r > 0) {
				got += (size_t)r;
				progress = 1;
			}
		}
	}
	if (got > 0)
		return (int)got; /* an error found on the way comes with the next poll */
	if (c->err) {
		int rc = c->err;
		if (rc != -TL_ECORRUPT)
			c->err = 0;
		return rc;
	}
	return 0;
}

/* Read-only consumers watch each <p>/durable with inotify. The inotify
 * instance is made on the first poll that may wait (closing one costs the
 * kernel a grace period, so consumers that never wait do not pay it). */
static void ensure_watches(struct tlf_consumer *c, int *missing)
{
	*missing = 0;
	if (c->ino_fd < 0 && (c->ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) < 0) {
		*missing = 1;
		return;
	}
	for (size_t i = 0; i < c->n; i++) {
		struct csub *sb = &c->subs[i];
		if (sb->wd >= 0)
			continue;
		char path[4096];
		if (tlf_path(path, sizeof(path), "%s/durable", sb->pdir) == 0)
			sb->wd = inotify_add_watch(c->ino_fd, path,
			                           IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF);
		if (sb->wd < 0)
			*missing = 1;
	}
}

static void drain_inotify(struct tlf_consumer *c)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	for (;;) {
		ssize_t r = read(c->ino_fd, buf, sizeof(buf));
		if (r <= 0)
			return;
		for (char *q = buf; q < buf + r;) {
			const struct inotify_event *ev = (const struct inotify_event *)q;
			if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF)) {
				for (size_t i = 0; i < c->n; i++) {
					struct csub *sb = &c->subs[i];
					if (sb->wd != ev->wd)
						continue;
					sb->wd = -1;
					if (sb->dur_fd >= 0)
						close(sb->dur_fd);
					sb->dur_fd = -1;
				}
			}
			q += sizeof(*ev) + ev->len;
		}
	}
}

/* Waits for a publication newer than gen, a wakeup or the deadline. */
static void wait_data(struct tlf_consumer *c, uint64_t gen, int missing, int64_t deadline_ns)
{
	struct tlf_stream *s = c->s;
	if (c->local) {
		struct timespec ts = {.tv_sec = deadline_ns / 1000000000,
		                      .tv_nsec = deadline_ns % 1000000000};
		pthread_mutex_lock(&s->pub_mu);
		while (atomic_load(&s->pub_gen) == gen && !atomic_load(&c->wake)) {
			if (deadline_ns < 0)
				pthread_cond_wait(&s->pub_cond, &s->pub_mu);
			else if (pthread_cond_timedwait(&s->pub_cond, &s->pub_mu, &ts) == ETIMEDOUT)
				break;
		}
		pthread_mutex_unlock(&s->pub_mu);
		return;
	}
	int ms = missing ? MISSING_POLL_MS : WATCH_POLL_MS;
	if (deadline_ns >= 0) {
		int64_t left = (deadline_ns - tl_mono_ns() + 999999) / 1000000;
		if (left < ms)
			ms = left < 0 ? 0 : (int)left;
	}
	struct pollfd pf[2] = {{.fd = c->ino_fd, .events = POLLIN}, {.fd = c->ev_fd, .events = POLLIN}};
	/* pf[0].fd < 0 (no inotify) is ignored by poll: the timeout paces it */
	if (poll(pf, 2, ms) > 0) {
		if (pf[0].revents)
			drain_inotify(c);
		if (pf[1].revents) {
			uint64_t v;
			ssize_t r = read(c->ev_fd, &v, sizeof(v));
			(void)r;
		}
	}
}

int tlf_consumer_poll(struct tl_consumer *base, struct tl_record *out, size_t max, int timeout_ms)
{
	struct tlf_consumer *c = (struct tlf_consumer *)base;
	if (c->err) {
		int rc = c->err;
		if (rc != -TL_ECORRUPT)
			c->err = 0;
		return rc;
	}
	if (max == 0 || !out)
		return max == 0 ? 0 : -TL_EINVAL;
	if (max > INT_MAX)
		max = INT_MAX;
	const int64_t deadline = timeout_ms > 0 ? tl_mono_ns() + (int64_t)timeout_ms * 1000000 : -1;
	const int readonly = !c->local;
	for (;;) {
		int missing = 0;
		if (readonly && timeout_ms != 0)
			ensure_watches(c, &missing);
		uint64_t gen = atomic_load(&c->s->pub_gen);
		int got = gather(c, out, max);
		if (got != 0)
			return got;
		if (atomic_exchange(&c->wake, 0) || timeout_ms == 0)
			return 0;
		if (deadline >= 0 && tl_mono_ns() >= deadline)
			return 0;
		wait_data(c, gen, missing, deadline);
	}
}

void tlf_consumer_wakeup(struct tl_consumer *base)
{
	struct tlf_consumer *c = (struct tlf_consumer *)base;
	struct tlf_stream *s = c->s;
	atomic_store(&c->wake, 1);
	if (c->local) {
		pthread_mutex_lock(&s->pub_mu);
		pthread_cond_broadcast(&s->pub_cond);
		pthread_mutex_unlock(&s->pub_mu);
	} else {
		uint64_t one = 1;
		ssize_t r = write(c->ev_fd, &one, sizeof(one));
		(void)r;
	}
}

const char *tlf_consumer_error_detail(struct tl_consumer *base)
{
	struct tlf_consumer *c = (struct tlf_consumer *)base;
	return c->detail;
}

void tlf_consumer_close(struct tl_consumer *base)
{
	struct tlf_consumer *c = (struct tlf_consumer *)base;
	if (!c)
		return;
	if (c->subs) {
		for (size_t i = 0; i < c->n; i++) {
			struct csub *sb = &c->subs[i];
			if (sb->fd >= 0)
				close(sb->fd);
			if (sb->dur_fd >= 0)
				close(sb->dur_fd);
			free(sb->buf);
			free(sb->pdir);
		}
	}
	if (c->ino_fd >= 0)
		close(c->ino_fd);
	if (c->ev_fd >= 0)
		close(c->ev_fd);
	free(c->subs);
	free(c);
}

int tlf_consumer_open(struct tl_stream *base, const struct tl_subscription *subs, size_t n,
                      struct tl_consumer **out)
{
	struct tlf_stream *s = (struct tlf_stream *)base;
	if (!subs || n == 0)
		return -TL_EINVAL;
	struct tlf_consumer *c = calloc(1, sizeof(*c));
	if (!c)
		return -TL_ENOMEM;
	c->base.ops = base->ops;
	c->s = s;
	c->ino_fd = c->ev_fd = -1;
	int rc = 0;
	if (!(c->subs = calloc(n, sizeof(*c->subs)))) {
		rc = -TL_ENOMEM;
		goto fail;
	}
	c->n = n;
	for (size_t i = 0; i < n; i++) {
		struct csub *sb = &c->subs[i];
		sb->fd = sb->dur_fd = sb->wd = -1;
		sb->view.last_pos = TLF_NONE;
	}
	c->local = 1;
	for (size_t i = 0; i < n; i++) {
		struct csub *sb = &c->subs[i];
		struct tlf_topic *t = NULL;
		if (subs[i].partition < 0) {
			rc = -TL_EINVAL;
			goto fail;
		}
		rc = tlf_topic_get(s, subs[i].topic, &t);
		if (rc == -TL_ENOTFOUND)
			rc = 0; /* cannot be created here: read once the writer creates it */
		if (rc)
			goto fail;
		if (t && subs[i].partition >= t->nparts) {
			rc = -TL_EINVAL;
			goto fail;
		}
		char pdir[4096];
		if ((rc = tlf_path(pdir, sizeof(pdir), "%s/%s/%d", s->dir, subs[i].topic,
		                   subs[i].partition)) != 0)
			goto fail;
		if (!(sb->pdir = strdup(pdir))) {
			rc = -TL_ENOMEM;
			goto fail;
		}
		snprintf(sb->label, sizeof(sb->label), "%s/%d", subs[i].topic, subs[i].partition);
		if (t && tlf_topic_writable(t))
			sb->p = &t->parts[subs[i].partition];
		else
			c->local = 0;
		sb->partition = subs[i].partition;
		sb->next = subs[i].start;
	}
	if (!c->local) {
		c->ev_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (c->ev_fd < 0) {
			rc = tl_err_from_errno(errno);
			goto fail;
		}
	}
	*out = &c->base;
	return 0;
fail:
	tlf_consumer_close(&c->base);
	return rc;
}
