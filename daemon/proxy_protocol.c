/*
 * proxy_protocol.c - the PROXY protocol header: proxy_header().
 * Spec: https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt
 */
#include "proxy_protocol.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#define PP2_VERSION_LOCAL	0x20
#define PP2_VERSION_PROXY	0x21
#define PP2_TCP4		0x11
#define PP2_TCP6		0x21
#define PP2_UNSPEC		0x00
#define PP2_TYPE_ALPN		0x01
#define PP2_TYPE_AUTHORITY	0x02

static const uint8_t v2_signature[12] = {
	0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
};

/* Both ends IPv4, or both IPv6: the family; else 0 (UNKNOWN / LOCAL). */
static int
common_family(const struct sockaddr *src, const struct sockaddr *dst)
{
	if (src->sa_family != dst->sa_family)
		return 0;
	return src->sa_family == AF_INET || src->sa_family == AF_INET6 ?
	    src->sa_family : 0;
}

static size_t
header_v1(const struct sockaddr *src, const struct sockaddr *dst,
    uint8_t *out)
{
	char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
	int fam = common_family(src, dst), n;
	unsigned int sp, dp;

	if (fam == AF_INET) {
		const struct sockaddr_in *a = (const void *)src;
		const struct sockaddr_in *b = (const void *)dst;

		inet_ntop(AF_INET, &a->sin_addr, s, sizeof(s));
		inet_ntop(AF_INET, &b->sin_addr, d, sizeof(d));
		sp = ntohs(a->sin_port);
		dp = ntohs(b->sin_port);
	} else if (fam == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)src;
		const struct sockaddr_in6 *b = (const void *)dst;

		inet_ntop(AF_INET6, &a->sin6_addr, s, sizeof(s));
		inet_ntop(AF_INET6, &b->sin6_addr, d, sizeof(d));
		sp = ntohs(a->sin6_port);
		dp = ntohs(b->sin6_port);
	} else {
		memcpy(out, "PROXY UNKNOWN\r\n", 15);
		return 15;
	}
	n = snprintf((char *)out, PROXY_HEADER_MAX, "PROXY %s %s %s %u %u\r\n",
	    fam == AF_INET ? "TCP4" : "TCP6", s, d, sp, dp);
	return (size_t)n;
}

/* One TLV at p (value len bytes); its size, or 0 if value is over 255. */
static size_t
tlv(uint8_t *p, uint8_t type, const char *value)
{
	size_t len = strlen(value);

	if (len > 255)
		return 0;
	p[0] = type;
	p[1] = 0;
	p[2] = (uint8_t)len;
	memcpy(p + 3, value, len);
	return 3 + len;
}

static size_t
header_v2(const struct sockaddr *src, const struct sockaddr *dst,
    const char *authority, const char *alpn, uint8_t *out)
{
	int fam = common_family(src, dst);
	size_t len = 16, n;

	memcpy(out, v2_signature, sizeof(v2_signature));
	out[12] = fam != 0 ? PP2_VERSION_PROXY : PP2_VERSION_LOCAL;
	if (fam == AF_INET) {
		const struct sockaddr_in *a = (const void *)src;
		const struct sockaddr_in *b = (const void *)dst;

		out[13] = PP2_TCP4;
		memcpy(out + 16, &a->sin_addr, 4);
		memcpy(out + 20, &b->sin_addr, 4);
		memcpy(out + 24, &a->sin_port, 2);
		memcpy(out + 26, &b->sin_port, 2);
		len += 12;
	} else if (fam == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)src;
		const struct sockaddr_in6 *b = (const void *)dst;

		out[13] = PP2_TCP6;
		memcpy(out + 16, &a->sin6_addr, 16);
		memcpy(out + 32, &b->sin6_addr, 16);
		memcpy(out + 48, &a->sin6_port, 2);
		memcpy(out + 50, &b->sin6_port, 2);
		len += 36;
	} else {
		out[13] = PP2_UNSPEC;	/* LOCAL: the receiver uses its own */
	}
	if (alpn != NULL && alpn[0] != '\0') {
		if ((n = tlv(out + len, PP2_TYPE_ALPN, alpn)) == 0)
			return 0;
		len += n;
	}
	if (authority != NULL && authority[0] != '\0') {
		if ((n = tlv(out + len, PP2_TYPE_AUTHORITY, authority)) == 0)
			return 0;
		len += n;
	}
	out[14] = (uint8_t)((len - 16) >> 8);
	out[15] = (uint8_t)((len - 16) & 0xff);
	return len;
}

size_t
proxy_header(enum proxy_protocol v, const struct sockaddr *src,
    const struct sockaddr *dst, const char *authority, const char *alpn,
    uint8_t *out)
{
	switch (v) {
	case PROXY_PROTOCOL_V1:
		return header_v1(src, dst, out);
	case PROXY_PROTOCOL_V2:
		return header_v2(src, dst, authority, alpn, out);
	case PROXY_PROTOCOL_OFF:
		break;
	}
	return 0;
}
