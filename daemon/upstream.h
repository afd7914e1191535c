/*
 * upstream.h - where a service's connections go: the upstream's addresses,
 * as last resolved. The seat of upstream routing: name resolution, several
 * upstreams, their health and connection racing belong here (and in a
 * resolver beside it), not in conn.c or server.c.
 */
#ifndef TLSFWD_UPSTREAM_H
#define TLSFWD_UPSTREAM_H

#include <netdb.h>
#include <stdbool.h>

#include "config.h"

struct upstream {
	struct addrinfo	*addrs;		/* in the order to try; NULL: none */
	char		 error[HOST_MAX + 128];	/* why addrs is NULL */
};

/*
 * Resolves sc's upstream into up (once per configuration, before the loop
 * serves it: getaddrinfo() blocks). A failure is not fatal: the service
 * still listens and each client's handshake line says stage=resolve with
 * up->error. quiet: another loop already logged the event=resolve line.
 */
void	upstream_resolve(struct upstream *up, const struct service_config *sc,
	    bool quiet);
void	upstream_free(struct upstream *up);

#endif
