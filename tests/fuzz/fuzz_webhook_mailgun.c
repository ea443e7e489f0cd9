/* fuzz_webhook_mailgun.c — Mailgun webhook bodies (see fuzz_webhook.h). The
 * seeds are signed with the key below at timestamps near FUZZ_NOW_MS, so
 * the verified pass reaches the replay check and the parser for them. */
#include "fuzz_webhook.h"

static const char *const settings[] = {"mailgun_signing_key", "fuzz-mailgun-key", NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_target t = {"mailgun", settings, NULL, 0, NULL};
	fuzz_webhook(&t, data, size);
	return 0;
}
