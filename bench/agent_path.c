/* The agent's per-request cost with no kernel and no I/O: synthetic ring
 * records of a keep-alive server and client exchange, through the real
 * tracker into the "none" exporter, ticked as the agent ticks it after a
 * drain, so that its pools recycle as in steady state. Prints ns per
 * request (both sides). With "metrics", the exchanges are counted as the
 * agent counts them with a metrics exporter on.
 * Build: make build/agent_path; run: build/agent_path [requests [metrics]] */
#include "clock.h"
#include "exporter.h"
#include "log.h"
#include "metrics.h"
#include "procinfo.h"
#include "sonde_events.h"
#include "tracker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char request[] = "GET /api/v1/items/12345 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
			      "User-Agent: wrk\r\n\r\n";
static const char response[] = "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 21 Nov "
			       "2026 06:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n"
			       "Connection: keep-alive\r\n\r\nhello\n";

/* 100k requests/s, both ends: 4 records per 10 us. */
#define RECORD_GAP_NS 2500
#define REQUESTS_PER_DRAIN 64

static struct sonde_data_event ev;

/* One record at *ts, which then moves on by RECORD_GAP_NS. */
static void send(struct tracker *t, uint32_t tgid, uint8_t dir, uint64_t *pos, const char *data,
		 size_t len, uint64_t *ts)
{
	ev.hdr.type = SONDE_EV_DATA;
	ev.hdr.tgid = tgid;
	ev.hdr.tid = tgid;
	ev.hdr.fd = 5;
	ev.hdr.conn_gen = 1;
	ev.hdr.ts = *ts;
	ev.pos = *pos;
	ev.len = (uint32_t)len;
	ev.captured = (uint16_t)len;
	ev.dir = dir;
	ev.proto = SONDE_PROTO_HTTP1;
	memcpy(ev.data, data, len);
	*pos += len;
	tracker_handle(t, &ev, SONDE_DATA_EVENT_SIZE(len));
	*ts += RECORD_GAP_NS;
}

/* The client's ends mirror the server's, so that the linker pairs them. */
static void open_conn(struct tracker *t, uint32_t tgid, uint8_t role, uint16_t lport,
		      uint16_t rport)
{
	struct sonde_conn_event c = { .hdr = { .type = SONDE_EV_CONN, .tgid = tgid, .fd = 5,
					       .conn_gen = 1, .ts = 1 },
				      .role = role, .proto = SONDE_PROTO_HTTP1, .family = 2, .lport = lport,
				      .rport = rport };

	tracker_handle(t, &c, sizeof(c));
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 1000000;
	struct exporter_opts eopts = { .sinks = EXPORTER_NONE, .max_queue_size = 1,
				       .max_export_batch = 1 };
	struct tracker_opts topts = { 0 };
	struct metrics_opts mopts = { 0 };
	struct metrics *metrics = NULL;
	struct wallclock clock;
	struct exporter *exp;
	struct proc_table *procs = proc_table_new("/proc", "bench");
	struct tracker *t;
	uint64_t pos[4] = { 0 }, start, ts = 10;
	struct tracker_stats stats;

	log_set_level(LOG_WARN);
	wallclock_sync(&clock);
	if (exporter_new(&exp, &eopts, NULL, 0))
		return 1;
	if (argc > 2 && strcmp(argv[2], "metrics") == 0) {
		metrics = metrics_new(&mopts);
		topts.on_exchange = metrics_record;
		topts.on_request_began = metrics_request_began;
		topts.on_request_ended = metrics_request_ended;
		topts.observer_ctx = metrics;
	}
	t = tracker_new(&topts, exp, procs, &clock);
	open_conn(t, 1, SONDE_ROLE_SERVER, 8080, 40000);
	open_conn(t, 2, SONDE_ROLE_CLIENT, 40000, 8080);
	start = monotonic_now_ns();
	for (long i = 0; i < n; i++) {
		send(t, 2, SONDE_DIR_EGRESS, &pos[0], request, sizeof(request) - 1, &ts);
		send(t, 1, SONDE_DIR_INGRESS, &pos[1], request, sizeof(request) - 1, &ts);
		send(t, 1, SONDE_DIR_EGRESS, &pos[2], response, sizeof(response) - 1, &ts);
		send(t, 2, SONDE_DIR_INGRESS, &pos[3], response, sizeof(response) - 1, &ts);
		if (i % REQUESTS_PER_DRAIN == REQUESTS_PER_DRAIN - 1)
			tracker_tick(t, ts);
	}
	tracker_get_stats(t, &stats);
	printf("%.0f ns per request (server + client span), %llu spans\n",
	       (double)(monotonic_now_ns() - start) / (double)n, (unsigned long long)(stats.spans_server + stats.spans_client));
	tracker_free(t);
	metrics_free(metrics);
	exporter_free(exp);
	proc_table_free(procs);
	return 0;
}
