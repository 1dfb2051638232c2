#include "tracker.h"

#include "host_ends.h"
#include "ids.h"
#include "linker.h"
#include "log.h"
#include "pool.h"
#include "reorder.h"
#include "sonde_events.h"
#include "text.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define EXITED_MAX 4096

#define TRACKER_DESC(...) COUNTER_DESC(struct tracker_stats, __VA_ARGS__)
const struct counter_desc tracker_counters[] = { TRACKER_COUNTERS(TRACKER_DESC) };
const size_t tracker_counter_count = sizeof(tracker_counters) / sizeof(tracker_counters[0]);

/* An exchange waiting for its answer. */
struct pending {
	struct pending *next;
	struct link_node *node; /* names the exchange's span */
	void *active; /* the observer's handle while it counts the request */
	uint64_t start_ts;
	/* The protocol's exchange area (proto_ops.exchange_size). */
	_Alignas(8) unsigned char area[];
};

/* Terminal events, applied at the end of a drain (tracker_tick): data
 * always precedes its close. The probe now delivers a drain's records in
 * time order (merge.h), so this wait is a second guard against a close
 * read before its connection's last data from another CPU, not the only
 * one. */
enum conn_ending {
	END_PEER = 1 << 0,  /* the peer shut down: no more ingress */
	END_RESET = 1 << 1,
	END_LOCAL = 1 << 2, /* close() */
	END_EXIT = 1 << 3,  /* the process exited */
};

struct conn {
	struct conn *hash_next; /* also links the dead and free lists */
	struct conn *held_next; /* on the tracker's list of conns holding pieces */
	struct conn *ending_next;
	bool on_held_list;
	bool on_ending_list;
	bool dead;     /* ended; freed at the end of the tick */
	uint8_t ending; /* enum conn_ending bits not yet applied */
	uint64_t ending_ts;
	uint64_t held_tick;
	struct tracker *tracker;
	uint32_t tgid;
	int32_t fd;
	uint64_t gen;
	uint8_t role;  /* enum sonde_role, inferred from traffic when UNKNOWN */
	bool have_addr;
	/* Seen opening (accept or connect): its stream offsets count from the
	 * connection's first byte, as its peer end's do. */
	bool from_start;
	bool scoped_out; /* its process is not traced: its records are dropped */
	struct link_end local, remote; /* also the ports of the spans */
	struct link_conn *link; /* opened at the first request */
	/* Formatted once per connection: inet_ntop formats with sprintf. */
	char laddr[INET6_ADDRSTRLEN], raddr[INET6_ADDRSTRLEN];
	char comm[16];
	struct reorder order[2];
	const struct proto_ops *ops;
	bool stopped;  /* the protocol parses nothing more */
	struct pending *pend_head, *pend_tail;
	struct pending *unannounced; /* the first the observer has not seen begin */
	uint32_t npending;
	/* The protocol's connection state (proto_ops.conn_size). */
	_Alignas(8) unsigned char proto_state[];
};

struct tracker {
	struct tracker_opts opts;
	struct exporter *exporter;
	struct proc_table *procs;
	const struct wallclock *clock;
	struct linker *linker;
	struct conn **buckets;
	uint32_t nbuckets_log2;
	/* Per protocol, since their sizes differ: connections, and the work
	 * areas a protocol holds only while it reads a message. */
	struct pool conns[SONDE_PROTO_COUNT];
	struct pool works[SONDE_PROTO_COUNT];
	struct pool pendings; /* each with the largest protocol's exchange area */
	struct span scratch_span; /* an exchange's summary when the queue is full */
	struct reorder_pool pool;
	struct reorder_stats reorder_stats;
	struct conn *held_list;
	struct conn *ending_list;
	struct conn *dead_list;
	uint64_t tick;
	uint32_t exited[EXITED_MAX]; /* for the kernel map sweep */
	size_t nexited;
	uint32_t forget[EXITED_MAX]; /* processes to forget once their conns end */
	size_t nforget;
	struct tracker_stats stats;
};

static void on_piece(void *owner, int dir, const struct reorder_piece *piece);

/* ---- pools ---------------------------------------------------------- */

static struct conn *conn_alloc(struct tracker *t, const struct proto_ops *ops)
{
	return pool_take(&t->conns[ops->id]);
}

/* The protocol gives back what it took (conn_work_take) first. */
static void conn_release(struct tracker *t, struct conn *c)
{
	if (c->ops->close)
		c->ops->close(c->proto_state);
	pool_give(&t->conns[c->ops->id], c);
}

static struct pending *pending_alloc(struct tracker *t)
{
	return pool_take(&t->pendings);
}

/* Every exchange ends here, whichever way: the observer stops counting it
 * as in progress. */
static void pending_release(struct tracker *t, struct pending *p)
{
	if (p->active)
		t->opts.on_request_ended(t->opts.observer_ctx, p->active);
	pool_give(&t->pendings, p);
}

/* ---- connection table ------------------------------------------------ */

static struct conn **bucket_of(struct tracker *t, uint32_t tgid, int32_t fd)
{
	uint64_t h = ((uint64_t)tgid << 32 | (uint32_t)fd) * 0x9e3779b97f4a7c15ull;

	return &t->buckets[h >> (64 - t->nbuckets_log2)];
}

static struct conn **find_link(struct tracker *t, uint32_t tgid, int32_t fd)
{
	struct conn **link = bucket_of(t, tgid, fd);

	while (*link && ((*link)->tgid != tgid || (*link)->fd != fd))
		link = &(*link)->hash_next;
	return link;
}

static struct conn *conn_of(struct proto_conn *pc)
{
	return (struct conn *)pc;
}

static void stop_parsing(struct conn *c)
{
	if (c->stopped)
		return;
	c->stopped = true;
	c->tracker->stats.parsing_stopped++;
	log_debug("%s connection of pid %u, fd %d: no longer parsed", c->ops->name, c->tgid, c->fd);
}

static void set_role(struct conn *c, uint8_t role)
{
	c->role = role;
	if (role == SONDE_ROLE_SERVER && c->ops->client_only)
		stop_parsing(c);
}

/* Into the table under its tgid and fd. */
static void file_conn(struct tracker *t, struct conn *c)
{
	c->hash_next = *bucket_of(t, c->tgid, c->fd);
	*bucket_of(t, c->tgid, c->fd) = c;
}

/* Out of the table, where another connection may have taken its place. */
static void unfile_conn(struct tracker *t, struct conn *c)
{
	struct conn **link = find_link(t, c->tgid, c->fd);

	if (*link == c)
		*link = c->hash_next;
}

/* Every field is set here: a pooled connection holds the last one's. */
static struct conn *conn_create(struct tracker *t, const struct sonde_event_header *hdr,
				const struct proto_ops *ops)
{
	struct conn *c = conn_alloc(t, ops);

	if (!c)
		return NULL;
	memset(c, 0, sizeof(*c));
	c->tracker = t;
	c->tgid = hdr->tgid;
	c->fd = hdr->fd;
	c->gen = hdr->conn_gen;
	c->ops = ops;
	ops->open(c->proto_state, (struct proto_conn *)c, &t->opts.proto);
	file_conn(t, c);
	t->stats.conns_opened++;
	return c;
}

/* ---- spans ----------------------------------------------------------- */

/* A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; they are
 * IPv4 addresses and are shown as such. */
static void format_addr(uint16_t family, const uint8_t *addr, char *out, size_t size)
{
	static const uint8_t v4_mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	if (family == AF_INET6 && memcmp(addr, v4_mapped, sizeof(v4_mapped)) == 0) {
		family = AF_INET;
		addr += sizeof(v4_mapped);
	}
	if (!inet_ntop(family == AF_INET6 ? AF_INET6 : AF_INET, addr, out, (socklen_t)size))
		out[0] = '\0';
}

/* The server is this process for a SERVER span, the peer for a CLIENT one;
 * what the protocol said of it (an HTTP Host header) wins. */
static void fill_endpoints(struct span *span, const struct conn *c)
{
	bool server = c->role == SONDE_ROLE_SERVER;

	if (!c->have_addr)
		return;
	if (!span->server_address[0])
		text_copy(span->server_address, sizeof(span->server_address),
			  server ? c->laddr : c->raddr);
	if (!span->server_port)
		span->server_port = server ? c->local.port : c->remote.port;
	if (server) {
		text_copy(span->client_address, sizeof(span->client_address), c->raddr);
		span->client_port = c->remote.port;
	}
}

/* An exchange cut off by the connection's end is an error whatever its
 * protocol says of the part it saw. */
static void fill_cut_off(struct span *span, const struct answer *a)
{
	span->status = SPAN_STATUS_ERROR;
	text_copy(span->status_message, sizeof(span->status_message), a->cut_off);
	text_copy(span->error_type, sizeof(span->error_type),
		  a->detail ? "response_incomplete" : "no_response");
}

static void fill_span(struct conn *c, struct pending *p, const struct answer *a,
		      struct span *span)
{
	struct tracker *t = c->tracker;
	struct proc_info *proc;

	span->proto = c->ops->id;
	span->kind = c->role == SONDE_ROLE_SERVER ? SPAN_KIND_SERVER : SPAN_KIND_CLIENT;
	span->start_unix_ns = wallclock_from_mono(t->clock, p->start_ts);
	span->end_unix_ns = wallclock_from_mono(t->clock, a->end_ts);
	span->answered = a->detail != NULL;
	span->response_lost = !a->detail && !a->cut_off;
	c->ops->fill_span(span, p->area, a->detail, &t->opts.proto);
	fill_endpoints(span, c);
	if (a->cut_off)
		fill_cut_off(span, a);
	proc = proc_table_get(t->procs, c->tgid, c->comm);
	if (proc)
		proc_info_ref(proc);
	span->proc = proc;
}

static void summarize(struct tracker *t, const struct span *span, const struct pending *p,
		      uint64_t end_ts)
{
	struct exchange_summary x = { .span = span, .start_ns = p->start_ts, .end_ns = end_ts };

	t->opts.on_exchange(t->opts.observer_ctx, &x);
}

/* One exchange, one span, built where the linker says; with no room in
 * the export queue it is still built for the exchange's summary. */
static void emit_span(struct conn *c, struct pending *p, const struct answer *a)
{
	struct tracker *t = c->tracker;
	struct span *span = linker_span_begin(t->linker, p->node);
	struct span *built = span;

	if (!built && t->opts.on_exchange) {
		built = &t->scratch_span;
		span_clear(built);
	}
	if (built) {
		fill_span(c, p, a, built);
		if (t->opts.on_exchange)
			summarize(t, built, p, a->end_ts);
		if (!span)
			proc_info_unref(built->proc);
	}
	linker_span_end(t->linker, p->node, span, a->end_ts); /* a NULL span: counted
								  by the exporter */
	if (c->role == SONDE_ROLE_SERVER)
		t->stats.spans_server++;
	else
		t->stats.spans_client++;
}

/* ---- the calls protocols make (proto.h) ------------------------------ */

/* The connection as the linker knows it, once its role and ends are. */
static struct link_conn *link_conn_of(struct conn *c)
{
	if (!c->link && c->have_addr)
		c->link = linker_conn_open(c->tracker->linker, c->role == SONDE_ROLE_SERVER,
					   &c->local, &c->remote);
	return c->link;
}

static struct link_node *link_request(struct conn *c, const struct request_start *rs)
{
	struct trace_parent parent;
	struct link_request req = {
		.tgid = c->tgid,
		.tid = rs->tid,
		.task = rs->task,
		.start_ts = rs->ts,
		.pos = rs->pos_known && c->from_start ? rs->pos + 1 : 0,
		.fingerprint = rs->fingerprint,
		.server = c->role == SONDE_ROLE_SERVER,
		.conn = link_conn_of(c),
	};

	if (rs->traceparent_len && traceparent_parse(rs->traceparent, rs->traceparent_len, &parent))
		req.remote = &parent;
	return linker_request(c->tracker->linker, &req);
}

uint8_t conn_role(const struct proto_conn *pc)
{
	return ((const struct conn *)pc)->role;
}

void conn_set_role(struct proto_conn *pc, uint8_t role)
{
	struct conn *c = conn_of(pc);

	if (c->role == SONDE_ROLE_UNKNOWN)
		set_role(c, role);
}

void *conn_work_take(struct proto_conn *pc)
{
	struct conn *c = conn_of(pc);
	void *work = pool_take(&c->tracker->works[c->ops->id]);

	if (!work)
		c->tracker->stats.out_of_memory++;
	return work;
}

void conn_work_give(struct proto_conn *pc, void *work)
{
	struct conn *c = conn_of(pc);

	pool_give(&c->tracker->works[c->ops->id], work);
}

static struct pending *pop_pending(struct conn *c)
{
	struct pending *p = c->pend_head;

	if (!p)
		return NULL;
	c->pend_head = p->next;
	if (!c->pend_head)
		c->pend_tail = NULL;
	if (c->unannounced == p)
		c->unannounced = p->next;
	c->npending--;
	return p;
}

/* Every waiting exchange ends: with no answer seen (cut_off NULL), or cut
 * off by the connection's end. */
static void end_waiting(struct conn *c, const char *cut_off, uint64_t ts, uint64_t *counter)
{
	struct answer a = { .end_ts = ts, .cut_off = cut_off };
	struct pending *p;

	while ((p = pop_pending(c))) {
		(*counter)++;
		emit_span(c, p, &a);
		pending_release(c->tracker, p);
	}
}

void *conn_request(struct proto_conn *pc, const struct request_start *rs)
{
	struct conn *c = conn_of(pc);
	struct tracker *t = c->tracker;
	struct pending *p;

	if (c->stopped)
		return NULL;
	t->stats.requests++;
	if (c->npending >= t->opts.max_pending || !(p = pending_alloc(t))) {
		/* Answers pair in order: with this request missing, every later
		 * answer would pair with the request before it. */
		t->stats.pending_overflow++;
		end_waiting(c, NULL, rs->ts, &t->stats.responses_lost);
		stop_parsing(c);
		return NULL;
	}
	p->node = link_request(c, rs);
	p->active = NULL;
	p->start_ts = rs->ts;
	p->next = NULL;
	if (c->pend_tail)
		c->pend_tail->next = p;
	else
		c->pend_head = p;
	c->pend_tail = p;
	if (!c->unannounced)
		c->unannounced = p;
	c->npending++;
	return p->area;
}

void *conn_newest(struct proto_conn *pc)
{
	struct conn *c = conn_of(pc);

	return c->pend_tail ? c->pend_tail->area : NULL;
}

void *conn_oldest(struct proto_conn *pc)
{
	struct conn *c = conn_of(pc);

	return c->pend_head ? c->pend_head->area : NULL;
}

void conn_answer_began(struct proto_conn *pc, uint32_t tid, uint64_t task, uint64_t ts)
{
	struct conn *c = conn_of(pc);

	if (c->pend_head && c->role == SONDE_ROLE_SERVER)
		linker_response(c->tracker->linker, c->pend_head->node, tid, task, ts);
}

bool conn_answer(struct proto_conn *pc, const struct answer *a)
{
	struct conn *c = conn_of(pc);
	struct tracker *t = c->tracker;
	struct pending *p;

	if (c->stopped)
		return false;
	/* An answer cannot answer a request that started after it: it answers
	 * one sonde never saw (lost bytes), and pairing it would shift every
	 * later exchange on this connection. */
	if (!c->pend_head || c->pend_head->start_ts > a->start_ts) {
		t->stats.orphan_responses++;
		return false;
	}
	p = pop_pending(c);
	t->stats.exchanges++;
	emit_span(c, p, a);
	pending_release(t, p);
	return true;
}

void conn_drop_oldest(struct proto_conn *pc)
{
	struct conn *c = conn_of(pc);
	struct pending *p = pop_pending(c);

	if (!p)
		return;
	c->tracker->stats.unpaired++;
	linker_span_end(c->tracker->linker, p->node, NULL, p->start_ts);
	pending_release(c->tracker, p);
}

void conn_answers_lost(struct proto_conn *pc, uint64_t ts)
{
	struct conn *c = conn_of(pc);

	end_waiting(c, NULL, ts, &c->tracker->stats.responses_lost);
}

void conn_stop(struct proto_conn *pc)
{
	stop_parsing(conn_of(pc));
}

void conn_note(struct proto_conn *pc, enum proto_note note)
{
	struct tracker_stats *stats = &conn_of(pc)->tracker->stats;

	switch (note) {
	case NOTE_PARSE_ERROR:
		stats->parse_errors++;
		break;
	case NOTE_GAP:
		stats->gap_resyncs++;
		break;
	case NOTE_PARTIAL_HEAD:
		stats->partial_heads++;
		break;
	}
}

/* ---- data path -------------------------------------------------------- */

/* The observer learns of server requests once the protocol has read their
 * start, that is when the bytes that began them have been handed over. */
static void announce_requests(struct conn *c)
{
	struct tracker *t = c->tracker;
	struct request_began r = { .ops = c->ops };
	struct pending *p = c->unannounced;

	c->unannounced = NULL;
	if (c->role != SONDE_ROLE_SERVER || !c->ops->active_attributes ||
	    !t->opts.on_request_began)
		return;
	r.proc = proc_table_get(t->procs, c->tgid, c->comm);
	for (; p; p = p->next) {
		r.exchange = p->area;
		p->active = t->opts.on_request_began(t->opts.observer_ctx, &r);
	}
}

static void on_piece(void *owner, int dir, const struct reorder_piece *piece)
{
	struct conn *c = owner;
	struct piece p = {
		.data = piece->data,
		.captured = piece->captured,
		.hole = piece->len - piece->captured - piece->tail,
		.tail = piece->tail,
		.ts = piece->ts,
		.pos = piece->pos,
		.task = piece->task,
		.tid = piece->tid,
	};

	if (c->stopped)
		return;
	c->ops->data(c->proto_state, dir, &p);
	if (c->unannounced)
		announce_requests(c);
}

static struct reorder_ctx reorder_ctx_of(struct conn *c, int dir)
{
	struct tracker *t = c->tracker;

	return (struct reorder_ctx){
		.pool = &t->pool,
		.stats = &t->reorder_stats,
		.deliver = on_piece,
		.owner = c,
		.tag = dir,
	};
}

static void flush_held(struct conn *c)
{
	for (int dir = 0; dir < 2; dir++) {
		struct reorder_ctx ctx = reorder_ctx_of(c, dir);

		reorder_flush(&c->order[dir], &ctx);
	}
}

/* Every request still waiting for its answer becomes an error span. */
static void cut_off_pending(struct conn *c, const char *why, uint64_t ts)
{
	end_waiting(c, why, ts, &c->tracker->stats.exchanges_cut_off);
}

static void stream_eof(struct conn *c, int dir, uint64_t ts)
{
	if (!c->stopped && c->ops->eof)
		c->ops->eof(c->proto_state, dir, ts);
}

/* Ends a connection at once: what is left of its streams is flushed, and
 * requests without a response become error spans. The memory stays valid
 * (on the lists of this tick) until tracker_tick frees it. */
static void conn_end(struct tracker *t, struct conn *c, const char *why, uint64_t ts)
{
	if (c->dead)
		return;
	flush_held(c);
	for (int dir = 0; dir < 2; dir++)
		stream_eof(c, dir, ts);
	cut_off_pending(c, why, ts);
	unfile_conn(t, c);
	linker_conn_close(t->linker, c->link, ts);
	c->link = NULL;
	c->dead = true;
	c->hash_next = t->dead_list;
	t->dead_list = c;
	t->stats.conns_ended++;
}

static void apply_ending(struct tracker *t, struct conn *c)
{
	uint8_t ending = c->ending;
	uint64_t ts = c->ending_ts;

	c->ending = 0;
	flush_held(c);
	if (ending & END_RESET) {
		if (!c->stopped && c->ops->reset)
			c->ops->reset(c->proto_state, ts);
		cut_off_pending(c, "connection reset before the response", ts);
	}
	if (ending & END_PEER)
		stream_eof(c, SONDE_DIR_INGRESS, ts);
	if (ending & END_EXIT)
		conn_end(t, c, "process exited before the response", ts);
	else if (ending & END_LOCAL)
		conn_end(t, c, "connection closed before the response", ts);
}

static void mark_ending(struct tracker *t, struct conn *c, uint8_t ending, uint64_t ts)
{
	c->ending |= ending;
	if (ts > c->ending_ts)
		c->ending_ts = ts;
	if (c->on_ending_list)
		return;
	c->on_ending_list = true;
	c->ending_next = t->ending_list;
	t->ending_list = c;
}

/* A connection whose fd now names another: its fd was closed (and its
 * end told) before the fd's new connection showed. */
static void end_replaced(struct tracker *t, struct conn *c, uint64_t ts)
{
	apply_ending(t, c);
	conn_end(t, c, "connection replaced before the response", ts);
}

/* The connection an event belongs to, creating it for the protocol
 * `create` when that is not NULL (*created says so). An event of an older
 * generation than the tracked one is late: NULL. */
static struct conn *conn_for(struct tracker *t, const struct sonde_event_header *hdr,
			     const struct proto_ops *create, bool *created)
{
	struct conn *c = *find_link(t, hdr->tgid, hdr->fd);

	if (c && c->gen == hdr->conn_gen)
		return c;
	if (c && c->gen > hdr->conn_gen)
		return NULL;
	if (c)
		end_replaced(t, c, hdr->ts);
	if (!create)
		return NULL;
	c = conn_create(t, hdr, create);
	if (!c)
		t->stats.out_of_memory++;
	*created = c != NULL;
	return c;
}

static void link_end_of(uint16_t family, const uint8_t *addr, uint16_t port, struct link_end *end)
{
	memset(end, 0, sizeof(*end));
	end->port = port;
	if (family == AF_INET6) {
		memcpy(end->addr, addr, sizeof(end->addr));
		return;
	}
	end->addr[10] = end->addr[11] = 0xff;
	memcpy(end->addr + 12, addr, 4);
}

/* Whether a new connection's process is traced, decided when the
 * process is first seen (as its conn event says, NULL: none came) and,
 * for a connection it accepted, by the port it serves. */
static void admit_conn(struct tracker *t, struct conn *c, const struct sonde_conn_event *ev)
{
	struct proc_seen seen = {
		.comm = c->comm[0] ? c->comm : NULL,
		.parent_tgid = ev ? ev->parent_tgid : 0,
		.cgroup_id = ev ? ev->cgroup_id : 0,
	};
	uint16_t served_port = ev && ev->role == SONDE_ROLE_SERVER ? c->local.port : 0;
	struct proc_info *proc = proc_table_see(t->procs, c->tgid, &seen);

	if (proc && served_port)
		proc = proc_table_serve(t->procs, proc, served_port);
	if (!proc || proc->scope == SCOPE_TRACED)
		return;
	c->scoped_out = true;
	t->stats.conns_scoped_out++;
	if (proc->scope == SCOPE_NOT_TRACED && t->opts.on_scoped_out)
		t->opts.on_scoped_out(t->opts.scoped_out_ctx, c->tgid, c->fd);
}

/* A client end sonde does not trace: only the linker needs it, so that
 * its server end does not wait for it. */
static void untraced_client(struct tracker *t, const struct link_end *local,
			    const struct link_end *remote, uint64_t ts)
{
	linker_untraced_client(t->linker, local, remote, ts);
	t->stats.untraced_clients++;
}

/* A written-off client end, announced at connect. */
static void handle_untraced_client(struct tracker *t, const struct sonde_conn_event *ev)
{
	struct link_end local, remote;

	if (ev->role != SONDE_ROLE_CLIENT || (ev->family != AF_INET && ev->family != AF_INET6)) {
		t->stats.bad_records++;
		return;
	}
	link_end_of(ev->family, ev->laddr, ev->lport, &local);
	link_end_of(ev->family, ev->raddr, ev->rport, &remote);
	untraced_client(t, &local, &remote, ev->hdr.ts);
}

/* A client end the scope rules leave out, found so at its conn event,
 * whose peer is surely on this host: at a loopback address, or at the
 * connection's own (the kernel's rule for announcing one at connect). */
static void scoped_out_client(struct tracker *t, const struct conn *c, uint64_t ts)
{
	if (!c->have_addr)
		return;
	if (host_ends_loopback(c->remote.addr) ||
	    memcmp(c->remote.addr, c->local.addr, sizeof(c->remote.addr)) == 0)
		untraced_client(t, &c->local, &c->remote, ts);
}

static void handle_conn(struct tracker *t, const struct sonde_conn_event *ev)
{
	const struct proto_ops *ops = proto_find(ev->proto);
	struct conn *c;
	bool created = false;

	if (ev->proto == SONDE_PROTO_NONE) {
		handle_untraced_client(t, ev);
		return;
	}
	if (!ops) {
		t->stats.bad_records++;
		return;
	}
	c = conn_for(t, &ev->hdr, ops, &created);
	if (!c)
		return;
	c->have_addr = ev->family == AF_INET || ev->family == AF_INET6;
	format_addr(ev->family, ev->laddr, c->laddr, sizeof(c->laddr));
	format_addr(ev->family, ev->raddr, c->raddr, sizeof(c->raddr));
	link_end_of(ev->family, ev->laddr, ev->lport, &c->local);
	link_end_of(ev->family, ev->raddr, ev->rport, &c->remote);
	memcpy(c->comm, ev->comm, sizeof(c->comm));
	if (created)
		admit_conn(t, c, ev);
	if (ev->role != SONDE_ROLE_UNKNOWN && !c->order[0].next_pos && !c->order[1].next_pos) {
		c->from_start = true;
		set_role(c, ev->role);
		c->ops->start(c->proto_state, ev->role);
	}
	if (c->scoped_out && ev->role == SONDE_ROLE_CLIENT)
		scoped_out_client(t, c, ev->hdr.ts);
}

static void note_held(struct tracker *t, struct conn *c)
{
	if (c->on_held_list || !(c->order[0].held || c->order[1].held))
		return;
	c->on_held_list = true;
	c->held_tick = t->tick;
	c->held_next = t->held_list;
	t->held_list = c;
}

static void handle_data(struct tracker *t, const struct sonde_data_event *ev, size_t size)
{
	const struct proto_ops *ops = proto_find(ev->proto);
	struct conn *c;
	struct reorder_ctx ctx;
	bool created = false;
	struct reorder_piece piece = {
		.pos = ev->pos,
		.len = ev->len,
		.captured = ev->captured,
		.tail = ev->tail,
		.ts = ev->hdr.ts,
		.task = ev->task,
		.tid = ev->hdr.tid,
		.data = ev->data,
	};

	if (size < SONDE_DATA_EVENT_SIZE(ev->captured + ev->tail) || ev->captured > SONDE_CAPTURE_MAX ||
	    ev->tail > SONDE_TAIL_MAX || (uint64_t)ev->captured + ev->tail > ev->len || ev->dir > 1 ||
	    !ops) {
		t->stats.bad_records++;
		return;
	}
	c = conn_for(t, &ev->hdr, ops, &created);
	if (!c)
		return;
	if (created) {
		t->stats.conns_no_open++;
		admit_conn(t, c, NULL);
	}
	if (c->scoped_out) {
		t->stats.events_scoped_out++;
		return;
	}
	ctx = reorder_ctx_of(c, !ev->dir);
	reorder_flush_before(&c->order[!ev->dir], &ctx, ev->hdr.ts);
	ctx = reorder_ctx_of(c, ev->dir);
	reorder_push(&c->order[ev->dir], &ctx, &piece);
	note_held(t, c);
}

static void handle_close(struct tracker *t, const struct sonde_close_event *ev)
{
	struct conn *c = conn_for(t, &ev->hdr, NULL, NULL);
	uint8_t ending = ev->reason == SONDE_CLOSE_PEER    ? END_PEER
			 : ev->reason == SONDE_CLOSE_RESET ? END_RESET
							   : END_LOCAL;

	if (c)
		mark_ending(t, c, ending, ev->hdr.ts);
}

/* The connection goes on under another fd of its process, which its
 * later records carry. */
static void handle_moved(struct tracker *t, const struct sonde_moved_event *ev)
{
	struct conn *c = conn_for(t, &ev->hdr, NULL, NULL);
	struct conn *there;

	if (!c)
		return;
	there = *find_link(t, c->tgid, ev->new_fd);
	if (there)
		end_replaced(t, there, ev->hdr.ts);
	unfile_conn(t, c);
	c->fd = ev->new_fd;
	file_conn(t, c);
	t->stats.conns_moved++;
}

static void apply_endings(struct tracker *t);

static void handle_proc_exit(struct tracker *t, const struct sonde_event_header *hdr)
{
	t->stats.proc_exits++;
	if (t->nexited < EXITED_MAX)
		t->exited[t->nexited++] = hdr->tgid;
	else
		t->stats.exits_unswept++;
	if (proc_table_has(t->procs, hdr->tgid))
		for (size_t i = 0; i < (1u << t->nbuckets_log2); i++)
			for (struct conn *c = t->buckets[i]; c; c = c->hash_next)
				if (c->tgid == hdr->tgid)
					mark_ending(t, c, END_EXIT, hdr->ts);
	/* Every process: what its exec left in the table goes too. */
	if (t->nforget == EXITED_MAX)
		apply_endings(t);
	t->forget[t->nforget++] = hdr->tgid;
}

void tracker_handle(struct tracker *t, const void *record, size_t size)
{
	const struct sonde_event_header *hdr = record;

	t->stats.events++;
	if (size < sizeof(*hdr)) {
		t->stats.bad_records++;
		return;
	}
	switch (hdr->type) {
	case SONDE_EV_DATA:
		if (size >= offsetof(struct sonde_data_event, data)) {
			handle_data(t, record, size);
			return;
		}
		break;
	case SONDE_EV_CONN:
		if (size >= sizeof(struct sonde_conn_event)) {
			handle_conn(t, record);
			return;
		}
		break;
	case SONDE_EV_CLOSE:
		if (size >= sizeof(struct sonde_close_event)) {
			handle_close(t, record);
			return;
		}
		break;
	case SONDE_EV_CONN_MOVED:
		if (size >= sizeof(struct sonde_moved_event)) {
			handle_moved(t, record);
			return;
		}
		break;
	case SONDE_EV_PROC_EXIT:
		handle_proc_exit(t, hdr);
		return;
	case SONDE_EV_PROC_EXEC:
		return; /* the agent's: see pytask.h */
	}
	t->stats.bad_records++;
}

/* Pieces held since an earlier tick are given up on (their gap is lost). */
static void flush_aged_holds(struct tracker *t)
{
	struct conn **link = &t->held_list;

	while (*link) {
		struct conn *c = *link;

		if (c->dead || c->held_tick < t->tick) {
			*link = c->held_next;
			c->on_held_list = false;
			if (!c->dead)
				flush_held(c);
		} else {
			link = &c->held_next;
		}
	}
}

/* Terminal events, then the processes whose connections they ended. */
static void apply_endings(struct tracker *t)
{
	while (t->ending_list) {
		struct conn *c = t->ending_list;

		t->ending_list = c->ending_next;
		c->on_ending_list = false;
		if (!c->dead)
			apply_ending(t, c);
	}
	for (size_t i = 0; i < t->nforget; i++)
		proc_table_forget(t->procs, t->forget[i]);
	t->nforget = 0;
}

/* A dead connection still on the held list leaves it at the next tick;
 * only then may its memory serve a new connection. */
static void free_dead(struct tracker *t)
{
	struct conn **link = &t->dead_list;

	while (*link) {
		struct conn *c = *link;

		if (c->on_held_list) {
			link = &c->hash_next;
			continue;
		}
		*link = c->hash_next;
		conn_release(t, c);
	}
}

void tracker_tick(struct tracker *t, uint64_t now_ns)
{
	flush_aged_holds(t);
	apply_endings(t);
	free_dead(t);
	linker_tick(t->linker, now_ns);
	t->tick++;
}

size_t tracker_trim(struct tracker *t)
{
	size_t freed = pool_trim(&t->pendings) + linker_trim(t->linker);

	for (size_t i = 0; i < SONDE_PROTO_COUNT; i++)
		freed += pool_trim(&t->conns[i]) + pool_trim(&t->works[i]);
	return freed;
}

size_t tracker_take_exited(struct tracker *t, uint32_t *out, size_t max)
{
	size_t n = t->nexited < max ? t->nexited : max;

	memcpy(out, t->exited, n * sizeof(*out));
	memmove(t->exited, t->exited + n, (t->nexited - n) * sizeof(*out));
	t->nexited -= n;
	return n;
}

struct tracker *tracker_new(const struct tracker_opts *opts, struct exporter *exporter,
			    struct proc_table *procs, const struct wallclock *clock)
{
	struct tracker *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->opts = *opts;
	if (!t->opts.max_pending)
		t->opts.max_pending = 1024;
	pool_init(&t->pendings, sizeof(struct pending) + proto_max_exchange_size());
	for (uint8_t id = 0; id < SONDE_PROTO_COUNT; id++) {
		const struct proto_ops *ops = proto_find(id);

		if (ops) {
			pool_init(&t->conns[id], sizeof(struct conn) + ops->conn_size);
			pool_init(&t->works[id], ops->work_size);
		}
	}
	t->nbuckets_log2 = opts->conn_buckets_log2 ? opts->conn_buckets_log2 : 16;
	t->buckets = calloc(1u << t->nbuckets_log2, sizeof(*t->buckets));
	t->linker = linker_new(&opts->link, exporter);
	if (!t->buckets || !t->linker) {
		free(t->buckets);
		linker_free(t->linker);
		free(t);
		return NULL;
	}
	t->exporter = exporter;
	t->procs = procs;
	t->clock = clock;
	return t;
}

/* Requests still open at exit get no span; the linker lets go of them. */
static void drop_unfinished(struct tracker *t, struct conn *c)
{
	while (c->pend_head) {
		struct pending *p = pop_pending(c);

		t->stats.unfinished_at_exit++;
		linker_span_end(t->linker, p->node, NULL, 0);
		pending_release(t, p);
	}
	linker_conn_close(t->linker, c->link, UINT64_MAX);
}

/* At exit: what the protocol holds goes back to its pool, freed after. */
static void conn_destroy(struct tracker *t, struct conn *c)
{
	if (c->ops->close)
		c->ops->close(c->proto_state);
	free(c);
}

void tracker_free(struct tracker *t)
{
	if (!t)
		return;
	while (t->dead_list) {
		struct conn *c = t->dead_list;

		t->dead_list = c->hash_next;
		conn_destroy(t, c);
	}
	for (size_t i = 0; i < (1u << t->nbuckets_log2); i++) {
		while (t->buckets[i]) {
			struct conn *c = t->buckets[i];

			t->buckets[i] = c->hash_next;
			drop_unfinished(t, c);
			reorder_discard(&c->order[0], &t->pool);
			reorder_discard(&c->order[1], &t->pool);
			conn_destroy(t, c);
		}
	}
	for (size_t i = 0; i < SONDE_PROTO_COUNT; i++) {
		pool_destroy(&t->conns[i]);
		pool_destroy(&t->works[i]);
	}
	pool_destroy(&t->pendings);
	reorder_pool_free(&t->pool);
	linker_free(t->linker);
	free(t->buckets);
	free(t);
}

void tracker_get_stats(const struct tracker *t, struct tracker_stats *out)
{
	*out = t->stats;
	out->reorder_held = t->reorder_stats.held;
	out->reorder_gaps = t->reorder_stats.gaps;
	out->reorder_gap_bytes = t->reorder_stats.gap_bytes;
	out->reorder_stale = t->reorder_stats.stale;
	out->out_of_memory += t->reorder_stats.pool_empty;
	linker_get_stats(t->linker, &out->link);
}

struct linker *tracker_linker(struct tracker *t)
{
	return t->linker;
}
