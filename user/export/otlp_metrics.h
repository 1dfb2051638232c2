/* A collection of metrics (metrics_view.h) to an OTLP
 * ExportMetricsServiceRequest: one ResourceMetrics per traced service
 * (service.name, host.name, telemetry.sdk.*), one ScopeMetrics ("sonde")
 * in it, one Metric per instrument with that service's points; sonde's own
 * counters, its CPU and memory, and the overflow series under the
 * resource of service "sonde". Runs once per export interval, on the
 * exporter's thread: the message structs are allocated for each request. */
#ifndef SONDE_OTLP_METRICS_H
#define SONDE_OTLP_METRICS_H

#include "bytes.h"
#include "metrics_view.h"

#include <stddef.h>

/* Writes the request into out after OTLP_ENCODE_HEADROOM free bytes;
 * *npoints: the data points in it. -ENOMEM when memory ran out. */
int otlp_metrics_encode(const struct metrics_view *v, struct bytes *out, size_t *npoints);

#endif
