/* One direction of an HTTP/1.x connection: a streaming parser (Debian's
 * libhttp-parser) fed in-order chunks that may end in a hole of bytes the
 * kernel did not capture. A hole whose bytes the protocol fixes is skipped:
 * body bytes of known length (Content-Length, the rest of a chunk, a body
 * that runs to close) and the CRLF that ends a chunk. Any other hole loses
 * sync, and the stream waits for a piece that starts a new message.
 * Nothing here allocates. */
#ifndef SONDE_HTTP1_H
#define SONDE_HTTP1_H

#include <http_parser.h>
#include <stdbool.h>
#include <stdint.h>

#define HTTP1_TARGET_MAX 2048
#define HTTP1_HOST_MAX 256
#define HTTP1_UA_MAX 256
#define HTTP1_TRACEPARENT_MAX 64
#define HTTP1_HNAME_MAX 32

enum http1_msg_flags {
	HTTP1_TARGET_TRUNCATED = 1 << 0, /* longer than HTTP1_TARGET_MAX */
	HTTP1_BODY_LOST = 1 << 1,        /* sync lost inside the body: body
	                                    size and end time are lower bounds */
	HTTP1_CUT_OFF = 1 << 2,          /* the connection ended (close, reset)
	                                    before the message did */
};

struct http1_msg {
	uint64_t start_ts;  /* CLOCK_MONOTONIC ns of the first byte */
	uint64_t end_ts;    /* ... of the last byte */
	uint64_t body_size; /* body bytes after de-chunking */
	uint32_t start_tid; /* thread that moved the first byte */
	bool is_request;
	bool keep_alive;
	uint8_t method;     /* enum http_method, requests */
	uint8_t version_major, version_minor;
	uint8_t flags;      /* enum http1_msg_flags */
	uint16_t status;    /* responses */
	uint16_t target_len, host_len, ua_len, traceparent_len;
	char target[HTTP1_TARGET_MAX];
	char host[HTTP1_HOST_MAX];
	char user_agent[HTTP1_UA_MAX];
	char traceparent[HTTP1_TRACEPARENT_MAX];
};

/* An in-order piece of the stream: `captured` bytes of data, then `hole`
 * bytes that were moved but not captured. */
struct http1_chunk {
	const uint8_t *data;
	uint32_t captured;
	uint64_t hole;
	uint64_t ts;       /* when its bytes moved (syscall exit) */
	uint32_t tid;
};

enum http1_drop {
	HTTP1_DROP_PARSE_ERROR, /* bytes that are not HTTP/1.x */
	HTTP1_DROP_GAP,         /* a hole where the parser needed the bytes */
	HTTP1_DROP_EOF,         /* the peer closed inside a message */
	HTTP1_DROP_RESET,       /* the connection was reset inside a message */
};

struct http1_callbacks {
	/* Headers complete. Return true on a response to skip its body
	 * (the response to a HEAD request). */
	bool (*on_head)(void *owner, int tag, const struct http1_msg *msg);
	/* Message complete, or ended early with HTTP1_BODY_LOST. */
	void (*on_complete)(void *owner, int tag, const struct http1_msg *msg);
	/* A message or bytes were discarded; had_head says whether on_head ran. */
	void (*on_drop)(void *owner, int tag, enum http1_drop why, bool had_head);
};

enum http1_state {
	HTTP1_SYNCED,  /* parser positioned in the stream */
	HTTP1_LOST,    /* waiting for a chunk that starts a message */
	HTTP1_STOPPED, /* upgraded to another protocol: nothing more to parse */
};

struct http1_stream {
	http_parser parser;
	enum http_parser_type type;
	enum http1_state state;
	const struct http1_callbacks *cb;
	void *owner;
	int tag;
	const struct http1_chunk *cur;
	bool in_msg, head_done, last_was_value;
	bool in_chunk;     /* inside a chunk's data or its closing CRLF */
	uint8_t last_byte; /* last byte fed, to know whether CR was seen */
	uint8_t hname_len;
	char hname[HTTP1_HNAME_MAX];
	char *hvalue;          /* where the current header's value goes, or NULL */
	uint16_t *hvalue_len;
	uint16_t hvalue_cap;
	struct http1_msg msg;
};

/* type: HTTP_REQUEST, HTTP_RESPONSE, or HTTP_BOTH when the direction is
 * not known (the first message decides). The stream starts LOST: it
 * syncs on the first chunk that starts a message, or at once through
 * http1_stream_start. */
void http1_stream_init(struct http1_stream *s, enum http_parser_type type,
		       const struct http1_callbacks *cb, void *owner, int tag);
/* The next byte fed is known to start a message (the connection was seen
 * opening): sync now rather than on a recognisable message start. */
void http1_stream_start(struct http1_stream *s);
void http1_stream_feed(struct http1_stream *s, const struct http1_chunk *chunk);
/* The peer closed its side: ends a body delimited by connection close. */
void http1_stream_eof(struct http1_stream *s, uint64_t ts);
/* The connection was reset: a message in progress ends, cut off. */
void http1_stream_abort(struct http1_stream *s, uint64_t ts);
/* Whether data starts a message of the stream's type. */
bool http1_is_message_start(enum http_parser_type type, const uint8_t *data, uint32_t len);

#endif
