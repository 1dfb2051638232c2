#include "host_ends.h"

#include <string.h>

static const uint8_t unspecified[16];

bool host_ends_loopback(const uint8_t addr[16])
{
	static const uint8_t v4_mapped[12] = { [10] = 0xff, [11] = 0xff };
	static const uint8_t v6_loopback[16] = { [15] = 1 };

	if (memcmp(addr, v4_mapped, sizeof(v4_mapped)) == 0)
		return addr[12] == 127;
	return memcmp(addr, v6_loopback, sizeof(v6_loopback)) == 0;
}

static bool is_unspecified(const uint8_t addr[16])
{
	return memcmp(addr, unspecified, 16) == 0;
}

/* A full table, a loopback address and an unspecified one (an end whose
 * address could not be read) are this host's as far as anyone can tell. */
static bool always_may_have(const struct host_ends *h, const uint8_t addr[16])
{
	return h->count >= HOST_ENDS_SLOTS / 4 * 3 || host_ends_loopback(addr) || is_unspecified(addr);
}

/* The slot holding addr, or the empty one where it would go. */
static uint32_t slot_of(const struct host_ends *h, const uint8_t addr[16])
{
	uint64_t words[2], mixed;
	uint32_t i;

	memcpy(words, addr, sizeof(words));
	mixed = (words[0] ^ (words[1] * 0x9e3779b97f4a7c15ull)) * 0xff51afd7ed558ccdull;
	i = (uint32_t)(mixed >> 32) % HOST_ENDS_SLOTS;
	while (!is_unspecified(h->slots[i]) && memcmp(h->slots[i], addr, 16))
		i = (i + 1) % HOST_ENDS_SLOTS;
	return i;
}

void host_ends_add(struct host_ends *h, const uint8_t addr[16])
{
	uint32_t i;

	if (always_may_have(h, addr))
		return;
	i = slot_of(h, addr);
	if (is_unspecified(h->slots[i])) {
		memcpy(h->slots[i], addr, 16);
		h->count++;
	}
}

bool host_ends_may_have(const struct host_ends *h, const uint8_t addr[16])
{
	return always_may_have(h, addr) || memcmp(h->slots[slot_of(h, addr)], addr, 16) == 0;
}
