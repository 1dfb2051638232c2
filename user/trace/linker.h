/* Decides each span's parent, and so its trace, with no help from the
 * traced programs:
 *
 * - a SERVER span whose connection's other end is a CLIENT
 *   connection sonde follows on this host is the child of the CLIENT span
 *   of the same exchange (ends matched by address and port, exchanges by
 *   order on the connection, checked by time);
 * - a CLIENT span is the child of the SERVER request whose response was
 *   written by the same thread and the same CPython asyncio task
 *   (sonde_data_event.task) that wrote the client request, while that
 *   server request was open. Outside CPython the task is 0, and the
 *   thread alone decides: exact for a thread per request; on an event
 *   loop serving several requests at once the candidates are ambiguous
 *   and the span starts its own trace (counted), never a guessed one;
 * - a span of a job's own thread or asyncio task (an entry point the
 *   process started, jobs.h) is the job's child; the job's own span is
 *   decided as a CLIENT span's is, from the thread and task that started
 *   it;
 * - a span with none of these whose request carries a valid traceparent
 *   header is that header's child: a header decides only when no traced
 *   caller or in-process parent is known, since a proxy forwards the
 *   header it was sent, which would skip its hops. Not for a client span
 *   with several candidates: its header may be such a forwarded one.
 *
 * A parent is often decided after its child has finished (a server
 * request's response comes after the calls it made), so a finished span
 * whose trace is not known yet is held, and leaves for the export queue
 * when it is. Nothing waits for ever: past wait_ms (peer_wait_ms for the
 * peer of a server span whose client connection is known; two poll ticks
 * when none is, and none when the client's address is no end's on this
 * host) the span starts its own trace, counted. */
#ifndef SONDE_LINKER_H
#define SONDE_LINKER_H

#include "counters.h"
#include "exporter.h"
#include "ids.h"
#include "span.h"

#include <stdbool.h>
#include <stdint.h>

/* One end of a TCP connection; IPv4 as v4-mapped IPv6. */
struct link_end {
	uint8_t addr[16];
	uint16_t port;
};

struct linker_opts {
	uint32_t wait_ms;      /* longest a span waits for its parent; 0: 30000 */
	uint32_t peer_wait_ms; /* how long a server span waits for its client's
				  span on a known connection; 0: 250 */
	uint32_t max_held;     /* finished spans held at once; 0: 4096 */
};

#define LINKER_COUNTERS(X) \
	X(parent_traceparent, "parent_traceparent", TOTAL, \
	  "spans under their request's traceparent header, no traced parent being known") \
	X(traceparent_superseded, "traceparent_superseded", TOTAL, \
	  "spans whose request carried a traceparent, under the traced parent sonde saw") \
	X(parent_peer, "parent_peer", TOTAL, "server spans under the client span at the other end") \
	X(parent_task, "parent_task", TOTAL, "client spans under the request their thread or task served") \
	X(parent_forwarded, "parent_forwarded", TOTAL, \
	  "client spans under the one request of their process that they forward") \
	X(parent_job, "parent_job", TOTAL, \
	  "spans and lines under the job (entry point) whose task or thread made them") \
	X(parent_command, "parent_command", TOTAL, \
	  "spans under their process's command span, where they would start a trace") \
	X(roots, "trace_roots", TOTAL, "spans that start a trace, for any reason") \
	X(root_ambiguous, "root_ambiguous", TOTAL, "client spans with more than one candidate parent") \
	X(root_task_unknown, "root_task_unknown", TOTAL, "client spans whose task could not be read") \
	X(root_wait_expired, "root_wait_expired", TOTAL, "spans that waited for their parent in vain") \
	X(root_peer_lost, "root_peer_lost", TOTAL, \
	  "server spans whose client request is missing at the other end (its records lost)") \
	X(root_hold_full, "root_hold_full", TOTAL, \
	  "spans decided early: too many held, or no memory to hold one") \
	X(candidates_lost, "candidates_lost", TOTAL, \
	  "answered server requests no client span could choose: no memory to keep them") \
	X(peer_absent, "client_conns_peer_unseen", TOTAL, \
	  "client connections whose server end sonde does not follow (not traced, or on another host)") \
	X(peer_kept, "client_requests_kept", GAUGE, \
	  "client requests kept for their server end on this host to take") \
	X(held, "spans_held", GAUGE, "finished spans waiting for their trace") \
	X(held_peak, "spans_held_peak", TOTAL, "most spans held at once")

struct linker_stats {
	LINKER_COUNTERS(COUNTER_FIELD)
};

extern const struct counter_desc linker_counters[];
extern const size_t linker_counter_count;

struct linker;
struct link_conn;
struct link_node;

/* A request head, as the linker needs it. */
struct link_request {
	uint32_t tgid;
	uint32_t tid;      /* thread that moved the request head's first byte */
	uint64_t task;     /* its sonde_data_event.task */
	uint64_t start_ts; /* CLOCK_MONOTONIC ns */
	uint64_t fingerprint; /* request_start.fingerprint */
	uint64_t pos; /* stream offset of its first byte + 1, on a connection
			 seen from its start; 0: unknown */
	bool server;
	struct link_conn *conn; /* NULL when the connection's ends are unknown */
	const struct trace_parent *remote; /* its traceparent header; NULL: none */
};

struct linker *linker_new(const struct linker_opts *opts, struct exporter *exporter);
/* Decides what is still open with what is known, emits what is held. */
void linker_free(struct linker *l);
/* Gives back to the allocator what a burst left in the pools; returns the
 * bytes freed. */
size_t linker_trim(struct linker *l);

struct link_conn *linker_conn_open(struct linker *l, bool server, const struct link_end *local,
				   const struct link_end *remote);
void linker_conn_close(struct linker *l, struct link_conn *lc, uint64_t now_ns);
/* A client end sonde does not trace (an excluded or scoped-out
 * process's), made or found at ts: a server end of it on this host starts
 * its own trace at once instead of waiting for the client's requests, if
 * it looks within peer_wait_ms. */
void linker_untraced_client(struct linker *l, const struct link_end *local,
			    const struct link_end *remote, uint64_t ts);

/* A request head: the node names its span from now on. NULL when out of
 * memory: the span then starts its own trace. */
struct link_node *linker_request(struct linker *l, const struct link_request *req);
/* A server request's (final) response head: who wrote it, and when. */
void linker_response(struct linker *l, struct link_node *n, uint32_t tid, uint64_t task,
		     uint64_t ts);
/* Where to build the exchange's span: a slot of the export queue when its
 * trace is known, else a held one. NULL when the queue is full (the
 * exporter counts the drop). */
struct span *linker_span_begin(struct linker *l, struct link_node *n);
/* The span is built (span may be NULL: dropped); the exchange ended at
 * end_ts. The tracker's hold on n ends here. */
void linker_span_end(struct linker *l, struct link_node *n, struct span *span, uint64_t end_ts);
/* A write to stdout or stderr by thread tid (CPython task `task`) at ts:
 * the request it was written for is decided as a CLIENT span's parent is,
 * exact or none; a line is never given a trace of its own. The caller
 * holds the node until linker_log_release. NULL when out of memory. */
struct link_node *linker_log(struct linker *l, uint32_t tgid, uint32_t tid, uint64_t task,
			     uint64_t ts);

enum link_log_state {
	LINK_LOG_PENDING,   /* not decided yet */
	LINK_LOG_NONE,      /* written outside any request */
	LINK_LOG_AMBIGUOUS, /* several requests could have written it: no ids */
	LINK_LOG_SPAN,      /* the ids of the server span it was written for */
};

/* trace_id: TRACE_ID_SIZE bytes, span_id: SPAN_ID_SIZE, set for
 * LINK_LOG_SPAN. */
enum link_log_state linker_log_ids(const struct link_node *n, uint8_t *trace_id, uint8_t *span_id);
void linker_log_release(struct linker *l, struct link_node *n);
/* From now on, spans of tgid that would start a trace are children of
 * span_id in trace_id (its command span), and its lines written outside
 * any request that span's. -ENOMEM when out of memory. */
int linker_set_root(struct linker *l, uint32_t tgid, const uint8_t *trace_id,
		    const uint8_t *span_id, uint8_t flags);
void linker_clear_root(struct linker *l, uint32_t tgid);
/* A job (jobs.h) started at creator->start_ts by the thread and task in
 * creator: its span's node, decided as a client span's is (under the
 * request, or job, its creator served). Until linker_job_end, the spans
 * and lines of its own thread job_tid (a thread job), or of its task
 * job_task (job_tid 0; the kernel marks the job's task with
 * SONDE_TASK_JOB), are its children, whatever else they could be. The caller
 * holds the node as a request's (linker_span_begin, linker_span_end).
 * NULL when out of memory. */
struct link_node *linker_job(struct linker *l, const struct link_request *creator,
			     uint32_t job_tid, uint64_t job_task);
void linker_job_end(struct linker *l, struct link_node *job, uint64_t end_ts);
/* Decides what can be decided; now_ns is CLOCK_MONOTONIC. */
void linker_tick(struct linker *l, uint64_t now_ns);
void linker_get_stats(const struct linker *l, struct linker_stats *out);

#endif
