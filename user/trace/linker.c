#include "linker.h"

#include "host_ends.h"
#include "pool.h"

#include "log.h"
#include "sonde_events.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define LINKER_DESC(...) COUNTER_DESC(struct linker_stats, __VA_ARGS__)
const struct counter_desc linker_counters[] = { LINKER_COUNTERS(LINKER_DESC) };
const size_t linker_counter_count = sizeof(linker_counters) / sizeof(linker_counters[0]);

#define PROC_BUCKETS 1024
#define CONN_BUCKETS 4096
#define MS 1000000ull
/* A server request and the client write that caused it: the server's
 * read can return before the client's write does. */
#define PEER_SLACK_NS (20 * MS)
/* How long a server request that has answered stays a candidate parent
 * for client requests not decided yet (events reach the agent a little
 * out of order). */
#define RETAIN_NS (50 * MS)
#define CHAIN_MAX 64
/* Poll ticks a server request waits for a client connection at its other
 * end to be seen at all: the client's connection event is written with
 * its first request, so it is in the same drain as the server's first
 * read, or (that read can return before the client's write does) in the
 * next. Only a connection's first request waits, but every later one
 * queues behind it. A client whose address no end on this host has had
 * (host_ends.h) is on another host, and nothing waits for it. */
#define PEER_CONN_TICKS 2
/* Nodes that prune_candidates reads ahead of the one it frees. */
#define PRUNE_PREFETCH 8

/* An answered server request and its answer time, which is kept here and
 * not in the node: a candidate has been cold in memory for most of
 * RETAIN_NS by the time it is pruned, and most candidates a client request
 * looks at were answered before it began, so both read the times without
 * touching the nodes. */
struct candidate {
	uint64_t resp_ts;
	struct link_node *node;
};

/* Candidates in answer order: a ring that doubles when full, so it stops
 * allocating once it has grown to the process's request rate. */
struct candidate_fifo {
	struct candidate *slots;
	uint32_t head, len, cap; /* cap: 0 or a power of two */
};

struct link_proc {
	struct link_proc *hash_next, *all_next;
	uint32_t tgid;
	uint32_t refs;
	/* Server requests without a response yet, newest start first, so
	 * that the oldest is at hand (a client span waits while it is older
	 * than the client); and those answered recently. */
	struct link_node *open, *open_oldest;
	struct candidate_fifo closed;
	uint64_t oldest_waiting; /* start of the oldest undecided client; 0: none */
	/* Undecided client requests whose task names one request's handler,
	 * waiting behind an older unanswered request (task_waits). */
	struct link_node *task_waiting;
	struct link_job *jobs;   /* running, or ended less than wait_ms ago */
};

/* A job (linker_job): what names its own events, and when they are its. */
struct link_job {
	struct link_job *next;  /* newer first */
	struct link_node *node; /* its span's */
	uint32_t tid;           /* a thread job's thread; 0: a task job */
	uint64_t task;          /* a task job's task (SONDE_TASK_JOB set) */
	uint64_t start_ts;
	uint64_t end_ts;        /* UINT64_MAX while it runs */
};

struct link_conn {
	struct link_conn *hash_next, *closing_next; /* hash_next: also the free list */
	struct link_end local, remote;
	bool server, hashed, closed;
	bool peer_unseen; /* server: its client end was looked for in vain */
	bool untraced;    /* client: an end sonde does not trace (linker_untraced_client) */
	bool peer_looked; /* client: a server request on this host looked for it */
	bool peer_absent; /* client: none did within peer_wait_ms of its first
			     answer; its requests are not kept for one */
	uint32_t refs;
	uint64_t closed_at;
	uint64_t first_end_ts; /* client: when its first request ended; 0: none yet */
	/* A client connection's requests not matched yet with a server
	 * request on the other end; a server connection's requests, oldest
	 * first, until each is decided (the decided ones leave lazily). */
	struct link_node *queue_head, *queue_tail;
};

struct link_node {
	struct link_node *und_next;            /* undecided list */
	struct link_node *cand_prev, *cand_next; /* proc open list */
	struct link_node *peer_next;           /* client conn queue */
	struct link_node *waiters, *wait_next; /* children waiting for this trace */
	struct link_node *task_prev, *task_next; /* proc task_waiting list */
	struct link_node *parent;              /* decided parent, trace pending */
	struct link_proc *proc;
	struct link_conn *conn;
	struct span *held;
	uint64_t start_ts, end_ts, deadline;
	uint64_t task, resp_task;
	uint64_t fingerprint;
	uint64_t pos; /* link_request.pos */
	uint32_t tid, resp_tid;
	uint32_t refs;
	uint32_t ticks; /* poll ticks spent undecided */
	bool server, resp_known, ended, decided, final, in_open, task_waits;
	bool has_parent;
	bool log;       /* a log write's: decided like a client span, counted nowhere */
	bool ambiguous; /* decided with no parent: more than one candidate */
	bool has_remote; /* trace_id, parent_span_id, flags: its traceparent's */
	uint8_t flags;
	uint8_t trace_id[TRACE_ID_SIZE];
	uint8_t span_id[SPAN_ID_SIZE];
	uint8_t parent_span_id[SPAN_ID_SIZE];
};


/* A process whose spans that would start a trace are children of this
 * span instead (a command span). */
struct link_root {
	struct link_root *next;
	uint32_t tgid;
	uint8_t flags;
	uint8_t trace_id[TRACE_ID_SIZE];
	uint8_t span_id[SPAN_ID_SIZE];
};

struct linker {
	struct linker_opts opts;
	struct link_root *roots;
	struct exporter *exporter;
	struct idgen ids;
	struct link_proc *procs[PROC_BUCKETS];
	struct link_proc *all_procs;
	struct link_conn *conns[CONN_BUCKETS];
	struct link_conn *closing_head, *closing_tail;
	struct link_node *undecided, *undecided_tail; /* oldest first */
	struct pool nodes, conn_pool, held; /* held: finished spans waiting */
	uint64_t now;
	struct linker_stats stats;
	struct host_ends host_ends;
};

static void finalize(struct linker *l, struct link_node *n);

/* ---- pools and references ---------------------------------------------- */

static struct link_node *node_alloc(struct linker *l)
{
	struct link_node *n = pool_take(&l->nodes);

	if (n)
		memset(n, 0, sizeof(*n));
	return n;
}

static struct link_conn *conn_alloc(struct linker *l)
{
	struct link_conn *c = pool_take(&l->conn_pool);

	if (c)
		memset(c, 0, sizeof(*c));
	return c;
}

static void conn_unref(struct linker *l, struct link_conn *c)
{
	if (--c->refs)
		return;
	pool_give(&l->conn_pool, c);
}

static void node_unref(struct linker *l, struct link_node *n)
{
	if (--n->refs)
		return;
	if (n->proc)
		n->proc->refs--;
	if (n->conn)
		conn_unref(l, n->conn);
	pool_give(&l->nodes, n);
}

static struct span *held_alloc(struct linker *l)
{
	struct span *span = pool_take(&l->held);

	if (!span)
		return NULL;
	span_clear(span);
	if (++l->stats.held > l->stats.held_peak)
		l->stats.held_peak = l->stats.held;
	return span;
}

static void held_release(struct linker *l, struct span *span)
{
	pool_give(&l->held, span);
	l->stats.held--;
}

/* ---- candidate FIFOs ------------------------------------------------------ */

static struct candidate *candidate_at(const struct candidate_fifo *f, uint32_t i)
{
	return &f->slots[(f->head + i) & (f->cap - 1)];
}

static int candidates_grow(struct candidate_fifo *f)
{
	uint32_t cap = f->cap ? f->cap * 2 : 64;
	struct candidate *slots = malloc(cap * sizeof(*slots));

	if (!slots)
		return -1;
	for (uint32_t i = 0; i < f->len; i++)
		slots[i] = *candidate_at(f, i);
	free(f->slots);
	f->slots = slots;
	f->head = 0;
	f->cap = cap;
	return 0;
}

static int candidates_push(struct candidate_fifo *f, struct link_node *n, uint64_t resp_ts)
{
	if (f->len == f->cap && candidates_grow(f))
		return -1;
	*candidate_at(f, f->len) = (struct candidate){ .resp_ts = resp_ts, .node = n };
	f->len++;
	return 0;
}

static struct link_node *candidates_pop(struct candidate_fifo *f)
{
	struct link_node *n = f->slots[f->head].node;

	f->head = (f->head + 1) & (f->cap - 1);
	f->len--;
	return n;
}

/* ---- processes and connections ------------------------------------------ */

static struct link_proc *proc_get(struct linker *l, uint32_t tgid)
{
	struct link_proc **bucket = &l->procs[(tgid * 2654435761u) % PROC_BUCKETS];
	struct link_proc *p;

	for (p = *bucket; p; p = p->hash_next)
		if (p->tgid == tgid)
			return p;
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->tgid = tgid;
	p->hash_next = *bucket;
	*bucket = p;
	p->all_next = l->all_procs;
	l->all_procs = p;
	return p;
}

/* Mixes 8 bytes at a time (a byte-wise FNV over the 36 bytes was a
 * chain of 34 dependent multiplies per lookup). */
static uint64_t mix(uint64_t h, uint64_t word)
{
	h = (h ^ word) * 0x9e3779b97f4a7c15ull;
	return h ^ (h >> 29);
}

static uint32_t conn_hash(const struct link_end *local, const struct link_end *remote)
{
	const struct link_end *ends[2] = { local, remote };
	uint64_t h = 0, words[2];

	for (int e = 0; e < 2; e++) {
		memcpy(words, ends[e]->addr, sizeof(words));
		h = mix(mix(mix(h, words[0]), words[1]), ends[e]->port);
	}
	return (uint32_t)(h % CONN_BUCKETS);
}

static bool end_equal(const struct link_end *a, const struct link_end *b)
{
	return a->port == b->port && memcmp(a->addr, b->addr, sizeof(a->addr)) == 0;
}

/* The client connection whose ends are (local, remote). */
static struct link_conn *client_conn(struct linker *l, const struct link_end *local,
				     const struct link_end *remote)
{
	struct link_conn *c = l->conns[conn_hash(local, remote)];

	for (; c; c = c->hash_next)
		if (end_equal(&c->local, local) && end_equal(&c->remote, remote))
			return c;
	return NULL;
}

struct link_conn *linker_conn_open(struct linker *l, bool server, const struct link_end *local,
				   const struct link_end *remote)
{
	struct link_conn *c = conn_alloc(l);
	uint32_t bucket;

	if (!c)
		return NULL;
	c->local = *local;
	c->remote = *remote;
	c->server = server;
	c->refs = 1;
	host_ends_add(&l->host_ends, local->addr);
	if (!server) {
		bucket = conn_hash(local, remote);
		c->hash_next = l->conns[bucket];
		l->conns[bucket] = c;
		c->hashed = true;
		c->refs++;
	}
	return c;
}

/* Takes the oldest request off the connection's queue; the caller
 * inherits the queue's reference. */
static struct link_node *unqueue(struct linker *l, struct link_conn *c)
{
	struct link_node *n = c->queue_head;

	c->queue_head = n->peer_next;
	if (!c->queue_head)
		c->queue_tail = NULL;
	n->peer_next = NULL;
	if (!c->server)
		l->stats.peer_kept--;
	return n;
}

static void unhash_conn(struct linker *l, struct link_conn *c)
{
	struct link_conn **link = &l->conns[conn_hash(&c->local, &c->remote)];

	while (*link && *link != c)
		link = &(*link)->hash_next;
	if (*link)
		*link = c->hash_next;
	c->hashed = false;
	while (c->queue_head)
		node_unref(l, unqueue(l, c));
}

/* A client connection stays findable for peer_wait_ms after it closes:
 * the server end's events may still be on their way. */
void linker_conn_close(struct linker *l, struct link_conn *c, uint64_t now_ns)
{
	if (!c)
		return;
	if (c->hashed && !c->closed) {
		c->closed = true;
		c->closed_at = now_ns;
		if (l->closing_tail)
			l->closing_tail->closing_next = c;
		else
			l->closing_head = c;
		l->closing_tail = c;
		return;
	}
	while (c->queue_head) /* a server connection's: no younger request comes */
		node_unref(l, unqueue(l, c));
	conn_unref(l, c);
}

void linker_untraced_client(struct linker *l, const struct link_end *local,
			    const struct link_end *remote, uint64_t ts)
{
	struct link_conn *c = linker_conn_open(l, false, local, remote);

	if (!c)
		return;
	c->untraced = true;
	linker_conn_close(l, c, ts);
}

/* A tick at UINT64_MAX (at stop) forces every decision that would
 * otherwise wait for time to pass or for an event still to come. */
static bool flushing(const struct linker *l)
{
	return l->now == UINT64_MAX;
}

static void expire_closed_conns(struct linker *l)
{
	uint64_t wait = (uint64_t)l->opts.peer_wait_ms * MS;

	while (l->closing_head && (flushing(l) || l->closing_head->closed_at + wait < l->now)) {
		struct link_conn *c = l->closing_head;

		l->closing_head = c->closing_next;
		if (!l->closing_head)
			l->closing_tail = NULL;
		unhash_conn(l, c);
		c->refs--; /* the table's; the tracker's is the last to go */
		conn_unref(l, c);
	}
}

/* ---- ids and emission ------------------------------------------------------ */

static void put_ids(const struct link_node *n, struct span *span)
{
	memcpy(span->trace_id, n->trace_id, TRACE_ID_SIZE);
	memcpy(span->span_id, n->span_id, SPAN_ID_SIZE);
	memcpy(span->parent_span_id, n->parent_span_id, SPAN_ID_SIZE);
	span->has_parent = n->has_parent;
	span->trace_flags = n->flags;
}

static void emit_held(struct linker *l, struct link_node *n)
{
	struct span *slot;

	if (!n->held)
		return;
	slot = exporter_reserve(l->exporter);
	if (slot) {
		memcpy(slot, n->held, sizeof(*slot));
		put_ids(n, slot);
		exporter_commit(l->exporter);
	} else if (n->held->proc) {
		proc_info_unref(n->held->proc);
	}
	held_release(l, n->held);
	n->held = NULL;
}

/* The node's trace is known: its held span leaves, and so do those of
 * the children that waited for it. */
static void finalize(struct linker *l, struct link_node *n)
{
	n->final = true;
	emit_held(l, n);
	while (n->waiters) {
		struct link_node *w = n->waiters;

		n->waiters = w->wait_next;
		w->parent = NULL;
		if (!w->final) {
			memcpy(w->trace_id, n->trace_id, TRACE_ID_SIZE);
			w->flags = n->flags;
			finalize(l, w);
		}
		node_unref(l, n); /* w's hold on its parent */
		node_unref(l, w);
	}
}

static const struct link_root *root_of(const struct linker *l, uint32_t tgid)
{
	for (const struct link_root *r = l->roots; r; r = r->next)
		if (r->tgid == tgid)
			return r;
	return NULL;
}

/* A client request whose task is one request's own (a CPython asyncio
 * task, nginx's downstream connection, a libuv callback's connection)
 * can only be the child of the request that task answers; while it waits
 * behind an older unanswered request (a long poll, a slow report), the
 * answer of its own parent decides it (linker_response). */
static bool task_names_request(const struct link_node *n)
{
	return n->task && n->task != SONDE_TASK_UNKNOWN;
}

static void join_task_wait(struct link_node *n)
{
	struct link_proc *p = n->proc;

	if (n->task_waits)
		return;
	n->task_waits = true;
	n->task_prev = NULL;
	n->task_next = p->task_waiting;
	if (p->task_waiting)
		p->task_waiting->task_prev = n;
	p->task_waiting = n;
}

static void leave_task_wait(struct link_node *n)
{
	if (!n->task_waits)
		return;
	if (n->task_prev)
		n->task_prev->task_next = n->task_next;
	else
		n->proc->task_waiting = n->task_next;
	if (n->task_next)
		n->task_next->task_prev = n->task_prev;
	n->task_prev = n->task_next = NULL;
	n->task_waits = false;
}

/* A span of a process with a command span is that span's child; a line
 * it writes outside any request, that span's line. */
static bool decide_command_child(struct linker *l, struct link_node *n)
{
	const struct link_root *r = root_of(l, n->proc->tgid);

	if (!r)
		return false;
	memcpy(n->trace_id, r->trace_id, TRACE_ID_SIZE);
	memcpy(n->parent_span_id, r->span_id, SPAN_ID_SIZE);
	n->flags = r->flags;
	n->has_parent = true;
	n->decided = true;
	if (!n->log)
		l->stats.parent_command++;
	finalize(l, n);
	return true;
}

/* The request's traceparent header names its parent when sonde knows no
 * traced caller or in-process parent: a header a proxy forwards unchanged
 * would skip its hops. Not when several in-process candidates were seen:
 * the header may be a forwarded one, which names an ancestor. */
static bool decide_remote(struct linker *l, struct link_node *n, const uint64_t *reason)
{
	if (!n->has_remote || reason == &l->stats.root_ambiguous)
		return false;
	n->has_parent = true;
	n->decided = true;
	l->stats.parent_traceparent++;
	finalize(l, n);
	return true;
}

/* A log write's node starts no trace: "no parent" means no ids. */
static void decide_root(struct linker *l, struct link_node *n, uint64_t *reason)
{
	leave_task_wait(n);
	if (l->roots && decide_command_child(l, n))
		return;
	if (decide_remote(l, n, reason))
		return;
	n->has_parent = false;
	n->decided = true;
	if (n->log) {
		n->ambiguous = reason == &l->stats.root_ambiguous;
		finalize(l, n);
		return;
	}
	idgen_trace_id(&l->ids, n->trace_id);
	n->flags = 1;
	l->stats.roots++;
	if (reason)
		(*reason)++;
	finalize(l, n);
}

/* Whether n is p or an ancestor of p still waiting for its trace. */
static bool would_cycle(const struct link_node *n, const struct link_node *p)
{
	for (int i = 0; p && i < CHAIN_MAX; i++, p = p->parent)
		if (p == n)
			return true;
	return p != NULL;
}

static void decide_parent(struct linker *l, struct link_node *n, struct link_node *p,
			  uint64_t *reason)
{
	leave_task_wait(n);
	if (!p->final && would_cycle(n, p)) {
		decide_root(l, n, NULL);
		return;
	}
	if (n->has_remote)
		l->stats.traceparent_superseded++;
	memcpy(n->parent_span_id, p->span_id, SPAN_ID_SIZE);
	n->has_parent = true;
	n->decided = true;
	if (!n->log)
		(*reason)++;
	if (p->final) {
		memcpy(n->trace_id, p->trace_id, TRACE_ID_SIZE);
		n->flags = p->flags;
		finalize(l, n);
		return;
	}
	n->parent = p;
	p->refs++;
	n->wait_next = p->waiters;
	p->waiters = n;
	n->refs++;
}

/* ---- decisions --------------------------------------------------------- */

/* A span or line of a job's own thread, or of its task (which the kernel
 * marked as the job's), made while the job ran, is the job's child: the
 * newest such job, since a later task may take an ended one's place. */
static bool decide_job(struct linker *l, struct link_node *n)
{
	for (struct link_job *j = n->proc->jobs; j; j = j->next) {
		if (j->node == n || n->start_ts < j->start_ts || n->start_ts > j->end_ts)
			continue;
		if (j->tid ? n->tid == j->tid : n->task == j->task) {
			decide_parent(l, n, j->node, &l->stats.parent_job);
			return true;
		}
	}
	return false;
}

/* Whether server request s, answered at resp_ts, was open when client
 * request n started: one of n's candidates. */
static bool open_at_start(const struct link_node *s, uint64_t resp_ts, const struct link_node *n)
{
	return s->start_ts <= n->start_ts && resp_ts >= n->start_ts;
}

/* Whether the client request was made by what answered the server
 * request: the same task, on whichever thread (a worker thread's call
 * names the task awaiting it), or with no task, the same thread. */
static bool same_context(const struct link_node *server, const struct link_node *client)
{
	if (client->task)
		return server->resp_task == client->task;
	return server->resp_tid == client->tid && !server->resp_task;
}

/* Server requests of the process open when the client request started
 * are its candidates; one still unanswered could yet turn out to be it.
 * The one its thread and task served is its parent; where that is not
 * one, the one it forwards (the same fingerprint) is, if it is one. */
static bool decide_client(struct linker *l, struct link_node *n)
{
	const struct link_node *oldest_open = n->proc->open_oldest;
	const struct candidate_fifo *closed = &n->proc->closed;
	struct link_node *served = NULL, *forwarded = NULL;
	unsigned nserved = 0, nforwarded = 0;

	if (n->proc->jobs && decide_job(l, n))
		return true;
	if (n->task == SONDE_TASK_UNKNOWN) {
		decide_root(l, n, &l->stats.root_task_unknown);
		return true;
	}
	if (oldest_open && oldest_open->start_ts <= n->start_ts) {
		if (l->now < n->deadline) {
			if (task_names_request(n))
				join_task_wait(n);
			return false;
		}
		decide_root(l, n, &l->stats.root_wait_expired);
		return true;
	}
	for (uint32_t i = 0; i < closed->len; i++) {
		const struct candidate *c = candidate_at(closed, i);
		struct link_node *s = c->node;

		if (!s->resp_known || !open_at_start(s, c->resp_ts, n))
			continue;
		if (same_context(s, n)) {
			served = s;
			nserved++;
		}
		if (n->fingerprint && s->fingerprint == n->fingerprint) {
			forwarded = s;
			nforwarded++;
		}
	}
	if (nserved == 1)
		decide_parent(l, n, served, &l->stats.parent_task);
	else if (nforwarded == 1)
		decide_parent(l, n, forwarded, &l->stats.parent_forwarded);
	else if (nserved > 1)
		decide_root(l, n, &l->stats.root_ambiguous);
	else
		decide_root(l, n, NULL);
	return true;
}

/* The client request at the other end of n's connection whose first byte
 * is at n's offset, when both ends were seen from their connection's first
 * byte: exact, whatever the clocks say (a long write's exit can come after
 * the reads of its bytes). Taken off the queue; NULL when none is there. */
static struct link_node *take_at_pos(struct linker *l, struct link_conn *peer, uint64_t pos,
				     bool *later_seen)
{
	struct link_node *prev = NULL, *client = peer->queue_head;

	*later_seen = false;
	for (; client; prev = client, client = client->peer_next) {
		if (client->pos > pos)
			*later_seen = true;
		if (client->pos != pos)
			continue;
		if (prev)
			prev->peer_next = client->peer_next;
		else
			peer->queue_head = client->peer_next;
		if (peer->queue_tail == client)
			peer->queue_tail = prev;
		client->peer_next = NULL;
		l->stats.peer_kept--;
		return client;
	}
	return NULL;
}

static bool decide_server_at_pos(struct linker *l, struct link_node *n, struct link_conn *peer)
{
	struct link_node *client;
	bool later_seen;

	/* Client requests whose server side was never seen, long over. */
	while (peer->queue_head && peer->queue_head->pos < n->pos && peer->queue_head->ended &&
	       peer->queue_head->end_ts + PEER_SLACK_NS < n->start_ts)
		node_unref(l, unqueue(l, peer));
	client = take_at_pos(l, peer, n->pos, &later_seen);
	if (client) {
		decide_parent(l, n, client, &l->stats.parent_peer);
		node_unref(l, client);
		return true;
	}
	/* The client's requests are queued in stream order: a later one is
	 * there, so n's is lost. */
	if (later_seen) {
		decide_root(l, n, &l->stats.root_peer_lost);
		return true;
	}
	if (l->now < n->deadline)
		return false;
	decide_root(l, n, &l->stats.root_wait_expired);
	return true;
}

/* Without offsets: requests pair up in order, skipping client requests
 * that ended before n began (their server side was never seen); a younger
 * request waits while an older one of its connection does. */
static bool decide_server_in_order(struct linker *l, struct link_node *n, struct link_conn *peer)
{
	struct link_conn *c = n->conn;

	if (c->queue_head && c->queue_head != n) {
		if (l->now < n->deadline)
			return false;
		decide_root(l, n, &l->stats.root_wait_expired);
		return true;
	}
	while (peer->queue_head) {
		struct link_node *client = peer->queue_head;

		if (client->ended && client->end_ts + PEER_SLACK_NS < n->start_ts) {
			node_unref(l, unqueue(l, peer));
			continue;
		}
		if (client->start_ts > n->start_ts + PEER_SLACK_NS)
			break;
		unqueue(l, peer);
		decide_parent(l, n, client, &l->stats.parent_peer);
		node_unref(l, client);
		return true;
	}
	if (l->now < n->deadline)
		return false;
	decide_root(l, n, &l->stats.root_wait_expired);
	return true;
}

/* The client request at the other end of n's connection, if sonde follows
 * that end: found by stream offset, or else by order and time. */
static bool decide_server(struct linker *l, struct link_node *n)
{
	struct link_conn *c = n->conn;
	struct link_conn *peer = c && !c->peer_unseen ? client_conn(l, &c->remote, &c->local) : NULL;

	while (c && c->queue_head && c->queue_head->decided)
		node_unref(l, unqueue(l, c));
	if (!c || c->peer_unseen) {
		decide_root(l, n, NULL);
		return true;
	}
	if (!peer && n->ticks < PEER_CONN_TICKS && !flushing(l) &&
	    host_ends_may_have(&l->host_ends, c->remote.addr))
		return false;
	if (!peer || peer->untraced) {
		c->peer_unseen = true; /* it cannot show up later on this connection */
		decide_root(l, n, NULL);
		return true;
	}
	peer->peer_looked = true;
	if (peer->peer_absent) {
		/* Its requests were not kept: this one's is gone, the next
		 * ones will be there. */
		peer->peer_absent = false;
		decide_root(l, n, NULL);
		return true;
	}
	if (n->pos && (!peer->queue_head || peer->queue_head->pos))
		return decide_server_at_pos(l, n, peer);
	return decide_server_in_order(l, n, peer);
}

static bool try_decide(struct linker *l, struct link_node *n)
{
	if (n->decided)
		return true;
	return n->server ? decide_server(l, n) : decide_client(l, n);
}

/* ---- the tracker's calls ------------------------------------------------- */

static void queue_on_conn(struct linker *l, struct link_conn *c, struct link_node *n)
{
	if (!c->server)
		l->stats.peer_kept++;
	n->refs++;
	if (c->queue_tail)
		c->queue_tail->peer_next = n;
	else
		c->queue_head = n;
	c->queue_tail = n;
}

/* A client request waits on its connection for the server end on this
 * host to take it. A server request looks for its client's connection as
 * it starts, so a connection no server request has looked for within
 * peer_wait_ms of its first answer has no server end sonde follows (not
 * traced, out of scope, or on another host), and nothing is kept for one.
 * A request its server end has not taken within peer_wait_ms of its
 * answer never will be: a server request waits no longer than that. */
static void keep_for_peer(struct linker *l, struct link_conn *c, struct link_node *n)
{
	uint64_t wait = (uint64_t)l->opts.peer_wait_ms * MS;

	if (!c->peer_looked && !c->peer_absent && c->first_end_ts &&
	    c->first_end_ts + wait < n->start_ts) {
		c->peer_absent = true;
		l->stats.peer_absent++;
		while (c->queue_head)
			node_unref(l, unqueue(l, c));
	}
	if (c->peer_absent)
		return;
	while (c->queue_head && c->queue_head->ended && c->queue_head->end_ts + wait < n->start_ts)
		node_unref(l, unqueue(l, c));
	queue_on_conn(l, c, n);
}

/* Requests mostly arrive in start order, so the walk for n's place
 * usually ends at the head. */
static void add_candidate(struct link_proc *p, struct link_node *n)
{
	struct link_node *prev = NULL, *next = p->open;

	while (next && next->start_ts > n->start_ts) {
		prev = next;
		next = next->cand_next;
	}
	n->in_open = true;
	n->refs++;
	n->cand_prev = prev;
	n->cand_next = next;
	if (prev)
		prev->cand_next = n;
	else
		p->open = n;
	if (next)
		next->cand_prev = n;
	else
		p->open_oldest = n;
}

/* A request's node, or a log write's (decided as a client request is,
 * marked before its first decision). */
static struct link_node *add_request(struct linker *l, const struct link_request *req, bool log)
{
	struct link_node *n = node_alloc(l);

	if (!n)
		return NULL;
	n->log = log;
	n->proc = proc_get(l, req->tgid);
	if (!n->proc) {
		pool_give(&l->nodes, n);
		return NULL;
	}
	n->proc->refs++;
	n->refs = 1;
	n->server = req->server;
	n->tid = req->tid;
	n->task = req->task;
	n->fingerprint = req->fingerprint;
	n->pos = req->pos;
	n->start_ts = req->start_ts;
	n->deadline = req->start_ts +
		      (uint64_t)(req->server ? l->opts.peer_wait_ms : l->opts.wait_ms) * MS;
	idgen_span_id(&l->ids, n->span_id);
	if (req->conn) {
		n->conn = req->conn;
		req->conn->refs++;
	}
	if (n->server)
		add_candidate(n->proc, n);
	if (req->conn && n->server)
		queue_on_conn(l, req->conn, n);
	else if (req->conn && req->conn->hashed)
		keep_for_peer(l, req->conn, n);
	if (req->remote) {
		/* Kept for decide_root: the header decides only when sonde's
		 * own link finds no parent. */
		memcpy(n->trace_id, req->remote->trace_id, TRACE_ID_SIZE);
		memcpy(n->parent_span_id, req->remote->span_id, SPAN_ID_SIZE);
		n->flags = req->remote->flags;
		n->has_remote = true;
	}
	if (!try_decide(l, n)) {
		n->refs++;
		if (l->undecided_tail)
			l->undecided_tail->und_next = n;
		else
			l->undecided = n;
		l->undecided_tail = n;
	}
	return n;
}

struct link_node *linker_request(struct linker *l, const struct link_request *req)
{
	return add_request(l, req, false);
}

struct link_node *linker_log(struct linker *l, uint32_t tgid, uint32_t tid, uint64_t task,
			     uint64_t ts)
{
	struct link_request req = { .tgid = tgid, .tid = tid, .task = task, .start_ts = ts };

	return add_request(l, &req, true);
}

enum link_log_state linker_log_ids(const struct link_node *n, uint8_t *trace_id, uint8_t *span_id)
{
	if (!n->final)
		return LINK_LOG_PENDING;
	if (!n->has_parent)
		return n->ambiguous ? LINK_LOG_AMBIGUOUS : LINK_LOG_NONE;
	memcpy(trace_id, n->trace_id, TRACE_ID_SIZE);
	memcpy(span_id, n->parent_span_id, SPAN_ID_SIZE);
	return LINK_LOG_SPAN;
}

int linker_set_root(struct linker *l, uint32_t tgid, const uint8_t *trace_id,
		    const uint8_t *span_id, uint8_t flags)
{
	struct link_root *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	r->tgid = tgid;
	r->flags = flags;
	memcpy(r->trace_id, trace_id, TRACE_ID_SIZE);
	memcpy(r->span_id, span_id, SPAN_ID_SIZE);
	r->next = l->roots;
	l->roots = r;
	return 0;
}

void linker_clear_root(struct linker *l, uint32_t tgid)
{
	struct link_root **link = &l->roots;

	while (*link && (*link)->tgid != tgid)
		link = &(*link)->next;
	if (*link) {
		struct link_root *r = *link;

		*link = r->next;
		free(r);
	}
}

struct link_node *linker_job(struct linker *l, const struct link_request *creator,
			     uint32_t job_tid, uint64_t job_task)
{
	struct link_job *j = calloc(1, sizeof(*j));
	struct link_node *n = j ? add_request(l, creator, false) : NULL;

	if (!n) {
		free(j);
		return NULL;
	}
	j->node = n;
	n->refs++; /* the job's */
	j->tid = job_tid;
	j->task = job_task;
	j->start_ts = creator->start_ts;
	j->end_ts = UINT64_MAX;
	j->next = n->proc->jobs;
	n->proc->jobs = j;
	return n;
}

static struct link_job *job_of(struct link_node *n)
{
	struct link_job *j = n->proc->jobs;

	while (j && j->node != n)
		j = j->next;
	return j;
}

void linker_job_end(struct linker *l, struct link_node *job, uint64_t end_ts)
{
	struct link_job *j = job_of(job);

	if (j)
		j->end_ts = end_ts;
}

/* A job's entry goes once nothing that began while it ran can still be
 * undecided: wait_ms after it ended. */
static void forget_jobs(struct linker *l, struct link_proc *p)
{
	struct link_job **link = &p->jobs;
	uint64_t keep = (uint64_t)l->opts.wait_ms * MS;

	while (*link) {
		struct link_job *j = *link;

		if (j->end_ts == UINT64_MAX || (!flushing(l) && j->end_ts + keep >= l->now)) {
			link = &j->next;
			continue;
		}
		*link = j->next;
		node_unref(l, j->node);
		free(j);
	}
}

void linker_log_release(struct linker *l, struct link_node *n)
{
	node_unref(l, n);
}

/* Answered at resp_ts: from the open list to the end of the closed FIFO.
 * Without memory to keep it there, no client request can choose it as
 * parent. */
static void close_candidate(struct linker *l, struct link_node *n, uint64_t resp_ts)
{
	struct link_proc *p = n->proc;

	if (!n->in_open)
		return;
	if (n->cand_prev)
		n->cand_prev->cand_next = n->cand_next;
	else
		p->open = n->cand_next;
	if (n->cand_next)
		n->cand_next->cand_prev = n->cand_prev;
	else
		p->open_oldest = n->cand_prev;
	n->in_open = false;
	n->cand_prev = n->cand_next = NULL;
	if (candidates_push(&p->closed, n, resp_ts)) {
		l->stats.candidates_lost++;
		node_unref(l, n);
	}
}

/* The client requests waiting behind an older unanswered request that
 * server request n's answerer made while n was open: n is their parent,
 * as the candidates' search would find once nothing older is open. */
static void adopt_task_waiters(struct linker *l, struct link_node *n, uint64_t resp_ts)
{
	struct link_node *w = n->proc->task_waiting, *next;

	for (; w; w = next) {
		next = w->task_next;
		if (same_context(n, w) && open_at_start(n, resp_ts, w))
			decide_parent(l, w, n, &l->stats.parent_task);
	}
}

void linker_response(struct linker *l, struct link_node *n, uint32_t tid, uint64_t task,
		     uint64_t ts)
{
	if (!n || !n->server || n->resp_known)
		return;
	n->resp_known = true;
	n->resp_tid = tid;
	n->resp_task = task;
	close_candidate(l, n, ts);
	if (task)
		adopt_task_waiters(l, n, ts);
}

struct span *linker_span_begin(struct linker *l, struct link_node *n)
{
	struct span *held = NULL;

	if (n && !n->final)
		try_decide(l, n);
	if (n && !n->final && l->stats.held < l->opts.max_held)
		held = held_alloc(l);
	if (n && !n->final && !held)
		decide_root(l, n, &l->stats.root_hold_full);
	return held ? held : exporter_reserve(l->exporter);
}

void linker_span_end(struct linker *l, struct link_node *n, struct span *span, uint64_t end_ts)
{
	if (!n) { /* no memory for a node: a trace of its own (span is cleared) */
		if (span) {
			idgen_trace_id(&l->ids, span->trace_id);
			idgen_span_id(&l->ids, span->span_id);
			span->trace_flags = 1;
			l->stats.roots++;
			exporter_commit(l->exporter);
		}
		return;
	}
	n->ended = true;
	n->end_ts = end_ts;
	if (!n->server && n->conn && !n->conn->first_end_ts)
		n->conn->first_end_ts = end_ts;
	if (n->server && !n->resp_known)
		close_candidate(l, n, end_ts);
	if (span && n->final) {
		put_ids(n, span);
		exporter_commit(l->exporter);
	} else if (span) {
		n->held = span;
	}
	node_unref(l, n);
}

/* Answered server requests leave the candidates once no undecided client
 * request of their process could still choose them. The nodes to free are
 * fetched a few ahead, so that their cache misses overlap. */
static void prune_candidates(struct linker *l)
{
	for (struct link_proc *p = l->all_procs; p; p = p->all_next) {
		struct candidate_fifo *f = &p->closed;

		while (f->len) {
			uint64_t resp_ts = candidate_at(f, 0)->resp_ts;

			if (resp_ts + RETAIN_NS >= l->now)
				break;
			if (p->oldest_waiting && resp_ts >= p->oldest_waiting)
				break;
			if (f->len > PRUNE_PREFETCH)
				__builtin_prefetch(candidate_at(f, PRUNE_PREFETCH)->node, 1);
			node_unref(l, candidates_pop(f));
		}
		p->oldest_waiting = 0;
		if (p->jobs)
			forget_jobs(l, p);
	}
}

static void free_idle_procs(struct linker *l)
{
	struct link_proc **link = &l->all_procs;

	while (*link) {
		struct link_proc *p = *link;
		struct link_proc **bucket;

		if (p->refs) {
			link = &p->all_next;
			continue;
		}
		*link = p->all_next;
		bucket = &l->procs[(p->tgid * 2654435761u) % PROC_BUCKETS];
		while (*bucket != p)
			bucket = &(*bucket)->hash_next;
		*bucket = p->hash_next;
		free(p->closed.slots);
		free(p);
	}
}

/* Oldest first, so that spans held for the same reason leave in order. */
static void decide_waiting(struct linker *l)
{
	struct link_node **link = &l->undecided;

	l->undecided_tail = NULL;
	while (*link) {
		struct link_node *n = *link;

		n->ticks++;
		if (try_decide(l, n)) {
			*link = n->und_next;
			n->und_next = NULL;
			node_unref(l, n);
			continue;
		}
		if (!n->server &&
		    (!n->proc->oldest_waiting || n->start_ts < n->proc->oldest_waiting))
			n->proc->oldest_waiting = n->start_ts;
		l->undecided_tail = n;
		link = &n->und_next;
	}
}

void linker_tick(struct linker *l, uint64_t now_ns)
{
	l->now = now_ns;
	decide_waiting(l);
	prune_candidates(l);
	expire_closed_conns(l);
	free_idle_procs(l);
}

struct linker *linker_new(const struct linker_opts *opts, struct exporter *exporter)
{
	struct linker *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	if (idgen_init(&l->ids)) {
		free(l);
		return NULL;
	}
	l->opts = *opts;
	if (!l->opts.wait_ms)
		l->opts.wait_ms = 30000;
	if (!l->opts.peer_wait_ms)
		l->opts.peer_wait_ms = 250;
	if (!l->opts.max_held)
		l->opts.max_held = 4096;
	l->exporter = exporter;
	pool_init(&l->nodes, sizeof(struct link_node));
	pool_init(&l->conn_pool, sizeof(struct link_conn));
	pool_init(&l->held, sizeof(struct span));
	return l;
}

/* As the tracker's pools (tracker_trim). */
size_t linker_trim(struct linker *l)
{
	return pool_trim(&l->nodes) + pool_trim(&l->conn_pool) + pool_trim(&l->held);
}

void linker_free(struct linker *l)
{
	if (!l)
		return;
	linker_tick(l, UINT64_MAX);
	pool_destroy(&l->nodes);
	pool_destroy(&l->conn_pool);
	pool_destroy(&l->held);
	for (struct link_proc *p = l->all_procs, *next; p; p = next) {
		next = p->all_next;
		while (p->jobs) {
			struct link_job *j = p->jobs;

			p->jobs = j->next;
			free(j);
		}
		free(p->closed.slots);
		free(p);
	}
	while (l->roots)
		linker_clear_root(l, l->roots->tgid);
	free(l);
}

void linker_get_stats(const struct linker *l, struct linker_stats *out)
{
	*out = l->stats;
}
