/*
 * metrics_http.c - the /metrics endpoint on the main loop:
 * metrics_http_start(), metrics_http_bound(), metrics_http_free().
 *
 * Hand-written rather than a library: it answers one request per
 * connection (GET /metrics or GET /connections, HTTP/1.0 or 1.1,
 * Connection: close) and nothing else, which libmicrohttpd would wrap in threads or its own loop. A
 * scraper is bounded in everything: the request's size (8 KiB), the time to
 * send it and to take the answer (10 s in all), and how many are served at
 * once (16; more are closed at accept), and its socket's send buffer
 * (16 KiB). The answer to /metrics is rendered whole when the request is
 * complete, then written as the socket takes it; /connections is streamed
 * by the loops (conn_dump.c).
 */
#include "metrics_http.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "conn_dump.h"
#include "listener.h"
#include "log.h"
#include "metrics.h"
#include "server.h"

#define REQUEST_MAX	8192
#define UNIX_PATH_MAX	sizeof(((struct sockaddr_un *)0)->sun_path)
#define SCRAPE_TIMEOUT	10.
#define SCRAPERS_MAX	16
/* A scraper that reads nothing holds this much of the kernel's memory. */
#define SCRAPER_SNDBUF	16384

struct scraper {
	struct metrics_http	*h;
	int			 fd;
	ev_io			 io;
	ev_timer		 timer;
	char			 req[REQUEST_MAX];
	size_t			 reqlen;
	struct metrics_text	 out;		/* head and body */
	size_t			 sent;
	struct scraper		*prev, *next;
};

struct metrics_http {
	struct server		*srv;
	int			 fd;
	ev_io			 accept_io;
	struct cidr		*allow;
	size_t			 nallow;
	char			 bound[HOST_MAX + 16];
	char			 unix_path[UNIX_PATH_MAX];
	struct scraper		*scrapers;
	unsigned int		 nscrapers;
};

/* The scraper goes; its socket too unless keep_fd (another took it). */
static void
scraper_end(struct scraper *s, bool keep_fd)
{
	struct metrics_http *h = s->h;
	struct ev_loop *loop = h->srv->loop;

	ev_io_stop(loop, &s->io);
	ev_timer_stop(loop, &s->timer);
	if (!keep_fd)
		close(s->fd);
	metrics_text_free(&s->out);
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		h->scrapers = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	h->nscrapers--;
	free(s);
}

static void
scraper_close(struct scraper *s)
{
	scraper_end(s, false);
}

/* Fired when a scraper took too long to ask or to read: it goes. */
static void
scraper_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	scraper_close(w->data);
}

static void
respond(struct scraper *s, int status, const char *reason, const char *extra,
    const char *body)
{
	struct metrics_text head = { NULL, 0, 0, 0 };
	struct metrics_text *b = &s->out;
	size_t blen = body != NULL ? strlen(body) : b->len;
	char line[512];
	int n;

	n = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\nContent-Type: %s"
	    "\r\nContent-Length: %zu\r\nConnection: close\r\n%s\r\n", status,
	    reason, status == 200 ? "text/plain; version=0.0.4; charset=utf-8"
	    : "text/plain; charset=utf-8", blen, extra);
	head.p = malloc((size_t)n + blen + 1);
	if (head.p == NULL) {
		scraper_close(s);
		return;
	}
	memcpy(head.p, line, (size_t)n);
	memcpy(head.p + n, body != NULL ? body : b->p, blen);
	head.len = (size_t)n + blen;
	metrics_text_free(b);
	*b = head;
	s->sent = 0;
	ev_io_stop(s->h->srv->loop, &s->io);
	ev_io_set(&s->io, s->fd, EV_WRITE);
	ev_io_start(s->h->srv->loop, &s->io);
}

/* The request is complete (its head ends in an empty line): answer it. */
static void
answer(struct scraper *s)
{
	char method[16], target[256], version[16];

	s->req[s->reqlen] = '\0';
	if (sscanf(s->req, "%15s %255s %15s", method, target, version) != 3 ||
	    strncmp(version, "HTTP/1.", 7) != 0) {
		respond(s, 400, "Bad Request", "", "bad request\n");
		return;
	}
	if (strcmp(method, "GET") != 0) {
		respond(s, 405, "Method Not Allowed", "Allow: GET\r\n",
		    "only GET\n");
		return;
	}
	if (strcmp(target, "/connections") == 0 ||
	    strncmp(target, "/connections?", 13) == 0) {
		/* Streamed by the loops in turn: conn_dump.c. */
		if (conn_dump_start(s->h->srv, s->fd) == 0)
			scraper_end(s, true);
		else
			respond(s, 503, "Service Unavailable", "Retry-After: 1"
			    "\r\n", "too many /connections answers at once\n");
		return;
	}
	if (strcmp(target, "/metrics") != 0 &&
	    strncmp(target, "/metrics?", 9) != 0) {
		respond(s, 404, "Not Found", "",
		    "not found: try /metrics or /connections\n");
		return;
	}
	metrics_render(s->h->srv, &s->out);
	if (s->out.oom) {
		respond(s, 503, "Service Unavailable", "", "out of memory\n");
		return;
	}
	respond(s, 200, "OK", "", NULL);
}

/* Fired by the scraper's socket: its request comes in, or the answer out. */
static void
scraper_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct scraper *s = w->data;
	ssize_t n;

	(void)loop;
	if (revents & EV_WRITE) {
		n = send(s->fd, s->out.p + s->sent, s->out.len - s->sent,
		    MSG_NOSIGNAL);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0 || (s->sent += (size_t)n) == s->out.len)
			scraper_close(s);
		return;
	}
	n = recv(s->fd, s->req + s->reqlen, sizeof(s->req) - 1 - s->reqlen, 0);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		scraper_close(s);
		return;
	}
	s->reqlen += (size_t)n;
	s->req[s->reqlen] = '\0';
	if (strstr(s->req, "\r\n\r\n") != NULL || strstr(s->req, "\n\n"))
		answer(s);
	else if (s->reqlen == sizeof(s->req) - 1)
		respond(s, 431, "Request Header Fields Too Large", "",
		    "request too large\n");
}

/* Fired when a scraper connects: admitted, or closed at once. */
static void
metrics_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct metrics_http *h = w->data;
	struct sockaddr_storage peer;
	socklen_t len = sizeof(peer);
	struct scraper *s;
	bool allowed;
	int fd;

	(void)revents;
	fd = accept4(h->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK |
	    SOCK_CLOEXEC);
	if (fd < 0)
		return;
	allowed = peer.ss_family == AF_UNIX || (h->nallow == 0 ?
	    sockaddr_is_loopback((struct sockaddr *)&peer) : false);
	for (size_t i = 0; !allowed && i < h->nallow; i++)
		allowed = cidr_contains(&h->allow[i],
		    (struct sockaddr *)&peer);
	if (!allowed || h->nscrapers >= SCRAPERS_MAX ||
	    (s = calloc(1, sizeof(*s))) == NULL) {
		close(fd);
		return;
	}
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &(int){ SCRAPER_SNDBUF },
	    sizeof(int));
	s->h = h;
	s->fd = fd;
	ev_io_init(&s->io, scraper_io_cb, fd, EV_READ);
	s->io.data = s;
	ev_timer_init(&s->timer, scraper_timeout_cb, SCRAPE_TIMEOUT, 0.);
	s->timer.data = s;
	ev_io_start(loop, &s->io);
	ev_timer_start(loop, &s->timer);
	s->next = h->scrapers;
	if (h->scrapers != NULL)
		h->scrapers->prev = s;
	h->scrapers = s;
	h->nscrapers++;
}

struct metrics_http *
metrics_http_start(struct server *srv, const struct global_config *g,
    char *err, size_t errlen)
{
	const struct listen_addr *la = &g->metrics_listen;
	struct sockaddr_storage bound;
	socklen_t blen = sizeof(bound);
	struct metrics_http *h;
	int one = 1;

	h = calloc(1, sizeof(*h));
	if (h == NULL || (g->nmetrics_allow > 0 && (h->allow = calloc(
	    g->nmetrics_allow, sizeof(*h->allow))) == NULL)) {
		free(h);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	h->srv = srv;
	h->nallow = g->nmetrics_allow;
	if (h->nallow > 0)
		memcpy(h->allow, g->metrics_allow,
		    h->nallow * sizeof(*h->allow));
	h->fd = -1;
	if (la->is_unix && listener_unix_path_clear(la, err, errlen) != 0)
		goto fail;
	h->fd = socket(la->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (h->fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		goto fail;
	}
	if (!la->is_unix)
		(void)setsockopt(h->fd, SOL_SOCKET, SO_REUSEADDR, &one,
		    sizeof(one));
	if (bind(h->fd, (const struct sockaddr *)&la->sa, la->salen) != 0 ||
	    listen(h->fd, 64) != 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", la->text,
		    strerror(errno));
		goto fail;
	}
	if (la->is_unix) {
		snprintf(h->unix_path, sizeof(h->unix_path), "%s",
		    ((const struct sockaddr_un *)&la->sa)->sun_path);
		snprintf(h->bound, sizeof(h->bound), "unix:%s", h->unix_path);
	} else if (getsockname(h->fd, (struct sockaddr *)&bound,
	    &blen) == 0) {
		sockaddr_format((struct sockaddr *)&bound, blen, h->bound,
		    sizeof(h->bound));
	}
	ev_io_init(&h->accept_io, metrics_accept_cb, h->fd, EV_READ);
	h->accept_io.data = h;
	ev_io_start(srv->loop, &h->accept_io);
	/* Neither keeps the loop running at shutdown. */
	ev_unref(srv->loop);
	return h;
fail:
	if (h->fd >= 0)
		close(h->fd);
	free(h->allow);
	free(h);
	return NULL;
}

const char *
metrics_http_bound(const struct metrics_http *h)
{
	return h->bound;
}

void
metrics_http_free(struct metrics_http *h)
{
	if (h == NULL)
		return;
	while (h->scrapers != NULL)
		scraper_close(h->scrapers);
	ev_ref(h->srv->loop);
	ev_io_stop(h->srv->loop, &h->accept_io);
	close(h->fd);
	if (h->unix_path[0] != '\0')
		unlink(h->unix_path);
	free(h->allow);
	free(h);
}
