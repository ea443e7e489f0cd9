#include "core/clock.h"

#include "core/err.h"

#include <stdio.h>
#include <time.h>

int64_t tl_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t tl_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int tl_cond_init_mono(pthread_cond_t *c)
{
	pthread_condattr_t a;
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	int r = pthread_cond_init(c, &a);
	pthread_condattr_destroy(&a);
	return r;
}

void tl_mono_deadline(struct timespec *ts, int64_t ms_from_now)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms_from_now / 1000;
	ts->tv_nsec += (ms_from_now % 1000) * 1000000;
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

int64_t tl_mono_ms(void)
{
	return tl_mono_ns() / 1000000;
}

/* Howard Hinnant's civil-calendar algorithms (public domain formulas). */
int64_t tl_days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	const int64_t era = (y >= 0 ? y : y - 399) / 400;
	const unsigned yoe = (unsigned)(y - era * 400);
	const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

void tl_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	z += 719468;
	const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	const unsigned doe = (unsigned)(z - era * 146097);
	const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	const unsigned mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int digits(const char *s, size_t n, int *out)
{
	int v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return 0;
}

int tl_time_parse_iso(const char *s, size_t len, int64_t *ms_out)
{
	int y, mo, d, h = 0, mi = 0, se = 0;
	if (len < 10 || digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &mo) || s[7] != '-' ||
	    digits(s + 8, 2, &d))
		return -TL_EINVAL;
	if (mo < 1 || mo > 12 || d < 1 || d > 31)
		return -TL_EINVAL;
	size_t i = 10;
	int64_t frac_ms = 0;
	int64_t offset_s = 0;
	if (i < len) {
		if ((s[i] != 'T' && s[i] != 't' && s[i] != ' ') || len < i + 9)
			return -TL_EINVAL;
		if (digits(s + i + 1, 2, &h) || s[i + 3] != ':' || digits(s + i + 4, 2, &mi) ||
		    s[i + 6] != ':' || digits(s + i + 7, 2, &se))
			return -TL_EINVAL;
		if (h > 23 || mi > 59 || se > 60)
			return -TL_EINVAL;
		i += 9;
		if (i < len && s[i] == '.') {
			i++;
			size_t nd = 0;
			int64_t scale = 100;
			while (i < len && s[i] >= '0' && s[i] <= '9') {
				if (nd < 3) {
					frac_ms += (s[i] - '0') * scale;
					scale /= 10;
				}
				nd++;
				i++;
			}
			if (nd == 0 || nd > 9)
				return -TL_EINVAL;
		}
		if (i >= len)
			return -TL_EINVAL; /* a time needs a zone */
		if ((s[i] == 'Z' || s[i] == 'z') && i + 1 == len) {
			i++;
		} else if ((s[i] == '+' || s[i] == '-') && len == i + 6 && s[i + 3] == ':') {
			int oh, om;
			if (digits(s + i + 1, 2, &oh) || digits(s + i + 4, 2, &om) || oh > 23 || om > 59)
				return -TL_EINVAL;
			offset_s = (int64_t)(oh * 3600 + om * 60) * (s[i] == '+' ? 1 : -1);
			i = len;
		} else {
			return -TL_EINVAL;
		}
	}
	/* reject day 31 of a 30-day month and similar */
	int64_t days = tl_days_from_civil(y, (unsigned)mo, (unsigned)d);
	int64_t cy;
	unsigned cm, cd;
	tl_civil_from_days(days, &cy, &cm, &cd);
	if (cy != y || (int)cm != mo || (int)cd != d)
		return -TL_EINVAL;
	int64_t secs = days * 86400 + h * 3600 + mi * 60 + se - offset_s;
	*ms_out = secs * 1000 + frac_ms;
	return TL_OK;
}

static size_t format(int64_t ms, char *buf, size_t cap, int with_ms)
{
	/* clamp to years 0001..9999 so the arithmetic below cannot overflow */
	if (ms < -62135596800000LL)
		ms = -62135596800000LL;
	if (ms > 253402300799999LL)
		ms = 253402300799999LL;
	int64_t secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
	int64_t msr = ms - secs * 1000;
	int64_t days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400;
	int64_t sod = secs - days * 86400;
	int64_t y;
	unsigned m, d;
	tl_civil_from_days(days, &y, &m, &d);
	int n;
	if (with_ms)
		n = snprintf(buf, cap, "%04lld-%02u-%02uT%02lld:%02lld:%02lld.%03lldZ", (long long)y, m, d,
		             (long long)(sod / 3600), (long long)(sod / 60 % 60), (long long)(sod % 60),
		             (long long)msr);
	else
		n = snprintf(buf, cap, "%04lld-%02u-%02uT%02lld:%02lld:%02lldZ", (long long)y, m, d,
		             (long long)(sod / 3600), (long long)(sod / 60 % 60), (long long)(sod % 60));
	return n < 0 ? 0 : (size_t)n;
}

size_t tl_time_format_iso(int64_t ms, char *buf, size_t cap)
{
	return format(ms, buf, cap, 1);
}

size_t tl_time_format_iso_s(int64_t ms, char *buf, size_t cap)
{
	return format(ms, buf, cap, 0);
}
