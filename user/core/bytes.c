#include "bytes.h"

#include <errno.h>
#include <stdlib.h>

int bytes_reserve(struct bytes *b, size_t more)
{
	size_t want = b->used + more, size = b->size ? b->size : 4096;
	uint8_t *grown;

	if (want <= b->size)
		return 0;
	while (size < want)
		size *= 2;
	grown = realloc(b->data, size);
	if (!grown)
		return -ENOMEM;
	b->data = grown;
	b->size = size;
	return 0;
}

void bytes_free(struct bytes *b)
{
	free(b->data);
	*b = (struct bytes){ 0 };
}
