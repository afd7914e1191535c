/* test_admission.c - unit tests for address blocks and allow/deny decisions. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "admission.h"
#include "config.h"
#include "parse.h"

/* A socket address for a textual IPv4 or IPv6 address. */
static const struct sockaddr *
addr(const char *text)
{
	static struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (strchr(text, ':') != NULL) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

		in6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, text, &in6->sin6_addr), 1);
	} else {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;

		in->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, text, &in->sin_addr), 1);
	}
	return (const struct sockaddr *)&ss;
}

static struct cidr
cidr(const char *text)
{
	char err[PARSE_ERR_MAX] = "";
	struct cidr c;

	if (parse_cidr(text, &c, err, sizeof(err)) != 0)
		fail_msg("parse_cidr(%s): %s", text, err);
	return c;
}

static void
cidr_bad(const char *text, const char *why)
{
	char err[PARSE_ERR_MAX] = "";
	struct cidr c;

	assert_int_equal(parse_cidr(text, &c, err, sizeof(err)), -1);
	if (strstr(err, why) == NULL)
		fail_msg("parse_cidr(%s): expected '%s' in '%s'", text, why,
		    err);
}

static void
test_parse_cidr(void **state)
{
	struct cidr c;

	(void)state;
	c = cidr("10.0.0.0/8");
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.prefix, 8);
	assert_int_equal(c.addr[0], 10);
	c = cidr("192.0.2.7");
	assert_int_equal(c.prefix, 32);
	c = cidr("2001:db8::/32");
	assert_int_equal(c.family, AF_INET6);
	assert_int_equal(c.prefix, 32);
	assert_int_equal(cidr("::/0").prefix, 0);
	assert_int_equal(cidr("0.0.0.0/0").prefix, 0);
	assert_int_equal(cidr("10.1.2.128/25").prefix, 25);
	cidr_bad("10.1.2.3/8", "host bits");
	cidr_bad("10.1.2.129/25", "host bits");
	cidr_bad("2001:db8::1/64", "host bits");
	cidr_bad("10.0.0.0/33", "prefix length must be 0-32");
	cidr_bad("::/129", "0-128");
	cidr_bad("10.0.0.0/", "prefix length");
	cidr_bad("10.0.0.0/8x", "prefix length");
	cidr_bad("10.0.0.0/-1", "prefix length");
	cidr_bad("/8", "expected ADDRESS");
	cidr_bad("", "expected ADDRESS");
	cidr_bad("10.0.0/8", "not an IPv4 or IPv6 address");
	cidr_bad("localhost", "not an IPv4 or IPv6 address");
	cidr_bad("1111:2222:3333:4444:5555:6666:7777:8888:9999/8",
	    "not an IPv4 or IPv6 address");
	cidr_bad("1111:2222:3333:4444:5555:6666:7777:8888:1111:2222:3333/8",
	    "expected ADDRESS");
}

static void
test_cidr_contains(void **state)
{
	struct cidr c;

	(void)state;
	c = cidr("10.0.0.0/8");
	assert_true(cidr_contains(&c, addr("10.255.1.2")));
	assert_false(cidr_contains(&c, addr("11.0.0.0")));
	assert_false(cidr_contains(&c, addr("::ffff:11.0.0.1")));
	assert_true(cidr_contains(&c, addr("::ffff:10.0.0.1")));	/* mapped */
	assert_false(cidr_contains(&c, addr("2001:db8::1")));
	c = cidr("192.168.1.128/25");
	assert_true(cidr_contains(&c, addr("192.168.1.128")));
	assert_true(cidr_contains(&c, addr("192.168.1.255")));
	assert_false(cidr_contains(&c, addr("192.168.1.127")));
	c = cidr("2001:db8::/31");
	assert_true(cidr_contains(&c, addr("2001:db9:ffff::1")));
	assert_false(cidr_contains(&c, addr("2001:dba::1")));
	assert_false(cidr_contains(&c, addr("32.1.13.184")));
	c = cidr("0.0.0.0/0");
	assert_true(cidr_contains(&c, addr("203.0.113.9")));
	assert_false(cidr_contains(&c, addr("::1")));
	c = cidr("::/0");
	assert_true(cidr_contains(&c, addr("::1")));
	c = cidr("127.0.0.1");
	assert_true(cidr_contains(&c, addr("127.0.0.1")));
	assert_false(cidr_contains(&c, addr("127.0.0.2")));
}

static void
test_loopback(void **state)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };

	(void)state;
	assert_true(sockaddr_is_loopback(addr("127.0.0.1")));
	assert_true(sockaddr_is_loopback(addr("127.254.0.9")));
	assert_true(sockaddr_is_loopback(addr("::1")));
	assert_true(sockaddr_is_loopback(addr("::ffff:127.0.0.1")));
	assert_false(sockaddr_is_loopback(addr("0.0.0.0")));
	assert_false(sockaddr_is_loopback(addr("::")));
	assert_false(sockaddr_is_loopback(addr("128.0.0.1")));
	assert_false(sockaddr_is_loopback(addr("::2")));
	assert_false(sockaddr_is_loopback((const struct sockaddr *)&sun));
}

static void
test_parse_count_and_mode(void **state)
{
	char err[PARSE_ERR_MAX];
	unsigned long n = 0;
	unsigned int mode = 0;

	(void)state;
	assert_int_equal(parse_count("1", 1, 10, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 1);
	assert_int_equal(parse_count("10", 1, 10, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 10);
	assert_int_equal(parse_count("11", 1, 10, &n, err, sizeof(err)), -1);
	assert_int_equal(parse_count("0", 1, 10, &n, err, sizeof(err)), -1);
	assert_int_equal(parse_count("", 1, 10, &n, err, sizeof(err)), -1);
	assert_int_equal(parse_count("+5", 1, 10, &n, err, sizeof(err)), -1);
	assert_int_equal(parse_count("5 ", 1, 10, &n, err, sizeof(err)), -1);
	assert_int_equal(parse_count("184467440737095516160", 1, 10, &n, err,
	    sizeof(err)), -1);
	assert_int_equal(n, 10);	/* untouched on failure */
	assert_non_null(strstr(err, "from 1 to 10"));
	assert_int_equal(parse_file_mode("0660", &mode, err, sizeof(err)), 0);
	assert_int_equal(mode, 0660);
	assert_int_equal(parse_file_mode("600", &mode, err, sizeof(err)), 0);
	assert_int_equal(mode, 0600);
	assert_int_equal(parse_file_mode("0", &mode, err, sizeof(err)), 0);
	assert_int_equal(mode, 0);
	assert_int_equal(parse_file_mode("4755", &mode, err, sizeof(err)), -1);
	assert_int_equal(parse_file_mode("0680", &mode, err, sizeof(err)), -1);
	assert_int_equal(parse_file_mode("", &mode, err, sizeof(err)), -1);
	assert_int_equal(parse_file_mode("00660", &mode, err, sizeof(err)),
	    -1);
	assert_int_equal(parse_file_mode("rw", &mode, err, sizeof(err)), -1);
}

/*
 * Fuzzing regression (tests/fuzz/regress/parse/cidr-v4-mapped-block): a
 * block written as IPv4-mapped IPv6, the form in which a dual-stack socket
 * logs IPv4 clients, matched no client at all, so such a deny let everyone
 * in. It is now the IPv4 block it names.
 */
static void
test_cidr_v4_mapped_block(void **state)
{
	struct service_config cfg;
	struct cidr deny[1], c;

	(void)state;
	c = cidr("::ffff:10.0.0.0/104");
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.prefix, 8);
	assert_int_equal(c.addr[0], 10);
	assert_true(cidr_contains(&c, addr("::ffff:10.1.2.3")));
	assert_true(cidr_contains(&c, addr("10.1.2.3")));
	assert_false(cidr_contains(&c, addr("::ffff:11.1.2.3")));
	assert_false(cidr_contains(&c, addr("::a01:203")));	/* not mapped */
	c = cidr("::ffff:203.0.113.5");
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.prefix, 32);
	c = cidr("::ffff:0.0.0.0/96");
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.prefix, 0);
	cidr_bad("::ffff:10.1.2.3/104", "host bits");
	/* Wider than /96 it is no IPv4 block, and stays IPv6. */
	c = cidr("::fffe:0:0/95");
	assert_int_equal(c.family, AF_INET6);
	assert_false(cidr_contains(&c, addr("10.1.2.3")));
	c = cidr("::/0");
	assert_int_equal(c.family, AF_INET6);

	memset(&cfg, 0, sizeof(cfg));
	deny[0] = cidr("::ffff:203.0.113.0/120");
	cfg.deny = deny;
	cfg.ndeny = 1;
	assert_false(admission_address_allowed(&cfg,
	    addr("::ffff:203.0.113.9")));
	assert_false(admission_address_allowed(&cfg, addr("203.0.113.9")));
	assert_true(admission_address_allowed(&cfg, addr("203.0.114.9")));
}

/* deny wins; with an allow list, only its blocks get in; unix always. */
static void
test_address_allowed(void **state)
{
	struct service_config cfg;
	struct cidr allow[2], deny[1];
	struct sockaddr_un sun = { .sun_family = AF_UNIX };

	(void)state;
	memset(&cfg, 0, sizeof(cfg));
	assert_true(admission_address_allowed(&cfg, addr("203.0.113.1")));
	deny[0] = cidr("10.0.66.0/24");
	cfg.deny = deny;
	cfg.ndeny = 1;
	assert_false(admission_address_allowed(&cfg, addr("10.0.66.1")));
	assert_true(admission_address_allowed(&cfg, addr("10.0.67.1")));
	allow[0] = cidr("10.0.0.0/8");
	allow[1] = cidr("fd00::/8");
	cfg.allow = allow;
	cfg.nallow = 2;
	assert_true(admission_address_allowed(&cfg, addr("10.0.67.1")));
	assert_false(admission_address_allowed(&cfg, addr("10.0.66.1")));
	assert_false(admission_address_allowed(&cfg,
	    addr("::ffff:10.0.66.1")));
	assert_true(admission_address_allowed(&cfg, addr("fd12::1")));
	assert_false(admission_address_allowed(&cfg, addr("fe80::1")));
	assert_false(admission_address_allowed(&cfg, addr("127.0.0.1")));
	assert_true(admission_address_allowed(&cfg,
	    (const struct sockaddr *)&sun));
}

/* The counter of a service name is shared: same name, same object. */
static void
test_count_shared(void **state)
{
	struct admission_count *a, *b, *c;

	(void)state;
	a = admission_count_get("one");
	b = admission_count_get("two");
	c = admission_count_get("one");
	assert_non_null(a);
	assert_non_null(b);
	assert_ptr_equal(a, c);
	assert_ptr_not_equal(a, b);
	admission_free_all();
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_cidr),
		cmocka_unit_test(test_cidr_contains),
		cmocka_unit_test(test_cidr_v4_mapped_block),
		cmocka_unit_test(test_loopback),
		cmocka_unit_test(test_parse_count_and_mode),
		cmocka_unit_test(test_address_allowed),
		cmocka_unit_test(test_count_shared),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
