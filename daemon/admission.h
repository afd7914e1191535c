/* admission.h - who may connect, and how many: allow/deny and max_connections. */
#ifndef TLSFWD_ADMISSION_H
#define TLSFWD_ADMISSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct service;
struct service_config;

/*
 * Open connections of one service name, shared by every event loop and
 * every configuration generation, so that a limit holds across workers
 * and reloads. Lives until admission_free_all() at exit.
 */
struct admission_count;

/* Refusals one loop logged for a service: at most one line a second. */
struct admission_log {
	double		last;		/* ev_now of the last refusal line */
	uint64_t	suppressed;	/* refusals since, not logged */
};

/* The shared counter for a service name; NULL when out of memory. */
struct admission_count *admission_count_get(const char *service);
void	admission_free_all(void);

/* Whether sc's allow and deny let peer in (always true off TCP). */
bool	admission_address_allowed(const struct service_config *sc,
	    const struct sockaddr *peer);

/*
 * Decides on a client svc just accepted (now: the loop's ev_now): true
 * takes a connection slot, given back with admission_release(); false logs
 * the refusal (rate limited) and the caller closes the socket.
 */
bool	admission_admit(struct service *svc, const struct sockaddr *peer,
	    const char *client, double now);
void	admission_release(struct service *svc);

/* Open connections of all services, every loop. */
uint64_t admission_total(void);

#endif
