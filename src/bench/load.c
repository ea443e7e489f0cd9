/* load.c — `tally bench load`: NDJSON batches against POST /v1/events at a
 * fixed or maximal rate, with the pipeline followed once per second (see
 * bench.h).
 *
 * One curl multi handle drives `connections` easy handles, each reused for
 * request after request so its connection stays alive; a batch is generated
 * into a handle's own buffer when the handle is free. One more handle
 * scrapes the API's /metrics every second without blocking the senders.
 *
 * The figures cover a window: from the first scrape at or after the warm-up
 * to the last scrape before sending stops. Accepted = events answered 202;
 * processed = tally_aggregate_events_total + skipped dead records (the
 * aggregator's progress), relative to the reading before the load; backlog =
 * accepted - processed. A rate is sustained when the backlog does not grow
 * over the window. */
#include "bench/bench.h"

#include "core/clock.h"

#include <curl/curl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define SNIPPET 200

struct slot {
	CURL *easy;
	struct tl_buf body;
	size_t events;
	int64_t start_ns;
	bool busy;
	char resp[SNIPPET + 1];
	size_t resp_len;
	char err[CURL_ERROR_SIZE];
};

struct scrape {
	CURL *easy;
	struct tl_buf body;
	bool busy;
	char url[512];
};

/* What is kept of each scrape besides the public sample. */
struct reading {
	struct tl_bench_sample s;
	double gen_cpu;
	struct tl_bench_hist lag;
	bool has_lag;
	double batches; /* tally_aggregate_batches_total (-1 = unknown) */
};

struct run {
	const struct tl_bench_load_opts *o;
	struct tl_bench_load_result *res;
	CURLM *multi;
	struct slot *slots;
	int n_slots;
	struct scrape sc;
	struct curl_slist *headers;
	char events_url[512];
	struct tl_bench_gen gen;
	int64_t t0_ns;
	double base_processed; /* the aggregator's count before the load */
	double cpu0;           /* this process's CPU seconds at t0 */
	double server_cpu0;
	struct reading *reads;
	size_t n_reads, cap_reads;
	double *lat_ms; /* POST answer times of requests started in the window */
	size_t n_lat, cap_lat;
	int64_t window_start_ns, window_end_ns;
	long clk_tck, page_kb;
};

void tl_bench_load_defaults(struct tl_bench_load_opts *o)
{
	memset(o, 0, sizeof *o);
	o->seconds = 30;
	o->warmup = 5;
	o->batch = 1000;
	o->connections = 8;
	o->drain_timeout = 60;
	tl_bench_mix_defaults(&o->mix);
}

static double now_s(const struct run *r)
{
	return (double)(tl_mono_ns() - r->t0_ns) / 1e9;
}

static double self_cpu(void)
{
	struct rusage u;
	getrusage(RUSAGE_SELF, &u);
	return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec / 1e6 + (double)u.ru_stime.tv_sec +
	       (double)u.ru_stime.tv_usec / 1e6;
}

/* Server RSS (kB) and CPU seconds from /proc; -1 when unknown. */
static void server_stat(const struct run *r, int64_t *rss_kb, double *cpu)
{
	*rss_kb = -1;
	*cpu = -1;
	if (r->o->server_pid <= 0)
		return;
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/statm", r->o->server_pid);
	FILE *f = fopen(path, "r");
	if (f) {
		long size, res;
		if (fscanf(f, "%ld %ld", &size, &res) == 2)
			*rss_kb = (int64_t)res * r->page_kb;
		fclose(f);
	}
	snprintf(path, sizeof path, "/proc/%d/stat", r->o->server_pid);
	f = fopen(path, "r");
	if (f) {
		size_t n = fread(buf, 1, sizeof buf - 1, f);
		buf[n] = '\0';
		fclose(f);
		/* fields after the command name "(…)": state is field 3, utime 14, stime 15 */
		const char *p = strrchr(buf, ')');
		unsigned long long ut, st;
		if (p &&
		    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) == 2)
			*cpu = (double)(ut + st) / (double)r->clk_tck;
	}
}

static size_t on_resp(char *p, size_t size, size_t nmemb, void *arg)
{
	struct slot *s = arg;
	size_t n = size * nmemb, room = SNIPPET - s->resp_len, take = n < room ? n : room;
	memcpy(s->resp + s->resp_len, p, take);
	s->resp_len += take;
	s->resp[s->resp_len] = '\0';
	return n;
}

static size_t on_scrape(char *p, size_t size, size_t nmemb, void *arg)
{
	struct scrape *s = arg;
	size_t n = size * nmemb;
	return tl_buf_append(&s->body, p, n) ? 0 : n;
}

static int start_batch(struct run *r, struct slot *s)
{
	tl_buf_reset(&s->body);
	int rc = tl_bench_gen_batch(&r->gen, (size_t)r->o->batch, tl_now_ms(), &s->body);
	if (rc)
		return rc;
	s->events = (size_t)r->o->batch;
	s->resp_len = 0;
	s->resp[0] = '\0';
	s->err[0] = '\0';
	curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, s->body.data);
	curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)s->body.len);
	s->start_ns = tl_mono_ns();
	s->busy = true;
	return curl_multi_add_handle(r->multi, s->easy) == CURLM_OK ? TL_OK : -TL_ENOMEM;
}

static void start_scrape(struct run *r)
{
	tl_buf_reset(&r->sc.body);
	r->sc.busy = true;
	if (curl_multi_add_handle(r->multi, r->sc.easy) != CURLM_OK)
		r->sc.busy = false;
}

static int add_lat(struct run *r, double ms)
{
	if (r->n_lat == r->cap_lat) {
		size_t cap = r->cap_lat ? r->cap_lat * 2 : 4096;
		double *p = realloc(r->lat_ms, cap * sizeof *p);
		if (!p)
			return -TL_ENOMEM;
		r->lat_ms = p;
		r->cap_lat = cap;
	}
	r->lat_ms[r->n_lat++] = ms;
	return TL_OK;
}

static void batch_done(struct run *r, struct slot *s, CURLcode cc)
{
	long status = 0;
	curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
	int64_t end = tl_mono_ns();
	struct tl_bench_load_result *res = r->res;
	res->requests++;
	if (cc == CURLE_OK && status == 202) {
		res->accepted += s->events;
	} else if (cc == CURLE_OK && status == 503) {
		res->rejected_503++;
	} else {
		res->errors++;
		if (!res->first_error[0])
			snprintf(res->first_error, sizeof res->first_error, "%.40s: status %ld %.180s",
			         cc == CURLE_OK ? "answer" : curl_easy_strerror(cc), status,
			         cc == CURLE_OK ? s->resp : s->err);
	}
	if (r->window_start_ns && s->start_ns >= r->window_start_ns && !r->window_end_ns)
		(void)add_lat(r, (double)(end - s->start_ns) / 1e6);
	s->busy = false;
}

static int add_reading(struct run *r, const struct reading *rd)
{
	if (r->n_reads == r->cap_reads) {
		size_t cap = r->cap_reads ? r->cap_reads * 2 : 256;
		struct reading *p = realloc(r->reads, cap * sizeof *p);
		if (!p)
			return -TL_ENOMEM;
		r->reads = p;
		r->cap_reads = cap;
	}
	r->reads[r->n_reads++] = *rd;
	return TL_OK;
}

/* Reads the aggregator's progress out of a /metrics text: events folded
 * plus dead records skipped; -1 when absent. */
static double processed_of(const char *text)
{
	double ev = tl_bench_prom_value(text, "tally_aggregate_events_total");
	if (ev < 0)
		return -1;
	double dead = tl_bench_prom_value(text, "tally_aggregate_skipped_total{reason=\"dead\"}");
	return ev + (dead > 0 ? dead : 0);
}

static void print_reading(const struct run *r, const struct reading *rd, const struct reading *prev)
{
	if (!r->o->progress)
		return;
	double dt = prev ? rd->s.t - prev->s.t : rd->s.t;
	if (dt <= 0)
		return;
	double acc = ((double)rd->s.accepted - (prev ? (double)prev->s.accepted : 0)) / dt;
	fprintf(r->o->progress, "%6.1f s  accepted %8.0f ev/s", rd->s.t, acc);
	if (rd->s.processed >= 0) {
		double proc = ((double)rd->s.processed -
		               (prev && prev->s.processed >= 0 ? (double)prev->s.processed : 0)) /
		              dt;
		fprintf(r->o->progress, "  processed %8.0f ev/s  backlog %9lld", proc,
		        (long long)((int64_t)rd->s.accepted - rd->s.processed));
	}
	if (rd->s.rss_kb >= 0)
		fprintf(r->o->progress, "  rss %7.1f MiB", (double)rd->s.rss_kb / 1024.0);
	if (rd->s.server_cpu >= 0 && prev && prev->s.server_cpu >= 0)
		fprintf(r->o->progress, "  server cpu %4.2f", (rd->s.server_cpu - prev->s.server_cpu) / dt);
	if (prev)
		fprintf(r->o->progress, "  gen cpu %4.2f", (rd->gen_cpu - prev->gen_cpu) / dt);
	fputc('\n', r->o->progress);
	fflush(r->o->progress);
}

/* A scrape answered (or, without an API, a tick): records a reading. */
static int take_reading(struct run *r, const char *text)
{
	struct reading rd;
	memset(&rd, 0, sizeof rd);
	rd.s.t = now_s(r);
	rd.s.accepted = r->res->accepted;
	rd.s.processed = -1;
	if (text) {
		double p = processed_of(text);
		if (p >= 0)
			rd.s.processed = (int64_t)(p - r->base_processed);
		rd.has_lag = tl_bench_prom_hist(text, "tally_event_lag_ms", &rd.lag) == 0;
		rd.batches = tl_bench_prom_value(text, "tally_aggregate_batches_total");
	} else {
		rd.batches = -1;
	}
	server_stat(r, &rd.s.rss_kb, &rd.s.server_cpu);
	if (rd.s.server_cpu >= 0)
		rd.s.server_cpu -= r->server_cpu0;
	rd.gen_cpu = self_cpu() - r->cpu0;
	print_reading(r, &rd, r->n_reads ? &r->reads[r->n_reads - 1] : NULL);
	return add_reading(r, &rd);
}

/* Completes finished transfers. */
static int reap(struct run *r)
{
	CURLMsg *m;
	int left;
	int rc = TL_OK;
	while ((m = curl_multi_info_read(r->multi, &left))) {
		if (m->msg != CURLMSG_DONE)
			continue;
		CURL *e = m->easy_handle;
		CURLcode cc = m->data.result;
		curl_multi_remove_handle(r->multi, e);
		if (e == r->sc.easy) {
			r->sc.busy = false;
			long status = 0;
			curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
			int trc = take_reading(r, cc == CURLE_OK && status == 200 ? r->sc.body.data : NULL);
			if (trc)
				rc = trc;
			continue;
		}
		for (int i = 0; i < r->n_slots; i++)
			if (r->slots[i].easy == e)
				batch_done(r, &r->slots[i], cc);
	}
	return rc;
}

/* Blocking GET into out (for the checks before the load). Returns the status, or -1. */
static long get_blocking(CURL *e, const char *url, struct tl_buf *out)
{
	tl_buf_reset(out);
	curl_easy_setopt(e, CURLOPT_URL, url);
	if (curl_easy_perform(e) != CURLE_OK)
		return -1;
	long status = 0;
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
	return status;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double q)
{
	if (!n)
		return 0;
	size_t i = (size_t)ceil(q * (double)n);
	return v[i ? i - 1 : 0];
}

/* The window's figures from the readings. */
static void summarize(struct run *r)
{
	struct tl_bench_load_result *res = r->res;
	const struct tl_bench_load_opts *o = r->o;
	size_t a = SIZE_MAX, b = SIZE_MAX;
	for (size_t i = 0; i < r->n_reads; i++) {
		if (r->reads[i].s.t > o->seconds + 0.5)
			break;
		if (a == SIZE_MAX && r->reads[i].s.t >= o->warmup)
			a = i;
		b = i;
	}
	if (a == SIZE_MAX || b == SIZE_MAX || b <= a)
		return;
	const struct reading *ra = &r->reads[a], *rb = &r->reads[b];
	double dt = rb->s.t - ra->s.t;
	res->window_s = dt;
	res->accepted_per_s = (double)(rb->s.accepted - ra->s.accepted) / dt;
	if (ra->s.processed >= 0 && rb->s.processed >= 0) {
		res->processed_per_s = (double)(rb->s.processed - ra->s.processed) / dt;
		res->backlog_start = (double)ra->s.accepted - (double)ra->s.processed;
		res->backlog_end = (double)rb->s.accepted - (double)rb->s.processed;
		/* least-squares slope of the backlog over the window */
		double n = 0, st = 0, sb = 0, stt = 0, stb = 0;
		for (size_t i = a; i <= b; i++) {
			if (r->reads[i].s.processed < 0)
				continue;
			double t = r->reads[i].s.t,
			       bl = (double)r->reads[i].s.accepted - (double)r->reads[i].s.processed;
			n++;
			st += t;
			sb += bl;
			stt += t * t;
			stb += t * bl;
		}
		double den = n * stt - st * st;
		res->backlog_growth_per_s = den > 0 ? (n * stb - st * sb) / den : 0;
	}
	res->gen_cpu_s = rb->gen_cpu - ra->gen_cpu;
	res->gen_cpu_share = res->gen_cpu_s / dt;
	res->server_cpu_share =
	    ra->s.server_cpu >= 0 && rb->s.server_cpu >= 0 ? (rb->s.server_cpu - ra->s.server_cpu) / dt : -1;
	if (ra->batches >= 0 && rb->batches > ra->batches) {
		res->agg_batches_per_s = (rb->batches - ra->batches) / dt;
		res->agg_events_per_batch = res->processed_per_s / res->agg_batches_per_s;
	}
	if (ra->has_lag && rb->has_lag)
		tl_bench_hist_lag(&ra->lag, &rb->lag, &res->lag);
	qsort(r->lat_ms, r->n_lat, sizeof *r->lat_ms, cmp_double);
	res->post_p50_ms = pct(r->lat_ms, r->n_lat, 0.50);
	res->post_p99_ms = pct(r->lat_ms, r->n_lat, 0.99);
}

static void setup_easy(CURL *e, struct curl_slist *headers)
{
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 60000L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	if (headers)
		curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
}

static void run_free(struct run *r)
{
	for (int i = 0; r->slots && i < r->n_slots; i++) {
		if (r->slots[i].easy) {
			if (r->slots[i].busy)
				curl_multi_remove_handle(r->multi, r->slots[i].easy);
			curl_easy_cleanup(r->slots[i].easy);
		}
		tl_buf_free(&r->slots[i].body);
	}
	free(r->slots);
	if (r->sc.easy) {
		if (r->sc.busy)
			curl_multi_remove_handle(r->multi, r->sc.easy);
		curl_easy_cleanup(r->sc.easy);
	}
	tl_buf_free(&r->sc.body);
	if (r->multi)
		curl_multi_cleanup(r->multi);
	curl_slist_free_all(r->headers);
	free(r->reads);
	free(r->lat_ms);
}

static bool any_busy(const struct run *r)
{
	for (int i = 0; i < r->n_slots; i++)
		if (r->slots[i].busy)
			return true;
	return false;
}

int tl_bench_load_run(const struct tl_bench_load_opts *o, struct tl_bench_load_result *res)
{
	memset(res, 0, sizeof *res);
	res->drain_s = -1;
	res->server_cpu_share = -1;
	if (!o->collector || !o->api_key || o->batch < 1 || o->connections < 1 || o->seconds <= 0 ||
	    o->warmup < 0 || o->warmup >= o->seconds || o->rate < 0)
		return -TL_EINVAL;
	struct run r;
	memset(&r, 0, sizeof r);
	r.o = o;
	r.res = res;
	r.clk_tck = sysconf(_SC_CLK_TCK);
	r.page_kb = sysconf(_SC_PAGESIZE) / 1024;
	int rc = -TL_ENOMEM;
	char hdr[256];
	if ((size_t)snprintf(hdr, sizeof hdr, "Authorization: Bearer %s", o->api_key) >= sizeof hdr) {
		rc = -TL_EINVAL;
		goto out;
	}
	static const char *const fixed[] = {"Content-Type: application/x-ndjson",
	                                    "Expect:" /* no 100-continue round trip */};
	if (!(r.headers = curl_slist_append(NULL, hdr)))
		goto out;
	for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
		struct curl_slist *h = curl_slist_append(r.headers, fixed[i]);
		if (!h)
			goto out;
		r.headers = h;
	}
	if (!(r.multi = curl_multi_init()))
		goto out;
	r.n_slots = o->connections;
	if (!(r.slots = calloc((size_t)r.n_slots, sizeof *r.slots)))
		goto out;
	snprintf(r.events_url, sizeof r.events_url, "%s/v1/events", o->collector);
	for (int i = 0; i < r.n_slots; i++) {
		struct slot *s = &r.slots[i];
		tl_buf_init(&s->body, 0);
		if (!(s->easy = curl_easy_init()))
			goto out;
		setup_easy(s->easy, r.headers);
		curl_easy_setopt(s->easy, CURLOPT_URL, r.events_url);
		curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, on_resp);
		curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, s);
		curl_easy_setopt(s->easy, CURLOPT_ERRORBUFFER, s->err);
		curl_easy_setopt(s->easy, CURLOPT_PRIVATE, s);
	}
	tl_buf_init(&r.sc.body, 0);
	if (!(r.sc.easy = curl_easy_init()))
		goto out;
	setup_easy(r.sc.easy, NULL);
	curl_easy_setopt(r.sc.easy, CURLOPT_WRITEFUNCTION, on_scrape);
	curl_easy_setopt(r.sc.easy, CURLOPT_WRITEDATA, &r.sc);

	/* the collector must answer; the API's first reading is the base */
	char url[512];
	snprintf(url, sizeof url, "%s/healthz", o->collector);
	rc = -TL_EUNAVAIL;
	long st = get_blocking(r.sc.easy, url, &r.sc.body);
	if (st != 200) {
		snprintf(res->first_error, sizeof res->first_error, "%.200s answered %ld", url, st);
		goto out;
	}
	if (o->api) {
		snprintf(r.sc.url, sizeof r.sc.url, "%s/metrics", o->api);
		st = get_blocking(r.sc.easy, r.sc.url, &r.sc.body);
		double base = st == 200 ? processed_of(r.sc.body.data) : -1;
		if (base < 0) {
			snprintf(res->first_error, sizeof res->first_error,
			         "%.120s: status %ld, no tally_aggregate_events_total (is this tally serve's "
			         "API?)",
			         r.sc.url, st);
			goto out;
		}
		r.base_processed = base;
		curl_easy_setopt(r.sc.easy, CURLOPT_URL, r.sc.url);
	}

	tl_bench_gen_init(&r.gen, &o->mix, o->seed ? o->seed : (uint64_t)tl_now_ms());
	r.t0_ns = tl_mono_ns();
	r.cpu0 = self_cpu();
	int64_t rss;
	server_stat(&r, &rss, &r.server_cpu0);
	if (r.server_cpu0 < 0)
		r.server_cpu0 = 0;
	rc = take_reading(&r, o->api ? r.sc.body.data : NULL);
	if (rc)
		goto out;
	if (r.reads[0].s.processed >= 0)
		r.reads[0].s.processed = 0;

	const int64_t send_end = r.t0_ns + (int64_t)(o->seconds * 1e9);
	const int64_t warm_end = r.t0_ns + (int64_t)(o->warmup * 1e9);
	const double batch_ns = o->rate > 0 ? (double)o->batch / o->rate * 1e9 : 0;
	double next_due = (double)r.t0_ns;
	int64_t next_tick = r.t0_ns + 1000000000LL;
	int64_t drain_start = 0, drain_deadline = 0;
	bool drained = false;
	for (;;) {
		int64_t now = tl_mono_ns();
		bool sending = now < send_end;
		if (!r.window_start_ns && now >= warm_end)
			r.window_start_ns = now;
		if (!sending && !r.window_end_ns)
			r.window_end_ns = now;
		for (int i = 0; sending && i < r.n_slots; i++) {
			if (r.slots[i].busy)
				continue;
			if (batch_ns > 0 && next_due > (double)now)
				break;
			if ((rc = start_batch(&r, &r.slots[i])))
				goto out;
			next_due += batch_ns;
		}
		if (now >= next_tick) {
			next_tick += drain_start ? 200000000LL : 1000000000LL;
			if (o->api) {
				if (!r.sc.busy)
					start_scrape(&r);
			} else if ((rc = take_reading(&r, NULL))) {
				goto out;
			}
		}
		int running;
		curl_multi_perform(r.multi, &running);
		if ((rc = reap(&r)))
			goto out;
		if (!sending && !any_busy(&r)) {
			if (!drain_start) {
				drain_start = tl_mono_ns();
				drain_deadline = drain_start + (int64_t)(o->drain_timeout * 1e9);
				next_tick = drain_start; /* a reading right away */
				if (!o->api || o->drain_timeout <= 0)
					break;
			}
			const struct reading *last = &r.reads[r.n_reads - 1];
			if (last->s.t * 1e9 >= (double)(drain_start - r.t0_ns) && last->s.processed >= 0 &&
			    (uint64_t)last->s.processed >= res->accepted) {
				res->drain_s =
				    (double)(r.t0_ns + (int64_t)(last->s.t * 1e9) - drain_start) / 1e9;
				if (res->drain_s < 0)
					res->drain_s = 0;
				drained = true;
			}
			if (drained || tl_mono_ns() >= drain_deadline)
				break;
		}
		int64_t wake = next_tick;
		if (sending && batch_ns > 0 && (int64_t)next_due < wake)
			wake = (int64_t)next_due;
		int64_t left_ms = (wake - tl_mono_ns()) / 1000000;
		if (left_ms < 0)
			left_ms = 0;
		if (left_ms > 100)
			left_ms = 100;
		curl_multi_poll(r.multi, NULL, 0, (int)left_ms, NULL);
	}
	summarize(&r);
	if ((res->samples = malloc((r.n_reads ? r.n_reads : 1) * sizeof *res->samples))) {
		for (size_t i = 0; i < r.n_reads; i++)
			res->samples[i] = r.reads[i].s;
		res->n_samples = r.n_reads;
	}
	rc = TL_OK;
out:
	run_free(&r);
	return rc;
}

void tl_bench_load_result_free(struct tl_bench_load_result *res)
{
	if (!res)
		return;
	free(res->samples);
	res->samples = NULL;
	res->n_samples = 0;
}

int tl_bench_load_result_json(const struct tl_bench_load_result *res, struct tl_buf *out)
{
	int rc = tl_buf_printf(
	    out,
	    "{\"window_s\":%.2f,\"accepted_per_s\":%.0f,\"processed_per_s\":%.0f,\"backlog_start\":%.0f,"
	    "\"backlog_end\":%.0f,\"backlog_growth_per_s\":%.0f,\"drain_s\":%.2f,\"requests\":%llu,"
	    "\"accepted\":%llu,\"rejected_503\":%llu,\"errors\":%llu,\"post_p50_ms\":%.2f,\"post_p99_ms\":%."
	    "2f,"
	    "\"gen_cpu_share\":%.3f,\"server_cpu_share\":%.3f,\"agg_batches_per_s\":%.1f,\"agg_events_per_"
	    "batch\":%.0f,"
	    "\"lag_ms\":{\"count\":%llu,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p99_bucket_le\":%.0f,"
	    "\"mean\":%.1f},"
	    "\"first_error\":",
	    res->window_s, res->accepted_per_s, res->processed_per_s, res->backlog_start, res->backlog_end,
	    res->backlog_growth_per_s, res->drain_s, (unsigned long long)res->requests,
	    (unsigned long long)res->accepted, (unsigned long long)res->rejected_503,
	    (unsigned long long)res->errors, res->post_p50_ms, res->post_p99_ms, res->gen_cpu_share,
	    res->server_cpu_share, res->agg_batches_per_s, res->agg_events_per_batch,
	    (unsigned long long)res->lag.count, res->lag.p50, res->lag.p90, res->lag.p99,
	    isinf(res->lag.p99_le) ? -1.0 : res->lag.p99_le, res->lag.mean);
	if (!rc)
		rc = res->first_error[0] ? tl_buf_json_str(out, res->first_error, strlen(res->first_error))
		                         : tl_buf_puts(out, "null");
	if (!rc)
		rc = tl_buf_puts(out, ",\"samples\":[");
	for (size_t i = 0; i < res->n_samples && !rc; i++) {
		const struct tl_bench_sample *s = &res->samples[i];
		rc = tl_buf_printf(out,
		                   "%s{\"t\":%.2f,\"accepted\":%llu,\"processed\":%lld,\"rss_kb\":%lld,"
		                   "\"server_cpu_s\":%.2f}",
		                   i ? "," : "", s->t, (unsigned long long)s->accepted,
		                   (long long)s->processed, (long long)s->rss_kb, s->server_cpu);
	}
	if (!rc)
		rc = tl_buf_puts(out, "]}");
	return rc;
}
