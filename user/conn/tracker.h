/* The generic connection layer, from kernel events to spans: follows each
 * connection, reorders its data, hands each direction's bytes to the
 * connection's protocol (proto.h), pairs requests with answers in order
 * (so pipelining stays right) and builds one span per exchange. */
#ifndef SONDE_TRACKER_H
#define SONDE_TRACKER_H

#include "clock.h"
#include "exporter.h"
#include "linker.h"
#include "procinfo.h"
#include "proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Every exchange, whatever its protocol, once it has ended: what the RED
 * metrics count. The span is built even when the export queue had no
 * room for it, and is valid only during the call. */
struct exchange_summary {
	const struct span *span; /* its protocol's fields: proto_find(span->proto) */
	uint8_t proto;           /* SONDE_PROTO_* */
	uint8_t kind;            /* enum span_kind */
	bool error;              /* status ERROR */
	uint64_t start_ns, end_ns; /* CLOCK_MONOTONIC */
};

typedef void (*exchange_fn)(void *ctx, const struct exchange_summary *x);

struct tracker_opts {
	struct proto_opts proto;
	uint32_t max_pending; /* pipelined requests awaiting answers, per connection */
	uint32_t conn_buckets_log2; /* connection hash table size; 0: 2^16 */
	struct linker_opts link;
	exchange_fn on_exchange; /* NULL: nobody counts exchanges */
	void *on_exchange_ctx;
};

struct tracker_stats {
	uint64_t events;
	uint64_t bad_records;       /* records of unknown type or wrong size */
	uint64_t conns_opened;
	uint64_t conns_ended;
	uint64_t conns_no_open;     /* data before (or without) its conn event */
	uint64_t requests;
	uint64_t exchanges;         /* request with response */
	uint64_t exchanges_cut_off; /* request whose response never completed */
	uint64_t spans_server, spans_client;
	uint64_t orphan_responses;  /* answer with no request seen */
	uint64_t responses_lost;    /* requests whose answer sonde could not decode */
	uint64_t pending_overflow;  /* requests dropped: too many in flight */
	uint64_t parse_errors;      /* sync lost: bytes not of the protocol */
	uint64_t gap_resyncs;       /* sync lost: bytes not captured */
	uint64_t partial_heads;     /* messages dropped before their head was complete */
	uint64_t parsing_stopped;   /* connections no longer parsed: upgraded,
				       TLS, push-only (pub/sub), server ends of
				       client-only protocols */
	uint64_t unpaired;          /* exchanges that make no span by design */
	uint64_t unfinished_at_exit;
	uint64_t reorder_held, reorder_gaps, reorder_gap_bytes, reorder_stale;
	uint64_t out_of_memory;     /* records dropped: no memory for a connection
	                               or a held piece */
	uint64_t proc_exits;
	struct linker_stats link;
};

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
/* Moves up to `max` pids of exited processes into out (for the kernel map
 * sweep); returns how many. */
size_t tracker_take_exited(struct tracker *t, uint32_t *out, size_t max);
void tracker_get_stats(const struct tracker *t, struct tracker_stats *out);

#endif
