/*
 * service_warn.c - a service's configuration warnings:
 * service_warn_key_perms(), service_warn_open_access(),
 * service_warn_cert_expiry(), and the daily certificate check
 * (service_warn_daily_start/stop).
 */
#include "service_warn.h"

#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "log.h"
#include "service.h"

/* Days before a client certificate's end that warnings start. */
#define CERT_EXPIRY_WARN_DAYS 14

/*
 * A client key (or the proxy's password) is an identity: one that every
 * local user can read is refused unless the config says
 * allow_insecure_key_perms; one the group can read is only warned about
 * (0640 root:tlsfwd is a normal setup).
 */
void
service_warn_key_perms(const struct service_config *sc, const char *cfg_path,
    struct config_errors *errs)
{
	const char *files[3] = { sc->key_file, sc->key_password_file,
	    sc->via_password_file };
	const int lines[3] = { sc->key_file_line, sc->key_password_file_line,
	    sc->via_password_file_line };
	const char *keys[3] = { "key_file", "key_password_file",
	    "via_password_file" };
	struct log_line l;
	struct stat st;
	bool refuse;

	for (int i = 0; i < 3; i++) {
		if (files[i] == NULL || strncmp(files[i], "pkcs11:", 7) == 0 ||
		    stat(files[i], &st) != 0 || (st.st_mode & 077) == 0)
			continue;
		refuse = (st.st_mode & 007) != 0 &&
		    !sc->allow_insecure_key_perms;
		if (errs != NULL) {	/* building: errors; warnings at start */
			if (refuse)
				config_error_add(errs, cfg_path, lines[i],
				    "[%s]: %s %s is readable by others (mode "
				    "%04o): chmod o-rwx it, or set "
				    "allow_insecure_key_perms = yes", sc->name,
				    keys[i], files[i],
				    (unsigned)(st.st_mode & 07777));
			continue;
		}
		if (refuse)
			continue;	/* refused when the config was built */
		log_line_begin(&l, LOG_WARN, "config");
		log_str(&l, "service", sc->name);
		log_strf(&l, "msg", "%s %s is readable by %s (mode %04o)%s",
		    keys[i], files[i], (st.st_mode & 007) != 0 ? "others" :
		    "group", (unsigned)(st.st_mode & 07777),
		    (st.st_mode & 007) != 0 ? ", allowed by "
		    "allow_insecure_key_perms" : ": chmod 600 it unless the "
		    "group is tlsfwd's own");
		log_line_end(&l);
	}
}

void
service_warn_open_access(const struct service *svc)
{
	struct log_line l;

	if (!svc->sc->allow_everyone)
		return;
	log_line_begin(&l, LOG_WARN, "config");
	log_str(&l, "service", svc->sc->name);
	log_strf(&l, "msg", "allow lets every client address in on %s: anyone "
	    "who reaches it uses this service%s", svc->sc->listen.text,
	    svc->sc->cert_file != NULL ? " and its client certificate" : "");
	log_line_end(&l);
}

void
service_warn_cert_expiry(const struct service *svc)
{
	char subject[512], when[32];
	struct log_line l;
	struct tm tm;
	time_t end = tls_service_cert_expiry(&svc->tls, subject,
	    sizeof(subject));
	double days;

	if (end == 0 || end == (time_t)-1)
		return;
	days = difftime(end, time(NULL)) / 86400.;
	if (days > CERT_EXPIRY_WARN_DAYS)
		return;
	gmtime_r(&end, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	log_line_begin(&l, LOG_WARN, "cert_expiry");
	log_str(&l, "service", svc->sc->name);
	log_str(&l, "subject", subject);
	log_str(&l, "not_after", when);
	log_strf(&l, "days_left", "%ld", (long)floor(days));
	log_str(&l, "msg", days < 0 ? "the client certificate has expired" :
	    "the client certificate expires soon");
	log_line_end(&l);
}

/* Fired once a day (main loop): warns of certificates near their end. */
static void
daily_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct service_warn_daily *d = w->data;
	struct generation *gen = *d->gen;

	(void)loop;
	(void)revents;
	for (size_t i = 0; gen != NULL && i < gen->nservices; i++)
		service_warn_cert_expiry(&gen->services[i]);
}

void
service_warn_daily_start(struct service_warn_daily *d, struct ev_loop *loop,
    struct generation **gen)
{
	if (ev_is_active(&d->timer))
		return;
	d->gen = gen;
	ev_timer_init(&d->timer, daily_timer_cb, 86400., 86400.);
	d->timer.data = d;
	ev_timer_start(loop, &d->timer);
}

void
service_warn_daily_stop(struct service_warn_daily *d, struct ev_loop *loop)
{
	ev_timer_stop(loop, &d->timer);
}
