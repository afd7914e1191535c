/* conn.c - one proxied connection: the state machine, connect, the close. */
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conn_priv.h"
#include "log.h"
#include "metrics.h"

/*
 * The state machine. conn_set_state is the only way in; conn_close the only
 * way out.
 *
 *   state             entered from                        its timer
 *   RESOLVING         conn_connect_start (the first       connect_timeout
 *                     state): no addresses known yet
 *   CONNECTING        conn_connect_paths; conn_connect_   connect_timeout,
 *                     next_path (a handshake failed and   each attempt of
 *                     another path is left)               the race
 *   PROXY_TUNNEL      conn_race_won with via: CONNECT     connect_timeout
 *                     sent, the proxy's answer awaited
 *   HANDSHAKING       conn_race_won, conn_tunnel_read     handshake_timeout
 *   POOLED            conn_handshake_done of a connection pool_max_idle
 *                     without a client (pool.c); left by
 *                     conn_adopt, "adopt a ready upstream"
 *   AWAITING_VERDICT  conn_handshake_done: TLS 1.3 and    idle_timeout
 *                     the upstream asked for our cert
 *   RELAYING          conn_handshake_done, conn_on_relay  idle_timeout
 *                     (the verdict came: yes)
 *   SHUTTING_DOWN     conn_on_relay (RELAY_HALF_CLOSED)   idle_timeout,
 *                                                         running on
 *   CLOSED            conn_close: every end               none
 *
 * Failures before RELAYING end in conn_fail_handshake (one handshake line,
 * then close), unless a handshake failed and another path is left
 * (conn_connect.c: back to CONNECTING). The relay's events are turned into
 * states by conn_on_relay, with conn_state_after_relay's rules.
 */

static bool
conn_in_setup(enum conn_state s)
{
	return s == CONN_RESOLVING || s == CONN_CONNECTING ||
	    s == CONN_PROXY_TUNNEL || s == CONN_HANDSHAKING;
}

enum conn_state
conn_state_after_relay(enum conn_state s, enum relay_event ev, bool verdict_in)
{
	switch (ev) {
	case RELAY_DONE:
	case RELAY_FAILED:
		return CONN_CLOSED;
	case RELAY_HALF_CLOSED:
		if (s == CONN_AWAITING_VERDICT && !verdict_in)
			return s;
		return CONN_SHUTTING_DOWN;
	case RELAY_WAIT:
		break;
	}
	if (s == CONN_AWAITING_VERDICT)
		return verdict_in ? CONN_RELAYING : s;
	return s;
}

double
conn_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void
conn_set_state(struct conn *c, enum conn_state state)
{
	struct ev_loop *loop = c->srv->loop;
	const struct service_config *sc = c->svc->sc;
	enum conn_state from = c->state;
	uint64_t ms = 0;

	if (log_enabled(LOG_DEBUG) && state != from)
		conn_log_state(c, state);
	c->state = state;
	if (conn_in_setup(from) && !conn_in_setup(state)) {
		server_conn_setup_done(c->srv);
		if (state != CONN_CLOSED)
			conn_connect_done(c);	/* the path worked */
	}
	switch (state) {
	case CONN_RESOLVING:
	case CONN_PROXY_TUNNEL:
		ms = sc->connect_timeout_ms;
		break;
	case CONN_CONNECTING:
		/* The race times each attempt with connect_timeout. */
		ev_timer_stop(loop, &c->timer);
		return;
	case CONN_HANDSHAKING:
		ms = sc->handshake_timeout_ms;
		break;
	case CONN_POOLED:
		ms = sc->pool_max_idle_ms;
		break;
	case CONN_AWAITING_VERDICT:
	case CONN_RELAYING:
	case CONN_SHUTTING_DOWN:
		/* The idle timer starts with the relay and then runs on. */
		if (!conn_in_setup(from) && from != CONN_POOLED)
			return;
		ms = sc->idle_timeout_ms;
		break;
	case CONN_CLOSED:
		ev_timer_stop(loop, &c->timer);
		return;
	}
	ev_timer_stop(loop, &c->timer);
	ev_timer_set(&c->timer, (ev_tstamp)ms / 1e3, 0.);
	ev_timer_start(loop, &c->timer);
}

void
conn_fail_handshake(struct conn *c, enum conn_result result,
    enum conn_stage stage, enum conn_alert_from from, const char *text)
{
	if (text != NULL)
		c->err.text = text;
	if ((c->state == CONN_HANDSHAKING || c->state == CONN_PROXY_TUNNEL) &&
	    conn_connect_next_path(c, result, stage, from))
		return;
	conn_log_handshake_failure(c, result, stage, from);
	c->err.text = NULL;	/* may point into a caller's buffer */
	conn_close(c, CLOSE_HANDSHAKE_FAILED);
}

/* The upstream took our certificate: the handshake line, at last. */
static void
conn_verdict_yes(struct conn *c)
{
	c->t_established = conn_now_ms();
	conn_log_handshake_ok(c);
}

static void
conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = w->data;
	char text[96];
	ev_tstamp idle, left;

	(void)revents;
	assert(c->magic == CONN_MAGIC);
	switch (c->state) {
	case CONN_RESOLVING:
		conn_connect_resolve_timeout(c);
		break;
	case CONN_CONNECTING:
		break;		/* the race times each attempt */
	case CONN_PROXY_TUNNEL:
	case CONN_HANDSHAKING:
		snprintf(text, sizeof(text), "%s within %llu ms", c->state ==
		    CONN_HANDSHAKING ? "TLS handshake not finished" :
		    "the proxy did not answer CONNECT", (unsigned long long)
		    (c->state == CONN_HANDSHAKING ? c->svc->sc->
		    handshake_timeout_ms : c->svc->sc->connect_timeout_ms));
		conn_fail_handshake(c, RESULT_FAIL, STAGE_TIMEOUT, ALERT_NONE,
		    text);
		break;
	case CONN_POOLED:
		conn_close_pooled(c, POOL_DROP_MAX_IDLE);
		break;
	case CONN_AWAITING_VERDICT:
	case CONN_RELAYING:
	case CONN_SHUTTING_DOWN:
		idle = (ev_tstamp)c->svc->sc->idle_timeout_ms / 1e3;
		left = c->relay.last_activity + idle - ev_now(loop);
		if (left > 0) {
			ev_timer_set(&c->timer, left, 0.);
			ev_timer_start(loop, &c->timer);
			break;
		}
		conn_close(c, CLOSE_IDLE_TIMEOUT);
		break;
	case CONN_CLOSED:
		break;
	}
}

static void conn_pooled_read(struct conn *c);

/* ----- relay events: the relay moves bytes, this decides what follows ----- */

void
conn_on_relay(struct conn *c, enum relay_event ev)
{
	const struct relay *r = &c->relay;
	enum conn_close_reason reason;
	enum conn_state next;
	bool verdict_in = true;
	int rc = r->fail.gnutls_rc;

	/* The common case, once per readiness event: nothing changes. */
	if (ev == RELAY_WAIT && c->state == CONN_RELAYING)
		return;
	if (c->state == CONN_AWAITING_VERDICT) {
		/* Any record, ticket, close_notify or end without alert. */
		verdict_in = r->upstream_spoke || c->tlsc.upstream_spoke;
		if (!verdict_in && ev == RELAY_FAILED &&
		    r->fail.side == RELAY_UPSTREAM) {
			if (!conn_verdict_from_leftovers(c, &rc)) {
				/* The upstream's answer to our Finished: no. */
				bool alert = conn_note_tls_error(c, rc);

				conn_fail_handshake(c, alert ? RESULT_ALERT :
				    RESULT_FAIL, STAGE_HANDSHAKE, alert ?
				    ALERT_FROM_UPSTREAM : ALERT_NONE, NULL);
				return;
			}
			verdict_in = true;
		}
	}
	next = conn_state_after_relay(c->state, ev, verdict_in);
	if (next != CONN_CLOSED) {
		if (c->state == CONN_AWAITING_VERDICT && verdict_in)
			conn_verdict_yes(c);
		if (next != c->state)
			conn_set_state(c, next);
		return;
	}
	/* conn_close logs a verdict still awaited as a yes. */
	if (ev == RELAY_DONE) {
		reason = r->upstream_close == RELAY_CLOSE_EOF_TRUNCATED ?
		    CLOSE_UPSTREAM_TRUNCATED : CLOSE_DONE;
	} else {
		c->err.sys_errno = r->fail.sys_errno;
		reason = r->fail.side == RELAY_CLIENT ? CLOSE_CLIENT_ERROR :
		    CLOSE_UPSTREAM_ERROR;
		if (rc != 0 && conn_note_tls_error(c, rc))
			reason = CLOSE_UPSTREAM_ALERT;
	}
	conn_close(c, reason);
}

/* ----- watchers: one set, dispatched on state ----- */

static bool
conn_relaying(const struct conn *c)
{
	return c->state == CONN_AWAITING_VERDICT ||
	    c->state == CONN_RELAYING || c->state == CONN_SHUTTING_DOWN;
}

/*
 * Fired by u_rd: the upstream sent bytes. Handshaking: the next step.
 * Relaying: the relay's (it re-arms what it still waits for).
 */
static void
conn_upstream_readable_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = w->data;

	(void)loop;
	(void)revents;
	assert(c->magic == CONN_MAGIC);
	relay_upstream_readable(&c->relay);
	if (c->state == CONN_HANDSHAKING)
		conn_handshake_step(c);
	else if (c->state == CONN_PROXY_TUNNEL)
		conn_tunnel_read(c);
	else if (c->state == CONN_POOLED)
		conn_pooled_read(c);
	else if (conn_relaying(c))
		conn_on_relay(c, relay_on_upstream_readable(&c->relay));
}

/*
 * Fired by u_wr (armed from the handshake on). Handshaking: the next step.
 * Relaying: the relay's.
 */
static void
conn_upstream_writable_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = w->data;

	(void)loop;
	(void)revents;
	assert(c->magic == CONN_MAGIC);
	switch (c->state) {
	case CONN_HANDSHAKING:
		conn_handshake_step(c);
		break;
	case CONN_AWAITING_VERDICT:
	case CONN_RELAYING:
	case CONN_SHUTTING_DOWN:
		conn_on_relay(c, relay_on_upstream_writable(&c->relay));
		break;
	case CONN_RESOLVING:
	case CONN_CONNECTING:
	case CONN_PROXY_TUNNEL:	/* the request went at once */
	case CONN_POOLED:
	case CONN_CLOSED:
		break;
	}
}

/* Fired by c_rd (armed only while relaying): the client sent bytes or FIN. */
static void
conn_client_readable_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = w->data;

	(void)loop;
	(void)revents;
	assert(c->magic == CONN_MAGIC);
	conn_on_relay(c, relay_on_client_readable(&c->relay));
}

/* Fired by c_wr (armed only while relaying): the client can take more. */
static void
conn_client_writable_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = w->data;

	(void)loop;
	(void)revents;
	assert(c->magic == CONN_MAGIC);
	conn_on_relay(c, relay_on_client_writable(&c->relay));
}

/* ----- connect ----- */

static void
conn_set_nodelay(int fd)
{
	int one = 1;

	/* Best effort: unix sockets have no Nagle to disable. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* ----- life cycle ----- */

/* A connection of svc with client cfd (-1: none, for the pool). */
static struct conn *
conn_new(struct service *svc, int cfd)
{
	struct server *srv = svc->srv;
	struct conn *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->magic = CONN_MAGIC;
	c->svc = svc;
	c->srv = srv;
	c->cfd = cfd;
	c->ufd = -1;
	c->t_start = conn_now_ms();
	ev_io_init(&c->c_rd, conn_client_readable_cb, cfd, EV_READ);
	ev_io_init(&c->c_wr, conn_client_writable_cb, cfd, EV_WRITE);
	ev_io_init(&c->u_rd, conn_upstream_readable_cb, -1, EV_READ);
	ev_io_init(&c->u_wr, conn_upstream_writable_cb, -1, EV_WRITE);
	ev_init(&c->timer, conn_timer_cb);
	c->c_rd.data = c->c_wr.data = c->u_rd.data = c->u_wr.data = c;
	c->timer.data = c;
	relay_init(&c->relay, srv->loop, &srv->spares);
	c->link.conn = c;
	server_conn_setup_begin(srv);
	return c;
}

/* The client's part: an id, its socket, its place among the loop's. */
static void
conn_take_client(struct conn *c, int cfd, const char *client)
{
	struct server *srv = c->srv;

	c->id = srv->next_conn_id += srv->id_step;
	c->cfd = cfd;
	memcpy(c->client, client, sizeof(c->client));
	conn_set_nodelay(cfd);
	METRIC_ADD(c->svc->counts->opened, 1);
	server_conn_attach(srv, c->svc->gen, &c->link);
}

/*
 * Adopt a ready upstream: pooled connection c takes client cfd. Its
 * handshake line comes now (pooled=yes, with its real set-up times and the
 * wait in the pool) or with the TLS 1.3 verdict on our certificate, then
 * the relay, which gives the client first what the upstream sent while it
 * waited.
 */
static void
conn_adopt(struct conn *c, int cfd, const char *client)
{
	struct relay_ends ends = {
		.cfd = cfd, .ufd = c->ufd, .tls = c->tls,
		.c_rd = &c->c_rd, .c_wr = &c->c_wr,
		.u_rd = &c->u_rd, .u_wr = &c->u_wr,
	};

	c->pooled = false;
	c->t_adopted = conn_now_ms();
	ev_io_set(&c->c_rd, cfd, EV_READ);
	ev_io_set(&c->c_wr, cfd, EV_WRITE);
	conn_take_client(c, cfd, client);
	if (c->verdict_wait) {
		/* The upstream has not judged our certificate yet: as without
		 * a pool, the handshake line waits for its verdict. */
		conn_set_state(c, CONN_AWAITING_VERDICT);
	} else {
		conn_log_handshake_ok(c);
		conn_set_state(c, CONN_RELAYING);
	}
	conn_on_relay(c, relay_start(&c->relay, &ends));
}

void
conn_accept(struct service *svc, int cfd, const struct sockaddr *peer,
    socklen_t peerlen)
{
	struct server *srv = svc->srv;
	struct conn *c;
	char client[SOCKADDR_TEXT_MAX];

	/* Before any upstream work: a refused client costs one close(). */
	sockaddr_format(peer, peerlen, client, sizeof(client));
	if (!admission_admit(svc, peer, client, ev_now(srv->loop))) {
		close(cfd);
		return;
	}
	if ((c = pool_take(&svc->pool)) != NULL) {
		conn_adopt(c, cfd, client);
		return;
	}
	if ((c = conn_new(svc, cfd)) == NULL) {
		log_msg(LOG_ERROR, "accept", "service=%s: out of memory, "
		    "closing the client", svc->sc->name);
		admission_release(svc);
		close(cfd);
		return;
	}
	conn_take_client(c, cfd, client);
	conn_connect_start(c);
}

struct conn *
conn_new_pooled(struct service *svc)
{
	struct conn *c = conn_new(svc, -1);

	if (c == NULL) {
		log_msg(LOG_ERROR, "pool", "service=%s: out of memory",
		    svc->sc->name);
		return NULL;
	}
	c->pooled = true;
	return c;
}

double
conn_t_client(const struct conn *c)
{
	return c->t_adopted > 0 ? c->t_adopted : c->t_start;
}

/*
 * Fired (through the upstream's read watcher) while c waits in the pool:
 * tickets, a greeting, the TLS 1.3 verdict on our certificate, or an end.
 */
static void
conn_pooled_read(struct conn *c)
{
	enum relay_event ev = relay_pooled_read(&c->relay, c->tls);
	int rc = c->relay.fail.gnutls_rc;
	bool alert;

	if (ev == RELAY_WAIT) {
		if (c->relay.upstream_spoke || c->tlsc.upstream_spoke)
			c->verdict_wait = false;	/* yes: it spoke */
		return;
	}
	if (c->verdict_wait && ev == RELAY_FAILED && rc != 0) {
		/* The upstream's answer to our certificate: no. */
		alert = conn_note_tls_error(c, rc);
		conn_fail_handshake(c, alert ? RESULT_ALERT : RESULT_FAIL,
		    STAGE_HANDSHAKE, alert ? ALERT_FROM_UPSTREAM : ALERT_NONE,
		    NULL);
		return;
	}
	conn_close_pooled(c, ev == RELAY_FAILED &&
	    c->relay.fail.sys_errno == ENOBUFS ? POOL_DROP_GREETING_TOO_LONG :
	    POOL_DROP_UPSTREAM_CLOSED);
}

/* Every watcher stopped, both fds closed (once). */
static void
conn_release_io(struct conn *c)
{
	struct ev_loop *loop = c->srv->loop;

	ev_io_stop(loop, &c->c_rd);
	ev_io_stop(loop, &c->c_wr);
	ev_io_stop(loop, &c->u_rd);
	ev_io_stop(loop, &c->u_wr);
	if (c->ufd >= 0)
		close(c->ufd);
	if (c->cfd >= 0)
		close(c->cfd);
	c->ufd = c->cfd = -1;
}

/* The I/O released, the TLS state and c freed. */
static void
conn_free(struct conn *c)
{
	conn_release_io(c);
	if (c->tls != NULL)
		gnutls_deinit(c->tls);
	tls_conn_clear(&c->tlsc);
	relay_free(&c->relay);
	c->magic = 0;
	free(c);
}

void
conn_close_pooled(struct conn *c, enum pool_drop why)
{
	assert(c->magic == CONN_MAGIC && c->pooled);
	conn_connect_end(c);
	if (c->state == CONN_POOLED && (why == POOL_DROP_MAX_IDLE ||
	    why == POOL_DROP_PATH_DOWN || why == POOL_DROP_STOPPED))
		(void)gnutls_bye(c->tls, GNUTLS_SHUT_WR);	/* once */
	conn_set_state(c, CONN_CLOSED);
	conn_log_pool_drop(c, why);
	pool_conn_gone(&c->svc->pool, c, why);
	conn_free(c);
}

void
conn_close(struct conn *c, enum conn_close_reason reason)
{
	struct server *srv = c->srv;
	struct generation *gen = c->svc->gen;

	assert(c->magic == CONN_MAGIC);
	if (c->pooled) {
		/* Its set-up failed (logged as event=pool) or was cut short. */
		conn_close_pooled(c, reason == CLOSE_HANDSHAKE_FAILED ?
		    POOL_DROP_FAILED : POOL_DROP_STOPPED);
		return;
	}
	if (c->state == CONN_AWAITING_VERDICT &&
	    reason != CLOSE_HANDSHAKE_FAILED)
		/* Ended for another reason before a verdict: none was a no. */
		conn_verdict_yes(c);
	if (conn_in_setup(c->state) && reason != CLOSE_HANDSHAKE_FAILED) {
		/* Cut short (shutdown): still its one handshake line. */
		c->err.text = reason == CLOSE_SHUTDOWN ? "cut short: tlsfwd "
		    "is shutting down" : conn_close_reason_name(reason);
		conn_log_handshake_failure(c, RESULT_FAIL,
		    c->state == CONN_RESOLVING ? STAGE_RESOLVE :
		    c->state == CONN_CONNECTING ? STAGE_CONNECT :
		    c->state == CONN_PROXY_TUNNEL ? STAGE_PROXY :
		    STAGE_HANDSHAKE, ALERT_NONE);
	}
	conn_connect_end(c);

	conn_set_state(c, CONN_CLOSED);
	conn_release_io(c);
	server_conn_detach(srv, gen, &c->link);
	admission_release(c->svc);
	/* Counted before the line: a scrape after it includes this close. */
	METRIC_ADD(c->svc->counts->closed, 1);
	METRIC_ADD(c->svc->counts->closes[reason], 1);
	METRIC_ADD(c->svc->counts->bytes[0], c->relay.bytes_up);
	METRIC_ADD(c->svc->counts->bytes[1], c->relay.bytes_down);
	conn_log_close(c, reason);
	conn_free(c);
	server_conn_closed(srv, gen);
}
