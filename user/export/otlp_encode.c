#include "otlp_encode.h"

#include "bytes.h"
#include "pbwire.h"
#include "semconv.h"
#include "otlp.pb-c.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCOPE_NAME "sonde"
#define RETRY_INFO_TYPE "type.googleapis.com/google.rpc.RetryInfo"

/* Span, KeyValue, AnyValue and Status field numbers (trace.proto, common.proto). */
enum {
	SPAN_TRACE_ID = 1, SPAN_SPAN_ID = 2, SPAN_PARENT_SPAN_ID = 4, SPAN_NAME = 5, SPAN_KIND = 6,
	SPAN_START = 7, SPAN_END = 8, SPAN_ATTRIBUTES = 9, SPAN_STATUS = 15, SPAN_FLAGS = 16,
	KV_KEY = 1, KV_VALUE = 2,
	ANY_STRING = 1, ANY_BOOL = 2, ANY_INT = 3,
	STATUS_MESSAGE = 2, STATUS_CODE = 3,
};

#define SPAN_NAME_MAX 300
/* Room for one encoded span: each string of the span once, url.full and
 * the name besides, and per attribute its key and framing. */
#define SPAN_WIRE_MAX 8192
_Static_assert(sizeof(struct span) + SPAN_SCRATCH_MAX + SPAN_NAME_MAX +
		       SEMCONV_SPAN_ATTRS_MAX * 64 + 128 <= SPAN_WIRE_MAX,
	       "SPAN_WIRE_MAX holds any span");

/* One traced process in the batch. */
struct resource_msg {
	const struct proc_info *proc;
	size_t first_span; /* its spans in span_bytes: [first_span, first_span + n) */
	size_t n_spans;
	Otlp__ResourceSpansPacked resource_spans;
	Otlp__Resource resource;
	Otlp__ScopeSpansPacked scope_spans;
	Otlp__ScopeSpansPacked *scope_ptr;
	Otlp__KeyValue kv[SEMCONV_RESOURCE_ATTRS_MAX];
	Otlp__AnyValue value[SEMCONV_RESOURCE_ATTRS_MAX];
	Otlp__KeyValue *kv_ptrs[SEMCONV_RESOURCE_ATTRS_MAX];
	char scratch[SEMCONV_RESOURCE_SCRATCH];
};

struct otlp_encoder {
	uint32_t max_spans;
	char name[SPAN_NAME_MAX];
	char scratch[SPAN_SCRATCH_MAX];
	struct resource_msg *resources;
	ProtobufCBinaryData *span_bytes; /* packed spans, grouped by resource */
	size_t *span_offset;             /* per input span: where it is in packed_spans */
	Otlp__ResourceSpansPacked **rs_ptrs;
	uint32_t *resource_of;           /* per input span: index into resources */
	Otlp__InstrumentationScope scope;
	struct bytes packed_spans;
	struct bytes out;                /* OTLP_ENCODE_HEADROOM bytes, then the request */
};

/* A sink that appends attributes to a KeyValue array; what does not fit
 * is counted, for the message's dropped_attributes_count. */
struct kv_builder {
	Otlp__KeyValue *kv;
	Otlp__AnyValue *value;
	Otlp__KeyValue **ptrs;
	size_t n, max;
	uint32_t dropped;
};

static Otlp__AnyValue *add_key(struct kv_builder *b, const char *key)
{
	Otlp__KeyValue *kv;
	Otlp__AnyValue *value;

	if (b->n == b->max) {
		b->dropped++;
		return NULL;
	}
	kv = &b->kv[b->n];
	value = &b->value[b->n];
	otlp__key_value__init(kv);
	otlp__any_value__init(value);
	kv->key = (char *)key;
	kv->value = value;
	b->ptrs[b->n++] = kv;
	return value;
}

static void add_str(void *ctx, const char *key, const char *text)
{
	Otlp__AnyValue *value = add_key(ctx, key);

	if (!value)
		return;
	value->value_case = OTLP__ANY_VALUE__VALUE_STRING_VALUE;
	value->string_value = (char *)text;
}

static void add_int(void *ctx, const char *key, int64_t number)
{
	Otlp__AnyValue *value = add_key(ctx, key);

	if (!value)
		return;
	value->value_case = OTLP__ANY_VALUE__VALUE_INT_VALUE;
	value->int_value = number;
}

static void add_bool(void *ctx, const char *key, bool flag)
{
	Otlp__AnyValue *value = add_key(ctx, key);

	if (!value)
		return;
	value->value_case = OTLP__ANY_VALUE__VALUE_BOOL_VALUE;
	value->bool_value = flag;
}

struct otlp_encoder *otlp_encoder_new(uint32_t max_spans)
{
	struct otlp_encoder *enc = calloc(1, sizeof(*enc));

	if (!enc)
		return NULL;
	enc->max_spans = max_spans;
	enc->resources = calloc(max_spans, sizeof(*enc->resources));
	enc->span_bytes = calloc(max_spans, sizeof(*enc->span_bytes));
	enc->span_offset = calloc(max_spans, sizeof(*enc->span_offset));
	enc->rs_ptrs = calloc(max_spans, sizeof(*enc->rs_ptrs));
	enc->resource_of = calloc(max_spans, sizeof(*enc->resource_of));
	if (!enc->resources || !enc->span_bytes || !enc->span_offset || !enc->rs_ptrs ||
	    !enc->resource_of) {
		otlp_encoder_free(enc);
		return NULL;
	}
	otlp__instrumentation_scope__init(&enc->scope);
	enc->scope.name = SCOPE_NAME;
	enc->scope.version = SONDE_VERSION;
	return enc;
}

void otlp_encoder_free(struct otlp_encoder *enc)
{
	if (!enc)
		return;
	free(enc->resources);
	free(enc->span_bytes);
	free(enc->span_offset);
	free(enc->rs_ptrs);
	free(enc->resource_of);
	bytes_free(&enc->packed_spans);
	bytes_free(&enc->out);
	free(enc);
}

/* Span attributes go straight to the wire: a KeyValue's size is known
 * from its key and value before either is written. */
static void wire_kv_prefix(struct pbw *w, const char *key, size_t key_len, size_t any_len)
{
	pb_len_prefix(w, SPAN_ATTRIBUTES,
		      pb_len_field_size(key_len) + pb_len_field_size(any_len));
	pb_bytes_field(w, KV_KEY, key, key_len);
	pb_len_prefix(w, KV_VALUE, any_len);
}

static void wire_str(void *ctx, const char *key, const char *text)
{
	size_t len = strlen(text);

	wire_kv_prefix(ctx, key, strlen(key), pb_len_field_size(len));
	pb_bytes_field(ctx, ANY_STRING, text, len);
}

static void wire_int(void *ctx, const char *key, int64_t number)
{
	wire_kv_prefix(ctx, key, strlen(key), 1 + pb_varint_size((uint64_t)number));
	pb_varint_field(ctx, ANY_INT, (uint64_t)number);
}

static void wire_bool(void *ctx, const char *key, bool flag)
{
	wire_kv_prefix(ctx, key, strlen(key), 2);
	pb_varint_field(ctx, ANY_BOOL, flag);
}

static void wire_status(struct pbw *w, const struct span *s)
{
	size_t message_len = strlen(s->status_message);
	size_t len = (message_len ? pb_len_field_size(message_len) : 0) +
		     (s->status ? 1 + pb_varint_size(s->status) : 0);

	pb_len_prefix(w, SPAN_STATUS, len);
	if (message_len)
		pb_bytes_field(w, STATUS_MESSAGE, s->status_message, message_len);
	if (s->status)
		pb_varint_field(w, STATUS_CODE, s->status);
}

/* Fields in number order and zero values left out, as protobuf-c does. */
static void wire_span(struct otlp_encoder *enc, struct pbw *w, const struct span *s)
{
	struct attr_sink sink = { wire_str, wire_int, wire_bool, w };
	size_t name_len;

	pb_bytes_field(w, SPAN_TRACE_ID, s->trace_id, TRACE_ID_SIZE);
	pb_bytes_field(w, SPAN_SPAN_ID, s->span_id, SPAN_ID_SIZE);
	if (s->has_parent)
		pb_bytes_field(w, SPAN_PARENT_SPAN_ID, s->parent_span_id, SPAN_ID_SIZE);
	span_format_name(s, enc->name, sizeof(enc->name));
	name_len = strlen(enc->name);
	if (name_len)
		pb_bytes_field(w, SPAN_NAME, enc->name, name_len);
	if (s->kind)
		pb_varint_field(w, SPAN_KIND, s->kind);
	if (s->start_unix_ns)
		pb_fixed_field(w, SPAN_START, s->start_unix_ns, 8);
	if (s->end_unix_ns)
		pb_fixed_field(w, SPAN_END, s->end_unix_ns, 8);
	semconv_span_attributes(s, &sink, enc->scratch);
	wire_status(w, s);
	if (s->trace_flags)
		pb_fixed_field(w, SPAN_FLAGS, s->trace_flags, 4);
}

/* Packs the span on its own; its bytes go into the request as they are. */
static int pack_span(struct otlp_encoder *enc, const struct span *s, size_t *offset)
{
	struct pbw w;

	if (bytes_reserve(&enc->packed_spans, SPAN_WIRE_MAX))
		return -ENOMEM;
	*offset = enc->packed_spans.used;
	w = (struct pbw){ enc->packed_spans.data + *offset,
			  enc->packed_spans.data + *offset + SPAN_WIRE_MAX, false };
	wire_span(enc, &w, s);
	if (w.overflow)
		return -EMSGSIZE;
	enc->packed_spans.used = (size_t)(w.p - enc->packed_spans.data);
	return 0;
}

static void build_resource(struct resource_msg *r, Otlp__InstrumentationScope *scope,
			   ProtobufCBinaryData *span_bytes)
{
	struct kv_builder attrs = { r->kv, r->value, r->kv_ptrs, 0, SEMCONV_RESOURCE_ATTRS_MAX, 0 };
	struct attr_sink sink = { add_str, add_int, add_bool, &attrs };

	otlp__resource__init(&r->resource);
	semconv_resource_attributes(r->proc, &sink, r->scratch);
	r->resource.attributes = r->kv_ptrs;
	r->resource.n_attributes = attrs.n;
	r->resource.dropped_attributes_count = attrs.dropped;
	otlp__scope_spans_packed__init(&r->scope_spans);
	r->scope_spans.scope = scope;
	r->scope_spans.spans = span_bytes + r->first_span;
	r->scope_spans.n_spans = r->n_spans;
	r->scope_ptr = &r->scope_spans;
	otlp__resource_spans_packed__init(&r->resource_spans);
	r->resource_spans.resource = &r->resource;
	r->resource_spans.scope_spans = &r->scope_ptr;
	r->resource_spans.n_scope_spans = 1;
}

/* Assigns each span its process's index; returns how many processes. */
static size_t group_by_process(struct otlp_encoder *enc, const struct span *const *spans, size_t n)
{
	size_t n_resources = 0;

	for (size_t i = 0; i < n; i++) {
		size_t r = 0;

		while (r < n_resources && enc->resources[r].proc != spans[i]->proc)
			r++;
		if (r == n_resources) {
			enc->resources[r].proc = spans[i]->proc;
			enc->resources[r].n_spans = 0;
			n_resources++;
		}
		enc->resources[r].n_spans++;
		enc->resource_of[i] = (uint32_t)r;
	}
	return n_resources;
}

static int serialize(struct otlp_encoder *enc, const Otlp__ExportTraceServiceRequestPacked *req,
		     size_t *out_len)
{
	size_t len = otlp__export_trace_service_request_packed__get_packed_size(req);

	enc->out.used = 0;
	if (bytes_reserve(&enc->out, OTLP_ENCODE_HEADROOM + len))
		return -ENOMEM;
	*out_len = otlp__export_trace_service_request_packed__pack(
		req, enc->out.data + OTLP_ENCODE_HEADROOM);
	return 0;
}

int otlp_encode(struct otlp_encoder *enc, const struct span *const *spans, size_t n,
		uint8_t **out, size_t *out_len)
{
	Otlp__ExportTraceServiceRequestPacked req = OTLP__EXPORT_TRACE_SERVICE_REQUEST_PACKED__INIT;
	size_t n_resources, next = 0;
	int err;

	if (n > enc->max_spans)
		return -E2BIG;
	n_resources = group_by_process(enc, spans, n);
	for (size_t r = 0; r < n_resources; r++) {
		enc->resources[r].first_span = next;
		next += enc->resources[r].n_spans;
		enc->resources[r].n_spans = 0;
	}
	enc->packed_spans.used = 0;
	for (size_t i = 0; i < n; i++) {
		err = pack_span(enc, spans[i], &enc->span_offset[i]);
		if (err)
			return err;
	}
	/* Pointers only now: packing may have moved the buffer. */
	for (size_t i = 0; i < n; i++) {
		struct resource_msg *r = &enc->resources[enc->resource_of[i]];
		size_t end = i + 1 < n ? enc->span_offset[i + 1] : enc->packed_spans.used;

		enc->span_bytes[r->first_span + r->n_spans++] = (ProtobufCBinaryData){
			end - enc->span_offset[i], enc->packed_spans.data + enc->span_offset[i]
		};
	}
	for (size_t r = 0; r < n_resources; r++) {
		build_resource(&enc->resources[r], &enc->scope, enc->span_bytes);
		enc->rs_ptrs[r] = &enc->resources[r].resource_spans;
	}
	req.resource_spans = enc->rs_ptrs;
	req.n_resource_spans = n_resources;
	err = serialize(enc, &req, out_len);
	*out = enc->out.data + OTLP_ENCODE_HEADROOM;
	return err;
}

int otlp_decode_response(const uint8_t *body, size_t len, struct otlp_partial_success *out)
{
	Otlp__ExportTraceServiceResponse *resp;

	memset(out, 0, sizeof(*out));
	if (len == 0)
		return 0;
	resp = otlp__export_trace_service_response__unpack(NULL, len, body);
	if (!resp)
		return -EBADMSG;
	if (resp->partial_success) {
		out->rejected = resp->partial_success->rejected_spans;
		snprintf(out->error_message, sizeof(out->error_message), "%s",
			 resp->partial_success->error_message);
	}
	otlp__export_trace_service_response__free_unpacked(resp, NULL);
	return 0;
}

static int64_t retry_delay_of(const Otlp__RpcAny *detail)
{
	Otlp__RpcRetryInfo *info;
	int64_t ms = -1;

	if (strcmp(detail->type_url, RETRY_INFO_TYPE) != 0)
		return -1;
	info = otlp__rpc_retry_info__unpack(NULL, detail->value.len, detail->value.data);
	if (!info)
		return -1;
	if (info->retry_delay && info->retry_delay->seconds >= 0)
		ms = info->retry_delay->seconds * 1000 + info->retry_delay->nanos / 1000000;
	otlp__rpc_retry_info__free_unpacked(info, NULL);
	return ms;
}

int64_t otlp_retry_info_delay_ms(const uint8_t *status, size_t len)
{
	Otlp__RpcStatus *st = otlp__rpc_status__unpack(NULL, len, status);
	int64_t ms = -1;

	if (!st)
		return -1;
	for (size_t i = 0; i < st->n_details && ms < 0; i++)
		ms = retry_delay_of(st->details[i]);
	otlp__rpc_status__free_unpacked(st, NULL);
	return ms;
}

bool otlp_rpc_status_message(const uint8_t *status, size_t len, char *out, size_t size)
{
	Otlp__RpcStatus *st = len ? otlp__rpc_status__unpack(NULL, len, status) : NULL;
	bool found;

	if (!st)
		return false;
	snprintf(out, size, "%s", st->message);
	found = out[0] != '\0';
	otlp__rpc_status__free_unpacked(st, NULL);
	return found;
}
