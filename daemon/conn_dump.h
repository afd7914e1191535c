/*
 * conn_dump.h - GET /connections: every open connection as JSON, haproxy's
 * "show sess" for tlsfwd. Each event loop lists its own connections (no
 * loop reads another's): the scraper's socket goes from loop to loop, and
 * each writes its part straight to it as the socket drains, from a cursor
 * into its list, so the cost is one 64 KiB buffer per scrape whatever the
 * number of connections.
 */
#ifndef TLSFWD_CONN_DUMP_H
#define TLSFWD_CONN_DUMP_H

#include <ev.h>
#include <pthread.h>
#include <stdbool.h>

struct conn_dump;
struct conn_link;
struct server;

/* One loop's part: scrapes it writes now, and those handed to it. */
struct conn_dump_seat {
	struct conn_dump	*active;	/* this loop's; cursors in its list */
	pthread_mutex_t		 lock;		/* guards inbox */
	struct conn_dump	*inbox;		/* handed over by the loop before */
	ev_async		 wake;		/* says the inbox has one */
	bool			 started;
};

/* srv's seat, on its loop (which must exist); off: _free closes what is left. */
void	conn_dump_seat_init(struct server *srv);
void	conn_dump_seat_free(struct server *srv);

/*
 * On the main loop: answers the request on fd (read whole, nothing sent)
 * with the connections of every loop of srv's group; takes fd over. -1
 * (fd still the caller's) when too many are being served or no memory.
 */
int	conn_dump_start(struct server *srv, int fd);

/*
 * A connection leaves srv's list (server_conn_detach): cursors on it move
 * on. Only called while srv->dumps.active is not NULL.
 */
void	conn_dump_forget(struct server *srv, const struct conn_link *link);

#endif
