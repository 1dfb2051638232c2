#include "kvlist.h"

#include "chars.h"

#include <stdbool.h>
#include <string.h>

static void trim(const char **start, const char **end)
{
	while (*start < *end && (**start == ' ' || **start == '\t'))
		(*start)++;
	while (*end > *start && ((*end)[-1] == ' ' || (*end)[-1] == '\t'))
		(*end)--;
}

static bool copy_plain(const char *start, const char *end, char *out, size_t size)
{
	size_t len = (size_t)(end - start);

	if (len >= size)
		return false;
	memcpy(out, start, len);
	out[len] = '\0';
	return true;
}

bool percent_decode(const char *start, const char *end, char *out, size_t size)
{
	size_t used = 0;

	while (start < end) {
		int hi, lo;

		if (used + 1 >= size)
			return false;
		if (*start != '%') {
			out[used++] = *start++;
			continue;
		}
		if (end - start < 3 || (hi = char_hex_value(start[1])) < 0 || (lo = char_hex_value(start[2])) < 0)
			return false;
		out[used++] = (char)(hi << 4 | lo);
		start += 3;
	}
	out[used] = '\0';
	return true;
}

enum kv_result kv_next(struct kv_cursor *cur, char *key, size_t key_size, char *value,
		       size_t value_size)
{
	const char *item = cur->next, *item_end, *eq, *key_end, *value_start;

	while (item && (*item == ',' || *item == ' '))
		item++;
	if (!item || !*item)
		return KV_END;
	item_end = item + strcspn(item, ",");
	cur->next = item_end;
	eq = memchr(item, '=', (size_t)(item_end - item));
	if (!eq)
		return KV_BAD;
	key_end = eq;
	value_start = eq + 1;
	trim(&item, &key_end);
	trim(&value_start, &item_end);
	if (item == key_end || !copy_plain(item, key_end, key, key_size) ||
	    !percent_decode(value_start, item_end, value, value_size))
		return KV_BAD;
	return KV_PAIR;
}
