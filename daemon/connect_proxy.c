/*
 * connect_proxy.c - HTTP CONNECT: connect_proxy_request(),
 * connect_proxy_reply(), base64_encode().
 *
 * The proxy resolves the upstream's name (the request carries the name,
 * not an address): it also serves networks where only the proxy can
 * resolve. Anything but a complete 2xx head within CONNECT_REPLY_MAX bytes
 * fails the connection with stage=proxy and the status line in the log.
 */
#include "connect_proxy.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

void
base64_encode(const unsigned char *in, size_t len, char *out)
{
	static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t i, o = 0;

	for (i = 0; i + 2 < len; i += 3) {
		out[o++] = abc[in[i] >> 2];
		out[o++] = abc[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
		out[o++] = abc[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
		out[o++] = abc[in[i + 2] & 63];
	}
	if (i < len) {
		out[o++] = abc[in[i] >> 2];
		if (i + 1 < len) {
			out[o++] = abc[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
			out[o++] = abc[(in[i + 1] & 15) << 2];
		} else {
			out[o++] = abc[(in[i] & 3) << 4];
			out[o++] = '=';
		}
		out[o++] = '=';
	}
	out[o] = '\0';
}

size_t
connect_proxy_request(const char *host, unsigned int port, const char *user,
    const char *password, char *out)
{
	char target[300], cred[600], b64[820], auth[850];
	int n;

	snprintf(target, sizeof(target), strchr(host, ':') != NULL ?
	    "[%s]:%u" : "%s:%u", host, port);
	auth[0] = '\0';
	if (user != NULL) {
		n = snprintf(cred, sizeof(cred), "%s:%s", user, password);
		if (n < 0 || (size_t)n >= sizeof(cred))
			return 0;
		base64_encode((const unsigned char *)cred, (size_t)n, b64);
		snprintf(auth, sizeof(auth), "Proxy-Authorization: Basic %s\r\n",
		    b64);
		memset(cred, 0, sizeof(cred));
		memset(b64, 0, sizeof(b64));
	}
	n = snprintf(out, CONNECT_REQUEST_MAX, "CONNECT %s HTTP/1.1\r\n"
	    "Host: %s\r\n%s\r\n", target, target, auth);
	memset(auth, 0, sizeof(auth));
	if (n < 0 || n >= CONNECT_REQUEST_MAX)
		return 0;
	return (size_t)n;
}

/* The first line, control bytes as '?', for the log. */
static void
first_line(const char *buf, size_t len, char *out, size_t outlen)
{
	size_t i;

	for (i = 0; i < len && i + 1 < outlen && buf[i] != '\r' &&
	    buf[i] != '\n'; i++)
		out[i] = (unsigned char)buf[i] < 0x20 ||
		    (unsigned char)buf[i] > 0x7e ? '?' : buf[i];
	out[i] = '\0';
}

enum connect_reply
connect_proxy_reply(const char *buf, size_t len, size_t *head_len,
    char *status_line, size_t status_len)
{
	const char *end = NULL;
	int status;

	for (size_t i = 0; i + 3 < len && end == NULL; i++)
		if (memcmp(buf + i, "\r\n\r\n", 4) == 0)
			end = buf + i + 4;
	first_line(buf, len, status_line, status_len);
	if (end == NULL)
		return len >= CONNECT_REPLY_MAX ? CONNECT_REPLY_TOO_LONG :
		    CONNECT_REPLY_MORE;
	*head_len = (size_t)(end - buf);
	/* "HTTP/1.x NNN reason": three digits, then a space or the line's end. */
	if (*head_len < 13 || memcmp(buf, "HTTP/1.", 7) != 0 ||
	    (buf[7] != '0' && buf[7] != '1') || buf[8] != ' ' ||
	    !isdigit((unsigned char)buf[9]) || !isdigit((unsigned char)buf[10]) ||
	    !isdigit((unsigned char)buf[11]) ||
	    (buf[12] != ' ' && buf[12] != '\r'))
		return CONNECT_REPLY_MALFORMED;
	status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
	if (status < 100 || status > 599)
		return CONNECT_REPLY_MALFORMED;
	return status >= 200 && status < 300 ? CONNECT_REPLY_OK :
	    CONNECT_REPLY_REFUSED;
}
