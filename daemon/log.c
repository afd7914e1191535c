/* log.c - structured log lines (logfmt or JSON) on stderr. */
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/uio.h>
/* The record says where the event was; the logger's own line would not. */
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/*
 * Written once at start-up (and at reload, from the loop thread, before any
 * worker runs); read-only on the connection path.
 */
static struct {
	enum log_level	level;
	enum log_format	format;
	int		fd;
	bool		journal;
} log_cfg = { LOG_INFO, LOG_FORMAT_LOGFMT, 2, false };

#define LOG_JOURNAL_SOCKET "/run/systemd/journal/socket"

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void
log_setup(enum log_level level, enum log_format format, int fd)
{
	log_cfg.level = level;
	log_cfg.format = format;
	log_cfg.fd = fd;
}

bool
log_fd_is_journal(int fd)
{
	const char *env = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (env == NULL || sscanf(env, "%llu:%llu", &dev, &ino) != 2 ||
	    fstat(fd, &st) != 0)
		return false;
	if ((unsigned long long)st.st_dev != dev ||
	    (unsigned long long)st.st_ino != ino)
		return false;
	/*
	 * sd_journal_sendv() reports success when journald's socket does not
	 * exist, which would lose every record: then keep to stderr.
	 */
	return access(LOG_JOURNAL_SOCKET, W_OK) == 0;
}

void
log_use_journal(bool on)
{
	log_cfg.journal = on;
}

bool
log_enabled(enum log_level level)
{
	return level <= log_cfg.level;
}

const char *
log_level_name(enum log_level level)
{
	return level_names[level];
}

int
log_level_parse(const char *s, enum log_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]);
	    i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

int
log_format_parse(const char *s, enum log_format *out)
{
	if (strcmp(s, "logfmt") == 0)
		*out = LOG_FORMAT_LOGFMT;
	else if (strcmp(s, "json") == 0)
		*out = LOG_FORMAT_JSON;
	else
		return -1;
	return 0;
}

/* Room kept for the closing "}\n" or " truncated=yes\n". */
#define LOG_TAIL_RESERVE 32

static void
put_raw(struct log_line *l, const char *s, size_t n)
{
	if (l->truncated)
		return;
	if (l->len + n > LOG_LINE_MAX - LOG_TAIL_RESERVE) {
		l->truncated = true;
		return;
	}
	memcpy(l->buf + l->len, s, n);
	l->len += n;
}

static void
put_str(struct log_line *l, const char *s)
{
	put_raw(l, s, strlen(s));
}

/* Appends to the reserved tail; only log_line_finish() uses it. */
static void
put_tail(struct log_line *l, const char *s)
{
	size_t n = strlen(s);

	if (l->len + n < LOG_LINE_MAX) {
		memcpy(l->buf + l->len, s, n);
		l->len += n;
	}
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid. */
static size_t
utf8_seq_len(const unsigned char *s, size_t avail)
{
	size_t n;
	unsigned int cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (n > avail)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	/* Reject overlong forms, surrogates and code points past U+10FFFF. */
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return n;
}

/*
 * Escapes value for the line's format. Both formats use the same escapes:
 * \" \\ \n \r \t, and \xHH for other control bytes and invalid UTF-8, so a
 * hostile certificate subject can neither split a line nor break parsing.
 * (In JSON, "\xHH" is written as the six characters \\xHH.)
 */
static void
put_escaped(struct log_line *l, const char *value, size_t len)
{
	const unsigned char *s = (const unsigned char *)value;
	const char *bs = l->format == LOG_FORMAT_JSON ? "\\\\" : "\\";
	char hex[8];
	size_t i = 0;

	while (i < len && !l->truncated) {
		size_t n = utf8_seq_len(s + i, len - i);

		if (n == 1 && s[i] >= 0x20 && s[i] != 0x7f && s[i] != '"' &&
		    s[i] != '\\') {
			put_raw(l, (const char *)s + i, 1);
		} else if (n > 1) {
			put_raw(l, (const char *)s + i, n);
		} else if (n == 1 && s[i] == '"') {
			put_str(l, "\\\"");
		} else if (n == 1 && s[i] == '\\') {
			put_str(l, "\\\\");
		} else if (n == 1 && s[i] == '\n') {
			put_str(l, "\\n");
		} else if (n == 1 && s[i] == '\r') {
			put_str(l, "\\r");
		} else if (n == 1 && s[i] == '\t') {
			put_str(l, "\\t");
		} else {
			snprintf(hex, sizeof(hex), "%sx%02x", bs, s[i]);
			put_str(l, hex);
			n = 1;
		}
		i += n;
	}
}

/*
 * Journal mode: keeps "TLSFWD_KEY=value" with the raw value, so that
 * `journalctl TLSFWD_RESULT=fail` matches. The handshake's version is the
 * TLS version, and says so.
 */
static void
journal_field(struct log_line *l, const char *key, const char *value,
    size_t len)
{
	char name[64];
	size_t n = 0;

	if (!l->journal || l->nfields == LOG_JOURNAL_FIELDS)
		return;
	if (strcmp(key, "version") == 0 && l->event != NULL &&
	    strcmp(l->event, "handshake") == 0)
		key = "tls_version";
	n = (size_t)snprintf(name, sizeof(name), "TLSFWD_");
	for (; *key != '\0' && n + 2 < sizeof(name); key++)
		name[n++] = (char)toupper((unsigned char)*key);
	name[n++] = '=';
	if (l->jlen + n + len > sizeof(l->jbuf))
		return;
	l->field_off[l->nfields] = (uint16_t)l->jlen;
	l->field_len[l->nfields] = (uint16_t)(n + len);
	memcpy(l->jbuf + l->jlen, name, n);
	memcpy(l->jbuf + l->jlen + n, value, len);
	l->jlen += n + len;
	l->nfields++;
}

static bool
logfmt_needs_quotes(const char *value, size_t len)
{
	if (len == 0)
		return true;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)value[i];

		if (c <= 0x20 || c == '=' || c == '"' || c == '\\' || c >= 0x7f)
			return true;
	}
	return false;
}

static void
put_key(struct log_line *l, const char *key)
{
	if (l->format == LOG_FORMAT_JSON) {
		put_str(l, l->len > l->start + 1 ? ",\"" : "\"");
		put_str(l, key);
		put_str(l, "\":");
	} else {
		if (l->len > l->start)
			put_raw(l, " ", 1);
		put_str(l, key);
		put_raw(l, "=", 1);
	}
}

void
log_strn(struct log_line *l, const char *key, const char *value, size_t len)
{
	size_t mark = l->len;
	bool quote;

	if (!l->enabled || l->truncated)
		return;
	put_key(l, key);
	quote = l->format == LOG_FORMAT_JSON || logfmt_needs_quotes(value, len);
	if (quote)
		put_raw(l, "\"", 1);
	put_escaped(l, value, len);
	if (quote)
		put_raw(l, "\"", 1);
	/* A field is written whole or not at all, so the line stays valid. */
	if (l->truncated)
		l->len = mark;
	journal_field(l, key, value, len);
}

void
log_str(struct log_line *l, const char *key, const char *value)
{
	if (value == NULL)
		value = "-";
	log_strn(l, key, value, strlen(value));
}

void
log_strf(struct log_line *l, const char *key, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	if (!l->enabled)
		return;
	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(buf))
		n = sizeof(buf) - 1;
	log_strn(l, key, buf, (size_t)n);
}

/* A number is written bare in both formats (JSON number, logfmt value). */
static void
put_number(struct log_line *l, const char *key, const char *digits)
{
	size_t mark = l->len;

	if (!l->enabled || l->truncated)
		return;
	put_key(l, key);
	put_str(l, digits);
	if (l->truncated)
		l->len = mark;
	journal_field(l, key, digits, strlen(digits));
}

void
log_uint(struct log_line *l, const char *key, uint64_t value)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%llu", (unsigned long long)value);
	put_number(l, key, buf);
}

void
log_ms(struct log_line *l, const char *key, double ms)
{
	char buf[32];

	if (!(ms >= 0) || !isfinite(ms))	/* NaN, inf: not JSON */
		ms = 0;
	if (ms > 1e15)
		ms = 1e15;
	snprintf(buf, sizeof(buf), "%.1f", ms);
	put_number(l, key, buf);
}

static void
line_begin(struct log_line *l, enum log_format format, enum log_level level,
    const char *event, int64_t unix_ms, bool journal)
{
	char ts[64];
	struct tm tm;
	time_t secs = (time_t)(unix_ms / 1000);

	l->format = format;
	l->level = level;
	l->enabled = true;
	l->truncated = false;
	l->journal = journal;
	l->event = event;
	l->len = 0;
	l->start = 0;
	l->nfields = 0;
	l->jlen = 0;
	if (journal) {
		/* Room for MESSAGE=, so the journal gets the line as one iovec. */
		put_str(l, "MESSAGE=");
		l->start = l->len;
	}
	if (format == LOG_FORMAT_JSON)
		put_raw(l, "{", 1);
	gmtime_r(&secs, &tm);
	snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, (int)(unix_ms % 1000));
	log_str(l, "ts", ts);
	l->nfields = 0;		/* the journal has its own timestamp */
	l->jlen = 0;
	l->after_ts = l->len + 1;
	log_str(l, "level", level_names[level]);
	log_str(l, "event", event);
}

void
log_line_begin_at(struct log_line *l, enum log_format format,
    enum log_level level, const char *event, int64_t unix_ms)
{
	line_begin(l, format, level, event, unix_ms, false);
}

void
log_line_begin(struct log_line *l, enum log_level level, const char *event)
{
	struct timespec now;

	if (!log_enabled(level)) {
		l->enabled = false;
		return;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	line_begin(l, log_cfg.format, level, event,
	    (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000,
	    log_cfg.journal);
}

const char *
log_line_finish(struct log_line *l)
{
	if (!l->enabled)
		return NULL;
	if (l->truncated && l->format == LOG_FORMAT_JSON)
		put_tail(l, ",\"truncated\":\"yes\"");
	else if (l->truncated)
		put_tail(l, " truncated=yes");
	if (l->format == LOG_FORMAT_JSON)
		put_tail(l, "}");
	put_tail(l, "\n");
	l->buf[l->len] = '\0';
	return l->buf + l->start;
}

/* Sends a finished journal-mode line; false if the journal is not there. */
static bool
journal_send(struct log_line *l)
{
	static const int priority[] = { 3, 4, 6, 7 };	/* err warn info debug */
	struct iovec iov[LOG_JOURNAL_FIELDS + 3];
	char prio[16], saved[8] = { 0 };
	char *msg = l->buf;
	bool sent;
	int n = 0;

	/*
	 * The journal keeps its own time: in logfmt, MESSAGE= overwrites the
	 * end of "ts=... " (put back after, for a fallback to stderr).
	 */
	if (l->format == LOG_FORMAT_LOGFMT && l->after_ts >= 2 * 8) {
		msg = l->buf + l->after_ts - 8;
		memcpy(saved, msg, 8);
		memcpy(msg, "MESSAGE=", 8);
	}
	iov[n].iov_base = msg;
	iov[n++].iov_len = (size_t)(l->buf + l->len - 1 - msg);	/* no \n */
	snprintf(prio, sizeof(prio), "PRIORITY=%d", priority[l->level]);
	iov[n].iov_base = prio;
	iov[n++].iov_len = strlen(prio);
	iov[n].iov_base = (char *)(uintptr_t)"SYSLOG_IDENTIFIER=tlsfwd";
	iov[n++].iov_len = strlen("SYSLOG_IDENTIFIER=tlsfwd");
	for (int i = 0; i < l->nfields; i++) {
		iov[n].iov_base = l->jbuf + l->field_off[i];
		iov[n++].iov_len = l->field_len[i];
	}
	sent = sd_journal_sendv(iov, n) >= 0;
	if (msg != l->buf)
		memcpy(msg, saved, 8);
	return sent;
}

const char *
log_line_end(struct log_line *l)
{
	const char *line = log_line_finish(l);
	size_t off = 0;

	if (line == NULL)
		return NULL;
	if (l->journal && journal_send(l))
		return line;
	/* stderr is blocking; retry on EINTR and short writes. */
	off = l->start;
	while (off < l->len) {
		ssize_t n = write(log_cfg.fd, l->buf + off, l->len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	return line;
}

void
log_msg(enum log_level level, const char *event, const char *fmt, ...)
{
	struct log_line l;
	char msg[1024];
	va_list ap;

	log_line_begin(&l, level, event);
	if (!l.enabled)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_str(&l, "msg", msg);
	log_line_end(&l);
}
