/* migrations.h — versioned schema migrations of the store backends.
 *
 * Each backend has an ordered array of migrations; version numbers start at 1
 * and grow by one. A migration, once released, is never edited: a schema
 * change is a new entry. The backend records each applied version in a
 * schema_version table (version, name, applied_ms) in the same transaction
 * as the migration itself, so a crash never leaves a half-applied version. */
#ifndef TL_STORE_MIGRATIONS_H
#define TL_STORE_MIGRATIONS_H

#include <stddef.h>

struct tl_migration {
	int version;      /* 1, 2, … in array order */
	const char *name; /* short description, recorded in schema_version */
	const char *sql;  /* one or more statements, no data, no parameters */
};

/* The SQLite migrations, in order, and how many there are. Constant data. */
extern const struct tl_migration tl_sqlite_migrations[];
extern const size_t tl_sqlite_migrations_count;

#endif
