/* worker.h - extra event loops, one thread each ([global] workers). */
#ifndef TLSFWD_WORKER_H
#define TLSFWD_WORKER_H

#include <ev.h>
#include <pthread.h>
#include <stdbool.h>

#include "server.h"

/*
 * A worker owns a loop and a server (its per-loop context) and shares
 * nothing mutable with the others: it accepts on dups of the main loop's
 * listening sockets, with its own copy of the configuration, trust and
 * session cache. The main thread prepares each new generation (credentials
 * are read while it may still be root) and hands it over through a mailbox;
 * the worker's thread commits it in its own loop.
 */
struct worker {
	unsigned int		 index;		/* 1.. (the main loop is 0) */
	pthread_t		 thread;
	bool			 started;
	struct ev_loop		*loop;
	struct server		*srv;
	ev_async		 wake;
	pthread_mutex_t		 lock;		/* guards the mailbox */
	struct generation	*pending;	/* mailbox: to commit */
	bool			 stop;		/* mailbox: drain and end */
};

/*
 * Creates worker index of count, with a first generation from text (the
 * main loop's configuration). Does not start its thread yet.
 */
struct worker *worker_new(unsigned int index, unsigned int count,
	    const char *text, const char *path, const struct server *main_srv,
	    struct config_errors *errs);
int	worker_start(struct worker *w, char *err, size_t errlen);
/* From the main thread: a new configuration, as the main loop has it. */
int	worker_reload(struct worker *w, const char *text, const char *path,
	    const struct server *main_srv, struct config_errors *errs);
/* From the main thread: stop accepting and end once connections are done. */
void	worker_stop(struct worker *w);
/* Waits for the thread to end, then frees everything. */
void	worker_free(struct worker *w);

#endif
