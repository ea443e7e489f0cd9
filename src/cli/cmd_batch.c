/* cmd_batch.c — `tally batch --day D | --from D1 --to D2`: recomputes days
 * from the archive into the batch tables (see batch/batch.h and
 * docs/batch.md), with a progress line on a terminal. */
#include "batch/batch.h"
#include "cli/cli.h"
#include "cli/settings.h"
#include "core/clock.h"
#include "pipeline/archive.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage_line[] =
    "tally batch --day YYYY-MM-DD | --from YYYY-MM-DD --to YYYY-MM-DD [flags]\n"
    "  recomputes the days (UTC) from the archive into the batch tables, replacing them atomically;\n"
    "  a day may also be 'today' or 'yesterday'";

/* Parses YYYY-MM-DD, "today" or "yesterday" into a day number. */
static int parse_day(const char *s, int64_t *day)
{
	int64_t today = tl_archive_day_of(tl_now_ms());
	if (!strcmp(s, "today")) {
		*day = today;
		return 0;
	}
	if (!strcmp(s, "yesterday")) {
		*day = today - 1;
		return 0;
	}
	char dt[32];
	if (snprintf(dt, sizeof dt, "dt=%s", s) >= (int)sizeof dt)
		return -1;
	return tl_archive_day_parse(dt, day) ? -1 : 0;
}

int tl_cli_day_flags(const char *cmd, int *argc, char **argv, int64_t *from, int64_t *to, int *json)
{
	const char *day = NULL, *f = NULL, *t = NULL;
	int out = 1;
	for (int i = 1; i < *argc; i++) {
		const char *a = argv[i], **dst = NULL;
		size_t n = 0;
		if (!strncmp(a, "--day", 5) && (a[5] == '\0' || a[5] == '='))
			dst = &day, n = 5;
		else if (!strncmp(a, "--from", 6) && (a[6] == '\0' || a[6] == '='))
			dst = &f, n = 6;
		else if (!strncmp(a, "--to", 4) && (a[4] == '\0' || a[4] == '='))
			dst = &t, n = 4;
		else if (json && !strcmp(a, "--json")) {
			*json = 1;
			continue;
		}
		if (!dst) {
			argv[out++] = argv[i];
			continue;
		}
		if (a[n] == '=') {
			*dst = a + n + 1;
		} else if (i + 1 < *argc) {
			*dst = argv[++i];
		} else {
			fprintf(stderr, "tally %s: %s needs a value\n", cmd, a);
			return 2;
		}
	}
	*argc = out;
	argv[out] = NULL;
	bool help = false;
	for (int i = 1; i < out; i++)
		help |= !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h");
	if (help)
		return 0;
	if (day && (f || t)) {
		fprintf(stderr, "tally %s: give --day or --from/--to, not both\n", cmd);
		return 2;
	}
	if (!day && (!f || !t)) {
		fprintf(stderr,
		        "tally %s: --day D, or --from D1 --to D2, is required (see tally %s --help)\n", cmd,
		        cmd);
		return 2;
	}
	const char *bad = NULL;
	if (day) {
		if (parse_day(day, from))
			bad = day;
		*to = *from;
	} else if (parse_day(f, from)) {
		bad = f;
	} else if (parse_day(t, to)) {
		bad = t;
	}
	if (bad) {
		fprintf(stderr, "tally %s: not a day: '%s' (want YYYY-MM-DD)\n", cmd, bad);
		return 2;
	}
	if (*from > *to) {
		fprintf(stderr, "tally %s: --from is after --to\n", cmd);
		return 2;
	}
	return 0;
}

struct tty {
	int on;
	int printed;
};

static void human(double v, char *buf, size_t cap)
{
	if (v >= 1e9)
		snprintf(buf, cap, "%.2fG", v / 1e9);
	else if (v >= 1e6)
		snprintf(buf, cap, "%.2fM", v / 1e6);
	else if (v >= 1e3)
		snprintf(buf, cap, "%.1fk", v / 1e3);
	else
		snprintf(buf, cap, "%.0f", v);
}

static void on_progress(void *arg, const struct tl_batch_progress *p)
{
	struct tty *t = arg;
	if (!t->on)
		return;
	double secs = (double)p->elapsed_ms / 1000.0;
	double rate = secs > 0 ? (double)p->lines / secs : 0;
	double frac = p->bytes ? (double)p->bytes_done / (double)p->bytes : 0;
	char lines[32], r[32], eta[32] = "?";
	human((double)p->lines, lines, sizeof lines);
	human(rate, r, sizeof r);
	if (frac > 0.01 && frac < 1)
		snprintf(eta, sizeof eta, "%.0f s", secs * (1 - frac) / frac);
	else if (frac >= 1)
		snprintf(eta, sizeof eta, "0 s");
	fprintf(stderr, "\rbatch: %s events (%s/s), %llu/%llu files, %.0f%%, ETA %s   ", lines, r,
	        (unsigned long long)p->files_done, (unsigned long long)p->files, frac * 100, eta);
	t->printed = 1;
}

int tl_cmd_batch(int argc, char **argv)
{
	static const char *const flags[] = {
	    TL_COMMON_FLAGS,       "archive-dir",      "batch-dir", "batch-threads",
	    "machine-open-window", "bot-click-window", NULL};
	int64_t from = 0, to = 0;
	char **args = calloc((size_t)argc + 1, sizeof *args);
	if (!args)
		return 1;
	memcpy(args, argv, (size_t)argc * sizeof *args);
	int ec = tl_cli_day_flags("batch", &argc, args, &from, &to, NULL);
	if (ec) {
		free(args);
		return ec;
	}
	struct tl_settings s;
	struct tl_config_result res;
	ec = tl_settings_load(&s, usage_line, flags, argc, args, &res);
	if (ec >= 0)
		goto out;
	ec = 2;
	if (res.n_positional) {
		fprintf(stderr, "tally batch: unexpected argument '%s'\n", res.positional[0]);
		goto out;
	}
	struct tty tty = {isatty(STDERR_FILENO), 0};
	struct tl_batch_opts o = {
	    .archive_dir = s.archive_dir,
	    .state_dir = s.batch_dir,
	    .db_uri = s.db,
	    .from_day = from,
	    .to_day = to,
	    .threads = (int)s.batch_threads,
	    .progress = on_progress,
	    .progress_arg = &tty,
	};
	tl_classify_defaults(&o.classify);
	o.classify.machine_open_window_ms = s.machine_open_window_ms;
	o.classify.bot_click_window_ms = s.bot_click_window_ms;
	struct tl_batch_stats st;
	int64_t t0 = tl_mono_ms();
	int rc = tl_batch_run(&o, &st);
	double secs = (double)(tl_mono_ms() - t0) / 1000.0;
	if (tty.printed)
		fputc('\n', stderr);
	char df[32], dt[32];
	if (tl_archive_day_format(from, df, sizeof df) < 0 || tl_archive_day_format(to, dt, sizeof dt) < 0)
		df[3] = dt[3] = '\0';
	if (rc) {
		fprintf(stderr, "tally batch: %s .. %s: %s; the batch tables are unchanged\n", df + 3, dt + 3,
		        st.error[0] ? st.error : tl_strerror(rc));
		ec = 1;
		goto out;
	}
	uint64_t rejected = 0;
	for (int k = 0; k < TL_BATCH_REASONS; k++)
		rejected += st.rejected[k];
	printf("batch: %s .. %s: %llu files (%.1f MB), %llu lines, %llu events folded, %llu counted, %llu "
	       "duplicates, %llu rejected, %llu skipped, %llu bad lines; %llu rows, %llu campaigns; "
	       "%.2f s (read %.2f s, write %.2f s): %.0f lines/s; run %llu\n",
	       df + 3, dt + 3, (unsigned long long)st.files, (double)st.bytes / 1e6,
	       (unsigned long long)st.lines, (unsigned long long)st.folded, (unsigned long long)st.counted,
	       (unsigned long long)st.duplicates, (unsigned long long)rejected,
	       (unsigned long long)st.skipped, (unsigned long long)st.bad_lines, (unsigned long long)st.rows,
	       (unsigned long long)st.campaigns, secs, (double)st.read_ms / 1000.0,
	       (double)st.write_ms / 1000.0, secs > 0 ? (double)st.lines / secs : 0.0,
	       (unsigned long long)st.runid);
	for (int k = 0; k < TL_BATCH_REASONS; k++)
		if (st.rejected[k])
			printf("batch: rejected %s: %llu\n", tl_batch_reason_name(k),
			       (unsigned long long)st.rejected[k]);
	if (st.bad_lines)
		fprintf(stderr, "tally batch: warning: %llu archive lines are not valid events (first: %s)\n",
		        (unsigned long long)st.bad_lines, st.first_bad);
	if (st.out_of_range)
		fprintf(stderr,
		        "tally batch: warning: %llu events have an event time outside their day directory\n",
		        (unsigned long long)st.out_of_range);
	ec = 0;
out:
	tl_settings_free(&s);
	free(args);
	return ec;
}
