#include "core/config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct tl_opt *find(const struct tl_opt *all, size_t n, const char *name, size_t len)
{
	for (size_t i = 0; i < n; i++)
		if (strlen(all[i].name) == len && strncmp(all[i].name, name, len) == 0)
			return &all[i];
	return NULL;
}

static int allowed(const char *const *flags, const char *name)
{
	if (!flags)
		return 1;
	for (; *flags; flags++)
		if (strcmp(*flags, name) == 0)
			return 1;
	return 0;
}

static int parse_int(const char *s, int64_t *out, const char **rest)
{
	errno = 0;
	char *end;
	long long v = strtoll(s, &end, 10);
	if (end == s || errno)
		return -TL_EINVAL;
	*out = v;
	*rest = end;
	return TL_OK;
}

int tl_config_parse_value(enum tl_opt_type t, const char *s, int64_t *out)
{
	const char *rest;
	int64_t v;
	switch (t) {
	case TL_OPT_BOOL:
		if (!strcasecmp(s, "true") || !strcmp(s, "1") || !strcasecmp(s, "yes") ||
		    !strcasecmp(s, "on"))
			*out = 1;
		else if (!strcasecmp(s, "false") || !strcmp(s, "0") || !strcasecmp(s, "no") ||
		         !strcasecmp(s, "off"))
			*out = 0;
		else
			return -TL_EINVAL;
		return TL_OK;
	case TL_OPT_INT:
		if (parse_int(s, &v, &rest) || *rest)
			return -TL_EINVAL;
		*out = v;
		return TL_OK;
	case TL_OPT_SIZE: {
		if (parse_int(s, &v, &rest) || v < 0)
			return -TL_EINVAL;
		int64_t mul = 1;
		if (!strcasecmp(rest, "k") || !strcasecmp(rest, "kb") || !strcasecmp(rest, "kib"))
			mul = 1024;
		else if (!strcasecmp(rest, "m") || !strcasecmp(rest, "mb") || !strcasecmp(rest, "mib"))
			mul = 1024 * 1024;
		else if (!strcasecmp(rest, "g") || !strcasecmp(rest, "gb") || !strcasecmp(rest, "gib"))
			mul = 1024LL * 1024 * 1024;
		else if (*rest && strcasecmp(rest, "b"))
			return -TL_EINVAL;
		if (v > INT64_MAX / mul) /* "9223372036854775807k" */
			return -TL_EINVAL;
		*out = v * mul;
		return TL_OK;
	}
	case TL_OPT_MS: {
		if (parse_int(s, &v, &rest) || v < 0)
			return -TL_EINVAL;
		int64_t mul;
		if (!*rest || !strcmp(rest, "ms"))
			mul = 1;
		else if (!strcmp(rest, "s"))
			mul = 1000;
		else if (!strcmp(rest, "m"))
			mul = 60000;
		else if (!strcmp(rest, "h"))
			mul = 3600000;
		else if (!strcmp(rest, "d"))
			mul = 86400000;
		else
			return -TL_EINVAL;
		if (v > INT64_MAX / mul)
			return -TL_EINVAL;
		*out = v * mul;
		return TL_OK;
	}
	case TL_OPT_STR:
		return -TL_EINVAL;
	}
	return -TL_EINVAL;
}

static int set(void *obj, const struct tl_opt *o, const char *value)
{
	char *base = obj;
	if (o->type == TL_OPT_STR) {
		char **slot = (char **)(base + o->offset);
		char *dup = strdup(value ? value : "");
		if (!dup)
			return -TL_ENOMEM;
		free(*slot);
		*slot = dup;
		return TL_OK;
	}
	int64_t v = 0;
	if (value && tl_config_parse_value(o->type, value, &v))
		return -TL_EINVAL;
	if (o->type == TL_OPT_BOOL)
		*(int *)(base + o->offset) = (int)v;
	else
		*(int64_t *)(base + o->offset) = v;
	return TL_OK;
}

struct ini_ctx {
	void *obj;
	const struct tl_opt *all;
	size_t n;
	char *err;
	size_t errlen;
	const char *path;
	int failed;
};

static int ini_cb(void *user, const char *section, const char *name, const char *value)
{
	(void)section;
	struct ini_ctx *c = user;
	if (c->failed)
		return 0;
	const struct tl_opt *o = find(c->all, c->n, name, strlen(name));
	if (!o) {
		snprintf(c->err, c->errlen, "%s: unknown key '%s'", c->path, name);
		c->failed = 1;
		return 0;
	}
	if (set(c->obj, o, value)) {
		snprintf(c->err, c->errlen, "%s: bad value for %s: '%s'", c->path, name, value);
		c->failed = 1;
		return 0;
	}
	return 1;
}

int tl_config_load(void *obj, const struct tl_opt *all, size_t n_all, const char *const *flags, int argc,
                   char **argv, struct tl_config_result *res, char *err, size_t errlen)
{
	memset(res, 0, sizeof *res);
	for (size_t i = 0; i < n_all; i++)
		if (set(obj, &all[i], all[i].def))
			return -TL_ENOMEM;

	/* the config file: --config, else TALLY_CONFIG, else ./tally.conf if present */
	const char *path = getenv("TALLY_CONFIG");
	int explicit_path = path != NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
			path = argv[i + 1];
			explicit_path = 1;
		} else if (strncmp(argv[i], "--config=", 9) == 0) {
			path = argv[i] + 9;
			explicit_path = 1;
		}
	}
	if (!path)
		path = "tally.conf";
	FILE *f = fopen(path, "r");
	if (!f && explicit_path) {
		snprintf(err, errlen, "--config: cannot open %s: %s", path, strerror(errno));
		return -TL_EINVAL;
	}
	if (f) {
		struct ini_ctx c = {obj, all, n_all, err, errlen, path, 0};
		int rc = ini_parse_file(f, ini_cb, &c);
		fclose(f);
		if (c.failed)
			return -TL_EINVAL;
		if (rc != 0) {
			snprintf(err, errlen, "%s:%d: syntax error", path, rc);
			return -TL_EINVAL;
		}
	}

	/* environment: TALLY_<NAME> */
	for (size_t i = 0; i < n_all; i++) {
		char env[128] = "TALLY_";
		size_t k = 6;
		for (const char *p = all[i].name; *p && k < sizeof env - 1; p++)
			env[k++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
		env[k] = '\0';
		const char *v = getenv(env);
		if (v && set(obj, &all[i], v)) {
			snprintf(err, errlen, "%s: bad value '%s'", env, v);
			return -TL_EINVAL;
		}
	}

	/* flags */
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			res->help = 1;
			continue;
		}
		if (strcmp(a, "--") == 0) {
			for (i++; i < argc; i++)
				if (res->n_positional < TL_CONFIG_MAX_POSITIONAL)
					res->positional[res->n_positional++] = argv[i];
			break;
		}
		if (strncmp(a, "--", 2) != 0) {
			if (res->n_positional >= TL_CONFIG_MAX_POSITIONAL) {
				snprintf(err, errlen, "too many arguments");
				return -TL_EINVAL;
			}
			res->positional[res->n_positional++] = argv[i];
			continue;
		}
		const char *name = a + 2;
		const char *eq = strchr(name, '=');
		size_t len = eq ? (size_t)(eq - name) : strlen(name);
		const struct tl_opt *o = find(all, n_all, name, len);
		if (len == 6 && strncmp(name, "config", 6) == 0) {
			if (!eq)
				i++;
			continue;
		}
		if (!o || !allowed(flags, o->name)) {
			snprintf(err, errlen, "unknown flag --%.*s", (int)len, name);
			return -TL_EINVAL;
		}
		const char *value;
		if (eq) {
			value = eq + 1;
		} else if (o->type == TL_OPT_BOOL &&
		           (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0 ||
		            tl_config_parse_value(TL_OPT_BOOL, argv[i + 1], &(int64_t){0}))) {
			value = "true";
		} else if (i + 1 < argc) {
			value = argv[++i];
		} else {
			snprintf(err, errlen, "--%s needs a value", o->name);
			return -TL_EINVAL;
		}
		if (set(obj, o, value)) {
			snprintf(err, errlen, "--%s: bad value '%s'", o->name, value);
			return -TL_EINVAL;
		}
	}
	return TL_OK;
}

void tl_config_free(void *obj, const struct tl_opt *all, size_t n_all)
{
	char *base = obj;
	for (size_t i = 0; i < n_all; i++) {
		if (all[i].type == TL_OPT_STR) {
			char **slot = (char **)(base + all[i].offset);
			free(*slot);
			*slot = NULL;
		}
	}
}

void tl_config_usage(const struct tl_opt *all, size_t n_all, const char *const *flags, void *file)
{
	FILE *f = file;
	for (size_t i = 0; i < n_all; i++) {
		if (!allowed(flags, all[i].name))
			continue;
		fprintf(f, "  --%-22s %s", all[i].name, all[i].help);
		if (all[i].def && *all[i].def)
			fprintf(f, " (default: %s)", all[i].def);
		fputc('\n', f);
	}
	fputs("  --config FILE            settings file (INI; default ./tally.conf if present)\n", f);
}
