/*
 * generation.c - a configuration's life in one loop: generation_apply(),
 * generation_prepare_worker(), generation_commit(), generation_discard(),
 * generation_free(); where its listeners come from (kept from the previous
 * generation, inherited by socket activation, or bound anew):
 * generation_inherit_fds(), generation_inherited_free().
 */
#include "generation.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "server.h"
#include "service_warn.h"

int
generation_inherit_fds(struct server *srv, struct config_errors *errs)
{
	char **names = NULL;
	int n = sd_listen_fds_with_names(1, &names);

	if (n < 0) {
		config_error_add(errs, "socket activation", 0,
		    "LISTEN_FDS: %s", strerror(-n));
		return -1;
	}
	if (n == 0)
		return 0;
	srv->inherited = calloc((size_t)n, sizeof(*srv->inherited));
	if (srv->inherited == NULL) {
		for (int i = 0; names != NULL && i < n; i++)
			free(names[i]);
		free(names);
		config_error_add(errs, "socket activation", 0, "out of memory");
		return -1;
	}
	for (int i = 0; i < n; i++) {
		srv->inherited[i].fd = SD_LISTEN_FDS_START + i;
		srv->inherited[i].name = names != NULL ? names[i] : NULL;
	}
	free(names);
	srv->ninherited = (size_t)n;
	return 0;
}

void
generation_inherited_free(struct server *srv)
{
	for (size_t i = 0; i < srv->ninherited; i++) {
		if (!srv->inherited[i].used)
			close(srv->inherited[i].fd);
		free(srv->inherited[i].name);
	}
	free(srv->inherited);
	srv->inherited = NULL;
	srv->ninherited = 0;
}

void
generation_free(struct generation *gen, struct ev_loop *loop)
{
	for (size_t i = 0; i < gen->nservices; i++) {
		struct service *svc = &gen->services[i];

		explicit_bzero(svc->via_password, sizeof(svc->via_password));
		listener_close(&svc->listener, loop);
		pool_stop(&svc->pool);
		if (svc->tls_ready)
			tls_service_deinit(&svc->tls);
		upstream_free(&svc->upstream);
	}
	resolver_free(gen->resolver);
	free(gen->services);
	config_free(gen->cfg);
	free(gen);
}

/* Whether a service of the new configuration already claimed l. */
static bool
takeover_claimed(const struct generation *gen, size_t upto,
    const struct listener *l)
{
	for (size_t i = 0; i < upto; i++)
		if (gen->services[i].takeover == l)
			return true;
	return false;
}

/*
 * The current listener that new service number idx of gen can keep: an
 * inherited one by service name; a bound one by address, first for the
 * service of the same name, then for any (a renamed service keeps its
 * socket); port 0 only ever carries over to the same name.
 */
static struct listener *
find_takeover(struct server *srv, const struct generation *gen, size_t idx)
{
	const struct service_config *sc = gen->services[idx].sc;
	struct generation *old = srv->gen;

	for (int pass = 0; old != NULL && pass < 2; pass++) {
		for (size_t i = 0; i < old->nservices; i++) {
			struct service *svc = &old->services[i];
			struct listener *l = &svc->listener;
			bool same_name = strcmp(svc->sc->name, sc->name) == 0;

			if (l->fd < 0 || takeover_claimed(gen, idx, l) ||
			    (pass == 0 && !same_name))
				continue;
			if (l->inherited ? same_name : pass == 0 ?
			    listen_addr_equal(&svc->sc->listen, &sc->listen) :
			    listen_addr_same(&svc->sc->listen, &sc->listen))
				return l;
		}
	}
	return NULL;
}

static struct inherited_fd *
find_inherited(struct server *srv, const char *name)
{
	for (size_t i = 0; i < srv->ninherited; i++) {
		struct inherited_fd *in = &srv->inherited[i];

		if (!in->used && in->name != NULL && strcmp(in->name, name) == 0)
			return in;
	}
	return NULL;
}

/* Gives a new service its listener: kept, inherited, or bound anew. */
static int
service_listen(struct server *srv, struct generation *gen, size_t idx,
    struct config_errors *errs)
{
	struct service *svc = &gen->services[idx];
	const struct service_config *sc = svc->sc;
	const char *path = svc->gen->cfg->path;
	struct inherited_fd *in;
	char err[512];

	svc->takeover = find_takeover(srv, gen, idx);
	if (svc->takeover != NULL)
		return 0;
	if (srv->gen == NULL && (in = find_inherited(srv, sc->name)) != NULL) {
		if (listener_adopt(&svc->listener, in->fd, svc, err,
		    sizeof(err)) != 0) {
			config_error_add(errs, path, sc->line, "[%s]: socket "
			    "activation: %s", sc->name, err);
			return -1;
		}
		in->used = true;
		return 0;
	}
	if (listener_open(&svc->listener, &sc->listen, svc,
	    gen->cfg->global.workers - 1, err, sizeof(err)) != 0) {
		config_error_add(errs, path, sc->listen_line, "[%s]: listen: %s",
		    sc->name, err);
		return -1;
	}
	return 0;
}

/*
 * The loop's configuration was replaced: its listeners close now, the rest
 * when its last connection ends (server_conn_closed).
 */
static void
generation_retire(struct server *srv, struct generation *gen)
{
	for (size_t i = 0; i < gen->nservices; i++) {
		listener_close(&gen->services[i].listener, srv->loop);
		pool_stop(&gen->services[i].pool);	/* the new one's fill */
		upstream_stop(&gen->services[i].upstream);
	}
	if (gen->nconns == 0) {
		generation_free(gen, srv->loop);
		return;
	}
	gen->next = srv->retired;
	srv->retired = gen;
}

/* A generation for cfg with trust loaded for each service; NULL on errors. */
static struct generation *
generation_new(struct server *srv, struct config *cfg,
    struct config_errors *errs)
{
	struct generation *gen;
	size_t nerr = errs->n, i = 0;
	char err[512];
	int errline;

	gen = calloc(1, sizeof(*gen));
	if (gen == NULL || (gen->services = calloc(cfg->nservices,
	    sizeof(*gen->services))) == NULL) {
		free(gen);
		config_error_add(errs, cfg->path, 0, "out of memory");
		return NULL;
	}
	gen->cfg = cfg;
	gen->nservices = cfg->nservices;
	for (struct service_config *sc = cfg->services; sc; sc = sc->next) {
		struct service *svc = &gen->services[i++];

		svc->sc = sc;
		svc->gen = gen;
		svc->srv = srv;
		svc->listener.fd = -1;
		svc->count = admission_count_get(sc->name);
		svc->metrics = metrics_service_get(sc->name);
		if (svc->count == NULL || svc->metrics == NULL) {
			config_error_add(errs, cfg->path, sc->line, "[%s]: out "
			    "of memory", sc->name);
			continue;
		}
		svc->counts = &svc->metrics->loops[srv->loop_index];
		if (!srv->is_worker)
			service_warn_key_perms(sc, cfg->path, errs);
		pool_init(&svc->pool, svc);
		if (sc->via_password_file != NULL && tls_read_password_file(
		    "via_password_file", sc->via_password_file,
		    svc->via_password, sizeof(svc->via_password), err,
		    sizeof(err)) != 0) {
			config_error_add(errs, cfg->path,
			    sc->via_password_file_line, "[%s]: %s", sc->name,
			    err);
			continue;
		}
		if (upstream_init(&svc->upstream, sc) != 0) {
			config_error_add(errs, cfg->path, sc->line, "[%s]: out "
			    "of memory", sc->name);
			continue;
		}
		if (tls_service_init(&svc->tls, sc, err, sizeof(err),
		    &errline) != 0) {
			config_error_add(errs, cfg->path, errline, "[%s]: %s",
			    sc->name, err);
			continue;
		}
		svc->tls_ready = true;
	}
	if (errs->n > nerr) {
		gen->cfg = NULL;	/* stays the caller's */
		generation_free(gen, srv->loop);
		return NULL;
	}
	return gen;
}

void
generation_discard(struct server *srv, struct generation *gen)
{
	generation_free(gen, srv->loop);
}

/* Fired by the upstream when a path is marked down: no pooled one stays. */
static void
service_path_down(void *arg, size_t entry, const struct resolver_addr *addr)
{
	pool_path_down(arg, entry, addr);
}

/*
 * The upstream of the configuration being replaced for sc's service: the
 * same service, else one whose first upstream is sc's first. Its entries'
 * addresses and health carry over (upstream_start matches them).
 */
static const struct upstream *
previous_upstream(const struct generation *old,
    const struct service_config *sc)
{
	const struct host_port *first = &sc->upstreams[0].hp;

	for (size_t i = 0; old != NULL && i < old->nservices; i++)
		if (strcmp(old->services[i].sc->name, sc->name) == 0)
			return &old->services[i].upstream;
	for (size_t i = 0; old != NULL && i < old->nservices; i++) {
		const struct host_port *o =
		    &old->services[i].sc->upstreams[0].hp;

		if (o->port == first->port && strcmp(o->host, first->host) == 0)
			return &old->services[i].upstream;
	}
	return NULL;
}

void
generation_commit(struct server *srv, struct generation *gen)
{
	char err[256];

	/* Its own, so a reload reads /etc/resolv.conf again. */
	gen->resolver = resolver_new(srv->loop, gen->cfg->global.dns_servers,
	    err, sizeof(err));
	if (gen->resolver == NULL)
		log_msg(LOG_ERROR, "resolve", "cannot start the resolver: %s "
		    "(every connection fails at stage=resolve)", err);
	for (size_t i = 0; i < gen->nservices; i++) {
		struct service *svc = &gen->services[i];

		svc->kept = svc->takeover != NULL;
		if (svc->kept)
			listener_move(&svc->listener, svc->takeover, svc,
			    srv->loop);
		svc->takeover = NULL;
		/* Each loop resolves on its own; the main loop logs. */
		upstream_start(&svc->upstream, srv->loop, gen->resolver,
		    previous_upstream(srv->gen, svc->sc), srv->is_worker,
		    &svc->metrics->health[srv->loop_index]);
		svc->upstream.path_down = service_path_down;
		svc->upstream.path_down_arg = &svc->pool;
		if (!srv->is_worker) {	/* said once, not once per loop */
			service_warn_key_perms(svc->sc, NULL, NULL);
			service_warn_open_access(svc);
			service_warn_cert_expiry(svc);
		}
		listener_start(&svc->listener, srv->loop);
		pool_start(&svc->pool);
	}
	io_collect_start(&srv->collect, srv->loop,
	    (ev_tstamp)gen->cfg->global.io_collect_us / 1e6);
	if (srv->gen != NULL)
		generation_retire(srv, srv->gen);
	srv->gen = gen;
	if (!srv->is_worker)
		service_warn_daily_start(&srv->daily, srv->loop, &srv->gen);
}

int
generation_apply(struct server *srv, struct config *cfg, bool bind,
    struct config_errors *errs)
{
	struct generation *gen;
	size_t nerr = errs->n;

	gen = generation_new(srv, cfg, errs);
	if (gen == NULL)
		return -1;
	for (size_t i = 0; bind && i < gen->nservices; i++)
		(void)service_listen(srv, gen, i, errs);
	for (size_t k = 0; srv->gen == NULL && k < srv->ninherited; k++) {
		if (!srv->inherited[k].used)
			config_error_add(errs, "socket activation", 0, "fd %d "
			    "named '%s' matches no service", srv->inherited[k].fd,
			    srv->inherited[k].name ? srv->inherited[k].name :
			    "(none)");
	}
	if (errs->n > nerr || !bind) {
		/* Nothing changes (new sockets close, kept ones stay); -t. */
		gen->cfg = NULL;
		generation_free(gen, srv->loop);
		return errs->n > nerr ? -1 : 0;
	}
	generation_commit(srv, gen);
	return 0;
}

struct generation *
generation_prepare_worker(struct server *wsrv, struct config *cfg,
    const struct server *main_srv, struct config_errors *errs)
{
	const struct generation *from = main_srv->gen;
	struct generation *gen;
	char err[256];

	if (from == NULL || from->nservices != cfg->nservices) {
		config_error_add(errs, cfg->path, 0, "worker: configuration "
		    "differs from the main loop's");
		return NULL;
	}
	gen = generation_new(wsrv, cfg, errs);
	if (gen == NULL)
		return NULL;
	for (size_t i = 0; i < gen->nservices; i++) {
		struct service *svc = &gen->services[i];
		int fd = dup(listener_fd_for_loop(&from->services[i].listener,
		    wsrv->loop_index));

		/* The main loop owns it: a reload keeps it with the listener. */
		if (fd < 0 || listener_adopt(&svc->listener, fd, svc, err,
		    sizeof(err)) != 0) {
			config_error_add(errs, cfg->path, svc->sc->listen_line,
			    "[%s]: worker listener: %s", svc->sc->name,
			    fd < 0 ? strerror(errno) : err);
			if (fd >= 0)
				close(fd);
			gen->cfg = NULL;
			generation_free(gen, wsrv->loop);
			return NULL;
		}
		snprintf(svc->listener.bound, sizeof(svc->listener.bound),
		    "%s", from->services[i].listener.bound);
	}
	return gen;
}
