#include "http1.h"

#include <stddef.h>
#include <string.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

/* Bytes fed to the parser in place of a body hole it can skip. */
static const uint8_t zeros[16384];

static struct http1_stream *stream_of(http_parser *p)
{
	return container_of(p, struct http1_stream, parser);
}

static void append(char *dst, uint16_t *len, uint16_t cap, const char *src, size_t n,
		   bool *overflow)
{
	size_t room = cap - 1u - *len;

	if (n > room) {
		n = room;
		if (overflow)
			*overflow = true;
	}
	memcpy(dst + *len, src, n);
	*len += (uint16_t)n;
	dst[*len] = '\0';
}

static int on_message_begin(http_parser *p)
{
	struct http1_stream *s = stream_of(p);
	struct http1_msg *m = &s->msg;

	m->start_ts = s->cur->ts;
	m->start_tid = s->cur->tid;
	m->end_ts = 0;
	m->body_size = 0;
	m->flags = 0;
	m->status = 0;
	m->target_len = m->host_len = m->ua_len = m->traceparent_len = 0;
	m->target[0] = m->host[0] = m->user_agent[0] = m->traceparent[0] = '\0';
	s->in_msg = true;
	s->head_done = false;
	s->in_chunk = false;
	s->last_was_value = false;
	s->hname_len = 0;
	s->hvalue = NULL;
	return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
	struct http1_msg *m = &stream_of(p)->msg;
	bool overflow = false;

	append(m->target, &m->target_len, HTTP1_TARGET_MAX, at, len, &overflow);
	if (overflow)
		m->flags |= HTTP1_TARGET_TRUNCATED;
	return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
	struct http1_stream *s = stream_of(p);

	if (s->last_was_value) {
		s->hname_len = 0;
		s->hvalue = NULL;
		s->last_was_value = false;
	}
	for (size_t i = 0; i < len; i++) {
		char c = at[i];

		if (s->hname_len >= HTTP1_HNAME_MAX - 1) {
			s->hname_len = HTTP1_HNAME_MAX; /* too long: matches nothing */
			break;
		}
		s->hname[s->hname_len++] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
	}
	return 0;
}

static bool hname_is(const struct http1_stream *s, const char *name)
{
	size_t len = strlen(name);

	return s->hname_len == len && memcmp(s->hname, name, len) == 0;
}

static void select_value_target(struct http1_stream *s)
{
	struct http1_msg *m = &s->msg;

	s->hvalue = NULL;
	if (hname_is(s, "host")) {
		s->hvalue = m->host;
		s->hvalue_len = &m->host_len;
		s->hvalue_cap = HTTP1_HOST_MAX;
	} else if (hname_is(s, "user-agent")) {
		s->hvalue = m->user_agent;
		s->hvalue_len = &m->ua_len;
		s->hvalue_cap = HTTP1_UA_MAX;
	} else if (hname_is(s, "traceparent")) {
		s->hvalue = m->traceparent;
		s->hvalue_len = &m->traceparent_len;
		s->hvalue_cap = HTTP1_TRACEPARENT_MAX;
	}
	/* A repeated header keeps its first value. */
	if (s->hvalue && *s->hvalue_len)
		s->hvalue = NULL;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
	struct http1_stream *s = stream_of(p);

	if (!s->last_was_value) {
		s->last_was_value = true;
		select_value_target(s);
	}
	if (s->hvalue)
		append(s->hvalue, s->hvalue_len, s->hvalue_cap, at, len, NULL);
	return 0;
}

/* Return 1 tells http_parser the message has no body. */
static int on_headers_complete(http_parser *p)
{
	struct http1_stream *s = stream_of(p);
	struct http1_msg *m = &s->msg;
	bool skip_body;

	m->is_request = p->type == HTTP_REQUEST;
	m->method = (uint8_t)p->method;
	m->status = (uint16_t)p->status_code;
	m->version_major = (uint8_t)p->http_major;
	m->version_minor = (uint8_t)p->http_minor;
	m->keep_alive = http_should_keep_alive(p);
	s->head_done = true;
	/* A direction of unknown type keeps the type its first message showed. */
	if (s->type == HTTP_BOTH)
		s->type = (enum http_parser_type)p->type;
	skip_body = s->cb->on_head(s->owner, s->tag, m);
	if (m->is_request)
		return 0;
	/* 1xx, 204 and 304 never have a body, whatever Content-Length says
	 * (RFC 9112 6.3); http_parser would otherwise wait for one. */
	return skip_body || m->status / 100 == 1 || m->status == 204 || m->status == 304;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
	(void)at;
	stream_of(p)->msg.body_size += len;
	return 0;
}

static int on_chunk_header(http_parser *p)
{
	stream_of(p)->in_chunk = p->content_length > 0;
	return 0;
}

static int on_chunk_complete(http_parser *p)
{
	stream_of(p)->in_chunk = false;
	return 0;
}

static int on_message_complete(http_parser *p)
{
	struct http1_stream *s = stream_of(p);

	s->msg.end_ts = s->cur->ts;
	s->in_msg = false;
	s->head_done = false;
	s->cb->on_complete(s->owner, s->tag, &s->msg);
	return 0;
}

static const http_parser_settings parser_settings = {
	.on_message_begin = on_message_begin,
	.on_url = on_url,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
	.on_chunk_header = on_chunk_header,
	.on_chunk_complete = on_chunk_complete,
};

void http1_stream_init(struct http1_stream *s, enum http_parser_type type,
		       const struct http1_callbacks *cb, void *owner, int tag)
{
	memset(s, 0, offsetof(struct http1_stream, msg));
	s->type = type;
	s->state = HTTP1_LOST;
	http_parser_init(&s->parser, type);
	s->cb = cb;
	s->owner = owner;
	s->tag = tag;
}

/* True also when data is shorter than prefix but agrees with it: a message
 * start split over two calls ("GE", "T /") must still be recognised. */
static bool starts_with(const uint8_t *data, uint32_t len, const char *prefix)
{
	size_t n = strlen(prefix);

	return len > 0 && memcmp(data, prefix, len < n ? len : n) == 0;
}

static bool is_request_start(const uint8_t *data, uint32_t len)
{
	static const char *const methods[] = {
		"GET ", "POST ", "PUT ", "HEAD ", "DELETE ", "PATCH ", "OPTIONS ", "CONNECT ", "TRACE ",
	};

	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		if (starts_with(data, len, methods[i]))
			return true;
	return false;
}

bool http1_is_message_start(enum http_parser_type type, const uint8_t *data, uint32_t len)
{
	bool request = is_request_start(data, len);
	bool response = starts_with(data, len, "HTTP/1.");

	if (type == HTTP_REQUEST)
		return request;
	if (type == HTTP_RESPONSE)
		return response;
	return request || response;
}

/* Gives up on the current message and waits for the next message start.
 * A message whose head was seen still completes, marked BODY_LOST, so that
 * its exchange becomes a span rather than silence. */
static void lose_sync(struct http1_stream *s, enum http1_drop why)
{
	bool had_head = s->in_msg && s->head_done;

	if (had_head) {
		s->msg.flags |= HTTP1_BODY_LOST;
		if (why == HTTP1_DROP_EOF || why == HTTP1_DROP_RESET)
			s->msg.flags |= HTTP1_CUT_OFF;
		s->msg.end_ts = s->cur->ts;
		s->cb->on_complete(s->owner, s->tag, &s->msg);
	}
	if (s->in_msg || why == HTTP1_DROP_PARSE_ERROR)
		s->cb->on_drop(s->owner, s->tag, why, had_head);
	s->in_msg = false;
	s->head_done = false;
	s->state = HTTP1_LOST;
}

static void resync(struct http1_stream *s)
{
	http_parser_init(&s->parser, s->type);
	s->state = HTTP1_SYNCED;
	s->in_msg = false;
	s->in_chunk = false;
}

/* Feeds bytes; false if the stream lost sync or stopped. */
static bool parse(struct http1_stream *s, const uint8_t *data, size_t len)
{
	size_t parsed = http_parser_execute(&s->parser, &parser_settings, (const char *)data, len);

	if (s->parser.upgrade) {
		s->state = HTTP1_STOPPED;
		return false;
	}
	if (HTTP_PARSER_ERRNO(&s->parser) != HPE_OK || parsed != len) {
		lose_sync(s, HTTP1_DROP_PARSE_ERROR);
		return false;
	}
	if (len)
		s->last_byte = data[len - 1];
	return true;
}

static bool in_identity_body(const struct http1_stream *s)
{
	return s->in_msg && s->head_done && !(s->parser.flags & F_CHUNKED) &&
	       s->parser.content_length > 0;
}

/* How many bytes of a hole the protocol lets us fill, and with what:
 * zeros for body bytes of known length, the CRLF that closes a chunk.
 * Returns 0 when the hole holds bytes we cannot know. */
static uint64_t fillable(const struct http1_stream *s, uint64_t hole, const uint8_t **fill)
{
	uint64_t n;

	if (in_identity_body(s) || (s->in_chunk && s->parser.content_length > 0)) {
		*fill = zeros;
		n = s->parser.content_length < hole ? s->parser.content_length : hole;
		return n < sizeof(zeros) ? n : sizeof(zeros);
	}
	if (s->in_chunk) {
		*fill = (const uint8_t *)(s->last_byte == '\r' ? "\n" : "\r\n");
		n = s->last_byte == '\r' ? 1 : 2;
		return n < hole ? n : hole;
	}
	return 0;
}

static void skip_hole(struct http1_stream *s, uint64_t hole)
{
	while (hole > 0) {
		const uint8_t *fill;
		uint64_t step = fillable(s, hole, &fill);

		if (step == 0) {
			lose_sync(s, HTTP1_DROP_GAP);
			return;
		}
		if (!parse(s, fill, (size_t)step))
			return;
		hole -= step;
	}
}

void http1_stream_start(struct http1_stream *s)
{
	if (s->state == HTTP1_LOST && !s->in_msg)
		resync(s);
}

void http1_stream_feed(struct http1_stream *s, const struct http1_chunk *chunk)
{
	s->cur = chunk;
	if (s->state == HTTP1_STOPPED)
		return;
	if (s->state == HTTP1_LOST) {
		if (!http1_is_message_start(s->type, chunk->data, chunk->captured))
			return;
		resync(s);
	}
	if (chunk->captured && !parse(s, chunk->data, chunk->captured))
		return;
	if (chunk->hole)
		skip_hole(s, chunk->hole);
}

void http1_stream_eof(struct http1_stream *s, uint64_t ts)
{
	struct http1_chunk eof = { .ts = ts };

	s->cur = &eof;
	if (s->state != HTTP1_SYNCED || !s->in_msg)
		return;
	http_parser_execute(&s->parser, &parser_settings, NULL, 0);
	if (s->in_msg)
		lose_sync(s, HTTP1_DROP_EOF);
	if (s->state != HTTP1_STOPPED)
		s->state = HTTP1_LOST;
	s->cur = NULL;
}

void http1_stream_abort(struct http1_stream *s, uint64_t ts)
{
	struct http1_chunk reset = { .ts = ts };

	s->cur = &reset;
	if (s->state == HTTP1_SYNCED && s->in_msg)
		lose_sync(s, HTTP1_DROP_RESET);
	if (s->state != HTTP1_STOPPED)
		s->state = HTTP1_LOST;
	s->cur = NULL;
}
