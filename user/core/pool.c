#include "pool.h"

#include <stdlib.h>
#include <string.h>

void pool_init(struct pool *p, size_t size)
{
	memset(p, 0, sizeof(*p));
	p->size = size < sizeof(void *) ? sizeof(void *) : size;
}

void *pool_take(struct pool *p)
{
	void *block = p->free;

	if (block) {
		memcpy(&p->free, block, sizeof(void *));
		p->nfree--;
		/* Blocks often come back long after they were last used: the
		 * next one is fetched ahead. */
		__builtin_prefetch(p->free, 1);
	} else {
		block = malloc(p->size);
		if (!block)
			return NULL;
	}
	p->in_use++;
	return block;
}

void pool_give(struct pool *p, void *block)
{
	memcpy(block, &p->free, sizeof(void *));
	p->free = block;
	p->nfree++;
	p->in_use--;
}

static size_t trim_to(struct pool *p, size_t kept)
{
	size_t freed = 0;

	while (p->nfree > kept) {
		void *block = p->free;

		memcpy(&p->free, block, sizeof(void *));
		free(block);
		p->nfree--;
		freed += p->size;
	}
	return freed;
}

size_t pool_trim(struct pool *p)
{
	return trim_to(p, p->in_use / 2 > POOL_KEEP ? p->in_use / 2 : POOL_KEEP);
}

void pool_destroy(struct pool *p)
{
	trim_to(p, 0);
}
