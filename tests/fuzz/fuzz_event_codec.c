/* fuzz_event_codec.c — tl_event_decode on arbitrary bytes.
 *
 * The encoding is canonical (minimal varints, fixed field order, nothing
 * after the last field), so whatever decodes must re-encode to exactly the
 * input bytes. A decoded event must also convert to JSON (when its times fit
 * RFC 3339), and classify and count without undefined behaviour. */
#include "event/classify.h"
#include "event/metrics.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tl_event ev;
	int rc = tl_event_decode(data, size, &ev);
	if (rc != 0) {
		if (rc != -TL_ECORRUPT && rc != -TL_EUNSUPPORTED)
			abort();
		return 0;
	}
	struct tl_buf b;
	tl_buf_init(&b, 0);
	if (tl_event_encode(&ev, &b) != 0)
		abort();
	if (b.len != size || memcmp(b.data, data, size) != 0)
		abort();
	tl_buf_reset(&b);
	/* JSON (RFC 3339) holds only the years 1970..9999 */
	const int64_t ts_max = 253402300799999LL;
	bool json_ok = ev.ts_ms >= 0 && ev.ts_ms <= ts_max &&
	               (ev.arrival_ms == 0 || (ev.arrival_ms > 0 && ev.arrival_ms <= ts_max));
	if ((tl_event_to_json(&ev, &b) == 0) != json_ok)
		abort();
	char err[128];
	if (tl_event_validate(&ev, err, sizeof err) != 0 && err[0] == '\0')
		abort(); /* a refusal says why */
	tl_buf_free(&b);

	/* the enricher classifies and counts whatever decodes */
	struct tl_classify_opts o;
	tl_classify_defaults(&o);
	(void)tl_classify(&o, &ev);
	int64_t delta[TL_M__COUNT] = {0};
	tl_metrics_count_event(&ev, delta);
	(void)tl_metrics_unique_kinds(&ev);
	return 0;
}
