/* libFuzzer target: arbitrary sequences of kernel records for a few
 * connections, through reassembly, HTTP/1.x parsing, pairing and span
 * building (exporter "none": spans are built, counted and discarded).
 *
 * Input: a sequence of operations, each
 *   [op][conn][dir][len lo][len hi][captured lo][captured hi][pos skew] data...
 * op % 6: 0-2 data, 3 open, 4 close (reason from dir), 5 process exit.
 * An open's role byte also picks the connection's protocol (bits 3 and
 * up, over every registered one), so every parser is driven. */
#include "clock.h"
#include "exporter.h"
#include "log.h"
#include "logline.h"
#include "metrics.h"
#include "prometheus.h"
#include "procinfo.h"
#include "semconv.h"
#include "sonde_events.h"
#include "tracker.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CONNS 3

struct fuzz_conn {
	uint64_t gen;
	uint64_t pos[2];
	uint8_t proto;
};

static struct sonde_data_event event;

static void send_data(struct tracker *t, struct fuzz_conn *c, int idx, const uint8_t *op,
		      const uint8_t *data, size_t avail, uint64_t now)
{
	int dir = op[2] & 1;
	uint32_t len = (uint32_t)(op[3] | op[4] << 8);
	uint32_t captured = (uint32_t)(op[5] | op[6] << 8);

	if (captured > avail)
		captured = (uint32_t)avail;
	if (captured > SONDE_CAPTURE_MAX)
		captured = SONDE_CAPTURE_MAX;
	if (len < captured)
		len = captured;
	memset(&event.hdr, 0, sizeof(event.hdr));
	event.hdr.type = SONDE_EV_DATA;
	event.hdr.tgid = 1000 + (uint32_t)idx;
	event.hdr.tid = event.hdr.tgid;
	event.hdr.fd = 3;
	event.hdr.conn_gen = c->gen;
	event.hdr.ts = now;
	/* A skew replays or skips bytes: reordering, overlap and gaps. */
	event.pos = c->pos[dir] + (int8_t)op[7];
	if ((int8_t)op[7] < 0 && c->pos[dir] < (uint64_t)(-(int8_t)op[7]))
		event.pos = 0;
	event.len = len;
	event.captured = (uint16_t)captured;
	event.tail = (uint16_t)(len - captured > SONDE_TAIL_MAX + (op[2] >> 4) ? op[2] >> 4 : 0);
	if (event.tail > avail - captured)
		event.tail = 0;
	event.dir = (uint8_t)dir;
	event.proto = c->proto ? c->proto : SONDE_PROTO_HTTP1;
	memcpy(event.data, data, captured + event.tail);
	c->pos[dir] = event.pos + len;
	tracker_handle(t, &event, SONDE_DATA_EVENT_SIZE(captured + event.tail));
}

static void send_conn(struct tracker *t, struct fuzz_conn *c, int idx, uint8_t role, uint64_t now)
{
	struct sonde_conn_event ev = { 0 };

	c->gen = now;
	c->pos[0] = c->pos[1] = 0;
	c->proto = (uint8_t)(SONDE_PROTO_HTTP1 + (role >> 3) % (SONDE_PROTO_COUNT - 1));
	ev.hdr.type = SONDE_EV_CONN;
	ev.hdr.tgid = 1000 + (uint32_t)idx;
	ev.hdr.fd = 3;
	ev.hdr.conn_gen = c->gen;
	ev.hdr.ts = now;
	ev.role = role % 3;
	ev.proto = c->proto;
	ev.family = (role & 4) ? 10 : 2;
	tracker_handle(t, &ev, sizeof(ev));
}

static void send_close(struct tracker *t, struct fuzz_conn *c, int idx, uint8_t reason, uint64_t now)
{
	struct sonde_close_event ev = { 0 };

	ev.hdr.type = SONDE_EV_CLOSE;
	ev.hdr.tgid = 1000 + (uint32_t)idx;
	ev.hdr.fd = 3;
	ev.hdr.conn_gen = c->gen;
	ev.hdr.ts = now;
	ev.reason = (uint8_t)(1 + reason % 3);
	tracker_handle(t, &ev, sizeof(ev));
}

/* Every summary is counted in the metrics, as the agent does. */
static void on_exchange(void *ctx, const struct exchange_summary *x)
{
	char name[128];

	span_format_name(x->span, name, sizeof(name));
	metrics_record(ctx, x);
}

static void count_str(void *ctx, const char *key, const char *value)
{
	(*(size_t *)ctx) += strlen(key) + strlen(value);
}

static void count_i64(void *ctx, const char *key, int64_t value)
{
	(*(size_t *)ctx) += strlen(key) + (value != 0);
}

static void count_bool(void *ctx, const char *key, bool value)
{
	(*(size_t *)ctx) += strlen(key) + value;
}

/* Whatever bytes a process writes to stdout: what the line says, its
 * attributes, and its redaction. */
static void parse_as_log_line(const uint8_t *data, size_t len)
{
	static struct logline line;
	static struct log_redaction *redaction;
	static char out[LOGLINE_TEXT_MAX];
	char err[128];
	size_t count = 0;
	struct attr_sink sink = { count_str, count_i64, count_bool, &count };

	if (!redaction && !(redaction = log_redaction_new("[0-9]{3,};;token=[^ ]*", err,
							    sizeof(err))))
		abort();
	logline_parse((const char *)data, len, &line);
	if (line.body_len > len + LOGLINE_TEXT_MAX || line.nfields > LOGLINE_FIELDS_MAX)
		abort();
	logline_attributes(&line, &sink);
	log_redact(redaction, line.body, line.body_len, out, sizeof(out));
}

/* Every request that began has ended, whichever way, once the tracker is
 * gone: none is still counted as in progress. */
static void check_no_request_active(struct metrics *metrics)
{
	struct metric_points points = { 0 };

	if (metrics_collect(metrics, METRIC_HTTP_SERVER_ACTIVE, &points))
		abort();
	for (size_t i = 0; i < points.n; i++)
		if (points.point[i].value != 0)
			abort();
	metric_points_free(&points);
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size)
{
	struct metrics_opts mopts = { .cardinality_limit = 4 };
	struct metrics *metrics = metrics_new(&mopts);
	struct bytes text = { 0 };
	struct prom_server *prom;
	struct exporter_opts eopts = { .sinks = EXPORTER_NONE, .max_queue_size = 16,
				       .max_export_batch = 16 };
	struct tracker_opts topts = { .proto.keep_query = size & 1, .max_pending = 8,
				     .conn_buckets_log2 = 4, .on_exchange = on_exchange,
				     .on_request_began = metrics_request_began,
				     .on_request_ended = metrics_request_ended,
				     .observer_ctx = metrics };
	struct fuzz_conn conns[CONNS] = { 0 };
	struct wallclock clock = { 0 };
	struct exporter *exp;
	struct proc_table *procs = proc_table_new("/nonexistent", "fuzz");
	struct tracker *t;
	uint64_t now = 1000;
	size_t off = 0;

	log_set_level(LOG_ERROR);
	if (!procs || !metrics || exporter_new(&exp, &eopts, NULL, 0))
		abort();
	t = tracker_new(&topts, exp, procs, &clock);
	while (off + 8 <= size) {
		const uint8_t *op = in + off;
		int idx = op[1] % CONNS;
		size_t avail = size - off - 8;
		uint32_t captured = (uint32_t)(op[5] | op[6] << 8);

		now += 1 + op[0];
		switch (op[0] % 6) {
		case 3:
			send_conn(t, &conns[idx], idx, op[2], now);
			break;
		case 4:
			send_close(t, &conns[idx], idx, op[2], now);
			break;
		case 5:
			tracker_tick(t, now);
			break;
		default:
			send_data(t, &conns[idx], idx, op, in + off + 8, avail, now);
			parse_as_log_line(in + off + 8, captured < avail ? captured : avail);
			off += captured < avail ? captured : avail;
		}
		off += 8;
	}
	tracker_tick(t, now);
	tracker_tick(t, UINT64_MAX);
	tracker_free(t);
	check_no_request_active(metrics);
	prom = prom_new(metrics);
	if (!prom || prom_write(prom, &text))
		abort();
	prom_stop(prom);
	bytes_free(&text);
	metrics_free(metrics);
	exporter_free(exp);
	proc_table_free(procs);
	return 0;
}
