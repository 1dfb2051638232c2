#include "usage.h"

#include <stdio.h>
#include <unistd.h>

void process_usage_read(struct process_usage *out)
{
	unsigned long utime = 0, stime = 0, pages = 0;
	FILE *f = fopen("/proc/self/stat", "r");
	long ticks = sysconf(_SC_CLK_TCK);

	if (f) {
		if (fscanf(f, "%*d (%*[^)]) %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
			   &utime, &stime) != 2)
			utime = stime = 0;
		fclose(f);
	}
	f = fopen("/proc/self/statm", "r");
	if (f) {
		if (fscanf(f, "%*u %lu", &pages) != 1)
			pages = 0;
		fclose(f);
	}
	out->cpu_seconds = (double)(utime + stime) / (double)(ticks > 0 ? ticks : 100);
	out->rss_bytes = (uint64_t)pages * (uint64_t)sysconf(_SC_PAGESIZE);
}
