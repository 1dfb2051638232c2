/* One collection of the metrics as a periodic exporter writes it (OTLP,
 * console): every instrument's points in the temporality asked for, sonde's
 * own counters and its process usage. */
#ifndef SONDE_METRICS_VIEW_H
#define SONDE_METRICS_VIEW_H

#include "metrics.h"
#include "usage.h"

#include <stdbool.h>
#include <stdint.h>

struct metrics_view_instrument {
	const struct metric_desc *desc;
	struct metric_points points; /* what is exported: in delta, series with new counts */
	bool delta;
};

/* Times are CLOCK_REALTIME ns. A cumulative point counts from start_ns, a
 * delta point from the previous collection. */
struct metrics_view {
	uint64_t start_ns;
	uint64_t previous_ns;
	uint64_t time_ns; /* this collection */
	struct metrics_view_instrument inst[METRICS_INSTRUMENTS];
	struct self_value self[METRICS_SELF_MAX];
	size_t nself;
	bool self_delta;  /* sonde's monotonic counters as deltas */
	struct process_usage usage;
	const char *host_name;
};

/* The resource sonde's own metrics, and the overflow series, belong to. */
#define METRICS_SELF_SERVICE "sonde"

#endif
