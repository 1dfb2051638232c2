/* A batch of log records to an OTLP ExportLogsServiceRequest: one
 * ResourceLogs per process (its resource, as its spans have it), one
 * ScopeLogs ("sonde"); each record parsed (logline.h) and redacted here.
 * Message structs come from an arena freed after packing, once a batch. */
#ifndef SONDE_OTLP_LOGS_H
#define SONDE_OTLP_LOGS_H

#include "bytes.h"
#include "log_export.h"

#include <stddef.h>

/* Writes the request into out after OTLP_ENCODE_HEADROOM free bytes,
 * parsing each record into `line` (the caller's, reused); -ENOMEM when
 * memory ran out. */
int otlp_logs_encode(const struct log_record *const *records, size_t n,
		     const struct log_redaction *redaction, struct logline *line,
		     struct bytes *out);

#endif
