/*
 * io_collect.c - io_collect_interval, adaptively: io_collect_init(),
 * io_collect_start(), io_collect_stop().
 *
 * Under load, polling at most once per interval and taking what came in
 * the meantime in one go saves wake-ups: a proxy that answers every event
 * at once sleeps and is woken per packet, and on the sender's CPU each
 * wake-up costs more than the bytes (an inter-processor interrupt, dearer
 * still in a VM). But libev sleeps out the interval after every iteration,
 * so with few connections in flight each request would wait for its own
 * response to be collected (README, Performance, has the figures). So the
 * loop collects only while it is busy: while several connections are being
 * set up (connect and TLS handshake take milliseconds, the interval
 * microseconds), or from a poll that finds many events ready at once until
 * one that finds a single event (the gap keeps a few busy connections from
 * switching it on and off).
 */
#include "io_collect.h"

#define COLLECT_START_EVENTS	12
#define COLLECT_STOP_EVENTS	2
#define COLLECT_SETUPS		4

/* Fired first after each poll: what is pending now is what it returned. */
static void
collect_check_cb(struct ev_loop *loop, ev_check *w, int revents)
{
	struct io_collect *ic = w->data;

	(void)revents;
	ic->ready = ev_pending_count(loop);
}

/*
 * Fired before each poll, after the iteration's callbacks ran (so the
 * set-up count is current): decides whether this poll collects.
 */
static void
collect_prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	struct io_collect *ic = w->data;

	(void)revents;
	if (*ic->nsetup >= COLLECT_SETUPS)
		ic->collecting = true;
	else if (ic->collecting)
		ic->collecting = ic->ready >= COLLECT_STOP_EVENTS;
	else
		ic->collecting = ic->ready >= COLLECT_START_EVENTS;
	ev_set_io_collect_interval(loop, ic->collecting ? ic->interval : 0.);
}

void
io_collect_init(struct io_collect *ic, const unsigned int *nsetup)
{
	ic->nsetup = nsetup;
	ev_prepare_init(&ic->prepare, collect_prepare_cb);
	ic->prepare.data = ic;
	ev_check_init(&ic->check, collect_check_cb);
	ic->check.data = ic;
}

void
io_collect_start(struct io_collect *ic, struct ev_loop *loop,
    ev_tstamp interval)
{
	ic->interval = interval;
	if (ev_is_active(&ic->prepare))
		return;
	/* Neither watcher keeps the loop running at shutdown. */
	ev_prepare_start(loop, &ic->prepare);
	ev_unref(loop);
	ev_check_start(loop, &ic->check);
	ev_unref(loop);
}

void
io_collect_stop(struct io_collect *ic, struct ev_loop *loop)
{
	if (!ev_is_active(&ic->prepare))
		return;
	ev_ref(loop);
	ev_prepare_stop(loop, &ic->prepare);
	ev_ref(loop);
	ev_check_stop(loop, &ic->check);
}
