/* cli.h — the subcommands of the tally binary. Each lives in
 * src/cli/cmd_<name>.c, parses its own flags (with the shared settings of
 * core/config.h) and returns the process exit code. Main thread only. */
#ifndef TL_CLI_H
#define TL_CLI_H

#include <stdint.h>

int tl_cmd_serve(int argc, char **argv);
int tl_cmd_collect(int argc, char **argv);
int tl_cmd_enrich(int argc, char **argv);
int tl_cmd_aggregate(int argc, char **argv);
int tl_cmd_api(int argc, char **argv);
int tl_cmd_tenant(int argc, char **argv);
int tl_cmd_link(int argc, char **argv);
int tl_cmd_gen(int argc, char **argv);
int tl_cmd_archive(int argc, char **argv);
int tl_cmd_batch(int argc, char **argv);
int tl_cmd_reconcile(int argc, char **argv);
int tl_cmd_bench(int argc, char **argv);

/* For batch and reconcile (cmd_batch.c): takes --day D | --from D1 --to D2
 * (YYYY-MM-DD, today, yesterday) and, when json is not NULL, --json out of
 * argv (argv[0] stays; *argc shrinks): what is left are the shared
 * settings. Returns 0 (also for --help, which stays in argv), or 2 after
 * printing the problem. */
int tl_cli_day_flags(const char *cmd, int *argc, char **argv, int64_t *from, int64_t *to, int *json);

#endif
