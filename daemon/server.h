/* server.h - one event loop's world: services, listeners, connections. */
#ifndef TLSFWD_SERVER_H
#define TLSFWD_SERVER_H

#include <ev.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "listener.h"
#include "tls.h"

struct server;
struct conn;

/* A configured service, live: trust loaded, upstream resolved, listening. */
struct service {
	const struct service_config	*cfg;
	struct server			*srv;
	struct tls_service		 tls;
	bool				 tls_ready;
	struct addrinfo			*addrs;		/* NULL if unresolved */
	char				 resolve_error[HOST_MAX + 128];
	struct listener			 listener;
	uint64_t			 handshakes_ok;
	uint64_t			 handshakes_failed;
};

/*
 * Everything the connection path touches hangs off this per-loop context,
 * so that one loop per thread can run later without shared mutable state.
 */
struct server {
	struct ev_loop	*loop;
	struct config	*cfg;
	struct service	*services;
	size_t		 nservices;
	struct conn	*conns;		/* all open connections */
	size_t		 nconns;
	uint64_t	 next_conn_id;
	bool		 draining;
	ev_timer	 drain_timer;
};

/*
 * Builds services from cfg: loads trust for each. With bind, also resolves
 * upstreams and binds listeners. Every error goes to errs (FILE:LINE).
 */
struct server *server_new(struct ev_loop *loop, struct config *cfg, bool bind,
	    struct config_errors *errs);
/* Starts accepting on every listener; logs event=ready. */
void	server_start(struct server *srv);
/* Stops accepting; ends the loop once connections finish or time runs out. */
void	server_begin_shutdown(struct server *srv);
/* Closes every connection now. */
void	server_close_all(struct server *srv, const char *reason);
/* Called by conn.c when a connection ends. */
void	server_conn_closed(struct server *srv);
void	server_free(struct server *srv);

#endif
