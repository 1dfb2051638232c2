/* The console exporters' format: one JSON object per line. A span has the
 * fields and names of the OpenTelemetry Python SDK's ConsoleSpanExporter; a
 * metric data point its OTLP fields, flat ("metric" names it); a log
 * record those of the Python SDK's ConsoleLogExporter ("body" first). */
#ifndef SONDE_CONSOLE_H
#define SONDE_CONSOLE_H

#include "log_export.h"
#include "metrics_view.h"
#include "span.h"

#include <stddef.h>

/* Formats the span and a trailing newline into out; returns the length,
 * or 0 if out_size is too small. */
size_t console_format_span(const struct span *span, char *out, size_t out_size);
/* One data point of an instrument, or one of sonde's own counters. */
size_t console_format_point(const struct metrics_view *v, const struct metrics_view_instrument *in,
			    const struct metric_point *p, char *out, size_t out_size);
/* A log record, parsed into `line` and redacted (redaction may be NULL)
 * through `scratch` (LOGLINE_TEXT_MAX bytes): the caller's buffers, reused. */
size_t console_format_log(const struct log_record *rec, const struct log_redaction *redaction,
			  struct logline *line, char *scratch, char *out, size_t out_size);
size_t console_format_self(const struct metrics_view *v, const struct self_value *self, char *out,
			   size_t out_size);

#endif
