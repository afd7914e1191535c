/*
 * resolver.c - c-ares on libev: resolver_new(), resolver_free(),
 * resolver_lookup(), resolver_cancel().
 *
 * c-ares tells which sockets it wants watched (the sock_state callback:
 * each becomes an ev_io) and when it next needs the clock (ares_timeout:
 * one ev_timer); both hand back to ares_process_fd(). Answers are copied
 * out of c-ares and delivered from a zero timer, so a caller never sees its
 * callback run inside its own resolver_lookup() (c-ares answers hosts-file
 * names and literal addresses at once).
 */
#include "resolver.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Per try; c-ares doubles it for each server round. */
#define RESOLVER_TIMEOUT_MS	2000
#define RESOLVER_TRIES		2

struct resolver_sock {
	ev_io			 io;
	struct resolver		*r;
	struct resolver_sock	*next;
};

struct resolver_query {
	struct resolver		*r;
	resolver_done_cb	*cb;
	void			*arg;
	bool			 cancelled;	/* free when c-ares is done */
	bool			 answered;	/* waiting in deliver */
	ev_timer		 deliver;
	struct resolver_result	 res;
	struct resolver_addr	*addrs;
	struct resolver_query	*prev, *next;	/* in r->queries */
	char			 host[];
};

struct resolver {
	struct ev_loop		*loop;
	ares_channel		 channel;
	ev_timer		 timer;		/* c-ares's next timeout */
	struct resolver_sock	*socks;
	struct resolver_query	*queries;
	bool			 destroying;
};

static pthread_once_t library_once = PTHREAD_ONCE_INIT;
static int library_status;

static void
library_init(void)
{
	library_status = ares_library_init(ARES_LIB_INIT_ALL);
}

/* After every call into c-ares: when it next wants to run on its own. */
static void
resolver_arm_timer(struct resolver *r)
{
	struct timeval tv, *tvp;

	ev_timer_stop(r->loop, &r->timer);
	tvp = ares_timeout(r->channel, NULL, &tv);
	if (tvp == NULL)
		return;
	ev_timer_set(&r->timer, (ev_tstamp)tvp->tv_sec +
	    (ev_tstamp)tvp->tv_usec / 1e6, 0.);
	ev_timer_start(r->loop, &r->timer);
}

/* Fired when c-ares's timeout passes: retries, or fails, queries. */
static void
resolver_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct resolver *r = w->data;

	(void)loop;
	(void)revents;
	ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	resolver_arm_timer(r);
}

/* Fired by one of c-ares's sockets: c-ares reads or writes it. */
static void
resolver_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct resolver_sock *s = w->data;
	struct resolver *r = s->r;
	int fd = w->fd;

	(void)loop;
	/* May close the socket and free s (resolver_sock_state_cb). */
	ares_process_fd(r->channel, (revents & EV_READ) ? fd : ARES_SOCKET_BAD,
	    (revents & EV_WRITE) ? fd : ARES_SOCKET_BAD);
	resolver_arm_timer(r);
}

/* Called by c-ares when a socket opens, changes interest, or closes. */
static void
resolver_sock_state_cb(void *data, ares_socket_t fd, int readable,
    int writable)
{
	struct resolver *r = data;
	struct resolver_sock **pp, *s;
	int events = (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0);

	for (pp = &r->socks; *pp != NULL; pp = &(*pp)->next)
		if ((*pp)->io.fd == fd)
			break;
	s = *pp;
	if (events == 0) {
		if (s != NULL) {
			ev_io_stop(r->loop, &s->io);
			*pp = s->next;
			free(s);
		}
		return;
	}
	if (s == NULL) {
		s = calloc(1, sizeof(*s));
		if (s == NULL)
			return;	/* its query times out */
		s->r = r;
		ev_io_init(&s->io, resolver_io_cb, fd, events);
		s->io.data = s;
		s->next = r->socks;
		r->socks = s;
	} else {
		ev_io_stop(r->loop, &s->io);
		ev_io_set(&s->io, fd, events);
	}
	ev_io_start(r->loop, &s->io);
}

struct resolver *
resolver_new(struct ev_loop *loop, const char *servers, char *err,
    size_t errlen)
{
	struct ares_options opts;
	struct resolver *r;
	int rc;

	pthread_once(&library_once, library_init);
	if (library_status != ARES_SUCCESS) {
		snprintf(err, errlen, "c-ares: %s",
		    ares_strerror(library_status));
		return NULL;
	}
	r = calloc(1, sizeof(*r));
	if (r == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	r->loop = loop;
	ev_init(&r->timer, resolver_timer_cb);
	r->timer.data = r;
	memset(&opts, 0, sizeof(opts));
	opts.sock_state_cb = resolver_sock_state_cb;
	opts.sock_state_cb_data = r;
	opts.timeout = RESOLVER_TIMEOUT_MS;
	opts.tries = RESOLVER_TRIES;
	rc = ares_init_options(&r->channel, &opts, ARES_OPT_SOCK_STATE_CB |
	    ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
	if (rc != ARES_SUCCESS) {
		snprintf(err, errlen, "c-ares: %s", ares_strerror(rc));
		free(r);
		return NULL;
	}
	if (servers != NULL &&
	    (rc = ares_set_servers_ports_csv(r->channel, servers)) !=
	    ARES_SUCCESS) {
		snprintf(err, errlen, "dns_servers '%s': %s", servers,
		    ares_strerror(rc));
		ares_destroy(r->channel);
		free(r);
		return NULL;
	}
	return r;
}

static void
query_unlink_free(struct resolver_query *q)
{
	struct resolver *r = q->r;

	ev_timer_stop(r->loop, &q->deliver);
	if (q->prev != NULL)
		q->prev->next = q->next;
	else
		r->queries = q->next;
	if (q->next != NULL)
		q->next->prev = q->prev;
	free(q->addrs);
	free(q);
}

void
resolver_free(struct resolver *r)
{
	if (r == NULL)
		return;
	/* c-ares ends its pending queries (ARES_EDESTRUCTION): freed there. */
	r->destroying = true;
	ares_destroy(r->channel);
	while (r->queries != NULL)
		query_unlink_free(r->queries);
	while (r->socks != NULL) {
		struct resolver_sock *s = r->socks;

		ev_io_stop(r->loop, &s->io);
		r->socks = s->next;
		free(s);
	}
	ev_timer_stop(r->loop, &r->timer);
	free(r);
}

/* Fired at once after an answer: hands it to the caller, frees q. */
static void
query_deliver_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct resolver_query *q = w->data;

	(void)loop;
	(void)revents;
	q->cb(q->arg, &q->res);
	query_unlink_free(q);
}

/* Whether the hosts file has host: no TTL. */
static bool
query_in_hosts_file(struct resolver *r, const char *host)
{
	struct hostent *he = NULL;

	if (ares_gethostbyname_file(r->channel, host, AF_INET, &he) ==
	    ARES_SUCCESS || ares_gethostbyname_file(r->channel, host, AF_INET6,
	    &he) == ARES_SUCCESS) {
		ares_free_hostent(he);
		return true;
	}
	return false;
}

/* Called by c-ares with the answer (or why there is none). */
static void
query_answer_cb(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
	struct resolver_query *q = arg;
	struct resolver *r = q->r;
	struct ares_addrinfo_node *n;
	size_t count = 0;
	long ttl = -1;

	(void)timeouts;
	if (q->cancelled || r->destroying) {
		if (ai != NULL)
			ares_freeaddrinfo(ai);
		query_unlink_free(q);
		return;
	}
	if (status == ARES_SUCCESS && ai != NULL) {
		for (n = ai->nodes; n != NULL; n = n->ai_next)
			if ((n->ai_family == AF_INET ||
			    n->ai_family == AF_INET6) && n->ai_addrlen <=
			    sizeof(struct sockaddr_storage))
				count++;
		q->addrs = count ? calloc(count, sizeof(*q->addrs)) : NULL;
		count = 0;
		for (n = ai->nodes; q->addrs != NULL && n != NULL;
		    n = n->ai_next) {
			if ((n->ai_family != AF_INET &&
			    n->ai_family != AF_INET6) || n->ai_addrlen >
			    sizeof(struct sockaddr_storage))
				continue;
			memcpy(&q->addrs[count].ss, n->ai_addr, n->ai_addrlen);
			q->addrs[count++].len = n->ai_addrlen;
			if (ttl < 0 || n->ai_ttl < ttl)
				ttl = n->ai_ttl < 0 ? 0 : n->ai_ttl;
		}
		if (count == 0)
			status = q->addrs == NULL && ai->nodes != NULL ?
			    ARES_ENOMEM : ARES_ENODATA;
	}
	if (ai != NULL)
		ares_freeaddrinfo(ai);
	q->res.status = status;
	q->res.error = status == ARES_SUCCESS ? NULL : ares_strerror(status);
	q->res.addrs = q->addrs;
	q->res.naddrs = count;
	q->res.ttl = status == ARES_SUCCESS && ttl == 0 &&
	    query_in_hosts_file(r, q->host) ? -1 : ttl;
	q->answered = true;
	ev_timer_set(&q->deliver, 0., 0.);
	ev_timer_start(r->loop, &q->deliver);
}

/*
 * An address is its own answer: no lookup (c-ares would still ask the DNS
 * server for the other family, holding a socket meanwhile).
 */
static bool
query_literal(struct resolver_query *q, unsigned int port)
{
	struct sockaddr_in6 *sin6;
	struct sockaddr_in *sin;

	q->addrs = calloc(1, sizeof(*q->addrs));
	if (q->addrs == NULL)
		return false;
	sin = (struct sockaddr_in *)&q->addrs->ss;
	sin6 = (struct sockaddr_in6 *)&q->addrs->ss;
	if (inet_pton(AF_INET, q->host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		q->addrs->len = sizeof(*sin);
	} else if (inet_pton(AF_INET6, q->host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		q->addrs->len = sizeof(*sin6);
	} else {
		free(q->addrs);
		q->addrs = NULL;
		return false;
	}
	q->res.addrs = q->addrs;
	q->res.naddrs = 1;
	q->res.ttl = -1;
	q->answered = true;
	ev_timer_set(&q->deliver, 0., 0.);
	ev_timer_start(q->r->loop, &q->deliver);
	return true;
}

struct resolver_query *
resolver_lookup(struct resolver *r, const char *host, unsigned int port,
    resolver_done_cb *cb, void *arg)
{
	struct ares_addrinfo_hints hints;
	struct resolver_query *q;
	size_t hlen = strlen(host);
	char service[8];

	q = calloc(1, sizeof(*q) + hlen + 1);
	if (q == NULL)
		return NULL;
	memcpy(q->host, host, hlen + 1);
	q->r = r;
	q->cb = cb;
	q->arg = arg;
	ev_init(&q->deliver, query_deliver_cb);
	q->deliver.data = q;
	q->next = r->queries;
	if (r->queries != NULL)
		r->queries->prev = q;
	r->queries = q;

	if (query_literal(q, port))
		return q;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = ARES_AI_NUMERICSERV;
	snprintf(service, sizeof(service), "%u", port);
	ares_getaddrinfo(r->channel, host, service, &hints, query_answer_cb, q);
	resolver_arm_timer(r);
	return q;
}

void
resolver_cancel(struct resolver_query *q)
{
	if (q->answered)
		query_unlink_free(q);	/* its delivery has not run yet */
	else
		q->cancelled = true;	/* c-ares still has it */
}
