/* Kernel timestamps are CLOCK_MONOTONIC; spans need Unix time. */
#ifndef SONDE_CLOCK_H
#define SONDE_CLOCK_H

#include <stdint.h>

struct wallclock {
	int64_t offset_ns; /* CLOCK_REALTIME - CLOCK_MONOTONIC */
};

/* Re-measures the offset; call periodically so NTP steps are followed. */
void wallclock_sync(struct wallclock *clock);
uint64_t wallclock_from_mono(const struct wallclock *clock, uint64_t mono_ns);
uint64_t monotonic_now_ns(void);
uint64_t realtime_now_ns(void);

#endif
