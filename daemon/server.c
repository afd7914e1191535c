/* server.c - one event loop's world: services, listeners, connections. */
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "log.h"

/*
 * Resolves the upstream once, at start-up: getaddrinfo() blocks, so it must
 * not run on the connection path. A failure is not fatal: the service still
 * listens and logs stage=resolve for each client, so the cause is visible.
 */
static void
service_resolve(struct service *svc)
{
	const struct service_config *sc = svc->cfg;
	struct addrinfo hints;
	struct log_line l;
	char port[8];
	size_t n = 0;
	int rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	snprintf(port, sizeof(port), "%u", sc->upstream.port);
	rc = getaddrinfo(sc->upstream.host, port, &hints, &svc->addrs);
	if (rc != 0) {
		svc->addrs = NULL;
		snprintf(svc->resolve_error, sizeof(svc->resolve_error),
		    "cannot resolve %s: %s", sc->upstream.host,
		    gai_strerror(rc));
		log_line_begin(&l, LOG_WARN, "resolve");
		log_str(&l, "service", sc->name);
		log_strf(&l, "upstream", "%s:%u", sc->upstream.host,
		    sc->upstream.port);
		log_str(&l, "error", svc->resolve_error);
		log_line_end(&l);
		return;
	}
	for (struct addrinfo *ai = svc->addrs; ai != NULL; ai = ai->ai_next)
		n++;
	log_line_begin(&l, LOG_INFO, "resolve");
	log_str(&l, "service", sc->name);
	log_strf(&l, "upstream", "%s:%u", sc->upstream.host,
	    sc->upstream.port);
	log_uint(&l, "addresses", n);
	log_line_end(&l);
}

struct server *
server_new(struct ev_loop *loop, struct config *cfg, bool bind,
    struct config_errors *errs)
{
	struct service_config *sc;
	struct server *srv;
	char err[512];
	size_t i = 0;

	srv = calloc(1, sizeof(*srv));
	if (srv == NULL || (srv->services = calloc(cfg->nservices,
	    sizeof(*srv->services))) == NULL) {
		free(srv);
		config_error_add(errs, cfg->path, 0, "out of memory");
		return NULL;
	}
	srv->loop = loop;
	srv->cfg = cfg;
	srv->nservices = cfg->nservices;
	for (sc = cfg->services; sc != NULL; sc = sc->next, i++) {
		struct service *svc = &srv->services[i];

		svc->cfg = sc;
		svc->srv = srv;
		svc->listener.fd = -1;
		if (tls_service_init(&svc->tls, sc, err, sizeof(err)) != 0) {
			config_error_add(errs, cfg->path, sc->ca_file != NULL ?
			    sc->ca_file_line : sc->line, "[%s]: %s", sc->name,
			    err);
			continue;
		}
		svc->tls_ready = true;
	}
	if (errs->n > 0 || !bind)
		return srv;
	for (i = 0; i < srv->nservices; i++) {
		struct service *svc = &srv->services[i];

		if (listener_open(&svc->listener, &svc->cfg->listen, svc, err,
		    sizeof(err)) != 0) {
			config_error_add(errs, cfg->path, svc->cfg->listen_line,
			    "[%s]: listen: %s", svc->cfg->name, err);
			continue;
		}
		service_resolve(svc);
	}
	return srv;
}

void
server_start(struct server *srv)
{
	struct log_line l;

	for (size_t i = 0; i < srv->nservices; i++) {
		struct service *svc = &srv->services[i];

		listener_start(&svc->listener, srv->loop);
		log_line_begin(&l, LOG_INFO, "listening");
		log_str(&l, "service", svc->cfg->name);
		log_str(&l, "listen", svc->listener.bound);
		log_strf(&l, "upstream", "%s:%u", svc->cfg->upstream.host,
		    svc->cfg->upstream.port);
		log_str(&l, "verify", verify_mode_name(svc->cfg->verify));
		log_line_end(&l);
	}
	log_line_begin(&l, LOG_INFO, "ready");
	log_uint(&l, "services", srv->nservices);
	log_line_end(&l);
}

void
server_close_all(struct server *srv, const char *reason)
{
	while (srv->conns != NULL)
		conn_close(srv->conns, reason);
}

static void
drain_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct server *srv = w->data;

	(void)revents;
	log_msg(LOG_WARN, "drain", "shutdown_timeout reached: closing %zu "
	    "open connections", srv->nconns);
	server_close_all(srv, "shutdown");
	ev_break(loop, EVBREAK_ALL);
}

void
server_begin_shutdown(struct server *srv)
{
	struct log_line l;

	if (srv->draining) {
		/* Asked twice: do not wait any longer. */
		server_close_all(srv, "shutdown");
		ev_break(srv->loop, EVBREAK_ALL);
		return;
	}
	srv->draining = true;
	for (size_t i = 0; i < srv->nservices; i++)
		listener_close(&srv->services[i].listener, srv->loop);
	log_line_begin(&l, LOG_INFO, "drain");
	log_uint(&l, "connections", srv->nconns);
	log_uint(&l, "timeout_ms", srv->cfg->global.shutdown_timeout_ms);
	log_line_end(&l);
	if (srv->nconns == 0) {
		ev_break(srv->loop, EVBREAK_ALL);
		return;
	}
	ev_timer_init(&srv->drain_timer, drain_timeout_cb,
	    (ev_tstamp)srv->cfg->global.shutdown_timeout_ms / 1e3, 0.);
	srv->drain_timer.data = srv;
	ev_timer_start(srv->loop, &srv->drain_timer);
}

void
server_conn_closed(struct server *srv)
{
	if (srv->draining && srv->nconns == 0) {
		ev_timer_stop(srv->loop, &srv->drain_timer);
		ev_break(srv->loop, EVBREAK_ALL);
	}
}

void
server_free(struct server *srv)
{
	if (srv == NULL)
		return;
	server_close_all(srv, "shutdown");
	for (size_t i = 0; i < srv->nservices; i++) {
		struct service *svc = &srv->services[i];

		listener_close(&svc->listener, srv->loop);
		if (svc->tls_ready)
			tls_service_deinit(&svc->tls);
		if (svc->addrs != NULL)
			freeaddrinfo(svc->addrs);
	}
	free(srv->services);
	free(srv);
}
