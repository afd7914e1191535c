/*
 * parse.c - parsers for config values: durations, host:port, listen
 * addresses, address blocks, counts, modes; and the socket address helpers
 * the listeners share (loopback test, formatting, listen address equality).
 */
#include "parse.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int
fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

/* A number followed by one of a table's units, scaled, at most max. */
struct duration_unit {
	const char	*name;
	uint64_t	 scale;
};

struct duration_kind {
	const struct duration_unit	*units;
	size_t				 nunits;
	uint64_t			 max;
	const char			*list;		/* "ms, s, m, h" */
	const char			*list_or;	/* "ms, s, m or h" */
	const char			*unit1, *unit2;	/* for "write e.g." */
};

static int
parse_scaled(const struct duration_kind *k, const char *s, uint64_t *out,
    char *err, size_t errlen)
{
	uint64_t n = 0;
	const char *p = s;

	if (!isdigit((unsigned char)*p))
		return fail(err, errlen, "invalid duration '%s': expected a "
		    "number with a unit (%s), e.g. 5%s", s, k->list, k->unit2);
	for (; isdigit((unsigned char)*p); p++) {
		n = n * 10 + (uint64_t)(*p - '0');
		if (n > k->max)
			return fail(err, errlen, "duration '%s' is too large",
			    s);
	}
	if (*p == '\0')
		return fail(err, errlen, "duration '%s' has no unit: write "
		    "e.g. %s%s or %s%s", s, s, k->unit1, s, k->unit2);
	for (size_t i = 0; i < k->nunits; i++) {
		if (strcmp(p, k->units[i].name) != 0)
			continue;
		if (n > k->max / k->units[i].scale)
			return fail(err, errlen, "duration '%s' is too large",
			    s);
		*out = n * k->units[i].scale;
		return 0;
	}
	return fail(err, errlen, "invalid duration unit in '%s': use %s", s,
	    k->list_or);
}

int
parse_duration_ms(const char *s, uint64_t *ms, char *err, size_t errlen)
{
	static const struct duration_unit units[] = {
		{ "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
	};
	static const struct duration_kind kind = {
		units, sizeof(units) / sizeof(units[0]), DURATION_MAX_MS,
		"ms, s, m, h", "ms, s, m or h", "ms", "s",
	};

	return parse_scaled(&kind, s, ms, err, errlen);
}

int
parse_interval_us(const char *s, uint64_t max_us, uint64_t *us, char *err,
    size_t errlen)
{
	static const struct duration_unit units[] = {
		{ "us", 1 }, { "ms", 1000 },
	};
	struct duration_kind kind = {
		units, sizeof(units) / sizeof(units[0]), max_us,
		"us, ms", "us or ms", "us", "ms",
	};

	return parse_scaled(&kind, s, us, err, errlen);
}

static int
parse_port(const char *s, uint16_t *port, int allow_port0, const char *whole,
    char *err, size_t errlen)
{
	unsigned long v = 0;

	if (*s == '\0')
		return fail(err, errlen, "missing port in '%s'", whole);
	for (const char *p = s; *p; p++) {
		if (!isdigit((unsigned char)*p) || p - s >= 5)
			return fail(err, errlen, "invalid port '%s' in '%s': "
			    "expected 1-65535", s, whole);
		v = v * 10 + (unsigned long)(*p - '0');
	}
	if (v > 65535 || (v == 0 && !allow_port0))
		return fail(err, errlen, "port %lu out of range in '%s': "
		    "expected %s-65535", v, whole, allow_port0 ? "0" : "1");
	*port = (uint16_t)v;
	return 0;
}

static int
is_ip_literal(const char *host)
{
	struct in6_addr a6;
	struct in_addr a4;

	return inet_pton(AF_INET, host, &a4) == 1 ||
	    inet_pton(AF_INET6, host, &a6) == 1;
}

/* RFC 1123 host name: labels of [A-Za-z0-9-_], dots between. */
static int
is_host_name(const char *host)
{
	size_t label = 0;

	for (const char *p = host; *p; p++) {
		if (*p == '.') {
			if (label == 0)
				return 0;
			label = 0;
		} else if (isalnum((unsigned char)*p) || *p == '-' ||
		    *p == '_') {
			if (++label > 63)
				return 0;
		} else {
			return 0;
		}
	}
	return host[0] != '\0';
}

int
parse_host_port(const char *s, struct host_port *hp, int allow_port0,
    char *err, size_t errlen)
{
	const char *host, *colon;
	size_t hostlen;

	memset(hp, 0, sizeof(*hp));
	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (close == NULL)
			return fail(err, errlen, "missing ']' in '%s'", s);
		if (close[1] != ':')
			return fail(err, errlen, "expected ':PORT' after ']' "
			    "in '%s'", s);
		host = s + 1;
		hostlen = (size_t)(close - host);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL)
			return fail(err, errlen, "expected HOST:PORT or "
			    "[V6]:PORT, got '%s'", s);
		if (memchr(s, ':', (size_t)(colon - s)) != NULL)
			return fail(err, errlen, "IPv6 address needs brackets: "
			    "[V6]:PORT, got '%s'", s);
		host = s;
		hostlen = (size_t)(colon - s);
	}
	if (hostlen == 0)
		return fail(err, errlen, "missing host in '%s'", s);
	if (hostlen > HOST_MAX)
		return fail(err, errlen, "host name too long in '%s'", s);
	memcpy(hp->host, host, hostlen);
	hp->host[hostlen] = '\0';
	hp->is_ip_literal = is_ip_literal(hp->host);
	if (s[0] == '[' && (!hp->is_ip_literal || strchr(hp->host, ':') ==
	    NULL))
		return fail(err, errlen, "'%s' in brackets is not an IPv6 "
		    "address", hp->host);
	if (!hp->is_ip_literal && !is_host_name(hp->host))
		return fail(err, errlen, "invalid host '%s' in '%s'",
		    hp->host, s);
	return parse_port(colon + 1, &hp->port, allow_port0, s, err, errlen);
}

int
parse_listen_addr(const char *s, struct listen_addr *la, char *err,
    size_t errlen)
{
	struct addrinfo hints, *res = NULL;
	struct host_port hp;
	char port[8];
	int rc;

	memset(la, 0, sizeof(*la));
	if (strlen(s) >= sizeof(la->text))
		return fail(err, errlen, "listen address too long");
	snprintf(la->text, sizeof(la->text), "%s", s);
	if (strncmp(s, "unix:", 5) == 0) {
		struct sockaddr_un *sun = (struct sockaddr_un *)&la->sa;
		const char *path = s + 5;

		if (path[0] != '/')
			return fail(err, errlen, "unix socket path must be "
			    "absolute: '%s'", s);
		if (strlen(path) >= sizeof(sun->sun_path))
			return fail(err, errlen, "unix socket path longer than "
			    "%zu bytes: '%s'", sizeof(sun->sun_path) - 1, s);
		sun->sun_family = AF_UNIX;
		memcpy(sun->sun_path, path, strlen(path) + 1);
		la->salen = (socklen_t)sizeof(*sun);
		la->is_unix = 1;
		return 0;
	}
	if (parse_host_port(s, &hp, 1, err, errlen) != 0)
		return -1;
	if (strcmp(hp.host, "localhost") == 0)
		snprintf(hp.host, sizeof(hp.host), "127.0.0.1");
	if (!hp.is_ip_literal && strcmp(hp.host, "127.0.0.1") != 0)
		return fail(err, errlen, "listen host must be an IP address "
		    "(e.g. 127.0.0.1, [::1], 0.0.0.0) or localhost, got '%s'",
		    hp.host);
	memset(&hints, 0, sizeof(hints));
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(port, sizeof(port), "%u", hp.port);
	/* Numeric only: this never touches DNS. */
	rc = getaddrinfo(hp.host, port, &hints, &res);
	if (rc != 0 || res == NULL)
		return fail(err, errlen, "invalid listen address '%s': %s", s,
		    gai_strerror(rc));
	memcpy(&la->sa, res->ai_addr, res->ai_addrlen);
	la->salen = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

int
parse_bool(const char *s, int *out, char *err, size_t errlen)
{
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };

	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	return fail(err, errlen, "expected yes or no, got '%s'", s);
}

/* ::ffff:0:0/96, where IPv6 sockets show IPv4 clients. */
static const unsigned char v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0xff, 0xff };

int
parse_cidr(const char *s, struct cidr *c, char *err, size_t errlen)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(s, '/');
	size_t hostlen = slash != NULL ? (size_t)(slash - s) : strlen(s);
	unsigned int bits, nbytes;

	memset(c, 0, sizeof(*c));
	if (hostlen == 0 || hostlen >= sizeof(host))
		return fail(err, errlen, "invalid address block '%s': expected "
		    "ADDRESS or ADDRESS/PREFIX, e.g. 10.0.0.0/8 or ::1", s);
	memcpy(host, s, hostlen);
	host[hostlen] = '\0';
	if (inet_pton(AF_INET, host, c->addr) == 1) {
		c->family = AF_INET;
		bits = 32;
	} else if (inet_pton(AF_INET6, host, c->addr) == 1) {
		c->family = AF_INET6;
		bits = 128;
	} else {
		return fail(err, errlen, "invalid address block '%s': '%s' is "
		    "not an IPv4 or IPv6 address", s, host);
	}
	c->prefix = bits;
	if (slash != NULL) {
		unsigned long n;
		char perr[PARSE_ERR_MAX];

		if (parse_count(slash + 1, 0, bits, &n, perr,
		    sizeof(perr)) != 0)
			return fail(err, errlen, "invalid address block '%s': "
			    "prefix length must be 0-%u", s, bits);
		c->prefix = (unsigned int)n;
	}
	/* 10.1.2.3/8 is almost always a typo for 10.0.0.0/8 or a /32. */
	nbytes = bits / 8;
	for (unsigned int i = 0; i < nbytes; i++) {
		unsigned int keep = c->prefix > i * 8 ? c->prefix - i * 8 : 0;
		unsigned char mask = keep >= 8 ? 0xff :
		    (unsigned char)(0xff00u >> keep);

		if (c->addr[i] & (unsigned char)~mask)
			return fail(err, errlen, "invalid address block '%s': "
			    "host bits are set after /%u", s, c->prefix);
	}
	/*
	 * ::ffff:a.b.c.d/96+n is the IPv4 block a.b.c.d/n. A dual-stack
	 * socket (one passed by systemd, say) logs IPv4 clients in that form,
	 * and cidr_contains() matches them as IPv4: kept as IPv6, such a
	 * block would match no one, and a deny would let them all in.
	 */
	if (c->family == AF_INET6 && c->prefix >= 96 &&
	    memcmp(c->addr, v4mapped, sizeof(v4mapped)) == 0) {
		memmove(c->addr, c->addr + 12, 4);
		memset(c->addr + 4, 0, 12);
		c->family = AF_INET;
		c->prefix -= 96;
	}
	return 0;
}

/* The IP address of sa as bytes, unwrapping IPv4-mapped IPv6; 0 if none. */
static int
sockaddr_ip(const struct sockaddr *sa, int *family, const unsigned char **ip)
{
	if (sa->sa_family == AF_INET) {
		*family = AF_INET;
		*ip = (const unsigned char *)
		    &((const struct sockaddr_in *)sa)->sin_addr;
		return 1;
	}
	if (sa->sa_family == AF_INET6) {
		const unsigned char *a = ((const struct sockaddr_in6 *)sa)->
		    sin6_addr.s6_addr;

		if (memcmp(a, v4mapped, sizeof(v4mapped)) == 0) {
			*family = AF_INET;
			*ip = a + 12;
		} else {
			*family = AF_INET6;
			*ip = a;
		}
		return 1;
	}
	return 0;
}

int
cidr_contains(const struct cidr *c, const struct sockaddr *sa)
{
	const unsigned char *ip;
	unsigned int full, rest;
	int family;

	if (!sockaddr_ip(sa, &family, &ip) || family != c->family)
		return 0;
	full = c->prefix / 8;
	rest = c->prefix % 8;
	if (memcmp(ip, c->addr, full) != 0)
		return 0;
	return rest == 0 || ((ip[full] ^ c->addr[full]) &
	    (unsigned char)(0xff00u >> rest)) == 0;
}

int
sockaddr_is_loopback(const struct sockaddr *sa)
{
	const unsigned char *ip;
	int family;

	if (!sockaddr_ip(sa, &family, &ip))
		return 0;
	if (family == AF_INET)
		return ip[0] == 127;
	return memcmp(ip, in6addr_loopback.s6_addr, 16) == 0;
}

int
parse_count(const char *s, unsigned long min, unsigned long max,
    unsigned long *out, char *err, size_t errlen)
{
	unsigned long n = 0;
	const char *p = s;

	if (!isdigit((unsigned char)*p))
		return fail(err, errlen, "expected a number from %lu to %lu, "
		    "got '%s'", min, max, s);
	for (; isdigit((unsigned char)*p); p++) {
		unsigned long d = (unsigned long)(*p - '0');

		/*
		 * Stop above max, and before n * 10 + d wraps around: with a max
		 * near ULONG_MAX, a wrapped n would pass as in range.
		 */
		if (n > max || n > (ULONG_MAX - d) / 10)
			break;
		n = n * 10 + d;
	}
	if (*p != '\0' || n < min || n > max)
		return fail(err, errlen, "expected a number from %lu to %lu, "
		    "got '%s'", min, max, s);
	*out = n;
	return 0;
}

int
parse_file_mode(const char *s, unsigned int *mode, char *err, size_t errlen)
{
	unsigned int m = 0;
	const char *p = s;

	if (*p == '\0' || strlen(s) > 4)
		return fail(err, errlen, "expected octal permissions such as "
		    "0660, got '%s'", s);
	for (; *p != '\0'; p++) {
		if (*p < '0' || *p > '7')
			return fail(err, errlen, "expected octal permissions "
			    "such as 0660, got '%s'", s);
		m = m * 8 + (unsigned int)(*p - '0');
	}
	if (m > 0777)
		return fail(err, errlen, "permissions above 0777 (setuid, "
		    "setgid, sticky) make no sense on a socket: '%s'", s);
	*mode = m;
	return 0;
}

void
sockaddr_format(const struct sockaddr *sa, socklen_t len, char *buf,
    size_t buflen)
{
	char host[INET6_ADDRSTRLEN];

	switch (sa->sa_family) {
	case AF_INET: {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(buf, buflen, "%s:%u", host, ntohs(in->sin_port));
		break;
	}
	case AF_INET6: {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(buf, buflen, "[%s]:%u", host, ntohs(in6->sin6_port));
		break;
	}
	case AF_UNIX: {
		const struct sockaddr_un *un = (const struct sockaddr_un *)sa;

		if (len > (socklen_t)offsetof(struct sockaddr_un, sun_path) &&
		    un->sun_path[0] != '\0')
			snprintf(buf, buflen, "unix:%s", un->sun_path);
		else
			snprintf(buf, buflen, "unix");
		break;
	}
	default:
		snprintf(buf, buflen, "-");
	}
}

bool
listen_addr_equal(const struct listen_addr *a, const struct listen_addr *b)
{
	if (a->salen == 0 || b->salen == 0 || a->salen != b->salen ||
	    a->sa.ss_family != b->sa.ss_family)
		return false;	/* unparsable ones were reported already */
	if (a->is_unix)
		return strcmp(((const struct sockaddr_un *)&a->sa)->sun_path,
		    ((const struct sockaddr_un *)&b->sa)->sun_path) == 0;
	if (a->sa.ss_family == AF_INET) {
		const struct sockaddr_in *x = (const struct sockaddr_in *)&a->sa;
		const struct sockaddr_in *y = (const struct sockaddr_in *)&b->sa;

		return x->sin_port == y->sin_port &&
		    x->sin_addr.s_addr == y->sin_addr.s_addr;
	} else {
		const struct sockaddr_in6 *x =
		    (const struct sockaddr_in6 *)&a->sa;
		const struct sockaddr_in6 *y =
		    (const struct sockaddr_in6 *)&b->sa;

		return x->sin6_port == y->sin6_port &&
		    memcmp(&x->sin6_addr, &y->sin6_addr,
		    sizeof(x->sin6_addr)) == 0;
	}
}

bool
listen_addr_same(const struct listen_addr *a, const struct listen_addr *b)
{
	/* Two services on port 0 get two different ephemeral ports. */
	if (!a->is_unix && a->sa.ss_family == AF_INET &&
	    ((const struct sockaddr_in *)&a->sa)->sin_port == 0)
		return false;
	if (!a->is_unix && a->sa.ss_family == AF_INET6 &&
	    ((const struct sockaddr_in6 *)&a->sa)->sin6_port == 0)
		return false;
	return listen_addr_equal(a, b);
}
