/* test_log.c - unit tests for daemon/log.c: exact logfmt and JSON lines. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* 1764046800123 ms after the epoch. */
#define TS_MS	1764046800123LL
#define TS	"2025-11-25T05:00:00.123Z"

#define LOGFMT_PREFIX	"ts=" TS " level=info event=handshake"
#define JSON_PREFIX \
	"{\"ts\":\"" TS "\",\"level\":\"info\",\"event\":\"handshake\""

/* A string literal and its length, embedded NULs included. */
#define V(s)	(s), (sizeof(s) - 1)

/* ---- a strict checker for the flat JSON objects log.c emits ---- */

static const char *
json_string(const char *p)
{
	if (*p++ != '"')
		return NULL;
	while (*p != '"') {
		unsigned char c = (unsigned char)*p;

		if (c == '\0' || c < 0x20)
			return NULL;
		if (c == '\\') {
			p++;
			if (*p == 'u') {
				for (int i = 1; i <= 4; i++)
					if (!isxdigit((unsigned char)p[i]))
						return NULL;
				p += 4;
			} else if (strchr("\"\\/bfnrt", *p) == NULL ||
			    *p == '\0') {
				return NULL;
			}
		}
		p++;
	}
	return p + 1;
}

static const char *
json_number(const char *p)
{
	const char *start;

	if (*p == '-')
		p++;
	start = p;
	while (isdigit((unsigned char)*p))
		p++;
	if (p == start || (*start == '0' && p - start > 1))
		return NULL;
	if (*p == '.') {
		start = ++p;
		while (isdigit((unsigned char)*p))
			p++;
		if (p == start)
			return NULL;
	}
	return p;
}

/* True if line is exactly one JSON object of string/number members + "\n". */
static int
json_line_valid(const char *line)
{
	const char *p = line;

	if (*p++ != '{')
		return 0;
	if (*p != '}') {
		for (;;) {
			if ((p = json_string(p)) == NULL || *p++ != ':')
				return 0;
			p = *p == '"' ? json_string(p) : json_number(p);
			if (p == NULL)
				return 0;
			if (*p != ',')
				break;
			p++;
		}
	}
	return strcmp(p, "}\n") == 0;
}

static void
assert_json_valid(const char *line)
{
	if (!json_line_valid(line))
		fail_msg("not a valid JSON line: %s", line);
}

/* ---- helpers ---- */

static struct log_line L;

static void
begin(enum log_format format)
{
	log_line_begin_at(&L, format, LOG_INFO, "handshake", TS_MS);
}

static void
check_line(const char *line, const char *want)
{
	assert_non_null(line);
	assert_string_equal(line, want);
	assert_int_equal(strlen(line), L.len);
	if (L.format == LOG_FORMAT_JSON)
		assert_json_valid(line);
}

/* One string field in both formats, against its expected encodings. */
static void
check_value(const char *value, size_t len, const char *logfmt,
    const char *json)
{
	char want[LOG_LINE_MAX];

	begin(LOG_FORMAT_LOGFMT);
	log_strn(&L, "k", value, len);
	snprintf(want, sizeof(want), LOGFMT_PREFIX " k=%s\n", logfmt);
	check_line(log_line_finish(&L), want);

	begin(LOG_FORMAT_JSON);
	log_strn(&L, "k", value, len);
	snprintf(want, sizeof(want), JSON_PREFIX ",\"k\":%s}\n", json);
	check_line(log_line_finish(&L), want);
}

/* ---- names and parsing ---- */

static void
test_level_names(void **state)
{
	(void)state;
	assert_string_equal(log_level_name(LOG_ERROR), "error");
	assert_string_equal(log_level_name(LOG_WARN), "warn");
	assert_string_equal(log_level_name(LOG_INFO), "info");
	assert_string_equal(log_level_name(LOG_DEBUG), "debug");
}

static void
test_level_parse(void **state)
{
	static const char *const bad[] = { "", "WARN", "Info", "warning",
	    "err", "info ", " info", "trace", "0" };
	enum log_level lv;

	(void)state;
	assert_int_equal(log_level_parse("error", &lv), 0);
	assert_int_equal(lv, LOG_ERROR);
	assert_int_equal(log_level_parse("warn", &lv), 0);
	assert_int_equal(lv, LOG_WARN);
	assert_int_equal(log_level_parse("info", &lv), 0);
	assert_int_equal(lv, LOG_INFO);
	assert_int_equal(log_level_parse("debug", &lv), 0);
	assert_int_equal(lv, LOG_DEBUG);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		lv = LOG_WARN;
		assert_int_equal(log_level_parse(bad[i], &lv), -1);
		assert_int_equal(lv, LOG_WARN);
	}
}

static void
test_format_parse(void **state)
{
	static const char *const bad[] = { "", "JSON", "Logfmt", "text",
	    "json ", "ndjson" };
	enum log_format f;

	(void)state;
	assert_int_equal(log_format_parse("logfmt", &f), 0);
	assert_int_equal(f, LOG_FORMAT_LOGFMT);
	assert_int_equal(log_format_parse("json", &f), 0);
	assert_int_equal(f, LOG_FORMAT_JSON);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		f = LOG_FORMAT_JSON;
		assert_int_equal(log_format_parse(bad[i], &f), -1);
		assert_int_equal(f, LOG_FORMAT_JSON);
	}
}

/* ---- line layout ---- */

static void
test_timestamp(void **state)
{
	static const struct { int64_t ms; const char *ts; } cases[] = {
		{ 1764046800123LL, "2025-11-25T05:00:00.123Z" },
		{ 0, "1970-01-01T00:00:00.000Z" },
		{ 1709164800007LL, "2024-02-29T00:00:00.007Z" },
		{ 951782400050LL, "2000-02-29T00:00:00.050Z" },
		{ 4102444799999LL, "2099-12-31T23:59:59.999Z" },
		{ 1764046861001LL, "2025-11-25T05:01:01.001Z" },
	};
	char want[256];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		log_line_begin_at(&L, LOG_FORMAT_LOGFMT, LOG_INFO, "e",
		    cases[i].ms);
		snprintf(want, sizeof(want), "ts=%s level=info event=e\n",
		    cases[i].ts);
		check_line(log_line_finish(&L), want);
	}
}

static void
test_levels_in_line(void **state)
{
	(void)state;
	log_line_begin_at(&L, LOG_FORMAT_LOGFMT, LOG_ERROR, "exit", TS_MS);
	check_line(log_line_finish(&L), "ts=" TS " level=error event=exit\n");
	log_line_begin_at(&L, LOG_FORMAT_LOGFMT, LOG_WARN, "close", TS_MS);
	check_line(log_line_finish(&L), "ts=" TS " level=warn event=close\n");
	log_line_begin_at(&L, LOG_FORMAT_JSON, LOG_DEBUG, "ready", TS_MS);
	check_line(log_line_finish(&L), "{\"ts\":\"" TS "\",\"level\":\"debug\","
	    "\"event\":\"ready\"}\n");
}

static void
test_logfmt_handshake_line(void **state)
{
	(void)state;
	begin(LOG_FORMAT_LOGFMT);
	log_str(&L, "service", "example");
	log_uint(&L, "conn", 7);
	log_str(&L, "client", "127.0.0.1:53012");
	log_str(&L, "sni", "example.com");
	log_str(&L, "result", "ok");
	log_str(&L, "peer", "CN=example.com");
	log_str(&L, "issuer", "CN=Example CA,O=Example");
	log_ms(&L, "connect_ms", 1.24);
	log_ms(&L, "handshake_ms", 41.16);
	check_line(log_line_finish(&L), LOGFMT_PREFIX " service=example conn=7 "
	    "client=127.0.0.1:53012 sni=example.com result=ok "
	    "peer=\"CN=example.com\" issuer=\"CN=Example CA,O=Example\" "
	    "connect_ms=1.2 handshake_ms=41.2\n");
	assert_false(L.truncated);
}

static void
test_json_handshake_line(void **state)
{
	const char *line;

	(void)state;
	begin(LOG_FORMAT_JSON);
	log_str(&L, "service", "example");
	log_uint(&L, "conn", 7);
	log_str(&L, "sni", "-");
	log_str(&L, "peer", "CN=example.com");
	log_ms(&L, "handshake_ms", 41.16);
	log_uint(&L, "bytes_up", 0);
	line = log_line_finish(&L);
	check_line(line, JSON_PREFIX ",\"service\":\"example\",\"conn\":7,"
	    "\"sni\":\"-\",\"peer\":\"CN=example.com\",\"handshake_ms\":41.2,"
	    "\"bytes_up\":0}\n");
	assert_int_equal(line[0], '{');
}

static void
test_empty_line(void **state)
{
	(void)state;
	begin(LOG_FORMAT_JSON);
	check_line(log_line_finish(&L), JSON_PREFIX "}\n");
	begin(LOG_FORMAT_LOGFMT);
	check_line(log_line_finish(&L), LOGFMT_PREFIX "\n");
}

/* ---- values: quoting and escaping ---- */

static void
test_plain_values(void **state)
{
	(void)state;
	check_value(V("plain"), "plain", "\"plain\"");
	check_value(V("-"), "-", "\"-\"");
	check_value(V("127.0.0.1:443"), "127.0.0.1:443", "\"127.0.0.1:443\"");
	check_value(V("[::1]:443"), "[::1]:443", "\"[::1]:443\"");
	check_value(V("a,b;c{}/'"), "a,b;c{}/'", "\"a,b;c{}/'\"");
	check_value(V("GNUTLS_E_PREMATURE_TERMINATION"),
	    "GNUTLS_E_PREMATURE_TERMINATION",
	    "\"GNUTLS_E_PREMATURE_TERMINATION\"");
}

static void
test_quoted_values(void **state)
{
	(void)state;
	check_value(V(""), "\"\"", "\"\"");
	check_value(V("a b"), "\"a b\"", "\"a b\"");
	check_value(V(" "), "\" \"", "\" \"");
	check_value(V("a=b"), "\"a=b\"", "\"a=b\"");
	check_value(V("="), "\"=\"", "\"=\"");
	check_value(V("say \"hi\""), "\"say \\\"hi\\\"\"",
	    "\"say \\\"hi\\\"\"");
	check_value(V("\""), "\"\\\"\"", "\"\\\"\"");
	check_value(V("C:\\dir"), "\"C:\\\\dir\"", "\"C:\\\\dir\"");
	check_value(V("\\"), "\"\\\\\"", "\"\\\\\"");
	check_value(V("The certificate is NOT trusted. "),
	    "\"The certificate is NOT trusted. \"",
	    "\"The certificate is NOT trusted. \"");
}

static void
test_control_values(void **state)
{
	(void)state;
	check_value(V("a\nb"), "\"a\\nb\"", "\"a\\nb\"");
	check_value(V("a\tb"), "\"a\\tb\"", "\"a\\tb\"");
	check_value(V("a\rb"), "\"a\\rb\"", "\"a\\rb\"");
	check_value(V("\r\n"), "\"\\r\\n\"", "\"\\r\\n\"");
	check_value(V("\x01"), "\"\\x01\"", "\"\\\\x01\"");
	check_value(V("a\x1b[31mred"), "\"a\\x1b[31mred\"",
	    "\"a\\\\x1b[31mred\"");
	check_value(V("\x1f"), "\"\\x1f\"", "\"\\\\x1f\"");
	check_value(V("\x7f"), "\"\\x7f\"", "\"\\\\x7f\"");
	check_value(V("\b\f\v"), "\"\\x08\\x0c\\x0b\"",
	    "\"\\\\x08\\\\x0c\\\\x0b\"");
	/* log_strn() takes the length, so a NUL byte is escaped too. */
	check_value(V("a\0" "b"), "\"a\\x00b\"", "\"a\\\\x00b\"");
	/* A line is always one line. */
	begin(LOG_FORMAT_LOGFMT);
	log_str(&L, "error", "line1\nline2\r\n");
	assert_null(strchr(log_line_finish(&L), '\r'));
	assert_int_equal(strchr(L.buf, '\n') - L.buf, (long)L.len - 1);
}

static void
test_invalid_utf8_values(void **state)
{
	(void)state;
	check_value(V("\xff"), "\"\\xff\"", "\"\\\\xff\"");
	check_value(V("a\xfe" "b"), "\"a\\xfeb\"", "\"a\\\\xfeb\"");
	/* A lone continuation byte. */
	check_value(V("\x80"), "\"\\x80\"", "\"\\\\x80\"");
	/* Truncated sequences, at the end and before ASCII. */
	check_value(V("\xe6\x97"), "\"\\xe6\\x97\"", "\"\\\\xe6\\\\x97\"");
	check_value(V("\xe6\x97" "A"), "\"\\xe6\\x97A\"",
	    "\"\\\\xe6\\\\x97A\"");
	check_value(V("\xf0\x9f\x98"), "\"\\xf0\\x9f\\x98\"",
	    "\"\\\\xf0\\\\x9f\\\\x98\"");
	check_value(V("\xc3"), "\"\\xc3\"", "\"\\\\xc3\"");
	/* Overlong forms. */
	check_value(V("\xc0\xaf"), "\"\\xc0\\xaf\"", "\"\\\\xc0\\\\xaf\"");
	check_value(V("\xc1\xbf"), "\"\\xc1\\xbf\"", "\"\\\\xc1\\\\xbf\"");
	check_value(V("\xe0\x80\xaf"), "\"\\xe0\\x80\\xaf\"",
	    "\"\\\\xe0\\\\x80\\\\xaf\"");
	check_value(V("\xf0\x80\x80\xaf"), "\"\\xf0\\x80\\x80\\xaf\"",
	    "\"\\\\xf0\\\\x80\\\\x80\\\\xaf\"");
	/* UTF-16 surrogates. */
	check_value(V("\xed\xa0\x80"), "\"\\xed\\xa0\\x80\"",
	    "\"\\\\xed\\\\xa0\\\\x80\"");
	check_value(V("\xed\xbf\xbf"), "\"\\xed\\xbf\\xbf\"",
	    "\"\\\\xed\\\\xbf\\\\xbf\"");
	/* Past U+10FFFF, and bytes that never start a sequence. */
	check_value(V("\xf4\x90\x80\x80"), "\"\\xf4\\x90\\x80\\x80\"",
	    "\"\\\\xf4\\\\x90\\\\x80\\\\x80\"");
	check_value(V("\xf5\x80\x80\x80"), "\"\\xf5\\x80\\x80\\x80\"",
	    "\"\\\\xf5\\\\x80\\\\x80\\\\x80\"");
	/* A valid character right after an invalid byte survives. */
	check_value(V("\xff\xc3\xa9"), "\"\\xff\xc3\xa9\"",
	    "\"\\\\xff\xc3\xa9\"");
}

static void
test_valid_utf8_values(void **state)
{
	(void)state;
	/* Passed through; non-ASCII bytes make logfmt quote the value. */
	check_value(V("\xc3\xa9"), "\"\xc3\xa9\"", "\"\xc3\xa9\"");
	check_value(V("caf\xc3\xa9"), "\"caf\xc3\xa9\"", "\"caf\xc3\xa9\"");
	check_value(V("\xe6\x97\xa5\xe6\x9c\xac"),
	    "\"\xe6\x97\xa5\xe6\x9c\xac\"", "\"\xe6\x97\xa5\xe6\x9c\xac\"");
	check_value(V("\xf0\x9f\x98\x80"), "\"\xf0\x9f\x98\x80\"",
	    "\"\xf0\x9f\x98\x80\"");
	/* Edges: U+0080, U+07FF, U+0800, U+D7FF, U+E000, U+FFFF, U+10000,
	 * U+10FFFF. */
	check_value(V("\xc2\x80"), "\"\xc2\x80\"", "\"\xc2\x80\"");
	check_value(V("\xdf\xbf"), "\"\xdf\xbf\"", "\"\xdf\xbf\"");
	check_value(V("\xe0\xa0\x80"), "\"\xe0\xa0\x80\"", "\"\xe0\xa0\x80\"");
	check_value(V("\xed\x9f\xbf"), "\"\xed\x9f\xbf\"", "\"\xed\x9f\xbf\"");
	check_value(V("\xee\x80\x80"), "\"\xee\x80\x80\"", "\"\xee\x80\x80\"");
	check_value(V("\xef\xbf\xbf"), "\"\xef\xbf\xbf\"", "\"\xef\xbf\xbf\"");
	check_value(V("\xf0\x90\x80\x80"), "\"\xf0\x90\x80\x80\"",
	    "\"\xf0\x90\x80\x80\"");
	check_value(V("\xf4\x8f\xbf\xbf"), "\"\xf4\x8f\xbf\xbf\"",
	    "\"\xf4\x8f\xbf\xbf\"");
	check_value(V("CN=\xe6\x97\xa5\xe6\x9c\xac \"x\""),
	    "\"CN=\xe6\x97\xa5\xe6\x9c\xac \\\"x\\\"\"",
	    "\"CN=\xe6\x97\xa5\xe6\x9c\xac \\\"x\\\"\"");
}

static void
test_str_null_and_strn_length(void **state)
{
	(void)state;
	begin(LOG_FORMAT_LOGFMT);
	log_str(&L, "alpn", NULL);
	log_strn(&L, "part", "abcdef", 3);
	log_strn(&L, "none", "abcdef", 0);
	check_line(log_line_finish(&L), LOGFMT_PREFIX " alpn=- part=abc "
	    "none=\"\"\n");
	begin(LOG_FORMAT_JSON);
	log_str(&L, "alpn", NULL);
	log_strn(&L, "part", "abcdef", 3);
	check_line(log_line_finish(&L), JSON_PREFIX ",\"alpn\":\"-\","
	    "\"part\":\"abc\"}\n");
}

static void
test_strf(void **state)
{
	(void)state;
	begin(LOG_FORMAT_LOGFMT);
	log_strf(&L, "upstream", "%s:%u", "93.184.216.34", 443u);
	log_strf(&L, "peer", "CN=%s,O=%s", "example.com", "Ex Corp");
	log_strf(&L, "error", "%s", "bad\nthing");
	log_strf(&L, "empty", "%s", "");
	check_line(log_line_finish(&L), LOGFMT_PREFIX " upstream=93.184.216.34:443"
	    " peer=\"CN=example.com,O=Ex Corp\" error=\"bad\\nthing\" "
	    "empty=\"\"\n");
	begin(LOG_FORMAT_JSON);
	log_strf(&L, "conn", "%d", 42);
	log_strf(&L, "peer", "%s\\%c", "a", '"');
	check_line(log_line_finish(&L), JSON_PREFIX ",\"conn\":\"42\","
	    "\"peer\":\"a\\\\\\\"\"}\n");
}

/* ---- numbers ---- */

static void
test_uint(void **state)
{
	(void)state;
	begin(LOG_FORMAT_LOGFMT);
	log_uint(&L, "a", 0);
	log_uint(&L, "b", 1256);
	log_uint(&L, "c", UINT64_MAX);
	check_line(log_line_finish(&L), LOGFMT_PREFIX " a=0 b=1256 "
	    "c=18446744073709551615\n");
	begin(LOG_FORMAT_JSON);
	log_uint(&L, "a", 0);
	log_uint(&L, "c", UINT64_MAX);
	check_line(log_line_finish(&L), JSON_PREFIX ",\"a\":0,"
	    "\"c\":18446744073709551615}\n");
}

static void
test_ms(void **state)
{
	static const struct { double ms; const char *text; } cases[] = {
		{ 0.0, "0.0" },
		{ 1.24, "1.2" },
		{ 1.26, "1.3" },
		{ 0.04, "0.0" },
		{ 0.06, "0.1" },
		{ 41.16, "41.2" },
		{ 555.1, "555.1" },
		{ 12345.67, "12345.7" },
		{ 300000.0, "300000.0" },
		{ -1.0, "0.0" },
		{ -0.04, "0.0" },
		{ -12345.6, "0.0" },
	};
	char want[256];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		begin(LOG_FORMAT_LOGFMT);
		log_ms(&L, "d_ms", cases[i].ms);
		snprintf(want, sizeof(want), LOGFMT_PREFIX " d_ms=%s\n",
		    cases[i].text);
		check_line(log_line_finish(&L), want);
		begin(LOG_FORMAT_JSON);
		log_ms(&L, "d_ms", cases[i].ms);
		snprintf(want, sizeof(want), JSON_PREFIX ",\"d_ms\":%s}\n",
		    cases[i].text);
		check_line(log_line_finish(&L), want);
	}
}

static void
test_ms_nan_and_negative_infinity(void **state)
{
	(void)state;
	begin(LOG_FORMAT_JSON);
	log_ms(&L, "a_ms", NAN);
	log_ms(&L, "b_ms", -NAN);
	log_ms(&L, "c_ms", -INFINITY);
	check_line(log_line_finish(&L), JSON_PREFIX ",\"a_ms\":0.0,"
	    "\"b_ms\":0.0,\"c_ms\":0.0}\n");
}

/* ---- truncation ---- */

static void
test_truncate_huge_value(void **state)
{
	static char big[10001];
	const char *line;

	(void)state;
	memset(big, 'x', 10000);
	big[10000] = '\0';

	begin(LOG_FORMAT_LOGFMT);
	log_str(&L, "service", "example");
	log_str(&L, "peer", big);
	log_str(&L, "after", "dropped");
	log_uint(&L, "n", 1);
	log_ms(&L, "x_ms", 1.0);
	line = log_line_finish(&L);
	check_line(line, LOGFMT_PREFIX " service=example truncated=yes\n");
	assert_true(L.truncated);

	begin(LOG_FORMAT_JSON);
	log_str(&L, "service", "example");
	log_str(&L, "peer", big);
	log_str(&L, "after", "dropped");
	log_uint(&L, "n", 1);
	line = log_line_finish(&L);
	check_line(line, JSON_PREFIX ",\"service\":\"example\","
	    "\"truncated\":\"yes\"}\n");

	/* Also when escaping is what makes the value too long. */
	memset(big, '\n', 3000);
	big[3000] = '\0';
	begin(LOG_FORMAT_JSON);
	log_str(&L, "error", big);
	check_line(log_line_finish(&L), JSON_PREFIX ",\"truncated\":\"yes\"}\n");
	memset(big, 0x01, 1500);	/* \\x01: 5 bytes each in JSON */
	big[1500] = '\0';
	begin(LOG_FORMAT_JSON);
	log_str(&L, "error", big);
	check_line(log_line_finish(&L), JSON_PREFIX ",\"truncated\":\"yes\"}\n");
	begin(LOG_FORMAT_LOGFMT);
	log_strf(&L, "a", "%s", "ok");
	log_str(&L, "error", big);
	check_line(log_line_finish(&L), LOGFMT_PREFIX " a=ok truncated=yes\n");
}

/*
 * For every value length around the limit, in both formats, quoted or not:
 * the line is either complete or the field is dropped whole and the line
 * ends with the truncation marker; it never exceeds LOG_LINE_MAX (with NUL).
 */
static void
sweep(enum log_format format, char fill, const char *escaped)
{
	static char value[LOG_LINE_MAX + 8], want[3 * LOG_LINE_MAX];
	size_t esclen = strlen(escaped);
	size_t last_whole = 0;
	int seen_truncated = 0;
	/* JSON quotes every string; logfmt only some (and empty ones). */
	int quote = format == LOG_FORMAT_JSON || (unsigned char)fill <= 0x20 ||
	    fill == '=' || fill == '"' || fill == '\\' ||
	    (unsigned char)fill >= 0x7f;

	for (size_t n = 0; n <= LOG_LINE_MAX / esclen + 2; n++) {
		const char *line;
		size_t w;

		memset(value, fill, n);
		value[n] = '\0';
		begin(format);
		log_strn(&L, "k", value, n);
		line = log_line_finish(&L);
		assert_non_null(line);
		assert_int_equal(strlen(line), L.len);
		assert_true(L.len <= LOG_LINE_MAX - 1);
		if (format == LOG_FORMAT_JSON)
			assert_json_valid(line);
		if (!L.truncated) {
			/* Once cut, a longer value never fits again. */
			assert_false(seen_truncated);
			last_whole = n;
			w = (size_t)snprintf(want, 3 * LOG_LINE_MAX, "%s%s",
			    format == LOG_FORMAT_JSON ? JSON_PREFIX ",\"k\":" :
			    LOGFMT_PREFIX " k=", quote || n == 0 ? "\"" : "");
			for (size_t i = 0; i < n; i++, w += esclen)
				memcpy(want + w, escaped, esclen);
			snprintf(want + w, 3 * LOG_LINE_MAX - w, "%s%s",
			    quote || n == 0 ? "\"" : "",
			    format == LOG_FORMAT_JSON ? "}\n" : "\n");
			assert_string_equal(line, want);
		} else {
			seen_truncated = 1;
			assert_string_equal(line, format == LOG_FORMAT_JSON ?
			    JSON_PREFIX ",\"truncated\":\"yes\"}\n" :
			    LOGFMT_PREFIX " truncated=yes\n");
		}
	}
	/* The limit was reached, and not absurdly early. */
	assert_true(seen_truncated);
	assert_true(last_whole * esclen > LOG_LINE_MAX - 200);
}

static void
test_truncate_sweep(void **state)
{
	(void)state;
	sweep(LOG_FORMAT_LOGFMT, 'a', "a");
	sweep(LOG_FORMAT_LOGFMT, ' ', " ");
	sweep(LOG_FORMAT_LOGFMT, '\n', "\\n");
	sweep(LOG_FORMAT_LOGFMT, '\x02', "\\x02");
	sweep(LOG_FORMAT_JSON, 'a', "a");
	sweep(LOG_FORMAT_JSON, '"', "\\\"");
	sweep(LOG_FORMAT_JSON, '\x02', "\\\\x02");
}

/* Many small fields: the line keeps whole fields only, then the marker. */
static void
test_truncate_many_fields(void **state)
{
	const char *line;
	size_t w, i;

	(void)state;
	for (int f = 0; f < 2; f++) {
		enum log_format format = f ? LOG_FORMAT_JSON :
		    LOG_FORMAT_LOGFMT;

		begin(format);
		for (i = 0; i < 2000; i++) {
			if (i % 3 == 0)
				log_uint(&L, "n", i);
			else if (i % 3 == 1)
				log_ms(&L, "t_ms", (double)i);
			else
				log_str(&L, "s", "a b");
		}
		line = log_line_finish(&L);
		assert_true(L.truncated);
		assert_true(L.len <= LOG_LINE_MAX - 1);
		assert_int_equal(strlen(line), L.len);
		if (format == LOG_FORMAT_JSON)
			assert_json_valid(line);
		/* Rebuild the longest whole-field prefix of the line. */
		w = strlen(f ? JSON_PREFIX : LOGFMT_PREFIX);
		assert_memory_equal(line, f ? JSON_PREFIX : LOGFMT_PREFIX, w);
		for (i = 0; ; i++) {
			char field[64];
			size_t n;

			if (i % 3 == 0)
				snprintf(field, sizeof(field), f ? ",\"n\":%zu" :
				    " n=%zu", i);
			else if (i % 3 == 1)
				snprintf(field, sizeof(field), f ?
				    ",\"t_ms\":%zu.0" : " t_ms=%zu.0", i);
			else
				snprintf(field, sizeof(field), "%s", f ?
				    ",\"s\":\"a b\"" : " s=\"a b\"");
			n = strlen(field);
			if (strncmp(line + w, field, n) != 0)
				break;
			w += n;
		}
		assert_true(i > 100);
		assert_string_equal(line + w, f ? ",\"truncated\":\"yes\"}\n" :
		    " truncated=yes\n");
	}
}

/* ---- log_line_begin / log_line_end / log_msg through log_setup ---- */

static int
is_ts(const char *s)
{
	static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";

	for (size_t i = 0; i < sizeof(shape) - 1; i++) {
		if (shape[i] == 'd' ? !isdigit((unsigned char)s[i]) :
		    s[i] != shape[i])
			return 0;
	}
	return 1;
}

static void
test_line_end_writes(void **state)
{
	int fds[2];
	char buf[LOG_LINE_MAX + 1];
	const char *line;
	ssize_t n;
	const char *tail;

	(void)state;
	assert_int_equal(pipe(fds), 0);
	assert_int_equal(fcntl(fds[0], F_SETFL, O_NONBLOCK), 0);

	log_setup(LOG_WARN, LOG_FORMAT_JSON, fds[1]);
	assert_true(log_enabled(LOG_ERROR));
	assert_true(log_enabled(LOG_WARN));
	assert_false(log_enabled(LOG_INFO));
	assert_false(log_enabled(LOG_DEBUG));

	/* Below the threshold: nothing built, nothing written. */
	log_line_begin(&L, LOG_INFO, "accept");
	assert_false(L.enabled);
	log_str(&L, "k", "v");
	log_uint(&L, "n", 1);
	log_ms(&L, "t_ms", 1);
	log_strf(&L, "f", "%d", 1);
	assert_null(log_line_finish(&L));
	assert_null(log_line_end(&L));
	log_msg(LOG_DEBUG, "debug", "not %s", "written");
	assert_int_equal(read(fds[0], buf, sizeof(buf)), -1);

	log_line_begin(&L, LOG_WARN, "close");
	log_str(&L, "reason", "idle_timeout");
	line = log_line_end(&L);
	assert_non_null(line);
	n = read(fds[0], buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_string_equal(buf, line);
	assert_json_valid(buf);
	assert_int_equal(strncmp(buf, "{\"ts\":\"", 7), 0);
	assert_true(is_ts(buf + 7));
	tail = buf + 7 + 24;
	assert_string_equal(tail, "\",\"level\":\"warn\",\"event\":\"close\","
	    "\"reason\":\"idle_timeout\"}\n");

	log_setup(LOG_DEBUG, LOG_FORMAT_LOGFMT, fds[1]);
	log_msg(LOG_ERROR, "config", "verify = %s for [%s]", "none", "x");
	n = read(fds[0], buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_int_equal(strncmp(buf, "ts=", 3), 0);
	assert_true(is_ts(buf + 3));
	assert_string_equal(buf + 3 + 24, " level=error event=config "
	    "msg=\"verify = none for [x]\"\n");

	log_setup(LOG_INFO, LOG_FORMAT_LOGFMT, 2);
	close(fds[0]);
	close(fds[1]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_level_names),
		cmocka_unit_test(test_level_parse),
		cmocka_unit_test(test_format_parse),
		cmocka_unit_test(test_timestamp),
		cmocka_unit_test(test_levels_in_line),
		cmocka_unit_test(test_logfmt_handshake_line),
		cmocka_unit_test(test_json_handshake_line),
		cmocka_unit_test(test_empty_line),
		cmocka_unit_test(test_plain_values),
		cmocka_unit_test(test_quoted_values),
		cmocka_unit_test(test_control_values),
		cmocka_unit_test(test_invalid_utf8_values),
		cmocka_unit_test(test_valid_utf8_values),
		cmocka_unit_test(test_str_null_and_strn_length),
		cmocka_unit_test(test_strf),
		cmocka_unit_test(test_uint),
		cmocka_unit_test(test_ms),
		cmocka_unit_test(test_ms_nan_and_negative_infinity),
		cmocka_unit_test(test_truncate_huge_value),
		cmocka_unit_test(test_truncate_sweep),
		cmocka_unit_test(test_truncate_many_fields),
		cmocka_unit_test(test_line_end_writes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
