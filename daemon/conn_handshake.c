/*
 * conn_handshake.c - a connection's TLS: the session over the upstream
 * socket, the non-blocking handshake (the GnuTLS twin of SSL_connect() with
 * WANT_READ/WRITE), the service's policy on the result, and the TLS 1.3
 * verdict on our client certificate.
 */
#include <errno.h>
#include <string.h>

#include "conn_priv.h"
#include "log.h"
#include "tls_policy.h"

/* ----- upstream transport for GnuTLS: records errno for the log ----- */

/*
 * Keep the last real error for the log; EAGAIN is routine and must not
 * masquerade as the cause of a later EOF.
 */
static void
conn_note_io_errno(struct conn *c, int err)
{
	gnutls_transport_set_errno(c->tls, err);
	if (err != EAGAIN && err != EWOULDBLOCK)
		c->io_errno = err;
}

static ssize_t
conn_tls_pull(gnutls_transport_ptr_t ptr, void *buf, size_t len)
{
	struct conn *c = ptr;
	ssize_t n = relay_upstream_pull(&c->relay, c->ufd, buf, len);

	if (n < 0)
		conn_note_io_errno(c, errno);
	return n;
}

static ssize_t
conn_tls_push(gnutls_transport_ptr_t ptr, const giovec_t *iov, int iovcnt)
{
	struct conn *c = ptr;
	ssize_t n = relay_upstream_push(&c->relay, c->ufd, iov, iovcnt);

	if (n < 0)
		conn_note_io_errno(c, errno);
	return n;
}

/* See conn_priv.h. */
bool
conn_note_tls_error(struct conn *c, int rc)
{
	c->err.gnutls_rc = rc;
	if (rc == GNUTLS_E_FATAL_ALERT_RECEIVED) {
		tls_alert_name((int)gnutls_alert_get(c->tls), c->err.alert,
		    sizeof(c->err.alert));
		return true;
	}
	/* GnuTLS turns a send() ECONNRESET into PREMATURE_TERMINATION. */
	if (rc == GNUTLS_E_PUSH_ERROR || rc == GNUTLS_E_PULL_ERROR ||
	    rc == GNUTLS_E_PREMATURE_TERMINATION)
		c->err.sys_errno = c->io_errno;
	return false;
}

/* ----- the verdict on our client certificate (TLS 1.3) ----- */

/*
 * An upstream error while its verdict is awaited: the verdict may still be
 * there to read. A server that refuses sends its alert and closes while our
 * first record is in flight, so our send meets a reset; the alert sits before
 * it in the socket (or in what we read ahead). Reads every record still
 * readable, then decides from what the upstream sent: an alert is a refusal,
 * a record, a ticket or a close_notify an acceptance; nothing at all leaves
 * the error as the cause. True if the verdict was yes.
 */
bool
conn_verdict_from_leftovers(struct conn *c, int *gnutls_rc)
{
	gnutls_packet_t pkt;
	ssize_t n;

	if (*gnutls_rc == GNUTLS_E_FATAL_ALERT_RECEIVED)
		return false;
	relay_upstream_readable(&c->relay);	/* ask the kernel, even if dry */
	for (int i = 0; i < 64 && !c->tlsc.upstream_spoke; i++) {
		pkt = NULL;
		n = gnutls_record_recv_packet(c->tls, &pkt);
		if (pkt != NULL)
			gnutls_packet_deinit(pkt);
		if (n >= 0)
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

/* ----- handshake ----- */

static void
conn_handshake_failed(struct conn *c, int rc)
{
	enum conn_stage stage = STAGE_HANDSHAKE;
	enum conn_result result = RESULT_FAIL;
	enum conn_alert_from from = ALERT_NONE;
	const char *text = NULL;
	int level, alert;

	if (conn_note_tls_error(c, rc)) {
		result = RESULT_ALERT;
		from = ALERT_FROM_UPSTREAM;
	} else if (c->tlsc.verify_failed) {
		/* Our verification callback said no, and why. */
		stage = STAGE_VERIFY;
		text = c->tlsc.error != NULL ? c->tlsc.error :
		    "certificate verification failed";
	}
	/*
	 * Tell the upstream why we give up, when the protocol has words for
	 * it (a verification failure is bad_certificate). Best effort: the
	 * socket is non-blocking and we close right after.
	 */
	if (from == ALERT_NONE && !tls_error_is_transport(rc) &&
	    (alert = gnutls_error_to_alert(rc, &level)) >= 0 &&
	    level == GNUTLS_AL_FATAL &&
	    gnutls_alert_send(c->tls, GNUTLS_AL_FATAL,
	    (gnutls_alert_description_t)alert) == 0) {
		tls_alert_name(alert, c->err.alert, sizeof(c->err.alert));
		if (stage != STAGE_VERIFY) {
			result = RESULT_ALERT;
			from = ALERT_FROM_TLSFWD;
		}
	}
	conn_fail_handshake(c, result, stage, from, text);
}

/* The handshake succeeded: policy checks, then the relay starts. */
static void
conn_handshake_done(struct conn *c)
{
	gnutls_alert_description_t alert;
	struct relay_ends ends = {
		.cfd = c->cfd, .ufd = c->ufd, .tls = c->tls,
		.c_rd = &c->c_rd, .c_wr = &c->c_wr,
		.u_rd = &c->u_rd, .u_wr = &c->u_wr,
	};
	const char *why;

	/* The protocol said yes; the service may still require more of it. */
	why = tls_policy_check_established(c->tls, c->svc->sc, &alert);
	if (why != NULL) {
		(void)gnutls_alert_send(c->tls, GNUTLS_AL_FATAL, alert);
		tls_alert_name((int)alert, c->err.alert, sizeof(c->err.alert));
		conn_fail_handshake(c, RESULT_FAIL, STAGE_HANDSHAKE,
		    ALERT_NONE, why);
		return;
	}
	tls_session_established(c->tls, &c->tlsc);
	c->t_established = conn_now_ms();
	if (c->pooled) {
		/* Waits for a client. Our certificate asked for in TLS 1.3:
		 * the verdict may come while it waits (or after, as above). */
		c->verdict_wait = gnutls_protocol_get_version(c->tls) ==
		    GNUTLS_TLS1_3 &&
		    gnutls_certificate_client_get_request_status(c->tls);
		conn_set_state(c, CONN_POOLED);
		pool_conn_ready(&c->svc->pool, c);
		ev_io_start(c->srv->loop, &c->u_rd);
		/* What came with the last flight announces itself to no one. */
		if (relay_upstream_buffered(&c->relay) > 0 ||
		    gnutls_record_check_pending(c->tls) > 0)
			ev_feed_event(c->srv->loop, &c->u_rd, EV_READ);
		return;
	}
	/*
	 * In TLS 1.3 our Finished ends our handshake before the upstream has
	 * judged the client certificate it asked for: its verdict is its
	 * next record. Relay meanwhile (no upstream byte can come first).
	 */
	if (gnutls_protocol_get_version(c->tls) == GNUTLS_TLS1_3 &&
	    gnutls_certificate_client_get_request_status(c->tls)) {
		conn_set_state(c, CONN_AWAITING_VERDICT);
	} else {
		conn_log_handshake_ok(c);
		conn_set_state(c, CONN_RELAYING);
	}
	conn_on_relay(c, relay_start(&c->relay, &ends));
}

/*
 * Drives gnutls_handshake(): on GNUTLS_E_AGAIN/INTERRUPTED it waits for
 * whichever readiness gnutls_record_get_direction() names, like
 * SSL_connect() with SSL_ERROR_WANT_READ/WRITE; called again from that
 * watcher.
 */
void
conn_handshake_step(struct conn *c)
{
	struct ev_loop *loop = c->srv->loop;
	char err[256];
	int rc;

	if (c->tls == NULL) {
		c->tlsc.sc = c->svc->sc;
		c->tlsc.t = &c->svc->tls;
		c->tlsc.target = c->svc->upstream.entries[c->entry].cfg;
		c->tlsc.entry = (unsigned int)c->entry;
		c->tlsc.addr = c->upstream;
		if (tls_session_new(&c->tls, &c->tlsc, err,
		    sizeof(err)) != 0) {
			conn_fail_handshake(c, RESULT_FAIL, STAGE_HANDSHAKE,
			    ALERT_NONE, err);
			return;
		}
		gnutls_transport_set_ptr(c->tls, c);
		gnutls_transport_set_pull_function(c->tls, conn_tls_pull);
		gnutls_transport_set_vec_push_function(c->tls, conn_tls_push);
	}
	for (;;) {
		size_t ahead = relay_upstream_buffered(&c->relay);

		rc = gnutls_handshake(c->tls);
		if (rc == GNUTLS_E_SUCCESS) {
			ev_io_stop(loop, &c->u_rd);
			ev_io_stop(loop, &c->u_wr);
			conn_handshake_done(c);
			return;
		}
		if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED) {
			/*
			 * GnuTLS returns AGAIN after each record of a handshake
			 * message that spans several (a large Certificate),
			 * also when the rest is already read ahead: no fd event
			 * will announce those bytes, so go on while it takes
			 * them (it took some: no spinning).
			 */
			if (gnutls_record_get_direction(c->tls) == 0 &&
			    relay_upstream_buffered(&c->relay) > 0 &&
			    relay_upstream_buffered(&c->relay) != ahead)
				continue;
			if (gnutls_record_get_direction(c->tls) == 0) {
				ev_io_stop(loop, &c->u_wr);
				ev_io_start(loop, &c->u_rd);
			} else {
				ev_io_stop(loop, &c->u_rd);
				ev_io_start(loop, &c->u_wr);
			}
			return;
		}
		/* A warning alert (e.g. unrecognized_name) is not the end. */
		if (!gnutls_error_is_fatal(rc))
			continue;
		conn_handshake_failed(c, rc);
		return;
	}
}
