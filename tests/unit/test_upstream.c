/*
 * test_upstream.c - unit tests for upstream.c's path order and passive
 * health: address families interleaved (RFC 8305), paths marked down tried
 * last, one trial when the backoff ends, the backoff doubling to 30 s, a
 * success making a path healthy again; and the order of the entries
 * (priority, roundrobin, an entry with every path down last).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "upstream.h"

static struct resolver_addr
addr(const char *ip)
{
	struct resolver_addr a;

	memset(&a, 0, sizeof(a));
	if (strchr(ip, ':') != NULL) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a.ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(443);
		assert_int_equal(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
		a.len = sizeof(*sin6);
	} else {
		struct sockaddr_in *sin = (struct sockaddr_in *)&a.ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(443);
		assert_int_equal(inet_pton(AF_INET, ip, &sin->sin_addr), 1);
		a.len = sizeof(*sin);
	}
	return a;
}

static struct upstream_addrs *
addrs_of(const char *const *ips, size_t n)
{
	struct upstream_addrs *s = malloc(sizeof(*s) + n * sizeof(s->a[0]));

	assert_non_null(s);
	s->refs = 1;
	s->n = n;
	for (size_t i = 0; i < n; i++)
		s->a[i] = addr(ips[i]);
	return s;
}

/* The order as text, "a b c", to compare in one assertion. */
static void
order_text(struct upstream *up, const struct upstream_addrs *s, char *buf,
    size_t len)
{
	struct resolver_addr out[8];
	char one[64];

	buf[0] = '\0';
	upstream_order(up, 0, s, out);
	for (size_t i = 0; i < s->n; i++) {
		const void *p = out[i].ss.ss_family == AF_INET6 ?
		    (const void *)&((struct sockaddr_in6 *)&out[i].ss)->sin6_addr :
		    (const void *)&((struct sockaddr_in *)&out[i].ss)->sin_addr;

		inet_ntop(out[i].ss.ss_family, p, one, sizeof(one));
		if (i > 0)
			strncat(buf, " ", len - strlen(buf) - 1);
		strncat(buf, one, len - strlen(buf) - 1);
	}
}

struct fixture {
	struct ev_loop		*loop;
	struct service_config	 sc;
	struct upstream		 up;
};

/* A service with upstreams db-a.test:443, db-b.test:443. */
static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	log_setup(LOG_ERROR, LOG_FORMAT_LOGFMT, 2);
	f->loop = ev_loop_new(EVFLAG_AUTO);
	snprintf(f->sc.name, sizeof(f->sc.name), "svc");
	snprintf(f->sc.upstreams[0].hp.host, HOST_MAX, "db-a.test");
	snprintf(f->sc.upstreams[1].hp.host, HOST_MAX, "db-b.test");
	f->sc.upstreams[0].hp.port = f->sc.upstreams[1].hp.port = 443;
	f->sc.nupstreams = 2;
	f->sc.resolve_interval_ms = 30000;
	assert_int_equal(upstream_init(&f->up, &f->sc), 0);
	f->up.loop = f->loop;	/* no resolver: the order is what is tested */
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	upstream_free(&f->up);
	ev_loop_destroy(f->loop);
	free(f);
	return 0;
}

static void
test_families_interleave(void **state)
{
	struct fixture *f = *state;
	const char *mixed[] = { "2001:db8::1", "2001:db8::2", "192.0.2.1",
	    "192.0.2.2", "192.0.2.3" };
	const char *v4first[] = { "192.0.2.1", "192.0.2.2", "2001:db8::1" };
	struct upstream_addrs *s;
	char text[256];

	s = addrs_of(mixed, 5);
	order_text(&f->up, s, text, sizeof(text));
	assert_string_equal(text, "2001:db8::1 192.0.2.1 2001:db8::2 "
	    "192.0.2.2 192.0.2.3");
	free(s);
	s = addrs_of(v4first, 3);
	order_text(&f->up, s, text, sizeof(text));
	assert_string_equal(text, "192.0.2.1 2001:db8::1 192.0.2.2");
	free(s);
}

static void
test_down_path_goes_last_then_gets_one_trial(void **state)
{
	struct fixture *f = *state;
	const char *ips[] = { "2001:db8::1", "192.0.2.1", "2001:db8::2" };
	struct upstream_addrs *s = addrs_of(ips, 3);
	struct resolver_addr bad = addr("2001:db8::1");
	char text[256];

	upstream_path_failed(&f->up, 0, &bad, "refused");
	assert_int_equal(f->up.entries[0].ndown, 1);
	order_text(&f->up, s, text, sizeof(text));
	assert_string_equal(text, "192.0.2.1 2001:db8::2 2001:db8::1");
	/* Another failure while down does not lengthen the backoff. */
	upstream_path_failed(&f->up, 0, &bad, "refused");
	assert_true(f->up.entries[0].down[0].backoff == 1.);
	/* The backoff ended: one connection tries it in its place. */
	f->up.entries[0].down[0].retry_at = 0;
	order_text(&f->up, s, text, sizeof(text));
	assert_string_equal(text, "2001:db8::1 192.0.2.1 2001:db8::2");
	order_text(&f->up, s, text, sizeof(text));
	assert_string_equal(text, "192.0.2.1 2001:db8::2 2001:db8::1");
	/* The trial failed: twice the backoff, up to 30 s. */
	upstream_path_failed(&f->up, 0, &bad, "refused");
	assert_true(f->up.entries[0].down[0].backoff == 2.);
	for (int i = 0; i < 10; i++) {
		f->up.entries[0].down[0].retry_at = 0;
		order_text(&f->up, s, text, sizeof(text));
		upstream_path_failed(&f->up, 0, &bad, "refused");
	}
	assert_true(f->up.entries[0].down[0].backoff == 30.);
	/* A success: healthy again, in its place. */
	upstream_path_ok(&f->up, 0, &bad);
	assert_int_equal(f->up.entries[0].ndown, 0);
	order_text(&f->up, s, text, sizeof(text));
	assert_string_equal(text, "2001:db8::1 192.0.2.1 2001:db8::2");
	free(s);
}

static void
test_all_down_still_all_tried(void **state)
{
	struct fixture *f = *state;
	const char *ips[] = { "192.0.2.1", "192.0.2.2" };
	struct upstream_addrs *s = addrs_of(ips, 2);
	struct resolver_addr a = addr("192.0.2.1"), b = addr("192.0.2.2");
	char text[256];

	upstream_path_failed(&f->up, 0, &a, "refused");
	upstream_path_failed(&f->up, 0, &b, "refused");
	order_text(&f->up, s, text, sizeof(text));
	assert_string_equal(text, "192.0.2.1 192.0.2.2");
	free(s);
}

/* The order of the entries: priority, roundrobin, all paths down last. */
static void
test_entries_plan(void **state)
{
	struct fixture *f = *state;
	const char *ips[] = { "192.0.2.1" };
	struct upstream_addrs *a = addrs_of(ips, 1);
	struct resolver_addr only = addr("192.0.2.1");
	unsigned char plan[2];

	upstream_plan(&f->up, plan);
	assert_int_equal(plan[0], 0);
	assert_int_equal(plan[1], 1);
	/* db-a's only address is down: db-b first, db-a still tried. */
	f->up.entries[0].name.addrs = a;
	upstream_path_failed(&f->up, 0, &only, "refused");
	upstream_plan(&f->up, plan);
	assert_int_equal(plan[0], 1);
	assert_int_equal(plan[1], 0);
	/* Its backoff ended: first again, for its trial. */
	f->up.entries[0].down[0].retry_at = 0;
	upstream_plan(&f->up, plan);
	assert_int_equal(plan[0], 0);
	upstream_path_ok(&f->up, 0, &only);
	/* roundrobin: each new connection starts at the next entry. */
	f->up.balance = BALANCE_ROUNDROBIN;
	upstream_plan(&f->up, plan);
	assert_int_equal(plan[0], 0);
	upstream_plan(&f->up, plan);
	assert_int_equal(plan[0], 1);
	assert_int_equal(plan[1], 0);
	upstream_plan(&f->up, plan);
	assert_int_equal(plan[0], 0);
	f->up.entries[0].name.addrs = NULL;
	free(a);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_families_interleave,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_down_path_goes_last_then_gets_one_trial, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_all_down_still_all_tried,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_entries_plan, setup,
		    teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
