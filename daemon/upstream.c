/*
 * upstream.c - a service's upstream addresses: upstream_resolve(),
 * upstream_free().
 */
#include "upstream.h"

#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"

void
upstream_resolve(struct upstream *up, const struct service_config *sc,
    bool quiet)
{
	struct addrinfo hints;
	struct log_line l;
	char port[8];
	size_t n = 0;
	int rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	snprintf(port, sizeof(port), "%u", sc->upstream.port);
	rc = getaddrinfo(sc->upstream.host, port, &hints, &up->addrs);
	if (rc != 0) {
		up->addrs = NULL;
		snprintf(up->error, sizeof(up->error), "cannot resolve %s: %s",
		    sc->upstream.host, gai_strerror(rc));
	} else {
		for (struct addrinfo *ai = up->addrs; ai; ai = ai->ai_next)
			n++;
	}
	if (quiet)
		return;
	log_line_begin(&l, rc != 0 ? LOG_WARN : LOG_INFO, "resolve");
	log_str(&l, "service", sc->name);
	log_strf(&l, "upstream", "%s:%u", sc->upstream.host,
	    sc->upstream.port);
	if (rc != 0)
		log_str(&l, "error", up->error);
	else
		log_uint(&l, "addresses", n);
	log_line_end(&l);
}

void
upstream_free(struct upstream *up)
{
	if (up->addrs != NULL)
		freeaddrinfo(up->addrs);
	up->addrs = NULL;
}
