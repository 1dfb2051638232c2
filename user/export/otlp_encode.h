/* Spans to an OTLP ExportTraceServiceRequest (protobuf), and the
 * collector's ExportTraceServiceResponse back. Spans are written straight
 * to the wire; the resources' message structs are preallocated for the
 * largest batch, and buffers keep their largest size, so encoding
 * allocates only while a batch is bigger than any before it. */
#ifndef SONDE_OTLP_ENCODE_H
#define SONDE_OTLP_ENCODE_H

#include "span.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Free bytes in front of an encoded request, for a transport's framing
 * (gRPC's 5-byte message prefix) without copying the request. */
#define OTLP_ENCODE_HEADROOM 5

struct otlp_encoder;

struct otlp_encoder *otlp_encoder_new(uint32_t max_spans);
void otlp_encoder_free(struct otlp_encoder *enc);

/* Encodes n (<= max_spans) spans as one request: one ResourceSpans per
 * process, one ScopeSpans ("sonde") in each. On success *out points to
 * the bytes, owned by the encoder until its next call and preceded by
 * OTLP_ENCODE_HEADROOM bytes the caller may write. */
int otlp_encode(struct otlp_encoder *enc, const struct span *const *spans, size_t n,
		uint8_t **out, size_t *out_len);

struct otlp_partial_success {
	int64_t rejected; /* spans, or data points */
	char error_message[256];
};

/* Reads an ExportTraceServiceResponse, or an ExportMetricsServiceResponse:
 * the two are the same on the wire (partial_success = 1, its rejected
 * count = 1, error_message = 2). An empty body is full success. */
int otlp_decode_response(const uint8_t *body, size_t len, struct otlp_partial_success *out);

/* The message of a google.rpc.Status (an OTLP/HTTP refusal's body). */
bool otlp_rpc_status_message(const uint8_t *status, size_t len, char *out, size_t size);

/* The delay in a google.rpc.Status's RetryInfo detail (the decoded
 * grpc-status-details-bin trailer), in ms, or -1 when it has none. */
int64_t otlp_retry_info_delay_ms(const uint8_t *status, size_t len);

#endif
