/* The generic connection layer, from kernel events to spans: follows each
 * connection, reorders its data, hands each direction's bytes to the
 * connection's protocol (proto.h), pairs requests with answers in order
 * (so pipelining stays right) and builds one span per exchange. */
#ifndef SONDE_TRACKER_H
#define SONDE_TRACKER_H

#include "clock.h"
#include "counters.h"
#include "exporter.h"
#include "linker.h"
#include "procinfo.h"
#include "proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Every exchange, whatever its protocol, once it has ended: what the RED
 * metrics count. The span (its protocol, kind, status and the protocol's
 * fields) is built even when the export queue had no room for it, and is
 * valid only during the call. */
struct exchange_summary {
	const struct span *span;
	uint64_t start_ns, end_ns; /* CLOCK_MONOTONIC */
};

typedef void (*exchange_fn)(void *ctx, const struct exchange_summary *x);

/* A server request whose start its protocol has read (proto_ops.
 * active_attributes): what the count of requests in progress counts.
 * Valid only during the call. */
struct request_began {
	const struct proc_info *proc; /* NULL: unknown process */
	const struct proto_ops *ops;
	const void *exchange;         /* the protocol's exchange area */
};

/* Returns a handle given back when the request ends, whichever way. */
typedef void *(*request_began_fn)(void *ctx, const struct request_began *r);
typedef void (*request_ended_fn)(void *ctx, void *handle);

struct tracker_opts {
	struct proto_opts proto;
	uint32_t max_pending; /* pipelined requests awaiting answers, per
				 connection; 0: 1024 */
	uint32_t conn_buckets_log2; /* connection hash table size; 0: 2^16 */
	struct linker_opts link;
	/* The observer of exchanges (the metrics); NULL callbacks: none. */
	exchange_fn on_exchange;
	request_began_fn on_request_began;
	request_ended_fn on_request_ended;
	void *observer_ctx;
	/* A connection of a process the scope rules leave out for good was
	 * seen: the kernel may stop following it and the process (NULL:
	 * nobody to tell). */
	void (*on_scoped_out)(void *ctx, uint32_t tgid, int32_t fd);
	void *scoped_out_ctx;
};

#define TRACKER_COUNTERS(X) \
	X(events, "events", TOTAL, "ring-buffer records read") \
	X(bad_records, "bad_records", TOTAL, "records of unknown type, protocol or wrong size") \
	X(conns_opened, "conns_opened", TOTAL, "connections followed") \
	X(conns_ended, "conns_ended", TOTAL, "connections ended: close, reset, exit, fd reuse") \
	X(conns_moved, "conns_moved", TOTAL, \
	  "connections that went on under another fd of their socket when theirs closed") \
	X(untraced_clients, "untraced_client_ends", TOTAL, \
	  "client ends left out (excluded, scoped out), known so that their servers need not wait") \
	X(conns_no_open, "conns_without_open_event", TOTAL, \
	  "connections whose data came before (or without) their conn event") \
	X(requests, "requests", TOTAL, "requests seen, every protocol") \
	X(exchanges, "exchanges", TOTAL, "requests answered") \
	X(exchanges_cut_off, "exchanges_cut_off", TOTAL, \
	  "requests whose answer never completed: the connection ended") \
	X(orphan_responses, "orphan_responses", TOTAL, "answers to no request seen") \
	X(responses_lost, "responses_lost", TOTAL, "requests whose answer sonde could not decode") \
	X(pending_overflow, "pending_overflow", TOTAL, "requests dropped: too many in flight") \
	X(parse_errors, "parse_errors", TOTAL, "sync lost: bytes not of the protocol") \
	X(gap_resyncs, "gap_resyncs", TOTAL, "sync lost: bytes not captured") \
	X(partial_heads, "partial_heads", TOTAL, "messages dropped before their start was complete") \
	X(parsing_stopped, "parsing_stopped", TOTAL, \
	  "connections no longer parsed: upgraded, TLS, push-only, server ends of databases") \
	X(unpaired, "exchanges_unpaired", TOTAL, "exchanges that make no span by design") \
	X(unfinished_at_exit, "unfinished_at_exit", TOTAL, "requests still open when sonde stopped") \
	X(reorder_held, "reorder_held", TOTAL, "pieces that arrived ahead of their offset") \
	X(reorder_gaps, "reorder_gaps", TOTAL, "holes delivered for bytes never seen") \
	X(reorder_gap_bytes, "reorder_gap_bytes", TOTAL, "bytes in those holes") \
	X(reorder_stale, "reorder_stale", TOTAL, "pieces wholly before the expected offset") \
	X(proc_exits, "proc_exits", TOTAL, "processes that exited") \
	X(exits_unswept, "exits_unswept", TOTAL, \
	  "exited processes whose kernel map entries were left to LRU eviction: " \
	  "more exits between two sweeps than the agent keeps") \
	X(conns_scoped_out, "conns_scoped_out", TOTAL, \
	  "connections of processes the --include/--exclude rules leave out") \
	X(events_scoped_out, "events_scoped_out", TOTAL, \
	  "records of those connections, dropped by the agent") \
	X(out_of_memory, "out_of_memory", TOTAL, \
	  "records dropped: no memory for a connection or a held piece") \
	X(spans_server, "spans_server", TOTAL, "SERVER spans built") \
	X(spans_client, "spans_client", TOTAL, "CLIENT spans built")

struct tracker_stats {
	TRACKER_COUNTERS(COUNTER_FIELD)
	struct linker_stats link;
};

extern const struct counter_desc tracker_counters[];
extern const size_t tracker_counter_count;

struct tracker;

struct tracker *tracker_new(const struct tracker_opts *opts, struct exporter *exporter,
			    struct proc_table *procs, const struct wallclock *clock);
/* Ends every connection (completed exchanges were already exported) and
 * frees everything. */
void tracker_free(struct tracker *t);
/* One ring-buffer record. */
void tracker_handle(struct tracker *t, const void *record, size_t size);
/* Call after each drain of the ring buffer: pieces held for reordering
 * since the previous tick are given up on, and spans whose parent can now
 * be decided leave. now_ns is CLOCK_MONOTONIC; UINT64_MAX decides every
 * span still waiting (at exit). */
void tracker_tick(struct tracker *t, uint64_t now_ns);
/* Gives back to the allocator what a burst of connections and requests
 * left in the pools; returns the bytes freed. Once a second is enough. */
size_t tracker_trim(struct tracker *t);
/* Moves up to `max` pids of exited processes into out (for the kernel map
 * sweep); returns how many. */
size_t tracker_take_exited(struct tracker *t, uint32_t *out, size_t max);
void tracker_get_stats(const struct tracker *t, struct tracker_stats *out);
/* The linker the tracker's spans are linked by: log records are attributed
 * by the same one. */
struct linker *tracker_linker(struct tracker *t);

#endif
