/* worker.c - extra event loops, one thread each ([global] workers). */
#include "worker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "generation.h"
#include "log.h"

/* Fired in the worker's loop by worker_reload() and worker_stop(). */
static void
worker_wake_cb(struct ev_loop *loop, ev_async *a, int revents)
{
	struct worker *w = a->data;
	struct generation *gen;
	bool stop;

	(void)loop;
	(void)revents;
	pthread_mutex_lock(&w->lock);
	gen = w->pending;
	w->pending = NULL;
	stop = w->stop;
	pthread_mutex_unlock(&w->lock);
	if (gen != NULL && !w->srv->draining)
		generation_commit(w->srv, gen);
	else if (gen != NULL)
		generation_discard(w->srv, gen);
	if (stop)
		server_begin_shutdown(w->srv);
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;

	ev_run(w->loop, 0);
	return NULL;
}

/* A generation for w from text, built in the calling (main) thread. */
static struct generation *
worker_prepare(struct worker *w, const char *text, const char *path,
    const struct server *main_srv, struct config_errors *errs)
{
	struct generation *gen;
	struct config *cfg;

	cfg = config_load_string(text, path, errs);
	if (cfg == NULL)
		return NULL;
	gen = generation_prepare_worker(w->srv, cfg, main_srv, errs);
	if (gen == NULL)
		config_free(cfg);
	return gen;
}

struct worker *
worker_new(unsigned int index, unsigned int count, const char *text,
    const char *path, const struct server *main_srv,
    struct config_errors *errs)
{
	struct generation *gen;
	struct worker *w;

	w = calloc(1, sizeof(*w));
	if (w == NULL || (w->loop = ev_loop_new(EVFLAG_AUTO)) == NULL ||
	    (w->srv = server_new(w->loop)) == NULL) {
		if (w != NULL && w->loop != NULL)
			ev_loop_destroy(w->loop);
		free(w);
		config_error_add(errs, path, 0, "worker %u: out of memory",
		    index);
		return NULL;
	}
	w->index = index;
	w->srv->is_worker = true;
	w->srv->loop_index = index;
	w->srv->next_conn_id = index;
	w->srv->id_step = count;
	pthread_mutex_init(&w->lock, NULL);
	ev_async_init(&w->wake, worker_wake_cb);
	w->wake.data = w;
	ev_async_start(w->loop, &w->wake);
	gen = worker_prepare(w, text, path, main_srv, errs);
	if (gen == NULL) {
		worker_free(w);
		return NULL;
	}
	/* The thread is not running yet: its loop is still ours to touch. */
	generation_commit(w->srv, gen);
	return w;
}

int
worker_start(struct worker *w, char *err, size_t errlen)
{
	int rc = pthread_create(&w->thread, NULL, worker_main, w);

	if (rc != 0) {
		snprintf(err, errlen, "worker %u: pthread_create: %s",
		    w->index, strerror(rc));
		return -1;
	}
	w->started = true;
	return 0;
}

int
worker_reload(struct worker *w, const char *text, const char *path,
    const struct server *main_srv, struct config_errors *errs)
{
	struct generation *gen, *old;

	gen = worker_prepare(w, text, path, main_srv, errs);
	if (gen == NULL)
		return -1;
	pthread_mutex_lock(&w->lock);
	old = w->pending;
	w->pending = gen;
	pthread_mutex_unlock(&w->lock);
	/* Never committed, never started: freeing it touches no loop. */
	if (old != NULL)
		generation_discard(w->srv, old);
	ev_async_send(w->loop, &w->wake);
	return 0;
}

void
worker_stop(struct worker *w)
{
	pthread_mutex_lock(&w->lock);
	w->stop = true;
	pthread_mutex_unlock(&w->lock);
	ev_async_send(w->loop, &w->wake);
}

void
worker_free(struct worker *w)
{
	if (w == NULL)
		return;
	if (w->started)
		pthread_join(w->thread, NULL);
	if (w->pending != NULL)
		generation_discard(w->srv, w->pending);
	ev_async_stop(w->loop, &w->wake);
	server_free(w->srv);
	ev_loop_destroy(w->loop);
	pthread_mutex_destroy(&w->lock);
	free(w);
}
