/*
 * test_proxy_protocol.c - the PROXY protocol headers byte by byte against
 * haproxy's spec (proxy-protocol.txt, sections 2.1 and 2.2), and the HTTP
 * CONNECT request and answer parsing of connect_proxy.c.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>

#include "connect_proxy.h"
#include "proxy_protocol.h"

static struct sockaddr_in
v4(const char *ip, unsigned int port)
{
	struct sockaddr_in a;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	inet_pton(AF_INET, ip, &a.sin_addr);
	return a;
}

static struct sockaddr_in6
v6(const char *ip, unsigned int port)
{
	struct sockaddr_in6 a;

	memset(&a, 0, sizeof(a));
	a.sin6_family = AF_INET6;
	a.sin6_port = htons((uint16_t)port);
	inet_pton(AF_INET6, ip, &a.sin6_addr);
	return a;
}

static void
test_v1(void **state)
{
	struct sockaddr_in s = v4("192.0.2.7", 51234), d = v4("127.0.0.1", 6380);
	struct sockaddr_in6 s6 = v6("2001:db8::1", 1), d6 = v6("::1", 443);
	struct sockaddr_un u = { .sun_family = AF_UNIX };
	uint8_t out[PROXY_HEADER_MAX];
	size_t n;

	(void)state;
	n = proxy_header(PROXY_PROTOCOL_V1, (void *)&s, (void *)&d, "x", NULL,
	    out);
	assert_int_equal(n, strlen("PROXY TCP4 192.0.2.7 127.0.0.1 51234 6380\r\n"));
	assert_memory_equal(out, "PROXY TCP4 192.0.2.7 127.0.0.1 51234 6380\r\n",
	    n);
	n = proxy_header(PROXY_PROTOCOL_V1, (void *)&s6, (void *)&d6, NULL,
	    NULL, out);
	assert_memory_equal(out, "PROXY TCP6 2001:db8::1 ::1 1 443\r\n", n);
	n = proxy_header(PROXY_PROTOCOL_V1, (void *)&u, (void *)&u, NULL,
	    NULL, out);
	assert_int_equal(n, 15);
	assert_memory_equal(out, "PROXY UNKNOWN\r\n", 15);
}

static void
test_v2_tcp4_with_tlvs(void **state)
{
	struct sockaddr_in s = v4("192.0.2.7", 51234), d = v4("127.0.0.1", 6380);
	static const uint8_t want[] = {
		/* signature */
		0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49,
		0x54, 0x0A,
		0x21,		/* version 2, PROXY */
		0x11,		/* AF_INET, STREAM */
		0x00, 12 + 3 + 2 + 3 + 11,	/* length after the 16 bytes */
		192, 0, 2, 7, 127, 0, 0, 1,	/* src, dst address */
		0xC8, 0x22, 0x18, 0xEC,		/* 51234, 6380 */
		0x01, 0x00, 0x02, 'h', '2',	/* PP2_TYPE_ALPN */
		0x02, 0x00, 11, 'e', 'x', 'a', 'm', 'p', 'l', 'e', '.', 'c',
		'o', 'm',			/* PP2_TYPE_AUTHORITY */
	};
	uint8_t out[PROXY_HEADER_MAX];
	size_t n;

	(void)state;
	n = proxy_header(PROXY_PROTOCOL_V2, (void *)&s, (void *)&d,
	    "example.com", "h2", out);
	assert_int_equal(n, sizeof(want));
	assert_memory_equal(out, want, sizeof(want));
}

static void
test_v2_tcp6_and_local(void **state)
{
	struct sockaddr_in6 s = v6("2001:db8::1", 1), d = v6("::1", 443);
	struct sockaddr_un u = { .sun_family = AF_UNIX };
	uint8_t out[PROXY_HEADER_MAX];
	size_t n;

	(void)state;
	n = proxy_header(PROXY_PROTOCOL_V2, (void *)&s, (void *)&d, NULL, NULL,
	    out);
	assert_int_equal(n, 16 + 36);
	assert_int_equal(out[12], 0x21);
	assert_int_equal(out[13], 0x21);	/* AF_INET6, STREAM */
	assert_int_equal(out[14] << 8 | out[15], 36);
	assert_memory_equal(out + 16, &s.sin6_addr, 16);
	assert_memory_equal(out + 32, &d.sin6_addr, 16);
	assert_int_equal(out[48] << 8 | out[49], 1);
	assert_int_equal(out[50] << 8 | out[51], 443);
	/* A unix client: LOCAL, AF_UNSPEC, no addresses. */
	n = proxy_header(PROXY_PROTOCOL_V2, (void *)&u, (void *)&u, NULL, NULL,
	    out);
	assert_int_equal(n, 16);
	assert_int_equal(out[12], 0x20);
	assert_int_equal(out[13], 0x00);
	assert_int_equal(out[14] << 8 | out[15], 0);
}

static void
test_base64(void **state)
{
	static const char *const vectors[][2] = {	/* RFC 4648, 10 */
		{ "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" },
		{ "foo", "Zm9v" }, { "foob", "Zm9vYg==" },
		{ "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
	};
	char out[16];

	(void)state;
	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		base64_encode((const unsigned char *)vectors[i][0],
		    strlen(vectors[i][0]), out);
		assert_string_equal(out, vectors[i][1]);
	}
}

static void
test_connect_request(void **state)
{
	char out[CONNECT_REQUEST_MAX];
	size_t n;

	(void)state;
	n = connect_proxy_request("db.internal", 6380, NULL, NULL, out);
	assert_int_equal(n, strlen(out));
	assert_string_equal(out, "CONNECT db.internal:6380 HTTP/1.1\r\n"
	    "Host: db.internal:6380\r\n\r\n");
	/* RFC 7617's example credentials. */
	connect_proxy_request("2001:db8::5", 443, "Aladdin", "open sesame",
	    out);
	assert_string_equal(out, "CONNECT [2001:db8::5]:443 HTTP/1.1\r\n"
	    "Host: [2001:db8::5]:443\r\n"
	    "Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n");
}

static void
test_connect_reply(void **state)
{
	char line[64], big[CONNECT_REPLY_MAX];
	size_t head = 0;
	const char *ok = "HTTP/1.1 200 Connection established\r\n\r\n";

	(void)state;
	assert_int_equal(connect_proxy_reply(ok, 20, &head, line, sizeof(line)),
	    CONNECT_REPLY_MORE);
	assert_int_equal(connect_proxy_reply(ok, strlen(ok), &head, line,
	    sizeof(line)), CONNECT_REPLY_OK);
	assert_int_equal(head, strlen(ok));
	assert_string_equal(line, "HTTP/1.1 200 Connection established");
	assert_int_equal(connect_proxy_reply("HTTP/1.0 200 OK\r\nVia: x\r\n"
	    "\r\nTLS", 30, &head, line, sizeof(line)), CONNECT_REPLY_OK);
	assert_int_equal(head, 27);
	assert_int_equal(connect_proxy_reply("HTTP/1.1 403 Forbidden\r\n\r\n",
	    26, &head, line, sizeof(line)), CONNECT_REPLY_REFUSED);
	assert_string_equal(line, "HTTP/1.1 403 Forbidden");
	assert_int_equal(connect_proxy_reply("HTTP/1.1 2000 x\r\n\r\n", 19,
	    &head, line, sizeof(line)), CONNECT_REPLY_MALFORMED);
	/* Found by fuzz_connect_reply: the status may not come from beyond
	 * the status line (sscanf skipped the empty line to reach it). */
	assert_int_equal(connect_proxy_reply("HTTP/1.1 \r\n\r\n200 C\r\n\r\n",
	    20, &head, line, sizeof(line)), CONNECT_REPLY_MALFORMED);
	assert_int_equal(connect_proxy_reply("SSH-2.0-x\r\n\r\n", 13, &head,
	    line, sizeof(line)), CONNECT_REPLY_MALFORMED);
	assert_int_equal(connect_proxy_reply("\x16\x03\x01\r\n\r\n", 7, &head,
	    line, sizeof(line)), CONNECT_REPLY_MALFORMED);
	assert_string_equal(line, "???");
	memset(big, 'a', sizeof(big));
	assert_int_equal(connect_proxy_reply(big, sizeof(big), &head, line,
	    sizeof(line)), CONNECT_REPLY_TOO_LONG);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v1),
		cmocka_unit_test(test_v2_tcp4_with_tlvs),
		cmocka_unit_test(test_v2_tcp6_and_local),
		cmocka_unit_test(test_base64),
		cmocka_unit_test(test_connect_request),
		cmocka_unit_test(test_connect_reply),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
