/* One OTLP export attempt over HTTP/protobuf (POST /v1/traces,
 * /v1/metrics or /v1/logs) or gRPC (the signal's service's Export),
 * through libcurl: HTTP/1.1 or HTTP/2 (h2c or
 * TLS), keep-alive across attempts, optional gzip, optional mTLS. It
 * classifies the answer by the OTLP specification's rules; the caller
 * decides about retries. */
#ifndef SONDE_OTLP_TRANSPORT_H
#define SONDE_OTLP_TRANSPORT_H

#include "otlp_encode.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum otlp_protocol {
	OTLP_HTTP_PROTOBUF,
	OTLP_GRPC,
};

/* What an exporter sends. */
enum otlp_signal {
	OTLP_TRACES,
	OTLP_METRICS,
	OTLP_LOGS,
	OTLP_SIGNALS,
};

struct otlp_opts {
	enum otlp_signal signal;
	enum otlp_protocol protocol;
	/* http/protobuf: the full URL, path included; grpc: scheme://host:port. */
	char url[512];
	char headers[2048]; /* OTEL_EXPORTER_OTLP_HEADERS, validated */
	bool gzip;
	uint32_t timeout_ms;
	char certificate[256]; /* CA bundle; empty: the system's */
	char client_certificate[256];
	char client_key[256];
};

enum otlp_outcome {
	OTLP_OK,        /* accepted, maybe in part: see partial */
	OTLP_RETRYABLE,     /* worth sending again later */
	OTLP_REFUSED,       /* the collector said no; the same request would fail again */
	OTLP_UNDELIVERABLE, /* no collector reached in a way a retry would fix (TLS) */
};

struct otlp_reply {
	enum otlp_outcome outcome;
	int64_t retry_after_ms; /* the collector's Retry-After or RetryInfo; -1: none */
	struct otlp_partial_success partial;
	char reason[256];       /* what went wrong, for the log */
};

struct otlp_transport;

/* Fails, with the reason in err, only on bad options or lack of memory. */
int otlp_transport_new(struct otlp_transport **out, const struct otlp_opts *opts, char *err,
		       size_t err_size);
void otlp_transport_free(struct otlp_transport *t);
/* Makes the request body from an encoded message, once per batch however
 * many attempts follow: gzip if configured, and gRPC's framing, written
 * into the OTLP_ENCODE_HEADROOM bytes before `message` when nothing is
 * compressed. The message must stay as it is until the next prepare. */
int otlp_transport_prepare(struct otlp_transport *t, uint8_t *message, size_t len);
/* One attempt with the prepared body. */
void otlp_transport_send(struct otlp_transport *t, struct otlp_reply *reply);

#endif
