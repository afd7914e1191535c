/*
 * test_conn_state.c - unit tests for the connection state machine's rules:
 * what each relay event leads to from each relaying state, and the names
 * the log uses for states and close reasons.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "conn.h"

#define NSTATES (CONN_CLOSED + 1)
#define NREASONS (CLOSE_SHUTDOWN + 1)

static const enum relay_event events[] = {
	RELAY_WAIT, RELAY_HALF_CLOSED, RELAY_DONE, RELAY_FAILED,
};

/* Done and failed end the connection from every relaying state. */
static void
test_done_and_failed_close(void **state)
{
	const enum conn_state from[] = {
		CONN_AWAITING_VERDICT, CONN_RELAYING, CONN_SHUTTING_DOWN,
	};

	(void)state;
	for (size_t i = 0; i < sizeof(from) / sizeof(from[0]); i++) {
		for (int v = 0; v <= 1; v++) {
			assert_int_equal(conn_state_after_relay(from[i],
			    RELAY_DONE, v), CONN_CLOSED);
			assert_int_equal(conn_state_after_relay(from[i],
			    RELAY_FAILED, v), CONN_CLOSED);
		}
	}
}

static void
test_relaying(void **state)
{
	(void)state;
	assert_int_equal(conn_state_after_relay(CONN_RELAYING, RELAY_WAIT,
	    true), CONN_RELAYING);
	assert_int_equal(conn_state_after_relay(CONN_RELAYING,
	    RELAY_HALF_CLOSED, true), CONN_SHUTTING_DOWN);
}

/* Shutting down never goes back to relaying. */
static void
test_shutting_down_stays(void **state)
{
	(void)state;
	assert_int_equal(conn_state_after_relay(CONN_SHUTTING_DOWN,
	    RELAY_HALF_CLOSED, true), CONN_SHUTTING_DOWN);
	assert_int_equal(conn_state_after_relay(CONN_SHUTTING_DOWN,
	    RELAY_WAIT, true), CONN_SHUTTING_DOWN);
}

/*
 * Awaiting the upstream's verdict on our certificate: a half-close does not
 * end the wait (the handshake line is still to come); the verdict does, to
 * wherever the relay stands.
 */
static void
test_awaiting_verdict(void **state)
{
	(void)state;
	assert_int_equal(conn_state_after_relay(CONN_AWAITING_VERDICT,
	    RELAY_WAIT, false), CONN_AWAITING_VERDICT);
	assert_int_equal(conn_state_after_relay(CONN_AWAITING_VERDICT,
	    RELAY_HALF_CLOSED, false), CONN_AWAITING_VERDICT);
	assert_int_equal(conn_state_after_relay(CONN_AWAITING_VERDICT,
	    RELAY_WAIT, true), CONN_RELAYING);
	assert_int_equal(conn_state_after_relay(CONN_AWAITING_VERDICT,
	    RELAY_HALF_CLOSED, true), CONN_SHUTTING_DOWN);
}

/* No relay event leads back into a set-up state. */
static void
test_never_back_to_setup(void **state)
{
	(void)state;
	for (int s = CONN_AWAITING_VERDICT; s < CONN_CLOSED; s++) {
		for (size_t e = 0; e < sizeof(events) / sizeof(events[0]);
		    e++) {
			enum conn_state next = conn_state_after_relay(
			    (enum conn_state)s, events[e], true);

			assert_true(next >= CONN_AWAITING_VERDICT);
			assert_true(next >= (enum conn_state)s ||
			    next == CONN_CLOSED);
		}
	}
}

static void
assert_names_unique(const char *(*name)(int), int n)
{
	for (int i = 0; i < n; i++) {
		assert_non_null(name(i));
		assert_true(strlen(name(i)) > 0);
		for (int j = 0; j < i; j++)
			assert_string_not_equal(name(i), name(j));
	}
}

static const char *
state_name(int s)
{
	return conn_state_name((enum conn_state)s);
}

static const char *
reason_name(int r)
{
	return conn_close_reason_name((enum conn_close_reason)r);
}

static void
test_names(void **state)
{
	(void)state;
	assert_names_unique(state_name, NSTATES);
	assert_names_unique(reason_name, NREASONS);
	/* The close line's words that README and the tests rely on. */
	assert_string_equal(reason_name(CLOSE_DONE), "done");
	assert_string_equal(reason_name(CLOSE_UPSTREAM_TRUNCATED),
	    "upstream_truncated");
	assert_string_equal(reason_name(CLOSE_HANDSHAKE_FAILED),
	    "handshake_failed");
	assert_string_equal(reason_name(CLOSE_SHUTDOWN), "shutdown");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_done_and_failed_close),
		cmocka_unit_test(test_relaying),
		cmocka_unit_test(test_shutting_down_stays),
		cmocka_unit_test(test_awaiting_verdict),
		cmocka_unit_test(test_never_back_to_setup),
		cmocka_unit_test(test_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
