/* roles.h — running role loops as threads of one process, with signal
 * handling: SIGINT/SIGTERM stop every role in data-flow order (collector
 * first, API last) so what was accepted is drained; SIGHUP calls the reload
 * hook. Main thread only. */
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
};

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
 * own thread, waits for a stop signal (or a role ending on its own), stops
 * them in the order added and joins them. Returns 0 when every role ended
 * cleanly, TL_ROLES_EXIT_CORRUPT when one stopped on corrupt data, else 1. */
int tl_roles_run(struct tl_roles *rs);

#endif
