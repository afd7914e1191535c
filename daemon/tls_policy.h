/* tls_policy.h - tlsfwd's default TLS policy and the checks GnuTLS leaves to its caller. */
#ifndef TLSFWD_TLS_POLICY_H
#define TLSFWD_TLS_POLICY_H

#include <gnutls/gnutls.h>
#include <stddef.h>

#include "config.h"

/* The priority string for sc: its tls_priority or the default, narrowed to
 * tls_min/max_version when given. */
void	tls_policy_priority(const struct service_config *sc, char *buf,
	    size_t buflen);

/*
 * What sc's tls_priority allows that the default refuses (versions, key
 * exchanges, ciphers, signatures, a weaker verification profile), as one
 * sentence in buf; 0 when nothing (or no tls_priority), else its length.
 */
size_t	tls_policy_weakenings(const struct service_config *sc, char *buf,
	    size_t buflen);

/*
 * RFC 6125: when a host name is verified, the certificate must carry it in
 * a subjectAltName; GnuTLS still falls back to the subject CN. 0 if the leaf
 * has a DNS or IP subjectAltName (or sc->allow_cn_only), else -1 with why
 * (naming verify_name, the name verified).
 */
int	tls_policy_check_names(gnutls_session_t s,
	    const struct service_config *sc, const char *verify_name,
	    char *err, size_t errlen);

/*
 * After the protocol said yes: what the service still requires of the
 * session (an ALPN answer; a finite-field DHE group that is one of RFC
 * 7919's). NULL if all holds, else why, with the alert to send in *alert.
 */
const char *tls_policy_check_established(gnutls_session_t s,
	    const struct service_config *sc, gnutls_alert_description_t *alert);

#endif
