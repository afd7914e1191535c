/*
 * fuzz_parse.c - libFuzzer target for the value parsers of daemon/parse.h.
 *
 * The first byte picks the parser (low 3 bits) and its options (high bits);
 * the rest is the value, as the NUL-terminated string the config loader
 * would pass. Besides the sanitizers, every result is checked: accepted
 * values are in range and parse again to the same thing when printed back,
 * refused ones come with a message.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "config.h"
#include "fuzz.h"
#include "parse.h"

enum { P_DURATION, P_HOST_PORT, P_LISTEN, P_BOOL, P_CIDR, P_COUNT,
    P_FILE_MODE, P_INTERVAL, P_NPARSERS };

/* A refusal says why, in a string that fits. */
static void
check_err(const char *err)
{
	size_t n = strnlen(err, PARSE_ERR_MAX);

	FUZZ_CHECK(n > 0 && n < PARSE_ERR_MAX);
}

static int
all_digits(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return 0;
	return n > 0;
}

struct ref_unit {
	const char	*unit;
	uint64_t	 scale;
};

/*
 * The reference for both duration parsers: digits, then exactly one of the
 * units, scaled at most to max. 0 and *out, or -1.
 */
static int
reference_scaled(const char *s, const struct ref_unit *units, size_t nunits,
    uint64_t max, uint64_t *out)
{
	size_t digits = strspn(s, "0123456789");
	unsigned long long n;

	errno = 0;
	n = strtoull(s, NULL, 10);
	for (size_t i = 0; i < nunits; i++) {
		if (digits > 0 && errno == 0 &&
		    strcmp(s + digits, units[i].unit) == 0 &&
		    n <= max / units[i].scale) {
			*out = n * units[i].scale;
			return 0;
		}
	}
	return -1;
}

static void
fuzz_duration(const char *s)
{
	static const struct ref_unit units[] = {
		{ "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
	};
	char err[PARSE_ERR_MAX] = "", again[64];
	uint64_t ms = 0, ms2 = 0, n = 0;
	int want = reference_scaled(s, units, sizeof(units) / sizeof(units[0]),
	    DURATION_MAX_MS, &n);

	if (parse_duration_ms(s, &ms, err, sizeof(err)) != 0) {
		FUZZ_CHECK(want != 0);
		check_err(err);
		return;
	}
	FUZZ_CHECK(want == 0 && ms == n && ms <= DURATION_MAX_MS);
	snprintf(again, sizeof(again), "%llums", (unsigned long long)ms);
	FUZZ_CHECK(parse_duration_ms(again, &ms2, err, sizeof(err)) == 0);
	FUZZ_CHECK(ms2 == ms);
}

/* parse_interval_us, as io_collect_interval uses it: us or ms, at most max. */
static void
fuzz_interval(const char *s)
{
	static const struct ref_unit units[] = { { "us", 1 }, { "ms", 1000 } };
	const uint64_t max = IO_COLLECT_MAX_US;
	char err[PARSE_ERR_MAX] = "", again[64];
	uint64_t us = 0, us2 = 0, n = 0;
	int want = reference_scaled(s, units, sizeof(units) / sizeof(units[0]),
	    max, &n);

	if (parse_interval_us(s, max, &us, err, sizeof(err)) != 0) {
		FUZZ_CHECK(want != 0);
		check_err(err);
		return;
	}
	FUZZ_CHECK(want == 0 && us == n && us <= max);
	snprintf(again, sizeof(again), "%lluus", (unsigned long long)us);
	FUZZ_CHECK(parse_interval_us(again, max, &us2, err, sizeof(err)) == 0);
	FUZZ_CHECK(us2 == us);
}

static void
fuzz_host_port(const char *s, int allow_port0)
{
	char err[PARSE_ERR_MAX] = "", again[HOST_MAX + 16];
	struct in6_addr a6;
	struct host_port hp, hp2;
	size_t n;

	if (parse_host_port(s, &hp, allow_port0, err, sizeof(err)) != 0) {
		check_err(err);
		return;
	}
	n = strnlen(hp.host, sizeof(hp.host));
	FUZZ_CHECK(n > 0 && n <= HOST_MAX);
	FUZZ_CHECK(hp.port != 0 || allow_port0);
	FUZZ_CHECK(hp.is_ip_literal == (inet_pton(AF_INET, hp.host, &a6) == 1 ||
	    inet_pton(AF_INET6, hp.host, &a6) == 1));
	/* Printed back (brackets for IPv6), it parses to the same. */
	snprintf(again, sizeof(again), strchr(hp.host, ':') != NULL ?
	    "[%s]:%u" : "%s:%u", hp.host, hp.port);
	FUZZ_CHECK(parse_host_port(again, &hp2, allow_port0, err,
	    sizeof(err)) == 0);
	FUZZ_CHECK(strcmp(hp.host, hp2.host) == 0 && hp.port == hp2.port &&
	    hp.is_ip_literal == hp2.is_ip_literal);
}

static void
fuzz_listen(const char *s)
{
	char err[PARSE_ERR_MAX] = "", text[sizeof(((struct listen_addr *)0)->
	    text) + 16];
	struct listen_addr la, la2;
	int family;

	if (parse_listen_addr(s, &la, err, sizeof(err)) != 0) {
		check_err(err);
		return;
	}
	FUZZ_CHECK(strcmp(la.text, s) == 0);
	FUZZ_CHECK(la.salen > 0 && la.salen <= sizeof(la.sa));
	family = la.sa.ss_family;
	if (la.is_unix) {
		FUZZ_CHECK(family == AF_UNIX);
		FUZZ_CHECK(la.salen == sizeof(struct sockaddr_un));
		FUZZ_CHECK(((struct sockaddr_un *)&la.sa)->sun_path[0] == '/');
	} else {
		FUZZ_CHECK(family == AF_INET || family == AF_INET6);
		FUZZ_CHECK(la.salen == (family == AF_INET ?
		    sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)));
	}
	/* The address as tlsfwd logs it is a listen address for the same. */
	sockaddr_format((struct sockaddr *)&la.sa, la.salen, text,
	    sizeof(text));
	FUZZ_CHECK(parse_listen_addr(text, &la2, err, sizeof(err)) == 0);
	FUZZ_CHECK(listen_addr_equal(&la, &la2));
	(void)sockaddr_is_loopback((struct sockaddr *)&la.sa);
}

static void
fuzz_bool(const char *s)
{
	static const char *const names[] = { "yes", "true", "on", "1", "no",
	    "false", "off", "0" };
	char err[PARSE_ERR_MAX] = "";
	int v = -1, want = -1;

	for (size_t i = 0; i < 8; i++)
		if (strcasecmp(s, names[i]) == 0)
			want = i < 4;
	if (parse_bool(s, &v, err, sizeof(err)) != 0) {
		FUZZ_CHECK(want == -1);
		check_err(err);
		return;
	}
	FUZZ_CHECK(v == want);
}

/* The reference: the first prefix bits of ip equal those of c. */
static int
ref_contains(const struct cidr *c, int family, const unsigned char *ip)
{
	if (family != c->family)
		return 0;
	for (unsigned int bit = 0; bit < c->prefix; bit++) {
		unsigned int m = 0x80u >> (bit % 8);

		if ((ip[bit / 8] & m) != (c->addr[bit / 8] & m))
			return 0;
	}
	return 1;
}

static void
check_contains(const struct cidr *c, int family, const unsigned char *ip)
{
	struct sockaddr_in6 in6;
	struct sockaddr_in in;
	int want = ref_contains(c, family, ip);

	if (family == AF_INET) {
		memset(&in, 0, sizeof(in));
		in.sin_family = AF_INET;
		memcpy(&in.sin_addr, ip, 4);
		FUZZ_CHECK(cidr_contains(c, (struct sockaddr *)&in) == want);
		/* The same client over an IPv6 socket: ::ffff:a.b.c.d. */
		memset(&in6, 0, sizeof(in6));
		in6.sin6_family = AF_INET6;
		in6.sin6_addr.s6_addr[10] = 0xff;
		in6.sin6_addr.s6_addr[11] = 0xff;
		memcpy(in6.sin6_addr.s6_addr + 12, ip, 4);
		FUZZ_CHECK(cidr_contains(c, (struct sockaddr *)&in6) == want);
	} else {
		static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0,
		    0, 0, 0, 0xff, 0xff };

		memset(&in6, 0, sizeof(in6));
		in6.sin6_family = AF_INET6;
		memcpy(in6.sin6_addr.s6_addr, ip, 16);
		/*
		 * An IPv4 client on a dual-stack socket reads ::ffff:a.b.c.d:
		 * it is the IPv4 client, so IPv4 blocks match it, and so does
		 * a block written in that form (as the logs show the client).
		 * IPv6 blocks wider than /96 (::/0) stay IPv6 only.
		 */
		if (memcmp(ip, mapped, sizeof(mapped)) == 0)
			want = ref_contains(c, AF_INET, ip + 12) ||
			    (c->prefix >= 96 && want);
		FUZZ_CHECK(cidr_contains(c, (struct sockaddr *)&in6) == want);
	}
}

static void
fuzz_cidr(const char *s)
{
	static const char *const v4[] = { "127.0.0.1", "10.1.2.3",
	    "0.0.0.0", "255.255.255.255", "192.168.1.1", "10.0.0.0" };
	static const char *const v6[] = { "::1", "::", "2001:db8::1",
	    "fe80::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
	    "::ffff:10.1.2.3", "::ffff:127.0.0.1", "fd00::" };
	char err[PARSE_ERR_MAX] = "", text[INET6_ADDRSTRLEN + 8];
	unsigned char ip[16];
	struct sockaddr_un un;
	struct cidr c, c2;
	unsigned int bits;

	if (parse_cidr(s, &c, err, sizeof(err)) != 0) {
		check_err(err);
		return;
	}
	FUZZ_CHECK(c.family == AF_INET || c.family == AF_INET6);
	bits = c.family == AF_INET ? 32 : 128;
	FUZZ_CHECK(c.prefix <= bits);
	/* Host bits are zero, so the block contains its own address... */
	for (unsigned int bit = c.prefix; bit < bits; bit++)
		FUZZ_CHECK((c.addr[bit / 8] & (0x80u >> (bit % 8))) == 0);
	check_contains(&c, c.family, c.addr);
	/* ...and the one with the last bit flipped only if it is a /bits. */
	memcpy(ip, c.addr, sizeof(ip));
	ip[bits / 8 - 1] ^= 1;
	check_contains(&c, c.family, ip);
	for (size_t i = 0; i < sizeof(v4) / sizeof(v4[0]); i++) {
		FUZZ_CHECK(inet_pton(AF_INET, v4[i], ip) == 1);
		check_contains(&c, AF_INET, ip);
	}
	for (size_t i = 0; i < sizeof(v6) / sizeof(v6[0]); i++) {
		FUZZ_CHECK(inet_pton(AF_INET6, v6[i], ip) == 1);
		check_contains(&c, AF_INET6, ip);
	}
	memset(&un, 0, sizeof(un));
	un.sun_family = AF_UNIX;
	FUZZ_CHECK(cidr_contains(&c, (struct sockaddr *)&un) == 0);
	/* Printed back, it is the same block. */
	FUZZ_CHECK(inet_ntop(c.family, c.addr, text, INET6_ADDRSTRLEN) !=
	    NULL);
	snprintf(text + strlen(text), 8, "/%u", c.prefix);
	FUZZ_CHECK(parse_cidr(text, &c2, err, sizeof(err)) == 0);
	FUZZ_CHECK(memcmp(&c, &c2, sizeof(c)) == 0);
}

static void
fuzz_count(const char *s, unsigned int which)
{
	/* What tlsfwd asks for, and the widest ranges the type allows. */
	static const struct { unsigned long min, max; } ranges[] = {
		{ 1, CONNECTIONS_MAX }, { 0, 32 }, { 0, 128 }, { 0, 0 },
		{ 0, ULONG_MAX }, { 1, ULONG_MAX - 1 }, { 5, 7 },
		{ ULONG_MAX, ULONG_MAX },
	};
	unsigned long min = ranges[which % 8].min, max = ranges[which % 8].max;
	char err[PARSE_ERR_MAX] = "";
	unsigned long out = 0, n;
	int want;

	errno = 0;
	n = strtoul(s, NULL, 10);
	want = all_digits(s, strlen(s)) && errno == 0 && n >= min && n <= max;
	if (parse_count(s, min, max, &out, err, sizeof(err)) != 0) {
		FUZZ_CHECK(!want);
		check_err(err);
		return;
	}
	FUZZ_CHECK(want && out == n);
}

static void
fuzz_file_mode(const char *s)
{
	char err[PARSE_ERR_MAX] = "";
	size_t n = strlen(s);
	unsigned int mode = 01000;
	unsigned long want;
	int ok;

	ok = n >= 1 && n <= 4 && strspn(s, "01234567") == n;
	want = ok ? strtoul(s, NULL, 8) : 0;
	ok = ok && want <= 0777;
	if (parse_file_mode(s, &mode, err, sizeof(err)) != 0) {
		FUZZ_CHECK(!ok);
		check_err(err);
		return;
	}
	FUZZ_CHECK(ok && mode == want);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s;

	if (size < 1)
		return 0;
	/* An exact-size copy, so that reading past the NUL is caught. */
	if ((s = malloc(size)) == NULL)
		return 0;
	memcpy(s, data + 1, size - 1);
	s[size - 1] = '\0';
	switch (data[0] % P_NPARSERS) {
	case P_DURATION:
		fuzz_duration(s);
		break;
	case P_HOST_PORT:
		fuzz_host_port(s, (data[0] & 0x80) != 0);
		break;
	case P_LISTEN:
		fuzz_listen(s);
		break;
	case P_BOOL:
		fuzz_bool(s);
		break;
	case P_CIDR:
		fuzz_cidr(s);
		break;
	case P_COUNT:
		fuzz_count(s, (unsigned int)data[0] >> 5);
		break;
	case P_FILE_MODE:
		fuzz_file_mode(s);
		break;
	case P_INTERVAL:
		fuzz_interval(s);
		break;
	}
	free(s);
	return 0;
}
