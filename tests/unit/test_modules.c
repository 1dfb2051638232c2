/* Route templating, trace context, service naming, configuration. */
#include "config.h"
#include "harness.h"
#include "ids.h"
#include "procinfo.h"
#include "reorder.h"
#include "route.h"

#include <criterion/criterion.h>
#include <string.h>

static const char *route(const char *path)
{
	static char out[256];

	route_template(path, strlen(path), out, sizeof(out));
	return out;
}

Test(route, templates_identifiers_and_keeps_words)
{
	cr_expect_str_eq(route("/api/v1/operations/12345"), "/api/v1/operations/{id}");
	cr_expect_str_eq(route("/api/v1/data/AAPL/1d"), "/api/v1/data/AAPL/1d");
	cr_expect_str_eq(route("/ops/0b6f1c1e-8d1a-4a3e-9f5e-0123456789ab/status"),
			 "/ops/{id}/status");
	cr_expect_str_eq(route("/blobs/deadbeef01"), "/blobs/{id}");
	cr_expect_str_eq(route("/users/op_12345/x"), "/users/{id}/x");
	cr_expect_str_eq(route("/v2/health"), "/v2/health");
	cr_expect_str_eq(route("/search?q=123"), "/search");
	cr_expect_str_eq(route("/docs/intro#part/2"), "/docs/intro");
	cr_expect_str_eq(route("/a?b#c"), "/a");
	cr_expect_str_eq(route("/a#b?c"), "/a");
	cr_expect_str_eq(route("/items/42/?x=/1"), "/items/{id}/");
	cr_expect_str_eq(route("/"), "/");
	cr_expect_str_eq(route("/a//b/"), "/a//b/");
	cr_expect_str_eq(route("/decaf"), "/decaf");
}

Test(route, truncates_to_the_buffer)
{
	char out[8];

	cr_expect_eq(route_template("/abcdefghijk", 12, out, sizeof(out)), 7);
	cr_expect_str_eq(out, "/abcdef");
}

Test(traceparent, parses_valid_and_rejects_invalid)
{
	struct trace_parent tp;

	cr_assert(traceparent_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 55, &tp));
	cr_expect_eq(tp.trace_id[0], 0x4b);
	cr_expect_eq(tp.span_id[7], 0xb7);
	cr_expect_eq(tp.flags, 1);
	cr_expect(traceparent_parse(" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00 ", 57, &tp));
	cr_expect_not(traceparent_parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01", 55, &tp));
	cr_expect_not(traceparent_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", 55, &tp));
	cr_expect_not(traceparent_parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", 55, &tp));
	cr_expect_not(traceparent_parse("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 55, &tp));
	cr_expect_not(traceparent_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", 57, &tp));
	cr_expect(traceparent_parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", 57, &tp));
	cr_expect_not(traceparent_parse("00-4bf92f35", 11, &tp));
}

Test(ids, random_ids_are_nonzero_and_distinct)
{
	struct idgen gen;
	uint8_t a[16], b[16], zero[16] = { 0 };

	cr_assert_eq(idgen_init(&gen), 0);
	idgen_trace_id(&gen, a);
	idgen_trace_id(&gen, b);
	cr_expect_neq(memcmp(a, zero, 16), 0);
	cr_expect_neq(memcmp(a, b, 16), 0);
}

static void name_of(const char *const *argv, int argc, char *out)
{
	service_name_from_argv((char *const *)argv, argc, out, 128);
}

Test(service_name, from_command_lines)
{
	char out[128];
	const char *uvicorn[] = { "/usr/bin/python3", "-m", "uvicorn", "api:app", "--port", "8000" };
	const char *script[] = { "python3", "-u", "/srv/worker.py", "--id", "1" };
	const char *node[] = { "node", "--require", "x", "server.js" };
	const char *gunicorn[] = { "/usr/bin/gunicorn", "-w", "4", "app:wsgi" };
	const char *nginx[] = { "nginx: worker process" };
	const char *java[] = { "java", "-Xmx1g", "-jar", "/opt/svc/orders.jar" };

	name_of(uvicorn, 6, out);
	cr_expect_str_eq(out, "uvicorn api:app");
	name_of(script, 5, out);
	cr_expect_str_eq(out, "worker");
	name_of(node, 4, out);
	cr_expect_str_eq(out, "server");
	name_of(gunicorn, 4, out);
	cr_expect_str_eq(out, "gunicorn 4");
	name_of(nginx, 1, out);
	cr_expect_str_eq(out, "nginx");
	name_of((const char *[]){ "python3", "-c", "import x; x.run()" }, 3, out);
	cr_expect_str_eq(out, "python3");
	name_of(java, 4, out);
	cr_expect_str_eq(out, "orders");
}

Test(service_name, from_resource_attributes)
{
	char out[64];

	cr_expect(service_name_from_resource_attrs("deployment.environment=prod, service.name=orders",
						   out, sizeof(out)));
	cr_expect_str_eq(out, "orders");
	cr_expect_not(service_name_from_resource_attrs("a=b", out, sizeof(out)));
}

Test(procinfo, environment_names_the_service)
{
	struct harness h;
	struct proc_info *p;
	static const char cmd[] = "python3\0-m\0uvicorn\0api:app\0";
	static const char env[] = "PATH=/bin\0OTEL_SERVICE_NAME=ktrdr-api\0"
				  "OTEL_RESOURCE_ATTRIBUTES=service.name=ignored,team=quant\0";
	static const char env2[] = "OTEL_RESOURCE_ATTRIBUTES=service.name=from-attrs\0";

	h_init(&h, false);
	h_proc(&h, 4242, cmd, sizeof(cmd) - 1, env, sizeof(env) - 1);
	h_proc(&h, 4243, cmd, sizeof(cmd) - 1, env2, sizeof(env2) - 1);
	h_proc(&h, 4244, cmd, sizeof(cmd) - 1, "", 0);
	p = proc_table_get(h.procs, 4242, NULL);
	cr_expect_str_eq(p->service_name, "ktrdr-api");
	cr_expect_str_eq(p->command_line, "python3 -m uvicorn api:app");
	cr_expect_str_eq(p->executable_name, "python3");
	cr_expect_str_eq(p->resource_attrs, "service.name=ignored,team=quant");
	cr_expect_eq(strlen(p->instance_id), 36);
	cr_expect_str_eq(proc_table_get(h.procs, 4243, NULL)->service_name, "from-attrs");
	cr_expect_str_eq(proc_table_get(h.procs, 4244, NULL)->service_name, "uvicorn api:app");
	cr_expect_str_eq(proc_table_get(h.procs, 4245, "curl")->service_name, "curl");
	h_finish(&h);
	h_free(&h);
}

static const char *env_none(const char *name)
{
	(void)name;
	return NULL;
}

static const char *bad_env(const char *name)
{
	return strcmp(name, "OTEL_BSP_MAX_QUEUE_SIZE") == 0 ? "lots" : NULL;
}

static const char *console_env(const char *name)
{
	return strcmp(name, "OTEL_TRACES_EXPORTER") == 0 ? "none" : NULL;
}

static int parse(struct sonde_config *cfg, config_getenv_fn env, int argc, char **argv,
		 char *err)
{
	return config_parse(cfg, argc, argv, env, NULL, err, 256);
}

Test(config, defaults_env_and_flags)
{
	struct sonde_config cfg;
	char err[256];
	char *args[] = { "sonde", "--capture-bytes", "1024", "--exporter", "console" };

	cr_assert_eq(parse(&cfg, (config_getenv_fn)env_none, 1, args, err), 0);
	cr_expect_eq(cfg.exporters, EXPORTER_CONSOLE);
	cr_expect_eq(cfg.capture_bytes, 512);
	cr_expect_eq(cfg.max_queue_size, 2048);
	cr_expect_eq(cfg.schedule_delay_ms, 5000);
	cr_expect_eq(cfg.export_sched, EXPORTER_SCHED_IDLE);
	cr_assert_eq(parse(&cfg, (config_getenv_fn)console_env, 1, args, err), 0);
	cr_expect_eq(cfg.exporters, EXPORTER_NONE);
	cr_assert_eq(parse(&cfg, (config_getenv_fn)console_env, 5, args, err), 0);
	cr_expect_eq(cfg.exporters, EXPORTER_CONSOLE);
	cr_expect_eq(cfg.capture_bytes, 1024);
	char *exclude[] = { "sonde", "--exclude-comm", "wrk,curl" };
	cr_assert_eq(parse(&cfg, (config_getenv_fn)env_none, 3, exclude, err), 0);
	cr_expect_eq(cfg.excluded_count, 2);
	cr_expect_str_eq(cfg.excluded_comms[1], "curl");
	char *sched[] = { "sonde", "--export-sched", "normal" };
	cr_assert_eq(parse(&cfg, (config_getenv_fn)env_none, 3, sched, err), 0);
	cr_expect_eq(cfg.export_sched, EXPORTER_SCHED_NORMAL);
}

Test(config, bad_values_name_their_source)
{
	struct sonde_config cfg;
	char err[256];
	char *big[] = { "sonde", "--capture-bytes", "999999" };
	char *odd[] = { "sonde", "--ringbuf-bytes", "100000" };
	char *unknown[] = { "sonde", "--frobnicate" };

	cr_expect_eq(parse(&cfg, (config_getenv_fn)bad_env, 1, big, err), -1);
	cr_expect(strstr(err, "OTEL_BSP_MAX_QUEUE_SIZE"), "%s", err);
	cr_expect_eq(parse(&cfg, (config_getenv_fn)env_none, 3, big, err), -1);
	cr_expect(strstr(err, "--capture-bytes"), "%s", err);
	cr_expect_eq(parse(&cfg, (config_getenv_fn)env_none, 3, odd, err), -1);
	cr_expect(strstr(err, "power of two"), "%s", err);
	cr_expect_eq(parse(&cfg, (config_getenv_fn)env_none, 2, unknown, err), -1);
	cr_expect(strstr(err, "--frobnicate"), "%s", err);
	char *long_name[] = { "sonde", "--exclude-comm", "wrk,a-name-far-too-long" };
	cr_expect_eq(parse(&cfg, (config_getenv_fn)env_none, 3, long_name, err), -1);
	cr_expect(strstr(err, "a-name-far-too-long"), "%s", err);
	char *sched[] = { "sonde", "--export-sched", "realtime" };
	cr_expect_eq(parse(&cfg, (config_getenv_fn)env_none, 3, sched, err), -1);
	cr_expect(strstr(err, "--export-sched"), "%s", err);
}

struct delivered {
	uint64_t pos[32], len[32];
	uint32_t captured[32];
	int n;
};

static void record(void *owner, int tag, const struct reorder_piece *p)
{
	struct delivered *d = owner;

	(void)tag;
	d->pos[d->n] = p->pos;
	d->len[d->n] = p->len;
	d->captured[d->n++] = p->captured;
}

Test(reorder, holds_fills_and_reports_gaps)
{
	struct reorder r = { 0 };
	struct reorder_pool pool = { 0 };
	struct reorder_stats stats = { 0 };
	struct delivered d = { 0 };
	struct reorder_ctx ctx = { .pool = &pool, .stats = &stats, .deliver = record, .owner = &d };
	uint8_t bytes[10] = "0123456789";
	struct reorder_piece a = { .pos = 0, .len = 4, .captured = 4, .data = bytes, .ts = 1 };
	struct reorder_piece b = { .pos = 4, .len = 3, .captured = 3, .data = bytes, .ts = 2 };
	struct reorder_piece c = { .pos = 10, .len = 5, .captured = 2, .data = bytes, .ts = 3 };
	struct reorder_piece dup = { .pos = 2, .len = 2, .captured = 2, .data = bytes, .ts = 4 };

	reorder_push(&r, &ctx, &b);
	cr_expect_eq(d.n, 0);
	reorder_push(&r, &ctx, &a);
	cr_expect_eq(d.n, 2);
	cr_expect_eq(d.pos[1], 4);
	reorder_push(&r, &ctx, &c);
	cr_expect_eq(d.n, 2);
	reorder_flush(&r, &ctx);
	cr_assert_eq(d.n, 4);
	cr_expect_eq(d.pos[2], 7);
	cr_expect_eq(d.len[2], 3);
	cr_expect_eq(d.captured[2], 0);
	cr_expect_eq(d.pos[3], 10);
	cr_expect_eq(stats.gaps, 1);
	reorder_push(&r, &ctx, &dup);
	cr_expect_eq(stats.stale, 1);
	cr_expect_eq(r.next_pos, 15);
	reorder_discard(&r, &pool);
	reorder_pool_free(&pool);
}
