/* wire.h — building each role from the settings; shared by `serve` (all
 * roles as threads) and the one-role subcommands. Main thread only. */
#ifndef TL_WIRE_H
#define TL_WIRE_H

#include "api/api.h"
#include "cli/roles.h"
#include "cli/settings.h"
#include "collect/collect.h"
#include "pipeline/aggregate.h"
#include "pipeline/enrich.h"
#include "stream/stream.h"

struct tl_wired {
	struct tl_settings *s;
	struct tl_stream *stream;
	struct tl_collector *collector;
	struct tl_enricher *enricher;
	struct tl_aggregator *aggregator;
	struct tl_api *api;
};

/* Flags of each role, for tl_settings_load. */
#define TL_COLLECT_FLAGS "collector", "max-body", "max-batch-events", "read-timeout"
#define TL_PIPE_FLAGS "partitions", "topic-partitions", "retention", "segment-size"
#define TL_ENRICH_FLAGS "machine-open-window", "bot-click-window"
#define TL_AGG_FLAGS "poll-interval", "batch-max-events", "dedupe-window"
#define TL_API_FLAGS "api", "read-source"

/* Opens the stream named by the settings (read_only for consumers in their
 * own process). Creates the data directory. Logs and returns non-zero on failure. */
int tl_wire_stream(struct tl_wired *w, int read_only);

/* Each creates one role (logging the reason on failure) and adds it to rs. */
int tl_wire_collector(struct tl_wired *w, struct tl_roles *rs);
int tl_wire_enricher(struct tl_wired *w, struct tl_roles *rs);
int tl_wire_aggregator(struct tl_wired *w, struct tl_roles *rs);
int tl_wire_api(struct tl_wired *w, struct tl_roles *rs);

/* Frees every role created and closes the stream. */
void tl_wire_destroy(struct tl_wired *w);

#endif
