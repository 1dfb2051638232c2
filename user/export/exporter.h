/* The span queue between capture and export. The tracker fills slots of a
 * preallocated ring (no allocation per span); a thread of its own drains
 * it in batches to the console and/or an OTLP collector, so capture never
 * waits on output or the network: when the queue is full, new spans are
 * dropped and counted. */
#ifndef SONDE_EXPORTER_H
#define SONDE_EXPORTER_H

#include "counters.h"
#include "otlp_transport.h"
#include "span.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Where spans go: any combination (OTEL_TRACES_EXPORTER=otlp,console). */
enum exporter_sink {
	EXPORTER_NONE = 0,         /* spans are built and counted, then discarded */
	EXPORTER_CONSOLE = 1 << 0, /* JSON lines on `console` */
	EXPORTER_OTLP = 1 << 1,    /* OTLP to a collector */
	EXPORTER_TREE = 1 << 2,    /* finished traces as trees on `console` */
};

/* How the export thread is scheduled against the traced programs. */
enum exporter_sched {
	EXPORTER_SCHED_IDLE = 0, /* SCHED_IDLE: only CPU time nothing else wants */
	EXPORTER_SCHED_NORMAL,   /* an ordinary thread, competing like any other */
};

struct exporter_opts {
	unsigned sinks;             /* enum exporter_sink bits */
	enum exporter_sched sched;
	uint32_t max_queue_size;    /* OTEL_BSP_MAX_QUEUE_SIZE */
	uint32_t max_export_batch;  /* OTEL_BSP_MAX_EXPORT_BATCH_SIZE */
	uint32_t schedule_delay_ms; /* OTEL_BSP_SCHEDULE_DELAY */
	uint32_t export_timeout_ms; /* OTEL_BSP_EXPORT_TIMEOUT: per batch, and for the final flush */
	FILE *console;              /* console and tree output */
	struct otlp_opts otlp;
};

/* Every built span ends as exported, refused or failed, or is still
 * queued; a dropped span found the queue full and was never built. */
#define EXPORTER_COUNTERS(X) \
	X(spans_built, "spans_built", TOTAL, "spans committed to the export queue") \
	X(spans_exported, "spans_exported", TOTAL, "spans written out, or accepted by the collector") \
	X(spans_dropped, "spans_dropped", TOTAL, "spans dropped: export queue full") \
	X(spans_refused, "spans_refused", TOTAL, "spans the collector rejected") \
	X(spans_failed, "spans_failed", TOTAL, \
	  "spans undeliverable: retries used up, TLS, shutdown deadline") \
	X(spans_retried, "spans_retried", TOTAL, "spans sent again, once per extra attempt") \
	X(export_requests, "export_requests", TOTAL, "export requests sent")

struct exporter_stats {
	EXPORTER_COUNTERS(COUNTER_FIELD)
};

extern const struct counter_desc exporter_counters[];
extern const size_t exporter_counter_count;

struct exporter;
struct tree_view;

/* Fails with the reason in err (e.g. an OTLP option libcurl refuses). */
int exporter_new(struct exporter **out, const struct exporter_opts *opts, char *err,
		 size_t err_size);
/* Asks the thread to flush every queued span (OTLP: within
 * export_timeout_ms from this call) and stop, without waiting for it: the
 * agent's exporters flush side by side. */
void exporter_request_stop(struct exporter *exp);
/* Asks (if not yet asked) and waits for the thread; later spans are
 * dropped. */
void exporter_stop(struct exporter *exp);
/* Stops (if not yet stopped) and frees. */
void exporter_free(struct exporter *exp);
/* A zeroed slot for the next span, or NULL when the queue is full (the
 * drop is counted). Only the tracker's thread may call this. */
struct span *exporter_reserve(struct exporter *exp);
/* Publishes the slot last reserved. */
void exporter_commit(struct exporter *exp);
void exporter_get_stats(struct exporter *exp, struct exporter_stats *out);
/* The tree view (OTEL_TRACES_EXPORTER=tree), for the log lines printed
 * under their spans; NULL when there is none. */
struct tree_view *exporter_tree(struct exporter *exp);

#endif
