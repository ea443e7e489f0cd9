/* clock.h — wall and monotonic clocks, ISO-8601 UTC timestamps. Thread-safe. */
#ifndef TL_CLOCK_H
#define TL_CLOCK_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define TL_TIME_ISO_MAX 32

/* Milliseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t tl_now_ms(void);

/* Monotonic milliseconds / nanoseconds (CLOCK_MONOTONIC), for intervals and deadlines. */
int64_t tl_mono_ms(void);
int64_t tl_mono_ns(void);

/* Initialises c to time its waits on CLOCK_MONOTONIC (so that a change of
 * the wall clock moves no deadline). pthread_cond_init's result. */
int tl_cond_init_mono(pthread_cond_t *c);

/* *ts = the CLOCK_MONOTONIC time ms_from_now from now: the deadline of a
 * pthread_cond_timedwait on a condition made by tl_cond_init_mono. */
void tl_mono_deadline(struct timespec *ts, int64_t ms_from_now);

/* Parses an RFC 3339 / ISO-8601 timestamp ("2026-12-03T18:00:00.123Z",
 * "2026-12-03T19:00:00+01:00", up to 9 fractional digits; a date alone
 * "2026-12-03" is midnight UTC) of exactly len bytes into ms since the epoch.
 * Returns 0 or -TL_EINVAL. */
int tl_time_parse_iso(const char *s, size_t len, int64_t *ms_out);

/* Formats ms as "2026-12-03T18:00:00.123Z" into buf (>= TL_TIME_ISO_MAX).
 * Returns the length written. */
size_t tl_time_format_iso(int64_t ms, char *buf, size_t cap);

/* Same, to whole seconds: "2026-12-03T18:00:00Z". */
size_t tl_time_format_iso_s(int64_t ms, char *buf, size_t cap);

/* Days since the epoch <-> civil date, proleptic Gregorian. */
int64_t tl_days_from_civil(int64_t y, unsigned m, unsigned d);
void tl_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d);

#endif
