/* What a span says, by the OpenTelemetry semantic conventions: its name,
 * its attributes (those every span has, then its protocol's) and its
 * process's resource attributes. Every exporter writes the same set
 * through its own sink. */
#ifndef SONDE_SEMCONV_H
#define SONDE_SEMCONV_H

#include "span.h"

#include "proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Keys and values passed to a sink stay valid as long as the span, its
 * proc_info and the caller's buffers do. */
struct attr_sink {
	void (*str)(void *ctx, const char *key, const char *value);
	void (*i64)(void *ctx, const char *key, int64_t value);
	void (*boolean)(void *ctx, const char *key, bool value);
	void *ctx;
};

/* A string attribute; empty strings are absent values, not empty
 * attributes. */
static inline void attr_put_str(const struct attr_sink *sink, const char *key, const char *value)
{
	if (value[0])
		sink->str(sink->ctx, key, value);
}

/* Holds the keys and values of a process's OTEL_RESOURCE_ATTRIBUTES. */
#define SEMCONV_RESOURCE_SCRATCH 1024
/* Room for the attributes of a span (16 at most) and of a resource (8
 * fixed ones plus what OTEL_RESOURCE_ATTRIBUTES adds); an exporter counts
 * any beyond as dropped. */
#define SEMCONV_SPAN_ATTRS_MAX 16
#define SEMCONV_RESOURCE_ATTRS_MAX 24

/* The span's name, as its protocol gives it. */
void span_format_name(const struct span *span, char *out, size_t size);

/* scratch: SPAN_SCRATCH_MAX bytes (proto.h), for values the protocol
 * formats. */
void semconv_span_attributes(const struct span *span, const struct attr_sink *sink, char *scratch);

/* scratch: SEMCONV_RESOURCE_SCRATCH bytes. */
void semconv_resource_attributes(const struct proc_info *proc, const struct attr_sink *sink,
				 char *scratch);

#endif
