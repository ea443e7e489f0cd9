/* cmd_reconcile.c — `tally reconcile --day D | --from D1 --to D2 [--json]`:
 * real-time vs batch per tenant, campaign, variant and metric (see
 * batch/reconcile.h and docs/batch.md). Exit 0 when everything compared is
 * equal, 1 on any difference or when something could not be compared. */
#include "batch/reconcile.h"
#include "cli/cli.h"
#include "cli/settings.h"
#include "core/buf.h"
#include "pipeline/archive.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_line[] =
    "tally reconcile --day YYYY-MM-DD | --from YYYY-MM-DD --to YYYY-MM-DD [--json] [flags]\n"
    "  compares real-time and batch numbers; exit 1 on any difference";

static int print_json(const struct tl_reconcile_result *r, const char *from, const char *to)
{
	struct tl_buf b;
	tl_buf_init(&b, 0);
	int rc = tl_buf_printf(
	    &b,
	    "{\"from\":\"%s\",\"to\":\"%s\",\"equal\":%s,\"campaigns\":%zu,\"comparisons\":%zu,"
	    "\"differences\":[",
	    from, to, r->n_diffs || r->n_notes ? "false" : "true", r->campaigns, r->comparisons);
	for (size_t i = 0; i < r->n_diffs && !rc; i++) {
		const struct tl_reconcile_diff *d = &r->diffs[i];
		rc = tl_buf_puts(&b, i ? ",{\"tenant\":" : "{\"tenant\":");
		if (!rc)
			rc = tl_buf_json_str(&b, d->tenant, strlen(d->tenant));
		if (!rc)
			rc = tl_buf_puts(&b, ",\"campaign\":");
		if (!rc)
			rc = tl_buf_json_str(&b, d->campaign, strlen(d->campaign));
		if (!rc)
			rc = tl_buf_puts(&b, ",\"variant\":");
		if (!rc)
			rc = d->variant ? tl_buf_json_str(&b, d->variant, strlen(d->variant))
			                : tl_buf_puts(&b, "null");
		if (!rc)
			rc = tl_buf_printf(
			    &b, ",\"metric\":\"%s\",\"scope\":\"%s\",\"realtime\":%lld,\"batch\":%lld}",
			    tl_metric_name(d->metric),
			    tl_reconcile_is_unique(d->metric) ? "campaign" : "days", (long long)d->realtime,
			    (long long)d->batch);
	}
	if (!rc)
		rc = tl_buf_puts(&b, "],\"notes\":[");
	for (size_t i = 0; i < r->n_notes && !rc; i++) {
		if (i)
			rc = tl_buf_putc(&b, ',');
		if (!rc)
			rc = tl_buf_json_str(&b, r->notes[i], strlen(r->notes[i]));
	}
	if (!rc)
		rc = tl_buf_puts(&b, "]}\n");
	if (!rc)
		fwrite(b.data, 1, b.len, stdout);
	tl_buf_free(&b);
	return rc;
}

static void print_table(const struct tl_reconcile_result *r, const char *from, const char *to)
{
	if (!r->n_diffs) {
		printf("reconcile %s .. %s: %zu campaigns, %zu numbers compared, no differences\n", from, to,
		       r->campaigns, r->comparisons);
	} else {
		printf("reconcile %s .. %s: %zu campaigns, %zu numbers compared, %zu differences:\n\n", from,
		       to, r->campaigns, r->comparisons, r->n_diffs);
		printf("%-16s %-24s %-10s %-20s %-9s %12s %12s %10s\n", "TENANT", "CAMPAIGN", "VARIANT",
		       "METRIC", "SCOPE", "REALTIME", "BATCH", "DIFF");
		for (size_t i = 0; i < r->n_diffs; i++) {
			const struct tl_reconcile_diff *d = &r->diffs[i];
			printf("%-16s %-24s %-10s %-20s %-9s %12lld %12lld %+10lld\n", d->tenant, d->campaign,
			       d->variant ? (*d->variant ? d->variant : "\"\"") : "(all)",
			       tl_metric_name(d->metric),
			       tl_reconcile_is_unique(d->metric) ? "campaign" : "days",
			       (long long)d->realtime, (long long)d->batch,
			       (long long)(d->batch - d->realtime));
		}
	}
	for (size_t i = 0; i < r->n_notes; i++)
		printf("note: %s\n", r->notes[i]);
}

int tl_cmd_reconcile(int argc, char **argv)
{
	static const char *const flags[] = {TL_COMMON_FLAGS, "archive-dir", "batch-dir", NULL};
	int64_t from = 0, to = 0;
	int json = 0;
	char **args = calloc((size_t)argc + 1, sizeof *args);
	if (!args)
		return 2;
	memcpy(args, argv, (size_t)argc * sizeof *args);
	int ec = tl_cli_day_flags("reconcile", &argc, args, &from, &to, &json);
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
		fprintf(stderr, "tally reconcile: unexpected argument '%s'\n", res.positional[0]);
		goto out;
	}
	char df[32], dt[32];
	if (tl_archive_day_format(from, df, sizeof df) < 0 || tl_archive_day_format(to, dt, sizeof dt) < 0)
		goto out;
	struct tl_reconcile_opts o = {.db_uri = s.db,
	                              .archive_dir = s.archive_dir,
	                              .state_dir = s.batch_dir,
	                              .from_day = from,
	                              .to_day = to};
	struct tl_reconcile_result r;
	int rc = tl_reconcile(&o, &r);
	if (rc) {
		fprintf(stderr, "tally reconcile: %s: %s\n", s.db, tl_strerror(rc));
		goto out;
	}
	if (json)
		rc = print_json(&r, df + 3, dt + 3);
	else
		print_table(&r, df + 3, dt + 3);
	ec = rc ? 2 : (r.n_diffs || r.n_notes) ? 1 : 0;
	tl_reconcile_free(&r);
out:
	tl_settings_free(&s);
	free(args);
	return ec;
}
