/* A growable byte buffer that keeps its largest size, so that once it has
 * grown to the biggest batch, building another allocates nothing. */
#ifndef SONDE_BYTES_H
#define SONDE_BYTES_H

#include <stddef.h>
#include <stdint.h>

struct bytes {
	uint8_t *data;
	size_t size; /* allocated */
	size_t used;
};

/* Room for `more` bytes after `used`; -ENOMEM leaves the buffer as it was. */
int bytes_reserve(struct bytes *b, size_t more);
void bytes_free(struct bytes *b);

#endif
