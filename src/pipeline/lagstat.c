#include "pipeline/lagstat.h"

static const int64_t bounds[TL_LAG_BUCKETS] = {1,   2,   5,    10,   20,   50,    100,   200,
                                               300, 500, 1000, 2000, 5000, 10000, 30000, 60000};

void tl_lagstat_add(struct tl_lagstat *l, int64_t ms)
{
	if (ms < 0)
		ms = 0;
	int i = 0;
	while (i < TL_LAG_BUCKETS && ms > bounds[i])
		i++;
	atomic_fetch_add_explicit(&l->bucket[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&l->count, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&l->sum_ms, (uint64_t)ms, memory_order_relaxed);
}

int tl_lagstat_prometheus(struct tl_lagstat *l, const char *name, const char *help, struct tl_buf *out)
{
	int rc = tl_buf_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
	uint64_t cum = 0;
	for (int i = 0; i <= TL_LAG_BUCKETS && !rc; i++) {
		cum += atomic_load_explicit(&l->bucket[i], memory_order_relaxed);
		if (i < TL_LAG_BUCKETS)
			rc = tl_buf_printf(out, "%s_bucket{le=\"%lld\"} %llu\n", name, (long long)bounds[i],
			                   (unsigned long long)cum);
		else
			rc = tl_buf_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n", name,
			                   (unsigned long long)cum);
	}
	if (!rc)
		rc = tl_buf_printf(out, "%s_sum %llu\n%s_count %llu\n", name,
		                   (unsigned long long)atomic_load(&l->sum_ms), name,
		                   (unsigned long long)atomic_load(&l->count));
	return rc;
}
