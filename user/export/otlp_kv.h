/* Attributes into OTLP KeyValues held by an arena, for the requests built
 * from protobuf-c structs (metrics, logs): a sink (semconv.h) that appends
 * to a list with room for `max`. Strings are pointed at, or copied (and
 * redacted) when their source does not outlive the request. */
#ifndef SONDE_OTLP_KV_H
#define SONDE_OTLP_KV_H

#include "arena.h"
#include "logline.h"
#include "otlp.pb-c.h"
#include "semconv.h"

#include <stdbool.h>
#include <stddef.h>

struct otlp_kv_list {
	struct arena *arena;
	Otlp__KeyValue **kv;
	size_t n, max;
	const char *skip_key;  /* an attribute left out (carried elsewhere); NULL: none */
	bool copy;             /* copy keys and string values into the arena */
	const struct log_redaction *redaction; /* applied to copied strings; NULL: none */
	bool failed;           /* no room, or no memory */
};

/* text[0..len) copied into the arena, NUL-terminated, redacted when r is
 * not NULL; NULL when memory ran out. */
char *otlp_text_copy(struct arena *a, const struct log_redaction *r, const char *text,
		     size_t len);
/* Room for max attributes; false when memory ran out. */
bool otlp_kv_init(struct otlp_kv_list *l, struct arena *a, size_t max);
struct attr_sink otlp_kv_sink(struct otlp_kv_list *l);

#endif
