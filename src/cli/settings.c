#include "cli/settings.h"

#include "core/log.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S(field) offsetof(struct tl_settings, field)

const struct tl_opt tl_settings_table[] = {
    {"data", TL_OPT_STR, S(data), "./tally-data", "data directory"},
    {"stream", TL_OPT_STR, S(stream), NULL,
     "stream URI: file:DIR | nats://host:4222 (default file:<data>/log)"},
    {"db", TL_OPT_STR, S(db), NULL,
     "reporting DB URI: sqlite:PATH | postgres://… (default sqlite:<data>/tally.db)"},
    {"collector", TL_OPT_STR, S(collector), "127.0.0.1:8080", "collector listener ADDR:PORT (port 0 = any)"},
    {"api", TL_OPT_STR, S(api), "127.0.0.1:8081", "API listener ADDR:PORT (port 0 = any)"},
    {"log-level", TL_OPT_STR, S(log_level), "info", "debug|info|warn|error"},
    {"partitions", TL_OPT_STR, S(partitions), "all", "partitions this process owns: all | 0-3,6"},
    {"topic-partitions", TL_OPT_INT, S(topic_partitions), "8", "partitions of newly created topics"},
    {"poll-interval", TL_OPT_MS, S(poll_interval_ms), "200ms",
     "aggregator: longest wait before a batch is applied"},
    {"batch-max-events", TL_OPT_INT, S(batch_max_events), "50000",
     "aggregator: most events folded per transaction"},
    {"max-body", TL_OPT_SIZE, S(max_body), "4M", "largest HTTP request body"},
    {"max-batch-events", TL_OPT_INT, S(max_batch_events), "10000", "most lines in one POST /v1/events"},
    {"read-timeout", TL_OPT_MS, S(read_timeout_ms), "10s", "HTTP request read timeout"},
    {"trust-forwarded-for", TL_OPT_BOOL, S(trust_forwarded_for), "false",
     "collector behind one trusted proxy: a hit's IP is the last X-Forwarded-For entry"},
    {"retention", TL_OPT_MS, S(retention_ms), "7d", "how long the log keeps records"},
    {"segment-size", TL_OPT_SIZE, S(segment_size), "64M", "log segment size"},
    {"dedupe-window", TL_OPT_MS, S(dedupe_window_ms), "72h", "how long an event id is remembered"},
    {"machine-open-window", TL_OPT_MS, S(machine_open_window_ms), "2s",
     "an open this soon after send is a machine open"},
    {"bot-click-window", TL_OPT_MS, S(bot_click_window_ms), "2s",
     "a click this soon after send is a bot click"},
    {"read-source", TL_OPT_STR, S(read_source), "realtime",
     "what the API serves by default: realtime|batch (re-read on SIGHUP)"},
    {"archive", TL_OPT_BOOL, S(archive), "true", "serve: run the archiver too"},
    {"archive-dir", TL_OPT_STR, S(archive_dir), NULL, "archive of raw events (default <data>/archive)"},
    {"archive-roll-bytes", TL_OPT_SIZE, S(archive_roll_bytes), "64M",
     "archiver: commit a partition's files at this many uncompressed bytes"},
    {"archive-roll-interval", TL_OPT_MS, S(archive_roll_interval_ms), "60s",
     "archiver: commit a partition's files at least this often"},
    {"batch-dir", TL_OPT_STR, S(batch_dir), NULL, "batch recompute state (default <data>/batch)"},
    {"batch-threads", TL_OPT_INT, S(batch_threads), "2", "batch recompute worker threads"},
    {"tenant", TL_OPT_STR, S(tenant), NULL, "tenant name"},
    {"campaign", TL_OPT_STR, S(campaign), NULL, "campaign"},
    {"recipient", TL_OPT_STR, S(recipient), NULL, "recipient id"},
    {"variant", TL_OPT_STR, S(variant), NULL, "variant (A/B)"},
    {"message", TL_OPT_STR, S(message), NULL, "message id"},
    {"url", TL_OPT_STR, S(url), NULL, "click destination (http/https)"},
    {"base-url", TL_OPT_STR, S(base_url), "http://127.0.0.1:8080", "public base URL of the collector"},
};
const size_t tl_settings_count = sizeof tl_settings_table / sizeof tl_settings_table[0];

int tl_settings_load(struct tl_settings *s, const char *usage_line, const char *const *flags, int argc,
                     char **argv, struct tl_config_result *res)
{
	memset(s, 0, sizeof *s);
	char err[512];
	if (tl_config_load(s, tl_settings_table, tl_settings_count, flags, argc, argv, res, err,
	                   sizeof err)) {
		fprintf(stderr, "tally %s: %s (see tally %s --help)\n", argv[0], err, argv[0]);
		return 2;
	}
	if (res->help) {
		printf("usage: %s\n\nflags:\n", usage_line);
		tl_config_usage(tl_settings_table, tl_settings_count, flags, stdout);
		return 0;
	}
	enum tl_log_level lvl;
	if (tl_log_level_parse(s->log_level, &lvl)) {
		fprintf(stderr, "tally %s: --log-level: bad value '%s'\n", argv[0], s->log_level);
		return 2;
	}
	tl_log_set_level(lvl);
	if (!*s->stream) {
		free(s->stream);
		size_t n = strlen(s->data) + 32;
		s->stream = malloc(n);
		snprintf(s->stream, n, "file:%s/log", s->data);
	}
	if (!*s->db) {
		free(s->db);
		size_t n = strlen(s->data) + 32;
		s->db = malloc(n);
		snprintf(s->db, n, "sqlite:%s/tally.db", s->data);
	}
	if (!*s->archive_dir) {
		free(s->archive_dir);
		size_t n = strlen(s->data) + 32;
		s->archive_dir = malloc(n);
		snprintf(s->archive_dir, n, "%s/archive", s->data);
	}
	if (!*s->batch_dir) {
		free(s->batch_dir);
		size_t n = strlen(s->data) + 32;
		s->batch_dir = malloc(n);
		snprintf(s->batch_dir, n, "%s/batch", s->data);
	}
	if (s->topic_partitions < 1 || s->topic_partitions > 64) {
		fprintf(stderr, "tally %s: --topic-partitions: must be 1..64\n", argv[0]);
		return 2;
	}
	if (strcmp(s->read_source, "realtime") && strcmp(s->read_source, "batch")) {
		fprintf(stderr, "tally %s: --read-source: must be realtime or batch\n", argv[0]);
		return 2;
	}
	return -1;
}

void tl_settings_free(struct tl_settings *s)
{
	tl_config_free(s, tl_settings_table, tl_settings_count);
}

int tl_settings_partitions(const struct tl_settings *s, int P, uint64_t *mask)
{
	if (!strcmp(s->partitions, "all")) {
		*mask = P >= 64 ? ~0ULL : ((1ULL << P) - 1);
		return 0;
	}
	uint64_t m = 0;
	const char *p = s->partitions;
	while (*p) {
		char *end;
		long a = strtol(p, &end, 10);
		if (end == p || a < 0 || a >= P)
			return -TL_EINVAL;
		long b = a;
		p = end;
		if (*p == '-') {
			b = strtol(p + 1, &end, 10);
			if (end == p + 1 || b < a || b >= P)
				return -TL_EINVAL;
			p = end;
		}
		for (long i = a; i <= b; i++)
			m |= 1ULL << i;
		if (*p == ',')
			p++;
		else if (*p)
			return -TL_EINVAL;
	}
	if (!m)
		return -TL_EINVAL;
	*mask = m;
	return 0;
}
