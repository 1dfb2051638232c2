/* A free list of blocks of one size: taking a block allocates nothing in
 * steady state, and pool_trim gives back to the allocator what a burst
 * left free, so that memory follows the load down as well as up. */
#ifndef SONDE_POOL_H
#define SONDE_POOL_H

#include <stddef.h>

struct pool {
	void *free;    /* blocks given back; each holds the next at its start */
	size_t size;   /* of a block; at least a pointer */
	size_t nfree;  /* blocks on the free list */
	size_t in_use; /* blocks taken and not given back */
};

void pool_init(struct pool *p, size_t size);
/* NULL when out of memory. */
void *pool_take(struct pool *p);
void pool_give(struct pool *p, void *block);
/* Frees the free blocks beyond what the blocks in use may soon need again:
 * half as many as are in use, and at least POOL_KEEP, so that a steady
 * load allocates nothing. Returns the bytes freed. */
#define POOL_KEEP 64
size_t pool_trim(struct pool *p);
/* Frees the free blocks; the blocks still in use are the caller's. */
void pool_destroy(struct pool *p);

#endif
