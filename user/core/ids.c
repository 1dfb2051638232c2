#include "ids.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static uint64_t next_u64(struct idgen *gen)
{
	uint64_t *s = gen->state;
	uint64_t result = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

int idgen_init(struct idgen *gen)
{
	do {
		if (getrandom(gen->state, sizeof(gen->state), 0) != sizeof(gen->state))
			return -errno;
	} while (!(gen->state[0] | gen->state[1] | gen->state[2] | gen->state[3]));
	return 0;
}

/* len is 8 or 16. */
static void fill_nonzero(struct idgen *gen, uint8_t *out, size_t len)
{
	uint64_t words[2], any;

	do {
		any = 0;
		for (size_t i = 0; i < len / 8; i++) {
			words[i] = next_u64(gen);
			any |= words[i];
		}
	} while (!any);
	memcpy(out, words, len);
}

void idgen_trace_id(struct idgen *gen, uint8_t out[TRACE_ID_SIZE])
{
	fill_nonzero(gen, out, TRACE_ID_SIZE);
}

void idgen_span_id(struct idgen *gen, uint8_t out[SPAN_ID_SIZE])
{
	fill_nonzero(gen, out, SPAN_ID_SIZE);
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Lower-case hex only, as the W3C spec requires; false if all zero. */
static bool hex_decode(const char *text, uint8_t *out, size_t len)
{
	bool any = false;

	for (size_t i = 0; i < len; i++) {
		int hi = hex_value(text[2 * i]), lo = hex_value(text[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return false;
		out[i] = (uint8_t)(hi << 4 | lo);
		any |= out[i] != 0;
	}
	return any;
}

bool traceparent_parse(const char *text, size_t len, struct trace_parent *out)
{
	int version_hi, version_lo, version;

	while (len && (*text == ' ' || *text == '\t')) {
		text++;
		len--;
	}
	while (len && (text[len - 1] == ' ' || text[len - 1] == '\t'))
		len--;
	if (len < 55 || text[2] != '-' || text[35] != '-' || text[52] != '-')
		return false;
	version_hi = hex_value(text[0]);
	version_lo = hex_value(text[1]);
	if (version_hi < 0 || version_lo < 0)
		return false;
	version = version_hi << 4 | version_lo;
	if (version == 0xff || (version == 0 && len != 55) || (len > 55 && text[55] != '-'))
		return false;
	if (!hex_decode(text + 3, out->trace_id, TRACE_ID_SIZE) ||
	    !hex_decode(text + 36, out->span_id, SPAN_ID_SIZE))
		return false;
	if (hex_value(text[53]) < 0 || hex_value(text[54]) < 0)
		return false;
	out->flags = (uint8_t)(hex_value(text[53]) << 4 | hex_value(text[54]));
	return true;
}

void hex_encode(const uint8_t *bytes, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[bytes[i] >> 4];
		out[2 * i + 1] = digits[bytes[i] & 0xf];
	}
	out[2 * len] = '\0';
}
