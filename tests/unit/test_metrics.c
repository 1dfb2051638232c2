/* RED metrics: bucketing, series per attribute set, the overflow series,
 * label translation and escaping, and the exposition text. */
#include "http1_proto.h"
#include "metrics.h"
#include "procinfo.h"
#include "prometheus.h"
#include "semconv.h"
#include "sonde_events.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

static struct proc_info api = { .refs = 1, .pid = 7, .service_name = "api" };

/* A SERVER span of the given route and status, `ms` long. */
static void record(struct metrics *m, struct proc_info *proc, const char *route,
		   uint16_t status, uint64_t ms)
{
	struct span span;
	struct http1_span *f = (struct http1_span *)span.proto_data;
	struct exchange_summary x = { .span = &span, .start_ns = 1000,
				      .end_ns = 1000 + ms * 1000000 };

	memset(&span, 0, sizeof(span));
	span.proto = SONDE_PROTO_HTTP1;
	span.kind = SPAN_KIND_SERVER;
	span.proc = proc;
	f->method = "GET";
	f->protocol_version = "1.1";
	strcpy(f->route, route);
	f->status_code = status;
	if (status >= 500)
		strcpy(span.error_type, "500");
	metrics_record(m, &x);
}

static char *exposition(struct metrics *m)
{
	struct bytes out = { 0 };
	struct prom_server *p = prom_new(m);

	cr_assert_not_null(p);
	cr_assert_eq(prom_write(p, &out), 0);
	prom_stop(p);
	cr_assert_eq(bytes_reserve(&out, 1), 0);
	out.data[out.used] = '\0';
	return (char *)out.data;
}

Test(metrics, buckets_follow_the_conventions_bounds)
{
	cr_expect_eq(metrics_bucket_of(0), 0);
	cr_expect_eq(metrics_bucket_of(0.005), 0, "a bound is inclusive");
	cr_expect_eq(metrics_bucket_of(0.0051), 1);
	cr_expect_eq(metrics_bucket_of(0.3), 7);
	cr_expect_eq(metrics_bucket_of(10), 13);
	cr_expect_eq(metrics_bucket_of(10.5), 14, "+Inf");
}

Test(metrics, one_series_per_service_and_attributes_with_cumulative_buckets)
{
	struct metrics_opts opts = { 0 };
	struct metrics *m = metrics_new(&opts);
	char *text;
	const char *labels = "service_name=\"api\",http_request_method=\"GET\",url_scheme=\"http\","
			     "network_protocol_version=\"1.1\",http_response_status_code=\"200\","
			     "http_route=\"/items/{id}\"";
	char line[512];

	cr_assert_not_null(m);
	record(m, &api, "/items/{id}", 200, 3);
	record(m, &api, "/items/{id}", 200, 30);
	record(m, &api, "/items/{id}", 200, 3000);
	record(m, &api, "/health", 503, 1);
	text = exposition(m);
	cr_expect_not_null(strstr(text, "# TYPE http_server_request_duration_seconds histogram\n"));
	snprintf(line, sizeof(line), "http_server_request_duration_seconds_bucket{%s,le=\"0.005\"} 1\n",
		 labels);
	cr_expect_not_null(strstr(text, line), "%s", text);
	snprintf(line, sizeof(line), "http_server_request_duration_seconds_bucket{%s,le=\"0.05\"} 2\n",
		 labels);
	cr_expect_not_null(strstr(text, line));
	snprintf(line, sizeof(line), "http_server_request_duration_seconds_bucket{%s,le=\"+Inf\"} 3\n",
		 labels);
	cr_expect_not_null(strstr(text, line));
	snprintf(line, sizeof(line), "http_server_request_duration_seconds_count{%s} 3\n", labels);
	cr_expect_not_null(strstr(text, line));
	snprintf(line, sizeof(line), "http_server_request_duration_seconds_sum{%s} 3.033\n", labels);
	cr_expect_not_null(strstr(text, line));
	cr_expect_not_null(strstr(text, "http_response_status_code=\"503\",http_route=\"/health\","
				       "error_type=\"500\"} 1\n"));
	free(text);
	metrics_free(m);
}

Test(metrics, series_past_the_limit_go_to_the_overflow_series)
{
	struct metrics_opts opts = { .cardinality_limit = 2 };
	struct metrics *m = metrics_new(&opts);
	struct metrics_stats stats;
	char *text;

	record(m, &api, "/a", 200, 1);
	record(m, &api, "/b", 200, 1);
	record(m, &api, "/c", 200, 1);
	record(m, &api, "/d", 200, 1);
	record(m, &api, "/a", 200, 1);
	text = exposition(m);
	cr_expect_not_null(strstr(text, "http_server_request_duration_seconds_count"
				       "{otel_metric_overflow=\"true\"} 2\n"), "%s", text);
	cr_expect_null(strstr(text, "http_route=\"/c\""));
	metrics_get_stats(m, &stats);
	cr_expect_eq(stats.overflow, 2);
	cr_expect_eq(stats.series, 3, "two and the overflow series");
	free(text);
	metrics_free(m);
}

/* Consecutive measurements are first compared with the series counted in
 * last: a value that extends the last one's, or an attribute more (an
 * error), is another series. */
Test(metrics, a_measurement_like_the_last_but_longer_is_another_series)
{
	struct metrics_opts opts = { 0 };
	struct metrics *m = metrics_new(&opts);
	struct metrics_stats stats;
	char *text;

	record(m, &api, "/a", 200, 1);
	record(m, &api, "/ab", 200, 1);
	record(m, &api, "/a", 200, 1);
	record(m, &api, "/a", 500, 1);
	record(m, &api, "/a", 200, 1);
	text = exposition(m);
	cr_expect_not_null(strstr(text, "http_route=\"/a\"} 3\n"), "%s", text);
	cr_expect_not_null(strstr(text, "http_route=\"/ab\"} 1\n"));
	cr_expect_not_null(strstr(text, "http_route=\"/a\",error_type=\"500\"} 1\n"));
	metrics_get_stats(m, &stats);
	cr_expect_eq(stats.series, 3);
	free(text);
	metrics_free(m);
}

Test(metrics, label_values_are_escaped)
{
	struct proc_info odd = { .refs = 1, .pid = 8, .service_name = "a\"b\\c\nd" };
	struct metrics_opts opts = { 0 };
	struct metrics *m = metrics_new(&opts);
	char *text;

	record(m, &odd, "/x", 200, 1);
	text = exposition(m);
	cr_expect_not_null(strstr(text, "service_name=\"a\\\"b\\\\c\\nd\""), "%s", text);
	free(text);
	metrics_free(m);
}

Test(metrics, own_counters_are_sonde_metrics_with_help)
{
	static const struct counter_desc descs[] = {
		{ "events", "ring-buffer records read", COUNTER_TOTAL, 0 },
		{ "spans_held", "finished spans waiting", COUNTER_GAUGE, sizeof(uint64_t) },
	};
	uint64_t values[2] = { 42, 3 };
	struct counter_group group = { descs, 2, values };
	struct metrics_opts opts = { 0 };
	struct metrics *m = metrics_new(&opts);
	char *text;

	metrics_set_self(m, &group, 1);
	text = exposition(m);
	cr_expect_not_null(strstr(text, "# HELP sonde_events_total ring-buffer records read\n"
				       "# TYPE sonde_events_total counter\nsonde_events_total 42\n"));
	cr_expect_not_null(strstr(text, "# TYPE sonde_spans_held gauge\nsonde_spans_held 3\n"));
	cr_expect_not_null(strstr(text, "# TYPE process_resident_memory_bytes gauge\n"));
	free(text);
	metrics_free(m);
}

static void method_attribute(const void *exchange, struct metric_attrs *out)
{
	metric_attr_str(out, "http.request.method", exchange);
	metric_attr_str(out, "url.scheme", "http");
}

Test(metrics, requests_in_progress_are_a_gauge_per_service_and_method)
{
	static const struct proto_ops ops = { .active_attributes = method_attribute };
	struct request_began get = { &api, &ops, "GET" }, post = { &api, &ops, "POST" };
	struct metrics_opts opts = { 0 };
	struct metrics *m = metrics_new(&opts);
	void *a, *b, *c;
	char *text;

	a = metrics_request_began(m, &get);
	b = metrics_request_began(m, &get);
	c = metrics_request_began(m, &post);
	cr_assert(a && b && c);
	cr_expect_eq(a, b, "one series per attribute set");
	metrics_request_ended(m, a);
	metrics_request_ended(m, c);
	text = exposition(m);
	cr_expect_not_null(strstr(text, "# TYPE http_server_active_requests gauge\n"), "%s", text);
	cr_expect_not_null(strstr(text, "http_server_active_requests{service_name=\"api\","
				       "http_request_method=\"GET\",url_scheme=\"http\"} 1\n"));
	cr_expect_not_null(strstr(text, "http_server_active_requests{service_name=\"api\","
				       "http_request_method=\"POST\",url_scheme=\"http\"} 0\n"));
	free(text);
	metrics_free(m);
}

/* A method stated by one protocol as a constant and by another as a
 * copy of the same text is one attribute value: one series. */
static void method_copied(const void *exchange, struct metric_attrs *out)
{
	metric_attr_str(out, "http.request.method", exchange);
}

static void method_constant(const void *exchange, struct metric_attrs *out)
{
	metric_attr_const(out, "http.request.method", "GET");
}

Test(metrics, a_constant_and_a_copy_of_its_text_are_one_series)
{
	static const struct proto_ops copied = { .active_attributes = method_copied };
	static const struct proto_ops constant = { .active_attributes = method_constant };
	char text_a[] = "GET", text_b[] = "GET";
	struct request_began by_copy = { &api, &copied, text_a },
			     by_other_copy = { &api, &copied, text_b },
			     by_constant = { &api, &constant, NULL };
	struct metrics_opts opts = { 0 };
	struct metrics *m = metrics_new(&opts);
	struct metrics_stats stats;
	void *a, *b, *c, *d;

	a = metrics_request_began(m, &by_constant);
	b = metrics_request_began(m, &by_copy);
	c = metrics_request_began(m, &by_other_copy);
	d = metrics_request_began(m, &by_constant);
	cr_assert(a && b && c && d);
	cr_expect(a == b && b == c && c == d);
	metrics_get_stats(m, &stats);
	cr_expect_eq(stats.series, 1);
	metrics_free(m);
}

Test(metrics, target_info_names_each_service_once)
{
	struct proc_info worker = { .refs = 1, .pid = 9, .service_name = "worker" };
	struct metrics_opts opts = { 0 };
	struct metrics *m = metrics_new(&opts);
	char *text, *first;

	record(m, &api, "/a", 200, 1);
	record(m, &api, "/b", 200, 1);
	record(m, &worker, "/a", 200, 1);
	text = exposition(m);
	cr_expect_not_null(strstr(text, "# TYPE target_info gauge\n"));
	first = strstr(text, "target_info{service_name=\"api\",host_name=");
	cr_expect_not_null(first, "%s", text);
	cr_expect_null(strstr(first + 1, "target_info{service_name=\"api\""));
	cr_expect_not_null(strstr(text, "target_info{service_name=\"worker\","));
	cr_expect_not_null(strstr(text, "telemetry_sdk_name=\"sonde\""));
	free(text);
	metrics_free(m);
}
