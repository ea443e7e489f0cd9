/* migrations/postgres.c — the PostgreSQL schema, one versioned migration per entry.
 *
 * The same tables, keys and columns as the SQLite schema (migrations/sqlite.c),
 * so that both backends answer every query the same way:
 *
 * - Real-time and batch-recompute data share the tables, told apart by the
 *   leading `src` column (enum tl_source).
 * - Identifiers that people read (tenant, campaign, variant, consumer, topic)
 *   are TEXT COLLATE "C": byte order, like SQLite's BINARY collation, so lists
 *   sort identically on both backends and comparisons skip the locale.
 *   Opaque keys (event ids, recipient hashes) and key material are BYTEA, like
 *   SQLite's BLOBs.
 * - Counters are BIGINT; times are milliseconds since the epoch (BIGINT).
 * - tenants.settings is a JSONB object of string values, updated in place with
 *   one statement (no read-modify-write race between two `tenant set`s).
 * - totals and counts are rewritten by every batch: a fill factor below 100
 *   leaves room on each page for HOT updates (the metric columns are not
 *   indexed), which keeps the upserts from growing the indexes.
 *
 * Released migrations are frozen: never edit one, append a new version. */
#include "store/migrations/postgres.h"

static const char postgres_001_init[] =
    "CREATE TABLE meta("
    "  key TEXT COLLATE \"C\" PRIMARY KEY,"
    "  value BIGINT NOT NULL"
    ");\n"
    "INSERT INTO meta(key, value) VALUES ('tenants_version', 0), ('seq', 0);\n"

    "CREATE TABLE tenants("
    "  name TEXT COLLATE \"C\" PRIMARY KEY,"
    "  api_key_hash BYTEA NOT NULL UNIQUE,"
    "  link_key BYTEA NOT NULL,"
    "  salt BYTEA NOT NULL,"
    "  created_ms BIGINT NOT NULL,"
    "  settings JSONB NOT NULL DEFAULT '{}'"
    ");\n"

    "CREATE TABLE counts("
    "  src SMALLINT NOT NULL,"
    "  tenant TEXT COLLATE \"C\" NOT NULL,"
    "  campaign TEXT COLLATE \"C\" NOT NULL,"
    "  minute_ms BIGINT NOT NULL,"
    "  variant TEXT COLLATE \"C\" NOT NULL,"
    "  sent BIGINT NOT NULL DEFAULT 0,"
    "  delivered BIGINT NOT NULL DEFAULT 0,"
    "  deferred BIGINT NOT NULL DEFAULT 0,"
    "  bounced BIGINT NOT NULL DEFAULT 0,"
    "  hard_bounced BIGINT NOT NULL DEFAULT 0,"
    "  soft_bounced BIGINT NOT NULL DEFAULT 0,"
    "  dropped BIGINT NOT NULL DEFAULT 0,"
    "  complaints BIGINT NOT NULL DEFAULT 0,"
    "  unsubscribes BIGINT NOT NULL DEFAULT 0,"
    "  opens BIGINT NOT NULL DEFAULT 0,"
    "  machine_opens BIGINT NOT NULL DEFAULT 0,"
    "  unique_opens BIGINT NOT NULL DEFAULT 0,"
    "  unique_human_opens BIGINT NOT NULL DEFAULT 0,"
    "  clicks BIGINT NOT NULL DEFAULT 0,"
    "  bot_clicks BIGINT NOT NULL DEFAULT 0,"
    "  unique_clicks BIGINT NOT NULL DEFAULT 0,"
    "  unique_human_clicks BIGINT NOT NULL DEFAULT 0,"
    "  first_ms BIGINT NOT NULL,"
    "  last_ms BIGINT NOT NULL,"
    "  PRIMARY KEY (src, tenant, campaign, minute_ms, variant)"
    ") WITH (fillfactor = 90);\n"

    "CREATE TABLE totals("
    "  src SMALLINT NOT NULL,"
    "  tenant TEXT COLLATE \"C\" NOT NULL,"
    "  campaign TEXT COLLATE \"C\" NOT NULL,"
    "  variant TEXT COLLATE \"C\" NOT NULL,"
    "  sent BIGINT NOT NULL DEFAULT 0,"
    "  delivered BIGINT NOT NULL DEFAULT 0,"
    "  deferred BIGINT NOT NULL DEFAULT 0,"
    "  bounced BIGINT NOT NULL DEFAULT 0,"
    "  hard_bounced BIGINT NOT NULL DEFAULT 0,"
    "  soft_bounced BIGINT NOT NULL DEFAULT 0,"
    "  dropped BIGINT NOT NULL DEFAULT 0,"
    "  complaints BIGINT NOT NULL DEFAULT 0,"
    "  unsubscribes BIGINT NOT NULL DEFAULT 0,"
    "  opens BIGINT NOT NULL DEFAULT 0,"
    "  machine_opens BIGINT NOT NULL DEFAULT 0,"
    "  unique_opens BIGINT NOT NULL DEFAULT 0,"
    "  unique_human_opens BIGINT NOT NULL DEFAULT 0,"
    "  clicks BIGINT NOT NULL DEFAULT 0,"
    "  bot_clicks BIGINT NOT NULL DEFAULT 0,"
    "  unique_clicks BIGINT NOT NULL DEFAULT 0,"
    "  unique_human_clicks BIGINT NOT NULL DEFAULT 0,"
    "  first_ms BIGINT NOT NULL,"
    "  last_ms BIGINT NOT NULL,"
    "  updated_ms BIGINT NOT NULL,"
    "  seq BIGINT NOT NULL,"
    "  PRIMARY KEY (src, tenant, campaign, variant)"
    ") WITH (fillfactor = 80);\n"

    "CREATE TABLE campaigns("
    "  src SMALLINT NOT NULL,"
    "  tenant TEXT COLLATE \"C\" NOT NULL,"
    "  campaign TEXT COLLATE \"C\" NOT NULL,"
    "  first_ms BIGINT NOT NULL,"
    "  last_ms BIGINT NOT NULL,"
    "  updated_ms BIGINT NOT NULL,"
    "  seq BIGINT NOT NULL,"
    "  PRIMARY KEY (src, tenant, campaign)"
    ");\n"
    "CREATE INDEX campaigns_seq ON campaigns(src, tenant, seq);\n"

    "CREATE TABLE uniques("
    "  src SMALLINT NOT NULL,"
    "  tenant TEXT COLLATE \"C\" NOT NULL,"
    "  campaign TEXT COLLATE \"C\" NOT NULL,"
    "  kind SMALLINT NOT NULL,"
    "  recipient BYTEA NOT NULL,"
    "  ts_ms BIGINT NOT NULL,"
    "  PRIMARY KEY (src, tenant, campaign, kind, recipient)"
    ");\n"

    "CREATE TABLE dedupe("
    "  src SMALLINT NOT NULL,"
    "  tenant TEXT COLLATE \"C\" NOT NULL,"
    "  id BYTEA NOT NULL,"
    "  ts_ms BIGINT NOT NULL,"
    "  PRIMARY KEY (src, tenant, id)"
    ");\n"
    "CREATE INDEX dedupe_ts ON dedupe(ts_ms);\n"

    "CREATE TABLE offsets("
    "  consumer TEXT COLLATE \"C\" NOT NULL,"
    "  topic TEXT COLLATE \"C\" NOT NULL,"
    "  partition INTEGER NOT NULL,"
    "  next BIGINT NOT NULL,"
    "  PRIMARY KEY (consumer, topic, partition)"
    ");\n";

const struct tl_migration tl_postgres_migrations[] = {
    {1, "init", postgres_001_init},
};

const size_t tl_postgres_migrations_count =
    sizeof(tl_postgres_migrations) / sizeof(tl_postgres_migrations[0]);
