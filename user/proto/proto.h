/* The one interface a protocol implements, and the calls it makes back
 * into the generic connection layer (conn/tracker.c).
 *
 * The generic layer owns what every protocol needs: the connection table,
 * reordering, the role, linking, the queue of exchanges waiting for their
 * answer (in order, so pipelining pairs right), the span slot and the
 * attributes every span has. A protocol parses its two byte streams and
 * says when an exchange begins, when its answer begins, and when it is
 * answered; it keeps what it needs of a request in the exchange's own
 * area and writes its span's fields from there. A new protocol is one
 * module in proto/ plus one line in proto/registry.c. */
#ifndef SONDE_PROTO_H
#define SONDE_PROTO_H

#include "sonde_events.h"
#include "span.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct attr_sink;

/* ---- the attributes of a metric series -------------------------------- */

/* A protocol states a measurement's attributes as a list of pointers to
 * its span's or exchange's values (or constants), which the metrics
 * compare with a series' as they are, for every measurement, and copy
 * only into a new series. Keys are constants: one is known by its
 * address. A value that is a constant too (METRIC_ATTR_CONST: a method's
 * name, a scheme) is kept by address, so that comparing it is comparing
 * two addresses, not two strings. */
#define METRIC_ATTRS_MAX 12

enum metric_attr_type { METRIC_ATTR_STR, METRIC_ATTR_CONST, METRIC_ATTR_I64, METRIC_ATTR_BOOL };

struct metric_attr {
	const char *key;
	union {
		const char *str; /* METRIC_ATTR_STR, METRIC_ATTR_CONST */
		int64_t num;     /* METRIC_ATTR_I64; METRIC_ATTR_BOOL: 0 or 1 */
	};
	enum metric_attr_type type;
};

struct metric_attrs {
	unsigned n;
	bool cut; /* more than METRIC_ATTRS_MAX were given */
	struct metric_attr attr[METRIC_ATTRS_MAX];
};

static inline void metric_attr_put(struct metric_attrs *l, struct metric_attr a)
{
	if (l->n == METRIC_ATTRS_MAX) {
		l->cut = true;
		return;
	}
	l->attr[l->n++] = a;
}

/* An empty string is an absent value, as for spans (attr_put_str). */
static inline void metric_attr_text(struct metric_attrs *l, const char *key, const char *value,
				    enum metric_attr_type type)
{
	if (value[0])
		metric_attr_put(l, (struct metric_attr){ .key = key, .str = value, .type = type });
}

static inline void metric_attr_str(struct metric_attrs *l, const char *key, const char *value)
{
	metric_attr_text(l, key, value, METRIC_ATTR_STR);
}

/* value lives as long as the program. */
static inline void metric_attr_const(struct metric_attrs *l, const char *key, const char *value)
{
	metric_attr_text(l, key, value, METRIC_ATTR_CONST);
}

static inline void metric_attr_i64(struct metric_attrs *l, const char *key, int64_t value)
{
	metric_attr_put(l, (struct metric_attr){ .key = key, .num = value, .type = METRIC_ATTR_I64 });
}

/* An in-order piece of one direction's stream: `captured` bytes of data,
 * then `hole` bytes that were moved but not captured, then `tail` bytes of
 * data (at data + captured) that end the piece. */
struct piece {
	const uint8_t *data;
	uint32_t captured;
	uint64_t hole;
	uint32_t tail;
	uint64_t ts;   /* when its bytes moved (syscall exit), CLOCK_MONOTONIC */
	uint64_t pos;  /* stream offset of data[0], in this direction */
	uint64_t task; /* sonde_data_event.task of the call */
	uint32_t tid;  /* thread that made the call */
};

/* The connection as a protocol sees it: a handle into the generic layer. */
struct proto_conn;

/* Options every protocol may read. */
struct proto_opts {
	bool keep_query; /* export url.query (off: query strings may hold secrets) */
};

/* The start of a request, as the thread that moved its first byte saw it. */
struct request_start {
	uint64_t ts;
	uint32_t tid;
	uint64_t task;
	const char *traceparent; /* an incoming W3C traceparent, or NULL */
	size_t traceparent_len;
	/* Stream offset of the request's first byte; pos_known false for a
	 * protocol that does not say. */
	uint64_t pos;
	bool pos_known;
	/* What a proxy forwards of the request unchanged, hashed (for HTTP:
	 * method, target, Host): a call whose
	 * fingerprint is that of exactly one request its process was serving
	 * forwards it. 0: none. */
	uint64_t fingerprint;
};

/* How the oldest waiting exchange ended. */
struct answer {
	uint64_t start_ts;  /* first byte of the answer; 0 when there is none */
	uint64_t end_ts;    /* its last byte, or when the exchange was cut off */
	const char *cut_off; /* why it ended early (connection ended); NULL if it did not */
	const void *detail; /* the protocol's own view of the answer, for fill_span;
			       NULL when no answer was seen */
};

/* What a protocol reports that the generic layer counts. */
enum proto_note {
	NOTE_PARSE_ERROR,  /* bytes that are not the protocol: sync lost */
	NOTE_GAP,          /* bytes not captured where the parser needed them */
	NOTE_PARTIAL_HEAD, /* a message dropped before its start was complete */
};

/* The duration metrics an exchange can be counted in (signals/metrics.c
 * names them). */
enum duration_metric {
	METRIC_HTTP_SERVER_DURATION, /* http.server.request.duration */
	METRIC_HTTP_CLIENT_DURATION, /* http.client.request.duration */
	METRIC_DB_CLIENT_DURATION,   /* db.client.operation.duration */
	METRIC_DURATIONS,
};

struct proto_ops {
	const char *name;
	uint8_t id;            /* SONDE_PROTO_*, carried by the kernel's events */
	bool client_only;      /* server ends are not traced: the client's span
				  is the operation's only one */
	size_t conn_size;      /* per-connection state, pooled per protocol */
	size_t exchange_size;  /* per-exchange area, from request to answer */
	size_t work_size;      /* an area held only while a message is read
				  (conn_work_take), pooled per protocol: an
				  idle connection needs none */
	/* A new connection: role unknown, streams not synced yet. */
	void (*open)(void *st, struct proto_conn *pc, const struct proto_opts *opts);
	/* The connection is gone: give back the work areas the protocol holds
	 * (conn_work_give). NULL: it takes none. */
	void (*close)(void *st);
	/* The connection was seen opening with this role: both streams are at
	 * a message start. */
	void (*start)(void *st, uint8_t role);
	/* In-order bytes of one direction (enum sonde_dir). */
	void (*data)(void *st, int dir, const struct piece *p);
	/* The peer shut down its side (dir INGRESS), or the connection ended
	 * (both directions, one call each). NULL: nothing to do, exchanges
	 * still waiting are cut off by the generic layer. */
	void (*eof)(void *st, int dir, uint64_t ts);
	/* The connection was reset: messages in progress end, cut off. NULL:
	 * as for eof. */
	void (*reset)(void *st, uint64_t ts);
	/* Writes the protocol's fields of a span (every one of them, the span
	 * slot is reused) from the exchange's area and the answer's detail
	 * (NULL when none was seen). It may set server.address and port (the
	 * generic layer fills them from the connection where it did not) and
	 * the status. */
	void (*fill_span)(struct span *span, const void *exchange, const void *detail,
			  const struct proto_opts *opts);
	/* The span's name by the semantic conventions. */
	void (*span_name)(const struct span *span, char *out, size_t size);
	/* The span's protocol attributes; scratch holds SPAN_SCRATCH_MAX bytes
	 * for values the protocol formats. */
	void (*span_attributes)(const struct span *span, const struct attr_sink *sink,
				char *scratch);
	/* The duration metric the exchange is counted in, and the
	 * low-cardinality attributes of its series, added to out. */
	enum duration_metric (*metric)(const struct span *span);
	void (*metric_attributes)(const struct span *span, struct metric_attrs *out);
	/* The attributes of a server request in progress (http.server.
	 * active_requests), from its exchange area once its start is read;
	 * NULL: the protocol has no such metric. */
	void (*active_attributes)(const void *exchange, struct metric_attrs *out);
};

/* Room for formatted attribute values (url.full and the like). */
#define SPAN_SCRATCH_MAX 1900

/* ---- calls a protocol makes into the generic layer ------------------- */

uint8_t conn_role(const struct proto_conn *pc);
/* A connection sonde did not see open learns its role from its first
 * message; the first call decides. */
void conn_set_role(struct proto_conn *pc, uint8_t role);
/* A request began: its exchange's area (exchange_size bytes, not cleared),
 * or NULL when too many are waiting or memory ran out (counted). */
void *conn_request(struct proto_conn *pc, const struct request_start *rs);
/* A work area of proto_ops.work_size bytes, its contents undefined; NULL
 * when out of memory (counted). Given back with conn_work_give, or at the
 * latest from proto_ops.close. */
void *conn_work_take(struct proto_conn *pc);
void conn_work_give(struct proto_conn *pc, void *work);
/* The exchange areas of the newest and the oldest waiting exchange; NULL
 * when none waits. */
void *conn_newest(struct proto_conn *pc);
void *conn_oldest(struct proto_conn *pc);
/* A server began writing the answer to the oldest waiting exchange: which
 * thread and task serve it. */
void conn_answer_began(struct proto_conn *pc, uint32_t tid, uint64_t task, uint64_t ts);
/* The oldest waiting exchange is answered and becomes a span. False when
 * none waits or the answer began before it (it answers a request sonde
 * never saw): an orphan, counted. */
bool conn_answer(struct proto_conn *pc, const struct answer *a);
/* The oldest waiting exchange ends with no span by design (a prepare
 * alone), counted. */
void conn_drop_oldest(struct proto_conn *pc);
/* The answer stream lost sync: every waiting exchange becomes a span with
 * no answer rather than pair with a later one. */
void conn_answers_lost(struct proto_conn *pc, uint64_t ts);
/* Parsing ends for good on this connection (upgrade, TLS, push-only
 * mode), counted. */
void conn_stop(struct proto_conn *pc);
void conn_note(struct proto_conn *pc, enum proto_note note);

/* ---- the registry ----------------------------------------------------- */

/* The protocol with this SONDE_PROTO_* id, or NULL. */
const struct proto_ops *proto_find(uint8_t id);
/* Spans sonde makes that no protocol does (command spans, trace/command.c)
 * have ids past the kernel's: they name and describe spans, never parse. */
#define PROTO_COMMAND SONDE_PROTO_COUNT
#define PROTO_JOB (SONDE_PROTO_COUNT + 1) /* job spans, trace/jobs.c */
/* The ops that name and describe a span: its protocol's, or those of
 * PROTO_COMMAND or PROTO_JOB. */
const struct proto_ops *proto_span_ops(uint8_t id);
/* Largest exchange_size over every registered protocol: exchanges are
 * pooled at that size. */
size_t proto_max_exchange_size(void);

#endif
