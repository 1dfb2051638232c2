#include "otlp_logs.h"

#include "arena.h"
#include "otlp_kv.h"
#include "otlp.pb-c.h"
#include "otlp_encode.h"
#include "semconv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SCOPE_NAME "sonde"
/* log.iostream or log.file.*, sonde.log.truncated, and the line's own
 * fields. */
#define RECORD_ATTRS_MAX (3 + LOGLINE_FIELDS_MAX)

/* ---- one record -------------------------------------------------------------- */

static int record_attributes(struct arena *a, const struct log_redaction *redaction,
			     const struct log_record *rec, const struct logline *line,
			     Otlp__LogRecord *out)
{
	/* The parsed line is reused for the next record: its strings are copied. */
	struct otlp_kv_list l = { .copy = true, .redaction = redaction };
	struct attr_sink sink = otlp_kv_sink(&l);

	if (!otlp_kv_init(&l, a, RECORD_ATTRS_MAX))
		return -ENOMEM;
	log_record_attributes(rec, &sink);
	logline_attributes(line, &sink);
	if (l.failed)
		return -ENOMEM;
	out->attributes = l.kv;
	out->n_attributes = l.n;
	out->dropped_attributes_count = line->fields_cut;
	return 0;
}

static Otlp__LogRecord *record_message(struct arena *a, const struct log_redaction *redaction,
				       const struct log_record *rec, struct logline *line)
{
	Otlp__LogRecord *out = arena_alloc(a, sizeof(*out));
	Otlp__AnyValue *body = arena_alloc(a, sizeof(*body));

	if (!out || !body)
		return NULL;
	otlp__log_record__init(out);
	otlp__any_value__init(body);
	logline_parse(rec->body, rec->len, line);
	body->value_case = OTLP__ANY_VALUE__VALUE_STRING_VALUE;
	body->string_value = otlp_text_copy(a, redaction, line->body, line->body_len);
	if (!body->string_value || record_attributes(a, redaction, rec, line, out))
		return NULL;
	out->body = body;
	out->time_unix_nano = rec->time_unix_ns;
	out->observed_time_unix_nano = rec->observed_unix_ns;
	out->severity_number = line->severity;
	out->severity_text = line->severity_text[0]
				     ? otlp_text_copy(a, NULL, line->severity_text,
						 strlen(line->severity_text))
				     : "";
	if (rec->has_ids) {
		out->trace_id = (ProtobufCBinaryData){ TRACE_ID_SIZE, (uint8_t *)rec->trace_id };
		out->span_id = (ProtobufCBinaryData){ SPAN_ID_SIZE, (uint8_t *)rec->span_id };
		out->flags = 1; /* sampled: every span is exported */
	}
	return out->severity_text ? out : NULL;
}

/* ---- resources ------------------------------------------------------------------- */

struct resource {
	const struct proc_info *proc;
	size_t n;
	Otlp__LogRecord **records;
};

static Otlp__ResourceLogs *resource_message(struct arena *a, const struct resource *res,
					    Otlp__InstrumentationScope *scope)
{
	Otlp__ResourceLogs *rl = arena_alloc(a, sizeof(*rl));
	Otlp__Resource *resource = arena_alloc(a, sizeof(*resource));
	Otlp__ScopeLogs *sl = arena_alloc(a, sizeof(*sl));
	Otlp__ScopeLogs **sl_ptr = arena_alloc(a, sizeof(*sl_ptr));
	char *scratch = arena_alloc(a, SEMCONV_RESOURCE_SCRATCH);
	struct otlp_kv_list attrs = { 0 };
	struct attr_sink sink = otlp_kv_sink(&attrs);

	if (!rl || !resource || !sl || !sl_ptr || !scratch ||
	    !otlp_kv_init(&attrs, a, SEMCONV_RESOURCE_ATTRS_MAX))
		return NULL;
	otlp__resource__init(resource);
	if (res->proc)
		semconv_resource_attributes(res->proc, &sink, scratch);
	resource->attributes = attrs.kv;
	resource->n_attributes = attrs.n;
	otlp__scope_logs__init(sl);
	sl->scope = scope;
	sl->log_records = res->records;
	sl->n_log_records = res->n;
	*sl_ptr = sl;
	otlp__resource_logs__init(rl);
	rl->resource = resource;
	rl->scope_logs = sl_ptr;
	rl->n_scope_logs = 1;
	return rl;
}

/* Records grouped by process, in batch order within each. */
static struct resource *group(struct arena *a, const struct log_record *const *records, size_t n,
			      size_t *nres)
{
	struct resource *res = arena_alloc(a, (n + 1) * sizeof(*res));
	size_t count = 0;

	if (!res)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		size_t r = 0;

		while (r < count && res[r].proc != records[i]->proc)
			r++;
		if (r == count)
			res[count++].proc = records[i]->proc;
		res[r].n++;
	}
	for (size_t r = 0; r < count; r++) {
		res[r].records = arena_alloc(a, res[r].n * sizeof(*res[r].records));
		if (!res[r].records)
			return NULL;
		res[r].n = 0;
	}
	*nres = count;
	return res;
}

static int pack(struct arena *a, struct resource *res, size_t nres, struct bytes *out)
{
	Otlp__ExportLogsServiceRequest req = OTLP__EXPORT_LOGS_SERVICE_REQUEST__INIT;
	Otlp__InstrumentationScope scope = OTLP__INSTRUMENTATION_SCOPE__INIT;
	Otlp__ResourceLogs **rls = arena_alloc(a, (nres + 1) * sizeof(*rls));
	size_t len;

	if (!rls)
		return -ENOMEM;
	scope.name = SCOPE_NAME;
	scope.version = SONDE_VERSION;
	for (size_t r = 0; r < nres; r++)
		if (!(rls[r] = resource_message(a, &res[r], &scope)))
			return -ENOMEM;
	req.resource_logs = rls;
	req.n_resource_logs = nres;
	len = otlp__export_logs_service_request__get_packed_size(&req);
	out->used = 0;
	if (bytes_reserve(out, OTLP_ENCODE_HEADROOM + len))
		return -ENOMEM;
	out->used = OTLP_ENCODE_HEADROOM +
		    otlp__export_logs_service_request__pack(&req, out->data + OTLP_ENCODE_HEADROOM);
	return 0;
}

int otlp_logs_encode(const struct log_record *const *records, size_t n,
		     const struct log_redaction *redaction, struct logline *line,
		     struct bytes *out)
{
	struct arena a = { 0 };
	size_t nres = 0;
	struct resource *res = group(&a, records, n, &nres);
	int err = res ? 0 : -ENOMEM;

	for (size_t i = 0; i < n && !err; i++) {
		size_t r = 0;
		Otlp__LogRecord *msg;

		while (res[r].proc != records[i]->proc)
			r++;
		msg = record_message(&a, redaction, records[i], line);
		if (!msg)
			err = -ENOMEM;
		else
			res[r].records[res[r].n++] = msg;
	}
	if (!err)
		err = pack(&a, res, nres, out);
	arena_free(&a);
	return err;
}
