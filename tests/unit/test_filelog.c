/* test_filelog.c — the embedded `file:` stream backend (src/stream/file*.c).
 *
 * `test_filelog --bench [dir]` runs a throughput/latency benchmark instead of
 * the tests (nothing asserted, numbers printed). */
#include "core/buf.h"
#include "core/clock.h"
#include "stream/file.h"
#include "stream/file_int.h"
#include "stream/stream.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include <cmocka.h>

#define DEADLINE_MS 20000

/* ---- fixtures ---- */

struct fx {
	char dir[256];
	char uri[300];
};

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	const char *tmp = getenv("TMPDIR");
	snprintf(f->dir, sizeof(f->dir), "%s/tl-filelog-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->uri, sizeof(f->uri), "file:%s/log", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static struct tl_stream *open_stream(struct fx *f, struct tl_stream_opts *o)
{
	struct tl_stream_opts d;
	if (!o) {
		tl_stream_opts_defaults(&d);
		o = &d;
	}
	struct tl_stream *s = NULL;
	int rc = tl_stream_open(f->uri, o, &s);
	assert_int_equal(rc, 0);
	assert_non_null(s);
	return s;
}

static void seg_path(struct fx *f, char *out, size_t cap, const char *topic, int p, uint64_t base)
{
	snprintf(out, cap, "%s/log/%s/%d/%020llu.seg", f->dir, topic, p, (unsigned long long)base);
}

static off_t file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? st.st_size : -1;
}

/* The value of record i of (topic, p): deterministic, 20..59 bytes. */
static size_t make_value(char *buf, size_t cap, const char *topic, int p, uint64_t i)
{
	int n = snprintf(buf, cap, "%s|%d|%llu|", topic, p, (unsigned long long)i);
	size_t len = (size_t)n + (size_t)(i % 7) * 5;
	if (len < 20)
		len = 20;
	for (size_t k = (size_t)n; k < len && k < cap; k++)
		buf[k] = (char)('a' + (k + i) % 26);
	return len;
}

/* Appends records [first, first + n) of (topic, p) synchronously in one call. */
static int append_range(struct tl_stream *s, const char *topic, int p, uint64_t first, size_t n)
{
	struct tl_record *recs = calloc(n, sizeof(*recs));
	char(*vals)[96] = calloc(n, sizeof(*vals));
	char(*keys)[32] = calloc(n, sizeof(*keys));
	for (size_t i = 0; i < n; i++) {
		recs[i].key = keys[i];
		recs[i].key_len =
		    (uint32_t)snprintf(keys[i], sizeof(keys[i]), "k%llu", (unsigned long long)(first + i));
		recs[i].value = vals[i];
		recs[i].value_len = (uint32_t)make_value(vals[i], sizeof(vals[i]), topic, p, first + i);
	}
	int rc = tl_stream_append_sync(s, topic, p, recs, n);
	free(recs);
	free(vals);
	free(keys);
	return rc;
}

static void check_record(const struct tl_record *r, const char *topic, int p, uint64_t off)
{
	char val[96], key[32];
	size_t vl = make_value(val, sizeof(val), topic, p, off);
	int kl = snprintf(key, sizeof(key), "k%llu", (unsigned long long)off);
	assert_int_equal(r->offset, off);
	assert_int_equal(r->partition, p);
	assert_int_equal(r->key_len, (uint32_t)kl);
	assert_memory_equal(r->key, key, (size_t)kl);
	assert_int_equal(r->value_len, (uint32_t)vl);
	assert_memory_equal(r->value, val, vl);
	assert_true(r->ts_ms > 0);
}

static uint64_t frame_bytes(const char *topic, int p, uint64_t i)
{
	char val[96], key[32];
	size_t vl = make_value(val, sizeof(val), topic, p, i);
	int kl = snprintf(key, sizeof(key), "k%llu", (unsigned long long)i);
	return tlf_frame_size((uint32_t)kl, (uint32_t)vl);
}

/* Reads records of one subscription until `want` arrived or the deadline;
 * checks each against the generator. Returns how many arrived. */
static uint64_t drain_check(struct tl_consumer *c, const char *topic, int p, uint64_t from, uint64_t want)
{
	struct tl_record recs[64];
	uint64_t next = from, got = 0;
	int64_t deadline = tl_mono_ms() + DEADLINE_MS;
	while (got < want && tl_mono_ms() < deadline) {
		int n = tl_consumer_poll(c, recs, 64, 100);
		assert_true(n >= 0);
		for (int i = 0; i < n; i++) {
			check_record(&recs[i], topic, p, next);
			next++;
			got++;
		}
	}
	return got;
}

/* ---- done callbacks ---- */

struct waiter {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	int calls;
	int ok;
	int last_status;
	uint64_t firsts[4096];
	int statuses[4096];
};

static void waiter_init(struct waiter *w)
{
	memset(w, 0, sizeof(*w));
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cond, NULL);
}

static void waiter_done(void *arg, int status, uint64_t first)
{
	struct waiter *w = arg;
	pthread_mutex_lock(&w->mu);
	if (w->calls < 4096) {
		w->firsts[w->calls] = first;
		w->statuses[w->calls] = status;
	}
	w->calls++;
	w->ok += status == 0;
	w->last_status = status;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->mu);
}

/* Waits on c (mu held) for at most ms milliseconds. */
static void cond_wait_ms(pthread_cond_t *c, pthread_mutex_t *mu, long ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += ms * 1000000;
	ts.tv_sec += ts.tv_nsec / 1000000000;
	ts.tv_nsec %= 1000000000;
	pthread_cond_timedwait(c, mu, &ts);
}

/* Waits until w saw n callbacks (deadline); returns the count. */
static int waiter_wait(struct waiter *w, int n)
{
	int64_t deadline = tl_mono_ms() + DEADLINE_MS;
	pthread_mutex_lock(&w->mu);
	while (w->calls < n && tl_mono_ms() < deadline) {
		cond_wait_ms(&w->cond, &w->mu, 50);
	}
	int calls = w->calls;
	pthread_mutex_unlock(&w->mu);
	return calls;
}

/* ---- tests ---- */

static void test_crc32c(void **state)
{
	(void)state;
	assert_int_equal(tlf_crc32c(0, "123456789", 9), 0xE3069283u);
	assert_int_equal(tlf_crc32c(tlf_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
	assert_int_equal(tlf_crc32c(0, "", 0), 0);
}

static void test_partition_for(void **state)
{
	(void)state;
	for (int i = 0; i < 1000; i++) {
		char k[16];
		int n = snprintf(k, sizeof(k), "r-%d", i);
		int p = tl_stream_partition_for(k, (size_t)n, 8);
		assert_true(p >= 0 && p < 8);
		assert_int_equal(p, tl_stream_partition_for(k, (size_t)n, 8));
		assert_int_equal(p, (int)(XXH3_64bits(k, (size_t)n) % 8));
	}
	assert_int_equal(tl_stream_partition_for("x", 1, 1), 0);
}

static void test_open_errors(void **state)
{
	struct fx *f = *state;
	struct tl_stream *s = NULL;
	struct tl_stream_opts o;
	tl_stream_opts_defaults(&o);
	assert_int_equal(o.partitions, 8);
	assert_int_equal(o.segment_bytes, 64LL << 20);
	assert_int_equal(o.max_pending, 64LL << 20);
	assert_int_equal(o.retention_ms, 7LL * 24 * 3600 * 1000);
	assert_int_equal(tl_stream_open("bogus://x", &o, &s), -TL_EUNSUPPORTED);
	assert_int_equal(tl_stream_open("nocolon", &o, &s), -TL_EUNSUPPORTED);
	s = open_stream(f, NULL);
	assert_int_equal(tl_stream_partitions(s, "../evil"), -TL_EINVAL);
	assert_int_equal(tl_stream_partitions(s, ""), -TL_EINVAL);
	assert_int_equal(tl_stream_partitions(s, "events"), 8);
	struct tl_record r = {.value = "x", .value_len = 1};
	assert_int_equal(tl_stream_append(s, "events", 8, &r, 1, NULL, NULL), -TL_EINVAL);
	assert_int_equal(tl_stream_append(s, "events", -1, &r, 1, NULL, NULL), -TL_EINVAL);
	tl_stream_close(s);
	tl_stream_close(NULL);
}

static void test_roundtrip(void **state)
{
	struct fx *f = *state;
	struct tl_stream_opts o;
	tl_stream_opts_defaults(&o);
	o.partitions = 3;
	struct tl_stream *s = open_stream(f, &o);
	const char *topics[] = {"events", "delivery"};
	for (int t = 0; t < 2; t++) {
		assert_int_equal(tl_stream_partitions(s, topics[t]), 3);
		for (int p = 0; p < 3; p++) {
			uint64_t n = 0;
			for (int call = 0; call < 5; call++) {
				size_t k = (size_t)(call * 3 + p + t + 1);
				assert_int_equal(append_range(s, topics[t], p, n, k), 0);
				n += k;
				uint64_t end;
				assert_int_equal(tl_stream_end_offset(s, topics[t], p, &end), 0);
				assert_int_equal(end, n);
			}
		}
	}
	/* One consumer over all six (topic, partition) pairs. */
	struct tl_subscription subs[6];
	uint64_t want[6], next[6] = {0};
	for (int i = 0; i < 6; i++) {
		subs[i] = (struct tl_subscription){.topic = topics[i / 3], .partition = i % 3, .start = 0};
		assert_int_equal(tl_stream_end_offset(s, subs[i].topic, subs[i].partition, &want[i]), 0);
	}
	struct tl_consumer *c;
	assert_int_equal(tl_consumer_open(s, subs, 6, &c), 0);
	struct tl_record recs[7];
	uint64_t total = 0, expect = 0;
	for (int i = 0; i < 6; i++)
		expect += want[i];
	int64_t deadline = tl_mono_ms() + DEADLINE_MS;
	while (total < expect && tl_mono_ms() < deadline) {
		int n = tl_consumer_poll(c, recs, 7, 100);
		assert_true(n >= 0);
		for (int i = 0; i < n; i++) {
			int sb = recs[i].sub;
			assert_true(sb >= 0 && sb < 6);
			check_record(&recs[i], subs[sb].topic, subs[sb].partition, next[sb]);
			next[sb]++;
			total++;
		}
	}
	assert_int_equal(total, expect);
	for (int i = 0; i < 6; i++)
		assert_int_equal(next[i], want[i]);
	/* Nothing more: a zero timeout returns 0 at once. */
	assert_int_equal(tl_consumer_poll(c, recs, 7, 0), 0);
	tl_consumer_close(c);
	tl_stream_close(s);
}

static void test_round_robin(void **state)
{
	struct fx *f = *state;
	struct tl_stream_opts o;
	tl_stream_opts_defaults(&o);
	o.partitions = 2;
	struct tl_stream *s = open_stream(f, &o);
	assert_int_equal(append_range(s, "t", 0, 0, 500), 0);
	assert_int_equal(append_range(s, "t", 1, 0, 500), 0);
	struct tl_subscription subs[2] = {{"t", 0, 0}, {"t", 1, 0}};
	struct tl_consumer *c;
	assert_int_equal(tl_consumer_open(s, subs, 2, &c), 0);
	struct tl_record recs[10];
	int n = tl_consumer_poll(c, recs, 10, 1000);
	assert_int_equal(n, 10);
	int per[2] = {0, 0};
	for (int i = 0; i < n; i++)
		per[recs[i].sub]++;
	assert_int_equal(per[0], 5);
	assert_int_equal(per[1], 5);
	tl_consumer_close(c);
	tl_stream_close(s);
}

static void test_reopen_continues(void **state)
{
	struct fx *f = *state;
	struct tl_stream_opts o;
	tl_stream_opts_defaults(&o);
	o.partitions = 2;
	struct tl_stream *s = open_stream(f, &o);
	assert_int_equal(append_range(s, "events", 1, 0, 10), 0);
	tl_stream_close(s);

	o.partitions = 4; /* an existing topic keeps its partition count */
	s = open_stream(f, &o);
	assert_int_equal(tl_stream_partitions(s, "events"), 2);
	uint64_t end;
	assert_int_equal(tl_stream_end_offset(s, "events", 1, &end), 0);
	assert_int_equal(end, 10);
	assert_int_equal(tl_stream_end_offset(s, "events", 0, &end), 0);
	assert_int_equal(end, 0);
	assert_int_equal(append_range(s, "events", 1, 10, 5), 0);
	struct tl_subscription sub = {"events", 1, 0};
	struct tl_consumer *c;
	assert_int_equal(tl_consumer_open(s, &sub, 1, &c), 0);
	assert_int_equal(drain_check(c, "events", 1, 0, 15), 15);
	tl_consumer_close(c);
	tl_stream_close(s);

	/* Unclean state (durable file gone): recovery scans and agrees. */
	char path[512];
	snprintf(path, sizeof(path), "%s/log/events/1/durable", f->dir);
	assert_int_equal(unlink(path), 0);
	s = open_stream(f, &o);
	assert_int_equal(tl_stream_end_offset(s, "events", 1, &end), 0);
	assert_int_equal(end, 15);
	tl_stream_close(s);
}

static void test_segment_roll(void **state)
{
	struct fx *f = *state;
	struct tl_stream_opts o;
	tl_stream_opts_defaults(&o);
	o.partitions = 1;
	o.segment_bytes = 1024;
	struct tl_stream *s = open_stream(f, &o);
	uint64_t n = 0;
	for (int call = 0; call < 60; call++) {
		size_t k = (size_t)(call % 4 + 1);
		assert_int_equal(append_range(s, "t", 0, n, k), 0);
		n += k;
	}
	/* Several segments, each named after its first offset, each at most
	 * segment_bytes unless it holds a single call. A sealed segment is
	 * exactly its records; the active one may run on in preallocated
	 * zeros past them. */
	uint64_t *segs;
	size_t nsegs;
	char pdir[512];
	snprintf(pdir, sizeof(pdir), "%s/log/t/0", f->dir);
	assert_int_equal(tlf_seg_list(pdir, &segs, &nsegs), 0);
	assert_true(nsegs >= 5);
	assert_int_equal(segs[0], 0);
	for (size_t i = 0; i < nsegs; i++) {
		char path[512];
		seg_path(f, path, sizeof(path), "t", 0, segs[i]);
		assert_true(file_size(path) <= 1024);
		int fd = open(path, O_RDONLY);
		assert_true(fd >= 0);
		struct tlf_scan sc;
		assert_int_equal(tlf_scan_fd(fd, (uint64_t)file_size(path), segs[i], &sc), 0);
		close(fd);
		assert_int_equal(sc.corrupt, 0);
		if (i + 1 < nsegs)
			assert_int_equal(sc.valid_end, (uint64_t)file_size(path));
		else
			assert_true(sc.valid_end <= (uint64_t)file_size(path));
		assert_int_equal(sc.next_offset, i + 1 < nsegs ? segs[i + 1] : n);
	}
	free(segs);

	/* Reading from 0 and from the middle crosses the rolls. */
	struct tl_subscription subs[2] = {{"t", 0, 0}, {"t", 0, n / 2 + 1}};
	struct tl_consumer *c;
	assert_int_equal(tl_consumer_open(s, &subs[0], 1, &c), 0);
	assert_int_equal(drain_check(c, "t", 0, 0, n), n);
	tl_consumer_close(c);
	assert_int_equal(tl_consumer_open(s, &subs[1], 1, &c), 0);
	assert_int_equal(drain_check(c, "t", 0, n / 2 + 1, n - n / 2 - 1), n - n / 2 - 1);
	/* and keeps following new appends */
	assert_int_equal(append_range(s, "t", 0, n, 3), 0);
	assert_int_equal(drain_check(c, "t", 0, n, 3), 3);
	tl_consumer_close(c);

	struct tl_buf storage;
	tl_buf_init(&storage, 0);
	struct tl_record last;
	assert_int_equal(tl_stream_last(s, "t", 0, &last, &storage), 0);
	check_record(&last, "t", 0, n + 2);
	tl_stream_close(s);
	tl_buf_free(&storage);
}

static void test_retention(void **state)
{
	struct fx *f = *state;
	struct tl_stream_opts o;
	tl_stream_opts_defaults(&o);
	o.partitions = 1;
	o.segment_bytes = 512;
	o.retention_ms = 3600 * 1000;
	struct tl_stream *s = open_stream(f, &o);
	for (uint64_t i = 0; i < 60; i++)
		assert_int_equal(append_range(s, "t", 0, i, 1), 0);
	uint64_t *segs;
	size_t nsegs;
	char pdir[512];
	snprintf(pdir, sizeof(pdir), "%s/log/t/0", f->dir);
	assert_int_equal(tlf_seg_list(pdir, &segs, &nsegs), 0);
	assert_true(nsegs >= 4);
	/* Nothing is old yet: retention keeps everything. */
	assert_int_equal(tl_stream_file_retention(s), 0);
	uint64_t *segs2;
	size_t nsegs2;
	assert_int_equal(tlf_seg_list(pdir, &segs2, &nsegs2), 0);
	assert_int_equal(nsegs2, nsegs);
	free(segs2);
	/* Age the first two segments by two hours. */
	struct timespec old[2] = {{.tv_sec = time(NULL) - 7200}, {.tv_sec = time(NULL) - 7200}};
	for (size_t i = 0; i < 2; i++) {
		char path[512];
		seg_path(f, path, sizeof(path), "t", 0, segs[i]);
		assert_int_equal(utimensat(AT_FDCWD, path, old, 0), 0);
	}
	assert_int_equal(tl_stream_file_retention(s), 0);
	assert_int_equal(tlf_seg_list(pdir, &segs2, &nsegs2), 0);
	assert_int_equal(nsegs2, nsegs - 2);
	assert_int_equal(segs2[0], segs[2]);
	free(segs2);
	/* A consumer from 0 starts at the oldest record kept. */
	struct tl_subscription sub = {"t", 0, 0};
	struct tl_consumer *c;
	assert_int_equal(tl_consumer_open(s, &sub, 1, &c), 0);
	assert_int_equal(drain_check(c, "t", 0, segs[2], 60 - segs[2]), 60 - segs[2]);
	tl_consumer_close(c);
	uint64_t end;
	assert_int_equal(tl_stream_end_offset(s, "t", 0, &end), 0);
	assert_int_equal(end, 60);
	tl_stream_close(s);

	/* The active segment is never deleted, even when old; retention also
	 * runs on open. */
	assert_int_equal(tlf_seg_list(pdir, &segs2, &nsegs2), 0);
	for (size_t i = 0; i < nsegs2; i++) {
		char path[512];
		seg_path(f, path, sizeof(path), "t", 0, segs2[i]);
		assert_int_equal(utimensat(AT_FDCWD, path, old, 0), 0);
	}
	s = open_stream(f, &o);
	free(segs);
	assert_int_equal(tlf_seg_list(pdir, &segs, &nsegs), 0);
	assert_int_equal(nsegs, 1);
	assert_int_equal(segs[0], segs2[nsegs2 - 1]);
	assert_int_equal(tl_stream_end_offset(s, "t", 0, &end), 0);
	assert_int_equal(end, 60);
	assert_int_equal(append_range(s, "t", 0, 60, 1), 0);
	tl_stream_close(s);
	free(segs);
	free(segs2);
}

static void write_file(const char *path, const void *data, size_t n)
{
	int fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, n), (ssize_t)n);
	close(fd);
}

static char *read_file(const char *path, size_t *n)
{
	off_t sz = file_size(path);
	assert_true(sz >= 0);
	char *buf = malloc((size_t)sz + 1);
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, buf, (size_t)sz), sz);
	close(fd);
	*n = (size_t)sz;
	return buf;
}

static void test_torn_tail_every_byte(void **state)
{
	struct fx *f = *state;
	struct tl_stream_opts o;
	tl_stream_opts_defaults(&o);
	o.partitions = 1;
	const uint64_t N = 6;
	struct tl_stream *s = open_stream(f, &o);
	for (uint64_t i = 0; i < N; i++)
		assert_int_equal(append_range(s, "t", 0, i, 1), 0);
	tl_stream_close(s);

	char path[512];
	seg_path(f, path, sizeof(path), "t", 0, 0);
	size_t size;
	char *orig = read_file(path, &size);
	const size_t last_start = size - frame_bytes("t", 0, N - 1);
	struct tl_buf storage;
	tl_buf_init(&storage, 0);
	/* Each length of the last record written, then again with the rest of
	 * the record's bytes garbage instead of missing (sectors of a torn
	 * write that never made it hold whatever was there). */
	char *junk = malloc(size);
	char dpath[512];
	snprintf(dpath, sizeof(dpath), "%s/log/t/0/durable", f->dir);
	for (size_t k = 0; k < 2 * (size - last_start); k++) {
		const size_t len = last_start + k % (size - last_start);
		if (k < size - last_start) {
			write_file(path, orig, len);
		} else {
			memcpy(junk, orig, len);
			for (size_t b = len; b < size; b++)
				junk[b] = (char)(0x5a ^ (b * 131));
			write_file(path, junk, size);
			unlink(dpath); /* a crash: no clean-close mark (the size alone matches) */
		}
		s = open_stream(f, &o);
		assert_int_equal(file_size(path), (off_t)last_start);
		uint64_t end;
		assert_int_equal(tl_stream_end_offset(s, "t", 0, &end), 0);
		assert_int_equal(end, N - 1);
		struct tl_record last;
		assert_int_equal(tl_stream_last(s, "t", 0, &last, &storage), 0);
		check_record(&last, "t", 0, N - 2);
		struct waiter w;
		waiter_init(&w);
		char val[96], key[32];
		struct tl_record r = {.key = key};
		r.key_len = (uint32_t)snprintf(key, sizeof(key), "k%llu", (unsigned long long)(N - 1));
		r.value = val;
		r.value_len = (uint32_t)make_value(val, sizeof(val), "t", 0, N - 1);
		assert_int_equal(tl_stream_append(s, "t", 0, &r, 1, waiter_done, &w), 0);
		assert_int_equal(waiter_wait(&w, 1), 1);
		assert_int_equal(w.statuses[0], 0);
		assert_int_equal(w.firsts[0], N - 1);
		tl_stream_close(s);
		/* the earlier records are untouched, the new one has the same size */
		size_t n2;
		char *now = read_file(path, &n2);
		assert_int_equal(n2, size);
		assert_memory_equal(now, orig, last_start);
		free(now);
	}
	free(junk);
	/* A checksum mismatch in the last record (nothing after it) is a
	 * torn tail too. */
	char *bad = malloc(size);
	memcpy(bad, orig, size);
	bad[size - 3] ^= 0x40;
	write_file(path, bad, size);
	unlink(dpath);
	s = open_stream(f, &o);
	uint64_t end;
	assert_int_equal(tl_stream_end_offset(s, "t", 0, &end), 0);
	assert_int_equal(end, N - 1);
	assert_int_equal(file_size(path), (off_t)last_start);
	tl_stream_close(s);
	free(bad);
	free(orig);
	tl_buf_free(&storage);
}

static void expect_corrupt(struct fx *f, uint64_t good)
{
	struct tl_stream *s = open_stream(f, NULL);
	struct tl_subscription sub = {"t", 0, 0};
	struct tl_consumer *c;
	assert_int_equal(tl_consumer_open(s, &sub, 1, &c), 0);
	struct tl_record recs[64];
	uint64_t got = 0;
	int rc;
	int64_t deadline = tl_mono_ms() + DEADLINE_MS;
	while ((rc = tl_consumer_poll(c, recs, 64, 100)) >= 0 && tl_mono_ms() < deadline) {
		for (int i = 0; i < rc; i++)
			check_record(&recs[i], "t", 0, got++);
	}
	assert_int_equal(rc, -TL_ECORRUPT);
	assert_int_equal(got, good);
	const char *detail = tl_consumer_error_detail(c);
	assert_non_null(strstr(detail, "t/0/00000000000000000000.seg at offset "));
	/* sticky */
	assert_int_equal(tl_consumer_poll(c, recs, 64, 0), -TL_ECORRUPT);
	tl_consumer_close(c);
	tl_stream_close(s);
}

static void test_corrupt_middle(void **state)
{
	struct fx *f = *state;
	struct tl_stream_opts o;
	tl_stream_opts_defaults(&o);
	o.partitions = 1;
	struct tl_stream *s = open_stream(f, &o);
	for (uint64_t i = 0; i < 10; i++)
		assert_int_equal(append_range(s, "t", 0, i, 1), 0);
	tl_stream_close(s);
	char path[512];
	seg_path(f, path, sizeof(path), "t", 0, 0);
	size_t size;
	char *data = read_file(path, &size);
	size_t pos = 0;
	for (uint64_t i = 0; i < 4; i++)
		pos += frame_bytes("t", 0, i);
	data[pos + TLF_FRAME_HDR + 4] ^= 0x01; /* inside record 4's value */
	write_file(path, data, size);

	/* Clean close: opening does not scan; the consumer finds it. */
	expect_corrupt(f, 4);

	/* Unclean: recovery scans, sees valid records after the bad one and
	 * does not truncate; numbering continues after the last record. */
	char dpath[512];
	snprintf(dpath, sizeof(dpath), "%s/log/t/0/durable", f->dir);
	assert_int_equal(unlink(dpath), 0);
	s = open_stream(f, &o);
	assert_int_equal(file_size(path), (off_t)size);
	uint64_t end;
	assert_int_equal(tl_stream_end_offset(s, "t", 0, &end), 0);
	assert_int_equal(end, 10);
	assert_int_equal(append_range(s, "t", 0, 10, 1), 0);
	tl_stream_close(s);
	expect_corrupt(f, 4);

	/* A read-only consumer reports it the same way. */
	struct tl_stream_opts ro = o;
	ro.read_only = 1;
	s = open_stream(f, &ro);
	struct tl_subscription sub = {"t", 0, 2};
	struct tl_consumer *c;
	assert_int_equal(tl_consumer_open(s, &sub, 1, &c), 0);
	struct tl_record recs[64];
	int rc, got = 0;
	while ((rc = tl_consumer_poll(c, recs, 64, 100)) > 0)
		got += rc;
	assert_int_equal(got, 2);
	assert_int_equal(rc, -TL_ECORRUPT);
	assert_non_null(strstr(tl_consumer_error_detail(c), "00000000000000000000.seg"));
	tl_consumer_close(c);
	tl_stream_close(s);
	free(data);
}

/* Reads want records of (t, 0) from offset from with a fresh consumer,
 * then checks that nothing else follows (no corruption either). */
static void expect_all(struct tl_stream *s, uint64_t from, uint64_t want)
{
	struct tl_subscription sub = {"t", 0, from};
	struct tl_consumer *c;
	assert_int_equal(tl_consumer_open(s, &sub, 1, &c), 0);
	assert_int_equal(drain_check(c, "t", 0, from, want), want);
	struct tl_record recs[4];
	assert_int_equal(tl_consumer_poll(c, recs, 4, 50), 0);
	tl_consumer_close(c);
}

/* Rewrites the durable file of (topic, p) as a crash may leave it: not
 * marked clean, saying end records are durable up to byte seg_pos of the
 * segment seg_base. */
static void durable_set(struct fx *f, const char *topic, int p, uint64_t end, uint64_t seg_base,
                        uint64_t seg_pos, uint64_t last_pos)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/log/%s/%d/durable", f->dir, topic, p);
	struct tlf_durable d = {.end = end, .seg_base = seg_base, .seg_pos = seg_pos, .last_pos = last_pos};
	uint8_t b[TLF_DURABLE_SIZE];
	tlf_durable_encode(b, &d);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, b, sizeof(b)), (ssize_t)sizeof(b));
	close(fd);
}

/* A crash can persist some sectors of the last group's one write and not
 * earlier ones: zeros, then valid frames. Past what was durable that is the
 * torn group, cut off at recovery; where the durable file says the bytes
 * were durable it stays corruption. */
static void test_torn_group_zero_sector(void **state)
{
	struct fx *f = *state;
	struct tl_stream_opts o;
	tl_stream_opts_defaults(&o);
	o.partitions = 1;
	const uint64_t K = 5, G = 80; /* K groups of one record, then one group of G */
	struct tl_stream *s = open_stream(f, &o);
	for (uint64_t i = 0; i < K; i++)
		assert_int_equal(append_range(s, "t", 0, i, 1), 0);
	assert_int_equal(append_range(s, "t", 0, K, G), 0);
	tl_stream_close(s);

	char path[512];
	seg_path(f, path, sizeof(path), "t", 0, 0);
	size_t size;
	char *orig = read_file(path, &size);
	uint64_t group_start = 0, last_single = 0;
	for (uint64_t i = 0; i < K; i++) {
		last_single = group_start;
		group_start += frame_bytes("t", 0, i);
	}
	/* the group's second whole sector never reached the disk */
	const size_t sec = ((group_start + 511) & ~(size_t)511) + 512;
	assert_true(sec + 1024 < size);
	uint64_t first_bad = 0, bad_pos = 0;
	while (bad_pos + frame_bytes("t", 0, first_bad) <= sec)
		bad_pos += frame_bytes("t", 0, first_bad++);
	assert_true(first_bad > K && first_bad < K + G);
	char *torn = malloc(size);
	memcpy(torn, orig, size);
	memset(torn + sec, 0, 512);

	/* 1. the durable file said: the K single records */
	write_file(path, torn, size);
	durable_set(f, "t", 0, K, 0, group_start, last_single);
	s = open_stream(f, &o);
	assert_int_equal(file_size(path), (off_t)bad_pos);
	uint64_t end;
	assert_int_equal(tl_stream_end_offset(s, "t", 0, &end), 0);
	assert_int_equal(end, first_bad);
	expect_all(s, 0, first_bad); /* then the end, not corruption */
	assert_int_equal(append_range(s, "t", 0, first_bad, 1), 0);
	tl_stream_close(s);

	/* 2. no durable file at all: the same */
	write_file(path, torn, size);
	char dpath[512];
	snprintf(dpath, sizeof(dpath), "%s/log/t/0/durable", f->dir);
	assert_int_equal(unlink(dpath), 0);
	s = open_stream(f, &o);
	assert_int_equal(tl_stream_end_offset(s, "t", 0, &end), 0);
	assert_int_equal(end, first_bad);
	tl_stream_close(s);

	/* 3. the durable file said the whole group was durable: corruption,
	 * kept (numbering goes on after it) for the consumers to report */
	write_file(path, torn, size);
	durable_set(f, "t", 0, K + G, 0, size, size - frame_bytes("t", 0, K + G - 1));
	s = open_stream(f, &o);
	assert_int_equal(file_size(path), (off_t)size);
	assert_int_equal(tl_stream_end_offset(s, "t", 0, &end), 0);
	assert_int_equal(end, K + G);
	tl_stream_close(s);
	expect_corrupt(f, first_bad);

	/* 4. a damaged region without a zero sector is corruption whatever
	 * the durable file says */
	memcpy(torn, orig, size);
	for (size_t b = sec; b < sec + 512; b++)
		torn[b] = (char)(0x5a ^ (b * 131));
	write_file(path, torn, size);
	assert_int_equal(unlink(dpath), 0);
	s = open_stream(f, &o);
	assert_int_equal(file_size(path), (off_t)size);
	tl_stream_close(s);
	expect_corrupt(f, first_bad);
	free(torn);
	free(orig);
}

/* Grows the file past each write, as a fallocate that failed half-way can. */
static ssize_t growing_pwrite(void *ctx, int fd, const void *buf, size_t n, off_t off)
{
	(void)ctx;
	ssize_t r = pwrite(fd, buf, n, off);
	if (r > 0 && ftruncate(fd, off + r + 8192) != 0)
		return -1;
	return r;
}

/* A segment is sealed at the end of its data whatever the file's size was. */
static void test_seal_cuts_grown_file(void **state)
{
	struct fx *f = *state;
	struct tl_stream_opts o;
	tl_stream_opts_defaults(&o);
	o.partitions = 1;
	o.segment_bytes = 1024;
	struct tl_stream *s = open_stream(f, &o);
	struct tl_file_hooks h = {.pwrite = growing_pwrite};
	assert_int_equal(tl_stream_file_set_hooks(s, &h), 0);
	const uint64_t N = 30; /* one call past segment_bytes: the segment is as long as its data */
	assert_int_equal(append_range(s, "t", 0, 0, N), 0);
	assert_int_equal(tl_stream_file_set_hooks(s, NULL), 0);
	assert_int_equal(append_range(s, "t", 0, N, 1), 0); /* rolls: seals segment 0 */
	char path[512];
	seg_path(f, path, sizeof(path), "t", 0, 0);
	uint64_t data = 0;
	for (uint64_t i = 0; i < N; i++)
		data += frame_bytes("t", 0, i);
	assert_true(data > 1024);
	assert_int_equal(file_size(path), (off_t)data);
	expect_all(s, 0, N + 1);
	tl_stream_close(s);
}

/* A crash right after a roll leaves an empty active segment: retention
 * then keeps the one before, which holds the partition's last record. */
static void test_retention_keeps_last_record(void **state)
{
	struct fx *f = *state;
	struct tl_stream_opts o;
	tl_stream_opts_defaults(&o);
	o.partitions = 1;
	o.segment_bytes = 512;
	o.retention_ms = 3600 * 1000;
	const uint64_t N = 30;
	struct tl_stream *s = open_stream(f, &o);
	for (uint64_t i = 0; i < N; i++)
		assert_int_equal(append_range(s, "t", 0, i, 1), 0);
	tl_stream_close(s);
	char pdir[512], path[512], dpath[512];
	snprintf(pdir, sizeof(pdir), "%s/log/t/0", f->dir);
	uint64_t *segs;
	size_t nsegs;
	assert_int_equal(tlf_seg_list(pdir, &segs, &nsegs), 0);
	assert_true(nsegs >= 3);
	const uint64_t prev_base = segs[nsegs - 1];
	free(segs);
	/* the new segment was created, the crash came before its first write */
	seg_path(f, path, sizeof(path), "t", 0, N);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
	assert_true(fd >= 0);
	close(fd);
	snprintf(dpath, sizeof(dpath), "%s/log/t/0/durable", f->dir);
	assert_int_equal(unlink(dpath), 0);
	assert_int_equal(tlf_seg_list(pdir, &segs, &nsegs), 0);
	struct timespec old[2] = {{.tv_sec = time(NULL) - 7200}, {.tv_sec = time(NULL) - 7200}};
	for (size_t i = 0; i < nsegs; i++) {
		seg_path(f, path, sizeof(path), "t", 0, segs[i]);
		assert_int_equal(utimensat(AT_FDCWD, path, old, 0), 0);
	}
	free(segs);

	s = open_stream(f, &o); /* recovery, then retention */
	assert_int_equal(tlf_seg_list(pdir, &segs, &nsegs), 0);
	assert_int_equal(nsegs, 2);
	assert_int_equal(segs[0], prev_base);
	assert_int_equal(segs[1], N);
	free(segs);
	struct tl_buf storage;
	tl_buf_init(&storage, 0);
	struct tl_record last;
	assert_int_equal(tl_stream_last(s, "t", 0, &last, &storage), 0);
	check_record(&last, "t", 0, N - 1);
	/* removed by hand: the partition had records, so not "empty" */
	seg_path(f, path, sizeof(path), "t", 0, prev_base);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(tl_stream_last(s, "t", 0, &last, &storage), -TL_ECORRUPT);
	assert_int_equal(append_range(s, "t", 0, N, 1), 0);
	assert_int_equal(tl_stream_last(s, "t", 0, &last, &storage), 0);
	check_record(&last, "t", 0, N);
	tl_stream_close(s);
	tl_buf_free(&storage);
}

static void test_second_writer_locked(void **state)
{
	struct fx *f = *state;
	struct tl_stream *s = open_stream(f, NULL);
	assert_int_equal(append_range(s, "events", 0, 0, 1), 0); /* s writes (and locks) events */
	struct tl_stream_opts o;
	tl_stream_opts_defaults(&o);
	char err[256] = "";
	o.err = err;
	o.err_len = sizeof(err);
	struct tl_stream *s2 = NULL;
	/* a stream writing every topic meets events at open */
	assert_int_equal(tl_stream_open(f->uri, &o, &s2), -TL_ELOCKED);
	assert_null(s2);
	char want[64];
	snprintf(want, sizeof(want), "pid %ld", (long)getpid());
	assert_non_null(strstr(err, "topic events"));
	assert_non_null(strstr(err, want));
	/* declaring it: refused at open, naming the topic */
	static const char *const ev[] = {TL_TOPIC_EVENTS, TL_TOPIC_DELIVERY, NULL};
	err[0] = '\0';
	o.write_topics = ev;
	assert_int_equal(tl_stream_open(f->uri, &o, &s2), -TL_ELOCKED);
	assert_non_null(strstr(err, "topic events"));
	/* another topic: fine, and it reads events as s publishes them */
	static const char *const met[] = {TL_TOPIC_METRICS, NULL};
	o.write_topics = met;
	s2 = open_stream(f, &o);
	assert_int_equal(append_range(s2, "metrics", 0, 0, 3), 0);
	struct tl_record r = {.value = "x", .value_len = 1};
	assert_int_equal(tl_stream_append(s2, "events", 0, &r, 1, NULL, NULL), -TL_ELOCKED);
	uint64_t end;
	assert_int_equal(tl_stream_end_offset(s2, "events", 0, &end), 0);
	assert_int_equal(end, 1);
	assert_int_equal(append_range(s, "events", 0, 1, 2), 0);
	assert_int_equal(tl_stream_end_offset(s2, "events", 0, &end), 0);
	assert_int_equal(end, 3);
	/* s may not write metrics now (s2 holds it) */
	assert_int_equal(tl_stream_append(s, "metrics", 0, &r, 1, NULL, NULL), -TL_ELOCKED);
	/* read-only: no lock, no appends */
	struct tl_stream_opts ro;
	tl_stream_opts_defaults(&ro);
	ro.read_only = 1;
	struct tl_stream *s3 = open_stream(f, &ro);
	assert_int_equal(tl_stream_append(s3, "events", 0, &r, 1, NULL, NULL), -TL_EINVAL);
	assert_int_equal(tl_stream_end_offset(s3, "metrics", 0, &end), 0);
	assert_int_equal(end, 3);
	tl_stream_close(s3);
	tl_stream_close(s2);
	tl_stream_close(s);
	/* Released on close: the next writer continues the numbering. */
	o.write_topics = ev;
	s2 = open_stream(f, &o);
	assert_int_equal(append_range(s2, "events", 0, 3, 1), 0);
	assert_int_equal(tl_stream_end_offset(s2, "events", 0, &end), 0);
	assert_int_equal(end, 4);
	tl_stream_close(s2);
}

/* A process killed (here: exiting without closing) releases its topics:
 * the next writer recovers them. */
static void test_lock_released_by_dead_process(void **state)
{
	struct fx *f = *state;
	static const char *const ev[] = {TL_TOPIC_EVENTS, NULL};
	struct tl_stream_opts o;
	tl_stream_opts_defaults(&o);
	o.partitions = 1;
	o.write_topics = ev;
	int pipefd[2];
	assert_int_equal(pipe(pipefd), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct tl_stream *w;
		if (tl_stream_open(f->uri, &o, &w) != 0 || append_range(w, "events", 0, 0, 5) != 0)
			_exit(2);
		char c = 'x';
		if (write(pipefd[1], &c, 1) != 1)
			_exit(3);
		pause(); /* killed by the parent while holding the lock */
		_exit(4);
	}
	close(pipefd[1]);
	char c;
	assert_int_equal(read(pipefd[0], &c, 1), 1);
	close(pipefd[0]);
	char err[256] = "";
	o.err = err;
	o.err_len = sizeof(err);
	struct tl_stream *s = NULL;
	assert_int_equal(tl_stream_open(f->uri, &o, &s), -TL_ELOCKED);
	char want[64];
	snprintf(want, sizeof(want), "pid %ld", (long)pid);
	assert_non_null(strstr(err, want));
	kill(pid, SIGKILL);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	s = open_stream(f, &o);
	uint64_t end;
	assert_int_equal(tl_stream_end_offset(s, "events", 0, &end), 0);
	assert_int_equal(end, 5);
	assert_int_equal(append_range(s, "events", 0, 5, 1), 0);
	tl_stream_close(s);
}

/* Extents of the file at path that the filesystem holds as allocated but
 * unwritten (fallocate'd); 0 where it cannot tell (no FIEMAP). */
static int unwritten_extents(const char *path)
{
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	union {
		struct fiemap fm;
		char buf[sizeof(struct fiemap) + 64 * sizeof(struct fiemap_extent)];
	} u;
	memset(&u, 0, sizeof u);
	u.fm.fm_length = FIEMAP_MAX_OFFSET;
	u.fm.fm_flags = FIEMAP_FLAG_SYNC;
	u.fm.fm_extent_count = 64;
	int n = 0;
	if (ioctl(fd, FS_IOC_FIEMAP, &u.fm) == 0)
		for (unsigned i = 0; i < u.fm.fm_mapped_extents; i++)
			n += (u.fm.fm_extents[i].fe_flags & FIEMAP_EXTENT_UNWRITTEN) != 0;
	close(fd);
	return n;
}

/* The active segment is preallocated ahead of the writes (so an append's
 * fdatasync need not write the inode nor convert unwritten extents): a writer killed with it leaves zeros
 * past its records, which recovery cuts off like a torn tail; reading and
 * appending go on from the durable end; a clean close leaves the segment
 * exactly as long as its records. */
static void test_preallocated_tail(void **state)
{
	struct fx *f = *state;
	struct tl_stream_opts o;
	tl_stream_opts_defaults(&o);
	o.partitions = 1;
	char path[512];
	seg_path(f, path, sizeof(path), "events", 0, 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct tl_stream *w;
		if (tl_stream_open(f->uri, &o, &w) != 0 || append_range(w, "events", 0, 0, 20) != 0)
			_exit(2);
		_exit(0); /* no close: like kill -9 after the answers went out */
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	struct tlf_scan sc;
	assert_int_equal(tlf_scan_fd(fd, (uint64_t)file_size(path), 0, &sc), 0);
	close(fd);
	assert_int_equal(sc.next_offset, 20);
	assert_int_equal(sc.corrupt, 0);
	print_message("after an unclean stop: %llu bytes of records in a %lld-byte segment\n",
	              (unsigned long long)sc.valid_end, (long long)file_size(path));
	/* the writer preallocated, with written zeros: no extent of the
	 * segment is left unwritten (a write into one would make the group
	 * commit's fdatasync convert it, a journal commit) */
	assert_true(file_size(path) > (off_t)sc.valid_end);
	assert_int_equal(unwritten_extents(path), 0);

	struct tl_stream *s = open_stream(f, &o);
	assert_int_equal(file_size(path), (off_t)sc.valid_end); /* the tail is gone */
	uint64_t end;
	assert_int_equal(tl_stream_end_offset(s, "events", 0, &end), 0);
	assert_int_equal(end, 20);
	assert_int_equal(append_range(s, "events", 0, 20, 5), 0);
	struct tl_subscription sub = {"events", 0, 0};
	struct tl_consumer *c;
	assert_int_equal(tl_consumer_open(s, &sub, 1, &c), 0);
	assert_int_equal(drain_check(c, "events", 0, 0, 25), 25);
	tl_consumer_close(c);
	tl_stream_close(s);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(tlf_scan_fd(fd, (uint64_t)file_size(path), 0, &sc), 0);
	close(fd);
	assert_int_equal(sc.next_offset, 25);
	assert_int_equal(file_size(path), (off_t)sc.valid_end); /* clean close: no tail */
}

/* Two processes, each writing its own topic and reading the other's (the
 * enricher's situation): records cross both ways, and a reader blocked in
 * poll wakes on the other process's publication (inotify on the durable
 * file), not on its safety re-check: 100 round trips finish far inside the
 * ~100 s the re-check alone would take. */
static void test_two_writers_ping_pong(void **state)
{
	struct fx *f = *state;
	enum { ROUNDS = 100 };
	static const char *const ping[] = {"ping", NULL};
	static const char *const pong[] = {"pong", NULL};
	struct tl_stream_opts o;
	tl_stream_opts_defaults(&o);
	o.partitions = 1;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) { /* reads ping i, answers pong i */
		struct tl_stream_opts co = o;
		co.write_topics = pong;
		struct tl_stream *w;
		if (tl_stream_open(f->uri, &co, &w) != 0)
			_exit(2);
		struct tl_subscription sub = {"ping", 0, 0};
		struct tl_consumer *c;
		if (tl_consumer_open(w, &sub, 1, &c) != 0)
			_exit(3);
		struct tl_record recs[4];
		int64_t deadline = tl_mono_ms() + 60000;
		for (uint64_t i = 0; i < ROUNDS;) {
			int n = tl_consumer_poll(c, recs, 4, 5000);
			if (n < 0 || tl_mono_ms() > deadline)
				_exit(4);
			for (int k = 0; k < n; k++, i++)
				if (recs[k].offset != i || append_range(w, "pong", 0, i, 1) != 0)
					_exit(5);
		}
		tl_consumer_close(c);
		tl_stream_close(w);
		_exit(0);
	}
	o.write_topics = ping;
	struct tl_stream *s = open_stream(f, &o);
	struct tl_subscription sub = {"pong", 0, 0};
	struct tl_consumer *c;
	assert_int_equal(tl_consumer_open(s, &sub, 1, &c), 0);
	const int64_t t0 = tl_mono_ms();
	struct tl_record rec;
	for (uint64_t i = 0; i < ROUNDS; i++) {
		assert_int_equal(append_range(s, "ping", 0, i, 1), 0);
		int n = 0;
		while (n == 0 && tl_mono_ms() - t0 < 30000)
			n = tl_consumer_poll(c, &rec, 1, 5000);
		assert_int_equal(n, 1);
		check_record(&rec, "pong", 0, i);
	}
	const int64_t took = tl_mono_ms() - t0;
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	/* far below ROUNDS x the 1 s safety re-check */
	assert_true(took < 30000);
	tl_consumer_close(c);
	tl_stream_close(s);
}

struct producer_arg {
	struct tl_stream *s;
	const char *topic;
	int partition;
	uint64_t n;
	int rc;
};

static void *producer_main(void *arg)
{
	struct producer_arg *a = arg;
	for (uint64_t i = 0; i < a->n && a->rc == 0; i += 7) {
		size_t k = a->n - i < 7 ? (size_t)(a->n - i) : 7;
		a->rc = append_range(a->s, a->topic, a->partition, i, k);
	}
	return NULL;
}

static void test_readonly_consumer_thread(void **state)
{
	struct fx *f = *state;
	struct tl_stream_opts o;
	tl_stream_opts_defaults(&o);
	o.partitions = 2;
	/* The reader comes first: the log directory and topic do not exist. */
	struct tl_stream_opts ro = o;
	ro.read_only = 1;
	struct tl_stream *r = open_stream(f, &ro);
	/* a reader creates the topic (not its partitions) when it can */
	assert_int_equal(tl_stream_partitions(r, "events"), 2);
	uint64_t end = 99;
	assert_int_equal(tl_stream_end_offset(r, "events", 1, &end), 0);
	assert_int_equal(end, 0);
	struct tl_subscription sub = {"events", 1, 0};
	struct tl_consumer *c;
	assert_int_equal(tl_consumer_open(r, &sub, 1, &c), 0);
	struct tl_record recs[4];
	assert_int_equal(tl_consumer_poll(c, recs, 4, 0), 0);

	struct tl_stream *w = open_stream(f, &o);
	struct producer_arg pa = {.s = w, .topic = "events", .partition = 1, .n = 700};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, producer_main, &pa), 0);
	assert_int_equal(drain_check(c, "events", 1, 0, 700), 700);
	pthread_join(th, NULL);
	assert_int_equal(pa.rc, 0);
	assert_int_equal(tl_stream_partitions(r, "events"), 2);
	assert_int_equal(tl_stream_end_offset(r, "events", 1, &end), 0);
	assert_int_equal(end, 700);
	struct tl_buf storage;
	tl_buf_init(&storage, 0);
	struct tl_record last;
	assert_int_equal(tl_stream_last(r, "events", 1, &last, &storage), 0);
	check_record(&last, "events", 1, 699);
	assert_int_equal(tl_stream_last(r, "events", 0, &last, &storage), -TL_ENOTFOUND);
	tl_buf_free(&storage);
	tl_consumer_close(c);
	tl_stream_close(w);
	tl_stream_close(r);
}

static void test_fork_writer_cross_process(void **state)
{
	struct fx *f = *state;
	struct tl_stream_opts o;
	tl_stream_opts_defaults(&o);
	o.partitions = 2;
	o.segment_bytes = 4096; /* the reader follows rolls too */
	struct tl_stream_opts ro = o;
	ro.read_only = 1;
	struct tl_stream *r = open_stream(f, &ro);
	struct tl_subscription subs[2] = {{"events", 0, 0}, {"events", 1, 0}};
	struct tl_consumer *c;
	assert_int_equal(tl_consumer_open(r, subs, 2, &c), 0);

	const uint64_t N = 400;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct tl_stream *w;
		if (tl_stream_open(f->uri, &o, &w) != 0)
			_exit(2);
		for (uint64_t i = 0; i < N; i += 10)
			for (int p = 0; p < 2; p++)
				if (append_range(w, "events", p, i, 10) != 0)
					_exit(3);
		tl_stream_close(w);
		_exit(0);
	}
	uint64_t next[2] = {0, 0};
	struct tl_record recs[32];
	int64_t deadline = tl_mono_ms() + DEADLINE_MS;
	while ((next[0] < N || next[1] < N) && tl_mono_ms() < deadline) {
		int n = tl_consumer_poll(c, recs, 32, 200);
		assert_true(n >= 0);
		for (int i = 0; i < n; i++) {
			int sb = recs[i].sub;
			check_record(&recs[i], "events", sb, next[sb]);
			next[sb]++;
		}
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(next[0], N);
	assert_int_equal(next[1], N);
	tl_consumer_close(c);
	tl_stream_close(r);
}

struct order_arg {
	struct tl_stream *s;
	int partition;
	struct waiter w;
	uint64_t expected_firsts[2000];
	int calls;
	int rc;
};

static void *order_producer(void *arg)
{
	struct order_arg *a = arg;
	uint64_t off = 0;
	char val[200];
	memset(val, 'v', sizeof(val));
	struct tl_record recs[5];
	for (int i = 0; i < 5; i++)
		recs[i] = (struct tl_record){.key = "key", .key_len = 3, .value = val, .value_len = 200};
	for (int call = 0; call < 2000; call++) {
		size_t n = (size_t)(call % 5) + 1;
		int rc;
		while ((rc = tl_stream_append(a->s, "t", a->partition, recs, n, waiter_done, &a->w)) ==
		       -TL_EAGAIN)
			waiter_wait(&a->w, a->w.calls + 1);
		if (rc) {
			a->rc = rc;
			return NULL;
		}
		a->expected_firsts[a->calls++] = off;
		off += n;
	}
	return NULL;
}

static void test_done_callbacks_in_order(void **state)
{
	struct fx *f = *state;
	struct tl_stream_opts o;
	tl_stream_opts_defaults(&o);
	o.partitions = 4;
	o.segment_bytes = 256 * 1024;
	struct tl_stream *s = open_stream(f, &o);
	struct order_arg *args = calloc(4, sizeof(*args));
	pthread_t th[4];
	for (int p = 0; p < 4; p++) {
		args[p].s = s;
		args[p].partition = p;
		waiter_init(&args[p].w);
		assert_int_equal(pthread_create(&th[p], NULL, order_producer, &args[p]), 0);
	}
	for (int p = 0; p < 4; p++) {
		pthread_join(th[p], NULL);
		assert_int_equal(args[p].rc, 0);
		assert_int_equal(waiter_wait(&args[p].w, 2000), 2000);
		assert_int_equal(args[p].w.ok, 2000);
		for (int i = 0; i < 2000; i++) {
			assert_int_equal(args[p].w.statuses[i], 0);
			assert_int_equal(args[p].w.firsts[i], args[p].expected_firsts[i]);
		}
		uint64_t end;
		assert_int_equal(tl_stream_end_offset(s, "t", p, &end), 0);
		assert_int_equal(end, 6000); /* 400 * (1+2+3+4+5) */
	}
	tl_stream_close(s);
	free(args);
}

/* Failure injection: pwrite writes half and then fails; fdatasync fails;
 * pwrite can also be held at a gate. */
struct inject {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	int gate_closed;
	int fail_pwrite;
	int short_done;
	int fail_sync;
	int no_short; /* a failing pwrite fails outright, without a short write first */
	int err;
	int pwrites, syncs;
	int waiting;        /* pwrites held at the closed gate now */
	ino_t fail_ino[32]; /* fdatasyncs of these files fail */
	int n_fail_ino;
	ino_t synced_ino[64]; /* the files fdatasynced, in order (the first 64) */
	int n_synced;
};

static ssize_t hook_pwrite(void *ctx, int fd, const void *buf, size_t n, off_t off)
{
	struct inject *in = ctx;
	pthread_mutex_lock(&in->mu);
	if (in->gate_closed) {
		in->waiting++;
		pthread_cond_broadcast(&in->cond);
		while (in->gate_closed)
			pthread_cond_wait(&in->cond, &in->mu);
		in->waiting--;
	}
	in->pwrites++;
	int fail = in->fail_pwrite > 0;
	if (fail && !in->short_done && !in->no_short && n > 1) {
		in->short_done = 1;
		pthread_mutex_unlock(&in->mu);
		return pwrite(fd, buf, n / 2, off); /* a short write first, like a filling disk */
	}
	if (fail) {
		in->fail_pwrite--;
		in->short_done = 0;
	}
	pthread_mutex_unlock(&in->mu);
	if (fail) {
		errno = in->err;
		return -1;
	}
	return pwrite(fd, buf, n, off);
}

static int hook_sync(void *ctx, int fd)
{
	struct inject *in = ctx;
	pthread_mutex_lock(&in->mu);
	in->syncs++;
	int fail = in->fail_sync > 0;
	if (fail)
		in->fail_sync--;
	struct stat st;
	if (fstat(fd, &st) == 0) {
		for (int i = 0; i < in->n_fail_ino; i++)
			fail |= st.st_ino == in->fail_ino[i];
		if (in->n_synced < 64)
			in->synced_ino[in->n_synced++] = st.st_ino;
	}
	pthread_mutex_unlock(&in->mu);
	if (fail) {
		errno = EIO;
		return -1;
	}
	return fdatasync(fd);
}

static void inject_set(struct inject *in, int *field, int v)
{
	pthread_mutex_lock(&in->mu);
	*field = v;
	pthread_cond_broadcast(&in->cond);
	pthread_mutex_unlock(&in->mu);
}

/* Installs the injecting hooks (in, with err for failed writes) on s; h
 * must outlive their use. */
static void inject_install(struct tl_stream *s, struct inject *in, int err, struct tl_file_hooks *h)
{
	memset(in, 0, sizeof(*in));
	in->err = err;
	pthread_mutex_init(&in->mu, NULL);
	pthread_cond_init(&in->cond, NULL);
	*h = (struct tl_file_hooks){.pwrite = hook_pwrite, .fdatasync = hook_sync, .ctx = in};
	assert_int_equal(tl_stream_file_set_hooks(s, h), 0);
}

static void test_write_failure_injected(void **state)
{
	struct fx *f = *state;
	struct tl_stream_opts o;
	tl_stream_opts_defaults(&o);
	o.partitions = 1;
	struct tl_stream *s = open_stream(f, &o);
	struct inject in;
	struct tl_file_hooks h;
	inject_install(s, &in, ENOSPC, &h);

	assert_int_equal(append_range(s, "t", 0, 0, 5), 0);
	char path[512];
	seg_path(f, path, sizeof(path), "t", 0, 0);
	/* the durable records' bytes (the file may run on, preallocated) */
	struct tlf_scan sc0;
	int fd0 = open(path, O_RDONLY);
	assert_true(fd0 >= 0);
	assert_int_equal(tlf_scan_fd(fd0, (uint64_t)file_size(path), 0, &sc0), 0);
	close(fd0);
	const off_t good_size = (off_t)sc0.valid_end;
	assert_int_equal(sc0.next_offset, 5);

	/* Disk full: three calls queued behind a held write all fail. */
	inject_set(&in, &in.gate_closed, 1);
	struct waiter w;
	waiter_init(&w);
	char val[64];
	memset(val, 'x', sizeof(val));
	struct tl_record recs[2] = {{.value = val, .value_len = 64}, {.value = val, .value_len = 64}};
	for (int i = 0; i < 3; i++)
		assert_int_equal(tl_stream_append(s, "t", 0, recs, 2, waiter_done, &w), 0);
	inject_set(&in, &in.fail_pwrite, 1);
	inject_set(&in, &in.gate_closed, 0);
	assert_int_equal(waiter_wait(&w, 3), 3);
	for (int i = 0; i < 3; i++)
		assert_int_equal(w.statuses[i], -TL_ENOSPC);
	uint64_t end;
	assert_int_equal(tl_stream_end_offset(s, "t", 0, &end), 0);
	assert_int_equal(end, 5);
	assert_int_equal(file_size(path), good_size); /* partial write truncated away */

	/* Space is back: the partition carries on from the durable end. */
	assert_int_equal(append_range(s, "t", 0, 5, 2), 0);
	assert_int_equal(tl_stream_end_offset(s, "t", 0, &end), 0);
	assert_int_equal(end, 7);

	/* fdatasync fails with EIO: same story. */
	inject_set(&in, &in.fail_sync, 1);
	assert_int_equal(append_range(s, "t", 0, 7, 3), -TL_EIO);
	assert_int_equal(tl_stream_end_offset(s, "t", 0, &end), 0);
	assert_int_equal(end, 7);
	assert_int_equal(append_range(s, "t", 0, 7, 3), 0);

	struct tl_subscription sub = {"t", 0, 0};
	struct tl_consumer *c;
	assert_int_equal(tl_consumer_open(s, &sub, 1, &c), 0);
	assert_int_equal(drain_check(c, "t", 0, 0, 10), 10);
	struct tl_record extra[4];
	assert_int_equal(tl_consumer_poll(c, extra, 4, 0), 0);
	tl_consumer_close(c);
	assert_int_equal(tl_stream_file_set_hooks(s, NULL), 0);
	tl_stream_close(s);

	/* Reopen: recovery agrees and nothing of the failed writes came back. */
	s = open_stream(f, &o);
	assert_int_equal(tl_stream_end_offset(s, "t", 0, &end), 0);
	assert_int_equal(end, 10);
	assert_int_equal(tl_consumer_open(s, &sub, 1, &c), 0);
	assert_int_equal(drain_check(c, "t", 0, 0, 10), 10);
	tl_consumer_close(c);
	tl_stream_close(s);
}

/* Appends record `off` of the generator to partition p without waiting. */
static void append_async(struct tl_stream *s, int p, uint64_t off, struct waiter *w)
{
	char val[96], key[32];
	struct tl_record r = {.key = key, .value = val};
	r.key_len = (uint32_t)snprintf(key, sizeof(key), "k%llu", (unsigned long long)off);
	r.value_len = (uint32_t)make_value(val, sizeof(val), "t", p, off);
	assert_int_equal(tl_stream_append(s, "t", p, &r, 1, waiter_done, w), 0);
}

/* Waits until n writes are held at the closed gate (deadline). */
static void wait_held(struct inject *in, int n)
{
	int64_t deadline = tl_mono_ms() + DEADLINE_MS;
	pthread_mutex_lock(&in->mu);
	while (in->waiting < n && tl_mono_ms() < deadline) {
		cond_wait_ms(&in->cond, &in->mu, 20);
	}
	int got = in->waiting;
	pthread_mutex_unlock(&in->mu);
	assert_int_equal(got, n);
}

/* Holds each of the W writers in the write of one partition's group
 * (partitions 0..W-1, one cycle each), then queues a group on every other
 * partition: the first writer let go takes all of those in one more cycle. */
static void hold_writers_then_queue(struct tl_stream *s, struct inject *in, int W, int P, uint64_t off,
                                    struct waiter *w)
{
	inject_set(in, &in->gate_closed, 1);
	for (int p = 0; p < P; p++) {
		waiter_init(&w[p]);
		append_async(s, p, off, &w[p]);
		if (p < W)
			wait_held(in, p + 1);
	}
}

/* A writer makes the groups of every partition it took durable together:
 * on a filesystem where an overwrite of synced blocks needs only its data
 * and a device flush (ext4), with one fdatasync per cycle instead of one
 * per partition. With each of the W writers held on a group of its own
 * while groups queue up on the other partitions, that is W + 1 fdatasyncs
 * for 8 partitions (8 where the filesystem needs one per file). A failed
 * flush fails exactly the groups it was to make durable, nothing of them
 * becomes readable, and the partitions carry on from their durable ends,
 * also after a reopen. */
static void test_cycle_one_flush(void **state)
{
	struct fx *f = *state;
	enum { P = 8 };
	struct tl_stream_opts o;
	tl_stream_opts_defaults(&o);
	o.partitions = P;
	struct tl_stream *s = open_stream(f, &o);
	struct inject in;
	struct tl_file_hooks h;
	inject_install(s, &in, EIO, &h);
	for (int p = 0; p < P; p++) /* the first write of a segment allocates: synced alone */
		assert_int_equal(append_range(s, "t", p, 0, 1), 0);
	const int W = ((struct tlf_stream *)s)->nwriters;
	assert_true(W + 1 < P);

	char dir[600];
	snprintf(dir, sizeof(dir), "%s/log/t/0", f->dir);
	int dfd = open(dir, O_RDONLY | O_DIRECTORY);
	assert_true(dfd >= 0);
	dev_t dev;
	int shared = tlf_fs_overwrite_flush(dfd, &dev);
	struct statfs sf;
	assert_int_equal(fstatfs(dfd, &sf), 0);
	close(dfd);
	if (sf.f_type == 0xEF53) /* ext4 (none of the test machines journals data) */
		assert_true(shared);

	struct waiter w[P];
	hold_writers_then_queue(s, &in, W, P, 1, w);
	pthread_mutex_lock(&in.mu);
	in.syncs = 0;
	in.n_synced = 0;
	pthread_mutex_unlock(&in.mu);
	inject_set(&in, &in.gate_closed, 0);
	for (int p = 0; p < P; p++) {
		assert_int_equal(waiter_wait(&w[p], 1), 1);
		assert_int_equal(w[p].statuses[0], 0);
	}
	/* without a journal every shared flush went through a flush file (an
	 * fdatasync of an unchanged segment may not flush the device there) */
	for (int i = 0; shared == TLF_FLUSH_DIRTY && i < in.n_synced; i++) {
		int is_flush_file = 0;
		for (int p = 0; p < P; p++) {
			char path[600];
			struct stat st;
			snprintf(path, sizeof(path), "%s/log/t/%d/flush", f->dir, p);
			is_flush_file |= stat(path, &st) == 0 && st.st_ino == in.synced_ino[i];
		}
		assert_true(is_flush_file);
	}
	print_message("%d partitions made durable with %d fdatasyncs (%d writers, shared flush: %s)\n", P,
	              in.syncs, W,
	              shared == TLF_FLUSH_DIRTY ? "through a flush file"
	              : shared                  ? "yes"
	                                        : "no");
	assert_int_equal(in.syncs, shared ? W + 1 : P);

	/* the flush of the queued groups fails (their files' fdatasyncs fail) */
	hold_writers_then_queue(s, &in, W, P, 2, w);
	pthread_mutex_lock(&in.mu);
	for (int p = W; p < P; p++) {
		char path[600];
		seg_path(f, path, sizeof(path), "t", p, 0);
		struct stat st;
		assert_int_equal(stat(path, &st), 0);
		in.fail_ino[in.n_fail_ino++] = st.st_ino;
		/* without a journal the flush goes through the partition's flush file */
		snprintf(path, sizeof(path), "%s/log/t/%d/flush", f->dir, p);
		if (stat(path, &st) == 0)
			in.fail_ino[in.n_fail_ino++] = st.st_ino;
	}
	pthread_mutex_unlock(&in.mu);
	inject_set(&in, &in.gate_closed, 0);
	uint64_t ends[P];
	for (int p = 0; p < P; p++) {
		assert_int_equal(waiter_wait(&w[p], 1), 1);
		assert_int_equal(w[p].statuses[0], p < W ? 0 : -TL_EIO);
		assert_int_equal(tl_stream_end_offset(s, "t", p, &ends[p]), 0);
		assert_int_equal(ends[p], p < W ? 3 : 2);
	}
	pthread_mutex_lock(&in.mu);
	in.n_fail_ino = 0;
	pthread_mutex_unlock(&in.mu);
	for (int p = 0; p < P; p++)
		assert_int_equal(append_range(s, "t", p, ends[p], 2), 0);
	assert_int_equal(tl_stream_file_set_hooks(s, NULL), 0);
	tl_stream_close(s);

	s = open_stream(f, &o);
	for (int p = 0; p < P; p++) {
		uint64_t end;
		assert_int_equal(tl_stream_end_offset(s, "t", p, &end), 0);
		assert_int_equal(end, ends[p] + 2);
		struct tl_subscription sub = {"t", p, 0};
		struct tl_consumer *c;
		assert_int_equal(tl_consumer_open(s, &sub, 1, &c), 0);
		assert_int_equal(drain_check(c, "t", p, 0, end), end);
		struct tl_record extra[2];
		assert_int_equal(tl_consumer_poll(c, extra, 2, 0), 0);
		tl_consumer_close(c);
	}
	tl_stream_close(s);
}

/* A write of zeros ahead of the records that fails while the records' own
 * write then succeeds (space freed in between) must not leave the
 * reservation behind the records: the next reservation would write zeros
 * over acknowledged records. */
static void test_reserve_failure_keeps_records(void **state)
{
	struct fx *f = *state;
	struct tl_stream_opts o;
	tl_stream_opts_defaults(&o);
	o.partitions = 1;
	struct tl_stream *s = open_stream(f, &o);
	struct inject in;
	struct tl_file_hooks h;
	inject_install(s, &in, ENOSPC, &h);
	pthread_mutex_lock(&in.mu);
	in.no_short = 1;
	in.fail_pwrite = 1; /* the first write, of zeros, fails; the records' succeeds */
	pthread_mutex_unlock(&in.mu);
	assert_int_equal(append_range(s, "t", 0, 0, 3), 0);
	assert_int_equal(append_range(s, "t", 0, 3, 3), 0); /* reserves again */
	struct tl_subscription sub = {"t", 0, 0};
	struct tl_consumer *c;
	assert_int_equal(tl_consumer_open(s, &sub, 1, &c), 0);
	assert_int_equal(drain_check(c, "t", 0, 0, 6), 6);
	tl_consumer_close(c);
	assert_int_equal(tl_stream_file_set_hooks(s, NULL), 0);
	tl_stream_close(s);
	s = open_stream(f, &o);
	assert_int_equal(tl_consumer_open(s, &sub, 1, &c), 0);
	assert_int_equal(drain_check(c, "t", 0, 0, 6), 6);
	tl_consumer_close(c);
	tl_stream_close(s);
}

static void test_write_failure_across_roll(void **state)
{
	struct fx *f = *state;
	struct tl_stream_opts o;
	tl_stream_opts_defaults(&o);
	o.partitions = 1;
	o.segment_bytes = 600;
	struct tl_stream *s = open_stream(f, &o);
	struct inject in;
	struct tl_file_hooks h;
	inject_install(s, &in, EIO, &h);
	assert_int_equal(append_range(s, "t", 0, 0, 5), 0);
	/* Hold the writer, queue enough to roll, fail the second segment's sync. */
	inject_set(&in, &in.gate_closed, 1);
	struct waiter w;
	waiter_init(&w);
	char val[100];
	memset(val, 'y', sizeof(val));
	struct tl_record recs[3] = {{.value = val, .value_len = 100},
	                            {.value = val, .value_len = 100},
	                            {.value = val, .value_len = 100}};
	for (int i = 0; i < 4; i++)
		assert_int_equal(tl_stream_append(s, "t", 0, recs, 3, waiter_done, &w), 0);
	pthread_mutex_lock(&in.mu);
	in.fail_sync = 1;
	in.syncs = 0;
	pthread_mutex_unlock(&in.mu);
	inject_set(&in, &in.gate_closed, 0);
	assert_int_equal(waiter_wait(&w, 4), 4);
	int failed = 0;
	for (int i = 0; i < 4; i++)
		failed += w.statuses[i] != 0;
	assert_true(failed > 0);
	/* Only the successful prefix of calls is durable, in order. */
	uint64_t end;
	assert_int_equal(tl_stream_end_offset(s, "t", 0, &end), 0);
	assert_int_equal(end, 5 + 3 * (uint64_t)(4 - failed));
	for (int i = 0; i < 4 - failed; i++)
		assert_int_equal(w.statuses[i], 0);
	assert_int_equal(append_range(s, "t", 0, end, 4), 0);
	struct tl_subscription sub = {"t", 0, end};
	struct tl_consumer *c;
	assert_int_equal(tl_consumer_open(s, &sub, 1, &c), 0);
	assert_int_equal(drain_check(c, "t", 0, end, 4), 4);
	tl_consumer_close(c);
	assert_int_equal(tl_stream_file_set_hooks(s, NULL), 0);
	tl_stream_close(s);
	s = open_stream(f, &o);
	uint64_t end2;
	assert_int_equal(tl_stream_end_offset(s, "t", 0, &end2), 0);
	assert_int_equal(end2, end + 4);
	tl_stream_close(s);
}

static void test_eagain_backpressure(void **state)
{
	struct fx *f = *state;
	struct tl_stream_opts o;
	tl_stream_opts_defaults(&o);
	o.partitions = 1;
	o.max_pending = 8192;
	struct tl_stream *s = open_stream(f, &o);
	struct inject in = {0};
	pthread_mutex_init(&in.mu, NULL);
	pthread_cond_init(&in.cond, NULL);
	struct tl_file_hooks h = {.pwrite = hook_pwrite, .ctx = &in};
	assert_int_equal(tl_stream_file_set_hooks(s, &h), 0);
	inject_set(&in, &in.gate_closed, 1);
	struct waiter w;
	waiter_init(&w);
	char val[200];
	memset(val, 'z', sizeof(val));
	struct tl_record r = {.value = val, .value_len = 200};
	int accepted = 0, rc = 0;
	while (accepted < 1000 && (rc = tl_stream_append(s, "t", 0, &r, 1, waiter_done, &w)) == 0)
		accepted++;
	assert_int_equal(rc, -TL_EAGAIN);
	assert_true(accepted > 0 && accepted * (200 + (int)TLF_FRAME_HDR) <= 8192);
	inject_set(&in, &in.gate_closed, 0);
	assert_int_equal(waiter_wait(&w, accepted), accepted);
	assert_int_equal(w.ok, accepted);
	assert_int_equal(tl_stream_append(s, "t", 0, &r, 1, waiter_done, &w), 0);
	assert_int_equal(waiter_wait(&w, accepted + 1), accepted + 1);
	assert_int_equal(w.ok, accepted + 1);
	tl_stream_close(s);
}

static void test_last(void **state)
{
	struct fx *f = *state;
	struct tl_stream_opts o;
	tl_stream_opts_defaults(&o);
	o.partitions = 2;
	struct tl_stream *s = open_stream(f, &o);
	struct tl_buf storage;
	tl_buf_init(&storage, 0);
	struct tl_record last;
	assert_int_equal(tl_stream_last(s, "metrics", 0, &last, &storage), -TL_ENOTFOUND);
	assert_int_equal(append_range(s, "metrics", 0, 0, 3), 0);
	assert_int_equal(tl_stream_last(s, "metrics", 0, &last, &storage), 0);
	check_record(&last, "metrics", 0, 2);
	assert_int_equal(append_range(s, "metrics", 0, 3, 1), 0);
	assert_int_equal(tl_stream_last(s, "metrics", 0, &last, &storage), 0);
	check_record(&last, "metrics", 0, 3);
	assert_int_equal(tl_stream_last(s, "metrics", 1, &last, &storage), -TL_ENOTFOUND);
	tl_stream_close(s);
	/* After a reopen, clean and unclean. */
	s = open_stream(f, &o);
	assert_int_equal(tl_stream_last(s, "metrics", 0, &last, &storage), 0);
	check_record(&last, "metrics", 0, 3);
	tl_stream_close(s);
	char dpath[512];
	snprintf(dpath, sizeof(dpath), "%s/log/metrics/0/durable", f->dir);
	assert_int_equal(unlink(dpath), 0);
	s = open_stream(f, &o);
	assert_int_equal(tl_stream_last(s, "metrics", 0, &last, &storage), 0);
	check_record(&last, "metrics", 0, 3);
	tl_stream_close(s);
	/* An empty active segment after a roll: the last record is in the one before. */
	char path[512];
	seg_path(f, path, sizeof(path), "metrics", 0, 4);
	int fd = open(path, O_CREAT | O_WRONLY, 0644);
	assert_true(fd >= 0);
	close(fd);
	s = open_stream(f, &o);
	assert_int_equal(tl_stream_last(s, "metrics", 0, &last, &storage), 0);
	check_record(&last, "metrics", 0, 3);
	assert_int_equal(append_range(s, "metrics", 0, 4, 1), 0);
	assert_int_equal(tl_stream_last(s, "metrics", 0, &last, &storage), 0);
	check_record(&last, "metrics", 0, 4);
	struct tl_subscription sub = {"metrics", 0, 0};
	struct tl_consumer *c;
	assert_int_equal(tl_consumer_open(s, &sub, 1, &c), 0);
	assert_int_equal(drain_check(c, "metrics", 0, 0, 5), 5);
	tl_consumer_close(c);
	tl_stream_close(s);
	tl_buf_free(&storage);
}

struct wake_arg {
	struct tl_consumer *c;
	int rc;
	int done;
};

static void *wake_poller(void *arg)
{
	struct wake_arg *a = arg;
	struct tl_record r[4];
	a->rc = tl_consumer_poll(a->c, r, 4, -1);
	__atomic_store_n(&a->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void check_wakeup(struct tl_stream *s)
{
	struct tl_subscription sub = {"t", 0, 0};
	struct wake_arg a = {0};
	assert_int_equal(tl_consumer_open(s, &sub, 1, &a.c), 0);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, wake_poller, &a), 0);
	/* Keep waking until the poller returns (the first wakeup may come
	 * before it blocks, which also makes it return). */
	int64_t deadline = tl_mono_ms() + DEADLINE_MS;
	while (!__atomic_load_n(&a.done, __ATOMIC_ACQUIRE) && tl_mono_ms() < deadline) {
		tl_consumer_wakeup(a.c);
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
	pthread_join(th, NULL);
	assert_int_equal(a.rc, 0);
	tl_consumer_close(a.c);
}

static void test_wakeup(void **state)
{
	struct fx *f = *state;
	struct tl_stream *s = open_stream(f, NULL);
	assert_int_equal(tl_stream_partitions(s, "t"), 8);
	check_wakeup(s);
	struct tl_stream_opts ro;
	tl_stream_opts_defaults(&ro);
	ro.read_only = 1;
	struct tl_stream *r = open_stream(f, &ro);
	check_wakeup(r);
	tl_stream_close(r);
	tl_stream_close(s);
}

static void test_scan_mem(void **state)
{
	(void)state;
	uint8_t buf[1024];
	size_t pos = 0, starts[6];
	for (int i = 0; i < 6; i++) {
		starts[i] = pos;
		tlf_frame_encode(buf + pos, 100 + (uint64_t)i, 5, "k", 1, "value!", 6);
		pos += tlf_frame_size(1, 6);
	}
	struct tlf_scan sc;
	tlf_scan_mem(buf, pos, 100, &sc);
	assert_int_equal(sc.nframes, 6);
	assert_int_equal(sc.valid_end, pos);
	assert_int_equal(sc.next_offset, 106);
	assert_int_equal(sc.last_pos, starts[5]);
	assert_int_equal(sc.corrupt, 0);
	/* wrong base: nothing valid */
	tlf_scan_mem(buf, pos, 0, &sc);
	assert_int_equal(sc.valid_end, 0);
	assert_int_equal(sc.next_offset, 0);
	/* length field of record 2 destroyed: resync by search */
	buf[starts[2] + 4] ^= 0xff;
	tlf_scan_mem(buf, pos, 100, &sc);
	assert_int_equal(sc.corrupt, 1);
	assert_int_equal(sc.corrupt_pos, starts[2]);
	assert_int_equal(sc.next_offset, 106);
	assert_int_equal(sc.valid_end, pos);
	/* zero-filled tail (delayed allocation after a crash): torn */
	buf[starts[2] + 4] ^= 0xff;
	memset(buf + pos, 0, 100);
	tlf_scan_mem(buf, pos + 100, 100, &sc);
	assert_int_equal(sc.corrupt, 0);
	assert_int_equal(sc.valid_end, pos);
}

/* ---- benchmark (not a test) ---- */

struct bench {
	struct tl_stream *s;
	int batch;
	uint64_t per_thread;
	int tid;
	_Atomic uint64_t *done_recs;
	pthread_mutex_t *mu;
	pthread_cond_t *cond;
};

struct bench_cb {
	struct bench *b;
	uint32_t n;
};

static _Atomic uint64_t bench_syncs;

static int bench_sync(void *ctx, int fd)
{
	(void)ctx;
	bench_syncs++;
	return fdatasync(fd);
}

static void bench_done(void *arg, int status, uint64_t first)
{
	(void)first;
	struct bench *b = arg;
	if (status == 0)
		atomic_fetch_add(b->done_recs, (uint64_t)b->batch);
	pthread_mutex_lock(b->mu);
	pthread_cond_broadcast(b->cond);
	pthread_mutex_unlock(b->mu);
}

static void *bench_producer(void *arg)
{
	struct bench *b = arg;
	struct tl_record recs[256];
	char vals[256][184], keys[256][16];
	for (int i = 0; i < b->batch; i++) {
		memset(vals[i], 'a' + i % 26, sizeof(vals[i]));
		recs[i] =
		    (struct tl_record){.key = keys[i], .key_len = 16, .value = vals[i], .value_len = 184};
	}
	uint64_t seq = 0;
	for (uint64_t sent = 0; sent < b->per_thread; sent += (uint64_t)b->batch) {
		for (int i = 0; i < b->batch; i++) {
			snprintf(keys[i], sizeof(keys[i]), "r-%02d-%010llu", b->tid,
			         (unsigned long long)seq++);
		}
		int p = tl_stream_partition_for(keys[0], 16, 8);
		int rc;
		while ((rc = tl_stream_append(b->s, "bench", p, recs, (size_t)b->batch, bench_done, b)) ==
		       -TL_EAGAIN) {
			pthread_mutex_lock(b->mu);
			cond_wait_ms(b->cond, b->mu, 1);
			pthread_mutex_unlock(b->mu);
		}
		if (rc) {
			fprintf(stderr, "append: %s\n", tl_strerror(rc));
			return NULL;
		}
	}
	return NULL;
}

static void bench_run(const char *dir, int batch, uint64_t total)
{
	char uri[600];
	snprintf(uri, sizeof(uri), "file:%s/bench-%d", dir, batch);
	struct tl_stream_opts o;
	tl_stream_opts_defaults(&o);
	o.partitions = 8;
	struct tl_stream *s;
	if (tl_stream_open(uri, &o, &s) != 0) {
		fprintf(stderr, "open failed\n");
		return;
	}
	struct tl_file_hooks h = {.fdatasync = bench_sync};
	if (tl_stream_file_set_hooks(s, &h) != 0)
		return;
	if (tl_stream_partitions(s, "bench") != 8)
		return;
	_Atomic uint64_t done = 0;
	pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
	struct bench b[4];
	pthread_t th[4];
	bench_syncs = 0;
	int64_t t0 = tl_mono_ns();
	for (int i = 0; i < 4; i++) {
		b[i] = (struct bench){.s = s,
		                      .batch = batch,
		                      .per_thread = total / 4,
		                      .tid = i,
		                      .done_recs = &done,
		                      .mu = &mu,
		                      .cond = &cond};
		pthread_create(&th[i], NULL, bench_producer, &b[i]);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	tl_stream_close(s); /* drains: every callback has run */
	int64_t t1 = tl_mono_ns();
	double secs = (double)(t1 - t0) / 1e9;
	uint64_t d = atomic_load(&done);
	printf(
	    "filelog-bench: batch=%d records=%llu 200B 8 partitions 4 producers: %.0f records/s, %.1f MB/s, "
	    "%llu fdatasync (%.0f records each)\n",
	    batch, (unsigned long long)d, (double)d / secs, (double)d * (200 + TLF_FRAME_HDR) / secs / 1e6,
	    (unsigned long long)bench_syncs, bench_syncs ? (double)d / (double)bench_syncs : 0.0);
}

struct lat {
	struct tl_stream *s;
	_Atomic int64_t synced_ns; /* when the last fdatasync returned */
	_Atomic int seen;
	int64_t samples[2000];
	int64_t commit[2000];
	int n;
};

static int lat_sync(void *ctx, int fd)
{
	struct lat *l = ctx;
	int r = fdatasync(fd);
	atomic_store(&l->synced_ns, tl_mono_ns());
	return r;
}

static void *lat_consumer(void *arg)
{
	struct lat *l = arg;
	struct tl_subscription sub = {"lat", 0, 0};
	struct tl_consumer *c;
	if (tl_consumer_open(l->s, &sub, 1, &c) != 0)
		return NULL;
	struct tl_record r[8];
	while (l->n < 2000) {
		int n = tl_consumer_poll(c, r, 8, 1000);
		int64_t now = tl_mono_ns();
		if (n <= 0)
			break;
		l->samples[l->n++] = now - atomic_load(&l->synced_ns);
		atomic_store(&l->seen, l->n);
	}
	tl_consumer_close(c);
	return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

static void bench_latency(const char *dir)
{
	char uri[600];
	snprintf(uri, sizeof(uri), "file:%s/lat", dir);
	struct tl_stream_opts o;
	tl_stream_opts_defaults(&o);
	o.partitions = 1;
	struct lat *l = calloc(1, sizeof(*l));
	if (tl_stream_open(uri, &o, &l->s) != 0)
		return;
	struct tl_file_hooks h = {.fdatasync = lat_sync, .ctx = l};
	if (tl_stream_file_set_hooks(l->s, &h) != 0 || tl_stream_partitions(l->s, "lat") != 1)
		return;
	pthread_t th;
	pthread_create(&th, NULL, lat_consumer, l);
	struct tl_record r = {.value = "x", .value_len = 1};
	int i;
	for (i = 0; i < 2000; i++) {
		int64_t t0 = tl_mono_ns();
		if (tl_stream_append_sync(l->s, "lat", 0, &r, 1) != 0)
			break;
		l->commit[i] = tl_mono_ns() - t0;
		/* wait until the consumer saw it, so each sample is one wakeup */
		int64_t deadline = tl_mono_ms() + 2000;
		while (atomic_load(&l->seen) <= i && tl_mono_ms() < deadline)
			sched_yield();
	}
	pthread_join(th, NULL);
	qsort(l->samples, (size_t)l->n, sizeof(int64_t), cmp_i64);
	qsort(l->commit, (size_t)i, sizeof(int64_t), cmp_i64);
	if (l->n > 0 && i > 0)
		printf(
		    "filelog-bench: single append -> durable: p50 %.1f us, p99 %.1f us; fdatasync return -> "
		    "in-process consumer wakeup: p50 %.1f us, p99 %.1f us (%d samples)\n",
		    (double)l->commit[i / 2] / 1e3, (double)l->commit[i * 99 / 100] / 1e3,
		    (double)l->samples[l->n / 2] / 1e3, (double)l->samples[l->n * 99 / 100] / 1e3, l->n);
	tl_stream_close(l->s);
	free(l);
}

static int bench_main(int argc, char **argv)
{
	char dir[512];
	if (argc > 2) {
		snprintf(dir, sizeof(dir), "%s", argv[2]);
	} else {
		snprintf(dir, sizeof(dir), "/tmp/tl-filelog-bench-XXXXXX");
		if (!mkdtemp(dir))
			return 1;
	}
	uint64_t total = argc > 3 ? strtoull(argv[3], NULL, 10) : 2000000;
	bench_run(dir, 1, total / 4);
	bench_run(dir, 16, total);
	bench_run(dir, 64, total);
	bench_latency(dir);
	nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "--bench") == 0)
		return bench_main(argc, argv);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_crc32c),
	    cmocka_unit_test(test_partition_for),
	    cmocka_unit_test(test_scan_mem),
	    cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_round_robin, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reopen_continues, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_segment_roll, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_retention, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_torn_tail_every_byte, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_corrupt_middle, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_torn_group_zero_sector, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_seal_cuts_grown_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_retention_keeps_last_record, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_second_writer_locked, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_preallocated_tail, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cycle_one_flush, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reserve_failure_keeps_records, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_lock_released_by_dead_process, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_two_writers_ping_pong, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_readonly_consumer_thread, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fork_writer_cross_process, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_done_callbacks_in_order, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_write_failure_injected, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_write_failure_across_roll, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_eagain_backpressure, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_last, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_wakeup, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
