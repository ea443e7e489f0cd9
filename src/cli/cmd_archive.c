/* cmd_archive.c — `tally archive`: the archiver alone (it also runs inside
 * `tally serve`): raw events of `events` and `delivery` as zstd NDJSON under
 * the archive directory, until SIGINT/SIGTERM. See pipeline/archive.h. */
#include "cli/cli.h"
#include "cli/wire.h"

#include <stdio.h>

int tl_cmd_archive(int argc, char **argv)
{
	static const char *const flags[] = {TL_COMMON_FLAGS, TL_PIPE_FLAGS, TL_ARCHIVE_FLAGS, NULL};
	struct tl_settings s;
	struct tl_config_result res;
	int ec = tl_settings_load(
	    &s, "tally archive [flags]   events + delivery -> <archive>/dt=YYYY-MM-DD/*.ndjson.zst", flags,
	    argc, argv, &res);
	if (ec >= 0) {
		tl_settings_free(&s);
		return ec;
	}
	if (res.n_positional) {
		fprintf(stderr, "tally archive: unexpected argument '%s'\n", res.positional[0]);
		tl_settings_free(&s);
		return 2;
	}
	tl_roles_block_signals();
	struct tl_wired w = {.s = &s};
	struct tl_roles rs = {.interrupt = tl_wire_interrupt, .interrupt_arg = &w};
	ec = 1;
	if (!tl_wire_stream(&w, 1) && !tl_wire_archiver(&w, &rs))
		ec = tl_roles_run(&rs);
	tl_wire_destroy(&w);
	tl_settings_free(&s);
	return ec;
}
