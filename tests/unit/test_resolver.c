/*
 * test_resolver.c - unit tests for resolver.c (c-ares on libev) that need
 * no DNS server: literal addresses and hosts-file names (no TTL), a server
 * that refuses, answers never delivered inside resolver_lookup(), and
 * cancelled or pending queries freed without their callbacks.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <string.h>

#include "resolver.h"

struct answer {
	int	calls;
	int	status;
	size_t	naddrs;
	long	ttl;
	int	family;
	unsigned int port;
	char	text[64];
};

static void
record_answer(void *arg, const struct resolver_result *res)
{
	struct answer *a = arg;

	a->calls++;
	a->status = res->status;
	a->naddrs = res->naddrs;
	a->ttl = res->ttl;
	if (res->naddrs > 0) {
		const struct sockaddr_storage *ss = &res->addrs[0].ss;

		a->family = ss->ss_family;
		if (ss->ss_family == AF_INET) {
			const struct sockaddr_in *sin = (const void *)ss;

			a->port = ntohs(sin->sin_port);
			inet_ntop(AF_INET, &sin->sin_addr, a->text,
			    sizeof(a->text));
		} else {
			const struct sockaddr_in6 *sin6 = (const void *)ss;

			a->port = ntohs(sin6->sin6_port);
			inet_ntop(AF_INET6, &sin6->sin6_addr, a->text,
			    sizeof(a->text));
		}
	}
}

/* Runs the loop until the answer came (or a 10 s safety limit). */
static void
run_until_answered(struct ev_loop *loop, struct answer *a)
{
	ev_tstamp until = ev_time() + 10.;

	while (a->calls == 0 && ev_time() < until)
		ev_run(loop, EVRUN_ONCE);
}

/* One lookup on a fresh loop and resolver (servers: NULL or a list). */
static void
lookup_once(const char *servers, const char *host, unsigned int port,
    struct answer *a, bool check_not_synchronous)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	char err[256];
	struct resolver *r = resolver_new(loop, servers, err, sizeof(err));

	assert_non_null(r);
	assert_non_null(resolver_lookup(r, host, port, record_answer, a));
	if (check_not_synchronous)
		assert_int_equal(a->calls, 0);
	run_until_answered(loop, a);
	assert_int_equal(a->calls, 1);
	resolver_free(r);
	ev_loop_destroy(loop);
}

static void
test_literal_address_has_no_ttl(void **state)
{
	struct answer a = { 0 };

	(void)state;
	/* Known at once, but never delivered inside resolver_lookup(). */
	lookup_once(NULL, "192.0.2.7", 5433, &a, true);
	assert_int_equal(a.status, 0);
	assert_int_equal(a.naddrs, 1);
	assert_int_equal(a.family, AF_INET);
	assert_int_equal(a.port, 5433);
	assert_string_equal(a.text, "192.0.2.7");
	assert_int_equal(a.ttl, -1);
}

static void
test_hosts_file_name_has_no_ttl(void **state)
{
	struct answer a = { 0 };

	(void)state;
	/* A refusing server: only the hosts file can answer. */
	lookup_once("127.0.0.1:1", "localhost", 443, &a, true);
	assert_int_equal(a.status, 0);
	assert_true(a.naddrs >= 1);
	assert_int_equal(a.port, 443);
	assert_int_equal(a.ttl, -1);
}

static void
test_refusing_server_is_an_error(void **state)
{
	struct answer a = { 0 };

	(void)state;
	lookup_once("127.0.0.1:1", "db.tlsfwd-test.invalid", 443, &a, false);
	assert_int_not_equal(a.status, 0);
	assert_int_equal(a.naddrs, 0);
}

static void
test_bad_server_list_is_refused(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	char err[256] = "";

	(void)state;
	assert_null(resolver_new(loop, "not an address", err, sizeof(err)));
	assert_non_null(strstr(err, "dns_servers"));
	ev_loop_destroy(loop);
}

static void
test_cancelled_and_pending_queries_never_call_back(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	char err[256];
	struct resolver *r = resolver_new(loop, "127.0.0.1:1", err,
	    sizeof(err));
	struct answer cancelled = { 0 }, pending = { 0 }, other = { 0 };
	struct resolver_query *q;

	(void)state;
	assert_non_null(r);
	/* Answered at once by c-ares, cancelled before delivery. */
	q = resolver_lookup(r, "127.0.0.1", 1, record_answer, &cancelled);
	assert_non_null(q);
	resolver_cancel(q);
	/* Still with c-ares when cancelled. */
	q = resolver_lookup(r, "a.tlsfwd-test.invalid", 1, record_answer,
	    &cancelled);
	assert_non_null(q);
	resolver_cancel(q);
	assert_non_null(resolver_lookup(r, "192.0.2.1", 1, record_answer,
	    &other));
	run_until_answered(loop, &other);
	assert_int_equal(other.calls, 1);
	/* Pending at free: freed without a callback (ASan checks leaks). */
	assert_non_null(resolver_lookup(r, "b.tlsfwd-test.invalid", 1,
	    record_answer, &pending));
	assert_non_null(resolver_lookup(r, "192.0.2.2", 1, record_answer,
	    &pending));
	resolver_free(r);
	assert_int_equal(cancelled.calls, 0);
	assert_int_equal(pending.calls, 0);
	ev_loop_destroy(loop);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_literal_address_has_no_ttl),
		cmocka_unit_test(test_hosts_file_name_has_no_ttl),
		cmocka_unit_test(test_refusing_server_is_an_error),
		cmocka_unit_test(test_bad_server_list_is_refused),
		cmocka_unit_test(test_cancelled_and_pending_queries_never_call_back),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
