/*
 * fuzz_connect_reply.c - libFuzzer target for connect_proxy_reply(), which
 * reads a CONNECT proxy's answer (bytes from the network). The input is fed
 * as it could arrive, in two reads split at its first byte's value, and the
 * invariants are checked each time:
 *
 *  - a complete head is reported only if the bytes hold "\r\n\r\n", and its
 *    length ends exactly after the first one;
 *  - OK only for "HTTP/1.0 " or "HTTP/1.1 " and a 2xx status;
 *  - MORE only below the 8 KiB bound and without an empty line;
 *  - the status line for the log is printable ASCII, never longer than its
 *    buffer, and a prefix of the first line.
 */
#include <string.h>

#include "connect_proxy.h"
#include "fuzz.h"

static void
check(const char *buf, size_t len)
{
	char line[128];
	size_t head = 0, end = 0;
	const char *crlf = NULL;
	enum connect_reply r;

	for (size_t i = 0; i + 3 < len && crlf == NULL; i++)
		if (memcmp(buf + i, "\r\n\r\n", 4) == 0)
			crlf = buf + i;
	if (crlf != NULL)
		end = (size_t)(crlf - buf) + 4;
	r = connect_proxy_reply(buf, len, &head, line, sizeof(line));
	FUZZ_CHECK(strlen(line) < sizeof(line));
	for (size_t i = 0; line[i] != '\0'; i++) {
		FUZZ_CHECK(line[i] >= 0x20 && line[i] <= 0x7e);
		FUZZ_CHECK(buf[i] == line[i] || line[i] == '?');
	}
	switch (r) {
	case CONNECT_REPLY_MORE:
		FUZZ_CHECK(crlf == NULL && len < CONNECT_REPLY_MAX);
		break;
	case CONNECT_REPLY_TOO_LONG:
		FUZZ_CHECK(crlf == NULL && len >= CONNECT_REPLY_MAX);
		break;
	case CONNECT_REPLY_OK:
		FUZZ_CHECK(len >= 12 && (memcmp(buf, "HTTP/1.0 2", 10) == 0 ||
		    memcmp(buf, "HTTP/1.1 2", 10) == 0));
		/* FALLTHROUGH */
	case CONNECT_REPLY_REFUSED:
	case CONNECT_REPLY_MALFORMED:
		FUZZ_CHECK(crlf != NULL && head == end);
		break;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf;
	size_t split;

	if (size > 2 * CONNECT_REPLY_MAX)
		return 0;
	if ((buf = malloc(size + 1)) == NULL)
		return 0;
	memcpy(buf, data, size);
	split = size > 0 ? (size_t)data[0] % (size + 1) : 0;
	check(buf, split);
	check(buf, size);
	free(buf);
	return 0;
}
