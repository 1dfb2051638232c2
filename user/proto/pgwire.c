#include "pgwire.h"

#include <string.h>

/* Lengths past this are not PostgreSQL's (its own limit is 1 GB). */
#define PGWIRE_LEN_MAX (1u << 30)
/* Requests for encryption: the client's next message is untyped again. */
#define PG_SSL_REQUEST 80877103
#define PG_GSSENC_REQUEST 80877104

static const char frontend_types[] = "QPBEDCHSFXdcfp";
static const char backend_types[] = "RSKZTDCEINnts123AGHWdcVv";

static bool is_type(const struct pgwire_stream *s, uint8_t type)
{
	return type && strchr(s->frontend ? frontend_types : backend_types, type);
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

bool pgwire_is_message_start(const struct pgwire_stream *s, const uint8_t *data, uint32_t len)
{
	uint32_t size;

	if (len < 5 || !is_type(s, data[0]))
		return false;
	size = be32(data + 1);
	return size >= 4 && size < PGWIRE_LEN_MAX;
}

static void lose_sync(struct pgwire_stream *s, bool gap)
{
	s->state = PGWIRE_LOST;
	s->hdr_len = 0;
	s->in_body = false;
	s->cb->on_lost(s->owner, gap);
}

static void deliver(struct pgwire_stream *s)
{
	s->msg.end_ts = s->cur->ts;
	s->msg.data = s->kept;
	s->in_body = false;
	s->hdr_len = 0;
	s->cb->on_message(s->owner, &s->msg);
}

/* The header is whole: what the message is, and how long. */
static bool begin_body(struct pgwire_stream *s)
{
	struct pg_msg *m = &s->msg;
	uint32_t size;

	if (s->untyped_next) {
		size = be32(s->hdr);
		m->type = 0;
		m->code = be32(s->hdr + 4);
		if (size < 8 || size > 10000)
			return false;
		m->len = size - 8;
		s->untyped_next = m->code == PG_SSL_REQUEST || m->code == PG_GSSENC_REQUEST;
	} else {
		size = be32(s->hdr + 1);
		m->type = s->hdr[0];
		m->code = 0;
		if (!is_type(s, m->type) || size < 4 || size >= PGWIRE_LEN_MAX)
			return false;
		m->len = size - 4;
	}
	m->kept = 0;
	m->cut = false;
	s->body_left = m->len;
	s->in_body = true;
	if (s->body_left == 0)
		deliver(s);
	return true;
}

static size_t feed_header(struct pgwire_stream *s, const uint8_t *p, size_t n, bool *ok)
{
	size_t need = (s->untyped_next ? 8u : 5u) - s->hdr_len;
	size_t take = n < need ? n : need;

	if (s->hdr_len == 0) {
		s->msg.start_ts = s->cur->ts;
		s->msg.start_tid = s->cur->tid;
		s->msg.start_task = s->cur->task;
	}
	memcpy(s->hdr + s->hdr_len, p, take);
	s->hdr_len += (uint8_t)take;
	if (take == need)
		*ok = begin_body(s);
	return take;
}

/* Payload bytes, seen (p) or lost in a hole (p NULL). */
static uint64_t feed_body(struct pgwire_stream *s, const uint8_t *p, uint64_t n)
{
	struct pg_msg *m = &s->msg;
	uint32_t take = n < s->body_left ? (uint32_t)n : s->body_left;
	uint32_t at = m->len - s->body_left;

	if (at < s->keep) {
		uint32_t room = s->keep - at, copy = take < room ? take : room;

		if (p)
			memcpy(s->kept + at, p, copy);
		else
			m->cut = true;
		if (p && !m->cut)
			m->kept = at + copy;
	}
	s->body_left -= take;
	if (s->body_left == 0)
		deliver(s);
	return take;
}

static void consume(struct pgwire_stream *s, const uint8_t *p, size_t n)
{
	while (n > 0 && s->state == PGWIRE_SYNCED) {
		bool ok = true;
		size_t used = s->in_body ? (size_t)feed_body(s, p, n) : feed_header(s, p, n, &ok);

		if (!ok) {
			lose_sync(s, false);
			return;
		}
		p += used;
		n -= used;
	}
}

static void skip_hole(struct pgwire_stream *s, uint64_t hole)
{
	while (hole > 0 && s->state == PGWIRE_SYNCED) {
		if (!s->in_body) {
			lose_sync(s, true);
			return;
		}
		hole -= feed_body(s, NULL, hole);
	}
}

void pgwire_init(struct pgwire_stream *s, bool frontend, uint32_t keep,
		 const struct pgwire_callbacks *cb, void *owner)
{
	s->state = PGWIRE_LOST;
	s->frontend = frontend;
	s->untyped_next = false;
	s->hdr_len = 0;
	s->in_body = false;
	s->body_left = 0;
	s->keep = keep < PGWIRE_KEEP_MAX ? keep : PGWIRE_KEEP_MAX;
	s->cur = NULL;
	s->cb = cb;
	s->owner = owner;
}

void pgwire_sync(struct pgwire_stream *s, bool untyped)
{
	if (s->state != PGWIRE_LOST)
		return;
	s->state = PGWIRE_SYNCED;
	s->untyped_next = untyped;
	s->hdr_len = 0;
	s->in_body = false;
}

void pgwire_feed(struct pgwire_stream *s, const struct piece *p)
{
	s->cur = p;
	if (s->state != PGWIRE_SYNCED)
		return;
	consume(s, p->data, p->captured);
	if (p->hole)
		skip_hole(s, p->hole);
	if (p->tail)
		consume(s, p->data + p->captured, p->tail);
}
