#include "http1.h"

#include "chars.h"

#include <stddef.h>
#include <string.h>

struct method {
	const char *name;
	uint8_t len;
	uint8_t id;
};

static const struct method methods[] = {
	{ "GET", 3, HTTP1_GET },         { "POST", 4, HTTP1_POST },
	{ "PUT", 3, HTTP1_PUT },         { "HEAD", 4, HTTP1_HEAD },
	{ "DELETE", 6, HTTP1_DELETE },   { "PATCH", 5, HTTP1_PATCH },
	{ "OPTIONS", 7, HTTP1_OPTIONS }, { "CONNECT", 7, HTTP1_CONNECT },
	{ "TRACE", 5, HTTP1_TRACE },
};

#define NMETHODS (sizeof(methods) / sizeof(methods[0]))

const char *http1_method_name(uint8_t method)
{
	for (size_t i = 0; i < NMETHODS; i++)
		if (methods[i].id == method)
			return methods[i].name;
	return "_OTHER";
}

#define HTTP1_VERSION(major, minor) { '0' + (major), '.', '0' + (minor), '\0' }
#define HTTP1_VERSIONS(major)                                                              \
	{ HTTP1_VERSION(major, 0), HTTP1_VERSION(major, 1), HTTP1_VERSION(major, 2),       \
	  HTTP1_VERSION(major, 3), HTTP1_VERSION(major, 4), HTTP1_VERSION(major, 5),       \
	  HTTP1_VERSION(major, 6), HTTP1_VERSION(major, 7), HTTP1_VERSION(major, 8),       \
	  HTTP1_VERSION(major, 9) }

static const char version_names[10][10][4] = {
	HTTP1_VERSIONS(0), HTTP1_VERSIONS(1), HTTP1_VERSIONS(2), HTTP1_VERSIONS(3),
	HTTP1_VERSIONS(4), HTTP1_VERSIONS(5), HTTP1_VERSIONS(6), HTTP1_VERSIONS(7),
	HTTP1_VERSIONS(8), HTTP1_VERSIONS(9),
};

const char *http1_version_name(uint8_t major, uint8_t minor)
{
	return version_names[major % 10][minor % 10];
}

/* ---- recognising a message start ------------------------------------- */

/* True also when data is shorter than prefix but agrees with it: a message
 * start split over two calls ("GE", "T /") must still be recognised. */
static bool starts_with(const uint8_t *data, uint32_t len, const char *prefix, size_t n)
{
	return len > 0 && memcmp(data, prefix, len < n ? len : n) == 0;
}

static bool is_request_start(const uint8_t *data, uint32_t len)
{
	for (size_t i = 0; i < NMETHODS; i++) {
		char token[12];

		memcpy(token, methods[i].name, methods[i].len);
		token[methods[i].len] = ' ';
		if (starts_with(data, len, token, methods[i].len + 1u))
			return true;
	}
	return false;
}

bool http1_is_message_start(enum http1_type type, const uint8_t *data, uint32_t len)
{
	bool request = type != HTTP1_RESPONSE && is_request_start(data, len);
	bool response = type != HTTP1_REQUEST && starts_with(data, len, "HTTP/1.", 7);

	return request || response;
}

/* ---- message lifecycle ----------------------------------------------- */

/* The message's work area goes back when the message ends, whichever way. */
static void end_message(struct http1_stream *s)
{
	s->phase = PHASE_IDLE;
	s->head_done = false;
	if (s->work) {
		s->cb->give_work(s->owner, s->tag, s->work);
		s->work = NULL;
	}
}

static void lose_sync(struct http1_stream *s, enum http1_drop why);

/* The stream offset of p, a byte of the current piece: its captured
 * bytes are at data, its tail right after them in memory but past the
 * hole in the stream. */
static uint64_t stream_pos(const struct http1_stream *s, const uint8_t *p)
{
	uint64_t off = (uint64_t)(p - s->cur->data);

	if (off >= s->cur->captured)
		off += s->cur->hole;
	return s->cur->pos + off;
}

static bool begin_message(struct http1_stream *s, const uint8_t *p)
{
	struct http1_msg *m;

	s->work = s->cb->take_work(s->owner, s->tag);
	if (!s->work) {
		lose_sync(s, HTTP1_DROP_NO_MEMORY);
		return false;
	}
	m = &s->work->msg;
	m->start_ts = s->cur->ts;
	m->start_pos = stream_pos(s, p);
	m->start_task = s->cur->task;
	m->start_tid = s->cur->tid;
	m->end_ts = 0;
	m->body_size = 0;
	m->flags = 0;
	m->status = 0;
	m->method = 0;
	m->keep_alive = false;
	m->target_len = m->host_len = m->ua_len = m->traceparent_len = 0;
	m->target[0] = m->host[0] = m->user_agent[0] = m->traceparent[0] = '\0';
	s->phase = PHASE_HEAD;
	s->head_seen_start = s->head_done = false;
	s->chunked = s->has_length = s->conn_close = s->conn_upgrade = s->has_upgrade = false;
	s->content_length = 0;
	s->head_bytes = 0;
	s->line_len = 0;
	s->line_overflow = false;
	return true;
}

static void complete_message(struct http1_stream *s)
{
	s->work->msg.end_ts = s->cur->ts;
	s->phase = PHASE_IDLE;
	s->head_done = false;
	s->cb->on_complete(s->owner, s->tag, &s->work->msg);
	end_message(s);
}

/* Gives up on the current message and waits for the next message start.
 * A message whose head was seen still completes, marked BODY_LOST, so that
 * its exchange becomes a span rather than silence. */
static void lose_sync(struct http1_stream *s, enum http1_drop why)
{
	bool in_msg = s->phase != PHASE_IDLE;
	bool had_head = in_msg && s->head_done;

	if (had_head) {
		s->work->msg.flags |= HTTP1_BODY_LOST;
		if (why == HTTP1_DROP_EOF || why == HTTP1_DROP_RESET)
			s->work->msg.flags |= HTTP1_CUT_OFF;
		s->work->msg.end_ts = s->cur->ts;
		s->cb->on_complete(s->owner, s->tag, &s->work->msg);
	}
	if (in_msg || why == HTTP1_DROP_PARSE_ERROR || why == HTTP1_DROP_NO_MEMORY)
		s->cb->on_drop(s->owner, s->tag, why, had_head);
	end_message(s);
	s->state = HTTP1_LOST;
}

/* ---- lines ------------------------------------------------------------ */

/* Appends the first `take` bytes to the line buffer (as much as fits). */
static void buffer_line(struct http1_stream *s, const uint8_t *p, size_t take)
{
	size_t room = HTTP1_LINE_MAX - 1 - s->line_len;
	size_t copy = take < room ? take : room;

	memcpy(s->work->line + s->line_len, p, copy);
	s->line_len += (uint32_t)copy;
	if (copy < take)
		s->line_overflow = true;
}

/* Takes bytes up to and including the next LF into the line buffer.
 * Returns the bytes consumed; *done when the line ended. */
static size_t read_line(struct http1_stream *s, const uint8_t *p, size_t n, bool *done)
{
	const uint8_t *lf = memchr(p, '\n', n);
	size_t take = lf ? (size_t)(lf - p) + 1 : n;

	buffer_line(s, p, take);
	*done = lf != NULL;
	return take;
}

/* Length of a finished line without its CRLF (or LF). */
static size_t strip_eol(const char *line, size_t len)
{
	if (len && line[len - 1] == '\n')
		len--;
	if (len && line[len - 1] == '\r')
		len--;
	return len;
}

static size_t line_content(struct http1_stream *s)
{
	return strip_eol(s->work->line, s->line_len);
}

static void next_line(struct http1_stream *s)
{
	s->line_len = 0;
	s->line_overflow = false;
}

/* ---- start line --------------------------------------------------------- */

static bool is_digit(char c)
{
	return char_is(c, CHAR_DIGIT);
}

/* "HTTP/1.x" */
static bool parse_version(struct http1_stream *s, const char *v, size_t len)
{
	if (len != 8 || memcmp(v, "HTTP/1.", 7) != 0 || !is_digit(v[7]))
		return false;
	s->work->msg.version_major = 1;
	s->work->msg.version_minor = (uint8_t)(v[7] - '0');
	return true;
}

static const struct method *find_method(const char *text, size_t len)
{
	for (size_t i = 0; i < NMETHODS; i++)
		if (methods[i].len == len && memcmp(methods[i].name, text, len) == 0)
			return &methods[i];
	return NULL;
}


/* METHOD SP target SP HTTP/1.x. A line longer than the buffer keeps its
 * method and the start of its target; its version is taken as 1.1. */
static bool parse_request_line(struct http1_stream *s, const char *line, size_t len)
{
	struct http1_msg *m = &s->work->msg;
	const char *sp1 = memchr(line, ' ', len), *sp2, *target;
	const struct method *method;
	size_t target_len;

	if (!sp1 || !(method = find_method(line, (size_t)(sp1 - line))))
		return false;
	target = sp1 + 1;
	sp2 = memchr(target, ' ', len - (size_t)(target - line));
	if (s->line_overflow) {
		target_len = sp2 ? (size_t)(sp2 - target) : len - (size_t)(target - line);
		m->flags |= HTTP1_TARGET_TRUNCATED;
		m->version_major = 1;
		m->version_minor = 1;
	} else {
		if (!sp2 || !parse_version(s, sp2 + 1, len - (size_t)(sp2 + 1 - line)))
			return false;
		target_len = (size_t)(sp2 - target);
	}
	if (target_len == 0)
		return false;
	for (size_t i = 0; i < target_len; i++)
		if (!char_is(target[i], CHAR_TARGET))
			return false;
	if (target_len >= HTTP1_TARGET_MAX) {
		target_len = HTTP1_TARGET_MAX - 1;
		m->flags |= HTTP1_TARGET_TRUNCATED;
	}
	memcpy(m->target, target, target_len);
	m->target[target_len] = '\0';
	m->target_len = (uint16_t)target_len;
	m->method = method->id;
	m->is_request = true;
	return true;
}

/* HTTP/1.x SP 3DIGIT [SP reason] */
static bool parse_status_line(struct http1_stream *s, const char *line, size_t len)
{
	if (len < 12 || !parse_version(s, line, 8) || line[8] != ' ' || !is_digit(line[9]) ||
	    !is_digit(line[10]) || !is_digit(line[11]) || (len > 12 && line[12] != ' '))
		return false;
	s->work->msg.status = (uint16_t)((line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0'));
	s->work->msg.is_request = false;
	return s->work->msg.status >= 100;
}

static bool parse_start_line(struct http1_stream *s, const char *line, size_t len)
{
	bool ok;

	if (s->type != HTTP1_REQUEST && len >= 5 && memcmp(line, "HTTP/", 5) == 0)
		ok = parse_status_line(s, line, len);
	else if (s->type != HTTP1_RESPONSE)
		ok = parse_request_line(s, line, len);
	else
		ok = false;
	/* A direction of unknown type keeps the type its first message showed. */
	if (ok && s->type == HTTP1_BOTH)
		s->type = s->work->msg.is_request ? HTTP1_REQUEST : HTTP1_RESPONSE;
	return ok;
}

/* ---- headers ------------------------------------------------------------ */


#define FOLD_CASE_64 0x2020202020202020ull

/* Whether `n` (4 or 8) bytes of a token fold to the same bytes of `want`. */
static inline __attribute__((always_inline)) bool word_folds_to(const char *text,
								  const char *want, size_t n)
{
	uint64_t got = 0, expect = 0;

	memcpy(&got, text, n);
	memcpy(&expect, want, n);
	return (got | (FOLD_CASE_64 >> (64 - 8 * n))) == expect;
}

/* Case-insensitive match against a lower-case `want` of the same length
 * (at least 4: every name and token asked about is) made of letters and
 * '-', for which OR-ing 0x20 folds case exactly (the only other byte that
 * folds to '-' is CR, which no token holds). Compared a word at a time;
 * the last word overlaps the one before it. Inlined so that the constant
 * `want` and `len` of each call fold the loop away. */
static inline __attribute__((always_inline)) bool name_is(const char *name, size_t len,
							   const char *want)
{
	size_t step = len >= 8 ? 8 : 4, at = 0;

	for (; at + step < len; at += step)
		if (!word_folds_to(name + at, want + at, step))
			return false;
	return word_folds_to(name + len - step, want + len - step, step);
}

static void keep_value(char *dst, uint16_t *dst_len, size_t cap, const char *v, size_t len)
{
	if (*dst_len)
		return; /* a repeated header keeps its first value */
	if (len >= cap)
		len = cap - 1;
	memcpy(dst, v, len);
	dst[len] = '\0';
	*dst_len = (uint16_t)len;
}

static bool parse_content_length(struct http1_stream *s, const char *v, size_t len)
{
	uint64_t n = 0;

	if (len == 0 || len > 18)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (!is_digit(v[i]))
			return false;
		n = n * 10 + (uint64_t)(v[i] - '0');
	}
	if (s->has_length && n != s->content_length)
		return false;
	s->has_length = true;
	s->content_length = n;
	return true;
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t';
}

/* Calls fn for each item of a comma-separated list, trimmed. */
static void for_each_item(const char *v, size_t len, void (*fn)(void *, const char *, size_t),
			  void *arg)
{
	size_t pos = 0;

	if (!memchr(v, ',', len)) {
		if (len)
			fn(arg, v, len); /* the usual single item: callers pass it trimmed */
		return;
	}
	while (pos <= len) {
		size_t start = pos, end;

		while (pos < len && v[pos] != ',')
			pos++;
		end = pos;
		while (start < end && is_space(v[start]))
			start++;
		while (end > start && is_space(v[end - 1]))
			end--;
		if (end > start)
			fn(arg, v + start, end - start);
		pos++;
	}
}

static inline __attribute__((always_inline)) bool token_is(const char *item, size_t len,
							    const char *token)
{
	return strlen(token) == len && name_is(item, len, token);
}

/* Transfer-Encoding: chunked must be the last coding. */
static void te_item(void *arg, const char *item, size_t len)
{
	struct http1_stream *s = arg;

	s->chunked = token_is(item, len, "chunked");
}

static void connection_item(void *arg, const char *item, size_t len)
{
	struct http1_stream *s = arg;

	s->conn_close |= token_is(item, len, "close");
	s->conn_upgrade |= token_is(item, len, "upgrade");
	s->work->msg.keep_alive |= token_is(item, len, "keep-alive");
}

static bool parse_header(struct http1_stream *s, const char *line, size_t len)
{
	struct http1_msg *m = &s->work->msg;
	const char *value;
	size_t name_len = 0, value_len;

	if (line[0] == ' ' || line[0] == '\t')
		return true; /* obsolete line folding: a continuation we do not use */
	/* The name is checked and measured in one pass: tokens up to ':'. */
	while (name_len < len && char_is(line[name_len], CHAR_TCHAR))
		name_len++;
	if (name_len == 0 || name_len == len || line[name_len] != ':')
		return false;
	value = line + name_len + 1;
	value_len = len - name_len - 1;
	while (value_len && is_space(*value)) {
		value++;
		value_len--;
	}
	while (value_len && is_space(value[value_len - 1]))
		value_len--;
	switch (name_len) {
	case 14:
		if (name_is(line, name_len, "content-length"))
			return !s->line_overflow && parse_content_length(s, value, value_len);
		break;
	case 17:
		if (name_is(line, name_len, "transfer-encoding"))
			for_each_item(value, value_len, te_item, s);
		break;
	case 10:
		if (name_is(line, name_len, "connection"))
			for_each_item(value, value_len, connection_item, s);
		else if (name_is(line, name_len, "user-agent")) {
			keep_value(m->user_agent, &m->ua_len, HTTP1_UA_MAX, value, value_len);
		}
		break;
	case 7:
		s->has_upgrade |= name_is(line, name_len, "upgrade");
		break;
	case 4:
		if (name_is(line, name_len, "host"))
			keep_value(m->host, &m->host_len, HTTP1_HOST_MAX, value, value_len);
		break;
	case 11:
		if (name_is(line, name_len, "traceparent"))
			keep_value(m->traceparent, &m->traceparent_len, HTTP1_TRACEPARENT_MAX,
				   value, value_len);
		break;
	}
	return true;
}

/* ---- end of head: how the body is framed ------------------------------- */

static void start_body(struct http1_stream *s)
{
	if (s->chunked) {
		s->phase = PHASE_CHUNK_SIZE;
	} else if (s->has_length && s->content_length > 0) {
		s->phase = PHASE_BODY;
		s->remaining = s->content_length;
	} else {
		complete_message(s);
	}
}

static void request_head_done(struct http1_stream *s)
{
	bool upgrading = s->work->msg.method == HTTP1_CONNECT || (s->has_upgrade && s->conn_upgrade);

	start_body(s);
	/* What follows an upgrade request is HTTP again only if the server
	 * refuses: wait quietly for a message start. */
	if (upgrading && s->phase == PHASE_IDLE)
		s->state = HTTP1_LOST;
}

static void response_head_done(struct http1_stream *s, bool no_body)
{
	uint16_t status = s->work->msg.status;

	if (status / 100 == 1 || status == 204 || status == 304 || no_body) {
		complete_message(s);
		if (status == 101)
			s->state = HTTP1_STOPPED;
	} else if (s->chunked || s->has_length) {
		start_body(s);
	} else {
		s->phase = PHASE_BODY_EOF;
	}
}

static void head_done(struct http1_stream *s)
{
	struct http1_msg *m = &s->work->msg;
	bool no_body;

	m->keep_alive = m->version_minor >= 1 ? !s->conn_close : m->keep_alive && !s->conn_close;
	s->head_done = true;
	no_body = s->cb->on_head(s->owner, s->tag, m);
	if (m->is_request)
		request_head_done(s);
	else
		response_head_done(s, no_body);
}

/* One line of a head, without its CRLF. Returns false when it is not HTTP. */
static bool head_line(struct http1_stream *s, const char *line, size_t len)
{
	bool ok = true;

	if (!s->head_seen_start) {
		ok = parse_start_line(s, line, len);
		s->head_seen_start = true;
	} else if (len == 0) {
		head_done(s);
	} else {
		ok = parse_header(s, line, len);
	}
	next_line(s);
	return ok;
}

/* A line that lies whole in the captured bytes is parsed where it is;
 * only a line split across pieces goes through the line buffer. */
static size_t feed_head(struct http1_stream *s, const uint8_t *p, size_t n, bool *ok)
{
	const uint8_t *lf = memchr(p, '\n', n);
	size_t used = lf ? (size_t)(lf - p) + 1 : n;
	bool in_place = lf && s->line_len == 0;

	if (!in_place)
		buffer_line(s, p, used);
	s->head_bytes += (uint32_t)used;
	if (s->head_bytes > HTTP1_HEAD_MAX)
		*ok = false;
	else if (in_place)
		*ok = head_line(s, (const char *)p, strip_eol((const char *)p, used));
	else if (lf)
		*ok = head_line(s, s->work->line, line_content(s));
	return used;
}

/* ---- chunked bodies ------------------------------------------------------- */

/* "1f4[;ext...]" */
static bool chunk_size_line(struct http1_stream *s)
{
	size_t len = line_content(s), i = 0;
	uint64_t size = 0;

	if (s->line_overflow)
		return false;
	for (; i < len && char_hex_value(s->work->line[i]) >= 0; i++) {
		if (i >= 15)
			return false;
		size = size << 4 | (uint64_t)char_hex_value(s->work->line[i]);
	}
	if (i == 0 || (i < len && s->work->line[i] != ';' && s->work->line[i] != ' ' && s->work->line[i] != '\t'))
		return false;
	next_line(s);
	if (size == 0) {
		s->phase = PHASE_TRAILERS;
	} else {
		s->phase = PHASE_CHUNK_DATA;
		s->remaining = size;
	}
	return true;
}

static size_t feed_chunk_crlf(struct http1_stream *s, const uint8_t *p, size_t n, bool *ok)
{
	size_t used = 0;

	while (used < n && s->remaining > 0) {
		char want = s->remaining == 2 ? '\r' : '\n';

		if (p[used] != want && !(want == '\r' && p[used] == '\n')) {
			*ok = false;
			return used;
		}
		s->remaining = p[used] == '\n' ? 0 : s->remaining - 1;
		used++;
	}
	if (s->remaining == 0)
		s->phase = PHASE_CHUNK_SIZE;
	return used;
}

/* ---- bodies: data and holes alike --------------------------------------- */

/* Skips n body bytes (seen or not) in a phase whose length is known. */
static uint64_t skip_body(struct http1_stream *s, uint64_t n)
{
	uint64_t step = n < s->remaining ? n : s->remaining;

	switch (s->phase) {
	case PHASE_BODY_EOF:
		s->work->msg.body_size += n;
		return n;
	case PHASE_BODY:
	case PHASE_CHUNK_DATA:
		s->work->msg.body_size += step;
		s->remaining -= step;
		if (s->remaining == 0 && s->phase == PHASE_BODY) {
			complete_message(s);
		} else if (s->remaining == 0) {
			s->phase = PHASE_CHUNK_CRLF;
			s->remaining = 2;
		}
		return step;
	case PHASE_CHUNK_CRLF:
		s->remaining -= step;
		if (s->remaining == 0)
			s->phase = PHASE_CHUNK_SIZE;
		return step;
	default:
		return 0;
	}
}

/* ---- the feed loop ---------------------------------------------------------- */

static size_t feed_one(struct http1_stream *s, const uint8_t *p, size_t n, bool *ok)
{
	bool done;
	size_t used;

	switch (s->phase) {
	case PHASE_IDLE:
		if (p[0] == '\r' || p[0] == '\n')
			return 1; /* stray CRLF between messages is allowed */
		begin_message(s, p); /* on failure the stream is LOST: consume stops */
		return 0;
	case PHASE_HEAD:
		return feed_head(s, p, n, ok);
	case PHASE_CHUNK_SIZE:
		used = read_line(s, p, n, &done);
		if (done)
			*ok = chunk_size_line(s);
		return used;
	case PHASE_CHUNK_CRLF:
		return feed_chunk_crlf(s, p, n, ok);
	case PHASE_TRAILERS:
		used = read_line(s, p, n, &done);
		if (done) {
			bool empty = line_content(s) == 0;

			next_line(s);
			if (empty)
				complete_message(s);
		}
		return used;
	default:
		return (size_t)skip_body(s, n);
	}
}

/* Feeds captured bytes; false if the stream lost sync or stopped. */
static bool consume(struct http1_stream *s, const uint8_t *p, size_t n)
{
	while (n > 0) {
		bool ok = true;
		size_t used = feed_one(s, p, n, &ok);

		if (!ok) {
			lose_sync(s, HTTP1_DROP_PARSE_ERROR);
			return false;
		}
		if (s->state != HTTP1_SYNCED)
			return false;
		p += used;
		n -= used;
	}
	return true;
}

/* A hole inside a head (one longer than the capture): the start line and
 * the headers before the hole still make the message, marked HEAD_CUT.
 * Where its body ends is unknown, so it ends here (BODY_LOST) and the
 * stream waits for the next message start. False when not even the start
 * line was captured. */
static bool cut_head(struct http1_stream *s)
{
	if (!s->head_seen_start) {
		if (s->line_len == 0)
			return false;
		s->line_overflow = true; /* what was captured of the line */
		if (!head_line(s, s->work->line, line_content(s)))
			return false;
	}
	s->work->msg.flags |= HTTP1_HEAD_CUT;
	s->head_done = true;
	s->cb->on_head(s->owner, s->tag, &s->work->msg);
	lose_sync(s, HTTP1_DROP_GAP);
	return true;
}

static void skip_hole(struct http1_stream *s, uint64_t hole)
{
	while (hole > 0 && s->state == HTTP1_SYNCED) {
		uint64_t step = skip_body(s, hole);

		if (step == 0) {
			if (s->phase != PHASE_HEAD || !cut_head(s))
				lose_sync(s, HTTP1_DROP_GAP);
			return;
		}
		hole -= step;
	}
}

/* ---- public ------------------------------------------------------------------ */

void http1_stream_init(struct http1_stream *s, enum http1_type type,
		       const struct http1_callbacks *cb, void *owner, int tag)
{
	memset(s, 0, sizeof(*s));
	s->type = type;
	s->state = HTTP1_LOST;
	s->phase = PHASE_IDLE;
	s->cb = cb;
	s->owner = owner;
	s->tag = tag;
}

void http1_stream_release(struct http1_stream *s)
{
	end_message(s);
}

void http1_stream_start(struct http1_stream *s)
{
	if (s->state == HTTP1_LOST && s->phase == PHASE_IDLE)
		s->state = HTTP1_SYNCED;
}

void http1_stream_feed(struct http1_stream *s, const struct piece *chunk)
{
	s->cur = chunk;
	if (s->state == HTTP1_STOPPED)
		return;
	if (s->state == HTTP1_LOST) {
		if (!http1_is_message_start(s->type, chunk->data, chunk->captured))
			return;
		s->state = HTTP1_SYNCED;
		s->phase = PHASE_IDLE;
	}
	if (chunk->captured && !consume(s, chunk->data, chunk->captured))
		return;
	if (chunk->hole)
		skip_hole(s, chunk->hole);
	if (chunk->tail && s->state == HTTP1_SYNCED)
		consume(s, chunk->data + chunk->captured, chunk->tail);
}

void http1_stream_eof(struct http1_stream *s, uint64_t ts)
{
	struct piece eof = { .ts = ts };

	s->cur = &eof;
	if (s->state == HTTP1_SYNCED && s->phase == PHASE_BODY_EOF)
		complete_message(s);
	else if (s->state == HTTP1_SYNCED && s->phase != PHASE_IDLE)
		lose_sync(s, HTTP1_DROP_EOF);
	if (s->state != HTTP1_STOPPED)
		s->state = HTTP1_LOST;
	s->cur = NULL;
}

void http1_stream_abort(struct http1_stream *s, uint64_t ts)
{
	struct piece reset = { .ts = ts };

	s->cur = &reset;
	if (s->state == HTTP1_SYNCED && s->phase != PHASE_IDLE)
		lose_sync(s, HTTP1_DROP_RESET);
	if (s->state != HTTP1_STOPPED)
		s->state = HTTP1_LOST;
	s->cur = NULL;
}
