/* fuzz_webhook_sendgrid.c — SendGrid Event Webhook bodies (see fuzz_webhook.h).
 * The verified pass checks an ECDSA signature that no input carries (the
 * public key is the one of SendGrid's published test vector), so it tests
 * the verifier's refusals; the unverified pass parses every input. */
#include "fuzz_webhook.h"

static const char *const settings[] = {
    "sendgrid_public_key",
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZ"
    "FceEu/1FwCM/QmGUhA==",
    "campaign_field", "camp", NULL};
static const struct fuzz_hdr headers[] = {
    {"X-Twilio-Email-Event-Webhook-Signature",
     "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH2j/0="},
    {"X-Twilio-Email-Event-Webhook-Timestamp", "1700000000"},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_target t = {"sendgrid", settings, headers, 2, NULL};
	fuzz_webhook(&t, data, size);
	return 0;
}
