#include "number.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int parse_u32(const char *text, uint32_t min, uint32_t max, uint32_t *out)
{
	char *end;
	unsigned long long v;

	if (text[0] < '0' || text[0] > '9')
		return -1;
	errno = 0;
	v = strtoull(text, &end, 10);
	if (errno || *end || v < min || v > max)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

int parse_u32_len(const char *text, size_t len, uint32_t min, uint32_t max, uint32_t *out)
{
	char digits[16];

	if (len >= sizeof(digits))
		return -1;
	memcpy(digits, text, len);
	digits[len] = '\0';
	return parse_u32(digits, min, max, out);
}
