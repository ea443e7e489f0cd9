/* migrations/sqlite.c — the SQLite schema, one versioned migration per entry.
 *
 * Layout (DESIGN.md §3, §6): the real-time and the batch recompute's data sit
 * in the same tables, told apart by a leading `src` column (enum tl_source),
 * so that every statement serves both sources and reconciliation compares
 * like with like. Every hot table is WITHOUT ROWID with the lookup key as its
 * primary key, so an upsert is one B-tree descent.
 *
 * - counts: one row per (src, tenant, campaign, minute, variant). The minute
 *   comes before the variant so that a time series of a campaign is one range
 *   scan whatever the variant filter. Metric columns follow enum tl_metric.
 * - totals: the same counters per (src, tenant, campaign, variant), updated
 *   in the same transaction, so a campaign summary reads O(variants) rows.
 * - campaigns: one row per campaign with first/last event time and the batch
 *   sequence that last changed it (the list API and the live stream).
 * - uniques: exact distinct-recipient sets; ts_ms (event time of the first
 *   sighting) lets a batch re-run of a day remove that day's members.
 * - dedupe: event ids seen within the window. Deliberately no index on ts_ms:
 *   an index entry repeats the whole key, so it doubled the cost of the
 *   insert that every event pays (measured: ~440k → ~215k inserts/s), while
 *   pruning is rare and walks the table in key order in small chunks instead.
 * - offsets: consumer offsets, written in the batch's transaction.
 * - meta: counters (tenants_version, seq).
 *
 * Released migrations are frozen: never edit one, append a new version. */
#include "store/migrations/migrations.h"

static const char sqlite_001_init[] =
    "CREATE TABLE meta("
    "  key TEXT PRIMARY KEY,"
    "  value INTEGER NOT NULL"
    ") WITHOUT ROWID;\n"
    "INSERT INTO meta(key, value) VALUES ('tenants_version', 0), ('seq', 0);\n"

    "CREATE TABLE tenants("
    "  name TEXT PRIMARY KEY,"
    "  api_key_hash BLOB NOT NULL UNIQUE,"
    "  link_key BLOB NOT NULL,"
    "  salt BLOB NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  settings TEXT NOT NULL DEFAULT '{}'"
    ");\n"

    "CREATE TABLE counts("
    "  src INTEGER NOT NULL,"
    "  tenant TEXT NOT NULL,"
    "  campaign TEXT NOT NULL,"
    "  minute_ms INTEGER NOT NULL,"
    "  variant TEXT NOT NULL,"
    "  sent INTEGER NOT NULL DEFAULT 0,"
    "  delivered INTEGER NOT NULL DEFAULT 0,"
    "  deferred INTEGER NOT NULL DEFAULT 0,"
    "  bounced INTEGER NOT NULL DEFAULT 0,"
    "  hard_bounced INTEGER NOT NULL DEFAULT 0,"
    "  soft_bounced INTEGER NOT NULL DEFAULT 0,"
    "  dropped INTEGER NOT NULL DEFAULT 0,"
    "  complaints INTEGER NOT NULL DEFAULT 0,"
    "  unsubscribes INTEGER NOT NULL DEFAULT 0,"
    "  opens INTEGER NOT NULL DEFAULT 0,"
    "  machine_opens INTEGER NOT NULL DEFAULT 0,"
    "  unique_opens INTEGER NOT NULL DEFAULT 0,"
    "  unique_human_opens INTEGER NOT NULL DEFAULT 0,"
    "  clicks INTEGER NOT NULL DEFAULT 0,"
    "  bot_clicks INTEGER NOT NULL DEFAULT 0,"
    "  unique_clicks INTEGER NOT NULL DEFAULT 0,"
    "  unique_human_clicks INTEGER NOT NULL DEFAULT 0,"
    "  first_ms INTEGER NOT NULL,"
    "  last_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (src, tenant, campaign, minute_ms, variant)"
    ") WITHOUT ROWID;\n"

    "CREATE TABLE totals("
    "  src INTEGER NOT NULL,"
    "  tenant TEXT NOT NULL,"
    "  campaign TEXT NOT NULL,"
    "  variant TEXT NOT NULL,"
    "  sent INTEGER NOT NULL DEFAULT 0,"
    "  delivered INTEGER NOT NULL DEFAULT 0,"
    "  deferred INTEGER NOT NULL DEFAULT 0,"
    "  bounced INTEGER NOT NULL DEFAULT 0,"
    "  hard_bounced INTEGER NOT NULL DEFAULT 0,"
    "  soft_bounced INTEGER NOT NULL DEFAULT 0,"
    "  dropped INTEGER NOT NULL DEFAULT 0,"
    "  complaints INTEGER NOT NULL DEFAULT 0,"
    "  unsubscribes INTEGER NOT NULL DEFAULT 0,"
    "  opens INTEGER NOT NULL DEFAULT 0,"
    "  machine_opens INTEGER NOT NULL DEFAULT 0,"
    "  unique_opens INTEGER NOT NULL DEFAULT 0,"
    "  unique_human_opens INTEGER NOT NULL DEFAULT 0,"
    "  clicks INTEGER NOT NULL DEFAULT 0,"
    "  bot_clicks INTEGER NOT NULL DEFAULT 0,"
    "  unique_clicks INTEGER NOT NULL DEFAULT 0,"
    "  unique_human_clicks INTEGER NOT NULL DEFAULT 0,"
    "  first_ms INTEGER NOT NULL,"
    "  last_ms INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  PRIMARY KEY (src, tenant, campaign, variant)"
    ") WITHOUT ROWID;\n"

    "CREATE TABLE campaigns("
    "  src INTEGER NOT NULL,"
    "  tenant TEXT NOT NULL,"
    "  campaign TEXT NOT NULL,"
    "  first_ms INTEGER NOT NULL,"
    "  last_ms INTEGER NOT NULL,"
    "  updated_ms INTEGER NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  PRIMARY KEY (src, tenant, campaign)"
    ") WITHOUT ROWID;\n"
    "CREATE INDEX campaigns_seq ON campaigns(src, tenant, seq);\n"

    "CREATE TABLE uniques("
    "  src INTEGER NOT NULL,"
    "  tenant TEXT NOT NULL,"
    "  campaign TEXT NOT NULL,"
    "  kind INTEGER NOT NULL,"
    "  recipient BLOB NOT NULL,"
    "  ts_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (src, tenant, campaign, kind, recipient)"
    ") WITHOUT ROWID;\n"

    "CREATE TABLE dedupe("
    "  src INTEGER NOT NULL,"
    "  tenant TEXT NOT NULL,"
    "  id BLOB NOT NULL,"
    "  ts_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (src, tenant, id)"
    ") WITHOUT ROWID;\n"

    "CREATE TABLE offsets("
    "  consumer TEXT NOT NULL,"
    "  topic TEXT NOT NULL,"
    "  partition INTEGER NOT NULL,"
    "  next INTEGER NOT NULL,"
    "  PRIMARY KEY (consumer, topic, partition)"
    ") WITHOUT ROWID;\n";

const struct tl_migration tl_sqlite_migrations[] = {
    {1, "init", sqlite_001_init},
};

const size_t tl_sqlite_migrations_count = sizeof(tl_sqlite_migrations) / sizeof(tl_sqlite_migrations[0]);
