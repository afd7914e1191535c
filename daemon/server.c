/*
 * server.c - one event loop's world: server_new(), server_free(), the
 * connection bookkeeping (server_conn_attach, _setup_done, _detach,
 * _closed), status (server_total, server_status, server_log_listening) and
 * shutdown (server_begin_shutdown, server_close_all). Configurations come
 * and go in generation.c.
 */
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "generation.h"
#include "log.h"

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
	io_collect_init(&srv->collect, &srv->nsetup);
	if (loop != NULL)
		conn_dump_seat_init(srv);
	return srv;
}

/* upstream=HOST:PORT[,HOST:PORT...] as configured ([V6] bracketed). */
static void
log_upstreams(struct log_line *l, const struct service_config *sc)
{
	char buf[UPSTREAMS_MAX * (HOST_MAX + 9)];
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < sc->nupstreams; i++) {
		const struct host_port *hp = &sc->upstreams[i].hp;
		bool v6 = strchr(hp->host, ':') != NULL;

		used += (size_t)snprintf(buf + used, sizeof(buf) - used,
		    "%s%s%s%s:%u", i > 0 ? "," : "", v6 ? "[" : "", hp->host,
		    v6 ? "]" : "", hp->port);
	}
	log_str(l, "upstream", buf);
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
		log_str(&l, "service", svc->sc->name);
		log_str(&l, "listen", svc->listener.bound);
		if (svc->listener.inherited)
			log_str(&l, "inherited", "yes");
		log_upstreams(&l, svc->sc);
		log_str(&l, "verify", verify_mode_name(svc->sc->verify));
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
	for (size_t i = 0; srv->gen != NULL && i < srv->gen->nservices; i++) {
		listener_close(&srv->gen->services[i].listener, srv->loop);
		pool_stop(&srv->gen->services[i].pool);	/* close_notify now */
	}
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
}

void
server_conn_setup_begin(struct server *srv)
{
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
	if (srv->dumps.active != NULL)	/* a /connections cursor may be here */
		conn_dump_forget(srv, link);
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
		service_warn_daily_stop(&srv->daily, srv->loop);
		io_collect_stop(&srv->collect, srv->loop);
	}
	server_close_all(srv);
	conn_dump_seat_free(srv);
	while (srv->retired != NULL) {
		struct generation *next = srv->retired->next;

		generation_free(srv->retired, srv->loop);
		srv->retired = next;
	}
	if (srv->gen != NULL)
		generation_free(srv->gen, srv->loop);
	generation_inherited_free(srv);
	relay_spares_free(&srv->spares);
	free(srv);
}
