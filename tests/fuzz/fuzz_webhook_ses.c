/* fuzz_webhook_ses.c — Amazon SES through SNS (see fuzz_webhook.h). The
 * verified pass runs the SNS signature checks; its certificate fetcher
 * serves the input itself as the PEM, so the certificate parser is fuzzed
 * too (no network). The unverified pass parses envelopes, raw messages and
 * the SES event inside. */
#include "fuzz_webhook.h"

static const char *const settings[] = {"campaign_field", "ses:configuration-set", NULL};

static const uint8_t *cur;
static size_t cur_n;

static int fetch_input(void *arg, const char *url, struct tl_buf *out)
{
	(void)arg;
	(void)url;
	return tl_buf_append(out, cur, cur_n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tl_sns_certs *certs;
	if (tl_sns_certs_create(2, fetch_input, NULL, &certs) != 0)
		abort();
	cur = data;
	cur_n = size;
	struct fuzz_target t = {"ses", settings, NULL, 0, certs};
	fuzz_webhook(&t, data, size);
	tl_sns_certs_destroy(certs);
	return 0;
}
