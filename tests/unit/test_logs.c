/* Logs: lines cut and joined into records (splitting, joining across
 * writes, tracebacks, truncation), and what a line says (severity, JSON
 * and logfmt fields), and redaction. Records go through the real log
 * exporter to its console format. */
#include "exporter.h"
#include "linker.h"
#include "log_export.h"
#include "logline.h"
#include "logs.h"
#include "semconv.h"

#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- what a line says ------------------------------------------------------- */

static struct logline line;

static void parse(const char *text)
{
	logline_parse(text, strlen(text), &line);
}

static const char *body(void)
{
	static char out[LOGLINE_TEXT_MAX];

	snprintf(out, sizeof(out), "%.*s", (int)line.body_len, line.body);
	return out;
}

static const struct logline_field *field(const char *key)
{
	for (size_t i = 0; i < line.nfields; i++)
		if (strcmp(line.field[i].key, key) == 0)
			return &line.field[i];
	return NULL;
}

Test(logline, severity_from_the_usual_places)
{
	parse("WARNING:root:disk almost full");
	cr_expect_eq(line.severity, SEVERITY_WARN);
	cr_expect_str_eq(line.severity_text, "WARNING");
	parse("INFO:     127.0.0.1:5000 - \"GET / HTTP/1.1\" 200 OK");
	cr_expect_eq(line.severity, SEVERITY_INFO);
	parse("2026-12-05 10:00:00,123 - api - ERROR - it broke");
	cr_expect_eq(line.severity, SEVERITY_ERROR);
	parse("[CRITICAL] gone");
	cr_expect_eq(line.severity, SEVERITY_FATAL);
	parse("<4>kernel says hi");
	cr_expect_eq(line.severity, SEVERITY_WARN);
	cr_expect_str_eq(body(), "kernel says hi");
	parse("an error occurred while reading");
	cr_expect_eq(line.severity, SEVERITY_UNSET, "a lower-case word in a sentence says nothing");
	cr_expect_str_eq(body(), "an error occurred while reading");
}

Test(logline, json_lines_are_structured)
{
	parse("{\"level\":\"error\",\"message\":\"payment failed\",\"user\":\"ann\",\"attempt\":3,"
	      "\"ratio\":0.5,\"ok\":false,\"ctx\":{\"a\":1}}");
	cr_expect_str_eq(body(), "payment failed");
	cr_expect_eq(line.severity, SEVERITY_ERROR);
	cr_expect_str_eq(line.severity_text, "error");
	cr_assert_not_null(field("user"));
	cr_expect_str_eq(field("user")->value, "ann");
	cr_expect_eq(field("attempt")->type, LOGV_INT);
	cr_expect_eq(field("ratio")->type, LOGV_DOUBLE);
	cr_expect_eq(field("ok")->type, LOGV_BOOL);
	cr_expect_str_eq(field("ctx")->value, "{\"a\":1}");
	cr_expect_null(field("message"));
	cr_expect_null(field("level"));
	parse("{\"levelname\": \"WARNING\", \"msg\": \"m\"}");
	cr_expect_eq(line.severity, SEVERITY_WARN);
	cr_expect_str_eq(body(), "m");
	parse("{not json");
	cr_expect_str_eq(body(), "{not json");
	cr_expect_eq(line.nfields, 0);
}

Test(logline, logfmt_lines_are_structured)
{
	parse("level=warn msg=\"slow query\" duration_ms=812 table=orders");
	cr_expect_str_eq(body(), "slow query");
	cr_expect_eq(line.severity, SEVERITY_WARN);
	cr_expect_str_eq(field("duration_ms")->value, "812");
	cr_expect_str_eq(field("table")->value, "orders");
	parse("request_id=abc handling /x");
	cr_expect_eq(line.nfields, 0, "words between the pairs: not logfmt");
	cr_expect_str_eq(body(), "request_id=abc handling /x");
}

Test(logline, redaction_replaces_every_match)
{
	char err[256], out[256];
	struct log_redaction *r = log_redaction_new("token=[a-z0-9]+;;[0-9]{4}-[0-9]{4}", err,
						    sizeof(err));
	const char *text = "a token=abc1 and token=zz, card 1234-5678!";

	cr_assert_not_null(r, "%s", err);
	log_redact(r, text, strlen(text), out, sizeof(out));
	cr_expect_str_eq(out, "a [REDACTED] and [REDACTED], card [REDACTED]!");
	log_redact(r, "nothing here", 12, out, sizeof(out));
	cr_expect_str_eq(out, "nothing here");
	log_redaction_free(r);
	cr_expect_null(log_redaction_new("a(b", err, sizeof(err)));
	cr_expect(strstr(err, "SONDE_LOGS_REDACT: \"a(b\"") != NULL, "%s", err);
}

/* ---- records from writes ---------------------------------------------------------- */

struct fixture {
	char *out_buf;
	size_t out_len;
	FILE *out;
	struct exporter *spans;
	struct linker *linker;
	struct log_export *export;
	struct proc_table *procs;
	struct wallclock clock;
	struct logs *logs;
	uint64_t ts;
	cJSON *records[64];
	int n;
};

static void setup(struct fixture *f)
{
	struct exporter_opts eopts = { .sinks = EXPORTER_NONE, .max_queue_size = 16,
				       .max_export_batch = 16 };
	struct linker_opts lopts = { 0 };
	struct log_export_opts xopts = { .sinks = LOG_SINK_CONSOLE, .max_queue_size = 64,
					 .max_export_batch = 64, .schedule_delay_ms = 10,
					 .export_timeout_ms = 1000 };
	struct logs_opts opts = { 0 };
	char err[128];

	memset(f, 0, sizeof(*f));
	f->out = open_memstream(&f->out_buf, &f->out_len);
	xopts.console = f->out;
	cr_assert_eq(exporter_new(&f->spans, &eopts, err, sizeof(err)), 0);
	f->linker = linker_new(&lopts, f->spans);
	cr_assert_eq(log_export_new(&f->export, &xopts, err, sizeof(err)), 0, "%s", err);
	f->procs = proc_table_new("/nonexistent", "testhost");
	f->logs = logs_new(&opts, f->linker, f->export, f->procs, &f->clock);
	cr_assert(f->linker && f->procs && f->logs);
	f->ts = 1000000000ull;
}

static void write_(struct fixture *f, int fd, uint32_t tid, const char *text, uint32_t moved)
{
	static struct sonde_data_event ev;
	size_t len = strlen(text);

	memset(&ev.hdr, 0, sizeof(ev.hdr));
	ev.hdr.type = SONDE_EV_LOG;
	ev.hdr.tgid = 4242;
	ev.hdr.tid = tid;
	ev.hdr.fd = fd;
	ev.hdr.ts = f->ts;
	ev.len = moved ? moved : (uint32_t)len;
	ev.captured = (uint16_t)len;
	memcpy(ev.data, text, len);
	logs_write(f->logs, &ev);
	f->ts += 1000000; /* 1 ms */
}

static void finish(struct fixture *f)
{
	char *line, *save = NULL;

	logs_tick(f->logs, UINT64_MAX);
	log_export_stop(f->export);
	fflush(f->out);
	for (line = strtok_r(f->out_buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		cr_assert_lt(f->n, 64);
		f->records[f->n] = cJSON_Parse(line);
		cr_assert_not_null(f->records[f->n], "%s", line);
		f->n++;
	}
}

static void teardown(struct fixture *f)
{
	for (int i = 0; i < f->n; i++)
		cJSON_Delete(f->records[i]);
	logs_free(f->logs);
	log_export_free(f->export);
	linker_free(f->linker);
	exporter_free(f->spans);
	proc_table_free(f->procs);
	fclose(f->out);
	free(f->out_buf);
}

static const char *body_of(struct fixture *f, int i)
{
	return cJSON_GetObjectItem(f->records[i], "body")->valuestring;
}

static const char *stream_of(struct fixture *f, int i)
{
	cJSON *attrs = cJSON_GetObjectItem(f->records[i], "attributes");

	return cJSON_GetObjectItem(attrs, "log.iostream")->valuestring;
}

Test(logs, several_lines_in_one_write_are_several_records)
{
	struct fixture f;

	setup(&f);
	write_(&f, 1, 1, "one\ntwo\n\nthree\n", 0);
	finish(&f);
	cr_assert_eq(f.n, 3, "the empty line is no record");
	cr_expect_str_eq(body_of(&f, 0), "one");
	cr_expect_str_eq(body_of(&f, 1), "two");
	cr_expect_str_eq(body_of(&f, 2), "three");
	cr_expect_str_eq(stream_of(&f, 0), "stdout");
	teardown(&f);
}

Test(logs, a_line_over_several_writes_is_joined)
{
	struct fixture f;

	setup(&f);
	write_(&f, 2, 1, "par", 0);
	write_(&f, 2, 1, "tial li", 0);
	write_(&f, 2, 1, "ne\nnext\n", 0);
	finish(&f);
	cr_assert_eq(f.n, 2);
	cr_expect_str_eq(body_of(&f, 0), "partial line");
	cr_expect_str_eq(body_of(&f, 1), "next");
	cr_expect_str_eq(stream_of(&f, 0), "stderr");
	teardown(&f);
}

Test(logs, a_traceback_stays_one_record_in_one_write_or_line_by_line)
{
	static const char *const tb[] = {
		"Traceback (most recent call last):\n", "  File \"a.py\", line 1, in <module>\n",
		"    boom()\n", "ValueError: boom\n",
	};
	struct fixture f;

	setup(&f);
	write_(&f, 2, 1, "ERROR:root:failed\nTraceback (most recent call last):\n"
			 "  File \"a.py\", line 1, in <module>\n    boom()\nValueError: boom\n", 0);
	write_(&f, 2, 1, "after\n", 0);
	for (int i = 0; i < 4; i++)
		write_(&f, 2, 7, tb[i], 0);
	write_(&f, 2, 7, "later\n", 0);
	finish(&f);
	cr_assert_eq(f.n, 4);
	cr_expect_str_eq(body_of(&f, 0), "ERROR:root:failed\nTraceback (most recent call last):\n"
					 "  File \"a.py\", line 1, in <module>\n    boom()\n"
					 "ValueError: boom");
	cr_expect_str_eq(body_of(&f, 1), "after");
	cr_expect_str_eq(body_of(&f, 2), "Traceback (most recent call last):\n"
					 "  File \"a.py\", line 1, in <module>\n    boom()\n"
					 "ValueError: boom");
	cr_expect_str_eq(body_of(&f, 3), "later");
	teardown(&f);
}

/* Continuation lines join the record of the thread that wrote them, never
 * another thread's. */
Test(logs, another_threads_indented_line_starts_its_own_record)
{
	struct fixture f;

	setup(&f);
	write_(&f, 1, 1, "first\n", 0);
	write_(&f, 1, 1, "  more of first\n", 0);
	write_(&f, 1, 2, "  by thread 2\n", 0);
	write_(&f, 1, 1, "  by thread 1 again\n", 0);
	finish(&f);
	cr_assert_eq(f.n, 3);
	cr_expect_str_eq(body_of(&f, 0), "first\n  more of first");
	cr_expect_str_eq(body_of(&f, 1), "  by thread 2");
	cr_expect_str_eq(body_of(&f, 2), "  by thread 1 again");
	teardown(&f);
}

Test(logs, a_write_past_the_capture_ends_its_record_marked)
{
	struct fixture f;
	cJSON *attrs;

	setup(&f);
	write_(&f, 1, 1, "cut here", 5000);
	write_(&f, 1, 1, "whole\n", 0);
	finish(&f);
	cr_assert_eq(f.n, 2);
	cr_expect_str_eq(body_of(&f, 0), "cut here");
	attrs = cJSON_GetObjectItem(f.records[0], "attributes");
	cr_expect(cJSON_IsTrue(cJSON_GetObjectItem(attrs, "sonde.log.truncated")));
	cr_expect_str_eq(body_of(&f, 1), "whole");
	teardown(&f);
}

Test(logs, lines_outside_any_request_have_no_ids)
{
	struct fixture f;
	struct logs_stats stats;

	setup(&f);
	write_(&f, 1, 1, "{\"level\":\"info\",\"message\":\"alone\"}\n", 0);
	finish(&f);
	cr_assert_eq(f.n, 1);
	cr_expect_str_eq(body_of(&f, 0), "alone");
	cr_expect_str_eq(cJSON_GetObjectItem(f.records[0], "trace_id")->valuestring,
			 "0x00000000000000000000000000000000");
	logs_get_stats(f.logs, &stats);
	cr_expect_eq(stats.without_span, 1);
	cr_expect_eq(stats.with_span, 0);
	teardown(&f);
}
