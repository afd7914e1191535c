/*
 * conn_dump.c - GET /connections: conn_dump_seat_init(),
 * conn_dump_seat_free(), conn_dump_start(), conn_dump_forget().
 *
 * The answer is a JSON array, one object per open connection, written by
 * the loops in turn: the main loop sends the HTTP head and its own
 * connections, then hands the socket to worker 1's inbox, and so on; the
 * last loop closes the array and the socket. Each loop fills a 64 KiB
 * buffer from a cursor into its list of connections as the socket takes
 * the previous one; a connection that closes meanwhile moves the cursor
 * on (conn_dump_forget), and one that opens meanwhile goes to the head of
 * the list, before the cursor: the answer lists the connections open when
 * the loop began its part and still open when the cursor got to them.
 *
 * Bounded: 4 answers at once (more get 503 from metrics_http.c), one
 * buffer each, and 10 s without progress ends one. The watchers do not
 * keep a loop running at shutdown: the seat's end closes what is left.
 *
 * A handover goes from loop k to loop k + 1 only, and the workers are
 * freed in that order after each one's thread ended (main.c's
 * free_workers), so the seat a handover reaches is never gone.
 */
#include "conn_dump.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn_priv.h"
#include "service.h"

#define DUMP_BUF	65536
#define DUMP_ROOM	2048	/* one connection's object, at most */
#define DUMP_TIMEOUT	10.	/* without progress */
#define DUMPS_MAX	4
#define DUMP_ROUNDS	4	/* buffers per callback: the loop's others go on */

static unsigned int dumps_running;	/* atomic: every loop's */

struct conn_dump {
	int			 fd;
	struct server *const	*group;		/* the loops, in turn */
	size_t			 ngroup;
	size_t			 part;		/* index in group: writing now */
	struct server		*srv;		/* group[part] */
	const struct conn_link	*cursor;	/* the next one to list */
	bool			 any;		/* an object written: a comma */
	bool			 closed;	/* the array's end is in buf */
	ev_io			 io;
	ev_timer		 timer;
	size_t			 len, sent;
	struct conn_dump	*prev, *next;	/* in seat.active or seat.inbox */
	char			 buf[DUMP_BUF];
};

static void dump_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void dump_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents);

static void
active_unlink(struct conn_dump *d)
{
	struct conn_dump_seat *seat = &d->srv->dumps;

	if (d->prev != NULL)
		d->prev->next = d->next;
	else
		seat->active = d->next;
	if (d->next != NULL)
		d->next->prev = d->prev;
	d->prev = d->next = NULL;
}

/* Stops d's watchers on its loop (they were unreferenced: see begin). */
static void
dump_stop(struct conn_dump *d)
{
	struct ev_loop *loop = d->srv->loop;

	ev_ref(loop);
	ev_io_stop(loop, &d->io);
	ev_ref(loop);
	ev_timer_stop(loop, &d->timer);
	active_unlink(d);
}

static void
dump_free(struct conn_dump *d)
{
	close(d->fd);
	free(d);
	__atomic_sub_fetch(&dumps_running, 1, __ATOMIC_RELAXED);
}

/* The end of an answer, written or not. */
static void
dump_end(struct conn_dump *d)
{
	dump_stop(d);
	dump_free(d);
}

/* Loop d->srv begins its part: from the head of its list. */
static void
dump_begin(struct conn_dump *d, struct server *srv)
{
	struct conn_dump_seat *seat = &srv->dumps;

	d->srv = srv;
	d->cursor = srv->conns;
	d->prev = NULL;
	d->next = seat->active;
	if (seat->active != NULL)
		seat->active->prev = d;
	seat->active = d;
	ev_io_init(&d->io, dump_io_cb, d->fd, EV_WRITE);
	d->io.data = d;
	ev_io_start(srv->loop, &d->io);
	ev_unref(srv->loop);
	ev_init(&d->timer, dump_timeout_cb);
	d->timer.repeat = DUMP_TIMEOUT;
	d->timer.data = d;
	ev_timer_again(srv->loop, &d->timer);
	ev_unref(srv->loop);
}

/* This loop's part is written: the next loop's inbox, or the end. */
static void
dump_pass(struct conn_dump *d)
{
	struct server *next = d->group[d->part + 1];
	struct conn_dump_seat *seat = &next->dumps;

	dump_stop(d);
	d->part++;
	pthread_mutex_lock(&seat->lock);
	d->next = seat->inbox;
	seat->inbox = d;
	pthread_mutex_unlock(&seat->lock);
	ev_async_send(next->loop, &seat->wake);
}

static void
add(struct conn_dump *d, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void
add(struct conn_dump *d, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(d->buf + d->len, sizeof(d->buf) - d->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		d->len += (size_t)n < sizeof(d->buf) - d->len ? (size_t)n :
		    sizeof(d->buf) - d->len - 1;
}

/* A JSON string (or null for NULL / ""), escaped. */
static void
add_str(struct conn_dump *d, const char *key, const char *s)
{
	add(d, ",\"%s\":", key);
	if (s == NULL || *s == '\0') {
		add(d, "null");
		return;
	}
	add(d, "\"");
	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			add(d, "\\%c", ch);
		else if (ch < 0x20)
			add(d, "\\u%04x", ch);
		else
			add(d, "%c", ch);
	}
	add(d, "\"");
}

static void
dump_conn(struct conn_dump *d, const struct conn *c, double now_ms,
    ev_tstamp now)
{
	bool up = c->state >= CONN_AWAITING_VERDICT && c->tls != NULL;
	double age = now_ms - conn_t_client(c);
	double idle = up ? (now - c->relay.last_activity) * 1e3 : age;

	add(d, "%s\n{\"id\":%llu", d->any ? "," : "",
	    (unsigned long long)c->id);
	add_str(d, "service", c->svc->sc->name);
	add_str(d, "client", c->client);
	add_str(d, "upstream", c->upstream);
	add_str(d, "state", conn_state_name(c->state));
	add(d, ",\"age_ms\":%.0f,\"idle_ms\":%.0f", age, idle < 0 ? 0 : idle);
	add(d, ",\"bytes_up\":%llu,\"bytes_down\":%llu",
	    (unsigned long long)c->relay.bytes_up,
	    (unsigned long long)c->relay.bytes_down);
	add_str(d, "tls_version", up ? gnutls_protocol_get_name(
	    gnutls_protocol_get_version(c->tls)) : NULL);
	add_str(d, "cipher", up ? gnutls_cipher_get_name(
	    gnutls_cipher_get(c->tls)) : NULL);
	add(d, ",\"resumed\":%s}", up && gnutls_session_is_resumed(c->tls) ?
	    "true" : "false");
	d->any = true;
}

/* The next buffer of this loop's part (empty: the part is written). */
static void
dump_fill(struct conn_dump *d)
{
	double now_ms = conn_now_ms();
	ev_tstamp now = ev_now(d->srv->loop);

	while (d->cursor != NULL && sizeof(d->buf) - d->len >= DUMP_ROOM) {
		dump_conn(d, d->cursor->conn, now_ms, now);
		d->cursor = d->cursor->next;
	}
	if (d->cursor == NULL && d->part + 1 == d->ngroup && !d->closed) {
		add(d, "\n]\n");
		d->closed = true;
	}
}

/* Fired when the scraper's socket takes more: the next bytes go. */
static void
dump_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn_dump *d = w->data;
	ssize_t n;

	(void)revents;
	for (int round = 0; round < DUMP_ROUNDS; ) {
		if (d->sent == d->len) {
			d->sent = d->len = 0;
			dump_fill(d);
			round++;
			if (d->len == 0) {
				if (d->closed)
					dump_end(d);
				else
					dump_pass(d);
				return;
			}
		}
		n = send(d->fd, d->buf + d->sent, d->len - d->sent,
		    MSG_NOSIGNAL);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			dump_end(d);	/* the scraper went */
			return;
		}
		d->sent += (size_t)n;
		ev_timer_again(loop, &d->timer);
	}
}

/* Fired after 10 s without the scraper taking anything: it goes. */
static void
dump_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	dump_end(w->data);
}

/* Fired by dump_pass on the loop before: this loop's part begins. */
static void
dump_wake_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	struct server *srv = w->data;
	struct conn_dump *d, *next;

	(void)loop;
	(void)revents;
	pthread_mutex_lock(&srv->dumps.lock);
	d = srv->dumps.inbox;
	srv->dumps.inbox = NULL;
	pthread_mutex_unlock(&srv->dumps.lock);
	for (; d != NULL; d = next) {
		next = d->next;
		dump_begin(d, srv);
	}
}

void
conn_dump_seat_init(struct server *srv)
{
	struct conn_dump_seat *seat = &srv->dumps;

	pthread_mutex_init(&seat->lock, NULL);
	ev_async_init(&seat->wake, dump_wake_cb);
	seat->wake.data = srv;
	ev_async_start(srv->loop, &seat->wake);
	ev_unref(srv->loop);
	seat->started = true;
}

void
conn_dump_seat_free(struct server *srv)
{
	struct conn_dump_seat *seat = &srv->dumps;
	struct conn_dump *d;

	if (!seat->started)
		return;
	while (seat->active != NULL)
		dump_end(seat->active);
	while ((d = seat->inbox) != NULL) {
		seat->inbox = d->next;
		dump_free(d);
	}
	ev_ref(srv->loop);
	ev_async_stop(srv->loop, &seat->wake);
	pthread_mutex_destroy(&seat->lock);
	seat->started = false;
}

int
conn_dump_start(struct server *srv, int fd)
{
	static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: "
	    "application/json\r\nConnection: close\r\n\r\n[";
	struct conn_dump *d;

	if (__atomic_add_fetch(&dumps_running, 1, __ATOMIC_RELAXED) >
	    DUMPS_MAX || (d = malloc(sizeof(*d))) == NULL) {
		__atomic_sub_fetch(&dumps_running, 1, __ATOMIC_RELAXED);
		return -1;
	}
	memset(d, 0, offsetof(struct conn_dump, buf));
	d->fd = fd;
	d->group = srv->group;
	d->ngroup = srv->ngroup;
	memcpy(d->buf, head, sizeof(head) - 1);
	d->len = sizeof(head) - 1;
	dump_begin(d, srv);
	return 0;
}

void
conn_dump_forget(struct server *srv, const struct conn_link *link)
{
	for (struct conn_dump *d = srv->dumps.active; d != NULL; d = d->next)
		if (d->cursor == link)
			d->cursor = link->next;
}
