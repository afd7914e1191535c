/* tls_policy.c - tlsfwd's default TLS policy and the checks GnuTLS leaves to its caller. */
#include "tls_policy.h"

#include <gnutls/x509.h>
#include <gnutls/x509-ext.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/*
 * Modern defaults, at least as strict as OpenSSL 3's security level 2 (112
 * bits) everywhere GnuTLS applies one:
 * - TLS 1.2 and 1.3 only; for TLS 1.2 only AEAD ciphers with forward
 *   secrecy from ECDHE (no CBC, no static RSA key exchange, and no
 *   finite-field DHE: a client cannot check a server's own group cheaply,
 *   and 1024-bit, composite and small-subgroup groups are all seen in the
 *   wild; Chrome and Go clients dropped it too). TLS 1.3's named FFDHE
 *   groups (RFC 7919) are fixed safe primes and stay.
 * - %PROFILE_MEDIUM: certificate keys of 112-bit strength (RSA and DSA of
 *   2048 bits or more, EC of 224 or more) in the whole chain, and no SHA-1
 *   or MD5 signatures.
 * AES-128-GCM is offered first, as browsers and Go do: servers that follow
 * the client's order (nginx's default) then run the handshake's key
 * schedule on SHA-256, which current x86 and ARM CPUs hash in hardware,
 * instead of SHA-384, which none do, and bulk data takes 10 AES rounds
 * instead of 14 (README, Performance, has the measurements). Servers that
 * insist on their own order still get it.
 */
#define TLS_DEFAULT_PRIORITY \
	"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL:" \
	"+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:-RSA:-DHE-RSA:" \
	"-DHE-DSS:-AES-128-CCM:-AES-256-CCM:-MAC-ALL:+AEAD:" \
	TLS_DEFAULT_GROUPS ":%PROFILE_MEDIUM"
/*
 * X25519 first: the cheapest key exchange and the one servers pick. Only
 * the first group gets a key share (GNUTLS_KEY_SHARE_TOP in tls_session_new),
 * so a server without it costs a HelloRetryRequest instead of every
 * handshake paying for two key pairs (GnuTLS's default): a key pair is a
 * large share of a resumed handshake's cost (README, Performance).
 */
#define TLS_DEFAULT_GROUPS \
	"-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:" \
	"+GROUP-X448:+GROUP-SECP521R1:+GROUP-FFDHE2048:+GROUP-FFDHE3072:" \
	"+GROUP-FFDHE4096"

void
tls_policy_priority(const struct service_config *sc, char *buf, size_t buflen)
{
	int lo = sc->tls_min_version ? sc->tls_min_version : 12;
	int hi = sc->tls_max_version ? sc->tls_max_version : 13;
	size_t n;

	n = (size_t)snprintf(buf, buflen, "%s", sc->tls_priority != NULL ?
	    sc->tls_priority : TLS_DEFAULT_PRIORITY);
	if (sc->tls_min_version == TLS_VERSION_DEFAULT &&
	    sc->tls_max_version == TLS_VERSION_DEFAULT)
		return;
	if (n < buflen)
		n += (size_t)snprintf(buf + n, buflen - n, ":-VERS-ALL");
	for (int v = hi; v >= lo && n < buflen; v--)
		n += (size_t)snprintf(buf + n, buflen - n, ":+VERS-TLS1.%d",
		    v - 10);
}

/* ----- what a tls_priority gives up ----- */

struct weak_list {
	char	*buf;
	size_t	 len, used;
	bool	 any;
};

static void
weak_add(struct weak_list *w, const char *what)
{
	if (w->used < w->len)
		w->used += (size_t)snprintf(w->buf + w->used, w->len - w->used,
		    "%s%s", w->any ? ", " : "", what);
	w->any = true;
}

/* Names of the ids in mine that theirs lacks, one kind of algorithm. */
static void
weak_extra(struct weak_list *w, const unsigned int *mine, int nmine,
    const unsigned int *def, int ndef, const char *(*name)(unsigned int))
{
	for (int i = 0; i < nmine; i++) {
		bool found = false;

		for (int j = 0; j < ndef && !found; j++)
			found = mine[i] == def[j];
		if (!found && name(mine[i]) != NULL)
			weak_add(w, name(mine[i]));
	}
}

static const char *
name_version(unsigned int v)
{
	return gnutls_protocol_get_name((gnutls_protocol_t)v);
}

static const char *
name_kx(unsigned int v)
{
	return gnutls_kx_get_name((gnutls_kx_algorithm_t)v);
}

static const char *
name_cipher(unsigned int v)
{
	return gnutls_cipher_get_name((gnutls_cipher_algorithm_t)v);
}

static const char *
name_sign(unsigned int v)
{
	return gnutls_sign_get_name((gnutls_sign_algorithm_t)v);
}

/* The verification profiles at least as strict as %PROFILE_MEDIUM. */
static bool
has_strict_profile(const char *priority)
{
	static const char *const strict[] = { "%PROFILE_MEDIUM",
	    "%PROFILE_HIGH", "%PROFILE_ULTRA", "%PROFILE_FUTURE",
	    "%PROFILE_SUITEB128", "%PROFILE_SUITEB192" };

	for (size_t i = 0; i < sizeof(strict) / sizeof(strict[0]); i++)
		if (strcasestr(priority, strict[i]) != NULL)
			return true;
	return false;
}

static bool
allows_below_tls13(gnutls_priority_t p)
{
	const unsigned int *v;
	int n = gnutls_priority_protocol_list(p, &v);

	for (int i = 0; i < n; i++)
		if (v[i] != GNUTLS_TLS1_3)
			return true;
	return false;
}

size_t
tls_policy_weakenings(const struct service_config *sc, char *buf,
    size_t buflen)
{
	struct service_config def_sc = *sc;
	gnutls_priority_t mine = NULL, def = NULL;
	struct weak_list w = { buf, buflen, 0, false };
	char prio[1024], def_prio[1024];
	const unsigned int *a, *b;
	int na, nb;

	if (buflen > 0)
		buf[0] = '\0';
	if (sc->tls_priority == NULL)
		return 0;
	def_sc.tls_priority = NULL;
	tls_policy_priority(sc, prio, sizeof(prio));
	tls_policy_priority(&def_sc, def_prio, sizeof(def_prio));
	if (gnutls_priority_init2(&mine, prio, NULL, 0) < 0 ||
	    gnutls_priority_init2(&def, def_prio, NULL, 0) < 0)
		goto out;	/* the service's own loading reports it */
	if (buflen > 0)
		w.used = (size_t)snprintf(buf, buflen, "tls_priority allows "
		    "what the default policy refuses: ");
#define EXTRA(list, name) do {						\
	na = list(mine, &a);						\
	nb = list(def, &b);						\
	if (na > 0)							\
		weak_extra(&w, a, na, b, nb > 0 ? nb : 0, name);	\
} while (0)
	EXTRA(gnutls_priority_protocol_list, name_version);
	/* TLS 1.3 has only AEAD ciphers and ephemeral, named groups. */
	if (allows_below_tls13(mine)) {
		EXTRA(gnutls_priority_kx_list, name_kx);
		EXTRA(gnutls_priority_cipher_list, name_cipher);
	}
	EXTRA(gnutls_priority_sign_list, name_sign);
#undef EXTRA
	if (!has_strict_profile(prio))
		weak_add(&w, "certificate keys below 112-bit strength (no "
		    "%PROFILE_MEDIUM: RSA under 2048 bits)");
	if (strcasestr(prio, "%VERIFY_ALLOW") != NULL)
		weak_add(&w, "broken signature algorithms (%VERIFY_ALLOW_...)");
out:
	if (mine != NULL)
		gnutls_priority_deinit(mine);
	if (def != NULL)
		gnutls_priority_deinit(def);
	if (!w.any) {
		if (buflen > 0)
			buf[0] = '\0';
		return 0;
	}
	return w.used < buflen ? w.used : buflen - 1;
}

/* ----- the upstream's names ----- */

/* Whether the certificate has a DNS or IP subjectAltName. */
static bool
leaf_has_name_san(gnutls_x509_crt_t crt)
{
	gnutls_subject_alt_names_t sans;
	gnutls_datum_t ext = { NULL, 0 }, san;
	unsigned int type, critical;
	bool found = false;

	if (gnutls_x509_crt_get_extension_by_oid2(crt, "2.5.29.17", 0, &ext,
	    &critical) < 0)
		return false;	/* no subjectAltName extension */
	if (gnutls_subject_alt_names_init(&sans) == 0) {
		if (gnutls_x509_ext_import_subject_alt_names(&ext, sans,
		    0) == 0) {
			for (unsigned int i = 0; !found &&
			    gnutls_subject_alt_names_get(sans, i, &type, &san,
			    NULL) == 0; i++)
				found = type == GNUTLS_SAN_DNSNAME ||
				    type == GNUTLS_SAN_IPADDRESS;
		}
		gnutls_subject_alt_names_deinit(sans);
	}
	gnutls_free(ext.data);
	return found;
}

int
tls_policy_check_names(gnutls_session_t s, const struct service_config *sc,
    const char *verify_name, char *err, size_t errlen)
{
	const gnutls_datum_t *certs;
	gnutls_x509_crt_t crt;
	unsigned int ncerts = 0;
	bool has_san;
	int rc;

	if (sc->verify != VERIFY_FULL || sc->allow_cn_only)
		return 0;
	certs = gnutls_certificate_get_peers(s, &ncerts);
	if (certs == NULL || ncerts == 0)
		return 0;	/* nothing to name: verification said why */
	rc = gnutls_x509_crt_init(&crt);
	if (rc >= 0) {
		rc = gnutls_x509_crt_import(crt, &certs[0],
		    GNUTLS_X509_FMT_DER);
		if (rc < 0)
			gnutls_x509_crt_deinit(crt);
	}
	if (rc < 0) {
		snprintf(err, errlen, "cannot read the upstream's certificate "
		    "for its names: %s", gnutls_strerror(rc));
		return -1;
	}
	has_san = leaf_has_name_san(crt);
	gnutls_x509_crt_deinit(crt);
	if (has_san)
		return 0;
	snprintf(err, errlen, "the certificate names '%s' only in its "
	    "subject CN, without a DNS or IP subjectAltName (RFC 6125; "
	    "browsers and Go refuse it): reissue it with one, or set "
	    "allow_cn_only = yes for a legacy CA", verify_name);
	return -1;
}

/* ----- after the handshake ----- */

/* big-endian integers, leading zero bytes aside */
static bool
same_integer(const gnutls_datum_t *x, const gnutls_datum_t *y)
{
	const unsigned char *p = x->data, *q = y->data;
	size_t n = x->size, m = y->size;

	while (n > 0 && *p == 0) {
		p++;
		n--;
	}
	while (m > 0 && *q == 0) {
		q++;
		m--;
	}
	return n == m && memcmp(p, q, n) == 0;
}

/*
 * A TLS 1.2 server chooses its own finite-field group; GnuTLS checks only
 * its size, not that it is prime or has no small subgroup. Only RFC 7919's
 * groups are taken: known safe primes, no test to run per handshake.
 */
static bool
dhe_group_known(gnutls_session_t s)
{
	static const gnutls_datum_t *const primes[] = {
	    &gnutls_ffdhe_2048_group_prime, &gnutls_ffdhe_3072_group_prime,
	    &gnutls_ffdhe_4096_group_prime, &gnutls_ffdhe_6144_group_prime,
	    &gnutls_ffdhe_8192_group_prime };
	static const gnutls_datum_t *const gens[] = {
	    &gnutls_ffdhe_2048_group_generator,
	    &gnutls_ffdhe_3072_group_generator,
	    &gnutls_ffdhe_4096_group_generator,
	    &gnutls_ffdhe_6144_group_generator,
	    &gnutls_ffdhe_8192_group_generator };
	gnutls_datum_t gen = { NULL, 0 }, prime = { NULL, 0 };
	bool known = false;

	if (gnutls_dh_get_group(s, &gen, &prime) < 0)
		return false;
	for (size_t i = 0; i < sizeof(primes) / sizeof(primes[0]); i++)
		if (same_integer(&prime, primes[i]) &&
		    same_integer(&gen, gens[i]))
			known = true;
	gnutls_free(gen.data);
	gnutls_free(prime.data);
	return known;
}

const char *
tls_policy_check_established(gnutls_session_t s,
    const struct service_config *sc, gnutls_alert_description_t *alert)
{
	gnutls_kx_algorithm_t kx = gnutls_kx_get(s);
	gnutls_datum_t alpn;

	if (sc->alpn_required &&
	    gnutls_alpn_get_selected_protocol(s, &alpn) != 0) {
		*alert = GNUTLS_A_NO_APPLICATION_PROTOCOL;
		return "the upstream selected no ALPN protocol "
		    "(alpn_required = yes)";
	}
	if ((kx == GNUTLS_KX_DHE_RSA || kx == GNUTLS_KX_DHE_DSS) &&
	    !dhe_group_known(s)) {
		*alert = GNUTLS_A_INSUFFICIENT_SECURITY;
		return "the upstream's finite-field DHE group is not one of "
		    "RFC 7919's (ffdhe2048-8192): a custom group can be "
		    "composite or have small subgroups; use ECDHE";
	}
	return NULL;
}
