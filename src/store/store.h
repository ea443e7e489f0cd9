/* store.h — the reporting-database interface (DESIGN.md §2–3).
 *
 * A store is a connection to one backend ("sqlite:<path>", "postgres://…").
 * It holds tenants, the aggregated counters (per tenant, campaign, variant,
 * minute), exact-unique sets, the event-id dedupe set and consumer offsets.
 * The aggregator applies each batch as ONE transaction: dedupe → uniques →
 * counter deltas → offsets → commit. Nothing above this header knows which
 * backend is in use.
 *
 * Threading: one struct tl_store per thread (a connection). Library code: no
 * logging; errors are returned (-TL_EBUSY/-TL_EUNAVAIL are retryable). */
#ifndef TL_STORE_H
#define TL_STORE_H

#include "core/err.h"
#include "event/event.h"
#include "event/metrics.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tl_store;

/* Which set of tables: the real-time ones or the batch recompute's. */
enum tl_source { TL_SOURCE_REALTIME = 0, TL_SOURCE_BATCH = 1 };

/* Opens (creating and migrating the schema as needed). */
int tl_store_open(const char *uri, struct tl_store **out) TL_MUST_CHECK;
void tl_store_close(struct tl_store *st); /* NULL-safe */

/* ---- tenants ------------------------------------------------------------ */

#define TL_KEY_BYTES 32
#define TL_API_KEY_MAX 80

struct tl_tenant_setting {
	char *key;
	char *value;
};

struct tl_tenant {
	char name[TL_MAX_TENANT + 1];
	unsigned char api_key_hash[32]; /* SHA-256 of the API key text; the key itself is not stored */
	unsigned char link_key[TL_KEY_BYTES];
	unsigned char salt[TL_KEY_BYTES]; /* recipient-hash key */
	int64_t created_ms;
	struct tl_tenant_setting *settings; /* owned, sorted by key */
	size_t n_settings;
};

/* Creates tenant `name` (letters, digits, '-', '_', 1..64) with fresh random
 * keys. api_key_out receives the API key text (shown once; NUL-terminated,
 * < TL_API_KEY_MAX). -TL_EEXIST if it exists, -TL_EINVAL for a bad name. */
int tl_store_tenant_add(struct tl_store *st, const char *name, struct tl_tenant *out,
                        char api_key_out[TL_API_KEY_MAX]) TL_MUST_CHECK;

/* Sets (value != NULL) or removes one per-tenant setting. -TL_ENOTFOUND. */
int tl_store_tenant_set(struct tl_store *st, const char *name, const char *key,
                        const char *value) TL_MUST_CHECK;

/* Loads every tenant; *out is an array the caller frees with
 * tl_tenants_free(). *version changes whenever any tenant or setting does. */
int tl_store_tenants_load(struct tl_store *st, struct tl_tenant **out, size_t *n,
                          int64_t *version) TL_MUST_CHECK;

/* Current tenants version, cheap (for polling). */
int tl_store_tenants_version(struct tl_store *st, int64_t *version) TL_MUST_CHECK;

void tl_tenants_free(struct tl_tenant *t, size_t n);

/* Returns the value of a setting or def. */
const char *tl_tenant_setting(const struct tl_tenant *t, const char *key, const char *def);

/* ---- the aggregation transaction --------------------------------------- */

struct tl_dedupe_key {
	struct tl_str tenant;
	struct tl_str id;
	int64_t ts_ms; /* arrival time (event time when unknown); rows older than the window are pruned */
};

struct tl_unique_key {
	struct tl_str tenant;
	struct tl_str campaign;
	uint8_t kind;            /* enum tl_unique_kind */
	struct tl_str recipient; /* keyed hash */
	int64_t ts_ms;           /* event time of this sighting, kept with a first member so that
	                            tl_store_clear_source can remove a day's members (0 = unknown) */
};

struct tl_count_row {
	struct tl_str tenant;
	struct tl_str campaign;
	struct tl_str variant; /* "" = no variant */
	int64_t minute_ms;     /* bucket start (ts floored to the minute) */
	int64_t delta[TL_M__COUNT];
	int64_t first_ts_ms, last_ts_ms; /* min/max event time folded in this row */
};

struct tl_offset {
	const char *topic;
	int partition;
	uint64_t next; /* offset of the next record to read */
};

/* Starts the batch transaction. */
int tl_store_begin(struct tl_store *st, enum tl_source src) TL_MUST_CHECK;

/* Inserts the event ids that are new; is_new[i] = 1 for those (0 = seen
 * before, within the dedupe window). Keys must be distinct within one call,
 * unless tl_store_dedupe_repeats says the backend takes repeats. */
int tl_store_dedupe(struct tl_store *st, const struct tl_dedupe_key *keys, size_t n,
                    uint8_t *is_new) TL_MUST_CHECK;

/* Whether tl_store_dedupe takes a key repeated within one call, marking
 * only its first occurrence new (the batch's in-memory store: its set is
 * the check, so the fold need not make the keys distinct first). A
 * property of the backend (a flag in its ops, not a function): any thread. */
bool tl_store_dedupe_repeats(const struct tl_store *st);

/* Same for unique-recipient set members; is_new[i] = 1 for first members. */
int tl_store_uniques(struct tl_store *st, const struct tl_unique_key *keys, size_t n,
                     uint8_t *is_new) TL_MUST_CHECK;

/* Adds counter deltas (upserts minute buckets, campaign totals and the
 * campaign list, recording first/last event times and the batch sequence). */
int tl_store_add_counts(struct tl_store *st, const struct tl_count_row *rows, size_t n) TL_MUST_CHECK;

/* Records consumer offsets (consumer = "aggregate", …). */
int tl_store_offsets_set(struct tl_store *st, const char *consumer, const struct tl_offset *o,
                         size_t n) TL_MUST_CHECK;

/* Commits; returns 0 or a negative error (then everything since begin is gone). */
int tl_store_commit(struct tl_store *st) TL_MUST_CHECK;
void tl_store_rollback(struct tl_store *st);

/* Offset to resume from (0 when none stored). Outside a transaction. */
int tl_store_offset_get(struct tl_store *st, const char *consumer, const char *topic, int partition,
                        uint64_t *next) TL_MUST_CHECK;

/* One bounded step of pruning: deletes dedupe rows with ts older than
 * before_ms among the next chunk of the table (a few thousand keys, so the
 * step takes milliseconds however large the window is), continuing where
 * the previous step of this connection stopped. Returns 1 while the sweep
 * goes on (call again), 0 once it reached the end of the table (the next
 * call starts a new sweep), negative on error. Inside a batch transaction
 * the step is part of it; outside, it is its own transaction. */
int tl_store_prune_dedupe_step(struct tl_store *st, int64_t before_ms) TL_MUST_CHECK;

/* A whole sweep: tl_store_prune_dedupe_step until it returns 0. */
int tl_store_prune_dedupe(struct tl_store *st, int64_t before_ms) TL_MUST_CHECK;

/* Removes everything of one source for a day range (batch re-run). Inside a transaction. */
int tl_store_clear_source(struct tl_store *st, enum tl_source src, int64_t from_ms,
                          int64_t to_ms) TL_MUST_CHECK;

/* ---- queries (API); every one is scoped to one tenant ------------------ */

struct tl_campaign_summary {
	const char *campaign;
	int64_t counts[TL_M__COUNT];
	int64_t first_ms, last_ms, updated_ms;
	int64_t seq; /* batch sequence that last changed it */
};

typedef int (*tl_campaign_fn)(void *arg, const struct tl_campaign_summary *c);

/* Calls fn for every campaign of tenant (ordered by campaign name) whose seq >
 * since_seq (0 = all). A non-zero return from fn stops and is returned. */
int tl_store_campaigns(struct tl_store *st, enum tl_source src, const char *tenant, int64_t since_seq,
                       tl_campaign_fn fn, void *arg) TL_MUST_CHECK;

/* One page of them: the campaigns named after `after` (byte order; NULL or
 * "" = from the first), at most limit of them (0 = no limit). */
int tl_store_campaigns_page(struct tl_store *st, enum tl_source src, const char *tenant, const char *after,
                            size_t limit, tl_campaign_fn fn, void *arg) TL_MUST_CHECK;

/* Totals of one campaign (variant NULL = all variants summed; "" = the rows
 * without a variant). -TL_ENOTFOUND when the campaign has no data. */
int tl_store_campaign(struct tl_store *st, enum tl_source src, const char *tenant, const char *campaign,
                      const char *variant, struct tl_campaign_summary *out) TL_MUST_CHECK;

/* Time series of one metric, bucketed by granularity seconds (60, 3600,
 * 86400), for [from_ms, to_ms). fn gets (bucket_start_ms, value) in time
 * order; empty buckets are not reported. */
typedef int (*tl_point_fn)(void *arg, int64_t bucket_ms, int64_t value);
int tl_store_series(struct tl_store *st, enum tl_source src, const char *tenant, const char *campaign,
                    const char *variant, enum tl_metric m, int64_t granularity_s, int64_t from_ms,
                    int64_t to_ms, tl_point_fn fn, void *arg) TL_MUST_CHECK;

/* Highest applied batch sequence (for live updates). */
int tl_store_last_seq(struct tl_store *st, int64_t *seq) TL_MUST_CHECK;

/* ---- backend registry --------------------------------------------------- */
struct tl_store_ops {
	const char *scheme; /* "sqlite", "postgres" */
	int (*open)(const char *uri, struct tl_store **out);
	void (*close)(struct tl_store *st);
	int (*tenant_add)(struct tl_store *st, const char *name, struct tl_tenant *out, char *api_key_out);
	int (*tenant_set)(struct tl_store *st, const char *name, const char *key, const char *value);
	int (*tenants_load)(struct tl_store *st, struct tl_tenant **out, size_t *n, int64_t *version);
	int (*tenants_version)(struct tl_store *st, int64_t *version);
	int (*begin)(struct tl_store *st, enum tl_source src);
	int (*dedupe)(struct tl_store *st, const struct tl_dedupe_key *keys, size_t n, uint8_t *is_new);
	bool dedupe_repeats; /* dedupe takes repeated keys: the first occurrence is new */
	int (*uniques)(struct tl_store *st, const struct tl_unique_key *keys, size_t n, uint8_t *is_new);
	int (*add_counts)(struct tl_store *st, const struct tl_count_row *rows, size_t n);
	int (*offsets_set)(struct tl_store *st, const char *consumer, const struct tl_offset *o, size_t n);
	int (*commit)(struct tl_store *st);
	void (*rollback)(struct tl_store *st);
	int (*offset_get)(struct tl_store *st, const char *consumer, const char *topic, int partition,
	                  uint64_t *next);
	int (*prune_dedupe_step)(struct tl_store *st, int64_t before_ms);
	int (*clear_source)(struct tl_store *st, enum tl_source src, int64_t from_ms, int64_t to_ms);
	int (*campaigns)(struct tl_store *st, enum tl_source src, const char *tenant, int64_t since_seq,
	                 const char *after, size_t limit, tl_campaign_fn fn, void *arg);
	int (*campaign)(struct tl_store *st, enum tl_source src, const char *tenant, const char *campaign,
	                const char *variant, struct tl_campaign_summary *out);
	int (*series)(struct tl_store *st, enum tl_source src, const char *tenant, const char *campaign,
	              const char *variant, enum tl_metric m, int64_t granularity_s, int64_t from_ms,
	              int64_t to_ms, tl_point_fn fn, void *arg);
	int (*last_seq)(struct tl_store *st, int64_t *seq);
};

struct tl_store {
	const struct tl_store_ops *ops;
};

extern const struct tl_store_ops tl_store_sqlite_ops;
extern const struct tl_store_ops tl_store_postgres_ops,
    tl_store_postgresql_ops; /* postgres:// postgresql:// */

#endif
