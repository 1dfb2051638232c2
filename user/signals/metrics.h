/* RED metrics, counted from every exchange's summary before any export
 * queue: the duration histograms of the OpenTelemetry HTTP and database
 * conventions (http.server.request.duration, http.client.request.duration,
 * db.client.operation.duration; seconds, the conventions' buckets), one
 * series per service and attribute set, at most `cardinality_limit` series
 * per metric, the rest in the overflow series (otel.metric.overflow=true,
 * counted). A new series is allocated once; counting allocates nothing.
 *
 * Written in the Prometheus text exposition format, names and labels
 * translated as the OpenTelemetry Prometheus exporter specification says,
 * with sonde's own counters as sonde_* metrics. Counting (the capture
 * thread) and writing (the HTTP server's thread) share one lock, held by
 * the writer only while it copies the counts. */
#ifndef SONDE_METRICS_H
#define SONDE_METRICS_H

#include "bytes.h"
#include "counters.h"
#include "tracker.h"

#include <stddef.h>
#include <stdint.h>

#define METRICS_BUCKETS 14
/* Room for one series' labels in their exposition form, and for its key. */
#define METRICS_LABELS_MAX 640
/* sonde's own counters exported at most. */
#define METRICS_SELF_MAX 128

struct metrics_opts {
	uint32_t cardinality_limit; /* series per metric; 0: 2000 */
};

#define METRICS_COUNTERS(X) \
	X(series, "metric_series", GAUGE, "metric series counted, every metric") \
	X(overflow, "metric_overflow", TOTAL, \
	  "exchanges counted in an overflow series: cardinality limit reached, or labels cut") \
	X(labels_cut, "metric_labels_cut", TOTAL, \
	  "exchanges whose labels did not fit (also in metric_overflow)") \
	X(scrapes, "metric_scrapes", TOTAL, "Prometheus scrapes served")

struct metrics_stats {
	METRICS_COUNTERS(COUNTER_FIELD)
};

extern const struct counter_desc metrics_counters[];
extern const size_t metrics_counter_count;

struct metrics;

/* NULL when out of memory. */
struct metrics *metrics_new(const struct metrics_opts *opts);
void metrics_free(struct metrics *m);
/* Counts one exchange: a tracker_opts.on_exchange callback (ctx: the
 * metrics). */
void metrics_record(void *ctx, const struct exchange_summary *x);
/* The values of sonde's own counters, as of now (called once a second). */
void metrics_set_self(struct metrics *m, const struct counter_group *groups, size_t ngroups);
/* Appends the exposition text of every metric to out; -ENOMEM when it
 * could not grow. */
int metrics_write_prometheus(struct metrics *m, struct bytes *out);
void metrics_get_stats(struct metrics *m, struct metrics_stats *out);

/* The bucket (0 to METRICS_BUCKETS, the last for +Inf) a duration in
 * seconds is counted in. */
unsigned metrics_bucket_of(double seconds);

#endif
