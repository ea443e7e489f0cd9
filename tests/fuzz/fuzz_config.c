/* fuzz_config.c — the settings loader (core/config.c) on arbitrary bytes.
 *
 * The input is  INI-TEXT [ NUL PIECE { NUL PIECE } ].  INI-TEXT becomes the
 * content of a settings file (one temporary file per process, rewritten per
 * input) given with --config; each PIECE becomes command-line flags or an
 * environment variable for a table of six options, one of each type (two
 * strings), one of them not accepted as a flag. A piece is a control byte and
 * a value: the low nibble picks the option (6 = the value is a raw argv
 * entry), bits 4-5 the form: "--name VALUE", "--name=VALUE", TALLY_NAME=VALUE
 * or a bare "--name".
 *
 * Properties checked beyond "no crash, no leak, no UB":
 *  1. tl_config_load returns 0 or -TL_EINVAL; on -TL_EINVAL the message is
 *     non-empty and NUL-terminated inside the buffer; on success every string
 *     option is set and positionals point into argv.
 *  2. Without raw pieces the outcome is predicted exactly from a model: the
 *     file as inih reports it (any section, the last value of a key wins, an
 *     unknown key or a syntax error fails), then the environment, then the
 *     flags; typed values are what tl_config_parse_value gives, a bad one
 *     fails. The loaded values must be the predicted ones, and the load must
 *     fail exactly when the model says so.
 *  3. tl_config_free frees every string and clears its slot.
 *  4. tl_config_parse_value on the text up to the first NUL, for every type:
 *     BOOL accepts exactly its eight words (any case) as 0/1; an INT that
 *     parses round-trips through "%lld"; a SIZE or MS parses exactly when its
 *     digits parse as a non-negative INT, its suffix is one of the type's and
 *     the product does not overflow, and then it is that product (so never
 *     negative); STR is refused; every parse is stable. */
#include "core/config.h"

#include <ini.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz_settings {
	char *name;
	char *data;
	int64_t partitions;
	int verify;
	int64_t max_body;
	int64_t read_timeout;
};

#define O(f) offsetof(struct fz_settings, f)
static const struct tl_opt table[] = {
    {"name", TL_OPT_STR, O(name), "tally", "a string with a default"},
    {"data", TL_OPT_STR, O(data), NULL, "a string without one, not a flag"},
    {"partitions", TL_OPT_INT, O(partitions), "8", "an integer"},
    {"verify", TL_OPT_BOOL, O(verify), "true", "a boolean"},
    {"max-body", TL_OPT_SIZE, O(max_body), "4M", "a size"},
    {"read-timeout", TL_OPT_MS, O(read_timeout), "10s", "a duration"},
};
#define N_OPTS (sizeof table / sizeof table[0])
static const char *const envs[N_OPTS] = {"TALLY_NAME",   "TALLY_DATA",     "TALLY_PARTITIONS",
                                         "TALLY_VERIFY", "TALLY_MAX_BODY", "TALLY_READ_TIMEOUT"};
static const char *const flags[] = {"name", "partitions", "verify", "max-body", "read-timeout", NULL};

#define MAX_PIECES 24
#define MAX_ARGS (3 + 2 * MAX_PIECES)

static char conf_path[64];

static void remove_conf(void)
{
	if (conf_path[0])
		unlink(conf_path);
}

static void init_once(void)
{
	if (conf_path[0])
		return;
	/* the model assumes none of our variables is set */
	unsetenv("TALLY_CONFIG");
	for (size_t i = 0; i < N_OPTS; i++)
		unsetenv(envs[i]);
	/* rewritten per input: tmpfs where there is one, so no disk sees it */
	snprintf(conf_path, sizeof conf_path, "%s/tally-fuzz-config.XXXXXX",
	         access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	int fd = mkstemp(conf_path);
	if (fd < 0)
		abort();
	close(fd);
	atexit(remove_conf);
}

static void write_conf(const char *text, size_t n)
{
	FILE *f = fopen(conf_path, "wb");
	if (!f || (n && fwrite(text, 1, n, f) != n) || fclose(f) != 0)
		abort();
}

/* ---- 4. tl_config_parse_value ------------------------------------------ */

static const char *const size_suffixes[] = {"", "b", "k", "kb", "kib", "m", "mb", "mib", "g", "gb", "gib"};
static const int64_t size_muls[] = {1,       1,       1024,    1024,    1024,   1 << 20,
                                    1 << 20, 1 << 20, 1 << 30, 1 << 30, 1 << 30};
static const char *const ms_suffixes[] = {"", "ms", "s", "m", "h", "d"};
static const int64_t ms_muls[] = {1, 1, 1000, 60000, 3600000, 86400000};

/* What a SIZE or MS text must parse to: 1 and *want, or 0 (refused). */
static int model_unit(const char *s, const char *const *suf, const int64_t *mul, size_t n_suf, bool nocase,
                      int64_t *want)
{
	size_t len = strlen(s), cut = len;
	while (cut && (s[cut - 1] < '0' || s[cut - 1] > '9'))
		cut--;
	if (cut == 0)
		return 0;
	char digits[256];
	if (cut >= sizeof digits)
		return -1; /* not modelled (too long to copy) */
	memcpy(digits, s, cut);
	digits[cut] = '\0';
	int64_t v;
	if (tl_config_parse_value(TL_OPT_INT, digits, &v) || v < 0)
		return 0;
	for (size_t i = 0; i < n_suf; i++) {
		if (nocase ? strcasecmp(s + cut, suf[i]) : strcmp(s + cut, suf[i]))
			continue;
		return __builtin_mul_overflow(v, mul[i], want) ? 0 : 1;
	}
	return 0;
}

static void check_parse_value(const char *s)
{
	int64_t a = -7, b = -7;
	/* BOOL: exactly the eight words */
	static const char *const yes[] = {"true", "1", "yes", "on"}, *const no[] = {"false", "0", "no",
	                                                                            "off"};
	int want = -1;
	for (int i = 0; i < 4; i++) {
		if (!strcasecmp(s, yes[i]))
			want = 1;
		if (!strcasecmp(s, no[i]))
			want = 0;
	}
	int rc = tl_config_parse_value(TL_OPT_BOOL, s, &a);
	if (rc != 0 && rc != -TL_EINVAL)
		abort();
	if ((rc == 0) != (want >= 0) || (rc == 0 && a != want))
		abort();

	/* INT: round trip and stability */
	rc = tl_config_parse_value(TL_OPT_INT, s, &a);
	if (rc != 0 && rc != -TL_EINVAL)
		abort();
	if (rc == 0) {
		char txt[32];
		snprintf(txt, sizeof txt, "%lld", (long long)a);
		if (tl_config_parse_value(TL_OPT_INT, txt, &b) || a != b)
			abort();
		if (tl_config_parse_value(TL_OPT_INT, s, &b) || a != b)
			abort();
	}

	/* SIZE and MS: the model, sign and stability */
	for (int t = 0; t < 2; t++) {
		enum tl_opt_type type = t ? TL_OPT_MS : TL_OPT_SIZE;
		int64_t m = 0;
		int exp = t ? model_unit(s, ms_suffixes, ms_muls, 6, false, &m)
		            : model_unit(s, size_suffixes, size_muls, 11, true, &m);
		rc = tl_config_parse_value(type, s, &a);
		if (rc != 0 && rc != -TL_EINVAL)
			abort();
		if (rc == 0 && a < 0)
			abort();
		if (exp >= 0 && ((rc == 0) != (exp == 1) || (rc == 0 && a != m)))
			abort();
		if (rc == 0 && (tl_config_parse_value(type, s, &b) || a != b))
			abort();
	}

	if (tl_config_parse_value(TL_OPT_STR, s, &a) != -TL_EINVAL)
		abort();
}

/* ---- 2. the model of tl_config_load -------------------------------------- */

/* Expected final text of each option (NULL: the option's zero) and whether
 * loading must fail. */
struct model {
	const char *text[N_OPTS];
	char *owned[N_OPTS]; /* copies of INI values */
	bool fail;
};

static int opt_index(const char *name)
{
	for (size_t i = 0; i < N_OPTS; i++)
		if (!strcmp(table[i].name, name))
			return (int)i;
	return -1;
}

/* Applies text to option i of the model; false when the value is bad. */
static bool model_set(struct model *m, size_t i, const char *text)
{
	int64_t v;
	if (table[i].type != TL_OPT_STR && text && tl_config_parse_value(table[i].type, text, &v))
		return false;
	m->text[i] = text;
	return true;
}

static int model_ini_cb(void *user, const char *section, const char *name, const char *value)
{
	(void)section;
	struct model *m = user;
	int i = opt_index(name);
	if (i < 0) {
		m->fail = true;
		return 1;
	}
	char *copy = value ? strdup(value) : NULL;
	if (value && !copy)
		abort();
	free(m->owned[i]);
	m->owned[i] = copy;
	if (!model_set(m, (size_t)i, copy))
		m->fail = true;
	return 1;
}

/* Compares the loaded object with the model's texts. */
static void check_values(const struct fz_settings *s, const struct model *m)
{
	for (size_t i = 0; i < N_OPTS; i++) {
		const char *text = m->text[i];
		const char *base = (const char *)s + table[i].offset;
		if (table[i].type == TL_OPT_STR) {
			const char *got = *(char *const *)(const void *)base;
			if (!got || strcmp(got, text ? text : ""))
				abort();
			continue;
		}
		int64_t want = 0;
		if (text && tl_config_parse_value(table[i].type, text, &want))
			abort(); /* the model only keeps good values */
		int64_t got = table[i].type == TL_OPT_BOOL ? *(const int *)(const void *)base
		                                           : *(const int64_t *)(const void *)base;
		if (got != want)
			abort();
	}
}

/* ---- the load ----------------------------------------------------------- */

struct run {
	char *argv[MAX_ARGS + 1];
	int argc;
	char *bufs[MAX_ARGS]; /* allocations to free */
	int n_bufs;
	bool set_env[N_OPTS];
	bool raw;                      /* a raw piece: the outcome is not modelled */
	bool flag_fail;                /* a flag the model says fails */
	const char *flag_text[N_OPTS]; /* last flag value per option (into bufs) */
	bool flag_set[N_OPTS];
};

static char *keep(struct run *r, const char *p, size_t n)
{
	char *s = malloc(n + 1);
	if (!s)
		abort();
	memcpy(s, p, n);
	s[n] = '\0';
	r->bufs[r->n_bufs++] = s;
	return s;
}

static char *keep_flag(struct run *r, const char *name, const char *value)
{
	size_t nl = strlen(name), vl = value ? strlen(value) : 0;
	char *s = malloc(nl + vl + 4);
	if (!s)
		abort();
	memcpy(s, "--", 2);
	memcpy(s + 2, name, nl);
	s[2 + nl] = '\0';
	if (value) {
		s[2 + nl] = '=';
		memcpy(s + 3 + nl, value, vl + 1);
	}
	r->bufs[r->n_bufs++] = s;
	return s;
}

static bool is_flag_allowed(size_t i)
{
	for (const char *const *f = flags; *f; f++)
		if (!strcmp(*f, table[i].name))
			return true;
	return false;
}

/* Records the model's view of flag i given the text it sets (NULL = bare). */
static void model_flag(struct run *r, size_t i, const char *text)
{
	if (r->flag_fail)
		return;
	if (!is_flag_allowed(i)) {
		r->flag_fail = true;
		return;
	}
	int64_t v;
	if (table[i].type != TL_OPT_STR && tl_config_parse_value(table[i].type, text, &v)) {
		r->flag_fail = true;
		return;
	}
	r->flag_text[i] = text;
	r->flag_set[i] = true;
}

/* Turns one piece into argv entries or an environment variable. */
static void add_piece(struct run *r, const char *p, size_t n, bool last)
{
	if (n == 0 || r->argc + 2 > MAX_ARGS)
		return;
	unsigned ctl = (unsigned char)p[0];
	size_t i = (ctl & 0x0f) % (N_OPTS + 1);
	unsigned form = (ctl >> 4) & 3;
	char *value = keep(r, p + 1, n - 1);
	if (i == N_OPTS) { /* raw argv entry; never another settings file */
		if (strncmp(value, "--config", 8) != 0) {
			r->argv[r->argc++] = value;
			r->raw = true;
		}
		return;
	}
	const char *name = table[i].name;
	bool is_bool = table[i].type == TL_OPT_BOOL;
	int64_t v;
	/* forms the model would have to follow into the next argument are
	 * turned into ones it can predict on their own */
	if (form == 0 && is_bool && tl_config_parse_value(TL_OPT_BOOL, value, &v))
		form = 3; /* "--verify junk": a bare --verify, then junk as an argument */
	if (form == 3 && !is_bool && !last)
		form = 0; /* "--partitions" would take the next piece's flag as its value */
	if (form == 0 && (!strcmp(value, "--config") || !strncmp(value, "--config=", 9)))
		form = 1; /* the settings-file scan looks at every argument */
	switch (form) {
	case 0:
		r->argv[r->argc++] = keep_flag(r, name, NULL);
		r->argv[r->argc++] = value;
		model_flag(r, i, value);
		break;
	case 1:
		r->argv[r->argc++] = keep_flag(r, name, value);
		model_flag(r, i, value);
		break;
	case 2:
		if (setenv(envs[i], value, 1))
			abort();
		r->set_env[i] = true;
		break;
	default:
		r->argv[r->argc++] = keep_flag(r, name, NULL);
		if (is_bool)
			model_flag(r, i, "true");
		else
			r->flag_fail = true; /* "--partitions needs a value" (or unknown) */
		break;
	}
}

static void check_load(const char *d, size_t n)
{
	const char *nul = memchr(d, '\0', n);
	size_t ini_len = nul ? (size_t)(nul - d) : n;
	write_conf(d, ini_len);

	struct run r;
	memset(&r, 0, sizeof r);
	r.argv[r.argc++] = keep(&r, "fuzz", 4);
	r.argv[r.argc++] = keep(&r, "--config", 8);
	r.argv[r.argc++] = conf_path;
	if (nul) {
		const char *p = nul + 1, *end = d + n;
		int pieces = 0;
		while (p <= end && pieces < MAX_PIECES) {
			const char *q = memchr(p, '\0', (size_t)(end - p));
			const char *e = q ? q : end;
			add_piece(&r, p, (size_t)(e - p), !q || pieces + 1 == MAX_PIECES);
			pieces++;
			if (!q)
				break;
			p = q + 1;
		}
	}
	r.argv[r.argc] = NULL;

	struct fz_settings s;
	memset(&s, 0, sizeof s);
	struct tl_config_result res;
	char err[256];
	memset(err, 0x55, sizeof err);
	int rc = tl_config_load(&s, table, N_OPTS, flags, r.argc, r.argv, &res, err, sizeof err);

	/* 1. generic properties */
	if (rc != 0 && rc != -TL_EINVAL)
		abort();
	if (rc) {
		if (!memchr(err, '\0', sizeof err) || err[0] == '\0')
			abort();
	} else {
		if (!s.name || !s.data || res.n_positional < 0 || res.n_positional > TL_CONFIG_MAX_POSITIONAL)
			abort();
		for (int k = 0; k < res.n_positional; k++) {
			int found = 0;
			for (int j = 1; j < r.argc; j++)
				found |= res.positional[k] == r.argv[j];
			if (!found)
				abort();
		}
	}

	/* 2. the model */
	if (!r.raw) {
		struct model m;
		memset(&m, 0, sizeof m);
		for (size_t i = 0; i < N_OPTS; i++)
			m.text[i] = table[i].def;
		if (ini_parse(conf_path, model_ini_cb, &m) != 0)
			m.fail = true;
		for (size_t i = 0; i < N_OPTS; i++)
			if (r.set_env[i] && !model_set(&m, i, getenv(envs[i])))
				m.fail = true;
		if (r.flag_fail)
			m.fail = true;
		for (size_t i = 0; i < N_OPTS; i++)
			if (r.flag_set[i])
				m.text[i] = r.flag_text[i];
		if (m.fail != (rc != 0))
			abort();
		if (rc == 0) {
			if (res.n_positional != 0 || res.help)
				abort();
			check_values(&s, &m);
		}
		for (size_t i = 0; i < N_OPTS; i++)
			free(m.owned[i]);
	}

	/* 3. free */
	tl_config_free(&s, table, N_OPTS);
	if (s.name || s.data)
		abort();

	for (size_t i = 0; i < N_OPTS; i++)
		if (r.set_env[i])
			unsetenv(envs[i]);
	for (int k = 0; k < r.n_bufs; k++)
		free(r.bufs[k]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	init_once();
	const char *d = (const char *)data;
	check_load(d, size);

	char text[512];
	size_t n = size < sizeof text - 1 ? size : sizeof text - 1;
	memcpy(text, d, n);
	text[n] = '\0';
	check_parse_value(text);
	return 0;
}
