/* cmd_roles.c — `tally serve` and the one-role subcommands (collect, enrich,
 * aggregate, api): parse flags, wire the roles, run them until a signal. */
#include "cli/cli.h"
#include "cli/demo.h"
#include "cli/wire.h"
#include "core/log.h"

#include <stdio.h>

enum {
	ROLE_COLLECT = 1,
	ROLE_ENRICH = 2,
	ROLE_AGGREGATE = 4,
	ROLE_API = 8,
	ROLE_ARCHIVE = 16,
};

static int run_roles(int argc, char **argv, unsigned roles, const char *usage, const char *const *flags)
{
	struct tl_settings s;
	struct tl_config_result res;
	int ec = tl_settings_load(&s, usage, flags, argc, argv, &res);
	if (ec >= 0) {
		tl_settings_free(&s);
		return ec;
	}
	if (res.n_positional) {
		fprintf(stderr, "tally %s: unexpected argument '%s'\n", argv[0], res.positional[0]);
		tl_settings_free(&s);
		return 2;
	}
	tl_roles_block_signals();
	struct tl_wired w = {.s = &s};
	struct tl_roles rs = {0};
	ec = 1;
	/* one writing process per topic: each role declares what it appends to,
	 * so a second writer (or a stale process) is refused now, by name */
	const char *writes[6];
	size_t nw = 0;
	if (roles & ROLE_COLLECT) {
		writes[nw++] = TL_TOPIC_EVENTS;
		writes[nw++] = TL_TOPIC_DELIVERY;
		writes[nw++] = TL_TOPIC_DEAD_WEBHOOKS;
	}
	if (roles & ROLE_ENRICH) {
		writes[nw++] = TL_TOPIC_METRICS;
		writes[nw++] = TL_TOPIC_DEAD;
	}
	writes[nw] = NULL;
	if ((roles != ROLE_API) && tl_wire_stream_for(&w, nw ? writes : NULL))
		goto out;
	if ((roles & ROLE_COLLECT) && tl_wire_collector(&w, &rs))
		goto out;
	if ((roles & ROLE_ENRICH) && tl_wire_enricher(&w, &rs))
		goto out;
	if ((roles & ROLE_AGGREGATE) && tl_wire_aggregator(&w, &rs))
		goto out;
	if ((roles & ROLE_ARCHIVE) && s.archive && tl_wire_archiver(&w, &rs))
		goto out;
	if ((roles & ROLE_API) && tl_wire_api(&w, &rs))
		goto out;
	if ((roles & ~ROLE_ARCHIVE) == (ROLE_COLLECT | ROLE_ENRICH | ROLE_AGGREGATE | ROLE_API) &&
	    tl_demo_first_start(&w))
		goto out;
	/* SIGHUP re-reads read_source (tally.conf, TALLY_READ_SOURCE, the flags) */
	struct tl_wire_reload reload = {&w, argc, argv, flags};
	rs.reload = tl_wire_reload;
	rs.reload_arg = &reload;
	rs.interrupt = tl_wire_interrupt;
	rs.interrupt_arg = &w;
	ec = tl_roles_run(&rs);
out:
	if (w.stopped)
		ec = 0; /* asked to stop while waiting to start */
	tl_wire_destroy(&w);
	tl_settings_free(&s);
	return ec;
}

int tl_cmd_serve(int argc, char **argv)
{
	static const char *const flags[] = {TL_COMMON_FLAGS,  TL_COLLECT_FLAGS, TL_PIPE_FLAGS,
	                                    TL_ENRICH_FLAGS,  TL_AGG_FLAGS,     TL_API_FLAGS,
	                                    TL_ARCHIVE_FLAGS, "archive",        NULL};
	return run_roles(argc, argv, ROLE_COLLECT | ROLE_ENRICH | ROLE_AGGREGATE | ROLE_API | ROLE_ARCHIVE,
	                 "tally serve [flags]   every role in one process", flags);
}

int tl_cmd_collect(int argc, char **argv)
{
	static const char *const flags[] = {TL_COMMON_FLAGS, TL_COLLECT_FLAGS, "topic-partitions",
	                                    "retention",     "segment-size",   NULL};
	return run_roles(argc, argv, ROLE_COLLECT, "tally collect [flags]   the HTTP collector", flags);
}

int tl_cmd_enrich(int argc, char **argv)
{
	static const char *const flags[] = {TL_COMMON_FLAGS, TL_PIPE_FLAGS, TL_ENRICH_FLAGS, NULL};
	return run_roles(argc, argv, ROLE_ENRICH, "tally enrich [flags]   events -> metrics", flags);
}

int tl_cmd_aggregate(int argc, char **argv)
{
	static const char *const flags[] = {TL_COMMON_FLAGS, TL_PIPE_FLAGS, TL_AGG_FLAGS, NULL};
	return run_roles(argc, argv, ROLE_AGGREGATE,
	                 "tally aggregate [flags]   metrics + delivery -> reporting DB", flags);
}

int tl_cmd_api(int argc, char **argv)
{
	static const char *const flags[] = {TL_COMMON_FLAGS, TL_API_FLAGS, "max-body", "read-timeout", NULL};
	return run_roles(argc, argv, ROLE_API, "tally api [flags]   JSON API, live stream, dashboard", flags);
}
