/* listener.c - listening sockets: bind, accept, pause on fd exhaustion. */
#include "listener.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"
#include "service.h"

/* Accepts per wake-up, so one busy listener cannot starve the others. */
#define ACCEPT_BATCH 64
/* How long accepting pauses when the process is out of descriptors. */
#define ACCEPT_PAUSE_S 0.25

/*
 * A unix socket path may hold a file from a run that crashed. Replace it only
 * if it is a socket nobody listens on; anything else is the user's.
 */
int
listener_unix_path_clear(const struct listen_addr *la, char *err,
    size_t errlen)
{
	const struct sockaddr_un *sun = (const struct sockaddr_un *)&la->sa;
	struct stat st;
	int fd, rc, saved;

	if (lstat(sun->sun_path, &st) != 0)
		return errno == ENOENT ? 0 : (snprintf(err, errlen,
		    "%s: %s", sun->sun_path, strerror(errno)), -1);
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "%s exists and is not a socket",
		    sun->sun_path);
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	rc = connect(fd, (const struct sockaddr *)sun, la->salen);
	saved = errno;
	close(fd);
	if (rc == 0) {
		snprintf(err, errlen, "%s is in use by a running process",
		    sun->sun_path);
		return -1;
	}
	if (saved != ECONNREFUSED) {
		snprintf(err, errlen, "%s: %s", sun->sun_path,
		    strerror(saved));
		return -1;
	}
	if (unlink(sun->sun_path) != 0) {
		snprintf(err, errlen, "cannot remove stale socket %s: %s",
		    sun->sun_path, strerror(errno));
		return -1;
	}
	return 0;
}

/* mode, owner and group of the socket file, set before listen(). */
static int
unix_path_protect(const char *path, const struct service_config *sc,
    char *err, size_t errlen)
{
	if (chmod(path, sc->unix_mode) != 0) {
		snprintf(err, errlen, "chmod %04o %s: %s", sc->unix_mode, path,
		    strerror(errno));
		return -1;
	}
	if ((sc->unix_uid != (uid_t)-1 || sc->unix_gid != (gid_t)-1) &&
	    lchown(path, sc->unix_uid, sc->unix_gid) != 0) {
		snprintf(err, errlen, "chown %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* A listening TCP socket on sa with SO_REUSEPORT; -1 with err. */
static int
reuseport_socket(const struct sockaddr *sa, socklen_t salen, char *err,
    size_t errlen)
{
	int fd, one = 1;

	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	if (sa->sa_family == AF_INET6)
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one,
		    sizeof(one));
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
	    bind(fd, sa, salen) != 0 || listen(fd, SOMAXCONN) != 0) {
		snprintf(err, errlen, "worker socket: %s", strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* The worker loops' sockets, on the address the main one really got. */
static int
listener_open_siblings(struct listener *l, unsigned int n,
    const struct sockaddr *sa, socklen_t salen, char *err, size_t errlen)
{
	l->siblings = calloc(n, sizeof(*l->siblings));
	if (l->siblings == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (l->nsiblings = 0; l->nsiblings < n; l->nsiblings++) {
		int fd = reuseport_socket(sa, salen, err, errlen);

		if (fd < 0)
			return -1;
		l->siblings[l->nsiblings] = fd;
	}
	return 0;
}

static void
listener_close_siblings(struct listener *l)
{
	for (unsigned int i = 0; i < l->nsiblings; i++)
		close(l->siblings[i]);
	free(l->siblings);
	l->siblings = NULL;
	l->nsiblings = 0;
}

int
listener_fd_for_loop(const struct listener *l, unsigned int k)
{
	return k >= 1 && k <= l->nsiblings ? l->siblings[k - 1] : l->fd;
}

int
listener_open(struct listener *l, const struct listen_addr *la,
    struct service *svc, unsigned int nsiblings, char *err, size_t errlen)
{
	struct sockaddr_storage bound;
	socklen_t boundlen = sizeof(bound);
	int one = 1;

	memset(l, 0, sizeof(*l));
	l->fd = -1;
	l->svc = svc;
	if (la->is_unix && listener_unix_path_clear(la, err, errlen) != 0)
		return -1;
	l->fd = socket(la->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (l->fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	if (!la->is_unix && setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one,
	    sizeof(one)) != 0) {
		snprintf(err, errlen, "SO_REUSEADDR: %s", strerror(errno));
		goto fail;
	}
	if (la->is_unix)
		nsiblings = 0;	/* one path, one socket: the loops share it */
	if (nsiblings > 0 && setsockopt(l->fd, SOL_SOCKET, SO_REUSEPORT, &one,
	    sizeof(one)) != 0) {
		snprintf(err, errlen, "SO_REUSEPORT: %s", strerror(errno));
		goto fail;
	}
	if (la->sa.ss_family == AF_INET6)	/* [::] means IPv6 only */
		(void)setsockopt(l->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one,
		    sizeof(one));
	if (bind(l->fd, (const struct sockaddr *)&la->sa, la->salen) != 0) {
		snprintf(err, errlen, "cannot bind %s: %s", la->text,
		    strerror(errno));
		goto fail;
	}
	if (la->is_unix) {
		snprintf(l->unix_path, sizeof(l->unix_path), "%s",
		    ((const struct sockaddr_un *)&la->sa)->sun_path);
		if (unix_path_protect(l->unix_path, svc->sc, err,
		    errlen) != 0)
			goto fail;
	}
	/* Only now can anyone connect: the file has its final mode. */
	if (listen(l->fd, SOMAXCONN) != 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", la->text,
		    strerror(errno));
		goto fail;
	}
	if (getsockname(l->fd, (struct sockaddr *)&bound, &boundlen) != 0) {
		snprintf(err, errlen, "getsockname: %s", strerror(errno));
		goto fail;
	}
	sockaddr_format((struct sockaddr *)&bound, boundlen, l->bound,
	    sizeof(l->bound));
	if (nsiblings > 0 && listener_open_siblings(l, nsiblings,
	    (struct sockaddr *)&bound, boundlen, err, errlen) != 0)
		goto fail;
	return 0;
fail:
	listener_close_siblings(l);
	if (l->unix_path[0] != '\0')
		unlink(l->unix_path);
	close(l->fd);
	l->fd = -1;
	return -1;
}

int
listener_adopt(struct listener *l, int fd, struct service *svc, char *err,
    size_t errlen)
{
	struct sockaddr_storage bound;
	socklen_t boundlen = sizeof(bound);
	int type = 0, listening = 0, flags;
	socklen_t optlen = sizeof(int);

	memset(l, 0, sizeof(*l));
	l->fd = -1;
	l->svc = svc;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &optlen) != 0 ||
	    type != SOCK_STREAM ||
	    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening,
	    &optlen) != 0 || !listening) {
		snprintf(err, errlen, "fd %d is not a listening stream socket",
		    fd);
		return -1;
	}
	/* The manager may pass a blocking socket; accept must never block. */
	flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
		snprintf(err, errlen, "fd %d: fcntl: %s", fd, strerror(errno));
		return -1;
	}
	if (getsockname(fd, (struct sockaddr *)&bound, &boundlen) == 0)
		sockaddr_format((struct sockaddr *)&bound, boundlen, l->bound,
		    sizeof(l->bound));
	else
		snprintf(l->bound, sizeof(l->bound), "fd:%d", fd);
	l->fd = fd;
	l->inherited = true;
	return 0;
}

void
listener_move(struct listener *to, struct listener *from, struct service *svc,
    struct ev_loop *loop)
{
	ev_io_stop(loop, &from->io);
	ev_timer_stop(loop, &from->pause);
	*to = *from;
	to->svc = svc;
	from->fd = -1;
	from->siblings = NULL;
	from->nsiblings = 0;
	from->unix_path[0] = '\0';	/* the socket file stays, in use */
}

static void listener_accept_cb(struct ev_loop *, ev_io *, int);

/*
 * After a pause: accept at once rather than wait for the next client, so
 * that a drained backlog ends the burst (and says so) now.
 */
static void
listener_resume_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct listener *l = w->data;

	(void)revents;
	ev_io_start(loop, &l->io);
	listener_accept_cb(loop, &l->io, EV_READ);
}

/*
 * Out of descriptors: the first failure of a burst is logged, later ones
 * only counted, and accepting pauses instead of spinning on the backlog.
 */
static void
listener_pause(struct listener *l, struct ev_loop *loop, int err)
{
	if (l->pauses++ == 0) {
		l->paused_since = ev_now(loop);
		log_msg(LOG_ERROR, "accept", "service=%s listen=%s: %s; "
		    "pausing accept (%.0f ms at a time) until descriptors "
		    "free up", l->svc->sc->name, l->bound, strerror(err),
		    ACCEPT_PAUSE_S * 1e3);
	}
	ev_io_stop(loop, &l->io);
	ev_timer_set(&l->pause, ACCEPT_PAUSE_S, 0.);
	ev_timer_start(loop, &l->pause);
}

static void
listener_unpaused(struct listener *l, struct ev_loop *loop)
{
	log_msg(LOG_INFO, "accept", "service=%s listen=%s: accepting again "
	    "after %u pause(s), %.0f ms", l->svc->sc->name, l->bound,
	    l->pauses, (ev_now(loop) - l->paused_since) * 1e3);
	l->pauses = 0;
}

/*
 * Fired when the listening socket is readable: accepts up to ACCEPT_BATCH
 * clients and hands each to conn_accept(). Out of descriptors, it stops the
 * watcher for ACCEPT_PAUSE_S instead of spinning on a pending connection.
 * A burst ends when the backlog is drained or a whole batch went through,
 * not at the first accept that succeeds: while descriptors come back one
 * connection at a time, accepting one and failing the next is still the
 * same burst, and is not logged again.
 */
static void
listener_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct listener *l = w->data;
	struct sockaddr_storage peer;
	socklen_t peerlen;
	int fd;

	(void)revents;
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		peerlen = sizeof(peer);
		fd = accept4(l->fd, (struct sockaddr *)&peer, &peerlen,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			conn_accept(l->svc, fd, (struct sockaddr *)&peer,
			    peerlen);
			if (l->fd < 0)
				return;	/* closed meanwhile (shutdown) */
			continue;
		}
		switch (errno) {
		case EINTR:
		case ECONNABORTED:
		case EPROTO:
			continue;
		case EAGAIN:
#if EAGAIN != EWOULDBLOCK
		case EWOULDBLOCK:
#endif
			/* The backlog is drained: the burst is over. */
			if (l->pauses > 0)
				listener_unpaused(l, loop);
			return;
		case EMFILE:
		case ENFILE:
		case ENOBUFS:
		case ENOMEM:
			listener_pause(l, loop, errno);
			return;
		default:
			log_msg(LOG_ERROR, "accept", "service=%s listen=%s: %s",
			    l->svc->sc->name, l->bound, strerror(errno));
			return;
		}
	}
	/* A whole batch accepted without running out: so is the burst. */
	if (l->pauses > 0)
		listener_unpaused(l, loop);
}

void
listener_start(struct listener *l, struct ev_loop *loop)
{
	ev_io_init(&l->io, listener_accept_cb, l->fd, EV_READ);
	l->io.data = l;
	ev_init(&l->pause, listener_resume_cb);
	l->pause.data = l;
	ev_io_start(loop, &l->io);
}

void
listener_close(struct listener *l, struct ev_loop *loop)
{
	if (l->fd < 0)
		return;
	ev_io_stop(loop, &l->io);
	ev_timer_stop(loop, &l->pause);
	close(l->fd);
	l->fd = -1;
	listener_close_siblings(l);
	if (l->unix_path[0] != '\0') {
		unlink(l->unix_path);
		l->unix_path[0] = '\0';
	}
}
