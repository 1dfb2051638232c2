/* Redis client spans through the tracker: pairing, pipelining, errors,
 * push modes, pickup mid-stream, holes and garbage. */
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

TestSuite(redis, .init = setup, .fini = teardown);

static struct tconn client(uint32_t tgid)
{
	return h_open_proto(&h, tgid, 5, SONDE_ROLE_CLIENT, SONDE_PROTO_REDIS, 6379);
}

/* No attribute of any span holds one of these. */
static void expect_no_literal(const char *const *literals)
{
	for (int i = 0; i < h.nspans; i++) {
		char *text = cJSON_PrintUnformatted(cJSON_GetObjectItem(h.spans[i], "attributes"));

		for (const char *const *l = literals; *l; l++)
			cr_expect_null(strstr(text, *l), "%s in %s", *l, text);
		free(text);
	}
}

Test(redis, commands_are_client_spans_without_values)
{
	struct tconn c = client(200);
	static const char *const literals[] = { "user:42", "s3cret", NULL };

	h_send(&h, &c, OUT, "*3\r\n$3\r\nSET\r\n$7\r\nuser:42\r\n$6\r\ns3cret\r\n");
	h_send(&h, &c, IN, "+OK\r\n");
	h_send(&h, &c, OUT, "*2\r\n$3\r\nget\r\n$7\r\nuser:42\r\n");
	h_send(&h, &c, IN, "$6\r\ns3cret\r\n");
	h_finish(&h);
	cr_assert_eq(h.nspans, 2);
	cr_expect_str_eq(span_field(h.spans[0], "name"), "SET");
	cr_expect_str_eq(span_field(h.spans[0], "kind"), "SpanKind.CLIENT");
	cr_expect_str_eq(span_str(h.spans[0], "db.system.name"), "redis");
	cr_expect_str_eq(span_str(h.spans[0], "db.operation.name"), "SET");
	cr_expect_str_eq(span_str(h.spans[0], "db.query.text"), "SET ? ?");
	cr_expect_str_eq(span_str(h.spans[0], "db.namespace"), "0");
	cr_expect_str_eq(span_str(h.spans[0], "server.address"), "127.0.0.2");
	cr_expect_eq(span_int(h.spans[0], "server.port"), 6379);
	cr_expect_str_eq(span_status(h.spans[0]), "UNSET");
	cr_expect_str_eq(span_field(h.spans[1], "name"), "GET");
	cr_expect_str_eq(span_str(h.spans[1], "db.query.text"), "GET ?");
	cr_expect_not(span_has(h.spans[1], "db.collection.name"));
	expect_no_literal(literals);
	cr_expect_eq(h.nsummaries, 2);
	cr_expect_eq(h.summaries[0].proto, SONDE_PROTO_REDIS);
}

Test(redis, pipelined_commands_pair_in_order)
{
	struct tconn c = client(201);

	h_send(&h, &c, OUT, "*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n"
			    "*3\r\n$5\r\nLPUSH\r\n$1\r\nq\r\n$1\r\nx\r\n");
	h_send(&h, &c, IN, "+PONG\r\n:7\r\n-WRONGTYPE Operation against a key holding the wrong kind\r\n");
	h_finish(&h);
	cr_assert_eq(h.nspans, 3);
	cr_expect_str_eq(span_field(h.spans[0], "name"), "PING");
	cr_expect_str_eq(span_field(h.spans[1], "name"), "INCR");
	cr_expect_str_eq(span_field(h.spans[2], "name"), "LPUSH");
	cr_expect_str_eq(span_status(h.spans[2]), "ERROR");
	cr_expect_str_eq(span_str(h.spans[2], "error.type"), "WRONGTYPE");
	cr_expect_str_eq(span_str(h.spans[2], "db.response.status_code"), "WRONGTYPE");
	cr_expect_str_eq(span_status(h.spans[1]), "UNSET");
}

/* The same exchanges, their bytes split at every point. */
Test(redis, any_split_point_gives_the_same_spans)
{
	const char *cmds = "*2\r\n$6\r\nEXISTS\r\n$3\r\nkey\r\n*1\r\n$4\r\nPING\r\n";
	const char *replies = "*2\r\n:1\r\n%1\r\n+a\r\n$2\r\nbb\r\n+PONG\r\n";
	size_t clen = strlen(cmds), rlen = strlen(replies);

	for (size_t cut = 1; cut < rlen; cut++) {
		struct tconn c = client(300 + (uint32_t)cut);
		size_t ccut = cut % clen ? cut % clen : 1;

		h_io(&h, &c, OUT, cmds, ccut, ccut);
		h_io(&h, &c, OUT, cmds + ccut, clen - ccut, clen - ccut);
		h_io(&h, &c, IN, replies, cut, cut);
		h_io(&h, &c, IN, replies + cut, rlen - cut, rlen - cut);
	}
	h_finish(&h);
	cr_assert_eq(h.nspans, (int)(rlen - 1) * 2);
	for (int i = 0; i < h.nspans; i++)
		cr_expect_str_eq(span_field(h.spans[i], "name"), i % 2 ? "PING" : "EXISTS");
	cr_expect_eq(h.stats.orphan_responses, 0);
	cr_expect_eq(h.stats.parse_errors, 0);
}

Test(redis, select_sets_the_namespace_and_subcommands_stay)
{
	struct tconn c = client(202);

	h_send(&h, &c, OUT, "*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n");
	h_send(&h, &c, IN, "+OK\r\n");
	h_send(&h, &c, OUT, "*3\r\n$6\r\nCLIENT\r\n$7\r\nsetname\r\n$3\r\napp\r\n");
	h_send(&h, &c, IN, "+OK\r\n");
	h_finish(&h);
	cr_assert_eq(h.nspans, 2);
	cr_expect_str_eq(span_str(h.spans[0], "db.namespace"), "0");
	cr_expect_str_eq(span_str(h.spans[1], "db.namespace"), "3");
	cr_expect_str_eq(span_str(h.spans[1], "db.query.text"), "CLIENT SETNAME ?");
}

Test(redis, subscribe_makes_one_span_and_pushes_none)
{
	struct tconn c = client(203);

	h_send(&h, &c, OUT, "*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\nnews\r\n");
	h_send(&h, &c, IN, "*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n");
	for (int i = 0; i < 5; i++)
		h_send(&h, &c, IN, "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n");
	h_finish(&h);
	cr_assert_eq(h.nspans, 1);
	cr_expect_str_eq(span_field(h.spans[0], "name"), "SUBSCRIBE");
	cr_expect_eq(h.stats.parsing_stopped, 1);
	cr_expect_eq(h.stats.orphan_responses, 0);
}

Test(redis, resp3_pushes_answer_nothing)
{
	struct tconn c = client(204);

	h_send(&h, &c, OUT, "*1\r\n$4\r\nPING\r\n");
	h_send(&h, &c, IN, ">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n|1\r\n+ttl\r\n:3\r\n+PONG\r\n");
	h_finish(&h);
	cr_assert_eq(h.nspans, 1);
	cr_expect_str_eq(span_status(h.spans[0]), "UNSET");
	cr_expect_eq(h.stats.orphan_responses, 0);
}

Test(redis, inline_commands_and_pickup_mid_stream)
{
	/* No conn event: a pooled connection opened before sonde. */
	struct tconn c = { .tgid = 205, .fd = 9, .gen = 5, .proto = SONDE_PROTO_REDIS };

	h_send(&h, &c, OUT, "PING\r\n");
	h_send(&h, &c, IN, "+PONG\r\n");
	h_send(&h, &c, OUT, "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
	h_send(&h, &c, IN, "$-1\r\n");
	h_finish(&h);
	cr_assert_eq(h.nspans, 2);
	cr_expect_str_eq(span_field(h.spans[0], "name"), "PING");
	cr_expect_str_eq(span_field(h.spans[0], "kind"), "SpanKind.CLIENT");
	cr_expect_not(span_has(h.spans[0], "db.namespace"), "unknown for a connection picked up");
	cr_expect_str_eq(span_field(h.spans[1], "name"), "GET");
}

Test(redis, a_hole_in_a_bulk_reply_is_skipped)
{
	struct tconn c = client(206);
	char reply[10016];

	memset(reply, 'v', sizeof(reply));
	memcpy(reply, "$10000\r\n", 8);
	memcpy(reply + 8 + 10000, "\r\n", 2);
	h_send(&h, &c, OUT, "*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n");
	h_io_tail(&h, &c, IN, reply, 10010, 512, 16);
	h_send(&h, &c, OUT, "*1\r\n$4\r\nPING\r\n");
	h_send(&h, &c, IN, "+PONG\r\n");
	h_finish(&h);
	cr_assert_eq(h.nspans, 2);
	cr_expect_not(span_has(h.spans[0], "sonde.db.response.captured"));
	cr_expect_str_eq(span_field(h.spans[1], "name"), "PING");
}

Test(redis, a_hole_across_replies_marks_the_reply_and_resyncs)
{
	struct tconn c = client(207);
	char reply[4000];
	size_t len = 0;

	len += (size_t)sprintf(reply, "*400\r\n");
	for (int i = 0; i < 400; i++)
		len += (size_t)sprintf(reply + len, "$1\r\n%d\r\n", i % 10);
	h_send(&h, &c, OUT, "*4\r\n$6\r\nLRANGE\r\n$1\r\nl\r\n$1\r\n0\r\n$2\r\n-1\r\n");
	h_io(&h, &c, IN, reply, len, 512);
	h_send(&h, &c, OUT, "*1\r\n$4\r\nPING\r\n");
	h_send(&h, &c, IN, "+PONG\r\n");
	h_finish(&h);
	cr_assert_eq(h.nspans, 2);
	cr_expect_str_eq(span_field(h.spans[0], "name"), "LRANGE");
	cr_expect_eq(span_has(h.spans[0], "sonde.db.response.captured"), true);
	cr_expect_str_eq(span_field(h.spans[1], "name"), "PING");
	cr_expect_str_eq(span_status(h.spans[1]), "UNSET");
	cr_expect_eq(h.stats.gap_resyncs, 1);
}

Test(redis, garbage_is_counted_and_harmless)
{
	struct tconn c = client(208);

	h_send(&h, &c, OUT, "*1\r\n$4\r\nPING\r\n");
	h_send(&h, &c, IN, "\x01\x02 not resp\r\n");
	h_send(&h, &c, OUT, "*1\r\n$4\r\nPING\r\n");
	h_send(&h, &c, IN, "+PONG\r\n");
	h_finish(&h);
	cr_expect_eq(h.stats.parse_errors, 1);
	cr_assert_eq(h.nspans, 2);
	cr_expect_eq(span_has(h.spans[0], "sonde.response.captured"), true, "no answer known");
	cr_expect_str_eq(span_status(h.spans[1]), "UNSET");
}

Test(redis, server_ends_make_no_span)
{
	struct tconn c = h_open_proto(&h, 209, 5, SONDE_ROLE_SERVER, SONDE_PROTO_REDIS, 6379);

	h_send(&h, &c, IN, "*1\r\n$4\r\nPING\r\n");
	h_send(&h, &c, OUT, "+PONG\r\n");
	h_finish(&h);
	cr_expect_eq(h.nspans, 0);
	cr_expect_eq(h.stats.parsing_stopped, 1);
}
