/* The periodic metrics reader: every OTEL_METRIC_EXPORT_INTERVAL it
 * collects the metrics and writes them to an OTLP collector
 * (MetricsService, the transports and settings of traces, each request
 * retried within OTEL_METRIC_EXPORT_TIMEOUT) and/or the console, on a
 * thread of its own; at shutdown it collects and exports once more.
 * Temporality follows OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE:
 * cumulative by default; delta and lowmemory make the histograms deltas,
 * delta also sonde's own monotonic counters; the up-down counter stays
 * cumulative, as the specification says. */
#ifndef SONDE_METRICS_EXPORT_H
#define SONDE_METRICS_EXPORT_H

#include "metrics.h"
#include "otlp_transport.h"

#include <stdint.h>
#include <stdio.h>

/* Where metrics go: any combination (OTEL_METRICS_EXPORTER=prometheus,otlp). */
enum metrics_sink {
	METRICS_PROMETHEUS = 1 << 0,
	METRICS_OTLP = 1 << 1,
	METRICS_CONSOLE = 1 << 2,
};

enum metrics_temporality {
	TEMPORALITY_CUMULATIVE,
	TEMPORALITY_DELTA,
	TEMPORALITY_LOWMEMORY,
};

struct metrics_export_opts {
	unsigned sinks;          /* METRICS_OTLP and/or METRICS_CONSOLE */
	uint32_t interval_ms;    /* OTEL_METRIC_EXPORT_INTERVAL */
	uint32_t timeout_ms;     /* OTEL_METRIC_EXPORT_TIMEOUT */
	enum metrics_temporality temporality;
	struct otlp_opts otlp;
	FILE *console;
};

struct metrics_export;

/* Starts the thread; fails with the reason in err. */
int metrics_export_new(struct metrics_export **out, struct metrics *metrics,
		       const struct metrics_export_opts *opts, char *err, size_t err_size);
/* Asks the thread to export a last collection (within timeout_ms from
 * this call) and stop, without waiting for it. */
void metrics_export_request_stop(struct metrics_export *e);
/* Asks (if not yet asked) and waits for the thread. */
void metrics_export_stop(struct metrics_export *e);
/* Stops (if not yet stopped) and frees. */
void metrics_export_free(struct metrics_export *e);

#endif
