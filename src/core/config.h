/* config.h — settings: defaults < tally.conf (INI) < TALLY_* environment < flags.
 *
 * A settings struct is described by a table of struct tl_opt (name, type,
 * offset, default, help). tl_config_load() fills it in the order above and
 * reports the first problem naming the flag, variable or file line.
 * Main thread only. */
#ifndef TL_CONFIG_H
#define TL_CONFIG_H

#include "core/err.h"

#include <stddef.h>
#include <stdint.h>

enum tl_opt_type {
	TL_OPT_STR,  /* char * (malloc'd, freed by tl_config_free) */
	TL_OPT_INT,  /* int64_t */
	TL_OPT_BOOL, /* int: true/false/1/0/yes/no/on/off; a bare --flag means true */
	TL_OPT_SIZE, /* int64_t bytes: 1048576, 512k, 64M, 2G */
	TL_OPT_MS,   /* int64_t milliseconds: 200, 200ms, 5s, 2m, 72h */
};

struct tl_opt {
	const char *name; /* flag "--name", INI key "name" (any section), env TALLY_NAME (- -> _) */
	enum tl_opt_type type;
	size_t offset;   /* offsetof(struct, field) */
	const char *def; /* default as text, NULL = empty/0 */
	const char *help;
};

#define TL_CONFIG_MAX_POSITIONAL 16

struct tl_config_result {
	int n_positional;
	char *positional[TL_CONFIG_MAX_POSITIONAL]; /* pointers into argv */
	int help;                                   /* --help / -h was given */
};

/* Loads settings into obj. `all` is every option any role knows (for the
 * INI file and the environment); `flags` is the subset this command accepts
 * on its command line (NULL = all). argv[0] is the command name. Returns 0,
 * or -TL_EINVAL with a message in err ("unknown flag --partitons",
 * "--partitions: not a number: x", "tally.conf: unknown key 'prt'"). */
int tl_config_load(void *obj, const struct tl_opt *all, size_t n_all, const char *const *flags, int argc,
                   char **argv, struct tl_config_result *res, char *err, size_t errlen) TL_MUST_CHECK;

/* Frees the strings of obj. */
void tl_config_free(void *obj, const struct tl_opt *all, size_t n_all);

/* Prints "  --name  help (default: def)" lines for the named flags. */
void tl_config_usage(const struct tl_opt *all, size_t n_all, const char *const *flags, void *file);

/* Parses a value as the given type (exposed for tests). */
int tl_config_parse_value(enum tl_opt_type t, const char *s, int64_t *out) TL_MUST_CHECK;

#endif
