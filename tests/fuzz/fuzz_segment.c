/* fuzz_segment.c — the file backend's segment recovery and reading on
 * arbitrary bytes (src/stream/file_segment.c, file_consumer.c).
 *
 * The input is the content of a partition's segment 00000000000000000000.seg.
 * 1. tlf_scan_mem (what recovery runs): its result is self-consistent, and
 *    scanning the kept prefix again keeps all of it with the same frames.
 * 2. The segment is written to a log directory with the durable position
 *    recovery would publish, and a read-only consumer reads it: records come
 *    with consecutive offsets from 0 and each passes its check; without
 *    corruption in the middle every frame arrives and no error; with it, the
 *    consumer stops with -TL_ECORRUPT and a detail naming the segment.
 * 3. Every frame that scan accepted decodes again on its own. */
#include "core/buf.h"
#include "stream/file_int.h"
#include "stream/stream.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char root[64]; /* temporary log directory, made once per process */
static volatile uint8_t sink;

static void cleanup(void)
{
	const char *files[] = {"t/0/00000000000000000000.seg", "t/0/durable", "t/meta", NULL};
	char path[128];
	for (int i = 0; files[i]; i++) {
		snprintf(path, sizeof(path), "%s/%s", root, files[i]);
		unlink(path);
	}
	snprintf(path, sizeof(path), "%s/t/0", root);
	rmdir(path);
	snprintf(path, sizeof(path), "%s/t", root);
	rmdir(path);
	rmdir(root);
}

static int put_file(const char *rel, const void *p, size_t n)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/%s", root, rel);
	/* a new file each time: truncating one makes ext4 flush it on close */
	unlink(path);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
	if (fd < 0)
		return -1;
	ssize_t w = n ? write(fd, p, n) : 0;
	close(fd);
	return w == (ssize_t)n ? 0 : -1;
}

static int prepare(void)
{
	if (root[0])
		return 0;
	struct stat st;
	snprintf(root, sizeof(root), "%s/tl-fuzz-seg-XXXXXX",
	         stat("/dev/shm", &st) == 0 ? "/dev/shm" : "/tmp");
	if (!mkdtemp(root))
		return -1;
	atexit(cleanup);
	char path[128];
	snprintf(path, sizeof(path), "%s/t", root);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/t/0", root);
	mkdir(path, 0755);
	return put_file("t/meta", "partitions=1\n", 13);
}

static void check_scan(const uint8_t *data, size_t size, struct tlf_scan *sc)
{
	tlf_scan_mem(data, size, 0, sc);
	if (sc->valid_end > size || sc->next_offset < sc->nframes)
		abort();
	if (sc->nframes == 0 && (sc->last_pos != TLF_NONE || sc->valid_end != 0))
		abort();
	if (sc->nframes > 0 && sc->last_pos >= sc->valid_end)
		abort();
	if (sc->corrupt && sc->corrupt_pos >= sc->valid_end)
		abort();
	/* Recovery is idempotent: the kept prefix scans the same. */
	struct tlf_scan again;
	tlf_scan_mem(data, (size_t)sc->valid_end, 0, &again);
	if (again.valid_end != sc->valid_end || again.nframes != sc->nframes ||
	    again.next_offset != sc->next_offset || again.last_pos != sc->last_pos ||
	    again.corrupt != sc->corrupt)
		abort();
	/* The last frame decodes on its own and carries the last offset. */
	if (sc->nframes > 0) {
		struct tlf_frame f;
		size_t need;
		if (tlf_frame_decode(data + sc->last_pos, (size_t)(sc->valid_end - sc->last_pos), &f,
		                     &need) != TLF_OK ||
		    f.offset + 1 != sc->next_offset || sc->last_pos + f.frame_len != sc->valid_end)
			abort();
	}
}

static void check_consumer(const uint8_t *data, const struct tlf_scan *sc)
{
	if (put_file("t/0/00000000000000000000.seg", data, (size_t)sc->valid_end) != 0)
		return;
	struct tlf_durable d = {.end = sc->next_offset,
	                        .seg_base = 0,
	                        .seg_pos = sc->valid_end,
	                        .last_pos = sc->last_pos,
	                        .flags = 0};
	uint8_t db[TLF_DURABLE_SIZE];
	tlf_durable_encode(db, &d);
	if (put_file("t/0/durable", db, sizeof(db)) != 0)
		return;

	char uri[96];
	snprintf(uri, sizeof(uri), "file:%s", root);
	struct tl_stream_opts o;
	tl_stream_opts_defaults(&o);
	o.read_only = 1;
	struct tl_stream *s;
	if (tl_stream_open(uri, &o, &s) != 0)
		abort();
	struct tl_subscription sub = {"t", 0, 0};
	struct tl_consumer *c;
	if (tl_consumer_open(s, &sub, 1, &c) != 0)
		abort();
	struct tl_record recs[16];
	uint64_t next = 0;
	int rc;
	while ((rc = tl_consumer_poll(c, recs, 16, 0)) > 0) {
		for (int i = 0; i < rc; i++) {
			if (recs[i].offset != next++ || recs[i].partition != 0 || recs[i].sub != 0)
				abort();
			const uint8_t *k = recs[i].key, *v = recs[i].value;
			if ((recs[i].key_len && !k) || (recs[i].value_len && !v))
				abort();
			for (uint32_t j = 0; j < recs[i].key_len; j++) /* every byte readable (ASan) */
				sink ^= k[j];
			for (uint32_t j = 0; j < recs[i].value_len; j++)
				sink ^= v[j];
		}
	}
	if (sc->corrupt) {
		if (rc != -TL_ECORRUPT || next >= sc->nframes ||
		    !strstr(tl_consumer_error_detail(c), "t/0/00000000000000000000.seg"))
			abort();
	} else if (rc != 0 || next != sc->nframes) {
		abort();
	}
	if (sc->nframes > 0) {
		struct tl_buf storage;
		tl_buf_init(&storage, 0);
		struct tl_record last;
		if (tl_stream_last(s, "t", 0, &last, &storage) != 0 || last.offset + 1 != sc->next_offset)
			abort();
		tl_buf_free(&storage);
	}
	tl_consumer_close(c);
	tl_stream_close(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > (1u << 20))
		return 0;
	struct tlf_scan sc;
	check_scan(data, size, &sc);
	if (prepare() == 0)
		check_consumer(data, &sc);
	return 0;
}
