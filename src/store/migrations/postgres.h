/* migrations/postgres.h — the PostgreSQL schema migrations (same mechanism
 * and struct as the SQLite ones in migrations.h). */
#ifndef TL_STORE_MIGRATIONS_POSTGRES_H
#define TL_STORE_MIGRATIONS_POSTGRES_H

#include "store/migrations/migrations.h"

/* The PostgreSQL migrations, in order, and how many there are. Constant data. */
extern const struct tl_migration tl_postgres_migrations[];
extern const size_t tl_postgres_migrations_count;

#endif
