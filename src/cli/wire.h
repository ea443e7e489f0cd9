/* wire.h — building each role from the settings; shared by `serve` (all
 * roles as threads) and the one-role subcommands. Main thread only. */
#ifndef TL_WIRE_H
#define TL_WIRE_H

#include "api/api.h"
#include "cli/roles.h"
#include "cli/settings.h"
#include "collect/collect.h"
#include "pipeline/aggregate.h"
#include "pipeline/archive.h"
#include "pipeline/enrich.h"
#include "stream/stream.h"

struct tl_wired {
	struct tl_settings *s;
	struct tl_stream *stream;
	struct tl_collector *collector;
	struct tl_enricher *enricher;
	struct tl_aggregator *aggregator;
	struct tl_archiver *archiver;
	struct tl_api *api;
	int stopped; /* SIGINT/SIGTERM came while a role waited to start (not a failure) */
};

/* Flags of each role, for tl_settings_load. */
#define TL_COLLECT_FLAGS "collector", "max-body", "max-batch-events", "read-timeout", "trust-forwarded-for"
#define TL_PIPE_FLAGS "partitions", "topic-partitions", "retention", "segment-size"
#define TL_ENRICH_FLAGS "machine-open-window", "bot-click-window"
#define TL_AGG_FLAGS "poll-interval", "batch-max-events", "dedupe-window"
#define TL_API_FLAGS "api", "read-source"
#define TL_ARCHIVE_FLAGS "archive-dir", "archive-roll-bytes", "archive-roll-interval"

/* Opens the stream named by the settings. write_topics (NULL-terminated)
 * are the topics this process appends to: their writer locks are taken now,
 * so a second process writing one of them is refused at start with a
 * message naming the topic and the holder's pid. NULL = a consumer only
 * (read-only). Creates the data directory. Logs and returns non-zero on
 * failure. */
int tl_wire_stream_for(struct tl_wired *w, const char *const *write_topics);

/* tl_wire_stream_for with NULL (read_only) or every topic tally writes. */
int tl_wire_stream(struct tl_wired *w, int read_only);

/* Each creates one role (logging the reason on failure) and adds it to rs.
 * The collector and the API wait (with backoff) while the reporting DB is
 * unavailable, until it answers or SIGINT/SIGTERM comes: then they return
 * non-zero with w->stopped set. */
int tl_wire_collector(struct tl_wired *w, struct tl_roles *rs);
int tl_wire_enricher(struct tl_wired *w, struct tl_roles *rs);
int tl_wire_aggregator(struct tl_wired *w, struct tl_roles *rs);
int tl_wire_api(struct tl_wired *w, struct tl_roles *rs);
int tl_wire_archiver(struct tl_wired *w, struct tl_roles *rs);

/* SIGHUP: re-reads the settings (tally.conf, TALLY_*, the same flags) and
 * applies what can change at run time: read_source of the API. Register with
 * tl_roles.reload; arg is a struct tl_wire_reload that outlives the roles. */
struct tl_wire_reload {
	struct tl_wired *w;
	int argc;
	char **argv;
	const char *const *flags;
};
void tl_wire_reload(void *arg);

/* The roles' interrupt hook (struct tl_roles): ends the stream's retries
 * (tl_stream_interrupt) so that a stop does not wait out a server that is
 * down. arg is the struct tl_wired. */
void tl_wire_interrupt(void *arg);

/* Frees every role created and closes the stream. */
void tl_wire_destroy(struct tl_wired *w);

#endif
