/* A finished span, as the tracker builds it and the exporters read it.
 * Fixed-size so that the export queue is one preallocated array. */
#ifndef SONDE_SPAN_H
#define SONDE_SPAN_H

#include "ids.h"
#include "procinfo.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define SONDE_VERSION "0.1.0"

/* Values of OTLP's Span.SpanKind. */
enum span_kind {
	SPAN_KIND_INTERNAL = 1,
	SPAN_KIND_SERVER = 2,
	SPAN_KIND_CLIENT = 3,
};

/* The OTLP name of a kind, upper case ("SERVER"). */
static inline const char *span_kind_name(uint8_t kind)
{
	return kind == SPAN_KIND_SERVER ? "SERVER" : kind == SPAN_KIND_CLIENT ? "CLIENT" : "INTERNAL";
}

/* Values of OTLP's Status.StatusCode. */
enum span_status {
	SPAN_STATUS_UNSET = 0,
	SPAN_STATUS_ERROR = 2,
};

/* Room for one protocol's fields of a span (see proto.h). */
#define SPAN_PROTO_DATA_MAX 2304

struct span {
	uint8_t trace_id[TRACE_ID_SIZE];
	uint8_t span_id[SPAN_ID_SIZE];
	uint8_t parent_span_id[SPAN_ID_SIZE];
	bool has_parent;
	bool answered;        /* the answer (or its start) was seen */
	bool response_lost;   /* sync lost before the answer: no status */
	uint8_t trace_flags;
	uint8_t kind;   /* enum span_kind */
	uint8_t status; /* enum span_status */
	uint8_t proto;  /* SONDE_PROTO_*: whose fields proto_data holds */
	uint64_t start_unix_ns;
	uint64_t end_unix_ns;
	uint16_t server_port;
	uint16_t client_port; /* SERVER spans */
	char server_address[256];
	char client_address[48]; /* SERVER spans */
	/* The answer's status as its protocol states it (an HTTP status code,
	 * a SQLSTATE, a Redis error prefix); empty when it has none. */
	char response_code[16];
	char status_message[128];
	char error_type[48];
	struct proc_info *proc;     /* resource; the span holds a reference */
	/* The protocol's own fields, written whole by its fill_span. */
	_Alignas(8) unsigned char proto_data[SPAN_PROTO_DATA_MAX];
};

/* Empties the common fields of a slot for reuse: the strings are cleared
 * by their first byte only, since a slot is several kilobytes. */
static inline void span_clear(struct span *s)
{
	memset(s, 0, offsetof(struct span, server_address));
	s->server_address[0] = s->client_address[0] = s->response_code[0] = '\0';
	s->status_message[0] = s->error_type[0] = '\0';
	s->proc = NULL;
}

#endif
