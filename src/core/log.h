/* log.h — one-line, timestamped log records to stderr.
 *
 * Only roles and CLI code log; library-like modules return codes instead.
 * Every function here is thread-safe (each record is one write(2)). */
#ifndef TL_LOG_H
#define TL_LOG_H

enum tl_log_level { TL_LOG_DEBUG, TL_LOG_INFO, TL_LOG_WARN, TL_LOG_ERROR };

/* Sets the minimum level written (default TL_LOG_INFO). Call before threads start. */
void tl_log_set_level(enum tl_log_level lvl);

/* Parses "debug|info|warn|error"; returns 0 or -TL_EINVAL. */
int tl_log_level_parse(const char *s, enum tl_log_level *out);

/* Writes one record "2026-12-03T18:00:00.123Z info <message>\n". */
void tl_log(enum tl_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define tl_debug(...) tl_log(TL_LOG_DEBUG, __VA_ARGS__)
#define tl_info(...) tl_log(TL_LOG_INFO, __VA_ARGS__)
#define tl_warn(...) tl_log(TL_LOG_WARN, __VA_ARGS__)
#define tl_error(...) tl_log(TL_LOG_ERROR, __VA_ARGS__)

#endif
