/* config.h - the INI file as structs, with validation and FILE:LINE errors. */
#ifndef TLSFWD_CONFIG_H
#define TLSFWD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "log.h"
#include "parse.h"

#define SERVICE_NAME_MAX 64
#define WORKERS_MAX 64
/* Longest io_collect_interval: beyond it, the added latency is felt. */
#define IO_COLLECT_MAX_US 10000

enum verify_mode { VERIFY_FULL, VERIFY_CHAIN, VERIFY_NONE, VERIFY_PIN };
enum ocsp_mode { OCSP_OFF, OCSP_TRY, OCSP_REQUIRE };

#define PINS_MAX	8
#define CIDRS_MAX	1024	/* allow + deny entries of one service */
#define CONNECTIONS_MAX	10000000
#define POOL_MAX	1024		/* warm connections of a service */
#define UNIX_MODE_DEFAULT 0660	/* owner and group may connect */
#define ALPN_MAX	8
#define TLS_VERSION_DEFAULT 0	/* tls_min/max_version not set */

#define UPSTREAMS_MAX	16	/* upstream entries of one service */

/* One upstream entry, with the TLS identity it is reached with. */
struct upstream_target {
	struct host_port	hp;
	char			sni[HOST_MAX + 1];	/* "" = send none */
	char			verify_hostname[HOST_MAX + 1];
};

/* Which healthy upstream a new connection tries first. */
enum balance_mode { BALANCE_PRIORITY, BALANCE_ROUNDROBIN };

struct service_config {
	char			name[SERVICE_NAME_MAX + 1];
	int			line;		/* of the [section] header */
	struct listen_addr	listen;
	int			listen_line;
	/* In the order given; sni and verify_hostname filled in for each. */
	struct upstream_target	upstreams[UPSTREAMS_MAX];
	size_t			nupstreams;
	int			upstream_line;
	enum balance_mode	balance;
	/* As given (sni = - sends none), for every upstream; else "". */
	char			sni[HOST_MAX + 1];
	enum verify_mode	verify;
	char			verify_hostname[HOST_MAX + 1];
	char		       *ca_file;	/* NULL = system trust */
	int			ca_file_line;
	char		       *crl_file;
	int			crl_file_line;
	char		       *cert_file;	/* client certificate, or NULL */
	int			cert_file_line;
	char		       *key_file;
	int			key_file_line;
	char		       *key_password_file;
	int			key_password_file_line;
	unsigned char		pins[PINS_MAX][32];	/* SPKI SHA-256 */
	int			npins;
	int			pin_line;
	char			alpn[ALPN_MAX][256];	/* offered, in order */
	int			nalpn;
	bool			alpn_required;
	int			tls_min_version;	/* 12, 13 or default */
	int			tls_max_version;
	char		       *tls_priority;	/* NULL = tlsfwd's default */
	int			tls_priority_line;
	bool			session_cache;
	enum ocsp_mode		ocsp;
	uint64_t		connect_timeout_ms;
	uint64_t		connect_race_delay_ms;
	uint64_t		resolve_interval_ms;
	uint64_t		handshake_timeout_ms;
	uint64_t		idle_timeout_ms;
	/* Who may connect (TCP): deny wins, then allow (if any) must match. */
	struct cidr	       *allow;
	size_t			nallow;
	int			allow_line;
	bool			allow_everyone;	/* a /0 in allow */
	struct cidr	       *deny;
	size_t			ndeny;
	int			deny_line;
	unsigned long		max_connections;	/* 0 = no limit */
	unsigned long		pool;		/* warm connections; 0: none */
	uint64_t		pool_max_idle_ms;
	/* via = http://[user@]host:port: CONNECT through that proxy. */
	bool			via_on;
	struct host_port	via;
	char			via_user[128];	/* "": no credentials */
	int			via_line;
	char		       *via_password_file;
	int			via_password_file_line;
	int			proxy_protocol;	/* enum proxy_protocol */
	/* Unix listener: the socket file's permissions and owner. */
	unsigned int		unix_mode;
	uid_t			unix_uid;	/* (uid_t)-1 = leave as is */
	gid_t			unix_gid;	/* (gid_t)-1 = leave as is */
	int			unix_perms_line;	/* mode/owner/group */
	bool			allow_insecure_key_perms;
	/* a host name only in the subject CN verifies (legacy CAs) */
	bool			allow_cn_only;
	uint64_t		keys_seen;	/* bit per config_service_keys row */
	struct service_config  *next;
};

struct global_config {
	enum log_level	log_level;
	enum log_format	log_format;
	uint64_t	shutdown_timeout_ms;
	unsigned int	workers;	/* event loops, one thread each */
	unsigned long	max_connections;	/* all services; 0 = no limit */
	uint64_t	io_collect_us;	/* libev io collect interval; 0 = off */
	char	       *dns_servers;	/* c-ares "ADDR:PORT,..."; NULL: resolv.conf */
	bool		metrics_on;	/* metrics_listen given (not off) */
	struct listen_addr metrics_listen;
	int		metrics_listen_line;
	struct cidr    *metrics_allow;	/* who may scrape (TCP) */
	size_t		nmetrics_allow;
	int		metrics_allow_line;
	char		user[64];	/* "" = keep the starting user */
	char		group[64];	/* "" = the user's primary group */
	uid_t		uid;		/* resolved at load time */
	gid_t		gid;
	int		user_line;
	int		group_line;
	uint64_t	keys_seen;	/* bit per config_global_keys row */
};

struct config {
	char			*path;
	struct global_config	 global;
	struct service_config	*services;
	size_t			 nservices;
};

/* Every problem found, each formatted "FILE:LINE: message". */
struct config_errors {
	char	**msgs;
	size_t	  n;
};

/*
 * Parses and validates path. Returns the config (caller frees), or NULL with
 * every error appended to errs. Does not touch the network or TLS.
 */
struct config *config_load(const char *path, struct config_errors *errs);
/*
 * The file's text (caller frees), so that several loops can parse the very
 * same configuration with config_load_string(); NULL with errs on failure.
 */
char	*config_read(const char *path, struct config_errors *errs);
/* Same, from a string: path is used only in messages (tests, fuzzing). */
struct config *config_load_string(const char *text, const char *path,
	    struct config_errors *errs);
void	config_free(struct config *cfg);

void	config_error_add(struct config_errors *errs, const char *path,
	    int line, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void	config_errors_print(const struct config_errors *errs, FILE *out);
void	config_errors_free(struct config_errors *errs);

const char *verify_mode_name(enum verify_mode mode);

struct parse_ctx;
struct config_key;
/* Parses value into the row's field of obj; errors go to p's list. */
typedef void config_key_set(struct parse_ctx *p, void *obj,
	    const struct config_key *k, const char *value);

/*
 * A configuration key: one row of config_keys.c's tables, as nginx's
 * ngx_command_t. A new key is a new row (and its field).
 */
struct config_key {
	const char	*name;
	config_key_set	*set;
	size_t		 offset;	/* of the field in the section's struct */
	int		 line_offset;	/* of its line (an int), or -1 */
	/*
	 * The default: given to the setter when the section starts, or NULL
	 * when it is zero or computed from other keys; doc says it in words
	 * when the value alone would not (README, example and man page must
	 * say the same: tests/unit/test_config_keys.c).
	 */
	const char	*default_value;
	const char	*default_doc;
	uint64_t	 min, max;	/* bounds of a number or duration */
	const void	*arg;		/* the setter's own: enum names, ... */
	bool		 repeatable;
};

/* The keys of [global] and of a service, NULL-name terminated. */
extern const struct config_key config_global_keys[];
extern const struct config_key config_service_keys[];
/* Its documented default: default_doc, else default_value. */
const char *config_key_default(const struct config_key *k);

#endif
