/* Every protocol sonde parses, by its SONDE_PROTO_* id: adding one is a
 * module in proto/ and a line here. */
#include "proto.h"

#include "http1_proto.h"
#include "sonde_events.h"

extern const struct proto_ops redis_proto;

static const struct proto_ops *const protocols[SONDE_PROTO_COUNT] = {
	[SONDE_PROTO_HTTP1] = &http1_proto,
	[SONDE_PROTO_REDIS] = &redis_proto,
};

const struct proto_ops *proto_find(uint8_t id)
{
	return id < SONDE_PROTO_COUNT ? protocols[id] : NULL;
}

/* The largest of a size every protocol declares, at `offset` in its ops. */
static size_t max_over_protocols(size_t offset)
{
	size_t max = 0;

	for (size_t i = 0; i < SONDE_PROTO_COUNT; i++) {
		const size_t *size;

		if (!protocols[i])
			continue;
		size = (const size_t *)((const char *)protocols[i] + offset);
		if (*size > max)
			max = *size;
	}
	return max;
}

size_t proto_max_conn_size(void)
{
	return max_over_protocols(offsetof(struct proto_ops, conn_size));
}

size_t proto_max_exchange_size(void)
{
	return max_over_protocols(offsetof(struct proto_ops, exchange_size));
}
