/*
 * conn_priv.h - what conn.c, conn_connect.c, conn_handshake.c, conn_log.c,
 * conn_dump.c and pool.c share: the connection struct and the calls between
 * them. No other file includes it: the rest of the daemon sees conn.h.
 */
#ifndef TLSFWD_CONN_PRIV_H
#define TLSFWD_CONN_PRIV_H

#include <ev.h>
#include <gnutls/gnutls.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdint.h>

#include "conn.h"
#include "connect_race.h"
#include "parse.h"
#include "pool.h"
#include "relay.h"
#include "server.h"
#include "tls.h"

#define CONN_MAGIC 0x74666364u	/* checked at the top of every callback */

/* Who sent the alert behind a failure (alert_from=). */
enum conn_alert_from { ALERT_NONE, ALERT_FROM_UPSTREAM, ALERT_FROM_TLSFWD };


/* Why a failure happened, for the handshake and close lines. */
struct conn_error {
	int		 sys_errno;	/* 0, or errno */
	int		 gnutls_rc;	/* 0, or a GnuTLS error code */
	const char	*text;		/* overrides the derived text */
	char		 alert[40];	/* alert received/sent, "" if none */
};

/*
 * A connection's way to its upstream while it sets up (RESOLVING to the
 * handshake's end): the paths in the order to try, and their race.
 */
struct conn_paths {
	struct conn		*conn;
	struct connect_race	 race;
	char			*tunnel;	/* via: the proxy's answer so far */
	size_t			 tunnel_len;
	size_t			 n;
	struct resolver_addr	 addr[];
};

struct conn {
	uint32_t		 magic;
	enum conn_state		 state;
	uint64_t		 id;
	struct service		*svc;
	struct server		*srv;
	struct conn_link	 link;		/* in srv->conns, or the pool's */
	bool			 pooled;	/* no client: the pool's */
	bool			 pool_ready;	/* in the pool's ready list */
	bool			 verdict_wait;	/* pooled: TLS 1.3, our cert judged */

	int			 cfd;		/* client, plaintext */
	int			 ufd;		/* upstream, TLS */
	ev_io			 c_rd, c_wr, u_rd, u_wr;
	ev_timer		 timer;		/* the current state's limit */
	gnutls_session_t	 tls;
	struct tls_conn		 tlsc;		/* verification results */

	/* The upstream entries to try, in order (upstream_plan), and where. */
	unsigned char		 plan[UPSTREAMS_MAX];
	unsigned char		 nplan, plan_pos;
	size_t			 entry;		/* the one being tried */
	struct upstream_wait	 wait;		/* RESOLVING: for addresses */
	struct conn_paths	*paths;		/* set-up only: paths, race */
	size_t			 path;		/* in paths: the one in use */
	unsigned int		 attempts;	/* upstream addresses tried */
	unsigned int		 attempts_before;	/* before this race */
	char			 client[SOCKADDR_TEXT_MAX];
	char			 upstream[SOCKADDR_TEXT_MAX];

	double			 t_start, t_connected, t_established;
	double			 t_adopted;	/* a client took it from the pool */

	struct relay		 relay;
	struct conn_error	 err;
	int			 io_errno;	/* last transport error, not EAGAIN */
};

/* conn.c: the state machine. */
/* The only way to change state; arms the new state's timer. */
void	conn_set_state(struct conn *c, enum conn_state state);
/* Turns what the relay reports into the next state, or the close. */
void	conn_on_relay(struct conn *c, enum relay_event ev);
/*
 * The end of every failed set-up: the handshake line (with text as the
 * error, when given), then the close.
 */
void	conn_fail_handshake(struct conn *c, enum conn_result result,
	    enum conn_stage stage, enum conn_alert_from from, const char *text);
double	conn_now_ms(void);
/* When the client came: accept, or the adoption of a pooled connection. */
double	conn_t_client(const struct conn *c);
/* A connection for svc's pool, not started (conn_connect_start); NULL: no memory. */
struct conn *conn_new_pooled(struct service *svc);
/*
 * A pooled connection goes unadopted, for why: a close_notify first when it
 * is ready and the upstream has not ended it.
 */
void	conn_close_pooled(struct conn *c, enum pool_drop why);

/* conn_connect.c: from addresses to a connected upstream socket. */
/* Gets the upstream's addresses (or waits: RESOLVING) and races them. */
void	conn_connect_start(struct conn *c);
/*
 * A handshake failed on the path in use: if another is left, logs the
 * failure (event=attempt), marks the path down and races on (CONNECTING);
 * false if none is left.
 */
bool	conn_connect_next_path(struct conn *c, enum conn_result result,
	    enum conn_stage stage, enum conn_alert_from from);
/* Fired while PROXY_TUNNEL: the proxy's answer to CONNECT comes in. */
void	conn_tunnel_read(struct conn *c);
/* RESOLVING took connect_timeout: the next upstream entry, or the end. */
void	conn_connect_resolve_timeout(struct conn *c);
/* The handshake succeeded: the path is healthy; the set-up state goes. */
void	conn_connect_done(struct conn *c);
/* The connection closes: whatever the set-up still holds goes. */
void	conn_connect_end(struct conn *c);

/* conn_handshake.c: the TLS session and its handshake. */
/*
 * Drives gnutls_handshake() from the watchers; on success starts the relay
 * (conn_on_relay), on failure ends in conn_fail_handshake.
 */
void	conn_handshake_step(struct conn *c);
/*
 * Records GnuTLS error rc in c->err with what lies behind it: the alert
 * received, or the transport's errno. True if it was an alert.
 */
bool	conn_note_tls_error(struct conn *c, int rc);
/* The upstream's verdict, read from what it sent before an error. */
bool	conn_verdict_from_leftovers(struct conn *c, int *gnutls_rc);

/* conn_log.c: the connection's log lines. */
void	conn_log_state(const struct conn *c, enum conn_state to);
void	conn_log_handshake_failure(struct conn *c, enum conn_result result,
	    enum conn_stage stage, enum conn_alert_from from);
void	conn_log_handshake_ok(struct conn *c);
/* A failed path another one replaces: event=attempt, at warn. */
void	conn_log_attempt_failure(const struct conn *c, enum conn_result result,
	    enum conn_stage stage, enum conn_alert_from from);
/* The recorded failure as the error= text says it. */
void	conn_attempt_error_text(const struct conn *c, char *buf, size_t len);
void	conn_log_close(const struct conn *c, enum conn_close_reason reason);
/*
 * A ready pooled connection goes unadopted: event=pool_drop (debug; warn for
 * a too long greeting). Nothing for a failure (its event=pool said it).
 */
void	conn_log_pool_drop(const struct conn *c, enum pool_drop why);

#endif
