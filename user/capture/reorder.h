/* Puts one direction of a connection's data events back in stream order.
 *
 * Each event carries its byte offset. Events from different CPUs can reach
 * the ring buffer out of order; a piece that arrives ahead of its offset is
 * held (copied) until the gap before it is filled, or until the owner
 * flushes, at which point the gap is delivered as a hole: bytes moved but
 * never seen, which the parser then skips or resyncs over. */
#ifndef SONDE_REORDER_H
#define SONDE_REORDER_H

#include "sonde_events.h"

#include <stdbool.h>
#include <stdint.h>

#define REORDER_HOLD_MAX 8

struct reorder_piece {
	uint64_t pos;
	uint64_t len;      /* bytes moved */
	uint32_t captured; /* first bytes moved, at data[0] */
	uint32_t tail;     /* last bytes moved, at data[captured] */
	uint64_t ts; /* syscall exit */
	uint64_t task; /* sonde_data_event.task */
	uint32_t tid;  /* thread that made the call */
	const uint8_t *data;
};

struct held_piece {
	struct held_piece *next;
	struct reorder_piece piece;
	uint8_t data[SONDE_CAPTURE_MAX + SONDE_TAIL_MAX];
};

/* Held pieces come from here and go back; it grows to the high-water mark
 * and never shrinks, so steady state allocates nothing. */
struct reorder_pool {
	struct held_piece *free;
	uint64_t allocated;
};

struct reorder_stats {
	uint64_t held;        /* pieces that arrived ahead of their offset */
	uint64_t gaps;        /* holes delivered for bytes never seen */
	uint64_t gap_bytes;
	uint64_t stale;       /* pieces wholly before the expected offset */
	uint64_t pool_empty;  /* could not hold: delivered with a hole instead */
};

typedef void (*reorder_deliver_fn)(void *owner, int tag, const struct reorder_piece *piece);

/* Offsets start at 0: the kernel counts a connection's bytes from its
 * first HTTP data, so a zeroed struct reorder is ready. */
struct reorder {
	uint64_t next_pos;
	uint8_t nheld;
	struct held_piece *held; /* sorted by pos */
};

struct reorder_ctx {
	struct reorder_pool *pool;
	struct reorder_stats *stats;
	reorder_deliver_fn deliver;
	void *owner;
	int tag;
};

void reorder_push(struct reorder *r, const struct reorder_ctx *ctx, const struct reorder_piece *p);
/* Delivers every held piece, with holes for what is still missing. */
void reorder_flush(struct reorder *r, const struct reorder_ctx *ctx);
/* Delivers, with holes, the held pieces that ended before ts: the other
 * direction already shows later traffic, so what is missing is lost. */
void reorder_flush_before(struct reorder *r, const struct reorder_ctx *ctx, uint64_t ts);
/* Returns held pieces to the pool without delivering them. */
void reorder_discard(struct reorder *r, struct reorder_pool *pool);
void reorder_pool_free(struct reorder_pool *pool);

#endif
