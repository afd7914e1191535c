/* server.c - one event loop's world: configurations, services, connections. */
#include "server.h"

#include <math.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"

/*
 * io_collect_interval, adaptively. Under load, polling at most once per
 * interval and taking what came in the meantime in one go saves wake-ups:
 * a proxy that answers every event at once sleeps and is woken per packet,
 * and on the sender's CPU each wake-up costs more than the bytes (an
 * inter-processor interrupt, dearer still in a VM): see README,
 * Performance. But libev sleeps out the interval after every iteration, so
 * with few connections in flight each request would wait for its own
 * response to be collected (one connection: 6,500 -> 5,000 req/s; eight:
 * 59,000 -> 36,000). So the loop collects only while it is busy: while
 * several connections are being set up (connect and TLS handshake take
 * milliseconds, the interval microseconds), or from a poll that finds many
 * events ready at once until one that finds a single event (the gap keeps a
 * few busy connections from switching it on and off).
 */
#define COLLECT_START_EVENTS	12
#define COLLECT_STOP_EVENTS	2
#define COLLECT_SETUPS		4

static void
collect_check_cb(struct ev_loop *loop, ev_check *w, int revents)
{
	struct server *srv = w->data;

	(void)revents;
	/* Check watchers run first after a poll: the rest are its events. */
	srv->collect_ready = ev_pending_count(loop);
}

static void
collect_prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	struct server *srv = w->data;

	(void)revents;
	if (srv->nsetup >= COLLECT_SETUPS)
		srv->collecting = true;
	else if (srv->collecting)
		srv->collecting = srv->collect_ready >= COLLECT_STOP_EVENTS;
	else
		srv->collecting = srv->collect_ready >= COLLECT_START_EVENTS;
	ev_set_io_collect_interval(loop,
	    srv->collecting ? srv->collect_interval : 0.);
}

struct server *
server_new(struct ev_loop *loop)
{
	struct server *srv = calloc(1, sizeof(*srv));

	if (srv == NULL)
		return NULL;
	srv->loop = loop;
	srv->id_step = 1;
	srv->group = &srv->self;
	srv->self = srv;
	srv->ngroup = 1;
	ev_prepare_init(&srv->collect_prepare, collect_prepare_cb);
	srv->collect_prepare.data = srv;
	ev_check_init(&srv->collect_check, collect_check_cb);
	srv->collect_check.data = srv;
	return srv;
}

int
server_inherit_fds(struct server *srv, struct config_errors *errs)
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

/*
 * Resolves the upstream once per configuration: getaddrinfo() blocks, so it
 * must not run on the connection path. A failure is not fatal: the service
 * still listens and logs stage=resolve for each client, so the cause shows.
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
	} else {
		for (struct addrinfo *ai = svc->addrs; ai; ai = ai->ai_next)
			n++;
	}
	if (svc->srv->is_worker)
		return;		/* the main loop said it already */
	log_line_begin(&l, rc != 0 ? LOG_WARN : LOG_INFO, "resolve");
	log_str(&l, "service", sc->name);
	log_strf(&l, "upstream", "%s:%u", sc->upstream.host,
	    sc->upstream.port);
	if (rc != 0)
		log_str(&l, "error", svc->resolve_error);
	else
		log_uint(&l, "addresses", n);
	log_line_end(&l);
}

static void
generation_free(struct generation *gen, struct ev_loop *loop)
{
	for (size_t i = 0; i < gen->nservices; i++) {
		struct service *svc = &gen->services[i];

		listener_close(&svc->listener, loop);
		if (svc->tls_ready)
			tls_service_deinit(&svc->tls);
		if (svc->addrs != NULL)
			freeaddrinfo(svc->addrs);
	}
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
	const struct service_config *sc = gen->services[idx].cfg;
	struct generation *old = srv->gen;

	for (int pass = 0; old != NULL && pass < 2; pass++) {
		for (size_t i = 0; i < old->nservices; i++) {
			struct service *svc = &old->services[i];
			struct listener *l = &svc->listener;
			bool same_name = strcmp(svc->cfg->name, sc->name) == 0;

			if (l->fd < 0 || takeover_claimed(gen, idx, l) ||
			    (pass == 0 && !same_name))
				continue;
			if (l->inherited ? same_name : pass == 0 ?
			    listen_addr_equal(&svc->cfg->listen, &sc->listen) :
			    listen_addr_same(&svc->cfg->listen, &sc->listen))
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
	const struct service_config *sc = svc->cfg;
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
 * A client key is an identity: one that every local user can read is
 * refused unless the config says allow_insecure_key_perms; one the group
 * can read is only warned about (0640 root:tlsfwd is a normal setup).
 */
static void
key_perms_check(const struct service_config *sc, const char *cfg_path,
    struct config_errors *errs)
{
	const char *files[2] = { sc->key_file, sc->key_password_file };
	const int lines[2] = { sc->key_file_line, sc->key_password_file_line };
	const char *keys[2] = { "key_file", "key_password_file" };
	struct log_line l;
	struct stat st;
	bool refuse;

	for (int i = 0; i < 2; i++) {
		if (files[i] == NULL || strncmp(files[i], "pkcs11:", 7) == 0 ||
		    stat(files[i], &st) != 0 || (st.st_mode & 077) == 0)
			continue;
		refuse = (st.st_mode & 007) != 0 &&
		    !sc->allow_insecure_key_perms;
		if (errs != NULL) {	/* building: errors; warnings at start */
			if (refuse)
				config_error_add(errs, cfg_path, lines[i],
				    "[%s]: %s %s is readable by others (mode "
				    "%04o): chmod o-rwx it, or set "
				    "allow_insecure_key_perms = yes", sc->name,
				    keys[i], files[i],
				    (unsigned)(st.st_mode & 07777));
			continue;
		}
		if (refuse)
			continue;	/* refused when the config was built */
		log_line_begin(&l, LOG_WARN, "config");
		log_str(&l, "service", sc->name);
		log_strf(&l, "msg", "%s %s is readable by %s (mode %04o)%s",
		    keys[i], files[i], (st.st_mode & 007) != 0 ? "others" :
		    "group", (unsigned)(st.st_mode & 07777),
		    (st.st_mode & 007) != 0 ? ", allowed by "
		    "allow_insecure_key_perms" : ": chmod 600 it unless the "
		    "group is tlsfwd's own");
		log_line_end(&l);
	}
}

/* allow = 0.0.0.0/0 was asked for; say it every start and reload. */
static void
service_warn_open_access(const struct service *svc)
{
	struct log_line l;

	if (!svc->cfg->allow_everyone)
		return;
	log_line_begin(&l, LOG_WARN, "config");
	log_str(&l, "service", svc->cfg->name);
	log_strf(&l, "msg", "allow lets every client address in on %s: anyone "
	    "who reaches it uses this service%s", svc->cfg->listen.text,
	    svc->cfg->cert_file != NULL ? " and its client certificate" : "");
	log_line_end(&l);
}

/* Days before a client certificate's end that warnings start. */
#define CERT_EXPIRY_WARN_DAYS 14

static void
service_check_expiry(const struct service *svc)
{
	char subject[512], when[32];
	struct log_line l;
	struct tm tm;
	time_t end = tls_service_cert_expiry(&svc->tls, subject,
	    sizeof(subject));
	double days;

	if (end == 0 || end == (time_t)-1)
		return;
	days = difftime(end, time(NULL)) / 86400.;
	if (days > CERT_EXPIRY_WARN_DAYS)
		return;
	gmtime_r(&end, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	log_line_begin(&l, LOG_WARN, "cert_expiry");
	log_str(&l, "service", svc->cfg->name);
	log_str(&l, "subject", subject);
	log_str(&l, "not_after", when);
	log_strf(&l, "days_left", "%ld", (long)floor(days));
	log_str(&l, "msg", days < 0 ? "the client certificate has expired" :
	    "the client certificate expires soon");
	log_line_end(&l);
}

static void
expiry_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct server *srv = w->data;

	(void)loop;
	(void)revents;
	for (size_t i = 0; srv->gen != NULL && i < srv->gen->nservices; i++)
		service_check_expiry(&srv->gen->services[i]);
}

static void
retire(struct server *srv, struct generation *gen)
{
	for (size_t i = 0; i < gen->nservices; i++)
		listener_close(&gen->services[i].listener, srv->loop);
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

		svc->cfg = sc;
		svc->gen = gen;
		svc->srv = srv;
		svc->listener.fd = -1;
		svc->count = admission_count_get(sc->name);
		if (svc->count == NULL) {
			config_error_add(errs, cfg->path, sc->line, "[%s]: out "
			    "of memory", sc->name);
			continue;
		}
		if (!srv->is_worker)
			key_perms_check(sc, cfg->path, errs);
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
server_discard(struct server *srv, struct generation *gen)
{
	generation_free(gen, srv->loop);
}

void
server_commit(struct server *srv, struct generation *gen)
{
	for (size_t i = 0; i < gen->nservices; i++) {
		struct service *svc = &gen->services[i];

		svc->kept = svc->takeover != NULL;
		if (svc->kept)
			listener_move(&svc->listener, svc->takeover, svc,
			    srv->loop);
		svc->takeover = NULL;
		service_resolve(svc);
		if (!srv->is_worker) {	/* said once, not once per loop */
			key_perms_check(svc->cfg, NULL, NULL);
			service_warn_open_access(svc);
			service_check_expiry(svc);
		}
		listener_start(&svc->listener, srv->loop);
	}
	srv->collect_interval = (ev_tstamp)gen->cfg->global.io_collect_us / 1e6;
	if (!ev_is_active(&srv->collect_prepare)) {
		/* Neither watcher keeps the loop running at shutdown. */
		ev_prepare_start(srv->loop, &srv->collect_prepare);
		ev_unref(srv->loop);
		ev_check_start(srv->loop, &srv->collect_check);
		ev_unref(srv->loop);
	}
	if (srv->gen != NULL)
		retire(srv, srv->gen);
	srv->gen = gen;
	if (!srv->is_worker && !ev_is_active(&srv->expiry_timer)) {
		ev_timer_init(&srv->expiry_timer, expiry_timer_cb, 86400.,
		    86400.);
		srv->expiry_timer.data = srv;
		ev_timer_start(srv->loop, &srv->expiry_timer);
	}
}

int
server_apply(struct server *srv, struct config *cfg, bool bind,
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
	server_commit(srv, gen);
	return 0;
}

struct generation *
server_prepare_shared(struct server *wsrv, struct config *cfg,
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
			config_error_add(errs, cfg->path, svc->cfg->listen_line,
			    "[%s]: worker listener: %s", svc->cfg->name,
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

void
server_log_listening(struct server *srv, bool only_new)
{
	struct log_line l;

	for (size_t i = 0; i < srv->gen->nservices; i++) {
		struct service *svc = &srv->gen->services[i];

		if (only_new && svc->kept)
			continue;
		log_line_begin(&l, LOG_INFO, "listening");
		log_str(&l, "service", svc->cfg->name);
		log_str(&l, "listen", svc->listener.bound);
		if (svc->listener.inherited)
			log_str(&l, "inherited", "yes");
		log_strf(&l, "upstream", "%s:%u", svc->cfg->upstream.host,
		    svc->cfg->upstream.port);
		log_str(&l, "verify", verify_mode_name(svc->cfg->verify));
		log_line_end(&l);
	}
	if (only_new)
		return;
	log_line_begin(&l, LOG_INFO, "ready");
	log_uint(&l, "services", srv->gen->nservices);
	log_line_end(&l);
}

static const char *
plural(uint64_t n, const char *one, const char *many)
{
	return n == 1 ? one : many;
}

uint64_t
server_total(const struct server *srv, enum server_total what)
{
	uint64_t sum = 0;

	/* Other loops count on: read their counters atomically. */
	for (size_t i = 0; i < srv->ngroup; i++) {
		const struct server *s = srv->group[i];

		sum += what == TOTAL_CONNS ?
		    __atomic_load_n(&s->nconns, __ATOMIC_RELAXED) :
		    what == TOTAL_OK ?
		    __atomic_load_n(&s->handshakes_ok, __ATOMIC_RELAXED) :
		    __atomic_load_n(&s->handshakes_failed, __ATOMIC_RELAXED);
	}
	return sum;
}

void
server_status(const struct server *srv, char *buf, size_t buflen)
{
	size_t nsvc = srv->gen != NULL ? srv->gen->nservices : 0;
	uint64_t conns = server_total(srv, TOTAL_CONNS);
	uint64_t ok = server_total(srv, TOTAL_OK);

	snprintf(buf, buflen, "%s%zu %s, %llu active %s, %llu %s, %llu failed",
	    srv->status_note, nsvc, plural(nsvc, "service", "services"),
	    (unsigned long long)conns, plural(conns, "connection",
	    "connections"), (unsigned long long)ok,
	    plural(ok, "handshake", "handshakes"), (unsigned long long)
	    server_total(srv, TOTAL_FAILED));
}

void
server_close_all(struct server *srv)
{
	while (srv->conns != NULL)
		conn_close(srv->conns->conn, CLOSE_SHUTDOWN);
}

static void
drain_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct server *srv = w->data;

	(void)revents;
	log_msg(LOG_WARN, "drain", "shutdown_timeout reached: closing %llu "
	    "open connections", (unsigned long long)srv->nconns);
	server_close_all(srv);
	ev_break(loop, EVBREAK_ALL);
}

void
server_begin_shutdown(struct server *srv)
{
	struct log_line l;

	if (srv->draining) {
		/* Asked twice: do not wait any longer. */
		server_close_all(srv);
		ev_break(srv->loop, EVBREAK_ALL);
		return;
	}
	srv->draining = true;
	for (size_t i = 0; srv->gen != NULL && i < srv->gen->nservices; i++)
		listener_close(&srv->gen->services[i].listener, srv->loop);
	if (!srv->is_worker) {
		log_line_begin(&l, LOG_INFO, "drain");
		log_uint(&l, "connections", server_total(srv, TOTAL_CONNS));
		log_uint(&l, "timeout_ms",
		    srv->gen->cfg->global.shutdown_timeout_ms);
		log_line_end(&l);
	}
	if (srv->nconns == 0) {
		ev_break(srv->loop, EVBREAK_ALL);
		return;
	}
	ev_timer_init(&srv->drain_timer, drain_timeout_cb,
	    (ev_tstamp)srv->gen->cfg->global.shutdown_timeout_ms / 1e3, 0.);
	srv->drain_timer.data = srv;
	ev_timer_start(srv->loop, &srv->drain_timer);
}

void
server_conn_attach(struct server *srv, struct generation *gen,
    struct conn_link *link)
{
	link->prev = NULL;
	link->next = srv->conns;
	if (srv->conns != NULL)
		srv->conns->prev = link;
	srv->conns = link;
	__atomic_add_fetch(&srv->nconns, 1, __ATOMIC_RELAXED);
	gen->nconns++;
	srv->nsetup++;
}

void
server_conn_setup_done(struct server *srv)
{
	srv->nsetup--;
}

void
server_conn_detach(struct server *srv, struct generation *gen,
    struct conn_link *link)
{
	if (link->prev != NULL)
		link->prev->next = link->next;
	else
		srv->conns = link->next;
	if (link->next != NULL)
		link->next->prev = link->prev;
	__atomic_sub_fetch(&srv->nconns, 1, __ATOMIC_RELAXED);
	gen->nconns--;
}

void
server_conn_closed(struct server *srv, struct generation *gen)
{
	struct generation **pp;

	/* A retired configuration goes with its last connection. */
	if (gen != srv->gen && gen->nconns == 0) {
		for (pp = &srv->retired; *pp != NULL; pp = &(*pp)->next) {
			if (*pp == gen) {
				*pp = gen->next;
				generation_free(gen, srv->loop);
				break;
			}
		}
	}
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
	if (srv->loop != NULL) {
		ev_timer_stop(srv->loop, &srv->expiry_timer);
		if (ev_is_active(&srv->collect_prepare)) {
			ev_ref(srv->loop);
			ev_prepare_stop(srv->loop, &srv->collect_prepare);
			ev_ref(srv->loop);
			ev_check_stop(srv->loop, &srv->collect_check);
		}
	}
	server_close_all(srv);
	while (srv->retired != NULL) {
		struct generation *next = srv->retired->next;

		generation_free(srv->retired, srv->loop);
		srv->retired = next;
	}
	if (srv->gen != NULL)
		generation_free(srv->gen, srv->loop);
	for (size_t i = 0; i < srv->ninherited; i++) {
		if (!srv->inherited[i].used)
			close(srv->inherited[i].fd);
		free(srv->inherited[i].name);
	}
	free(srv->inherited);
	relay_spares_free(&srv->spares);
	free(srv);
}
