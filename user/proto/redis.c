/* Redis (RESP2 and RESP3) behind the protocol interface: each command a
 * client sends is an exchange, answered by the next top-level reply
 * (replies come in command order, so pipelines pair right). RESP3 pushes
 * and attributes answer nothing. A command that turns the connection into
 * a push stream (SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE, MONITOR) or silences
 * replies (CLIENT REPLY) makes its span, then parsing stops: the pushes
 * that follow are not operations.
 *
 * Only the client's side is parsed (proto_ops.client_only): a traced
 * redis-server adds no second span. */
#include "db.h"
#include "proto.h"
#include "resp.h"
#include "sonde_events.h"
#include "text.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#define REDIS_DB_MAX 8

struct redis_conn {
	struct proto_conn *pc;
	struct resp_stream commands; /* what the client sends */
	struct resp_stream replies;  /* what it receives */
	bool commands_started;       /* the command stream was ever in sync */
	/* Replies lost sync (or were never in it): they sync again at the first
	 * reply read after this command (0: no command since). */
	uint64_t resync_after;
	char db[REDIS_DB_MAX];       /* db.namespace; empty when not known */
};

struct redis_exchange {
	char command[RESP_WORD_MAX]; /* upper-cased */
	char arg[RESP_WORD_MAX];     /* first argument, when captured */
	uint32_t nargs;
	bool cut;
	char db[REDIS_DB_MAX];
};

/* A reply as the span sees it. */
struct redis_reply {
	const struct resp_value *v;
	bool cut;
};

static bool is_command(const char *command, const char *name)
{
	return strcmp(command, name) == 0;
}

/* Commands whose first argument is a subcommand: part of the query text. */
static bool has_subcommand(const char *command)
{
	static const char *const containers[] = {
		"ACL", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DEBUG", "FUNCTION", "LATENCY",
		"MEMORY", "MODULE", "OBJECT", "PUBSUB", "SCRIPT", "SLOWLOG", "XGROUP", "XINFO", NULL,
	};

	for (const char *const *c = containers; *c; c++)
		if (is_command(command, *c))
			return true;
	return false;
}

/* After these, what the server sends is not one reply per command. */
static bool ends_pairing(const struct redis_exchange *x)
{
	return is_command(x->command, "SUBSCRIBE") || is_command(x->command, "PSUBSCRIBE") ||
	       is_command(x->command, "SSUBSCRIBE") || is_command(x->command, "MONITOR") ||
	       (is_command(x->command, "CLIENT") && strcasecmp(x->arg, "REPLY") == 0);
}

static void copy_upper(char *out, const char *in)
{
	size_t i = 0;

	for (; in[i] && i < RESP_WORD_MAX - 1; i++)
		out[i] = in[i] >= 'a' && in[i] <= 'z' ? (char)(in[i] - 32) : in[i];
	out[i] = '\0';
}

static void stop_parsing(struct redis_conn *rc)
{
	rc->commands.state = RESP_STOPPED;
	rc->replies.state = RESP_STOPPED;
	conn_stop(rc->pc);
}

/* ---- commands ------------------------------------------------------------ */

static void on_command(void *owner, const struct resp_value *v)
{
	struct redis_conn *rc = owner;
	struct request_start rs = { .ts = v->start_ts, .tid = v->start_tid, .task = v->start_task };
	struct redis_exchange *x;

	if (v->nwords == 0 || v->nitems == 0)
		return; /* not a command: nothing waits for a reply */
	x = conn_request(rc->pc, &rs);
	if (rc->replies.state == RESP_LOST && !rc->resync_after)
		rc->resync_after = v->start_ts;
	if (!x)
		return;
	copy_upper(x->command, v->words[0]);
	text_copy(x->arg, sizeof(x->arg), v->nwords > 1 ? v->words[1] : "");
	x->nargs = v->nitems - 1;
	x->cut = v->cut;
	memcpy(x->db, rc->db, sizeof(x->db));
}

/* Which commands the lost bytes held is unknown, and every reply after
 * them would pair with the wrong command: parsing stops. */
static void on_commands_lost(void *owner, const struct resp_value *v, bool gap)
{
	struct redis_conn *rc = owner;

	conn_note(rc->pc, gap ? NOTE_GAP : NOTE_PARSE_ERROR);
	stop_parsing(rc);
}

static const struct resp_callbacks command_callbacks = {
	.on_value = on_command,
	.on_lost = on_commands_lost,
};

/* ---- replies -------------------------------------------------------------- */

static bool is_error(const struct resp_value *v)
{
	return v->type == '-' || v->type == '!';
}

static void answer(struct redis_conn *rc, const struct resp_value *v, bool cut)
{
	const struct redis_exchange *x = conn_oldest(rc->pc);
	struct redis_reply reply = { .v = v, .cut = cut };
	struct answer a = { .start_ts = v->start_ts, .end_ts = v->end_ts, .detail = &reply };
	bool select = false, stop = false;
	char db[REDIS_DB_MAX];

	if (x) {
		select = is_command(x->command, "SELECT") && !is_error(v) && x->arg[0];
		text_copy(db, sizeof(db), x->arg);
		stop = ends_pairing(x);
	}
	if (!conn_answer(rc->pc, &a))
		return;
	if (select)
		memcpy(rc->db, db, sizeof(db));
	if (stop)
		stop_parsing(rc);
}

static void on_reply(void *owner, const struct resp_value *v)
{
	if (v->type == '>' || v->type == '|')
		return; /* a push, or attributes before the reply itself */
	answer(owner, v, false);
}

/* A reply cut by lost bytes still answers its command, marked; whatever
 * else waited may have had its replies in the lost bytes. */
static void on_replies_lost(void *owner, const struct resp_value *v, bool gap)
{
	struct redis_conn *rc = owner;
	uint64_t ts = rc->replies.cur ? rc->replies.cur->ts : 0;

	conn_note(rc->pc, gap ? NOTE_GAP : NOTE_PARSE_ERROR);
	if (v && v->type != '>' && v->type != '|')
		answer(rc, v, true);
	conn_answers_lost(rc->pc, ts);
	rc->resync_after = 0;
}

static const struct resp_callbacks reply_callbacks = {
	.on_value = on_reply,
	.on_lost = on_replies_lost,
};

/* ---- connection events ----------------------------------------------------- */

static void redis_open(void *st, struct proto_conn *pc, const struct proto_opts *opts)
{
	struct redis_conn *rc = st;

	rc->pc = pc;
	resp_init(&rc->commands, true, &command_callbacks, rc);
	resp_init(&rc->replies, false, &reply_callbacks, rc);
	rc->commands_started = false;
	rc->resync_after = 0;
	rc->db[0] = '\0';
}

/* Seen from its connect: both streams start at a value, in database 0. */
static void redis_start(void *st, uint8_t role)
{
	struct redis_conn *rc = st;

	resp_sync(&rc->commands);
	resp_sync(&rc->replies);
	rc->commands_started = true;
	memcpy(rc->db, "0", 2);
}

/* A connection opened before sonde started is picked up at a command: the
 * kernel sends its data from the first one on. */
static void sync_commands(struct redis_conn *rc, const struct piece *p)
{
	if (rc->commands.state != RESP_LOST || rc->commands_started ||
	    !resp_is_value_start(&rc->commands, p->data, p->captured))
		return;
	conn_set_role(rc->pc, SONDE_ROLE_CLIENT);
	resp_sync(&rc->commands);
	rc->commands_started = true;
}

static void sync_replies(struct redis_conn *rc, const struct piece *p)
{
	if (rc->replies.state == RESP_LOST && rc->resync_after && p->ts > rc->resync_after &&
	    resp_is_value_start(&rc->replies, p->data, p->captured))
		resp_sync(&rc->replies);
}

static void redis_data(void *st, int dir, const struct piece *p)
{
	struct redis_conn *rc = st;

	if (dir == SONDE_DIR_EGRESS) {
		sync_commands(rc, p);
		resp_feed(&rc->commands, p);
	} else {
		sync_replies(rc, p);
		resp_feed(&rc->replies, p);
	}
}

/* ---- the span ---------------------------------------------------------------- */

/* "SET ? ?": the command (and subcommand), and a "?" per argument. */
static void query_text(struct db_span *d, const struct redis_exchange *x)
{
	size_t len = (size_t)snprintf(d->query, sizeof(d->query), "%s", x->command);
	uint32_t args = x->nargs;

	if (has_subcommand(x->command) && x->arg[0] && args) {
		char sub[RESP_WORD_MAX];

		copy_upper(sub, x->arg);
		len += (size_t)snprintf(d->query + len, sizeof(d->query) - len, " %s", sub);
		args--;
	}
	for (; args && len + 2 < sizeof(d->query); args--, len += 2)
		memcpy(d->query + len, " ?", 3);
	if (args || x->cut)
		d->flags |= DB_SPAN_QUERY_CUT;
}

static void redis_fill_span(struct span *span, const void *exchange, const void *detail,
			    const struct proto_opts *opts)
{
	const struct redis_exchange *x = exchange;
	const struct redis_reply *reply = detail;
	struct db_span *d = db_span_of(span);

	db_span_init(d, "redis");
	text_copy(d->operation, sizeof(d->operation), x->command);
	text_copy(d->namespace_, sizeof(d->namespace_), x->db);
	query_text(d, x);
	if (!reply)
		return;
	if (reply->cut)
		d->flags |= DB_SPAN_ANSWER_CUT;
	if (is_error(reply->v))
		db_span_error(span, reply->v->nwords ? reply->v->words[0] : "ERR",
			      reply->v->nwords ? strlen(reply->v->words[0]) : 3);
}

const struct proto_ops redis_proto = {
	.name = "redis",
	.id = SONDE_PROTO_REDIS,
	.client_only = true,
	.conn_size = sizeof(struct redis_conn),
	.exchange_size = sizeof(struct redis_exchange),
	.open = redis_open,
	.start = redis_start,
	.data = redis_data,
	.fill_span = redis_fill_span,
	.span_name = db_span_name,
	.span_attributes = db_span_attributes,
	.metric = db_metric,
	.metric_attributes = db_metric_attributes,
};
