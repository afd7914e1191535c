/* tls.h - GnuTLS credentials, client sessions, verification and reporting. */
#ifndef TLSFWD_TLS_H
#define TLSFWD_TLS_H

#include <gnutls/gnutls.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "config.h"
#include "log.h"
#include "parse.h"

/* Latest session data per upstream address, for resumption. */
#define TLS_SESSION_CACHE_MAX 16

struct tls_cached_session {
	char		addr[SOCKADDR_TEXT_MAX];
	unsigned int	entry;		/* the upstream entry, its names */
	gnutls_datum_t	data;
};

/*
 * The subject and issuer DN of the last certificate seen in one role, kept
 * with its DER: most connections show the same certificate as the last one
 * (a resumed session carries it too), and parsing it for the log line cost
 * more than the rest of a resumed handshake's own work.
 */
struct tls_dn_memo {
	gnutls_datum_t	der;
	gnutls_datum_t	subject;	/* size 0 when it could not be read */
	gnutls_datum_t	issuer;
	time_t		not_after;	/* 0 when it could not be read */
};

/* What a service needs to start sessions; loaded once, shared by all. */
struct tls_service {
	gnutls_certificate_credentials_t	creds;
	gnutls_priority_t			priority;
	gnutls_datum_t				alpn[ALPN_MAX];
	unsigned int				nalpn;
	unsigned int				ca_count;
	struct tls_cached_session		cache[TLS_SESSION_CACHE_MAX];
	unsigned int				ncached;
	unsigned int				cache_next;	/* to replace */
	struct tls_dn_memo			peer_dn;	/* upstream's */
	struct tls_dn_memo			own_dn;		/* client_cert's */
};

enum tls_pin_result { TLS_PIN_NONE, TLS_PIN_OK, TLS_PIN_FAIL };
enum tls_ocsp_result { TLS_OCSP_OFF, TLS_OCSP_UNCHECKED, TLS_OCSP_NONE,
    TLS_OCSP_GOOD, TLS_OCSP_REVOKED };

/*
 * One connection's TLS context, filled by the verification callback and
 * read by the handshake log line. Lives in the connection.
 */
struct tls_conn {
	const struct service_config	*sc;
	struct tls_service		*t;
	/* The upstream entry (its SNI and name to verify) and address: */
	const struct upstream_target	*target;
	unsigned int			 entry;	/* and addr: the cache key */
	const char			*addr;
	bool				 verify_failed;
	bool				 upstream_spoke;	/* sent a record */
	enum tls_pin_result		 pin;
	enum tls_ocsp_result		 ocsp;
	char				*error;		/* why verify failed */
};

/* Releases what verification left in tc. */
void	tls_conn_clear(struct tls_conn *tc);

int	tls_global_init(char *err, size_t errlen);
/* The first line of path (a password), for config key key's errors. */
int	tls_read_password_file(const char *key, const char *path, char *buf,
	    size_t buflen, char *err, size_t errlen);
void	tls_global_deinit(void);

/*
 * Loads trust (ca_file or the system store), CRL, client certificate and
 * the priority for sc. On failure, *errline is the config line to blame.
 */
int	tls_service_init(struct tls_service *t, const struct service_config *sc,
	    char *err, size_t errlen, int *errline);
void	tls_service_deinit(struct tls_service *t);
/* The client certificate's expiry, or 0 if none. */
/*
 * The notAfter of the certificate the upstream showed in s (0 if none: a
 * resumed session shows none).
 */
time_t	tls_peer_not_after(gnutls_session_t s, const struct tls_conn *tc);
time_t	tls_service_cert_expiry(const struct tls_service *t, char *subject,
	    size_t subjectlen);

/*
 * A non-blocking client session for sc: SNI, ALPN, trust, verification per
 * sc->verify through tc, resumption data for tc->addr. The caller sets the
 * transport.
 */
int	tls_session_new(gnutls_session_t *out, struct tls_conn *tc, char *err,
	    size_t errlen);
/* After a successful handshake: keep the session for resumption. */
void	tls_session_established(gnutls_session_t s, struct tls_conn *tc);

/* Adds version, cipher, group, alpn, resumed, verify, peer, issuer, ... */
void	tls_log_established(struct log_line *l, gnutls_session_t s,
	    const struct tls_conn *tc);
/* pin=, ocsp= and client_cert= for a handshake line, success or not. */
void	tls_log_checks(struct log_line *l, gnutls_session_t s,
	    const struct tls_conn *tc);
/* "handshake_failure" for GNUTLS_A_HANDSHAKE_FAILURE. */
void	tls_alert_name(int alert, char *buf, size_t buflen);
/* True for errors that are the transport's, not the TLS protocol's. */
int	tls_error_is_transport(int rc);

#endif
