/* demo.h — the first-start experience of `tally serve`: with no tenant in
 * the reporting DB, create tenant "demo" and print its API key, a pixel URL
 * and the curl command that reads the campaign's metrics. Main thread. */
#ifndef TL_DEMO_H
#define TL_DEMO_H

#include "cli/wire.h"

/* Returns 0 (also when tenants exist: nothing to do) or 1 after logging. */
int tl_demo_first_start(struct tl_wired *w);

#endif
