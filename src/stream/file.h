/* file.h — extras of the embedded `file:` stream backend beyond stream.h.
 *
 * Only tests, benchmarks and tools need this; roles use stream.h alone. */
#ifndef TL_STREAM_FILE_H
#define TL_STREAM_FILE_H

#include "core/err.h"

#include <stddef.h>
#include <sys/types.h>

struct tl_stream;

/* I/O the writer threads perform, replaceable to inject failures (ENOSPC,
 * EIO) in tests. Each returns like the system call (-1 and errno on error).
 * A NULL member means the real system call. */
struct tl_file_hooks {
	ssize_t (*pwrite)(void *ctx, int fd, const void *buf, size_t n, off_t off);
	int (*fdatasync)(void *ctx, int fd);
	void *ctx;
};

/* Installs hooks on a stream opened with "file:" for writing (NULL restores
 * the system calls). Call before appending or while no append is pending.
 * 0, or -TL_EINVAL when s is not a writable file stream. */
int tl_stream_file_set_hooks(struct tl_stream *s, const struct tl_file_hooks *hooks) TL_MUST_CHECK;

/* Runs retention now on every partition of the stream (normally done on
 * open, on every segment roll and once a minute) and waits until it ran.
 * 0 or -TL_EINVAL. Not concurrently with tl_stream_close. */
int tl_stream_file_retention(struct tl_stream *s) TL_MUST_CHECK;

#endif
