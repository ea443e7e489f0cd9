/* fuzz_webhook_sparkpost.c — SparkPost webhook batches (see fuzz_webhook.h),
 * posted with the right token header. */
#include "fuzz_webhook.h"

static const char *const settings[] = {"sparkpost_auth", "fuzz:token", "variant_field", "v", NULL};
static const struct fuzz_hdr headers[] = {{"X-MessageSystems-Webhook-Token", "fuzz:token"}};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_target t = {"sparkpost", settings, headers, 1, NULL};
	fuzz_webhook(&t, data, size);
	return 0;
}
