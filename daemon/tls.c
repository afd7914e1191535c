/* tls.c - GnuTLS credentials, client sessions, verification and reporting. */
#include "tls.h"

#include "tls_policy.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
tls_read_password_file(const char *key, const char *path, char *buf,
    size_t buflen, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	size_t n;

	if (f == NULL) {
		snprintf(err, errlen, "%s: cannot open '%s': %s", key, path,
		    strerror(errno));
		return -1;
	}
	if (fgets(buf, (int)buflen, f) == NULL)
		buf[0] = '\0';
	fclose(f);
	n = strcspn(buf, "\r\n");
	buf[n] = '\0';
	return 0;
}

int
tls_service_init(struct tls_service *t, const struct service_config *sc,
    char *err, size_t errlen, int *errline)
{
	const char *errpos = NULL;
	char priority[1024], password[1024];
	int rc;

	memset(t, 0, sizeof(*t));
	*errline = sc->line;
	rc = gnutls_certificate_allocate_credentials(&t->creds);
	if (rc < 0) {
		snprintf(err, errlen, "cannot allocate credentials: %s",
		    gnutls_strerror(rc));
		return -1;
	}
	if (sc->ca_file != NULL) {
		*errline = sc->ca_file_line;
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
	if (sc->crl_file != NULL) {
		*errline = sc->crl_file_line;
		rc = gnutls_certificate_set_x509_crl_file(t->creds,
		    sc->crl_file, GNUTLS_X509_FMT_PEM);
		if (rc <= 0) {
			snprintf(err, errlen, "crl_file: no CRL loaded from "
			    "'%s': %s", sc->crl_file, rc == 0 ? "the file "
			    "holds no PEM CRL" : gnutls_strerror(rc));
			goto fail;
		}
	}
	if (sc->cert_file != NULL) {
		*errline = sc->key_file_line;
		password[0] = '\0';
		if (sc->key_password_file != NULL && tls_read_password_file(
		    "key_password_file", sc->key_password_file, password,
		    sizeof(password), err, errlen) != 0) {
			*errline = sc->key_password_file_line;
			goto fail;
		}
		/* GnuTLS takes PEM paths and pkcs11: URIs alike. */
		rc = gnutls_certificate_set_x509_key_file2(t->creds,
		    sc->cert_file, sc->key_file, GNUTLS_X509_FMT_PEM,
		    sc->key_password_file != NULL ? password : NULL, 0);
		gnutls_memset(password, 0, sizeof(password));
		if (rc < 0) {
			snprintf(err, errlen, "key_file: cannot load the client "
			    "certificate '%s' with key '%s': %s", sc->cert_file,
			    sc->key_file, gnutls_strerror(rc));
			goto fail;
		}
	}
	tls_policy_priority(sc, priority, sizeof(priority));
	rc = gnutls_priority_init2(&t->priority, priority, &errpos, 0);
	if (rc < 0) {
		*errline = sc->tls_priority != NULL ? sc->tls_priority_line :
		    sc->line;
		snprintf(err, errlen, "tls_priority: %s at '%s'",
		    gnutls_strerror(rc), errpos != NULL ? errpos : "?");
		goto fail;
	}
	for (int i = 0; i < sc->nalpn; i++) {
		t->alpn[i].data = (unsigned char *)(uintptr_t)sc->alpn[i];
		t->alpn[i].size = (unsigned int)strlen(sc->alpn[i]);
	}
	t->nalpn = (unsigned int)sc->nalpn;
	return 0;
fail:
	tls_service_deinit(t);
	return -1;
}

static void
dn_memo_clear(struct tls_dn_memo *m)
{
	gnutls_free(m->der.data);
	gnutls_free(m->subject.data);
	gnutls_free(m->issuer.data);
	memset(m, 0, sizeof(*m));
}

void
tls_service_deinit(struct tls_service *t)
{
	dn_memo_clear(&t->peer_dn);
	dn_memo_clear(&t->own_dn);
	for (unsigned int i = 0; i < t->ncached; i++)
		gnutls_free(t->cache[i].data.data);
	if (t->priority != NULL)
		gnutls_priority_deinit(t->priority);
	if (t->creds != NULL)
		gnutls_certificate_free_credentials(t->creds);
	memset(t, 0, sizeof(*t));
}

time_t
tls_service_cert_expiry(const struct tls_service *t, char *subject,
    size_t subjectlen)
{
	gnutls_x509_crt_t *crts = NULL;
	gnutls_datum_t dn = { NULL, 0 };
	unsigned int n = 0;
	time_t expiry = 0;

	subject[0] = '\0';
	if (gnutls_certificate_get_x509_crt(t->creds, 0, &crts, &n) < 0)
		return 0;
	if (n > 0) {
		expiry = gnutls_x509_crt_get_expiration_time(crts[0]);
		if (gnutls_x509_crt_get_dn3(crts[0], &dn, 0) == 0) {
			snprintf(subject, subjectlen, "%.*s", (int)dn.size,
			    dn.data);
			gnutls_free(dn.data);
		}
	}
	for (unsigned int i = 0; i < n; i++)
		gnutls_x509_crt_deinit(crts[i]);
	gnutls_free(crts);
	return expiry;
}

/* ----- session resumption ----- */

/*
 * Sessions are kept per address and upstream entry: one is never offered
 * to another name (its SNI and verified name), even at the same address.
 */
static struct tls_cached_session *
cache_find(struct tls_service *t, const struct tls_conn *tc)
{
	for (unsigned int i = 0; i < t->ncached; i++)
		if (t->cache[i].entry == tc->entry &&
		    strcmp(t->cache[i].addr, tc->addr) == 0)
			return &t->cache[i];
	return NULL;
}

/* Keeps the session's latest resumption data for its upstream address. */
static void
cache_store(gnutls_session_t s, struct tls_conn *tc)
{
	struct tls_service *t = tc->t;
	struct tls_cached_session *e = cache_find(t, tc);
	gnutls_datum_t data = { NULL, 0 };

	if (gnutls_session_get_data2(s, &data) < 0)
		return;
	if (e == NULL) {
		if (t->ncached < TLS_SESSION_CACHE_MAX) {
			e = &t->cache[t->ncached++];
		} else {
			e = &t->cache[t->cache_next];
			t->cache_next = (t->cache_next + 1) %
			    TLS_SESSION_CACHE_MAX;
		}
		snprintf(e->addr, sizeof(e->addr), "%s", tc->addr);
		e->entry = tc->entry;
	}
	gnutls_free(e->data.data);
	e->data = data;
}

/* TLS 1.3 tickets arrive after the handshake: keep each as it comes. */
static int
ticket_hook(gnutls_session_t s, unsigned int htype, unsigned int when,
    unsigned int incoming, const gnutls_datum_t *msg)
{
	(void)htype;
	(void)when;
	(void)incoming;
	(void)msg;
	if (gnutls_protocol_get_version(s) == GNUTLS_TLS1_3) {
		struct tls_conn *tc = gnutls_session_get_ptr(s);

		/* A ticket after our Finished: the upstream accepted us. */
		tc->upstream_spoke = true;
		if (tc->sc->session_cache)
			cache_store(s, tc);
	}
	return 0;
}

void
tls_session_established(gnutls_session_t s, struct tls_conn *tc)
{
	/* TLS 1.2 session data is complete now; 1.3 waits for a ticket. */
	if (tc->sc->session_cache &&
	    gnutls_protocol_get_version(s) != GNUTLS_TLS1_3)
		cache_store(s, tc);
}

/* ----- verification ----- */

/*
 * Notes why verification failed. Kept on the heap: only failures pay for
 * the text, not every connection.
 */
static void
tc_fail(struct tls_conn *tc, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
tc_fail(struct tls_conn *tc, const char *fmt, ...)
{
	va_list ap;

	free(tc->error);
	va_start(ap, fmt);
	if (vasprintf(&tc->error, fmt, ap) < 0)
		tc->error = NULL;
	va_end(ap);
}

void
tls_conn_clear(struct tls_conn *tc)
{
	free(tc->error);
	tc->error = NULL;
}

/* "sha256/BASE64" of the leaf certificate's SubjectPublicKeyInfo. */
static int
leaf_spki_sha256(gnutls_session_t s, unsigned char digest[32])
{
	const gnutls_datum_t *certs;
	gnutls_pubkey_t key;
	gnutls_datum_t spki = { NULL, 0 };
	unsigned int n = 0;
	int rc;

	certs = gnutls_certificate_get_peers(s, &n);
	if (certs == NULL || n == 0 || gnutls_pubkey_init(&key) < 0)
		return -1;
	rc = gnutls_pubkey_import_x509_raw(key, &certs[0],
	    GNUTLS_X509_FMT_DER, 0);
	if (rc >= 0)
		rc = gnutls_pubkey_export2(key, GNUTLS_X509_FMT_DER, &spki);
	if (rc >= 0)
		rc = gnutls_hash_fast(GNUTLS_DIG_SHA256, spki.data, spki.size,
		    digest);
	gnutls_free(spki.data);
	gnutls_pubkey_deinit(key);
	return rc < 0 ? -1 : 0;
}

static int
check_pins(gnutls_session_t s, struct tls_conn *tc)
{
	const struct service_config *sc = tc->sc;
	unsigned char digest[32];
	gnutls_datum_t in = { digest, sizeof(digest) }, b64 = { NULL, 0 };

	if (leaf_spki_sha256(s, digest) != 0) {
		tc->pin = TLS_PIN_FAIL;
		tc_fail(tc, "public key pin: cannot read the upstream's "
		    "public key");
		return -1;
	}
	for (int i = 0; i < sc->npins; i++) {
		/* Public values: no need for a constant-time compare. */
		if (memcmp(sc->pins[i], digest, sizeof(digest)) == 0) {
			tc->pin = TLS_PIN_OK;
			return 0;
		}
	}
	tc->pin = TLS_PIN_FAIL;
	if (gnutls_base64_encode2(&in, &b64) < 0)
		b64.size = 0;
	tc_fail(tc, "public key pin mismatch: the upstream's key is "
	    "sha256/%.*s, which matches none of the %d pin_sha256",
	    (int)b64.size, b64.data ? (char *)b64.data : "?", sc->npins);
	gnutls_free(b64.data);
	return -1;
}

/*
 * Runs inside gnutls_handshake() once the upstream's certificate is in:
 * chain and hostname (per verify), the stapled OCSP answer, then the pins.
 * A non-zero return ends the handshake with GNUTLS_E_CERTIFICATE_ERROR;
 * tc says why.
 */
static int
tls_verify_cb(gnutls_session_t s)
{
	struct tls_conn *tc = gnutls_session_get_ptr(s);
	const struct service_config *sc = tc->sc;
	gnutls_typed_vdata_st data[2];
	gnutls_datum_t text = { NULL, 0 };
	char names_err[320];
	unsigned int status = 0, n = 0;
	int rc;

	if (sc->verify == VERIFY_FULL || sc->verify == VERIFY_CHAIN) {
		if (sc->verify == VERIFY_FULL) {
			data[n].type = GNUTLS_DT_DNS_HOSTNAME;
			data[n].data = (unsigned char *)(uintptr_t)
			    tc->target->verify_hostname;
			data[n++].size = 0;
		}
		data[n].type = GNUTLS_DT_KEY_PURPOSE_OID;
		data[n].data = (unsigned char *)(uintptr_t)
		    GNUTLS_KP_TLS_WWW_SERVER;
		data[n++].size = 0;
		rc = gnutls_certificate_verify_peers(s, data, n, &status);
		if (rc < 0) {
			tc_fail(tc, "cannot verify the certificate: %s",
			    gnutls_strerror(rc));
			goto fail;
		}
		if (sc->ocsp != OCSP_OFF)
			tc->ocsp = gnutls_ocsp_status_request_is_checked(s,
			    0) ? TLS_OCSP_GOOD : TLS_OCSP_NONE;
		if (status != 0) {
			if ((status & GNUTLS_CERT_REVOKED) &&
			    gnutls_ocsp_status_request_is_checked(s,
			    GNUTLS_OCSP_SR_IS_AVAIL))
				tc->ocsp = TLS_OCSP_REVOKED;
			if (gnutls_certificate_verification_status_print(
			    status, GNUTLS_CRT_X509, &text, 0) == 0) {
				/* GnuTLS does not say which algorithm. */
				tc_fail(tc, "%s%s", (const char *)text.data,
				    (status & GNUTLS_CERT_INSECURE_ALGORITHM) ?
				    " (keys under 112-bit strength, e.g. RSA "
				    "under 2048 bits, or SHA-1/MD5 signatures: "
				    "refused by %PROFILE_MEDIUM)" : "");
				gnutls_free(text.data);
			} else {
				tc_fail(tc, "%s", gnutls_strerror(
				    GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR));
			}
			goto fail;
		}
		if (tls_policy_check_names(s, sc, tc->target->verify_hostname,
		    names_err, sizeof(names_err)) != 0) {
			tc_fail(tc, "%s", names_err);
			goto fail;
		}
		if (sc->ocsp == OCSP_REQUIRE && tc->ocsp != TLS_OCSP_GOOD) {
			tc_fail(tc, "no valid OCSP response was stapled "
			    "(ocsp = require)");
			goto fail;
		}
	}
	if (sc->npins > 0 && check_pins(s, tc) != 0)
		goto fail;
	return 0;
fail:
	tc->verify_failed = true;
	return -1;
}

int
tls_session_new(gnutls_session_t *out, struct tls_conn *tc, char *err,
    size_t errlen)
{
	const struct service_config *sc = tc->sc;
	struct tls_service *t = tc->t;
	struct tls_cached_session *cached;
	unsigned int flags = GNUTLS_CLIENT | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL |
	    GNUTLS_KEY_SHARE_TOP;	/* see TLS_DEFAULT_GROUPS */
	gnutls_session_t s;
	const char *what;
	int rc;

	*out = NULL;
	/*
	 * GnuTLS 3.7 always asks for a staple and checks one it gets (a
	 * revoked one fails even with ocsp = off); ocsp only decides whether
	 * a missing one matters and what the log says.
	 */
	tc->ocsp = sc->ocsp == OCSP_OFF || sc->verify == VERIFY_NONE ||
	    sc->verify == VERIFY_PIN ? TLS_OCSP_OFF : TLS_OCSP_UNCHECKED;
	rc = gnutls_init(&s, flags);
	if (rc < 0) {
		snprintf(err, errlen, "gnutls_init: %s", gnutls_strerror(rc));
		return -1;
	}
	gnutls_session_set_ptr(s, tc);
	what = "gnutls_priority_set";
	rc = gnutls_priority_set(s, t->priority);
	if (rc < 0)
		goto fail;
	what = "gnutls_credentials_set";
	rc = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, t->creds);
	if (rc < 0)
		goto fail;
	if (tc->target->sni[0] != '\0') {
		what = "gnutls_server_name_set";
		rc = gnutls_server_name_set(s, GNUTLS_NAME_DNS, tc->target->sni,
		    strlen(tc->target->sni));
		if (rc < 0)
			goto fail;
	}
	if (t->nalpn > 0) {
		what = "gnutls_alpn_set_protocols";
		rc = gnutls_alpn_set_protocols(s, t->alpn, t->nalpn, 0);
		if (rc < 0)
			goto fail;
	}
	/*
	 * Verification happens inside the handshake, which fails on any
	 * problem: no byte is ever relayed over an unverified session.
	 */
	if (sc->verify != VERIFY_NONE)
		gnutls_session_set_verify_function(s, tls_verify_cb);
	if (sc->session_cache) {
		cached = cache_find(t, tc);
		if (cached != NULL)
			(void)gnutls_session_set_data(s, cached->data.data,
			    cached->data.size);
	}
	gnutls_handshake_set_hook_function(s,
	    GNUTLS_HANDSHAKE_NEW_SESSION_TICKET, GNUTLS_HOOK_POST, ticket_hook);
	/* Our own timer bounds the handshake; GnuTLS must not. */
	gnutls_handshake_set_timeout(s, 0);
	*out = s;
	return 0;
fail:
	snprintf(err, errlen, "%s: %s", what, gnutls_strerror(rc));
	gnutls_deinit(s);
	return -1;
}

/* ----- reporting ----- */

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

/*
 * m, holding the DNs of the DER certificate der: as it was if it already
 * held that certificate, otherwise parsed anew (once for both DNs).
 */
static const struct tls_dn_memo *
dn_memo_get(struct tls_dn_memo *m, const gnutls_datum_t *der)
{
	gnutls_x509_crt_t crt;

	if (m->der.data != NULL && m->der.size == der->size &&
	    memcmp(m->der.data, der->data, der->size) == 0)
		return m;
	dn_memo_clear(m);
	/*
	 * Out of memory: nothing is kept (the line says "-"), so the next
	 * connection tries again rather than remembering the failure.
	 */
	if (gnutls_x509_crt_init(&crt) != 0)
		return m;
	if (gnutls_x509_crt_import(crt, der, GNUTLS_X509_FMT_DER) == 0) {
		if (gnutls_x509_crt_get_dn3(crt, &m->subject, 0) != 0)
			m->subject = (gnutls_datum_t){ NULL, 0 };
		if (gnutls_x509_crt_get_issuer_dn3(crt, &m->issuer, 0) != 0)
			m->issuer = (gnutls_datum_t){ NULL, 0 };
		m->not_after = gnutls_x509_crt_get_expiration_time(crt);
		if (m->not_after == (time_t)-1)
			m->not_after = 0;
	}
	gnutls_x509_crt_deinit(crt);
	if ((m->der.data = gnutls_malloc(der->size)) != NULL) {
		memcpy(m->der.data, der->data, der->size);
		m->der.size = der->size;
	}
	return m;
}

time_t
tls_peer_not_after(gnutls_session_t s, const struct tls_conn *tc)
{
	const gnutls_datum_t *certs;
	unsigned int n = 0;

	certs = gnutls_certificate_get_peers(s, &n);
	if (n == 0 || tc->t == NULL)
		return 0;
	return dn_memo_get(&tc->t->peer_dn, &certs[0])->not_after;
}

/* Adds key= with a DN, or "-" for none (no certificate, or unreadable). */
static void
log_dn(struct log_line *l, const char *key, const gnutls_datum_t *dn)
{
	if (dn != NULL && dn->data != NULL && dn->size > 0)
		log_strn(l, key, (const char *)dn->data, dn->size);
	else
		log_str(l, key, "-");
}

void
tls_log_checks(struct log_line *l, gnutls_session_t s,
    const struct tls_conn *tc)
{
	static const char *const pin_word[] = {
		[TLS_PIN_NONE] = "-", [TLS_PIN_OK] = "ok",
		[TLS_PIN_FAIL] = "fail",
	};
	static const char *const ocsp_word[] = {
		[TLS_OCSP_OFF] = "off", [TLS_OCSP_UNCHECKED] = "-",
		[TLS_OCSP_NONE] = "none",
		[TLS_OCSP_GOOD] = "good", [TLS_OCSP_REVOKED] = "revoked",
	};
	const gnutls_datum_t *ours;

	/*
	 * A resumed session shows no certificate: its checks ran when it was
	 * first made, and the log says so rather than "none".
	 */
	if (s != NULL && gnutls_session_is_resumed(s)) {
		log_str(l, "pin", tc->sc->npins > 0 ? "resumed" : "-");
		log_str(l, "ocsp", tc->sc->ocsp != OCSP_OFF &&
		    tc->sc->verify != VERIFY_NONE &&
		    tc->sc->verify != VERIFY_PIN ? "resumed" : "off");
	} else {
		log_str(l, "pin", pin_word[tc->pin]);
		log_str(l, "ocsp", ocsp_word[tc->ocsp]);
	}
	ours = s != NULL ? gnutls_certificate_get_ours(s) : NULL;
	log_dn(l, "client_cert", ours != NULL && tc->t != NULL ?
	    &dn_memo_get(&tc->t->own_dn, ours)->subject : NULL);
}

void
tls_log_established(struct log_line *l, gnutls_session_t s,
    const struct tls_conn *tc)
{
	static const char *const verify_word[] = {
		[VERIFY_FULL] = "ok", [VERIFY_CHAIN] = "chain",
		[VERIFY_NONE] = "off", [VERIFY_PIN] = "pin",
	};
	const gnutls_datum_t *certs;
	const struct tls_dn_memo *peer;
	gnutls_datum_t alpn;
	const char *group;
	unsigned int n = 0;

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
	log_str(l, "verify", verify_word[tc->sc->verify]);
	tls_log_checks(l, s, tc);
	certs = gnutls_certificate_get_peers(s, &n);
	peer = n > 0 && tc->t != NULL ?
	    dn_memo_get(&tc->t->peer_dn, &certs[0]) : NULL;
	log_dn(l, "peer", peer != NULL ? &peer->subject : NULL);
	log_dn(l, "issuer", peer != NULL ? &peer->issuer : NULL);
}
