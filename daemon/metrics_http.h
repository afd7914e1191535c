/*
 * metrics_http.h - the /metrics endpoint: a small HTTP/1.1 responder on the
 * main event loop (GET /metrics; anything else a short 404 or 405).
 */
#ifndef TLSFWD_METRICS_HTTP_H
#define TLSFWD_METRICS_HTTP_H

#include <ev.h>
#include <stddef.h>

#include "config.h"

struct server;
struct metrics_http;

/*
 * Listens on g->metrics_listen (clients from g->metrics_allow, or loopback
 * only without it) and serves srv's metrics. NULL with err on failure.
 */
struct metrics_http *metrics_http_start(struct server *srv,
	    const struct global_config *g, char *err, size_t errlen);
/* The address really bound (port 0 resolved), for the log. */
const char *metrics_http_bound(const struct metrics_http *h);
void	metrics_http_free(struct metrics_http *h);

#endif
