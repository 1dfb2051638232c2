#include "route.h"

#include "chars.h"

#include <stdbool.h>
#include <string.h>

static bool is_digit(char c)
{
	return char_is(c, CHAR_DIGIT);
}

static bool is_hex(char c)
{
	return char_is(c, CHAR_HEX);
}

static bool is_uuid(const char *seg, size_t len)
{
	if (len != 36)
		return false;
	for (size_t i = 0; i < len; i++) {
		bool dash_slot = i == 8 || i == 13 || i == 18 || i == 23;

		if (dash_slot ? seg[i] != '-' : !is_hex(seg[i]))
			return false;
	}
	return true;
}

static bool is_version_tag(const char *seg, size_t len)
{
	if (len < 2 || (seg[0] != 'v' && seg[0] != 'V'))
		return false;
	for (size_t i = 1; i < len; i++)
		if (!is_digit(seg[i]))
			return false;
	return true;
}

static bool is_identifier(const char *seg, size_t len)
{
	size_t digits = 0, hex = 0, alpha = 0;

	if (len == 0)
		return false;
	for (size_t i = 0; i < len; i++) {
		uint8_t class_bits = char_classes[(uint8_t)seg[i]];

		digits += (class_bits & CHAR_DIGIT) != 0;
		hex += (class_bits & CHAR_HEX) != 0;
		alpha += (class_bits & CHAR_ALPHA) != 0;
	}
	if (digits == 0)
		return false;
	if (digits == len || is_uuid(seg, len))
		return true;
	if (len >= 8 && hex == len && digits > 0)
		return true;
	return len >= 6 && digits >= 2 && alpha > 0 && !is_version_tag(seg, len);
}

size_t route_path_len(const char *target, size_t len)
{
	const char *query = memchr(target, '?', len), *fragment;

	if (query)
		len = (size_t)(query - target);
	fragment = memchr(target, '#', len);
	return fragment ? (size_t)(fragment - target) : len;
}

static void append(char *out, size_t out_size, size_t *used, const char *text, size_t len)
{
	if (*used + 1 >= out_size)
		return;
	if (len > out_size - 1 - *used)
		len = out_size - 1 - *used;
	memcpy(out + *used, text, len);
	*used += len;
}

size_t route_template(const char *path, size_t len, char *out, size_t out_size)
{
	size_t used = 0, start = 0;

	if (out_size == 0)
		return 0;
	len = route_path_len(path, len);
	while (start < len) {
		const char *slash = memchr(path + start, '/', len - start);
		size_t end = slash ? (size_t)(slash - path) : len;

		if (is_identifier(path + start, end - start))
			append(out, out_size, &used, "{id}", 4);
		else
			append(out, out_size, &used, path + start, end - start);
		if (end < len)
			append(out, out_size, &used, "/", 1);
		start = end + 1;
	}
	out[used] = '\0';
	return used;
}
