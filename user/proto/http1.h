/* One direction of an HTTP/1.x connection: a streaming parser fed in-order
 * pieces that may end in a hole of bytes the kernel did not capture.
 *
 * Heads are read line by line (memchr to each line end); only the start
 * line and the headers sonde uses are kept, other header lines are skipped
 * without copying. Bodies are never looked at: a body of known length, a
 * chunk's data and a body that runs to close are skipped by arithmetic,
 * which is also what makes a hole inside them harmless. A hole anywhere
 * else (a head, a chunk-size line) loses sync, and so do bytes that are not
 * HTTP/1.x; the stream then waits for a piece that starts a new message.
 * Nothing here allocates.
 *
 * Why not a library: libhttp-parser (the Debian package) walks every byte
 * through a state machine with an indirect jump, measured at ~6 ns/byte on
 * the project's machines, more than half of the agent's cost per request. */
#ifndef SONDE_HTTP1_H
#define SONDE_HTTP1_H

#include "proto.h"

#include <stdbool.h>
#include <stdint.h>

#define HTTP1_TARGET_MAX 2048
#define HTTP1_HOST_MAX 256
#define HTTP1_UA_MAX 256
#define HTTP1_TRACEPARENT_MAX 64
/* Longest line kept whole: a start line with a full target, or a header
 * value sonde keeps. Longer lines are kept in part (start line) or skipped. */
#define HTTP1_LINE_MAX (HTTP1_TARGET_MAX + 64)
/* A head longer than this is not HTTP (or not worth it): sync is lost. */
#define HTTP1_HEAD_MAX (80 * 1024)

enum http1_method {
	HTTP1_GET = 1,
	HTTP1_HEAD,
	HTTP1_POST,
	HTTP1_PUT,
	HTTP1_DELETE,
	HTTP1_PATCH,
	HTTP1_OPTIONS,
	HTTP1_CONNECT,
	HTTP1_TRACE,
};

/* Names that live as long as the program: a method's ("_OTHER" for one
 * not known), a version's ("1.1"; digits beyond one are taken modulo 10). */
const char *http1_method_name(uint8_t method);
const char *http1_version_name(uint8_t major, uint8_t minor);

enum http1_type {
	HTTP1_REQUEST,
	HTTP1_RESPONSE,
	HTTP1_BOTH, /* not known yet: the first message decides */
};

enum http1_msg_flags {
	HTTP1_TARGET_TRUNCATED = 1 << 0, /* longer than HTTP1_TARGET_MAX */
	HTTP1_BODY_LOST = 1 << 1,        /* sync lost inside the body: body
	                                    size and end time are lower bounds */
	HTTP1_CUT_OFF = 1 << 2,          /* the connection ended (close, reset)
	                                    before the message did */
	HTTP1_HEAD_CUT = 1 << 3,         /* bytes of the head were not captured:
	                                    headers past them are unknown */
};

struct http1_msg {
	uint64_t start_ts;  /* CLOCK_MONOTONIC ns of the first byte */
	uint64_t end_ts;    /* ... of the last byte */
	uint64_t body_size; /* body bytes after de-chunking */
	uint64_t start_task; /* task and thread that moved the first byte */
	uint64_t start_pos;  /* stream offset of the first byte */
	uint32_t start_tid;
	bool is_request;
	bool keep_alive;
	uint8_t method;     /* enum http1_method, requests */
	uint8_t version_major, version_minor;
	uint8_t flags;      /* enum http1_msg_flags */
	uint16_t status;    /* responses */
	uint16_t target_len, host_len, ua_len, traceparent_len;
	char target[HTTP1_TARGET_MAX];
	char host[HTTP1_HOST_MAX];
	char user_agent[HTTP1_UA_MAX];
	char traceparent[HTTP1_TRACEPARENT_MAX];
};

enum http1_drop {
	HTTP1_DROP_PARSE_ERROR, /* bytes that are not HTTP/1.x */
	HTTP1_DROP_GAP,         /* a hole where the parser needed the bytes */
	HTTP1_DROP_EOF,         /* the peer closed inside a message */
	HTTP1_DROP_RESET,       /* the connection was reset inside a message */
	HTTP1_DROP_NO_MEMORY,   /* no work area for a message that began */
};

/* What a stream needs only inside a message: its line buffer and the
 * message being read. Taken when a message begins and given back when it
 * ends, so that an idle stream (a keep-alive connection's, most of its
 * life) holds none: ~4.8 KB less per stream. */
struct http1_work {
	char line[HTTP1_LINE_MAX];
	struct http1_msg msg;
};

struct http1_callbacks {
	/* A work area for a message that begins (its contents undefined);
	 * NULL when there is none to be had: the message is dropped. */
	struct http1_work *(*take_work)(void *owner, int tag);
	void (*give_work)(void *owner, int tag, struct http1_work *work);
	/* Head complete. Return true on a response to skip its body
	 * (the response to a HEAD request). */
	bool (*on_head)(void *owner, int tag, const struct http1_msg *msg);
	/* Message complete, or ended early with HTTP1_BODY_LOST. */
	void (*on_complete)(void *owner, int tag, const struct http1_msg *msg);
	/* A message or bytes were discarded; had_head says whether on_head ran. */
	void (*on_drop)(void *owner, int tag, enum http1_drop why, bool had_head);
};

enum http1_state {
	HTTP1_SYNCED,  /* positioned in the stream */
	HTTP1_LOST,    /* waiting for a piece that starts a message */
	HTTP1_STOPPED, /* upgraded to another protocol: nothing more to parse */
};

/* Where the parser is inside a synced stream. */
enum http1_phase {
	PHASE_IDLE,       /* between messages */
	PHASE_HEAD,       /* start line and headers */
	PHASE_BODY,       /* `remaining` bytes of a Content-Length body */
	PHASE_CHUNK_SIZE, /* a chunk-size line */
	PHASE_CHUNK_DATA, /* `remaining` bytes of chunk data */
	PHASE_CHUNK_CRLF, /* `remaining` bytes of the CRLF after chunk data */
	PHASE_TRAILERS,   /* trailer lines after the last chunk */
	PHASE_BODY_EOF,   /* a body that runs to connection close */
};

struct http1_stream {
	enum http1_type type;
	enum http1_state state;
	enum http1_phase phase;
	const struct http1_callbacks *cb;
	void *owner;
	int tag;
	const struct piece *cur;
	bool head_seen_start;  /* the start line was parsed */
	bool head_done;
	bool chunked, has_length, conn_close, conn_upgrade, has_upgrade;
	bool line_overflow;    /* current line outgrew the buffer */
	uint64_t remaining;
	uint64_t content_length;
	uint32_t head_bytes;
	uint32_t line_len;
	struct http1_work *work; /* inside a message only */
};

/* The stream starts LOST: it syncs on the first piece that starts a
 * message, or at once through http1_stream_start. */
void http1_stream_init(struct http1_stream *s, enum http1_type type,
		       const struct http1_callbacks *cb, void *owner, int tag);
/* Gives back the work area of a message in progress: the stream is
 * gone (its connection ended). */
void http1_stream_release(struct http1_stream *s);
/* The next byte fed is known to start a message (the connection was seen
 * opening): sync now rather than on a recognisable message start. */
void http1_stream_start(struct http1_stream *s);
void http1_stream_feed(struct http1_stream *s, const struct piece *chunk);
/* The peer closed its side: ends a body delimited by connection close. */
void http1_stream_eof(struct http1_stream *s, uint64_t ts);
/* The connection was reset: a message in progress ends, cut off. */
void http1_stream_abort(struct http1_stream *s, uint64_t ts);
/* Whether data starts a message of the given type (a prefix of such a
 * start counts: a start can be split over two calls). */
bool http1_is_message_start(enum http1_type type, const uint8_t *data, uint32_t len);

#endif
