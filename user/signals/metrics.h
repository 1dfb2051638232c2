/* RED metrics, counted from every exchange before any export queue: the
 * duration histograms of the OpenTelemetry HTTP and database conventions
 * (http.server.request.duration, http.client.request.duration,
 * db.client.operation.duration; seconds, the conventions' buckets) and
 * the up-down counter http.server.active_requests. One series per service
 * and attribute set, at most `cardinality_limit` series per metric, the
 * rest in the overflow series (otel.metric.overflow=true, counted). A new
 * series is allocated once; counting allocates nothing.
 *
 * One thread counts (metrics_record, metrics_request_*, metrics_set_self
 * and metrics_get_stats are its calls); exporters read the counts by
 * collecting a copy (metrics_collect, metrics_collect_self) from their own
 * threads, without ever making the counting thread wait. */
#ifndef SONDE_METRICS_H
#define SONDE_METRICS_H

#include "counters.h"
#include "procinfo.h"
#include "proto.h"
#include "tracker.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define METRICS_BUCKETS 14
/* Room for one series' attributes, their values and their keys'
 * addresses laid end to end; a series with more is counted in the
 * overflow series. */
#define METRICS_ATTRS_MAX 640
/* sonde's own counters exported at most. */
#define METRICS_SELF_MAX 128

/* The instruments: the duration histograms (enum duration_metric), then
 * the up-down counter of requests in progress. */
#define METRIC_HTTP_SERVER_ACTIVE METRIC_DURATIONS
#define METRICS_INSTRUMENTS (METRIC_DURATIONS + 1)

enum metric_kind {
	METRIC_KIND_HISTOGRAM,
	METRIC_KIND_UPDOWN,
};

struct metric_desc {
	const char *name;      /* OpenTelemetry name */
	const char *prom_name; /* Prometheus name, unit suffixed */
	const char *unit;      /* UCUM */
	const char *help;
	enum metric_kind kind;
};

extern const struct metric_desc metric_descs[METRICS_INSTRUMENTS];
/* The buckets' upper bounds, inclusive; a last bucket takes the rest. */
extern const double metrics_bounds[METRICS_BUCKETS];

struct metrics_opts {
	uint32_t cardinality_limit; /* series per metric; 0: 2000 */
};

#define METRICS_COUNTERS(X) \
	X(series, "metric_series", GAUGE, "metric series counted, every metric") \
	X(overflow, "metric_overflow", TOTAL, \
	  "measurements counted in an overflow series: cardinality limit reached, or attributes cut") \
	X(attrs_cut, "metric_attributes_cut", TOTAL, \
	  "measurements whose attributes did not fit (also in metric_overflow)") \
	X(scrapes, "metric_scrapes", TOTAL, "Prometheus scrapes served") \
	X(otlp_exports, "metric_exports", TOTAL, "metric collections exported: OTLP or console") \
	X(otlp_failed, "metric_exports_failed", TOTAL, \
	  "metric collections the collector never accepted: refused, retries used up")

struct metrics_stats {
	METRICS_COUNTERS(COUNTER_FIELD)
};

extern const struct counter_desc metrics_counters[];
extern const size_t metrics_counter_count;

struct metrics;
/* A series, published: its attributes do not change for its life, which
 * is the metrics' life. */
struct metric_series;

/* One series as of a collection. */
struct metric_point {
	const struct metric_series *series;
	uint32_t index; /* the series' number in its metric, stable */
	uint64_t buckets[METRICS_BUCKETS + 1]; /* histograms: per bucket, not cumulative */
	double sum;
	uint64_t count;
	int64_t value; /* up-down counters */
};

/* Grown as needed and reused from one collection to the next. */
struct metric_points {
	struct metric_point *point;
	size_t n, cap;
};

/* One of sonde's own counters, as of the last metrics_set_self. */
struct self_value {
	const struct counter_desc *desc;
	uint64_t value;
};

/* NULL when out of memory. */
struct metrics *metrics_new(const struct metrics_opts *opts);
void metrics_free(struct metrics *m);
/* Counts one exchange: a tracker_opts.on_exchange callback (ctx: the
 * metrics). */
void metrics_record(void *ctx, const struct exchange_summary *x);
/* A server request in progress: tracker_opts.on_request_began and
 * on_request_ended. The handle names the series it is counted in (NULL:
 * none, memory ran out). */
void *metrics_request_began(void *ctx, const struct request_began *r);
void metrics_request_ended(void *ctx, void *handle);
/* The values of sonde's own counters, as of now (called once a second). */
void metrics_set_self(struct metrics *m, const struct counter_group *groups, size_t ngroups);

/* Copies every series of one instrument into out; -ENOMEM when it could
 * not grow. */
int metrics_collect(struct metrics *m, unsigned instrument, struct metric_points *out);
void metric_points_free(struct metric_points *p);
/* Copies sonde's own counters into out (METRICS_SELF_MAX entries); returns
 * how many. */
size_t metrics_collect_self(struct metrics *m, struct self_value *out);
/* Replays a series' attributes: service.name first, then the metric's; the
 * overflow series has otel.metric.overflow=true alone. */
void metric_series_attributes(const struct metric_series *s, const struct attr_sink *sink);
/* The series' service; NULL for the overflow series. */
const char *metric_series_service(const struct metric_series *s);
/* CLOCK_REALTIME ns when counting began: where every cumulative point
 * starts. */
uint64_t metrics_start_unix_ns(const struct metrics *m);
/* What exporters report: a scrape served, a collection exported (or not). */
void metrics_count_scrape(struct metrics *m);
void metrics_count_export(struct metrics *m, bool delivered);
void metrics_get_stats(struct metrics *m, struct metrics_stats *out);

/* The bucket (0 to METRICS_BUCKETS, the last for +Inf) a duration in
 * seconds is counted in. */
unsigned metrics_bucket_of(double seconds);

#endif
