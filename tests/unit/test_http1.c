/* The HTTP/1.x stream parser on its own: what it accepts, what it refuses. */
#include "http1.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct record {
	int heads, completes, drops;
	int works_out;     /* work areas taken and not given back */
	bool no_memory;    /* take_work finds none */
	enum http1_drop last_drop;
	struct http1_msg last;
	bool skip_next_body;
};

static bool on_head(void *owner, int tag, const struct http1_msg *msg)
{
	struct record *r = owner;

	(void)tag;
	(void)msg;
	r->heads++;
	return r->skip_next_body;
}

static void on_complete(void *owner, int tag, const struct http1_msg *msg)
{
	struct record *r = owner;

	(void)tag;
	r->completes++;
	r->last = *msg;
}

static void on_drop(void *owner, int tag, enum http1_drop why, bool had_head)
{
	struct record *r = owner;

	(void)tag;
	(void)had_head;
	r->drops++;
	r->last_drop = why;
}

static struct http1_work *take_work(void *owner, int tag)
{
	struct record *r = owner;
	struct http1_work *w;

	(void)tag;
	if (r->no_memory)
		return NULL;
	w = malloc(sizeof(*w));
	cr_assert_not_null(w);
	r->works_out++;
	return w;
}

static void give_work(void *owner, int tag, struct http1_work *w)
{
	struct record *r = owner;

	(void)tag;
	r->works_out--;
	free(w);
}

static const struct http1_callbacks cbs = { take_work, give_work, on_head, on_complete, on_drop };

static void feed(struct http1_stream *s, const char *text)
{
	struct piece c = { .data = (const uint8_t *)text, .captured = (uint32_t)strlen(text), .ts = 1 };

	http1_stream_feed(s, &c);
}

static struct http1_stream stream;
static struct record rec;

static void open_stream(enum http1_type type)
{
	memset(&rec, 0, sizeof(rec));
	http1_stream_init(&stream, type, &cbs, &rec, 0);
	http1_stream_start(&stream);
}

Test(http1, rejects_bad_header_names_and_versions)
{
	open_stream(HTTP1_REQUEST);
	feed(&stream, "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n");
	cr_expect_eq(rec.drops, 1);
	cr_expect_eq(rec.last_drop, HTTP1_DROP_PARSE_ERROR);
	cr_expect_eq(stream.state, HTTP1_LOST);
	open_stream(HTTP1_REQUEST);
	feed(&stream, "GET / HTTP/2.0\r\n\r\n");
	cr_expect_eq(rec.drops, 1);
	open_stream(HTTP1_REQUEST);
	feed(&stream, "FROB / HTTP/1.1\r\n\r\n");
	cr_expect_eq(rec.drops, 1);
	open_stream(HTTP1_RESPONSE);
	feed(&stream, "HTTP/1.1 2x0 OK\r\n\r\n");
	cr_expect_eq(rec.drops, 1);
}

Test(http1, conflicting_content_lengths_are_an_error)
{
	open_stream(HTTP1_REQUEST);
	feed(&stream, "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc");
	cr_expect_eq(rec.drops, 1);
	cr_expect_eq(rec.completes, 0);
}

Test(http1, chunked_as_last_coding_with_trailers)
{
	open_stream(HTTP1_RESPONSE);
	feed(&stream, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"
		      "4;name=val\r\nabcd\r\n0\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\n");
	cr_expect_eq(rec.completes, 1);
	cr_expect_eq(rec.last.body_size, 4);
	cr_expect_eq(stream.phase, PHASE_IDLE);
}

Test(http1, chunked_not_last_means_read_to_close)
{
	open_stream(HTTP1_RESPONSE);
	feed(&stream, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nraw bytes");
	cr_expect_eq(rec.completes, 0);
	http1_stream_eof(&stream, 2);
	cr_expect_eq(rec.completes, 1);
	cr_expect_eq(rec.last.body_size, 9);
}

/* Names are compared a word at a time: a difference in any byte, first,
 * middle or last, and a '_' where '-' belongs, must not match. */
Test(http1, header_names_match_whole_and_case_blind)
{
	static const char *near_misses[] = { "Dontent-Length", "Content-Lengtg", "Content_Length",
					     "ContentXLength", "Content-Length2" };

	for (size_t i = 0; i < sizeof(near_misses) / sizeof(near_misses[0]); i++) {
		char resp[128];

		snprintf(resp, sizeof(resp), "HTTP/1.1 200 OK\r\n%s: 3\r\n\r\nabcdef",
			 near_misses[i]);
		open_stream(HTTP1_RESPONSE);
		feed(&stream, resp);
		cr_expect_eq(stream.phase, PHASE_BODY_EOF, "%s framed the body", near_misses[i]);
	}
	open_stream(HTTP1_RESPONSE);
	feed(&stream, "HTTP/1.1 200 OK\r\nCONTENT-length: 3\r\ncOnNeCtIoN: CLOSE\r\n\r\nabc");
	cr_assert_eq(rec.completes, 1);
	cr_expect_eq(rec.last.body_size, 3);
	cr_expect_not(rec.last.keep_alive);
	open_stream(HTTP1_REQUEST);
	feed(&stream, "GET / HTTP/1.1\r\nHOST: h\r\nTRACEPARENT: t\r\nUser-agent: u\r\n\r\n");
	cr_assert_eq(rec.completes, 1);
	cr_expect_str_eq(rec.last.host, "h");
	cr_expect_str_eq(rec.last.traceparent, "t");
	cr_expect_str_eq(rec.last.user_agent, "u");
}

Test(http1, keeps_only_the_headers_it_uses)
{
	open_stream(HTTP1_REQUEST);
	feed(&stream, "GET /x HTTP/1.0\r\nHOST:  example.org \r\nuser-agent: a\r\n b-folded\r\n"
		      "Connection: Keep-Alive\r\nAuthorization: secret\r\n\r\n");
	cr_assert_eq(rec.completes, 1);
	cr_expect_str_eq(rec.last.host, "example.org");
	cr_expect_str_eq(rec.last.user_agent, "a");
	cr_expect(rec.last.keep_alive);
	cr_expect_eq(rec.last.version_minor, 0);
	cr_expect_null(memmem(&rec.last, sizeof(rec.last), "secret", 6));
}

Test(http1, long_target_is_truncated_and_flagged)
{
	static char req[6000];
	size_t n = (size_t)sprintf(req, "GET /");

	memset(req + n, 'a', 5000);
	n += 5000;
	sprintf(req + n, " HTTP/1.1\r\nHost: h\r\n\r\n");
	open_stream(HTTP1_REQUEST);
	feed(&stream, req);
	cr_assert_eq(rec.completes, 1);
	cr_expect(rec.last.flags & HTTP1_TARGET_TRUNCATED);
	cr_expect_eq(rec.last.target_len, HTTP1_TARGET_MAX - 1);
	cr_expect_str_eq(rec.last.host, "h");
}

Test(http1, switching_protocols_stops_parsing)
{
	open_stream(HTTP1_RESPONSE);
	feed(&stream, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
		      "Connection: Upgrade\r\n\r\n\x81\x05hello");
	cr_expect_eq(rec.completes, 1);
	cr_expect_eq(stream.state, HTTP1_STOPPED);
	cr_expect_eq(rec.drops, 0);
}

Test(http1, upgrade_request_waits_for_the_next_request)
{
	open_stream(HTTP1_REQUEST);
	feed(&stream, "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
	feed(&stream, "\x81\x85 masked frame bytes");
	cr_expect_eq(rec.completes, 1);
	cr_expect_eq(rec.drops, 0);
	feed(&stream, "GET /after HTTP/1.1\r\n\r\n");
	cr_expect_eq(rec.completes, 2);
	cr_expect_str_eq(rec.last.target, "/after");
}

Test(http1, head_response_body_skipped_on_request)
{
	open_stream(HTTP1_RESPONSE);
	rec.skip_next_body = true;
	feed(&stream, "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n");
	cr_expect_eq(rec.completes, 1);
	cr_expect_eq(stream.phase, PHASE_IDLE);
}

Test(http1, message_start_recognises_split_prefixes)
{
	cr_expect(http1_is_message_start(HTTP1_REQUEST, (const uint8_t *)"PO", 2));
	cr_expect(http1_is_message_start(HTTP1_RESPONSE, (const uint8_t *)"HTTP/1.1 2", 10));
	cr_expect_not(http1_is_message_start(HTTP1_REQUEST, (const uint8_t *)"HTTP/1.1", 8));
	cr_expect_not(http1_is_message_start(HTTP1_BOTH, (const uint8_t *)"\x16\x03\x01", 3));
	cr_expect_not(http1_is_message_start(HTTP1_BOTH, (const uint8_t *)"GETX", 4));
}

Test(http1, oversized_head_loses_sync)
{
	static char big[100 * 1024];

	open_stream(HTTP1_REQUEST);
	feed(&stream, "GET / HTTP/1.1\r\n");
	for (int i = 0; i < 90; i++) {
		memset(big, 'a', 1000);
		memcpy(big, "X-Pad: ", 7);
		strcpy(big + 1000, "\r\n");
		feed(&stream, big);
	}
	cr_expect_eq(rec.drops, 1);
	cr_expect_eq(rec.completes, 0);
}

/* An idle keep-alive stream holds no work area: one is taken when a
 * message begins (held while its head is split over pieces) and given
 * back when it ends, whichever way. */
Test(http1, work_area_is_held_only_inside_a_message)
{
	open_stream(HTTP1_REQUEST);
	feed(&stream, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
	cr_expect_eq(rec.works_out, 0);
	feed(&stream, "GET /b HTTP/1.1\r\nHo");
	cr_expect_eq(rec.works_out, 1);
	feed(&stream, "st: x\r\n\r\n");
	cr_expect_eq(rec.completes, 2);
	cr_expect_eq(rec.works_out, 0);
	feed(&stream, "POST /c HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
	cr_expect_eq(rec.works_out, 1);
	http1_stream_release(&stream);
	cr_expect_eq(rec.works_out, 0);
}

Test(http1, a_message_with_no_work_area_is_dropped_and_the_next_parsed)
{
	open_stream(HTTP1_REQUEST);
	rec.no_memory = true;
	feed(&stream, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
	cr_expect_eq(rec.drops, 1);
	cr_expect_eq(rec.last_drop, HTTP1_DROP_NO_MEMORY);
	cr_expect_eq(rec.heads, 0);
	cr_expect_eq(stream.state, HTTP1_LOST);
	rec.no_memory = false;
	feed(&stream, "GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
	cr_expect_eq(rec.completes, 1);
	cr_expect_str_eq(rec.last.target, "/b");
	cr_expect_eq(rec.works_out, 0);
}
