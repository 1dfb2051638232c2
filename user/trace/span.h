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
	SPAN_KIND_SERVER = 2,
	SPAN_KIND_CLIENT = 3,
};

/* Values of OTLP's Status.StatusCode. */
enum span_status {
	SPAN_STATUS_UNSET = 0,
	SPAN_STATUS_ERROR = 2,
};

struct span {
	uint8_t trace_id[TRACE_ID_SIZE];
	uint8_t span_id[SPAN_ID_SIZE];
	uint8_t parent_span_id[SPAN_ID_SIZE];
	bool has_parent;
	bool response_lost;   /* sync lost before the response head: no status */
	uint8_t trace_flags;
	uint8_t kind;   /* enum span_kind */
	uint8_t status; /* enum span_status */
	uint64_t start_unix_ns;
	uint64_t end_unix_ns;
	uint16_t status_code; /* http.response.status_code; 0: no response */
	uint16_t server_port;
	uint16_t client_port; /* SERVER spans */
	char method[16];
	char protocol_version[8];
	char route[256];      /* SERVER spans */
	char path[1024];
	char query[512];      /* empty unless configured */
	char server_address[256];
	char client_address[48]; /* SERVER spans */
	char user_agent[256];
	char status_message[128];
	char error_type[48];
	int64_t request_body_size;  /* -1: unknown */
	int64_t response_body_size; /* -1: unknown */
	struct proc_info *proc;     /* resource; the span holds a reference */
};

/* Empties a slot for reuse: the strings are cleared by their first byte
 * only, since a slot is several kilobytes. */
static inline void span_clear(struct span *s)
{
	memset(s, 0, offsetof(struct span, method));
	s->method[0] = s->protocol_version[0] = s->route[0] = s->path[0] = '\0';
	s->query[0] = s->server_address[0] = s->client_address[0] = '\0';
	s->user_agent[0] = s->status_message[0] = s->error_type[0] = '\0';
}

#endif
