/* tls.h - GnuTLS credentials, client sessions, verification and reporting. */
#ifndef TLSFWD_TLS_H
#define TLSFWD_TLS_H

#include <gnutls/gnutls.h>
#include <stddef.h>

#include "config.h"
#include "log.h"

/* What a service needs to start sessions; loaded once, shared by all. */
struct tls_service {
	gnutls_certificate_credentials_t	creds;
	gnutls_priority_t			priority;
	unsigned int				ca_count;
};

int	tls_global_init(char *err, size_t errlen);
void	tls_global_deinit(void);

/* Loads trust (ca_file or the system store) and the priority for sc. */
int	tls_service_init(struct tls_service *t, const struct service_config *sc,
	    char *err, size_t errlen);
void	tls_service_deinit(struct tls_service *t);

/*
 * A non-blocking client session for sc: SNI, trust, and verification per
 * sc->verify. The caller sets the transport.
 */
int	tls_session_new(gnutls_session_t *out, const struct tls_service *t,
	    const struct service_config *sc, char *err, size_t errlen);

/* Adds version, cipher, group, alpn, resumed, verify, peer, issuer. */
void	tls_log_established(struct log_line *l, gnutls_session_t s,
	    enum verify_mode mode);
/* Why verification failed, as GnuTLS words it. */
void	tls_verify_failure_text(gnutls_session_t s, char *buf, size_t buflen);
/* "handshake_failure" for GNUTLS_A_HANDSHAKE_FAILURE. */
void	tls_alert_name(int alert, char *buf, size_t buflen);
/* True for errors that are the transport's, not the TLS protocol's. */
int	tls_error_is_transport(int rc);

#endif
