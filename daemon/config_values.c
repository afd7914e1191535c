/*
 * config_values.c - the setters of keys whose values have a syntax of their
 * own (addresses, lists, names, pins): config_set_dns_servers(),
 * config_set_listen(), config_add_upstreams(), config_set_sni(),
 * config_set_verify_hostname(), config_add_pin(), config_set_alpn(),
 * config_add_allow(), config_add_deny(), config_set_metrics_listen(),
 * config_add_metrics_allow(). Their rows are in config_keys.c.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config_priv.h"

/*
 * The next item of the comma-separated list at *s, without the spaces
 * around it: its start, and its length in *len. *s moves past the item's
 * comma, or to NULL after the last item.
 */
static const char *
list_next(const char **s, size_t *len)
{
	const char *item = *s, *end = strchr(item, ',');

	*len = end != NULL ? (size_t)(end - item) : strlen(item);
	*s = end != NULL ? end + 1 : NULL;
	while (*len > 0 && isspace((unsigned char)*item))
		item++, (*len)--;
	while (*len > 0 && isspace((unsigned char)item[*len - 1]))
		(*len)--;
	return item;
}

/*
 * "10.0.0.53, [fd00::53]:5353": addresses (not names: they would need a
 * resolver) with optional ports, kept as c-ares's list "ADDR:PORT,...".
 */
void
config_set_dns_servers(struct parse_ctx *p, void *obj,
    const struct config_key *k, const char *value)
{
	struct global_config *g = obj;
	char list[1024], item[HOST_MAX + 8], err[PARSE_ERR_MAX];
	unsigned char addr[16];
	struct host_port hp;
	const char *s = value;
	size_t used = 0;

	list[0] = '\0';
	do {
		size_t len;
		const char *at = list_next(&s, &len);
		bool ok = len > 0 && len < HOST_MAX;

		if (ok) {
			memcpy(item, at, len);
			item[len] = '\0';
			/* A bare address takes port 53. */
			if (inet_pton(AF_INET6, item, addr) == 1)
				snprintf(item, sizeof(item), "[%.*s]:53",
				    (int)len, at);
			else if (inet_pton(AF_INET, item, addr) == 1)
				snprintf(item, sizeof(item), "%.*s:53",
				    (int)len, at);
			ok = parse_host_port(item, &hp, 0, err,
			    sizeof(err)) == 0 && hp.is_ip_literal;
		}
		if (!ok || used + strlen(item) + 2 > sizeof(list)) {
			config_error_here(p, "%s: '%.*s' is not an IP address "
			    "with an optional port (e.g. 10.0.0.53, "
			    "[fd00::53]:5353)", k->name, (int)len, at);
			return;
		}
		used += (size_t)snprintf(list + used, sizeof(list) - used,
		    "%s%s", used > 0 ? "," : "", item);
	} while (s != NULL);
	free(g->dns_servers);
	if ((g->dns_servers = strdup(list)) == NULL)
		config_error_here(p, "out of memory");
}

void
config_set_listen(struct parse_ctx *p, void *obj, const struct config_key *k,
    const char *value)
{
	char err[PARSE_ERR_MAX];

	if (parse_listen_addr(value, FIELD(obj, k, struct listen_addr), err,
	    sizeof(err)) != 0)
		config_error_here(p, "%s: %s", k->name, err);
}

/* "db-a.example:5433, db-b.example:5433": appended (repeatable key). */
void
config_add_upstreams(struct parse_ctx *p, void *obj, const struct config_key *k,
    const char *value)
{
	struct service_config *sc = obj;
	char err[PARSE_ERR_MAX], item[HOST_MAX + 16];
	const char *s = value;

	do {
		size_t len;
		const char *at = list_next(&s, &len);
		struct upstream_target *t = &sc->upstreams[sc->nupstreams];

		if (len >= sizeof(item))
			len = sizeof(item) - 1;
		memcpy(item, at, len);
		item[len] = '\0';
		if (sc->nupstreams == UPSTREAMS_MAX) {
			config_error_here(p, "%s: at most %d upstreams",
			    k->name, UPSTREAMS_MAX);
			return;
		}
		if (parse_host_port(item, &t->hp, 0, err, sizeof(err)) != 0) {
			config_error_here(p, "%s: %s", k->name, err);
			return;
		}
		for (size_t i = 0; i < sc->nupstreams; i++) {
			if (sc->upstreams[i].hp.port == t->hp.port &&
			    strcasecmp(sc->upstreams[i].hp.host,
			    t->hp.host) == 0) {
				config_error_here(p, "%s: '%s' is listed "
				    "twice", k->name, item);
				return;
			}
		}
		sc->nupstreams++;
	} while (s != NULL);
}

void
config_set_sni(struct parse_ctx *p, void *obj, const struct config_key *k,
    const char *value)
{
	struct service_config *sc = obj;
	char probe[HOST_MAX + 8], err[PARSE_ERR_MAX];
	struct host_port hp;

	(void)k;
	if (strcmp(value, "-") == 0) {
		sc->sni[0] = '\0';
		return;
	}
	/* Reuse the host checks: "NAME:1" must parse. */
	snprintf(probe, sizeof(probe), "%s:1", value);
	if (strlen(value) > HOST_MAX || parse_host_port(probe, &hp, 0, err,
	    sizeof(err)) != 0 || hp.is_ip_literal) {
		config_error_here(p, "sni: '%s' is not a DNS host name (IP "
		    "addresses cannot be sent as SNI; '-' sends none)", value);
		return;
	}
	snprintf(sc->sni, sizeof(sc->sni), "%s", value);
}

void
config_set_verify_hostname(struct parse_ctx *p, void *obj,
    const struct config_key *k, const char *value)
{
	struct service_config *sc = obj;

	(void)k;
	if (value[0] == '\0' || strlen(value) > HOST_MAX)
		config_error_here(p, "verify_hostname: expected a host name or "
		    "IP address, got '%s'", value);
	else
		snprintf(sc->verify_hostname, sizeof(sc->verify_hostname), "%s",
		    value);
}

void
config_add_pin(struct parse_ctx *p, void *obj, const struct config_key *k,
    const char *value)
{
	struct service_config *sc = obj;
	gnutls_datum_t in = { (unsigned char *)(uintptr_t)value,
	    (unsigned int)strlen(value) }, out = { NULL, 0 };

	if (strncmp(value, "sha256/", 7) == 0)
		in.data += 7, in.size -= 7;
	if (sc->npins == PINS_MAX) {
		config_error_here(p, "%s: at most %d pins", k->name, PINS_MAX);
		return;
	}
	if (gnutls_base64_decode2(&in, &out) < 0 || out.size != 32) {
		config_error_here(p, "%s: '%s' is not the base64 of a SHA-256 "
		    "digest (44 characters)", k->name, value);
		gnutls_free(out.data);
		return;
	}
	memcpy(sc->pins[sc->npins++], out.data, 32);
	gnutls_free(out.data);
}

/* "http://[user@]host:port": the HTTP proxy to CONNECT through. */
void
config_set_via(struct parse_ctx *p, void *obj, const struct config_key *k,
    const char *value)
{
	struct service_config *sc = obj;
	const char *rest = value + 7, *at;
	char err[PARSE_ERR_MAX], hostport[HOST_MAX + 16];
	size_t n;

	(void)k;
	if (strncmp(value, "http://", 7) != 0) {
		config_error_here(p, "via: expected http://[USER@]HOST:PORT "
		    "(an HTTP proxy; https:// and socks are not supported), "
		    "got '%s'", value);
		return;
	}
	sc->via_user[0] = '\0';
	if ((at = strchr(rest, '@')) != NULL) {
		n = (size_t)(at - rest);
		if (n == 0 || n >= sizeof(sc->via_user) ||
		    memchr(rest, ':', n) != NULL) {
			config_error_here(p, "via: the user before '@' must be "
			    "1-%zu bytes without ':' (the password goes in "
			    "via_password_file), got '%s'",
			    sizeof(sc->via_user) - 1, value);
			return;
		}
		memcpy(sc->via_user, rest, n);
		sc->via_user[n] = '\0';
		rest = at + 1;
	}
	n = strlen(rest);
	if (n > 0 && rest[n - 1] == '/')
		n--;		/* http://proxy:3128/ */
	if (n >= sizeof(hostport)) {
		config_error_here(p, "via: host name too long in '%s'", value);
		return;
	}
	memcpy(hostport, rest, n);
	hostport[n] = '\0';
	if (parse_host_port(hostport, &sc->via, 0, err, sizeof(err)) != 0) {
		config_error_here(p, "via: %s", err);
		return;
	}
	sc->via_on = true;
}

/* "h2,http/1.1": protocols offered in order. */
void
config_set_alpn(struct parse_ctx *p, void *obj, const struct config_key *k,
    const char *value)
{
	struct service_config *sc = obj;
	const char *s = value;

	(void)k;
	sc->nalpn = 0;
	while (*s != '\0') {
		size_t n;
		const char *at = list_next(&s, &n);

		if (n == 0 || n > 255 || sc->nalpn == ALPN_MAX) {
			config_error_here(p, "alpn: expected up to %d "
			    "comma-separated protocol names of 1-255 bytes, "
			    "got '%s'", ALPN_MAX, value);
			sc->nalpn = 0;
			return;
		}
		memcpy(sc->alpn[sc->nalpn], at, n);
		sc->alpn[sc->nalpn++][n] = '\0';
		if (s == NULL)
			break;
		if (*s == '\0') {
			config_error_here(p, "alpn: trailing comma in '%s'",
			    value);
			return;
		}
	}
}

/* "10.0.0.0/8, ::1": appended to the list (the key may be given again). */
static void
add_cidrs(struct parse_ctx *p, const char *name, const char *value,
    struct cidr **list, size_t *n, size_t other)
{
	char err[PARSE_ERR_MAX], item[64];
	const char *s = value;

	do {
		size_t len;
		const char *at = list_next(&s, &len);
		struct cidr *grown;

		if (len == 0 || len >= sizeof(item)) {
			config_error_here(p, "%s: expected comma-separated "
			    "addresses or blocks (e.g. 10.0.0.0/8, ::1), got "
			    "'%s'", name, value);
			return;
		}
		memcpy(item, at, len);
		item[len] = '\0';
		if (*n + other >= CIDRS_MAX) {
			config_error_here(p, "%s: more than %d entries in "
			    "allow and deny", name, CIDRS_MAX);
			return;
		}
		grown = realloc(*list, (*n + 1) * sizeof(**list));
		if (grown == NULL) {
			config_error_here(p, "out of memory");
			return;
		}
		*list = grown;
		if (parse_cidr(item, &grown[*n], err, sizeof(err)) != 0) {
			config_error_here(p, "%s: %s", name, err);
			return;
		}
		(*n)++;
	} while (s != NULL);
}

void
config_add_allow(struct parse_ctx *p, void *obj, const struct config_key *k,
    const char *value)
{
	struct service_config *sc = obj;

	add_cidrs(p, k->name, value, &sc->allow, &sc->nallow, sc->ndeny);
	for (size_t i = 0; i < sc->nallow; i++)
		if (sc->allow[i].prefix == 0)
			sc->allow_everyone = true;
}

void
config_add_deny(struct parse_ctx *p, void *obj, const struct config_key *k,
    const char *value)
{
	struct service_config *sc = obj;

	add_cidrs(p, k->name, value, &sc->deny, &sc->ndeny, sc->nallow);
}

/* HOST:PORT or unix:/path for /metrics; "off" (the default) serves none. */
void
config_set_metrics_listen(struct parse_ctx *p, void *obj,
    const struct config_key *k, const char *value)
{
	struct global_config *g = obj;

	g->metrics_on = strcmp(value, "off") != 0;
	if (g->metrics_on)
		config_set_listen(p, obj, k, value);
}

void
config_add_metrics_allow(struct parse_ctx *p, void *obj,
    const struct config_key *k, const char *value)
{
	struct global_config *g = obj;

	add_cidrs(p, k->name, value, &g->metrics_allow, &g->nmetrics_allow, 0);
}
