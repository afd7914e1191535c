/* test_config.c - unit tests for daemon/config.c. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"

/* A valid service on lines 1-3. */
#define SVC \
	"[s]\n" \
	"listen = 127.0.0.1:0\n" \
	"upstream = example.com:443\n"

/* ---- helpers ---- */

/*
 * What the current test loaded. Kept in globals, and freed by reset() (also
 * run as every test's teardown), so that a failing assertion leaks nothing.
 */
static struct config_errors E;
static struct config *CFG;
static char temp_paths[4][64];
static int ntemp;

static void
reset(void)
{
	config_free(CFG);
	CFG = NULL;
	config_errors_free(&E);
}

static int
teardown(void **state)
{
	(void)state;
	reset();
	while (ntemp > 0)
		unlink(temp_paths[--ntemp]);
	return 0;
}

/* Loads text as "test.ini", replacing what was loaded before. */
static struct config *
load(const char *text)
{
	reset();
	CFG = config_load_string(text, "test.ini", &E);
	return CFG;
}

/* Loads a file, replacing what was loaded before. */
static struct config *
load_file(const char *path)
{
	reset();
	CFG = config_load(path, &E);
	return CFG;
}

/*
 * Index of the first message that starts with exactly "test.ini:LINE: " (or
 * "test.ini: " for line 0) and contains what; -1 if none. No cmocka calls:
 * also used in forked children.
 */
static int
find_error(const struct config_errors *e, int line, const char *what)
{
	char prefix[64];
	size_t plen;

	if (line > 0)
		snprintf(prefix, sizeof(prefix), "test.ini:%d: ", line);
	else
		snprintf(prefix, sizeof(prefix), "test.ini: ");
	plen = strlen(prefix);
	for (size_t i = 0; i < e->n; i++) {
		if (strncmp(e->msgs[i], prefix, plen) == 0 &&
		    strstr(e->msgs[i] + plen, what) != NULL)
			return (int)i;
	}
	return -1;
}

static void
print_errors(const struct config_errors *e)
{
	for (size_t i = 0; i < e->n; i++)
		print_message("  error %zu: %s\n", i, e->msgs[i]);
}

static void
assert_has_error(const struct config_errors *e, int line, const char *what)
{
	if (find_error(e, line, what) < 0) {
		print_errors(e);
		fail_msg("no error 'test.ini:%d: ...%s...' among %zu", line,
		    what, e->n);
	}
}

/* Loads text; it must fail with exactly one error, at line, saying what. */
static void
expect_one_error(const char *text, int line, const char *what)
{
	if (load(text) != NULL)
		fail_msg("config accepted:\n%s", text);
	if (E.n != 1)
		print_errors(&E);
	assert_int_equal(E.n, 1);
	assert_has_error(&E, line, what);
}

/* Loads text, which must be valid; reset() frees it. */
static struct config *
load_ok(const char *text)
{
	if (load(text) == NULL || E.n != 0) {
		print_errors(&E);
		fail_msg("config rejected:\n%s", text);
	}
	return CFG;
}

static const struct service_config *
service(const struct config *cfg, const char *name)
{
	for (const struct service_config *s = cfg->services; s != NULL;
	    s = s->next)
		if (strcmp(s->name, name) == 0)
			return s;
	fail_msg("no service [%s]", name);
	return NULL;
}

struct want {
	int		 line;
	const char	*what;
};

/*
 * Loads text in a child process, so that a crash fails only this test (and
 * does not take ASan down with the whole binary). The child succeeds when the
 * config is rejected with every wanted error.
 */
static void
expect_errors_in_child(const char *text, const struct want *want,
    size_t nwant)
{
	pid_t pid;
	int status;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct config_errors e = { NULL, 0 };
		struct config *cfg;
		int ok;

		/* cmocka's handlers would longjmp into the parent's runner. */
		signal(SIGSEGV, SIG_DFL);
		signal(SIGBUS, SIG_DFL);
		signal(SIGILL, SIG_DFL);
		signal(SIGFPE, SIG_DFL);
		signal(SIGABRT, SIG_DFL);
		cfg = config_load_string(text, "test.ini", &e);
		ok = cfg == NULL;
		for (size_t i = 0; i < nwant; i++) {
			if (find_error(&e, want[i].line, want[i].what) < 0) {
				fprintf(stderr, "missing error test.ini:%d: "
				    "...%s...\n", want[i].line, want[i].what);
				ok = 0;
			}
		}
		if (!ok)
			config_errors_print(&e, stderr);
		config_free(cfg);
		config_errors_free(&e);
		_exit(ok ? 0 : 3);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (WIFSIGNALED(status))
		fail_msg("config_load_string() crashed (signal %d)",
		    WTERMSIG(status));
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) != 0)
		fail_msg("config_load_string() exited %d (crash under a "
		    "sanitizer, or wrong errors)", WEXITSTATUS(status));
}

/* Writes text to a new file in /tmp; teardown() removes it. */
static const char *
temp_file(const char *text)
{
	char *path;
	int fd;
	size_t len = strlen(text);

	assert_true(ntemp < 4);
	path = temp_paths[ntemp];
	snprintf(path, sizeof(temp_paths[0]), "/tmp/tlsfwd-unit-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	ntemp++;
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
	return path;
}

/* ---- every error path, one at a time ---- */

static void
test_err_unknown_service_key(void **state)
{
	(void)state;
	expect_one_error(SVC "foo = 1\n", 4, "[s]: unknown key 'foo'");
	/* Keys are case-sensitive. */
	expect_one_error(SVC "Verify = full\n", 4, "[s]: unknown key 'Verify'");
	/* A [global] key is unknown in a service. */
	expect_one_error(SVC "log_level = info\n", 4,
	    "[s]: unknown key 'log_level'");
}

static void
test_err_unknown_global_key(void **state)
{
	(void)state;
	expect_one_error("[global]\nfoo = 1\n" SVC, 2,
	    "[global]: unknown key 'foo'");
	/* A service key is unknown in [global]. */
	expect_one_error("[global]\nlog_level = info\nlisten = 127.0.0.1:1\n"
	    SVC, 3, "[global]: unknown key 'listen'");
}

static void
test_err_duplicate_service(void **state)
{
	(void)state;
	/* The duplicate's keys are not reported again. */
	expect_one_error(SVC "\n" SVC, 5,
	    "duplicate service [s] (first at line 1)");
	expect_one_error(SVC "[t]\nlisten = 127.0.0.1:0\nupstream = a.b:1\n"
	    "[s]\n", 7, "duplicate service [s] (first at line 1)");
}

static void
test_err_duplicate_global(void **state)
{
	(void)state;
	expect_one_error("[global]\nlog_level = warn\n" SVC "[global]\n", 6,
	    "duplicate section [global] (first at line 1)");
}

static void
test_err_global_wrong_case(void **state)
{
	(void)state;
	expect_one_error("[Global]\nlog_level = warn\n" SVC, 1,
	    "unknown section [Global]: the global section is [global]");
	expect_one_error(SVC "[GLOBAL]\n", 4, "unknown section [GLOBAL]");
}

static void
test_err_invalid_service_name(void **state)
{
	char text[512], name[80];

	(void)state;
	expect_one_error("[bad name]\nlisten = 127.0.0.1:0\n" SVC, 1,
	    "invalid service name [bad name]: use 1-64 characters");
	expect_one_error(SVC "[a/b]\n", 4, "invalid service name [a/b]");
	expect_one_error(SVC "[]\n", 4, "invalid service name []");
	expect_one_error(SVC "[caf\xc3\xa9]\n", 4, "invalid service name");

	/* 64 characters is the longest name; 65 is one too many. */
	memset(name, 'n', 64);
	name[64] = '\0';
	snprintf(text, sizeof(text), "[%s]\nlisten = 127.0.0.1:0\n"
	    "upstream = example.com:443\n", name);
	load_ok(text);
	memset(name, 'n', 65);
	name[65] = '\0';
	snprintf(text, sizeof(text), SVC "[%s]\n", name);
	expect_one_error(text, 4, "invalid service name [nnnn");
	/* Every allowed character. */
	load_ok("[A-z_0.9]\nlisten = 127.0.0.1:0\n"
	    "upstream = example.com:443\n");
}

static void
test_err_key_outside_section(void **state)
{
	(void)state;
	expect_one_error("x = 1\n" SVC, 1, "'x' is outside any section");
	expect_one_error("; comment\n\nlog_level = info\n" SVC, 3,
	    "'log_level' is outside any section: put it under [global] or "
	    "a [service]");
}

static void
test_err_key_twice(void **state)
{
	(void)state;
	expect_one_error(SVC "listen = 127.0.0.1:1\n", 4,
	    "[s]: 'listen' given twice");
	expect_one_error(SVC "verify = full\nverify = full\n", 5,
	    "[s]: 'verify' given twice");
	expect_one_error("[global]\nlog_format = json\nlog_format = json\n"
	    SVC, 3, "[global]: 'log_format' given twice");
}

static void
test_err_bad_duration(void **state)
{
	(void)state;
	expect_one_error(SVC "connect_timeout = 5x\n", 4,
	    "connect_timeout: invalid duration unit in '5x'");
	expect_one_error(SVC "handshake_timeout = 10\n", 4,
	    "handshake_timeout: duration '10' has no unit");
	expect_one_error(SVC "idle_timeout = -1s\n", 4,
	    "idle_timeout: invalid duration '-1s'");
	expect_one_error(SVC "idle_timeout = 9000h\n", 4,
	    "idle_timeout: duration '9000h' is too large");
	expect_one_error("[global]\nshutdown_timeout = soon\n" SVC, 2,
	    "shutdown_timeout: invalid duration 'soon'");
}

static void
test_err_zero_duration(void **state)
{
	(void)state;
	expect_one_error(SVC "connect_timeout = 0s\n", 4,
	    "connect_timeout: must be greater than 0");
	expect_one_error(SVC "handshake_timeout = 0ms\n", 4,
	    "handshake_timeout: must be greater than 0");
	expect_one_error(SVC "idle_timeout = 0h\n", 4,
	    "idle_timeout: must be greater than 0");
	expect_one_error("[global]\nshutdown_timeout = 0m\n" SVC, 2,
	    "shutdown_timeout: must be greater than 0");
}

static void
test_upstream_resolution_keys(void **state)
{
	struct config *cfg;

	(void)state;
	cfg = load_ok("[global]\ndns_servers = 10.0.0.53, [fd00::53]:5353, "
	    "::1, 127.0.0.1:5300\n" SVC);
	assert_string_equal(cfg->global.dns_servers,
	    "10.0.0.53:53,[fd00::53]:5353,[::1]:53,127.0.0.1:5300");
	assert_int_equal(cfg->services->resolve_interval_ms, 30000);
	assert_int_equal(cfg->services->connect_race_delay_ms, 250);
	cfg = load_ok(SVC "resolve_interval = 2s\nconnect_race_delay = 50ms\n");
	assert_int_equal(cfg->services->resolve_interval_ms, 2000);
	assert_int_equal(cfg->services->connect_race_delay_ms, 50);
	assert_null(load_ok(SVC)->global.dns_servers);
	expect_one_error("[global]\ndns_servers = dns.example\n" SVC, 2,
	    "dns_servers: 'dns.example' is not an IP address with an optional "
	    "port");
	expect_one_error("[global]\ndns_servers = 10.0.0.53,\n" SVC, 2,
	    "dns_servers: '' is not an IP address");
	expect_one_error(SVC "resolve_interval = 500ms\n", 4,
	    "resolve_interval: must be at least 1s");
	expect_one_error(SVC "connect_race_delay = 5ms\n", 4,
	    "connect_race_delay: must be at least 10ms");
}

static void
test_several_upstreams(void **state)
{
	struct config *cfg;
	const struct service_config *s;

	(void)state;
	cfg = load_ok("[s]\nlisten = 127.0.0.1:0\n"
	    "upstream = db-a.example:5433, [2001:db8::5]:5433\n"
	    "upstream = 192.0.2.9:5433\nbalance = roundrobin\n");
	s = cfg->services;
	assert_int_equal(s->nupstreams, 3);
	assert_int_equal(s->balance, BALANCE_ROUNDROBIN);
	/* Each entry's own name, none for an address; verified as sent. */
	assert_string_equal(s->upstreams[0].sni, "db-a.example");
	assert_string_equal(s->upstreams[0].verify_hostname, "db-a.example");
	assert_string_equal(s->upstreams[1].hp.host, "2001:db8::5");
	assert_string_equal(s->upstreams[1].sni, "");
	assert_string_equal(s->upstreams[1].verify_hostname, "2001:db8::5");
	assert_string_equal(s->upstreams[2].verify_hostname, "192.0.2.9");
	assert_int_equal(load_ok(SVC)->services->balance, BALANCE_PRIORITY);
	/* An explicit sni / verify_hostname applies to every entry. */
	cfg = load_ok("[s]\nlisten = 127.0.0.1:0\n"
	    "upstream = a.example:1, b.example:1\nsni = db.example\n");
	s = cfg->services;
	assert_string_equal(s->upstreams[1].sni, "db.example");
	assert_string_equal(s->upstreams[1].verify_hostname, "db.example");
	expect_one_error("[s]\nlisten = 127.0.0.1:0\n"
	    "upstream = a.example:1, A.example:1\n", 3,
	    "upstream: 'A.example:1' is listed twice");
	expect_one_error("[s]\nlisten = 127.0.0.1:0\nupstream = a.example:1,\n",
	    3, "upstream: expected HOST:PORT");
	expect_one_error(SVC "balance = random\n", 4,
	    "balance: expected priority or roundrobin, got 'random'");
}

static void
test_err_bad_listen(void **state)
{
	(void)state;
	expect_one_error("[s]\nlisten = example.com:80\n"
	    "upstream = example.com:443\n", 2,
	    "listen: listen host must be an IP address");
	expect_one_error("[s]\nupstream = example.com:443\n"
	    "listen = 127.0.0.1:65536\n", 3,
	    "listen: port 65536 out of range");
	expect_one_error("[s]\nlisten = unix:x.sock\n"
	    "upstream = example.com:443\n", 2,
	    "listen: unix socket path must be absolute");
	expect_one_error("[s]\nlisten =\nupstream = example.com:443\n", 2,
	    "listen: expected HOST:PORT or [V6]:PORT, got ''");
}

static void
test_err_bad_upstream(void **state)
{
	(void)state;
	expect_one_error("[s]\nlisten = 127.0.0.1:0\nupstream = example.com\n",
	    3, "upstream: expected HOST:PORT or [V6]:PORT, got 'example.com'");
	/* Port 0 is for listen only. */
	expect_one_error("[s]\nlisten = 127.0.0.1:0\nupstream = example.com:0\n",
	    3, "upstream: port 0 out of range");
	expect_one_error("[s]\nlisten = 127.0.0.1:0\nupstream = ::1:443\n", 3,
	    "upstream: IPv6 address needs brackets");
	expect_one_error("[s]\nlisten = 127.0.0.1:0\nupstream = bad host:1\n",
	    3, "upstream: invalid host 'bad host'");
}

static void
test_err_missing_upstream(void **state)
{
	(void)state;
	/* Reported at the section header. */
	expect_one_error("[global]\n\n[s]\nlisten = 127.0.0.1:0\n", 3,
	    "[s]: missing 'upstream'");
}

static void
test_err_missing_listen(void **state)
{
	(void)state;
	expect_one_error(SVC "[t]\nupstream = example.com:443\n", 4,
	    "[t]: missing 'listen'");
}

static void
test_err_missing_both(void **state)
{
	(void)state;
	/* An empty section is still a service, and is reported. */
	assert_null(load(SVC "[empty]\n"));
	assert_int_equal(E.n, 2);
	assert_has_error(&E, 4, "[empty]: missing 'listen'");
	assert_has_error(&E, 4, "[empty]: missing 'upstream'");
}

static void
test_err_bad_verify(void **state)
{
	(void)state;
	expect_one_error(SVC "verify = maybe\n", 4,
	    "verify: expected full, chain, pin or none, got 'maybe'");
	expect_one_error(SVC "verify = FULL\n", 4, "verify: expected full");
	expect_one_error(SVC "verify =\n", 4, "verify: expected full, chain, "
	    "pin or none, got ''");
}

/* A valid pin: base64 of SHA-256(""). */
#define PIN "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="

static void
test_err_tls_keys(void **state)
{
	(void)state;
	expect_one_error(SVC "alpn = ,\n", 4, "alpn:");
	expect_one_error(SVC "alpn = h2,\n", 4, "alpn: trailing comma");
	expect_one_error(SVC "alpn_required = yes\n", 1,
	    "[s]: alpn_required = yes needs alpn");
	expect_one_error(SVC "alpn_required = often\n", 4,
	    "alpn_required: expected yes or no");
	expect_one_error(SVC "tls_min_version = TLS1.1\n", 4,
	    "tls_min_version: expected TLS1.2 or TLS1.3, got 'TLS1.1'");
	expect_one_error(SVC "tls_max_version = 1.3\n", 4,
	    "tls_max_version: expected TLS1.2 or TLS1.3");
	expect_one_error(SVC "tls_min_version = TLS1.3\n"
	    "tls_max_version = TLS1.2\n", 1,
	    "[s]: tls_min_version is above tls_max_version");
	expect_one_error(SVC "pin_sha256 = abc\n", 4,
	    "pin_sha256: 'abc' is not the base64 of a SHA-256 digest");
	expect_one_error(SVC "pin_sha256 = YWJj\n", 4, "pin_sha256: 'YWJj'");
	expect_one_error(SVC "verify = pin\n", 1,
	    "[s]: verify = pin needs at least one pin_sha256");
	expect_one_error(SVC "verify = none\npin_sha256 = " PIN "\n", 5,
	    "pin_sha256 is not checked with verify = none");
	expect_one_error(SVC "cert_file = /etc/hostname\n", 4,
	    "[s]: cert_file and key_file go together");
	expect_one_error(SVC "key_file = /etc/hostname\n", 4,
	    "[s]: cert_file and key_file go together");
	expect_one_error(SVC "cert_file = /etc/hostname\n"
	    "key_file = /etc/hostname\n"
	    "key_password_file = /nonexistent/pass\n", 6,
	    "key_password_file: cannot read '/nonexistent/pass'");
	expect_one_error(SVC "crl_file = /nonexistent/crl.pem\n", 4,
	    "crl_file: cannot read '/nonexistent/crl.pem'");
	expect_one_error(SVC "session_cache = maybe\n", 4,
	    "session_cache: expected yes or no");
	expect_one_error(SVC "ocsp = sometimes\n", 4,
	    "ocsp: expected off, try or require, got 'sometimes'");
	expect_one_error(SVC "ocsp = try\nocsp = off\n", 5,
	    "'ocsp' given twice");
}

static void
test_tls_keys_parsed(void **state)
{
	const struct service_config *sc;

	(void)state;
	sc = service(load_ok(SVC "alpn = h2, http/1.1\n"
	    "pin_sha256 = " PIN "\npin_sha256 = sha256/" PIN "\n"
	    "tls_max_version = TLS1.2\nsession_cache = no\n"
	    "ocsp = require\ncert_file = pkcs11:token=t;object=o\n"
	    "key_file = pkcs11:token=t;object=o\n"), "s");
	assert_int_equal(sc->nalpn, 2);
	assert_string_equal(sc->alpn[0], "h2");
	assert_string_equal(sc->alpn[1], "http/1.1");
	assert_int_equal(sc->npins, 2);
	assert_memory_equal(sc->pins[0], sc->pins[1], 32);
	assert_int_equal(sc->tls_min_version, TLS_VERSION_DEFAULT);
	assert_int_equal(sc->tls_max_version, 12);
	assert_false(sc->session_cache);
	assert_int_equal(sc->ocsp, OCSP_REQUIRE);
	assert_string_equal(sc->cert_file, "pkcs11:token=t;object=o");

	sc = service(load_ok(SVC), "s");
	assert_true(sc->session_cache);
	assert_int_equal(sc->ocsp, OCSP_TRY);
	assert_int_equal(sc->nalpn, 0);
	assert_false(sc->alpn_required);
	assert_null(sc->cert_file);
}

static void
test_err_bad_log_level(void **state)
{
	(void)state;
	expect_one_error("[global]\nlog_level = loud\n" SVC, 2,
	    "log_level: expected error, warn, info or debug, got 'loud'");
	expect_one_error("[global]\nlog_level = warning\n" SVC, 2,
	    "log_level: expected error, warn, info or debug");
	expect_one_error("[global]\nlog_level = INFO\n" SVC, 2,
	    "got 'INFO'");
}

static void
test_err_bad_log_format(void **state)
{
	(void)state;
	expect_one_error("[global]\nlog_format = xml\n" SVC, 2,
	    "log_format: expected logfmt or json, got 'xml'");
	expect_one_error("[global]\nlog_format = JSON\n" SVC, 2,
	    "log_format: expected logfmt or json, got 'JSON'");
}

static void
test_err_bad_sni(void **state)
{
	(void)state;
	expect_one_error(SVC "sni = 192.0.2.1\n", 4,
	    "sni: '192.0.2.1' is not a DNS host name (IP addresses cannot be "
	    "sent as SNI; '-' sends none)");
	expect_one_error(SVC "sni = [::1]\n", 4, "sni: '[::1]' is not a DNS");
	expect_one_error(SVC "sni = ::1\n", 4, "sni: '::1' is not a DNS");
	expect_one_error(SVC "sni = a b\n", 4, "sni: 'a b' is not a DNS");
	expect_one_error(SVC "sni = a:443\n", 4, "sni: 'a:443' is not a DNS");
	expect_one_error(SVC "sni =\n", 4, "sni: '' is not a DNS host name");
}

static void
test_err_empty_verify_hostname(void **state)
{
	(void)state;
	expect_one_error(SVC "verify_hostname =\n", 4,
	    "verify_hostname: expected a host name or IP address, got ''");
}

static void
test_err_ca_file_unreadable(void **state)
{
	char msg[256];

	(void)state;
	snprintf(msg, sizeof(msg), "ca_file: cannot read "
	    "'/nonexistent/tlsfwd/ca.pem': %s", strerror(ENOENT));
	expect_one_error(SVC "ca_file = /nonexistent/tlsfwd/ca.pem\n", 4, msg);
	snprintf(msg, sizeof(msg), "ca_file: cannot read '': %s",
	    strerror(ENOENT));
	expect_one_error(SVC "ca_file =\n", 4, msg);
}

static void
test_err_syntax(void **state)
{
	(void)state;
	expect_one_error(SVC "this is not a key value\n", 4,
	    "syntax error: expected 'key = value', '[section]' or a comment");
	expect_one_error("[global]\n[s\n" SVC, 2, "syntax error");
	expect_one_error(SVC "\n\n; c\n# c\njunk\n", 8, "syntax error");
}

static void
test_err_line_too_long(void **state)
{
	char text[1024], value[400];

	(void)state;
	memset(value, 'a', 250);
	value[250] = '\0';
	snprintf(text, sizeof(text), SVC ";%s\n", value);
	assert_null(load(text));
	assert_has_error(&E, 4, "line too long (at most 198 characters)");
	config_errors_free(&E);

	/* A long key = value line, last, without a newline. */
	snprintf(text, sizeof(text), SVC "sni = %s", value);
	assert_null(load(text));
	assert_has_error(&E, 4, "line too long (at most 198 characters)");
	config_errors_free(&E);

	/* 198 characters is fine. */
	memset(value, 'a', 197);
	value[197] = '\0';
	snprintf(text, sizeof(text), SVC ";%s\n", value);
	assert_int_equal(strlen(text), strlen(SVC) + 198 + 1);
	load_ok(text);
}

static void
test_err_no_service(void **state)
{
	(void)state;
	/* Not tied to a line: "FILE: message". */
	expect_one_error("", 0, "no service defined: add a [NAME] section with "
	    "listen and upstream");
	expect_one_error("[global]\nlog_level = debug\n", 0,
	    "no service defined");
	expect_one_error("; only a comment\n", 0, "no service defined");
}

static void
test_err_duplicate_listen(void **state)
{
	(void)state;
	expect_one_error("[a]\nlisten = 127.0.0.1:8080\nupstream = x.com:1\n"
	    "[b]\nlisten = 127.0.0.1:8080\nupstream = x.com:1\n", 5,
	    "[b]: listen 127.0.0.1:8080 is already used by [a] (line 2)");
	expect_one_error("[a]\nlisten = [::1]:443\nupstream = x.com:1\n"
	    "[b]\nupstream = x.com:1\nlisten = 127.0.0.1:443\n"
	    "[c]\nupstream = x.com:1\nlisten = [::1]:443\n", 9,
	    "[c]: listen [::1]:443 is already used by [a] (line 2)");
	expect_one_error("[a]\nlisten = unix:/run/t.sock\nupstream = x.com:1\n"
	    "[b]\nlisten = unix:/run/t.sock\nupstream = x.com:1\n", 5,
	    "[b]: listen unix:/run/t.sock is already used by [a] (line 2)");
}

static void
test_port0_listen_may_repeat(void **state)
{
	struct config *cfg;

	(void)state;
	cfg = load_ok("[a]\nlisten = 127.0.0.1:0\nupstream = x.com:1\n"
	    "[b]\nlisten = 127.0.0.1:0\nupstream = x.com:1\n"
	    "[c]\nlisten = [::1]:0\nupstream = x.com:1\n"
	    "[d]\nlisten = [::1]:0\nupstream = x.com:1\n");
	assert_int_equal(cfg->nservices, 4);
}

/* Every problem is reported, not just the first. */
static void
test_err_several(void **state)
{
	const char *text =
	    "[global]\n"				/* 1 */
	    "log_level = loud\n"			/* 2 */
	    "bogus = 1\n"				/* 3 */
	    "[a]\n"					/* 4 */
	    "listen = example.com:80\n"			/* 5 */
	    "upstream = x.com:0\n"			/* 6 */
	    "verify = maybe\n"				/* 7 */
	    "connect_timeout = 0s\n"			/* 8 */
	    "sni = 10.0.0.1\n"				/* 9 */
	    "[b]\n"					/* 10 */
	    "listen = 127.0.0.1:1\n"			/* 11 */
	    "[Global]\n"				/* 12 */
	    "[a]\n"					/* 13 */
	    "[c]\n"					/* 14 */
	    "listen = 127.0.0.1:2\n"			/* 15 */
	    "upstream = x.com:1\n"			/* 16 */
	    "upstream = x.com:1\n"			/* 17 */
	    "ca_file = /nonexistent/ca.pem\n";		/* 18 */

	(void)state;
	assert_null(load(text));
	assert_has_error(&E, 2, "log_level: expected");
	assert_has_error(&E, 3, "[global]: unknown key 'bogus'");
	assert_has_error(&E, 5, "listen: listen host must be an IP");
	assert_has_error(&E, 6, "upstream: port 0 out of range");
	assert_has_error(&E, 7, "verify: expected full");
	assert_has_error(&E, 8, "connect_timeout: must be greater than 0");
	assert_has_error(&E, 9, "sni: '10.0.0.1' is not a DNS host name");
	assert_has_error(&E, 10, "[b]: missing 'upstream'");
	assert_has_error(&E, 12, "unknown section [Global]");
	assert_has_error(&E, 13, "duplicate service [a] (first at line 4)");
	assert_has_error(&E, 17, "upstream: 'x.com:1' is listed twice");
	assert_has_error(&E, 18, "ca_file: cannot read");
	if (E.n != 12)
		print_errors(&E);
	assert_int_equal(E.n, 12);
}

/* Errors are appended to what errs already holds. */
static void
test_errors_accumulate(void **state)
{
	FILE *f;
	char buf[512];
	size_t n;

	(void)state;
	config_error_add(&E, "x.ini", 7, "first %s", "problem");
	config_error_add(&E, "x.ini", 0, "no line");
	CFG = config_load_string(SVC "foo = 1\n", "test.ini", &E);
	assert_null(CFG);
	assert_int_equal(E.n, 3);
	assert_string_equal(E.msgs[0], "x.ini:7: first problem");
	assert_string_equal(E.msgs[1], "x.ini: no line");
	assert_string_equal(E.msgs[2], "test.ini:4: [s]: unknown key 'foo'");

	f = tmpfile();
	assert_non_null(f);
	config_errors_print(&E, f);
	rewind(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	assert_string_equal(buf, "x.ini:7: first problem\nx.ini: no line\n"
	    "test.ini:4: [s]: unknown key 'foo'\n");
	config_errors_free(&E);
	assert_int_equal(E.n, 0);
	assert_null(E.msgs);
	config_errors_free(&E);		/* twice is harmless */
	config_free(NULL);
}

/* ---- defaults and values ---- */

static void
test_defaults(void **state)
{
	struct config *cfg;
	const struct service_config *s;

	(void)state;
	cfg = load_ok(SVC);
	assert_string_equal(cfg->path, "test.ini");
	assert_int_equal(cfg->global.log_level, LOG_INFO);
	assert_int_equal(cfg->global.log_format, LOG_FORMAT_LOGFMT);
	assert_int_equal(cfg->global.shutdown_timeout_ms, 30000);
	assert_int_equal(cfg->global.io_collect_us, 20);
	assert_int_equal(cfg->nservices, 1);
	s = cfg->services;
	assert_non_null(s);
	assert_null(s->next);
	assert_string_equal(s->name, "s");
	assert_int_equal(s->line, 1);
	assert_int_equal(s->listen_line, 2);
	assert_int_equal(s->upstream_line, 3);
	assert_string_equal(s->listen.text, "127.0.0.1:0");
	assert_int_equal(s->listen.is_unix, 0);
	assert_string_equal(s->upstreams[0].hp.host, "example.com");
	assert_int_equal(s->upstreams[0].hp.port, 443);
	assert_int_equal(s->upstreams[0].hp.is_ip_literal, 0);
	assert_string_equal(s->upstreams[0].sni, "example.com");
	assert_string_equal(s->upstreams[0].verify_hostname, "example.com");
	assert_int_equal(s->verify, VERIFY_FULL);
	assert_string_equal(verify_mode_name(s->verify), "full");
	assert_null(s->ca_file);
	assert_int_equal(s->connect_timeout_ms, 5000);
	assert_int_equal(s->handshake_timeout_ms, 10000);
	assert_int_equal(s->idle_timeout_ms, 300000);
}

static void
test_sni_ip_literal_upstream(void **state)
{
	struct config *cfg;
	const struct service_config *s;

	(void)state;
	cfg = load_ok("[v4]\nlisten = 127.0.0.1:0\nupstream = 192.0.2.7:443\n"
	    "[v6]\nlisten = 127.0.0.1:1\nupstream = [2001:db8::7]:8443\n");
	s = service(cfg, "v4");
	assert_int_equal(s->upstreams[0].hp.is_ip_literal, 1);
	assert_string_equal(s->upstreams[0].sni, "");
	assert_string_equal(s->upstreams[0].verify_hostname, "192.0.2.7");
	s = service(cfg, "v6");
	assert_string_equal(s->upstreams[0].hp.host, "2001:db8::7");
	assert_int_equal(s->upstreams[0].hp.port, 8443);
	assert_string_equal(s->upstreams[0].sni, "");
	assert_string_equal(s->upstreams[0].verify_hostname, "2001:db8::7");
}

static void
test_sni_dash_sends_none(void **state)
{
	struct config *cfg;
	const struct service_config *s;

	(void)state;
	cfg = load_ok(SVC "sni = -\n");
	s = cfg->services;
	assert_string_equal(s->upstreams[0].sni, "");
	assert_string_equal(s->upstreams[0].verify_hostname, "example.com");
}

static void
test_sni_and_verify_hostname(void **state)
{
	struct config *cfg;
	const struct service_config *s;

	(void)state;
	/* verify_hostname follows an explicit sni. */
	cfg = load_ok("[a]\nlisten = 127.0.0.1:0\nupstream = 192.0.2.1:443\n"
	    "sni = api.example.com\n"
	    "[b]\nlisten = 127.0.0.1:1\nupstream = example.com:443\n"
	    "verify_hostname = 192.0.2.9\n"
	    "[c]\nlisten = 127.0.0.1:2\nupstream = example.com:443\n"
	    "sni = front.example\nverify_hostname = back.example\n"
	    "[d]\nlisten = 127.0.0.1:3\nupstream = 192.0.2.1:443\nsni = -\n"
	    "verify_hostname = cert.example\n");
	s = service(cfg, "a");
	assert_string_equal(s->upstreams[0].sni, "api.example.com");
	assert_string_equal(s->upstreams[0].verify_hostname, "api.example.com");
	s = service(cfg, "b");
	assert_string_equal(s->upstreams[0].sni, "example.com");
	assert_string_equal(s->upstreams[0].verify_hostname, "192.0.2.9");
	s = service(cfg, "c");
	assert_string_equal(s->upstreams[0].sni, "front.example");
	assert_string_equal(s->upstreams[0].verify_hostname, "back.example");
	s = service(cfg, "d");
	assert_string_equal(s->upstreams[0].sni, "");
	assert_string_equal(s->upstreams[0].verify_hostname, "cert.example");
}

static void
test_verify_modes(void **state)
{
	struct config *cfg;

	(void)state;
	cfg = load_ok("[f]\nlisten = 127.0.0.1:0\nupstream = a.b:1\n"
	    "verify = full\n"
	    "[c]\nlisten = 127.0.0.1:0\nupstream = a.b:1\nverify = chain\n"
	    "[n]\nlisten = 127.0.0.1:0\nupstream = a.b:1\nverify = none\n");
	assert_int_equal(service(cfg, "f")->verify, VERIFY_FULL);
	assert_int_equal(service(cfg, "c")->verify, VERIFY_CHAIN);
	assert_int_equal(service(cfg, "n")->verify, VERIFY_NONE);
	assert_string_equal(verify_mode_name(VERIFY_CHAIN), "chain");
	assert_string_equal(verify_mode_name(VERIFY_NONE), "none");
}

static void
test_all_keys(void **state)
{
	struct config *cfg;
	const struct service_config *s;
	const char *ca = temp_file("not really PEM, only readability is checked\n");
	char text[1024];

	(void)state;
	snprintf(text, sizeof(text),
	    "# tlsfwd test\n"
	    "[global]\n"
	    "log_level = debug\n"
	    "log_format = json\n"
	    "shutdown_timeout = 2m\n"
	    "\n"
	    "[web.example-1_x]\n"
	    "listen=[::1]:8443\n"
	    "upstream   =   example.org:8443\n"
	    "sni = www.example.org\n"
	    "verify = chain\n"
	    "verify_hostname = 198.51.100.1\n"
	    "ca_file = %s\n"
	    "connect_timeout = 250ms\n"
	    "handshake_timeout = 1m\n"
	    "idle_timeout = 1h\n"
	    "[sock]\n"
	    "listen = unix:/run/tlsfwd/sock\n"
	    "upstream = localhost:1\n", ca);
	cfg = load_ok(text);
	assert_int_equal(cfg->global.log_level, LOG_DEBUG);
	assert_int_equal(cfg->global.log_format, LOG_FORMAT_JSON);
	assert_int_equal(cfg->global.shutdown_timeout_ms, 120000);
	assert_int_equal(cfg->nservices, 2);
	/* Services keep the file's order. */
	s = cfg->services;
	assert_string_equal(s->name, "web.example-1_x");
	assert_string_equal(s->next->name, "sock");
	assert_int_equal(s->line, 7);
	assert_int_equal(s->listen_line, 8);
	assert_int_equal(s->upstream_line, 9);
	assert_int_equal(s->ca_file_line, 13);
	assert_string_equal(s->listen.text, "[::1]:8443");
	assert_string_equal(s->upstreams[0].hp.host, "example.org");
	assert_int_equal(s->upstreams[0].hp.port, 8443);
	assert_string_equal(s->upstreams[0].sni, "www.example.org");
	assert_int_equal(s->verify, VERIFY_CHAIN);
	assert_string_equal(s->upstreams[0].verify_hostname, "198.51.100.1");
	assert_non_null(s->ca_file);
	assert_string_equal(s->ca_file, ca);
	assert_int_equal(s->connect_timeout_ms, 250);
	assert_int_equal(s->handshake_timeout_ms, 60000);
	assert_int_equal(s->idle_timeout_ms, 3600000);
	s = s->next;
	assert_int_equal(s->listen.is_unix, 1);
	assert_string_equal(s->listen.text, "unix:/run/tlsfwd/sock");
	assert_string_equal(s->upstreams[0].sni, "localhost");
}

static void
test_inline_comments(void **state)
{
	struct config *cfg;
	const struct service_config *s;

	(void)state;
	cfg = load_ok("; leading comment\n"
	    "# hash comment\n"
	    "[global] ; the global section\n"
	    "log_level = warn ; quieter\n"
	    "[s] ; a service\n"
	    "listen = 127.0.0.1:0 ; ephemeral\n"
	    "upstream = example.com:443 ;; upstream\n"
	    "sni = www.example.com\t; tab before\n"
	    "idle_timeout = 90s ; a comment with = and ; inside\n");
	assert_int_equal(cfg->global.log_level, LOG_WARN);
	s = cfg->services;
	assert_string_equal(s->listen.text, "127.0.0.1:0");
	assert_string_equal(s->upstreams[0].hp.host, "example.com");
	assert_int_equal(s->upstreams[0].hp.port, 443);
	assert_string_equal(s->upstreams[0].sni, "www.example.com");
	assert_int_equal(s->idle_timeout_ms, 90000);

	/* Without a space before it, ';' is part of the value. */
	expect_one_error("[s]\nlisten = 127.0.0.1:0\n"
	    "upstream = example.com:443;x\n", 3,
	    "upstream: invalid port '443;x'");
}

/* ---- config_load from a file ---- */

static void
test_load_file(void **state)
{
	struct config *cfg;
	const char *path = temp_file("[global]\nlog_format = json\n\n" SVC
	    "connect_timeout = 3s\n");

	(void)state;
	cfg = load_file(path);
	assert_non_null(cfg);
	assert_int_equal(E.n, 0);
	assert_string_equal(cfg->path, path);
	assert_int_equal(cfg->global.log_format, LOG_FORMAT_JSON);
	assert_int_equal(cfg->services->line, 4);
	assert_int_equal(cfg->services->connect_timeout_ms, 3000);
}

static void
test_load_file_errors(void **state)
{
	const char *path = temp_file("[global]\nshutdown_timeout = 0s\n" SVC
	    "verify = sometimes\n");
	char want[512];

	(void)state;
	assert_null(load_file(path));
	assert_int_equal(E.n, 2);
	snprintf(want, sizeof(want), "%s:2: shutdown_timeout: must be greater "
	    "than 0", path);
	assert_string_equal(E.msgs[0], want);
	snprintf(want, sizeof(want), "%s:6: verify: expected full, chain, "
	    "pin or none, got 'sometimes'", path);
	assert_string_equal(E.msgs[1], want);
}

static void
test_load_file_missing(void **state)
{
	char want[256];

	(void)state;
	assert_null(load_file("/nonexistent/tlsfwd/tlsfwd.ini"));
	assert_int_equal(E.n, 1);
	snprintf(want, sizeof(want), "/nonexistent/tlsfwd/tlsfwd.ini: cannot "
	    "open: %s", strerror(ENOENT));
	assert_string_equal(E.msgs[0], want);
}

/* ---- daemon bugs: these assert the correct behaviour ---- */

/*
 * BUG (daemon/config.c, validate()): two services with the same listen value
 * that has no ':' (e.g. "listen = foo") crash the loader: the duplicate check
 * calls strcmp(strrchr(text, ':'), ":0") with strrchr() returning NULL, so
 * `tlsfwd -t` dies with SIGSEGV instead of reporting the bad listen values.
 */
static void
test_bug_same_bad_listen_twice_no_crash(void **state)
{
	static const struct want want[] = {
		{ 2, "listen: expected HOST:PORT or [V6]:PORT, got 'foo'" },
		{ 5, "listen: expected HOST:PORT or [V6]:PORT, got 'foo'" },
	};

	(void)state;
	expect_errors_in_child("[a]\nlisten = foo\nupstream = x.com:1\n"
	    "[b]\nlisten = foo\nupstream = x.com:1\n", want,
	    sizeof(want) / sizeof(want[0]));
}

/*
 * The longest line inih hands over whole is 198 characters (its 200-byte
 * buffer holds the newline and the NUL too); 199 is reported as too long.
 */
static void
test_line_of_198_chars_accepted(void **state)
{
	char text[1024], comment[256];
	struct config *cfg;

	(void)state;
	memset(comment, 'c', 198);
	comment[0] = ';';
	comment[198] = '\0';
	snprintf(text, sizeof(text), SVC "%s\n", comment);
	cfg = load(text);
	if (cfg == NULL)
		print_errors(&E);
	assert_non_null(cfg);
	assert_int_equal(E.n, 0);

	/* The same from a file, and as the last line without a newline. */
	cfg = load_file(temp_file(text));
	if (cfg == NULL)
		print_errors(&E);
	assert_non_null(cfg);
	snprintf(text, sizeof(text), SVC "%s", comment);
	cfg = load_file(temp_file(text));
	if (cfg == NULL)
		print_errors(&E);
	assert_non_null(cfg);
}

/*
 * BUG (daemon/config.c, config_parse() with inih): after an over-long line,
 * inih parses the rest of that line as a line of its own and counts it, so a
 * "syntax error" is also reported, at the number of the NEXT line, which is
 * valid. Here line 2 is too long and line 3 is fine, yet the loader reports
 * "test.ini:3: syntax error ...". Every error must point at line 2.
 */
static void
test_bug_line_too_long_no_error_on_next_line(void **state)
{
	char text[1024], comment[256];

	(void)state;
	memset(comment, 'c', 220);
	comment[0] = ';';
	comment[220] = '\0';
	snprintf(text, sizeof(text), "[s]\n%s\nlisten = 127.0.0.1:0\n"
	    "upstream = example.com:443\n", comment);
	assert_null(load(text));
	assert_has_error(&E, 2, "line too long");
	for (size_t i = 0; i < E.n; i++) {
		if (strncmp(E.msgs[i], "test.ini:2: ", 12) != 0) {
			print_errors(&E);
			fail_msg("error not at line 2: %s", E.msgs[i]);
		}
	}
}

/* ---- access control, limits, unix socket permissions ---- */

#define UNIX_SVC \
	"[s]\n" \
	"listen = unix:/tmp/x.sock\n" \
	"upstream = example.com:443\n"

static void
test_access_keys_parsed(void **state)
{
	const struct service_config *s;
	struct config *cfg;

	(void)state;
	cfg = load_ok("[global]\nmax_connections = 300\n"
	    "[s]\nlisten = 0.0.0.0:0\nupstream = example.com:443\n"
	    "allow = 10.0.0.0/8, ::1\nallow = 192.168.1.7\n"
	    "deny = 10.0.66.0/24\nmax_connections = 20\n"
	    "[u]\nlisten = unix:/tmp/x.sock\nupstream = example.com:443\n"
	    "mode = 600\nowner = root\ngroup = root\n");
	assert_int_equal(cfg->global.max_connections, 300);
	s = service(cfg, "s");
	assert_int_equal(s->nallow, 3);	/* repeated keys add up */
	assert_int_equal(s->allow[0].family, AF_INET);
	assert_int_equal(s->allow[0].prefix, 8);
	assert_int_equal(s->allow[1].family, AF_INET6);
	assert_int_equal(s->allow[1].prefix, 128);
	assert_int_equal(s->allow[2].prefix, 32);
	assert_false(s->allow_everyone);
	assert_int_equal(s->ndeny, 1);
	assert_int_equal(s->max_connections, 20);
	s = service(cfg, "u");
	assert_int_equal(s->unix_mode, 0600);
	assert_int_equal(s->unix_uid, 0);
	assert_int_equal(s->unix_gid, 0);
	assert_int_equal(s->max_connections, 0);	/* default: none */
	cfg = load_ok(SVC);
	assert_int_equal(cfg->services->unix_mode, 0660);
	assert_int_equal(cfg->services->unix_uid, (uid_t)-1);
	assert_false(cfg->services->allow_insecure_key_perms);
}

/* A listener beyond loopback lends the service's identity to the network. */
static void
test_err_public_listen_needs_allow(void **state)
{
	struct config *cfg;

	(void)state;
	expect_one_error("[s]\nlisten = 0.0.0.0:8443\n"
	    "upstream = example.com:443\n", 2, "allow = ");
	expect_one_error("[s]\nupstream = example.com:443\n"
	    "listen = [::]:8443\n", 3, "reachable beyond this host");
	expect_one_error("[s]\nupstream = example.com:443\n"
	    "listen = 192.0.2.1:8443\ndeny = 10.0.0.0/8\n", 3, "allow");
	load_ok("[s]\nlisten = 127.0.0.2:0\nupstream = example.com:443\n");
	load_ok("[s]\nlisten = [::1]:0\nupstream = example.com:443\n");
	load_ok("[s]\nlisten = localhost:0\nupstream = example.com:443\n");
	cfg = load_ok("[s]\nlisten = 0.0.0.0:0\nupstream = example.com:443\n"
	    "allow = 0.0.0.0/0, ::/0\n");
	assert_true(cfg->services->allow_everyone);
}

static void
test_err_access_keys(void **state)
{
	(void)state;
	expect_one_error(SVC "allow = 10.1.2.3/8\n", 4, "host bits");
	expect_one_error(SVC "allow = 10.0.0.0/33\n", 4, "prefix length");
	expect_one_error(SVC "deny = example.com\n", 4,
	    "not an IPv4 or IPv6 address");
	expect_one_error(SVC "allow = 10.0.0.0/8,\n", 4,
	    "comma-separated");
	expect_one_error(SVC "allow = ,\n", 4, "comma-separated");
	expect_one_error(SVC "max_connections = 0\n", 4, "from 1 to");
	expect_one_error(SVC "max_connections = -1\n", 4, "from 1 to");
	expect_one_error(SVC "max_connections = 99999999999999999999\n", 4,
	    "from 1 to");
	expect_one_error("[global]\nmax_connections = ten\n" SVC, 2,
	    "max_connections");
	expect_one_error(UNIX_SVC "mode = 0888\n", 4, "octal");
	expect_one_error(UNIX_SVC "owner = no-such-user-xyz\n", 4,
	    "no such user");
	expect_one_error(UNIX_SVC "group = no-such-group-xyz\n", 4,
	    "no such group");
	expect_one_error(SVC "allow_insecure_key_perms = maybe\n", 4,
	    "yes or no");
	/* The keys that belong to the other kind of listener. */
	expect_one_error(SVC "mode = 0600\n", 4, "unix: listeners only");
	expect_one_error(UNIX_SVC "allow = 10.0.0.0/8\n", 4,
	    "apply to TCP listeners");
}

static void
test_err_too_many_cidrs(void **state)
{
	static char text[CIDRS_MAX * 32 + 256];
	size_t len;

	(void)state;
	len = (size_t)snprintf(text, sizeof(text), "%s", SVC);
	/* inih's lines are short: one key per line, repeated. */
	for (int i = 0; i <= CIDRS_MAX; i++)
		len += (size_t)snprintf(text + len, sizeof(text) - len,
		    "%s = 10.%d.%d.0/24\n", i % 2 ? "deny" : "allow",
		    (i >> 8) & 255, i & 255);
	expect_one_error(text, 4 + CIDRS_MAX, "more than");
}

/*
 * Fuzzing regression (tests/fuzz/regress/config/indented-section): after a
 * key, inih reads an indented "[b]" as more of that key's value, but the
 * loader took it for a section header. The file loaded with a service [b]
 * that inih never saw, holding alpn "[b]": nothing reported.
 */
static void
test_bug_indented_section_continues_value(void **state)
{
	struct config *cfg;

	(void)state;
	assert_null(load("[a]\nlisten = 127.0.0.1:1\nupstream = example.com:443\n"
	    "alpn = h2\n  [b]\nlisten = 127.0.0.1:2\n"
	    "upstream = example.net:443\n"));
	/* (upstream may be repeated: a second one is another upstream) */
	assert_int_equal(E.n, 2);
	assert_has_error(&E, 5, "[a]: 'alpn' given twice (an indented line "
	    "continues");
	assert_has_error(&E, 6, "[a]: 'listen' given twice");
	/* Not indented, or after the section header itself: a section. */
	cfg = load_ok("[a]\nlisten = 127.0.0.1:1\nupstream = example.com:443\n"
	    "[b]\nlisten = 127.0.0.1:2\nupstream = example.net:443\n");
	assert_int_equal(cfg->nservices, 2);
	cfg = load_ok("  [a]\nlisten = 127.0.0.1:1\n"
	    "upstream = example.com:443\n");
	assert_string_equal(cfg->services->name, "a");
}

/*
 * inih ignores what follows a section's ']' and strtol() takes "+5": both
 * let a typo pass as something else. Comments after ']' are fine.
 */
static void
test_err_section_trailing_text_and_signed_workers(void **state)
{
	struct config *cfg;

	(void)state;
	expect_one_error("[s] trailing\nlisten = 127.0.0.1:0\n"
	    "upstream = example.com:443\n", 1,
	    "text after section header [s]: 'trailing'");
	expect_one_error("[global]x\n" SVC, 1,
	    "text after section header [global]: 'x'");
	cfg = load_ok("[s]  ; the service\nlisten = 127.0.0.1:0\n"
	    "upstream = example.com:443\n[global]\t# comment\nworkers = 3\n");
	assert_int_equal(cfg->global.workers, 3);
	expect_one_error("[global]\nworkers = +5\n" SVC, 2,
	    "workers: expected 1-64 or auto, got '+5'");
	expect_one_error("[global]\nworkers = 0x2\n" SVC, 2,
	    "workers: expected 1-64 or auto");
	expect_one_error("[global]\nworkers = 65\n" SVC, 2,
	    "workers: expected 1-64 or auto");
}

static void
test_io_collect_interval(void **state)
{
	struct config *cfg;

	(void)state;
	cfg = load_ok("[global]\nio_collect_interval = 0us\n" SVC);
	assert_int_equal(cfg->global.io_collect_us, 0);
	cfg = load_ok("[global]\nio_collect_interval = 2ms\n" SVC);
	assert_int_equal(cfg->global.io_collect_us, 2000);
	expect_one_error("[global]\nio_collect_interval = 20\n" SVC, 2,
	    "io_collect_interval: duration '20' has no unit");
	expect_one_error("[global]\nio_collect_interval = 1s\n" SVC, 2,
	    "(0us turns it off)");
	expect_one_error("[global]\nio_collect_interval = 20ms\n" SVC, 2,
	    "too large");
}

#define T(test)	cmocka_unit_test_teardown(test, teardown)

int
main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_err_unknown_service_key),
		T(test_err_unknown_global_key),
		T(test_err_duplicate_service),
		T(test_err_duplicate_global),
		T(test_err_global_wrong_case),
		T(test_err_invalid_service_name),
		T(test_err_key_outside_section),
		T(test_err_key_twice),
		T(test_err_bad_duration),
		T(test_err_zero_duration),
		T(test_upstream_resolution_keys),
		T(test_several_upstreams),
		T(test_err_bad_listen),
		T(test_err_bad_upstream),
		T(test_err_missing_upstream),
		T(test_err_missing_listen),
		T(test_err_missing_both),
		T(test_err_bad_verify),
		T(test_err_tls_keys),
		T(test_tls_keys_parsed),
		T(test_err_bad_log_level),
		T(test_err_bad_log_format),
		T(test_err_bad_sni),
		T(test_err_empty_verify_hostname),
		T(test_err_ca_file_unreadable),
		T(test_err_syntax),
		T(test_err_line_too_long),
		T(test_err_no_service),
		T(test_err_duplicate_listen),
		T(test_port0_listen_may_repeat),
		T(test_err_several),
		T(test_errors_accumulate),
		T(test_defaults),
		T(test_sni_ip_literal_upstream),
		T(test_sni_dash_sends_none),
		T(test_sni_and_verify_hostname),
		T(test_verify_modes),
		T(test_all_keys),
		T(test_inline_comments),
		T(test_load_file),
		T(test_load_file_errors),
		T(test_load_file_missing),
		T(test_bug_same_bad_listen_twice_no_crash),
		T(test_line_of_198_chars_accepted),
		T(test_bug_line_too_long_no_error_on_next_line),
		T(test_access_keys_parsed),
		T(test_err_public_listen_needs_allow),
		T(test_err_access_keys),
		T(test_err_too_many_cidrs),
		T(test_bug_indented_section_continues_value),
		T(test_err_section_trailing_text_and_signed_workers),
		T(test_io_collect_interval),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
