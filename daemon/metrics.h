/*
 * metrics.h - counters for the Prometheus endpoint: per service name, one
 * slot per event loop, each written by its loop alone (no locks on the
 * connection path) and summed when a scrape renders them. Kept by name
 * across reloads, so a service that survives one keeps its counts.
 */
#ifndef TLSFWD_METRICS_H
#define TLSFWD_METRICS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "conn.h"
#include "pool.h"

enum metrics_refusal {
	REFUSED_DENIED, REFUSED_MAX_CONNECTIONS, REFUSED_GLOBAL_MAX,
};
#define METRICS_REFUSALS	(REFUSED_GLOBAL_MAX + 1)

/* Histogram buckets, seconds: 0.5 ms to 10 s, then +Inf. */
#define METRICS_BUCKETS	15

struct metrics_histogram {
	uint64_t	buckets[METRICS_BUCKETS];	/* not cumulative */
	uint64_t	sum_us;
	uint64_t	count;
};

/* One loop's counts for one service; cache lines of its own. */
struct metrics_counts {
	uint64_t	opened, closed;
	uint64_t	handshakes[CONN_RESULTS];
	uint64_t	failures[CONN_STAGES];
	uint64_t	resumed;
	uint64_t	closes[CONN_CLOSE_REASONS];
	uint64_t	bytes[2];	/* up (client to upstream), down */
	uint64_t	refused[METRICS_REFUSALS];
	struct metrics_histogram connect, handshake;	/* successful ones */
	int64_t		upstream_not_after;	/* last verified; 0: none yet */
	uint64_t	pool_ready;		/* now (adds and subtracts) */
	uint64_t	pool_taken, pool_missed;	/* clients, pool on */
	uint64_t	pool_failures;		/* pooled set-ups failed */
	uint64_t	pool_drops[POOL_DROPS];	/* ready ones dropped */
} __attribute__((aligned(64)));

/* One path (an upstream entry's address) as one loop's connections found it. */
struct metrics_path {
	char	upstream[HOST_MAX + 8];		/* host:port as configured */
	char	address[SOCKADDR_TEXT_MAX];
	bool	healthy;
};

/*
 * One loop's view of one service's paths for tlsfwd_upstream_healthy: the
 * loop republishes it whole when an address set or a path's health
 * changes (rare: never per connection), a scrape reads it; both under lock.
 */
struct metrics_health {
	pthread_mutex_t		 lock;
	struct metrics_path	*paths;
	size_t			 n;
};

struct metrics_service {
	struct metrics_service	*next;
	char			 name[SERVICE_NAME_MAX + 1];
	struct metrics_counts	 loops[WORKERS_MAX + 1];
	struct metrics_health	 health[WORKERS_MAX + 1];
};

/*
 * Adds n to a loop's own counter: one writer (the loop), readers in the
 * main thread; a plain add, with no lock prefix.
 */
#define METRIC_ADD(field, n) __atomic_store_n(&(field), \
	__atomic_load_n(&(field), __ATOMIC_RELAXED) + (n), __ATOMIC_RELAXED)

/* A successful set-up's times into c's histograms. */
void	metrics_observe_setup(struct metrics_counts *c, double connect_ms,
	    double handshake_ms);
/* Main thread: a reload's outcome (start counts as a success, not a reload). */
void	metrics_config_loaded(int ok, int is_reload);

/* A loop's new view of its paths (paths: malloc'd, now h's; NULL if n 0). */
void	metrics_health_publish(struct metrics_health *h,
	    struct metrics_path *paths, size_t n);

/* The counters of service name (shared by all loops); NULL: no memory. */
struct metrics_service *metrics_service_get(const char *name);
void	metrics_free_all(void);

/* A growing text buffer for a rendering. */
struct metrics_text {
	char	*p;
	size_t	 len, cap;
	int	 oom;
};

struct server;
/*
 * The Prometheus text format (0.0.4) of everything: the services of srv's
 * current configuration summed over srv's group of loops, and the process.
 */
void	metrics_render(const struct server *srv, struct metrics_text *out);
void	metrics_text_free(struct metrics_text *t);

#endif
