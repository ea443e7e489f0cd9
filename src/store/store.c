/* store.c — the store front end: picks the backend by URI scheme, checks
 * arguments common to every backend, mints tenant keys, and dispatches.
 *
 * Backend contract (struct tl_store_ops), beyond store.h:
 * - tenant_add receives a fully filled struct tl_tenant (name, api_key_hash,
 *   link_key, salt, created_ms; no settings) and only stores it: the keys are
 *   made here, once, for every backend. It returns -TL_EEXIST for a taken name.
 * - Arguments are validated here (NULL pointers, names, ranges); a backend may
 *   assume them well-formed. */
#include "store/store.h"

#include "core/clock.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <stdlib.h>
#include <string.h>

static const struct tl_store_ops *const backends[] = {
    &tl_store_sqlite_ops,
    &tl_store_postgres_ops,
    &tl_store_postgresql_ops,
};

#define API_KEY_PREFIX "tk_"

int tl_store_open(const char *uri, struct tl_store **out)
{
	if (!uri || !out)
		return -TL_EINVAL;
	*out = NULL;
	const char *colon = strchr(uri, ':');
	if (!colon || colon == uri)
		return -TL_EINVAL;
	size_t slen = (size_t)(colon - uri);
	for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
		const char *s = backends[i]->scheme;
		if (strlen(s) == slen && memcmp(s, uri, slen) == 0)
			return backends[i]->open(uri, out);
	}
	return -TL_EUNSUPPORTED;
}

void tl_store_close(struct tl_store *st)
{
	if (st)
		st->ops->close(st);
}

/* ---- tenants ------------------------------------------------------------ */

static bool tenant_name_ok(const char *name)
{
	size_t n = strlen(name);
	if (n < 1 || n > TL_MAX_TENANT)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_'))
			return false;
	}
	return true;
}

/* Setting keys: 1..64 of [A-Za-z0-9_.-]. */
static bool setting_key_ok(const char *key)
{
	size_t n = strlen(key);
	if (n < 1 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = key[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			return false;
	}
	return true;
}

#define SETTING_VALUE_MAX 8192

/* base64url without padding of n bytes into out (>= 4*ceil(n/3)+1). */
static size_t b64url(const unsigned char *in, size_t n, char *out)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 0, i = 0;
	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = tab[v >> 18 & 63];
		out[o++] = tab[v >> 12 & 63];
		out[o++] = tab[v >> 6 & 63];
		out[o++] = tab[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		out[o++] = tab[v >> 18 & 63];
		out[o++] = tab[v >> 12 & 63];
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		out[o++] = tab[v >> 18 & 63];
		out[o++] = tab[v >> 12 & 63];
		out[o++] = tab[v >> 6 & 63];
	}
	out[o] = '\0';
	return o;
}

int tl_store_tenant_add(struct tl_store *st, const char *name, struct tl_tenant *out,
                        char api_key_out[TL_API_KEY_MAX])
{
	if (!st || !name)
		return -TL_EINVAL;
	if (!tenant_name_ok(name))
		return -TL_EINVAL;
	struct tl_tenant t;
	memset(&t, 0, sizeof(t));
	memcpy(t.name, name, strlen(name) + 1);

	unsigned char raw[TL_KEY_BYTES];
	char key[TL_API_KEY_MAX];
	int rc = -TL_EIO;
	if (RAND_bytes(raw, sizeof(raw)) != 1 || RAND_bytes(t.link_key, sizeof(t.link_key)) != 1 ||
	    RAND_bytes(t.salt, sizeof(t.salt)) != 1)
		goto out;
	memcpy(key, API_KEY_PREFIX, sizeof(API_KEY_PREFIX) - 1);
	size_t klen = sizeof(API_KEY_PREFIX) - 1 + b64url(raw, sizeof(raw), key + sizeof(API_KEY_PREFIX) - 1);
	unsigned int mdlen = 0;
	if (EVP_Digest(key, klen, t.api_key_hash, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
		goto out;
	t.created_ms = tl_now_ms();

	rc = st->ops->tenant_add(st, name, &t, key);
	if (rc == 0) {
		if (out)
			*out = t;
		if (api_key_out)
			memcpy(api_key_out, key, klen + 1);
	}
out:
	OPENSSL_cleanse(raw, sizeof(raw));
	OPENSSL_cleanse(key, sizeof(key));
	OPENSSL_cleanse(&t, sizeof(t));
	return rc;
}

int tl_store_tenant_set(struct tl_store *st, const char *name, const char *key, const char *value)
{
	if (!st || !name || !key)
		return -TL_EINVAL;
	if (!tenant_name_ok(name))
		return -TL_ENOTFOUND;
	if (!setting_key_ok(key))
		return -TL_EINVAL;
	if (value && strlen(value) > SETTING_VALUE_MAX)
		return -TL_ETOOBIG;
	return st->ops->tenant_set(st, name, key, value);
}

int tl_store_tenants_load(struct tl_store *st, struct tl_tenant **out, size_t *n, int64_t *version)
{
	if (!st || !out || !n)
		return -TL_EINVAL;
	int64_t v = 0;
	int rc = st->ops->tenants_load(st, out, n, &v);
	if (rc == 0 && version)
		*version = v;
	return rc;
}

int tl_store_tenants_version(struct tl_store *st, int64_t *version)
{
	if (!st || !version)
		return -TL_EINVAL;
	return st->ops->tenants_version(st, version);
}

void tl_tenants_free(struct tl_tenant *t, size_t n)
{
	if (!t)
		return;
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j < t[i].n_settings; j++) {
			free(t[i].settings[j].key);
			if (t[i].settings[j].value) {
				OPENSSL_cleanse(t[i].settings[j].value, strlen(t[i].settings[j].value));
				free(t[i].settings[j].value);
			}
		}
		free(t[i].settings);
	}
	OPENSSL_cleanse(t, n * sizeof(*t));
	free(t);
}

const char *tl_tenant_setting(const struct tl_tenant *t, const char *key, const char *def)
{
	if (!t || !key)
		return def;
	size_t lo = 0, hi = t->n_settings;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(key, t->settings[mid].key);
		if (c == 0)
			return t->settings[mid].value;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return def;
}

/* ---- the aggregation transaction --------------------------------------- */

int tl_store_begin(struct tl_store *st, enum tl_source src)
{
	if (!st || (src != TL_SOURCE_REALTIME && src != TL_SOURCE_BATCH))
		return -TL_EINVAL;
	return st->ops->begin(st, src);
}

int tl_store_dedupe(struct tl_store *st, const struct tl_dedupe_key *keys, size_t n, uint8_t *is_new)
{
	if (!st || (n && (!keys || !is_new)))
		return -TL_EINVAL;
	return st->ops->dedupe(st, keys, n, is_new);
}

int tl_store_uniques(struct tl_store *st, const struct tl_unique_key *keys, size_t n, uint8_t *is_new)
{
	if (!st || (n && (!keys || !is_new)))
		return -TL_EINVAL;
	return st->ops->uniques(st, keys, n, is_new);
}

int tl_store_add_counts(struct tl_store *st, const struct tl_count_row *rows, size_t n)
{
	if (!st || (n && !rows))
		return -TL_EINVAL;
	return st->ops->add_counts(st, rows, n);
}

int tl_store_offsets_set(struct tl_store *st, const char *consumer, const struct tl_offset *o, size_t n)
{
	if (!st || !consumer || (n && !o))
		return -TL_EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!o[i].topic || o[i].partition < 0 || o[i].next > (uint64_t)INT64_MAX)
			return -TL_EINVAL;
	return st->ops->offsets_set(st, consumer, o, n);
}

bool tl_store_dedupe_repeats(const struct tl_store *st)
{
	return st && st->ops->dedupe_repeats;
}

int tl_store_commit(struct tl_store *st)
{
	if (!st)
		return -TL_EINVAL;
	return st->ops->commit(st);
}

void tl_store_rollback(struct tl_store *st)
{
	if (st)
		st->ops->rollback(st);
}

int tl_store_offset_get(struct tl_store *st, const char *consumer, const char *topic, int partition,
                        uint64_t *next)
{
	if (!st || !consumer || !topic || partition < 0 || !next)
		return -TL_EINVAL;
	return st->ops->offset_get(st, consumer, topic, partition, next);
}

int tl_store_prune_dedupe_step(struct tl_store *st, int64_t before_ms)
{
	if (!st)
		return -TL_EINVAL;
	return st->ops->prune_dedupe_step(st, before_ms);
}

int tl_store_prune_dedupe(struct tl_store *st, int64_t before_ms)
{
	int rc;
	while ((rc = tl_store_prune_dedupe_step(st, before_ms)) > 0)
		;
	return rc;
}

int tl_store_clear_source(struct tl_store *st, enum tl_source src, int64_t from_ms, int64_t to_ms)
{
	if (!st || (src != TL_SOURCE_REALTIME && src != TL_SOURCE_BATCH) || from_ms > to_ms)
		return -TL_EINVAL;
	return st->ops->clear_source(st, src, from_ms, to_ms);
}

/* ---- queries ------------------------------------------------------------ */

static bool src_ok(enum tl_source src)
{
	return src == TL_SOURCE_REALTIME || src == TL_SOURCE_BATCH;
}

int tl_store_campaigns(struct tl_store *st, enum tl_source src, const char *tenant, int64_t since_seq,
                       tl_campaign_fn fn, void *arg)
{
	if (!st || !src_ok(src) || !tenant || !fn)
		return -TL_EINVAL;
	return st->ops->campaigns(st, src, tenant, since_seq, "", 0, fn, arg);
}

int tl_store_campaigns_page(struct tl_store *st, enum tl_source src, const char *tenant, const char *after,
                            size_t limit, tl_campaign_fn fn, void *arg)
{
	if (!st || !src_ok(src) || !tenant || !fn)
		return -TL_EINVAL;
	return st->ops->campaigns(st, src, tenant, 0, after ? after : "", limit, fn, arg);
}

int tl_store_campaign(struct tl_store *st, enum tl_source src, const char *tenant, const char *campaign,
                      const char *variant, struct tl_campaign_summary *out)
{
	if (!st || !src_ok(src) || !tenant || !campaign || !out)
		return -TL_EINVAL;
	return st->ops->campaign(st, src, tenant, campaign, variant, out);
}

int tl_store_series(struct tl_store *st, enum tl_source src, const char *tenant, const char *campaign,
                    const char *variant, enum tl_metric m, int64_t granularity_s, int64_t from_ms,
                    int64_t to_ms, tl_point_fn fn, void *arg)
{
	if (!st || !src_ok(src) || !tenant || !campaign || !fn)
		return -TL_EINVAL;
	if ((int)m < 0 || m >= TL_M__COUNT || granularity_s <= 0 || granularity_s > INT64_MAX / 1000)
		return -TL_EINVAL;
	if (from_ms >= to_ms)
		return 0;
	return st->ops->series(st, src, tenant, campaign, variant, m, granularity_s, from_ms, to_ms, fn, arg);
}

int tl_store_last_seq(struct tl_store *st, int64_t *seq)
{
	if (!st || !seq)
		return -TL_EINVAL;
	return st->ops->last_seq(st, seq);
}
