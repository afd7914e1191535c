/*
 * upstream.c - a service's upstream and the health of its paths:
 * upstream_init(), upstream_start(), upstream_order(),
 * upstream_path_failed(), upstream_path_ok(), upstream_stop(),
 * upstream_free().
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

#include "log.h"
#include "parse.h"

#define BACKOFF_FIRST	1.
#define BACKOFF_MAX	30.

void
upstream_init(struct upstream *up, const char *service, const char *host,
    unsigned int port, ev_tstamp resolve_interval)
{
	memset(up, 0, sizeof(*up));
	upstream_name_init(&up->name, service, host, port, resolve_interval);
}

void
upstream_start(struct upstream *up, struct ev_loop *loop,
    struct resolver *resolver, const struct upstream *previous, bool quiet)
{
	up->loop = loop;
	up->quiet = quiet;
	if (previous != NULL && previous->ndown > 0) {
		up->down = malloc(previous->ndown * sizeof(*up->down));
		if (up->down != NULL) {
			memcpy(up->down, previous->down,
			    previous->ndown * sizeof(*up->down));
			up->ndown = previous->ndown;
		}
	}
	upstream_name_start(&up->name, loop, resolver,
	    previous != NULL ? &previous->name : NULL, quiet);
}

static bool
addr_equal(const struct resolver_addr *a, const struct resolver_addr *b)
{
	return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

static struct path_health *
path_find(struct upstream *up, const struct resolver_addr *addr)
{
	for (size_t i = 0; i < up->ndown; i++)
		if (addr_equal(&up->down[i].addr, addr))
			return &up->down[i];
	return NULL;
}

/* Down, and not (yet) this connection's trial. */
static bool
path_skipped(struct upstream *up, const struct resolver_addr *addr,
    ev_tstamp now)
{
	struct path_health *h = path_find(up, addr);

	if (h == NULL)
		return false;
	if (!h->trial && now >= h->retry_at) {
		h->trial = true;	/* this connection tries it */
		return false;
	}
	return true;
}

void
upstream_order(struct upstream *up, const struct upstream_addrs *addrs,
    struct resolver_addr *out)
{
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
		if (!path_skipped(up, &out[i], now)) {
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
    enum log_level level, const char *event, const struct resolver_addr *addr)
{
	char text[SOCKADDR_TEXT_MAX];

	sockaddr_format((const struct sockaddr *)&addr->ss, addr->len, text,
	    sizeof(text));
	log_line_begin(l, level, event);
	log_str(l, "service", up->name.service);
	log_strf(l, "upstream", "%s:%u", up->name.host, up->name.port);
	log_str(l, "address", text);
}

void
upstream_path_failed(struct upstream *up, const struct resolver_addr *addr,
    const char *why)
{
	struct path_health *h = path_find(up, addr), *grown;
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
	grown = realloc(up->down, (up->ndown + 1) * sizeof(*grown));
	if (grown == NULL)
		return;		/* not remembered: tried as if healthy */
	up->down = grown;
	h = &up->down[up->ndown++];
	h->addr = *addr;
	h->down_since = now;
	h->backoff = BACKOFF_FIRST;
	h->retry_at = now + h->backoff;
	h->trial = false;
	if (up->quiet)
		return;
	path_line_begin(&l, up, LOG_WARN, "upstream_down", addr);
	log_str(&l, "error", why);
	log_uint(&l, "retry_ms", (uint64_t)(h->backoff * 1e3));
	log_line_end(&l);
}

void
upstream_path_ok(struct upstream *up, const struct resolver_addr *addr)
{
	struct path_health *h = path_find(up, addr);
	struct log_line l;

	if (h == NULL)
		return;
	if (!up->quiet) {
		path_line_begin(&l, up, LOG_INFO, "upstream_up", addr);
		log_ms(&l, "down_ms", (ev_now(up->loop) - h->down_since) * 1e3);
		log_line_end(&l);
	}
	*h = up->down[--up->ndown];
}

void
upstream_stop(struct upstream *up)
{
	upstream_name_stop(&up->name);
}

void
upstream_free(struct upstream *up)
{
	upstream_name_free(&up->name);
	free(up->down);
	up->down = NULL;
	up->ndown = 0;
}
