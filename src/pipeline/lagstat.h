/* lagstat.h — a lock-free latency histogram (milliseconds) with fixed
 * Prometheus buckets, for event→queryable lag. Writers: one thread;
 * readers: any thread. */
#ifndef TL_LAGSTAT_H
#define TL_LAGSTAT_H

#include "core/buf.h"

#include <stdatomic.h>
#include <stdint.h>

#define TL_LAG_BUCKETS 16

struct tl_lagstat {
	_Atomic uint64_t bucket[TL_LAG_BUCKETS + 1]; /* last = +Inf */
	_Atomic uint64_t count;
	_Atomic uint64_t sum_ms;
};

/* Records one observation of ms. */
void tl_lagstat_add(struct tl_lagstat *l, int64_t ms);

/* Appends the histogram as Prometheus text under metric name. */
int tl_lagstat_prometheus(struct tl_lagstat *l, const char *name, const char *help,
                          struct tl_buf *out) TL_MUST_CHECK;

#endif
