/* sqlite_ckpt.c — WAL checkpoints off the writer's thread.
 *
 * SQLite's automatic checkpoint runs inside the COMMIT that crosses the
 * threshold: the connection that commits copies every page of the WAL back
 * into the database file and fsyncs it before COMMIT returns. For the
 * aggregator that is a stall of 100–200 ms every few batches (every batch
 * dirties pages all over the unique-recipient sets), and it was most of the
 * event → queryable p99 (bench/lag.sh: internal p99 229 ms with it, 69 ms
 * without).
 *
 * Instead a writing connection's WAL hook (tl_sqlite_wal_hook) counts the
 * pages in the WAL and, past CKPT_PAGES, wakes a thread with its own
 * connection to the same file that runs PASSIVE checkpoints: they copy what
 * no reader still needs, concurrently with the writer's next transactions,
 * and never take the writer's lock. The WAL starts over from the beginning
 * (journal_size_limit truncates the file) at the first transaction after a
 * checkpoint that copied all of it — which a checkpointer running beside a
 * busy writer rarely manages, as new pages keep coming. So the writer
 * finishes the job itself once the checkpointer has copied all but a
 * quarter of the WAL (or all but CKPT_TAIL pages), and in any case once the WAL passes
 * CKPT_HARD_PAGES, as SQLite would: a bounded WAL matters more than a stall.
 * A checkpoint by the writer copies only what the checkpointer has not.
 *
 * The thread starts at the first threshold crossing, so connections that
 * only read (the API) never have one. */
#include "store/sqlite_int.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define CKPT_PAGES 2000       /* ~8 MB of WAL: wake the checkpointer */
#define CKPT_TAIL 1000        /* ~4 MB (or a quarter of the WAL) left: the writer finishes */
#define CKPT_HARD_PAGES 32000 /* ~128 MB: the writer checkpoints whatever is left */

struct sq_ckpt {
	char *path;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool kicked, stopping, started;
	atomic_int copied;               /* WAL pages the last checkpoint had copied back */
	int last_pages;                  /* writer thread: WAL size at its previous commit */
	_Atomic uint64_t runs, failures; /* statistics, for tests */
};

static void *ckpt_main(void *arg)
{
	struct sq_ckpt *c = arg;
	sqlite3 *db = NULL;
	pthread_mutex_lock(&c->mu);
	for (;;) {
		while (!c->kicked && !c->stopping)
			pthread_cond_wait(&c->cv, &c->mu);
		if (c->stopping)
			break;
		c->kicked = false;
		pthread_mutex_unlock(&c->mu);
		if (!db && sqlite3_open_v2(c->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) ==
		               SQLITE_OK) {
			sqlite3_busy_timeout(db, 1000);
			(void)sqlite3_exec(db, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
		}
		int log = 0, copied = 0;
		int rc = db ? sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &copied)
		            : SQLITE_CANTOPEN;
		atomic_store(&c->copied, rc == SQLITE_OK && copied > 0 ? copied : 0);
		atomic_fetch_add(&c->runs, 1);
		if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
			/* open again at the next kick; the writer's hard limit bounds the WAL meanwhile */
			atomic_fetch_add(&c->failures, 1);
			sqlite3_close_v2(db);
			db = NULL;
		}
		pthread_mutex_lock(&c->mu);
	}
	pthread_mutex_unlock(&c->mu);
	sqlite3_close_v2(db);
	return NULL;
}

int tl_sqlite_ckpt_create(const char *path, struct sq_ckpt **out)
{
	struct sq_ckpt *c = calloc(1, sizeof *c);
	if (!c || !(c->path = strdup(path))) {
		free(c);
		return -TL_ENOMEM;
	}
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	*out = c;
	return TL_OK;
}

void tl_sqlite_ckpt_destroy(struct sq_ckpt *c)
{
	if (!c)
		return;
	if (c->started) {
		pthread_mutex_lock(&c->mu);
		c->stopping = true;
		pthread_cond_signal(&c->cv);
		pthread_mutex_unlock(&c->mu);
		pthread_join(c->thread, NULL);
	}
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->mu);
	free(c->path);
	free(c);
}

uint64_t tl_sqlite_ckpt_runs(const struct sq_ckpt *c)
{
	return c ? atomic_load(&c->runs) : 0;
}

/* Wakes the thread, starting it the first time. False when it cannot run. */
static bool ckpt_kick(struct sq_ckpt *c)
{
	pthread_mutex_lock(&c->mu);
	if (!c->started && !c->stopping)
		c->started = pthread_create(&c->thread, NULL, ckpt_main, c) == 0;
	c->kicked = true;
	pthread_cond_signal(&c->cv);
	bool ok = c->started;
	pthread_mutex_unlock(&c->mu);
	return ok;
}

int tl_sqlite_wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
	struct sq_ckpt *c = arg;
	if (pages < c->last_pages)
		atomic_store(&c->copied, 0); /* the WAL started over: what was copied is gone */
	c->last_pages = pages;
	if (pages < CKPT_PAGES)
		return SQLITE_OK;
	int copied = atomic_load(&c->copied);
	int left = pages - copied;
	bool finish = copied > 0 && (left <= CKPT_TAIL || left <= pages / 4);
	if (finish || pages >= CKPT_HARD_PAGES || !ckpt_kick(c))
		(void)sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
	return SQLITE_OK;
}
