/* relay.c - the byte pump: buffers, backpressure, half-close (see relay.h). */
#include "relay.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* Results of one step of moving bytes: go on, or stop with the relay over. */
enum step { STEP_OK, STEP_DONE, STEP_FAILED };

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
buf_reserve(struct relay *r, struct relay_buf *b)
{
	struct relay_spares *sp = r->spares;

	if (b->data != NULL)
		return 0;
	if (sp->n > 0)
		b->data = sp->bufs[--sp->n];
	else if ((b->data = malloc(RELAY_BUF_SIZE)) == NULL)
		return -1;
	return 0;
}

static void
buf_release(struct relay *r, struct relay_buf *b)
{
	struct relay_spares *sp = r->spares;

	if (b->data != NULL && sp->n < RELAY_SPARES_MAX)
		sp->bufs[sp->n++] = b->data;
	else
		free(b->data);
	b->data = NULL;
	b->head = b->tail = 0;
}

static void
buf_consumed(struct relay *r, struct relay_buf *b, size_t n)
{
	b->head += (uint32_t)n;
	if (b->head == b->tail)
		buf_release(r, b);
}

/* Upstream bytes that no fd event will announce: in GnuTLS or read ahead. */
static bool
upstream_pending(struct relay *r)
{
	return gnutls_record_check_pending(r->io.tls) > 0 || !buf_empty(&r->rx);
}

/* Upstream bytes are waiting for the client: pooled ones, or a record. */
static bool
u2c_held(const struct relay *r)
{
	return r->u2c_pkt != NULL || r->pre.data != NULL;
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
relay_init(struct relay *r, struct ev_loop *loop, struct relay_spares *spares)
{
	memset(r, 0, sizeof(*r));
	r->loop = loop;
	r->spares = spares;
	r->io.cfd = r->io.ufd = -1;
}

void
relay_free(struct relay *r)
{
	buf_release(r, &r->c2u);
	buf_release(r, &r->rx);
	buf_release(r, &r->pre);
	u2c_release(r);
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
rx_take(struct relay *r, void *buf, size_t len)
{
	struct relay_buf *b = &r->rx;
	size_t avail = b->tail - b->head;

	if (len > avail)
		len = avail;
	memcpy(buf, b->data + b->head, len);
	buf_consumed(r, b, len);
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
relay_upstream_pull(struct relay *r, int fd, void *buf, size_t len)
{
	struct relay_buf *b = &r->rx;
	ssize_t n;

	if (!buf_empty(b))
		return rx_take(r, buf, len);
	if (r->rx_dry) {
		errno = EAGAIN;
		return -1;
	}
	if (len >= RX_READ_AHEAD_BELOW || r->rx_bulk) {
		n = recv_retrying(fd, buf, len);
		if (n >= 0 && (size_t)n < len) {
			r->rx_dry = n > 0;
			r->rx_bulk = false;
		}
		return n;
	}
	if (buf_reserve(r, b) != 0) {
		errno = ENOMEM;
		return -1;
	}
	n = recv_retrying(fd, b->data, RELAY_BUF_SIZE);
	if (n <= 0) {
		int saved_errno = errno;	/* for the caller, past free() */

		buf_release(r, b);
		errno = saved_errno;
		return n;
	}
	r->rx_dry = (size_t)n < RELAY_BUF_SIZE;
	r->rx_bulk = !r->rx_dry;
	b->tail = (uint32_t)n;
	return rx_take(r, buf, len);
}

ssize_t
relay_upstream_push(struct relay *r, int fd, const giovec_t *iov, int iovcnt)
{
	struct msghdr msg;
	ssize_t n;

	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = (struct iovec *)(uintptr_t)iov;
	msg.msg_iovlen = (size_t)iovcnt;
	do {
		n = sendmsg(fd, &msg, MSG_NOSIGNAL |
		    (r->push_more ? MSG_MORE : 0));
	} while (n < 0 && errno == EINTR);
	return n;
}

void
relay_upstream_readable(struct relay *r)
{
	r->rx_dry = false;
}

size_t
relay_upstream_buffered(const struct relay *r)
{
	return r->rx.tail - r->rx.head;
}

void
relay_upstream_reset(struct relay *r)
{
	buf_release(r, &r->rx);
	r->rx_dry = false;
	r->rx_bulk = false;
}

void
relay_spares_free(struct relay_spares *sp)
{
	while (sp->n > 0)
		free(sp->bufs[--sp->n]);
}

static void
relay_activity(struct relay *r)
{
	r->last_activity = ev_now(r->loop);
}

/* Records a fatal error from a side; the caller stops at once. */
static enum step
relay_fail(struct relay *r, enum relay_side side, int sys_errno, int gnutls_rc)
{
	r->fail.side = side;
	r->fail.sys_errno = sys_errno;
	r->fail.gnutls_rc = gnutls_rc;
	return STEP_FAILED;
}

static bool
wants_read(enum relay_wait w)
{
	return w == RELAY_WAIT_READ;
}

/* The readiness GnuTLS's last unfinished call waits for. */
static enum relay_wait
tls_wait(gnutls_session_t tls)
{
	return gnutls_record_get_direction(tls) == 0 ? RELAY_WAIT_READ :
	    RELAY_WAIT_WRITE;
}

/*
 * Arms exactly the watchers for what is still waiting; this is where
 * backpressure happens: a side is read only while its buffer has room.
 */
static void
relay_arm(struct relay *r)
{
	struct ev_loop *loop = r->loop;
	bool c_rd, c_wr, u_rd = false, u_wr = false;

	c_rd = r->c2u_end == RELAY_OPEN && !buf_full(&r->c2u);
	c_wr = u2c_held(r);
	if (r->u2c_end == RELAY_OPEN && !u2c_held(r)) {
		if (r->recv_wait == RELAY_WAIT_WRITE)
			u_wr = true;
		else
			u_rd = true;
	}
	if (r->send_len > 0 || r->bye_wait != RELAY_NO_WAIT) {
		if (wants_read(r->send_len > 0 ? r->send_wait : r->bye_wait))
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
	ARM(r->io.c_rd, c_rd);
	ARM(r->io.c_wr, c_wr);
	ARM(r->io.u_rd, u_rd);
	ARM(r->io.u_wr, u_wr);
#undef ARM
	/*
	 * Bytes read ahead announce themselves to no one: the socket they came
	 * from may be empty now. Make u_rd fire for them in the next loop
	 * iteration, as the kernel would have for bytes left in the socket.
	 */
	if (u_rd && !buf_empty(&r->rx))
		ev_feed_event(loop, r->io.u_rd, EV_READ);
}

/* Where the directions stand, after a pass that did not stop. */
static enum relay_event
relay_status(const struct relay *r)
{
	if (r->c2u_end == RELAY_END_FORWARDED ||
	    r->u2c_end == RELAY_END_FORWARDED)
		return RELAY_HALF_CLOSED;
	return RELAY_WAIT;
}

/* The end of an entry point: a stop, or the watchers armed for more. */
static enum relay_event
relay_finish(struct relay *r, enum step s)
{
	switch (s) {
	case STEP_DONE:
		return RELAY_DONE;
	case STEP_FAILED:
		return RELAY_FAILED;
	case STEP_OK:
		break;
	}
	relay_arm(r);
	return relay_status(r);
}

/* Both directions over: the relay is done. */
static enum step
relay_check_done(const struct relay *r)
{
	return r->c2u_end == RELAY_END_FORWARDED &&
	    r->u2c_end == RELAY_END_FORWARDED ? STEP_DONE : STEP_OK;
}

/*
 * Client -> upstream: sends what is buffered, then, once the client has sent
 * FIN and everything is out, a close_notify (gnutls_bye SHUT_WR) and a TCP
 * FIN, keeping the upstream's direction open.
 */
static enum step
c2u_flush(struct relay *r)
{
	gnutls_session_t tls = r->io.tls;
	struct relay_buf *b = &r->c2u;
	ssize_t n;
	int rc;

	while (!buf_empty(b)) {
		size_t avail = b->tail - b->head;
		/* After GNUTLS_E_AGAIN, GnuTLS wants the same call again. */
		size_t len = r->send_len > 0 ? r->send_len :
		    avail < RELAY_RECORD_MAX ? avail : RELAY_RECORD_MAX;

		/*
		 * One record per call; all but the buffer's last go out with
		 * MSG_MORE, so the kernel sends them together as the last one
		 * leaves (or as ACKs come back, should the socket fill first).
		 */
		r->push_more = avail > len;
		n = gnutls_record_send(tls, b->data + b->head, len);
		r->push_more = false;
		if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
			r->send_len = (uint32_t)len;
			r->send_wait = tls_wait(tls);
			return STEP_OK;
		}
		r->send_len = 0;
		r->send_wait = RELAY_NO_WAIT;
		if (n < 0)
			return relay_fail(r, RELAY_UPSTREAM, 0, (int)n);
		r->bytes_up += (uint64_t)n;
		buf_consumed(r, b, (size_t)n);
		relay_activity(r);
	}
	if (r->c2u_end != RELAY_END_READ)
		return STEP_OK;
	rc = gnutls_bye(tls, GNUTLS_SHUT_WR);
	if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED) {
		r->bye_wait = tls_wait(tls);
		return STEP_OK;
	}
	r->bye_wait = RELAY_NO_WAIT;
	/*
	 * A failed close_notify to an upstream that already left is no loss;
	 * to one still talking, it is.
	 */
	if (rc < 0 && r->u2c_end == RELAY_OPEN)
		return relay_fail(r, RELAY_UPSTREAM, 0, rc);
	(void)shutdown(r->io.ufd, SHUT_WR);
	r->c2u_end = RELAY_END_FORWARDED;
	r->bytes_down_at_bye = r->bytes_down;
	return relay_check_done(r);
}

/* Upstream -> client: writes the held record; FIN after the upstream's end. */
static enum step
u2c_flush(struct relay *r)
{
	struct relay_buf *pre = &r->pre;
	ssize_t n;

	while (u2c_held(r)) {
		/* Bytes of the pool wait come first: they were sent first. */
		if (pre->data != NULL)
			n = send(r->io.cfd, pre->data + pre->head,
			    pre->tail - pre->head, MSG_NOSIGNAL);
		else
			n = send(r->io.cfd, r->u2c_data.data + r->u2c_off,
			    r->u2c_data.size - r->u2c_off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return STEP_OK;
		if (n < 0)
			return relay_fail(r, RELAY_CLIENT, errno, 0);
		r->bytes_down += (uint64_t)n;
		if (pre->data != NULL) {
			buf_consumed(r, pre, (size_t)n);
		} else {
			r->u2c_off += (uint32_t)n;
			if (r->u2c_off == r->u2c_data.size)
				u2c_release(r);
		}
		relay_activity(r);
	}
	if (r->u2c_end == RELAY_END_READ) {
		(void)shutdown(r->io.cfd, SHUT_WR);
		r->u2c_end = RELAY_END_FORWARDED;
		return relay_check_done(r);
	}
	return STEP_OK;
}

/*
 * The upstream ended its direction without a close_notify. Truncation can
 * only take bytes a client is still waiting for. Once the client has
 * finished (our close_notify is out) and nothing came after that, it had all
 * it asked for before it closed: an upstream that hangs up then (Redis,
 * nginx, health checks) lost nothing. Bytes after the client's end (a
 * response read to EOF), or an end while the client still sends, may have
 * been cut short.
 */
static enum relay_upstream_close
upstream_eof_kind(const struct relay *r)
{
	return r->c2u_end == RELAY_END_FORWARDED &&
	    r->bytes_down == r->bytes_down_at_bye ?
	    RELAY_CLOSE_EOF_HARMLESS : RELAY_CLOSE_EOF_TRUNCATED;
}

/*
 * Takes the next decrypted record from the upstream, unless one is still
 * held, the socket is dry, or the upstream ended. Called again whenever the
 * client took a record, because GnuTLS may hold decrypted bytes that no fd
 * event will announce.
 */
static enum step
u2c_fill(struct relay *r)
{
	gnutls_packet_t pkt;
	ssize_t n;

	r->recv_wait = RELAY_NO_WAIT;
	while (r->u2c_end == RELAY_OPEN && !u2c_held(r)) {
		pkt = NULL;
		n = gnutls_record_recv_packet(r->io.tls, &pkt);
		if (n > 0) {
			r->u2c_pkt = pkt;
			r->u2c_off = 0;
			gnutls_packet_get(pkt, &r->u2c_data, NULL);
			r->u2c_dry = false;
			r->upstream_spoke = true;
			relay_activity(r);
			continue;
		}
		if (pkt != NULL)
			gnutls_packet_deinit(pkt);
		switch (n) {
		case 0:				/* close_notify */
			r->u2c_end = RELAY_END_READ;
			r->upstream_spoke = true;
			break;
		case GNUTLS_E_PREMATURE_TERMINATION:	/* EOF, no close_notify */
			r->u2c_end = RELAY_END_READ;
			r->upstream_spoke = true;
			r->upstream_close = upstream_eof_kind(r);
			break;
		case GNUTLS_E_AGAIN:
			r->u2c_dry = true;
			if (gnutls_record_get_direction(r->io.tls) == 1)
				r->recv_wait = RELAY_WAIT_WRITE;
			return STEP_OK;
		case GNUTLS_E_INTERRUPTED:
		case GNUTLS_E_REHANDSHAKE:	/* declined by not answering */
		case GNUTLS_E_WARNING_ALERT_RECEIVED:
			continue;
		default:
			if (!gnutls_error_is_fatal((int)n))
				continue;
			return relay_fail(r, RELAY_UPSTREAM, 0, (int)n);
		}
	}
	return STEP_OK;
}

/* Reads the client into the c2u buffer until full, dry or EOF. */
static enum step
c2u_fill(struct relay *r)
{
	struct relay_buf *b = &r->c2u;
	ssize_t n;

	r->c2u_dry = false;
	while (r->c2u_end == RELAY_OPEN && !buf_full(b)) {
		if (buf_reserve(r, b) != 0)
			return relay_fail(r, RELAY_CLIENT, ENOMEM, 0);
		n = recv(r->io.cfd, b->data + b->tail,
		    RELAY_BUF_SIZE - b->tail, 0);
		if (n > 0) {
			b->tail += (uint32_t)n;
			relay_activity(r);
			/* A short read means the socket is dry. */
			if ((size_t)n < RELAY_BUF_SIZE - (b->tail - (size_t)n)) {
				r->c2u_dry = true;
				break;
			}
			continue;
		}
		if (n == 0) {
			r->c2u_end = RELAY_END_READ;
			break;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			r->c2u_dry = true;
			break;
		}
		return relay_fail(r, RELAY_CLIENT, errno, 0);
	}
	if (buf_empty(b))
		buf_consumed(r, b, 0);
	return STEP_OK;
}

/*
 * Upstream side: decrypt and deliver, record by record, while the client
 * takes them and the upstream has more (a few per event), then any send
 * waiting on it.
 */
static enum step
relay_pump_u2c(struct relay *r)
{
	enum step s;

	for (int i = 0; i < U2C_RECORDS_PER_EVENT; i++) {
		if ((s = u2c_fill(r)) != STEP_OK || (s = u2c_flush(r)) != STEP_OK)
			return s;
		if (r->u2c_end != RELAY_OPEN || u2c_held(r) ||
		    r->recv_wait != RELAY_NO_WAIT)
			break;
		/* Dry socket: go on only for bytes GnuTLS already holds. */
		if (r->u2c_dry && !upstream_pending(r))
			break;
	}
	return STEP_OK;
}

enum relay_event
relay_pooled_read(struct relay *r, gnutls_session_t tls)
{
	struct relay_buf *b = &r->pre;
	ssize_t n;

	for (;;) {
		if (buf_reserve(r, b) != 0) {
			(void)relay_fail(r, RELAY_UPSTREAM, ENOMEM, 0);
			return RELAY_FAILED;
		}
		if (b->tail == RELAY_BUF_SIZE) {
			(void)relay_fail(r, RELAY_UPSTREAM, ENOBUFS, 0);
			return RELAY_FAILED;
		}
		n = gnutls_record_recv(tls, b->data + b->tail,
		    RELAY_BUF_SIZE - b->tail);
		if (n > 0) {
			b->tail += (uint32_t)n;
			r->upstream_spoke = true;
			continue;
		}
		if (n == 0 || n == GNUTLS_E_PREMATURE_TERMINATION)
			return RELAY_DONE;
		if (n == GNUTLS_E_AGAIN)
			break;
		if (n == GNUTLS_E_INTERRUPTED || n == GNUTLS_E_REHANDSHAKE ||
		    !gnutls_error_is_fatal((int)n))
			continue;
		(void)relay_fail(r, RELAY_UPSTREAM, 0, (int)n);
		return RELAY_FAILED;
	}
	if (buf_empty(b))
		buf_release(r, b);	/* nothing came: no buffer held */
	return RELAY_WAIT;
}

enum relay_event
relay_start(struct relay *r, const struct relay_ends *ends)
{
	r->io = *ends;
	relay_activity(r);
	/* The upstream may have sent data along with its last handshake flight. */
	return relay_finish(r, relay_pump_u2c(r));
}

/*
 * Fired by c_rd: the client sent bytes or FIN. A few buffers per event while
 * the client has more and the upstream takes it all, so that a fast upload
 * costs one poll per C2U_BUFS_PER_EVENT buffers, not one per buffer.
 */
enum relay_event
relay_on_client_readable(struct relay *r)
{
	enum step s = STEP_OK;

	for (int i = 0; i < C2U_BUFS_PER_EVENT; i++) {
		if ((s = c2u_fill(r)) != STEP_OK || (s = c2u_flush(r)) != STEP_OK)
			break;
		if (r->c2u_end != RELAY_OPEN || r->c2u_dry ||
		    !buf_empty(&r->c2u) || r->send_len > 0)
			break;
	}
	return relay_finish(r, s);
}

/* Fired by c_wr: the client can take more of the upstream's bytes. */
enum relay_event
relay_on_client_writable(struct relay *r)
{
	enum step s = u2c_flush(r);

	if (s == STEP_OK && r->u2c_end == RELAY_OPEN && !u2c_held(r) &&
	    upstream_pending(r))
		s = relay_pump_u2c(r);
	return relay_finish(r, s);
}

/* Fired by u_rd: upstream records arrived, or a send/bye waits on input. */
enum relay_event
relay_on_upstream_readable(struct relay *r)
{
	enum step s = STEP_OK;

	if (r->recv_wait == RELAY_NO_WAIT)
		s = relay_pump_u2c(r);
	if (s == STEP_OK && ((r->send_len > 0 && wants_read(r->send_wait)) ||
	    wants_read(r->bye_wait)))
		s = c2u_flush(r);
	return relay_finish(r, s);
}

/* Fired by u_wr: a send or bye can go on, or a recv waits to write. */
enum relay_event
relay_on_upstream_writable(struct relay *r)
{
	enum step s = STEP_OK;

	if (r->send_len > 0 || r->bye_wait != RELAY_NO_WAIT)
		s = c2u_flush(r);
	if (s == STEP_OK && r->recv_wait == RELAY_WAIT_WRITE)
		s = relay_pump_u2c(r);
	return relay_finish(r, s);
}
