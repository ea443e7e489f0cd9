/* archive.h — the archiver role: every raw event of `events` and `delivery`
 * as canonical NDJSON, zstd-compressed, under <dir>/dt=YYYY-MM-DD/
 * (DESIGN.md §1, §3). The files are plain data: zstdcat, DuckDB, Spark and
 * Athena read them as they are.
 *
 * Layout. A record goes to the directory of the UTC day of its event time
 * (`ts`), so late events land in their event day. Per partition the archiver
 * writes "rolls": a roll covers the stream offsets first..last of ONE
 * partition of one topic, and holds one file per event day it met:
 *
 *     dt=2026-12-03/events-p3-00000000000000001200-00000000000000004711.ndjson.zst
 *     dt=2026-12-02/events-p3-00000000000000001200-00000000000000004711.ndjson.zst
 *
 * Every file of a roll carries the roll's range in its name; together they
 * hold each (decodable) record of first..last exactly once, each file the
 * records of its day in offset order. Ranges of one partition never overlap.
 *
 * Exactly once across kill -9. All the files of a partition's roll are
 * committed together: each is written to a hidden temporary
 * `.<topic>-p<P>-<first>.ndjson.zst.tmp` in its day directory, fsynced, the
 * day directories fsynced, and only then is each renamed to its final name
 * (and the directories fsynced again). On start, recovery looks at every
 * temporary: if some file of the same roll (same first) already has its final
 * name, every temporary of the roll was complete before the first rename, so
 * the rename is finished (rolled forward); otherwise the temporary is deleted
 * and its records are read again. The archiver then resumes each partition at
 * (highest `last` among its final files) + 1, which is right because a roll
 * is either wholly visible or not at all.
 *
 * Roll policy: a partition's roll is committed when its uncompressed size
 * reaches roll_bytes, when it is roll_interval_ms old, when it would need more
 * than max_open_days day files, and on stop. Each roll of a partition starts
 * where the previous one ended; one record goes to exactly one file.
 *
 * Threading: tl_archiver_run blocks the calling thread; tl_archiver_stop and
 * tl_archiver_metrics may be called from any thread. The naming and recovery
 * functions are pure library code (no logging) for any thread. */
#ifndef TL_ARCHIVE_H
#define TL_ARCHIVE_H

#include "core/buf.h"
#include "core/err.h"
#include "stream/stream.h"

#include <stddef.h>
#include <stdint.h>

/* ---- naming -------------------------------------------------------------- */

#define TL_ARCHIVE_NAME_MAX 128
#define TL_ARCHIVE_TOPIC_MAX 32

/* One archive file: a roll of (topic, partition) covering offsets first..last. */
struct tl_archive_name {
	char topic[TL_ARCHIVE_TOPIC_MAX];
	int partition;
	uint64_t first, last;
};

/* Writes "<topic>-p<partition>-<first>-<last>.ndjson.zst" (offsets zero-padded
 * to 20 digits so that names sort by offset) into buf. Returns the length, or
 * -TL_EINVAL when it does not fit or the topic is not [a-z0-9_]+. */
int tl_archive_name_format(const struct tl_archive_name *n, char *buf, size_t cap) TL_MUST_CHECK;

/* Parses a final file name (not a temporary). 0 or -TL_EINVAL. */
int tl_archive_name_parse(const char *name, struct tl_archive_name *out) TL_MUST_CHECK;

/* "dt=YYYY-MM-DD" of a day number (days since 1970-01-01) into buf. Returns
 * the length or -TL_EINVAL. */
int tl_archive_day_format(int64_t day, char *buf, size_t cap) TL_MUST_CHECK;

/* Parses "dt=YYYY-MM-DD" (exactly) into a day number. 0 or -TL_EINVAL. */
int tl_archive_day_parse(const char *s, int64_t *day) TL_MUST_CHECK;

/* Day number of an event time in ms (UTC, floored). */
int64_t tl_archive_day_of(int64_t ts_ms);

/* ---- recovery ------------------------------------------------------------ */

struct tl_archive_recovery {
	uint64_t next;         /* offset to resume at: highest committed last + 1, 0 when none */
	size_t rolled_forward; /* temporaries of a partly renamed roll that were renamed */
	size_t deleted;        /* temporaries of an uncommitted roll that were deleted */
};

/* Scans every day directory of dir for the files of (topic, partition),
 * finishes or removes the temporaries as described above and reports where
 * to resume. The caller must hold the partition's lock (tl_archiver_create
 * takes it). 0 or a negative error (-TL_EIO …). */
int tl_archive_recover(const char *dir, const char *topic, int partition,
                       struct tl_archive_recovery *out) TL_MUST_CHECK;

/* ---- the role ------------------------------------------------------------ */

struct tl_archiver;

struct tl_archiver_opts {
	struct tl_stream *stream; /* not owned */
	const char *dir;          /* archive root, created if missing */
	uint64_t partitions;      /* owned partitions (bit mask) of `events` and `delivery` */
	int64_t roll_bytes;       /* uncompressed bytes per partition roll, default 64 MiB */
	int64_t roll_interval_ms; /* longest a roll stays open, default 60 s */
	int zstd_level;           /* default 1: fast, and NDJSON still shrinks ~6x */
	size_t max_open_days;     /* day files one roll may hold, default 16 */
	size_t batch_max;         /* records per poll, default 4096 */
};

/* Creates the archiver: creates dir, takes an exclusive lock per owned
 * (topic, partition) (-TL_ELOCKED when another archiver holds one) and runs
 * recovery. The consumer opens in tl_archiver_run. */
int tl_archiver_create(const struct tl_archiver_opts *o, struct tl_archiver **out) TL_MUST_CHECK;

/* Archives until stopped; commits every open roll before returning. On a
 * write error (disk full, I/O) it drops the open rolls, waits with backoff
 * and re-reads from the last committed offsets. Returns 0, or an error that
 * needs an operator (a corrupt stream). */
int tl_archiver_run(struct tl_archiver *a);
void tl_archiver_stop(struct tl_archiver *a);
void tl_archiver_destroy(struct tl_archiver *a); /* NULL-safe; releases the locks */

/* Offset the archiver resumes at / has committed up to (next) for one
 * partition of topic; -TL_ENOTFOUND when not owned. Any thread. */
int tl_archiver_committed(struct tl_archiver *a, const char *topic, int partition,
                          uint64_t *next) TL_MUST_CHECK;

/* Prometheus text: records, files, rolls, bytes, undecodable, errors, recoveries,
 * and the lag (records not yet in a committed roll) per partition. Any thread. */
int tl_archiver_metrics(struct tl_archiver *a, struct tl_buf *out) TL_MUST_CHECK;

#endif
