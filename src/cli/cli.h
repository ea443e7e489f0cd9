/* cli.h — the subcommands of the tally binary. Each lives in
 * src/cli/cmd_<name>.c, parses its own flags (with the shared settings of
 * core/config.h) and returns the process exit code. Main thread only. */
#ifndef TL_CLI_H
#define TL_CLI_H

int tl_cmd_serve(int argc, char **argv);
int tl_cmd_collect(int argc, char **argv);
int tl_cmd_enrich(int argc, char **argv);
int tl_cmd_aggregate(int argc, char **argv);
int tl_cmd_api(int argc, char **argv);
int tl_cmd_tenant(int argc, char **argv);
int tl_cmd_link(int argc, char **argv);
int tl_cmd_gen(int argc, char **argv);

#endif
