/* json_int.h — the two syntax parsers behind tl_event_from_json (json.c),
 * exposed for the differential test (tests/unit/test_json_fast.c) and the
 * parser benchmark (tally bench json). Not for other callers: use
 * tl_event_from_json. */
#ifndef TL_EVENT_JSON_INT_H
#define TL_EVENT_JSON_INT_H

#include "event/event.h"

/* Returned by the fast path for a line it leaves to jansson. */
#define TL_JSON_FALLBACK 1

/* The fast path: for a flat object whose strings have no escapes and are
 * valid UTF-8 and whose values are strings, true, false or null (no
 * duplicate keys), does exactly what tl_event_from_json does; for any other
 * line returns TL_JSON_FALLBACK with ev zeroed and nothing allocated. Any
 * thread. */
int tl_event_from_json_fast(const char *json, size_t len, struct tl_arena *a, struct tl_event *ev, char *err,
                            size_t errlen) TL_MUST_CHECK;

/* The general path (jansson) for any line; same contract as
 * tl_event_from_json. Any thread. */
int tl_event_from_json_jansson(const char *json, size_t len, struct tl_arena *a, struct tl_event *ev,
                               char *err, size_t errlen) TL_MUST_CHECK;

#endif
