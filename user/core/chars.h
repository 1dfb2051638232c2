/* Character classes for the parsers: one table lookup per byte instead of
 * a chain of comparisons on the hot path. */
#ifndef SONDE_CHARS_H
#define SONDE_CHARS_H

#include <stdbool.h>
#include <stdint.h>

enum char_class {
	CHAR_DIGIT = 1 << 0,
	CHAR_HEX = 1 << 1,    /* 0-9 a-f A-F */
	CHAR_ALPHA = 1 << 2,
	CHAR_TCHAR = 1 << 3,  /* RFC 9110 token characters */
	CHAR_TARGET = 1 << 4, /* visible ASCII and bytes >= 0x80 (request targets) */
};

extern const uint8_t char_classes[256];

static inline bool char_is(char c, uint8_t class_bits)
{
	return char_classes[(uint8_t)c] & class_bits;
}

/* The value of a hex digit, or -1. */
static inline int char_hex_value(char c)
{
	if (!char_is(c, CHAR_HEX))
		return -1;
	if (c <= '9')
		return c - '0';
	return (c | 0x20) - 'a' + 10;
}

#endif
