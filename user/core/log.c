#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The process-wide settings, fixed at start-up before any thread exists
 * and only read afterwards. */
static enum log_level max_level = LOG_INFO;
static bool stamped;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void log_set_level(enum log_level level)
{
	max_level = level;
}

enum log_level log_get_level(void)
{
	return max_level;
}

/* systemd says where a service's stderr goes to the journal: the device
 * and inode of that stream in JOURNAL_STREAM. Anything else (a terminal, a
 * file, a pipe) is told apart by stderr's own device and inode. */
static bool stderr_is_journal(void)
{
	const char *stream = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!stream || sscanf(stream, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st))
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_stamp_unless_journal(void)
{
	stamped = !stderr_is_journal();
}

/* "2026-12-06T02:20:01.123Z " when stamped, "" otherwise. */
static void format_stamp(char *out, size_t size)
{
	struct timespec now;
	struct tm tm;

	out[0] = '\0';
	if (!stamped || clock_gettime(CLOCK_REALTIME, &now) || !gmtime_r(&now.tv_sec, &tm))
		return;
	snprintf(out, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000);
}

static void log_vmsg(enum log_level level, const char *fmt, va_list ap)
{
	char line[1024], stamp[32];

	vsnprintf(line, sizeof(line), fmt, ap);
	format_stamp(stamp, sizeof(stamp));
	fprintf(stderr, "%ssonde: %s: %s\n", stamp, level_names[level], line);
}

int log_library(enum log_level level, const char *fmt, va_list ap)
{
	char stamp[32];

	if (level > max_level)
		return 0;
	format_stamp(stamp, sizeof(stamp));
	fprintf(stderr, "%ssonde: %s: ", stamp, level_names[level]);
	return vfprintf(stderr, fmt, ap);
}

void log_notice(const char *fmt, ...)
{
	char line[1024], stamp[32];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	format_stamp(stamp, sizeof(stamp));
	fprintf(stderr, "%ssonde: %s\n", stamp, line);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	if (level > max_level)
		return;
	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
}

static uint64_t monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void log_limited(struct log_limit *limit, enum log_level level, const char *fmt, ...)
{
	uint64_t now = monotonic_ns();
	va_list ap;

	if (level > max_level)
		return;
	if (now - limit->window_start >= limit->period_ns) {
		limit->window_start = now;
		limit->used = 0;
	}
	if (limit->used >= limit->burst) {
		limit->suppressed++;
		return;
	}
	limit->used++;
	if (limit->suppressed) {
		log_msg(level, "(%llu similar messages suppressed)",
			(unsigned long long)limit->suppressed);
		limit->suppressed = 0;
	}
	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
}

int errorf(char *err, size_t size, const char *fmt, ...)
{
	va_list ap;

	if (!err || !size)
		return -1;
	va_start(ap, fmt);
	vsnprintf(err, size, fmt, ap);
	va_end(ap);
	return -1;
}
