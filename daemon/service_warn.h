/*
 * service_warn.h - what a service's configuration allows but an operator
 * should hear about: readable key files, open access, a client
 * certificate near its end.
 */
#ifndef TLSFWD_SERVICE_WARN_H
#define TLSFWD_SERVICE_WARN_H

#include <ev.h>

#include "config.h"

struct service;
struct generation;

/*
 * key_file / key_password_file readable by others (refused unless
 * allow_insecure_key_perms) or by the group (warned about). With errs
 * (building a configuration): adds the refusals to it. Without (start,
 * reload): logs the warnings.
 */
void	service_warn_key_perms(const struct service_config *sc,
	    const char *cfg_path, struct config_errors *errs);
/* allow = 0.0.0.0/0 was asked for; said at every start and reload. */
void	service_warn_open_access(const struct service *svc);
/* A client certificate that ends within 14 days, or has ended. */
void	service_warn_cert_expiry(const struct service *svc);

/* Checks the client certificates of *gen's services once a day. */
struct service_warn_daily {
	ev_timer		 timer;
	struct generation	**gen;	/* the loop's current configuration */
};
void	service_warn_daily_start(struct service_warn_daily *d,
	    struct ev_loop *loop, struct generation **gen);
void	service_warn_daily_stop(struct service_warn_daily *d,
	    struct ev_loop *loop);

#endif
