/* HTTP/1.x behind the protocol interface (proto.h), and the fields it
 * writes into a span. */
#ifndef SONDE_HTTP1_PROTO_H
#define SONDE_HTTP1_PROTO_H

#include "proto.h"
#include "span.h"

#include <stdint.h>

enum http1_span_flags {
	HTTP1_SPAN_HEAD_CUT = 1 << 0, /* headers past the capture were not seen */
};

/* The span's HTTP fields (span.proto_data of a SONDE_PROTO_HTTP1 span). */
struct http1_span {
	uint16_t status_code; /* http.response.status_code; 0: no response */
	uint8_t flags;        /* enum http1_span_flags */
	const char *method;           /* http1_method_name: a constant */
	const char *protocol_version; /* http1_version_name: a constant */
	char route[256];      /* SERVER spans */
	char path[1024];
	char query[512];      /* empty unless configured */
	char user_agent[256];
	int64_t request_body_size;  /* -1: unknown */
	int64_t response_body_size; /* -1: unknown */
};

_Static_assert(sizeof(struct http1_span) <= SPAN_PROTO_DATA_MAX, "http1_span fits a span");

static inline const struct http1_span *http1_span_of(const struct span *span)
{
	return (const struct http1_span *)span->proto_data;
}

extern const struct proto_ops http1_proto;

#endif
