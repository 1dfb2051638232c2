#include "clock.h"

#include <time.h>

static int64_t ts_ns(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000000000ll + ts->tv_nsec;
}

uint64_t monotonic_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts_ns(&ts);
}

uint64_t realtime_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts_ns(&ts);
}

/* Read realtime between two monotonic reads and keep the tightest of a
 * few tries, so a preemption between the reads cannot skew the offset. */
void wallclock_sync(struct wallclock *clock)
{
	int64_t best_gap = INT64_MAX;

	for (int i = 0; i < 5; i++) {
		struct timespec before, real, after;
		int64_t gap;

		clock_gettime(CLOCK_MONOTONIC, &before);
		clock_gettime(CLOCK_REALTIME, &real);
		clock_gettime(CLOCK_MONOTONIC, &after);
		gap = ts_ns(&after) - ts_ns(&before);
		if (gap < best_gap) {
			best_gap = gap;
			clock->offset_ns = ts_ns(&real) - (ts_ns(&before) + gap / 2);
		}
	}
}

uint64_t wallclock_from_mono(const struct wallclock *clock, uint64_t mono_ns)
{
	return (uint64_t)((int64_t)mono_ns + clock->offset_ns);
}
