/*
 * upstream.c - a service's upstreams and the health of their paths:
 * upstream_init(), upstream_start(), upstream_plan(), upstream_order(),
 * upstream_path_failed(), upstream_path_ok(), upstream_stop(),
 * upstream_free().
 *
 * Each loop publishes its view of the paths (every entry's current
 * addresses, healthy or down) to its metrics slot whenever an address set
 * or a path's health changes: tlsfwd_upstream_healthy reads it there.
 *
 * Health is passive: a path that failed a connection (connect, reset,
 * handshake, verification, timeout) is tried last by new connections for
 * a backoff that starts at 1 s and doubles to 30 s; then one connection
 * tries it in its place, and a success makes it healthy again. Paths
 * marked down are still tried, after the others: a client is never
 * refused only because of remembered failures.
 */
#include "upstream.h"

#include <stdlib.h>
#include <string.h>

#include <stdio.h>

#include "log.h"
#include "metrics.h"
#include "parse.h"

#define BACKOFF_FIRST	1.
#define BACKOFF_MAX	30.

int
upstream_init(struct upstream *up, const struct service_config *sc)
{
	memset(up, 0, sizeof(*up));
	up->service = sc->name;
	up->balance = sc->balance;
	up->entries = calloc(sc->nupstreams, sizeof(*up->entries));
	if (up->entries == NULL)
		return -1;
	up->n = sc->nupstreams;
	for (size_t i = 0; i < up->n; i++) {
		/* Through a CONNECT proxy, each entry's paths are the proxy's
		 * addresses: the proxy resolves the upstream's name. */
		const struct host_port *hp = sc->via_on ? &sc->via :
		    &sc->upstreams[i].hp;

		up->entries[i].cfg = &sc->upstreams[i];
		upstream_name_init(&up->entries[i].name, sc->name, hp->host,
		    hp->port, (ev_tstamp)sc->resolve_interval_ms / 1e3);
	}
	return 0;
}

/* The previous configuration's entry for the same host and port. */
static const struct upstream_entry *
previous_entry(const struct upstream *previous, const struct upstream_entry *e)
{
	for (size_t i = 0; previous != NULL && i < previous->n; i++) {
		const struct upstream_entry *o = &previous->entries[i];

		if (o->cfg->hp.port == e->cfg->hp.port &&
		    strcmp(o->cfg->hp.host, e->cfg->hp.host) == 0 &&
		    o->name.port == e->name.port &&
		    strcmp(o->name.host, e->name.host) == 0)
			return o;
	}
	return NULL;
}

static bool
addr_equal(const struct resolver_addr *a, const struct resolver_addr *b)
{
	return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

static struct path_health *
path_find(struct upstream_entry *e, const struct resolver_addr *addr)
{
	for (size_t i = 0; i < e->ndown; i++)
		if (addr_equal(&e->down[i].addr, addr))
			return &e->down[i];
	return NULL;
}

/* This loop's view of the paths, whole, to its metrics slot. */
static void
upstream_publish(struct upstream *up)
{
	struct metrics_path *paths = NULL;
	size_t n = 0, k = 0;

	if (up->health == NULL)
		return;
	for (size_t i = 0; i < up->n; i++)
		if (up->entries[i].name.addrs != NULL)
			n += up->entries[i].name.addrs->n;
	if (n > 0 && (paths = calloc(n, sizeof(*paths))) == NULL)
		return;		/* the last view stays */
	for (size_t i = 0; i < up->n; i++) {
		struct upstream_entry *e = &up->entries[i];
		const struct upstream_addrs *a = e->name.addrs;

		for (size_t j = 0; a != NULL && j < a->n; j++, k++) {
			snprintf(paths[k].upstream, sizeof(paths[k].upstream),
			    "%s:%u", e->cfg->hp.host, e->cfg->hp.port);
			sockaddr_format((const struct sockaddr *)&a->a[j].ss,
			    a->a[j].len, paths[k].address,
			    sizeof(paths[k].address));
			paths[k].healthy = path_find(e, &a->a[j]) == NULL;
		}
	}
	metrics_health_publish(up->health, paths, k);
}

/* Fired by an entry's name when an answer changed its addresses. */
static void
upstream_addrs_changed(void *arg)
{
	upstream_publish(arg);
}

void
upstream_start(struct upstream *up, struct ev_loop *loop,
    struct resolver *resolver, const struct upstream *previous, bool quiet,
    struct metrics_health *health)
{
	up->loop = loop;
	up->quiet = quiet;
	up->health = health;
	if (previous != NULL)
		up->rr_next = previous->rr_next;
	for (size_t i = 0; i < up->n; i++) {
		struct upstream_entry *e = &up->entries[i];
		const struct upstream_entry *o = previous_entry(previous, e);

		if (o != NULL && o->ndown > 0 &&
		    (e->down = malloc(o->ndown * sizeof(*e->down))) != NULL) {
			memcpy(e->down, o->down, o->ndown * sizeof(*e->down));
			e->ndown = o->ndown;
		}
		e->name.changed = upstream_addrs_changed;
		e->name.changed_arg = up;
		upstream_name_start(&e->name, loop, resolver,
		    o != NULL ? &o->name : NULL, quiet);
	}
	upstream_publish(up);
}

/* Down, and not (yet) this connection's trial. */
static bool
path_skipped(struct upstream_entry *e, const struct resolver_addr *addr,
    ev_tstamp now)
{
	struct path_health *h = path_find(e, addr);

	if (h == NULL)
		return false;
	if (!h->trial && now >= h->retry_at) {
		h->trial = true;	/* this connection tries it */
		return false;
	}
	return true;
}

/* Whether every address entry e is known by is marked down. */
static bool
entry_down(const struct upstream_entry *e, ev_tstamp now)
{
	const struct upstream_addrs *a = e->name.addrs;

	if (a == NULL || a->n == 0 || e->ndown < a->n)
		return false;
	for (size_t i = 0; i < e->ndown; i++)
		if (now >= e->down[i].retry_at && !e->down[i].trial)
			return false;	/* one is due for its trial */
	return true;
}

void
upstream_plan(struct upstream *up, unsigned char *out)
{
	size_t first = 0, k = 0;
	ev_tstamp now = ev_now(up->loop);

	if (up->balance == BALANCE_ROUNDROBIN && up->n > 0)
		first = up->rr_next++ % up->n;
	/* Healthy ones in turn from first, then those marked down. */
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < up->n; i++) {
			size_t idx = (first + i) % up->n;

			if (entry_down(&up->entries[idx], now) == (pass == 1))
				out[k++] = (unsigned char)idx;
		}
}

void
upstream_order(struct upstream *up, size_t entry,
    const struct upstream_addrs *addrs, struct resolver_addr *out)
{
	struct upstream_entry *e = &up->entries[entry];
	size_t n = addrs->n, k = 0, nskip = 0, next[2] = { 0, 0 };
	int fam[2];
	ev_tstamp now = ev_now(up->loop);
	struct resolver_addr tmp;

	if (n == 0)
		return;
	/* Interleave: the first address's family, the other, the first... */
	fam[0] = addrs->a[0].ss.ss_family;
	fam[1] = fam[0] == AF_INET6 ? AF_INET : AF_INET6;
	for (int turn = 0; k < n; turn ^= 1) {
		size_t *i = &next[turn];

		while (*i < n && addrs->a[*i].ss.ss_family != fam[turn])
			(*i)++;
		if (*i < n)
			out[k++] = addrs->a[(*i)++];
		else if (next[turn ^ 1] >= n)
			break;		/* neither family has any left */
	}
	n = k;
	/* Stable: paths marked down move to the end, in their order. */
	for (size_t i = 0; i < n - nskip; ) {
		if (!path_skipped(e, &out[i], now)) {
			i++;
			continue;
		}
		tmp = out[i];
		memmove(&out[i], &out[i + 1], (n - i - 1) * sizeof(out[0]));
		out[n - 1] = tmp;
		nskip++;
	}
}

/* event=upstream_down / upstream_up: service, upstream, address. */
static void
path_line_begin(struct log_line *l, const struct upstream *up,
    const struct upstream_entry *e, enum log_level level, const char *event,
    const struct resolver_addr *addr)
{
	char text[SOCKADDR_TEXT_MAX];

	sockaddr_format((const struct sockaddr *)&addr->ss, addr->len, text,
	    sizeof(text));
	log_line_begin(l, level, event);
	log_str(l, "service", up->service);
	log_strf(l, "upstream", "%s:%u", e->cfg->hp.host, e->cfg->hp.port);
	log_str(l, "address", text);
}

void
upstream_path_failed(struct upstream *up, size_t entry,
    const struct resolver_addr *addr, const char *why)
{
	struct upstream_entry *e = &up->entries[entry];
	struct path_health *h = path_find(e, addr), *grown;
	ev_tstamp now = ev_now(up->loop);
	struct log_line l;

	if (h != NULL) {
		/* Still down: its trial (or a connection of before) failed. */
		if (h->trial) {
			h->backoff = h->backoff * 2 > BACKOFF_MAX ?
			    BACKOFF_MAX : h->backoff * 2;
			h->trial = false;
			h->retry_at = now + h->backoff;
		}
		return;
	}
	grown = realloc(e->down, (e->ndown + 1) * sizeof(*grown));
	if (grown == NULL)
		return;		/* not remembered: tried as if healthy */
	e->down = grown;
	h = &e->down[e->ndown++];
	h->addr = *addr;
	h->down_since = now;
	h->backoff = BACKOFF_FIRST;
	h->retry_at = now + h->backoff;
	h->trial = false;
	upstream_publish(up);
	if (up->path_down != NULL)
		up->path_down(up->path_down_arg, entry, addr);
	if (up->quiet)
		return;
	path_line_begin(&l, up, e, LOG_WARN, "upstream_down", addr);
	log_str(&l, "error", why);
	log_uint(&l, "retry_ms", (uint64_t)(h->backoff * 1e3));
	log_line_end(&l);
}

void
upstream_path_ok(struct upstream *up, size_t entry,
    const struct resolver_addr *addr)
{
	struct upstream_entry *e = &up->entries[entry];
	struct path_health *h = path_find(e, addr);
	struct log_line l;

	if (h == NULL)
		return;
	if (!up->quiet) {
		path_line_begin(&l, up, e, LOG_INFO, "upstream_up", addr);
		log_ms(&l, "down_ms", (ev_now(up->loop) - h->down_since) * 1e3);
		log_line_end(&l);
	}
	*h = e->down[--e->ndown];
	upstream_publish(up);
}

void
upstream_stop(struct upstream *up)
{
	up->health = NULL;	/* the next configuration's upstream publishes */
	for (size_t i = 0; i < up->n; i++)
		upstream_name_stop(&up->entries[i].name);
}

void
upstream_free(struct upstream *up)
{
	for (size_t i = 0; i < up->n; i++) {
		upstream_name_free(&up->entries[i].name);
		free(up->entries[i].down);
	}
	free(up->entries);
	up->entries = NULL;
	up->n = 0;
}
