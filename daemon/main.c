/* main.c - arguments, start-up, signals, the event loop. */
#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "server.h"
#include "tls.h"

#ifndef TLSFWD_VERSION
#define TLSFWD_VERSION "0.0.0-dev"
#endif
#define DEFAULT_CONFIG "/etc/tlsfwd/tlsfwd.ini"

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

static void
signal_stop_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct server *srv = w->data;

	(void)loop;
	(void)revents;
	log_msg(LOG_INFO, "signal", "%s: stopping (send again to stop now)",
	    strsignal(w->signum));
	server_begin_shutdown(srv);
}

static void
signal_hup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	log_msg(LOG_WARN, "signal", "SIGHUP: reload is not supported yet; "
	    "ignored (restart to apply a new configuration)");
}

static void
log_verify_none_warnings(const struct config *cfg)
{
	for (const struct service_config *sc = cfg->services; sc != NULL;
	    sc = sc->next) {
		struct log_line l;

		if (sc->verify != VERIFY_NONE)
			continue;
		log_line_begin(&l, LOG_WARN, "config");
		log_str(&l, "service", sc->name);
		log_str(&l, "msg", "verify = none: the upstream certificate "
		    "is NOT verified; anyone on the path can read and change "
		    "this traffic");
		log_line_end(&l);
	}
}

int
main(int argc, char **argv)
{
	const char *path = DEFAULT_CONFIG;
	struct config_errors errs = { NULL, 0 };
	struct config *cfg;
	struct server *srv;
	struct ev_loop *loop;
	ev_signal sigterm, sigint, sighup;
	char err[256];
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

	cfg = config_load(path, &errs);
	if (cfg == NULL) {
		config_errors_print(&errs, stderr);
		config_errors_free(&errs);
		return 1;
	}
	if (tls_global_init(err, sizeof(err)) != 0) {
		fprintf(stderr, "tlsfwd: %s\n", err);
		config_free(cfg);
		return 1;
	}
	loop = ev_default_loop(EVFLAG_AUTO);
	if (loop == NULL) {
		fprintf(stderr, "tlsfwd: cannot create the event loop\n");
		return 1;
	}
	if (!test_only) {
		log_setup(cfg->global.log_level, cfg->global.log_format, 2);
		struct log_line l;

		log_line_begin(&l, LOG_INFO, "start");
		log_str(&l, "version", TLSFWD_VERSION);
		log_str(&l, "config", path);
		log_strf(&l, "gnutls", "%s", gnutls_check_version(NULL));
		log_line_end(&l);
	}
	srv = server_new(loop, cfg, !test_only, &errs);
	if (srv == NULL || errs.n > 0) {
		config_errors_print(&errs, stderr);
		config_errors_free(&errs);
		server_free(srv);
		config_free(cfg);
		tls_global_deinit();
		return 1;
	}
	if (test_only) {
		printf("%s: configuration OK (%zu service%s)\n", path,
		    cfg->nservices, cfg->nservices == 1 ? "" : "s");
		server_free(srv);
		config_free(cfg);
		tls_global_deinit();
		return 0;
	}
	log_verify_none_warnings(cfg);

	ev_signal_init(&sigterm, signal_stop_cb, SIGTERM);
	ev_signal_init(&sigint, signal_stop_cb, SIGINT);
	ev_signal_init(&sighup, signal_hup_cb, SIGHUP);
	sigterm.data = sigint.data = srv;
	ev_signal_start(loop, &sigterm);
	ev_signal_start(loop, &sigint);
	ev_signal_start(loop, &sighup);

	server_start(srv);
	ev_run(loop, 0);

	server_free(srv);
	log_msg(LOG_INFO, "exit", "stopped");
	config_free(cfg);
	tls_global_deinit();
	ev_loop_destroy(loop);
	return 0;
}
