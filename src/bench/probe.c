/* probe.c — `tally bench lag`: event → queryable, measured from outside.
 *
 * Each probe posts one `sent` event of a marker campaign to the collector and
 * polls the API's GET /v1/campaigns/<marker>/metrics until counts.sent shows
 * it. Lag = from just before the POST to the end of the first poll that sees
 * the event: an upper bound that includes the collector's durable write and
 * one poll (the mean poll time is reported as the resolution). Probes are
 * spaced by a jittered pause so that they do not lock onto the aggregator's
 * cycle. */
#include "bench/bench.h"

#include "core/clock.h"

#include <curl/curl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void tl_bench_probe_defaults(struct tl_bench_probe_opts *o)
{
	memset(o, 0, sizeof *o);
	o->probes = 200;
	o->interval_ms = 100;
	o->poll_us = 1000;
	o->timeout_ms = 10000;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *arg)
{
	size_t n = size * nmemb;
	return tl_buf_append(arg, p, n) ? 0 : n;
}

static void pause_us(int64_t us)
{
	if (us <= 0)
		return;
	struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
	nanosleep(&ts, NULL);
}

/* counts.sent of a campaign metrics answer; -1 when absent. */
static long long sent_of(const char *body)
{
	const char *c = body ? strstr(body, "\"counts\":{") : NULL;
	const char *s = c ? strstr(c, "\"sent\":") : NULL;
	return s ? strtoll(s + 7, NULL, 10) : -1;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(const double *v, int n, double q)
{
	if (n <= 0)
		return 0;
	int i = (int)ceil(q * n);
	return v[i ? i - 1 : 0];
}

int tl_bench_probe_run(const struct tl_bench_probe_opts *o, struct tl_bench_probe_result *res)
{
	memset(res, 0, sizeof *res);
	if (!o->collector || !o->api || !o->api_key || o->probes < 1)
		return -TL_EINVAL;
	int rc = -TL_ENOMEM;
	CURL *post = curl_easy_init(), *get = curl_easy_init();
	struct curl_slist *ph = NULL, *gh = NULL;
	struct tl_buf body, line;
	tl_buf_init(&body, 0);
	tl_buf_init(&line, 0);
	double *ack = calloc((size_t)o->probes, sizeof *ack), *vis = calloc((size_t)o->probes, sizeof *vis);
	char campaign[80], url[600], hdr[256];
	if (!post || !get || !ack || !vis)
		goto out;
	uint64_t rnd = (uint64_t)tl_mono_ns() ^ ((uint64_t)tl_now_ms() << 20);
	if (o->campaign)
		snprintf(campaign, sizeof campaign, "%s", o->campaign);
	else
		snprintf(campaign, sizeof campaign, "lag-probe-%016llx", (unsigned long long)rnd);
	snprintf(hdr, sizeof hdr, "Authorization: Bearer %s", o->api_key);
	struct curl_slist *t;
	if (!(ph = curl_slist_append(NULL, hdr)) || !(t = curl_slist_append(ph, "Expect:")))
		goto out;
	if (!(t = curl_slist_append(ph, "Content-Type: application/x-ndjson")))
		goto out;
	if (!(gh = curl_slist_append(NULL, hdr)))
		goto out;
	CURL *both[2] = {post, get};
	for (int i = 0; i < 2; i++) {
		curl_easy_setopt(both[i], CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(both[i], CURLOPT_TCP_NODELAY, 1L);
		curl_easy_setopt(both[i], CURLOPT_TIMEOUT_MS, 30000L);
		curl_easy_setopt(both[i], CURLOPT_WRITEFUNCTION, on_body);
		curl_easy_setopt(both[i], CURLOPT_WRITEDATA, &body);
	}
	snprintf(url, sizeof url, "%s/v1/events", o->collector);
	curl_easy_setopt(post, CURLOPT_URL, url);
	curl_easy_setopt(post, CURLOPT_HTTPHEADER, ph);
	snprintf(url, sizeof url, "%s/v1/campaigns/%s/metrics", o->api, campaign);
	curl_easy_setopt(get, CURLOPT_URL, url);
	curl_easy_setopt(get, CURLOPT_HTTPHEADER, gh);

	double poll_ms_sum = 0;
	long long polls = 0;
	int n = 0;
	for (int k = 0; k < o->probes; k++) {
		tl_buf_reset(&line);
		char ts[TL_TIME_ISO_MAX];
		tl_time_format_iso(tl_now_ms(), ts, sizeof ts);
		if (tl_buf_printf(
		        &line,
		        "{\"type\":\"sent\",\"campaign\":\"%s\",\"recipient\":\"probe-%d\",\"id\":\"%s-%d\","
		        "\"ts\":\"%s\"}\n",
		        campaign, k, campaign, k, ts))
			goto out;
		curl_easy_setopt(post, CURLOPT_POSTFIELDS, line.data);
		curl_easy_setopt(post, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)line.len);
		tl_buf_reset(&body);
		int64_t t0 = tl_mono_ns();
		CURLcode cc = curl_easy_perform(post);
		long status = 0;
		curl_easy_getinfo(post, CURLINFO_RESPONSE_CODE, &status);
		int64_t t1 = tl_mono_ns();
		if (cc != CURLE_OK || status != 202) {
			if (o->progress)
				fprintf(o->progress, "probe %d: POST %s status %ld: %.200s\n", k,
				        cc == CURLE_OK ? "answered" : curl_easy_strerror(cc), status,
				        body.data ? body.data : "");
			rc = -TL_EUNAVAIL;
			goto out;
		}
		int64_t deadline = t0 + (int64_t)o->timeout_ms * 1000000;
		bool seen = false;
		int64_t tv = 0;
		while (!seen && tl_mono_ns() < deadline) {
			tl_buf_reset(&body);
			int64_t p0 = tl_mono_ns();
			cc = curl_easy_perform(get);
			tv = tl_mono_ns();
			poll_ms_sum += (double)(tv - p0) / 1e6;
			polls++;
			if (cc == CURLE_OK && sent_of(body.data) >= (long long)(n + 1))
				seen = true;
			else
				pause_us(o->poll_us);
		}
		if (!seen) {
			res->timeouts++;
			if (o->progress)
				fprintf(o->progress, "probe %d: not visible after %d ms\n", k, o->timeout_ms);
			rc = -TL_ETIMEDOUT;
			goto out;
		}
		ack[n] = (double)(t1 - t0) / 1e6;
		vis[n] = (double)(tv - t0) / 1e6;
		n++;
		if (o->progress && (k + 1) % 50 == 0)
			fprintf(o->progress, "probe %d: ack %.1f ms, visible %.1f ms\n", k + 1, ack[n - 1],
			        vis[n - 1]);
		/* jittered pause: interval × [0.5, 1.5) */
		rnd = rnd * 6364136223846793005ULL + 1442695040888963407ULL;
		double jitter = 0.5 + (double)(rnd >> 11) / 9007199254740992.0;
		pause_us((int64_t)(o->interval_ms * 1000.0 * jitter));
	}
	res->probes = n;
	qsort(ack, (size_t)n, sizeof *ack, cmp_double);
	qsort(vis, (size_t)n, sizeof *vis, cmp_double);
	res->ack_p50_ms = pct(ack, n, 0.5);
	res->ack_p99_ms = pct(ack, n, 0.99);
	res->vis_p50_ms = pct(vis, n, 0.5);
	res->vis_p90_ms = pct(vis, n, 0.9);
	res->vis_p99_ms = pct(vis, n, 0.99);
	res->vis_max_ms = n ? vis[n - 1] : 0;
	res->poll_mean_ms = polls ? poll_ms_sum / (double)polls : 0;
	rc = TL_OK;
out:
	curl_easy_cleanup(post);
	curl_easy_cleanup(get);
	curl_slist_free_all(ph);
	curl_slist_free_all(gh);
	tl_buf_free(&body);
	tl_buf_free(&line);
	free(ack);
	free(vis);
	return rc;
}
