/* test_parse.c - unit tests for daemon/parse.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "parse.h"

/* Fails the test unless needle occurs in haystack. */
static void
assert_contains(const char *haystack, const char *needle)
{
	if (strstr(haystack, needle) == NULL)
		fail_msg("expected '%s' in '%s'", needle, haystack);
}

/* Fills buf with n copies of c (buf has room for n + 1). */
static char *
repeat(char *buf, char c, size_t n)
{
	memset(buf, c, n);
	buf[n] = '\0';
	return buf;
}

/* ---- parse_duration_ms ---- */

static uint64_t
duration_ok(const char *s)
{
	char err[PARSE_ERR_MAX] = "";
	uint64_t ms = 12345;

	if (parse_duration_ms(s, &ms, err, sizeof(err)) != 0)
		fail_msg("parse_duration_ms('%s') failed: %s", s, err);
	return ms;
}

/* Asserts that s is rejected, with a message containing what. */
static void
duration_bad(const char *s, const char *what)
{
	char err[PARSE_ERR_MAX] = "";
	uint64_t ms = 777;

	if (parse_duration_ms(s, &ms, err, sizeof(err)) != -1)
		fail_msg("parse_duration_ms('%s') accepted: %llu", s,
		    (unsigned long long)ms);
	assert_int_equal(ms, 777);	/* output untouched on error */
	assert_contains(err, what);
}

/* ---- parse_interval_us ---- */

static void
test_interval_us(void **state)
{
	char err[PARSE_ERR_MAX] = "";
	uint64_t us = 1;

	(void)state;
	assert_int_equal(parse_interval_us("20us", 10000, &us, err,
	    sizeof(err)), 0);
	assert_int_equal(us, 20);
	assert_int_equal(parse_interval_us("0us", 10000, &us, err,
	    sizeof(err)), 0);
	assert_int_equal(us, 0);
	assert_int_equal(parse_interval_us("10ms", 10000, &us, err,
	    sizeof(err)), 0);
	assert_int_equal(us, 10000);
	us = 777;
	assert_int_equal(parse_interval_us("11ms", 10000, &us, err,
	    sizeof(err)), -1);
	assert_contains(err, "too large");
	assert_int_equal(parse_interval_us("20", 10000, &us, err,
	    sizeof(err)), -1);
	assert_contains(err, "write e.g. 20us or 20ms");
	assert_int_equal(parse_interval_us("1s", 10000, &us, err,
	    sizeof(err)), -1);
	assert_contains(err, "use us or ms");
	assert_int_equal(parse_interval_us("-5us", 10000, &us, err,
	    sizeof(err)), -1);
	assert_int_equal(parse_interval_us("99999999999999999999999us", 10000,
	    &us, err, sizeof(err)), -1);
	assert_int_equal(us, 777);
}

static void
test_duration_units(void **state)
{
	(void)state;
	assert_int_equal(duration_ok("250ms"), 250);
	assert_int_equal(duration_ok("1ms"), 1);
	assert_int_equal(duration_ok("5s"), 5000);
	assert_int_equal(duration_ok("2m"), 120000);
	assert_int_equal(duration_ok("1h"), 3600000);
	assert_int_equal(duration_ok("10s"), 10000);
	assert_int_equal(duration_ok("300s"), 300000);
	assert_int_equal(duration_ok("007s"), 7000);
}

static void
test_duration_zero(void **state)
{
	(void)state;
	/* The parser accepts 0 with a unit; config rejects 0 timeouts. */
	assert_int_equal(duration_ok("0ms"), 0);
	assert_int_equal(duration_ok("0s"), 0);
	assert_int_equal(duration_ok("0h"), 0);
	/* A bare 0 has no unit. */
	duration_bad("0", "has no unit");
}

static void
test_duration_missing_unit(void **state)
{
	(void)state;
	duration_bad("5", "duration '5' has no unit");
	duration_bad("5", "5ms");
	duration_bad("250", "has no unit");
}

static void
test_duration_bad_unit(void **state)
{
	(void)state;
	duration_bad("5x", "invalid duration unit in '5x'");
	duration_bad("5sec", "invalid duration unit");
	duration_bad("5S", "invalid duration unit");	/* case-sensitive */
	duration_bad("5 s", "invalid duration unit");
	duration_bad("5s ", "invalid duration unit");
	duration_bad("5d", "invalid duration unit");
	duration_bad("5mss", "invalid duration unit");
	duration_bad("1.5s", "invalid duration unit");
	duration_bad("5ms5", "invalid duration unit");
}

static void
test_duration_not_a_number(void **state)
{
	(void)state;
	duration_bad("-5s", "invalid duration '-5s'");
	duration_bad("+5s", "invalid duration");
	duration_bad("", "invalid duration ''");
	duration_bad("s", "invalid duration");
	duration_bad("ms", "invalid duration");
	duration_bad(" 5s", "invalid duration");
	duration_bad("\t5s", "invalid duration");
	duration_bad("five seconds", "expected a number with a unit");
}

static void
test_duration_limits(void **state)
{
	(void)state;
	/* DURATION_MAX_MS is one year: accepted in every unit... */
	assert_int_equal(duration_ok("31536000000ms"), DURATION_MAX_MS);
	assert_int_equal(duration_ok("31536000s"), DURATION_MAX_MS);
	assert_int_equal(duration_ok("525600m"), DURATION_MAX_MS);
	assert_int_equal(duration_ok("8760h"), DURATION_MAX_MS);
	/* ...and one more is too large, in every unit. */
	duration_bad("31536000001ms", "duration '31536000001ms' is too large");
	duration_bad("31536001s", "too large");
	duration_bad("525601m", "too large");
	duration_bad("8761h", "too large");
	/* Values that would overflow uint64_t are caught, not wrapped. */
	duration_bad("18446744073709551616ms", "too large");	/* 2^64 */
	duration_bad("18446744073709551617s", "too large");
	duration_bad("99999999999999999999999999999999999999h", "too large");
	/* Values whose product with the unit would wrap modulo 2^64. */
	duration_bad("5124095576031h", "too large");
	duration_bad("307445734561826m", "too large");
	duration_bad("18446744073709552s", "too large");
}

/* ---- parse_host_port ---- */

static void
host_port_ok(const char *s, int allow0, const char *host, unsigned port,
    int literal)
{
	char err[PARSE_ERR_MAX] = "";
	struct host_port hp;

	if (parse_host_port(s, &hp, allow0, err, sizeof(err)) != 0)
		fail_msg("parse_host_port('%s') failed: %s", s, err);
	assert_string_equal(hp.host, host);
	assert_int_equal(hp.port, port);
	assert_int_equal(hp.is_ip_literal, literal);
}

static void
host_port_bad(const char *s, int allow0, const char *what)
{
	char err[PARSE_ERR_MAX] = "";
	struct host_port hp;

	if (parse_host_port(s, &hp, allow0, err, sizeof(err)) != -1)
		fail_msg("parse_host_port('%s') accepted: host '%s' port %u",
		    s, hp.host, hp.port);
	assert_contains(err, what);
}

static void
test_host_port_ok(void **state)
{
	(void)state;
	host_port_ok("example.com:443", 0, "example.com", 443, 0);
	host_port_ok("localhost:1", 0, "localhost", 1, 0);
	host_port_ok("a:65535", 0, "a", 65535, 0);
	host_port_ok("my-host_1.internal:8443", 0, "my-host_1.internal", 8443,
	    0);
	host_port_ok("EXAMPLE.COM:80", 0, "EXAMPLE.COM", 80, 0);
	host_port_ok("example.com:00080", 0, "example.com", 80, 0);
}

static void
test_host_port_ip_literals(void **state)
{
	(void)state;
	host_port_ok("127.0.0.1:443", 0, "127.0.0.1", 443, 1);
	host_port_ok("0.0.0.0:80", 0, "0.0.0.0", 80, 1);
	host_port_ok("[::1]:443", 0, "::1", 443, 1);
	host_port_ok("[2001:db8::1]:8443", 0, "2001:db8::1", 8443, 1);
	host_port_ok("[::ffff:192.0.2.1]:1", 0, "::ffff:192.0.2.1", 1, 1);
	host_port_ok("[::]:0", 1, "::", 0, 1);
	/* Not a valid IPv4 address, but a valid host name. */
	host_port_ok("1.2.3:80", 0, "1.2.3", 80, 0);
	host_port_ok("256.1.1.1:80", 0, "256.1.1.1", 80, 0);
}

static void
test_host_port_missing_port(void **state)
{
	(void)state;
	host_port_bad("example.com", 0,
	    "expected HOST:PORT or [V6]:PORT, got 'example.com'");
	host_port_bad("example.com:", 0, "missing port in 'example.com:'");
	host_port_bad("[::1]", 0, "expected ':PORT' after ']' in '[::1]'");
	host_port_bad("[::1]:", 0, "missing port in '[::1]:'");
	host_port_bad("[::1]443", 0, "expected ':PORT' after ']'");
	host_port_bad("[::1:443", 0, "missing ']' in '[::1:443'");
	host_port_bad("", 0, "expected HOST:PORT");
}

static void
test_host_port_port0(void **state)
{
	(void)state;
	host_port_bad("example.com:0", 0,
	    "port 0 out of range in 'example.com:0': expected 1-65535");
	host_port_bad("[::1]:0", 0, "port 0 out of range");
	host_port_bad("a:00000", 0, "port 0 out of range");
	host_port_ok("example.com:0", 1, "example.com", 0, 0);
	host_port_ok("127.0.0.1:0", 1, "127.0.0.1", 0, 1);
	host_port_bad("a:65536", 1, "port 65536 out of range in 'a:65536': "
	    "expected 0-65535");
}

static void
test_host_port_bad_port(void **state)
{
	(void)state;
	host_port_bad("a:65536", 0, "port 65536 out of range");
	host_port_bad("a:99999", 0, "port 99999 out of range");
	host_port_bad("a:100000", 0, "invalid port '100000' in 'a:100000'");
	host_port_bad("a:4294967297", 0, "invalid port");	/* no wrap */
	host_port_bad("a:http", 0, "invalid port 'http' in 'a:http': "
	    "expected 1-65535");
	host_port_bad("a:80x", 0, "invalid port '80x'");
	host_port_bad("a:-1", 0, "invalid port '-1'");
	host_port_bad("a:+80", 0, "invalid port");
	host_port_bad("a: 80", 0, "invalid port");
	host_port_bad("a:80 ", 0, "invalid port");
	host_port_bad("[::1]:https", 0, "invalid port 'https'");
}

static void
test_host_port_v6_needs_brackets(void **state)
{
	(void)state;
	host_port_bad("::1:443", 0, "IPv6 address needs brackets: [V6]:PORT, "
	    "got '::1:443'");
	host_port_bad("2001:db8::1:443", 0, "IPv6 address needs brackets");
	host_port_bad("a:b:443", 0, "IPv6 address needs brackets");
}

static void
test_host_port_brackets_not_v6(void **state)
{
	(void)state;
	host_port_bad("[127.0.0.1]:80", 0,
	    "'127.0.0.1' in brackets is not an IPv6 address");
	host_port_bad("[example.com]:80", 0,
	    "'example.com' in brackets is not an IPv6 address");
	host_port_bad("[::zz]:80", 0, "in brackets is not an IPv6 address");
	host_port_bad("[fe80::1%eth0]:80", 0,
	    "in brackets is not an IPv6 address");
}

static void
test_host_port_empty_host(void **state)
{
	(void)state;
	host_port_bad(":443", 0, "missing host in ':443'");
	host_port_bad("[]:443", 0, "missing host in '[]:443'");
	host_port_bad(":", 0, "missing host");
}

static void
test_host_port_invalid_host(void **state)
{
	(void)state;
	host_port_bad("exa mple.com:443", 0,
	    "invalid host 'exa mple.com' in 'exa mple.com:443'");
	host_port_bad("a/b:443", 0, "invalid host 'a/b'");
	host_port_bad("a..b:443", 0, "invalid host 'a..b'");
	host_port_bad(".a:443", 0, "invalid host '.a'");
	host_port_bad("a@b:443", 0, "invalid host");
	host_port_bad("a]:443", 0, "invalid host");
	host_port_bad("h\xc3\xa9.com:443", 0, "invalid host");
	host_port_bad("a\tb:443", 0, "invalid host");
}

static void
test_host_port_long_host(void **state)
{
	char host[HOST_MAX + 2], in[HOST_MAX + 16];
	char label[70];
	size_t i;

	(void)state;
	/* 255 characters of 63-character labels: the longest valid name. */
	host[0] = '\0';
	repeat(label, 'a', 63);
	for (i = 0; i < 4; i++) {
		if (i > 0)
			strcat(host, ".");
		strcat(host, label);
	}
	assert_int_equal(strlen(host), 255);
	snprintf(in, sizeof(in), "%s:443", host);
	host_port_ok(in, 0, host, 443, 0);

	/* 256 characters: too long. */
	strcat(host, "b");
	snprintf(in, sizeof(in), "%s:443", host);
	host_port_bad(in, 0, "host name too long");
	repeat(host, 'a', HOST_MAX + 1);
	snprintf(in, sizeof(in), "%s:1", host);
	host_port_bad(in, 0, "host name too long");

	/* A label longer than 63 characters is not a host name. */
	repeat(label, 'a', 64);
	snprintf(in, sizeof(in), "%s.com:443", label);
	host_port_bad(in, 0, "invalid host");
	repeat(label, 'a', 63);
	snprintf(host, sizeof(host), "%s.com", label);
	snprintf(in, sizeof(in), "%s:443", host);
	host_port_ok(in, 0, host, 443, 0);
}

/* The error message is cut to errlen, never overflowing err. */
static void
test_host_port_small_err(void **state)
{
	char err[8];
	struct host_port hp;

	(void)state;
	memset(err, 'Z', sizeof(err));
	assert_int_equal(parse_host_port("nonsense", &hp, 0, err, sizeof(err)),
	    -1);
	assert_int_equal(strlen(err), sizeof(err) - 1);
}

/* ---- parse_listen_addr ---- */

static void
listen_ok(const char *s, struct listen_addr *la)
{
	char err[PARSE_ERR_MAX] = "";

	if (parse_listen_addr(s, la, err, sizeof(err)) != 0)
		fail_msg("parse_listen_addr('%s') failed: %s", s, err);
	assert_string_equal(la->text, s);
}

static void
listen_bad(const char *s, const char *what)
{
	char err[PARSE_ERR_MAX] = "";
	struct listen_addr la;

	if (parse_listen_addr(s, &la, err, sizeof(err)) != -1)
		fail_msg("parse_listen_addr('%s') accepted", s);
	assert_contains(err, what);
}

static void
test_listen_ipv4(void **state)
{
	struct listen_addr la;
	const struct sockaddr_in *in;
	char buf[128];

	(void)state;
	listen_ok("127.0.0.1:0", &la);
	in = (const struct sockaddr_in *)&la.sa;
	assert_int_equal(la.is_unix, 0);
	assert_int_equal(in->sin_family, AF_INET);
	assert_int_equal(la.salen, sizeof(struct sockaddr_in));
	assert_int_equal(ntohs(in->sin_port), 0);
	assert_int_equal(ntohl(in->sin_addr.s_addr), INADDR_LOOPBACK);
	sockaddr_format((const struct sockaddr *)&la.sa, la.salen, buf,
	    sizeof(buf));
	assert_string_equal(buf, "127.0.0.1:0");

	listen_ok("0.0.0.0:8443", &la);
	in = (const struct sockaddr_in *)&la.sa;
	assert_int_equal(ntohs(in->sin_port), 8443);
	assert_int_equal(ntohl(in->sin_addr.s_addr), INADDR_ANY);
}

static void
test_listen_ipv6(void **state)
{
	struct listen_addr la;
	const struct sockaddr_in6 *in6;
	char buf[128];

	(void)state;
	listen_ok("[::1]:8080", &la);
	in6 = (const struct sockaddr_in6 *)&la.sa;
	assert_int_equal(la.is_unix, 0);
	assert_int_equal(in6->sin6_family, AF_INET6);
	assert_int_equal(la.salen, sizeof(struct sockaddr_in6));
	assert_int_equal(ntohs(in6->sin6_port), 8080);
	assert_true(IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr));
	sockaddr_format((const struct sockaddr *)&la.sa, la.salen, buf,
	    sizeof(buf));
	assert_string_equal(buf, "[::1]:8080");

	listen_ok("[::]:0", &la);
	in6 = (const struct sockaddr_in6 *)&la.sa;
	assert_true(IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr));
}

static void
test_listen_localhost(void **state)
{
	struct listen_addr la;
	const struct sockaddr_in *in;
	char buf[128];

	(void)state;
	listen_ok("localhost:80", &la);
	in = (const struct sockaddr_in *)&la.sa;
	assert_int_equal(in->sin_family, AF_INET);
	assert_int_equal(ntohs(in->sin_port), 80);
	assert_int_equal(ntohl(in->sin_addr.s_addr), INADDR_LOOPBACK);
	sockaddr_format((const struct sockaddr *)&la.sa, la.salen, buf,
	    sizeof(buf));
	assert_string_equal(buf, "127.0.0.1:80");
	/* text keeps what was configured. */
	assert_string_equal(la.text, "localhost:80");
}

static void
test_listen_unix(void **state)
{
	struct listen_addr la;
	const struct sockaddr_un *un;
	char path[sizeof(un->sun_path) + 8], in[sizeof(path) + 8];
	char buf[256];

	(void)state;
	listen_ok("unix:/run/tlsfwd/a.sock", &la);
	un = (const struct sockaddr_un *)&la.sa;
	assert_int_equal(la.is_unix, 1);
	assert_int_equal(un->sun_family, AF_UNIX);
	assert_string_equal(un->sun_path, "/run/tlsfwd/a.sock");
	assert_true(la.salen > offsetof(struct sockaddr_un, sun_path));
	sockaddr_format((const struct sockaddr *)&la.sa, la.salen, buf,
	    sizeof(buf));
	assert_string_equal(buf, "unix:/run/tlsfwd/a.sock");

	/* The longest path that fits sun_path with its NUL. */
	repeat(path, 'p', sizeof(un->sun_path) - 1);
	path[0] = '/';
	snprintf(in, sizeof(in), "unix:%s", path);
	listen_ok(in, &la);
	un = (const struct sockaddr_un *)&la.sa;
	assert_string_equal(un->sun_path, path);

	/* One byte more does not fit. */
	repeat(path, 'p', sizeof(un->sun_path));
	path[0] = '/';
	snprintf(in, sizeof(in), "unix:%s", path);
	listen_bad(in, "unix socket path longer than 107 bytes");
}

static void
test_listen_unix_relative(void **state)
{
	(void)state;
	listen_bad("unix:relative.sock", "unix socket path must be absolute: "
	    "'unix:relative.sock'");
	listen_bad("unix:./a.sock", "must be absolute");
	listen_bad("unix:", "must be absolute");
}

static void
test_listen_not_ip(void **state)
{
	(void)state;
	listen_bad("example.com:80", "listen host must be an IP address");
	listen_bad("example.com:80", "got 'example.com'");
	listen_bad("localhost.localdomain:80", "listen host must be an IP");
	listen_bad("LOCALHOST:80", "listen host must be an IP");
	listen_bad("ip6-localhost:80", "listen host must be an IP");
}

static void
test_listen_bad_port(void **state)
{
	(void)state;
	listen_bad("127.0.0.1:65536", "port 65536 out of range");
	listen_bad("127.0.0.1:http", "invalid port 'http'");
	listen_bad("127.0.0.1:", "missing port");
	listen_bad("127.0.0.1", "expected HOST:PORT");
	listen_bad("[::1]", "expected ':PORT'");
	listen_bad("::1:80", "IPv6 address needs brackets");
	listen_bad("", "expected HOST:PORT");
}

static void
test_listen_too_long(void **state)
{
	char in[HOST_MAX + 64];
	struct listen_addr la;

	(void)state;
	repeat(in, 'a', sizeof(la.text));
	listen_bad(in, "listen address too long");
	memcpy(in, "unix:/", 6);
	listen_bad(in, "listen address too long");
}

/* ---- parse_bool ---- */

static void
test_parse_bool(void **state)
{
	static const char *const yes[] = { "yes", "true", "on", "1", "YES",
	    "True", "ON" };
	static const char *const no[] = { "no", "false", "off", "0", "NO",
	    "False", "Off" };
	static const char *const bad[] = { "", "maybe", "y", "n", "2", "yes ",
	    " no", "enabled", "01" };
	char err[PARSE_ERR_MAX];
	int v;

	(void)state;
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		v = -1;
		assert_int_equal(parse_bool(yes[i], &v, err, sizeof(err)), 0);
		assert_int_equal(v, 1);
	}
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		v = -1;
		assert_int_equal(parse_bool(no[i], &v, err, sizeof(err)), 0);
		assert_int_equal(v, 0);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = -1;
		err[0] = '\0';
		assert_int_equal(parse_bool(bad[i], &v, err, sizeof(err)), -1);
		assert_int_equal(v, -1);
		assert_contains(err, "expected yes or no");
	}
	assert_int_equal(parse_bool("maybe", &v, err, sizeof(err)), -1);
	assert_string_equal(err, "expected yes or no, got 'maybe'");
}

/* ---- sockaddr_format ---- */

static void
test_sockaddr_format_v4(void **state)
{
	struct sockaddr_in in;
	char buf[64];

	(void)state;
	memset(&in, 0, sizeof(in));
	in.sin_family = AF_INET;
	in.sin_port = htons(53012);
	assert_int_equal(inet_pton(AF_INET, "93.184.216.34", &in.sin_addr), 1);
	sockaddr_format((const struct sockaddr *)&in, sizeof(in), buf,
	    sizeof(buf));
	assert_string_equal(buf, "93.184.216.34:53012");

	in.sin_port = htons(0);
	in.sin_addr.s_addr = htonl(INADDR_ANY);
	sockaddr_format((const struct sockaddr *)&in, sizeof(in), buf,
	    sizeof(buf));
	assert_string_equal(buf, "0.0.0.0:0");

	/* A short buffer is cut, never overflowed. */
	sockaddr_format((const struct sockaddr *)&in, sizeof(in), buf, 4);
	assert_string_equal(buf, "0.0");
}

static void
test_sockaddr_format_v6(void **state)
{
	struct sockaddr_in6 in6;
	char buf[128];

	(void)state;
	memset(&in6, 0, sizeof(in6));
	in6.sin6_family = AF_INET6;
	in6.sin6_port = htons(443);
	assert_int_equal(inet_pton(AF_INET6, "2001:db8::1", &in6.sin6_addr),
	    1);
	sockaddr_format((const struct sockaddr *)&in6, sizeof(in6), buf,
	    sizeof(buf));
	assert_string_equal(buf, "[2001:db8::1]:443");

	assert_int_equal(inet_pton(AF_INET6, "::ffff:10.0.0.1",
	    &in6.sin6_addr), 1);
	in6.sin6_port = htons(65535);
	sockaddr_format((const struct sockaddr *)&in6, sizeof(in6), buf,
	    sizeof(buf));
	assert_string_equal(buf, "[::ffff:10.0.0.1]:65535");
}

static void
test_sockaddr_format_unix(void **state)
{
	struct sockaddr_un un;
	struct sockaddr_storage ss;
	char buf[256];

	(void)state;
	memset(&un, 0, sizeof(un));
	un.sun_family = AF_UNIX;
	snprintf(un.sun_path, sizeof(un.sun_path), "/run/x.sock");
	sockaddr_format((const struct sockaddr *)&un, sizeof(un), buf,
	    sizeof(buf));
	assert_string_equal(buf, "unix:/run/x.sock");

	/* Unnamed socket (as accept() returns for a unix client). */
	sockaddr_format((const struct sockaddr *)&un,
	    (socklen_t)offsetof(struct sockaddr_un, sun_path), buf,
	    sizeof(buf));
	assert_string_equal(buf, "unix");
	un.sun_path[0] = '\0';
	sockaddr_format((const struct sockaddr *)&un, sizeof(un), buf,
	    sizeof(buf));
	assert_string_equal(buf, "unix");

	/* Unknown family. */
	memset(&ss, 0, sizeof(ss));
	ss.ss_family = AF_UNSPEC;
	sockaddr_format((const struct sockaddr *)&ss, sizeof(ss), buf,
	    sizeof(buf));
	assert_string_equal(buf, "-");
}

/* ---- parse_count ---- */

/*
 * Fuzzing regression (tests/fuzz/regress/parse/count-wraps-around): with a
 * max near ULONG_MAX, n * 10 + digit wrapped around, and a number of 20 or
 * more digits passed as a small one in range.
 */
static void
test_count_does_not_wrap(void **state)
{
	char err[PARSE_ERR_MAX] = "";
	unsigned long n = 7;

	(void)state;
	assert_int_equal(parse_count("18446744073709551615", 0, ULONG_MAX, &n,
	    err, sizeof(err)), 0);
	assert_true(n == ULONG_MAX);
	n = 7;
	assert_int_equal(parse_count("18446744073709551616", 0, ULONG_MAX, &n,
	    err, sizeof(err)), -1);
	assert_int_equal(parse_count("184467440737095737095", 0, ULONG_MAX,
	    &n, err, sizeof(err)), -1);
	assert_int_equal(parse_count("99999999999999999999999999", 1,
	    ULONG_MAX - 1, &n, err, sizeof(err)), -1);
	assert_true(n == 7);
	assert_contains(err, "expected a number from 1 to");
	/* Leading zeros are no overflow. */
	assert_int_equal(parse_count("000000000000000000000000000042", 0, 64,
	    &n, err, sizeof(err)), 0);
	assert_true(n == 42);
	assert_int_equal(parse_count("65", 0, 64, &n, err, sizeof(err)), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_interval_us),
		cmocka_unit_test(test_duration_units),
		cmocka_unit_test(test_duration_zero),
		cmocka_unit_test(test_duration_missing_unit),
		cmocka_unit_test(test_duration_bad_unit),
		cmocka_unit_test(test_duration_not_a_number),
		cmocka_unit_test(test_duration_limits),
		cmocka_unit_test(test_host_port_ok),
		cmocka_unit_test(test_host_port_ip_literals),
		cmocka_unit_test(test_host_port_missing_port),
		cmocka_unit_test(test_host_port_port0),
		cmocka_unit_test(test_host_port_bad_port),
		cmocka_unit_test(test_host_port_v6_needs_brackets),
		cmocka_unit_test(test_host_port_brackets_not_v6),
		cmocka_unit_test(test_host_port_empty_host),
		cmocka_unit_test(test_host_port_invalid_host),
		cmocka_unit_test(test_host_port_long_host),
		cmocka_unit_test(test_host_port_small_err),
		cmocka_unit_test(test_listen_ipv4),
		cmocka_unit_test(test_listen_ipv6),
		cmocka_unit_test(test_listen_localhost),
		cmocka_unit_test(test_listen_unix),
		cmocka_unit_test(test_listen_unix_relative),
		cmocka_unit_test(test_listen_not_ip),
		cmocka_unit_test(test_listen_bad_port),
		cmocka_unit_test(test_listen_too_long),
		cmocka_unit_test(test_parse_bool),
		cmocka_unit_test(test_sockaddr_format_v4),
		cmocka_unit_test(test_sockaddr_format_v6),
		cmocka_unit_test(test_sockaddr_format_unix),
		cmocka_unit_test(test_count_does_not_wrap),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
