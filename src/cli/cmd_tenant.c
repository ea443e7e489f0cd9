/* cmd_tenant.c — `tally tenant add NAME | list | set NAME KEY=VALUE…`. */
#include "cli/cli.h"
#include "cli/settings.h"
#include "core/clock.h"
#include "event/token.h"
#include "store/store.h"

#include <stdio.h>
#include <string.h>

/* Per-tenant settings `tenant set` accepts (DESIGN.md §6). */
static const char *const known_settings[] = {
    "sendgrid_public_key",
    "mailgun_signing_key",
    "postmark_auth",
    "sparkpost_auth",
    "sendgrid_verify",
    "ses_verify",
    "ses_topic_arn",
    "campaign_field",
    "variant_field",
    "recipient_field",
    NULL,
};

static int print_json_str(const char *s)
{
	struct tl_buf b;
	tl_buf_init(&b, 0);
	int rc = tl_buf_json_str(&b, s, strlen(s));
	if (!rc)
		fputs(b.data, stdout);
	tl_buf_free(&b);
	return rc;
}

static int add(struct tl_store *st, const char *name)
{
	struct tl_tenant t;
	char api_key[TL_API_KEY_MAX];
	int rc = tl_store_tenant_add(st, name, &t, api_key);
	if (rc == -TL_EEXIST) {
		fprintf(stderr, "tally tenant add: tenant '%s' already exists\n", name);
		return 1;
	}
	if (rc == -TL_EINVAL) {
		fprintf(stderr,
		        "tally tenant add: bad name '%s' (letters, digits, '-' and '_', at most %d)\n", name,
		        TL_MAX_TENANT);
		return 2;
	}
	if (rc) {
		fprintf(stderr, "tally tenant add: %s\n", tl_strerror(rc));
		return 1;
	}
	char link_key[2 * TL_KEY_BYTES + 1];
	tl_hex_encode(t.link_key, sizeof t.link_key, link_key);
	printf("{\"tenant\":");
	(void)print_json_str(t.name);
	printf(",\"api_key\":\"%s\",\"link_key\":\"%s\"}\n", api_key, link_key);
	/* a new tenant has no settings: nothing to free */
	return 0;
}

static int list(struct tl_store *st)
{
	struct tl_tenant *ts;
	size_t n;
	int64_t version;
	int rc = tl_store_tenants_load(st, &ts, &n, &version);
	if (rc) {
		fprintf(stderr, "tally tenant list: %s\n", tl_strerror(rc));
		return 1;
	}
	for (size_t i = 0; i < n; i++) {
		char created[TL_TIME_ISO_MAX];
		tl_time_format_iso_s(ts[i].created_ms, created, sizeof created);
		printf("{\"tenant\":");
		(void)print_json_str(ts[i].name);
		printf(",\"created_at\":\"%s\",\"settings\":{", created);
		for (size_t k = 0; k < ts[i].n_settings; k++) {
			if (k)
				putchar(',');
			(void)print_json_str(ts[i].settings[k].key);
			putchar(':');
			/* credentials are never printed */
			int secret =
			    strstr(ts[i].settings[k].key, "key") || strstr(ts[i].settings[k].key, "auth");
			(void)print_json_str(secret ? "(set)" : ts[i].settings[k].value);
		}
		printf("}}\n");
	}
	tl_tenants_free(ts, n);
	return 0;
}

static int set(struct tl_store *st, const char *name, int n, char **kv)
{
	for (int i = 0; i < n; i++) {
		const char *eq = strchr(kv[i], '=');
		int known = 0;
		for (const char *const *k = known_settings; eq && *k; k++)
			if (strlen(*k) == (size_t)(eq - kv[i]) && !strncmp(*k, kv[i], (size_t)(eq - kv[i])))
				known = 1;
		if (!eq || !known) {
			fprintf(stderr, "tally tenant set: '%s' is not KEY=VALUE with a known key (", kv[i]);
			for (const char *const *k = known_settings; *k; k++)
				fprintf(stderr, "%s%s", *k, k[1] ? ", " : ")\n");
			return 2;
		}
	}
	for (int i = 0; i < n; i++) {
		char key[64];
		const char *eq = strchr(kv[i], '=');
		snprintf(key, sizeof key, "%.*s", (int)(eq - kv[i]), kv[i]);
		int rc = tl_store_tenant_set(st, name, key, *(eq + 1) ? eq + 1 : NULL);
		if (rc == -TL_ENOTFOUND) {
			fprintf(stderr, "tally tenant set: no tenant '%s'\n", name);
			return 1;
		}
		if (rc) {
			fprintf(stderr, "tally tenant set: %s\n", tl_strerror(rc));
			return 1;
		}
	}
	return 0;
}

int tl_cmd_tenant(int argc, char **argv)
{
	static const char *const flags[] = {TL_COMMON_FLAGS, NULL};
	struct tl_settings s;
	struct tl_config_result res;
	int ec = tl_settings_load(
	    &s,
	    "tally tenant add NAME | list | set NAME KEY=VALUE…\n"
	    "  KEY: sendgrid_public_key mailgun_signing_key postmark_auth sparkpost_auth\n"
	    "       sendgrid_verify ses_verify ses_topic_arn campaign_field variant_field recipient_field\n"
	    "       (an empty VALUE removes the setting)",
	    flags, argc, argv, &res);
	if (ec >= 0)
		goto out_settings;
	const char *verb = res.n_positional ? res.positional[0] : "";
	int ok_args = (!strcmp(verb, "add") && res.n_positional == 2) ||
	              (!strcmp(verb, "list") && res.n_positional == 1) ||
	              (!strcmp(verb, "set") && res.n_positional >= 3);
	if (!ok_args) {
		fprintf(stderr, "usage: tally tenant add NAME | list | set NAME KEY=VALUE…\n");
		ec = 2;
		goto out_settings;
	}
	struct tl_store *st;
	int rc = tl_store_open(s.db, &st);
	if (rc) {
		fprintf(stderr, "tally tenant: --db %s: %s\n", s.db, tl_strerror(rc));
		ec = 1;
		goto out_settings;
	}
	if (!strcmp(verb, "add"))
		ec = add(st, res.positional[1]);
	else if (!strcmp(verb, "list"))
		ec = list(st);
	else
		ec = set(st, res.positional[1], res.n_positional - 2, res.positional + 2);
	tl_store_close(st);
out_settings:
	tl_settings_free(&s);
	return ec;
}
