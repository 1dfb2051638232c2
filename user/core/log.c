#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

/* The one process-wide setting: the level is fixed at start-up, before any
 * thread exists, and only read afterwards. */
static enum log_level max_level = LOG_INFO;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void log_set_level(enum log_level level)
{
	max_level = level;
}

enum log_level log_get_level(void)
{
	return max_level;
}

static void log_vmsg(enum log_level level, const char *fmt, va_list ap)
{
	char line[1024];

	vsnprintf(line, sizeof(line), fmt, ap);
	fprintf(stderr, "sonde: %s: %s\n", level_names[level], line);
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
