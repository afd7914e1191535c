/* admission.c - who may connect, and how many: allow/deny and max_connections. */
#include "admission.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "service.h"

struct admission_count {
	char			 name[SERVICE_NAME_MAX + 1];
	uint64_t		 open;		/* atomic */
	struct admission_count	*next;
};

/* Found or created at configuration time only; the hot path is atomics. */
static pthread_mutex_t counts_lock = PTHREAD_MUTEX_INITIALIZER;
static struct admission_count *counts;
static uint64_t open_total;	/* atomic: every service */

struct admission_count *
admission_count_get(const char *service)
{
	struct admission_count *c;

	pthread_mutex_lock(&counts_lock);
	for (c = counts; c != NULL; c = c->next)
		if (strcmp(c->name, service) == 0)
			break;
	if (c == NULL && (c = calloc(1, sizeof(*c))) != NULL) {
		snprintf(c->name, sizeof(c->name), "%s", service);
		c->next = counts;
		counts = c;
	}
	pthread_mutex_unlock(&counts_lock);
	return c;
}

void
admission_free_all(void)
{
	struct admission_count *c, *next;

	pthread_mutex_lock(&counts_lock);
	for (c = counts; c != NULL; c = next) {
		next = c->next;
		free(c);
	}
	counts = NULL;
	pthread_mutex_unlock(&counts_lock);
}

bool
admission_address_allowed(const struct service_config *sc,
    const struct sockaddr *peer)
{
	if (peer->sa_family != AF_INET && peer->sa_family != AF_INET6)
		return true;	/* unix: the socket file's mode decides */
	for (size_t i = 0; i < sc->ndeny; i++)
		if (cidr_contains(&sc->deny[i], peer))
			return false;
	if (sc->nallow == 0)
		return true;
	for (size_t i = 0; i < sc->nallow; i++)
		if (cidr_contains(&sc->allow[i], peer))
			return true;
	return false;
}

/*
 * One line per service and loop per second at most: a flood of refused
 * clients must not become a flood of log lines. The next line says how
 * many were left out.
 */
static void
admission_log_refusal(struct service *svc, double now, const char *client,
    const char *reason, unsigned long limit)
{
	struct admission_log *rl = &svc->refusals;
	struct log_line l;

	if (rl->last != 0 && now - rl->last < 1.0) {
		rl->suppressed++;
		return;
	}
	rl->last = now;
	log_line_begin(&l, LOG_WARN, "refused");
	log_str(&l, "service", svc->sc->name);
	log_str(&l, "client", client);
	log_str(&l, "reason", reason);
	if (limit > 0)
		log_uint(&l, "limit", limit);
	if (rl->suppressed > 0)
		log_uint(&l, "suppressed", rl->suppressed);
	log_line_end(&l);
	rl->suppressed = 0;
}

bool
admission_admit(struct service *svc, const struct sockaddr *peer,
    const char *client, double now)
{
	const struct service_config *sc = svc->sc;
	unsigned long global_max = svc->gen->cfg->global.max_connections;
	uint64_t mine, all;

	if (!admission_address_allowed(sc, peer)) {
		METRIC_ADD(svc->counts->refused[REFUSED_DENIED], 1);
		admission_log_refusal(svc, now, client, "denied", 0);
		return false;
	}
	/* Take the slots first, then look: no window where two loops both
	 * see room for one. */
	mine = __atomic_add_fetch(&svc->count->open, 1, __ATOMIC_RELAXED);
	all = __atomic_add_fetch(&open_total, 1, __ATOMIC_RELAXED);
	if ((sc->max_connections == 0 || mine <= sc->max_connections) &&
	    (global_max == 0 || all <= global_max))
		return true;
	__atomic_sub_fetch(&svc->count->open, 1, __ATOMIC_RELAXED);
	__atomic_sub_fetch(&open_total, 1, __ATOMIC_RELAXED);
	if (sc->max_connections != 0 && mine > sc->max_connections) {
		METRIC_ADD(svc->counts->refused[REFUSED_MAX_CONNECTIONS], 1);
		admission_log_refusal(svc, now, client, "max_connections",
		    sc->max_connections);
	} else {
		METRIC_ADD(svc->counts->refused[REFUSED_GLOBAL_MAX], 1);
		admission_log_refusal(svc, now, client,
		    "global_max_connections", global_max);
	}
	return false;
}

void
admission_release(struct service *svc)
{
	__atomic_sub_fetch(&svc->count->open, 1, __ATOMIC_RELAXED);
	__atomic_sub_fetch(&open_total, 1, __ATOMIC_RELAXED);
}

uint64_t
admission_total(void)
{
	return __atomic_load_n(&open_total, __ATOMIC_RELAXED);
}
