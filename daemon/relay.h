/* relay.h - moving bytes both ways: buffers, backpressure, half-close. */
#ifndef TLSFWD_RELAY_H
#define TLSFWD_RELAY_H

#include <stdbool.h>
#include <stdint.h>

#include <gnutls/gnutls.h>

struct conn;

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

struct relay {
	struct relay_buf c2u;		/* client -> upstream */
	/*
	 * Upstream bytes read ahead of GnuTLS (relay_upstream_pull), so that
	 * a small record costs one recv(), not one for its header, one for its
	 * body and one to find the socket empty.
	 */
	struct relay_buf rx;
	bool		 rx_dry;		/* a recv came back short: the socket is empty */
	bool		 rx_bulk;	/* the last read-ahead filled rx: read exactly */
	/*
	 * Upstream -> client: the decrypted record itself, held until the
	 * client took all of it (GnuTLS's buffer: no copy of the plaintext).
	 */
	gnutls_packet_t	 u2c_pkt;
	gnutls_datum_t	 u2c_data;
	uint32_t	 u2c_off;
	bool		 u2c_dry;		/* the last recv found nothing */
	uint64_t	 bytes_up;
	uint64_t	 bytes_down;
	uint32_t	 send_pending;	/* length of a record_send to repeat */
	bool		 send_wants_read;	/* that send waits for input */
	bool		 push_more;	/* more records follow: MSG_MORE */
	bool		 recv_wants_write;	/* record_recv waits for output */
	bool		 bye_pending;		/* gnutls_bye() to repeat */
	bool		 bye_wants_read;
	bool		 c2u_dry;		/* the last client recv was short */
	bool		 client_eof;		/* client sent FIN */
	bool		 c2u_done;		/* close_notify sent upstream */
	bool		 upstream_eof;		/* close_notify or EOF upstream */
	bool		 upstream_truncated;	/* that end may have cut data */
	bool		 upstream_no_close_notify;	/* EOF without one */
	uint64_t	 bytes_down_at_bye;	/* bytes_down when c2u_done */
	bool		 u2c_done;		/* FIN sent to the client */
};

/*
 * GnuTLS's pull function for the upstream socket, with read-ahead: reads up
 * to len bytes into buf; -1 with errno EAGAIN when the socket is known to
 * be empty (no syscall), or recv()'s error.
 */
ssize_t	relay_upstream_pull(struct conn *c, void *buf, size_t len);
/* The upstream socket became readable: the next pull asks the kernel. */
void	relay_upstream_readable(struct conn *c);
/* Forgets what was read ahead (a new upstream socket). */
void	relay_upstream_reset(struct conn *c);
/* Bytes read ahead and not yet handed to GnuTLS: no fd event announces them. */
size_t	relay_upstream_buffered(const struct conn *c);

/* Enters the relay after the handshake. */
void	relay_start(struct conn *c);
/* Releases c's buffers (to its loop's spares). */
void	relay_free(struct conn *c);
/* Frees a loop's spare buffers. */
void	relay_spares_free(struct relay_spares *sp);

/*
 * Readiness of either socket while relaying (conn.c's watchers call these).
 * Each one moves what it can, then re-arms watchers for what still waits.
 */
void	relay_on_client_readable(struct conn *c);
void	relay_on_client_writable(struct conn *c);
void	relay_on_upstream_readable(struct conn *c);
void	relay_on_upstream_writable(struct conn *c);

#endif
