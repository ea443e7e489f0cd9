/* tenants.h — a per-thread, read-mostly cache of tenants over the store.
 *
 * Collector, enricher and API each keep one; it reloads when the store's
 * tenants version changes (checked at most every refresh_ms), so
 * `tally tenant add/set` is picked up by running processes without a restart.
 * Pointers returned stay valid until the next tl_tenant_cache_refresh().
 * One thread per cache (it owns its own store connection). */
#ifndef TL_TENANTS_H
#define TL_TENANTS_H

#include "store/store.h"

struct tl_tenant_cache;

/* Opens a cache on its own connection to db_uri and loads every tenant. */
int tl_tenant_cache_open(const char *db_uri, int refresh_ms, struct tl_tenant_cache **out) TL_MUST_CHECK;
void tl_tenant_cache_close(struct tl_tenant_cache *c);

/* Reloads if refresh_ms passed and the version changed. Returns 0 or an error
 * (the old contents stay in use on error). */
int tl_tenant_cache_refresh(struct tl_tenant_cache *c);

/* Checks the version now (reloading when it changed) unless the last
 * successful check started at or after wall_ms, wall-clock time: after it,
 * a tenant added before wall_ms is in the cache. For a lookup that missed
 * on something made after the tenant was added (a hit arriving at wall_ms)
 * before it is called unknown. 0 or an error (contents unchanged). */
int tl_tenant_cache_check_since(struct tl_tenant_cache *c, int64_t wall_ms);

/* Lookups; NULL when unknown. by_api_key compares SHA-256 digests in constant time. */
const struct tl_tenant *tl_tenant_cache_by_name(struct tl_tenant_cache *c, const char *name, size_t len);
const struct tl_tenant *tl_tenant_cache_by_api_key(struct tl_tenant_cache *c, const char *key, size_t len);

/* Parses "Authorization: Bearer <key>" (value of the header, len bytes) and
 * looks the key up. NULL when missing, malformed or unknown. */
const struct tl_tenant *tl_tenant_cache_by_bearer(struct tl_tenant_cache *c, const char *hdr, size_t len);

#endif
