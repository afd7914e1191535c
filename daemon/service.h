/*
 * service.h - a configured service, live, and the configuration generation
 * it belongs to: what listener.c, admission.c and the connection path need
 * to know about a service, without the loop's server.
 */
#ifndef TLSFWD_SERVICE_H
#define TLSFWD_SERVICE_H

#include <stdbool.h>
#include <stddef.h>

#include "admission.h"
#include "config.h"
#include "listener.h"
#include "pool.h"
#include "tls.h"
#include "upstream.h"

struct server;
struct generation;
struct metrics_service;
struct metrics_counts;

/* A configured service, live: trust loaded, upstream resolved, listening. */
struct service {
	const struct service_config	*sc;
	struct generation		*gen;
	struct server			*srv;
	struct tls_service		 tls;
	bool				 tls_ready;
	struct upstream			 upstream;	/* where connections go */
	struct pool			 pool;		/* warm ones (pool = N) */
	char				 via_password[256];	/* via_password_file */
	struct listener			 listener;
	struct listener			*takeover;	/* reload: old one to keep */
	bool				 kept;		/* listener carried over */
	struct admission_count		*count;		/* open, all loops */
	struct metrics_service		*metrics;	/* by name, all loops */
	struct metrics_counts		*counts;	/* this loop's slot */
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
	struct resolver		*resolver;	/* this loop's, for its upstreams */
};

#endif
