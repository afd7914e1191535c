/*
 * connect_race.h - connection racing (RFC 8305, "Happy Eyeballs v2") over
 * an ordered list of addresses: one non-blocking connect() after another,
 * each started when the previous has not connected within the race delay
 * (or at once when it failed), all kept in flight until one connects; that
 * one wins and the others close.
 */
#ifndef TLSFWD_CONNECT_RACE_H
#define TLSFWD_CONNECT_RACE_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>

#include "resolver.h"

/* Attempts in flight at once, at most: a blackholed network costs this. */
#define RACE_MAX_INFLIGHT	4

struct connect_race;

struct race_attempt {
	int			 fd;		/* -1: slot free */
	size_t			 addr;		/* index in the race's list */
	ev_io			 io;
	ev_timer		 timeout;	/* connect_timeout */
	struct connect_race	*race;
};

struct connect_race {
	struct ev_loop			*loop;
	const struct resolver_addr	*addrs;		/* the caller's */
	size_t				 n;
	size_t				 next;		/* not yet tried */
	ev_tstamp			 delay, timeout;
	ev_timer			 delay_timer;
	struct race_attempt		 attempts[RACE_MAX_INFLIGHT];
	unsigned int			 inflight;
	unsigned int			 started;	/* attempts in all */
	int				 last_errno;
	/* An attempt at addrs[addr] failed (errno; ETIMEDOUT: timed out). */
	void				(*lost)(struct connect_race *race,
					    size_t addr, int err);
	/*
	 * Before won: an attempt started earlier than the winner, still not
	 * connected (slower, or blackholed); it closes.
	 */
	void				(*outraced)(struct connect_race *race,
					    size_t addr);
	/* fd (the caller's now) connected to addrs[addr]; the race is over. */
	void				(*won)(struct connect_race *race,
					    int fd, size_t addr);
	/* Every address was tried and failed; last_errno says the last. */
	void				(*failed)(struct connect_race *race);
};

/*
 * Prepares a race over addrs[0..n) (in the order to try; the list must
 * outlive the race). lost, outraced, won and failed must be set before
 * starting.
 */
void	connect_race_init(struct connect_race *race, struct ev_loop *loop,
	    ev_tstamp delay, ev_tstamp timeout);
/* Races from the first address not yet tried (again after a loss later on,
 * e.g. a failed handshake on the winner). Calls failed if none is left. */
void	connect_race_run(struct connect_race *race,
	    const struct resolver_addr *addrs, size_t n);
/* Whether addresses are left to try. */
bool	connect_race_has_more(const struct connect_race *race);
/* Closes every attempt in flight; no callback follows. */
void	connect_race_stop(struct connect_race *race);

#endif
