/* sonde's own CPU time and resident memory, from /proc/self. */
#ifndef SONDE_USAGE_H
#define SONDE_USAGE_H

#include <stdint.h>

struct process_usage {
	double cpu_seconds; /* user and system */
	uint64_t rss_bytes;
};

/* Zeros where /proc could not be read. */
void process_usage_read(struct process_usage *out);

#endif
