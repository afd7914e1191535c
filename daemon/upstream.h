/*
 * upstream.h - where a service's connections go: its upstream's name (its
 * addresses, kept fresh: upstream_name.h) and the health of each path
 * (address) as connections found it, which orders the paths each new
 * connection tries.
 */
#ifndef TLSFWD_UPSTREAM_H
#define TLSFWD_UPSTREAM_H

#include <ev.h>
#include <stdbool.h>

#include "resolver.h"
#include "upstream_name.h"

/* A path that failed: skipped to the end until its backoff ends. */
struct path_health {
	struct resolver_addr	 addr;
	ev_tstamp		 down_since;
	ev_tstamp		 retry_at;	/* then one trial connection */
	ev_tstamp		 backoff;	/* 1 s, doubling to 30 s */
	bool			 trial;		/* a trial is out */
};

struct upstream {
	struct upstream_name	 name;
	struct ev_loop		*loop;
	bool			 quiet;		/* another loop logs */
	struct path_health	*down;		/* the paths marked down */
	size_t			 ndown;
};

/* Which service's upstream (host:port) and how often to resolve it. */
void	upstream_init(struct upstream *up, const char *service,
	    const char *host, unsigned int port, ev_tstamp resolve_interval);
/*
 * Starts resolving on loop. previous: the same upstream in the
 * configuration being replaced (or NULL): its addresses and its paths'
 * health carry over. quiet: a worker loop (the main one logs).
 */
void	upstream_start(struct upstream *up, struct ev_loop *loop,
	    struct resolver *resolver, const struct upstream *previous,
	    bool quiet);
/*
 * addrs as a new connection should try them (out has room for addrs->n):
 * address families interleaved (RFC 8305: the resolver's first, then the
 * other, alternating), paths marked down last unless their backoff ended
 * (then this connection is their trial).
 */
void	upstream_order(struct upstream *up, const struct upstream_addrs *addrs,
	    struct resolver_addr *out);
/* A connection failed on addr (connect, handshake or verification). */
void	upstream_path_failed(struct upstream *up,
	    const struct resolver_addr *addr, const char *why);
/* A connection's handshake on addr succeeded. */
void	upstream_path_ok(struct upstream *up, const struct resolver_addr *addr);
/* The configuration was replaced / is freed. */
void	upstream_stop(struct upstream *up);
void	upstream_free(struct upstream *up);

#endif
