#include "semconv.h"

#include "kvlist.h"

#include <stdio.h>
#include <string.h>

void span_format_name(const struct span *s, char *out, size_t size)
{
	if (s->kind == SPAN_KIND_SERVER && s->route[0])
		snprintf(out, size, "%s %s", s->method, s->route);
	else
		snprintf(out, size, "%s", s->method);
}

/* Empty strings are absent values, not empty attributes. */
static void put_str(const struct attr_sink *sink, const char *key, const char *value)
{
	if (value[0])
		sink->str(sink->ctx, key, value);
}

static void format_url_full(const struct span *s, char *out)
{
	const char *qmark = s->query[0] ? "?" : "";

	if (s->server_port && s->server_port != 80)
		snprintf(out, SEMCONV_URL_MAX, "http://%s:%u%s%s%s", s->server_address,
			 s->server_port, s->path, qmark, s->query);
	else
		snprintf(out, SEMCONV_URL_MAX, "http://%s%s%s%s", s->server_address, s->path, qmark,
			 s->query);
}

void semconv_span_attributes(const struct span *s, const struct attr_sink *sink, char *url_buf)
{
	put_str(sink, "http.request.method", s->method);
	put_str(sink, "url.path", s->path);
	put_str(sink, "url.query", s->query);
	put_str(sink, "url.scheme", "http");
	if (s->kind == SPAN_KIND_SERVER)
		put_str(sink, "http.route", s->route);
	if (s->status_code)
		sink->i64(sink->ctx, "http.response.status_code", s->status_code);
	put_str(sink, "network.protocol.version", s->protocol_version);
	put_str(sink, "server.address", s->server_address);
	if (s->server_port)
		sink->i64(sink->ctx, "server.port", s->server_port);
	if (s->kind == SPAN_KIND_SERVER) {
		put_str(sink, "client.address", s->client_address);
		if (s->client_port)
			sink->i64(sink->ctx, "client.port", s->client_port);
	}
	if (s->kind == SPAN_KIND_CLIENT) {
		format_url_full(s, url_buf);
		put_str(sink, "url.full", url_buf);
	}
	put_str(sink, "user_agent.original", s->user_agent);
	if (s->request_body_size >= 0)
		sink->i64(sink->ctx, "http.request.body.size", s->request_body_size);
	if (s->response_body_size >= 0)
		sink->i64(sink->ctx, "http.response.body.size", s->response_body_size);
	put_str(sink, "error.type", s->error_type);
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
	put_str(sink, "service.name", p->service_name);
	put_str(sink, "service.instance.id", p->instance_id);
	sink->i64(sink->ctx, "process.pid", p->pid);
	put_str(sink, "process.executable.name", p->executable_name);
	put_str(sink, "process.command_line", p->command_line);
	put_str(sink, "host.name", p->host_name);
	put_str(sink, "telemetry.sdk.name", "sonde");
	put_str(sink, "telemetry.sdk.version", SONDE_VERSION);
	extra_resource_attributes(p->resource_attrs, sink, scratch);
}
