#include "semconv.h"

#include "kvlist.h"

#include <stdio.h>
#include <string.h>

void span_format_name(const struct span *s, char *out, size_t size)
{
	const struct proto_ops *ops = proto_span_ops(s->proto);

	if (ops)
		ops->span_name(s, out, size);
	else
		snprintf(out, size, "unknown");
}

void semconv_span_attributes(const struct span *s, const struct attr_sink *sink, char *scratch)
{
	const struct proto_ops *ops = proto_span_ops(s->proto);

	if (ops)
		ops->span_attributes(s, sink, scratch);
	attr_put_str(sink, "server.address", s->server_address);
	if (s->server_port)
		sink->i64(sink->ctx, "server.port", s->server_port);
	if (s->kind == SPAN_KIND_SERVER) {
		attr_put_str(sink, "client.address", s->client_address);
		if (s->client_port)
			sink->i64(sink->ctx, "client.port", s->client_port);
	}
	attr_put_str(sink, "error.type", s->error_type);
	if (s->response_lost)
		sink->boolean(sink->ctx, "sonde.response.captured", false);
}

/* The process's own OTEL_RESOURCE_ATTRIBUTES, as an SDK in it would add
 * them; service.name is already decided by the caller. Keys and values
 * are packed into scratch, where a sink may keep pointing at them: they
 * never take more room than the text they come from, plus two NULs. */
static void extra_resource_attributes(const char *attrs, const struct attr_sink *sink,
				      char *scratch)
{
	struct kv_cursor cur = { .next = attrs };
	char key[sizeof(((struct proc_info *)0)->resource_attrs)], value[sizeof(key)];
	enum kv_result r;

	_Static_assert(SEMCONV_RESOURCE_SCRATCH >= sizeof(key) + 2,
		       "scratch holds every key and value of resource_attrs");
	while ((r = kv_next(&cur, key, sizeof(key), value, sizeof(value))) != KV_END) {
		size_t key_len = strlen(key) + 1, value_len = strlen(value) + 1;

		if (r != KV_PAIR || strcmp(key, "service.name") == 0)
			continue;
		memcpy(scratch, key, key_len);
		memcpy(scratch + key_len, value, value_len);
		sink->str(sink->ctx, scratch, scratch + key_len);
		scratch += key_len + value_len;
	}
}

void semconv_resource_attributes(const struct proc_info *p, const struct attr_sink *sink,
				 char *scratch)
{
	attr_put_str(sink, "service.name", p->service_name);
	attr_put_str(sink, "service.instance.id", p->instance_id);
	sink->i64(sink->ctx, "process.pid", p->pid);
	attr_put_str(sink, "process.executable.name", p->executable_name);
	attr_put_str(sink, "process.command_line", p->command_line);
	attr_put_str(sink, "host.name", p->host_name);
	attr_put_str(sink, "telemetry.sdk.name", "sonde");
	attr_put_str(sink, "telemetry.sdk.version", SONDE_VERSION);
	extra_resource_attributes(p->resource_attrs, sink, scratch);
}
