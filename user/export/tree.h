/* The tree view: each finished trace printed as an indented tree of
 * service, span name, kind, duration and status, for a person to read
 * (OTEL_TRACES_EXPORTER=tree or --exporter tree, alone or with others).
 *
 * A trace is printed once no span has joined it for quiet_ms: spans of a
 * trace reach the exporter in any order, and a trace has no end marker.
 * Runs on the exporter's thread; holds at most TREE_SPANS_MAX spans, and
 * prints the oldest traces early rather than drop spans. */
#ifndef SONDE_TREE_H
#define SONDE_TREE_H

#include "ids.h"
#include "span.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define TREE_SPANS_MAX 4096

struct tree_span {
	uint8_t trace_id[TRACE_ID_SIZE];
	uint8_t span_id[SPAN_ID_SIZE];
	uint8_t parent_span_id[SPAN_ID_SIZE];
	bool has_parent;
	bool done; /* printed, or being printed */
	uint8_t kind, status;
	bool answered;
	char response_code[16];
	uint64_t start_unix_ns, end_unix_ns;
	uint64_t arrived_ns;
	char name[96];
	char service[128];
};

struct tree_view {
	FILE *out;
	uint64_t quiet_ns;
	size_t nspans;
	struct tree_span spans[TREE_SPANS_MAX];
	uint32_t members[TREE_SPANS_MAX]; /* of the trace being printed */
};

void tree_init(struct tree_view *tv, FILE *out, uint32_t quiet_ms);
void tree_add(struct tree_view *tv, const struct span *span, uint64_t now_ns);
/* Prints the traces quiet since quiet_ms, or every trace when `all`. */
void tree_flush(struct tree_view *tv, uint64_t now_ns, bool all);

#endif
