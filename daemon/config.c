/* config.c - the INI file as structs, with validation and FILE:LINE errors. */
#include "config.h"

#include <ctype.h>
#include <grp.h>
#include <pwd.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <ini.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_CONNECT_TIMEOUT_MS	5000
#define DEFAULT_HANDSHAKE_TIMEOUT_MS	10000
#define DEFAULT_IDLE_TIMEOUT_MS		300000
#define DEFAULT_SHUTDOWN_TIMEOUT_MS	30000
#define DEFAULT_IO_COLLECT_US		20

/* State of one parse: where we are, and what we have built so far. */
struct parse_ctx {
	const char		*path;
	struct config		*cfg;
	struct config_errors	*errs;
	/* Line reader state, so errors carry the right line number. */
	const char		*text;
	int			 line;
	bool			 line_indented;	/* inih: continues a value */
	bool			 after_key;	/* inih has a key to continue */
	/* The section the following keys belong to. */
	enum { SEC_NONE, SEC_GLOBAL, SEC_SERVICE, SEC_IGNORED } sec;
	struct service_config	*svc;
	bool			 global_seen;
	int			 global_line;
};

void
config_error_add(struct config_errors *errs, const char *path, int line,
    const char *fmt, ...)
{
	char msg[512], *full;
	char **grown;
	va_list ap;
	int n;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (line > 0)
		n = asprintf(&full, "%s:%d: %s", path, line, msg);
	else
		n = asprintf(&full, "%s: %s", path, msg);
	if (n < 0)
		return;
	grown = realloc(errs->msgs, (errs->n + 1) * sizeof(*grown));
	if (grown == NULL) {
		free(full);
		return;
	}
	errs->msgs = grown;
	errs->msgs[errs->n++] = full;
}

void
config_errors_print(const struct config_errors *errs, FILE *out)
{
	for (size_t i = 0; i < errs->n; i++)
		fprintf(out, "%s\n", errs->msgs[i]);
}

void
config_errors_free(struct config_errors *errs)
{
	for (size_t i = 0; i < errs->n; i++)
		free(errs->msgs[i]);
	free(errs->msgs);
	errs->msgs = NULL;
	errs->n = 0;
}

const char *
verify_mode_name(enum verify_mode mode)
{
	switch (mode) {
	case VERIFY_FULL:
		return "full";
	case VERIFY_CHAIN:
		return "chain";
	case VERIFY_NONE:
		return "none";
	case VERIFY_PIN:
		return "pin";
	}
	return "?";
}

static void
service_free(struct service_config *svc)
{
	free(svc->ca_file);
	free(svc->crl_file);
	free(svc->cert_file);
	free(svc->key_file);
	free(svc->key_password_file);
	free(svc->tls_priority);
	free(svc->allow);
	free(svc->deny);
	free(svc);
}

void
config_free(struct config *cfg)
{
	struct service_config *svc, *next;

	if (cfg == NULL)
		return;
	for (svc = cfg->services; svc != NULL; svc = next) {
		next = svc->next;
		service_free(svc);
	}
	free(cfg->path);
	free(cfg);
}

static bool
valid_service_name(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > SERVICE_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];

		if (!isalnum(c) && c != '_' && c != '-' && c != '.')
			return false;
	}
	return true;
}

static void
section_begin(struct parse_ctx *p, const char *name)
{
	struct service_config *svc, **tail;

	if (strcmp(name, "global") == 0) {
		if (p->global_seen)
			config_error_add(p->errs, p->path, p->line,
			    "duplicate section [global] (first at line %d)",
			    p->global_line);
		p->global_seen = true;
		p->global_line = p->line;
		p->sec = SEC_GLOBAL;
		return;
	}
	p->sec = SEC_IGNORED;
	if (strcasecmp(name, "global") == 0) {
		config_error_add(p->errs, p->path, p->line,
		    "unknown section [%s]: the global section is [global]",
		    name);
		return;
	}
	if (!valid_service_name(name)) {
		config_error_add(p->errs, p->path, p->line,
		    "invalid service name [%s]: use 1-%d characters from "
		    "A-Z a-z 0-9 _ - .", name, SERVICE_NAME_MAX);
		return;
	}
	for (tail = &p->cfg->services; *tail != NULL; tail = &(*tail)->next) {
		if (strcmp((*tail)->name, name) == 0) {
			config_error_add(p->errs, p->path, p->line,
			    "duplicate service [%s] (first at line %d)", name,
			    (*tail)->line);
			return;
		}
	}
	svc = calloc(1, sizeof(*svc));
	if (svc == NULL) {
		config_error_add(p->errs, p->path, p->line, "out of memory");
		return;
	}
	snprintf(svc->name, sizeof(svc->name), "%s", name);
	svc->line = p->line;
	svc->verify = VERIFY_FULL;
	svc->connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
	svc->handshake_timeout_ms = DEFAULT_HANDSHAKE_TIMEOUT_MS;
	svc->idle_timeout_ms = DEFAULT_IDLE_TIMEOUT_MS;
	svc->session_cache = true;
	svc->ocsp = OCSP_TRY;
	svc->unix_mode = UNIX_MODE_DEFAULT;
	svc->unix_uid = (uid_t)-1;
	svc->unix_gid = (gid_t)-1;
	*tail = svc;
	p->cfg->nservices++;
	p->svc = svc;
	p->sec = SEC_SERVICE;
}

/*
 * Notices section headers as inih reads them, mirroring inih's rule (after
 * leading space, '[' up to the first ']'), so that empty and duplicate
 * sections are reported too: inih only reports sections through their keys.
 * An indented line after a key is more of that key's value to inih, even
 * "[name]": it starts no section then, or the keys below would go to a
 * service inih never saw, and the "[name]" to its previous key unnoticed.
 */
static void
reader_saw_line(struct parse_ctx *p, const char *line)
{
	const char *start = line;
	char name[256];
	const char *end;
	size_t n;

	if (p->line == 1 && strncmp(line, "\xef\xbb\xbf", 3) == 0)
		line += 3;	/* inih skips a UTF-8 BOM too */
	while (isspace((unsigned char)*line))
		line++;
	p->line_indented = line != start;
	if (*line != '[' || (p->line_indented && p->after_key))
		return;
	end = strchr(line + 1, ']');
	if (end == NULL)
		return;		/* inih reports it as a syntax error */
	n = (size_t)(end - (line + 1));
	if (n >= sizeof(name))
		n = sizeof(name) - 1;
	memcpy(name, line + 1, n);
	name[n] = '\0';
	p->after_key = false;
	section_begin(p, name);
	/* inih ignores whatever follows ']': "[a] b" is a typo, not "[a]". */
	for (end++; isspace((unsigned char)*end); end++)
		;
	if (*end != '\0' && *end != ';' && *end != '#')
		config_error_add(p->errs, p->path, p->line, "text after "
		    "section header [%s]: '%.*s'", name,
		    (int)strcspn(end, "\r\n"), end);
}

/* Longest line inih hands over whole: its buffer less newline and NUL. */
#define CONFIG_LINE_MAX (INI_MAX_LINE - 2)

/*
 * ini_reader over the text, counting lines. It catches lines longer than
 * inih's buffer, which inih would cut silently and parse the rest of as a
 * line of its own: such a line is reported, the rest of it skipped, and
 * inih is given a blank line instead, so its own line count stays right.
 * (config_read() refused NUL bytes, so the text's NUL is its end.)
 */
static char *
reader_string(char *str, int num, void *stream)
{
	struct parse_ctx *p = stream;
	int i = 0;

	if (*p->text == '\0' || num < 2)
		return NULL;
	while (i < num - 1 && p->text[i] != '\0' && p->text[i] != '\n')
		i++;
	if (i < num - 1 && p->text[i] == '\n')
		i++;
	memcpy(str, p->text, (size_t)i);
	str[i] = '\0';
	p->text += i;
	p->line++;
	/*
	 * No newline: the file's last line, or a cut one. A chunk that fills
	 * the buffer is too long even when the file ends right after it.
	 */
	if ((i == 0 || str[i - 1] != '\n') &&
	    (*p->text != '\0' || i > CONFIG_LINE_MAX)) {
		while (*p->text != '\0' && *p->text++ != '\n')
			;
		config_error_add(p->errs, p->path, p->line,
		    "line too long (at most %d characters)", CONFIG_LINE_MAX);
		str[0] = '\n';
		str[1] = '\0';
		return str;
	}
	reader_saw_line(p, str);
	return str;
}

enum { K_LOG_LEVEL, K_LOG_FORMAT, K_SHUTDOWN_TIMEOUT, K_USER, K_GROUP,
    K_WORKERS, K_GLOBAL_MAX_CONNECTIONS, K_IO_COLLECT_INTERVAL };
enum { K_LISTEN, K_UPSTREAM, K_SNI, K_VERIFY, K_VERIFY_HOSTNAME, K_CA_FILE,
    K_CONNECT_TIMEOUT, K_HANDSHAKE_TIMEOUT, K_IDLE_TIMEOUT, K_CRL_FILE,
    K_CERT_FILE, K_KEY_FILE, K_KEY_PASSWORD_FILE, K_PIN_SHA256, K_ALPN,
    K_ALPN_REQUIRED, K_TLS_MIN_VERSION, K_TLS_MAX_VERSION, K_TLS_PRIORITY,
    K_SESSION_CACHE, K_OCSP, K_ALLOW, K_DENY, K_MAX_CONNECTIONS, K_MODE,
    K_OWNER, K_SOCKET_GROUP, K_ALLOW_INSECURE_KEY_PERMS, K_ALLOW_CN_ONLY };

struct key_def {
	const char	*name;
	int		 id;
	bool		 repeatable;
};

static const struct key_def global_keys[] = {
	{ "log_level", K_LOG_LEVEL, false },
	{ "log_format", K_LOG_FORMAT, false },
	{ "shutdown_timeout", K_SHUTDOWN_TIMEOUT, false },
	{ "user", K_USER, false },
	{ "group", K_GROUP, false },
	{ "workers", K_WORKERS, false },
	{ "max_connections", K_GLOBAL_MAX_CONNECTIONS, false },
	{ "io_collect_interval", K_IO_COLLECT_INTERVAL, false },
	{ NULL, 0, false },
};

static const struct key_def service_keys[] = {
	{ "listen", K_LISTEN, false },
	{ "upstream", K_UPSTREAM, false },
	{ "sni", K_SNI, false },
	{ "verify", K_VERIFY, false },
	{ "verify_hostname", K_VERIFY_HOSTNAME, false },
	{ "ca_file", K_CA_FILE, false },
	{ "connect_timeout", K_CONNECT_TIMEOUT, false },
	{ "handshake_timeout", K_HANDSHAKE_TIMEOUT, false },
	{ "idle_timeout", K_IDLE_TIMEOUT, false },
	{ "crl_file", K_CRL_FILE, false },
	{ "cert_file", K_CERT_FILE, false },
	{ "key_file", K_KEY_FILE, false },
	{ "key_password_file", K_KEY_PASSWORD_FILE, false },
	{ "pin_sha256", K_PIN_SHA256, true },
	{ "alpn", K_ALPN, false },
	{ "alpn_required", K_ALPN_REQUIRED, false },
	{ "tls_min_version", K_TLS_MIN_VERSION, false },
	{ "tls_max_version", K_TLS_MAX_VERSION, false },
	{ "tls_priority", K_TLS_PRIORITY, false },
	{ "session_cache", K_SESSION_CACHE, false },
	{ "ocsp", K_OCSP, false },
	{ "allow", K_ALLOW, true },
	{ "deny", K_DENY, true },
	{ "max_connections", K_MAX_CONNECTIONS, false },
	{ "mode", K_MODE, false },
	{ "owner", K_OWNER, false },
	{ "group", K_SOCKET_GROUP, false },
	{ "allow_insecure_key_perms", K_ALLOW_INSECURE_KEY_PERMS, false },
	{ "allow_cn_only", K_ALLOW_CN_ONLY, false },
	{ NULL, 0, false },
};

/* Finds name in keys, reports unknown or repeated keys; -1 if unusable. */
static int
key_lookup(struct parse_ctx *p, const struct key_def *keys, const char *name,
    unsigned int *seen, const char *where)
{
	for (const struct key_def *k = keys; k->name != NULL; k++) {
		if (strcmp(k->name, name) != 0)
			continue;
		if ((*seen & (1u << k->id)) && !k->repeatable) {
			config_error_add(p->errs, p->path, p->line,
			    "%s: '%s' given twice%s", where, name,
			    p->line_indented ? " (an indented line continues "
			    "the previous key's value: remove the indentation)"
			    : "");
			return -1;
		}
		*seen |= 1u << k->id;
		return k->id;
	}
	config_error_add(p->errs, p->path, p->line, "%s: unknown key '%s'",
	    where, name);
	return -1;
}

static void
set_duration(struct parse_ctx *p, const char *name, const char *value,
    uint64_t *out)
{
	char err[PARSE_ERR_MAX];
	uint64_t ms;

	if (parse_duration_ms(value, &ms, err, sizeof(err)) != 0) {
		config_error_add(p->errs, p->path, p->line, "%s: %s", name,
		    err);
		return;
	}
	if (ms == 0) {
		config_error_add(p->errs, p->path, p->line,
		    "%s: must be greater than 0", name);
		return;
	}
	*out = ms;
}

static void
set_count(struct parse_ctx *p, const char *name, const char *value,
    unsigned long *out)
{
	char err[PARSE_ERR_MAX];

	if (parse_count(value, 1, CONNECTIONS_MAX, out, err, sizeof(err)) != 0)
		config_error_add(p->errs, p->path, p->line, "%s: %s", name,
		    err);
}

static void
global_key(struct parse_ctx *p, const char *name, const char *value)
{
	struct global_config *g = &p->cfg->global;

	switch (key_lookup(p, global_keys, name, &g->keys_seen, "[global]")) {
	case K_LOG_LEVEL:
		if (log_level_parse(value, &g->log_level) != 0)
			config_error_add(p->errs, p->path, p->line,
			    "log_level: expected error, warn, info or debug, "
			    "got '%s'", value);
		break;
	case K_LOG_FORMAT:
		if (log_format_parse(value, &g->log_format) != 0)
			config_error_add(p->errs, p->path, p->line,
			    "log_format: expected logfmt or json, got '%s'",
			    value);
		break;
	case K_SHUTDOWN_TIMEOUT:
		set_duration(p, name, value, &g->shutdown_timeout_ms);
		break;
	case K_IO_COLLECT_INTERVAL: {
		char err[PARSE_ERR_MAX];

		if (parse_interval_us(value, IO_COLLECT_MAX_US,
		    &g->io_collect_us, err, sizeof(err)) != 0)
			config_error_add(p->errs, p->path, p->line,
			    "io_collect_interval: %s (0us turns it off)", err);
		break;
	}
	case K_WORKERS: {
		unsigned long n;
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);
		char err[PARSE_ERR_MAX];

		if (strcmp(value, "auto") == 0) {
			g->workers = cpus < 1 ? 1 : cpus > WORKERS_MAX ?
			    WORKERS_MAX : (unsigned int)cpus;
			break;
		}
		/* parse_count, not strtol: "+5", " 5" or "5 " are typos. */
		if (parse_count(value, 1, WORKERS_MAX, &n, err, sizeof(err)) != 0)
			config_error_add(p->errs, p->path, p->line, "workers: "
			    "expected 1-%d or auto, got '%s'", WORKERS_MAX,
			    value);
		else
			g->workers = (unsigned int)n;
		break;
	}
	case K_USER: {
		struct passwd *pw = getpwnam(value);

		g->user_line = p->line;
		if (pw == NULL || strlen(value) >= sizeof(g->user)) {
			config_error_add(p->errs, p->path, p->line,
			    "user: no such user '%s'", value);
			break;
		}
		snprintf(g->user, sizeof(g->user), "%s", value);
		g->uid = pw->pw_uid;
		if (!(g->keys_seen & (1u << K_GROUP)))
			g->gid = pw->pw_gid;
		break;
	}
	case K_GROUP: {
		struct group *gr = getgrnam(value);

		g->group_line = p->line;
		if (gr == NULL || strlen(value) >= sizeof(g->group)) {
			config_error_add(p->errs, p->path, p->line,
			    "group: no such group '%s'", value);
			break;
		}
		snprintf(g->group, sizeof(g->group), "%s", value);
		g->gid = gr->gr_gid;
		break;
	}
	case K_GLOBAL_MAX_CONNECTIONS:
		set_count(p, name, value, &g->max_connections);
		break;
	default:
		break;
	}
}

/* A path key: kept with its line, and it must be readable (not pkcs11:). */
static void
set_path(struct parse_ctx *p, const char *name, const char *value,
    char **out, int *line, bool pkcs11_ok)
{
	*line = p->line;
	free(*out);
	*out = strdup(value);
	if (*out == NULL)
		config_error_add(p->errs, p->path, p->line, "out of memory");
	else if (pkcs11_ok && strncmp(value, "pkcs11:", 7) == 0)
		return;
	else if (access(value, R_OK) != 0)
		config_error_add(p->errs, p->path, p->line,
		    "%s: cannot read '%s': %s", name, value, strerror(errno));
}

static void
set_bool(struct parse_ctx *p, const char *name, const char *value,
    bool *out)
{
	char err[PARSE_ERR_MAX];
	int v;

	if (parse_bool(value, &v, err, sizeof(err)) != 0)
		config_error_add(p->errs, p->path, p->line, "%s: %s", name,
		    err);
	else
		*out = v != 0;
}

static void
set_tls_version(struct parse_ctx *p, const char *name, const char *value,
    int *out)
{
	if (strcmp(value, "TLS1.2") == 0)
		*out = 12;
	else if (strcmp(value, "TLS1.3") == 0)
		*out = 13;
	else
		config_error_add(p->errs, p->path, p->line,
		    "%s: expected TLS1.2 or TLS1.3, got '%s'", name, value);
}

/* "h2,http/1.1": protocols offered in order. */
static void
set_alpn(struct parse_ctx *p, struct service_config *svc, const char *value)
{
	const char *s = value;

	svc->nalpn = 0;
	while (*s != '\0') {
		const char *end = strchr(s, ',');
		size_t n = end != NULL ? (size_t)(end - s) : strlen(s);

		while (n > 0 && isspace((unsigned char)*s))
			s++, n--;
		while (n > 0 && isspace((unsigned char)s[n - 1]))
			n--;
		if (n == 0 || n > 255 || svc->nalpn == ALPN_MAX) {
			config_error_add(p->errs, p->path, p->line,
			    "alpn: expected up to %d comma-separated protocol "
			    "names of 1-255 bytes, got '%s'", ALPN_MAX, value);
			svc->nalpn = 0;
			return;
		}
		memcpy(svc->alpn[svc->nalpn], s, n);
		svc->alpn[svc->nalpn++][n] = '\0';
		if (end == NULL)
			break;
		s = end + 1;
		if (*s == '\0') {
			config_error_add(p->errs, p->path, p->line,
			    "alpn: trailing comma in '%s'", value);
			return;
		}
	}
}

/* "10.0.0.0/8, ::1": appended to list (the key may be given again). */
static void
add_cidrs(struct parse_ctx *p, const char *name, const char *value,
    struct cidr **list, size_t *n, size_t other)
{
	char err[PARSE_ERR_MAX], item[64];
	const char *s = value;

	do {
		const char *end = strchr(s, ',');
		size_t len = end != NULL ? (size_t)(end - s) : strlen(s);
		struct cidr *grown;

		while (len > 0 && isspace((unsigned char)*s))
			s++, len--;
		while (len > 0 && isspace((unsigned char)s[len - 1]))
			len--;
		if (len == 0 || len >= sizeof(item)) {
			config_error_add(p->errs, p->path, p->line, "%s: "
			    "expected comma-separated addresses or blocks "
			    "(e.g. 10.0.0.0/8, ::1), got '%s'", name, value);
			return;
		}
		memcpy(item, s, len);
		item[len] = '\0';
		if (*n + other >= CIDRS_MAX) {
			config_error_add(p->errs, p->path, p->line, "%s: more "
			    "than %d entries in allow and deny", name,
			    CIDRS_MAX);
			return;
		}
		grown = realloc(*list, (*n + 1) * sizeof(**list));
		if (grown == NULL) {
			config_error_add(p->errs, p->path, p->line,
			    "out of memory");
			return;
		}
		*list = grown;
		if (parse_cidr(item, &grown[*n], err, sizeof(err)) != 0) {
			config_error_add(p->errs, p->path, p->line, "%s: %s",
			    name, err);
			return;
		}
		(*n)++;
		s = end != NULL ? end + 1 : NULL;
	} while (s != NULL);
}

static void
add_pin(struct parse_ctx *p, struct service_config *svc, const char *value)
{
	gnutls_datum_t in = { (unsigned char *)(uintptr_t)value,
	    (unsigned int)strlen(value) }, out = { NULL, 0 };
	const char *b64 = value;

	svc->pin_line = p->line;
	if (strncmp(b64, "sha256/", 7) == 0)
		in.data += 7, in.size -= 7;
	if (svc->npins == PINS_MAX) {
		config_error_add(p->errs, p->path, p->line,
		    "pin_sha256: at most %d pins", PINS_MAX);
		return;
	}
	if (gnutls_base64_decode2(&in, &out) < 0 || out.size != 32) {
		config_error_add(p->errs, p->path, p->line, "pin_sha256: '%s' "
		    "is not the base64 of a SHA-256 digest (44 characters)",
		    value);
		gnutls_free(out.data);
		return;
	}
	memcpy(svc->pins[svc->npins++], out.data, 32);
	gnutls_free(out.data);
}

static void
service_key(struct parse_ctx *p, const char *name, const char *value)
{
	struct service_config *svc = p->svc;
	char err[PARSE_ERR_MAX], where[SERVICE_NAME_MAX + 3];

	snprintf(where, sizeof(where), "[%s]", svc->name);
	switch (key_lookup(p, service_keys, name, &svc->keys_seen, where)) {
	case K_LISTEN:
		svc->listen_line = p->line;
		if (parse_listen_addr(value, &svc->listen, err,
		    sizeof(err)) != 0)
			config_error_add(p->errs, p->path, p->line,
			    "listen: %s", err);
		break;
	case K_UPSTREAM:
		svc->upstream_line = p->line;
		if (parse_host_port(value, &svc->upstream, 0, err,
		    sizeof(err)) != 0)
			config_error_add(p->errs, p->path, p->line,
			    "upstream: %s", err);
		break;
	case K_SNI:
		if (strcmp(value, "-") == 0) {
			svc->sni[0] = '\0';
		} else {
			char probe[HOST_MAX + 8];
			struct host_port hp;

			/* Reuse the host checks: "NAME:1" must parse. */
			snprintf(probe, sizeof(probe), "%s:1", value);
			if (strlen(value) > HOST_MAX ||
			    parse_host_port(probe, &hp, 0, err,
			    sizeof(err)) != 0 || hp.is_ip_literal) {
				config_error_add(p->errs, p->path, p->line,
				    "sni: '%s' is not a DNS host name (IP "
				    "addresses cannot be sent as SNI; '-' "
				    "sends none)", value);
				break;
			}
			snprintf(svc->sni, sizeof(svc->sni), "%s", value);
		}
		break;
	case K_VERIFY:
		if (strcmp(value, "full") == 0)
			svc->verify = VERIFY_FULL;
		else if (strcmp(value, "chain") == 0)
			svc->verify = VERIFY_CHAIN;
		else if (strcmp(value, "none") == 0)
			svc->verify = VERIFY_NONE;
		else if (strcmp(value, "pin") == 0)
			svc->verify = VERIFY_PIN;
		else
			config_error_add(p->errs, p->path, p->line,
			    "verify: expected full, chain, pin or none, got "
			    "'%s'", value);
		break;
	case K_VERIFY_HOSTNAME:
		if (value[0] == '\0' || strlen(value) > HOST_MAX)
			config_error_add(p->errs, p->path, p->line,
			    "verify_hostname: expected a host name or IP "
			    "address, got '%s'", value);
		else
			snprintf(svc->verify_hostname,
			    sizeof(svc->verify_hostname), "%s", value);
		break;
	case K_CA_FILE:
		set_path(p, name, value, &svc->ca_file, &svc->ca_file_line,
		    false);
		break;
	case K_CONNECT_TIMEOUT:
		set_duration(p, name, value, &svc->connect_timeout_ms);
		break;
	case K_HANDSHAKE_TIMEOUT:
		set_duration(p, name, value, &svc->handshake_timeout_ms);
		break;
	case K_IDLE_TIMEOUT:
		set_duration(p, name, value, &svc->idle_timeout_ms);
		break;
	case K_CRL_FILE:
		set_path(p, name, value, &svc->crl_file, &svc->crl_file_line,
		    false);
		break;
	case K_CERT_FILE:
		set_path(p, name, value, &svc->cert_file, &svc->cert_file_line,
		    true);
		break;
	case K_KEY_FILE:
		set_path(p, name, value, &svc->key_file, &svc->key_file_line,
		    true);
		break;
	case K_KEY_PASSWORD_FILE:
		set_path(p, name, value, &svc->key_password_file,
		    &svc->key_password_file_line, false);
		break;
	case K_PIN_SHA256:
		add_pin(p, svc, value);
		break;
	case K_ALPN:
		set_alpn(p, svc, value);
		break;
	case K_ALPN_REQUIRED:
		set_bool(p, name, value, &svc->alpn_required);
		break;
	case K_TLS_MIN_VERSION:
		set_tls_version(p, name, value, &svc->tls_min_version);
		break;
	case K_TLS_MAX_VERSION:
		set_tls_version(p, name, value, &svc->tls_max_version);
		break;
	case K_TLS_PRIORITY:
		svc->tls_priority_line = p->line;
		free(svc->tls_priority);
		if ((svc->tls_priority = strdup(value)) == NULL)
			config_error_add(p->errs, p->path, p->line,
			    "out of memory");
		break;
	case K_SESSION_CACHE:
		set_bool(p, name, value, &svc->session_cache);
		break;
	case K_OCSP:
		if (strcmp(value, "off") == 0)
			svc->ocsp = OCSP_OFF;
		else if (strcmp(value, "try") == 0)
			svc->ocsp = OCSP_TRY;
		else if (strcmp(value, "require") == 0)
			svc->ocsp = OCSP_REQUIRE;
		else
			config_error_add(p->errs, p->path, p->line,
			    "ocsp: expected off, try or require, got '%s'",
			    value);
		break;
	case K_ALLOW:
		svc->allow_line = p->line;
		add_cidrs(p, name, value, &svc->allow, &svc->nallow,
		    svc->ndeny);
		for (size_t i = 0; i < svc->nallow; i++)
			if (svc->allow[i].prefix == 0)
				svc->allow_everyone = true;
		break;
	case K_DENY:
		svc->deny_line = p->line;
		add_cidrs(p, name, value, &svc->deny, &svc->ndeny,
		    svc->nallow);
		break;
	case K_MAX_CONNECTIONS:
		set_count(p, name, value, &svc->max_connections);
		break;
	case K_MODE:
		svc->unix_perms_line = p->line;
		if (parse_file_mode(value, &svc->unix_mode, err,
		    sizeof(err)) != 0)
			config_error_add(p->errs, p->path, p->line,
			    "mode: %s", err);
		break;
	case K_OWNER: {
		struct passwd *pw = getpwnam(value);

		svc->unix_perms_line = p->line;
		if (pw == NULL)
			config_error_add(p->errs, p->path, p->line,
			    "owner: no such user '%s'", value);
		else
			svc->unix_uid = pw->pw_uid;
		break;
	}
	case K_SOCKET_GROUP: {
		struct group *gr = getgrnam(value);

		svc->unix_perms_line = p->line;
		if (gr == NULL)
			config_error_add(p->errs, p->path, p->line,
			    "group: no such group '%s'", value);
		else
			svc->unix_gid = gr->gr_gid;
		break;
	}
	case K_ALLOW_INSECURE_KEY_PERMS:
		set_bool(p, name, value, &svc->allow_insecure_key_perms);
		break;
	case K_ALLOW_CN_ONLY:
		set_bool(p, name, value, &svc->allow_cn_only);
		break;
	default:
		break;
	}
}

/*
 * inih handler. It always returns 1 so that parsing goes on and every error
 * is collected; a non-zero ini_parse_stream() result then means a syntax
 * error that inih found itself.
 */
static int
cfg_ini_handler(void *user, const char *section, const char *name,
    const char *value)
{
	struct parse_ctx *p = user;

	(void)section;	/* p->sec tracks it, including empty sections */
	/* Like inih's prev_name: what an indented line would continue. */
	p->after_key = name[0] != '\0';
	switch (p->sec) {
	case SEC_NONE:
		config_error_add(p->errs, p->path, p->line,
		    "'%s' is outside any section: put it under [global] or a "
		    "[service]", name);
		break;
	case SEC_GLOBAL:
		global_key(p, name, value);
		break;
	case SEC_SERVICE:
		service_key(p, name, value);
		break;
	case SEC_IGNORED:
		break;	/* the section header was already reported */
	}
	return 1;
}

bool
listen_addr_equal(const struct listen_addr *a, const struct listen_addr *b)
{
	if (a->salen == 0 || b->salen == 0 || a->salen != b->salen ||
	    a->sa.ss_family != b->sa.ss_family)
		return false;	/* unparsable ones were reported already */
	if (a->is_unix)
		return strcmp(((const struct sockaddr_un *)&a->sa)->sun_path,
		    ((const struct sockaddr_un *)&b->sa)->sun_path) == 0;
	if (a->sa.ss_family == AF_INET) {
		const struct sockaddr_in *x = (const struct sockaddr_in *)&a->sa;
		const struct sockaddr_in *y = (const struct sockaddr_in *)&b->sa;

		return x->sin_port == y->sin_port &&
		    x->sin_addr.s_addr == y->sin_addr.s_addr;
	} else {
		const struct sockaddr_in6 *x =
		    (const struct sockaddr_in6 *)&a->sa;
		const struct sockaddr_in6 *y =
		    (const struct sockaddr_in6 *)&b->sa;

		return x->sin6_port == y->sin6_port &&
		    memcmp(&x->sin6_addr, &y->sin6_addr,
		    sizeof(x->sin6_addr)) == 0;
	}
}

bool
listen_addr_same(const struct listen_addr *a, const struct listen_addr *b)
{
	/* Two services on port 0 get two different ephemeral ports. */
	if (!a->is_unix && a->sa.ss_family == AF_INET &&
	    ((const struct sockaddr_in *)&a->sa)->sin_port == 0)
		return false;
	if (!a->is_unix && a->sa.ss_family == AF_INET6 &&
	    ((const struct sockaddr_in6 *)&a->sa)->sin6_port == 0)
		return false;
	return listen_addr_equal(a, b);
}

/* Rules between the TLS keys of one service. */
static void
validate_tls(struct parse_ctx *p, struct service_config *svc)
{
	if ((svc->cert_file == NULL) != (svc->key_file == NULL))
		config_error_add(p->errs, p->path, svc->cert_file != NULL ?
		    svc->cert_file_line : svc->key_file_line, "[%s]: cert_file "
		    "and key_file go together", svc->name);
	if (svc->key_password_file != NULL && svc->key_file == NULL)
		config_error_add(p->errs, p->path,
		    svc->key_password_file_line, "[%s]: key_password_file "
		    "without key_file", svc->name);
	if (svc->verify == VERIFY_PIN && svc->npins == 0)
		config_error_add(p->errs, p->path, svc->line, "[%s]: verify = "
		    "pin needs at least one pin_sha256", svc->name);
	if (svc->verify == VERIFY_NONE && svc->npins > 0)
		config_error_add(p->errs, p->path, svc->pin_line, "[%s]: "
		    "pin_sha256 is not checked with verify = none (use verify "
		    "= pin)", svc->name);
	if (svc->alpn_required && svc->nalpn == 0)
		config_error_add(p->errs, p->path, svc->line, "[%s]: "
		    "alpn_required = yes needs alpn", svc->name);
	if (svc->tls_min_version != TLS_VERSION_DEFAULT &&
	    svc->tls_max_version != TLS_VERSION_DEFAULT &&
	    svc->tls_min_version > svc->tls_max_version)
		config_error_add(p->errs, p->path, svc->line, "[%s]: "
		    "tls_min_version is above tls_max_version", svc->name);
}

/*
 * Who may connect. A forward proxy holding a client certificate lends that
 * identity to whoever reaches it, so a listener beyond loopback must say who.
 */
static void
validate_access(struct parse_ctx *p, struct service_config *svc)
{
	const unsigned int unix_keys = (1u << K_MODE) | (1u << K_OWNER) |
	    (1u << K_SOCKET_GROUP);

	if (svc->listen.is_unix) {
		if (svc->nallow > 0 || svc->ndeny > 0)
			config_error_add(p->errs, p->path, svc->nallow > 0 ?
			    svc->allow_line : svc->deny_line, "[%s]: allow and "
			    "deny apply to TCP listeners; a unix socket is "
			    "guarded by mode, owner and group", svc->name);
		return;
	}
	if (svc->keys_seen & unix_keys)
		config_error_add(p->errs, p->path, svc->unix_perms_line,
		    "[%s]: mode, owner and group apply to unix: listeners "
		    "only (use allow and deny for %s)", svc->name,
		    svc->listen.text);
	if (svc->listen.salen > 0 && svc->nallow == 0 &&
	    !sockaddr_is_loopback((const struct sockaddr *)&svc->listen.sa))
		config_error_add(p->errs, p->path, svc->listen_line, "[%s]: "
		    "listen %s is reachable beyond this host: say who may "
		    "connect with allow = ADDRESS/PREFIX[, ...] (allow = "
		    "0.0.0.0/0, ::/0 lets everyone in)", svc->name,
		    svc->listen.text);
}

/* Fills defaults that depend on other keys, and checks cross-key rules. */
static void
validate(struct parse_ctx *p)
{
	struct config *cfg = p->cfg;
	struct service_config *svc, *other;

	if (cfg->global.group[0] != '\0' && cfg->global.user[0] == '\0')
		config_error_add(p->errs, p->path, cfg->global.group_line,
		    "[global]: 'group' needs 'user' too");
	if (cfg->global.user[0] != '\0' && cfg->global.group[0] == '\0') {
		/* No group: the user's primary one, named for logs and reload. */
		struct group *gr = getgrgid(cfg->global.gid);

		snprintf(cfg->global.group, sizeof(cfg->global.group), "%s",
		    gr != NULL ? gr->gr_name : "-");
	}
	if (cfg->services == NULL)
		config_error_add(p->errs, p->path, 0,
		    "no service defined: add a [NAME] section with listen "
		    "and upstream");
	for (svc = cfg->services; svc != NULL; svc = svc->next) {
		if (!(svc->keys_seen & (1u << K_LISTEN)))
			config_error_add(p->errs, p->path, svc->line,
			    "[%s]: missing 'listen'", svc->name);
		if (!(svc->keys_seen & (1u << K_UPSTREAM))) {
			config_error_add(p->errs, p->path, svc->line,
			    "[%s]: missing 'upstream'", svc->name);
			continue;
		}
		if (!(svc->keys_seen & (1u << K_SNI)) &&
		    !svc->upstream.is_ip_literal)
			snprintf(svc->sni, sizeof(svc->sni), "%s",
			    svc->upstream.host);
		if (!(svc->keys_seen & (1u << K_VERIFY_HOSTNAME)))
			snprintf(svc->verify_hostname,
			    sizeof(svc->verify_hostname), "%s",
			    svc->sni[0] != '\0' ? svc->sni :
			    svc->upstream.host);
		validate_tls(p, svc);
		if (!(svc->keys_seen & (1u << K_LISTEN)))
			continue;
		validate_access(p, svc);
		for (other = cfg->services; other != svc;
		    other = other->next) {
			if ((other->keys_seen & (1u << K_LISTEN)) &&
			    listen_addr_same(&other->listen, &svc->listen))
				config_error_add(p->errs, p->path,
				    svc->listen_line, "[%s]: listen %s is "
				    "already used by [%s] (line %d)",
				    svc->name, svc->listen.text, other->name,
				    other->listen_line);
		}
	}
}

static struct config *
config_parse(struct parse_ctx *p, const char *path,
    struct config_errors *errs)
{
	struct config *cfg;
	size_t nerr_before = errs->n;
	int rc;

	cfg = calloc(1, sizeof(*cfg));
	if (cfg == NULL || (cfg->path = strdup(path)) == NULL) {
		free(cfg);
		config_error_add(errs, path, 0, "out of memory");
		return NULL;
	}
	cfg->global.log_level = LOG_INFO;
	cfg->global.log_format = LOG_FORMAT_LOGFMT;
	cfg->global.shutdown_timeout_ms = DEFAULT_SHUTDOWN_TIMEOUT_MS;
	cfg->global.io_collect_us = DEFAULT_IO_COLLECT_US;
	cfg->global.workers = 1;
	p->path = path;
	p->cfg = cfg;
	p->errs = errs;
	p->sec = SEC_NONE;
	rc = ini_parse_stream(reader_string, p, cfg_ini_handler, p);
	if (rc > 0)
		config_error_add(errs, path, rc, "syntax error: expected "
		    "'key = value', '[section]' or a comment");
	else if (rc < 0)
		config_error_add(errs, path, 0, "cannot parse (error %d)", rc);
	validate(p);
	if (errs->n > nerr_before) {
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

/*
 * The file through config_read(), like start-up and reload: `tlsfwd -t`
 * must judge exactly the text that a start would run.
 */
struct config *
config_load(const char *path, struct config_errors *errs)
{
	struct config *cfg;
	char *text = config_read(path, errs);

	if (text == NULL)
		return NULL;
	cfg = config_load_string(text, path, errs);
	free(text);
	return cfg;
}

/* Larger files are surely a mistake. */
#define CONFIG_FILE_MAX (1024 * 1024)

char *
config_read(const char *path, struct config_errors *errs)
{
	struct stat st;
	char *text;
	size_t n;
	FILE *f;

	f = fopen(path, "re");
	if (f == NULL) {
		config_error_add(errs, path, 0, "cannot open: %s",
		    strerror(errno));
		return NULL;
	}
	if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) ||
	    st.st_size > CONFIG_FILE_MAX) {
		config_error_add(errs, path, 0, "not a regular file of at most "
		    "%d bytes", CONFIG_FILE_MAX);
		fclose(f);
		return NULL;
	}
	text = malloc((size_t)st.st_size + 1);
	n = text != NULL ? fread(text, 1, (size_t)st.st_size, f) : 0;
	if (text == NULL || ferror(f)) {
		config_error_add(errs, path, 0, "cannot read: %s",
		    text == NULL ? "out of memory" : strerror(errno));
		free(text);
		fclose(f);
		return NULL;
	}
	text[n] = '\0';
	fclose(f);
	/*
	 * The loader sees the text as a C string: a NUL would end it there
	 * and silently drop the rest of the file (a deny line, say). Each
	 * line holding one is an error; nothing else is parsed.
	 */
	if (memchr(text, '\0', n) != NULL) {
		int line = 1;

		for (size_t i = 0; i < n; i++) {
			if (text[i] == '\0') {
				config_error_add(errs, path, line, "NUL byte "
				    "in the line: the file must be text");
				while (i < n && text[i] != '\n')
					i++;
			}
			if (i < n && text[i] == '\n')
				line++;
		}
		free(text);
		return NULL;
	}
	return text;
}

struct config *
config_load_string(const char *text, const char *path,
    struct config_errors *errs)
{
	struct parse_ctx p;

	memset(&p, 0, sizeof(p));
	p.text = text;
	return config_parse(&p, path, errs);
}
