/* The tree view: each finished trace printed as an indented tree of
 * service, span name, kind, duration and status, for a person to read
 * (OTEL_TRACES_EXPORTER=tree or --exporter tree, alone or with others).
 *
 * The log lines written for a span (logs on) are printed under it.
 *
 * A trace is printed once no span or line has joined it for quiet_ms:
 * spans of a trace reach the exporter in any order, and a trace has no end
 * marker. Spans come from the exporter's thread, lines from the capture
 * thread, under one lock; holds at most TREE_SPANS_MAX spans and
 * TREE_LINES_MAX lines, and prints the oldest traces early rather than
 * drop spans (a line with no room is left out of the view). */
#ifndef SONDE_TREE_H
#define SONDE_TREE_H

#include "ids.h"
#include "span.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define TREE_SPANS_MAX 4096
#define TREE_LINES_MAX 4096
/* The first bytes of a line's first line are shown. */
#define TREE_LINE_TEXT 120

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

struct tree_line {
	uint8_t trace_id[TRACE_ID_SIZE];
	uint8_t span_id[SPAN_ID_SIZE];
	uint64_t time_unix_ns;
	uint64_t arrived_ns;
	bool done;
	char text[TREE_LINE_TEXT];
};

struct tree_view {
	pthread_mutex_t lock;
	FILE *out;
	uint64_t quiet_ns;
	size_t nspans;
	struct tree_span spans[TREE_SPANS_MAX];
	uint32_t members[TREE_SPANS_MAX]; /* of the trace being printed */
	size_t nlines;
	struct tree_line lines[TREE_LINES_MAX];
};

void tree_init(struct tree_view *tv, FILE *out, uint32_t quiet_ms);
void tree_destroy(struct tree_view *tv);
/* A log line written for span_id of trace_id (now_ns: CLOCK_MONOTONIC). */
void tree_add_line(struct tree_view *tv, const uint8_t *trace_id, const uint8_t *span_id,
		   uint64_t time_unix_ns, const char *text, size_t len, uint64_t now_ns);
void tree_add(struct tree_view *tv, const struct span *span, uint64_t now_ns);
/* Prints the traces quiet since quiet_ms, or every trace when `all`. */
void tree_flush(struct tree_view *tv, uint64_t now_ns, bool all);

#endif
