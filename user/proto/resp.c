#include "resp.h"

#include <string.h>

static bool is_type_byte(uint8_t c)
{
	return c && strchr("+-:$*_,#!=(%~>|", c);
}

static bool is_letter(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

bool resp_is_value_start(const struct resp_stream *s, const uint8_t *data, uint32_t len)
{
	return len > 0 && (is_type_byte(data[0]) || (s->requests && is_letter(data[0])));
}

/* ---- values ------------------------------------------------------------- */

static void begin_value(struct resp_stream *s)
{
	struct resp_value *v = &s->v;

	v->start_ts = s->cur->ts;
	v->start_tid = s->cur->tid;
	v->start_task = s->cur->task;
	v->end_ts = 0;
	v->type = 0;
	v->cut = false;
	v->nitems = 0;
	v->nwords = 0;
	s->in_value = true;
	s->depth = 0;
}

static void end_value(struct resp_stream *s)
{
	s->v.end_ts = s->cur->ts;
	s->in_value = false;
	s->cb->on_value(s->owner, &s->v);
}

/* An element ended (a scalar, or an aggregate whose elements all came):
 * it counts against its parent, which may end in turn. */
static void element_done(struct resp_stream *s)
{
	while (s->depth > 0) {
		if (--s->left[s->depth - 1] > 0)
			return;
		s->depth--;
	}
	end_value(s);
}

static void lose_sync(struct resp_stream *s, bool gap)
{
	const struct resp_value *v = s->in_value ? &s->v : NULL;

	if (v)
		s->v.end_ts = s->cur->ts;
	s->state = RESP_LOST;
	s->in_value = s->in_bulk = false;
	s->depth = 0;
	s->line_len = 0;
	s->line_overflow = false;
	s->cb->on_lost(s->owner, v, gap);
}

/* ---- words kept ------------------------------------------------------------ */

static void keep_word(struct resp_stream *s, const char *text, size_t len)
{
	char *word = s->v.words[s->v.nwords];

	if (s->v.nwords >= RESP_WORDS)
		return;
	if (len >= RESP_WORD_MAX)
		len = RESP_WORD_MAX - 1;
	memcpy(word, text, len);
	word[len] = '\0';
	s->v.nwords++;
}

/* The first word of an error's text: its prefix ("ERR", "WRONGTYPE"). */
static void keep_error_prefix(struct resp_stream *s, const char *text, size_t len)
{
	const char *space = memchr(text, ' ', len);

	keep_word(s, text, space ? (size_t)(space - text) : len);
}

/* An inline command: words separated by spaces. */
static void inline_command(struct resp_stream *s, const char *line, size_t len)
{
	size_t i = 0;

	s->v.type = 'i';
	while (i < len) {
		size_t start;

		while (i < len && line[i] == ' ')
			i++;
		start = i;
		while (i < len && line[i] != ' ')
			i++;
		if (i > start) {
			keep_word(s, line + start, i - start);
			s->v.nitems++;
		}
	}
	s->v.cut |= s->line_overflow;
	end_value(s);
}

/* ---- lines ---------------------------------------------------------------- */

static bool parse_count(const char *text, size_t len, int64_t *out)
{
	int64_t n = 0;
	bool negative = len > 0 && text[0] == '-';
	size_t i = negative ? 1 : 0;

	if (i == len || len - i > 12)
		return false;
	for (; i < len; i++) {
		if (text[i] < '0' || text[i] > '9')
			return false;
		n = n * 10 + (text[i] - '0');
	}
	*out = negative ? -n : n;
	return !negative || n == 1;
}

/* A bulk string's payload is one of the words kept: a command's name and
 * first argument, or a blob error's text. */
static bool wants_payload(const struct resp_stream *s, char type)
{
	if (!s->requests)
		return type == '!' && s->depth == 0;
	return s->depth == 1 && s->v.nitems - s->left[0] < RESP_WORDS && s->v.nwords < RESP_WORDS;
}

static bool bulk_line(struct resp_stream *s, char type, int64_t n)
{
	if (n == -1) {
		element_done(s);
		return true;
	}
	s->keep_bulk = wants_payload(s, type);
	if (s->keep_bulk)
		s->v.words[s->v.nwords][0] = '\0';
	s->in_bulk = true;
	s->bulk_left = (uint64_t)n + 2;
	return true;
}

static bool aggregate_line(struct resp_stream *s, char type, int64_t n)
{
	if (type == '%' || type == '|')
		n *= 2;
	if (s->depth == 0)
		s->v.nitems = n > 0 ? (uint32_t)n : 0;
	if (n <= 0) {
		element_done(s);
		return true;
	}
	if (s->depth == RESP_DEPTH_MAX)
		return false;
	s->left[s->depth++] = (uint32_t)n;
	return true;
}

/* One complete line, without its CRLF. False when it is not RESP. */
static bool take_line(struct resp_stream *s, const char *line, size_t len)
{
	char type = len ? line[0] : 0;
	int64_t n = 0;

	if (!s->in_value) {
		if (len == 0)
			return true; /* an empty line between inline commands */
		if (!is_type_byte((uint8_t)type) && !s->requests)
			return false;
		begin_value(s);
		if (!is_type_byte((uint8_t)type)) {
			inline_command(s, line, len);
			return true;
		}
		s->v.type = type;
	}
	switch (type) {
	case '$': case '!': case '=':
		return !s->line_overflow && parse_count(line + 1, len - 1, &n) && bulk_line(s, type, n);
	case '*': case '%': case '~': case '>': case '|':
		return !s->line_overflow && parse_count(line + 1, len - 1, &n) &&
		       aggregate_line(s, type, n);
	case '-':
		if (s->depth == 0)
			keep_error_prefix(s, line + 1, len - 1);
		element_done(s);
		return true;
	case '+': case ':': case '_': case ',': case '#': case '(':
		element_done(s);
		return true;
	default:
		return false;
	}
}

/* ---- bulk payloads ------------------------------------------------------------ */

static void bulk_done(struct resp_stream *s)
{
	s->in_bulk = false;
	if (s->keep_bulk) {
		char *word = s->v.words[s->v.nwords];

		if (!s->requests) {
			char *space = strchr(word, ' ');

			if (space)
				*space = '\0';
		}
		s->v.nwords++;
	}
	element_done(s);
}

/* Payload bytes of a kept word: as much as fits, CRLF excluded. */
static void keep_payload(struct resp_stream *s, const uint8_t *p, uint64_t n)
{
	char *word = s->v.words[s->v.nwords];
	size_t have = strlen(word);
	uint64_t payload = s->bulk_left > 2 ? s->bulk_left - 2 : 0;
	size_t take = (size_t)(n < payload ? n : payload);

	if (take > RESP_WORD_MAX - 1 - have)
		take = RESP_WORD_MAX - 1 - have;
	memcpy(word + have, p, take);
	word[have + take] = '\0';
}

static size_t feed_bulk(struct resp_stream *s, const uint8_t *p, size_t n)
{
	uint64_t take = n < s->bulk_left ? n : s->bulk_left;

	if (s->keep_bulk && p)
		keep_payload(s, p, take);
	else if (s->keep_bulk)
		s->v.cut = true;
	s->bulk_left -= take;
	if (s->bulk_left == 0)
		bulk_done(s);
	return (size_t)take;
}

/* ---- the feed ------------------------------------------------------------- */

static size_t feed_line(struct resp_stream *s, const uint8_t *p, size_t n, bool *ok)
{
	const uint8_t *lf = memchr(p, '\n', n);
	size_t take = lf ? (size_t)(lf - p) + 1 : n;
	size_t room = RESP_LINE_MAX - 1 - s->line_len;
	size_t copy = take < room ? take : room;
	size_t len;

	memcpy(s->line + s->line_len, p, copy);
	s->line_len += (uint32_t)copy;
	s->line_overflow |= copy < take;
	if (!lf)
		return take;
	len = s->line_len;
	if (len && s->line[len - 1] == '\n')
		len--;
	if (len && s->line[len - 1] == '\r')
		len--;
	*ok = take_line(s, s->line, len);
	s->line_len = 0;
	s->line_overflow = false;
	return take;
}

static void consume(struct resp_stream *s, const uint8_t *p, size_t n)
{
	while (n > 0 && s->state == RESP_SYNCED) {
		bool ok = true;
		size_t used = s->in_bulk ? feed_bulk(s, p, n) : feed_line(s, p, n, &ok);

		if (!ok) {
			lose_sync(s, false);
			return;
		}
		p += used;
		n -= used;
	}
}

static void skip_hole(struct resp_stream *s, uint64_t hole)
{
	while (hole > 0 && s->state == RESP_SYNCED) {
		if (!s->in_bulk) {
			lose_sync(s, true);
			return;
		}
		hole -= feed_bulk(s, NULL, hole);
	}
}

void resp_init(struct resp_stream *s, bool requests, const struct resp_callbacks *cb, void *owner)
{
	memset(s, 0, sizeof(*s));
	s->state = RESP_LOST;
	s->requests = requests;
	s->cb = cb;
	s->owner = owner;
}

void resp_sync(struct resp_stream *s)
{
	if (s->state == RESP_LOST)
		s->state = RESP_SYNCED;
}

void resp_feed(struct resp_stream *s, const struct piece *p)
{
	s->cur = p;
	if (s->state != RESP_SYNCED)
		return;
	consume(s, p->data, p->captured);
	if (p->hole)
		skip_hole(s, p->hole);
	if (p->tail)
		consume(s, p->data + p->captured, p->tail);
}
