/* log.h - structured log lines (logfmt or JSON) on stderr. */
#ifndef TLSFWD_LOG_H
#define TLSFWD_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };
enum log_format { LOG_FORMAT_LOGFMT, LOG_FORMAT_JSON };

/* Longest line emitted; longer ones are cut and end with truncated=yes. */
#define LOG_LINE_MAX 4096
/* Most fields a line carries to the journal. */
#define LOG_JOURNAL_FIELDS 40

/*
 * One line under construction. Fields are appended in order and escaped for
 * the output format as they are added; log_line_end() writes the line with a
 * single write(2) so lines from several threads never interleave.
 */
struct log_line {
	enum log_format	format;
	enum log_level	level;
	bool		enabled;	/* level passes the threshold */
	bool		truncated;
	bool		journal;	/* also collect TLSFWD_* fields */
	const char     *event;
	size_t		start;		/* 8 when buf begins with MESSAGE= */
	size_t		after_ts;	/* offset of the field after ts */
	size_t		len;
	char		buf[LOG_LINE_MAX];
	/* Journal mode: "TLSFWD_KEY=raw value" entries, one per field. */
	int		nfields;
	uint16_t	field_off[LOG_JOURNAL_FIELDS];
	uint16_t	field_len[LOG_JOURNAL_FIELDS];
	size_t		jlen;
	char		jbuf[LOG_LINE_MAX];
};

void	log_setup(enum log_level level, enum log_format format, int fd);
/*
 * True when fd is the journal's stream (JOURNAL_STREAM names its device and
 * inode): records then go to the journal with structured fields.
 */
bool	log_fd_is_journal(int fd);
void	log_use_journal(bool on);
bool	log_enabled(enum log_level level);
const char *log_level_name(enum log_level level);
int	log_level_parse(const char *s, enum log_level *out);
int	log_format_parse(const char *s, enum log_format *out);

/* Starts a line with ts, level and event. */
void	log_line_begin(struct log_line *l, enum log_level level,
	    const char *event);
/* Same, with an explicit format and timestamp (tests, fuzzing). */
void	log_line_begin_at(struct log_line *l, enum log_format format,
	    enum log_level level, const char *event, int64_t unix_ms);
void	log_str(struct log_line *l, const char *key, const char *value);
void	log_strn(struct log_line *l, const char *key, const char *value,
	    size_t len);
void	log_uint(struct log_line *l, const char *key, uint64_t value);
void	log_ms(struct log_line *l, const char *key, double ms);
void	log_strf(struct log_line *l, const char *key, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));
/* Finishes the line; returns it NUL-terminated (for tests) after writing. */
const char *log_line_end(struct log_line *l);
/* Finishes the line without writing it anywhere. */
const char *log_line_finish(struct log_line *l);

/* A free-text message: event=EVENT msg="...". */
void	log_msg(enum log_level level, const char *event, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));

#endif
