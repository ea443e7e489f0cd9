/* settings.h — the settings every role shares (DESIGN.md §6) and their
 * table for core/config.h. Main thread only. */
#ifndef TL_SETTINGS_H
#define TL_SETTINGS_H

#include "core/config.h"

#include <stdint.h>

struct tl_settings {
	char *data;      /* --data DIR */
	char *stream;    /* --stream URI (default file:<data>/log) */
	char *db;        /* --db URI (default sqlite:<data>/tally.db) */
	char *collector; /* --collector ADDR:PORT */
	char *api;       /* --api ADDR:PORT */
	char *log_level;
	char *partitions; /* --partitions 0-3,6: partitions this process owns (default all) */
	int64_t topic_partitions;
	int64_t poll_interval_ms;
	int64_t batch_max_events;
	int64_t max_body;
	int64_t max_batch_events;
	int64_t read_timeout_ms;
	int trust_forwarded_for; /* collector behind one trusted proxy: client IP from X-Forwarded-For */
	int64_t retention_ms;
	int64_t segment_size;
	int64_t dedupe_window_ms;
	int64_t machine_open_window_ms;
	int64_t bot_click_window_ms;
	char *read_source;
	int archive;       /* serve: run the archiver */
	char *archive_dir; /* default <data>/archive */
	int64_t archive_roll_bytes;
	int64_t archive_roll_interval_ms;
	char *batch_dir; /* batch state, default <data>/batch */
	int64_t batch_threads;
	char *replicas_unused; /* reserved */
	/* tenant / link */
	char *tenant, *campaign, *recipient, *variant, *message, *url, *base_url;
};

extern const struct tl_opt tl_settings_table[];
extern const size_t tl_settings_count;

/* Flags every subcommand understands. */
#define TL_COMMON_FLAGS "data", "stream", "db", "log-level"

/* Loads settings for command argv[0] accepting `flags` (NULL-terminated), prints
 * the error naming the flag (exit code 2) or the help text (exit 0) itself.
 * Returns -1 to continue, else the exit code to return. */
int tl_settings_load(struct tl_settings *s, const char *usage_line, const char *const *flags, int argc,
                     char **argv, struct tl_config_result *res);

void tl_settings_free(struct tl_settings *s);

/* Parses s->partitions ("all", "0-3", "0,2,5-7") into mask bits for P
 * partitions. Returns 0 or -TL_EINVAL. */
int tl_settings_partitions(const struct tl_settings *s, int P, uint64_t *mask);

#endif
