#include "reorder.h"

#include <stdlib.h>
#include <string.h>

static struct held_piece *pool_take(struct reorder_pool *pool)
{
	struct held_piece *h = pool->free;

	if (h) {
		pool->free = h->next;
		return h;
	}
	h = malloc(sizeof(*h));
	if (h)
		pool->allocated++;
	return h;
}

static void pool_give(struct reorder_pool *pool, struct held_piece *h)
{
	h->next = pool->free;
	pool->free = h;
}

void reorder_pool_free(struct reorder_pool *pool)
{
	while (pool->free) {
		struct held_piece *h = pool->free;

		pool->free = h->next;
		free(h);
	}
}

static void deliver(struct reorder *r, const struct reorder_ctx *ctx, const struct reorder_piece *p)
{
	ctx->deliver(ctx->owner, ctx->tag, p);
	r->next_pos = p->pos + p->len;
}

static void deliver_hole(struct reorder *r, const struct reorder_ctx *ctx, uint64_t upto,
			 const struct reorder_piece *next)
{
	struct reorder_piece hole = {
		.pos = r->next_pos,
		.len = upto - r->next_pos,
		.ts = next->ts,
		.task = next->task,
		.tid = next->tid,
	};

	ctx->stats->gaps++;
	ctx->stats->gap_bytes += hole.len;
	deliver(r, ctx, &hole);
}

/* Cuts off the part of p that lies before next_pos (already delivered). */
static bool trim_front(const struct reorder *r, struct reorder_piece *p)
{
	uint64_t skip;

	if (p->pos >= r->next_pos)
		return true;
	if (p->pos + p->len <= r->next_pos)
		return false;
	skip = r->next_pos - p->pos;
	if (skip > p->len - p->tail)
		p->tail = 0; /* the cut reaches into the tail: keep it simple, drop it */
	if (skip < p->captured) {
		p->data += skip;
		p->captured -= (uint32_t)skip;
	} else {
		p->data += p->captured;
		p->captured = 0;
	}
	p->pos += skip;
	p->len -= skip;
	return true;
}

static void deliver_ready(struct reorder *r, const struct reorder_ctx *ctx)
{
	while (r->held && r->held->piece.pos <= r->next_pos) {
		struct held_piece *h = r->held;

		r->held = h->next;
		r->nheld--;
		if (trim_front(r, &h->piece))
			deliver(r, ctx, &h->piece);
		pool_give(ctx->pool, h);
	}
}

static bool hold(struct reorder *r, const struct reorder_ctx *ctx, const struct reorder_piece *p)
{
	struct held_piece *h, **link = &r->held;

	if (r->nheld >= REORDER_HOLD_MAX)
		return false;
	h = pool_take(ctx->pool);
	if (!h) {
		ctx->stats->pool_empty++;
		return false;
	}
	h->piece = *p;
	memcpy(h->data, p->data, p->captured + p->tail);
	h->piece.data = h->data;
	while (*link && (*link)->piece.pos < p->pos)
		link = &(*link)->next;
	h->next = *link;
	*link = h;
	r->nheld++;
	ctx->stats->held++;
	return true;
}

void reorder_flush(struct reorder *r, const struct reorder_ctx *ctx)
{
	reorder_flush_before(r, ctx, UINT64_MAX);
}

void reorder_push(struct reorder *r, const struct reorder_ctx *ctx, const struct reorder_piece *p)
{
	struct reorder_piece piece = *p;

	if (!trim_front(r, &piece)) {
		ctx->stats->stale++;
		return;
	}
	if (piece.pos > r->next_pos && hold(r, ctx, &piece))
		return;
	/* Could not hold it: give up on the bytes missing before it; held
	 * pieces that come earlier go first (they are sorted by pos). */
	while (r->held && r->held->piece.pos <= piece.pos) {
		if (r->held->piece.pos > r->next_pos)
			deliver_hole(r, ctx, r->held->piece.pos, &r->held->piece);
		deliver_ready(r, ctx);
	}
	if (piece.pos > r->next_pos)
		deliver_hole(r, ctx, piece.pos, &piece);
	if (!trim_front(r, &piece)) {
		ctx->stats->stale++;
		return;
	}
	deliver(r, ctx, &piece);
	deliver_ready(r, ctx);
}

void reorder_flush_before(struct reorder *r, const struct reorder_ctx *ctx, uint64_t ts)
{
	while (r->held && r->held->piece.ts < ts) {
		if (r->held->piece.pos > r->next_pos)
			deliver_hole(r, ctx, r->held->piece.pos, &r->held->piece);
		deliver_ready(r, ctx);
	}
}

void reorder_discard(struct reorder *r, struct reorder_pool *pool)
{
	while (r->held) {
		struct held_piece *h = r->held;

		r->held = h->next;
		pool_give(pool, h);
	}
	r->nheld = 0;
}
