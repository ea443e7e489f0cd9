/* Unit tests of the archiver (src/pipeline/archive.c) over a real file:
 * stream in a temporary directory: file and day naming, every record in
 * exactly one file of its event day, all the day files of a partition's roll
 * sharing one offset range (ranges contiguous, never overlapping), resume
 * after a kill -9 that left temporaries, recovery of a roll that was only
 * partly renamed, and exactly once over clean restarts. */
#include "core/clock.h"
#include "event/event.h"
#include "pipeline/archive.h"
#include "stream/stream.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include <cmocka.h>

#define DAY_MS 86400000LL
#define D0 20425LL /* 2025-12-03 */
#define P 2        /* partitions per topic */

struct ctx {
	char dir[64];
	char log[128], arch[128], uri[160];
	struct tl_stream *s;
};

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof *c);
	snprintf(c->dir, sizeof c->dir, "/tmp/tally-arch-XXXXXX");
	assert_non_null(mkdtemp(c->dir));
	snprintf(c->log, sizeof c->log, "%s/log", c->dir);
	snprintf(c->arch, sizeof c->arch, "%s/archive", c->dir);
	snprintf(c->uri, sizeof c->uri, "file:%s", c->log);
	struct tl_stream_opts so;
	tl_stream_opts_defaults(&so);
	so.partitions = P;
	assert_int_equal(tl_stream_open(c->uri, &so, &c->s), 0);
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;
	tl_stream_close(c->s);
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", c->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup failed\n");
	free(c);
	return 0;
}

/* Appends n events numbered from k0 to topic/partition; event k lands on day
 * D0 + (k % days) so that consecutive offsets alternate between days. */
static void append(struct ctx *c, const char *topic, int part, int k0, int n, int days)
{
	for (int k = k0; k < k0 + n; k++) {
		char id[64], rcpt[32];
		snprintf(id, sizeof id, "%s-%d-%d", topic, part, k);
		snprintf(rcpt, sizeof rcpt, "r-%d", k % 97);
		struct tl_event e = {.type = strcmp(topic, TL_TOPIC_EVENTS) ? TL_EV_DELIVERED : TL_EV_OPEN,
		                     .ts_ms = (D0 + k % days) * DAY_MS + 1000LL * (k % 3600),
		                     .arrival_ms = (D0 + 2) * DAY_MS};
		e.tenant = TL_STR("acme");
		e.campaign = TL_STR("spring");
		e.recipient = tl_str_of(rcpt, strlen(rcpt));
		e.id = tl_str_of(id, strlen(id));
		struct tl_buf b;
		tl_buf_init(&b, 0);
		assert_int_equal(tl_event_encode(&e, &b), 0);
		struct tl_record r = {.key = rcpt,
		                      .key_len = (uint32_t)strlen(rcpt),
		                      .value = b.data,
		                      .value_len = (uint32_t)b.len};
		assert_int_equal(tl_stream_append_sync(c->s, topic, part, &r, 1), 0);
		tl_buf_free(&b);
	}
}

/* ---- running an archiver on a thread ----------------------------------- */

struct runner {
	struct tl_archiver *a;
	pthread_t th;
	int rc;
};

static void *run_main(void *arg)
{
	struct runner *r = arg;
	r->rc = tl_archiver_run(r->a);
	return NULL;
}

static void opts(struct ctx *c, struct tl_archiver_opts *o, int64_t roll_bytes, int64_t interval_ms)
{
	*o = (struct tl_archiver_opts){.stream = c->s,
	                               .dir = c->arch,
	                               .partitions = (1u << P) - 1,
	                               .roll_bytes = roll_bytes,
	                               .roll_interval_ms = interval_ms,
	                               .batch_max = 64};
}

static void start(struct runner *r, const struct tl_archiver_opts *o)
{
	assert_int_equal(tl_archiver_create(o, &r->a), 0);
	assert_int_equal(pthread_create(&r->th, NULL, run_main, r), 0);
}

static void stop(struct runner *r)
{
	tl_archiver_stop(r->a);
	pthread_join(r->th, NULL);
	assert_int_equal(r->rc, 0);
	tl_archiver_destroy(r->a);
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* Polls until the archiver committed everything appended (deadline 20 s). */
static void wait_committed(struct ctx *c, struct tl_archiver *a)
{
	int64_t deadline = tl_mono_ms() + 20000;
	for (;;) {
		bool all = true;
		for (int t = 0; t < 2; t++)
			for (int p = 0; p < P; p++) {
				const char *topic = t ? TL_TOPIC_DELIVERY : TL_TOPIC_EVENTS;
				uint64_t end, next;
				assert_int_equal(tl_stream_end_offset(c->s, topic, p, &end), 0);
				int rc = tl_archiver_committed(a, topic, p, &next);
				if (rc == -TL_ENOTFOUND)
					continue; /* not owned */
				assert_int_equal(rc, 0);
				all &= next == end;
			}
		if (all)
			return;
		assert_true(tl_mono_ms() < deadline);
		sleep_ms(5);
	}
}

/* ---- reading the archive back ------------------------------------------- */

struct file {
	char day[16];
	struct tl_archive_name n;
	char **ids; /* the event ids, in file order */
	int64_t *ts;
	size_t n_ids;
};

struct arch {
	struct file *f;
	size_t n;
	size_t tmps;
};

static void read_lines(const char *path, struct file *f)
{
	FILE *fp = fopen(path, "rb");
	assert_non_null(fp);
	ZSTD_DCtx *d = ZSTD_createDCtx();
	size_t ocap = ZSTD_DStreamOutSize(), icap = ZSTD_DStreamInSize();
	char *in = malloc(icap), *out = malloc(ocap);
	struct tl_buf text;
	tl_buf_init(&text, 0);
	size_t got, last = 1;
	while ((got = fread(in, 1, icap, fp)) > 0) {
		ZSTD_inBuffer ib = {in, got, 0};
		while (ib.pos < ib.size) {
			ZSTD_outBuffer ob = {out, ocap, 0};
			last = ZSTD_decompressStream(d, &ob, &ib);
			assert_false(ZSTD_isError(last));
			assert_int_equal(tl_buf_append(&text, out, ob.pos), 0);
		}
	}
	assert_int_equal(last, 0); /* the frame is complete */
	fclose(fp);
	char *p = text.data, *end = text.data + text.len;
	struct tl_arena a;
	tl_arena_init(&a, 4096, 0);
	while (p < end) {
		char *nl = memchr(p, '\n', (size_t)(end - p));
		assert_non_null(nl);
		struct tl_event ev;
		char err[128];
		assert_int_equal(tl_event_from_json(p, (size_t)(nl - p), &a, &ev, err, sizeof err), 0);
		f->ids = realloc(f->ids, (f->n_ids + 1) * sizeof *f->ids);
		f->ts = realloc(f->ts, (f->n_ids + 1) * sizeof *f->ts);
		f->ids[f->n_ids] = strndup(ev.id.p, ev.id.n);
		f->ts[f->n_ids++] = ev.ts_ms;
		p = nl + 1;
		tl_arena_reset(&a);
	}
	tl_arena_free(&a);
	tl_buf_free(&text);
	free(in);
	free(out);
	ZSTD_freeDCtx(d);
}

static void load(struct ctx *c, struct arch *a)
{
	memset(a, 0, sizeof *a);
	DIR *d = opendir(c->arch);
	assert_non_null(d);
	struct dirent *e;
	while ((e = readdir(d))) {
		int64_t day;
		if (tl_archive_day_parse(e->d_name, &day))
			continue;
		char sub[512];
		snprintf(sub, sizeof sub, "%s/%s", c->arch, e->d_name);
		DIR *dd = opendir(sub);
		assert_non_null(dd);
		struct dirent *f;
		while ((f = readdir(dd))) {
			if (f->d_name[0] == '.') {
				a->tmps += strstr(f->d_name, ".tmp") != NULL;
				continue;
			}
			struct file fi = {0};
			assert_int_equal(tl_archive_name_parse(f->d_name, &fi.n), 0);
			snprintf(fi.day, sizeof fi.day, "%s", e->d_name + 3);
			char path[1024];
			snprintf(path, sizeof path, "%s/%s", sub, f->d_name);
			read_lines(path, &fi);
			for (size_t i = 0; i < fi.n_ids; i++) /* each line sits in its event day */
				assert_int_equal(tl_archive_day_of(fi.ts[i]), day);
			a->f = realloc(a->f, (a->n + 1) * sizeof *a->f);
			a->f[a->n++] = fi;
		}
		closedir(dd);
	}
	closedir(d);
}

static void arch_free(struct arch *a)
{
	for (size_t i = 0; i < a->n; i++) {
		for (size_t j = 0; j < a->f[i].n_ids; j++)
			free(a->f[i].ids[j]);
		free(a->f[i].ids);
		free(a->f[i].ts);
	}
	free(a->f);
}

static int cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
	return (a > b) - (a < b);
}

/* Every record 0..n-1 of topic/partition is in exactly one file, and the
 * rolls (files sharing a range) tile 0..n-1 without overlap. Returns the
 * number of rolls. */
static size_t check_partition(const struct arch *a, const char *topic, int part, int n)
{
	int *seen = calloc((size_t)n, sizeof *seen);
	uint64_t *firsts = malloc((a->n + 1) * sizeof *firsts);
	size_t n_first = 0;
	for (size_t i = 0; i < a->n; i++) {
		const struct file *f = &a->f[i];
		if (f->n.partition != part || strcmp(f->n.topic, topic))
			continue;
		bool dup = false;
		for (size_t k = 0; k < n_first; k++)
			dup |= firsts[k] == f->n.first;
		if (!dup)
			firsts[n_first++] = f->n.first;
		for (size_t j = 0; j < f->n_ids; j++) {
			char t[32];
			int p, k;
			assert_int_equal(sscanf(f->ids[j], "%31[a-z]-%d-%d", t, &p, &k), 3);
			assert_true(k >= 0 && k < n);
			/* the offset of event k is k: it must lie in the file's range */
			assert_true((uint64_t)k >= f->n.first && (uint64_t)k <= f->n.last);
			seen[k]++;
		}
	}
	for (int k = 0; k < n; k++)
		if (seen[k] != 1)
			fail_msg("%s/%d: record %d archived %d times", topic, part, k, seen[k]);
	/* rolls: same-first files share last; ranges contiguous from 0 */
	qsort(firsts, n_first, sizeof *firsts, cmp_u64);
	uint64_t expect = 0;
	for (size_t r = 0; r < n_first; r++) {
		assert_int_equal(firsts[r], expect);
		uint64_t last = UINT64_MAX;
		for (size_t i = 0; i < a->n; i++) {
			const struct file *f = &a->f[i];
			if (f->n.partition != part || strcmp(f->n.topic, topic) || f->n.first != firsts[r])
				continue;
			if (last != UINT64_MAX)
				assert_int_equal(f->n.last, last); /* every day file of a roll: one range */
			last = f->n.last;
		}
		expect = last + 1;
	}
	assert_int_equal(expect, (uint64_t)n);
	free(seen);
	free(firsts);
	return n_first;
}

/* ---- tests --------------------------------------------------------------- */

static void test_naming(void **state)
{
	(void)state;
	char buf[TL_ARCHIVE_NAME_MAX];
	struct tl_archive_name n = {.topic = "events", .partition = 3, .first = 1200, .last = 4711}, m;
	int len = tl_archive_name_format(&n, buf, sizeof buf);
	assert_true(len > 0);
	assert_string_equal(buf, "events-p3-00000000000000001200-00000000000000004711.ndjson.zst");
	assert_int_equal(tl_archive_name_parse(buf, &m), 0);
	assert_string_equal(m.topic, "events");
	assert_int_equal(m.partition, 3);
	assert_int_equal(m.first, 1200);
	assert_int_equal(m.last, 4711);
	assert_int_equal(tl_archive_name_parse("delivery-p0-5-9.ndjson.zst", &m), 0);
	assert_int_equal(m.last, 9);
	/* not archive files: temporaries, reversed ranges, other suffixes */
	assert_int_not_equal(tl_archive_name_parse(".events-p3-00000000000000001200.ndjson.zst.tmp", &m), 0);
	assert_int_not_equal(tl_archive_name_parse("events-p3-9-5.ndjson.zst", &m), 0);
	assert_int_not_equal(tl_archive_name_parse("events-p3-5-9.ndjson", &m), 0);
	assert_int_not_equal(tl_archive_name_parse("events-3-5-9.ndjson.zst", &m), 0);
	assert_int_not_equal(tl_archive_name_parse("Events-p3-5-9.ndjson.zst", &m), 0);
	assert_int_not_equal(tl_archive_name_parse("events-p3-5-99999999999999999999999.ndjson.zst", &m), 0);
	n.first = 5;
	n.last = 4;
	assert_true(tl_archive_name_format(&n, buf, sizeof buf) < 0);

	int64_t day;
	assert_true(tl_archive_day_format(D0, buf, sizeof buf) > 0);
	assert_string_equal(buf, "dt=2025-12-03");
	assert_int_equal(tl_archive_day_parse("dt=2025-12-03", &day), 0);
	assert_int_equal(day, D0);
	assert_int_not_equal(tl_archive_day_parse("dt=2025-02-30", &day), 0);
	assert_int_not_equal(tl_archive_day_parse("dt=2025-12-3", &day), 0);
	assert_int_not_equal(tl_archive_day_parse("2025-12-03", &day), 0);
	assert_int_equal(tl_archive_day_of(D0 * DAY_MS), D0);
	assert_int_equal(tl_archive_day_of(D0 * DAY_MS - 1), D0 - 1);
	assert_int_equal(tl_archive_day_of(-1), -1);
}

/* Records of three days interleaved by offset, small rolls: every record in
 * one file of its day; the day files of a roll share its range. */
static void test_rolls_and_days(void **state)
{
	struct ctx *c = *state;
	for (int p = 0; p < P; p++) {
		append(c, TL_TOPIC_EVENTS, p, 0, 700, 3);
		append(c, TL_TOPIC_DELIVERY, p, 0, 300, 2);
	}
	struct tl_archiver_opts o;
	opts(c, &o, 20000, 100); /* ~20 kB rolls: several per partition */
	struct runner r = {0};
	start(&r, &o);
	wait_committed(c, r.a);
	stop(&r);
	struct arch a;
	load(c, &a);
	assert_int_equal(a.tmps, 0);
	size_t rolls = 0;
	for (int p = 0; p < P; p++) {
		rolls += check_partition(&a, TL_TOPIC_EVENTS, p, 700);
		check_partition(&a, TL_TOPIC_DELIVERY, p, 300);
	}
	assert_true(rolls >= 2 * P); /* size rolls happened */
	/* a roll of `events` has one file per day: three */
	size_t three = 0;
	for (size_t i = 0; i < a.n; i++) {
		size_t same = 0;
		for (size_t j = 0; j < a.n; j++)
			same += a.f[j].n.first == a.f[i].n.first &&
			        a.f[j].n.partition == a.f[i].n.partition &&
			        !strcmp(a.f[j].n.topic, a.f[i].n.topic);
		three += same == 3;
	}
	assert_true(three > 0);
	arch_free(&a);
}

/* The time roll: with a short interval, a roll is committed without any size
 * reached, while the archiver keeps running. */
static void test_time_roll(void **state)
{
	struct ctx *c = *state;
	append(c, TL_TOPIC_EVENTS, 0, 0, 10, 1);
	struct tl_archiver_opts o;
	opts(c, &o, 1 << 30, 50);
	struct runner r = {0};
	start(&r, &o);
	wait_committed(c, r.a); /* would time out without the time roll */
	append(c, TL_TOPIC_EVENTS, 0, 10, 10, 1);
	wait_committed(c, r.a);
	stop(&r);
	struct arch a;
	load(c, &a);
	size_t rolls = check_partition(&a, TL_TOPIC_EVENTS, 0, 20);
	arch_free(&a);
	assert_true(rolls >= 2); /* the first ten were committed before the rest came */
}

/* Exactly once over clean restarts, with more records in between. */
static void test_restart(void **state)
{
	struct ctx *c = *state;
	struct tl_archiver_opts o;
	opts(c, &o, 8000, 100);
	int n = 0;
	for (int round = 0; round < 3; round++) {
		for (int p = 0; p < P; p++) {
			append(c, TL_TOPIC_EVENTS, p, n, 150, 2);
			append(c, TL_TOPIC_DELIVERY, p, n, 150, 2);
		}
		n += 150;
		struct runner r = {0};
		start(&r, &o);
		wait_committed(c, r.a);
		stop(&r);
	}
	struct arch a;
	load(c, &a);
	for (int p = 0; p < P; p++) {
		check_partition(&a, TL_TOPIC_EVENTS, p, n);
		check_partition(&a, TL_TOPIC_DELIVERY, p, n);
	}
	arch_free(&a);
}

/* The archiver in a child process, killed with SIGKILL while rolls are open
 * (their temporaries on disk): a new archiver deletes the temporaries,
 * resumes after the committed rolls and ends with every record once. */
static void test_kill9(void **state)
{
	struct ctx *c = *state;
	for (int p = 0; p < P; p++) {
		append(c, TL_TOPIC_EVENTS, p, 0, 900, 2);
		append(c, TL_TOPIC_DELIVERY, p, 0, 400, 2);
	}
	int pipefd[2];
	assert_int_equal(pipe(pipefd), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* child: its own read-only stream; rolls of ~30 kB, never by time */
		close(pipefd[0]);
		struct tl_stream_opts so;
		tl_stream_opts_defaults(&so);
		so.read_only = 1;
		struct tl_stream *s;
		if (tl_stream_open(c->uri, &so, &s))
			_exit(2);
		struct tl_archiver_opts o = {.stream = s,
		                             .dir = c->arch,
		                             .partitions = (1u << P) - 1,
		                             .roll_bytes = 30000,
		                             .roll_interval_ms = 600000,
		                             .batch_max = 16};
		struct runner r = {0};
		if (tl_archiver_create(&o, &r.a) || pthread_create(&r.th, NULL, run_main, &r))
			_exit(3);
		/* tell the parent once a roll is committed on every partition */
		for (;;) {
			bool all = true;
			for (int p = 0; p < P; p++) {
				uint64_t next;
				if (tl_archiver_committed(r.a, TL_TOPIC_EVENTS, p, &next))
					_exit(4);
				all &= next > 0;
			}
			if (all)
				break;
			sleep_ms(1);
		}
		if (write(pipefd[1], "x", 1) != 1)
			_exit(5);
		for (;;)
			pause();
	}
	close(pipefd[1]);
	char x;
	assert_int_equal(read(pipefd[0], &x, 1), 1);
	close(pipefd[0]);
	kill(pid, SIGKILL);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));

	/* the child left the rolls it was writing as temporaries */
	struct arch a;
	load(c, &a);
	assert_true(a.tmps > 0);
	arch_free(&a);

	struct tl_archive_recovery rec;
	assert_int_equal(tl_archive_recover(c->arch, TL_TOPIC_EVENTS, 0, &rec), 0);
	assert_true(rec.next > 0 && rec.next < 900);

	struct tl_archiver_opts o;
	opts(c, &o, 30000, 100);
	struct runner r = {0};
	start(&r, &o);
	wait_committed(c, r.a);
	stop(&r);
	load(c, &a);
	assert_int_equal(a.tmps, 0);
	for (int p = 0; p < P; p++) {
		check_partition(&a, TL_TOPIC_EVENTS, p, 900);
		check_partition(&a, TL_TOPIC_DELIVERY, p, 400);
	}
	arch_free(&a);
}

/* Renames a final file back to its temporary name (a crash between the
 * renames of one roll, or before them). */
static void unrename(struct ctx *c, const struct file *f)
{
	char from[512], to[512], name[TL_ARCHIVE_NAME_MAX];
	assert_true(tl_archive_name_format(&f->n, name, sizeof name) > 0);
	snprintf(from, sizeof from, "%s/dt=%s/%s", c->arch, f->day, name);
	snprintf(to, sizeof to, "%s/dt=%s/.%s-p%d-%020llu.ndjson.zst.tmp", c->arch, f->day, f->n.topic,
	         f->n.partition, (unsigned long long)f->n.first);
	assert_int_equal(rename(from, to), 0);
}

/* A roll whose renames were cut short: recovery finishes the renames (the
 * other files of the roll are visible, so its temporaries were complete). A
 * roll none of whose files was renamed: recovery deletes the temporaries
 * and the archiver writes those records again. Either way, exactly once. */
static void test_partial_commit(void **state)
{
	struct ctx *c = *state;
	append(c, TL_TOPIC_EVENTS, 0, 0, 400, 2);
	struct tl_archiver_opts o;
	opts(c, &o, 10000, 100);
	o.partitions = 1;
	struct runner r = {0};
	start(&r, &o);
	wait_committed(c, r.a);
	stop(&r);
	struct arch a;
	load(c, &a);
	size_t rolls = check_partition(&a, TL_TOPIC_EVENTS, 0, 400);
	assert_true(rolls >= 3);
	/* the last roll (highest first) and one earlier two-day roll */
	uint64_t last_first = 0, mid_first = UINT64_MAX;
	for (size_t i = 0; i < a.n; i++)
		if (a.f[i].n.first > last_first)
			last_first = a.f[i].n.first;
	for (size_t i = 0; i < a.n; i++)
		if (a.f[i].n.first < last_first && a.f[i].n.first > 0)
			mid_first = a.f[i].n.first;
	assert_int_not_equal(mid_first, UINT64_MAX);
	bool one = false;
	for (size_t i = 0; i < a.n; i++) {
		if (a.f[i].n.first == last_first)
			unrename(c, &a.f[i]); /* nothing of the last roll visible */
		else if (a.f[i].n.first == mid_first && !one) {
			unrename(c, &a.f[i]); /* one of its two files still a temporary */
			one = true;
		}
	}
	arch_free(&a);

	struct tl_archive_recovery rec;
	assert_int_equal(tl_archive_recover(c->arch, TL_TOPIC_EVENTS, 0, &rec), 0);
	assert_int_equal(rec.rolled_forward, 1);
	assert_true(rec.deleted >= 1);
	assert_int_equal(rec.next, last_first); /* resumes where the deleted roll began */

	start(&r, &o);
	wait_committed(c, r.a);
	stop(&r);
	load(c, &a);
	assert_int_equal(a.tmps, 0);
	check_partition(&a, TL_TOPIC_EVENTS, 0, 400);
	arch_free(&a);
}

/* A second archiver on the same partitions is refused. */
static void test_lock(void **state)
{
	struct ctx *c = *state;
	struct tl_archiver_opts o;
	opts(c, &o, 0, 0);
	struct tl_archiver *a, *b;
	assert_int_equal(tl_archiver_create(&o, &a), 0);
	assert_int_equal(tl_archiver_create(&o, &b), -TL_ELOCKED);
	tl_archiver_destroy(a);
	assert_int_equal(tl_archiver_create(&o, &b), 0);
	tl_archiver_destroy(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_naming),
	    cmocka_unit_test_setup_teardown(test_rolls_and_days, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_time_roll, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_restart, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_kill9, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_partial_commit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_lock, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
