/*
 * connect_race.c - RFC 8305 connection racing: connect_race_init(),
 * connect_race_run(), connect_race_has_more(), connect_race_stop().
 *
 * The caller orders the addresses (families interleaved, healthy paths
 * first); the race only decides when each attempt starts: the first at
 * once, the next when the race delay passes without a connection or at
 * once when an attempt fails, each limited by connect_timeout. Callbacks
 * may free the race only in won and failed, which end it.
 */
#include "connect_race.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

static void race_start_next(struct connect_race *race);

static void
attempt_close(struct connect_race *race, struct race_attempt *a)
{
	ev_io_stop(race->loop, &a->io);
	ev_timer_stop(race->loop, &a->timeout);
	if (a->fd >= 0)
		close(a->fd);
	a->fd = -1;
	race->inflight--;
}

/* An attempt failed: counts it, tells the caller, races on. */
static void
attempt_lost(struct connect_race *race, struct race_attempt *a, int err)
{
	size_t addr = a->addr;

	attempt_close(race, a);
	race->last_errno = err;
	race->lost(race, addr, err);
	race_start_next(race);
}

/* Fired when an attempt's connect() finished: SO_ERROR says how. */
static void
attempt_writable_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct race_attempt *a = w->data;
	struct connect_race *race = a->race;
	socklen_t len = sizeof(int);
	size_t addr = a->addr;
	int soerr = 0, fd;

	(void)loop;
	(void)revents;
	if (getsockopt(a->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
		soerr = errno;
	if (soerr != 0) {
		attempt_lost(race, a, soerr);
		return;
	}
	/* The winner: its fd goes to the caller, the others close. */
	fd = a->fd;
	a->fd = -1;
	attempt_close(race, a);
	for (size_t i = 0; i < RACE_MAX_INFLIGHT; i++)
		if (race->attempts[i].fd >= 0 && race->attempts[i].addr < addr)
			race->outraced(race, race->attempts[i].addr);
	connect_race_stop(race);
	race->won(race, fd, addr);
}

/* Fired when an attempt did not connect within connect_timeout. */
static void
attempt_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct race_attempt *a = w->data;

	(void)loop;
	(void)revents;
	attempt_lost(a->race, a, ETIMEDOUT);
}

/* Fired when the race delay passed without a connection: one more. */
static void
race_delay_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct connect_race *race = w->data;

	(void)loop;
	(void)revents;
	race_start_next(race);
}

static struct race_attempt *
free_slot(struct connect_race *race)
{
	for (size_t i = 0; i < RACE_MAX_INFLIGHT; i++)
		if (race->attempts[i].fd < 0)
			return &race->attempts[i];
	return NULL;
}

/*
 * Starts the next address's attempt (and the next after it, at once, for
 * each that fails at connect()); ends the race when none is left and none
 * is in flight.
 */
static void
race_start_next(struct connect_race *race)
{
	struct race_attempt *a;
	const struct sockaddr *sa;
	int one = 1, fd;
	size_t idx;

	while (race->next < race->n && (a = free_slot(race)) != NULL) {
		idx = race->next++;
		sa = (const struct sockaddr *)&race->addrs[idx].ss;
		race->started++;
		fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK |
		    SOCK_CLOEXEC, 0);
		if (fd < 0) {
			race->last_errno = errno;
			race->lost(race, idx, errno);
			continue;
		}
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
		    sizeof(one));
		if (connect(fd, sa, race->addrs[idx].len) != 0 &&
		    errno != EINPROGRESS) {
			race->last_errno = errno;
			close(fd);
			race->lost(race, idx, race->last_errno);
			continue;
		}
		/* Even an immediate success reports via writability. */
		a->fd = fd;
		a->addr = idx;
		race->inflight++;
		ev_io_set(&a->io, fd, EV_WRITE);
		ev_io_start(race->loop, &a->io);
		ev_timer_set(&a->timeout, race->timeout, 0.);
		ev_timer_start(race->loop, &a->timeout);
		ev_timer_stop(race->loop, &race->delay_timer);
		if (race->next < race->n) {
			ev_timer_set(&race->delay_timer, race->delay, 0.);
			ev_timer_start(race->loop, &race->delay_timer);
		}
		return;
	}
	if (race->inflight == 0 && race->next >= race->n) {
		ev_timer_stop(race->loop, &race->delay_timer);
		race->failed(race);
	}
}

void
connect_race_init(struct connect_race *race, struct ev_loop *loop,
    ev_tstamp delay, ev_tstamp timeout)
{
	race->loop = loop;
	race->addrs = NULL;
	race->n = race->next = 0;
	race->delay = delay;
	race->timeout = timeout;
	race->inflight = race->started = 0;
	race->last_errno = 0;
	ev_init(&race->delay_timer, race_delay_cb);
	race->delay_timer.data = race;
	for (size_t i = 0; i < RACE_MAX_INFLIGHT; i++) {
		struct race_attempt *a = &race->attempts[i];

		a->fd = -1;
		a->race = race;
		ev_init(&a->io, attempt_writable_cb);
		a->io.data = a;
		ev_init(&a->timeout, attempt_timeout_cb);
		a->timeout.data = a;
	}
}

void
connect_race_run(struct connect_race *race, const struct resolver_addr *addrs,
    size_t n)
{
	if (addrs != race->addrs) {
		race->addrs = addrs;
		race->n = n;
		race->next = 0;
	}
	race_start_next(race);
}

bool
connect_race_has_more(const struct connect_race *race)
{
	return race->next < race->n || race->inflight > 0;
}

void
connect_race_stop(struct connect_race *race)
{
	ev_timer_stop(race->loop, &race->delay_timer);
	for (size_t i = 0; i < RACE_MAX_INFLIGHT; i++)
		if (race->attempts[i].fd >= 0)
			attempt_close(race, &race->attempts[i]);
}
