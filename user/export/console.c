#include "console.h"

#include "semconv.h"

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

static void attr_str(void *ctx, const char *name, const char *value)
{
	key(ctx, name);
	put_string(((struct attr_list *)ctx)->o, value);
}

static void attr_int(void *ctx, const char *name, int64_t value)
{
	key(ctx, name);
	putf(((struct attr_list *)ctx)->o, "%" PRId64, value);
}

static void attr_bool(void *ctx, const char *name, bool value)
{
	key(ctx, name);
	put(((struct attr_list *)ctx)->o, value ? "true" : "false");
}

static void span_attributes(struct json_out *o, const struct span *s)
{
	struct attr_list a = { .o = o, .first = true };
	struct attr_sink sink = { attr_str, attr_int, attr_bool, &a };
	char scratch[SPAN_SCRATCH_MAX];

	put(o, "{");
	semconv_span_attributes(s, &sink, scratch);
	put(o, "}");
}

static void resource(struct json_out *o, const struct proc_info *p)
{
	struct attr_list a = { .o = o, .first = true };
	struct attr_sink sink = { attr_str, attr_int, attr_bool, &a };
	char scratch[SEMCONV_RESOURCE_SCRATCH];

	put(o, "{\"attributes\": {");
	semconv_resource_attributes(p, &sink, scratch);
	put(o, "}, \"schema_url\": \"\"}");
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
	putf(&o, "\"SpanKind.%s\"", span_kind_name(s->kind));
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

/* ---- metrics ------------------------------------------------------------------ */

static void point_head(struct json_out *o, const char *name, const char *unit, const char *type,
		       bool delta, const char *service)
{
	put(o, "{\"metric\": ");
	put_string(o, name);
	put(o, ", \"unit\": ");
	put_string(o, unit);
	putf(o, ", \"type\": \"%s\", \"temporality\": \"%s\", \"resource\": {\"service.name\": ",
	     type, delta ? "delta" : "cumulative");
	put_string(o, service);
	put(o, "}");
}

static void point_times(struct json_out *o, const struct metrics_view *v, bool delta)
{
	put(o, ", \"start_time\": ");
	put_time(o, delta ? v->previous_ns : v->start_ns);
	put(o, ", \"time\": ");
	put_time(o, v->time_ns);
}

static size_t finish(struct json_out *o)
{
	put(o, "}\n");
	if (o->overflow)
		return 0;
	o->buf[o->used] = '\0';
	return o->used;
}

size_t console_format_point(const struct metrics_view *v, const struct metrics_view_instrument *in,
			    const struct metric_point *p, char *out, size_t out_size)
{
	struct json_out o = { .buf = out, .size = out_size };
	struct attr_list a = { .o = &o, .first = true };
	struct attr_sink sink = { attr_str, attr_int, attr_bool, &a };
	const char *service = metric_series_service(p->series);
	bool histogram = in->desc->kind == METRIC_KIND_HISTOGRAM;

	point_head(&o, in->desc->name, in->desc->unit, histogram ? "histogram" : "sum",
		   histogram && in->delta, service ? service : METRICS_SELF_SERVICE);
	put(&o, ", \"attributes\": {");
	metric_series_attributes(p->series, &sink);
	put(&o, "}");
	point_times(&o, v, histogram && in->delta);
	if (!histogram) {
		putf(&o, ", \"value\": %" PRId64, p->value);
		return finish(&o);
	}
	putf(&o, ", \"count\": %" PRIu64 ", \"sum\": %.9g, \"bucket_counts\": [", p->count, p->sum);
	for (unsigned i = 0; i <= METRICS_BUCKETS; i++)
		putf(&o, "%s%" PRIu64, i ? ", " : "", p->buckets[i]);
	put(&o, "], \"explicit_bounds\": [");
	for (unsigned i = 0; i < METRICS_BUCKETS; i++)
		putf(&o, "%s%g", i ? ", " : "", metrics_bounds[i]);
	put(&o, "]");
	return finish(&o);
}

size_t console_format_self(const struct metrics_view *v, const struct self_value *self, char *out,
			   size_t out_size)
{
	struct json_out o = { .buf = out, .size = out_size };
	bool total = self->desc->kind == COUNTER_TOTAL;
	char name[96];

	snprintf(name, sizeof(name), "sonde.%s", self->desc->name);
	point_head(&o, name, "1", total ? "sum" : "gauge", total && v->self_delta,
		   METRICS_SELF_SERVICE);
	point_times(&o, v, total && v->self_delta);
	putf(&o, ", \"value\": %" PRIu64, self->value);
	return finish(&o);
}

/* ---- logs ------------------------------------------------------------------------ */

static const char *const severity_names[] = {
	[SEVERITY_TRACE] = "TRACE", [SEVERITY_DEBUG] = "DEBUG", [SEVERITY_INFO] = "INFO",
	[SEVERITY_WARN] = "WARN",   [SEVERITY_ERROR] = "ERROR", [SEVERITY_FATAL] = "FATAL",
};

/* A record's body and string attributes, redacted. */
struct redacted_list {
	struct attr_list list;
	const struct log_redaction *redaction;
	char *scratch;
};

static void redacted_str(void *ctx, const char *name, const char *value)
{
	struct redacted_list *r = ctx;

	key(&r->list, name);
	log_redact(r->redaction, value, strlen(value), r->scratch, LOGLINE_TEXT_MAX);
	put_string(r->list.o, r->scratch);
}

static void redacted_int(void *ctx, const char *name, int64_t value)
{
	attr_int(&((struct redacted_list *)ctx)->list, name, value);
}

static void redacted_bool(void *ctx, const char *name, bool value)
{
	attr_bool(&((struct redacted_list *)ctx)->list, name, value);
}

/* The fields and names of the OpenTelemetry Python SDK's ConsoleLogExporter. */
size_t console_format_log(const struct log_record *rec, const struct log_redaction *redaction,
			  struct logline *line, char *scratch, char *out, size_t out_size)
{
	struct json_out o = { .buf = out, .size = out_size };
	struct redacted_list r = { .list = { .o = &o, .first = true }, .redaction = redaction,
				   .scratch = scratch };
	struct attr_sink sink = { redacted_str, redacted_int, redacted_bool, &r };

	logline_parse(rec->body, rec->len, line);
	log_redact(redaction, line->body, line->body_len, scratch, LOGLINE_TEXT_MAX);
	put(&o, "{\"body\": ");
	put_string(&o, scratch);
	put(&o, ", \"severity_number\": ");
	putf(&o, "%d", (int)line->severity);
	put(&o, ", \"severity_text\": ");
	put_string(&o, line->severity_text[0] ? line->severity_text
					      : line->severity ? severity_names[line->severity] : "");
	put(&o, ", \"attributes\": {");
	log_record_attributes(rec, &sink);
	logline_attributes(line, &sink);
	put(&o, "}, \"timestamp\": ");
	put_time(&o, rec->time_unix_ns);
	put(&o, ", \"observed_timestamp\": ");
	put_time(&o, rec->observed_unix_ns);
	put(&o, ", \"trace_id\": ");
	if (rec->has_ids)
		put_hex_id(&o, rec->trace_id, TRACE_ID_SIZE);
	else
		put(&o, "\"0x00000000000000000000000000000000\"");
	put(&o, ", \"span_id\": ");
	if (rec->has_ids)
		put_hex_id(&o, rec->span_id, SPAN_ID_SIZE);
	else
		put(&o, "\"0x0000000000000000\"");
	put(&o, ", \"trace_flags\": ");
	put(&o, rec->has_ids ? "1" : "0");
	put(&o, ", \"resource\": ");
	if (rec->proc)
		resource(&o, rec->proc);
	else
		put(&o, "{\"attributes\": {}, \"schema_url\": \"\"}");
	put(&o, "}\n");
	if (o.overflow)
		return 0;
	o.buf[o.used] = '\0';
	return o.used;
}
