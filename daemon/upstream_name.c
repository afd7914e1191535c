/*
 * upstream_name.c - an upstream name's addresses, kept fresh:
 * upstream_name_start(), upstream_name_get(), upstream_name_wait_cancel(),
 * upstream_addrs_put(), upstream_name_stop(), upstream_name_free().
 *
 * The name is resolved on the loop and again when its TTL runs out, at
 * least every resolve interval, at most once a second. A failed refresh
 * keeps the last good addresses (said once); a name with none is tried
 * again by the next connection that needs it, at most once a second, so a
 * service recovers within about a second of DNS without a reload.
 */
#include "upstream_name.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "parse.h"

#define RESOLVE_MIN_GAP		1.	/* seconds between two lookups */
#define RESOLVE_RETRY_STALE	5.	/* after a failed refresh */

static void upstream_lookup(struct upstream_name *un);

void
upstream_addrs_put(struct upstream_addrs *addrs)
{
	if (addrs != NULL && --addrs->refs == 0)
		free(addrs);
}

static struct upstream_addrs *
upstream_addrs_ref(struct upstream_addrs *addrs)
{
	addrs->refs++;
	return addrs;
}

static bool
addr_in(const struct resolver_addr *a, const struct upstream_addrs *set)
{
	for (size_t i = 0; set != NULL && i < set->n; i++)
		if (set->a[i].len == a->len &&
		    memcmp(&set->a[i].ss, &a->ss, a->len) == 0)
			return true;
	return false;
}

/* The same addresses, in any order (DNS servers rotate them). */
static bool
addrs_same(const struct upstream_addrs *x, const struct upstream_addrs *y)
{
	size_t nx = x != NULL ? x->n : 0, ny = y != NULL ? y->n : 0;

	if (nx != ny)
		return false;
	for (size_t i = 0; i < nx; i++)
		if (!addr_in(&x->a[i], y))
			return false;
	return true;
}

/* "[2001:db8::1]:443,192.0.2.1:443", or "-" for none. */
static void
log_addrs(struct log_line *l, const char *key, const struct upstream_addrs *s)
{
	char buf[1024], one[SOCKADDR_TEXT_MAX];
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; s != NULL && i < s->n; i++) {
		sockaddr_format((const struct sockaddr *)&s->a[i].ss,
		    s->a[i].len, one, sizeof(one));
		if (used + strlen(one) + 2 >= sizeof(buf))
			break;
		used += (size_t)snprintf(buf + used, sizeof(buf) - used,
		    "%s%s", used ? "," : "", one);
	}
	log_str(l, key, used ? buf : "-");
}

static void
upstream_log(const struct upstream_name *un, enum log_level level,
    const struct upstream_addrs *previous, bool stale)
{
	struct log_line l;

	if (un->quiet)
		return;
	log_line_begin(&l, level, "resolve");
	log_str(&l, "service", un->service);
	log_strf(&l, "upstream", "%s:%u", un->host,
	    un->port);
	log_addrs(&l, "addresses", un->addrs);
	if (level == LOG_INFO)
		log_addrs(&l, "previous", previous);
	if (level != LOG_INFO) {
		log_str(&l, "error", un->error);
		if (stale)
			log_str(&l, "stale", "yes");
	}
	log_line_end(&l);
}

static void
upstream_schedule(struct upstream_name *un, ev_tstamp after)
{
	if (un->stopped)
		return;
	if (after < RESOLVE_MIN_GAP)
		after = RESOLVE_MIN_GAP;
	ev_timer_stop(un->loop, &un->refresh);
	ev_timer_set(&un->refresh, after, 0.);
	ev_timer_start(un->loop, &un->refresh);
}

/* Hands every waiter the answer (a reference each), or the error. */
static void
upstream_wake(struct upstream_name *un)
{
	struct upstream_wait *w;

	while ((w = un->waiters) != NULL) {
		un->waiters = w->next;
		if (un->waiters != NULL)
			un->waiters->prev = NULL;
		w->prev = w->next = NULL;
		w->done(w, un->addrs != NULL ? upstream_addrs_ref(un->addrs) :
		    NULL, un->error);
	}
}

/* Called by the resolver with the name's answer. */
static void
upstream_answer_cb(void *arg, const struct resolver_result *res)
{
	struct upstream_name *un = arg;
	struct upstream_addrs *fresh, *old = un->addrs;
	ev_tstamp interval = un->interval;

	un->query = NULL;
	if (res->status != 0) {
		bool first = un->error[0] == '\0';

		snprintf(un->error, sizeof(un->error), "cannot resolve %s: %s",
		    un->host, res->error);
		if (old != NULL) {
			/* Stale if error: the last good addresses serve on. */
			if (!un->stale)
				upstream_log(un, LOG_WARN, NULL, true);
			un->stale = true;
			upstream_schedule(un, interval < RESOLVE_RETRY_STALE ?
			    interval : RESOLVE_RETRY_STALE);
		} else {
			if (first)
				upstream_log(un, LOG_WARN, NULL, false);
			upstream_schedule(un, interval);
		}
		upstream_wake(un);
		return;
	}
	fresh = malloc(sizeof(*fresh) + res->naddrs * sizeof(fresh->a[0]));
	if (fresh == NULL) {
		upstream_schedule(un, RESOLVE_MIN_GAP);
		upstream_wake(un);	/* with what there is */
		return;
	}
	fresh->refs = 1;
	fresh->n = res->naddrs;
	memcpy(fresh->a, res->addrs, res->naddrs * sizeof(fresh->a[0]));
	un->addrs = fresh;
	un->error[0] = '\0';
	un->stale = false;
	if (!addrs_same(old, fresh)) {
		upstream_log(un, LOG_INFO, old, false);
		if (un->changed != NULL)
			un->changed(un->changed_arg);
	}
	upstream_addrs_put(old);
	/* The TTL, within [1 s, resolve interval]; no TTL: the interval. */
	upstream_schedule(un, res->ttl < 0 || (ev_tstamp)res->ttl > interval ?
	    interval : (ev_tstamp)res->ttl);
	upstream_wake(un);
}

/* Fired when the addresses are due for a refresh. */
static void
upstream_refresh_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct upstream_name *un = w->data;

	(void)loop;
	(void)revents;
	if (un->query == NULL)
		upstream_lookup(un);
}

static void
upstream_lookup(struct upstream_name *un)
{
	un->last_query = ev_now(un->loop);
	if (un->resolver != NULL)
		un->query = resolver_lookup(un->resolver, un->host,
		    un->port, upstream_answer_cb, un);
	if (un->query == NULL) {
		snprintf(un->error, sizeof(un->error), "cannot resolve %s: %s",
		    un->host, un->resolver == NULL ?
		    "no resolver" : "out of memory");
		upstream_schedule(un, RESOLVE_MIN_GAP);
	}
}

void
upstream_name_init(struct upstream_name *un, const char *service,
    const char *host, unsigned int port, ev_tstamp interval)
{
	memset(un, 0, sizeof(*un));
	un->service = service;
	un->host = host;
	un->port = port;
	un->interval = interval < RESOLVE_MIN_GAP ? RESOLVE_MIN_GAP : interval;
}

void
upstream_name_start(struct upstream_name *un, struct ev_loop *loop,
    struct resolver *resolver, const struct upstream_name *previous,
    bool quiet)
{
	un->loop = loop;
	un->resolver = resolver;
	un->quiet = quiet;
	ev_init(&un->refresh, upstream_refresh_cb);
	un->refresh.data = un;
	if (previous != NULL && previous->addrs != NULL) {
		un->addrs = upstream_addrs_ref(previous->addrs);
		un->last_query = previous->last_query;
		/* Refreshed on the new configuration's resolver, soon. */
		upstream_schedule(un, RESOLVE_MIN_GAP);
		return;
	}
	upstream_lookup(un);
}

enum upstream_name_get
upstream_name_get(struct upstream_name *un, struct upstream_wait *w,
    struct upstream_addrs **addrs, const char **error)
{
	if (un->addrs != NULL) {
		*addrs = upstream_addrs_ref(un->addrs);
		return UPSTREAM_NAME_READY;
	}
	if (un->query == NULL) {
		if (ev_now(un->loop) - un->last_query < RESOLVE_MIN_GAP) {
			*error = un->error;
			return UPSTREAM_NAME_FAILED;
		}
		upstream_lookup(un);
		if (un->query == NULL) {
			*error = un->error;
			return UPSTREAM_NAME_FAILED;
		}
	}
	w->prev = NULL;
	w->next = un->waiters;
	if (un->waiters != NULL)
		un->waiters->prev = w;
	un->waiters = w;
	return UPSTREAM_NAME_WAIT;
}

void
upstream_name_wait_cancel(struct upstream_name *un, struct upstream_wait *w)
{
	if (w->prev != NULL)
		w->prev->next = w->next;
	else if (un->waiters == w)
		un->waiters = w->next;
	if (w->next != NULL)
		w->next->prev = w->prev;
	w->prev = w->next = NULL;
}

void
upstream_name_stop(struct upstream_name *un)
{
	un->stopped = true;
	if (un->loop != NULL)
		ev_timer_stop(un->loop, &un->refresh);
}

void
upstream_name_free(struct upstream_name *un)
{
	upstream_name_stop(un);
	if (un->query != NULL)
		resolver_cancel(un->query);
	un->query = NULL;
	upstream_addrs_put(un->addrs);
	un->addrs = NULL;
}
