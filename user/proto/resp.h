/* A streaming reader of RESP2 and RESP3 values (the Redis protocol), for
 * one direction of a connection, fed in-order pieces that may end in a
 * hole.
 *
 * Lines (a type byte, then a number or a short string, then CRLF) are
 * read through a small buffer; bulk payloads are skipped by arithmetic,
 * which makes a hole inside one harmless, except the few the owner asks
 * to see (a command's name and first argument, an error's text), which
 * are copied as far as they were captured. Any other hole loses sync.
 * Nothing here allocates. */
#ifndef SONDE_RESP_H
#define SONDE_RESP_H

#include "proto.h"

#include <stdbool.h>
#include <stdint.h>

#define RESP_DEPTH_MAX 16
#define RESP_LINE_MAX 64
#define RESP_WORDS 2   /* leading words of a value kept: a command and its first argument */
#define RESP_WORD_MAX 32

/* One top-level value as far as it was read. */
struct resp_value {
	uint64_t start_ts, end_ts;
	uint64_t start_task;
	uint32_t start_tid;
	char type;       /* its first byte; 'i' for an inline command */
	bool cut;        /* part of it was not captured */
	uint32_t nitems; /* elements of a top-level aggregate */
	uint8_t nwords;  /* words kept (bulk strings of the top level, an
			    inline command's words, an error's text) */
	char words[RESP_WORDS][RESP_WORD_MAX];
};

enum resp_state {
	RESP_SYNCED,
	RESP_LOST,    /* waiting for the owner to say a value starts */
	RESP_STOPPED,
};

struct resp_stream;

struct resp_callbacks {
	/* A top-level value is complete. */
	void (*on_value)(void *owner, const struct resp_value *v);
	/* Sync was lost; v is the value in progress (NULL between values). */
	void (*on_lost)(void *owner, const struct resp_value *v, bool gap);
};

struct resp_stream {
	enum resp_state state;
	bool requests;   /* a client's commands: inline commands allowed */
	bool in_value, in_bulk, keep_bulk;
	uint8_t depth;
	uint64_t bulk_left; /* payload bytes and CRLF still to come */
	uint32_t left[RESP_DEPTH_MAX]; /* elements still to come, per level */
	uint32_t line_len;
	bool line_overflow;
	char line[RESP_LINE_MAX];
	const struct resp_callbacks *cb;
	void *owner;
	const struct piece *cur;
	struct resp_value v;
};

void resp_init(struct resp_stream *s, bool requests, const struct resp_callbacks *cb, void *owner);
/* The next byte fed starts a value. */
void resp_sync(struct resp_stream *s);
void resp_feed(struct resp_stream *s, const struct piece *p);
/* Whether data could start a value of this stream (a type byte, or for
 * requests a command word). */
bool resp_is_value_start(const struct resp_stream *s, const uint8_t *data, uint32_t len);

#endif
