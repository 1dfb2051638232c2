/* Logging to stderr with a level, and a rate limiter for messages that
 * traffic can trigger (one bad peer must not flood the journal). Each line
 * starts with its UTC time, except where stderr is the journal, which
 * stamps lines itself. */
#ifndef SONDE_LOG_H
#define SONDE_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Lines are stamped with their time from now on, unless stderr is the
 * journal (systemd's JOURNAL_STREAM). */
void log_stamp_unless_journal(void);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A library's message (its own text, newlines and all: a verifier log
 * runs to many lines), after the stamp and level. Returns what vfprintf
 * does. */
int log_library(enum log_level level, const char *fmt, va_list ap);
/* A line of no level, always written: the agent's start and end. */
void log_notice(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Allows `burst` messages per `period_ns`, then counts the suppressed ones
 * and reports their number with the next message let through. */
struct log_limit {
	uint64_t period_ns;
	uint32_t burst;
	uint32_t used;
	uint64_t window_start;
	uint64_t suppressed;
};

#define LOG_LIMIT_INIT(period_s, burst_n) { .period_ns = (period_s) * 1000000000ull, .burst = (burst_n) }

void log_limited(struct log_limit *limit, enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Formats an error message into err (which may be NULL) and returns -1:
 * for functions that report failures to their caller with context. */
int errorf(char *err, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
