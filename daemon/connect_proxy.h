/*
 * connect_proxy.h - HTTP CONNECT through a proxy (via = http://...): the
 * request tlsfwd sends and the reading of the proxy's answer. The
 * connection drives them from conn_connect.c (CONN_PROXY_TUNNEL).
 */
#ifndef TLSFWD_CONNECT_PROXY_H
#define TLSFWD_CONNECT_PROXY_H

#include <stddef.h>

/* The answer's head may be this long at most (then: too long). */
#define CONNECT_REPLY_MAX	8192
/* Room for a request: the target twice, Basic credentials. */
#define CONNECT_REQUEST_MAX	2048

/*
 * "CONNECT host:port HTTP/1.1" with Host and, when user is not NULL,
 * Proxy-Authorization: Basic. IPv6 hosts are bracketed. Returns the
 * length, or 0 if it does not fit out (CONNECT_REQUEST_MAX).
 */
size_t	connect_proxy_request(const char *host, unsigned int port,
	    const char *user, const char *password, char *out);

enum connect_reply {
	CONNECT_REPLY_MORE,	/* the head is not complete yet */
	CONNECT_REPLY_OK,	/* 2xx: the tunnel is open */
	CONNECT_REPLY_REFUSED,	/* another status */
	CONNECT_REPLY_MALFORMED,
	CONNECT_REPLY_TOO_LONG,
};

/*
 * Reads the answer's head in buf[0..len): *head_len is its length (with the
 * empty line) once complete, status_line (room for len bytes) its first
 * line, printable, for the log.
 */
enum connect_reply connect_proxy_reply(const char *buf, size_t len,
	    size_t *head_len, char *status_line, size_t status_len);

/* RFC 4648 base64 of in[0..len) into out (room for 4 * ((len + 2) / 3) + 1). */
void	base64_encode(const unsigned char *in, size_t len, char *out);

#endif
