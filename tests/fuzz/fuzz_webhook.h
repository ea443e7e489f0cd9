/* fuzz_webhook.h — the harness the fuzz_webhook_<provider>.c targets share.
 *
 * The input is a webhook body. It is handled twice for the tenant the target
 * describes: once as the collector would (tl_webhook_handle: credentials and
 * signatures checked, so forged inputs exercise the verifiers), once with
 * verification off (tl_wh_handle_opts), so that every input reaches the
 * parser. Properties checked beyond "no crash, no leak, no UB":
 *   - success ⇔ status 200; a failure leaves the output empty and says why;
 *   - every event satisfies tl_event_validate, carries the tenant, the
 *     provider, TL_EVF_HASHED and a 32-character recipient hash;
 *   - every dead letter has a reason and serialises to valid JSON;
 *   - handling is deterministic: the same body gives the same ids. */
#ifndef TL_FUZZ_WEBHOOK_H
#define TL_FUZZ_WEBHOOK_H

#include "collect/webhooks/internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_NOW_MS 1700000030000LL

struct fuzz_hdr {
	const char *name, *value;
};

struct fuzz_target {
	const char *provider;
	const char *const *settings; /* key, value, …, NULL; sorted by key */
	const struct fuzz_hdr *headers;
	size_t n_headers;
	struct tl_sns_certs *certs;
};

static const char *fuzz_header(void *arg, const char *name, size_t *len)
{
	const struct fuzz_target *t = arg;
	for (size_t i = 0; i < t->n_headers; i++) {
		if (strcasecmp(t->headers[i].name, name) == 0) {
			*len = strlen(t->headers[i].value);
			return t->headers[i].value;
		}
	}
	return NULL;
}

static void fuzz_check(const struct fuzz_target *t, int rc, int status, const struct tl_webhook_out *out,
                       const char *err)
{
	if ((rc == 0) != (status == 200))
		abort();
	if (rc) {
		if (out->n || out->n_dead || out->subscribe_url || !err[0])
			abort();
		return;
	}
	for (size_t i = 0; i < out->n; i++) {
		const struct tl_event *ev = &out->events[i];
		char e[128];
		if (tl_event_validate(ev, e, sizeof e) != 0 || !(ev->flags & TL_EVF_HASHED) ||
		    ev->recipient.n != TL_RCPT_HASH_LEN || ev->tenant.n != 4 ||
		    memcmp(ev->tenant.p, "fuzz", 4) != 0 || ev->provider.n != strlen(t->provider) ||
		    memcmp(ev->provider.p, t->provider, ev->provider.n) != 0)
			abort();
	}
	struct tl_buf b;
	tl_buf_init(&b, 0);
	for (size_t i = 0; i < out->n_dead; i++) {
		const struct tl_webhook_dead *d = &out->dead[i];
		if (!d->reason || !d->reason[0] ||
		    (d->ev.recipient.n && d->ev.recipient.n != TL_RCPT_HASH_LEN))
			abort();
		tl_buf_reset(&b);
		if (tl_webhook_dead_to_json(d, &b) != 0)
			abort();
		json_error_t je;
		json_t *j = json_loadb(b.data, b.len, 0, &je);
		if (!j)
			abort();
		json_decref(j);
	}
	tl_buf_free(&b);
}

static int fuzz_cmp_setting(const void *a, const void *b)
{
	return strcmp(((const struct tl_tenant_setting *)a)->key, ((const struct tl_tenant_setting *)b)->key);
}

static void fuzz_webhook(struct fuzz_target *t, const uint8_t *data, size_t size)
{
	struct tl_tenant tn;
	memset(&tn, 0, sizeof tn);
	memcpy(tn.name, "fuzz", 5);
	memset(tn.salt, 0x5a, sizeof tn.salt);
	struct tl_tenant_setting set[16];
	for (size_t i = 0; t->settings[2 * i] && i < 16; i++) {
		set[i].key = (char *)t->settings[2 * i];
		set[i].value = (char *)t->settings[2 * i + 1];
		tn.n_settings = i + 1;
	}
	qsort(set, tn.n_settings, sizeof set[0], fuzz_cmp_setting);
	tn.settings = set;

	struct tl_arena a;
	tl_arena_init(&a, 64 * 1024, 256u << 20);
	struct tl_webhook_req req = {
	    .body = (const char *)data,
	    .len = size,
	    .header = fuzz_header,
	    .header_arg = t,
	    .tenant = &tn,
	    .now_ms = FUZZ_NOW_MS,
	    .arena = &a,
	    .sns_certs = t->certs,
	};
	struct tl_webhook_out out;
	char err[256];
	int status;
	size_t plen = strlen(t->provider);

	int rc = tl_webhook_handle(t->provider, plen, &req, &out, &status, err, sizeof err);
	fuzz_check(t, rc, status, &out, err);

	tl_arena_reset(&a);
	rc = tl_wh_handle_opts(t->provider, plen, &req, &out, &status, err, sizeof err, false);
	fuzz_check(t, rc, status, &out, err);
	/* the same body again: the same ids (provider retries dedupe) */
	struct tl_webhook_out again;
	int status2;
	int rc2 = tl_wh_handle_opts(t->provider, plen, &req, &again, &status2, err, sizeof err, false);
	if (rc2 != rc || again.n != out.n || again.n_dead != out.n_dead)
		abort();
	for (size_t i = 0; i < out.n; i++)
		if (again.events[i].id.n != out.events[i].id.n ||
		    memcmp(again.events[i].id.p, out.events[i].id.p, out.events[i].id.n) != 0)
			abort();
	tl_arena_free(&a);
}

#endif
