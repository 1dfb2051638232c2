/* OTLP: settings, key=value lists, encoding (decoded back with the same
 * generated schema), backoff. The wire itself is tested end to end
 * against an independent receiver (tests/e2e/test_otlp.py). */
#include "config.h"
#include "http1_proto.h"
#include "kvlist.h"
#include "otlp_config.h"
#include "otlp_encode.h"
#include "otlp_export.h"
#include "otlp.pb-c.h"
#include "pacer.h"

#include <criterion/criterion.h>
#include <string.h>
#include <unistd.h>

/* A fake environment: NULL-terminated name, value pairs. */
static const char *const *fake_env;

static char *lookup(const char *name)
{
	for (const char *const *e = fake_env; e && e[0]; e += 2)
		if (strcmp(e[0], name) == 0)
			return (char *)e[1];
	return NULL;
}

static const char *lookup_in(void *ctx, const char *name)
{
	(void)ctx;
	return lookup(name);
}

static const struct config_env fake = { lookup_in, NULL };

static int resolve(const char *const *env, struct otlp_opts *opts, char *err)
{
	struct otlp_settings s;

	fake_env = env;
	otlp_settings_from_env(&s, OTLP_TRACES, &fake);
	return otlp_settings_resolve(&s, opts, err, 256);
}

Test(kvlist, trims_decodes_and_flags_bad_items)
{
	struct kv_cursor cur = { .next = " a=1, b = x%20y ,bad, =v, c=%zz,d=" };
	char key[32], value[32];

	cr_assert_eq(kv_next(&cur, key, sizeof(key), value, sizeof(value)), KV_PAIR);
	cr_expect_str_eq(key, "a");
	cr_expect_str_eq(value, "1");
	cr_assert_eq(kv_next(&cur, key, sizeof(key), value, sizeof(value)), KV_PAIR);
	cr_expect_str_eq(key, "b");
	cr_expect_str_eq(value, "x y");
	cr_expect_eq(kv_next(&cur, key, sizeof(key), value, sizeof(value)), KV_BAD);
	cr_expect_eq(kv_next(&cur, key, sizeof(key), value, sizeof(value)), KV_BAD);
	cr_expect_eq(kv_next(&cur, key, sizeof(key), value, sizeof(value)), KV_BAD);
	cr_assert_eq(kv_next(&cur, key, sizeof(key), value, sizeof(value)), KV_PAIR);
	cr_expect_str_eq(value, "");
	cr_expect_eq(kv_next(&cur, key, sizeof(key), value, sizeof(value)), KV_END);
}

Test(otlp_config, specification_defaults)
{
	static const char *const env[] = { NULL };
	struct otlp_opts o;
	char err[256];

	cr_assert_eq(resolve(env, &o, err), 0, "%s", err);
	cr_expect_eq(o.protocol, OTLP_HTTP_PROTOBUF);
	cr_expect_str_eq(o.url, "http://localhost:4318/v1/traces");
	cr_expect_eq(o.timeout_ms, 10000);
	cr_expect_not(o.gzip);
	static const char *const grpc[] = { "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", NULL };
	cr_assert_eq(resolve(grpc, &o, err), 0, "%s", err);
	cr_expect_str_eq(o.url, "http://localhost:4317");
}

Test(otlp_config, endpoints_by_protocol_and_variable)
{
	struct otlp_opts o;
	char err[256];
	static const char *const base[] = { "OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/otel/",
					    NULL };
	static const char *const exact[] = { "OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:1",
					     "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
					     "https://c/custom/path", NULL };
	static const char *const grpc_path[] = { "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc",
						 "OTEL_EXPORTER_OTLP_ENDPOINT",
						 "https://c:4317/ignored", NULL };
	static const char *const grpc_bare[] = { "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc",
						 "OTEL_EXPORTER_OTLP_ENDPOINT", "c:4317",
						 "OTEL_EXPORTER_OTLP_INSECURE", "true", NULL };
	static const char *const grpc_bare_tls[] = { "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc",
						     "OTEL_EXPORTER_OTLP_ENDPOINT", "c:4317", NULL };

	cr_assert_eq(resolve(base, &o, err), 0, "%s", err);
	cr_expect_str_eq(o.url, "http://c:4318/otel/v1/traces");
	cr_assert_eq(resolve(exact, &o, err), 0, "%s", err);
	cr_expect_str_eq(o.url, "https://c/custom/path");
	cr_assert_eq(resolve(grpc_path, &o, err), 0, "%s", err);
	cr_expect_str_eq(o.url, "https://c:4317");
	cr_assert_eq(resolve(grpc_bare, &o, err), 0, "%s", err);
	cr_expect_str_eq(o.url, "http://c:4317");
	cr_assert_eq(resolve(grpc_bare_tls, &o, err), 0, "%s", err);
	cr_expect_str_eq(o.url, "https://c:4317");
}

Test(otlp_config, traces_variables_win_and_flags_win_over_both)
{
	static const char *const env[] = { "OTEL_EXPORTER_OTLP_COMPRESSION", "none",
					   "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip",
					   "OTEL_EXPORTER_OTLP_TIMEOUT", "2500",
					   "OTEL_EXPORTER_OTLP_HEADERS", "api-key=s%3Dcret",
					   NULL };
	struct otlp_settings s;
	struct otlp_opts o;
	char err[256];

	fake_env = env;
	otlp_settings_from_env(&s, OTLP_TRACES, &fake);
	cr_expect_not(otlp_settings_have_endpoint(&s));
	otlp_settings_set_flag(&s, OTLP_TIMEOUT, "700");
	cr_assert_eq(otlp_settings_resolve(&s, &o, err, sizeof(err)), 0, "%s", err);
	cr_expect(o.gzip);
	cr_expect_eq(o.timeout_ms, 700);
	cr_expect_str_eq(o.headers, "api-key=s%3Dcret");
}

Test(otlp_config, bad_values_name_their_variable)
{
	static const char *const cases[][3] = {
		{ "OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "http/json is not supported" },
		{ "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "udp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL" },
		{ "OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318", "is not a URL" },
		{ "OTEL_EXPORTER_OTLP_TIMEOUT", "-5", "OTEL_EXPORTER_OTLP_TIMEOUT" },
		{ "OTEL_EXPORTER_OTLP_COMPRESSION", "zstd", "is not one of gzip, none" },
		{ "OTEL_EXPORTER_OTLP_HEADERS", "a=b,c", "OTEL_EXPORTER_OTLP_HEADERS" },
		{ "OTEL_EXPORTER_OTLP_HEADERS", "a=b%0d%0aX: y", "OTEL_EXPORTER_OTLP_HEADERS" },
		{ "OTEL_EXPORTER_OTLP_INSECURE", "yes", "is not true or false" },
		{ "OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent", "cannot read" },
		{ "OTEL_EXPORTER_OTLP_CLIENT_KEY", "/dev/null", "go together" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *env[] = { cases[i][0], cases[i][1], NULL };
		struct otlp_opts o;
		char err[256] = "";

		cr_expect_eq(resolve(env, &o, err), -1, "%s=%s accepted", cases[i][0], cases[i][1]);
		cr_expect(strstr(err, cases[i][2]) != NULL, "%s: \"%s\"", cases[i][0], err);
	}
}

Test(otlp_config, an_endpoint_makes_otlp_the_default_exporter)
{
	static const char *const endpoint[] = { "OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318", NULL };
	static const char *const both[] = { "OTEL_TRACES_EXPORTER", "otlp,console", NULL };
	struct sonde_config cfg;
	char *args[] = { "sonde" };
	char err[256];

	fake_env = endpoint;
	cr_assert_eq(config_parse(&cfg, 1, args, lookup, NULL, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(cfg.exporters, EXPORTER_OTLP);
	cr_expect_str_eq(cfg.otlp.url, "http://c:4318/v1/traces");
	cr_expect_eq(cfg.export_timeout_ms, 30000);
	fake_env = both;
	cr_assert_eq(config_parse(&cfg, 1, args, lookup, NULL, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(cfg.exporters, EXPORTER_OTLP | EXPORTER_CONSOLE);
	char *flags[] = { "sonde", "--exporter", "console", "--otlp-endpoint", "http://d:1" };
	fake_env = endpoint;
	cr_assert_eq(config_parse(&cfg, 5, flags, lookup, NULL, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(cfg.exporters, EXPORTER_CONSOLE);
}

static struct proc_info proc_a = { .refs = 1, .pid = 42, .service_name = "api",
				   .resource_attrs = "deployment.environment=prod,service.name=x" };
static struct proc_info proc_b = { .refs = 1, .pid = 43, .service_name = "worker" };

static struct http1_span *http_of(struct span *s)
{
	return (struct http1_span *)s->proto_data;
}

static void fill_span(struct span *s, struct proc_info *proc, uint8_t id, enum span_kind kind)
{
	struct http1_span *h = http_of(s);

	memset(s, 0, sizeof(*s));
	s->proto = SONDE_PROTO_HTTP1;
	memset(s->trace_id, id, TRACE_ID_SIZE);
	memset(s->span_id, id + 1, SPAN_ID_SIZE);
	s->kind = kind;
	s->trace_flags = 1;
	s->start_unix_ns = 1000000000ull * id;
	s->end_unix_ns = s->start_unix_ns + 5000;
	h->status_code = 503;
	s->answered = true;
	strcpy(s->response_code, "503");
	s->status = SPAN_STATUS_ERROR;
	s->server_port = 8080;
	h->request_body_size = -1;
	h->response_body_size = 12;
	h->method = "POST";
	strcpy(h->path, "/api/v1/operations/7");
	strcpy(h->route, "/api/v1/operations/{id}");
	strcpy(s->server_address, "10.0.0.1");
	h->protocol_version = "1.1";
	s->proc = proc;
}

static const Otlp__KeyValue *attr(Otlp__KeyValue **kv, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(kv[i]->key, key) == 0)
			return kv[i];
	return NULL;
}

Test(otlp_encode, groups_by_process_with_typed_attributes)
{
	struct span spans[3];
	const struct span *ptrs[3] = { &spans[0], &spans[1], &spans[2] };
	struct otlp_encoder *enc = otlp_encoder_new(8);
	uint8_t *bytes;
	size_t len;

	fill_span(&spans[0], &proc_a, 1, SPAN_KIND_SERVER);
	fill_span(&spans[1], &proc_b, 2, SPAN_KIND_CLIENT);
	fill_span(&spans[2], &proc_a, 3, SPAN_KIND_CLIENT);
	spans[2].has_parent = true;
	memset(spans[2].parent_span_id, 2, SPAN_ID_SIZE);
	cr_assert_eq(otlp_encode(enc, ptrs, 3, &bytes, &len), 0);

	Otlp__ExportTraceServiceRequest *req =
		otlp__export_trace_service_request__unpack(NULL, len, bytes);
	cr_assert_not_null(req);
	cr_assert_eq(req->n_resource_spans, 2);
	Otlp__ResourceSpans *a = req->resource_spans[0], *b = req->resource_spans[1];
	cr_assert_eq(a->n_scope_spans, 1);
	cr_expect_str_eq(a->scope_spans[0]->scope->name, "sonde");
	cr_assert_eq(a->scope_spans[0]->n_spans, 2);
	cr_assert_eq(b->scope_spans[0]->n_spans, 1);
	const Otlp__KeyValue *svc = attr(a->resource->attributes, a->resource->n_attributes,
					 "service.name");
	cr_expect_str_eq(svc->value->string_value, "api");
	const Otlp__KeyValue *pid = attr(a->resource->attributes, a->resource->n_attributes,
					 "process.pid");
	cr_expect_eq(pid->value->value_case, OTLP__ANY_VALUE__VALUE_INT_VALUE);
	cr_expect_eq(pid->value->int_value, 42);
	cr_expect_not_null(attr(a->resource->attributes, a->resource->n_attributes,
				"deployment.environment"));

	Otlp__Span *server = a->scope_spans[0]->spans[0], *client = a->scope_spans[0]->spans[1];
	cr_expect_eq(server->trace_id.len, 16);
	cr_expect_eq(server->span_id.len, 8);
	cr_expect_eq(server->span_id.data[0], 2);
	cr_expect_eq(server->parent_span_id.len, 0);
	cr_expect_eq(server->kind, OTLP__SPAN__SPAN_KIND__SPAN_KIND_SERVER);
	cr_expect_str_eq(server->name, "POST /api/v1/operations/{id}");
	cr_expect_eq(server->start_time_unix_nano, 1000000000ull);
	cr_expect_eq(server->end_time_unix_nano, 1000005000ull);
	cr_expect_eq(server->flags, 1);
	cr_expect_eq(server->status->code, OTLP__STATUS__STATUS_CODE__STATUS_CODE_ERROR);
	const Otlp__KeyValue *code = attr(server->attributes, server->n_attributes,
					  "http.response.status_code");
	cr_expect_eq(code->value->value_case, OTLP__ANY_VALUE__VALUE_INT_VALUE);
	cr_expect_eq(code->value->int_value, 503);
	cr_expect_null(attr(server->attributes, server->n_attributes, "http.request.body.size"));
	cr_expect_eq(client->parent_span_id.len, 8);
	cr_expect_str_eq(client->name, "POST");
	cr_expect_str_eq(attr(client->attributes, client->n_attributes, "url.full")->value->string_value,
			 "http://10.0.0.1:8080/api/v1/operations/7");
	otlp__export_trace_service_request__free_unpacked(req, NULL);
	otlp_encoder_free(enc);
}

/* Spans are written straight to the wire: their bytes must be what
 * protobuf-c itself packs from the decoded request (field order, zero
 * fields left out, multi-byte lengths), for every kind of attribute. */
Test(otlp_encode, span_bytes_are_what_protobuf_c_packs)
{
	struct span spans[3];
	const struct span *ptrs[3] = { &spans[0], &spans[1], &spans[2] };
	struct otlp_encoder *enc = otlp_encoder_new(3);
	uint8_t *bytes, *again;
	size_t len;

	fill_span(&spans[0], &proc_a, 1, SPAN_KIND_SERVER);
	memset(http_of(&spans[0])->path, 'p', 300); /* lengths past 127: two-byte varints */
	strcpy(spans[0].client_address, "192.168.1.20");
	spans[0].client_port = 51234;
	strcpy(http_of(&spans[0])->user_agent, "curl/7.88.1");
	strcpy(spans[0].status_message, "upstream timed out");
	fill_span(&spans[1], &proc_b, 2, SPAN_KIND_CLIENT);
	spans[1].has_parent = true;
	memset(spans[1].parent_span_id, 9, SPAN_ID_SIZE);
	spans[1].response_lost = true; /* a false bool attribute */
	spans[1].status = SPAN_STATUS_UNSET;
	http_of(&spans[1])->status_code = 0;
	spans[1].trace_flags = 0;
	strcpy(spans[1].error_type, "response_lost");
	fill_span(&spans[2], &proc_a, 3, SPAN_KIND_CLIENT);
	spans[2].start_unix_ns = UINT64_MAX - 1;
	spans[2].end_unix_ns = UINT64_MAX;
	http_of(&spans[2])->response_body_size = INT64_MAX;
	cr_assert_eq(otlp_encode(enc, ptrs, 3, &bytes, &len), 0);

	Otlp__ExportTraceServiceRequest *req =
		otlp__export_trace_service_request__unpack(NULL, len, bytes);
	cr_assert_not_null(req);
	cr_assert_eq(otlp__export_trace_service_request__get_packed_size(req), len);
	again = malloc(len);
	cr_assert_not_null(again);
	otlp__export_trace_service_request__pack(req, again);
	cr_expect_eq(memcmp(again, bytes, len), 0);
	Otlp__Span *server = req->resource_spans[0]->scope_spans[0]->spans[0];
	cr_expect_eq(strlen(attr(server->attributes, server->n_attributes,
				 "url.path")->value->string_value), 300);
	cr_expect_str_eq(server->status->message, "upstream timed out");
	Otlp__Span *client = req->resource_spans[1]->scope_spans[0]->spans[0];
	const Otlp__KeyValue *captured = attr(client->attributes, client->n_attributes,
					      "sonde.response.captured");
	cr_assert_not_null(captured);
	cr_expect_eq(captured->value->value_case, OTLP__ANY_VALUE__VALUE_BOOL_VALUE);
	cr_expect_not(captured->value->bool_value);
	cr_expect_eq(client->flags, 0);
	cr_expect_eq(client->status->code, OTLP__STATUS__STATUS_CODE__STATUS_CODE_UNSET);
	Otlp__Span *late = req->resource_spans[0]->scope_spans[0]->spans[1];
	cr_expect_eq(late->end_time_unix_nano, UINT64_MAX);
	cr_expect_eq(attr(late->attributes, late->n_attributes,
			  "http.response.body.size")->value->int_value, INT64_MAX);
	free(again);
	otlp__export_trace_service_request__free_unpacked(req, NULL);
	otlp_encoder_free(enc);
}

Test(otlp_encode, reads_partial_success_and_retry_info)
{
	Otlp__ExportTracePartialSuccess partial = OTLP__EXPORT_TRACE_PARTIAL_SUCCESS__INIT;
	Otlp__ExportTraceServiceResponse resp = OTLP__EXPORT_TRACE_SERVICE_RESPONSE__INIT;
	struct otlp_partial_success out;
	uint8_t buf[256];
	size_t len;

	partial.rejected_spans = 3;
	partial.error_message = "too old";
	resp.partial_success = &partial;
	len = otlp__export_trace_service_response__pack(&resp, buf);
	cr_assert_eq(otlp_decode_response(buf, len, &out), 0);
	cr_expect_eq(out.rejected, 3);
	cr_expect_str_eq(out.error_message, "too old");
	cr_assert_eq(otlp_decode_response(buf, 0, &out), 0);
	cr_expect_eq(out.rejected, 0);
	cr_expect_neq(otlp_decode_response((const uint8_t *)"\xff\xff", 2, &out), 0);

	Otlp__RpcDuration delay = OTLP__RPC_DURATION__INIT;
	Otlp__RpcRetryInfo info = OTLP__RPC_RETRY_INFO__INIT;
	Otlp__RpcAny any = OTLP__RPC_ANY__INIT;
	Otlp__RpcAny *details[] = { &any };
	Otlp__RpcStatus status = OTLP__RPC_STATUS__INIT;
	uint8_t info_buf[64];
	char message[64];

	delay.seconds = 2;
	delay.nanos = 250000000;
	info.retry_delay = &delay;
	any.type_url = "type.googleapis.com/google.rpc.RetryInfo";
	any.value.len = otlp__rpc_retry_info__pack(&info, info_buf);
	any.value.data = info_buf;
	status.code = 8;
	status.message = "slow down";
	status.details = details;
	status.n_details = 1;
	len = otlp__rpc_status__pack(&status, buf);
	cr_expect_eq(otlp_retry_info_delay_ms(buf, len), 2250);
	cr_expect(otlp_rpc_status_message(buf, len, message, sizeof(message)));
	cr_expect_str_eq(message, "slow down");
	status.n_details = 0;
	len = otlp__rpc_status__pack(&status, buf);
	cr_expect_eq(otlp_retry_info_delay_ms(buf, len), -1);
}

Test(otlp_export, backoff_doubles_to_a_cap_with_jitter_and_honours_retry_after)
{
	for (uint64_t r = 0; r < 5000; r += 97) {
		uint64_t first = otlp_backoff_ms(1, r, -1), third = otlp_backoff_ms(3, r, -1);
		uint64_t tenth = otlp_backoff_ms(10, r, -1);

		cr_expect(first >= 500 && first <= 1000, "%lu", first);
		cr_expect(third >= 2000 && third <= 4000, "%lu", third);
		cr_expect(tenth >= 2500 && tenth <= 5000, "%lu", tenth);
	}
	cr_expect_eq(otlp_backoff_ms(1, 0, 7000), 7000);
	cr_expect_eq(otlp_backoff_ms(1, 0, 10), 500);
}

/* The agent asks every exporter to stop before it waits for any; the
 * wait must not move each one's deadline on. */
Test(pacer, a_second_stop_keeps_the_first_deadline)
{
	struct pacer pace;
	struct otlp_pacer export_pace;
	uint64_t first;

	pacer_init(&pace);
	export_pace = pacer_for_export(&pace);
	cr_expect_eq(export_pace.limit(export_pace.ctx), UINT64_MAX);
	pacer_stop(&pace, 1000);
	first = export_pace.limit(export_pace.ctx);
	usleep(2000);
	pacer_stop(&pace, 1000);
	cr_expect(pacer_stopping(&pace));
	cr_expect_eq(export_pace.limit(export_pace.ctx), first);
	pacer_destroy(&pace);
}

Test(otlp_encode, attributes_beyond_room_are_counted_as_dropped)
{
	static struct proc_info crowded = { .refs = 1, .pid = 44, .service_name = "crowded" };
	struct span span;
	const struct span *ptrs[1] = { &span };
	struct otlp_encoder *enc = otlp_encoder_new(1);
	size_t len = 0, used = 0;
	uint8_t *bytes = NULL;

	for (int i = 0; i < 25; i++)
		used += (size_t)snprintf(crowded.resource_attrs + used,
					 sizeof(crowded.resource_attrs) - used, "%sk%d=v%d",
					 i ? "," : "", i, i);
	fill_span(&span, &crowded, 1, SPAN_KIND_SERVER);
	cr_assert_eq(otlp_encode(enc, ptrs, 1, &bytes, &len), 0);
	Otlp__ExportTraceServiceRequest *req =
		otlp__export_trace_service_request__unpack(NULL, len, bytes);
	cr_assert_not_null(req);
	Otlp__Resource *res = req->resource_spans[0]->resource;
	/* service.name, process.pid, telemetry.sdk.name and .version, then k0.. */
	cr_expect_eq(res->n_attributes, 24);
	cr_expect_eq(res->dropped_attributes_count, 25 - 20);
	cr_expect_str_eq(attr(res->attributes, res->n_attributes, "k19")->value->string_value,
			 "v19");
	cr_expect_eq(req->resource_spans[0]->scope_spans[0]->spans[0]->dropped_attributes_count, 0);
	otlp__export_trace_service_request__free_unpacked(req, NULL);
	otlp_encoder_free(enc);
}

Test(otlp_config, settings_that_would_mislead_are_refused_at_start)
{
	static const char *const bad_url[] = { "OTEL_EXPORTER_OTLP_ENDPOINT", "http://[::1", NULL };
	static const char *const bad_switch[] = { "SONDE_KEEP_QUERY", "yes", NULL };
	static const char *const bad_protocol[] = { "OTEL_TRACES_EXPORTER", "console",
						    "OTEL_EXPORTER_OTLP_PROTOCOL", "kafka", NULL };
	static const char *const none[] = { NULL };
	struct sonde_config cfg;
	char *args[] = { "sonde" };
	char *flag_endpoint[] = { "sonde", "--otlp-endpoint", "http://e:4318" };
	char *bad_stats[] = { "sonde", "--stats-file", "/nonexistent-dir/stats.json" };
	char err[256];

	fake_env = bad_url;
	cr_expect_eq(config_parse(&cfg, 1, args, lookup, NULL, err, sizeof(err)), -1);
	cr_expect(strstr(err, "OTEL_EXPORTER_OTLP_ENDPOINT: \"http://[::1") != NULL, "%s", err);
	fake_env = bad_switch;
	cr_expect_eq(config_parse(&cfg, 1, args, lookup, NULL, err, sizeof(err)), -1);
	cr_expect(strstr(err, "SONDE_KEEP_QUERY: \"yes\" is not 1, 0") != NULL, "%s", err);
	fake_env = bad_protocol;
	cr_expect_eq(config_parse(&cfg, 1, args, lookup, NULL, err, sizeof(err)), -1,
		     "a bad protocol is one even when OTLP is not used");
	fake_env = none;
	cr_assert_eq(config_parse(&cfg, 3, flag_endpoint, lookup, NULL, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(cfg.exporters, EXPORTER_OTLP, "an endpoint given as a flag means OTLP too");
	cr_expect_str_eq(cfg.otlp.url, "http://e:4318/v1/traces");
	cr_expect_eq(config_parse(&cfg, 3, bad_stats, lookup, NULL, err, sizeof(err)), -1);
	cr_expect(strstr(err, "--stats-file (SONDE_STATS_FILE): cannot write in "
			      "\"/nonexistent-dir\"") != NULL, "%s", err);
}
