/*
 * metrics.c - the counters behind /metrics and their rendering:
 * metrics_service_get(), metrics_health_publish(), metrics_free_all(),
 * metrics_render(), metrics_text_free().
 */
#include "metrics.h"

#include <dirent.h>
#include <gnutls/gnutls.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "server.h"

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct metrics_service *registry;

/* Written and read by the main thread only (reloads, scrapes). */
static uint64_t reloads_ok, reloads_failed;
static double last_load_ok;

static const double bucket_le[METRICS_BUCKETS - 1] = {
	0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
	2.5, 5, 10,
};

static void
observe(struct metrics_histogram *h, double ms)
{
	size_t b = 0;

	if (ms < 0)
		ms = 0;
	while (b < METRICS_BUCKETS - 1 && ms / 1e3 > bucket_le[b])
		b++;
	METRIC_ADD(h->buckets[b], 1);
	METRIC_ADD(h->sum_us, (uint64_t)(ms * 1e3));
	METRIC_ADD(h->count, 1);
}

void
metrics_observe_setup(struct metrics_counts *c, double connect_ms,
    double handshake_ms)
{
	observe(&c->connect, connect_ms);
	observe(&c->handshake, handshake_ms);
}

void
metrics_config_loaded(int ok, int is_reload)
{
	struct timespec ts;

	if (is_reload) {
		if (ok)
			reloads_ok++;
		else
			reloads_failed++;
	}
	if (ok && clock_gettime(CLOCK_REALTIME, &ts) == 0)
		last_load_ok = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct metrics_service *
metrics_service_get(const char *name)
{
	struct metrics_service *m;

	pthread_mutex_lock(&registry_lock);
	for (m = registry; m != NULL; m = m->next)
		if (strcmp(m->name, name) == 0)
			break;
	if (m == NULL && (m = aligned_alloc(64, sizeof(*m))) != NULL) {
		memset(m, 0, sizeof(*m));
		snprintf(m->name, sizeof(m->name), "%s", name);
		for (size_t i = 0; i < WORKERS_MAX + 1; i++)
			pthread_mutex_init(&m->health[i].lock, NULL);
		m->next = registry;
		registry = m;
	}
	pthread_mutex_unlock(&registry_lock);
	return m;
}

void
metrics_health_publish(struct metrics_health *h, struct metrics_path *paths,
    size_t n)
{
	struct metrics_path *old;

	pthread_mutex_lock(&h->lock);
	old = h->paths;
	h->paths = paths;
	h->n = n;
	pthread_mutex_unlock(&h->lock);
	free(old);
}

void
metrics_free_all(void)
{
	pthread_mutex_lock(&registry_lock);
	while (registry != NULL) {
		struct metrics_service *next = registry->next;

		for (size_t i = 0; i < WORKERS_MAX + 1; i++) {
			pthread_mutex_destroy(&registry->health[i].lock);
			free(registry->health[i].paths);
		}
		free(registry);
		registry = next;
	}
	pthread_mutex_unlock(&registry_lock);
}

static void
text_add(struct metrics_text *t, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void
text_add(struct metrics_text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (t->oom)
		return;
	if (t->p == NULL) {
		if ((t->p = malloc(16384)) == NULL) {
			t->oom = 1;
			return;
		}
		t->cap = 16384;
	}
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			t->oom = 1;
			return;
		}
		if ((size_t)n < t->cap - t->len) {
			t->len += (size_t)n;
			return;
		}
		size_t cap = t->cap * 2 + (size_t)n + 4096;
		char *p = realloc(t->p, cap);

		if (p == NULL) {
			t->oom = 1;
			return;
		}
		t->p = p;
		t->cap = cap;
	}
}

void
metrics_text_free(struct metrics_text *t)
{
	free(t->p);
	memset(t, 0, sizeof(*t));
}

static uint64_t
load(const uint64_t *v)
{
	return __atomic_load_n(v, __ATOMIC_RELAXED);
}

/* A field summed over the loops srv's group has. */
#define SUM(m, field) sum_over_loops(srv, (m), \
	offsetof(struct metrics_counts, field))

static uint64_t
sum_over_loops(const struct server *srv, const struct metrics_service *m,
    size_t offset)
{
	uint64_t sum = 0;

	for (size_t i = 0; i < srv->ngroup; i++) {
		const struct metrics_counts *c =
		    &m->loops[srv->group[i]->loop_index];

		sum += load((const uint64_t *)(const void *)
		    ((const char *)c + offset));
	}
	return sum;
}

static void
family(struct metrics_text *t, const char *name, const char *type,
    const char *help)
{
	text_add(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The services of the current configuration, with their counters. */
static size_t
current(const struct server *srv, const struct metrics_service **out,
    size_t max)
{
	size_t n = 0;

	for (size_t i = 0; srv->gen != NULL && i < srv->gen->nservices &&
	    n < max; i++)
		if (srv->gen->services[i].metrics != NULL)
			out[n++] = srv->gen->services[i].metrics;
	return n;
}

/* A family of one sample per service: field (at offset) summed. */
static void
render_plain(const struct server *srv, struct metrics_text *t,
    const struct metrics_service *const *ms, size_t n, const char *name,
    const char *type, const char *help, size_t offset)
{
	family(t, name, type, help);
	for (size_t i = 0; i < n; i++)
		text_add(t, "%s{service=\"%s\"} %llu\n", name, ms[i]->name,
		    (unsigned long long)sum_over_loops(srv, ms[i], offset));
}

/* One sample per service and value of label: element k of the array. */
static void
render_labelled(const struct server *srv, struct metrics_text *t,
    const struct metrics_service *const *ms, size_t n, const char *name,
    const char *type, const char *help, const char *label,
    const char *const *values, size_t nvalues, size_t offset)
{
	family(t, name, type, help);
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < nvalues; k++)
			text_add(t, "%s{service=\"%s\",%s=\"%s\"} %llu\n",
			    name, ms[i]->name, label, values[k],
			    (unsigned long long)sum_over_loops(srv, ms[i],
			    offset + k * sizeof(uint64_t)));
}

#define OFF(field)	offsetof(struct metrics_counts, field)

/* The warm pools (pool = N): what they hold, serve, lose. */
static void
render_pool(const struct server *srv, struct metrics_text *t,
    const struct metrics_service *const *ms, size_t n)
{
	const char *drops[POOL_DROPS];	/* those of ready ones */

	for (int d = 0; d < POOL_DROPS; d++)
		drops[d] = pool_drop_name((enum pool_drop)d);
	render_plain(srv, t, ms, n, "tlsfwd_pool_ready", "gauge",
	    "Pooled upstream connections ready for a client now.",
	    OFF(pool_ready));
	render_plain(srv, t, ms, n, "tlsfwd_pool_taken_total", "counter",
	    "Clients that took a ready pooled connection.", OFF(pool_taken));
	render_plain(srv, t, ms, n, "tlsfwd_pool_missed_total", "counter",
	    "Clients of a service with a pool that found none ready.",
	    OFF(pool_missed));
	render_plain(srv, t, ms, n, "tlsfwd_pool_failures_total", "counter",
	    "Pooled connections whose set-up failed (event=pool).",
	    OFF(pool_failures));
	render_labelled(srv, t, ms, n, "tlsfwd_pool_drops_total", "counter",
	    "Ready pooled connections closed unused, by reason.", "reason",
	    drops, POOL_DROPS, OFF(pool_drops));
}

static void
render_services(const struct server *srv, struct metrics_text *t)
{
	static const char *const refusals[METRICS_REFUSALS] = {
		"denied", "max_connections", "global_max_connections",
	};
	static const char *const directions[2] = { "up", "down" };
	const char *results[CONN_RESULTS], *stages[CONN_STAGES];
	const char *reasons[CONN_CLOSE_REASONS];
	const struct metrics_service *ms[256] = { NULL };
	size_t n = current(srv, ms, sizeof(ms) / sizeof(ms[0]));

	for (int r = 0; r < CONN_RESULTS; r++)
		results[r] = conn_result_name((enum conn_result)r);
	for (int s = 0; s < CONN_STAGES; s++)
		stages[s] = conn_stage_name((enum conn_stage)s);
	for (int r = 0; r < CONN_CLOSE_REASONS; r++)
		reasons[r] = conn_close_reason_name((enum conn_close_reason)r);
	render_plain(srv, t, ms, n, "tlsfwd_connections_total", "counter",
	    "Client connections accepted.", OFF(opened));
	family(t, "tlsfwd_connections_active", "gauge",
	    "Client connections open now.");
	for (size_t i = 0; i < n; i++)
		text_add(t, "tlsfwd_connections_active{service=\"%s\"} %llu\n",
		    ms[i]->name, (unsigned long long)(SUM(ms[i], opened) -
		    SUM(ms[i], closed)));
	render_labelled(srv, t, ms, n, "tlsfwd_handshakes_total", "counter",
	    "Upstream handshakes by outcome: ok, alert (named in the log) or "
	    "fail.", "result", results, CONN_RESULTS, OFF(handshakes));
	render_labelled(srv, t, ms, n, "tlsfwd_handshake_failures_total",
	    "counter", "Failed connection set-ups by the stage that failed.",
	    "stage", stages, CONN_STAGES, OFF(failures));
	render_plain(srv, t, ms, n, "tlsfwd_sessions_resumed_total", "counter",
	    "Handshakes that resumed a cached session.", OFF(resumed));
	render_labelled(srv, t, ms, n, "tlsfwd_bytes_total", "counter",
	    "Bytes relayed: up (client to upstream) and down.", "direction",
	    directions, 2, OFF(bytes));
	render_labelled(srv, t, ms, n, "tlsfwd_refused_total", "counter",
	    "Clients closed at accept, by reason.", "reason", refusals,
	    METRICS_REFUSALS, OFF(refused));
	render_labelled(srv, t, ms, n, "tlsfwd_closes_total", "counter",
	    "Closed connections by the close line's reason.", "reason",
	    reasons, CONN_CLOSE_REASONS, OFF(closes));
	render_pool(srv, t, ms, n);
}

static void
render_histogram(const struct server *srv, struct metrics_text *t,
    const char *name, const struct metrics_service *const *ms, size_t n,
    size_t offset)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t cum = 0, sum_us, count;

		for (size_t b = 0; b < METRICS_BUCKETS; b++) {
			cum += sum_over_loops(srv, ms[i], offset +
			    offsetof(struct metrics_histogram, buckets) +
			    b * sizeof(uint64_t));
			if (b < METRICS_BUCKETS - 1)
				text_add(t, "%s_bucket{service=\"%s\","
				    "le=\"%g\"} %llu\n", name, ms[i]->name,
				    bucket_le[b], (unsigned long long)cum);
			else
				text_add(t, "%s_bucket{service=\"%s\","
				    "le=\"+Inf\"} %llu\n", name, ms[i]->name,
				    (unsigned long long)cum);
		}
		sum_us = sum_over_loops(srv, ms[i], offset +
		    offsetof(struct metrics_histogram, sum_us));
		count = sum_over_loops(srv, ms[i], offset +
		    offsetof(struct metrics_histogram, count));
		text_add(t, "%s_sum{service=\"%s\"} %.6f\n", name, ms[i]->name,
		    (double)sum_us / 1e6);
		text_add(t, "%s_count{service=\"%s\"} %llu\n", name,
		    ms[i]->name, (unsigned long long)count);
	}
}

/* The earliest notAfter among the certificates each loop last verified. */
static int64_t
upstream_not_after(const struct server *srv, const struct metrics_service *m)
{
	int64_t best = 0;

	for (size_t i = 0; i < srv->ngroup; i++) {
		int64_t v = __atomic_load_n(&m->loops[srv->group[i]->loop_index]
		    .upstream_not_after, __ATOMIC_RELAXED);

		if (v != 0 && (best == 0 || v < best))
			best = v;
	}
	return best;
}

static void
render_timing_and_certs(const struct server *srv, struct metrics_text *t)
{
	const struct metrics_service *ms[256] = { NULL };
	size_t n = current(srv, ms, sizeof(ms) / sizeof(ms[0]));
	char subject[512];

	family(t, "tlsfwd_connect_duration_seconds", "histogram",
	    "Time from accept to the upstream TCP connection, of set-ups "
	    "that succeeded.");
	render_histogram(srv, t, "tlsfwd_connect_duration_seconds", ms, n,
	    offsetof(struct metrics_counts, connect));
	family(t, "tlsfwd_handshake_duration_seconds", "histogram",
	    "Time from the TCP connection to a verified TLS session, of "
	    "set-ups that succeeded.");
	render_histogram(srv, t, "tlsfwd_handshake_duration_seconds", ms, n,
	    offsetof(struct metrics_counts, handshake));
	family(t, "tlsfwd_upstream_cert_not_after_timestamp_seconds", "gauge",
	    "notAfter of the upstream certificate last verified (the "
	    "earliest over the event loops).");
	for (size_t i = 0; i < n; i++) {
		int64_t v = upstream_not_after(srv, ms[i]);

		if (v != 0)
			text_add(t, "tlsfwd_upstream_cert_not_after_timestamp_"
			    "seconds{service=\"%s\"} %lld\n", ms[i]->name,
			    (long long)v);
	}
	family(t, "tlsfwd_client_cert_not_after_timestamp_seconds", "gauge",
	    "notAfter of the client certificate (cert_file) tlsfwd sends.");
	for (size_t i = 0; srv->gen != NULL && i < srv->gen->nservices; i++) {
		const struct service *svc = &srv->gen->services[i];
		time_t end;

		if (!svc->tls_ready || svc->sc->cert_file == NULL)
			continue;
		end = tls_service_cert_expiry(&svc->tls, subject,
		    sizeof(subject));
		if (end != 0 && end != (time_t)-1)
			text_add(t, "tlsfwd_client_cert_not_after_timestamp_"
			    "seconds{service=\"%s\"} %lld\n", svc->sc->name,
			    (long long)end);
	}
}

/*
 * Appends what loop slot h publishes to *all (grown as needed): a path
 * already there stays healthy only if this loop finds it healthy too.
 */
static int
health_merge(struct metrics_health *h, struct metrics_path **all, size_t *n)
{
	struct metrics_path *grown;
	int rc = 0;

	pthread_mutex_lock(&h->lock);
	for (size_t i = 0; i < h->n && rc == 0; i++) {
		const struct metrics_path *p = &h->paths[i];
		size_t k = 0;

		while (k < *n && (strcmp((*all)[k].upstream, p->upstream) != 0
		    || strcmp((*all)[k].address, p->address) != 0))
			k++;
		if (k < *n) {
			(*all)[k].healthy = (*all)[k].healthy && p->healthy;
			continue;
		}
		if ((grown = realloc(*all, (*n + 1) * sizeof(**all))) == NULL) {
			rc = -1;
			break;
		}
		*all = grown;
		(*all)[(*n)++] = *p;
	}
	pthread_mutex_unlock(&h->lock);
	return rc;
}

/*
 * tlsfwd_upstream_healthy: each path any loop knows (its upstream entry's
 * current addresses), 0 if a loop has it marked down.
 */
static void
render_health(const struct server *srv, struct metrics_text *t)
{
	family(t, "tlsfwd_upstream_healthy", "gauge",
	    "1 if the path (an upstream's address) is healthy, 0 while an "
	    "event loop has it marked down after a failed connection.");
	for (size_t i = 0; srv->gen != NULL && i < srv->gen->nservices; i++) {
		struct metrics_service *m = srv->gen->services[i].metrics;
		struct metrics_path *all = NULL;
		size_t nall = 0;

		if (m == NULL)
			continue;

		for (size_t g = 0; g < srv->ngroup; g++)
			if (health_merge(&m->health[srv->group[g]->loop_index],
			    &all, &nall) != 0)
				t->oom = 1;
		for (size_t k = 0; k < nall; k++)
			text_add(t, "tlsfwd_upstream_healthy{service=\"%s\","
			    "upstream=\"%s\",address=\"%s\"} %d\n", m->name,
			    all[k].upstream, all[k].address,
			    all[k].healthy ? 1 : 0);
		free(all);
	}
}

/* /proc/self/stat fields 14, 15 (CPU ticks), 22 (start), 24 (RSS pages). */
static void
render_process(struct metrics_text *t)
{
	unsigned long long utime = 0, stime = 0, start = 0, rss = 0;
	long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
	double boot = 0;
	char buf[1024], *p;
	struct rlimit rl;
	struct dirent *e;
	size_t nfds = 0;
	FILE *f;
	DIR *d;

	if ((f = fopen("/proc/self/stat", "re")) != NULL) {
		size_t n = fread(buf, 1, sizeof(buf) - 1, f);

		buf[n] = '\0';
		fclose(f);
		/* After "(comm)", which may hold spaces: field 3 on. */
		if ((p = strrchr(buf, ')')) != NULL)
			(void)sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u "
			    "%*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d "
			    "%llu %*u %llu", &utime, &stime, &start, &rss);
	}
	if ((f = fopen("/proc/stat", "re")) != NULL) {
		while (fgets(buf, sizeof(buf), f) != NULL)
			if (sscanf(buf, "btime %lf", &boot) == 1)
				break;
		fclose(f);
	}
	if ((d = opendir("/proc/self/fd")) != NULL) {
		while ((e = readdir(d)) != NULL)
			if (e->d_name[0] != '.')
				nfds++;
		closedir(d);
		nfds--;		/* the one opendir holds */
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		rl.rlim_cur = 0;
	family(t, "process_cpu_seconds_total", "counter",
	    "User and system CPU time spent, in seconds.");
	text_add(t, "process_cpu_seconds_total %.2f\n",
	    (double)(utime + stime) / (double)tick);
	family(t, "process_resident_memory_bytes", "gauge",
	    "Resident memory size in bytes.");
	text_add(t, "process_resident_memory_bytes %llu\n", rss *
	    (unsigned long long)page);
	family(t, "process_open_fds", "gauge", "Open file descriptors.");
	text_add(t, "process_open_fds %zu\n", nfds);
	family(t, "process_max_fds", "gauge",
	    "Maximum number of open file descriptors.");
	text_add(t, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
	family(t, "process_start_time_seconds", "gauge",
	    "Start time of the process since the epoch, in seconds.");
	text_add(t, "process_start_time_seconds %.2f\n", boot +
	    (double)start / (double)tick);
}

void
metrics_render(const struct server *srv, struct metrics_text *out)
{
	render_services(srv, out);
	render_timing_and_certs(srv, out);
	render_health(srv, out);
	family(out, "tlsfwd_config_reloads_total", "counter",
	    "Configuration reloads (SIGHUP) by result.");
	text_add(out, "tlsfwd_config_reloads_total{result=\"ok\"} %llu\n"
	    "tlsfwd_config_reloads_total{result=\"fail\"} %llu\n",
	    (unsigned long long)reloads_ok, (unsigned long long)reloads_failed);
	family(out, "tlsfwd_config_last_reload_success_timestamp_seconds",
	    "gauge", "When the running configuration was loaded (start or "
	    "reload).");
	text_add(out, "tlsfwd_config_last_reload_success_timestamp_seconds "
	    "%.3f\n", last_load_ok);
	family(out, "tlsfwd_build_info", "gauge",
	    "tlsfwd's version and the GnuTLS it runs with (always 1).");
	text_add(out, "tlsfwd_build_info{version=\"%s\",gnutls=\"%s\"} 1\n",
	    TLSFWD_VERSION, gnutls_check_version(NULL));
	family(out, "tlsfwd_workers", "gauge", "Event loops serving clients.");
	text_add(out, "tlsfwd_workers %zu\n", srv->ngroup);
	render_process(out);
}
