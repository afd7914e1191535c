/* parse.h - parsers for config values: durations, host:port, listen addresses. */
#ifndef TLSFWD_PARSE_H
#define TLSFWD_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

#define HOST_MAX 255

/* Every parser returns 0, or -1 with a message for the user in err. */
#define PARSE_ERR_MAX 256

/* Longest accepted duration: far beyond any sane timeout, far below overflow. */
#define DURATION_MAX_MS (1000ULL * 3600 * 24 * 365)

/* "250ms", "5s", "2m", "1h" -> milliseconds. */
int	parse_duration_ms(const char *s, uint64_t *ms, char *err, size_t errlen);
/* "20us", "1ms" -> microseconds, at most max_us. */
int	parse_interval_us(const char *s, uint64_t max_us, uint64_t *us,
	    char *err, size_t errlen);

struct host_port {
	char		host[HOST_MAX + 1];	/* without brackets */
	uint16_t	port;
	int		is_ip_literal;		/* host is an IPv4/IPv6 address */
};

/* "host:port" or "[v6]:port". Port 0 is accepted only if allow_port0. */
int	parse_host_port(const char *s, struct host_port *hp, int allow_port0,
	    char *err, size_t errlen);

struct listen_addr {
	int			is_unix;
	struct sockaddr_storage	sa;	/* IP or AF_UNIX address */
	socklen_t		salen;
	char			text[HOST_MAX + 16];	/* as configured */
};

/* "IP:PORT", "[V6]:PORT", "localhost:PORT" or "unix:/abs/path". */
int	parse_listen_addr(const char *s, struct listen_addr *la, char *err,
	    size_t errlen);
/* Whether a and b are the same configured address (port 0 included). */
bool	listen_addr_equal(const struct listen_addr *a,
	    const struct listen_addr *b);
/* Whether a and b would bind the same socket (port 0 never does). */
bool	listen_addr_same(const struct listen_addr *a,
	    const struct listen_addr *b);

/* "yes/no/true/false/on/off/1/0" */
int	parse_bool(const char *s, int *out, char *err, size_t errlen);

/* An address block: "10.0.0.0/8", "::1", "2001:db8::/32". */
struct cidr {
	int		family;		/* AF_INET or AF_INET6 */
	unsigned char	addr[16];	/* network order; 4 bytes for IPv4 */
	unsigned int	prefix;		/* 0-32 or 0-128 */
};

/*
 * One block; a bare address is a /32 or /128. Host bits must be zero. An
 * IPv4-mapped block, ::ffff:a.b.c.d/96+n, is the IPv4 block a.b.c.d/n.
 */
int	parse_cidr(const char *s, struct cidr *c, char *err, size_t errlen);
/* Whether sa (IPv4, IPv6 or IPv4-mapped IPv6) lies in c. */
int	cidr_contains(const struct cidr *c, const struct sockaddr *sa);
/* Whether sa is 127.0.0.0/8 or ::1 (or IPv4-mapped 127/8). */
int	sockaddr_is_loopback(const struct sockaddr *sa);

/* A decimal count in [min, max]. */
int	parse_count(const char *s, unsigned long min, unsigned long max,
	    unsigned long *out, char *err, size_t errlen);
/* File permission bits in octal, "0660" or "660", at most 0777. */
int	parse_file_mode(const char *s, unsigned int *mode, char *err,
	    size_t errlen);

/*
 * Room for sockaddr_format's text of any IPv4 or IPv6 address with its port
 * (an IPv6 with scope and brackets fits; a long unix path is cut short).
 */
#define SOCKADDR_TEXT_MAX 56

/* Formats a socket address as "1.2.3.4:5", "[::1]:5" or "unix:/path". */
void	sockaddr_format(const struct sockaddr *sa, socklen_t len, char *buf,
	    size_t buflen);

#endif
