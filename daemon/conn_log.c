/*
 * conn_log.c - a connection's log lines: one handshake line (ok, alert or
 * fail, kept apart), one close line, and state changes at debug level. Also
 * the names the log uses for states, reasons, stages and results.
 */
#include <stdio.h>
#include <string.h>

#include "conn_priv.h"
#include "log.h"
#include "metrics.h"

static const char *const state_names[] = {
	[CONN_RESOLVING] = "resolving",
	[CONN_CONNECTING] = "connecting",
	[CONN_PROXY_TUNNEL] = "proxy_tunnel",
	[CONN_HANDSHAKING] = "handshaking",
	[CONN_POOLED] = "pooled",
	[CONN_AWAITING_VERDICT] = "awaiting_verdict",
	[CONN_RELAYING] = "relaying",
	[CONN_SHUTTING_DOWN] = "shutting_down",
	[CONN_CLOSED] = "closed",
};

static const char *const close_reason_names[] = {
	[CLOSE_DONE] = "done",
	[CLOSE_UPSTREAM_TRUNCATED] = "upstream_truncated",
	[CLOSE_HANDSHAKE_FAILED] = "handshake_failed",
	[CLOSE_IDLE_TIMEOUT] = "idle_timeout",
	[CLOSE_CLIENT_ERROR] = "client_error",
	[CLOSE_UPSTREAM_ERROR] = "upstream_error",
	[CLOSE_UPSTREAM_ALERT] = "upstream_alert",
	[CLOSE_SHUTDOWN] = "shutdown",
};

static const char *const stage_names[] = {
	[STAGE_RESOLVE] = "resolve",
	[STAGE_CONNECT] = "connect",
	[STAGE_TIMEOUT] = "timeout",
	[STAGE_HANDSHAKE] = "handshake",
	[STAGE_VERIFY] = "verify",
	[STAGE_PROXY] = "proxy",
};

static const char *const result_names[] = {
	[RESULT_OK] = "ok",
	[RESULT_ALERT] = "alert",
	[RESULT_FAIL] = "fail",
};

static const char *const alert_from_names[] = {
	[ALERT_NONE] = NULL,
	[ALERT_FROM_UPSTREAM] = "upstream",
	[ALERT_FROM_TLSFWD] = "tlsfwd",
};

const char *
conn_state_name(enum conn_state s)
{
	return state_names[s];
}

const char *
conn_close_reason_name(enum conn_close_reason r)
{
	return close_reason_names[r];
}

const char *
conn_stage_name(enum conn_stage s)
{
	return stage_names[s];
}

const char *
conn_result_name(enum conn_result r)
{
	return result_names[r];
}

/*
 * The fields every connection line starts with, after ts/level/event; a
 * pooled connection has no id or client yet.
 */
static void
conn_log_ids(struct log_line *l, const struct conn *c)
{
	log_str(l, "service", c->svc->sc->name);
	if (c->pooled) {
		log_str(l, "pooled", "yes");
	} else {
		log_uint(l, "conn", c->id);
		log_str(l, "client", c->client);
	}
	log_str(l, "upstream", c->upstream[0] ? c->upstream : "-");
}

/* sni= of the upstream entry the connection is on ("-": none sent). */
static void
log_sni(struct log_line *l, const struct conn *c)
{
	const char *sni = c->svc->upstream.entries[c->entry].cfg->sni;

	log_str(l, "sni", sni[0] != '\0' ? sni : "-");
}

/* error=, errno= and gnutls_error= for a recorded failure. */
static void
conn_log_error(struct log_line *l, const struct conn_error *e)
{
	if (e->text != NULL)
		log_str(l, "error", e->text);
	else if (e->sys_errno != 0)
		log_str(l, "error", strerror(e->sys_errno));
	else if (e->gnutls_rc != 0)
		log_str(l, "error", gnutls_strerror(e->gnutls_rc));
	if (e->sys_errno != 0) {
		const char *name = strerrorname_np(e->sys_errno);

		log_str(l, "errno", name != NULL ? name : "?");
	}
	if (e->gnutls_rc != 0)
		log_str(l, "gnutls_error", gnutls_strerror_name(e->gnutls_rc));
}

void
conn_log_state(const struct conn *c, enum conn_state to)
{
	struct log_line l;

	log_line_begin(&l, LOG_DEBUG, "state");
	conn_log_ids(&l, c);
	log_str(&l, "from", state_names[c->state]);
	log_str(&l, "to", state_names[to]);
	log_line_end(&l);
}

/*
 * The start every handshake line shares (ids, sni, result=), and the loop's
 * count of handshakes by outcome, which STATUS= shows.
 */
static void
handshake_line_begin(struct log_line *l, const struct conn *c,
    enum conn_result result)
{
	if (c->pooled) {
		/* Not a client's: event=pool, outside the handshake counts. */
		METRIC_ADD(c->svc->counts->pool_failures, 1);
		log_line_begin(l, LOG_WARN, "pool");
		conn_log_ids(l, c);
		log_sni(l, c);
		log_str(l, "result", result_names[result]);
		return;
	}
	METRIC_ADD(c->svc->counts->handshakes[result], 1);
	if (result == RESULT_OK)
		__atomic_add_fetch(&c->srv->handshakes_ok, 1, __ATOMIC_RELAXED);
	else
		__atomic_add_fetch(&c->srv->handshakes_failed, 1,
		    __ATOMIC_RELAXED);
	log_line_begin(l, result == RESULT_OK ? LOG_INFO : LOG_WARN,
	    "handshake");
	conn_log_ids(l, c);
	log_sni(l, c);
	log_str(l, "result", result_names[result]);
}

/* What a handshake line says of a failure: stage, error, alert, checks. */
static void
failure_fields(struct log_line *l, const struct conn *c, enum conn_stage stage,
    enum conn_alert_from from)
{
	log_str(l, "stage", stage_names[stage]);
	if (stage == STAGE_VERIFY)
		log_str(l, "verify", "fail");
	if (stage == STAGE_TIMEOUT)
		log_str(l, "timeout", c->state == CONN_HANDSHAKING ?
		    "handshake" : c->state == CONN_PROXY_TUNNEL ? "proxy" :
		    "connect");
	conn_log_error(l, &c->err);
	if (from != ALERT_NONE) {
		log_str(l, "alert", c->err.alert);
		log_str(l, "alert_from", alert_from_names[from]);
	} else if (c->err.alert[0] != '\0') {
		log_str(l, "alert_sent", c->err.alert);
	}
	if (c->tls != NULL)
		tls_log_checks(l, c->tls, &c->tlsc);
	log_uint(l, "attempts", c->attempts);
	if (c->t_connected > 0) {
		log_ms(l, "connect_ms", c->t_connected - c->t_start);
		log_ms(l, "handshake_ms", conn_now_ms() - c->t_connected);
	} else {
		log_ms(l, "connect_ms", conn_now_ms() - c->t_start);
	}
}

/* Logs the one handshake line of a connection that never got verified TLS. */
void
conn_log_handshake_failure(struct conn *c, enum conn_result result,
    enum conn_stage stage, enum conn_alert_from from)
{
	struct log_line l;

	METRIC_ADD(c->svc->counts->failures[stage], 1);
	handshake_line_begin(&l, c, result);
	failure_fields(&l, c, stage, from);
	log_line_end(&l);
}

/*
 * A path failed and another is tried for the same client: not the
 * connection's handshake line (that comes once, for the last path).
 */
void
conn_log_attempt_failure(const struct conn *c, enum conn_result result,
    enum conn_stage stage, enum conn_alert_from from)
{
	struct log_line l;

	log_line_begin(&l, LOG_WARN, "attempt");
	conn_log_ids(&l, c);
	log_sni(&l, c);
	log_str(&l, "result", result_names[result]);
	failure_fields(&l, c, stage, from);
	log_str(&l, "next", "another path");
	log_line_end(&l);
}

void
conn_attempt_error_text(const struct conn *c, char *buf, size_t len)
{
	const struct conn_error *e = &c->err;

	snprintf(buf, len, "%s%s%s", e->text != NULL ? e->text :
	    e->sys_errno != 0 ? strerror(e->sys_errno) : e->gnutls_rc != 0 ?
	    gnutls_strerror(e->gnutls_rc) : "handshake failed",
	    e->alert[0] != '\0' ? ": alert " : "", e->alert);
}

/* The one handshake line of a connection whose TLS is up and verified. */
void
conn_log_handshake_ok(struct conn *c)
{
	int64_t not_after = tls_peer_not_after(c->tls, &c->tlsc);
	struct log_line l;

	if (gnutls_session_is_resumed(c->tls))
		METRIC_ADD(c->svc->counts->resumed, 1);
	if (not_after != 0)
		__atomic_store_n(&c->svc->counts->upstream_not_after, not_after,
		    __ATOMIC_RELAXED);
	metrics_observe_setup(c->svc->counts, c->t_connected - c->t_start,
	    c->t_established - c->t_connected);
	handshake_line_begin(&l, c, RESULT_OK);
	tls_log_established(&l, c->tls, &c->tlsc);
	log_uint(&l, "attempts", c->attempts);
	log_ms(&l, "connect_ms", c->t_connected - c->t_start);
	log_ms(&l, "handshake_ms", c->t_established - c->t_connected);
	if (c->t_adopted > 0) {
		log_str(&l, "pooled", "yes");
		log_ms(&l, "pool_wait_ms", c->t_adopted - c->t_established);
	}
	log_line_end(&l);
}

void
conn_log_pool_drop(const struct conn *c, enum pool_drop why)
{
	struct log_line l;

	if (!c->pool_ready || why == POOL_DROP_FAILED)
		return;
	METRIC_ADD(c->svc->counts->pool_drops[why], 1);
	if (!log_enabled(why == POOL_DROP_GREETING_TOO_LONG ? LOG_WARN :
	    LOG_DEBUG))
		return;
	log_line_begin(&l, why == POOL_DROP_GREETING_TOO_LONG ? LOG_WARN :
	    LOG_DEBUG, "pool_drop");
	conn_log_ids(&l, c);
	log_str(&l, "reason", pool_drop_name(why));
	if (why == POOL_DROP_UPSTREAM_CLOSED)
		conn_log_error(&l, &(struct conn_error){
		    .sys_errno = c->relay.fail.sys_errno,
		    .gnutls_rc = c->relay.fail.gnutls_rc });
	log_uint(&l, "greeting_bytes", c->relay.pre.tail - c->relay.pre.head);
	log_ms(&l, "pool_wait_ms", conn_now_ms() - c->t_established);
	log_line_end(&l);
}

/*
 * The close line. Written once the descriptors and the max_connections slot
 * are free, so that whoever reads it may count on them; before the TLS state
 * goes, which the error text may point into.
 */
void
conn_log_close(const struct conn *c, enum conn_close_reason reason)
{
	struct log_line l;
	bool clean = reason == CLOSE_DONE;

	log_line_begin(&l, clean ? LOG_INFO : LOG_WARN, "close");
	conn_log_ids(&l, c);
	log_str(&l, "reason", close_reason_names[reason]);
	if (reason != CLOSE_HANDSHAKE_FAILED) {
		conn_log_error(&l, &c->err);
		if (c->err.alert[0] != '\0')
			log_str(&l, "alert", c->err.alert);
	}
	if (clean && c->relay.upstream_close == RELAY_CLOSE_EOF_HARMLESS)
		log_str(&l, "close_notify", "no");
	log_uint(&l, "bytes_up", c->relay.bytes_up);
	log_uint(&l, "bytes_down", c->relay.bytes_down);
	log_ms(&l, "duration_ms", conn_now_ms() - conn_t_client(c));
	log_line_end(&l);
}
