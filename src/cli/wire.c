#include "cli/wire.h"

#include "core/log.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static int run_collector(void *o)
{
	return tl_collector_run(o);
}
static void stop_collector(void *o)
{
	tl_collector_stop(o);
}
static int run_enricher(void *o)
{
	return tl_enricher_run(o);
}
static void stop_enricher(void *o)
{
	tl_enricher_stop(o);
}
static int run_aggregator(void *o)
{
	return tl_aggregator_run(o);
}
static void stop_aggregator(void *o)
{
	tl_aggregator_stop(o);
}
static int run_archiver(void *o)
{
	return tl_archiver_run(o);
}
static void stop_archiver(void *o)
{
	tl_archiver_stop(o);
}
static int run_api(void *o)
{
	return tl_api_run(o);
}
static void stop_api(void *o)
{
	tl_api_stop(o);
}

/* Waits ms for SIGINT or SIGTERM, which every thread blocks
 * (tl_roles_block_signals): 1 when one came (it is consumed: the caller
 * stops), 0 after ms. */
static int stop_requested_within(int64_t ms)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
	return sigtimedwait(&set, NULL, &ts) > 0;
}

/* Backoff while a role cannot start because the reporting DB is down (the
 * collector and the API load the tenants first): logs, waits, doubles up to
 * 2 s. Returns 1 when a stop was asked for meanwhile (w->stopped is set). */
static int wait_for_db(struct tl_wired *w, const char *role, int64_t *backoff)
{
	tl_warn("%s: reporting DB %s unavailable; retrying in %lld ms", role, w->s->db, (long long)*backoff);
	if (stop_requested_within(*backoff)) {
		tl_info("%s: stopping before it started", role);
		w->stopped = 1;
		return 1;
	}
	*backoff = *backoff * 2 > 2000 ? 2000 : *backoff * 2;
	return 0;
}

static int mkdir_p(const char *path)
{
	char tmp[4096];
	size_t n = strlen(path);
	if (n >= sizeof tmp)
		return -1;
	memcpy(tmp, path, n + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0750) && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(tmp, 0750) && errno != EEXIST)
		return -1;
	return 0;
}

int tl_wire_stream(struct tl_wired *w, int read_only)
{
	static const char *const all[] = {TL_TOPIC_EVENTS,  TL_TOPIC_DELIVERY, TL_TOPIC_DEAD_WEBHOOKS,
	                                  TL_TOPIC_METRICS, TL_TOPIC_DEAD,     NULL};
	return tl_wire_stream_for(w, read_only ? NULL : all);
}

int tl_wire_stream_for(struct tl_wired *w, const char *const *write_topics)
{
	if (mkdir_p(w->s->data)) {
		tl_error("--data %s: cannot create: %s", w->s->data, strerror(errno));
		return 1;
	}
	static const char *const none[] = {NULL};
	char detail[512] = "";
	struct tl_stream_opts so;
	tl_stream_opts_defaults(&so);
	so.partitions = (int)w->s->topic_partitions;
	so.retention_ms = w->s->retention_ms;
	so.segment_bytes = w->s->segment_size;
	so.read_only = write_topics == NULL;
	so.write_topics = write_topics ? write_topics : none;
	so.err = detail;
	so.err_len = sizeof detail;
	int rc = tl_stream_open(w->s->stream, &so, &w->stream);
	if (rc) {
		if (rc == -TL_ELOCKED)
			tl_error("--stream %s: %s", w->s->stream,
			         detail[0] ? detail
			                   : "another tally process is writing this log (stop it first)");
		else
			tl_error("--stream %s: %s%s%s", w->s->stream, tl_strerror(rc), detail[0] ? ": " : "",
			         detail);
		return 1;
	}
	return 0;
}

static void http_limits(const struct tl_settings *s, struct tl_http_limits *l)
{
	tl_http_limits_defaults(l);
	l->max_body = (size_t)s->max_body;
	l->read_timeout_ms = (int)s->read_timeout_ms;
}

int tl_wire_collector(struct tl_wired *w, struct tl_roles *rs)
{
	struct tl_collector_opts o = {
	    .addr = w->s->collector,
	    .db_uri = w->s->db,
	    .stream = w->stream,
	    .max_batch_events = (size_t)w->s->max_batch_events,
	    .tenant_refresh_ms = 1000,
	    .trust_forwarded_for = w->s->trust_forwarded_for,
	};
	http_limits(w->s, &o.limits);
	int rc;
	int64_t backoff = 100;
	while ((rc = tl_collector_create(&o, &w->collector)) == -TL_EUNAVAIL)
		if (wait_for_db(w, "collector", &backoff))
			return 1;
	if (rc) {
		tl_error("collector on %s: %s", w->s->collector, tl_strerror(rc));
		return 1;
	}
	tl_roles_add(rs, "collector", run_collector, stop_collector, w->collector);
	return 0;
}

static int partitions(struct tl_wired *w, const char *topic, uint64_t *mask)
{
	int P = tl_stream_partitions(w->stream, topic);
	if (P < 0) {
		tl_error("topic %s: %s", topic, tl_strerror(P));
		return 1;
	}
	if (tl_settings_partitions(w->s, P, mask)) {
		tl_error("--partitions %s: not a list of partitions of 0..%d", w->s->partitions, P - 1);
		return 1;
	}
	return 0;
}

int tl_wire_enricher(struct tl_wired *w, struct tl_roles *rs)
{
	struct tl_enricher_opts o = {.stream = w->stream, .db_uri = w->s->db};
	if (partitions(w, TL_TOPIC_EVENTS, &o.partitions))
		return 1;
	tl_classify_defaults(&o.classify);
	o.classify.machine_open_window_ms = w->s->machine_open_window_ms;
	o.classify.bot_click_window_ms = w->s->bot_click_window_ms;
	int rc = tl_enricher_create(&o, &w->enricher);
	if (rc) {
		tl_error("enricher: %s", tl_strerror(rc));
		return 1;
	}
	tl_roles_add(rs, "enricher", run_enricher, stop_enricher, w->enricher);
	return 0;
}

int tl_wire_aggregator(struct tl_wired *w, struct tl_roles *rs)
{
	struct tl_aggregator_opts o = {
	    .stream = w->stream,
	    .db_uri = w->s->db,
	    .poll_interval_ms = (int)w->s->poll_interval_ms,
	    .batch_max_events = (size_t)w->s->batch_max_events,
	    .dedupe_window_ms = w->s->dedupe_window_ms,
	};
	if (partitions(w, TL_TOPIC_METRICS, &o.partitions))
		return 1;
	int rc = tl_aggregator_create(&o, &w->aggregator);
	if (rc) {
		tl_error("aggregator: %s", tl_strerror(rc));
		return 1;
	}
	tl_roles_add(rs, "aggregator", run_aggregator, stop_aggregator, w->aggregator);
	return 0;
}

/* /metrics of the API also shows the other roles of this process. */
static int extra_metrics(void *arg, struct tl_buf *out)
{
	struct tl_wired *w = arg;
	int rc = 0;
	if (w->collector && !rc)
		rc = tl_collector_metrics(w->collector, out);
	if (w->enricher && !rc)
		rc = tl_enricher_metrics(w->enricher, out);
	if (w->aggregator && !rc)
		rc = tl_aggregator_metrics(w->aggregator, out);
	if (w->archiver && !rc)
		rc = tl_archiver_metrics(w->archiver, out);
	return rc;
}

int tl_wire_api(struct tl_wired *w, struct tl_roles *rs)
{
	struct tl_api_opts o = {
	    .addr = w->s->api,
	    .db_uri = w->s->db,
	    .default_source = strcmp(w->s->read_source, "batch") ? TL_SOURCE_REALTIME : TL_SOURCE_BATCH,
	    .live_interval_ms = 100,
	    .extra_metrics = extra_metrics,
	    .extra_metrics_arg = w,
	};
	http_limits(w->s, &o.limits);
	int rc;
	int64_t backoff = 100;
	while ((rc = tl_api_create(&o, &w->api)) == -TL_EUNAVAIL)
		if (wait_for_db(w, "api", &backoff))
			return 1;
	if (rc) {
		tl_error("api on %s: %s", w->s->api, tl_strerror(rc));
		return 1;
	}
	tl_roles_add(rs, "api", run_api, stop_api, w->api);
	return 0;
}

int tl_wire_archiver(struct tl_wired *w, struct tl_roles *rs)
{
	struct tl_archiver_opts o = {
	    .stream = w->stream,
	    .dir = w->s->archive_dir,
	    .roll_bytes = w->s->archive_roll_bytes,
	    .roll_interval_ms = w->s->archive_roll_interval_ms,
	};
	if (partitions(w, TL_TOPIC_EVENTS, &o.partitions))
		return 1;
	int rc = tl_archiver_create(&o, &w->archiver);
	if (rc) {
		if (rc == -TL_ELOCKED)
			tl_error("archiver on %s: another archiver holds these partitions",
			         w->s->archive_dir);
		else
			tl_error("archiver on %s: %s", w->s->archive_dir, tl_strerror(rc));
		return 1;
	}
	tl_roles_add(rs, "archiver", run_archiver, stop_archiver, w->archiver);
	return 0;
}

void tl_wire_reload(void *arg)
{
	struct tl_wire_reload *r = arg;
	struct tl_settings s;
	struct tl_config_result res;
	char err[512];
	memset(&s, 0, sizeof s);
	if (tl_config_load(&s, tl_settings_table, tl_settings_count, r->flags, r->argc, r->argv, &res, err,
	                   sizeof err)) {
		tl_warn("SIGHUP: settings not reloaded: %s", err);
	} else if (strcmp(s.read_source, "realtime") && strcmp(s.read_source, "batch")) {
		tl_warn("SIGHUP: read_source must be realtime or batch, not '%s'; unchanged", s.read_source);
	} else if (r->w->api) {
		bool batch = !strcmp(s.read_source, "batch");
		tl_api_set_default_source(r->w->api, batch ? TL_SOURCE_BATCH : TL_SOURCE_REALTIME);
		tl_info("SIGHUP: the API now serves %s by default", batch ? "batch" : "realtime");
	}
	tl_settings_free(&s);
}

void tl_wire_interrupt(void *arg)
{
	struct tl_wired *w = arg;
	tl_stream_interrupt(w->stream);
}

void tl_wire_destroy(struct tl_wired *w)
{
	tl_collector_destroy(w->collector);
	tl_enricher_destroy(w->enricher);
	tl_aggregator_destroy(w->aggregator);
	tl_api_destroy(w->api);
	tl_archiver_destroy(w->archiver);
	tl_stream_close(w->stream);
	memset(w, 0, sizeof *w);
}
