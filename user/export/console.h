/* The console exporter's format: one JSON object per line with the fields
 * and names of the OpenTelemetry Python SDK's ConsoleSpanExporter. */
#ifndef SONDE_CONSOLE_H
#define SONDE_CONSOLE_H

#include "span.h"

#include <stddef.h>

/* Formats the span and a trailing newline into out; returns the length,
 * or 0 if out_size is too small. */
size_t console_format_span(const struct span *span, char *out, size_t out_size);

#endif
