/*
 * generation.h - a configuration's life in one loop: built (trust loaded,
 * listeners kept, inherited or bound), committed, retired while its
 * connections finish, freed.
 */
#ifndef TLSFWD_GENERATION_H
#define TLSFWD_GENERATION_H

#include <stdbool.h>

#include "config.h"
#include "service.h"

struct server;

/* A socket passed by the service manager (socket activation). */
struct inherited_fd {
	int	 fd;
	char	*name;
	bool	 used;
};

/*
 * Takes the sockets systemd passed (LISTEN_FDS); they are matched to services
 * by name when the first configuration is applied. Errors go to errs.
 */
int	generation_inherit_fds(struct server *srv, struct config_errors *errs);
/* Closes the inherited sockets no service took, and frees the list. */
void	generation_inherited_free(struct server *srv);
/*
 * Builds services from cfg (trust, and with bind: listeners, reusing the
 * current ones whose address is unchanged) and commits it, taking cfg
 * over. Without bind (-t) it only checks, and cfg stays the caller's. On
 * any error, reported to errs, nothing changes and cfg stays the caller's.
 */
int	generation_apply(struct server *srv, struct config *cfg, bool bind,
	    struct config_errors *errs);
/*
 * A generation for a worker loop (wsrv) with cfg, its own copy of the main
 * loop's configuration: its own trust and caches, and dups of the main
 * loop's listening sockets. Built by the main thread; committed by the
 * worker's own thread with generation_commit(). NULL with errs on failure.
 */
struct generation *generation_prepare_worker(struct server *wsrv,
	    struct config *cfg, const struct server *main_srv,
	    struct config_errors *errs);
/*
 * Makes gen current in srv's loop: resolves upstreams, starts listening,
 * says the warnings (main loop); retires the previous generation.
 */
void	generation_commit(struct server *srv, struct generation *gen);
/* Frees a generation that was never committed. */
void	generation_discard(struct server *srv, struct generation *gen);
/* Frees gen, its services and its configuration (no connections left). */
void	generation_free(struct generation *gen, struct ev_loop *loop);

#endif
