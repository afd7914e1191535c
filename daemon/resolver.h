/*
 * resolver.h - asynchronous name resolution on a loop: a c-ares channel
 * whose sockets are libev watchers and whose timeouts are an ev_timer. It
 * reads /etc/hosts and /etc/resolv.conf as the system resolver does, or
 * asks the servers it is given. One per loop (a channel is not shared
 * between threads).
 */
#ifndef TLSFWD_RESOLVER_H
#define TLSFWD_RESOLVER_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct resolver;
struct resolver_query;

struct resolver_addr {
	struct sockaddr_storage	 ss;
	socklen_t		 len;
};

/* What a lookup found. */
struct resolver_result {
	int				 status;	/* 0, or an ARES_ code */
	const char			*error;		/* status as text */
	const struct resolver_addr	*addrs;		/* in the order to try */
	size_t				 naddrs;
	/*
	 * Seconds the answer may be kept: the least TTL of its records;
	 * -1 for a name from the hosts file, which has none.
	 */
	long				 ttl;
};

/*
 * Called once per lookup, never from within resolver_lookup(); res and
 * what it points to live only during the call.
 */
typedef void resolver_done_cb(void *arg, const struct resolver_result *res);

/*
 * servers: NULL for /etc/resolv.conf's, or "ADDR[:PORT],..." (IPv6 in
 * brackets with a port). NULL with err on failure.
 */
struct resolver *resolver_new(struct ev_loop *loop, const char *servers,
	    char *err, size_t errlen);
/* Pending lookups end without their callbacks. */
void	resolver_free(struct resolver *r);
/*
 * Looks up host's IPv6 and IPv4 addresses (sorted as RFC 6724 says, as
 * getaddrinfo does), each with port. The query handle is valid until the
 * callback runs or resolver_cancel(); NULL (out of memory) means no
 * callback will come.
 */
struct resolver_query *resolver_lookup(struct resolver *r, const char *host,
	    unsigned int port, resolver_done_cb *cb, void *arg);
/* The callback of q will not run. */
void	resolver_cancel(struct resolver_query *q);

#endif
