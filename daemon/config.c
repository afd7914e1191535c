/*
 * config.c - the INI file as structs, with validation and FILE:LINE errors:
 * config_load(), config_read(), config_load_string(), config_free(), the
 * error list (config_error_add(), config_error_here(), config_errors_print(),
 * config_errors_free()), the sections, and the rules between keys. Each
 * key's own syntax and default is its row in config_keys.c.
 */
#include "config_priv.h"

#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <ini.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

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
config_error_here(struct parse_ctx *p, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	config_error_add(p->errs, p->path, p->line, "%s", msg);
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

static void
service_free(struct service_config *sc)
{
	free(sc->ca_file);
	free(sc->crl_file);
	free(sc->cert_file);
	free(sc->key_file);
	free(sc->key_password_file);
	free(sc->via_password_file);
	free(sc->tls_priority);
	free(sc->allow);
	free(sc->deny);
	free(sc);
}

void
config_free(struct config *cfg)
{
	struct service_config *sc, *next;

	if (cfg == NULL)
		return;
	for (sc = cfg->services; sc != NULL; sc = next) {
		next = sc->next;
		service_free(sc);
	}
	free(cfg->global.dns_servers);
	free(cfg->global.metrics_allow);
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
	struct service_config *sc, **tail;

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
	sc = calloc(1, sizeof(*sc));
	if (sc == NULL) {
		config_error_add(p->errs, p->path, p->line, "out of memory");
		return;
	}
	snprintf(sc->name, sizeof(sc->name), "%s", name);
	sc->line = p->line;
	config_keys_defaults(p, config_service_keys, sc);
	sc->unix_uid = (uid_t)-1;	/* tlsfwd's own */
	sc->unix_gid = (gid_t)-1;
	*tail = sc;
	p->cfg->nservices++;
	p->sc = sc;
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
	char where[SERVICE_NAME_MAX + 3];

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
		config_key_apply(p, config_global_keys, &p->cfg->global,
		    &p->cfg->global.keys_seen, "[global]", name, value);
		break;
	case SEC_SERVICE:
		snprintf(where, sizeof(where), "[%s]", p->sc->name);
		config_key_apply(p, config_service_keys, p->sc,
		    &p->sc->keys_seen, where, name, value);
		break;
	case SEC_IGNORED:
		break;	/* the section header was already reported */
	}
	return 1;
}

static bool
service_key_seen(const struct service_config *sc, const char *name)
{
	return config_key_seen(config_service_keys, sc->keys_seen, name);
}

/*
 * Each upstream's TLS identity: an explicit sni or verify_hostname applies
 * to all; otherwise each sends its own host name (not an IP address) and
 * verifies its SNI, else its host.
 */
static void
upstream_identities(struct service_config *sc)
{
	bool sni_given = service_key_seen(sc, "sni");
	bool name_given = service_key_seen(sc, "verify_hostname");

	for (size_t i = 0; i < sc->nupstreams; i++) {
		struct upstream_target *t = &sc->upstreams[i];

		if (sni_given)
			snprintf(t->sni, sizeof(t->sni), "%s", sc->sni);
		else if (!t->hp.is_ip_literal)
			snprintf(t->sni, sizeof(t->sni), "%s", t->hp.host);
		if (name_given)
			snprintf(t->verify_hostname,
			    sizeof(t->verify_hostname), "%s",
			    sc->verify_hostname);
		else
			snprintf(t->verify_hostname,
			    sizeof(t->verify_hostname), "%s",
			    t->sni[0] != '\0' ? t->sni : t->hp.host);
	}
}

/* Rules between the TLS keys of one service. */
static void
validate_tls(struct parse_ctx *p, struct service_config *sc)
{
	if ((sc->cert_file == NULL) != (sc->key_file == NULL))
		config_error_add(p->errs, p->path, sc->cert_file != NULL ?
		    sc->cert_file_line : sc->key_file_line, "[%s]: cert_file "
		    "and key_file go together", sc->name);
	if (sc->key_password_file != NULL && sc->key_file == NULL)
		config_error_add(p->errs, p->path,
		    sc->key_password_file_line, "[%s]: key_password_file "
		    "without key_file", sc->name);
	if (sc->via_password_file != NULL && sc->via_user[0] == '\0')
		config_error_add(p->errs, p->path, sc->via_password_file_line,
		    "[%s]: via_password_file needs a user in via "
		    "(http://USER@HOST:PORT)", sc->name);
	if (sc->via_user[0] != '\0' && sc->via_password_file == NULL)
		config_error_add(p->errs, p->path, sc->via_line, "[%s]: a user "
		    "in via needs via_password_file (the password for Basic "
		    "authentication)", sc->name);
	if (sc->pool > 0 && sc->proxy_protocol != 0)
		config_error_add(p->errs, p->path, sc->line, "[%s]: "
		    "proxy_protocol sends the client's address, which a pooled "
		    "connection does not know yet: set pool = 0", sc->name);
	if (sc->verify == VERIFY_PIN && sc->npins == 0)
		config_error_add(p->errs, p->path, sc->line, "[%s]: verify = "
		    "pin needs at least one pin_sha256", sc->name);
	if (sc->verify == VERIFY_NONE && sc->npins > 0)
		config_error_add(p->errs, p->path, sc->pin_line, "[%s]: "
		    "pin_sha256 is not checked with verify = none (use verify "
		    "= pin)", sc->name);
	if (sc->alpn_required && sc->nalpn == 0)
		config_error_add(p->errs, p->path, sc->line, "[%s]: "
		    "alpn_required = yes needs alpn", sc->name);
	if (sc->tls_min_version != TLS_VERSION_DEFAULT &&
	    sc->tls_max_version != TLS_VERSION_DEFAULT &&
	    sc->tls_min_version > sc->tls_max_version)
		config_error_add(p->errs, p->path, sc->line, "[%s]: "
		    "tls_min_version is above tls_max_version", sc->name);
}

/*
 * Who may connect. A forward proxy holding a client certificate lends that
 * identity to whoever reaches it, so a listener beyond loopback must say who.
 */
static void
validate_access(struct parse_ctx *p, struct service_config *sc)
{
	if (sc->listen.is_unix) {
		if (sc->nallow > 0 || sc->ndeny > 0)
			config_error_add(p->errs, p->path, sc->nallow > 0 ?
			    sc->allow_line : sc->deny_line, "[%s]: allow and "
			    "deny apply to TCP listeners; a unix socket is "
			    "guarded by mode, owner and group", sc->name);
		return;
	}
	if (service_key_seen(sc, "mode") || service_key_seen(sc, "owner") ||
	    service_key_seen(sc, "group"))
		config_error_add(p->errs, p->path, sc->unix_perms_line,
		    "[%s]: mode, owner and group apply to unix: listeners "
		    "only (use allow and deny for %s)", sc->name,
		    sc->listen.text);
	if (sc->listen.salen > 0 && sc->nallow == 0 &&
	    !sockaddr_is_loopback((const struct sockaddr *)&sc->listen.sa))
		config_error_add(p->errs, p->path, sc->listen_line, "[%s]: "
		    "listen %s is reachable beyond this host: say who may "
		    "connect with allow = ADDRESS/PREFIX[, ...] (allow = "
		    "0.0.0.0/0, ::/0 lets everyone in)", sc->name,
		    sc->listen.text);
}

/* A /metrics beyond this host must say who may scrape it, as services do. */
static void
validate_metrics(struct parse_ctx *p, const struct global_config *g)
{
	if (!g->metrics_on) {
		if (g->nmetrics_allow > 0)
			config_error_add(p->errs, p->path,
			    g->metrics_allow_line, "[global]: metrics_allow "
			    "without metrics_listen");
		return;
	}
	if (!g->metrics_listen.is_unix && g->metrics_listen.salen > 0 &&
	    g->nmetrics_allow == 0 && !sockaddr_is_loopback(
	    (const struct sockaddr *)&g->metrics_listen.sa))
		config_error_add(p->errs, p->path, g->metrics_listen_line,
		    "[global]: metrics_listen %s is reachable beyond this "
		    "host: say who may scrape it with metrics_allow = "
		    "ADDRESS/PREFIX[, ...]", g->metrics_listen.text);
}

/* Fills defaults that depend on other keys, and checks cross-key rules. */
static void
validate(struct parse_ctx *p)
{
	struct config *cfg = p->cfg;
	struct service_config *sc, *other;

	if (cfg->global.group[0] != '\0' && cfg->global.user[0] == '\0')
		config_error_add(p->errs, p->path, cfg->global.group_line,
		    "[global]: 'group' needs 'user' too");
	if (cfg->global.user[0] != '\0' && cfg->global.group[0] == '\0') {
		/* No group: the user's primary one, named for the logs. */
		struct group *gr = getgrgid(cfg->global.gid);

		snprintf(cfg->global.group, sizeof(cfg->global.group), "%s",
		    gr != NULL ? gr->gr_name : "-");
	}
	validate_metrics(p, &cfg->global);
	if (cfg->services == NULL)
		config_error_add(p->errs, p->path, 0,
		    "no service defined: add a [NAME] section with listen "
		    "and upstream");
	for (sc = cfg->services; sc != NULL; sc = sc->next) {
		if (!service_key_seen(sc, "listen"))
			config_error_add(p->errs, p->path, sc->line,
			    "[%s]: missing 'listen'", sc->name);
		if (!service_key_seen(sc, "upstream")) {
			config_error_add(p->errs, p->path, sc->line,
			    "[%s]: missing 'upstream'", sc->name);
			continue;
		}
		upstream_identities(sc);
		validate_tls(p, sc);
		if (!service_key_seen(sc, "listen"))
			continue;
		validate_access(p, sc);
		for (other = cfg->services; other != sc;
		    other = other->next) {
			if (service_key_seen(other, "listen") &&
			    listen_addr_same(&other->listen, &sc->listen))
				config_error_add(p->errs, p->path,
				    sc->listen_line, "[%s]: listen %s is "
				    "already used by [%s] (line %d)",
				    sc->name, sc->listen.text, other->name,
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
	p->path = path;
	p->cfg = cfg;
	p->errs = errs;
	p->sec = SEC_NONE;
	config_keys_defaults(p, config_global_keys, &cfg->global);
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
