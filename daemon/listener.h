/* listener.h - listening sockets: bind, accept, pause on fd exhaustion. */
#ifndef TLSFWD_LISTENER_H
#define TLSFWD_LISTENER_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>

#include "parse.h"

struct service;

struct listener {
	int		 fd;
	bool		 inherited;	/* passed by systemd, by name */
	ev_io		 io;
	ev_timer	 pause;		/* accept paused after EMFILE & co */
	unsigned int	 pauses;	/* in the current burst; 0 = none */
	ev_tstamp	 paused_since;
	struct service	*svc;
	char		 bound[HOST_MAX + 16];	/* the address really bound */
	char		 unix_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	/*
	 * With workers: one more socket per worker loop on the same address
	 * (SO_REUSEPORT), so the kernel spreads clients over the loops' own
	 * accept queues. Owned here, so a reload keeps them with the listener.
	 */
	int		*siblings;
	unsigned int	 nsiblings;
};

/*
 * Binds and listens on la; fills l->bound. nsiblings > 0 (TCP only): also
 * that many SO_REUSEPORT sockets on the bound address, for worker loops.
 */
int	listener_open(struct listener *l, const struct listen_addr *la,
	    struct service *svc, unsigned int nsiblings, char *err,
	    size_t errlen);
/*
 * Makes way for a unix socket at la: a stale socket file nobody listens on
 * is removed; a live socket or another kind of file is an error.
 */
int	listener_unix_path_clear(const struct listen_addr *la, char *err,
	    size_t errlen);
/* The socket worker loop k (1, 2, ...) accepts on: its sibling, or l's. */
int	listener_fd_for_loop(const struct listener *l, unsigned int k);
/* Uses fd, a listening socket passed by the service manager. */
int	listener_adopt(struct listener *l, int fd, struct service *svc,
	    char *err, size_t errlen);
/* Moves an open listener to another service (reload): no socket closes. */
void	listener_move(struct listener *to, struct listener *from,
	    struct service *svc, struct ev_loop *loop);
void	listener_start(struct listener *l, struct ev_loop *loop);
/* Stops accepting and closes the socket (removes a unix socket file). */
void	listener_close(struct listener *l, struct ev_loop *loop);

#endif
