/* roles.h — running role loops as threads of one process, with signal
 * handling: SIGINT/SIGTERM tell every role to stop, in data-flow order
 * (collector first), and wait for them all; roles still waiting on an
 * unreachable server after TL_ROLES_GRACE_MS are cut short by the interrupt
 * hook. SIGHUP calls the reload hook. Main thread only. */
#ifndef TL_ROLES_H
#define TL_ROLES_H

#include <pthread.h>

#define TL_ROLES_MAX 8

struct tl_role {
	const char *name;
	int (*run)(void *obj);
	void (*stop)(void *obj);
	void *obj;
	pthread_t thread;
	int started;
	int rc;
};

struct tl_roles {
	struct tl_role r[TL_ROLES_MAX];
	int n;
	void (*reload)(void *arg);
	void *reload_arg;
	void (*interrupt)(void *arg); /* at a stop, once the grace is over: ends the retries */
	void *interrupt_arg;
};

/* How long a stop waits for the roles to end on their own before calling
 * the interrupt hook: time for appends in flight to be confirmed. */
#define TL_ROLES_GRACE_MS 3000

/* Blocks SIGINT/SIGTERM/SIGHUP/SIGUSR1 in the calling thread (and so in
 * every thread it creates). Call before creating any role. */
void tl_roles_block_signals(void);

/* Adds a role; run/stop take obj. */
void tl_roles_add(struct tl_roles *rs, const char *name, int (*run)(void *), void (*stop)(void *), void *obj);

/* Exit status of a process whose role stopped on corrupt stored data
 * (-TL_ECORRUPT): a restart would stop at the same place, so supervisors
 * should not restart on it (systemd: RestartPreventExitStatus=3). */
#define TL_ROLES_EXIT_CORRUPT 3

/* Raises the soft open-file limit to the hard one, starts every role on its
 * own thread, waits for a stop signal (or a role ending on its own), tells
 * every role to stop in the order added and joins them (the interrupt hook
 * runs when they take longer than TL_ROLES_GRACE_MS). Returns 0 when every role ended
 * cleanly, TL_ROLES_EXIT_CORRUPT when one stopped on corrupt data, else 1. */
int tl_roles_run(struct tl_roles *rs);

#endif
