/*
 * io_collect.h - io_collect_interval, applied only while a loop is busy.
 */
#ifndef TLSFWD_IO_COLLECT_H
#define TLSFWD_IO_COLLECT_H

#include <ev.h>
#include <stdbool.h>

struct io_collect {
	ev_tstamp		 interval;	/* io_collect_interval */
	const unsigned int	*nsetup;	/* connections setting up */
	unsigned int		 ready;		/* events the last poll returned */
	bool			 collecting;
	ev_prepare		 prepare;
	ev_check		 check;
};

/* nsetup: the loop's count of connections connecting or handshaking. */
void	io_collect_init(struct io_collect *ic, const unsigned int *nsetup);
/* Sets the interval (each configuration); starts the watchers once. */
void	io_collect_start(struct io_collect *ic, struct ev_loop *loop,
	    ev_tstamp interval);
void	io_collect_stop(struct io_collect *ic, struct ev_loop *loop);

#endif
