/* classify.h — machine-open and bot-click classification (DESIGN.md §4).
 *
 * Every rule has a stable name, is a pure function of one event and the
 * rule settings, and is documented in docs/classifier.md. The first rule that
 * matches decides; its name is returned so it can be counted and tested.
 * Thread-safe. */
#ifndef TL_CLASSIFY_H
#define TL_CLASSIFY_H

#include "event/event.h"

struct tl_classify_opts {
	int64_t machine_open_window_ms; /* open within this of send => machine (default 2000) */
	int64_t bot_click_window_ms;    /* click within this of send => bot (default 2000) */
};

/* Fills o with the defaults. */
void tl_classify_defaults(struct tl_classify_opts *o);

/* Classifies an open or click: sets TL_EVF_MACHINE / TL_EVF_BOT in ev->flags
 * when a rule matches and returns that rule's name (e.g. "apple_mpp_agent",
 * "open_within_send_window", "scanner_agent", "head_request",
 * "click_within_send_window", "provider_machine_open"); returns NULL when the
 * event is human (or not an open/click). */
const char *tl_classify(const struct tl_classify_opts *o, struct tl_event *ev);

#endif
