/* Parent and trace decisions (linker.c), driven through the tracker with
 * synthetic kernel records: who wrote what, on which thread and task. */
#include "harness.h"

#include <criterion/criterion.h>
#include <string.h>

#define IN SONDE_DIR_INGRESS
#define OUT SONDE_DIR_EGRESS

static struct harness h;

static void setup(void)
{
	h_init(&h, false);
}

static void teardown(void)
{
	h_free(&h);
}

TestSuite(linker, .init = setup, .fini = teardown);

static const char *context_id(const cJSON *span, const char *which)
{
	const cJSON *ctx = cJSON_GetObjectItemCaseSensitive(span, "context");

	return cJSON_GetObjectItemCaseSensitive(ctx, which)->valuestring;
}

static const cJSON *span_of(const char *kind, const char *path)
{
	for (int i = 0; i < h.nspans; i++)
		if (strstr(span_field(h.spans[i], "kind"), kind) &&
		    strcmp(span_str(h.spans[i], "url.path"), path) == 0)
			return h.spans[i];
	cr_assert_fail("no %s span for %s", kind, path);
	return NULL;
}

static void expect_child(const cJSON *child, const cJSON *parent)
{
	cr_expect_str_eq(span_field(child, "parent_id"), context_id(parent, "span_id"));
	cr_expect_str_eq(context_id(child, "trace_id"), context_id(parent, "trace_id"));
}

static void expect_root(const cJSON *span)
{
	cr_expect_str_eq(span_field(span, "parent_id"), "null");
}

static const char *request(const char *path)
{
	static char buf[128];

	snprintf(buf, sizeof(buf), "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
	return buf;
}

static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

/* One exchange seen from both ends of a loopback connection. */
static void exchange(struct tconn *client, struct tconn *server, const char *path)
{
	h_send(&h, client, OUT, request(path));
	h_send(&h, server, IN, request(path));
	h_send(&h, server, OUT, ok);
	h_send(&h, client, IN, ok);
}

Test(linker, server_span_is_child_of_the_client_span_at_the_other_end)
{
	struct tconn client = h_open_ports(&h, 10, 3, SONDE_ROLE_CLIENT, 40001, 8080);
	struct tconn server = h_open_ports(&h, 20, 7, SONDE_ROLE_SERVER, 8080, 40001);

	exchange(&client, &server, "/a");
	h_finish(&h);
	cr_assert_eq(h.nspans, 2);
	expect_root(span_of("CLIENT", "/a"));
	expect_child(span_of("SERVER", "/a"), span_of("CLIENT", "/a"));
	cr_expect_eq(h.stats.link.parent_peer, 1);
}

/* A long write's exit can come well after the reads of its bytes (the
 * writer descheduled in between): a pipelined pair read in two parts
 * before the client's write is seen still pairs each request with its own,
 * by the offset of its first byte, where order and clocks put /b with /a's
 * call. */
Test(linker, pipelined_requests_pair_by_offset_whatever_the_clocks)
{
	struct tconn client = h_open_ports(&h, 10, 3, SONDE_ROLE_CLIENT, 40001, 8080);
	struct tconn server = h_open_ports(&h, 20, 7, SONDE_ROLE_SERVER, 8080, 40001);
	char both[128], answers[128];

	snprintf(both, sizeof(both), "%s", request("/a"));
	strncat(both, request("/b"), sizeof(both) - strlen(both) - 1);
	snprintf(answers, sizeof(answers), "%s%s", ok, ok);
	h_send(&h, &server, IN, request("/a"));
	h.now += 15000000;
	h_send(&h, &server, IN, request("/b"));
	h.now += 15000000;
	h_send(&h, &client, OUT, both);
	h_send(&h, &server, OUT, answers);
	h_send(&h, &client, IN, answers);
	h_finish(&h);
	cr_assert_eq(h.nspans, 4);
	expect_child(span_of("SERVER", "/a"), span_of("CLIENT", "/a"));
	expect_child(span_of("SERVER", "/b"), span_of("CLIENT", "/b"));
}

/* The client's request was lost (its records dropped): its server span
 * starts a trace of its own rather than take the next request's. */
Test(linker, a_server_request_whose_client_request_was_lost_is_a_root)
{
	struct tconn client = h_open_ports(&h, 10, 3, SONDE_ROLE_CLIENT, 40001, 8080);
	struct tconn server = h_open_ports(&h, 20, 7, SONDE_ROLE_SERVER, 8080, 40001);
	const char *a = request("/a");

	h_lose(&h, &client, OUT, strlen(a));
	h_send(&h, &server, IN, request("/a"));
	h_send(&h, &server, OUT, ok);
	h_send(&h, &client, IN, ok);
	exchange(&client, &server, "/b");
	h_finish(&h);
	expect_root(span_of("SERVER", "/a"));
	expect_child(span_of("SERVER", "/b"), span_of("CLIENT", "/b"));
	cr_expect_eq(h.stats.link.root_peer_lost, 1);
}

Test(linker, keep_alive_exchanges_stay_in_their_own_traces)
{
	struct tconn client = h_open_ports(&h, 10, 3, SONDE_ROLE_CLIENT, 40001, 8080);
	struct tconn server = h_open_ports(&h, 20, 7, SONDE_ROLE_SERVER, 8080, 40001);

	exchange(&client, &server, "/a");
	exchange(&client, &server, "/b");
	exchange(&client, &server, "/c");
	h_finish(&h);
	cr_assert_eq(h.nspans, 6);
	expect_child(span_of("SERVER", "/a"), span_of("CLIENT", "/a"));
	expect_child(span_of("SERVER", "/b"), span_of("CLIENT", "/b"));
	expect_child(span_of("SERVER", "/c"), span_of("CLIENT", "/c"));
	cr_expect_str_neq(context_id(span_of("SERVER", "/a"), "trace_id"),
			  context_id(span_of("SERVER", "/b"), "trace_id"));
}

#define TRACEPARENT "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"

/* A client (10) sends a traceparent through a proxy (20), which forwards
 * it unchanged to the backend (30): each span is under the one sonde saw
 * before it, and the header only places the first, which has no traced
 * parent, in the caller's trace. */
Test(linker, a_forwarded_traceparent_skips_no_hop)
{
	struct tconn client = h_open_ports(&h, 10, 3, SONDE_ROLE_CLIENT, 40001, 8080);
	struct tconn proxy_in = h_open_ports(&h, 20, 7, SONDE_ROLE_SERVER, 8080, 40001);
	struct tconn proxy_out = h_open_ports(&h, 20, 8, SONDE_ROLE_CLIENT, 40002, 9090);
	struct tconn backend = h_open_ports(&h, 30, 5, SONDE_ROLE_SERVER, 9090, 40002);
	const char *first = "GET /t HTTP/1.1\r\n" TRACEPARENT "\r\n";
	const char *forwarded = "GET /u HTTP/1.1\r\n" TRACEPARENT "\r\n";

	h_send(&h, &client, OUT, first);
	h_send(&h, &proxy_in, IN, first);
	h_send(&h, &proxy_out, OUT, forwarded);
	h_send(&h, &backend, IN, forwarded);
	h_send(&h, &backend, OUT, ok);
	h_send(&h, &proxy_out, IN, ok);
	h_send(&h, &proxy_in, OUT, ok);
	h_send(&h, &client, IN, ok);
	h_finish(&h);
	cr_assert_eq(h.nspans, 4);
	cr_expect_str_eq(span_field(span_of("CLIENT", "/t"), "parent_id"), "0x00f067aa0ba902b7");
	cr_expect_str_eq(context_id(span_of("CLIENT", "/t"), "trace_id"),
			 "0x4bf92f3577b34da6a3ce929d0e0e4736");
	expect_child(span_of("SERVER", "/t"), span_of("CLIENT", "/t"));
	expect_child(span_of("CLIENT", "/u"), span_of("SERVER", "/t"));
	expect_child(span_of("SERVER", "/u"), span_of("CLIENT", "/u"));
	cr_expect_eq(h.stats.link.parent_traceparent, 1);
	cr_expect_eq(h.stats.link.traceparent_superseded, 3);
}

/* A caller sonde does not trace (another host): the header decides. */
Test(linker, a_traceparent_places_a_request_with_no_traced_caller)
{
	struct tconn server = h_open_ports(&h, 20, 7, SONDE_ROLE_SERVER, 8080, 40001);
	const char *req = "GET /t HTTP/1.1\r\n" TRACEPARENT "\r\n";

	h_send(&h, &server, IN, req);
	h_send(&h, &server, OUT, ok);
	h_finish(&h);
	cr_expect_str_eq(span_field(span_of("SERVER", "/t"), "parent_id"), "0x00f067aa0ba902b7");
	cr_expect_eq(h.stats.link.parent_traceparent, 1);
}

/* The thread that reads and answers a request, the thread that makes its
 * call, and the task that makes both the call and the answer. */
struct call_context {
	uint32_t server_tid, call_tid;
	uint64_t task;
};

/* Two requests in flight, each making one call on a connection of its
 * own, answered in the other order: each call is its own request's
 * child, by task where there is one, else by thread. */
static void expect_each_call_under_its_request(const struct call_context ctx[2])
{
	static const char *const in_paths[2] = { "/in1", "/in2" };
	static const char *const out_paths[2] = { "/out1", "/out2" };
	struct tconn in[2], out[2];

	for (int i = 0; i < 2; i++) {
		in[i] = h_open_ports(&h, 20, 7 + i, SONDE_ROLE_SERVER, 8080, 40001 + i);
		out[i] = h_open_ports(&h, 20, 9 + i, SONDE_ROLE_CLIENT, 40003 + i, 9090);
		in[i].tid = ctx[i].server_tid;
		out[i].tid = ctx[i].call_tid;
		out[i].task = ctx[i].task;
	}
	h_send(&h, &in[0], IN, request(in_paths[0]));
	h_send(&h, &in[1], IN, request(in_paths[1]));
	h_send(&h, &out[1], OUT, request(out_paths[1]));
	h_send(&h, &out[0], OUT, request(out_paths[0]));
	h_send(&h, &out[0], IN, ok);
	h_send(&h, &out[1], IN, ok);
	for (int i = 1; i >= 0; i--) {
		in[i].task = ctx[i].task;
		h_send(&h, &in[i], OUT, ok);
	}
	h_finish(&h);
	cr_assert_eq(h.nspans, 4);
	expect_child(span_of("CLIENT", "/out1"), span_of("SERVER", "/in1"));
	expect_child(span_of("CLIENT", "/out2"), span_of("SERVER", "/in2"));
	cr_expect_eq(h.stats.link.parent_task, 2);
}

/* Two requests served at once by two threads, each calling downstream. */
Test(linker, thread_per_request_calls_are_children_of_their_threads_request)
{
	const struct call_context ctx[2] = { { 21, 21, 0 }, { 22, 22, 0 } };

	expect_each_call_under_its_request(ctx);
}

/* A worker thread's call names the task awaiting it (FastAPI's `def`
 * handlers): the request that task answers on the loop's thread is its
 * parent. */
Test(linker, a_worker_threads_call_is_a_child_of_the_task_awaiting_it)
{
	const struct call_context ctx[2] = { { 20, 31, 0x7000a0 }, { 20, 32, 0x7000b0 } };

	expect_each_call_under_its_request(ctx);
}

/* One event-loop thread, two requests in flight: the task tells them apart. */
Test(linker, asyncio_task_decides_between_requests_of_one_thread)
{
	struct tconn in1 = h_open_ports(&h, 20, 7, SONDE_ROLE_SERVER, 8080, 40001);
	struct tconn in2 = h_open_ports(&h, 20, 8, SONDE_ROLE_SERVER, 8080, 40002);
	struct tconn out = h_open_ports(&h, 20, 9, SONDE_ROLE_CLIENT, 40003, 9090);

	h_send(&h, &in1, IN, request("/in1"));
	h_send(&h, &in2, IN, request("/in2"));
	out.task = 0x7000b0;
	h_send(&h, &out, OUT, request("/from2"));
	h_send(&h, &out, IN, ok);
	out.task = 0x7000a0;
	h_send(&h, &out, OUT, request("/from1"));
	h_send(&h, &out, IN, ok);
	in2.task = 0x7000b0;
	h_send(&h, &in2, OUT, ok);
	in1.task = 0x7000a0;
	h_send(&h, &in1, OUT, ok);
	h_finish(&h);
	expect_child(span_of("CLIENT", "/from1"), span_of("SERVER", "/in1"));
	expect_child(span_of("CLIENT", "/from2"), span_of("SERVER", "/in2"));
}

/* Events from two CPUs can reach the agent out of start order: a request
 * that started earlier but arrived later still holds back a call made
 * after it, until it is answered. */
Test(linker, call_waits_for_an_older_request_that_arrived_late)
{
	struct tconn in1 = h_open_ports(&h, 20, 7, SONDE_ROLE_SERVER, 8080, 40001);
	struct tconn in2 = h_open_ports(&h, 20, 8, SONDE_ROLE_SERVER, 8080, 40002);
	struct tconn out = h_open_ports(&h, 20, 9, SONDE_ROLE_CLIENT, 40003, 9090);
	uint64_t t0 = h.now;

	h.now = t0 + 1000000;
	h_send(&h, &in1, IN, request("/in1"));
	h.now = t0 + 500000;
	h_send(&h, &in2, IN, request("/in2"));
	h.now = t0 + 800000;
	out.task = 0x7000b0;
	h_send(&h, &out, OUT, request("/from2"));
	h_send(&h, &out, IN, ok);
	h.now = t0 + 1100000;
	in2.task = 0x7000b0;
	h_send(&h, &in2, OUT, ok);
	in1.task = 0x7000a0;
	h_send(&h, &in1, OUT, ok);
	h_finish(&h);
	expect_child(span_of("CLIENT", "/from2"), span_of("SERVER", "/in2"));
	expect_root(span_of("SERVER", "/in1"));
}

/* One event-loop thread of process 20 serving two requests at once, and
 * a call made while both are in flight; each answered after the call. */
static void two_requests_and_a_call(const char *first, const char *second, const char *call)
{
	struct tconn in1 = h_open_ports(&h, 20, 7, SONDE_ROLE_SERVER, 8080, 40001);
	struct tconn in2 = h_open_ports(&h, 20, 8, SONDE_ROLE_SERVER, 8080, 40002);
	struct tconn out = h_open_ports(&h, 20, 9, SONDE_ROLE_CLIENT, 40003, 9090);

	h_send(&h, &in1, IN, request(first));
	h_send(&h, &in2, IN, request(second));
	h_send(&h, &out, OUT, request(call));
	h_send(&h, &out, IN, ok);
	h_send(&h, &in2, OUT, ok);
	h_send(&h, &in1, OUT, ok);
	h_finish(&h);
	cr_assert_eq(h.nspans, 3);
}

static const cJSON *the_call(void)
{
	for (int i = 0; i < h.nspans; i++)
		if (strstr(span_field(h.spans[i], "kind"), "CLIENT"))
			return h.spans[i];
	cr_assert_fail("no CLIENT span");
	return NULL;
}

/* Without a task, one thread serving two requests at once gives no way to
 * tell which one made the call: its own trace, counted, never a guess. */
Test(linker, event_loop_without_task_is_ambiguous_not_guessed)
{
	two_requests_and_a_call("/in1", "/in2", "/call");
	expect_root(the_call());
	cr_expect_eq(h.stats.link.root_ambiguous, 1);
}

/* A proxy's event loop (haproxy, a byte forwarder) passes the request on:
 * the call forwarding exactly one of the requests in flight is its child. */
Test(linker, event_loop_call_is_child_of_the_one_request_it_forwards)
{
	two_requests_and_a_call("/in1", "/in2", "/in2");
	expect_child(the_call(), span_of("SERVER", "/in2"));
	cr_expect_eq(h.stats.link.parent_forwarded, 1);
	cr_expect_eq(h.stats.link.root_ambiguous, 0);
}

/* Two requests in flight alike in all a proxy forwards: either could be
 * the one passed on, so neither is chosen. */
Test(linker, call_forwarding_one_of_two_alike_requests_is_not_guessed)
{
	two_requests_and_a_call("/same", "/same", "/same");
	expect_root(the_call());
	cr_expect_eq(h.stats.link.parent_forwarded, 0);
	cr_expect_eq(h.stats.link.root_ambiguous, 1);
}

Test(linker, unreadable_task_starts_its_own_trace)
{
	struct tconn in = h_open_ports(&h, 20, 7, SONDE_ROLE_SERVER, 8080, 40001);
	struct tconn out = h_open_ports(&h, 20, 9, SONDE_ROLE_CLIENT, 40003, 9090);

	h_send(&h, &in, IN, request("/in"));
	out.task = SONDE_TASK_UNKNOWN;
	h_send(&h, &out, OUT, request("/call"));
	h_send(&h, &out, IN, ok);
	h_send(&h, &in, OUT, ok);
	h_finish(&h);
	expect_root(span_of("CLIENT", "/call"));
	cr_expect_eq(h.stats.link.root_task_unknown, 1);
}

/* A call made after the response was written is not part of the request
 * (a background job on a reused thread). */
Test(linker, reused_thread_does_not_join_a_finished_request)
{
	struct tconn in = h_open_ports(&h, 20, 7, SONDE_ROLE_SERVER, 8080, 40001);
	struct tconn out = h_open_ports(&h, 20, 9, SONDE_ROLE_CLIENT, 40003, 9090);

	h_send(&h, &in, IN, request("/in"));
	h_send(&h, &in, OUT, ok);
	h_send(&h, &out, OUT, request("/later"));
	h_send(&h, &out, IN, ok);
	h_finish(&h);
	expect_root(span_of("CLIENT", "/later"));
}

/* The whole chain, decided only when the top request answers: the client
 * and downstream spans were held until then. */
Test(linker, three_hops_make_one_trace)
{
	struct tconn cli = h_open_ports(&h, 10, 3, SONDE_ROLE_CLIENT, 40001, 8080);
	struct tconn api_in = h_open_ports(&h, 20, 7, SONDE_ROLE_SERVER, 8080, 40001);
	struct tconn api_out = h_open_ports(&h, 20, 9, SONDE_ROLE_CLIENT, 40003, 9090);
	struct tconn worker = h_open_ports(&h, 30, 5, SONDE_ROLE_SERVER, 9090, 40003);

	h_send(&h, &cli, OUT, request("/api"));
	h_send(&h, &api_in, IN, request("/api"));
	exchange(&api_out, &worker, "/work");
	h_send(&h, &api_in, OUT, ok);
	h_send(&h, &cli, IN, ok);
	h_finish(&h);
	cr_assert_eq(h.nspans, 4);
	expect_root(span_of("CLIENT", "/api"));
	expect_child(span_of("SERVER", "/api"), span_of("CLIENT", "/api"));
	expect_child(span_of("CLIENT", "/work"), span_of("SERVER", "/api"));
	expect_child(span_of("SERVER", "/work"), span_of("CLIENT", "/work"));
	cr_expect_eq(h.stats.link.held, 0);
}

static uint64_t held_after_tick(uint64_t now)
{
	struct tracker_stats stats;

	tracker_tick(h.tracker, now);
	tracker_get_stats(h.tracker, &stats);
	return stats.link.held;
}

/* An untraced (or excluded) client: its connection is never seen. */
Test(linker, server_whose_client_is_unseen_waits_two_ticks)
{
	struct tconn server = h_open_ports(&h, 20, 7, SONDE_ROLE_SERVER, 8080, 40001);

	h_send(&h, &server, IN, request("/alone"));
	h_send(&h, &server, OUT, ok);
	cr_expect_eq(held_after_tick(h.now), 1);
	cr_expect_eq(held_after_tick(h.now), 0);
	h_finish(&h);
	cr_assert_eq(h.nspans, 1);
	expect_root(span_of("SERVER", "/alone"));
	cr_expect_eq(h.stats.link.root_wait_expired, 0);
}

/* Two requests on a server connection whose client is not waited for:
 * neither is held, and each starts its own trace. */
static void expect_two_roots_held_by_nothing(struct tconn *server)
{
	h_send(&h, server, IN, request("/a"));
	h_send(&h, server, OUT, ok);
	h_send(&h, server, IN, request("/b"));
	h_send(&h, server, OUT, ok);
	cr_expect_eq(held_after_tick(h.now), 0);
	h_finish(&h);
	cr_assert_eq(h.nspans, 2);
	expect_root(span_of("SERVER", "/a"));
	expect_root(span_of("SERVER", "/b"));
}

/* A client at an address no end on this host has had is on another host:
 * nothing waits for its connection, so a busy connection's requests do
 * not queue behind its first. */
Test(linker, server_whose_client_is_on_another_host_waits_for_nothing)
{
	struct tconn server = h_open_ends(&h, 20, 7, SONDE_ROLE_SERVER, SONDE_PROTO_HTTP1,
			    "\x0a\x00\x00\x05", 8080, "\x0a\x00\x00\x09", 40001);

	expect_two_roots_held_by_nothing(&server);
}

/* An address seen as the local end of a connection with a request (a
 * container's, say) is this host's: a client there may be traced, and
 * its connection may show a drain late. */
Test(linker, server_whose_client_has_an_address_of_this_host_waits)
{
	struct tconn other = h_open_ends(&h, 10, 3, SONDE_ROLE_CLIENT, SONDE_PROTO_HTTP1,
			    "\x0a\x00\x00\x09", 40000, "\x0a\x00\x00\x07", 9090);
	struct tconn server = h_open_ends(&h, 20, 7, SONDE_ROLE_SERVER, SONDE_PROTO_HTTP1,
			    "\x0a\x00\x00\x05", 8080, "\x0a\x00\x00\x09", 40001);
	struct tconn client;

	h_send(&h, &other, OUT, request("/elsewhere"));
	h_send(&h, &other, IN, ok);
	h_send(&h, &server, IN, request("/late"));
	h_send(&h, &server, OUT, ok);
	cr_expect_eq(held_after_tick(h.now), 1);
	client = h_open_ends(&h, 10, 4, SONDE_ROLE_CLIENT, SONDE_PROTO_HTTP1,
			    "\x0a\x00\x00\x09", 40001, "\x0a\x00\x00\x05", 8080);
	h_send(&h, &client, OUT, request("/late"));
	h_send(&h, &client, IN, ok);
	h_finish(&h);
	expect_child(span_of("SERVER", "/late"), span_of("CLIENT", "/late"));
}

/* An excluded process's client end is announced at connect (proto NONE):
 * its server end starts its own trace without waiting for it. */
Test(linker, server_whose_client_is_excluded_waits_for_nothing)
{
	struct tconn server;

	h_open_ends(&h, 10, 3, SONDE_ROLE_CLIENT, SONDE_PROTO_NONE,
			    "\x7f\x00\x00\x01", 40001, "\x7f\x00\x00\x01", 8080);
	server = h_open_ends(&h, 20, 7, SONDE_ROLE_SERVER, SONDE_PROTO_HTTP1,
			    "\x7f\x00\x00\x01", 8080, "\x7f\x00\x00\x01", 40001);
	expect_two_roots_held_by_nothing(&server);
	cr_expect_eq(h.stats.untraced_clients, 1);
}

/* The client's connection is known but its request never shows (lost):
 * the server span waits peer_wait_ms, then starts its own trace. */
Test(linker, server_whose_client_request_is_missing_waits_then_gives_up)
{
	struct tconn client = h_open_ports(&h, 10, 3, SONDE_ROLE_CLIENT, 40001, 8080);
	struct tconn server = h_open_ports(&h, 20, 7, SONDE_ROLE_SERVER, 8080, 40001);

	exchange(&client, &server, "/a");
	h_lose(&h, &client, OUT, strlen(request("/b")));
	h_send(&h, &server, IN, request("/b"));
	h_send(&h, &server, OUT, ok);
	cr_expect_eq(held_after_tick(h.now), 1);
	cr_expect_eq(held_after_tick(h.now + 100 * 1000000ull), 1);
	cr_expect_eq(held_after_tick(h.now + 300 * 1000000ull), 0);
	h_finish(&h);
	expect_child(span_of("SERVER", "/a"), span_of("CLIENT", "/a"));
	expect_root(span_of("SERVER", "/b"));
	cr_expect_eq(h.stats.link.root_wait_expired, 1);
}

/* A long request (a long poll, a slow report) open in an asyncio
 * service: a call made by another request's task is that request's child
 * as soon as it answers, not held until the long one answers or the
 * call's wait runs out (30 s, then a trace of its own). */
Test(linker, a_call_behind_a_long_request_is_decided_when_its_own_answers)
{
	struct tconn slow = h_open_ports(&h, 20, 6, SONDE_ROLE_SERVER, 8080, 40000);
	struct tconn in = h_open_ports(&h, 20, 7, SONDE_ROLE_SERVER, 8080, 40001);
	struct tconn out = h_open_ports(&h, 20, 9, SONDE_ROLE_CLIENT, 40003, 9090);

	h_send(&h, &slow, IN, request("/slow"));
	h.now += 1000000;
	h_send(&h, &in, IN, request("/in"));
	out.task = in.task = 0x7000b0;
	h_send(&h, &out, OUT, request("/call"));
	h_send(&h, &out, IN, ok);
	h_send(&h, &in, OUT, ok);
	held_after_tick(h.now);
	cr_expect_eq(held_after_tick(h.now), 0);
	h.now += 40ull * 1000 * 1000000;
	slow.task = 0x7000a0;
	h_send(&h, &slow, OUT, ok);
	h_finish(&h);
	expect_child(span_of("CLIENT", "/call"), span_of("SERVER", "/in"));
	cr_expect_eq(h.stats.link.root_wait_expired, 0);
}

static struct linker_stats link_stats(void)
{
	struct tracker_stats stats;

	tracker_get_stats(h.tracker, &stats);
	return stats.link;
}

/* Client exchanges on a connection whose server end sonde never sees, a
 * millisecond apart. */
static void unanswered_by_any_server(struct tconn *client, int count)
{
	for (int i = 0; i < count; i++) {
		h_send(&h, client, OUT, request("/far"));
		h_send(&h, client, IN, ok);
		h.now += 1000000;
	}
}

/* A keep-alive client of a server sonde does not follow (excluded, out
 * of scope, on another host): its requests are kept for the server end
 * only until it is clear none looks for them, so a busy connection's
 * memory does not grow with its requests. */
Test(linker, a_client_whose_server_end_is_not_followed_keeps_nothing)
{
	struct tconn client = h_open_ports(&h, 10, 3, SONDE_ROLE_CLIENT, 40001, 8080);

	unanswered_by_any_server(&client, 300);
	cr_expect_lt(link_stats().peer_kept, 2);
	unanswered_by_any_server(&client, 600);
	cr_expect_lt(link_stats().peer_kept, 2);
	cr_expect_eq(link_stats().peer_absent, 1);
	h_finish(&h);
	cr_assert_eq(h.nspans, 900);
	cr_expect_eq(h.stats.link.roots, 900);
}

/* A server end that shows up after its client's requests stopped being
 * kept (a process taken into scope late): its first request starts a
 * trace at once, and the ones after it are the children of their client
 * requests again. */
Test(linker, a_server_end_seen_late_is_linked_from_its_next_request)
{
	struct tconn client = h_open_ports(&h, 10, 3, SONDE_ROLE_CLIENT, 40001, 8080);
	struct tconn server;

	unanswered_by_any_server(&client, 300);
	cr_expect_eq(link_stats().peer_absent, 1);
	server = h_open_ports(&h, 20, 7, SONDE_ROLE_SERVER, 8080, 40001);
	server.pos[IN] = client.pos[OUT]; /* the same stream, from here on */
	server.pos[OUT] = client.pos[IN];
	exchange(&client, &server, "/first");
	cr_expect_eq(held_after_tick(h.now), 0);
	exchange(&client, &server, "/second");
	h_finish(&h);
	expect_root(span_of("SERVER", "/first"));
	expect_child(span_of("SERVER", "/second"), span_of("CLIENT", "/second"));
	cr_expect_eq(h.stats.link.root_wait_expired, 0);
}

/* Requests whose server side was lost, on a connection whose server end
 * is followed: each is kept no longer than a server request would wait
 * for it, and the exchanges around them still pair. */
Test(linker, client_requests_no_server_request_took_are_let_go)
{
	struct tconn client = h_open_ports(&h, 10, 3, SONDE_ROLE_CLIENT, 40001, 8080);
	struct tconn server = h_open_ports(&h, 20, 7, SONDE_ROLE_SERVER, 8080, 40001);

	exchange(&client, &server, "/a");
	for (int i = 0; i < 100; i++) {
		h_send(&h, &client, OUT, request("/lost"));
		h_lose(&h, &server, IN, strlen(request("/lost")));
		h_lose(&h, &server, OUT, strlen(ok));
		h_send(&h, &client, IN, ok);
		h.now += 10 * 1000000ull;
	}
	cr_expect_leq(link_stats().peer_kept, 26);
	exchange(&client, &server, "/b");
	h_finish(&h);
	expect_child(span_of("SERVER", "/a"), span_of("CLIENT", "/a"));
	expect_child(span_of("SERVER", "/b"), span_of("CLIENT", "/b"));
	cr_expect_eq(h.stats.link.peer_absent, 0);
}

static void answered_requests(struct tconn *in, int from, int to)
{
	char path[32];

	for (int i = from; i < to; i++) {
		snprintf(path, sizeof(path), "/in%d", i);
		in->task = 0x1000 + (uint64_t)i;
		h_send(&h, in, IN, request(path));
		h_send(&h, in, OUT, ok);
	}
}

/* A busy process keeps many answered requests as candidates, pruned from
 * the oldest while new ones come (and the candidates' ring wraps and
 * grows before the call is decided): the call still finds the one request
 * that was open on its task when it began. */
Test(linker, call_finds_its_request_among_many_answered_ones)
{
	struct tconn in = h_open_ports(&h, 20, 7, SONDE_ROLE_SERVER, 8080, 40001);
	struct tconn out = h_open_ports(&h, 20, 9, SONDE_ROLE_CLIENT, 40003, 9090);

	answered_requests(&in, 0, 40);
	h.now += 100 * 1000000ull;
	held_after_tick(h.now);
	answered_requests(&in, 40, 100);
	in.task = out.task = 0x1000 + 100;
	h_send(&h, &in, IN, request("/in100"));
	h_send(&h, &out, OUT, request("/call"));
	h_send(&h, &out, IN, ok);
	h_send(&h, &in, OUT, ok);
	answered_requests(&in, 101, 160);
	h_finish(&h);
	cr_assert_eq(h.nspans, 161);
	expect_child(span_of("CLIENT", "/call"), span_of("SERVER", "/in100"));
	cr_expect_eq(h.stats.link.parent_task, 1);
	cr_expect_eq(h.stats.link.candidates_lost, 0);
}
