/*
 * pool.h - a service's warm upstream connections (pool = N): connected,
 * handshaken and verified before any client asks, so that a new client's
 * bytes go up at once and its set-up costs no round trip. Each event loop
 * keeps its share of N; a client takes the newest ready one and a
 * replacement starts at once.
 */
#ifndef TLSFWD_POOL_H
#define TLSFWD_POOL_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>

#include "resolver.h"

struct conn;
struct conn_link;
struct service;

enum pool_drop {
	POOL_DROP_UPSTREAM_CLOSED,	/* close_notify, EOF, reset, alert */
	POOL_DROP_MAX_IDLE,		/* waited pool_max_idle */
	POOL_DROP_GREETING_TOO_LONG,	/* sent more than a buffer */
	POOL_DROP_PATH_DOWN,		/* its path failed another connection */
	POOL_DROP_STOPPED,		/* reload, shutdown */
	POOL_DROP_FAILED,		/* set-up or certificate verdict failed */
};
/* Reasons a ready one is dropped (the metric's); FAILED is counted apart. */
#define POOL_DROPS	(POOL_DROP_STOPPED + 1)

struct pool {
	struct service		*svc;
	unsigned int		 target;	/* this loop's share of pool */
	struct conn_link	*ready;		/* newest first */
	unsigned int		 nready;
	struct conn_link	*filling;	/* setting up */
	unsigned int		 nfilling;
	unsigned int		 failures;	/* in a row: the refill backs off */
	ev_timer		 retry;
	bool			 running;
};

/* svc's pool on its loop (its share of the service's pool); none if 0. */
void	pool_init(struct pool *p, struct service *svc);
/* Fills it (the configuration is committed); _stop closes every one. */
void	pool_start(struct pool *p);
void	pool_stop(struct pool *p);

/* A ready connection for a new client (NULL: none); a refill starts. */
struct conn *pool_take(struct pool *p);

/* conn.c: pooled connection c is ready (handshaken, verified). */
void	pool_conn_ready(struct pool *p, struct conn *c);
/*
 * conn.c: pooled connection c closes unadopted, for why. The pool refills:
 * at once, or after a backoff if it failed.
 */
void	pool_conn_gone(struct pool *p, struct conn *c, enum pool_drop why);
/* upstream.c, through the service: a path was marked down. */
void	pool_path_down(struct pool *p, size_t entry,
	    const struct resolver_addr *addr);

const char *pool_drop_name(enum pool_drop why);

#endif
