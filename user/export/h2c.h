/* One lasting cleartext HTTP/2 connection (prior knowledge), on libnghttp2,
 * carrying one request at a time: what OTLP/gRPC to a collector without TLS
 * needs. Debian 12's libcurl cannot reuse such a connection (curl issue
 * #10634), and on each new one it polls the socket in a busy loop while an
 * upload waits for the collector's flow-control grant. Here the connection
 * is opened once and kept until it fails, and a blocked upload waits in
 * poll() for the socket to be readable. */
#ifndef SONDE_H2C_H
#define SONDE_H2C_H

#include <stddef.h>
#include <stdint.h>

struct h2c;

/* Request header fields h2c_post takes at most. */
#define H2C_FIELDS_MAX 40

/* One header field of the request. */
struct h2c_field {
	const char *name; /* lower case, as HTTP/2 requires */
	size_t name_len;
	const char *value;
	size_t value_len;
};

/* What the answer brings, as it arrives: each header and trailer (the
 * pseudo-header :status excepted) and each piece of the body. */
struct h2c_answer_sink {
	void (*field)(void *arg, const char *name, size_t name_len, const char *value,
		      size_t value_len);
	void (*data)(void *arg, const uint8_t *data, size_t len);
	void *arg;
};

/* `url` is http://host[:port]/path (host may be [v6]); NULL if it is not,
 * or without memory. Connects on the first request. */
struct h2c *h2c_new(const char *url);
void h2c_free(struct h2c *c);

/* POSTs body to the URL's path with the given fields, connecting first if
 * there is no connection, and waits for the whole answer until
 * deadline_ns (CLOCK_MONOTONIC). Returns the HTTP status, or a negative
 * errno with the reason in err: -ETIMEDOUT when the deadline passed,
 * -E2BIG for more than H2C_FIELDS_MAX fields. After an error the
 * connection is dropped, and the next request opens a new one. */
int h2c_post(struct h2c *c, const struct h2c_field *fields, size_t nfields, const uint8_t *body,
	     size_t body_len, uint64_t deadline_ns, const struct h2c_answer_sink *sink, char *err,
	     size_t err_size);

#endif
