#include "hash.h"

#include <string.h>

static void hash_step(uint64_t *a, uint64_t *b, const unsigned char *block)
{
	uint64_t w[2];

	memcpy(w, block, 16);
	*a = (*a ^ w[0]) * 0xff51afd7ed558ccdull;
	*b = (*b ^ w[1]) * 0xc4ceb9fe1a85ec53ull;
	*a ^= *a >> 32;
	*b ^= *b >> 29;
}

/* Sixteen bytes at a time in two independent lanes, so that the
 * multiplies of one lane overlap the other's; the last block is the
 * data's last sixteen bytes, overlapping the one before (the length is
 * hashed in). */
uint64_t hash_bytes(uint64_t seed, const void *data, size_t n)
{
	const unsigned char *s = data;
	uint64_t a = 0x9e3779b97f4a7c15ull ^ n ^ seed, b = 0xc2b2ae3d27d4eb4full ^ (seed << 17);
	unsigned char tail[16] = { 0 };
	size_t i = 0;

	if (n < 16) {
		memcpy(tail, s, n);
		hash_step(&a, &b, tail);
	} else {
		for (; i + 16 < n; i += 16)
			hash_step(&a, &b, s + i);
		hash_step(&a, &b, s + n - 16);
	}
	a ^= (b << 31 | b >> 33) * 0x9e3779b97f4a7c15ull;
	return a ^ (a >> 29);
}
