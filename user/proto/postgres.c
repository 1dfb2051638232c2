/* PostgreSQL (protocol 3.0) behind the protocol interface.
 *
 * An exchange is what the server answers with one ReadyForQuery: a simple
 * Query (or FunctionCall), or an extended-protocol batch (Parse, Bind,
 * Describe, Execute, ... up to Sync, pipelined as deep as the client
 * likes). A batch makes a span only when it executes something: a batch
 * that only prepares a statement is counted, not shown; the statement's
 * text is kept (up to PG_STATEMENTS per connection) and shown by the
 * batches that execute it. Errors carry their SQLSTATE. The startup and
 * its authentication make no span but say the database (db.namespace); an
 * SSLRequest the server refuses leaves the connection in plaintext, one it
 * accepts ends parsing. COPY data, notices, parameter changes and
 * notifications pass without touching the pairing.
 *
 * Only the client's side is parsed (proto_ops.client_only). */
#include "db.h"
#include "pgwire.h"
#include "proto.h"
#include "sonde_events.h"
#include "sql.h"
#include "text.h"

#include <string.h>

#define PG_STATEMENTS 16
#define PG_STATEMENT_NAME_MAX 64
#define PG_STATEMENT_TEXT_MAX 512
#define PG_BACKEND_KEEP 128   /* command tags and error fields */

#define PG_PROTOCOL_3 196608
#define PG_SSL_REQUEST 80877103
#define PG_GSSENC_REQUEST 80877104

/* A prepared statement: its name and sanitised text. */
struct pg_statement {
	uint32_t used;  /* clock of its last Parse or Bind; 0: free */
	bool cut;
	char name[PG_STATEMENT_NAME_MAX];
	char text[PG_STATEMENT_TEXT_MAX];
};

/* What the answer (the backend's messages up to ReadyForQuery) said. */
struct pg_answer {
	bool started;
	bool error;
	bool cut;            /* sync was lost inside it: rows may be missing */
	char sqlstate[6];
	int64_t rows;        /* rows returned (SELECT, FETCH); -1: none said */
	uint64_t start_ts;
};

enum pg_pending_reply {
	PG_REPLY_NONE,
	PG_REPLY_ENCRYPTION, /* one byte answers an SSLRequest or GSSENCRequest */
};

struct pg_conn {
	struct proto_conn *pc;
	struct pgwire_stream front; /* what the client sends */
	struct pgwire_stream back;  /* what it receives */
	bool front_started;
	bool startup;       /* a StartupMessage waits for its ReadyForQuery */
	bool batch_open;    /* extended-protocol messages since the last Sync */
	uint8_t pending_reply;
	uint64_t resync_after; /* see redis.c: answers sync after this request */
	uint32_t clock;
	uint32_t seq;       /* of the exchange last begun */
	int bound;          /* statement of the last Bind; -1: unknown */
	char db[DB_NAMESPACE_MAX];
	struct pg_answer answer;
	struct pg_statement statements[PG_STATEMENTS];
};

struct pg_exchange {
	uint32_t seq;        /* names the exchange for the batch that builds it */
	bool executes;       /* a Query, a FunctionCall, or a batch with an Execute */
	bool query_cut;
	uint32_t executions; /* Executes in a batch */
	char db[DB_NAMESPACE_MAX];
	char query[DB_QUERY_MAX]; /* sanitised */
};

/* ---- small readers ------------------------------------------------------- */

/* The NUL-terminated string at *at in a message's kept payload; NULL when
 * it does not end there. Moves *at past it. */
static const char *take_cstring(const struct pg_msg *m, uint32_t *at)
{
	const char *start = (const char *)m->data + *at;
	const char *nul = *at < m->kept ? memchr(start, '\0', m->kept - *at) : NULL;

	if (!nul)
		return NULL;
	*at += (uint32_t)(nul - start) + 1;
	return start;
}

/* ---- statements ------------------------------------------------------------ */

static int find_statement(const struct pg_conn *pg, const char *name)
{
	for (int i = 0; i < PG_STATEMENTS; i++)
		if (pg->statements[i].used && strcmp(pg->statements[i].name, name) == 0)
			return i;
	return -1;
}

/* The statement's slot: its own, or the least recently used. */
static int statement_slot(struct pg_conn *pg, const char *name)
{
	int found = find_statement(pg, name), oldest = 0;

	if (found >= 0)
		return found;
	for (int i = 1; i < PG_STATEMENTS; i++)
		if (pg->statements[i].used < pg->statements[oldest].used)
			oldest = i;
	return oldest;
}

/* Parse: statement name, query text, parameter types. */
static void on_parse(struct pg_conn *pg, const struct pg_msg *m)
{
	uint32_t at = 0;
	const char *name = take_cstring(m, &at);
	struct pg_statement *st;
	size_t text_len;
	bool cut;

	if (!name || strlen(name) >= PG_STATEMENT_NAME_MAX)
		return;
	st = &pg->statements[statement_slot(pg, name)];
	st->used = ++pg->clock;
	text_copy(st->name, sizeof(st->name), name);
	text_len = strnlen((const char *)m->data + at, m->kept - at);
	sql_sanitize((const char *)m->data + at, text_len, st->text, sizeof(st->text), &cut);
	st->cut = cut || (at + text_len == m->kept && m->len > m->kept);
}

/* Bind: portal name, statement name, ... */
static void on_bind(struct pg_conn *pg, const struct pg_msg *m)
{
	uint32_t at = 0;
	const char *name = take_cstring(m, &at) ? take_cstring(m, &at) : NULL;

	pg->bound = name ? find_statement(pg, name) : -1;
	if (pg->bound >= 0)
		pg->statements[pg->bound].used = ++pg->clock;
}

/* Close: 'S' and a statement name forget it. */
static void on_close(struct pg_conn *pg, const struct pg_msg *m)
{
	uint32_t at = 1;
	const char *name;
	int found;

	if (m->kept < 1 || m->data[0] != 'S' || !(name = take_cstring(m, &at)))
		return;
	found = find_statement(pg, name);
	if (found >= 0)
		pg->statements[found].used = 0;
}

/* ---- requests ------------------------------------------------------------------ */

static struct pg_exchange *begin_exchange(struct pg_conn *pg, const struct pg_msg *m)
{
	struct request_start rs = { .ts = m->start_ts, .tid = m->start_tid, .task = m->start_task };
	struct pg_exchange *x = conn_request(pg->pc, &rs);

	if (pg->back.state == PGWIRE_LOST && !pg->resync_after)
		pg->resync_after = m->start_ts;
	pg->seq++;
	if (!x)
		return NULL;
	x->seq = pg->seq;
	x->executes = false;
	x->query_cut = false;
	x->executions = 0;
	x->query[0] = '\0';
	memcpy(x->db, pg->db, sizeof(x->db));
	return x;
}

/* Query: the text itself. */
static void on_query(struct pg_conn *pg, const struct pg_msg *m)
{
	struct pg_exchange *x = begin_exchange(pg, m);
	size_t text_len;
	bool cut;

	if (!x)
		return;
	x->executes = true;
	text_len = strnlen((const char *)m->data, m->kept);
	sql_sanitize((const char *)m->data, text_len, x->query, sizeof(x->query), &cut);
	x->query_cut = cut || (text_len == m->kept && m->len > m->kept);
}

/* The batch being sent: the newest exchange, unless it ended (answers
 * lost) or could not be begun. */
static struct pg_exchange *open_batch(struct pg_conn *pg)
{
	struct pg_exchange *x = conn_newest(pg->pc);

	return x && x->seq == pg->seq ? x : NULL;
}

/* Execute: the statement last bound runs. */
static void on_execute(struct pg_conn *pg)
{
	const struct pg_statement *st = pg->bound >= 0 ? &pg->statements[pg->bound] : NULL;
	struct pg_exchange *x = open_batch(pg);

	if (!x)
		return;
	x->executes = true;
	if (x->executions++ == 0 && st) {
		text_copy(x->query, sizeof(x->query), st->text);
		x->query_cut = st->cut;
	}
}

/* StartupMessage: "user", "database" and other parameters. */
static void on_startup(struct pg_conn *pg, const struct pg_msg *m)
{
	const char *key, *value, *user = NULL, *database = NULL;
	uint32_t at = 0;

	if (m->code == PG_SSL_REQUEST || m->code == PG_GSSENC_REQUEST) {
		pg->pending_reply = PG_REPLY_ENCRYPTION;
		return;
	}
	if (m->code != PG_PROTOCOL_3)
		return; /* a CancelRequest: the connection ends after it */
	while ((key = take_cstring(m, &at)) && *key && (value = take_cstring(m, &at))) {
		if (strcmp(key, "user") == 0)
			user = value;
		else if (strcmp(key, "database") == 0)
			database = value;
	}
	/* The server takes the user's name when no database is named. */
	if (database || user)
		text_copy(pg->db, sizeof(pg->db), database ? database : user);
	pg->startup = true;
}

static void on_front(void *owner, const struct pg_msg *m)
{
	struct pg_conn *pg = owner;

	if (m->type == 0) {
		on_startup(pg, m);
		return;
	}
	if (m->type == 'Q') {
		on_query(pg, m);
		return;
	}
	if (m->type == 'F') {
		struct pg_exchange *x = begin_exchange(pg, m);

		if (x)
			x->executes = true;
		return;
	}
	if (!strchr("PBDEHCS", m->type))
		return; /* COPY data, passwords, Terminate */
	if (!pg->batch_open) {
		pg->batch_open = true;
		begin_exchange(pg, m);
	}
	if (m->type == 'P')
		on_parse(pg, m);
	else if (m->type == 'B')
		on_bind(pg, m);
	else if (m->type == 'C')
		on_close(pg, m);
	else if (m->type == 'E')
		on_execute(pg);
	else if (m->type == 'S')
		pg->batch_open = false;
}

/* Which requests the lost bytes held is unknown, and every answer after
 * them would pair with the wrong one: parsing stops. */
static void on_front_lost(void *owner, bool gap)
{
	struct pg_conn *pg = owner;

	conn_note(pg->pc, gap ? NOTE_GAP : NOTE_PARSE_ERROR);
	pg->front.state = pg->back.state = PGWIRE_STOPPED;
	conn_stop(pg->pc);
}

static const struct pgwire_callbacks front_callbacks = {
	.on_message = on_front,
	.on_lost = on_front_lost,
};

/* ---- answers -------------------------------------------------------------------- */

static void reset_answer(struct pg_answer *a)
{
	a->started = a->error = a->cut = false;
	a->sqlstate[0] = '\0';
	a->rows = -1;
	a->start_ts = 0;
}

/* ErrorResponse: fields of a code byte and a string; 'C' is the SQLSTATE. */
static void on_error(struct pg_conn *pg, const struct pg_msg *m)
{
	uint32_t at = 0;

	pg->answer.error = true;
	while (at < m->kept && m->data[at]) {
		uint8_t field = m->data[at++];
		const char *value = take_cstring(m, &at);

		if (!value)
			return;
		if (field == 'C' && !pg->answer.sqlstate[0])
			text_copy(pg->answer.sqlstate, sizeof(pg->answer.sqlstate), value);
	}
}

/* CommandComplete: "SELECT 5", "FETCH 2" say the rows returned. */
static void on_command_complete(struct pg_conn *pg, const struct pg_msg *m)
{
	uint32_t at = 0;
	const char *tag = take_cstring(m, &at), *space;
	int64_t rows = 0;

	if (!tag || (strncmp(tag, "SELECT ", 7) != 0 && strncmp(tag, "FETCH ", 6) != 0))
		return;
	space = strrchr(tag, ' ');
	for (const char *d = space + 1; *d >= '0' && *d <= '9'; d++)
		rows = rows * 10 + (*d - '0');
	pg->answer.rows = (pg->answer.rows > 0 ? pg->answer.rows : 0) + rows;
}

/* ReadyForQuery ends the oldest exchange (or the startup). */
static void on_ready(struct pg_conn *pg, uint64_t ts)
{
	const struct pg_exchange *x = conn_oldest(pg->pc);
	struct answer a = { .start_ts = pg->answer.start_ts, .end_ts = ts, .detail = &pg->answer };

	if (pg->startup) {
		pg->startup = false;
	} else if (x && !x->executes) {
		conn_drop_oldest(pg->pc);
	} else {
		if (!a.start_ts)
			a.start_ts = ts;
		conn_answer(pg->pc, &a);
	}
	reset_answer(&pg->answer);
}

static void on_back(void *owner, const struct pg_msg *m)
{
	struct pg_conn *pg = owner;

	/* Notices, parameter changes and notifications come at any time. */
	if (m->type == 'N' || m->type == 'S' || m->type == 'A')
		return;
	if (!pg->answer.started) {
		pg->answer.started = true;
		pg->answer.start_ts = m->start_ts;
	}
	if (m->type == 'E')
		on_error(pg, m);
	else if (m->type == 'C')
		on_command_complete(pg, m);
	else if (m->type == 'Z')
		on_ready(pg, m->end_ts);
}

/* Lost inside an answer: the oldest exchange still ends at the next
 * ReadyForQuery, marked, if it is the only one waiting (its client waits
 * for it, so the server sends nothing else); otherwise which answer ends
 * where is unknown and every waiting exchange ends without one. */
static void on_back_lost(void *owner, bool gap)
{
	struct pg_conn *pg = owner;

	conn_note(pg->pc, gap ? NOTE_GAP : NOTE_PARSE_ERROR);
	pg->answer.cut = true;
	if (conn_oldest(pg->pc) != conn_newest(pg->pc) || pg->batch_open || !gap) {
		conn_answers_lost(pg->pc, pg->back.cur ? pg->back.cur->ts : 0);
		reset_answer(&pg->answer);
	}
	pg->resync_after = 0;
}

static const struct pgwire_callbacks back_callbacks = {
	.on_message = on_back,
	.on_lost = on_back_lost,
};

/* ---- connection events -------------------------------------------------------- */

static void pg_open(void *st, struct proto_conn *pc, const struct proto_opts *opts)
{
	struct pg_conn *pg = st;

	pg->pc = pc;
	pgwire_init(&pg->front, true, PGWIRE_KEEP_MAX, &front_callbacks, pg);
	pgwire_init(&pg->back, false, PG_BACKEND_KEEP, &back_callbacks, pg);
	pg->front_started = pg->startup = pg->batch_open = false;
	pg->pending_reply = PG_REPLY_NONE;
	pg->resync_after = 0;
	pg->clock = 0;
	pg->bound = -1;
	pg->db[0] = '\0';
	reset_answer(&pg->answer);
	for (int i = 0; i < PG_STATEMENTS; i++)
		pg->statements[i].used = 0;
}

/* Seen from its connect: the client's first message has no type byte. */
static void pg_start(void *st, uint8_t role)
{
	struct pg_conn *pg = st;

	pgwire_sync(&pg->front, true);
	pgwire_sync(&pg->back, false);
	pg->front_started = true;
}

/* A connection opened before sonde started is picked up at a request. */
static void sync_front(struct pg_conn *pg, const struct piece *p)
{
	if (pg->front.state != PGWIRE_LOST || pg->front_started ||
	    !pgwire_is_message_start(&pg->front, p->data, p->captured))
		return;
	conn_set_role(pg->pc, SONDE_ROLE_CLIENT);
	pgwire_sync(&pg->front, false);
	pg->front_started = true;
}

/* Answers sync again at a message read after a request sent since they
 * lost it, or at the end of a piece that ends with a ReadyForQuery. */
static void sync_back(struct pg_conn *pg, const struct piece *p)
{
	if (pg->back.state == PGWIRE_LOST && pg->resync_after && p->ts > pg->resync_after &&
	    pgwire_is_message_start(&pg->back, p->data, p->captured))
		pgwire_sync(&pg->back, false);
}

/* The last bytes of a piece read while answers are out of sync: a
 * ReadyForQuery there ends the exchange it answers, and what follows
 * starts a message. */
static bool ends_with_ready(const struct piece *p)
{
	uint32_t have = p->tail ? p->tail : p->captured;
	const uint8_t *end;

	if ((p->hole && !p->tail) || have < 6)
		return false; /* the piece's last bytes were not captured */
	end = p->data + p->captured + p->tail;
	return end[-6] == 'Z' && end[-5] == 0 && end[-4] == 0 && end[-3] == 0 &&
	       end[-2] == 5 && (end[-1] == 'I' || end[-1] == 'T' || end[-1] == 'E');
}

static void resync_at_ready(struct pg_conn *pg, const struct piece *p)
{
	if (pg->back.state != PGWIRE_LOST || !pg->answer.cut || !ends_with_ready(p))
		return;
	on_ready(pg, p->ts);
	pgwire_sync(&pg->back, false);
}

/* The one byte answering an SSLRequest or GSSENCRequest: 'N' keeps the
 * connection in plaintext; 'S' or 'G' encrypts it, and parsing ends. */
static bool take_encryption_reply(struct pg_conn *pg, struct piece *p)
{
	if (pg->pending_reply != PG_REPLY_ENCRYPTION || p->captured == 0)
		return true;
	pg->pending_reply = PG_REPLY_NONE;
	if (p->data[0] != 'N') {
		pg->front.state = pg->back.state = PGWIRE_STOPPED;
		conn_stop(pg->pc);
		return false;
	}
	p->data++;
	p->captured--;
	return true;
}

static void pg_data(void *st, int dir, const struct piece *in)
{
	struct pg_conn *pg = st;
	struct piece p = *in;

	if (dir == SONDE_DIR_EGRESS) {
		sync_front(pg, &p);
		pgwire_feed(&pg->front, &p);
		return;
	}
	if (!take_encryption_reply(pg, &p))
		return;
	sync_back(pg, &p);
	pgwire_feed(&pg->back, &p);
	if (pg->back.state == PGWIRE_LOST)
		resync_at_ready(pg, &p);
}

/* ---- the span --------------------------------------------------------------------- */

static void pg_fill_span(struct span *span, const void *exchange, const void *detail,
			 const struct proto_opts *opts)
{
	const struct pg_exchange *x = exchange;
	const struct pg_answer *a = detail;
	struct db_span *d = db_span_of(span);

	db_span_init(d, "postgresql");
	text_copy(d->namespace_, sizeof(d->namespace_), x->db);
	text_copy(d->query, sizeof(d->query), x->query);
	sql_summarize(d->query, d->operation, sizeof(d->operation), d->collection,
		      sizeof(d->collection));
	if (x->query_cut)
		d->flags |= DB_SPAN_QUERY_CUT;
	if (x->executions > 1)
		d->batch_size = x->executions;
	if (!a)
		return;
	d->returned_rows = a->error ? -1 : a->rows;
	if (a->cut)
		d->flags |= DB_SPAN_ANSWER_CUT;
	if (a->error)
		db_span_error(span, a->sqlstate[0] ? a->sqlstate : "ERROR",
			      a->sqlstate[0] ? strlen(a->sqlstate) : 5);
}

const struct proto_ops postgres_proto = {
	.name = "postgresql",
	.id = SONDE_PROTO_POSTGRES,
	.client_only = true,
	.conn_size = sizeof(struct pg_conn),
	.exchange_size = sizeof(struct pg_exchange),
	.open = pg_open,
	.start = pg_start,
	.data = pg_data,
	.fill_span = pg_fill_span,
	.span_name = db_span_name,
	.span_attributes = db_span_attributes,
	.metric = db_metric,
	.metric_attributes = db_metric_attributes,
};
