/* SPDX-License-Identifier: GPL-2.0 */
/* Protocol inference: one check per protocol, run once per connection on
 * its first data. BPF has no indirect calls, so the table is the ordered
 * list of checks in infer_proto; a new protocol adds a check there and
 * its id in sonde_events.h.
 *
 * Every check looks at the first bytes one call moved and may be handed
 * a prefix of a message start (a first call may return just "GE"). A
 * client's request is what identifies the database protocols, so their
 * checks are made only on bytes the client side sent: its egress, or a
 * server's ingress. */
/* Included by sonde.bpf.c, after the configuration it reads: the kernel
 * side is one compilation unit, split by concern. */
#ifndef SONDE_INFER_BPF_H
#define SONDE_INFER_BPF_H

/* Bytes of the longest HTTP message-start token ("OPTIONS ", "HTTP/1.1"). */
#define HTTP1_TOKEN_MAX 8
/* A pipeline is looked for in the first bytes of a call only. */
#define PIPELINE_SCAN_WORDS 128

/* data[at...] agrees with token over the `avail` bytes captured there,
 * when fewer than its length: a first call may return just "GE". */
static __always_inline bool token_at(const __u8 *data, __u32 at, __u32 avail, const char *token,
				     __u32 n)
{
	for (__u32 i = 0; i < n && i < avail; i++)
		if (data[at + i] != token[i])
			return false;
	return true;
}

/* An HTTP request line or status line starts at data[at], of which
 * `avail` bytes were captured. */
static __always_inline bool http1_start_at(const __u8 *data, __u32 at, __u32 avail)
{
	if (avail == 0)
		return false;
	switch (data[at]) {
	case 'G':
		return token_at(data, at, avail, "GET ", 4);
	case 'P':
		return token_at(data, at, avail, "POST ", 5) || token_at(data, at, avail, "PUT ", 4) ||
		       token_at(data, at, avail, "PATCH ", 6);
	case 'H':
		return token_at(data, at, avail, "HEAD ", 5) ||
		       token_at(data, at, avail, "HTTP/1.", 7);
	case 'D':
		return token_at(data, at, avail, "DELETE ", 7);
	case 'O':
		return token_at(data, at, avail, "OPTIONS ", 8);
	case 'C':
		return token_at(data, at, avail, "CONNECT ", 8);
	case 'T':
		return token_at(data, at, avail, "TRACE ", 6);
	}
	return false;
}

static __always_inline bool is_http1_start(const __u8 *data, __u32 len)
{
	return http1_start_at(data, 0, len);
}

/* A message start that is a status line: a response. */
static __always_inline bool is_http1_status_line(const __u8 *data, __u32 len)
{
	return len >= 5 && token_at(data, 0, len, "HTTP/", 5);
}

struct pipeline_scan {
	const struct sonde_data_event *ev;
	__u32 words; /* captured words that a whole token may follow */
	bool found;
};

/* One word of a pipeline scan: a bpf_loop callback, verified once rather
 * than once per word. Line ends are found a word at a time. */
static long scan_word_for_message(__u32 index, void *arg)
{
	struct pipeline_scan *scan = arg;
	const struct sonde_data_event *ev = scan->ev;
	__u64 w = index, word, x;

	/* Bounded in the register it indexes with. */
	barrier_var(w);
	if (w >= scan->words || w >= PIPELINE_SCAN_WORDS)
		return 1;
	word = ((const __u64 *)ev->data)[w]; /* data is 8-byte aligned */
	x = word ^ 0x0a0a0a0a0a0a0a0aull;
	if (!((x - 0x0101010101010101ull) & ~x & 0x8080808080808080ull))
		return 0;
	for (__u32 b = 0; b < 8; b++)
		if (ev->data[w * 8 + b] == '\n' &&
		    http1_start_at(ev->data, w * 8 + b + 1, HTTP1_TOKEN_MAX)) {
			scan->found = true;
			return 1;
		}
	return 0;
}

/* Whether a line of the call's captured bytes (past its first) starts
 * another HTTP message: the call holds a pipeline, or several responses,
 * whose messages past the capture would be lost. A global function. */
__noinline bool holds_pipeline(const struct sonde_data_event *ev)
{
	struct pipeline_scan scan = { .ev = ev };

	if (!ev || ev->captured < 8 + HTTP1_TOKEN_MAX)
		return false;
	scan.words = (ev->captured - HTTP1_TOKEN_MAX) / 8;
	bpf_loop(PIPELINE_SCAN_WORDS, scan_word_for_message, &scan, 0);
	return scan.found;
}

static __always_inline __u32 be32_at(const __u8 *p)
{
	return (__u32)p[0] << 24 | (__u32)p[1] << 16 | (__u32)p[2] << 8 | p[3];
}

#define PG_PROTOCOL_3 196608      /* 3.0 in a StartupMessage */
#define PG_SSL_REQUEST 80877103
#define PG_GSSENC_REQUEST 80877104

/* A StartupMessage, SSLRequest or GSSENCRequest: what a new PostgreSQL
 * connection's client sends first. */
static __always_inline bool is_postgres_startup(const __u8 *data, __u32 len)
{
	__u32 size, code;

	if (len < 8)
		return false;
	size = be32_at(data);
	code = be32_at(data + 4);
	if (code == PG_SSL_REQUEST || code == PG_GSSENC_REQUEST)
		return size == 8;
	return code == PG_PROTOCOL_3 && size > 8 && size <= 10000;
}

/* A simple query or the first message of an extended-protocol request,
 * on a connection opened before sonde started (a pool's): type byte,
 * a length with a zero high byte, then text. */
static __always_inline bool is_postgres_request(const __u8 *data, __u32 len)
{
	__u32 size;

	if (len < 6 || (data[0] != 'Q' && data[0] != 'P' && data[0] != 'B'))
		return false;
	size = be32_at(data + 1);
	return size >= 5 && size < (1u << 24) && data[5] < 0x80;
}

static __always_inline bool is_digit(__u8 c)
{
	return c >= '0' && c <= '9';
}

/* A RESP command: an array of bulk strings, "*<n>\r\n$". */
static __always_inline bool is_redis_request(const __u8 *data, __u32 len)
{
	if (len < 5 || data[0] != '*' || !is_digit(data[1]) || data[1] == '0')
		return false;
	if (data[2] == '\r')
		return data[3] == '\n' && data[4] == '$';
	return len >= 6 && is_digit(data[2]) && data[3] == '\r' && data[4] == '\n' &&
	       data[5] == '$';
}

/* The protocol the first data of a connection shows, or UNKNOWN.
 * from_client: the bytes were sent by the connection's client (or, role
 * unknown, may have been). */
static __always_inline __u8 infer_proto(const __u8 *data, __u32 len, __u8 role, bool from_client)
{
	if (is_http1_start(data, len))
		return SONDE_PROTO_HTTP1;
	if (!from_client)
		return SONDE_PROTO_UNKNOWN;
	if (is_postgres_startup(data, len) ||
	    (role == SONDE_ROLE_UNKNOWN && is_postgres_request(data, len)))
		return SONDE_PROTO_POSTGRES;
	if (is_redis_request(data, len))
		return SONDE_PROTO_REDIS;
	return SONDE_PROTO_UNKNOWN;
}

static __always_inline bool client_sent(__u8 role, __u8 dir)
{
	if (role == SONDE_ROLE_UNKNOWN)
		return true;
	return (role == SONDE_ROLE_CLIENT) == (dir == SONDE_DIR_EGRESS);
}

static __always_inline void count_proto(__u8 proto)
{
	if (proto == SONDE_PROTO_HTTP1)
		count(SONDE_CNT_HTTP_CONNS);
	else if (proto == SONDE_PROTO_POSTGRES)
		count(SONDE_CNT_POSTGRES_CONNS);
	else if (proto == SONDE_PROTO_REDIS)
		count(SONDE_CNT_REDIS_CONNS);
}

/* The server end of a database connection: the client's span is the
 * operation's only one. With the role unknown, a request received says
 * this process is the server. */
static __always_inline bool is_db_server_end(__u8 proto, __u8 role, __u8 dir)
{
	if (proto == SONDE_PROTO_HTTP1)
		return false;
	return role == SONDE_ROLE_SERVER || (role == SONDE_ROLE_UNKNOWN && dir == SONDE_DIR_INGRESS);
}

static __always_inline bool write_off(struct conn_state *state, enum sonde_counter why)
{
	state->proto = SONDE_PROTO_NONE;
	count(why);
	return false;
}

/* Decide, once, which protocol a connection speaks, from the bytes
 * captured of the call ev describes (its captured and dir set). True
 * when the data in hand should be sent. A connection sonde watched open
 * is judged on its first data; one already open when sonde started gets
 * a few calls to show a message start, so that it is picked up at a
 * message boundary. A global function, verified once, and kept out of
 * the data programs' hot path; it must allow for NULL pointers. */
__noinline int infer_protocol(struct __u64 *ctx, struct sonde_conn_key *key,
			      struct conn_state *state, const struct sonde_data_event *ev)
{
	__u8 proto;

	if (!ctx || !key || !state || !ev || ev->captured > SONDE_CAPTURE_MAX)
		return false;
	proto = infer_proto(ev->data, ev->captured, state->role,
			    client_sent(state->role, ev->dir));

	if (proto == SONDE_PROTO_UNKNOWN) {
		if (state->role == SONDE_ROLE_UNKNOWN && state->probes_left > 1) {
			state->probes_left--;
			return false;
		}
		return write_off(state, SONDE_CNT_OTHER_CONNS);
	}
	if (is_db_server_end(proto, state->role, ev->dir))
		return write_off(state, SONDE_CNT_DB_SERVER_CONNS);
	if (proto == SONDE_PROTO_HTTP1 && state->role != SONDE_ROLE_CLIENT &&
	    accepted_from_self(key))
		return write_off(state, SONDE_CNT_EXCLUDED_CONNS);
	state->proto = proto;
	count_proto(proto);
	emit_conn(ctx, key, state); /* carries state->proto */
	return true;
}

#endif
