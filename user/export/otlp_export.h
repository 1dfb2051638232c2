/* One encoded request to the collector (a batch of spans, a collection
 * of metrics): prepared once, sent, and sent again with exponential
 * backoff and jitter while the failure is retryable and the request's time
 * (OTEL_BSP_EXPORT_TIMEOUT, OTEL_METRIC_EXPORT_TIMEOUT) lasts. Runs on an
 * exporter's thread, never on the capture path. */
#ifndef SONDE_OTLP_EXPORT_H
#define SONDE_OTLP_EXPORT_H

#include "otlp_transport.h"

#include <stddef.h>
#include <stdint.h>

#define OTLP_BACKOFF_INITIAL_MS 1000
#define OTLP_BACKOFF_MAX_MS 5000

/* How the caller lets a batch wait, and cuts the wait short at shutdown. */
struct otlp_pacer {
	/* Sleeps up to ms; returns early once shutdown has begun. */
	void (*sleep)(void *ctx, uint64_t ms);
	/* CLOCK_MONOTONIC ns by which every attempt must be over: the
	 * shutdown deadline once shutdown has begun, else UINT64_MAX. */
	uint64_t (*limit)(void *ctx);
	void *ctx;
};

/* Where each item (span, data point) of a request ended up. */
struct otlp_batch_result {
	uint64_t exported; /* accepted by the collector */
	uint64_t refused;  /* rejected by it: a permanent error or partial success */
	uint64_t failed;   /* never accepted: retries used up, TLS, shutdown */
	uint32_t attempts;
	char reason[320];  /* the last failure, if any */
};

/* Counted as they happen, so that a long outage shows while it lasts. */
struct otlp_export_stats {
	uint64_t requests; /* attempts sent */
	uint64_t retried;  /* items sent again, once per extra attempt */
};

struct otlp_export;

/* items: what a request carries ("spans"), for the log. */
int otlp_export_new(struct otlp_export **out, const struct otlp_opts *opts,
		    uint32_t batch_timeout_ms, const char *items, char *err, size_t err_size);
void otlp_export_free(struct otlp_export *exp);
/* Sends n items encoded in message (with OTLP_ENCODE_HEADROOM bytes free
 * before it), which must stay as it is until the call returns. */
void otlp_export_send(struct otlp_export *exp, uint8_t *message, size_t len, size_t n,
		      const struct otlp_pacer *pacer, struct otlp_batch_result *result);
/* Safe from any thread. */
void otlp_export_get_stats(struct otlp_export *exp, struct otlp_export_stats *out);

/* The wait before attempt number `retry` (1 = first retry): the backoff
 * doubles from OTLP_BACKOFF_INITIAL_MS up to OTLP_BACKOFF_MAX_MS, and
 * `random` picks a point in its upper half, so that agents restarted
 * together do not retry in step. A server's Retry-After wins if longer. */
uint64_t otlp_backoff_ms(uint32_t retry, uint64_t random, int64_t retry_after_ms);

#endif
