#include "console.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

struct json_out {
	char *buf;
	size_t size, used;
	bool overflow;
};

static void put_raw(struct json_out *o, const char *text, size_t len)
{
	if (o->used + len >= o->size) {
		o->overflow = true;
		return;
	}
	memcpy(o->buf + o->used, text, len);
	o->used += len;
}

static void put(struct json_out *o, const char *text)
{
	put_raw(o, text, strlen(text));
}

static void putf(struct json_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct json_out *o, const char *fmt, ...)
{
	char tmp[128];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n > 0)
		put_raw(o, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

static void put_string(struct json_out *o, const char *s)
{
	put(o, "\"");
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			char esc[2] = { '\\', (char)c };

			put_raw(o, esc, 2);
		} else if (c < 0x20 || c == 0x7f) {
			putf(o, "\\u%04x", c);
		} else {
			put_raw(o, (const char *)&c, 1);
		}
	}
	put(o, "\"");
}

static void put_hex_id(struct json_out *o, const uint8_t *id, size_t len)
{
	char hex[2 * TRACE_ID_SIZE + 1];

	hex_encode(id, len, hex);
	put(o, "\"0x");
	put(o, hex);
	put(o, "\"");
}

static void put_time(struct json_out *o, uint64_t unix_ns)
{
	time_t secs = (time_t)(unix_ns / 1000000000ull);
	struct tm tm;
	char text[40];

	gmtime_r(&secs, &tm);
	strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%S", &tm);
	putf(o, "\"%s.%06" PRIu64 "Z\"", text, (uint64_t)(unix_ns % 1000000000u) / 1000);
}

struct attr_list {
	struct json_out *o;
	bool first;
};

static void key(struct attr_list *a, const char *name)
{
	put(a->o, a->first ? "" : ", ");
	a->first = false;
	put_string(a->o, name);
	put(a->o, ": ");
}

static void attr_str(struct attr_list *a, const char *name, const char *value)
{
	if (!value[0])
		return;
	key(a, name);
	put_string(a->o, value);
}

static void attr_int(struct attr_list *a, const char *name, int64_t value)
{
	key(a, name);
	putf(a->o, "%" PRId64, value);
}

static void span_attributes(struct json_out *o, const struct span *s)
{
	struct attr_list a = { .o = o, .first = true };

	put(o, "{");
	attr_str(&a, "http.request.method", s->method);
	attr_str(&a, "url.path", s->path);
	attr_str(&a, "url.query", s->query);
	attr_str(&a, "url.scheme", "http");
	if (s->kind == SPAN_KIND_SERVER)
		attr_str(&a, "http.route", s->route);
	if (s->status_code)
		attr_int(&a, "http.response.status_code", s->status_code);
	attr_str(&a, "network.protocol.version", s->protocol_version);
	attr_str(&a, "server.address", s->server_address);
	if (s->server_port)
		attr_int(&a, "server.port", s->server_port);
	if (s->kind == SPAN_KIND_SERVER) {
		attr_str(&a, "client.address", s->client_address);
		if (s->client_port)
			attr_int(&a, "client.port", s->client_port);
	}
	if (s->kind == SPAN_KIND_CLIENT) {
		char url[2048];

		if (s->server_port && s->server_port != 80)
			snprintf(url, sizeof(url), "http://%s:%u%s%s%s", s->server_address,
				 s->server_port, s->path, s->query[0] ? "?" : "", s->query);
		else
			snprintf(url, sizeof(url), "http://%s%s%s%s", s->server_address, s->path,
				 s->query[0] ? "?" : "", s->query);
		attr_str(&a, "url.full", url);
	}
	attr_str(&a, "user_agent.original", s->user_agent);
	if (s->request_body_size >= 0)
		attr_int(&a, "http.request.body.size", s->request_body_size);
	if (s->response_body_size >= 0)
		attr_int(&a, "http.response.body.size", s->response_body_size);
	attr_str(&a, "error.type", s->error_type);
	if (s->response_lost) {
		key(&a, "sonde.response.captured");
		put(o, "false");
	}
	put(o, "}");
}

/* Extra key=value pairs of OTEL_RESOURCE_ATTRIBUTES, as the SDK adds them. */
static void extra_resource_attrs(struct attr_list *a, const char *attrs)
{
	char pair[256];

	while (*attrs) {
		size_t len = strcspn(attrs, ",");
		char *eq;

		snprintf(pair, sizeof(pair), "%.*s", (int)len, attrs);
		eq = strchr(pair, '=');
		if (eq && eq != pair && strncmp(pair, "service.name=", 13) != 0) {
			*eq = '\0';
			attr_str(a, pair, eq + 1);
		}
		attrs += len + (attrs[len] == ',');
	}
}

static void resource(struct json_out *o, const struct proc_info *p)
{
	struct attr_list a = { .o = o, .first = true };

	put(o, "{\"attributes\": {");
	attr_str(&a, "service.name", p->service_name);
	attr_str(&a, "service.instance.id", p->instance_id);
	attr_int(&a, "process.pid", p->pid);
	attr_str(&a, "process.executable.name", p->executable_name);
	attr_str(&a, "process.command_line", p->command_line);
	attr_str(&a, "host.name", p->host_name);
	attr_str(&a, "telemetry.sdk.name", "sonde");
	attr_str(&a, "telemetry.sdk.version", SONDE_VERSION);
	extra_resource_attrs(&a, p->resource_attrs);
	put(o, "}, \"schema_url\": \"\"}");
}

void span_format_name(const struct span *s, char *out, size_t size)
{
	if (s->kind == SPAN_KIND_SERVER && s->route[0])
		snprintf(out, size, "%s %s", s->method, s->route);
	else
		snprintf(out, size, "%s", s->method);
}

size_t console_format_span(const struct span *s, char *out, size_t out_size)
{
	struct json_out o = { .buf = out, .size = out_size };
	char name[300];

	span_format_name(s, name, sizeof(name));
	put(&o, "{\"name\": ");
	put_string(&o, name);
	put(&o, ", \"context\": {\"trace_id\": ");
	put_hex_id(&o, s->trace_id, TRACE_ID_SIZE);
	put(&o, ", \"span_id\": ");
	put_hex_id(&o, s->span_id, SPAN_ID_SIZE);
	put(&o, ", \"trace_state\": \"[]\"}, \"kind\": ");
	put(&o, s->kind == SPAN_KIND_SERVER ? "\"SpanKind.SERVER\"" : "\"SpanKind.CLIENT\"");
	put(&o, ", \"parent_id\": ");
	if (s->has_parent)
		put_hex_id(&o, s->parent_span_id, SPAN_ID_SIZE);
	else
		put(&o, "null");
	put(&o, ", \"start_time\": ");
	put_time(&o, s->start_unix_ns);
	put(&o, ", \"end_time\": ");
	put_time(&o, s->end_unix_ns);
	put(&o, ", \"status\": {\"status_code\": ");
	put(&o, s->status == SPAN_STATUS_ERROR ? "\"ERROR\"" : "\"UNSET\"");
	if (s->status_message[0]) {
		put(&o, ", \"description\": ");
		put_string(&o, s->status_message);
	}
	put(&o, "}, \"attributes\": ");
	span_attributes(&o, s);
	put(&o, ", \"events\": [], \"links\": [], \"resource\": ");
	resource(&o, s->proc);
	put(&o, "}\n");
	if (o.overflow)
		return 0;
	o.buf[o.used] = '\0';
	return o.used;
}
