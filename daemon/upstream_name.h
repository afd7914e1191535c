/*
 * upstream_name.h - an upstream name's addresses, resolved on the loop
 * (resolver.c) and kept fresh. Upstream routing (several upstreams, their
 * health, connection racing) builds on it beside it, not in conn.c or
 * server.c.
 */
#ifndef TLSFWD_UPSTREAM_NAME_H
#define TLSFWD_UPSTREAM_NAME_H

#include <ev.h>
#include <stdbool.h>

#include "parse.h"
#include "resolver.h"

/* One answer, shared by the connections trying it; counted references. */
struct upstream_addrs {
	unsigned int		 refs;
	size_t			 n;
	struct resolver_addr	 a[];
};

/* A connection waiting for the name's first answer. */
struct upstream_wait {
	/* addrs: a reference the waiter now owns; NULL with error. */
	void			(*done)(struct upstream_wait *w,
				    struct upstream_addrs *addrs,
				    const char *error);
	struct upstream_wait	*prev, *next;
};

struct upstream_name {
	const char		*service;	/* for the log */
	const char		*host;
	unsigned int		 port;
	ev_tstamp		 interval;	/* resolve at least this often */
	struct ev_loop		*loop;
	struct resolver		*resolver;	/* NULL: none (error) */
	bool			 quiet;		/* another loop logs */
	bool			 stopped;	/* retired: no refresh */
	bool			 stale;		/* addrs kept after a failure */
	struct upstream_addrs	*addrs;		/* NULL: none yet */
	char			 error[HOST_MAX + 128];
	struct resolver_query	*query;		/* in flight */
	ev_tstamp		 last_query;
	ev_timer		 refresh;
	struct upstream_wait	*waiters;
	/* Called when an answer changes the address set (NULL: not). */
	void			(*changed)(void *arg);
	void			*changed_arg;
};

/* Which name (host:port, of service) and how often to look it up. */
void	upstream_name_init(struct upstream_name *un, const char *service,
	    const char *host, unsigned int port, ev_tstamp interval);
/*
 * Starts resolving on loop with resolver. previous: the same name in the
 * configuration being replaced (or NULL): its addresses serve until the
 * first refresh, so a reload does not make connections wait for DNS.
 * quiet: a worker loop (the main one logs).
 */
void	upstream_name_start(struct upstream_name *un, struct ev_loop *loop,
	    struct resolver *resolver, const struct upstream_name *previous,
	    bool quiet);

enum upstream_name_get {
	UPSTREAM_NAME_READY, UPSTREAM_NAME_WAIT, UPSTREAM_NAME_FAILED
};
/*
 * The addresses to try now. READY: *addrs is a reference (give it back
 * with upstream_addrs_put). WAIT: none yet, w->done will say (or
 * upstream_name_wait_cancel). FAILED: none, and the last try was under a
 * second ago; *error says why.
 */
enum upstream_name_get upstream_name_get(struct upstream_name *un,
	    struct upstream_wait *w, struct upstream_addrs **addrs,
	    const char **error);
void	upstream_name_wait_cancel(struct upstream_name *un,
	    struct upstream_wait *w);
void	upstream_addrs_put(struct upstream_addrs *addrs);
/* The configuration was replaced: answers still serve waiters only. */
void	upstream_name_stop(struct upstream_name *un);
void	upstream_name_free(struct upstream_name *un);

#endif
