/* main.c — the subcommand table and nothing else. */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

struct subcommand {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *help;
};

static const struct subcommand commands[] = {
    {"serve", tl_cmd_serve, "run every role in one process (embedded default)"},
    {"collect", tl_cmd_collect, "HTTP collector: pixel, click redirect, event API, webhooks"},
    {"enrich", tl_cmd_enrich, "verify tokens, classify opens/clicks: events -> metrics"},
    {"aggregate", tl_cmd_aggregate, "fold metrics + delivery into the reporting DB, exactly once"},
    {"api", tl_cmd_api, "JSON API, live stream, dashboard"},
    {"archive", tl_cmd_archive, "archive raw events as zstd NDJSON by day, exactly once"},
    {"batch", tl_cmd_batch, "recompute days from the archive into the batch tables"},
    {"reconcile", tl_cmd_reconcile, "compare real-time and batch numbers; non-zero exit on a difference"},
    {"tenant", tl_cmd_tenant, "add, list and configure tenants"},
    {"link", tl_cmd_link, "mint a signed open-pixel or click URL"},
    {"gen", tl_cmd_gen, "simulate campaigns against a collector; write the ground truth"},
    {"bench", tl_cmd_bench, "measure: load generator, lag probe, API data set, parser timing"},
};

static void usage(FILE *f)
{
	fprintf(f, "usage: tally <command> [flags]   (tally <command> --help)\n\ncommands:\n");
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "tally: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
