/* The span queue between capture and export. The tracker fills slots of a
 * preallocated ring (no allocation per span); a thread of its own drains
 * it in batches, so capture never waits on output or the network. */
#ifndef SONDE_EXPORTER_H
#define SONDE_EXPORTER_H

#include "span.h"

#include <stdint.h>
#include <stdio.h>

enum exporter_kind {
	EXPORTER_NONE,    /* spans are built and counted, then discarded */
	EXPORTER_CONSOLE, /* JSON lines on `console` */
};

struct exporter_opts {
	enum exporter_kind kind;
	uint32_t max_queue_size;    /* OTEL_BSP_MAX_QUEUE_SIZE */
	uint32_t max_export_batch;  /* OTEL_BSP_MAX_EXPORT_BATCH_SIZE */
	uint32_t schedule_delay_ms; /* OTEL_BSP_SCHEDULE_DELAY */
	FILE *console;
};

struct exporter_stats {
	uint64_t spans_built;    /* committed by the tracker */
	uint64_t spans_exported; /* written out (none: discarded by design) */
	uint64_t spans_dropped;  /* queue full */
};

struct exporter;

int exporter_new(struct exporter **out, const struct exporter_opts *opts);
/* Flushes every queued span, then stops the thread. */
void exporter_free(struct exporter *exp);
/* A zeroed slot for the next span, or NULL when the queue is full (the
 * drop is counted). Only the tracker's thread may call this. */
struct span *exporter_reserve(struct exporter *exp);
/* Publishes the slot last reserved. */
void exporter_commit(struct exporter *exp);
void exporter_get_stats(struct exporter *exp, struct exporter_stats *out);

#endif
