/* notify.c - telling the service manager how we are (sd_notify, watchdog). */
#include "notify.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "log.h"
#include "server.h"

static void
notify_send(struct notifier *n, const char *state)
{
	int rc = sd_notify(0, state);

	/* Once: a watchdog ping failing every few ms must not flood the log. */
	if (rc < 0 && !n->warned) {
		n->warned = true;
		log_msg(LOG_WARN, "notify", "sd_notify to %s failed: %s "
		    "(further failures are not logged)",
		    getenv("NOTIFY_SOCKET"), strerror(-rc));
	}
}

/* Sends STATUS= (with extra assignments first) if anything changed. */
static void
notify_status(struct notifier *n, const char *extra, bool force)
{
	char status[sizeof(n->last_status)], msg[512];

	server_status(n->srv, status, sizeof(status));
	if (!force && strcmp(status, n->last_status) == 0)
		return;
	snprintf(n->last_status, sizeof(n->last_status), "%s", status);
	snprintf(msg, sizeof(msg), "%sSTATUS=%s", extra, status);
	notify_send(n, msg);
}

static void
status_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	notify_status(w->data, "", false);
}

/*
 * Fired by the loop itself at half the manager's watchdog interval: if the
 * loop is stuck, the pings stop and the manager restarts us.
 */
static void
watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	notify_send(w->data, "WATCHDOG=1");
}

void
notify_init(struct notifier *n, struct server *srv)
{
	uint64_t usec = 0;

	memset(n, 0, sizeof(*n));
	n->srv = srv;
	n->enabled = getenv("NOTIFY_SOCKET") != NULL;
	if (!n->enabled)
		return;
	ev_timer_init(&n->status_timer, status_timer_cb, 1., 1.);
	n->status_timer.data = n;
	ev_timer_start(srv->loop, &n->status_timer);
	if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
		ev_tstamp every = (ev_tstamp)usec / 2e6;

		ev_timer_init(&n->watchdog, watchdog_cb, every, every);
		n->watchdog.data = n;
		ev_timer_start(srv->loop, &n->watchdog);
		log_msg(LOG_INFO, "notify", "watchdog: pinging every %.0f ms",
		    every * 1e3);
	}
}

void
notify_ready(struct notifier *n)
{
	if (n->enabled)
		notify_status(n, "READY=1\n", true);
}

void
notify_reloading(struct notifier *n)
{
	struct timespec ts;
	char msg[96];

	if (!n->enabled)
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
	    (unsigned long long)ts.tv_sec * 1000000ULL +
	    (unsigned long long)ts.tv_nsec / 1000ULL);
	notify_send(n, msg);
}

void
notify_stopping(struct notifier *n)
{
	if (!n->enabled)
		return;
	ev_timer_stop(n->srv->loop, &n->status_timer);
	notify_send(n, "STOPPING=1");
}

void
notify_stop(struct notifier *n)
{
	if (!n->enabled)
		return;
	ev_timer_stop(n->srv->loop, &n->status_timer);
	ev_timer_stop(n->srv->loop, &n->watchdog);
}
