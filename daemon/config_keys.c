/*
 * config_keys.c - every configuration key as one row of a table, with its
 * setter and default: config_global_keys[], config_service_keys[],
 * config_key_apply(), config_keys_defaults(), config_key_seen(),
 * config_key_default(), verify_mode_name().
 *
 * As nginx's ngx_command_t: a row names the key, the setter that parses its
 * value, where the value (and the line it was given on) goes, and its
 * default. Generic setters take durations, counts, booleans, paths and
 * enumerations; a key with its own syntax has its own setter.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "config_priv.h"
#include "proxy_protocol.h"

/* keys_seen is a uint64_t: a bit per row. */
#define KEYS_MAX 64

struct enum_name {
	const char	*name;
	int		 value;
};

/* Records the line the key was given on, in its row's line field. */
static void
key_line(struct parse_ctx *p, void *obj, const struct config_key *k)
{
	if (k->line_offset >= 0)
		*(int *)(void *)((char *)obj + k->line_offset) = p->line;
}

/* ----- generic setters ----- */

/* A duration in ms, above 0 and at least k->min. */
static void
set_duration(struct parse_ctx *p, void *obj, const struct config_key *k,
    const char *value)
{
	char err[PARSE_ERR_MAX];
	uint64_t ms;

	if (parse_duration_ms(value, &ms, err, sizeof(err)) != 0) {
		config_error_here(p, "%s: %s", k->name, err);
		return;
	}
	if (ms == 0) {
		config_error_here(p, "%s: must be greater than 0", k->name);
		return;
	}
	if (ms < k->min) {
		config_error_here(p, "%s: must be at least %llu%s", k->name,
		    (unsigned long long)(k->min % 1000 == 0 ? k->min / 1000 :
		    k->min), k->min % 1000 == 0 ? "s" : "ms");
		return;
	}
	*FIELD(obj, k, uint64_t) = ms;
}

/* A count in [k->min, k->max]. */
static void
set_count(struct parse_ctx *p, void *obj, const struct config_key *k,
    const char *value)
{
	char err[PARSE_ERR_MAX];

	if (parse_count(value, (unsigned long)k->min, (unsigned long)k->max,
	    FIELD(obj, k, unsigned long), err, sizeof(err)) != 0)
		config_error_here(p, "%s: %s", k->name, err);
}

static void
set_bool(struct parse_ctx *p, void *obj, const struct config_key *k,
    const char *value)
{
	char err[PARSE_ERR_MAX];
	int v;

	if (parse_bool(value, &v, err, sizeof(err)) != 0)
		config_error_here(p, "%s: %s", k->name, err);
	else
		*FIELD(obj, k, bool) = v != 0;
}

/* Text kept as given. */
static void
set_text(struct parse_ctx *p, void *obj, const struct config_key *k,
    const char *value)
{
	char **out = FIELD(obj, k, char *);

	free(*out);
	if ((*out = strdup(value)) == NULL)
		config_error_here(p, "out of memory");
}

/* A file; it must be readable (or, with arg, a pkcs11: URI). */
static void
set_path(struct parse_ctx *p, void *obj, const struct config_key *k,
    const char *value)
{
	set_text(p, obj, k, value);
	if (*FIELD(obj, k, char *) == NULL ||
	    (k->arg != NULL && strncmp(value, "pkcs11:", 7) == 0))
		return;
	if (access(value, R_OK) != 0)
		config_error_here(p, "%s: cannot read '%s': %s", k->name, value,
		    strerror(errno));
}

/* One of the names in arg (an enum_name list), into an enum field. */
static void
set_enum(struct parse_ctx *p, void *obj, const struct config_key *k,
    const char *value)
{
	const struct enum_name *e = k->arg;
	char expected[256];
	size_t n = 0, used = 0;

	for (size_t i = 0; e[i].name != NULL; i++) {
		if (strcmp(e[i].name, value) == 0) {
			*FIELD(obj, k, int) = e[i].value;
			return;
		}
		n++;
	}
	for (size_t i = 0; i < n; i++)
		used += (size_t)snprintf(expected + used,
		    sizeof(expected) - used, "%s%s", i == 0 ? "" :
		    i + 1 == n ? " or " : ", ", e[i].name);
	config_error_here(p, "%s: expected %s, got '%s'", k->name, expected,
	    value);
}

static void
set_tls_version(struct parse_ctx *p, void *obj, const struct config_key *k,
    const char *value)
{
	int *out = FIELD(obj, k, int);

	if (strcmp(value, "TLS1.2") == 0)
		*out = 12;
	else if (strcmp(value, "TLS1.3") == 0)
		*out = 13;
	else
		config_error_here(p, "%s: expected TLS1.2 or TLS1.3, got '%s'",
		    k->name, value);
}

/* An interval in us, at most k->max. */
static void
set_interval_us(struct parse_ctx *p, void *obj, const struct config_key *k,
    const char *value)
{
	char err[PARSE_ERR_MAX];

	if (parse_interval_us(value, k->max, FIELD(obj, k, uint64_t), err,
	    sizeof(err)) != 0)
		config_error_here(p, "%s: %s (0us turns it off)", k->name, err);
}

/*
 * A user (is_group false) or group name to its id; for a user, also its
 * primary group. False, with the error, if there is none.
 */
static bool
lookup_id(struct parse_ctx *p, const char *key, const char *value,
    bool is_group, size_t max_len, unsigned int *id, gid_t *primary)
{
	struct passwd *pw = NULL;
	struct group *gr = NULL;

	if (is_group)
		gr = getgrnam(value);
	else
		pw = getpwnam(value);
	if ((pw == NULL && gr == NULL) || strlen(value) >= max_len) {
		config_error_here(p, "%s: no such %s '%s'", key,
		    is_group ? "group" : "user", value);
		return false;
	}
	*id = is_group ? gr->gr_gid : pw->pw_uid;
	if (primary != NULL && pw != NULL)
		*primary = pw->pw_gid;
	return true;
}

/* ----- [global] ----- */

static void
set_workers(struct parse_ctx *p, void *obj, const struct config_key *k,
    const char *value)
{
	struct global_config *g = obj;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	char err[PARSE_ERR_MAX];
	unsigned long n;

	(void)k;
	if (strcmp(value, "auto") == 0) {
		g->workers = cpus < 1 ? 1 : cpus > WORKERS_MAX ? WORKERS_MAX :
		    (unsigned int)cpus;
		return;
	}
	/* parse_count, not strtol: "+5", " 5" or "5 " are typos. */
	if (parse_count(value, 1, WORKERS_MAX, &n, err, sizeof(err)) != 0)
		config_error_here(p, "workers: expected 1-%d or auto, got '%s'",
		    WORKERS_MAX, value);
	else
		g->workers = (unsigned int)n;
}

static void
set_user(struct parse_ctx *p, void *obj, const struct config_key *k,
    const char *value)
{
	struct global_config *g = obj;
	gid_t primary = 0;
	unsigned int uid;

	if (!lookup_id(p, k->name, value, false, sizeof(g->user), &uid,
	    &primary))
		return;
	snprintf(g->user, sizeof(g->user), "%s", value);
	g->uid = uid;
	if (!config_key_seen(config_global_keys, g->keys_seen, "group"))
		g->gid = primary;
}

static void
set_group(struct parse_ctx *p, void *obj, const struct config_key *k,
    const char *value)
{
	struct global_config *g = obj;
	unsigned int gid;

	if (!lookup_id(p, k->name, value, true, sizeof(g->group), &gid, NULL))
		return;
	snprintf(g->group, sizeof(g->group), "%s", value);
	g->gid = gid;
}

static const struct enum_name log_levels[] = {
	{ "error", LOG_ERROR }, { "warn", LOG_WARN }, { "info", LOG_INFO },
	{ "debug", LOG_DEBUG }, { NULL, 0 },
};

static const struct enum_name log_formats[] = {
	{ "logfmt", LOG_FORMAT_LOGFMT }, { "json", LOG_FORMAT_JSON },
	{ NULL, 0 },
};

#define G(field)	offsetof(struct global_config, field)
#define GL(field)	(int)offsetof(struct global_config, field)

const struct config_key config_global_keys[] = {
	{ "log_level", set_enum, G(log_level), -1, "info", NULL, 0, 0,
	    log_levels, false },
	{ "log_format", set_enum, G(log_format), -1, "logfmt", NULL, 0, 0,
	    log_formats, false },
	{ "shutdown_timeout", set_duration, G(shutdown_timeout_ms), -1, "30s",
	    NULL, 0, 0, NULL, false },
	{ "user", set_user, 0, GL(user_line), NULL, "none", 0, 0, NULL,
	    false },
	{ "group", set_group, 0, GL(group_line), NULL,
	    "the user's primary group", 0, 0, NULL, false },
	{ "workers", set_workers, 0, -1, "1", NULL, 0, 0, NULL, false },
	{ "max_connections", set_count, G(max_connections), -1, NULL, "none",
	    1, CONNECTIONS_MAX, NULL, false },
	{ "io_collect_interval", set_interval_us, G(io_collect_us), -1, "20us",
	    NULL, 0, IO_COLLECT_MAX_US, NULL, false },
	{ "dns_servers", config_set_dns_servers, 0, -1, NULL,
	    "those of /etc/resolv.conf", 0, 0, NULL, false },
	{ "metrics_listen", config_set_metrics_listen, G(metrics_listen),
	    GL(metrics_listen_line), "off", NULL, 0, 0, NULL, false },
	{ "metrics_allow", config_add_metrics_allow, 0, GL(metrics_allow_line),
	    NULL, "none", 0, 0, NULL, true },
	{ NULL, NULL, 0, -1, NULL, NULL, 0, 0, NULL, false },
};

/* ----- [SERVICE] ----- */

static void
set_mode(struct parse_ctx *p, void *obj, const struct config_key *k,
    const char *value)
{
	char err[PARSE_ERR_MAX];

	if (parse_file_mode(value, FIELD(obj, k, unsigned int), err,
	    sizeof(err)) != 0)
		config_error_here(p, "%s: %s", k->name, err);
}

/* owner / group of a unix socket: arg non-NULL for the group. */
static void
set_socket_owner(struct parse_ctx *p, void *obj, const struct config_key *k,
    const char *value)
{
	struct service_config *sc = obj;
	unsigned int id;

	if (!lookup_id(p, k->name, value, k->arg != NULL, HOST_MAX, &id, NULL))
		return;
	if (k->arg != NULL)
		sc->unix_gid = id;
	else
		sc->unix_uid = id;
}

static const struct enum_name verify_modes[] = {
	{ "full", VERIFY_FULL }, { "chain", VERIFY_CHAIN },
	{ "pin", VERIFY_PIN },
	{ "none", VERIFY_NONE }, { NULL, 0 },
};

static const struct enum_name balance_modes[] = {
	{ "priority", BALANCE_PRIORITY }, { "roundrobin", BALANCE_ROUNDROBIN },
	{ NULL, 0 },
};

static const struct enum_name proxy_protocols[] = {
	{ "off", PROXY_PROTOCOL_OFF }, { "v1", PROXY_PROTOCOL_V1 },
	{ "v2", PROXY_PROTOCOL_V2 }, { NULL, 0 },
};

static const struct enum_name ocsp_modes[] = {
	{ "off", OCSP_OFF }, { "try", OCSP_TRY }, { "require", OCSP_REQUIRE },
	{ NULL, 0 },
};

const char *
verify_mode_name(enum verify_mode mode)
{
	for (const struct enum_name *e = verify_modes; e->name != NULL; e++)
		if (e->value == (int)mode)
			return e->name;
	return "?";
}

static const char pkcs11_ok[] = "pkcs11:";	/* set_path: allowed */
static const bool socket_group = true;		/* set_socket_owner: a group */

/* set_enum writes an int. */
_Static_assert(sizeof(enum verify_mode) == sizeof(int), "enum size");
_Static_assert(sizeof(enum ocsp_mode) == sizeof(int), "enum size");
_Static_assert(sizeof(enum balance_mode) == sizeof(int), "enum size");
_Static_assert(sizeof(enum log_level) == sizeof(int), "enum size");
_Static_assert(sizeof(enum log_format) == sizeof(int), "enum size");

#define S(field)	offsetof(struct service_config, field)
#define SL(field)	(int)offsetof(struct service_config, field)

const struct config_key config_service_keys[] = {
	{ "listen", config_set_listen, S(listen), SL(listen_line), NULL,
	    "required", 0, 0, NULL, false },
	{ "upstream", config_add_upstreams, 0, SL(upstream_line), NULL,
	    "required", 0, 0, NULL, true },
	{ "balance", set_enum, S(balance), -1, "priority", NULL, 0, 0,
	    balance_modes, false },
	{ "sni", config_set_sni, 0, -1, NULL, "upstream host", 0, 0, NULL,
	    false },
	{ "verify", set_enum, S(verify), -1, "full", NULL, 0, 0, verify_modes,
	    false },
	{ "verify_hostname", config_set_verify_hostname, 0, -1, NULL,
	    "sni, else the upstream host", 0, 0, NULL, false },
	{ "ca_file", set_path, S(ca_file), SL(ca_file_line), NULL,
	    "system trust store", 0, 0, NULL, false },
	{ "connect_timeout", set_duration, S(connect_timeout_ms), -1, "5s",
	    NULL, 0, 0, NULL, false },
	{ "connect_race_delay", set_duration, S(connect_race_delay_ms), -1,
	    "250ms", NULL, 10, 0, NULL, false },
	{ "resolve_interval", set_duration, S(resolve_interval_ms), -1, "30s",
	    NULL, 1000, 0, NULL, false },
	{ "handshake_timeout", set_duration, S(handshake_timeout_ms), -1,
	    "10s", NULL, 0, 0, NULL, false },
	{ "idle_timeout", set_duration, S(idle_timeout_ms), -1, "300s", NULL,
	    0, 0, NULL, false },
	{ "crl_file", set_path, S(crl_file), SL(crl_file_line), NULL, "none",
	    0, 0, NULL, false },
	{ "cert_file", set_path, S(cert_file), SL(cert_file_line), NULL,
	    "none", 0, 0, pkcs11_ok, false },
	{ "key_file", set_path, S(key_file), SL(key_file_line), NULL, "none",
	    0, 0, pkcs11_ok, false },
	{ "key_password_file", set_path, S(key_password_file),
	    SL(key_password_file_line), NULL, "none", 0, 0, NULL, false },
	{ "pin_sha256", config_add_pin, 0, SL(pin_line), NULL, "none", 0, 0,
	    NULL, true },
	{ "alpn", config_set_alpn, 0, -1, NULL, "none", 0, 0, NULL, false },
	{ "alpn_required", set_bool, S(alpn_required), -1, "no", NULL, 0, 0,
	    NULL, false },
	{ "tls_min_version", set_tls_version, S(tls_min_version), -1, NULL,
	    "TLS1.2", 0, 0, NULL, false },
	{ "tls_max_version", set_tls_version, S(tls_max_version), -1, NULL,
	    "TLS1.3", 0, 0, NULL, false },
	{ "tls_priority", set_text, S(tls_priority), SL(tls_priority_line),
	    NULL, "tlsfwd's policy", 0, 0, NULL, false },
	{ "session_cache", set_bool, S(session_cache), -1, "yes", NULL, 0, 0,
	    NULL, false },
	{ "ocsp", set_enum, S(ocsp), -1, "try", NULL, 0, 0, ocsp_modes,
	    false },
	{ "allow", config_add_allow, 0, SL(allow_line), NULL, "none", 0, 0,
	    NULL, true },
	{ "deny", config_add_deny, 0, SL(deny_line), NULL, "none", 0, 0,
	    NULL, true },
	{ "max_connections", set_count, S(max_connections), -1, NULL, "none",
	    1, CONNECTIONS_MAX, NULL, false },
	{ "pool", set_count, S(pool), -1, "0", NULL, 0, POOL_MAX, NULL,
	    false },
	{ "pool_max_idle", set_duration, S(pool_max_idle_ms), -1, "30s", NULL,
	    1000, 0, NULL, false },
	{ "via", config_set_via, 0, SL(via_line), NULL, "none", 0, 0, NULL,
	    false },
	{ "via_password_file", set_path, S(via_password_file),
	    SL(via_password_file_line), NULL, "none", 0, 0, NULL, false },
	{ "proxy_protocol", set_enum, S(proxy_protocol), -1, "off", NULL, 0,
	    0, proxy_protocols, false },
	{ "mode", set_mode, S(unix_mode), SL(unix_perms_line), "0660", NULL,
	    0, 0, NULL, false },
	{ "owner", set_socket_owner, 0, SL(unix_perms_line), NULL,
	    "tlsfwd's user", 0, 0, NULL, false },
	{ "group", set_socket_owner, 0, SL(unix_perms_line), NULL,
	    "tlsfwd's group", 0, 0, &socket_group, false },
	{ "allow_insecure_key_perms", set_bool, S(allow_insecure_key_perms),
	    -1, "no", NULL, 0, 0, NULL, false },
	{ "allow_cn_only", set_bool, S(allow_cn_only), -1, "no", NULL, 0, 0,
	    NULL, false },
	{ NULL, NULL, 0, -1, NULL, NULL, 0, 0, NULL, false },
};

/* A bit per row in keys_seen (the terminator row is not a key). */
_Static_assert(sizeof(config_global_keys) / sizeof(config_global_keys[0]) - 1
    <= KEYS_MAX, "more [global] keys than keys_seen has bits");
_Static_assert(sizeof(config_service_keys) / sizeof(config_service_keys[0]) -
    1 <= KEYS_MAX, "more service keys than keys_seen has bits");

/* ----- lookups ----- */

const char *
config_key_default(const struct config_key *k)
{
	return k->default_doc != NULL ? k->default_doc : k->default_value;
}

static const struct config_key *
key_find(const struct config_key *table, const char *name)
{
	for (const struct config_key *k = table; k->name != NULL; k++)
		if (strcmp(k->name, name) == 0)
			return k;
	return NULL;
}

bool
config_key_seen(const struct config_key *table, uint64_t seen,
    const char *name)
{
	const struct config_key *k = key_find(table, name);

	return k != NULL && (seen & (UINT64_C(1) << (k - table))) != 0;
}

void
config_key_apply(struct parse_ctx *p, const struct config_key *table,
    void *obj, uint64_t *seen, const char *where, const char *name,
    const char *value)
{
	const struct config_key *k = key_find(table, name);
	uint64_t bit;

	if (k == NULL) {
		config_error_here(p, "%s: unknown key '%s'", where, name);
		return;
	}
	bit = UINT64_C(1) << (k - table);
	if ((*seen & bit) && !k->repeatable) {
		config_error_here(p, "%s: '%s' given twice%s", where, name,
		    p->line_indented ? " (an indented line continues the "
		    "previous key's value: remove the indentation)" : "");
		return;
	}
	*seen |= bit;
	key_line(p, obj, k);
	k->set(p, obj, k, value);
}

void
config_keys_defaults(struct parse_ctx *p, const struct config_key *table,
    void *obj)
{
	for (const struct config_key *k = table; k->name != NULL; k++)
		if (k->default_value != NULL)
			k->set(p, obj, k, k->default_value);
}
