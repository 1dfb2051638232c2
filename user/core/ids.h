/* W3C trace-context ids: random generation and `traceparent` parsing. */
#ifndef SONDE_IDS_H
#define SONDE_IDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TRACE_ID_SIZE 16
#define SPAN_ID_SIZE 8

/* xoshiro256** seeded from getrandom(): ids need uniqueness, not secrecy,
 * and a syscall per span would cost more than the rest of the span. */
struct idgen {
	uint64_t state[4];
};

int idgen_init(struct idgen *gen);
void idgen_trace_id(struct idgen *gen, uint8_t out[TRACE_ID_SIZE]);
void idgen_span_id(struct idgen *gen, uint8_t out[SPAN_ID_SIZE]);

struct trace_parent {
	uint8_t trace_id[TRACE_ID_SIZE];
	uint8_t span_id[SPAN_ID_SIZE];
	uint8_t flags;
};

/* Parses "00-<32 hex>-<16 hex>-<2 hex>" (any later version with the same
 * prefix too). False for malformed input and all-zero ids. */
bool traceparent_parse(const char *text, size_t len, struct trace_parent *out);

/* Lower-case hex of `len` bytes into out (2*len+1 bytes). */
void hex_encode(const uint8_t *bytes, size_t len, char *out);

#endif
