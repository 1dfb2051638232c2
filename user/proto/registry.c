/* Every protocol sonde parses, by its SONDE_PROTO_* id: adding one is a
 * module in proto/ and a line here. */
#include "proto.h"

#include "http1_proto.h"
#include "sonde_events.h"

extern const struct proto_ops postgres_proto;
extern const struct proto_ops redis_proto;
extern const struct proto_ops command_proto;
extern const struct proto_ops job_proto;

static const struct proto_ops *const protocols[SONDE_PROTO_COUNT] = {
	[SONDE_PROTO_HTTP1] = &http1_proto,
	[SONDE_PROTO_POSTGRES] = &postgres_proto,
	[SONDE_PROTO_REDIS] = &redis_proto,
};

const struct proto_ops *proto_find(uint8_t id)
{
	return id < SONDE_PROTO_COUNT ? protocols[id] : NULL;
}

const struct proto_ops *proto_span_ops(uint8_t id)
{
	if (id == PROTO_COMMAND)
		return &command_proto;
	return id == PROTO_JOB ? &job_proto : proto_find(id);
}

size_t proto_max_exchange_size(void)
{
	size_t max = 0;

	for (size_t i = 0; i < SONDE_PROTO_COUNT; i++)
		if (protocols[i] && protocols[i]->exchange_size > max)
			max = protocols[i]->exchange_size;
	return max;
}
