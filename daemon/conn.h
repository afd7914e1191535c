/* conn.h - one proxied connection: state machine, connect and handshake. */
#ifndef TLSFWD_CONN_H
#define TLSFWD_CONN_H

#include <ev.h>
#include <gnutls/gnutls.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "relay.h"
#include "tls.h"

struct service;
struct server;

#define CONN_MAGIC 0x74666364u	/* checked at the top of every callback */

enum conn_state {
	CONN_CONNECTING,	/* non-blocking connect() to an upstream address */
	CONN_HANDSHAKING,	/* gnutls_handshake() until done or failed */
	CONN_RELAYING,		/* bytes both ways */
	CONN_SHUTTING_DOWN,	/* one direction finished, the other going on */
	CONN_CLOSED,
};

/* Why a failure happened, for the handshake and close lines. */
struct conn_error {
	int		 sys_errno;	/* 0, or errno */
	int		 gnutls_rc;	/* 0, or a GnuTLS error code */
	const char	*text;		/* overrides the derived text */
	char		 alert[40];	/* alert received/sent, "" if none */
};

struct conn {
	uint32_t		 magic;
	enum conn_state		 state;
	uint64_t		 id;
	struct service		*svc;
	struct server		*srv;
	struct conn		*prev, *next;	/* in srv->conns */

	int			 cfd;		/* client, plaintext */
	int			 ufd;		/* upstream, TLS */
	ev_io			 c_rd, c_wr, u_rd, u_wr;
	ev_timer		 timer;		/* the current state's limit */
	gnutls_session_t	 tls;
	struct tls_conn		 tlsc;		/* verification results */

	const struct addrinfo	*next_addr;	/* next upstream address to try */
	unsigned int		 attempts;	/* upstream addresses tried */
	char			 client[56];
	char			 upstream[56];

	double			 t_start, t_connected, t_established;
	ev_tstamp		 last_activity;	/* for the idle timeout */

	struct relay		 relay;
	bool			 verdict_pending;	/* see conn_handshake_done */
	bool			 in_setup;	/* counted in srv->nsetup */
	struct conn_error	 err;
	int			 io_errno;	/* last transport error, not EAGAIN */
};

/* Takes over cfd, an accepted client socket of svc, and starts the engine. */
void	conn_accept(struct service *svc, int cfd, const struct sockaddr *peer,
	    socklen_t peerlen);

/* The only way to change state; arms the new state's timer. */
void	conn_set_state(struct conn *c, enum conn_state state);

/*
 * Ends the connection: stops every watcher, ends the TLS session, closes both
 * fds, logs the close line with reason, frees c. Callers return right after.
 */
void	conn_close(struct conn *c, const char *reason);

double	conn_now_ms(void);

/*
 * TLS 1.3 with a client certificate requested: the upstream judges it after
 * our Finished, so the handshake line waits for its verdict. The first record
 * from the upstream confirms; an alert or an end before any record refuses.
 */
void	conn_handshake_confirmed(struct conn *c);
/*
 * Records GnuTLS error rc in c->err with what lies behind it: the alert
 * received, or the transport's errno. True if it was an alert.
 */
bool	conn_note_tls_error(struct conn *c, int rc);

/* Logs the handshake as refused (rc, the upstream's answer) and closes. */
void	conn_handshake_refused(struct conn *c, int gnutls_rc);

#endif
