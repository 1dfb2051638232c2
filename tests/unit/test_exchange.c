/* Reassembly, parsing and pairing, through the tracker and console output. */
#include "harness.h"

#include <criterion/criterion.h>
#include <stdlib.h>
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

TestSuite(exchange, .init = setup, .fini = teardown);

static const char *ok_body(const char *body)
{
	static char buf[512];

	snprintf(buf, sizeof(buf), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s",
		 strlen(body), body);
	return buf;
}

Test(exchange, server_span_has_semantic_attributes)
{
	struct tconn c = h_open(&h, 100, 5, SONDE_ROLE_SERVER);

	h_send(&h, &c, IN,
	       "GET /api/v1/operations/12345?secret=1 HTTP/1.1\r\nHost: api.local:8000\r\n"
	       "User-Agent: curl/7.88\r\n\r\n");
	h_send(&h, &c, OUT, ok_body("hello"));
	h_finish(&h);
	cr_assert_eq(h.nspans, 1);
	cr_expect_str_eq(span_field(h.spans[0], "name"), "GET /api/v1/operations/{id}");
	cr_expect_str_eq(span_field(h.spans[0], "kind"), "SpanKind.SERVER");
	cr_expect_str_eq(span_field(h.spans[0], "parent_id"), "null");
	cr_expect_str_eq(span_status(h.spans[0]), "UNSET");
	cr_expect_str_eq(span_str(h.spans[0], "http.request.method"), "GET");
	cr_expect_str_eq(span_str(h.spans[0], "url.path"), "/api/v1/operations/12345");
	cr_expect_not(span_has(h.spans[0], "url.query"));
	cr_expect_str_eq(span_str(h.spans[0], "url.scheme"), "http");
	cr_expect_str_eq(span_str(h.spans[0], "http.route"), "/api/v1/operations/{id}");
	cr_expect_eq(span_int(h.spans[0], "http.response.status_code"), 200);
	cr_expect_str_eq(span_str(h.spans[0], "network.protocol.version"), "1.1");
	cr_expect_str_eq(span_str(h.spans[0], "server.address"), "api.local");
	cr_expect_eq(span_int(h.spans[0], "server.port"), 8000);
	cr_expect_str_eq(span_str(h.spans[0], "client.address"), "127.0.0.2");
	cr_expect_eq(span_int(h.spans[0], "client.port"), 40000);
	cr_expect_str_eq(span_str(h.spans[0], "user_agent.original"), "curl/7.88");
	cr_expect_eq(span_int(h.spans[0], "http.request.body.size"), 0);
	cr_expect_eq(span_int(h.spans[0], "http.response.body.size"), 5);
	cr_expect_not(span_has(h.spans[0], "url.full"));
}

Test(exchange, client_span_has_url_full_and_method_name)
{
	struct tconn c = h_open(&h, 101, 7, SONDE_ROLE_CLIENT);

	h_send(&h, &c, OUT, "POST /training/start?token=x HTTP/1.1\r\nHost: worker:5002\r\n"
			    "Content-Length: 4\r\n\r\n{\"a\"");
	h_send(&h, &c, IN, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
	h_finish(&h);
	cr_assert_eq(h.nspans, 1);
	cr_expect_str_eq(span_field(h.spans[0], "name"), "POST");
	cr_expect_str_eq(span_field(h.spans[0], "kind"), "SpanKind.CLIENT");
	cr_expect_str_eq(span_str(h.spans[0], "url.full"), "http://worker:5002/training/start");
	cr_expect_not(span_has(h.spans[0], "http.route"));
	cr_expect_not(span_has(h.spans[0], "client.address"));
	cr_expect_eq(span_int(h.spans[0], "http.request.body.size"), 4);
	cr_expect_str_eq(span_status(h.spans[0]), "ERROR");
	cr_expect_str_eq(span_str(h.spans[0], "error.type"), "404");
}

Test(exchange, server_status_error_only_for_5xx)
{
	struct tconn c = h_open(&h, 102, 5, SONDE_ROLE_SERVER);

	h_send(&h, &c, IN, "GET /missing HTTP/1.1\r\n\r\n");
	h_send(&h, &c, OUT, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
	h_send(&h, &c, IN, "GET /down HTTP/1.1\r\n\r\n");
	h_send(&h, &c, OUT, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
	h_finish(&h);
	cr_assert_eq(h.nspans, 2);
	cr_expect_str_eq(span_status(h.spans[0]), "UNSET");
	cr_expect_str_eq(span_status(h.spans[1]), "ERROR");
	cr_expect_str_eq(span_str(h.spans[1], "error.type"), "503");
}

Test(exchange, keep_alive_requests_are_separate_traces)
{
	struct tconn c = h_open(&h, 103, 5, SONDE_ROLE_SERVER);
	const char *t0, *t1;

	for (int i = 0; i < 3; i++) {
		char req[64];

		snprintf(req, sizeof(req), "GET /item/%c HTTP/1.1\r\n\r\n", 'a' + i);
		h_send(&h, &c, IN, req);
		h_send(&h, &c, OUT, ok_body("x"));
	}
	h_finish(&h);
	cr_assert_eq(h.nspans, 3);
	cr_expect_str_eq(span_str(h.spans[0], "url.path"), "/item/a");
	cr_expect_str_eq(span_str(h.spans[2], "url.path"), "/item/c");
	t0 = cJSON_GetObjectItem(cJSON_GetObjectItem(h.spans[0], "context"), "trace_id")->valuestring;
	t1 = cJSON_GetObjectItem(cJSON_GetObjectItem(h.spans[1], "context"), "trace_id")->valuestring;
	cr_expect_str_neq(t0, t1);
	cr_expect_eq(strlen(t0), 34);
}

Test(exchange, pipelined_requests_pair_in_order)
{
	struct tconn c = h_open(&h, 104, 5, SONDE_ROLE_SERVER);

	h_send(&h, &c, IN, "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n");
	h_send(&h, &c, OUT, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA"
			    "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nBB"
			    "HTTP/1.1 503 Unavailable\r\nContent-Length: 3\r\n\r\nCCC");
	h_finish(&h);
	cr_assert_eq(h.nspans, 3);
	cr_expect_str_eq(span_str(h.spans[0], "url.path"), "/a");
	cr_expect_eq(span_int(h.spans[0], "http.response.status_code"), 200);
	cr_expect_str_eq(span_str(h.spans[1], "url.path"), "/b");
	cr_expect_eq(span_int(h.spans[1], "http.response.status_code"), 404);
	cr_expect_str_eq(span_str(h.spans[2], "url.path"), "/c");
	cr_expect_eq(span_int(h.spans[2], "http.response.status_code"), 503);
	cr_expect_eq(span_int(h.spans[2], "http.response.body.size"), 3);
}

Test(exchange, chunked_response_over_many_writes)
{
	struct tconn c = h_open(&h, 105, 5, SONDE_ROLE_SERVER);

	h_send(&h, &c, IN, "GET /stream HTTP/1.1\r\n\r\n");
	h_send(&h, &c, OUT, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
	h_send(&h, &c, OUT, "5\r\nhello\r\n");
	h_send(&h, &c, OUT, "6;ext=1\r\n world\r\n");
	h_send(&h, &c, OUT, "0\r\nX-Trailer: 1\r\n\r\n");
	h_send(&h, &c, IN, "GET /next HTTP/1.1\r\n\r\n");
	h_send(&h, &c, OUT, ok_body("n"));
	h_finish(&h);
	cr_assert_eq(h.nspans, 2);
	cr_expect_eq(span_int(h.spans[0], "http.response.body.size"), 11);
	cr_expect_str_eq(span_str(h.spans[1], "url.path"), "/next");
}

Test(exchange, head_response_has_no_body)
{
	struct tconn c = h_open(&h, 106, 5, SONDE_ROLE_SERVER);

	h_send(&h, &c, IN, "HEAD /file HTTP/1.1\r\n\r\nGET /file HTTP/1.1\r\n\r\n");
	h_send(&h, &c, OUT, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
	h_send(&h, &c, OUT, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc");
	h_finish(&h);
	cr_assert_eq(h.nspans, 2);
	cr_expect_str_eq(span_str(h.spans[0], "http.request.method"), "HEAD");
	cr_expect_eq(span_int(h.spans[0], "http.response.body.size"), 0);
	cr_expect_eq(span_int(h.spans[1], "http.response.body.size"), 3);
}

Test(exchange, continue_100_is_interim)
{
	struct tconn c = h_open(&h, 107, 5, SONDE_ROLE_SERVER);

	h_send(&h, &c, IN, "POST /upload HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
	h_send(&h, &c, OUT, "HTTP/1.1 100 Continue\r\n\r\n");
	h_send(&h, &c, IN, "abc");
	h_send(&h, &c, OUT, "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
	h_finish(&h);
	cr_assert_eq(h.nspans, 1);
	cr_expect_eq(span_int(h.spans[0], "http.response.status_code"), 201);
	cr_expect_eq(span_int(h.spans[0], "http.request.body.size"), 3);
}

Test(exchange, no_body_statuses_204_304)
{
	struct tconn c = h_open(&h, 108, 5, SONDE_ROLE_CLIENT);

	h_send(&h, &c, OUT, "DELETE /x HTTP/1.1\r\n\r\nGET /y HTTP/1.1\r\n\r\nGET /z HTTP/1.1\r\n\r\n");
	h_send(&h, &c, IN, "HTTP/1.1 204 No Content\r\n\r\n"
			   "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n"
			   "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
	h_finish(&h);
	cr_assert_eq(h.nspans, 3);
	cr_expect_eq(span_int(h.spans[0], "http.response.status_code"), 204);
	cr_expect_eq(span_int(h.spans[1], "http.response.status_code"), 304);
	cr_expect_eq(span_int(h.spans[2], "http.response.status_code"), 200);
	cr_expect_eq(span_int(h.spans[2], "http.response.body.size"), 2);
}

Test(exchange, connection_close_body_ends_at_eof)
{
	struct tconn c = h_open(&h, 109, 7, SONDE_ROLE_CLIENT);

	h_send(&h, &c, OUT, "GET /legacy HTTP/1.0\r\n\r\n");
	h_send(&h, &c, IN, "HTTP/1.0 200 OK\r\nConnection: close\r\n\r\nsome ");
	h_send(&h, &c, IN, "bytes");
	h_close(&h, &c, SONDE_CLOSE_PEER);
	h_finish(&h);
	cr_assert_eq(h.nspans, 1);
	cr_expect_str_eq(span_status(h.spans[0]), "UNSET");
	cr_expect_eq(span_int(h.spans[0], "http.response.body.size"), 10);
	cr_expect_str_eq(span_str(h.spans[0], "network.protocol.version"), "1.0");
}

Test(exchange, headers_split_byte_by_byte)
{
	struct tconn c = h_open(&h, 110, 5, SONDE_ROLE_SERVER);
	const char *req = "GET /split/path HTTP/1.1\r\nHost: h\r\nUser-Agent: byte-by-byte\r\n\r\n";

	for (size_t i = 0; req[i]; i++)
		h_io(&h, &c, IN, req + i, 1, 1);
	h_send(&h, &c, OUT, ok_body("ok"));
	h_finish(&h);
	cr_assert_eq(h.nspans, 1);
	cr_expect_str_eq(span_str(h.spans[0], "url.path"), "/split/path");
	cr_expect_str_eq(span_str(h.spans[0], "user_agent.original"), "byte-by-byte");
}

Test(exchange, headers_of_16k)
{
	struct tconn c = h_open(&h, 111, 5, SONDE_ROLE_SERVER);
	size_t big = 16 * 1024;
	char *req = malloc(big + 256), *printed;
	size_t n = (size_t)sprintf(req, "GET /big HTTP/1.1\r\nCookie: ");

	memset(req + n, 'c', big - 200);
	n += big - 200;
	n += (size_t)sprintf(req + n, "\r\nUser-Agent: after-cookie\r\n\r\n");
	req[n] = '\0';
	h_send(&h, &c, IN, req);
	h_send(&h, &c, OUT, ok_body("ok"));
	h_finish(&h);
	free(req);
	cr_assert_eq(h.nspans, 1);
	cr_expect_str_eq(span_str(h.spans[0], "user_agent.original"), "after-cookie");
	printed = cJSON_PrintUnformatted(h.spans[0]);
	cr_expect_null(strstr(printed, "cccc"));
	free(printed);
}

Test(exchange, truncated_body_capture_is_skipped)
{
	struct tconn c = h_open(&h, 112, 5, SONDE_ROLE_SERVER);
	char resp[600];
	size_t head = (size_t)sprintf(resp, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n");

	memset(resp + head, 'b', sizeof(resp) - head);
	h_send(&h, &c, IN, "GET /large HTTP/1.1\r\n\r\n");
	/* 100 kB body, the kernel captured only the first 512 bytes of each write. */
	h_io(&h, &c, OUT, resp, head + 60000, 512);
	h_io(&h, &c, OUT, resp + head, 40000, 512);
	h_send(&h, &c, IN, "GET /after HTTP/1.1\r\n\r\n");
	h_send(&h, &c, OUT, ok_body("fine"));
	h_finish(&h);
	cr_assert_eq(h.nspans, 2);
	cr_expect_eq(span_int(h.spans[0], "http.response.body.size"), 100000);
	cr_expect_str_eq(span_str(h.spans[1], "url.path"), "/after");
	cr_expect_eq(h.stats.gap_resyncs, 0);
}

Test(exchange, lost_request_event_resyncs_on_next_request)
{
	struct tconn c = h_open(&h, 113, 5, SONDE_ROLE_SERVER);

	h_send(&h, &c, IN, "GET /first HTTP/1.1\r\n\r\n");
	h_send(&h, &c, OUT, ok_body("1"));
	h_lose(&h, &c, IN, strlen("GET /second HTTP/1.1\r\n\r\n"));
	h_send(&h, &c, OUT, ok_body("2"));
	h_send(&h, &c, IN, "GET /third HTTP/1.1\r\n\r\n");
	h_send(&h, &c, OUT, ok_body("3"));
	h_finish(&h);
	cr_assert_eq(h.nspans, 2);
	cr_expect_str_eq(span_str(h.spans[0], "url.path"), "/first");
	cr_expect_str_eq(span_str(h.spans[1], "url.path"), "/third");
	cr_expect_eq(span_int(h.spans[1], "http.response.body.size"), 1);
	cr_expect_eq(h.stats.orphan_responses, 1);
	cr_expect_eq(h.stats.reorder_gaps, 1);
}

/* Each chunk is one write of size line + 1000 bytes + CRLF, of which the
 * kernel captured a prefix: the rest of the chunk and its CRLF are fixed
 * by the protocol, so the body size comes out exact. */
Test(exchange, holes_inside_chunks_are_skipped_exactly)
{
	struct tconn c = h_open(&h, 126, 5, SONDE_ROLE_SERVER);
	char chunk[1100];
	size_t n = (size_t)sprintf(chunk, "3e8\r\n");
	static const size_t captures[] = { 512, 5, 1005, 1006, 6 };

	memset(chunk + n, 'x', 1000);
	memcpy(chunk + n + 1000, "\r\n", 2);
	n += 1002;
	h_send(&h, &c, IN, "GET /stream HTTP/1.1\r\n\r\n");
	h_send(&h, &c, OUT, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
	for (int i = 0; i < 5; i++)
		h_io(&h, &c, OUT, chunk, n, captures[i]);
	h_send(&h, &c, OUT, "0\r\n\r\n");
	h_finish(&h);
	cr_assert_eq(h.nspans, 1);
	cr_expect_eq(span_int(h.spans[0], "http.response.body.size"), 5000);
	cr_expect_eq(h.stats.gap_resyncs, 0);
}

/* Three pipelined responses arrive in one read longer than the capture: the
 * second head is cut. The two unanswered requests end without a response
 * (marked, no status invented) and the next exchange pairs correctly. */
Test(exchange, responses_lost_in_a_gap_never_shift_pairing)
{
	struct tconn c = h_open(&h, 128, 7, SONDE_ROLE_CLIENT);
	char resps[1024];
	size_t n = 0;

	h_send(&h, &c, OUT, "GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n");
	for (int i = 0; i < 3; i++)
		n += (size_t)sprintf(resps + n, "HTTP/1.1 %d X\r\nServer: padding-padding-padding\r\n"
					       "Content-Length: 150\r\n\r\n%0150d", 200 + i, 0);
	h_io(&h, &c, IN, resps, n, 260);
	h_send(&h, &c, OUT, "GET /4 HTTP/1.1\r\n\r\n");
	h_send(&h, &c, IN, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
	h_finish(&h);
	cr_assert_eq(h.nspans, 4);
	cr_expect_eq(span_int(h.spans[0], "http.response.status_code"), 200);
	/* The second response's status line was captured, the rest of its
	 * head was not. */
	cr_expect_eq(span_int(h.spans[1], "http.response.status_code"), 201);
	cr_expect_eq(span_has(h.spans[1], "sonde.http.headers_captured"), true);
	cr_expect_not(span_has(h.spans[2], "http.response.status_code"));
	cr_expect(cJSON_IsFalse(cJSON_GetObjectItem(cJSON_GetObjectItem(h.spans[2], "attributes"),
						    "sonde.response.captured")));
	cr_expect_str_eq(span_status(h.spans[2]), "UNSET");
	cr_expect_str_eq(span_str(h.spans[3], "url.path"), "/4");
	cr_expect_eq(span_int(h.spans[3], "http.response.status_code"), 404);
	cr_expect_eq(h.stats.responses_lost, 1);
}

/* Node writes the last chunk and the terminator in one call longer than
 * the capture: the tail the kernel sends holds the terminator. */
Test(exchange, tail_of_a_truncated_write_ends_a_chunked_body)
{
	struct tconn c = h_open(&h, 129, 5, SONDE_ROLE_SERVER);
	char last[1100];
	size_t n = (size_t)sprintf(last, "3e8\r\n");

	memset(last + n, 'c', 1000);
	n += 1000;
	n += (size_t)sprintf(last + n, "\r\n0\r\n\r\n");
	h_send(&h, &c, IN, "GET /chunked HTTP/1.1\r\n\r\n");
	h_send(&h, &c, OUT, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
	h_io_tail(&h, &c, OUT, last, n, 512, 16);
	h_io_tail(&h, &c, OUT, last, n - 5, 300, 16);
	h_send(&h, &c, OUT, "0\r\n\r\n");
	h_send(&h, &c, IN, "GET /next HTTP/1.1\r\n\r\n");
	h_send(&h, &c, OUT, ok_body("ok"));
	h_finish(&h);
	cr_assert_eq(h.nspans, 2);
	cr_expect_eq(span_int(h.spans[0], "http.response.body.size"), 1000);
	cr_expect_str_eq(span_str(h.spans[1], "url.path"), "/next");
	cr_expect_eq(h.stats.gap_resyncs, 0);
}

Test(exchange, gap_inside_chunked_body_keeps_the_span)
{
	struct tconn c = h_open(&h, 114, 5, SONDE_ROLE_SERVER);
	const char *head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n";

	h_send(&h, &c, IN, "GET /chunky HTTP/1.1\r\n\r\n");
	h_io(&h, &c, OUT, head, strlen(head) + 4096 + 7, strlen(head));
	h_send(&h, &c, IN, "GET /again HTTP/1.1\r\n\r\n");
	h_send(&h, &c, OUT, ok_body("ok"));
	h_finish(&h);
	cr_assert_eq(h.nspans, 2);
	cr_expect_eq(span_int(h.spans[0], "http.response.status_code"), 200);
	cr_expect_not(span_has(h.spans[0], "http.response.body.size"));
	cr_expect_str_eq(span_status(h.spans[0]), "UNSET");
	cr_expect_str_eq(span_str(h.spans[1], "url.path"), "/again");
}

Test(exchange, reset_mid_response_is_an_error_span)
{
	struct tconn c = h_open(&h, 115, 7, SONDE_ROLE_CLIENT);

	h_send(&h, &c, OUT, "GET /slow HTTP/1.1\r\n\r\n");
	h_send(&h, &c, IN, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial");
	h_close(&h, &c, SONDE_CLOSE_RESET);
	h_close(&h, &c, SONDE_CLOSE_LOCAL);
	h_finish(&h);
	cr_assert_eq(h.nspans, 1);
	cr_expect_str_eq(span_status(h.spans[0]), "ERROR");
	cr_expect_eq(span_int(h.spans[0], "http.response.status_code"), 200);
	cr_expect_str_eq(span_str(h.spans[0], "error.type"), "response_incomplete");
}

Test(exchange, close_before_response_is_an_error_span)
{
	struct tconn c = h_open(&h, 116, 5, SONDE_ROLE_SERVER);

	h_send(&h, &c, IN, "GET /never HTTP/1.1\r\n\r\n");
	h_close(&h, &c, SONDE_CLOSE_LOCAL);
	h_finish(&h);
	cr_assert_eq(h.nspans, 1);
	cr_expect_str_eq(span_status(h.spans[0]), "ERROR");
	cr_expect_not(span_has(h.spans[0], "http.response.status_code"));
	cr_expect_str_eq(span_str(h.spans[0], "error.type"), "no_response");
}

Test(exchange, process_exit_ends_its_exchanges)
{
	struct tconn c = h_open(&h, 117, 5, SONDE_ROLE_SERVER);

	h_send(&h, &c, IN, "GET /dying HTTP/1.1\r\n\r\n");
	h_exit(&h, 117);
	h_finish(&h);
	cr_assert_eq(h.nspans, 1);
	cr_expect_str_eq(span_status(h.spans[0]), "ERROR");
	cr_expect_eq(h.stats.proc_exits, 1);
}

/* Exits are kept for the agent's next sweep of the kernel's maps; those
 * past what it keeps are counted, their entries left to LRU eviction. */
Test(exchange, exits_past_those_kept_for_the_sweep_are_counted)
{
	uint32_t taken[8];

	for (uint32_t pid = 1000; pid < 1000 + 4096 + 3; pid++)
		h_exit(&h, pid);
	cr_expect_eq(tracker_take_exited(h.tracker, taken, 8), 8);
	h_finish(&h);
	cr_expect_eq(h.stats.proc_exits, 4096 + 3);
	cr_expect_eq(h.stats.exits_unswept, 3);
}

Test(exchange, half_request_then_close_makes_no_span)
{
	struct tconn c = h_open(&h, 118, 5, SONDE_ROLE_SERVER);

	h_send(&h, &c, IN, "GET /half HTTP/1.1\r\nHost: x\r\n");
	h_close(&h, &c, SONDE_CLOSE_LOCAL);
	h_finish(&h);
	cr_expect_eq(h.nspans, 0);
	cr_expect_eq(h.stats.partial_heads, 1);
}

Test(exchange, garbage_makes_no_span_and_next_request_is_traced)
{
	struct tconn c = h_open(&h, 119, 5, SONDE_ROLE_SERVER);

	h_send(&h, &c, IN, "GET \x01\x02\x03 garbage\r\n\r\n");
	h_send(&h, &c, OUT, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
	h_send(&h, &c, IN, "GET /good HTTP/1.1\r\n\r\n");
	h_send(&h, &c, OUT, ok_body("ok"));
	h_finish(&h);
	cr_assert_eq(h.nspans, 1);
	cr_expect_str_eq(span_str(h.spans[0], "url.path"), "/good");
	cr_expect_geq(h.stats.parse_errors, 1);
}

Test(exchange, incoming_traceparent_is_honoured)
{
	struct tconn c = h_open(&h, 120, 5, SONDE_ROLE_SERVER);
	const cJSON *ctx;

	h_send(&h, &c, IN, "GET /t HTTP/1.1\r\ntraceparent: "
			   "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n");
	h_send(&h, &c, OUT, ok_body(""));
	h_finish(&h);
	cr_assert_eq(h.nspans, 1);
	ctx = cJSON_GetObjectItem(h.spans[0], "context");
	cr_expect_str_eq(cJSON_GetObjectItem(ctx, "trace_id")->valuestring,
			 "0x4bf92f3577b34da6a3ce929d0e0e4736");
	cr_expect_str_eq(span_field(h.spans[0], "parent_id"), "0x00f067aa0ba902b7");
}

Test(exchange, connection_open_before_sonde_learns_role_from_traffic)
{
	struct tconn c = { .tgid = 121, .fd = 9, .gen = 5, .proto = SONDE_PROTO_HTTP1 };

	/* No conn event: the first data starts mid-response, then a request. */
	h_send(&h, &c, OUT, "tail of an old body");
	h_send(&h, &c, IN, "GET /later HTTP/1.1\r\n\r\n");
	h_send(&h, &c, OUT, ok_body("ok"));
	h_finish(&h);
	cr_assert_eq(h.nspans, 1);
	cr_expect_str_eq(span_field(h.spans[0], "kind"), "SpanKind.SERVER");
	cr_expect_str_eq(span_str(h.spans[0], "url.path"), "/later");
}

Test(exchange, out_of_order_events_are_reordered)
{
	struct tconn c = h_open(&h, 122, 5, SONDE_ROLE_SERVER);
	struct tconn late;
	const char *part1 = "GET /reordered HTTP/1.1\r\n";
	const char *part2 = "Host: h\r\n\r\n";

	late = c;
	h_lose(&h, &c, IN, strlen(part1));
	h_send(&h, &c, IN, part2);
	h_send(&h, &late, IN, part1);
	h_send(&h, &c, OUT, ok_body("ok"));
	h_finish(&h);
	cr_assert_eq(h.nspans, 1);
	cr_expect_str_eq(span_str(h.spans[0], "url.path"), "/reordered");
	cr_expect_eq(h.stats.reorder_held, 1);
	cr_expect_eq(h.stats.reorder_gaps, 0);
}

Test(exchange, fd_reuse_with_new_generation_starts_a_new_connection)
{
	struct tconn c = h_open(&h, 123, 5, SONDE_ROLE_SERVER);
	struct tconn reused;

	h_send(&h, &c, IN, "GET /old HTTP/1.1\r\n\r\n");
	reused = h_open(&h, 123, 5, SONDE_ROLE_CLIENT);
	h_send(&h, &reused, OUT, "GET /new HTTP/1.1\r\n\r\n");
	h_send(&h, &reused, IN, ok_body("ok"));
	h_finish(&h);
	cr_assert_eq(h.nspans, 2);
	/* The client span leaves first: the server span waited for a client
	 * at the other end of its loopback connection. */
	cr_expect_str_eq(span_str(h.spans[1], "url.path"), "/old");
	cr_expect_str_eq(span_status(h.spans[1]), "ERROR");
	cr_expect_str_eq(span_field(h.spans[0], "kind"), "SpanKind.CLIENT");
}

/* The same pipelined conversation cut at random points must give the same
 * spans: reassembly and parsing may not depend on syscall boundaries. */
Test(exchange, random_split_points_give_identical_spans)
{
	const char *reqs = "POST /p/1 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
			   "GET /p/2 HTTP/1.1\r\nUser-Agent: ua\r\n\r\n"
			   "PUT /p/3 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
	const char *resps = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
			    "HTTP/1.1 100 Continue\r\n\r\n"
			    "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnone\r\n0\r\n\r\n"
			    "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n";
	static const long want_status[] = { 200, 404, 500 };
	static const long want_req_body[] = { 5, 0, 3 };
	static const char *const want_path[] = { "/p/1", "/p/2", "/p/3" };

	srand(1234);
	for (int round = 0; round < 200; round++) {
		struct harness r;
		struct tconn c;
		const char *streams[2] = { reqs, resps };

		h_init(&r, false);
		c = h_open(&r, 200, 5, SONDE_ROLE_SERVER);
		for (int dir = 0; dir < 2; dir++) {
			const char *p = streams[dir];
			size_t left = strlen(p);

			while (left) {
				size_t n = 1 + (size_t)rand() % (left < 40 ? left : 40);

				h_io(&r, &c, dir == 0 ? IN : OUT, p, n, n);
				p += n;
				left -= n;
			}
		}
		h_finish(&r);
		cr_assert_eq(r.nspans, 3, "round %d", round);
		for (int i = 0; i < 3; i++) {
			cr_assert_str_eq(span_str(r.spans[i], "url.path"), want_path[i]);
			cr_assert_eq(span_int(r.spans[i], "http.response.status_code"), want_status[i]);
			cr_assert_eq(span_int(r.spans[i], "http.request.body.size"), want_req_body[i]);
		}
		h_free(&r);
	}
}

Test(exchange, query_kept_only_when_configured)
{
	struct harness q;
	struct tconn c;

	h_init(&q, true);
	c = h_open(&q, 124, 7, SONDE_ROLE_CLIENT);
	h_send(&q, &c, OUT, "GET /search?q=x&page=2 HTTP/1.1\r\nHost: svc\r\n\r\n");
	h_send(&q, &c, IN, ok_body(""));
	h_finish(&q);
	cr_assert_eq(q.nspans, 1);
	cr_expect_str_eq(span_str(q.spans[0], "url.query"), "q=x&page=2");
	cr_expect_str_eq(span_str(q.spans[0], "url.full"), "http://svc:8080/search?q=x&page=2");
	h_free(&q);
}

Test(exchange, absolute_form_targets_give_the_path)
{
	struct tconn c = h_open(&h, 127, 5, SONDE_ROLE_SERVER);

	h_send(&h, &c, IN, "GET http://proxy.example:8080/a/b?x=1 HTTP/1.1\r\n\r\n");
	h_send(&h, &c, OUT, ok_body(""));
	h_send(&h, &c, IN, "GET http://proxy.example HTTP/1.1\r\n\r\n");
	h_send(&h, &c, OUT, ok_body(""));
	h_finish(&h);
	cr_assert_eq(h.nspans, 2);
	cr_expect_str_eq(span_str(h.spans[0], "url.path"), "/a/b");
	cr_expect_str_eq(span_str(h.spans[1], "url.path"), "/");
}

Test(exchange, timestamps_follow_the_kernel_clock)
{
	struct tconn c = h_open(&h, 125, 5, SONDE_ROLE_SERVER);

	h_send(&h, &c, IN, "GET /t HTTP/1.1\r\n\r\n");
	h_send(&h, &c, OUT, ok_body("x"));
	h_finish(&h);
	cr_assert_eq(h.nspans, 1);
	/* Request read ends at t, response write 1 us later: end > start. */
	cr_expect_str_lt(span_field(h.spans[0], "start_time"), span_field(h.spans[0], "end_time"));
}

/* What the RED metrics will count: one summary per exchange, whatever its
 * protocol and however it ended, agreeing with the span. */
Test(exchange, every_exchange_is_summarized)
{
	struct tconn srv = h_open(&h, 128, 5, SONDE_ROLE_SERVER);
	struct tconn cli = h_open(&h, 129, 6, SONDE_ROLE_CLIENT);

	h_send(&h, &srv, IN, "GET /items/42 HTTP/1.1\r\n\r\n");
	h_send(&h, &srv, OUT, ok_body("x"));
	h_send(&h, &cli, OUT, "POST /jobs HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
	h_send(&h, &cli, IN, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
	h_send(&h, &cli, OUT, "GET /never HTTP/1.1\r\n\r\n");
	h_close(&h, &cli, SONDE_CLOSE_LOCAL);
	h_finish(&h);
	cr_assert_eq(h.nspans, 3);
	cr_assert_eq(h.nsummaries, 3);
	cr_expect_eq(h.summaries[0].proto, SONDE_PROTO_HTTP1);
	cr_expect_eq(h.summaries[0].kind, SPAN_KIND_SERVER);
	cr_expect_str_eq(h.summaries[0].name, "GET /items/{id}");
	cr_expect_not(h.summaries[0].error);
	cr_expect_lt(h.summaries[0].start_ns, h.summaries[0].end_ns);
	cr_expect_eq(h.summaries[1].kind, SPAN_KIND_CLIENT);
	cr_expect_str_eq(h.summaries[1].name, "POST");
	cr_expect(h.summaries[1].error);
	cr_expect_str_eq(h.summaries[2].name, "GET");
	cr_expect(h.summaries[2].error, "cut off by the close");
}

/* A head of `total` bytes: the start line, Host, a Cookie that fills it,
 * and one header after the cookie. */
static char *big_head(const char *start_line, size_t total)
{
	static const char after[] = "\r\nX-After: 1\r\n\r\n";
	char *head = malloc(total + 1);
	size_t len;

	cr_assert_not_null(head);
	len = (size_t)sprintf(head, "%sHost: big.example\r\nCookie: ", start_line);
	cr_assert_gt(total, len + sizeof(after));
	memset(head + len, 'c', total - len - (sizeof(after) - 1));
	memcpy(head + total - (sizeof(after) - 1), after, sizeof(after));
	return head;
}

/* One call as the kernel reports it with the default 512-byte capture:
 * the first bytes, and the last 16 when more was moved. */
static void call(struct tconn *c, int dir, const char *data, size_t len)
{
	size_t captured = len < 512 ? len : 512;
	size_t tail = len > captured + SONDE_TAIL_MAX ? SONDE_TAIL_MAX : 0;

	h_io_tail(&h, c, dir, data, len, captured, tail);
}

/* Heads longer than the capture, in two calls split anywhere: each still
 * makes its span, with its path and status, marked when headers past the
 * capture were not seen. */
static void head_split_everywhere(size_t size, size_t stride)
{
	char *head = big_head("GET /big/7 HTTP/1.1\r\n", size);
	struct harness q;
	int expected = 0;

	h_init(&q, false);
	for (size_t cut = 1; cut < size; cut += stride, expected++) {
		struct tconn c = h_open(&q, 1000 + (uint32_t)expected, 5, SONDE_ROLE_SERVER);
		size_t rest = size - cut;

		h_io_tail(&q, &c, IN, head, cut, cut < 512 ? cut : 512,
			  cut > 512 + SONDE_TAIL_MAX ? SONDE_TAIL_MAX : 0);
		h_io_tail(&q, &c, IN, head + cut, rest, rest < 512 ? rest : 512,
			  rest > 512 + SONDE_TAIL_MAX ? SONDE_TAIL_MAX : 0);
		h_send(&q, &c, OUT, ok_body("ok"));
		h_close(&q, &c, SONDE_CLOSE_LOCAL);
	}
	h_finish(&q);
	free(head);
	cr_assert_eq(q.nspans, expected, "%zu bytes: %d of %d", size, q.nspans, expected);
	for (int i = 0; i < q.nspans; i++) {
		cr_expect_str_eq(span_field(q.spans[i], "name"), "GET /big/{id}");
		cr_expect_eq(span_int(q.spans[i], "http.response.status_code"), 200);
		cr_expect_str_eq(span_status(q.spans[i]), "UNSET");
	}
	cr_expect_eq(q.stats.partial_heads, 0);
	cr_expect_eq(q.stats.orphan_responses, 0);
	h_free(&q);
}

/* Heads longer than the capture, in two calls split anywhere (every
 * point of a 512-byte head, a few hundred of the larger ones): each still
 * makes its span, with its path and status. */
Test(exchange, heads_longer_than_the_capture_make_their_span)
{
	head_split_everywhere(512, 1);
	head_split_everywhere(8192, 8192 / 300);
	head_split_everywhere(16384, 16384 / 300);
	head_split_everywhere(32768, 32768 / 300);
}

Test(exchange, a_cut_head_is_marked)
{
	char *head = big_head("POST /upload HTTP/1.1\r\n", 600);
	struct tconn c = h_open(&h, 1100, 5, SONDE_ROLE_SERVER);

	call(&c, IN, head, 600);
	h_send(&h, &c, OUT, ok_body(""));
	h_finish(&h);
	free(head);
	cr_assert_eq(h.nspans, 1);
	cr_expect_str_eq(span_field(h.spans[0], "name"), "POST /upload");
	cr_expect_eq(span_has(h.spans[0], "sonde.http.headers_captured"), true);
	cr_expect_not(span_has(h.spans[0], "http.request.body.size"), "its framing is unknown");
}

/* A response whose head is past the capture (Set-Cookie, CSP) still says
 * its status: a 5xx must not read as UNSET. */
Test(exchange, a_response_head_past_the_capture_keeps_its_status)
{
	char *head = big_head("HTTP/1.1 503 Service Unavailable\r\n", 2800);
	struct tconn srv = h_open(&h, 1101, 5, SONDE_ROLE_SERVER);
	struct tconn cli = h_open(&h, 1102, 6, SONDE_ROLE_CLIENT);

	h_send(&h, &srv, IN, "GET /status HTTP/1.1\r\n\r\n");
	call(&srv, OUT, head, 2800);
	h_send(&h, &srv, IN, "GET /next HTTP/1.1\r\n\r\n");
	h_send(&h, &srv, OUT, ok_body("n"));
	h_send(&h, &cli, OUT, "GET /status HTTP/1.1\r\n\r\n");
	call(&cli, IN, head, 2800);
	h_finish(&h);
	free(head);
	cr_assert_eq(h.nspans, 3);
	for (int i = 0; i < 3; i++) {
		const cJSON *s = h.spans[i];

		if (strcmp(span_str(s, "url.path"), "/next") == 0) {
			cr_expect_eq(span_int(s, "http.response.status_code"), 200);
			continue;
		}
		cr_expect_eq(span_int(s, "http.response.status_code"), 503);
		cr_expect_str_eq(span_status(s), "ERROR");
		cr_expect_eq(span_has(s, "sonde.http.headers_captured"), true);
	}
}

/* A pipelined write as the kernel sends it when the capture shows more
 * than one message: its first 512 bytes, then the rest in whole chunks. */
static void pipelined_call(struct harness *q, struct tconn *c, int dir, const char *data,
			   size_t len)
{
	size_t first = len < 512 ? len : 512;

	h_io(q, c, dir, data, first, first);
	for (size_t off = first; off < len; off += SONDE_CAPTURE_MAX) {
		size_t chunk = len - off < SONDE_CAPTURE_MAX ? len - off : SONDE_CAPTURE_MAX;

		h_io(q, c, dir, data + off, chunk, chunk);
	}
}

static void pipeline_of(int depth)
{
	size_t size = (size_t)depth * 40, len = 0;
	char *reqs = malloc(size);
	struct harness q;
	struct tconn c;

	cr_assert_not_null(reqs);
	for (int i = 0; i < depth; i++)
		len += (size_t)sprintf(reqs + len, "GET /%c/%d HTTP/1.1\r\n\r\n", i % 3 ? 'p' : 'q', i);
	h_init(&q, false);
	c = h_open(&q, 1200, 5, SONDE_ROLE_SERVER);
	pipelined_call(&q, &c, IN, reqs, len);
	for (int i = 0; i < depth; i++)
		h_send(&q, &c, OUT, i % 3 ? "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
					  : "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
	h_finish(&q);
	free(reqs);
	cr_assert_eq(q.nspans, depth);
	for (int i = 0; i < q.nspans; i++) {
		const char *path = span_str(q.spans[i], "url.path");

		cr_expect_eq(span_int(q.spans[i], "http.response.status_code"),
			     path[1] == 'q' ? 404 : 200, "%s", path);
	}
	cr_expect_eq(q.stats.pending_overflow, 0);
	cr_expect_eq(q.stats.orphan_responses, 0);
	h_free(&q);
}

Test(exchange, pipelines_of_50_and_1000_pair_exactly)
{
	pipeline_of(50);
	pipeline_of(1000);
}

/* One request more than can wait: pairing the answers after it would be
 * off by one, so the connection is no longer parsed and what waited ends
 * without an answer; no span gets another request's status. */
Test(exchange, too_many_waiting_requests_stop_pairing_rather_than_shift_it)
{
	struct harness q;
	struct tconn c;

	h_init_pending(&q, false, 4);
	c = h_open(&q, 1300, 5, SONDE_ROLE_CLIENT);
	h_send(&q, &c, OUT, "GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n"
			    "GET /4 HTTP/1.1\r\n\r\nGET /5 HTTP/1.1\r\n\r\nGET /6 HTTP/1.1\r\n\r\n");
	for (int i = 0; i < 6; i++)
		h_send(&q, &c, IN, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
	h_finish(&q);
	cr_assert_eq(q.nspans, 4);
	for (int i = 0; i < 4; i++)
		cr_expect_not(span_has(q.spans[i], "http.response.status_code"));
	cr_expect_eq(q.stats.pending_overflow, 1);
	cr_expect_eq(q.stats.parsing_stopped, 1);
	cr_expect_eq(q.stats.orphan_responses, 0);
	h_free(&q);
}

/* http.server.active_requests: a request counts from its head to its end,
 * whichever way it ends (answered, cut off, left at exit); a client's
 * requests and a half-read head do not count. */
Test(exchange, requests_in_progress_are_counted_until_they_end)
{
	struct harness q;
	struct tconn srv, cut, cli;

	h_init(&q, false);
	srv = h_open(&q, 1400, 5, SONDE_ROLE_SERVER);
	cut = h_open(&q, 1400, 6, SONDE_ROLE_SERVER);
	cli = h_open(&q, 1401, 5, SONDE_ROLE_CLIENT);
	h_send(&q, &srv, IN, "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\nHo");
	cr_expect_eq(q.active, 2, "two heads read, the third is not complete");
	h_send(&q, &cli, OUT, "GET /x HTTP/1.1\r\n\r\n");
	h_send(&q, &cut, IN, "POST /d HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
	cr_expect_eq(q.active, 3, "client requests are not server requests");
	h_send(&q, &srv, OUT, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
	cr_expect_eq(q.active, 2);
	h_close(&q, &cut, SONDE_CLOSE_RESET);
	tracker_tick(q.tracker, q.now);
	cr_expect_eq(q.active, 1, "cut off by the reset");
	h_send(&q, &srv, IN, "st: a\r\n\r\n");
	cr_expect_eq(q.active, 2);
	h_finish(&q);
	h_free(&q);
	cr_expect_eq(q.active, 0, "what was left ended at exit");
	cr_expect_eq(q.began, 4);
}

/* The scope rules, through the tracker: a process left out makes no span
 * and its records are counted; one included by a port it serves is traced
 * from its first connection on that port, its calls after it too. */
Test(exchange, processes_the_scope_rules_leave_out_make_no_spans)
{
	struct scope_texts texts = { .include = "port:8080", .exclude = "pid:100" };
	char err[128];
	struct scope *s = scope_new(&texts, h.proc_root, err, sizeof(err));
	struct tconn excluded, served, called, unpicked;

	cr_assert_not_null(s, "%s", err);
	proc_table_set_scope(h.procs, s);
	excluded = h_open_ports(&h, 100, 5, SONDE_ROLE_SERVER, 8080, 40000);
	h_send(&h, &excluded, IN, "GET /a HTTP/1.1\r\n\r\n");
	h_send(&h, &excluded, OUT, ok_body("a"));
	served = h_open_ports(&h, 200, 5, SONDE_ROLE_SERVER, 8080, 40001);
	called = h_open_ports(&h, 200, 6, SONDE_ROLE_CLIENT, 40002, 9000);
	unpicked = h_open_ports(&h, 300, 5, SONDE_ROLE_CLIENT, 40003, 9000);
	h_send(&h, &served, IN, "GET /b HTTP/1.1\r\n\r\n");
	h_send(&h, &called, OUT, "GET /c HTTP/1.1\r\n\r\n");
	h_send(&h, &called, IN, ok_body("c"));
	h_send(&h, &served, OUT, ok_body("b"));
	h_send(&h, &unpicked, OUT, "GET /d HTTP/1.1\r\n\r\n");
	h_send(&h, &unpicked, IN, ok_body("d"));
	h_finish(&h);
	cr_assert_eq(h.nspans, 2);
	for (int i = 0; i < 2; i++) {
		const char *kind = span_field(h.spans[i], "kind");
		bool server = strcmp(kind, "SpanKind.SERVER") == 0;

		cr_expect_str_eq(span_str(h.spans[i], server ? "url.path" : "url.full"),
				 server ? "/b" : "http://127.0.0.1:9000/c", "%s", kind);
	}
	cr_expect_eq(h.stats.conns_scoped_out, 2, "pid 100's and pid 300's");
	cr_expect_eq(h.stats.events_scoped_out, 4);
	scope_free(s);
}

Test(exchange, a_connection_moved_to_another_fd_answers_its_request_there)
{
	struct tconn c = h_open(&h, 116, 0, SONDE_ROLE_SERVER);

	h_send(&h, &c, IN, "GET /asked HTTP/1.1\r\n\r\n");
	h_move(&h, &c, 1);
	h_send(&h, &c, OUT, ok_body("ok"));
	h_send(&h, &c, IN, "GET /after HTTP/1.1\r\n\r\n");
	h_send(&h, &c, OUT, ok_body("ok"));
	h_finish(&h);
	cr_assert_eq(h.nspans, 2);
	cr_expect_str_eq(span_str(h.spans[0], "url.path"), "/asked");
	cr_expect_str_eq(span_status(h.spans[0]), "UNSET");
	cr_expect_eq(span_int(h.spans[0], "http.response.status_code"), 200);
	cr_expect_str_eq(span_str(h.spans[1], "url.path"), "/after");
	cr_expect_eq(h.stats.conns_moved, 1);
	cr_expect_eq(h.stats.conns_ended, 0);
}

Test(exchange, a_connection_moved_onto_an_fd_ends_the_one_left_there)
{
	struct tconn left = h_open(&h, 117, 4, SONDE_ROLE_SERVER);
	struct tconn c = h_open(&h, 117, 3, SONDE_ROLE_SERVER);

	h_send(&h, &left, IN, "GET /left HTTP/1.1\r\n\r\n");
	h_send(&h, &c, IN, "GET /moved HTTP/1.1\r\n\r\n");
	h_move(&h, &c, 4);
	h_send(&h, &c, OUT, ok_body("ok"));
	h_finish(&h);
	cr_assert_eq(h.nspans, 2);
	cr_expect_str_eq(span_str(h.spans[0], "url.path"), "/left");
	cr_expect_str_eq(span_status(h.spans[0]), "ERROR");
	cr_expect_str_eq(span_str(h.spans[1], "url.path"), "/moved");
	cr_expect_str_eq(span_status(h.spans[1]), "UNSET");
}
