/* file_int.h — internals of the embedded `file:` stream backend, shared by
 * file.c (stream, topics, appends, recovery), file_writer.c (batches,
 * writer threads, retention), file_segment.c (frames, segments, recovery
 * scan, durable-position file) and file_consumer.c.
 * Nothing outside src/stream/file*.c includes this.
 *
 * On-disk layout under <dir>:
 *   <topic>/.lock                    flock'ed by the one process writing the
 *                                    topic; holds its pid (for messages)
 *   <topic>/meta                     "partitions=N\n", written to a temporary
 *                                    file and linked in (first creator wins)
 *   <topic>/<p>/<20-digit base>.seg  segments; a segment's name is the offset
 *                                    of its first record
 *   <topic>/<p>/durable              TLF_DURABLE_SIZE bytes: the partition's
 *                                    durable end, published by the writer
 *                                    (pwrite, so inotify sees it) after each
 *                                    fdatasync; readers in other processes
 *                                    read it and never go past it.
 *   <topic>/<p>/flush                empty or 1 byte, resized before the
 *                                    fdatasync that flushes the disk where
 *                                    ext4 has no journal (tlf_device_flush)
 *
 * Frame (little-endian), TLF_FRAME_HDR bytes of header then key then value:
 *   0 u32 crc32c of bytes [4, frame_len)
 *   4 u32 frame_len (header + key + value)
 *   8 u64 offset
 *  16 i64 ts_ms
 *  24 u32 key_len
 */
#ifndef TL_STREAM_FILE_INT_H
#define TL_STREAM_FILE_INT_H

#include "stream/file.h"
#include "stream/stream.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TLF_FRAME_HDR 28u
#define TLF_MAX_RECORD (16u << 20) /* key + value bytes of one record */
#define TLF_MAX_FRAME (TLF_FRAME_HDR + TLF_MAX_RECORD)
#define TLF_DURABLE_SIZE 40
#define TLF_SEG_NAME_LEN 24 /* 20 digits + ".seg" */
#define TLF_NONE UINT64_MAX
#define TLF_MAX_TOPICS 64
#define TLF_TOPIC_NAME_MAX 100
#define TLF_DURABLE_CLEAN 1u

/* ---- crc32c.c ---- */

/* CRC-32C (Castagnoli) of n bytes, continuing from crc (0 to start).
 * Uses the SSE4.2 instruction when the CPU has it. Any thread. */
uint32_t tlf_crc32c(uint32_t crc, const void *p, size_t n);

/* ---- file_segment.c: frames ---- */

struct tlf_frame {
	uint64_t offset;
	int64_t ts_ms;
	const uint8_t *key;
	uint32_t key_len;
	const uint8_t *value;
	uint32_t value_len;
	uint32_t frame_len;
};

enum tlf_decode { TLF_OK = 0, TLF_SHORT = 1, TLF_BAD = 2 };

/* Bytes one record takes on disk. */
static inline size_t tlf_frame_size(uint32_t key_len, uint32_t value_len)
{
	return (size_t)TLF_FRAME_HDR + key_len + value_len;
}

/* Writes one frame to dst (tlf_frame_size bytes). */
void tlf_frame_encode(uint8_t *dst, uint64_t offset, int64_t ts_ms, const void *key, uint32_t key_len,
                      const void *value, uint32_t value_len);

/* Decodes the frame at p (avail bytes readable). TLF_OK fills f; TLF_SHORT
 * means more bytes are needed and sets *need to the total the frame needs
 * (header first, then the whole frame); TLF_BAD means the bytes are not a
 * frame (bad length or checksum). */
enum tlf_decode tlf_frame_decode(const uint8_t *p, size_t avail, struct tlf_frame *f, size_t *need);

/* ---- file_segment.c: segment files ---- */

/* Writes "<20-digit base>.seg" + NUL into out (>= TLF_SEG_NAME_LEN + 1). */
void tlf_seg_name(char *out, size_t cap, uint64_t base);

/* Parses a segment file name; 0 or -TL_EINVAL. */
int tlf_seg_parse(const char *name, uint64_t *base);

/* Lists the segment bases of partition directory pdir, ascending, into a
 * malloc'ed array (*out, caller frees; NULL when *n == 0). A missing
 * directory is an empty list. 0 or negative error. */
int tlf_seg_list(const char *pdir, uint64_t **out, size_t *n);

/* Result of scanning a segment's bytes (recovery, tl_stream_last, fuzzing). */
struct tlf_scan {
	uint64_t valid_end;   /* bytes to keep: end of the last valid frame (0 if none) */
	uint64_t next_offset; /* offset after the last valid frame (base if none) */
	uint64_t last_pos;    /* byte position of the last valid frame, TLF_NONE if none */
	uint64_t nframes;     /* valid frames seen */
	int corrupt;          /* 1: an invalid region is followed by valid frames */
	uint64_t corrupt_pos; /* byte position of the first invalid region */
	/* When corrupt: whether that first region holds a whole 512-byte
	 * sector of zeros (what a write torn by a crash leaves: sectors that
	 * never reached the disk read as zeros in preallocated space), and the
	 * scan's state where the region starts (what to keep if it was one). */
	int hole_zero_sector;
	uint64_t hole_next_offset, hole_last_pos;
};

/* Scans len bytes of a segment whose first record has offset base. Frames
 * must carry consecutive offsets from base. An invalid frame with no valid
 * frame anywhere after it is a torn tail (valid_end stops before it); an
 * invalid frame followed by a valid one is corruption in the middle: it is
 * reported (corrupt = 1) and the scan goes on from the valid frame. Pure
 * function: reads only data[0, len). */
void tlf_scan_mem(const uint8_t *data, size_t len, uint64_t base, struct tlf_scan *out);

/* Maps and scans the segment file open on fd (size bytes). 0 or error. */
int tlf_scan_fd(int fd, uint64_t size, uint64_t base, struct tlf_scan *out);

/* ---- file_segment.c: durable-position file ---- */

struct tlf_durable {
	uint64_t end;      /* offset the next record will get = count of durable records */
	uint64_t seg_base; /* base of the active segment */
	uint64_t seg_pos;  /* durable bytes of the active segment */
	uint64_t last_pos; /* position of the last durable frame in the active segment, TLF_NONE if none */
	uint32_t flags;    /* TLF_DURABLE_CLEAN after a clean close */
};

void tlf_durable_encode(uint8_t out[TLF_DURABLE_SIZE], const struct tlf_durable *d);

/* 0, or -TL_ECORRUPT when the checksum does not match (torn read). */
int tlf_durable_decode(const uint8_t in[TLF_DURABLE_SIZE], struct tlf_durable *d);

/* Reads the durable file open on fd: 0, -TL_ENOTFOUND when it is short
 * (not written yet), -TL_ECORRUPT when it never reads consistently. */
int tlf_durable_read(int fd, struct tlf_durable *d);

/* Reads the record at byte pos of the segment open on fd into rec/storage
 * (as tl_stream_last). 0, -TL_ECORRUPT, -TL_EIO, -TL_ENOMEM. */
int tlf_read_record_at(int fd, uint64_t pos, struct tl_record *rec, struct tl_buf *storage);

/* fsync of a directory; 0 or negative error. */
int tlf_fsync_dir(const char *path);

/* snprintf that reports truncation: 0 or -TL_ETOOBIG. */
int tlf_path(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- file.c: stream, topics, partitions ---- */

/* One append call waiting to become durable. */
struct tlf_cb {
	tl_stream_done_fn done;
	void *arg;
	uint64_t first; /* offset of its first record */
	uint32_t nrec;
	uint32_t last_rel; /* position of its last frame inside its bytes */
	size_t bytes;      /* encoded bytes */
};

/* Encoded frames plus the calls they belong to, in order. */
struct tlf_batch {
	uint8_t *data;
	size_t len, cap;
	struct tlf_cb *cbs;
	size_t ncb, cbcap;
};

struct tlf_topic;
struct tlf_stream;

struct tlf_part {
	struct tlf_topic *t;
	int idx;
	char *path; /* <dir>/<topic>/<p> */

	pthread_mutex_t mu; /* guards the fields down to in_flight */
	struct tlf_batch pending;
	uint64_t next_offset;   /* offset the next append gets */
	struct tlf_durable dur; /* what readers may see */
	int queued;             /* on the stream's ready list */
	int in_flight;          /* a thread owns the write-side fields */
	pthread_cond_t idle;    /* broadcast when in_flight clears */

	/* writer side: touched only by the writer thread that set in_flight
	 * (or by open/close when no writer runs) */
	struct tlf_batch flush;
	int seg_fd;
	int dir_fd;
	int dur_fd;
	int tail_dirty;      /* bytes past the durable end could not be truncated */
	uint64_t alloc_end;  /* size of the active segment file (preallocated past seg_pos) */
	uint64_t meta_end;   /* bytes of the active segment allocated, written and synced:
	                      * a write below it is a pure overwrite (no metadata) */
	int overwrite_flush; /* the partition's filesystem makes such an overwrite durable
	                      * once written back and followed by a device cache flush
	                      * (TLF_FLUSH_ANY, TLF_FLUSH_DIRTY; 0: no) */
	int flush_fd;        /* TLF_FLUSH_DIRTY: <p>/flush, resized to flush the device */
	int flush_size;      /* its size now, 0 or 1 */
	dev_t dev;           /* the partition directory's device */
	uint64_t *segs;      /* bases, ascending; the last is active */
	size_t nsegs, segcap;
	struct tlf_part *next_ready;
};

struct tlf_topic {
	char name[TLF_TOPIC_NAME_MAX + 1];
	int nparts;
	struct tlf_part *parts;
	int lock_fd;          /* this stream writes the topic: its flock'ed .lock, else -1 */
	_Atomic int writable; /* set (release) once lock_fd is held and every partition is open */
};

struct tlf_stream {
	struct tl_stream base;
	struct tl_stream_opts opts;
	char *dir;
	int read_only; /* no appends, no locks */
	int write_all; /* write_topics was NULL: every topic loaded is locked and written */

	pthread_mutex_t topics_mu;
	struct tlf_topic *topics[TLF_MAX_TOPICS];
	_Atomic size_t ntopics;

	/* writer threads */
	pthread_mutex_t wmu;
	pthread_cond_t wcond;
	struct tlf_part *ready_head, *ready_tail;
	int stop;
	int nwriters;
	pthread_t writers[8];
	_Atomic int64_t pending_bytes;
	struct tl_file_hooks hooks;
	int64_t next_retention_ms;

	/* in-process publication: consumers wait on pub_cond for pub_gen to move */
	pthread_mutex_t pub_mu;
	pthread_cond_t pub_cond;
	_Atomic uint64_t pub_gen;
};

/* Finds topic name (loading it from disk, creating it when missing and the
 * directory is writable; locked for writing when the stream writes every
 * topic). *out is valid until the stream closes. 0, -TL_ENOTFOUND (the
 * topic does not exist and cannot be created), -TL_EINVAL (bad name),
 * -TL_ELOCKED, … */
int tlf_topic_get(struct tlf_stream *s, const char *name, struct tlf_topic **out);

/* Whether this stream writes t (its partitions' in-memory views are the truth). */
static inline int tlf_topic_writable(struct tlf_topic *t)
{
	return atomic_load_explicit(&t->writable, memory_order_acquire);
}

#define TLF_RETENTION_EVERY_MS 60000 /* periodic retention check */

/* ---- file_writer.c: batches, writer threads, retention ---- */

/* Makes room in b for one more call of `bytes` encoded bytes. 0 or
 * -TL_ENOMEM. Caller holds the partition's mutex. */
int tlf_batch_reserve(struct tlf_batch *b, size_t bytes);

/* Frees b's memory and empties it. Caller owns b (the partition's mutex
 * for its pending batch, its write side for the one being flushed). */
void tlf_batch_free(struct tlf_batch *b);

/* Rewrites p's durable file with d (one pwrite, not synced: recovery
 * rebuilds it). Caller owns p's write side. */
void tlf_durable_write(struct tlf_part *p, const struct tlf_durable *d);

/* Puts p on s's ready list and wakes a writer. Caller set p->queued. */
void tlf_kick(struct tlf_stream *s, struct tlf_part *p);

/* Appends base to p's list of segment bases. 0 or -TL_ENOMEM. Caller owns
 * p's write side. */
int tlf_segs_push(struct tlf_part *p, uint64_t base);

/* Creates the empty segment named base in p's directory, its entry made
 * durable; *fd_out open for writing, owned by the caller. 0 or a negative
 * error. Caller owns p's write side. */
int tlf_seg_create(struct tlf_part *p, uint64_t base, int *fd_out);

/* Deletes p's oldest segments past the stream's retention, never the
 * active one. Caller owns p's write side. */
void tlf_part_retention(struct tlf_stream *s, struct tlf_part *p);

/* Runs retention on every partition s writes, taking each one's write
 * side in turn. Any thread but one holding a partition's write side. */
void tlf_retention_all(struct tlf_stream *s);

/* A device cache flush through partition p's filesystem, after which the
 * writes completed before it are durable: an fdatasync of the active
 * segment (nothing left to write in it) where a journal makes that flush
 * the device (TLF_FLUSH_ANY); otherwise of p's flush file after a change
 * of its size, since ext4 without a journal (Linux 5.x to 6.4) skips the
 * flush for an inode with nothing to write. h: the I/O hooks. 0 or a
 * negative error. Caller owns p's write side (a writer thread, or open). */
int tlf_device_flush(const struct tl_file_hooks *h, struct tlf_part *p);

/* A writer thread of s (pthread start routine): group commits of the
 * partitions on the ready list, periodic retention; returns once s->stop
 * is set and the list is empty. */
void *tlf_writer_main(void *arg);

/* The durable view of a writer stream's partition (in-memory copy). */
void tlf_part_view(struct tlf_part *p, struct tlf_durable *d);

/* Whether the filesystem holding the directory dir_fd makes an overwrite of
 * allocated, written and synced blocks durable once it is written back and
 * followed by a device cache flush, so that one flush serves the groups of
 * many partitions: ext2/3/4 when neither the mount (data=journal) nor the
 * directory (chattr +j) journals file data. Not XFS or btrfs, where an
 * overwrite of a shared (reflinked) extent is a copy with metadata of its
 * own; nothing unknown. Returns 0 (no), TLF_FLUSH_ANY (a journal: an
 * fdatasync of any file flushes the device) or TLF_FLUSH_DIRTY (no journal,
 * or none that can be seen: Linux 5.x to 6.4 flushes the device there only
 * for an fdatasync of a file whose inode changed, so the flush goes through
 * a file resized for it). Sets *dev to the directory's device. Any thread. */
#define TLF_FLUSH_ANY 1
#define TLF_FLUSH_DIRTY 2
int tlf_fs_overwrite_flush(int dir_fd, dev_t *dev);

/* ---- file_consumer.c: the consumer half of tl_stream_file_ops ----
 * Same contracts as tl_consumer_open / _poll / _wakeup / _error_detail /
 * _close in stream.h. A consumer belongs to one thread (wakeup: any
 * thread); close every consumer before its stream. */
int tlf_consumer_open(struct tl_stream *s, const struct tl_subscription *subs, size_t n,
                      struct tl_consumer **out);
int tlf_consumer_poll(struct tl_consumer *c, struct tl_record *out, size_t max, int timeout_ms);
void tlf_consumer_wakeup(struct tl_consumer *c);
const char *tlf_consumer_error_detail(struct tl_consumer *c);
void tlf_consumer_close(struct tl_consumer *c);

#endif
