/* A region allocator for one request's message structs: allocations
 * (zeroed) from 64 KiB blocks, all freed at once. */
#ifndef SONDE_ARENA_H
#define SONDE_ARENA_H

#include <stddef.h>

struct arena_block;

struct arena {
	struct arena_block *head;
};

/* NULL when memory ran out. */
void *arena_alloc(struct arena *a, size_t size);
void arena_free(struct arena *a);

#endif
