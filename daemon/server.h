/* server.h - one event loop's world: configurations, services, connections. */
#ifndef TLSFWD_SERVER_H
#define TLSFWD_SERVER_H

#include <ev.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdint.h>

#include "admission.h"
#include "config.h"
#include "listener.h"
#include "relay.h"
#include "tls.h"

struct server;
struct generation;
struct conn;

/* A connection's place in its loop's list of open ones (conn.c embeds it). */
struct conn_link {
	struct conn		*conn;
	struct conn_link	*prev, *next;
};

/* A configured service, live: trust loaded, upstream resolved, listening. */
struct service {
	const struct service_config	*cfg;
	struct generation		*gen;
	struct server			*srv;
	struct tls_service		 tls;
	bool				 tls_ready;
	struct addrinfo			*addrs;		/* NULL if unresolved */
	char				 resolve_error[HOST_MAX + 128];
	struct listener			 listener;
	struct listener			*takeover;	/* reload: old one to keep */
	bool				 kept;		/* listener carried over */
	struct admission_count		*count;		/* open, all loops */
	struct admission_log		 refusals;
};

/*
 * One loaded configuration and its services. A reload makes a new one; the
 * old one is retired and freed when its last connection ends, so open
 * connections finish on the configuration they started with.
 */
struct generation {
	struct config		*cfg;
	struct service		*services;
	size_t			 nservices;
	size_t			 nconns;
	struct generation	*next;		/* in srv->retired */
};

/* A socket passed by the service manager (socket activation). */
struct inherited_fd {
	int	 fd;
	char	*name;
	bool	 used;
};

/*
 * Everything the connection path touches hangs off this per-loop context,
 * so that one loop per thread can run later without shared mutable state.
 */
struct server {
	struct ev_loop		*loop;
	struct generation	*gen;		/* the current configuration */
	struct generation	*retired;
	struct conn_link	*conns;		/* all open connections */
	/* Counted by this loop, read by the main one: atomic. */
	uint64_t		 nconns;
	uint64_t		 handshakes_ok;
	uint64_t		 handshakes_failed;
	/* Connection ids: first, first + step, ...: unique across loops. */
	uint64_t		 next_conn_id;
	uint64_t		 id_step;
	bool			 is_worker;	/* not the main loop */
	unsigned int		 loop_index;	/* 0: main; workers 1, 2, ... */
	/* The main loop's view of all loops, for STATUS=. */
	struct server	       **group;
	size_t			 ngroup;
	struct server		*self;
	struct inherited_fd	*inherited;
	size_t			 ninherited;
	bool			 draining;
	ev_timer		 drain_timer;
	ev_timer		 expiry_timer;	/* daily client cert check */
	char			 status_note[96];	/* e.g. a failed reload */
	struct relay_spares	 spares;		/* relay buffers to reuse */
	/* io_collect_interval, applied only while the loop is busy. */
	ev_tstamp		 collect_interval;
	unsigned int		 collect_ready;	/* events the last poll returned */
	bool			 collecting;
	unsigned int		 nsetup;	/* connecting or handshaking */
	ev_prepare		 collect_prepare;
	ev_check		 collect_check;
};

struct server *server_new(struct ev_loop *loop);
/*
 * Takes the sockets systemd passed (LISTEN_FDS); they are matched to services
 * by name when the first configuration is applied. Errors go to errs.
 */
int	server_inherit_fds(struct server *srv, struct config_errors *errs);
/*
 * Builds services from cfg (trust, and with bind: upstream addresses and
 * listeners, reusing the current ones whose address is unchanged) and
 * makes it current, taking cfg over. Without bind (-t) it only checks, and
 * cfg stays the caller's. On any error, reported to errs, nothing changes
 * and cfg stays the caller's.
 */
int	server_apply(struct server *srv, struct config *cfg, bool bind,
	    struct config_errors *errs);
/*
 * A generation for a worker loop (wsrv) with cfg, its own copy of the main
 * loop's configuration: its own trust and caches, and dups of the main
 * loop's listening sockets. Built by the main thread; committed by the
 * worker's own thread with server_commit(). NULL with errs on failure.
 */
struct generation *server_prepare_shared(struct server *wsrv,
	    struct config *cfg, const struct server *main_srv,
	    struct config_errors *errs);
/* Makes gen current in srv's loop; retires the previous one. */
void	server_commit(struct server *srv, struct generation *gen);
/* Frees a generation that was never committed. */
void	server_discard(struct server *srv, struct generation *gen);

enum server_total { TOTAL_CONNS, TOTAL_OK, TOTAL_FAILED };
/* A count summed over every loop of srv's group. */
uint64_t server_total(const struct server *srv, enum server_total what);

/*
 * event=listening for each service (only_new: for listeners a reload just
 * opened), then, at start-up, event=ready.
 */
void	server_log_listening(struct server *srv, bool only_new);
/* "3 services, 12 active connections, 1532 handshakes, 4 failed" */
void	server_status(const struct server *srv, char *buf, size_t buflen);
/* Stops accepting; ends the loop once connections finish or time runs out. */
void	server_begin_shutdown(struct server *srv);
/* Closes every connection now (reason=shutdown). */
void	server_close_all(struct server *srv);
/*
 * The connection bookkeeping, all of it: conn.c attaches each new connection
 * of gen (counted as setting up), says when its set-up is over, and detaches
 * it at its close, before the close line; once it is freed,
 * server_conn_closed does what may follow (a retired configuration freed,
 * the drain over).
 */
void	server_conn_attach(struct server *srv, struct generation *gen,
	    struct conn_link *link);
void	server_conn_setup_done(struct server *srv);
void	server_conn_detach(struct server *srv, struct generation *gen,
	    struct conn_link *link);
void	server_conn_closed(struct server *srv, struct generation *gen);
void	server_free(struct server *srv);

#endif
