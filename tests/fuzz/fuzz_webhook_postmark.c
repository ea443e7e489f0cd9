/* fuzz_webhook_postmark.c — Postmark webhook bodies (see fuzz_webhook.h),
 * posted with the right Basic credentials. */
#include "fuzz_webhook.h"

static const char *const settings[] = {"postmark_auth", "user:pass", NULL};
static const struct fuzz_hdr headers[] = {{"Authorization", "Basic dXNlcjpwYXNz"}};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_target t = {"postmark", settings, headers, 1, NULL};
	fuzz_webhook(&t, data, size);
	return 0;
}
