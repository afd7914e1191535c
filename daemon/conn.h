/*
 * conn.h - one proxied connection: its life from accept to close, the
 * connect-and-handshake engine, and the one handshake and close line each.
 */
#ifndef TLSFWD_CONN_H
#define TLSFWD_CONN_H

#include <stdbool.h>
#include <sys/socket.h>

#include "relay.h"

struct conn;
struct service;

/*
 * The states, in the order a connection goes through them (see the table
 * at the top of conn.c for what enters each, and each state's timer).
 */
enum conn_state {
	CONN_RESOLVING,		/* waiting for the upstream's addresses */
	CONN_CONNECTING,	/* non-blocking connect() to an upstream address */
	CONN_PROXY_TUNNEL,	/* via: CONNECT sent, the proxy's answer awaited */
	CONN_HANDSHAKING,	/* gnutls_handshake() until done or failed */
	CONN_POOLED,		/* verified, no client yet: waiting in the pool */
	CONN_AWAITING_VERDICT,	/* relaying; TLS 1.3 upstream judging our cert */
	CONN_RELAYING,		/* bytes both ways */
	CONN_SHUTTING_DOWN,	/* one direction finished, the other going on */
	CONN_CLOSED,
};

/* Where the set-up failed: the handshake line's stage=. */
enum conn_stage {
	STAGE_RESOLVE,
	STAGE_CONNECT,
	STAGE_TIMEOUT,
	STAGE_HANDSHAKE,
	STAGE_VERIFY,
	STAGE_PROXY,		/* the CONNECT proxy refused or failed (via) */
};
#define CONN_STAGES	(STAGE_PROXY + 1)

/* The handshake line's result=: the three outcomes, kept apart. */
enum conn_result { RESULT_OK, RESULT_ALERT, RESULT_FAIL };
#define CONN_RESULTS	(RESULT_FAIL + 1)

/* Why a connection ended: the close line's reason=. */
enum conn_close_reason {
	CLOSE_DONE,		/* both directions ended cleanly */
	CLOSE_UPSTREAM_TRUNCATED,	/* EOF without close_notify that may cut data */
	CLOSE_HANDSHAKE_FAILED,	/* resolve, connect, handshake or verify */
	CLOSE_IDLE_TIMEOUT,
	CLOSE_CLIENT_ERROR,
	CLOSE_UPSTREAM_ERROR,
	CLOSE_UPSTREAM_ALERT,
	CLOSE_SHUTDOWN,		/* tlsfwd stopping, drain time over */
};
#define CONN_CLOSE_REASONS	(CLOSE_SHUTDOWN + 1)

/* Takes over cfd, an accepted client socket of svc, and starts the engine. */
void	conn_accept(struct service *svc, int cfd, const struct sockaddr *peer,
	    socklen_t peerlen);

/*
 * Ends the connection: stops every watcher, ends the TLS session, closes both
 * fds, logs the close line with reason, frees c. Callers return right after.
 */
void	conn_close(struct conn *c, enum conn_close_reason reason);

/*
 * The state that follows a relay event (pure, for the unit tests): verdict_in
 * says the upstream has answered (always true outside AWAITING_VERDICT).
 * CONN_CLOSED means the connection ends.
 */
enum conn_state conn_state_after_relay(enum conn_state s, enum relay_event ev,
	    bool verdict_in);
/* The log's name of a state / a close reason / a stage / a result. */
const char *conn_state_name(enum conn_state s);
const char *conn_close_reason_name(enum conn_close_reason r);
const char *conn_stage_name(enum conn_stage s);
const char *conn_result_name(enum conn_result r);

#endif
