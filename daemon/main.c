/* main.c - arguments, start-up, signals, reload, the event loop. */
#include <ev.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admission.h"
#include "config.h"
#include "generation.h"
#include "log.h"
#include "metrics.h"
#include "metrics_http.h"
#include "notify.h"
#include "privdrop.h"
#include "server.h"
#include "tls.h"
#include "tls_policy.h"
#include "worker.h"

#ifndef TLSFWD_VERSION
#define TLSFWD_VERSION "0.0.0-dev"
#endif
#define DEFAULT_CONFIG "/etc/tlsfwd/tlsfwd.ini"

/* What the signal handlers work on; lives in main()'s frame. */
struct daemon {
	const char	*config_path;
	struct server	*srv;		/* the main loop's */
	struct worker	**workers;	/* loops 1..nworkers-1, or NULL */
	unsigned int	 nworkers;	/* loops in all, main one included */
	struct server	**group;	/* every loop's server, for STATUS= */
	struct notifier	 notifier;
	struct metrics_http *metrics;	/* metrics_listen, or NULL */
};

/* Whether a and b ask for the same /metrics endpoint. */
static bool
metrics_config_same(const struct global_config *a,
    const struct global_config *b)
{
	if (a->metrics_on != b->metrics_on)
		return false;
	return !a->metrics_on || (strcmp(a->metrics_listen.text,
	    b->metrics_listen.text) == 0 && a->nmetrics_allow ==
	    b->nmetrics_allow && (a->nmetrics_allow == 0 ||
	    memcmp(a->metrics_allow, b->metrics_allow, a->nmetrics_allow *
	    sizeof(*a->metrics_allow)) == 0));
}

/* The file read once, parsed: every loop runs the very same text. */
static struct config *
load_config(const char *path, char **text, struct config_errors *errs)
{
	struct config *cfg;

	*text = config_read(path, errs);
	if (*text == NULL)
		return NULL;
	cfg = config_load_string(*text, path, errs);
	if (cfg == NULL) {
		free(*text);
		*text = NULL;
	}
	return cfg;
}

static void
usage(FILE *out)
{
	fprintf(out,
	    "usage: tlsfwd [-t] [-c FILE]\n"
	    "       tlsfwd -V | -h\n"
	    "\n"
	    "  -c FILE  configuration file (default " DEFAULT_CONFIG ")\n"
	    "  -t       validate the configuration and exit: 0 if good, else\n"
	    "           every error as FILE:LINE: message, exit 1\n"
	    "  -V       print the version and exit\n"
	    "  -h       print this help and exit\n");
}

/*
 * What each service gives up of tlsfwd's defaults, explicitly: said at every
 * start and reload (a warn line) and by -t (on stderr; the exit status is
 * still that of the errors), so that it is never silent.
 */
typedef void weakening_fn(const struct service_config *sc, int line,
    const char *msg, void *arg);

static void
config_weakenings(const struct config *cfg, weakening_fn *emit, void *arg)
{
	char msg[768];

	for (const struct service_config *sc = cfg->services; sc != NULL;
	    sc = sc->next) {
		if (sc->verify == VERIFY_NONE)
			emit(sc, sc->line, "verify = none: the upstream "
			    "certificate is NOT verified; anyone on the path can "
			    "read and change this traffic", arg);
		if (sc->allow_cn_only && sc->verify == VERIFY_FULL)
			emit(sc, sc->line, "allow_cn_only = yes: a certificate "
			    "that names the host only in its subject CN is "
			    "accepted (RFC 6125 and browsers refuse it)", arg);
		if (tls_policy_weakenings(sc, msg, sizeof(msg)) > 0)
			emit(sc, sc->tls_priority_line, msg, arg);
	}
}

static void
log_weakening(const struct service_config *sc, int line, const char *msg,
    void *arg)
{
	struct log_line l;

	(void)line;
	(void)arg;
	log_line_begin(&l, LOG_WARN, "config");
	log_str(&l, "service", sc->name);
	log_str(&l, "msg", msg);
	log_line_end(&l);
}

static void
print_weakening(const struct service_config *sc, int line, const char *msg,
    void *arg)
{
	fprintf(stderr, "%s:%d: warning: [%s]: %s\n", (const char *)arg, line,
	    sc->name, msg);
}

static void
log_config_warnings(const struct config *cfg)
{
	config_weakenings(cfg, log_weakening, NULL);
}

static void
apply_log_settings(const struct config *cfg)
{
	log_setup(cfg->global.log_level, cfg->global.log_format, 2);
}

static void
signal_stop_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct daemon *d = w->data;

	(void)loop;
	(void)revents;
	log_msg(LOG_INFO, "signal", "%s: stopping (send again to stop now)",
	    strsignal(w->signum));
	notify_stopping(&d->notifier);
	for (unsigned int i = 1; i < d->nworkers; i++)
		worker_stop(d->workers[i]);
	server_begin_shutdown(d->srv);
}

/*
 * SIGHUP: the new configuration is loaded and checked completely (trust,
 * listeners) before anything changes; on any error the running one stays.
 */
static void
signal_reload_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct daemon *d = w->data;
	struct server *srv = d->srv;
	const struct global_config *cur = &srv->gen->cfg->global;
	struct config_errors errs = { NULL, 0 };
	struct config *cfg;
	struct log_line l;
	char *text = NULL;

	(void)loop;
	(void)revents;
	if (srv->draining) {
		log_msg(LOG_WARN, "reload", "SIGHUP while stopping: ignored");
		return;
	}
	notify_reloading(&d->notifier);
	log_msg(LOG_INFO, "signal", "SIGHUP: reloading %s", d->config_path);
	cfg = load_config(d->config_path, &text, &errs);
	if (cfg != NULL && cfg->global.workers != cur->workers)
		config_error_add(&errs, d->config_path, 0,
		    "[global] workers: a change needs a restart");
	if (cfg != NULL && strcmp(cfg->global.user, cur->user) != 0)
		config_error_add(&errs, d->config_path, cfg->global.user_line,
		    "[global] user: a change needs a restart");
	else if (cfg != NULL && strcmp(cfg->global.group, cur->group) != 0)
		config_error_add(&errs, d->config_path,
		    cfg->global.group_line ? cfg->global.group_line :
		    cfg->global.user_line,
		    "[global] group: a change needs a restart");
	if (cfg != NULL && !metrics_config_same(&cfg->global, cur))
		config_error_add(&errs, d->config_path,
		    cfg->global.metrics_listen_line,
		    "[global] metrics_listen, metrics_allow: a change needs a "
		    "restart");
	if (cfg != NULL && (errs.n > 0 ||
	    generation_apply(srv, cfg, true, &errs) != 0)) {
		config_free(cfg);
		cfg = NULL;
	}
	if (cfg == NULL) {
		for (size_t i = 0; i < errs.n; i++) {
			log_line_begin(&l, LOG_ERROR, "config");
			log_str(&l, "error", errs.msgs[i]);
			log_line_end(&l);
		}
		metrics_config_loaded(0, 1);
		log_line_begin(&l, LOG_ERROR, "reload");
		log_str(&l, "result", "fail");
		log_uint(&l, "errors", errs.n);
		log_str(&l, "msg", "kept the running configuration");
		log_line_end(&l);
		snprintf(srv->status_note, sizeof(srv->status_note),
		    "reload failed (%zu error%s), running the previous "
		    "configuration; ", errs.n, errs.n == 1 ? "" : "s");
	} else {
		/* The main loop has switched; the others follow it. */
		for (unsigned int i = 1; i < d->nworkers; i++)
			(void)worker_reload(d->workers[i], text,
			    d->config_path, srv, &errs);
		for (size_t i = 0; i < errs.n; i++) {
			log_line_begin(&l, LOG_ERROR, "config");
			log_str(&l, "error", errs.msgs[i]);
			log_line_end(&l);
		}
		apply_log_settings(cfg);
		srv->status_note[0] = '\0';
		log_config_warnings(cfg);
		server_log_listening(srv, true);
		metrics_config_loaded(1, 1);
		log_line_begin(&l, LOG_INFO, "reload");
		log_str(&l, "result", "ok");
		log_uint(&l, "services", cfg->nservices);
		log_line_end(&l);
	}
	config_errors_free(&errs);
	free(text);
	notify_ready(&d->notifier);
}

/* -t: everything start-up would check, without binding or resolving. */
static int
check_config(const char *path)
{
	struct config_errors errs = { NULL, 0 };
	struct config *cfg;
	struct server *srv;
	char err[256];
	int rc = 1;

	cfg = config_load(path, &errs);
	if (cfg == NULL)
		goto out;
	if (tls_global_init(err, sizeof(err)) != 0) {
		config_error_add(&errs, path, 0, "%s", err);
		goto out;
	}
	srv = server_new(NULL);
	if (srv != NULL && generation_apply(srv, cfg, false, &errs) == 0) {
		printf("%s: configuration OK (%zu service%s)\n", path,
		    cfg->nservices, cfg->nservices == 1 ? "" : "s");
		rc = 0;
		config_weakenings(cfg, print_weakening,
		    (void *)(uintptr_t)path);
	}
	server_free(srv);
	admission_free_all();
	tls_global_deinit();
out:
	config_errors_print(&errs, stderr);
	config_errors_free(&errs);
	config_free(cfg);
	return rc;
}

static void
log_privileges(const struct global_config *g)
{
	struct log_line l;

	if (g->user[0] == '\0') {
		if (geteuid() == 0) {
			log_line_begin(&l, LOG_WARN, "privileges");
			log_str(&l, "msg", "running as root: set [global] user "
			    "(or User= in the systemd unit) to drop privileges");
			log_line_end(&l);
		}
		return;
	}
	log_line_begin(&l, LOG_INFO, "privileges");
	log_str(&l, "user", g->user);
	log_uint(&l, "uid", g->uid);
	log_str(&l, "group", g->group[0] ? g->group : "-");
	log_uint(&l, "gid", g->gid);
	log_line_end(&l);
}

/*
 * [global] workers = N: N-1 more loops, each in a thread of its own, on the
 * same listening sockets. Their threads start after the privilege drop.
 */
static int
start_workers(struct daemon *d, const char *text, struct config_errors *errs)
{
	unsigned int n = d->srv->gen->cfg->global.workers;
	struct log_line l;

	d->nworkers = 1;
	if (n <= 1)
		return 0;
	d->workers = calloc(n, sizeof(*d->workers));
	d->group = calloc(n, sizeof(*d->group));
	if (d->workers == NULL || d->group == NULL) {
		config_error_add(errs, d->config_path, 0, "out of memory");
		return -1;
	}
	d->srv->id_step = n;
	d->group[0] = d->srv;
	for (unsigned int i = 1; i < n; i++) {
		d->workers[i] = worker_new(i, n, text, d->config_path, d->srv,
		    errs);
		if (d->workers[i] == NULL)
			return -1;
		d->nworkers = i + 1;
		d->group[i] = d->workers[i]->srv;
	}
	d->srv->group = d->group;
	d->srv->ngroup = n;
	log_line_begin(&l, LOG_INFO, "workers");
	log_uint(&l, "loops", n);
	log_line_end(&l);
	return 0;
}

/*
 * Waits for the workers, then frees them, in index order: a /connections
 * answer passes from loop k to loop k + 1 only (conn_dump.c), so the loop
 * it reaches is never freed before the one that passes it has ended.
 * abort: on a failed start-up, tell them to stop first (after SIGTERM they
 * are already draining, and a second stop would cut that short).
 */
static void
free_workers(struct daemon *d, bool abort)
{
	for (unsigned int i = 1; i < d->nworkers; i++) {
		if (abort)
			worker_stop(d->workers[i]);
		worker_free(d->workers[i]);
	}
	if (d->srv != NULL) {
		d->srv->group = &d->srv->self;
		d->srv->ngroup = 1;
	}
	free(d->workers);
	free(d->group);
	d->workers = NULL;
	d->group = NULL;
	d->nworkers = 0;
}

/*
 * Each connection holds two descriptors: take the whole hard limit (systemd's
 * LimitNOFILE= sets it) so that the soft default of 1024 is not the ceiling.
 */
static void
raise_nofile_limit(void)
{
	struct rlimit rl;
	struct log_line l;
	rlim_t was;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	was = rl.rlim_cur;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
			log_msg(LOG_WARN, "limits", "cannot raise RLIMIT_NOFILE "
			    "to %llu: %s", (unsigned long long)rl.rlim_max,
			    strerror(errno));
			rl.rlim_cur = was;
		}
	}
	log_line_begin(&l, LOG_INFO, "limits");
	log_uint(&l, "nofile", rl.rlim_cur);
	log_uint(&l, "nofile_was", was);
	log_line_end(&l);
}

static int
run(const char *path)
{
	struct config_errors errs = { NULL, 0 };
	struct daemon d = { .config_path = path };
	struct config *cfg;
	struct ev_loop *loop;
	struct log_line l;
	ev_signal sigterm, sigint, sighup;
	char err[256], *text = NULL;

	log_use_journal(log_fd_is_journal(2));
	cfg = load_config(path, &text, &errs);
	if (cfg == NULL) {
		config_errors_print(&errs, stderr);
		config_errors_free(&errs);
		return 1;
	}
	apply_log_settings(cfg);
	log_line_begin(&l, LOG_INFO, "start");
	log_str(&l, "version", TLSFWD_VERSION);
	log_str(&l, "config", path);
	log_str(&l, "gnutls", gnutls_check_version(NULL));
	log_line_end(&l);
	raise_nofile_limit();
	if (tls_global_init(err, sizeof(err)) != 0) {
		fprintf(stderr, "tlsfwd: %s\n", err);
		config_free(cfg);
		free(text);
		return 1;
	}
	loop = ev_default_loop(EVFLAG_AUTO);
	d.srv = loop != NULL ? server_new(loop) : NULL;
	if (d.srv == NULL) {
		fprintf(stderr, "tlsfwd: cannot create the event loop\n");
		config_free(cfg);
		free(text);
		tls_global_deinit();
		return 1;
	}
	if (generation_inherit_fds(d.srv, &errs) != 0 ||
	    generation_apply(d.srv, cfg, true, &errs) != 0) {
		config_errors_print(&errs, stderr);
		config_errors_free(&errs);
		config_free(cfg);
		goto fail;
	}
	if (start_workers(&d, text, &errs) != 0) {
		config_errors_print(&errs, stderr);
		config_errors_free(&errs);
		goto fail;
	}
	metrics_config_loaded(1, 0);
	if (cfg->global.metrics_on && (d.metrics = metrics_http_start(d.srv,
	    &cfg->global, err, sizeof(err))) == NULL) {
		fprintf(stderr, "tlsfwd: %s:%d: metrics_listen: %s\n",
		    d.config_path, cfg->global.metrics_listen_line, err);
		goto fail;
	}
	/* Listeners are bound and trust is loaded: root is no longer needed. */
	if (privdrop(&cfg->global, err, sizeof(err)) != 0) {
		fprintf(stderr, "tlsfwd: %s\n", err);
		goto fail;
	}
	for (unsigned int i = 1; i < d.nworkers; i++) {
		if (worker_start(d.workers[i], err, sizeof(err)) != 0) {
			fprintf(stderr, "tlsfwd: %s\n", err);
			goto fail;
		}
	}
	free(text);
	text = NULL;
	log_privileges(&cfg->global);
	log_config_warnings(cfg);

	ev_signal_init(&sigterm, signal_stop_cb, SIGTERM);
	ev_signal_init(&sigint, signal_stop_cb, SIGINT);
	ev_signal_init(&sighup, signal_reload_cb, SIGHUP);
	sigterm.data = sigint.data = sighup.data = &d;
	ev_signal_start(loop, &sigterm);
	ev_signal_start(loop, &sigint);
	ev_signal_start(loop, &sighup);

	if (d.metrics != NULL) {
		log_line_begin(&l, LOG_INFO, "metrics");
		log_str(&l, "listen", metrics_http_bound(d.metrics));
		log_line_end(&l);
	}
	server_log_listening(d.srv, false);
	notify_init(&d.notifier, d.srv);
	notify_ready(&d.notifier);
	ev_run(loop, 0);

	notify_stop(&d.notifier);
	free_workers(&d, false);	/* waits for them to finish draining */
	metrics_http_free(d.metrics);
	server_free(d.srv);
	admission_free_all();
	metrics_free_all();
	log_msg(LOG_INFO, "exit", "stopped");
	tls_global_deinit();
	ev_loop_destroy(loop);
	return 0;
fail:
	free_workers(&d, true);
	metrics_http_free(d.metrics);
	server_free(d.srv);
	admission_free_all();
	metrics_free_all();
	free(text);
	tls_global_deinit();
	return 1;
}

int
main(int argc, char **argv)
{
	const char *path = DEFAULT_CONFIG;
	bool test_only = false;
	int opt;

	while ((opt = getopt(argc, argv, ":c:tVh")) != -1) {
		switch (opt) {
		case 'c':
			path = optarg;
			break;
		case 't':
			test_only = true;
			break;
		case 'V':
			printf("tlsfwd %s (GnuTLS %s, libev %d.%d)\n",
			    TLSFWD_VERSION, gnutls_check_version(NULL),
			    ev_version_major(), ev_version_minor());
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		case ':':
			fprintf(stderr, "tlsfwd: -%c needs an argument\n",
			    optopt);
			usage(stderr);
			return 2;
		default:
			fprintf(stderr, "tlsfwd: unknown option -%c\n", optopt);
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "tlsfwd: unexpected argument '%s'\n",
		    argv[optind]);
		usage(stderr);
		return 2;
	}
	/* A peer closing mid-write must be an error code, not a dead process. */
	signal(SIGPIPE, SIG_IGN);
	return test_only ? check_config(path) : run(path);
}
