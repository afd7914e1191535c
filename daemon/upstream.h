/*
 * upstream.h - where a service's connections go: its upstreams (each a name
 * whose addresses are kept fresh: upstream_name.h), which of them a new
 * connection tries first (balance), and the health of each path (address)
 * as connections found it, which orders the paths each one tries.
 */
#ifndef TLSFWD_UPSTREAM_H
#define TLSFWD_UPSTREAM_H

#include <ev.h>
#include <stdbool.h>

#include "config.h"
#include "resolver.h"
#include "upstream_name.h"

/* A path that failed: tried last until its backoff ends. */
struct path_health {
	struct resolver_addr	 addr;
	ev_tstamp		 down_since;
	ev_tstamp		 retry_at;	/* then one trial connection */
	ev_tstamp		 backoff;	/* 1 s, doubling to 30 s */
	bool			 trial;		/* a trial is out */
};

/* One upstream entry: its name, and its paths marked down. */
struct upstream_entry {
	const struct upstream_target	*cfg;
	struct upstream_name		 name;
	struct path_health		*down;
	size_t				 ndown;
};

struct metrics_health;

struct upstream {
	const char		*service;
	struct upstream_entry	*entries;	/* as configured */
	size_t			 n;
	enum balance_mode	 balance;
	size_t			 rr_next;	/* roundrobin: who is first */
	struct ev_loop		*loop;
	bool			 quiet;		/* another loop logs */
	struct metrics_health	*health;	/* this loop's view, or NULL */
	/* Told when a path is newly marked down (the service's pool). */
	void			(*path_down)(void *arg, size_t entry,
				    const struct resolver_addr *addr);
	void			*path_down_arg;
};

/* sc's upstreams, not yet resolving; -1 when out of memory. */
int	upstream_init(struct upstream *up, const struct service_config *sc);
/*
 * Starts resolving on loop, publishing the paths' health to health (this
 * loop's slot of the service's metrics; NULL: none). previous: the service's upstream in the
 * configuration being replaced (or NULL): an entry of the same name keeps
 * its addresses and its paths' health. quiet: a worker loop.
 */
void	upstream_start(struct upstream *up, struct ev_loop *loop,
	    struct resolver *resolver, const struct upstream *previous,
	    bool quiet, struct metrics_health *health);
/*
 * The entries a new connection tries, in order (out has room for up->n):
 * balance decides the first; entries whose every known path is down go
 * last (all of them are still tried).
 */
void	upstream_plan(struct upstream *up, unsigned char *out);
/*
 * Entry e's addrs as a new connection should try them (out has room for
 * addrs->n): address families interleaved (RFC 8305: the resolver's first,
 * then the other, alternating), paths marked down last unless their
 * backoff ended (then this connection is their trial).
 */
void	upstream_order(struct upstream *up, size_t e,
	    const struct upstream_addrs *addrs, struct resolver_addr *out);
/* A connection failed on entry e's addr (connect, handshake, verify). */
void	upstream_path_failed(struct upstream *up, size_t e,
	    const struct resolver_addr *addr, const char *why);
/* A connection's handshake on entry e's addr succeeded. */
void	upstream_path_ok(struct upstream *up, size_t e,
	    const struct resolver_addr *addr);
/* The configuration was replaced (publishes no more) / is freed. */
void	upstream_stop(struct upstream *up);
void	upstream_free(struct upstream *up);

#endif
