/* roles.c — runs role loops as threads and stops them on a signal (roles.h). */
#include "cli/roles.h"

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"

#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static pthread_t main_thread;

void tl_roles_block_signals(void)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	main_thread = pthread_self();
}

void tl_roles_add(struct tl_roles *rs, const char *name, int (*run)(void *), void (*stop)(void *), void *obj)
{
	if (rs->n >= TL_ROLES_MAX)
		return;
	rs->r[rs->n++] = (struct tl_role){.name = name, .run = run, .stop = stop, .obj = obj};
}

static void *thread_main(void *arg)
{
	struct tl_role *r = arg;
	r->rc = r->run(r->obj);
	if (r->rc)
		tl_error("%s: stopped: %s", r->name, tl_strerror(r->rc));
	pthread_kill(main_thread, SIGUSR1); /* tell main that a role ended */
	return NULL;
}

/* Every keep-alive connection, live stream and log segment is a file
 * descriptor: the usual soft limit of 1,024 is far below what a collector
 * facing mail clients needs. Raised to the hard limit, as servers do. */
static void raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max)
		return;
	rlim_t was = rl.rlim_cur;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		tl_warn("cannot raise the open-file limit from %llu", (unsigned long long)was);
}

int tl_roles_run(struct tl_roles *rs)
{
	int failed = 0;
	raise_fd_limit();
	for (int i = 0; i < rs->n; i++) {
		if (pthread_create(&rs->r[i].thread, NULL, thread_main, &rs->r[i])) {
			tl_error("%s: cannot start a thread", rs->r[i].name);
			failed = 1;
			break;
		}
		rs->r[i].started = 1;
	}
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	while (!failed) {
		int sig = 0;
		if (sigwait(&set, &sig))
			break;
		if (sig == SIGHUP) {
			if (rs->reload)
				rs->reload(rs->reload_arg);
			continue;
		}
		if (sig == SIGUSR1)
			tl_warn("a role ended; stopping the others");
		else
			tl_info("%s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
		break;
	}
	/* every role is told at once: a role whose server is down may take a
	 * while, and the others need not wait for it to be told */
	for (int i = 0; i < rs->n; i++)
		if (rs->r[i].started)
			rs->r[i].stop(rs->r[i].obj);
	struct timespec grace;
	tl_mono_deadline(&grace, TL_ROLES_GRACE_MS);
	int interrupted = !rs->interrupt;
	int corrupt = 0;
	for (int i = 0; i < rs->n; i++) {
		if (!rs->r[i].started)
			continue;
		int ended =
		    !interrupted && pthread_clockjoin_np(rs->r[i].thread, NULL, CLOCK_MONOTONIC, &grace) == 0;
		if (!ended && !interrupted) {
			tl_warn("%s: still stopping after %d ms (a server unreachable?): giving up the "
			        "retries",
			        rs->r[i].name, TL_ROLES_GRACE_MS);
			rs->interrupt(rs->interrupt_arg);
			interrupted = 1;
		}
		if (!ended)
			pthread_join(rs->r[i].thread, NULL);
		if (rs->r[i].rc)
			failed = 1;
		if (rs->r[i].rc == -TL_ECORRUPT)
			corrupt = 1;
	}
	if (corrupt)
		tl_error("stopped on corrupt data: restarting will not help; see docs/operations.md");
	return corrupt ? TL_ROLES_EXIT_CORRUPT : failed ? 1 : 0;
}
