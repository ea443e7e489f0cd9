#include "cli/demo.h"

#include "cli/links.h"
#include "core/log.h"
#include "store/store.h"

#include <stdio.h>
#include <string.h>

int tl_demo_first_start(struct tl_wired *w)
{
	struct tl_store *st;
	int rc = tl_store_open(w->s->db, &st);
	if (rc) {
		tl_error("--db %s: %s", w->s->db, tl_strerror(rc));
		return 1;
	}
	struct tl_tenant *ts = NULL;
	size_t n = 0;
	int64_t version;
	rc = tl_store_tenants_load(st, &ts, &n, &version);
	if (rc || n) {
		tl_tenants_free(ts, n);
		tl_store_close(st);
		if (rc)
			tl_error("--db %s: %s", w->s->db, tl_strerror(rc));
		return rc ? 1 : 0;
	}
	struct tl_tenant t;
	char api_key[TL_API_KEY_MAX];
	rc = tl_store_tenant_add(st, "demo", &t, api_key);
	tl_store_close(st);
	if (rc) {
		tl_error("creating the demo tenant: %s", tl_strerror(rc));
		return 1;
	}
	/* the key printed below works at once, not after the caches' next refresh */
	if ((rc = tl_collector_tenants_reload(w->collector)) != 0 ||
	    (rc = tl_api_tenants_reload(w->api)) != 0) {
		tl_error("--db %s: reloading the tenants: %s", w->s->db, tl_strerror(rc));
		return 1;
	}
	char base[300], api[300];
	snprintf(base, sizeof base, "http://127.0.0.1:%d", tl_collector_port(w->collector));
	snprintf(api, sizeof api, "http://127.0.0.1:%d", tl_api_port(w->api));
	struct tl_buf url;
	tl_buf_init(&url, 0);
	struct tl_token tok = {.kind = TL_TOKEN_OPEN,
	                       .tenant = TL_STR("demo"),
	                       .campaign = TL_STR("welcome"),
	                       .recipient = TL_STR("r-1")};
	rc = tl_link_url(&tok, t.link_key, sizeof t.link_key, base, &url);
	/* a new tenant has no settings: nothing to free */
	if (rc) {
		tl_buf_free(&url);
		return 1;
	}
	printf("\ntally: first start, created tenant \"demo\"\n"
	       "  API key (shown once): %s\n"
	       "  open the pixel:  curl -s -o /dev/null %s\n"
	       "  read the counts: curl -s -H 'Authorization: Bearer %s' %s/v1/campaigns/welcome/metrics\n"
	       "  dashboard:       %s/  (paste the API key)\n\n",
	       api_key, url.data, api_key, api, api);
	fflush(stdout);
	tl_buf_free(&url);
	return 0;
}
