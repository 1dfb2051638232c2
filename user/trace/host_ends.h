/* The addresses a connection end on this host can have: loopback, and
 * every address seen as the local end of a connection sonde follows (the
 * host's own, its containers' and pods', as their connections show
 * them). A server's client at any other address is on another host,
 * where sonde cannot see it, so its span need not wait for the client's
 * connection to show. */
#ifndef SONDE_HOST_ENDS_H
#define SONDE_HOST_ENDS_H

#include <stdbool.h>
#include <stdint.h>

/* Slots of the open-addressing table; it counts as full at three
 * quarters, and then every address may be this host's. */
#define HOST_ENDS_SLOTS 4096

struct host_ends {
	uint8_t slots[HOST_ENDS_SLOTS][16]; /* IPv4 as v4-mapped IPv6; all zero: empty */
	uint32_t count;
};

void host_ends_add(struct host_ends *h, const uint8_t addr[16]);
/* Whether a connection end on this host may have this address. */
bool host_ends_may_have(const struct host_ends *h, const uint8_t addr[16]);
/* Whether the address (IPv4 as v4-mapped IPv6) is a loopback one. */
bool host_ends_loopback(const uint8_t addr[16]);

#endif
