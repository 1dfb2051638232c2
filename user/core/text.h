/* Bounded copies into fixed-size strings: the span hot path avoids printf. */
#ifndef SONDE_TEXT_H
#define SONDE_TEXT_H

#include <stddef.h>
#include <string.h>

/* len bytes of src, cut to fit, and a NUL. */
static inline void text_copy_len(char *dst, size_t size, const char *src, size_t len)
{
	if (len >= size)
		len = size - 1;
	memcpy(dst, src, len);
	dst[len] = '\0';
}

/* A NUL-terminated src, cut to fit. */
static inline void text_copy(char *dst, size_t size, const char *src)
{
	text_copy_len(dst, size, src, strlen(src));
}

#endif
