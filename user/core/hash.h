/* A fast 64-bit hash of bytes, for tables and fingerprints built on the
 * hot path: not for adversarial input a table must withstand, nor for
 * anything secret. */
#ifndef SONDE_HASH_H
#define SONDE_HASH_H

#include <stddef.h>
#include <stdint.h>

/* The hash of data[0..n), chained from seed (0 to start; a previous
 * hash to go on from it). */
uint64_t hash_bytes(uint64_t seed, const void *data, size_t n);

#endif
