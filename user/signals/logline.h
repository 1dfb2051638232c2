/* What a log line says: its severity where it says one (Python logging
 * and uvicorn prefixes, WARNING or ERROR words in the usual places, JSON
 * level/severity/levelname, logfmt level=, syslog <N>), and for a JSON
 * object or a logfmt line, its message as the body and its other fields
 * as attributes. Redaction replaces configured patterns in the body and
 * in string attributes. Runs on the export thread. */
#ifndef SONDE_LOGLINE_H
#define SONDE_LOGLINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct attr_sink;

/* OpenTelemetry SeverityNumber: the first of each range. */
enum log_severity {
	SEVERITY_UNSET = 0,
	SEVERITY_TRACE = 1,
	SEVERITY_DEBUG = 5,
	SEVERITY_INFO = 9,
	SEVERITY_WARN = 13,
	SEVERITY_ERROR = 17,
	SEVERITY_FATAL = 21,
};

/* Fields of a structured line: packed key and value strings. */
#define LOGLINE_FIELDS_MAX 32
#define LOGLINE_TEXT_MAX 8192

enum logline_value { LOGV_STR, LOGV_INT, LOGV_DOUBLE, LOGV_BOOL };

struct logline_field {
	const char *key;
	const char *value; /* text form; ints, doubles and bools parsed from it */
	enum logline_value type;
};

struct logline {
	const char *body;   /* the message: the line, or a structured line's message field */
	size_t body_len;
	enum log_severity severity;
	char severity_text[16]; /* as the line says it, e.g. "WARNING" */
	struct logline_field field[LOGLINE_FIELDS_MAX];
	size_t nfields;
	bool fields_cut;    /* more fields than room */
	char text[LOGLINE_TEXT_MAX]; /* keys and values the fields point into */
};

/* Parses line[0..len) into out; the body may point into line or into
 * out->text. */
void logline_parse(const char *line, size_t len, struct logline *out);
/* The fields as attributes (ints, doubles and bools typed). */
void logline_attributes(const struct logline *l, const struct attr_sink *sink);

/* Patterns whose matches are replaced by "[REDACTED]" (POSIX extended
 * regular expressions). */
struct log_redaction;

/* `patterns`: expressions separated by ";;" (a ";" alone may be part of
 * one). NULL with the reason in err when one does not compile. */
struct log_redaction *log_redaction_new(const char *patterns, char *err, size_t err_size);
void log_redaction_free(struct log_redaction *r);
/* Writes text with every match replaced into out (NUL-terminated, cut to
 * size); returns its length. */
size_t log_redact(const struct log_redaction *r, const char *text, size_t len, char *out,
		  size_t size);

#endif
