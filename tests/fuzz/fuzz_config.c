/*
 * fuzz_config.c - libFuzzer target for the configuration loader: inih and
 * every validation rule of daemon/config*.c.
 *
 * The input is the file's text. It is loaded the two ways tlsfwd does:
 * config_read() + config_load_string() (start-up, reload, each worker) and
 * config_load() (tlsfwd -t), from a memfd, so nothing is written to any file
 * system. Both must give the same verdict and the very same errors, since
 * -t promises to check what a start would. Besides, every error names the
 * file and a line that exists, and a loaded configuration keeps the rules
 * the daemon relies on. And a configuration loaded has the very services
 * that inih, run on its own over the text, puts keys in.
 *
 * Validation only reads: access(2) on ca_file and key paths, getpwnam(3)
 * and getgrnam(3) for user, group and owner. It binds, creates and removes
 * nothing, so the target is side-effect free.
 */
#include <ctype.h>
#include <ini.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "fuzz.h"

static int memfd = -1;
static char path[64];

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	memfd = memfd_create("fuzz.ini", MFD_CLOEXEC);
	if (memfd < 0)
		abort();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
	return 0;
}

/*
 * inih passes handlers at most this much of a section name (its
 * MAX_SECTION less the NUL); tlsfwd keeps track of sections itself, with
 * names of up to SERVICE_NAME_MAX.
 */
#define INIH_SECTION_MAX 49

#define INI_SEEN_MAX 256

/*
 * What inih, by itself, makes of the text: the sections it gives keys to
 * ("global" and the services), and where each listen goes.
 */
struct ini_seen {
	char	names[INI_SEEN_MAX][INI_MAX_LINE];
	int	n;
	char	listen_section[INI_SEEN_MAX][INI_MAX_LINE];
	char	listen[INI_SEEN_MAX][INI_MAX_LINE];
	int	nlisten;
};

static int
ini_seen_key(void *user, const char *section, const char *name,
    const char *value)
{
	struct ini_seen *s = user;
	int i;

	if (strcmp(name, "listen") == 0 && s->nlisten < INI_SEEN_MAX) {
		snprintf(s->listen_section[s->nlisten], INI_MAX_LINE, "%s",
		    section);
		snprintf(s->listen[s->nlisten++], INI_MAX_LINE, "%s", value);
	}
	for (i = 0; i < s->n; i++)
		if (strcmp(s->names[i], section) == 0)
			return 1;
	if (s->n < INI_SEEN_MAX)
		snprintf(s->names[s->n++], INI_MAX_LINE, "%s", section);
	return 1;
}

/*
 * The services loaded are the sections inih gives keys to, but [global]:
 * each service has keys (listen, upstream), so inih names them all. And
 * each has the listen inih gave its section.
 */
static void
check_sections(const struct config *cfg, const char *text)
{
	static struct ini_seen s;
	const struct service_config *sc;
	int i;

	s.n = 0;
	s.nlisten = 0;
	FUZZ_CHECK(ini_parse_string(text, ini_seen_key, &s) == 0);
	for (i = 0; i < s.n; i++) {
		if (strcmp(s.names[i], "global") == 0)
			continue;
		for (sc = cfg->services; sc != NULL; sc = sc->next)
			if (strncmp(sc->name, s.names[i],
			    INIH_SECTION_MAX) == 0)
				break;
		FUZZ_CHECK(sc != NULL);
	}
	for (sc = cfg->services; sc != NULL; sc = sc->next) {
		for (i = 0; i < s.n; i++)
			if (strncmp(sc->name, s.names[i],
			    INIH_SECTION_MAX) == 0)
				break;
		FUZZ_CHECK(i < s.n);
	}
	for (i = 0; i < s.nlisten; i++) {
		/* Names inih cut short may be ambiguous: skip those. */
		if (strlen(s.listen_section[i]) >= INIH_SECTION_MAX ||
		    strcmp(s.listen_section[i], "global") == 0)
			continue;
		for (sc = cfg->services; sc != NULL; sc = sc->next)
			if (strcmp(sc->name, s.listen_section[i]) == 0)
				break;
		FUZZ_CHECK(sc != NULL);
		FUZZ_CHECK(strcmp(sc->listen.text, s.listen[i]) == 0);
	}
}

/* Lines of the file, NUL bytes and all; a last one may lack its '\n'. */
static int
count_lines(const uint8_t *data, size_t size)
{
	int n = 0;

	for (size_t i = 0; i < size; i++)
		if (data[i] == '\n')
			n++;
	if (size > 0 && data[size - 1] != '\n')
		n++;
	return n;
}

/* "PATH: message" or "PATH:LINE: message" with a line of the file. */
static void
check_errors(const struct config_errors *errs, int nlines)
{
	size_t plen = strlen(path);

	for (size_t i = 0; i < errs->n; i++) {
		const char *m = errs->msgs[i], *p;
		char *end;
		long line;

		FUZZ_CHECK(m != NULL);
		FUZZ_CHECK(strncmp(m, path, plen) == 0 && m[plen] == ':');
		p = m + plen + 1;
		if (*p == ' ')
			continue;
		FUZZ_CHECK(isdigit((unsigned char)*p));
		line = strtol(p, &end, 10);
		FUZZ_CHECK(*end == ':');
		FUZZ_CHECK(line >= 1 && line <= nlines);
	}
}

/* What the rest of tlsfwd takes for granted in a loaded configuration. */
static void
check_config(const struct config *cfg)
{
	const struct service_config *sc;
	size_t n = 0;

	FUZZ_CHECK(cfg->services != NULL);
	FUZZ_CHECK(cfg->global.workers >= 1 &&
	    cfg->global.workers <= WORKERS_MAX);
	FUZZ_CHECK(cfg->global.shutdown_timeout_ms > 0);
	FUZZ_CHECK(cfg->global.max_connections <= CONNECTIONS_MAX);
	FUZZ_CHECK(cfg->global.group[0] == '\0' || cfg->global.user[0] != '\0');
	for (sc = cfg->services; sc != NULL; sc = sc->next) {
		size_t len = strnlen(sc->name, sizeof(sc->name));

		n++;
		FUZZ_CHECK(len >= 1 && len <= SERVICE_NAME_MAX);
		FUZZ_CHECK(sc->listen.salen > 0);
		FUZZ_CHECK(sc->listen.is_unix ==
		    (sc->listen.sa.ss_family == AF_UNIX));
		FUZZ_CHECK(sc->nupstreams >= 1 &&
		    sc->nupstreams <= UPSTREAMS_MAX);
		for (size_t i = 0; i < sc->nupstreams; i++) {
			const struct upstream_target *t = &sc->upstreams[i];

			FUZZ_CHECK(t->hp.port != 0 && t->hp.host[0] != '\0');
			FUZZ_CHECK(t->verify_hostname[0] != '\0');
		}
		FUZZ_CHECK(strnlen(sc->sni, sizeof(sc->sni)) <= HOST_MAX);
		FUZZ_CHECK(sc->connect_timeout_ms > 0 &&
		    sc->handshake_timeout_ms > 0 && sc->idle_timeout_ms > 0);
		FUZZ_CHECK(sc->npins >= 0 && sc->npins <= PINS_MAX);
		FUZZ_CHECK(sc->verify != VERIFY_PIN || sc->npins > 0);
		FUZZ_CHECK(sc->nalpn >= 0 && sc->nalpn <= ALPN_MAX);
		FUZZ_CHECK(!sc->alpn_required || sc->nalpn > 0);
		for (int i = 0; i < sc->nalpn; i++) {
			size_t alen = strnlen(sc->alpn[i], sizeof(sc->alpn[i]));

			FUZZ_CHECK(alen >= 1 && alen <= 255);
		}
		FUZZ_CHECK(sc->nallow + sc->ndeny <= CIDRS_MAX);
		FUZZ_CHECK((sc->nallow == 0) == (sc->allow == NULL));
		FUZZ_CHECK((sc->ndeny == 0) == (sc->deny == NULL));
		FUZZ_CHECK(!sc->listen.is_unix ||
		    (sc->nallow == 0 && sc->ndeny == 0));
		FUZZ_CHECK(sc->listen.is_unix || sc->nallow > 0 ||
		    sockaddr_is_loopback((const struct sockaddr *)
		    &sc->listen.sa));
		FUZZ_CHECK(sc->unix_mode <= 0777);
		FUZZ_CHECK(sc->max_connections <= CONNECTIONS_MAX);
		FUZZ_CHECK((sc->cert_file == NULL) == (sc->key_file == NULL));
		FUZZ_CHECK(sc->key_password_file == NULL ||
		    sc->key_file != NULL);
		FUZZ_CHECK(sc->tls_min_version == TLS_VERSION_DEFAULT ||
		    sc->tls_max_version == TLS_VERSION_DEFAULT ||
		    sc->tls_min_version <= sc->tls_max_version);
		for (const struct service_config *o = cfg->services; o != sc;
		    o = o->next) {
			FUZZ_CHECK(strcmp(o->name, sc->name) != 0);
			FUZZ_CHECK(!listen_addr_same(&o->listen, &sc->listen));
		}
	}
	FUZZ_CHECK(n == cfg->nservices);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config_errors e1 = { NULL, 0 }, e2 = { NULL, 0 };
	struct config *c1 = NULL, *c2;
	char *text;
	int nlines = count_lines(data, size);

	if (ftruncate(memfd, 0) != 0 ||
	    pwrite(memfd, data, size, 0) != (ssize_t)size)
		abort();

	/* Start-up and reload: the whole file, then the string. */
	text = config_read(path, &e1);
	if (text != NULL) {
		FUZZ_CHECK(e1.n == 0);
		FUZZ_CHECK(memcmp(text, data, size) == 0 && text[size] == '\0');
		c1 = config_load_string(text, path, &e1);
	}
	FUZZ_CHECK((c1 == NULL) == (e1.n > 0));
	check_errors(&e1, nlines);
	if (c1 != NULL) {
		check_config(c1);
		check_sections(c1, text);
	}

	/* tlsfwd -t must say exactly what a start would. */
	c2 = config_load(path, &e2);
	FUZZ_CHECK((c2 == NULL) == (e2.n > 0));
	FUZZ_CHECK(e1.n == e2.n);
	for (size_t i = 0; i < e1.n; i++)
		FUZZ_CHECK(strcmp(e1.msgs[i], e2.msgs[i]) == 0);

	config_free(c1);
	config_free(c2);
	config_errors_free(&e1);
	config_errors_free(&e2);
	free(text);
	return 0;
}
