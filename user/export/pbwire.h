/* Protocol Buffers wire format, written forward into a bounded buffer.
 * For messages whose nested lengths are known before they are written
 * (a span and its attributes), writing the bytes directly saves the
 * structs protobuf-c needs filled in and its descriptor-driven walks,
 * one to size each message and one to pack it. A write that does not
 * fit sets `overflow` and writes nothing more. */
#ifndef SONDE_PBWIRE_H
#define SONDE_PBWIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum pb_wire_type { PB_VARINT = 0, PB_FIXED64 = 1, PB_LEN = 2, PB_FIXED32 = 5 };

struct pbw {
	uint8_t *p;
	uint8_t *end;
	bool overflow;
};

static inline size_t pb_varint_size(uint64_t v)
{
	size_t n = 1;

	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

/* The size of a length-delimited field's tag (fields 1-15) and length. */
static inline size_t pb_len_field_size(size_t len)
{
	return 1 + pb_varint_size(len) + len;
}

static inline bool pb_room(struct pbw *w, size_t need)
{
	if (w->overflow || (size_t)(w->end - w->p) < need)
		w->overflow = true;
	return !w->overflow;
}

/* Callers have checked the room: at most 10 bytes. */
static inline void pb_varint_unchecked(struct pbw *w, uint64_t v)
{
	while (v >= 0x80) {
		*w->p++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*w->p++ = (uint8_t)v;
}

static inline void pb_tag(struct pbw *w, uint32_t field, enum pb_wire_type type)
{
	if (pb_room(w, 5))
		pb_varint_unchecked(w, (uint64_t)field << 3 | type);
}

static inline void pb_varint_field(struct pbw *w, uint32_t field, uint64_t v)
{
	pb_tag(w, field, PB_VARINT);
	if (pb_room(w, 10))
		pb_varint_unchecked(w, v);
}

static inline void pb_fixed_field(struct pbw *w, uint32_t field, uint64_t v, size_t width)
{
	pb_tag(w, field, width == 8 ? PB_FIXED64 : PB_FIXED32);
	if (!pb_room(w, width))
		return;
	for (size_t i = 0; i < width; i++)
		*w->p++ = (uint8_t)(v >> (8 * i));
}

/* The tag and length of a length-delimited field whose content follows. */
static inline void pb_len_prefix(struct pbw *w, uint32_t field, size_t len)
{
	pb_tag(w, field, PB_LEN);
	if (pb_room(w, 10))
		pb_varint_unchecked(w, len);
}

static inline void pb_bytes_field(struct pbw *w, uint32_t field, const void *data, size_t len)
{
	pb_len_prefix(w, field, len);
	if (pb_room(w, len)) {
		memcpy(w->p, data, len);
		w->p += len;
	}
}

#endif
