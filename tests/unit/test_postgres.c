/* PostgreSQL client spans through the tracker: startup, simple and
 * extended queries, pipelines, errors, COPY, encryption requests, pickup
 * mid-stream, holes and garbage. */
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

TestSuite(postgres, .init = setup, .fini = teardown);

/* A buffer of wire bytes built message by message. */
struct wire {
	char b[16384];
	size_t len;
};

static void put32(struct wire *w, uint32_t v)
{
	w->b[w->len++] = (char)(v >> 24);
	w->b[w->len++] = (char)(v >> 16);
	w->b[w->len++] = (char)(v >> 8);
	w->b[w->len++] = (char)v;
}

/* A typed message; payload strings are given with their NULs. */
static void msg(struct wire *w, char type, const char *payload, size_t len)
{
	w->b[w->len++] = type;
	put32(w, (uint32_t)len + 4);
	memcpy(w->b + w->len, payload, len);
	w->len += len;
}

#define MSG(w, type, lit) msg(w, type, lit, sizeof(lit) - 1)

static void startup(struct wire *w, const char *params, size_t len)
{
	put32(w, (uint32_t)len + 8);
	put32(w, 196608);
	memcpy(w->b + w->len, params, len);
	w->len += len;
}

static void send_wire(struct tconn *c, int dir, struct wire *w)
{
	h_io(&h, c, dir, w->b, w->len, w->len < SONDE_CAPTURE_MAX ? w->len : SONDE_CAPTURE_MAX);
	w->len = 0;
}

static struct tconn client(uint32_t tgid)
{
	return h_open_proto(&h, tgid, 5, SONDE_ROLE_CLIENT, SONDE_PROTO_POSTGRES, 5432);
}

/* The startup of a connection to database "shop" as user "app". */
static void connect_shop(struct tconn *c)
{
	struct wire w = { .len = 0 };
	static const char params[] = "user\0app\0database\0shop\0\0";

	startup(&w, params, sizeof(params) - 1);
	send_wire(c, OUT, &w);
	MSG(&w, 'R', "\0\0\0\0");
	MSG(&w, 'S', "server_version\00015.8\0");
	MSG(&w, 'K', "\0\0\0\1\0\0\0\2");
	MSG(&w, 'Z', "I");
	send_wire(c, IN, &w);
}

static void expect_no_literal(const char *literal)
{
	for (int i = 0; i < h.nspans; i++) {
		char *text = cJSON_PrintUnformatted(cJSON_GetObjectItem(h.spans[i], "attributes"));

		cr_expect_null(strstr(text, literal), "%s in %s", literal, text);
		free(text);
	}
}

Test(postgres, simple_query_after_startup)
{
	struct tconn c = client(400);
	struct wire w = { .len = 0 };

	connect_shop(&c);
	MSG(&w, 'Q', "SELECT id, total FROM orders WHERE customer = 'alice' AND total > 4242\0");
	send_wire(&c, OUT, &w);
	MSG(&w, 'T', "\0\2id\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
	MSG(&w, 'D', "\0\1\0\0\0\0011");
	MSG(&w, 'C', "SELECT 1\0");
	MSG(&w, 'Z', "I");
	send_wire(&c, IN, &w);
	h_finish(&h);
	cr_assert_eq(h.nspans, 1, "%d", h.nspans);
	cr_expect_str_eq(span_field(h.spans[0], "name"), "SELECT orders");
	cr_expect_str_eq(span_field(h.spans[0], "kind"), "SpanKind.CLIENT");
	cr_expect_str_eq(span_str(h.spans[0], "db.system.name"), "postgresql");
	cr_expect_str_eq(span_str(h.spans[0], "db.namespace"), "shop");
	cr_expect_str_eq(span_str(h.spans[0], "db.operation.name"), "SELECT");
	cr_expect_str_eq(span_str(h.spans[0], "db.collection.name"), "orders");
	cr_expect_str_eq(span_str(h.spans[0], "db.query.text"),
			 "SELECT id, total FROM orders WHERE customer = ? AND total > ?");
	cr_expect_eq(span_int(h.spans[0], "db.response.returned_rows"), 1);
	cr_expect_eq(span_int(h.spans[0], "server.port"), 5432);
	cr_expect_str_eq(span_status(h.spans[0]), "UNSET");
	expect_no_literal("alice");
	expect_no_literal("4242");
}

Test(postgres, errors_carry_their_sqlstate)
{
	struct tconn c = client(401);
	struct wire w = { .len = 0 };

	connect_shop(&c);
	MSG(&w, 'Q', "INSERT INTO users (email) VALUES ('bob@example.com')\0");
	send_wire(&c, OUT, &w);
	MSG(&w, 'E', "SERROR\0VERROR\0C23505\0Mduplicate key value\0\0");
	MSG(&w, 'Z', "I");
	send_wire(&c, IN, &w);
	h_finish(&h);
	cr_assert_eq(h.nspans, 1);
	cr_expect_str_eq(span_field(h.spans[0], "name"), "INSERT users");
	cr_expect_str_eq(span_status(h.spans[0]), "ERROR");
	cr_expect_str_eq(span_str(h.spans[0], "error.type"), "23505");
	cr_expect_str_eq(span_str(h.spans[0], "db.response.status_code"), "23505");
	expect_no_literal("bob@");
}

/* Parse+Describe+Sync, then two Bind+Execute+Sync, written at once:
 * the statement's text comes back for both executions. */
static void extended_pipeline(struct wire *out, struct wire *in)
{
	MSG(out, 'P', "s1\0SELECT name FROM items WHERE id = $1\0\0\0");
	MSG(out, 'D', "Ss1\0");
	MSG(out, 'S', "");
	for (int i = 0; i < 2; i++) {
		MSG(out, 'B', "\0s1\0\0\0\0\1\0\0\0\0017\0\0");
		MSG(out, 'E', "\0\0\0\0\0");
		MSG(out, 'S', "");
	}
	MSG(in, '1', "");
	MSG(in, 't', "\0\1\0\0\0\x17");
	MSG(in, 'T', "\0\1name\0\0\0\0\0\0\0\0\0\0\x19\xff\xff\xff\xff\xff\xff\0\0");
	MSG(in, 'Z', "I");
	for (int i = 0; i < 2; i++) {
		MSG(in, '2', "");
		MSG(in, 'D', "\0\1\0\0\0\3box");
		MSG(in, 'C', "SELECT 1\0");
		MSG(in, 'Z', "I");
	}
}

Test(postgres, extended_protocol_pipelined)
{
	struct tconn c = client(402);
	struct wire out = { .len = 0 }, in = { .len = 0 };

	connect_shop(&c);
	extended_pipeline(&out, &in);
	send_wire(&c, OUT, &out);
	send_wire(&c, IN, &in);
	h_finish(&h);
	cr_assert_eq(h.nspans, 2);
	for (int i = 0; i < 2; i++) {
		cr_expect_str_eq(span_field(h.spans[i], "name"), "SELECT items");
		cr_expect_str_eq(span_str(h.spans[i], "db.query.text"),
				 "SELECT name FROM items WHERE id = $1");
		cr_expect_eq(span_int(h.spans[i], "db.response.returned_rows"), 1);
	}
	cr_expect_eq(h.stats.unpaired, 1, "the prepare alone makes no span");
	cr_expect_eq(h.stats.orphan_responses, 0);
}

Test(postgres, any_split_point_gives_the_same_spans)
{
	struct wire out = { .len = 0 }, in = { .len = 0 };
	int conns = 0;

	extended_pipeline(&out, &in);
	for (size_t cut = 1; cut < in.len; cut += 3, conns++) {
		struct tconn c = client(500 + (uint32_t)cut);
		size_t ocut = cut % out.len ? cut % out.len : 1;

		connect_shop(&c);
		h_io(&h, &c, OUT, out.b, ocut, ocut);
		h_io(&h, &c, OUT, out.b + ocut, out.len - ocut, out.len - ocut);
		h_io(&h, &c, IN, in.b, cut, cut);
		h_io(&h, &c, IN, in.b + cut, in.len - cut, in.len - cut);
	}
	h_finish(&h);
	cr_assert_eq(h.nspans, conns * 2);
	for (int i = 0; i < h.nspans; i++)
		cr_expect_str_eq(span_field(h.spans[i], "name"), "SELECT items");
	cr_expect_eq(h.stats.orphan_responses, 0);
	cr_expect_eq(h.stats.parse_errors, 0);
}

Test(postgres, refused_ssl_request_stays_plaintext)
{
	struct tconn c = client(403);
	struct wire w = { .len = 0 };
	static const char params[] = "user\0app\0\0";

	put32(&w, 8);
	put32(&w, 80877103);
	send_wire(&c, OUT, &w);
	h_send(&h, &c, IN, "N");
	startup(&w, params, sizeof(params) - 1);
	send_wire(&c, OUT, &w);
	MSG(&w, 'R', "\0\0\0\0");
	MSG(&w, 'Z', "I");
	send_wire(&c, IN, &w);
	MSG(&w, 'Q', "BEGIN\0");
	send_wire(&c, OUT, &w);
	MSG(&w, 'C', "BEGIN\0");
	MSG(&w, 'Z', "T");
	send_wire(&c, IN, &w);
	h_finish(&h);
	cr_assert_eq(h.nspans, 1);
	cr_expect_str_eq(span_field(h.spans[0], "name"), "BEGIN");
	cr_expect_str_eq(span_str(h.spans[0], "db.namespace"), "app", "the user's own database");
}

Test(postgres, accepted_ssl_request_stops_parsing)
{
	struct tconn c = client(404);
	struct wire w = { .len = 0 };

	put32(&w, 8);
	put32(&w, 80877103);
	send_wire(&c, OUT, &w);
	h_send(&h, &c, IN, "S");
	h_send(&h, &c, OUT, "\x16\x03\x01\x02\x00 a TLS client hello");
	h_finish(&h);
	cr_expect_eq(h.nspans, 0);
	cr_expect_eq(h.stats.parsing_stopped, 1);
	cr_expect_eq(h.stats.parse_errors, 0);
}

Test(postgres, copy_and_notices_do_not_break_pairing)
{
	struct tconn c = client(405);
	struct wire w = { .len = 0 };

	connect_shop(&c);
	MSG(&w, 'Q', "COPY readings (a, b) FROM STDIN\0");
	send_wire(&c, OUT, &w);
	MSG(&w, 'G', "\0\0\2\0\0\0\0");
	send_wire(&c, IN, &w);
	MSG(&w, 'd', "1\t2\n");
	MSG(&w, 'd', "3\t4\n");
	MSG(&w, 'c', "");
	send_wire(&c, OUT, &w);
	MSG(&w, 'N', "SNOTICE\0C00000\0Mhello\0\0");
	MSG(&w, 'C', "COPY 2\0");
	MSG(&w, 'S', "application_name\0x\0");
	MSG(&w, 'Z', "I");
	send_wire(&c, IN, &w);
	MSG(&w, 'Q', "SELECT 1\0");
	send_wire(&c, OUT, &w);
	MSG(&w, 'A', "\0\0\0\1chan\0payload\0");
	MSG(&w, 'C', "SELECT 1\0");
	MSG(&w, 'Z', "I");
	send_wire(&c, IN, &w);
	h_finish(&h);
	cr_assert_eq(h.nspans, 2);
	cr_expect_str_eq(span_field(h.spans[0], "name"), "COPY readings");
	cr_expect_str_eq(span_field(h.spans[1], "name"), "SELECT");
	cr_expect_eq(h.stats.orphan_responses, 0);
}

Test(postgres, pooled_connection_is_picked_up_at_a_request)
{
	/* No conn event: opened before sonde started. */
	struct tconn c = { .tgid = 406, .fd = 9, .gen = 5, .proto = SONDE_PROTO_POSTGRES };
	struct wire w = { .len = 0 };

	MSG(&w, 'Q', "SELECT 1\0");
	send_wire(&c, OUT, &w);
	MSG(&w, 'C', "SELECT 1\0");
	MSG(&w, 'Z', "I");
	send_wire(&c, IN, &w);
	MSG(&w, 'B', "\0stmt_before_sonde\0\0\0\0\0\0\0");
	MSG(&w, 'E', "\0\0\0\0\0");
	MSG(&w, 'S', "");
	send_wire(&c, OUT, &w);
	MSG(&w, '2', "");
	MSG(&w, 'C', "UPDATE 3\0");
	MSG(&w, 'Z', "I");
	send_wire(&c, IN, &w);
	h_finish(&h);
	cr_assert_eq(h.nspans, 2);
	cr_expect_str_eq(span_field(h.spans[0], "name"), "SELECT");
	cr_expect_str_eq(span_field(h.spans[1], "name"), "postgresql",
			 "a statement prepared before sonde has no known text");
	cr_expect_not(span_has(h.spans[1], "db.namespace"));
}

Test(postgres, a_large_result_past_the_capture_still_ends_its_span)
{
	struct tconn c = client(407);
	struct wire w = { .len = 0 };

	connect_shop(&c);
	MSG(&w, 'Q', "SELECT * FROM logs\0");
	send_wire(&c, OUT, &w);
	for (int i = 0; i < 300; i++)
		MSG(&w, 'D', "\0\1\0\0\0\010abcdefgh");
	MSG(&w, 'C', "SELECT 300\0");
	MSG(&w, 'Z', "I");
	h_io_tail(&h, &c, IN, w.b, w.len, 512, 16);
	w.len = 0;
	MSG(&w, 'Q', "SELECT 2\0");
	send_wire(&c, OUT, &w);
	MSG(&w, 'C', "SELECT 1\0");
	MSG(&w, 'Z', "I");
	send_wire(&c, IN, &w);
	h_finish(&h);
	cr_assert_eq(h.nspans, 2);
	cr_expect_str_eq(span_field(h.spans[0], "name"), "SELECT logs");
	cr_expect_eq(span_has(h.spans[0], "sonde.db.response.captured"), true);
	cr_expect_str_eq(span_status(h.spans[0]), "UNSET");
	cr_expect_str_eq(span_field(h.spans[1], "name"), "SELECT");
	cr_expect_eq(span_int(h.spans[1], "db.response.returned_rows"), 1);
	cr_expect_eq(h.stats.orphan_responses, 0);
}

Test(postgres, garbage_answers_end_the_waiting_request_without_status)
{
	struct tconn c = client(408);
	struct wire w = { .len = 0 };

	connect_shop(&c);
	MSG(&w, 'Q', "SELECT 1\0");
	send_wire(&c, OUT, &w);
	h_send(&h, &c, IN, "\x7f\x7f garbage that is no message");
	h_finish(&h);
	cr_assert_eq(h.nspans, 1);
	cr_expect_eq(span_has(h.spans[0], "sonde.response.captured"), true);
	cr_expect_eq(h.stats.parse_errors, 1);
}

Test(postgres, server_ends_make_no_span)
{
	struct tconn c = h_open_proto(&h, 409, 5, SONDE_ROLE_SERVER, SONDE_PROTO_POSTGRES, 5432);
	struct wire w = { .len = 0 };

	MSG(&w, 'Q', "SELECT 1\0");
	send_wire(&c, IN, &w);
	h_finish(&h);
	cr_expect_eq(h.nspans, 0);
	cr_expect_eq(h.stats.parsing_stopped, 1);
}
