/* A streaming reader of PostgreSQL protocol 3.0 messages for one
 * direction of a connection, fed in-order pieces that may end in a hole.
 *
 * Every message but a frontend's first is a type byte and a 4-byte length;
 * the first a client sends (StartupMessage, SSLRequest, GSSENCRequest,
 * CancelRequest) has a length and a 4-byte code instead, and so does the
 * one after an SSLRequest or GSSENCRequest. The first `keep`
 * bytes of each payload are kept for the owner (a query's text, a command
 * tag, an error's fields); the rest, and any hole inside a payload, is
 * skipped by arithmetic. A hole in a message's header loses sync.
 * Nothing here allocates. */
#ifndef SONDE_PGWIRE_H
#define SONDE_PGWIRE_H

#include "proto.h"

#include <stdbool.h>
#include <stdint.h>

#define PGWIRE_KEEP_MAX 1024

struct pg_msg {
	uint8_t type;     /* 0 for a frontend's untyped first message */
	uint32_t code;    /* untyped messages: the protocol version or request code */
	uint32_t len;     /* payload bytes (after the length, or after the code) */
	uint32_t kept;    /* payload bytes in data */
	bool cut;         /* payload bytes within `keep` were not captured */
	uint64_t start_ts, end_ts;
	uint32_t start_tid;
	uint64_t start_task;
	const uint8_t *data;
};

enum pgwire_state {
	PGWIRE_SYNCED,
	PGWIRE_LOST,    /* waiting for the owner to say a message starts */
	PGWIRE_STOPPED,
};

struct pgwire_callbacks {
	void (*on_message)(void *owner, const struct pg_msg *m);
	/* Sync was lost: bytes not captured (gap) or not of the protocol. */
	void (*on_lost)(void *owner, bool gap);
};

struct pgwire_stream {
	enum pgwire_state state;
	bool frontend;
	bool untyped_next;  /* the next message is a frontend's first */
	uint8_t hdr_len;    /* header bytes read of the current message */
	uint8_t hdr[8];
	bool in_body;
	uint32_t body_left;
	uint32_t keep;      /* payload bytes kept per message, <= PGWIRE_KEEP_MAX */
	struct pg_msg msg;
	const struct piece *cur;
	const struct pgwire_callbacks *cb;
	void *owner;
	uint8_t kept[PGWIRE_KEEP_MAX];
};

void pgwire_init(struct pgwire_stream *s, bool frontend, uint32_t keep,
		 const struct pgwire_callbacks *cb, void *owner);
/* The next byte fed starts a message; untyped: a frontend's first one. */
void pgwire_sync(struct pgwire_stream *s, bool untyped);
void pgwire_feed(struct pgwire_stream *s, const struct piece *p);
/* Whether data starts a typed message this direction sends. */
bool pgwire_is_message_start(const struct pgwire_stream *s, const uint8_t *data, uint32_t len);

#endif
