/* tls.c - GnuTLS credentials, client sessions, verification and reporting. */
#include "tls.h"

#include <ctype.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <string.h>

/*
 * Modern defaults: TLS 1.2 and 1.3 only, and for TLS 1.2 only AEAD ciphers
 * with forward secrecy (no CBC, no static RSA key exchange).
 */
#define TLS_DEFAULT_PRIORITY \
	"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL:" \
	"+AES-256-GCM:+AES-128-GCM:+CHACHA20-POLY1305:-RSA:-AES-128-CCM:" \
	"-AES-256-CCM:-MAC-ALL:+AEAD"

int
tls_global_init(char *err, size_t errlen)
{
	int rc = gnutls_global_init();

	if (rc < 0) {
		snprintf(err, errlen, "gnutls_global_init: %s",
		    gnutls_strerror(rc));
		return -1;
	}
	return 0;
}

void
tls_global_deinit(void)
{
	gnutls_global_deinit();
}

int
tls_service_init(struct tls_service *t, const struct service_config *sc,
    char *err, size_t errlen)
{
	const char *errpos = NULL;
	int rc;

	memset(t, 0, sizeof(*t));
	rc = gnutls_certificate_allocate_credentials(&t->creds);
	if (rc < 0) {
		snprintf(err, errlen, "cannot allocate credentials: %s",
		    gnutls_strerror(rc));
		return -1;
	}
	if (sc->ca_file != NULL) {
		rc = gnutls_certificate_set_x509_trust_file(t->creds,
		    sc->ca_file, GNUTLS_X509_FMT_PEM);
		if (rc <= 0) {
			snprintf(err, errlen, "ca_file: no CA certificate "
			    "loaded from '%s': %s", sc->ca_file, rc == 0 ?
			    "the file holds no PEM certificate" :
			    gnutls_strerror(rc));
			goto fail;
		}
	} else {
		rc = gnutls_certificate_set_x509_system_trust(t->creds);
		if (rc <= 0) {
			snprintf(err, errlen, "the system trust store is %s: "
			    "install ca-certificates or set ca_file",
			    rc == 0 ? "empty" : gnutls_strerror(rc));
			goto fail;
		}
	}
	t->ca_count = (unsigned int)rc;
	rc = gnutls_priority_init2(&t->priority, TLS_DEFAULT_PRIORITY, &errpos,
	    0);
	if (rc < 0) {
		snprintf(err, errlen, "TLS priority: %s at '%s'",
		    gnutls_strerror(rc), errpos ? errpos : "?");
		goto fail;
	}
	return 0;
fail:
	tls_service_deinit(t);
	return -1;
}

void
tls_service_deinit(struct tls_service *t)
{
	if (t->priority != NULL)
		gnutls_priority_deinit(t->priority);
	if (t->creds != NULL)
		gnutls_certificate_free_credentials(t->creds);
	memset(t, 0, sizeof(*t));
}

int
tls_session_new(gnutls_session_t *out, const struct tls_service *t,
    const struct service_config *sc, char *err, size_t errlen)
{
	gnutls_session_t s;
	const char *what;
	int rc;

	*out = NULL;
	rc = gnutls_init(&s, GNUTLS_CLIENT | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL);
	if (rc < 0) {
		snprintf(err, errlen, "gnutls_init: %s", gnutls_strerror(rc));
		return -1;
	}
	what = "gnutls_priority_set";
	rc = gnutls_priority_set(s, t->priority);
	if (rc < 0)
		goto fail;
	what = "gnutls_credentials_set";
	rc = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, t->creds);
	if (rc < 0)
		goto fail;
	if (sc->sni[0] != '\0') {
		what = "gnutls_server_name_set";
		rc = gnutls_server_name_set(s, GNUTLS_NAME_DNS, sc->sni,
		    strlen(sc->sni));
		if (rc < 0)
			goto fail;
	}
	/*
	 * GnuTLS verifies inside the handshake and fails it with
	 * GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR, so no byte is ever relayed
	 * over an unverified session. A NULL hostname checks the chain only.
	 */
	if (sc->verify == VERIFY_FULL)
		gnutls_session_set_verify_cert(s, sc->verify_hostname, 0);
	else if (sc->verify == VERIFY_CHAIN)
		gnutls_session_set_verify_cert(s, NULL, 0);
	/* Our own timer bounds the handshake; GnuTLS must not. */
	gnutls_handshake_set_timeout(s, 0);
	*out = s;
	return 0;
fail:
	snprintf(err, errlen, "%s: %s", what, gnutls_strerror(rc));
	gnutls_deinit(s);
	return -1;
}

void
tls_alert_name(int alert, char *buf, size_t buflen)
{
	const char *name = gnutls_alert_get_strname((gnutls_alert_description_t)
	    alert);
	size_t i;

	if (name == NULL) {
		snprintf(buf, buflen, "alert_%d", alert);
		return;
	}
	if (strncmp(name, "GNUTLS_A_", 9) == 0)
		name += 9;
	for (i = 0; name[i] != '\0' && i + 1 < buflen; i++)
		buf[i] = (char)tolower((unsigned char)name[i]);
	buf[i] = '\0';
}

int
tls_error_is_transport(int rc)
{
	return rc == GNUTLS_E_PUSH_ERROR || rc == GNUTLS_E_PULL_ERROR ||
	    rc == GNUTLS_E_PREMATURE_TERMINATION || rc == GNUTLS_E_TIMEDOUT;
}

void
tls_verify_failure_text(gnutls_session_t s, char *buf, size_t buflen)
{
	gnutls_datum_t out = { NULL, 0 };
	unsigned int status = gnutls_session_get_verify_cert_status(s);

	if (status != 0 && gnutls_certificate_verification_status_print(status,
	    GNUTLS_CRT_X509, &out, 0) == 0) {
		snprintf(buf, buflen, "%s", (const char *)out.data);
		gnutls_free(out.data);
	} else {
		snprintf(buf, buflen, "%s", gnutls_strerror(
		    GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR));
	}
}

/* Adds the subject and issuer of the upstream's leaf certificate. */
static void
log_peer_names(struct log_line *l, gnutls_session_t s)
{
	const gnutls_datum_t *certs;
	gnutls_x509_crt_t crt;
	gnutls_datum_t dn = { NULL, 0 };
	unsigned int n = 0;

	certs = gnutls_certificate_get_peers(s, &n);
	if (certs == NULL || n == 0 || gnutls_x509_crt_init(&crt) < 0) {
		log_str(l, "peer", "-");
		log_str(l, "issuer", "-");
		return;
	}
	if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) == 0 &&
	    gnutls_x509_crt_get_dn3(crt, &dn, 0) == 0) {
		log_strn(l, "peer", (const char *)dn.data, dn.size);
		gnutls_free(dn.data);
	} else {
		log_str(l, "peer", "-");
	}
	if (gnutls_x509_crt_get_issuer_dn3(crt, &dn, 0) == 0) {
		log_strn(l, "issuer", (const char *)dn.data, dn.size);
		gnutls_free(dn.data);
	} else {
		log_str(l, "issuer", "-");
	}
	gnutls_x509_crt_deinit(crt);
}

void
tls_log_established(struct log_line *l, gnutls_session_t s,
    enum verify_mode mode)
{
	static const char *const verify_word[] = {
		[VERIFY_FULL] = "ok", [VERIFY_CHAIN] = "chain",
		[VERIFY_NONE] = "off",
	};
	gnutls_datum_t alpn;
	const char *group;

	if (!l->enabled)
		return;
	log_str(l, "version", gnutls_protocol_get_name(
	    gnutls_protocol_get_version(s)));
	log_str(l, "cipher", gnutls_cipher_get_name(gnutls_cipher_get(s)));
	group = gnutls_group_get_name(gnutls_group_get(s));
	log_str(l, "group", group != NULL ? group : "-");
	if (gnutls_alpn_get_selected_protocol(s, &alpn) == 0)
		log_strn(l, "alpn", (const char *)alpn.data, alpn.size);
	else
		log_str(l, "alpn", "-");
	log_str(l, "resumed", gnutls_session_is_resumed(s) ? "yes" : "no");
	log_str(l, "verify", verify_word[mode]);
	log_peer_names(l, s);
}
