/* prom.c — reading the few Prometheus text lines the benchmarks follow
 * (counters and the lag histogram of the API's /metrics), and quantiles of
 * a histogram's growth between two readings. */
#include "bench/bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Finds the line starting with name followed by a space; returns the value
 * text after it or NULL. */
static const char *find_line(const char *text, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = text; p && *p;) {
		if (strncmp(p, name, n) == 0 && p[n] == ' ')
			return p + n + 1;
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return NULL;
}

double tl_bench_prom_value(const char *text, const char *name)
{
	const char *v = text ? find_line(text, name) : NULL;
	if (!v)
		return -1;
	char *end;
	double d = strtod(v, &end);
	return end == v ? -1 : d;
}

int tl_bench_prom_hist(const char *text, const char *name, struct tl_bench_hist *h)
{
	memset(h, 0, sizeof *h);
	if (!text)
		return -TL_ENOTFOUND;
	char prefix[160];
	size_t pn = (size_t)snprintf(prefix, sizeof prefix, "%s_bucket{le=\"", name);
	if (pn >= sizeof prefix)
		return -TL_EINVAL;
	for (const char *p = text; p && *p && h->n < TL_BENCH_HIST_MAX;) {
		if (strncmp(p, prefix, pn) == 0) {
			const char *le = p + pn;
			double bound;
			if (strncmp(le, "+Inf", 4) == 0) {
				bound = INFINITY;
			} else {
				char *e;
				bound = strtod(le, &e);
				if (e == le)
					return -TL_EINVAL;
			}
			const char *sp = strchr(le, ' ');
			if (!sp)
				return -TL_EINVAL;
			h->le[h->n] = bound;
			h->cum[h->n] = strtod(sp + 1, NULL);
			h->n++;
		}
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	if (!h->n)
		return -TL_ENOTFOUND;
	char key[160];
	snprintf(key, sizeof key, "%s_sum", name);
	h->sum = tl_bench_prom_value(text, key);
	snprintf(key, sizeof key, "%s_count", name);
	h->count = tl_bench_prom_value(text, key);
	return TL_OK;
}

/* The q-quantile of cumulative counts cum over bounds le (n buckets),
 * interpolated linearly inside its bucket (as Prometheus's
 * histogram_quantile does); *le_out = the bucket's upper bound. */
static double quantile(const double *le, const double *cum, int n, double q, double *le_out)
{
	double total = cum[n - 1];
	if (total <= 0) {
		*le_out = 0;
		return 0;
	}
	double rank = q * total;
	for (int i = 0; i < n; i++) {
		if (cum[i] < rank)
			continue;
		double lo = i ? le[i - 1] : 0, below = i ? cum[i - 1] : 0;
		double hi = le[i];
		*le_out = hi;
		if (isinf(hi)) /* above the last finite bound: report that bound */
			return lo;
		double inb = cum[i] - below;
		return inb > 0 ? lo + (hi - lo) * (rank - below) / inb : hi;
	}
	*le_out = le[n - 1];
	return le[n - 1];
}

void tl_bench_hist_lag(const struct tl_bench_hist *a, const struct tl_bench_hist *b, struct tl_bench_lag *out)
{
	memset(out, 0, sizeof *out);
	if (!b->n || (a->n && a->n != b->n))
		return;
	double cum[TL_BENCH_HIST_MAX];
	for (int i = 0; i < b->n; i++)
		cum[i] = b->cum[i] - (a->n ? a->cum[i] : 0);
	double count = cum[b->n - 1];
	out->count = count > 0 ? (uint64_t)count : 0;
	if (count <= 0)
		return;
	double le;
	out->p50 = quantile(b->le, cum, b->n, 0.50, &le);
	out->p90 = quantile(b->le, cum, b->n, 0.90, &le);
	out->p99 = quantile(b->le, cum, b->n, 0.99, &le);
	out->p99_le = le;
	out->mean = (b->sum - (a->n ? a->sum : 0)) / count;
}
