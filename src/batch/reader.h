/* reader.h — the archive reader: which files hold a range of days, their
 * zstd-compressed NDJSON lines, and events parsed from those lines.
 *
 * The archive layout is the archiver's (pipeline/archive.h). Lines are parsed
 * by tl_batch_parse_line: a fast path for the canonical form the archiver
 * writes (tl_event_to_json: one object, no whitespace, ASCII strings without
 * escapes, known keys once each) that yields exactly what
 * tl_event_from_json would, and tl_event_from_json itself for anything else.
 * tests/unit/test_batch.c checks the two against each other.
 *
 * Library code: no logging. Listing and parsing are thread-safe; a reader
 * belongs to one thread. */
#ifndef TL_BATCH_READER_H
#define TL_BATCH_READER_H

#include "core/arena.h"
#include "event/event.h"
#include "pipeline/archive.h"

#include <stddef.h>
#include <stdint.h>

struct tl_archive_file {
	char *path;  /* owned */
	int64_t day; /* of the directory it sits in */
	struct tl_archive_name name;
	uint64_t size; /* compressed bytes */
};

/* Lists the archive files of days from_day..to_day (inclusive) under dir,
 * in order of (day, topic, partition, first offset). Temporaries and unknown
 * names are ignored.
 * *out is freed with tl_archive_files_free. 0, or a negative error
 * (a missing day directory is not one: that day simply has no files). */
int tl_archive_files_list(const char *dir, int64_t from_day, int64_t to_day, struct tl_archive_file **out,
                          size_t *n) TL_MUST_CHECK;
void tl_archive_files_free(struct tl_archive_file *f, size_t n);

/* Days (sorted, distinct) that have a dt=… directory under dir, within
 * from_day..to_day. *out is malloc'd. */
int tl_archive_days_list(const char *dir, int64_t from_day, int64_t to_day, int64_t **out,
                         size_t *n) TL_MUST_CHECK;

struct tl_archive_reader;

/* Opens one archive file for reading its lines. */
int tl_archive_reader_open(const char *path, struct tl_archive_reader **out) TL_MUST_CHECK;

/* Switches r to another file, keeping its buffers (one reader per thread
 * reads many files without allocating). */
int tl_archive_reader_reopen(struct tl_archive_reader *r, const char *path) TL_MUST_CHECK;

/* The next line (without its newline) in line and len, valid until the next
 * call. Returns 1 for a line, 0 at the end of the file, -TL_ECORRUPT for a
 * damaged or truncated zstd frame, -TL_ETOOBIG for a line over 1 MiB,
 * -TL_EIO. */
int tl_archive_reader_next(struct tl_archive_reader *r, const char **line, size_t *len) TL_MUST_CHECK;

/* Compressed bytes consumed so far (for progress). */
uint64_t tl_archive_reader_offset(const struct tl_archive_reader *r);

void tl_archive_reader_close(struct tl_archive_reader *r); /* NULL-safe */

/* Parses one archive line into ev. The fast path leaves ev's strings
 * pointing into line; the fallback copies them into a (so both must outlive
 * ev). Returns what tl_event_from_json returns, with its reason in err. */
int tl_batch_parse_line(const char *line, size_t len, struct tl_arena *a, struct tl_event *ev, char *err,
                        size_t errlen) TL_MUST_CHECK;

/* The fast path alone: 0 when the line is in canonical form and valid (ev
 * then equals what tl_event_from_json gives), 1 when it must go to the
 * full parser. Exposed for tests. */
int tl_batch_parse_fast(const char *line, size_t len, struct tl_event *ev);

#endif
