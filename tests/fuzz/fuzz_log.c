/*
 * fuzz_log.c - libFuzzer target for the log line builder of daemon/log.h.
 *
 * Input: a flags byte (format, how the line is begun and ended, level,
 * event), six timestamp bytes, then fields: an op byte (key and kind), a
 * 16-bit little-endian length and that many value bytes. Every rendered
 * line is checked here, and any violation aborts:
 *
 *  - it is exactly one line: one '\n', at the end, and no other byte below
 *    0x20 nor 0x7f; it is valid UTF-8 and shorter than LOG_LINE_MAX;
 *  - logfmt: it parses as key=value pairs, and every value decodes to the
 *    very bytes that were logged;
 *  - JSON: it is one flat object of string and number members, and every
 *    string decodes to the logged bytes, with the documented exception that
 *    control bytes and invalid UTF-8 read as the four characters \xHH;
 *  - the fields are the ones logged, in order, except that once a field
 *    does not fit, it and all later ones are left out and the line ends with
 *    truncated=yes; and a field is left out only if it really did not fit;
 *  - log_line_end() writes exactly the returned line, and journal mode keeps
 *    each field's raw value as TLSFWD_KEY=value.
 *
 * Journal mode sends through sd_journal_sendv(), which this target defines
 * itself: the record is checked, and nothing reaches a real journal. Half of
 * the time the stub fails, and the line must then go to the fd intact.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fuzz.h"
#include "log.h"

/* log.c keeps this much room for the closing "}\n" or " truncated=yes\n". */
#define TAIL_RESERVE	32
/* More fields than any line can hold (a field is at least 4 bytes). */
#define OPS_MAX		(LOG_LINE_MAX / 4 + 8)
/* Earliest and latest timestamps: 1970 to the end of 9999. */
#define TS_MS_MAX	253402300799999LL

static const char *const keys[16] = { "service", "conn", "client",
    "upstream", "sni", "result", "error", "peer", "issuer", "alpn",
    "version", "msg", "client_cert", "alert", "reason", "k" };
static const char *const events[8] = { "handshake", "close", "config",
    "start", "refused", "reload", "x", "" };

enum { MODE_FINISH, MODE_END, MODE_JOURNAL, MODE_MSG };
enum { OP_STRN, OP_STR, OP_STRF, OP_UINT, OP_MS, OP_NULL };

/* A field as it should read back from the line. */
struct field {
	const char	*key;
	char		*val;
	size_t		 len;
	int		 number;	/* bare digits: log_uint, log_ms */
};

static struct field want[OPS_MAX + 3];
static int nwant;
static int pipefd[2] = { -1, -1 };

/* What the stub sd_journal_sendv() got, and what it answers. */
static struct {
	int	calls;
	int	result;
	int	n;
	char	iov[LOG_JOURNAL_FIELDS + 3][LOG_LINE_MAX];
	size_t	len[LOG_JOURNAL_FIELDS + 3];
} journal;

int	sd_journal_sendv(const struct iovec *iov, int n);

int
sd_journal_sendv(const struct iovec *iov, int n)
{
	FUZZ_CHECK(n >= 3 && n <= LOG_JOURNAL_FIELDS + 3);
	journal.calls++;
	journal.n = n;
	for (int i = 0; i < n; i++) {
		FUZZ_CHECK(iov[i].iov_len < LOG_LINE_MAX);
		memcpy(journal.iov[i], iov[i].iov_base, iov[i].iov_len);
		journal.len[i] = iov[i].iov_len;
	}
	return journal.result;
}

static void
want_add(const char *key, const char *val, size_t len, int number)
{
	struct field *f = &want[nwant++];

	f->key = key;
	f->val = malloc(len + 1);
	FUZZ_CHECK(f->val != NULL);
	memcpy(f->val, val, len);
	f->val[len] = '\0';
	f->len = len;
	f->number = number;
}

static void
want_reset(void)
{
	for (int i = 0; i < nwant; i++)
		free(want[i].val);
	nwant = 0;
}

/* Length of the valid UTF-8 sequence at s (1-4), 0 if invalid. */
static size_t
utf8_len(const unsigned char *s, size_t avail)
{
	unsigned int cp, min;
	size_t n;

	if (s[0] < 0x80)
		return 1;
	if ((s[0] & 0xe0) == 0xc0)
		n = 2, cp = s[0] & 0x1fu, min = 0x80;
	else if ((s[0] & 0xf0) == 0xe0)
		n = 3, cp = s[0] & 0x0fu, min = 0x800;
	else if ((s[0] & 0xf8) == 0xf0)
		n = 4, cp = s[0] & 0x07u, min = 0x10000;
	else
		return 0;
	if (n > avail)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3fu);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/* What a JSON parser reads back for value: \xHH for what log.c hides. */
static char *
json_expected(const char *value, size_t len, size_t *outlen)
{
	const unsigned char *s = (const unsigned char *)value;
	char *out = malloc(len * 4 + 1);
	size_t i = 0, o = 0;

	FUZZ_CHECK(out != NULL);
	while (i < len) {
		size_t n = utf8_len(s + i, len - i);

		if (n > 1 || (n == 1 && ((s[i] >= 0x20 && s[i] < 0x7f) ||
		    s[i] == '\n' || s[i] == '\r' || s[i] == '\t'))) {
			memcpy(out + o, s + i, n);
			o += n;
			i += n;
		} else {
			o += (size_t)sprintf(out + o, "\\x%02x", s[i]);
			i++;
		}
	}
	out[o] = '\0';
	*outlen = o;
	return out;
}

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The line's shape: one line, no raw control bytes, valid UTF-8. */
static void
check_one_line(const char *line, size_t len)
{
	const unsigned char *s = (const unsigned char *)line;

	FUZZ_CHECK(len >= 2 && len < LOG_LINE_MAX);
	FUZZ_CHECK(strlen(line) == len);
	FUZZ_CHECK(s[len - 1] == '\n');
	for (size_t i = 0; i < len - 1;) {
		size_t n = utf8_len(s + i, len - 1 - i);

		FUZZ_CHECK(n > 0);
		FUZZ_CHECK(s[i] >= 0x20 && s[i] != 0x7f);
		i += n;
	}
}

static void
check_ts(const char *ts, size_t len)
{
	static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";

	FUZZ_CHECK(len == sizeof(shape) - 1);
	for (size_t i = 0; i < len; i++)
		FUZZ_CHECK(shape[i] == 'd' ? (ts[i] >= '0' && ts[i] <= '9') :
		    ts[i] == shape[i]);
}

/*
 * A parsed field against the one expected: read back is the value read
 * from the line, decoded.
 */
static void
check_field(const struct field *w, const char *key, size_t keylen,
    const char *val, size_t vallen, int number, int json)
{
	FUZZ_CHECK(strlen(w->key) == keylen &&
	    memcmp(w->key, key, keylen) == 0);
	if (w->number && json)
		FUZZ_CHECK(number);
	if (strcmp(w->key, "ts") == 0) {
		check_ts(val, vallen);
		return;
	}
	if (json && !w->number) {
		size_t elen;
		char *e = json_expected(w->val, w->len, &elen);

		FUZZ_CHECK(!number);
		FUZZ_CHECK(elen == vallen && memcmp(e, val, vallen) == 0);
		free(e);
	} else {
		FUZZ_CHECK(w->len == vallen && memcmp(w->val, val, vallen) == 0);
	}
}

/*
 * Fields read back match want[0..k-1] in order; a "truncated" member may
 * only come last. Returns k; *trunc says whether truncated=yes was there.
 */
static int
match_prefix(int k, const char *key, size_t keylen, const char *val,
    size_t vallen, int number, int json, int *trunc)
{
	FUZZ_CHECK(!*trunc);	/* nothing after truncated=yes */
	if (keylen == 9 && memcmp(key, "truncated", 9) == 0) {
		FUZZ_CHECK(vallen == 3 && memcmp(val, "yes", 3) == 0);
		*trunc = 1;
		return k;
	}
	FUZZ_CHECK(k < nwant);
	check_field(&want[k], key, keylen, val, vallen, number, json);
	return k + 1;
}

/* Parses a JSON string at *p (past the quote) into buf; 0 if invalid. */
static int
json_string(const char **pp, char *buf, size_t *len)
{
	const char *p = *pp;
	size_t n = 0;

	for (;;) {
		unsigned char c = (unsigned char)*p++;

		FUZZ_CHECK(c >= 0x20);	/* raw control bytes are not JSON */
		if (c == '"')
			break;
		if (c != '\\') {
			buf[n++] = (char)c;
			continue;
		}
		switch (*p++) {
		case '"': buf[n++] = '"'; break;
		case '\\': buf[n++] = '\\'; break;
		case '/': buf[n++] = '/'; break;
		case 'b': buf[n++] = '\b'; break;
		case 'f': buf[n++] = '\f'; break;
		case 'n': buf[n++] = '\n'; break;
		case 'r': buf[n++] = '\r'; break;
		case 't': buf[n++] = '\t'; break;
		default:
			/* Not JSON (log.c never writes \u either). */
			FUZZ_CHECK(!"bad JSON string escape");
		}
	}
	*pp = p;
	*len = n;
	return 1;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static size_t
json_number(const char *p)
{
	const char *s = p, *d;

	if (*p == '-')
		p++;
	d = p;
	while (*p >= '0' && *p <= '9')
		p++;
	FUZZ_CHECK(p > d && (*d != '0' || p == d + 1));
	if (*p == '.') {
		d = ++p;
		while (*p >= '0' && *p <= '9')
			p++;
		FUZZ_CHECK(p > d);
	}
	if (*p == 'e' || *p == 'E') {
		p++;
		if (*p == '+' || *p == '-')
			p++;
		d = p;
		while (*p >= '0' && *p <= '9')
			p++;
		FUZZ_CHECK(p > d);
	}
	return (size_t)(p - s);
}

/* Returns the number of expected fields found; checks everything else. */
static int
check_json(const char *line, int *trunc)
{
	static char key[LOG_LINE_MAX], val[LOG_LINE_MAX];
	const char *p = line;
	size_t keylen, vallen;
	int k = 0;

	FUZZ_CHECK(*p++ == '{');
	for (;;) {
		int number = 0;

		FUZZ_CHECK(*p++ == '"');
		json_string(&p, key, &keylen);
		FUZZ_CHECK(*p++ == ':');
		if (*p == '"') {
			p++;
			json_string(&p, val, &vallen);
		} else {
			vallen = json_number(p);
			memcpy(val, p, vallen);
			p += vallen;
			number = 1;
		}
		k = match_prefix(k, key, keylen, val, vallen, number, 1,
		    trunc);
		if (*p != ',')
			break;
		p++;
	}
	FUZZ_CHECK(strcmp(p, "}\n") == 0);
	return k;
}

static int
check_logfmt(const char *line, int *trunc)
{
	static char val[LOG_LINE_MAX];
	const char *p = line;
	int k = 0;

	for (;;) {
		const char *key = p;
		size_t keylen, vallen = 0;

		while ((*p >= 'a' && *p <= 'z') || *p == '_')
			p++;
		keylen = (size_t)(p - key);
		FUZZ_CHECK(keylen > 0 && *p++ == '=');
		if (*p == '"') {
			for (p++; *p != '"'; p++) {
				int hi, lo;

				FUZZ_CHECK(*p != '\0' && *p != '\n');
				if (*p != '\\') {
					val[vallen++] = *p;
					continue;
				}
				switch (*++p) {
				case '"': val[vallen++] = '"'; break;
				case '\\': val[vallen++] = '\\'; break;
				case 'n': val[vallen++] = '\n'; break;
				case 'r': val[vallen++] = '\r'; break;
				case 't': val[vallen++] = '\t'; break;
				case 'x':
					hi = hexval(p[1]);
					lo = p[1] != '\0' ? hexval(p[2]) : -1;
					FUZZ_CHECK(hi >= 0 && lo >= 0);
					val[vallen++] = (char)(hi << 4 | lo);
					p += 2;
					break;
				default:
					FUZZ_CHECK(!"bad logfmt escape");
				}
			}
			p++;
		} else {
			/* Bare: printable ASCII that needs no quoting. */
			while ((unsigned char)*p > 0x20 &&
			    (unsigned char)*p < 0x7f && *p != '=' &&
			    *p != '"' && *p != '\\')
				val[vallen++] = *p++;
			FUZZ_CHECK(vallen > 0);
		}
		k = match_prefix(k, key, keylen, val, vallen, 0, 0, trunc);
		if (*p != ' ')
			break;
		p++;
	}
	FUZZ_CHECK(strcmp(p, "\n") == 0);
	return k;
}

/* Every check on a finished line; nops fields were logged after event. */
static void
check_line(const char *line, size_t len, enum log_format format)
{
	int trunc = 0, k;

	check_one_line(line, len);
	if (format == LOG_FORMAT_JSON)
		k = check_json(line, &trunc);
	else
		k = check_logfmt(line, &trunc);
	FUZZ_CHECK(k >= 3);	/* ts, level and event always fit */
	/* Fields are left out only when the line is marked truncated. */
	FUZZ_CHECK(trunc == (k < nwant));
}

/* Journal mode: TLSFWD_KEY=raw value for level, event and the fields. */
static void
check_journal(const struct log_line *l, int event_handshake)
{
	int k = 1;	/* want[0] is ts, which the journal does not get */

	FUZZ_CHECK(l->nfields <= LOG_JOURNAL_FIELDS);
	for (int i = 0; i < l->nfields; i++) {
		const char *f = l->jbuf + l->field_off[i];
		size_t flen = l->field_len[i], nlen;
		char name[64];

		FUZZ_CHECK((size_t)l->field_off[i] + flen <= l->jlen);
		FUZZ_CHECK(l->jlen <= sizeof(l->jbuf));
		/* Fields that did not fit are skipped, so look further. */
		for (;; k++) {
			const char *key;

			FUZZ_CHECK(k < nwant || !"journal field not logged");
			key = want[k].key;
			if (event_handshake && strcmp(key, "version") == 0)
				key = "tls_version";
			nlen = (size_t)snprintf(name, sizeof(name), "TLSFWD_");
			for (; *key != '\0'; key++)
				name[nlen++] = (char)(*key >= 'a' && *key <= 'z' ?
				    *key - 'a' + 'A' : *key);
			name[nlen++] = '=';
			if (flen == nlen + want[k].len &&
			    memcmp(f, name, nlen) == 0 &&
			    memcmp(f + nlen, want[k].val, want[k].len) == 0)
				break;
		}
		k++;
	}
}

/*
 * The record sent: MESSAGE= the line without '\n' (and in logfmt without
 * ts, which the journal has), PRIORITY, SYSLOG_IDENTIFIER, the fields.
 */
static void
check_journal_record(const struct log_line *l, const char *line,
    enum log_level level)
{
	static const char *const prio[] = { "PRIORITY=3", "PRIORITY=4",
	    "PRIORITY=6", "PRIORITY=7" };
	size_t len = strlen(line) - 1, skip = 0;

	FUZZ_CHECK(journal.n == 3 + l->nfields);
	if (l->format == LOG_FORMAT_LOGFMT) {
		/* "ts=" and 24 characters of timestamp, and the space. */
		FUZZ_CHECK(strncmp(line, "ts=", 3) == 0 && line[27] == ' ');
		skip = 28;
	}
	FUZZ_CHECK(journal.len[0] == 8 + len - skip);
	FUZZ_CHECK(memcmp(journal.iov[0], "MESSAGE=", 8) == 0);
	FUZZ_CHECK(memcmp(journal.iov[0] + 8, line + skip, len - skip) == 0);
	FUZZ_CHECK(journal.len[1] == strlen(prio[level]) &&
	    memcmp(journal.iov[1], prio[level], journal.len[1]) == 0);
	FUZZ_CHECK(journal.len[2] == strlen("SYSLOG_IDENTIFIER=tlsfwd") &&
	    memcmp(journal.iov[2], "SYSLOG_IDENTIFIER=tlsfwd",
	    journal.len[2]) == 0);
	for (int i = 0; i < l->nfields; i++)
		FUZZ_CHECK(journal.len[3 + i] == l->field_len[i] &&
		    memcmp(journal.iov[3 + i], l->jbuf + l->field_off[i],
		    l->field_len[i]) == 0);
}

/* Reads what log_line_end() or log_msg() wrote; "" if nothing. */
static size_t
drain_pipe(char *buf, size_t size)
{
	size_t n = 0;

	for (;;) {
		ssize_t r = read(pipefd[0], buf + n, size - 1 - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
		FUZZ_CHECK(n < size - 1);
	}
	buf[n] = '\0';
	return n;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (pipe2(pipefd, O_CLOEXEC) != 0 ||
	    fcntl(pipefd[0], F_SETFL, O_NONBLOCK) != 0)
		abort();
	return 0;
}

/* Logs one field as op says, and records what the line should read. */
static void
add_field(struct log_line *l, unsigned int op, const uint8_t *v,
    size_t vlen)
{
	const char *key = keys[op & 0x0f];
	char num[32], *s;
	uint64_t u = 0;
	double ms = 0;
	size_t n;

	switch ((op >> 4) % 8) {
	case OP_STR:
		/* Up to the first NUL, like any C string. */
		if ((s = malloc(vlen + 1)) == NULL)
			abort();
		memcpy(s, v, vlen);
		s[vlen] = '\0';
		log_str(l, key, s);
		want_add(key, s, strlen(s), 0);
		free(s);
		break;
	case OP_STRF:
		if ((s = malloc(vlen + 1)) == NULL)
			abort();
		memcpy(s, v, vlen);
		s[vlen] = '\0';
		log_strf(l, key, "%s", s);
		/* log_strf() formats into 1024 bytes. */
		n = strlen(s);
		want_add(key, s, n < 1023 ? n : 1023, 0);
		free(s);
		break;
	case OP_UINT:
		memcpy(&u, v, vlen < sizeof(u) ? vlen : sizeof(u));
		log_uint(l, key, u);
		snprintf(num, sizeof(num), "%llu", (unsigned long long)u);
		want_add(key, num, strlen(num), 1);
		break;
	case OP_NULL:
		log_str(l, key, NULL);
		want_add(key, "-", 1, 0);
		break;
	case OP_MS:
		memcpy(&ms, v, vlen < sizeof(ms) ? vlen : sizeof(ms));
		log_ms(l, key, ms);
		/* As documented: NaN and negatives read 0, huge ones 1e15. */
		if (!(ms >= 0) || !isfinite(ms))
			ms = 0;
		if (ms > 1e15)
			ms = 1e15;
		snprintf(num, sizeof(num), "%.1f", ms);
		want_add(key, num, strlen(num), 1);
		break;
	default:
		log_strn(l, key, (const char *)v, vlen);
		want_add(key, (const char *)v, vlen, 0);
		break;
	}
}

/* The rendered size of the last field in want[], alone on a fresh line. */
static size_t
field_size(enum log_format format, unsigned int op, const uint8_t *v,
    size_t vlen)
{
	static struct log_line scratch;
	struct field saved = want[--nwant];
	size_t base;

	log_line_begin_at(&scratch, format, LOG_INFO, "x", 0);
	base = scratch.len;
	add_field(&scratch, op, v, vlen);
	free(want[--nwant].val);
	want[nwant++] = saved;
	return scratch.truncated ? LOG_LINE_MAX : scratch.len - base;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct log_line l;
	static char out[2 * LOG_LINE_MAX];
	enum log_format format;
	enum log_level level;
	const char *event, *line;
	int mode, nops = 0;
	int64_t ts = 0;
	size_t i, n;

	if (size < 7)
		return 0;
	format = data[0] & 1 ? LOG_FORMAT_JSON : LOG_FORMAT_LOGFMT;
	mode = (data[0] >> 1) & 3;
	level = (enum log_level)((data[0] >> 3) & 3);
	event = events[data[0] >> 5];
	for (i = 1; i < 7; i++)
		ts = ts << 8 | data[i];
	ts %= TS_MS_MAX + 1;
	data += 7;
	size -= 7;
	want_reset();

	if (mode == MODE_MSG) {
		/* log_msg(): the rest is the message, under a threshold. */
		enum log_level threshold = (enum log_level)(size > 0 ?
		    data[0] & 3 : LOG_DEBUG);
		char *msg = malloc(size + 1);

		FUZZ_CHECK(msg != NULL);
		memcpy(msg, data, size);
		msg[size] = '\0';
		log_setup(threshold, format, pipefd[1]);
		log_msg(level, event, "%s", msg);
		n = drain_pipe(out, sizeof(out));
		if (level > threshold) {
			FUZZ_CHECK(n == 0);
		} else {
			want_add("ts", "", 0, 0);
			want_add("level", log_level_name(level),
			    strlen(log_level_name(level)), 0);
			want_add("event", event, strlen(event), 0);
			/* log_msg() formats into 1024 bytes. */
			want_add("msg", msg, strlen(msg) < 1023 ? strlen(msg) :
			    1023, 0);
			check_line(out, n, format);
		}
		free(msg);
		want_reset();
		return 0;
	}

	if (mode == MODE_JOURNAL) {
		log_setup(LOG_DEBUG, format, pipefd[1]);
		log_use_journal(true);
		log_line_begin(&l, level, event);
		log_use_journal(false);
	} else {
		log_line_begin_at(&l, format, level, event, ts);
	}
	want_add("ts", "", 0, 0);
	want_add("level", log_level_name(level), strlen(log_level_name(level)),
	    0);
	want_add("event", event, strlen(event), 0);
	FUZZ_CHECK(l.enabled && !l.truncated);

	while (size >= 3 && nops < OPS_MAX) {
		unsigned int op = data[0];
		size_t vlen = (size_t)data[1] | (size_t)data[2] << 8;
		size_t mark = l.len;
		bool was_truncated = l.truncated;

		data += 3;
		size -= 3;
		if (vlen > size)
			vlen = size;
		add_field(&l, op, data, vlen);
		nops++;
		if (!was_truncated && l.truncated) {
			/* It was left out: it must really not have fit. */
			FUZZ_CHECK(l.len == mark);
			FUZZ_CHECK(mark + field_size(format, op, data, vlen) >
			    LOG_LINE_MAX - TAIL_RESERVE);
		} else if (!l.truncated) {
			FUZZ_CHECK(l.len > mark);
		} else {
			FUZZ_CHECK(l.len == mark);
		}
		data += vlen;
		size -= vlen;
	}

	if (mode == MODE_END || mode == MODE_JOURNAL) {
		log_setup(LOG_DEBUG, format, pipefd[1]);
		journal.calls = 0;
		journal.result = ts & 1 ? -1 : 0;
		line = log_line_end(&l);
		FUZZ_CHECK(line != NULL);
		FUZZ_CHECK(journal.calls == (mode == MODE_JOURNAL));
		n = drain_pipe(out, sizeof(out));
		if (mode == MODE_JOURNAL && journal.result >= 0)
			FUZZ_CHECK(n == 0);
		else
			FUZZ_CHECK(n == strlen(line) && memcmp(out, line, n) == 0);
	} else {
		line = log_line_finish(&l);
		FUZZ_CHECK(line != NULL);
	}
	FUZZ_CHECK(line == l.buf + l.start);
	FUZZ_CHECK(l.len < LOG_LINE_MAX && l.buf[l.len] == '\0');
	check_line(line, l.len - l.start, format);
	if (mode == MODE_JOURNAL) {
		FUZZ_CHECK(l.start == 8 && memcmp(l.buf, "MESSAGE=", 8) == 0);
		check_journal(&l, strcmp(event, "handshake") == 0);
		check_journal_record(&l, line, level);
	}
	want_reset();
	return 0;
}
