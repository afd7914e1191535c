/*
 * conn_connect.c - a connection's way to a connected upstream socket:
 * conn_connect_start(), conn_connect_next_path(),
 * conn_connect_resolve_timeout(), conn_connect_done(), conn_connect_end().
 *
 * The service's upstream entries are tried in the order upstream_plan()
 * gives; an entry's addresses (RESOLVING while none is known) are ordered
 * into paths for this connection and raced (connect_race.c); the winner's
 * socket goes to the handshake. A path that fails (refused, reset, timed
 * out, alert, verification) moves on to the next path, then the next entry,
 * while one is left: nothing has been relayed yet, the client only waits.
 * Each failed path is reported to upstream.c, which tries it last for a
 * while.
 *
 * With via, the paths are the proxy's addresses: the connection asks the
 * proxy for a tunnel to the entry (PROXY_TUNNEL, connect_proxy.c) before
 * the handshake; a refusal is a failed path like a failed handshake. With
 * proxy_protocol, the PROXY header goes first on the upstream's byte
 * stream (through the tunnel, if any), right before the ClientHello.
 */
#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conn_priv.h"
#include "connect_proxy.h"
#include "log.h"
#include "proxy_protocol.h"
#include "service.h"

static struct conn *
race_conn(struct connect_race *race)
{
	return ((struct conn_paths *)((char *)race -
	    offsetof(struct conn_paths, race)))->conn;
}

/* An attempt failed: kept as the cause if none works; the path is down. */
static void
conn_race_lost(struct connect_race *race, size_t idx, int err)
{
	struct conn *c = race_conn(race);
	const struct resolver_addr *a = &c->paths->addr[idx];

	c->err.sys_errno = err;
	sockaddr_format((const struct sockaddr *)&a->ss, a->len, c->upstream,
	    sizeof(c->upstream));
	if (log_enabled(LOG_DEBUG))
		log_msg(LOG_DEBUG, "connect", "conn=%llu %s: %s",
		    (unsigned long long)c->id, c->upstream, strerror(err));
	upstream_path_failed(&c->svc->upstream, c->entry, a, strerror(err));
}

/*
 * An earlier address had not connected when a later one did: tried last
 * for a while, so the next connections do not wait for it again.
 */
static void
conn_race_outraced(struct connect_race *race, size_t idx)
{
	struct conn *c = race_conn(race);
	char why[96];

	snprintf(why, sizeof(why), "not connected within %llu ms, when a "
	    "later address was", (unsigned long long)
	    c->svc->sc->connect_race_delay_ms);
	upstream_path_failed(&c->svc->upstream, c->entry, &c->paths->addr[idx],
	    why);
}

/*
 * The byte stream to the upstream is open (directly, or through the
 * proxy's tunnel): the PROXY header if configured, then the handshake.
 */
static void
conn_upstream_open(struct conn *c)
{
	const struct service_config *sc = c->svc->sc;
	struct sockaddr_storage src, dst;
	socklen_t slen = sizeof(src), dlen = sizeof(dst);
	uint8_t hdr[PROXY_HEADER_MAX];
	char text[160];
	const char *sni;
	size_t n;
	ssize_t sent;

	if (sc->proxy_protocol != PROXY_PROTOCOL_OFF) {
		memset(&src, 0, sizeof(src));
		memset(&dst, 0, sizeof(dst));
		(void)getpeername(c->cfd, (struct sockaddr *)&src, &slen);
		(void)getsockname(c->cfd, (struct sockaddr *)&dst, &dlen);
		sni = c->svc->upstream.entries[c->entry].cfg->sni;
		n = proxy_header((enum proxy_protocol)sc->proxy_protocol,
		    (struct sockaddr *)&src, (struct sockaddr *)&dst, sni,
		    sc->nalpn > 0 ? sc->alpn[0] : NULL, hdr);
		/* A fresh socket takes a few hundred bytes at once. */
		sent = n > 0 ? send(c->ufd, hdr, n, MSG_NOSIGNAL) : -1;
		if (sent < 0 || (size_t)sent != n) {
			snprintf(text, sizeof(text), "cannot send the PROXY "
			    "protocol header: %s", sent < 0 ? strerror(errno) :
			    "short write");
			conn_fail_handshake(c, RESULT_FAIL, STAGE_CONNECT,
			    ALERT_NONE, text);
			return;
		}
	}
	conn_set_state(c, CONN_HANDSHAKING);
	conn_handshake_step(c);
}

/* Connected to the proxy: CONNECT to the entry, then its answer. */
static void
conn_tunnel_start(struct conn *c)
{
	const struct service_config *sc = c->svc->sc;
	const struct host_port *hp = &c->svc->upstream.entries[c->entry].cfg->hp;
	char req[CONNECT_REQUEST_MAX], text[160];
	size_t n;
	ssize_t sent;

	if (c->paths->tunnel == NULL &&
	    (c->paths->tunnel = malloc(CONNECT_REPLY_MAX)) == NULL) {
		conn_fail_handshake(c, RESULT_FAIL, STAGE_PROXY, ALERT_NONE,
		    "out of memory");
		return;
	}
	c->paths->tunnel_len = 0;
	n = connect_proxy_request(hp->host, hp->port, sc->via_user[0] != '\0' ?
	    sc->via_user : NULL, c->svc->via_password, req);
	conn_set_state(c, CONN_PROXY_TUNNEL);
	sent = n > 0 ? send(c->ufd, req, n, MSG_NOSIGNAL) : -1;
	memset(req, 0, sizeof(req));	/* the credentials */
	if (sent < 0 || (size_t)sent != n) {
		snprintf(text, sizeof(text), "cannot send CONNECT to the proxy: "
		    "%s", sent < 0 ? strerror(errno) : "short write");
		conn_fail_handshake(c, RESULT_FAIL, STAGE_PROXY, ALERT_NONE,
		    text);
		return;
	}
	ev_io_start(c->srv->loop, &c->u_rd);
}

void
conn_tunnel_read(struct conn *c)
{
	struct conn_paths *p = c->paths;
	char peek[CONNECT_REPLY_MAX], line[128], text[200];
	size_t room = CONNECT_REPLY_MAX - p->tunnel_len, take, head = 0;
	enum connect_reply reply;
	ssize_t n;

	/*
	 * Peek, then take only up to the head's end: what follows it is the
	 * upstream's (TLS), for GnuTLS. The end may straddle two reads.
	 */
	n = recv(c->ufd, peek, room, MSG_PEEK);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		snprintf(text, sizeof(text), "the proxy closed before answering "
		    "CONNECT%s%s", n < 0 ? ": " : "", n < 0 ? strerror(errno) :
		    "");
		conn_fail_handshake(c, RESULT_FAIL, STAGE_PROXY, ALERT_NONE,
		    text);
		return;
	}
	take = (size_t)n;
	memcpy(p->tunnel + p->tunnel_len, peek, take);
	reply = connect_proxy_reply(p->tunnel, p->tunnel_len + take, &head,
	    line, sizeof(line));
	if (reply == CONNECT_REPLY_REFUSED)
		snprintf(text, sizeof(text), "the proxy refused CONNECT: %s",
		    line);
	else if (reply == CONNECT_REPLY_MALFORMED)
		snprintf(text, sizeof(text), "not an HTTP answer to CONNECT: "
		    "'%s'", line);
	else if (reply == CONNECT_REPLY_TOO_LONG)
		snprintf(text, sizeof(text), "the proxy's answer to CONNECT is "
		    "over %d bytes", CONNECT_REPLY_MAX);
	if (reply != CONNECT_REPLY_MORE && reply != CONNECT_REPLY_OK) {
		conn_fail_handshake(c, RESULT_FAIL, STAGE_PROXY, ALERT_NONE,
		    text);
		return;
	}
	if (reply == CONNECT_REPLY_OK)
		take = head - p->tunnel_len;	/* not beyond the head */
	if (recv(c->ufd, peek, take, 0) != (ssize_t)take) {
		conn_fail_handshake(c, RESULT_FAIL, STAGE_PROXY, ALERT_NONE,
		    "reading the proxy's answer failed");
		return;
	}
	p->tunnel_len += take;
	if (head == 0)
		return;		/* more to come */
	ev_io_stop(c->srv->loop, &c->u_rd);
	free(p->tunnel);
	p->tunnel = NULL;
	conn_upstream_open(c);
}

/* An attempt connected: its socket is the connection's; the handshake. */
static void
conn_race_won(struct connect_race *race, int fd, size_t idx)
{
	struct conn *c = race_conn(race);
	const struct resolver_addr *a = &c->paths->addr[idx];

	c->ufd = fd;
	c->path = idx;
	c->attempts = c->attempts_before + race->started;
	sockaddr_format((const struct sockaddr *)&a->ss, a->len, c->upstream,
	    sizeof(c->upstream));
	ev_io_set(&c->u_rd, fd, EV_READ);
	ev_io_set(&c->u_wr, fd, EV_WRITE);
	/* An earlier address's refusal is not this connection's cause. */
	c->err.sys_errno = 0;
	c->t_connected = conn_now_ms();
	if (c->svc->sc->via_on)
		conn_tunnel_start(c);
	else
		conn_upstream_open(c);
}

static void conn_try_entry(struct conn *c);

/* The set-up state of the entry tried so far goes (not the client). */
static void
conn_paths_free(struct conn *c)
{
	if (c->paths == NULL)
		return;
	connect_race_stop(&c->paths->race);
	free(c->paths->tunnel);
	free(c->paths);
	c->paths = NULL;
}

/* Every path of this entry failed to connect: the next entry, or the end. */
static void
conn_race_failed(struct connect_race *race)
{
	struct conn *c = race_conn(race);

	c->attempts = c->attempts_before + race->started;
	c->err.sys_errno = race->last_errno;
	conn_paths_free(c);
	if (++c->plan_pos < c->nplan) {
		conn_try_entry(c);
		return;
	}
	conn_fail_handshake(c, RESULT_FAIL, c->err.sys_errno == ETIMEDOUT ?
	    STAGE_TIMEOUT : STAGE_CONNECT, ALERT_NONE, NULL);
}

/* Orders addrs into this connection's paths and starts racing them. */
static void
conn_connect_paths(struct conn *c, struct upstream_addrs *addrs)
{
	const struct service_config *sc = c->svc->sc;
	struct conn_paths *p;

	p = malloc(sizeof(*p) + addrs->n * sizeof(p->addr[0]));
	if (p == NULL) {
		upstream_addrs_put(addrs);
		conn_fail_handshake(c, RESULT_FAIL, STAGE_CONNECT, ALERT_NONE,
		    "out of memory");
		return;
	}
	p->conn = c;
	p->tunnel = NULL;
	p->tunnel_len = 0;
	p->n = addrs->n;
	upstream_order(&c->svc->upstream, c->entry, addrs, p->addr);
	upstream_addrs_put(addrs);
	connect_race_init(&p->race, c->srv->loop,
	    (ev_tstamp)sc->connect_race_delay_ms / 1e3,
	    (ev_tstamp)sc->connect_timeout_ms / 1e3);
	p->race.lost = conn_race_lost;
	p->race.outraced = conn_race_outraced;
	p->race.won = conn_race_won;
	p->race.failed = conn_race_failed;
	c->paths = p;
	conn_set_state(c, CONN_CONNECTING);
	connect_race_run(&p->race, p->addr, p->n);
}

/* Entry plan_pos has no addresses (error says why): the next, or the end. */
static void
conn_entry_unresolved(struct conn *c, const char *error)
{
	if (++c->plan_pos < c->nplan) {
		conn_try_entry(c);
		return;
	}
	if (c->attempts > 0) {	/* an earlier entry's failure says more */
		conn_fail_handshake(c, RESULT_FAIL, c->err.sys_errno ==
		    ETIMEDOUT ? STAGE_TIMEOUT : STAGE_CONNECT, ALERT_NONE,
		    NULL);
		return;
	}
	conn_fail_handshake(c, RESULT_FAIL, STAGE_RESOLVE, ALERT_NONE, error);
}

/* Called by upstream_name.c with the addresses a RESOLVING conn awaited. */
static void
conn_resolved(struct upstream_wait *w, struct upstream_addrs *addrs,
    const char *error)
{
	struct conn *c = (struct conn *)((char *)w -
	    offsetof(struct conn, wait));

	assert(c->magic == CONN_MAGIC && c->state == CONN_RESOLVING);
	if (addrs == NULL) {
		conn_entry_unresolved(c, error);
		return;
	}
	conn_connect_paths(c, addrs);
}

/* Races the addresses of entry plan[plan_pos] (or waits for them). */
static void
conn_try_entry(struct conn *c)
{
	struct upstream_addrs *addrs;
	const char *error;

	c->entry = c->plan[c->plan_pos];
	c->attempts_before = c->attempts;
	c->wait.done = conn_resolved;
	switch (upstream_name_get(&c->svc->upstream.entries[c->entry].name,
	    &c->wait, &addrs, &error)) {
	case UPSTREAM_NAME_READY:
		conn_connect_paths(c, addrs);
		break;
	case UPSTREAM_NAME_WAIT:
		conn_set_state(c, CONN_RESOLVING);
		break;
	case UPSTREAM_NAME_FAILED:
		conn_entry_unresolved(c, error);
		break;
	}
}

void
conn_connect_start(struct conn *c)
{
	/* The first state, RESOLVING, is left at once if addrs are known. */
	upstream_plan(&c->svc->upstream, c->plan);
	c->nplan = (unsigned char)c->svc->upstream.n;
	c->plan_pos = 0;
	conn_try_entry(c);
}

void
conn_connect_resolve_timeout(struct conn *c)
{
	char text[HOST_MAX + 96];

	upstream_name_wait_cancel(&c->svc->upstream.entries[c->entry].name,
	    &c->wait);
	snprintf(text, sizeof(text), "cannot resolve %s: no answer within "
	    "%llu ms", c->svc->upstream.entries[c->entry].cfg->hp.host,
	    (unsigned long long)c->svc->sc->connect_timeout_ms);
	conn_entry_unresolved(c, text);
}

/* The failed path's socket and TLS session go; the client stays. */
static void
conn_drop_path(struct conn *c)
{
	struct ev_loop *loop = c->srv->loop;

	ev_io_stop(loop, &c->u_rd);
	ev_io_stop(loop, &c->u_wr);
	relay_upstream_reset(&c->relay);
	if (c->ufd >= 0)
		close(c->ufd);
	c->ufd = -1;
	if (c->tls != NULL)
		gnutls_deinit(c->tls);
	c->tls = NULL;
	tls_conn_clear(&c->tlsc);
	memset(&c->tlsc, 0, sizeof(c->tlsc));
	memset(&c->err, 0, sizeof(c->err));
	c->io_errno = 0;
	c->t_connected = 0;
}

bool
conn_connect_next_path(struct conn *c, enum conn_result result,
    enum conn_stage stage, enum conn_alert_from from)
{
	struct conn_paths *p = c->paths;
	char why[256];

	if (p == NULL || (!connect_race_has_more(&p->race) &&
	    c->plan_pos + 1 >= c->nplan))
		return false;
	conn_log_attempt_failure(c, result, stage, from);
	conn_attempt_error_text(c, why, sizeof(why));
	upstream_path_failed(&c->svc->upstream, c->entry, &p->addr[c->path],
	    why);
	conn_drop_path(c);
	conn_set_state(c, CONN_CONNECTING);
	if (connect_race_has_more(&p->race)) {
		connect_race_run(&p->race, p->addr, p->n);
		return true;
	}
	conn_paths_free(c);
	c->plan_pos++;
	conn_try_entry(c);
	return true;
}

void
conn_connect_done(struct conn *c)
{
	if (c->paths == NULL)
		return;
	upstream_path_ok(&c->svc->upstream, c->entry,
	    &c->paths->addr[c->path]);
	conn_paths_free(c);
}

void
conn_connect_end(struct conn *c)
{
	if (c->state == CONN_RESOLVING)
		upstream_name_wait_cancel(
		    &c->svc->upstream.entries[c->entry].name, &c->wait);
	conn_paths_free(c);
}
