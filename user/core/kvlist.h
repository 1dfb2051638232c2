/* "key1=value1,key2=value2" lists, the format of OTEL_RESOURCE_ATTRIBUTES
 * and OTEL_EXPORTER_OTLP_HEADERS (W3C Baggage without properties): spaces
 * around keys and values are dropped and values are percent-decoded. */
#ifndef SONDE_KVLIST_H
#define SONDE_KVLIST_H

#include <stdbool.h>
#include <stddef.h>

struct kv_cursor {
	const char *next;
};

enum kv_result {
	KV_END = 0,
	KV_PAIR = 1,
	KV_BAD = -1, /* no '=', empty key, bad escape or too long; skipped */
};

/* Reads the next item into key and value (NUL-terminated). */
enum kv_result kv_next(struct kv_cursor *cur, char *key, size_t key_size, char *value,
		       size_t value_size);

/* "%XX" escapes in [start, end) decoded into out; false if malformed or
 * out is too small. */
bool percent_decode(const char *start, const char *end, char *out, size_t size);

#endif
