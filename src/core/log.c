#include "core/log.h"

#include "core/clock.h"
#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static enum tl_log_level min_level = TL_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void tl_log_set_level(enum tl_log_level lvl)
{
	min_level = lvl;
}

int tl_log_level_parse(const char *s, enum tl_log_level *out)
{
	for (int i = 0; i < 4; i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*out = (enum tl_log_level)i;
			return TL_OK;
		}
	}
	return -TL_EINVAL;
}

void tl_log(enum tl_log_level lvl, const char *fmt, ...)
{
	if (lvl < min_level)
		return;
	char line[2048];
	char ts[TL_TIME_ISO_MAX];
	tl_time_format_iso(tl_now_ms(), ts, sizeof ts);
	int n = snprintf(line, sizeof line, "%s %s ", ts, level_names[lvl]);
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
	va_end(ap);
	size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
	if (len > sizeof line - 2)
		len = sizeof line - 2;
	line[len++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, len);
	(void)w;
}
