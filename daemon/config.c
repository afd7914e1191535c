/* config.c - the INI file as structs, with validation and FILE:LINE errors. */
#include "config.h"

#include <ctype.h>
#include <grp.h>
#include <pwd.h>
#include <errno.h>
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

/* State of one parse: where we are, and what we have built so far. */
struct parse_ctx {
	const char		*path;
	struct config		*cfg;
	struct config_errors	*errs;
	/* Line reader state, so errors carry the right line number. */
	FILE			*file;
	const char		*text;		/* when parsing a string */
	int			 line;
	bool			 line_indented;	/* inih: continues a value */
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
	}
	return "?";
}

static void
service_free(struct service_config *svc)
{
	free(svc->ca_file);
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
	*tail = svc;
	p->cfg->nservices++;
	p->svc = svc;
	p->sec = SEC_SERVICE;
}

/*
 * Notices section headers as inih reads them, mirroring inih's rule (after
 * leading space, '[' up to the first ']'), so that empty and duplicate
 * sections are reported too: inih only reports sections through their keys.
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
	if (*line != '[')
		return;
	end = strchr(line + 1, ']');
	if (end == NULL)
		return;		/* inih reports it as a syntax error */
	n = (size_t)(end - (line + 1));
	if (n >= sizeof(name))
		n = sizeof(name) - 1;
	memcpy(name, line + 1, n);
	name[n] = '\0';
	section_begin(p, name);
}

/* Longest line inih hands over whole: its buffer less newline and NUL. */
#define CONFIG_LINE_MAX (INI_MAX_LINE - 2)

/*
 * After a chunk is read: count lines, and catch lines longer than inih's
 * buffer, which it would cut silently and parse the rest of as a line of its
 * own. Such a line is reported, the rest of it skipped, and inih is given a
 * blank line instead, so its own line count stays right.
 */
static char *
reader_chunk_done(struct parse_ctx *p, char *str,
    bool (*skip_rest)(struct parse_ctx *))
{
	size_t n = strlen(str);

	p->line++;
	if ((n == 0 || str[n - 1] != '\n') && skip_rest(p)) {
		config_error_add(p->errs, p->path, p->line,
		    "line too long (at most %d characters)", CONFIG_LINE_MAX);
		str[0] = '\n';
		str[1] = '\0';
		return str;
	}
	reader_saw_line(p, str);
	return str;
}

/* Skips to the next line; false if the file simply ended. */
static bool
skip_rest_file(struct parse_ctx *p)
{
	int ch = getc(p->file);
	bool more = ch != EOF;

	while (ch != EOF && ch != '\n')
		ch = getc(p->file);
	return more;
}

static bool
skip_rest_string(struct parse_ctx *p)
{
	bool more = *p->text != '\0';

	while (*p->text != '\0' && *p->text++ != '\n')
		;
	return more;
}

/* ini_reader over a FILE *, counting lines. */
static char *
reader_file(char *str, int num, void *stream)
{
	struct parse_ctx *p = stream;

	if (fgets(str, num, p->file) == NULL)
		return NULL;
	return reader_chunk_done(p, str, skip_rest_file);
}

/* ini_reader over a string, counting lines. */
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
	return reader_chunk_done(p, str, skip_rest_string);
}

enum { K_LOG_LEVEL, K_LOG_FORMAT, K_SHUTDOWN_TIMEOUT, K_USER, K_GROUP };
enum { K_LISTEN, K_UPSTREAM, K_SNI, K_VERIFY, K_VERIFY_HOSTNAME, K_CA_FILE,
    K_CONNECT_TIMEOUT, K_HANDSHAKE_TIMEOUT, K_IDLE_TIMEOUT };

struct key_def {
	const char	*name;
	int		 id;
};

static const struct key_def global_keys[] = {
	{ "log_level", K_LOG_LEVEL },
	{ "log_format", K_LOG_FORMAT },
	{ "shutdown_timeout", K_SHUTDOWN_TIMEOUT },
	{ "user", K_USER },
	{ "group", K_GROUP },
	{ NULL, 0 },
};

static const struct key_def service_keys[] = {
	{ "listen", K_LISTEN },
	{ "upstream", K_UPSTREAM },
	{ "sni", K_SNI },
	{ "verify", K_VERIFY },
	{ "verify_hostname", K_VERIFY_HOSTNAME },
	{ "ca_file", K_CA_FILE },
	{ "connect_timeout", K_CONNECT_TIMEOUT },
	{ "handshake_timeout", K_HANDSHAKE_TIMEOUT },
	{ "idle_timeout", K_IDLE_TIMEOUT },
	{ NULL, 0 },
};

/* Finds name in keys, reports unknown or repeated keys; -1 if unusable. */
static int
key_lookup(struct parse_ctx *p, const struct key_def *keys, const char *name,
    unsigned int *seen, const char *where)
{
	for (const struct key_def *k = keys; k->name != NULL; k++) {
		if (strcmp(k->name, name) != 0)
			continue;
		if (*seen & (1u << k->id)) {
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
	default:
		break;
	}
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
		else
			config_error_add(p->errs, p->path, p->line,
			    "verify: expected full, chain or none, got '%s'",
			    value);
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
		svc->ca_file_line = p->line;
		free(svc->ca_file);
		svc->ca_file = strdup(value);
		if (svc->ca_file == NULL)
			config_error_add(p->errs, p->path, p->line,
			    "out of memory");
		else if (access(value, R_OK) != 0)
			config_error_add(p->errs, p->path, p->line,
			    "ca_file: cannot read '%s': %s", value,
			    strerror(errno));
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
		if (!(svc->keys_seen & (1u << K_LISTEN)))
			continue;
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
	p->path = path;
	p->cfg = cfg;
	p->errs = errs;
	p->sec = SEC_NONE;
	rc = ini_parse_stream(p->file != NULL ? reader_file : reader_string, p,
	    cfg_ini_handler, p);
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

struct config *
config_load(const char *path, struct config_errors *errs)
{
	struct parse_ctx p;
	struct config *cfg;
	struct stat st;

	memset(&p, 0, sizeof(p));
	p.file = fopen(path, "re");
	if (p.file == NULL) {
		config_error_add(errs, path, 0, "cannot open: %s",
		    strerror(errno));
		return NULL;
	}
	if (fstat(fileno(p.file), &st) == 0 && !S_ISREG(st.st_mode)) {
		config_error_add(errs, path, 0, "not a regular file");
		fclose(p.file);
		return NULL;
	}
	cfg = config_parse(&p, path, errs);
	if (ferror(p.file) && cfg != NULL) {
		config_error_add(errs, path, 0, "read error");
		config_free(cfg);
		cfg = NULL;
	}
	fclose(p.file);
	return cfg;
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
