/* relay.c - moving bytes both ways: buffers, backpressure, half-close. */
#include "relay.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"
#include "server.h"
#include "tls.h"

/* Results of one step of moving bytes. */
enum step { STEP_OK, STEP_CLOSED };

/*
 * Records moved upstream -> client in one readiness event at most, so that
 * one fast connection cannot keep the loop from the others.
 */
#define U2C_RECORDS_PER_EVENT 8
/* The same for client -> upstream, in buffers of RELAY_BUF_SIZE. */
#define C2U_BUFS_PER_EVENT 8

static bool
buf_empty(const struct relay_buf *b)
{
	return b->head == b->tail;
}

static bool
buf_full(const struct relay_buf *b)
{
	return b->data != NULL && b->tail == RELAY_BUF_SIZE;
}

/*
 * Buffers exist only while bytes are in flight, so idle connections are
 * small; a few freed ones wait in the loop's spares, so that a request and
 * its answer do not cost two malloc/free pairs of 16 KiB (too big for the
 * allocator's fast path).
 */
static int
buf_reserve(struct conn *c, struct relay_buf *b)
{
	struct relay_spares *sp = &c->srv->spares;

	if (b->data != NULL)
		return 0;
	if (sp->n > 0)
		b->data = sp->bufs[--sp->n];
	else if ((b->data = malloc(RELAY_BUF_SIZE)) == NULL)
		return -1;
	return 0;
}

static void
buf_release(struct conn *c, struct relay_buf *b)
{
	struct relay_spares *sp = &c->srv->spares;

	if (b->data != NULL && sp->n < RELAY_SPARES_MAX)
		sp->bufs[sp->n++] = b->data;
	else
		free(b->data);
	b->data = NULL;
	b->head = b->tail = 0;
}

static void
buf_consumed(struct conn *c, struct relay_buf *b, size_t n)
{
	b->head += (uint32_t)n;
	if (b->head == b->tail)
		buf_release(c, b);
}

/* Upstream bytes that no fd event will announce: in GnuTLS or read ahead. */
static bool
upstream_pending(struct conn *c)
{
	return gnutls_record_check_pending(c->tls) > 0 ||
	    !buf_empty(&c->relay.rx);
}

/* An upstream record is waiting for the client. */
static bool
u2c_held(const struct relay *r)
{
	return r->u2c_pkt != NULL;
}

static void
u2c_release(struct relay *r)
{
	if (r->u2c_pkt != NULL)
		gnutls_packet_deinit(r->u2c_pkt);
	r->u2c_pkt = NULL;
	r->u2c_off = 0;
}

void
relay_free(struct conn *c)
{
	buf_release(c, &c->relay.c2u);
	buf_release(c, &c->relay.rx);
	u2c_release(&c->relay);
}

/*
 * GnuTLS asks for exactly what it needs next (a 5-byte record header, then
 * the record), so without help every record costs two recv() calls and the
 * end of each burst a third that finds nothing. Here a header-sized request
 * reads up to a buffer's worth ahead, and a short recv() marks the socket
 * empty until libev says otherwise (level-triggered, so nothing is missed).
 * Once a read-ahead comes back full, the socket holds a stream of full
 * records: reads then go straight into GnuTLS's buffer, exact and without a
 * copy, until one comes back short. The buffer exists only while it holds
 * bytes, so idle connections do not pay for it.
 */
#define RX_READ_AHEAD_BELOW 512

/* Hands GnuTLS up to len of the bytes read ahead (there must be some). */
static ssize_t
rx_take(struct conn *c, void *buf, size_t len)
{
	struct relay_buf *b = &c->relay.rx;
	size_t avail = b->tail - b->head;

	if (len > avail)
		len = avail;
	memcpy(buf, b->data + b->head, len);
	buf_consumed(c, b, len);
	return (ssize_t)len;
}

static ssize_t
recv_retrying(int fd, void *buf, size_t len)
{
	ssize_t n;

	do {
		n = recv(fd, buf, len, 0);
	} while (n < 0 && errno == EINTR);
	return n;
}

ssize_t
relay_upstream_pull(struct conn *c, void *buf, size_t len)
{
	struct relay *r = &c->relay;
	struct relay_buf *b = &r->rx;
	ssize_t n;

	if (!buf_empty(b))
		return rx_take(c, buf, len);
	if (r->rx_dry) {
		errno = EAGAIN;
		return -1;
	}
	if (len >= RX_READ_AHEAD_BELOW || r->rx_bulk) {
		n = recv_retrying(c->ufd, buf, len);
		if (n >= 0 && (size_t)n < len) {
			r->rx_dry = n > 0;
			r->rx_bulk = false;
		}
		return n;
	}
	if (buf_reserve(c, b) != 0) {
		errno = ENOMEM;
		return -1;
	}
	n = recv_retrying(c->ufd, b->data, RELAY_BUF_SIZE);
	if (n <= 0) {
		int saved_errno = errno;	/* for the caller, past free() */

		buf_release(c, b);
		errno = saved_errno;
		return n;
	}
	r->rx_dry = (size_t)n < RELAY_BUF_SIZE;
	r->rx_bulk = !r->rx_dry;
	b->tail = (uint32_t)n;
	return rx_take(c, buf, len);
}

void
relay_upstream_readable(struct conn *c)
{
	c->relay.rx_dry = false;
}

size_t
relay_upstream_buffered(const struct conn *c)
{
	return c->relay.rx.tail - c->relay.rx.head;
}

void
relay_upstream_reset(struct conn *c)
{
	buf_release(c, &c->relay.rx);
	c->relay.rx_dry = false;
	c->relay.rx_bulk = false;
}

void
relay_spares_free(struct relay_spares *sp)
{
	while (sp->n > 0)
		free(sp->bufs[--sp->n]);
}

static void
relay_activity(struct conn *c)
{
	c->last_activity = ev_now(c->srv->loop);
}

/*
 * An upstream error while its verdict on our client certificate is pending
 * (TLS 1.3): the verdict may still be there to read. A server that refuses
 * sends its alert and closes while our first record is in flight, so our
 * send meets a reset; the alert sits before it in the socket (or in what we
 * read ahead). Reads every record still readable, then decides from what
 * the upstream sent: an alert is a refusal, a record, a ticket or a
 * close_notify an acceptance; nothing at all leaves the error as the cause.
 * True if the verdict was yes (the caller then reports its error).
 */
static bool
verdict_from_leftovers(struct conn *c, int *gnutls_rc)
{
	gnutls_packet_t pkt;
	ssize_t n;

	if (*gnutls_rc == GNUTLS_E_FATAL_ALERT_RECEIVED)
		return false;
	relay_upstream_readable(c);	/* ask the kernel, even if dry */
	for (int i = 0; i < 64 && !c->tlsc.upstream_spoke; i++) {
		pkt = NULL;
		n = gnutls_record_recv_packet(c->tls, &pkt);
		if (pkt != NULL)
			gnutls_packet_deinit(pkt);
		if (n > 0 || n == 0)
			return true;
		if (n == GNUTLS_E_FATAL_ALERT_RECEIVED) {
			*gnutls_rc = (int)n;
			return false;
		}
		if (n == GNUTLS_E_AGAIN || gnutls_error_is_fatal((int)n))
			break;
	}
	return c->tlsc.upstream_spoke;
}

/* Records a fatal error from a side and closes the connection. */
static enum step
relay_fail(struct conn *c, const char *reason, int sys_errno, int gnutls_rc)
{
	if (c->verdict_pending && strcmp(reason, "upstream_error") == 0) {
		if (!verdict_from_leftovers(c, &gnutls_rc)) {
			/* The upstream's answer to our Finished was no. */
			conn_handshake_refused(c, gnutls_rc);
			return STEP_CLOSED;
		}
		conn_handshake_confirmed(c);
	}
	c->err.sys_errno = sys_errno;
	if (gnutls_rc != 0 && conn_note_tls_error(c, gnutls_rc))
		reason = "upstream_alert";
	conn_close(c, reason);
	return STEP_CLOSED;
}

/*
 * Arms exactly the watchers for what is still waiting; this is where
 * backpressure happens: a side is read only while its buffer has room.
 */
static void
relay_arm(struct conn *c)
{
	struct ev_loop *loop = c->srv->loop;
	struct relay *r = &c->relay;
	bool c_rd, c_wr, u_rd = false, u_wr = false;

	c_rd = !r->client_eof && !buf_full(&r->c2u);
	c_wr = u2c_held(r);
	if (!r->upstream_eof && !u2c_held(r)) {
		if (r->recv_wants_write)
			u_wr = true;
		else
			u_rd = true;
	}
	if (r->send_pending > 0 || r->bye_pending) {
		bool wants_read = r->send_pending > 0 ? r->send_wants_read :
		    r->bye_wants_read;

		if (wants_read)
			u_rd = true;
		else
			u_wr = true;
	}
#define ARM(w, on) do {						\
	if ((on) && !ev_is_active(w))				\
		ev_io_start(loop, w);				\
	else if (!(on) && ev_is_active(w))			\
		ev_io_stop(loop, w);				\
} while (0)
	ARM(&c->c_rd, c_rd);
	ARM(&c->c_wr, c_wr);
	ARM(&c->u_rd, u_rd);
	ARM(&c->u_wr, u_wr);
#undef ARM
	/*
	 * Bytes read ahead announce themselves to no one: the socket they came
	 * from may be empty now. Make u_rd fire for them in the next loop
	 * iteration, as the kernel would have for bytes left in the socket.
	 */
	if (u_rd && !buf_empty(&r->rx))
		ev_feed_event(loop, &c->u_rd, EV_READ);
}

/* Both directions over: the connection is done; one over: shutting down. */
static enum step
relay_check_done(struct conn *c)
{
	struct relay *r = &c->relay;

	if (r->c2u_done && r->u2c_done) {
		conn_close(c, "done");
		return STEP_CLOSED;
	}
	if ((r->c2u_done || r->u2c_done) && c->state == CONN_RELAYING)
		conn_set_state(c, CONN_SHUTTING_DOWN);
	return STEP_OK;
}

/*
 * Client -> upstream: sends what is buffered, then, once the client has sent
 * FIN and everything is out, a close_notify (gnutls_bye SHUT_WR) and a TCP
 * FIN, keeping the upstream's direction open.
 */
static enum step
c2u_flush(struct conn *c)
{
	struct relay *r = &c->relay;
	struct relay_buf *b = &r->c2u;
	ssize_t n;
	int rc;

	while (!buf_empty(b)) {
		size_t avail = b->tail - b->head;
		/* After GNUTLS_E_AGAIN, GnuTLS wants the same call again. */
		size_t len = r->send_pending > 0 ? r->send_pending :
		    avail < RELAY_RECORD_MAX ? avail : RELAY_RECORD_MAX;

		/*
		 * One record per call; all but the buffer's last go out with
		 * MSG_MORE, so the kernel sends them together as the last one
		 * leaves (or as ACKs come back, should the socket fill first).
		 */
		r->push_more = avail > len;
		n = gnutls_record_send(c->tls, b->data + b->head, len);
		r->push_more = false;
		if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
			r->send_pending = (uint32_t)len;
			r->send_wants_read =
			    gnutls_record_get_direction(c->tls) == 0;
			return STEP_OK;
		}
		r->send_pending = 0;
		if (n < 0)
			return relay_fail(c, "upstream_error", 0, (int)n);
		r->bytes_up += (uint64_t)n;
		buf_consumed(c, b, (size_t)n);
		relay_activity(c);
	}
	if (!r->client_eof || r->c2u_done)
		return STEP_OK;
	rc = gnutls_bye(c->tls, GNUTLS_SHUT_WR);
	if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED) {
		r->bye_pending = true;
		r->bye_wants_read = gnutls_record_get_direction(c->tls) == 0;
		return STEP_OK;
	}
	r->bye_pending = false;
	/*
	 * A failed close_notify to an upstream that already left is no loss;
	 * to one still talking, it is.
	 */
	if (rc < 0 && !r->upstream_eof)
		return relay_fail(c, "upstream_error", 0, rc);
	(void)shutdown(c->ufd, SHUT_WR);
	r->c2u_done = true;
	r->bytes_down_at_bye = r->bytes_down;
	return relay_check_done(c);
}

/* Upstream -> client: writes the held record; FIN after the upstream's end. */
static enum step
u2c_flush(struct conn *c)
{
	struct relay *r = &c->relay;
	ssize_t n;

	while (u2c_held(r)) {
		n = send(c->cfd, r->u2c_data.data + r->u2c_off,
		    r->u2c_data.size - r->u2c_off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return STEP_OK;
		if (n < 0)
			return relay_fail(c, "client_error", errno, 0);
		r->bytes_down += (uint64_t)n;
		r->u2c_off += (uint32_t)n;
		if (r->u2c_off == r->u2c_data.size)
			u2c_release(r);
		relay_activity(c);
	}
	if (r->upstream_eof && !r->u2c_done) {
		(void)shutdown(c->cfd, SHUT_WR);
		r->u2c_done = true;
		return relay_check_done(c);
	}
	return STEP_OK;
}

/*
 * Takes the next decrypted record from the upstream, unless one is still
 * held, the socket is dry, or the upstream ended. Called again whenever the
 * client took a record, because GnuTLS may hold decrypted bytes that no fd
 * event will announce.
 */
static enum step
u2c_fill(struct conn *c)
{
	struct relay *r = &c->relay;
	gnutls_packet_t pkt;
	ssize_t n;

	r->recv_wants_write = false;
	while (!r->upstream_eof && !u2c_held(r)) {
		pkt = NULL;
		n = gnutls_record_recv_packet(c->tls, &pkt);
		if (c->verdict_pending && (n > 0 || c->tlsc.upstream_spoke))
			conn_handshake_confirmed(c);
		if (n > 0) {
			r->u2c_pkt = pkt;
			r->u2c_off = 0;
			gnutls_packet_get(pkt, &r->u2c_data, NULL);
			r->u2c_dry = false;
			relay_activity(c);
			continue;
		}
		if (pkt != NULL)
			gnutls_packet_deinit(pkt);
		/*
		 * An end without an alert after our Finished is no refusal:
		 * a refusing TLS 1.3 server says why. (slapd answers our
		 * close_notify with its own, and sends no ticket first.)
		 */
		if (c->verdict_pending && (n == 0 ||
		    n == GNUTLS_E_PREMATURE_TERMINATION))
			conn_handshake_confirmed(c);
		switch (n) {
		case 0:				/* close_notify */
			r->upstream_eof = true;
			break;
		case GNUTLS_E_PREMATURE_TERMINATION:	/* EOF, no close_notify */
			r->upstream_eof = true;
			r->upstream_no_close_notify = true;
			/*
			 * Truncation can only take bytes a client is still
			 * waiting for. Once the client has finished (our
			 * close_notify is out) and nothing came after that,
			 * it had all it asked for before it closed: an
			 * upstream that hangs up then (Redis, nginx, health
			 * checks) lost nothing. Bytes after the client's end
			 * (a response read to EOF), or an end while the client
			 * still sends, may have been cut short.
			 */
			r->upstream_truncated = !(r->c2u_done &&
			    r->bytes_down == r->bytes_down_at_bye);
			break;
		case GNUTLS_E_AGAIN:
			r->u2c_dry = true;
			r->recv_wants_write =
			    gnutls_record_get_direction(c->tls) == 1;
			return STEP_OK;
		case GNUTLS_E_INTERRUPTED:
		case GNUTLS_E_REHANDSHAKE:	/* declined by not answering */
		case GNUTLS_E_WARNING_ALERT_RECEIVED:
			continue;
		default:
			if (!gnutls_error_is_fatal((int)n))
				continue;
			return relay_fail(c, "upstream_error", 0, (int)n);
		}
	}
	return STEP_OK;
}

/* Reads the client into the c2u buffer until full, dry or EOF. */
static enum step
c2u_fill(struct conn *c)
{
	struct relay *r = &c->relay;
	struct relay_buf *b = &r->c2u;
	ssize_t n;

	r->c2u_dry = false;
	while (!r->client_eof && !buf_full(b)) {
		if (buf_reserve(c, b) != 0)
			return relay_fail(c, "client_error", ENOMEM, 0);
		n = recv(c->cfd, b->data + b->tail, RELAY_BUF_SIZE - b->tail,
		    0);
		if (n > 0) {
			b->tail += (uint32_t)n;
			relay_activity(c);
			/* A short read means the socket is dry. */
			if ((size_t)n < RELAY_BUF_SIZE - (b->tail - (size_t)n)) {
				r->c2u_dry = true;
				break;
			}
			continue;
		}
		if (n == 0) {
			r->client_eof = true;
			break;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			r->c2u_dry = true;
			break;
		}
		return relay_fail(c, "client_error", errno, 0);
	}
	if (buf_empty(b))
		buf_consumed(c, b, 0);
	return STEP_OK;
}

/*
 * Upstream side: decrypt and deliver, record by record, while the client
 * takes them and the upstream has more (a few per event), then any send
 * waiting on it.
 */
static enum step
relay_pump_u2c(struct conn *c)
{
	struct relay *r = &c->relay;

	for (int i = 0; i < U2C_RECORDS_PER_EVENT; i++) {
		if (u2c_fill(c) == STEP_CLOSED || u2c_flush(c) == STEP_CLOSED)
			return STEP_CLOSED;
		if (r->upstream_eof || u2c_held(r) || r->recv_wants_write)
			break;
		/* Dry socket: go on only for bytes GnuTLS already holds. */
		if (r->u2c_dry && !upstream_pending(c))
			break;
	}
	return STEP_OK;
}

void
relay_start(struct conn *c)
{
	conn_set_state(c, CONN_RELAYING);
	/* The upstream may have sent data along with its last handshake flight. */
	if (relay_pump_u2c(c) == STEP_CLOSED)
		return;
	relay_arm(c);
}

/*
 * Fired by c_rd: the client sent bytes or FIN. A few buffers per event while
 * the client has more and the upstream takes it all, so that a fast upload
 * costs one poll per C2U_BUFS_PER_EVENT buffers, not one per buffer.
 */
void
relay_on_client_readable(struct conn *c)
{
	struct relay *r = &c->relay;

	for (int i = 0; i < C2U_BUFS_PER_EVENT; i++) {
		if (c2u_fill(c) == STEP_CLOSED || c2u_flush(c) == STEP_CLOSED)
			return;
		if (r->client_eof || r->c2u_dry || !buf_empty(&r->c2u) ||
		    r->send_pending > 0)
			break;
	}
	relay_arm(c);
}

/* Fired by c_wr: the client can take more of the upstream's bytes. */
void
relay_on_client_writable(struct conn *c)
{
	if (u2c_flush(c) == STEP_CLOSED)
		return;
	if (!c->relay.upstream_eof && !u2c_held(&c->relay) &&
	    upstream_pending(c) && relay_pump_u2c(c) == STEP_CLOSED)
		return;
	relay_arm(c);
}

/* Fired by u_rd: upstream records arrived, or a send/bye waits on input. */
void
relay_on_upstream_readable(struct conn *c)
{
	struct relay *r = &c->relay;

	if (!r->recv_wants_write && relay_pump_u2c(c) == STEP_CLOSED)
		return;
	if (((r->send_pending > 0 && r->send_wants_read) ||
	    (r->bye_pending && r->bye_wants_read)) &&
	    c2u_flush(c) == STEP_CLOSED)
		return;
	relay_arm(c);
}

/* Fired by u_wr: a send or bye can go on, or a recv waits to write. */
void
relay_on_upstream_writable(struct conn *c)
{
	struct relay *r = &c->relay;

	if ((r->send_pending > 0 || r->bye_pending) &&
	    c2u_flush(c) == STEP_CLOSED)
		return;
	if (r->recv_wants_write && relay_pump_u2c(c) == STEP_CLOSED)
		return;
	relay_arm(c);
}
