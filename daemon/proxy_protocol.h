/*
 * proxy_protocol.h - the PROXY protocol header (haproxy's spec, v1 text
 * and v2 binary) tlsfwd sends an upstream before its ClientHello, so that
 * the upstream sees and logs the real client (proxy_protocol = v1 | v2).
 */
#ifndef TLSFWD_PROXY_PROTOCOL_H
#define TLSFWD_PROXY_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

enum proxy_protocol { PROXY_PROTOCOL_OFF, PROXY_PROTOCOL_V1,
	PROXY_PROTOCOL_V2 };

/* Longest header made: v1's 107 bytes; v2's 16 + 36 + two TLVs of 258. */
#define PROXY_HEADER_MAX 600

/*
 * The header for a client src that connected to dst (tlsfwd's listening
 * address), into out (PROXY_HEADER_MAX bytes). src and dst of another
 * family than AF_INET/AF_INET6 (a unix client), or of two families, give
 * v1 "PROXY UNKNOWN" and v2's LOCAL command. v2 carries PP2_TYPE_AUTHORITY
 * = authority (the SNI name; NULL or "": none) and PP2_TYPE_ALPN = alpn
 * (NULL or "": none). Returns the length, or 0 if a TLV is over 255 bytes.
 */
size_t	proxy_header(enum proxy_protocol v, const struct sockaddr *src,
	    const struct sockaddr *dst, const char *authority,
	    const char *alpn, uint8_t *out);

#endif
