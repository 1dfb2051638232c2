/* The log record queue between capture and export, and its thread: log
 * records (lines of the traced processes' stdout and stderr, with the
 * trace and span they were written for) wait in a preallocated ring and
 * leave in batches (OTEL_BLRP_*) to an OTLP collector (LogsService) and/or
 * the console. A full queue drops the record, counted. Lines are parsed
 * (severity, JSON and logfmt fields) and redacted here, on the export
 * thread, never on the capture path. */
#ifndef SONDE_LOG_EXPORT_H
#define SONDE_LOG_EXPORT_H

#include "counters.h"
#include "logline.h"
#include "otlp_transport.h"
#include "procinfo.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Body bytes one record holds: a longer record is cut and marked. */
#define LOG_RECORD_MAX 4096

enum log_iostream {
	LOG_FILE = 0, /* a configured log file: see file_path */
	LOG_STDOUT = 1,
	LOG_STDERR = 2,
};

#define LOG_FILE_PATH_MAX 256

struct log_record {
	uint64_t time_unix_ns;     /* the write that began the record */
	uint64_t observed_unix_ns; /* when sonde read it */
	struct proc_info *proc;    /* a reference the queue releases */
	uint8_t trace_id[TRACE_ID_SIZE];
	uint8_t span_id[SPAN_ID_SIZE];
	bool has_ids;
	bool truncated;            /* bytes past the capture, or the record, were lost */
	uint8_t iostream;          /* enum log_iostream */
	char file_path[LOG_FILE_PATH_MAX]; /* LOG_FILE's */
	uint32_t len;
	char body[LOG_RECORD_MAX];
};

/* Where records go: any combination (OTEL_LOGS_EXPORTER=otlp,console). */
enum log_sink {
	LOG_SINK_OTLP = 1 << 0,
	LOG_SINK_CONSOLE = 1 << 1,
};

struct log_export_opts {
	unsigned sinks;             /* enum log_sink bits */
	uint32_t max_queue_size;    /* OTEL_BLRP_MAX_QUEUE_SIZE */
	uint32_t max_export_batch;  /* OTEL_BLRP_MAX_EXPORT_BATCH_SIZE */
	uint32_t schedule_delay_ms; /* OTEL_BLRP_SCHEDULE_DELAY */
	uint32_t export_timeout_ms; /* OTEL_BLRP_EXPORT_TIMEOUT: per batch, and the final flush */
	struct otlp_opts otlp;
	const struct log_redaction *redaction; /* NULL: none */
	FILE *console;
};

#define LOG_EXPORT_COUNTERS(X) \
	X(queued, "log_records", TOTAL, "log records queued for export") \
	X(exported, "log_records_exported", TOTAL, "log records written out, or accepted by the collector") \
	X(dropped, "log_records_dropped", TOTAL, "log records dropped: export queue full") \
	X(refused, "log_records_refused", TOTAL, "log records the collector rejected") \
	X(failed, "log_records_failed", TOTAL, \
	  "log records undeliverable: retries used up, TLS, shutdown deadline")

struct log_export_stats {
	LOG_EXPORT_COUNTERS(COUNTER_FIELD)
};

struct attr_sink;

/* What every record says of itself: log.iostream, or log.file.path and
 * log.file.name; sonde.log.truncated when bytes were lost. */
void log_record_attributes(const struct log_record *rec, const struct attr_sink *sink);

extern const struct counter_desc log_export_counters[];
extern const size_t log_export_counter_count;

struct log_export;

int log_export_new(struct log_export **out, const struct log_export_opts *opts, char *err,
		   size_t err_size);
/* Asks the thread to flush what is queued (within export_timeout_ms from
 * this call) and stop, without waiting for it. */
void log_export_request_stop(struct log_export *e);
/* Asks (if not yet asked) and waits for the thread; later records are
 * queued and never sent. */
void log_export_stop(struct log_export *e);
/* Stops (if not yet stopped) and frees. */
void log_export_free(struct log_export *e);
/* A slot for the next record, or NULL when the queue is full (counted).
 * One thread only (the capture thread). */
struct log_record *log_export_reserve(struct log_export *e);
/* Publishes the slot last reserved. */
void log_export_commit(struct log_export *e);
void log_export_get_stats(struct log_export *e, struct log_export_stats *out);

#endif
