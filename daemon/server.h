/*
 * server.h - one event loop's world: its configuration (a generation, see
 * generation.h), its open connections, status and shutdown.
 */
#ifndef TLSFWD_SERVER_H
#define TLSFWD_SERVER_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "conn_dump.h"
#include "io_collect.h"
#include "relay.h"
#include "service.h"
#include "service_warn.h"

struct conn;
struct inherited_fd;

/* A connection's place in its loop's list of open ones (conn.c embeds it). */
struct conn_link {
	struct conn		*conn;
	struct conn_link	*prev, *next;
};

/*
 * Everything the connection path touches hangs off this per-loop context,
 * so that one loop per thread can run later without shared mutable state.
 */
struct server {
	struct ev_loop		*loop;
	struct generation	*gen;		/* the current configuration */
	struct generation	*retired;
	struct conn_link	*conns;		/* all open connections */
	/* Counted by this loop, read by the main one: atomic. */
	uint64_t		 nconns;
	uint64_t		 handshakes_ok;
	uint64_t		 handshakes_failed;
	/* Connection ids: first, first + step, ...: unique across loops. */
	uint64_t		 next_conn_id;
	uint64_t		 id_step;
	bool			 is_worker;	/* not the main loop */
	unsigned int		 loop_index;	/* 0: main; workers 1, 2, ... */
	/* The main loop's view of all loops, for STATUS=. */
	struct server	       **group;
	size_t			 ngroup;
	struct server		*self;
	struct inherited_fd	*inherited;
	size_t			 ninherited;
	bool			 draining;
	ev_timer		 drain_timer;
	struct service_warn_daily daily;	/* client cert expiry */
	char			 status_note[96];	/* e.g. a failed reload */
	struct relay_spares	 spares;		/* relay buffers to reuse */
	unsigned int		 nsetup;	/* connecting or handshaking */
	struct io_collect	 collect;	/* reads nsetup */
	struct conn_dump_seat	 dumps;		/* GET /connections */
	/*
	 * Per-loop seats of what is to come, so it lands beside this and not
	 * in conn.c: the resolver and upstream health (upstream.c), warm
	 * upstream connections (pool.c), lock-free counters summed at scrape
	 * time (metrics.c).
	 */
};

/* A loop's world with no configuration yet (loop NULL: only checks). */
struct server *server_new(struct ev_loop *loop);

enum server_total { TOTAL_CONNS, TOTAL_OK, TOTAL_FAILED };
/* A count summed over every loop of srv's group. */
uint64_t server_total(const struct server *srv, enum server_total what);

/*
 * event=listening for each service (only_new: for listeners a reload just
 * opened), then, at start-up, event=ready.
 */
void	server_log_listening(struct server *srv, bool only_new);
/* "3 services, 12 active connections, 1532 handshakes, 4 failed" */
void	server_status(const struct server *srv, char *buf, size_t buflen);
/* Stops accepting; ends the loop once connections finish or time runs out. */
void	server_begin_shutdown(struct server *srv);
/* Closes every connection now (reason=shutdown). */
void	server_close_all(struct server *srv);
/*
 * The connection bookkeeping, all of it: conn.c counts each new connection
 * as setting up (a pooled one too) and says when its set-up is over,
 * attaches each one with a client to gen and detaches it at its close,
 * before the close line; once it is freed, server_conn_closed does what may
 * follow (a retired configuration freed, the drain over).
 */
void	server_conn_attach(struct server *srv, struct generation *gen,
	    struct conn_link *link);
void	server_conn_setup_begin(struct server *srv);
void	server_conn_setup_done(struct server *srv);
void	server_conn_detach(struct server *srv, struct generation *gen,
	    struct conn_link *link);
void	server_conn_closed(struct server *srv, struct generation *gen);
void	server_free(struct server *srv);

#endif
