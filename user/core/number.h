/* Whole numbers from settings' text: all of it digits, within bounds. */
#ifndef SONDE_NUMBER_H
#define SONDE_NUMBER_H

#include <stddef.h>
#include <stdint.h>

/* 0, or -1 when text is not a whole number from min to max. */
int parse_u32(const char *text, uint32_t min, uint32_t max, uint32_t *out);
/* The same for text[0..len), which need not end with a NUL. */
int parse_u32_len(const char *text, size_t len, uint32_t min, uint32_t max, uint32_t *out);

#endif
