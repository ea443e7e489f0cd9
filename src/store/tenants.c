/* tenants.c — the per-thread tenant cache (tenants.h).
 *
 * Holds the array loaded by tl_store_tenants_load plus two sorted index
 * arrays: by name (bsearch on the name bytes) and by API-key digest (bsearch
 * on the 32-byte SHA-256). A presented API key is hashed first, so what the
 * search compares is a digest of attacker input, never the stored secret;
 * the final equality check is CRYPTO_memcmp all the same. */
#include "store/tenants.h"

#include "core/clock.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <stdlib.h>
#include <string.h>

struct tl_tenant_cache {
	struct tl_store *st;
	int refresh_ms;
	int64_t checked_ms;      /* monotonic time of the last version check */
	int64_t checked_wall_ms; /* wall-clock time it started (tl_tenant_cache_check_since) */
	int64_t version;
	struct tl_tenant *t;
	size_t n;
	const struct tl_tenant **by_name;
	const struct tl_tenant **by_key;
};

static int cmp_name(const void *a, const void *b)
{
	return strcmp((*(const struct tl_tenant *const *)a)->name,
	              (*(const struct tl_tenant *const *)b)->name);
}

static int cmp_key(const void *a, const void *b)
{
	return memcmp((*(const struct tl_tenant *const *)a)->api_key_hash,
	              (*(const struct tl_tenant *const *)b)->api_key_hash, 32);
}

/* Loads every tenant and swaps the new set in; the old one stays on error. */
static int reload(struct tl_tenant_cache *c)
{
	struct tl_tenant *t = NULL;
	size_t n = 0;
	int64_t version = 0;
	int rc = tl_store_tenants_load(c->st, &t, &n, &version);
	if (rc != 0)
		return rc;
	const struct tl_tenant **by_name = calloc(n ? n : 1, sizeof(*by_name));
	const struct tl_tenant **by_key = calloc(n ? n : 1, sizeof(*by_key));
	if (!by_name || !by_key) {
		free(by_name);
		free(by_key);
		tl_tenants_free(t, n);
		return -TL_ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		by_name[i] = by_key[i] = &t[i];
	qsort(by_name, n, sizeof(*by_name), cmp_name);
	qsort(by_key, n, sizeof(*by_key), cmp_key);

	tl_tenants_free(c->t, c->n);
	free(c->by_name);
	free(c->by_key);
	c->t = t;
	c->n = n;
	c->by_name = by_name;
	c->by_key = by_key;
	c->version = version;
	return 0;
}

int tl_tenant_cache_open(const char *db_uri, int refresh_ms, struct tl_tenant_cache **out)
{
	if (!db_uri || !out || refresh_ms < 0)
		return -TL_EINVAL;
	*out = NULL;
	struct tl_tenant_cache *c = calloc(1, sizeof(*c));
	if (!c)
		return -TL_ENOMEM;
	c->refresh_ms = refresh_ms;
	int rc = tl_store_open(db_uri, &c->st);
	if (rc != 0)
		goto fail;
	c->checked_wall_ms = tl_now_ms();
	if ((rc = reload(c)) != 0)
		goto fail;
	c->checked_ms = tl_mono_ms();
	*out = c;
	return 0;
fail:
	tl_tenant_cache_close(c);
	return rc;
}

void tl_tenant_cache_close(struct tl_tenant_cache *c)
{
	if (!c)
		return;
	tl_tenants_free(c->t, c->n);
	free(c->by_name);
	free(c->by_key);
	tl_store_close(c->st);
	free(c);
}

/* Asks the store for the tenants version and reloads when it changed. */
static int check_version(struct tl_tenant_cache *c)
{
	int64_t wall = tl_now_ms();
	int64_t version = 0;
	int rc = tl_store_tenants_version(c->st, &version);
	if (rc == 0 && version != c->version)
		rc = reload(c);
	if (rc == 0)
		c->checked_wall_ms = wall;
	return rc;
}

int tl_tenant_cache_refresh(struct tl_tenant_cache *c)
{
	if (!c)
		return -TL_EINVAL;
	int64_t now = tl_mono_ms();
	if (now - c->checked_ms < c->refresh_ms)
		return 0;
	/* Advanced even on failure: a database that is down is asked again
	 * after refresh_ms, not on every lookup. */
	c->checked_ms = now;
	return check_version(c);
}

int tl_tenant_cache_check_since(struct tl_tenant_cache *c, int64_t wall_ms)
{
	if (!c)
		return -TL_EINVAL;
	if (c->checked_wall_ms >= wall_ms)
		return 0;
	c->checked_ms = tl_mono_ms();
	return check_version(c);
}

const struct tl_tenant *tl_tenant_cache_by_name(struct tl_tenant_cache *c, const char *name, size_t len)
{
	if (!c || !name || len == 0 || len > TL_MAX_TENANT)
		return NULL;
	size_t lo = 0, hi = c->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const char *m = c->by_name[mid]->name;
		size_t mlen = strlen(m);
		int r = memcmp(name, m, len < mlen ? len : mlen);
		if (r == 0)
			r = len < mlen ? -1 : len > mlen ? 1 : 0;
		if (r == 0)
			return c->by_name[mid];
		if (r < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

const struct tl_tenant *tl_tenant_cache_by_api_key(struct tl_tenant_cache *c, const char *key, size_t len)
{
	if (!c || !key || len == 0 || len >= TL_API_KEY_MAX)
		return NULL;
	unsigned char d[32];
	unsigned int dlen = 0;
	if (EVP_Digest(key, len, d, &dlen, EVP_sha256(), NULL) != 1 || dlen != sizeof(d))
		return NULL;
	const struct tl_tenant *found = NULL;
	size_t lo = 0, hi = c->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int r = memcmp(d, c->by_key[mid]->api_key_hash, sizeof(d));
		if (r == 0) {
			found = c->by_key[mid];
			break;
		}
		if (r < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	if (found && CRYPTO_memcmp(d, found->api_key_hash, sizeof(d)) != 0)
		found = NULL;
	OPENSSL_cleanse(d, sizeof(d));
	return found;
}

const struct tl_tenant *tl_tenant_cache_by_bearer(struct tl_tenant_cache *c, const char *hdr, size_t len)
{
	static const char scheme[] = "bearer";
	const size_t sl = sizeof(scheme) - 1;
	if (!c || !hdr || len <= sl)
		return NULL;
	for (size_t i = 0; i < sl; i++) {
		char ch = hdr[i];
		if (ch >= 'A' && ch <= 'Z')
			ch = (char)(ch - 'A' + 'a');
		if (ch != scheme[i])
			return NULL;
	}
	size_t p = sl;
	if (hdr[p] != ' ' && hdr[p] != '\t')
		return NULL;
	while (p < len && (hdr[p] == ' ' || hdr[p] == '\t'))
		p++;
	size_t end = len;
	while (end > p && (hdr[end - 1] == ' ' || hdr[end - 1] == '\t'))
		end--;
	if (end == p)
		return NULL;
	for (size_t i = p; i < end; i++)
		if (hdr[i] == ' ' || hdr[i] == '\t')
			return NULL; /* more than one token */
	return tl_tenant_cache_by_api_key(c, hdr + p, end - p);
}
