/*
 * pool.c - a service's warm upstream connections: pool_init(),
 * pool_start(), pool_stop(), pool_take(), pool_conn_ready(),
 * pool_conn_gone(), pool_path_down(), pool_drop_name().
 *
 * A pooled connection is a struct conn without a client (conn_new_pooled):
 * it goes through the same set-up (resolve, routing, race, handshake,
 * verification) and then waits in CONN_POOLED, where conn.c reads what the
 * upstream sends (tickets; a greeting, kept for the client) and drops it if
 * the upstream ends it or pool_max_idle passes. A client takes the newest
 * ready one (conn_adopt). Set-ups that fail back the refill off (1 s
 * doubling to 30 s, as path health does), so a dead upstream does not get
 * a connection storm; the clients themselves go on as without a pool.
 *
 * The pool's connections are not the loop's connections (srv->conns): they
 * have no client, no id, no handshake or close line of their own (event=pool
 * lines say what happens to them), and do not count toward max_connections.
 */
#include "pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn_priv.h"
#include "log.h"
#include "metrics.h"
#include "service.h"

#define RETRY_FIRST	1.
#define RETRY_MAX	30.

static const char *const drop_names[POOL_DROP_FAILED + 1] = {
	[POOL_DROP_UPSTREAM_CLOSED] = "upstream_closed",
	[POOL_DROP_MAX_IDLE] = "max_idle",
	[POOL_DROP_GREETING_TOO_LONG] = "greeting_too_long",
	[POOL_DROP_PATH_DOWN] = "path_down",
	[POOL_DROP_STOPPED] = "stopped",
	[POOL_DROP_FAILED] = "failed",
};

const char *
pool_drop_name(enum pool_drop why)
{
	return drop_names[why];
}

static void
list_push(struct conn_link **head, struct conn_link *l)
{
	l->prev = NULL;
	l->next = *head;
	if (*head != NULL)
		(*head)->prev = l;
	*head = l;
}

static void
list_remove(struct conn_link **head, struct conn_link *l)
{
	if (l->prev != NULL)
		l->prev->next = l->next;
	else
		*head = l->next;
	if (l->next != NULL)
		l->next->prev = l->prev;
	l->prev = l->next = NULL;
}

/* Starts set-ups until ready and filling reach the target. */
static void
pool_fill(struct pool *p)
{
	struct conn *c;

	while (p->running && !ev_is_active(&p->retry) &&
	    p->nready + p->nfilling < p->target) {
		c = conn_new_pooled(p->svc);
		if (c == NULL)
			return;		/* said; the next take tries again */
		list_push(&p->filling, &c->link);
		p->nfilling++;
		/* May fail at once (no addresses): the retry timer stops us. */
		conn_connect_start(c);
	}
}

/* Fired when the refill's backoff after failed set-ups is over. */
static void
pool_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	pool_fill(w->data);
}

void
pool_init(struct pool *p, struct service *svc)
{
	const struct config *cfg = svc->gen->cfg;
	unsigned long n = svc->sc->pool, loops = cfg->global.workers;
	unsigned int index = svc->srv->loop_index;

	memset(p, 0, sizeof(*p));
	p->svc = svc;
	if (loops == 0)
		loops = 1;
	/* The service's pool shared out: loop i gets n / loops, the first
	 * n % loops one more. */
	p->target = (unsigned int)(n / loops + (index < n % loops ? 1 : 0));
	ev_init(&p->retry, pool_retry_cb);
	p->retry.data = p;
}

void
pool_start(struct pool *p)
{
	if (p->target == 0)
		return;
	p->running = true;
	pool_fill(p);
}

void
pool_stop(struct pool *p)
{
	if (!p->running)
		return;
	p->running = false;
	ev_timer_stop(p->svc->srv->loop, &p->retry);
	while (p->ready != NULL)
		conn_close_pooled(p->ready->conn, POOL_DROP_STOPPED);
	while (p->filling != NULL)
		conn_close_pooled(p->filling->conn, POOL_DROP_STOPPED);
}

struct conn *
pool_take(struct pool *p)
{
	struct conn_link *l = p->ready;

	if (p->target == 0)
		return NULL;
	if (l == NULL) {
		METRIC_ADD(p->svc->counts->pool_missed, 1);
		return NULL;
	}
	METRIC_ADD(p->svc->counts->pool_taken, 1);
	METRIC_ADD(p->svc->counts->pool_ready, (uint64_t)-1);
	list_remove(&p->ready, l);
	p->nready--;
	l->conn->pool_ready = false;
	pool_fill(p);
	return l->conn;
}

void
pool_conn_ready(struct pool *p, struct conn *c)
{
	list_remove(&p->filling, &c->link);
	p->nfilling--;
	list_push(&p->ready, &c->link);
	p->nready++;
	c->pool_ready = true;
	METRIC_ADD(p->svc->counts->pool_ready, 1);
	p->failures = 0;
}

void
pool_conn_gone(struct pool *p, struct conn *c, enum pool_drop why)
{
	struct ev_loop *loop = p->svc->srv->loop;
	ev_tstamp wait;

	if (!c->pool_ready) {
		list_remove(&p->filling, &c->link);
		p->nfilling--;
	} else {
		list_remove(&p->ready, &c->link);
		p->nready--;
		c->pool_ready = false;
		METRIC_ADD(p->svc->counts->pool_ready, (uint64_t)-1);
	}
	if (!p->running)
		return;
	if (why == POOL_DROP_FAILED) {
		/* 1 s, 2 s, 4 s ... 30 s: the clients' own tries go on. */
		wait = RETRY_FIRST * (double)(1u << (p->failures < 5 ?
		    p->failures : 5));
		p->failures++;
		ev_timer_stop(loop, &p->retry);
		ev_timer_set(&p->retry, wait > RETRY_MAX ? RETRY_MAX : wait,
		    0.);
		ev_timer_start(loop, &p->retry);
		return;
	}
	pool_fill(p);
}

void
pool_path_down(struct pool *p, size_t entry, const struct resolver_addr *addr)
{
	char text[SOCKADDR_TEXT_MAX];
	struct conn_link *l, *next;

	if (p->nready == 0)
		return;
	sockaddr_format((const struct sockaddr *)&addr->ss, addr->len, text,
	    sizeof(text));
	for (l = p->ready; l != NULL; l = next) {
		next = l->next;
		if (l->conn->entry == entry &&
		    strcmp(l->conn->upstream, text) == 0)
			conn_close_pooled(l->conn, POOL_DROP_PATH_DOWN);
	}
}
