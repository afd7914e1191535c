/*
 * relay.h - the byte pump: moving bytes both ways between a client socket
 * and a TLS session, with buffers, backpressure and half-close.
 *
 * The relay decides nothing about the connection's life: each entry point
 * moves what it can, arms the watchers for what still waits, and returns a
 * relay_event saying where the two directions stand. conn.c turns that into
 * states, log lines and the close.
 */
#ifndef TLSFWD_RELAY_H
#define TLSFWD_RELAY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <ev.h>
#include <gnutls/gnutls.h>

/* Plaintext of one full TLS record. */
#define RELAY_RECORD_MAX 16384
/*
 * A relay buffer: four records' worth, so that a fast upload reaches the
 * upstream in 64 KiB writes (see c2u_flush), not one TCP segment a record.
 */
#define RELAY_BUF_SIZE (4 * RELAY_RECORD_MAX)

/* Bytes in [head, tail) are waiting; data is NULL while nothing is. */
struct relay_buf {
	char		*data;
	uint32_t	 head;
	uint32_t	 tail;
};

/* Freed buffers kept by one event loop for its next connections. */
#define RELAY_SPARES_MAX 32
struct relay_spares {
	char		*bufs[RELAY_SPARES_MAX];
	unsigned int	 n;
};

/* Where the two directions stand after an entry point returns. */
enum relay_event {
	RELAY_WAIT,		/* both directions open; watchers armed */
	RELAY_HALF_CLOSED,	/* one direction finished, the other goes on */
	RELAY_DONE,		/* both finished: the connection is over */
	RELAY_FAILED,		/* a side failed: see relay.fail */
};

enum relay_side { RELAY_CLIENT, RELAY_UPSTREAM };

/* The error behind RELAY_FAILED. */
struct relay_failure {
	enum relay_side	 side;
	int		 sys_errno;	/* 0, or errno */
	int		 gnutls_rc;	/* 0, or a GnuTLS error code */
};

/* How far one direction has got. */
enum relay_end {
	RELAY_OPEN,		/* its source may send more */
	RELAY_END_READ,		/* the source ended (FIN, close_notify, EOF) */
	RELAY_END_FORWARDED,	/* the end was passed on to the other side */
};

/* An operation GnuTLS could not finish, and the readiness it waits for. */
enum relay_wait { RELAY_NO_WAIT, RELAY_WAIT_READ, RELAY_WAIT_WRITE };

/* How the upstream ended its direction. */
enum relay_upstream_close {
	RELAY_CLOSE_NOTIFY,		/* a close_notify (or not ended yet) */
	RELAY_CLOSE_EOF_HARMLESS,	/* EOF without one, after the client's end */
	RELAY_CLOSE_EOF_TRUNCATED,	/* EOF without one that may have cut data */
};

/* What the pump moves bytes between; the connection owns all of it. */
struct relay_ends {
	int			 cfd;		/* client, plaintext */
	int			 ufd;		/* upstream, TLS */
	gnutls_session_t	 tls;
	ev_io			*c_rd, *c_wr, *u_rd, *u_wr;
};

struct relay {
	struct ev_loop		*loop;
	struct relay_spares	*spares;	/* the loop's, for buffers */
	struct relay_ends	 io;		/* set by relay_start */
	ev_tstamp		 last_activity;	/* for the idle timeout */

	/* Client -> upstream. */
	struct relay_buf	 c2u;
	enum relay_end		 c2u_end;	/* END_FORWARDED: close_notify sent */
	bool			 c2u_dry;	/* the last client recv was short */
	uint32_t		 send_len;	/* a record_send to repeat, or 0 */
	enum relay_wait		 send_wait;
	enum relay_wait		 bye_wait;	/* gnutls_bye() to repeat */
	bool			 push_more;	/* more records follow: MSG_MORE */

	/*
	 * Upstream bytes read ahead of GnuTLS (relay_upstream_pull), so that
	 * a small record costs one recv(), not one for its header, one for its
	 * body and one to find the socket empty.
	 */
	struct relay_buf	 rx;
	bool			 rx_dry;	/* a recv came back short: socket empty */
	bool			 rx_bulk;	/* the last read-ahead filled rx: read exactly */

	/*
	 * Upstream -> client: the decrypted record itself, held until the
	 * client took all of it (GnuTLS's buffer: no copy of the plaintext).
	 */
	gnutls_packet_t		 u2c_pkt;
	gnutls_datum_t		 u2c_data;
	uint32_t		 u2c_off;
	enum relay_end		 u2c_end;	/* END_FORWARDED: FIN sent to the client */
	bool			 u2c_dry;	/* the last record_recv found nothing */
	enum relay_wait		 recv_wait;	/* record_recv waits for output */
	enum relay_upstream_close upstream_close;
	/* A record, a close_notify or an end came from the upstream. */
	bool			 upstream_spoke;

	/*
	 * What the upstream sent while the connection waited in the pool
	 * (a server that speaks first): the client gets it before any record.
	 */
	struct relay_buf	 pre;

	uint64_t		 bytes_up;
	uint64_t		 bytes_down;
	uint64_t		 bytes_down_at_bye;	/* bytes_down when c2u ended */
	struct relay_failure	 fail;		/* valid after RELAY_FAILED */
};

/* A new connection's relay, idle: buffers come from spares when needed. */
void	relay_init(struct relay *r, struct ev_loop *loop,
	    struct relay_spares *spares);

/*
 * GnuTLS's transport for the upstream socket fd, with read-ahead: pull
 * reads up to len bytes into buf; -1 with errno EAGAIN when the socket is
 * known to be empty (no syscall), or recv()'s error. Push sends with
 * MSG_MORE while more records follow.
 */
ssize_t	relay_upstream_pull(struct relay *r, int fd, void *buf, size_t len);
ssize_t	relay_upstream_push(struct relay *r, int fd, const giovec_t *iov,
	    int iovcnt);
/* The upstream socket became readable: the next pull asks the kernel. */
void	relay_upstream_readable(struct relay *r);
/* Forgets what was read ahead (a new upstream socket). */
void	relay_upstream_reset(struct relay *r);
/* Bytes read ahead and not yet handed to GnuTLS: no fd event announces them. */
size_t	relay_upstream_buffered(const struct relay *r);

/*
 * A pooled connection's upstream is readable (no client yet): takes what it
 * sent, session tickets by GnuTLS and bytes into pre, up to one buffer.
 * RELAY_WAIT: still fit to hand out. RELAY_DONE: the upstream ended it
 * (close_notify or EOF). RELAY_FAILED: an error or alert (see fail), or
 * more bytes than a buffer holds (ENOBUFS).
 */
enum relay_event relay_pooled_read(struct relay *r, gnutls_session_t tls);

/* Starts relaying between ends after the handshake. */
enum relay_event relay_start(struct relay *r, const struct relay_ends *ends);
/* Releases r's buffers (to its loop's spares). */
void	relay_free(struct relay *r);
/* Frees a loop's spare buffers. */
void	relay_spares_free(struct relay_spares *sp);

/*
 * Readiness of either socket while relaying (conn.c's watchers call these).
 * Each one moves what it can, then re-arms watchers for what still waits.
 */
enum relay_event relay_on_client_readable(struct relay *r);
enum relay_event relay_on_client_writable(struct relay *r);
enum relay_event relay_on_upstream_readable(struct relay *r);
enum relay_event relay_on_upstream_writable(struct relay *r);

#endif
