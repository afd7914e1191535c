/* notify.h - telling the service manager how we are (sd_notify, watchdog). */
#ifndef TLSFWD_NOTIFY_H
#define TLSFWD_NOTIFY_H

#include <ev.h>
#include <stdbool.h>

struct server;

struct notifier {
	bool		 enabled;	/* NOTIFY_SOCKET is set */
	struct server	*srv;
	ev_timer	 status_timer;	/* STATUS= when it changed, 1/s at most */
	ev_timer	 watchdog;	/* WATCHDOG=1 at half WATCHDOG_USEC */
	char		 last_status[256];
	bool		 warned;	/* a failed send was logged already */
};

/* Starts the status and watchdog timers if a manager listens. */
void	notify_init(struct notifier *n, struct server *srv);
/* READY=1 with the current STATUS=: listeners bound, credentials loaded. */
void	notify_ready(struct notifier *n);
/* RELOADING=1 with MONOTONIC_USEC=, before a reload. */
void	notify_reloading(struct notifier *n);
/* STOPPING=1, when shutdown begins; stops the status updates. */
void	notify_stopping(struct notifier *n);
void	notify_stop(struct notifier *n);

#endif
