/* cmd_link.c — `tally link open|click --tenant T --campaign C --recipient R
 * [--variant V] [--message M] [--url U] [--base-url URL]`: prints the URL. */
#include "cli/cli.h"
#include "cli/links.h"
#include "cli/settings.h"
#include "store/store.h"

#include <stdio.h>
#include <string.h>

int tl_cmd_link(int argc, char **argv)
{
	static const char *const flags[] = {TL_COMMON_FLAGS, "tenant", "campaign", "recipient", "variant",
	                                    "message",       "url",    "base-url", NULL};
	struct tl_settings s;
	struct tl_config_result res;
	int ec = tl_settings_load(&s, "tally link open|click --tenant T --campaign C --recipient R [flags]",
	                          flags, argc, argv, &res);
	if (ec >= 0)
		goto out;
	ec = 2;
	const char *kind = res.n_positional == 1 ? res.positional[0] : "";
	if (strcmp(kind, "open") && strcmp(kind, "click")) {
		fprintf(stderr,
		        "usage: tally link open|click --tenant T --campaign C --recipient R [flags]\n");
		goto out;
	}
	int click = !strcmp(kind, "click");
	const char *missing = !*s.tenant         ? "--tenant"
	                      : !*s.campaign     ? "--campaign"
	                      : !*s.recipient    ? "--recipient"
	                      : click && !*s.url ? "--url"
	                                         : NULL;
	if (missing) {
		fprintf(stderr, "tally link: %s is required\n", missing);
		goto out;
	}
	if (!click && *s.url) {
		fprintf(stderr, "tally link: --url is only for click links\n");
		goto out;
	}
	struct tl_store *st;
	int rc = tl_store_open(s.db, &st);
	if (rc) {
		fprintf(stderr, "tally link: --db %s: %s\n", s.db, tl_strerror(rc));
		ec = 1;
		goto out;
	}
	struct tl_tenant *ts;
	size_t n;
	int64_t version;
	rc = tl_store_tenants_load(st, &ts, &n, &version);
	tl_store_close(st);
	if (rc) {
		fprintf(stderr, "tally link: %s\n", tl_strerror(rc));
		ec = 1;
		goto out;
	}
	const struct tl_tenant *t = NULL;
	for (size_t i = 0; i < n; i++)
		if (!strcmp(ts[i].name, s.tenant))
			t = &ts[i];
	if (!t) {
		fprintf(stderr, "tally link: --tenant: no tenant '%s'\n", s.tenant);
		ec = 1;
		tl_tenants_free(ts, n);
		goto out;
	}
	struct tl_token tok = {
	    .kind = click ? TL_TOKEN_CLICK : TL_TOKEN_OPEN,
	    .tenant = tl_str_of(s.tenant, strlen(s.tenant)),
	    .campaign = tl_str_of(s.campaign, strlen(s.campaign)),
	    .variant = tl_str_of(s.variant, strlen(s.variant)),
	    .message = tl_str_of(s.message, strlen(s.message)),
	    .recipient = tl_str_of(s.recipient, strlen(s.recipient)),
	    .url = tl_str_of(s.url, strlen(s.url)),
	};
	struct tl_buf url;
	tl_buf_init(&url, 0);
	rc = tl_link_url(&tok, t->link_key, sizeof t->link_key, s.base_url, &url);
	tl_tenants_free(ts, n);
	if (rc) {
		fprintf(stderr, "tally link: %s (a field over its limit, or --url not http/https)\n",
		        tl_strerror(rc));
		ec = 2;
	} else {
		printf("%s\n", url.data);
		ec = 0;
	}
	tl_buf_free(&url);
out:
	tl_settings_free(&s);
	return ec;
}
