/* conn.c - one proxied connection: state machine, connect and handshake. */
#include "conn.h"

#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "parse.h"
#include "server.h"
#include "tls.h"
#include "tls_policy.h"

static const char *const state_names[] = {
	[CONN_CONNECTING] = "connecting",
	[CONN_HANDSHAKING] = "handshaking",
	[CONN_RELAYING] = "relaying",
	[CONN_SHUTTING_DOWN] = "shutting_down",
	[CONN_CLOSED] = "closed",
};

static void conn_connect_next(struct conn *c);
static void conn_note_connect_error(struct conn *c, int err);
static void conn_handshake_step(struct conn *c);
static void conn_log_handshake_failure(struct conn *c, const char *result,
    const char *stage, const char *alert_from);

double
conn_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* The fields every connection line starts with, after ts/level/event. */
static void
conn_log_ids(struct log_line *l, const struct conn *c)
{
	log_str(l, "service", c->svc->cfg->name);
	log_uint(l, "conn", c->id);
	log_str(l, "client", c->client);
	log_str(l, "upstream", c->upstream[0] ? c->upstream : "-");
}

/* error=, errno= and gnutls_error= for a recorded failure. */
static void
conn_log_error(struct log_line *l, const struct conn_error *e)
{
	if (e->text != NULL)
		log_str(l, "error", e->text);
	else if (e->sys_errno != 0)
		log_str(l, "error", strerror(e->sys_errno));
	else if (e->gnutls_rc != 0)
		log_str(l, "error", gnutls_strerror(e->gnutls_rc));
	if (e->sys_errno != 0) {
		const char *name = strerrorname_np(e->sys_errno);

		log_str(l, "errno", name != NULL ? name : "?");
	}
	if (e->gnutls_rc != 0)
		log_str(l, "gnutls_error", gnutls_strerror_name(e->gnutls_rc));
}

static void
conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = w->data;
	char text[96];

	(void)loop;
	(void)revents;
	assert(c->magic == CONN_MAGIC);
	switch (c->state) {
	case CONN_CONNECTING:
		/* This address took too long; the next one may not. */
		c->err.sys_errno = ETIMEDOUT;
		conn_connect_next(c);
		break;
	case CONN_HANDSHAKING:
		snprintf(text, sizeof(text), "TLS handshake not finished "
		    "within %llu ms", (unsigned long long)
		    c->svc->cfg->handshake_timeout_ms);
		c->err.text = text;
		conn_log_handshake_failure(c, "fail", "timeout", NULL);
		c->err.text = NULL;
		conn_close(c, "handshake_failed");
		break;
	case CONN_RELAYING:
	case CONN_SHUTTING_DOWN: {
		/* Lazy idle timer: activity only stamps last_activity. */
		ev_tstamp idle = (ev_tstamp)c->svc->cfg->idle_timeout_ms / 1e3;
		ev_tstamp left = c->last_activity + idle - ev_now(loop);

		if (left > 0) {
			ev_timer_set(&c->timer, left, 0.);
			ev_timer_start(loop, &c->timer);
			break;
		}
		conn_close(c, "idle_timeout");
		break;
	}
	case CONN_CLOSED:
		break;
	}
}

/* Out of connect and handshake, for the loop's count of set-ups running. */
static void
conn_setup_done(struct conn *c)
{
	if (c->in_setup) {
		c->in_setup = false;
		c->srv->nsetup--;
	}
}

void
conn_set_state(struct conn *c, enum conn_state state)
{
	struct ev_loop *loop = c->srv->loop;
	const struct service_config *sc = c->svc->cfg;
	uint64_t ms = 0;

	if (log_enabled(LOG_DEBUG) && state != c->state) {
		struct log_line l;

		log_line_begin(&l, LOG_DEBUG, "state");
		conn_log_ids(&l, c);
		log_str(&l, "from", state_names[c->state]);
		log_str(&l, "to", state_names[state]);
		log_line_end(&l);
	}
	c->state = state;
	ev_timer_stop(loop, &c->timer);
	if (state == CONN_RELAYING)
		conn_setup_done(c);
	switch (state) {
	case CONN_CONNECTING:
		ms = sc->connect_timeout_ms;
		break;
	case CONN_HANDSHAKING:
		ms = sc->handshake_timeout_ms;
		break;
	case CONN_RELAYING:
		ms = sc->idle_timeout_ms;
		c->last_activity = ev_now(loop);
		break;
	case CONN_SHUTTING_DOWN:
		/* Keeps the relay's idle timer running as it is. */
		ev_timer_start(loop, &c->timer);
		return;
	case CONN_CLOSED:
		return;
	}
	ev_timer_set(&c->timer, (ev_tstamp)ms / 1e3, 0.);
	ev_timer_start(loop, &c->timer);
}

/* Logs the one handshake line of a connection that never got verified TLS. */
static void
conn_log_handshake_failure(struct conn *c, const char *result,
    const char *stage, const char *alert_from)
{
	struct log_line l;

	__atomic_add_fetch(&c->srv->handshakes_failed, 1, __ATOMIC_RELAXED);
	log_line_begin(&l, LOG_WARN, "handshake");
	conn_log_ids(&l, c);
	log_str(&l, "sni", c->svc->cfg->sni[0] ? c->svc->cfg->sni : "-");
	log_str(&l, "result", result);
	log_str(&l, "stage", stage);
	if (strcmp(stage, "verify") == 0)
		log_str(&l, "verify", "fail");
	if (strcmp(stage, "timeout") == 0)
		log_str(&l, "timeout", c->state == CONN_HANDSHAKING ?
		    "handshake" : "connect");
	conn_log_error(&l, &c->err);
	if (alert_from != NULL) {
		log_str(&l, "alert", c->err.alert);
		log_str(&l, "alert_from", alert_from);
	} else if (c->err.alert[0] != '\0') {
		log_str(&l, "alert_sent", c->err.alert);
	}
	if (c->tls != NULL)
		tls_log_checks(&l, c->tls, &c->tlsc);
	log_uint(&l, "attempts", c->attempts);
	if (c->t_connected > 0) {
		log_ms(&l, "connect_ms", c->t_connected - c->t_start);
		log_ms(&l, "handshake_ms", conn_now_ms() - c->t_connected);
	} else {
		log_ms(&l, "connect_ms", conn_now_ms() - c->t_start);
	}
	log_line_end(&l);
}

/* ----- upstream transport for GnuTLS: records errno for the log ----- */

/*
 * Keep the last real error for the log; EAGAIN is routine and must not
 * masquerade as the cause of a later EOF.
 */
static void
conn_note_io_errno(struct conn *c, int err)
{
	gnutls_transport_set_errno(c->tls, err);
	if (err != EAGAIN && err != EWOULDBLOCK)
		c->io_errno = err;
}

static ssize_t
conn_tls_pull(gnutls_transport_ptr_t ptr, void *buf, size_t len)
{
	struct conn *c = ptr;
	ssize_t n;

	n = relay_upstream_pull(c, buf, len);
	if (n < 0)
		conn_note_io_errno(c, errno);
	return n;
}

static ssize_t
conn_tls_push(gnutls_transport_ptr_t ptr, const giovec_t *iov, int iovcnt)
{
	struct conn *c = ptr;
	struct msghdr msg;
	ssize_t n;

	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = (struct iovec *)(uintptr_t)iov;
	msg.msg_iovlen = (size_t)iovcnt;
	do {
		n = sendmsg(c->ufd, &msg, MSG_NOSIGNAL |
		    (c->relay.push_more ? MSG_MORE : 0));
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		conn_note_io_errno(c, errno);
	return n;
}

/* ----- watchers: one set, dispatched on state ----- */

static void
conn_upstream_readable_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = w->data;

	(void)loop;
	(void)revents;
	assert(c->magic == CONN_MAGIC);
	relay_upstream_readable(c);
	if (c->state == CONN_HANDSHAKING)
		conn_handshake_step(c);
	else if (c->state == CONN_RELAYING || c->state == CONN_SHUTTING_DOWN)
		relay_on_upstream_readable(c);
}

static void
conn_upstream_writable_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = w->data;
	socklen_t len = sizeof(int);
	int soerr = 0;

	(void)revents;
	assert(c->magic == CONN_MAGIC);
	switch (c->state) {
	case CONN_CONNECTING:
		/* connect() finished: SO_ERROR says how. */
		ev_io_stop(loop, &c->u_wr);
		if (getsockopt(c->ufd, SOL_SOCKET, SO_ERROR, &soerr,
		    &len) != 0)
			soerr = errno;
		if (soerr != 0) {
			conn_note_connect_error(c, soerr);
			conn_connect_next(c);
			return;
		}
		/* An earlier address's refusal is not this connection's cause. */
		c->err.sys_errno = 0;
		c->t_connected = conn_now_ms();
		conn_set_state(c, CONN_HANDSHAKING);
		conn_handshake_step(c);
		break;
	case CONN_HANDSHAKING:
		conn_handshake_step(c);
		break;
	case CONN_RELAYING:
	case CONN_SHUTTING_DOWN:
		relay_on_upstream_writable(c);
		break;
	case CONN_CLOSED:
		break;
	}
}

static void
conn_client_readable_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = w->data;

	(void)loop;
	(void)revents;
	assert(c->magic == CONN_MAGIC);
	relay_on_client_readable(c);
}

static void
conn_client_writable_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = w->data;

	(void)loop;
	(void)revents;
	assert(c->magic == CONN_MAGIC);
	relay_on_client_writable(c);
}

/* ----- connect ----- */

static void
conn_set_nodelay(int fd)
{
	int one = 1;

	/* Best effort: unix sockets have no Nagle to disable. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Closes the upstream socket of a failed attempt. */
static void
conn_drop_upstream(struct conn *c)
{
	struct ev_loop *loop = c->srv->loop;

	ev_io_stop(loop, &c->u_rd);
	ev_io_stop(loop, &c->u_wr);
	relay_upstream_reset(c);
	if (c->ufd >= 0) {
		close(c->ufd);
		c->ufd = -1;
	}
}

/*
 * One upstream address failed (at connect() or later, from SO_ERROR): the
 * cause is kept for the handshake line if no other address works, and each
 * address's failure is shown at debug level.
 */
static void
conn_note_connect_error(struct conn *c, int err)
{
	c->err.sys_errno = err;
	if (log_enabled(LOG_DEBUG))
		log_msg(LOG_DEBUG, "connect", "conn=%llu %s: %s",
		    (unsigned long long)c->id, c->upstream, strerror(err));
}

/*
 * Tries the next resolved upstream address with a non-blocking connect();
 * completion arrives as writability (conn_upstream_writable_cb). When every
 * address has failed, logs the failure and closes the client.
 */
static void
conn_connect_next(struct conn *c)
{
	struct ev_loop *loop = c->srv->loop;
	const struct addrinfo *ai;

	conn_drop_upstream(c);
	while ((ai = c->next_addr) != NULL) {
		c->next_addr = ai->ai_next;
		sockaddr_format(ai->ai_addr, ai->ai_addrlen, c->upstream,
		    sizeof(c->upstream));
		c->attempts++;
		c->ufd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK |
		    SOCK_CLOEXEC, 0);
		if (c->ufd < 0) {
			c->err.sys_errno = errno;
			continue;
		}
		conn_set_nodelay(c->ufd);
		if (connect(c->ufd, ai->ai_addr, ai->ai_addrlen) == 0 ||
		    errno == EINPROGRESS) {
			/* Even an immediate success reports via writability. */
			ev_io_set(&c->u_rd, c->ufd, EV_READ);
			ev_io_set(&c->u_wr, c->ufd, EV_WRITE);
			ev_io_start(loop, &c->u_wr);
			conn_set_state(c, CONN_CONNECTING);
			return;
		}
		conn_note_connect_error(c, errno);
		close(c->ufd);
		c->ufd = -1;
	}
	if (c->err.sys_errno == ETIMEDOUT)
		conn_log_handshake_failure(c, "fail", "timeout", NULL);
	else
		conn_log_handshake_failure(c, "fail", "connect", NULL);
	conn_close(c, "handshake_failed");
}

/* ----- handshake ----- */

bool
conn_note_tls_error(struct conn *c, int rc)
{
	c->err.gnutls_rc = rc;
	if (rc == GNUTLS_E_FATAL_ALERT_RECEIVED) {
		tls_alert_name((int)gnutls_alert_get(c->tls), c->err.alert,
		    sizeof(c->err.alert));
		return true;
	}
	/* GnuTLS turns a send() ECONNRESET into PREMATURE_TERMINATION. */
	if (rc == GNUTLS_E_PUSH_ERROR || rc == GNUTLS_E_PULL_ERROR ||
	    rc == GNUTLS_E_PREMATURE_TERMINATION)
		c->err.sys_errno = c->io_errno;
	return false;
}

static void
conn_handshake_failed(struct conn *c, int rc)
{
	const char *stage = "handshake", *result = "fail", *from = NULL;
	int level, alert;

	if (conn_note_tls_error(c, rc)) {
		result = "alert";
		from = "upstream";
	} else if (c->tlsc.verify_failed) {
		/* Our verification callback said no, and why. */
		stage = "verify";
		c->err.text = c->tlsc.error != NULL ? c->tlsc.error :
		    "certificate verification failed";
	}
	/*
	 * Tell the upstream why we give up, when the protocol has words for
	 * it (a verification failure is bad_certificate). Best effort: the
	 * socket is non-blocking and we close right after.
	 */
	if (from == NULL && !tls_error_is_transport(rc) &&
	    (alert = gnutls_error_to_alert(rc, &level)) >= 0 &&
	    level == GNUTLS_AL_FATAL &&
	    gnutls_alert_send(c->tls, GNUTLS_AL_FATAL,
	    (gnutls_alert_description_t)alert) == 0) {
		tls_alert_name(alert, c->err.alert, sizeof(c->err.alert));
		if (strcmp(stage, "verify") != 0) {
			result = "alert";
			from = "tlsfwd";
		}
	}
	conn_log_handshake_failure(c, result, stage, from);
	c->err.text = NULL;
	conn_close(c, "handshake_failed");
}

/* The one handshake line of a connection whose TLS is up and verified. */
static void
conn_log_handshake_ok(struct conn *c)
{
	struct log_line l;

	__atomic_add_fetch(&c->srv->handshakes_ok, 1, __ATOMIC_RELAXED);
	log_line_begin(&l, LOG_INFO, "handshake");
	conn_log_ids(&l, c);
	log_str(&l, "sni", c->svc->cfg->sni[0] ? c->svc->cfg->sni : "-");
	log_str(&l, "result", "ok");
	tls_log_established(&l, c->tls, &c->tlsc);
	log_uint(&l, "attempts", c->attempts);
	log_ms(&l, "connect_ms", c->t_connected - c->t_start);
	log_ms(&l, "handshake_ms", c->t_established - c->t_connected);
	log_line_end(&l);
}

void
conn_handshake_confirmed(struct conn *c)
{
	c->verdict_pending = false;
	c->t_established = conn_now_ms();
	conn_log_handshake_ok(c);
}

void
conn_handshake_refused(struct conn *c, int gnutls_rc)
{
	const char *result = "fail", *from = NULL;

	c->verdict_pending = false;
	if (conn_note_tls_error(c, gnutls_rc)) {
		result = "alert";
		from = "upstream";
	}
	conn_log_handshake_failure(c, result, "handshake", from);
	conn_close(c, "handshake_failed");
}

static void
conn_handshake_done(struct conn *c)
{
	gnutls_alert_description_t alert;
	const char *why;

	/* The protocol said yes; the service may still require more of it. */
	why = tls_policy_check_established(c->tls, c->svc->cfg, &alert);
	if (why != NULL) {
		(void)gnutls_alert_send(c->tls, GNUTLS_AL_FATAL, alert);
		tls_alert_name((int)alert, c->err.alert, sizeof(c->err.alert));
		c->err.text = why;
		conn_log_handshake_failure(c, "fail", "handshake", NULL);
		c->err.text = NULL;
		conn_close(c, "handshake_failed");
		return;
	}
	tls_session_established(c->tls, &c->tlsc);
	c->t_established = conn_now_ms();
	/*
	 * In TLS 1.3 our Finished ends our handshake before the upstream has
	 * judged the client certificate it asked for: its verdict is its
	 * next record. Relay meanwhile (no upstream byte can come first).
	 */
	c->verdict_pending = gnutls_protocol_get_version(c->tls) ==
	    GNUTLS_TLS1_3 && gnutls_certificate_client_get_request_status(c->tls);
	if (!c->verdict_pending)
		conn_log_handshake_ok(c);
	relay_start(c);
}

/*
 * Drives gnutls_handshake(): on GNUTLS_E_AGAIN/INTERRUPTED it waits for
 * whichever readiness gnutls_record_get_direction() names, like
 * SSL_connect() with SSL_ERROR_WANT_READ/WRITE; called again from that
 * watcher.
 */
static void
conn_handshake_step(struct conn *c)
{
	struct ev_loop *loop = c->srv->loop;
	int rc;

	if (c->tls == NULL) {
		char err[256];

		c->tlsc.sc = c->svc->cfg;
		c->tlsc.t = &c->svc->tls;
		c->tlsc.addr = c->upstream;
		if (tls_session_new(&c->tls, &c->tlsc, err,
		    sizeof(err)) != 0) {
			c->err.text = err;
			conn_log_handshake_failure(c, "fail", "handshake",
			    NULL);
			c->err.text = NULL;
			conn_close(c, "handshake_failed");
			return;
		}
		gnutls_transport_set_ptr(c->tls, c);
		gnutls_transport_set_pull_function(c->tls, conn_tls_pull);
		gnutls_transport_set_vec_push_function(c->tls, conn_tls_push);
	}
	for (;;) {
		size_t ahead = relay_upstream_buffered(c);

		rc = gnutls_handshake(c->tls);
		if (rc == GNUTLS_E_SUCCESS) {
			ev_io_stop(loop, &c->u_rd);
			ev_io_stop(loop, &c->u_wr);
			conn_handshake_done(c);
			return;
		}
		if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED) {
			/*
			 * GnuTLS returns AGAIN after each record of a handshake
			 * message that spans several (a large Certificate),
			 * also when the rest is already read ahead: no fd event
			 * will announce those bytes, so go on while it takes
			 * them (it took some: no spinning).
			 */
			if (gnutls_record_get_direction(c->tls) == 0 &&
			    relay_upstream_buffered(c) > 0 &&
			    relay_upstream_buffered(c) != ahead)
				continue;
			if (gnutls_record_get_direction(c->tls) == 0) {
				ev_io_stop(loop, &c->u_wr);
				ev_io_start(loop, &c->u_rd);
			} else {
				ev_io_stop(loop, &c->u_rd);
				ev_io_start(loop, &c->u_wr);
			}
			return;
		}
		/* A warning alert (e.g. unrecognized_name) is not the end. */
		if (!gnutls_error_is_fatal(rc))
			continue;
		conn_handshake_failed(c, rc);
		return;
	}
}

/* ----- life cycle ----- */

void
conn_accept(struct service *svc, int cfd, const struct sockaddr *peer,
    socklen_t peerlen)
{
	struct server *srv = svc->srv;
	struct conn *c;
	char client[sizeof(c->client)];

	/* Before any upstream work: a refused client costs one close(). */
	sockaddr_format(peer, peerlen, client, sizeof(client));
	if (!admission_admit(svc, peer, client)) {
		close(cfd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		log_msg(LOG_ERROR, "accept", "service=%s: out of memory, "
		    "closing the client", svc->cfg->name);
		admission_release(svc);
		close(cfd);
		return;
	}
	c->magic = CONN_MAGIC;
	c->id = srv->next_conn_id += srv->id_step;
	c->svc = svc;
	c->srv = srv;
	c->cfd = cfd;
	c->ufd = -1;
	c->t_start = conn_now_ms();
	memcpy(c->client, client, sizeof(c->client));
	conn_set_nodelay(cfd);
	ev_io_init(&c->c_rd, conn_client_readable_cb, cfd, EV_READ);
	ev_io_init(&c->c_wr, conn_client_writable_cb, cfd, EV_WRITE);
	ev_io_init(&c->u_rd, conn_upstream_readable_cb, -1, EV_READ);
	ev_io_init(&c->u_wr, conn_upstream_writable_cb, -1, EV_WRITE);
	ev_init(&c->timer, conn_timer_cb);
	c->c_rd.data = c->c_wr.data = c->u_rd.data = c->u_wr.data = c;
	c->timer.data = c;
	c->next = srv->conns;
	if (srv->conns != NULL)
		srv->conns->prev = c;
	srv->conns = c;
	__atomic_add_fetch(&srv->nconns, 1, __ATOMIC_RELAXED);
	svc->gen->nconns++;
	c->in_setup = true;
	srv->nsetup++;

	if (svc->addrs == NULL) {
		c->err.text = svc->resolve_error;
		conn_log_handshake_failure(c, "fail", "resolve", NULL);
		c->err.text = NULL;
		conn_close(c, "handshake_failed");
		return;
	}
	c->next_addr = svc->addrs;
	conn_connect_next(c);
}

void
conn_close(struct conn *c, const char *reason)
{
	struct ev_loop *loop = c->srv->loop;
	struct server *srv = c->srv;
	struct generation *gen = c->svc->gen;
	struct log_line l;
	bool clean = strcmp(reason, "done") == 0;

	assert(c->magic == CONN_MAGIC);
	if (c->verdict_pending) {
		/* Ended for another reason before a verdict: none was a no. */
		c->verdict_pending = false;
		conn_log_handshake_ok(c);
	}
	if (clean && c->relay.upstream_truncated)
		reason = "upstream_truncated", clean = false;

	c->state = CONN_CLOSED;
	ev_io_stop(loop, &c->c_rd);
	ev_io_stop(loop, &c->c_wr);
	ev_io_stop(loop, &c->u_rd);
	ev_io_stop(loop, &c->u_wr);
	ev_timer_stop(loop, &c->timer);
	if (c->ufd >= 0)
		close(c->ufd);
	close(c->cfd);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	__atomic_sub_fetch(&srv->nconns, 1, __ATOMIC_RELAXED);
	conn_setup_done(c);
	admission_release(c->svc);
	gen->nconns--;

	/*
	 * Logged once the descriptors and the max_connections slot are free,
	 * so that whoever reads the line may count on them; before the TLS
	 * state goes, which the error text may point into.
	 */
	log_line_begin(&l, clean ? LOG_INFO : LOG_WARN, "close");
	conn_log_ids(&l, c);
	log_str(&l, "reason", reason);
	if (strcmp(reason, "handshake_failed") != 0) {
		conn_log_error(&l, &c->err);
		if (c->err.alert[0] != '\0')
			log_str(&l, "alert", c->err.alert);
	}
	if (clean && c->relay.upstream_no_close_notify)
		log_str(&l, "close_notify", "no");
	log_uint(&l, "bytes_up", c->relay.bytes_up);
	log_uint(&l, "bytes_down", c->relay.bytes_down);
	log_ms(&l, "duration_ms", conn_now_ms() - c->t_start);
	log_line_end(&l);

	if (c->tls != NULL)
		gnutls_deinit(c->tls);
	tls_conn_clear(&c->tlsc);
	relay_free(c);
	c->magic = 0;
	free(c);
	server_conn_closed(srv, gen);
}
