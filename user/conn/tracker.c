#include "tracker.h"

#include "http1.h"
#include "ids.h"
#include "linker.h"
#include "log.h"
#include "reorder.h"
#include "route.h"
#include "sonde_events.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define EXITED_MAX 4096

struct pending {
	struct pending *next;
	struct link_node *node; /* names the exchange's span */
	bool complete; /* the whole request (body too) was seen */
	struct http1_msg req;
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
	struct link_end local, remote; /* also the ports of the spans */
	struct link_conn *link; /* opened at the first request */
	/* Formatted once per connection: inet_ntop formats with sprintf. */
	char laddr[INET6_ADDRSTRLEN], raddr[INET6_ADDRSTRLEN];
	char comm[16];
	struct reorder order[2];
	struct http1_stream http[2];
	struct pending *pend_head, *pend_tail;
	uint32_t npending;
};

struct tracker {
	struct tracker_opts opts;
	struct exporter *exporter;
	struct proc_table *procs;
	const struct wallclock *clock;
	struct linker *linker;
	struct conn **buckets;
	uint32_t nbuckets_log2;
	struct conn *free_conns;
	struct pending *free_pending;
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
static bool on_head(void *owner, int dir, const struct http1_msg *msg);
static void on_complete(void *owner, int dir, const struct http1_msg *msg);
static void on_drop(void *owner, int dir, enum http1_drop why, bool had_head);

static const struct http1_callbacks http_callbacks = {
	.on_head = on_head,
	.on_complete = on_complete,
	.on_drop = on_drop,
};

/* ---- pools ---------------------------------------------------------- */

static struct conn *conn_alloc(struct tracker *t)
{
	struct conn *c = t->free_conns;

	if (c) {
		t->free_conns = c->hash_next;
		return c;
	}
	return malloc(sizeof(*c));
}

static struct pending *pending_alloc(struct tracker *t)
{
	struct pending *p = t->free_pending;

	if (p) {
		t->free_pending = p->next;
		return p;
	}
	return malloc(sizeof(*p));
}

static void pending_release(struct tracker *t, struct pending *p)
{
	p->next = t->free_pending;
	t->free_pending = p;
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

static enum http1_type stream_type(uint8_t role, int dir)
{
	if (role == SONDE_ROLE_UNKNOWN)
		return HTTP1_BOTH;
	if ((role == SONDE_ROLE_SERVER) == (dir == SONDE_DIR_INGRESS))
		return HTTP1_REQUEST;
	return HTTP1_RESPONSE;
}

static void set_role(struct conn *c, uint8_t role)
{
	c->role = role;
	for (int dir = 0; dir < 2; dir++)
		if (c->http[dir].type == HTTP1_BOTH)
			c->http[dir].type = stream_type(role, dir);
}

static struct conn *conn_create(struct tracker *t, const struct sonde_event_header *hdr)
{
	struct conn *c = conn_alloc(t);

	if (!c)
		return NULL;
	memset(c, 0, offsetof(struct conn, http));
	c->tracker = t;
	c->tgid = hdr->tgid;
	c->fd = hdr->fd;
	c->gen = hdr->conn_gen;
	for (int dir = 0; dir < 2; dir++)
		http1_stream_init(&c->http[dir], HTTP1_BOTH, &http_callbacks, c, dir);
	c->pend_head = c->pend_tail = NULL;
	c->npending = 0;
	c->hash_next = *bucket_of(t, c->tgid, c->fd);
	*bucket_of(t, c->tgid, c->fd) = c;
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

/* Bounded copy of len bytes plus a NUL: the span hot path avoids printf. */
static void copy_str(char *dst, size_t size, const char *src, size_t len)
{
	if (len >= size)
		len = size - 1;
	memcpy(dst, src, len);
	dst[len] = '\0';
}

static uint16_t parse_port(const char *text)
{
	uint32_t port = 0;

	for (; *text >= '0' && *text <= '9' && port <= 65535; text++)
		port = port * 10 + (uint32_t)(*text - '0');
	return port <= 65535 ? (uint16_t)port : 0;
}

/* Host header "name", "name:port" or "[v6]:port". */
static void split_host(const char *host, char *addr, size_t size, uint16_t *port)
{
	const char *colon;

	if (host[0] == '[') {
		const char *end = strchr(host, ']');

		if (!end)
			return;
		copy_str(addr, size, host + 1, (size_t)(end - host - 1));
		colon = end[1] == ':' ? end + 1 : NULL;
	} else {
		colon = strrchr(host, ':');
		copy_str(addr, size, host, colon ? (size_t)(colon - host) : strlen(host));
	}
	if (colon && colon[1])
		*port = parse_port(colon + 1);
}

/* Path of an origin-form ("/a?b") or absolute-form ("http://h/a?b") target. */
static const char *target_path(const char *target, size_t *len)
{
	const char *scheme_end = target[0] == '/' ? NULL : strstr(target, "://");

	if (scheme_end) {
		const char *path = strchr(scheme_end + 3, '/');

		if (!path) {
			*len = 1;
			return "/";
		}
		*len -= (size_t)(path - target);
		return path;
	}
	return target;
}

static void fill_target(struct tracker *t, struct span *span, const struct conn *c,
			const struct http1_msg *req)
{
	size_t len = req->target_len, path_len;
	const char *path = target_path(req->target, &len);

	path_len = route_path_len(path, len);
	copy_str(span->path, sizeof(span->path), path, path_len);
	if (t->opts.keep_query && path_len < len && path[path_len] == '?')
		copy_str(span->query, sizeof(span->query), path + path_len + 1, len - path_len - 1);
	if (c->role == SONDE_ROLE_SERVER)
		route_template(span->path, path_len, span->route, sizeof(span->route));
}

static void fill_endpoints(struct span *span, const struct conn *c, const struct http1_msg *req)
{
	bool server = c->role == SONDE_ROLE_SERVER;

	if (req->host_len)
		split_host(req->host, span->server_address, sizeof(span->server_address),
			   &span->server_port);
	if (!c->have_addr)
		return;
	if (!span->server_address[0]) {
		const char *addr = server ? c->laddr : c->raddr;

		copy_str(span->server_address, sizeof(span->server_address), addr, strlen(addr));
	}
	if (!span->server_port)
		span->server_port = server ? c->local.port : c->remote.port;
	if (server) {
		copy_str(span->client_address, sizeof(span->client_address), c->raddr,
			 strlen(c->raddr));
		span->client_port = c->remote.port;
	}
}

static void fill_status(struct span *span, const struct conn *c, const struct http1_msg *resp,
			const char *cut_off)
{
	uint16_t error_from = c->role == SONDE_ROLE_SERVER ? 500 : 400;

	if (resp)
		span->status_code = resp->status;
	if (cut_off) {
		span->status = SPAN_STATUS_ERROR;
		snprintf(span->status_message, sizeof(span->status_message), "%s", cut_off);
		snprintf(span->error_type, sizeof(span->error_type), "%s",
			 resp ? "response_incomplete" : "no_response");
	} else if (resp && resp->status >= error_from) {
		span->status = SPAN_STATUS_ERROR;
		snprintf(span->error_type, sizeof(span->error_type), "%u", resp->status);
	}
}

/* One exchange, one span. resp is NULL when no response head was seen;
 * cut_off says why the exchange ended early (NULL when it did not). */
static void emit_span(struct conn *c, struct pending *p, const struct http1_msg *resp,
		      const char *cut_off, uint64_t end_ts)
{
	struct tracker *t = c->tracker;
	const struct http1_msg *req = &p->req;
	struct span *span = linker_span_begin(t->linker, p->node);
	struct proc_info *proc;
	const char *method;

	if (!span) {
		linker_span_end(t->linker, p->node, NULL, end_ts); /* counted by the exporter */
		return;
	}
	span->kind = c->role == SONDE_ROLE_SERVER ? SPAN_KIND_SERVER : SPAN_KIND_CLIENT;
	span->start_unix_ns = wallclock_from_mono(t->clock, req->start_ts);
	span->end_unix_ns = wallclock_from_mono(t->clock, resp ? resp->end_ts : end_ts);
	method = http1_method_name(req->method);
	copy_str(span->method, sizeof(span->method), method, strlen(method));
	span->protocol_version[0] = (char)('0' + req->version_major % 10);
	span->protocol_version[1] = '.';
	span->protocol_version[2] = (char)('0' + req->version_minor % 10);
	span->protocol_version[3] = '\0';
	fill_target(t, span, c, req);
	fill_endpoints(span, c, req);
	copy_str(span->user_agent, sizeof(span->user_agent), req->user_agent, req->ua_len);
	span->request_body_size = p->complete && !(req->flags & HTTP1_BODY_LOST)
					  ? (int64_t)req->body_size : -1;
	span->response_body_size = resp && !(resp->flags & HTTP1_BODY_LOST)
					   ? (int64_t)resp->body_size : -1;
	fill_status(span, c, resp, cut_off);
	span->response_lost = !resp && !cut_off;
	proc = proc_table_get(t->procs, c->tgid, c->comm);
	if (proc)
		proc_info_ref(proc);
	span->proc = proc;
	linker_span_end(t->linker, p->node, span, resp ? resp->end_ts : end_ts);
	if (c->role == SONDE_ROLE_SERVER)
		t->stats.spans_server++;
	else
		t->stats.spans_client++;
}

/* ---- pairing --------------------------------------------------------- */

static int request_dir(const struct conn *c)
{
	return c->role == SONDE_ROLE_SERVER ? SONDE_DIR_INGRESS : SONDE_DIR_EGRESS;
}

/* A connection sonde did not see open learns its role from the first
 * message: a request received means the process is the server. */
static void infer_role(struct conn *c, int dir, bool is_request)
{
	if (c->role != SONDE_ROLE_UNKNOWN)
		return;
	if (is_request == (dir == SONDE_DIR_INGRESS))
		set_role(c, SONDE_ROLE_SERVER);
	else
		set_role(c, SONDE_ROLE_CLIENT);
}

/* The connection as the linker knows it, once its role and ends are. */
static struct link_conn *link_conn_of(struct conn *c)
{
	if (!c->link && c->have_addr)
		c->link = linker_conn_open(c->tracker->linker, c->role == SONDE_ROLE_SERVER,
					   &c->local, &c->remote);
	return c->link;
}

static struct link_node *link_request(struct conn *c, const struct http1_msg *msg)
{
	struct trace_parent parent;
	struct link_request req = {
		.tgid = c->tgid,
		.tid = msg->start_tid,
		.task = msg->start_task,
		.start_ts = msg->start_ts,
		.server = c->role == SONDE_ROLE_SERVER,
		.conn = link_conn_of(c),
	};

	if (req.server && msg->traceparent_len &&
	    traceparent_parse(msg->traceparent, msg->traceparent_len, &parent))
		req.remote = &parent;
	return linker_request(c->tracker->linker, &req);
}

/* A server's final response head says which thread and task served the
 * request. */
static bool on_response_head(struct conn *c, const struct http1_msg *msg)
{
	struct pending *p = c->pend_head;

	if (!p)
		return false;
	if (c->role == SONDE_ROLE_SERVER && (msg->status >= 200 || msg->status == 101))
		linker_response(c->tracker->linker, p->node, msg->start_tid, msg->start_task,
				msg->start_ts);
	return p->req.method == HTTP1_HEAD;
}

static bool on_head(void *owner, int dir, const struct http1_msg *msg)
{
	struct conn *c = owner;
	struct tracker *t = c->tracker;
	struct pending *p;

	infer_role(c, dir, msg->is_request);
	if (msg->is_request != (dir == request_dir(c)))
		return false;
	if (!msg->is_request)
		return on_response_head(c, msg);
	t->stats.requests++;
	if (c->npending >= t->opts.max_pending || !(p = pending_alloc(t))) {
		t->stats.pending_overflow++;
		return false;
	}
	p->node = link_request(c, msg);
	p->next = NULL;
	p->complete = false;
	memcpy(&p->req, msg, offsetof(struct http1_msg, target) + msg->target_len + 1);
	memcpy(p->req.host, msg->host, msg->host_len + 1);
	memcpy(p->req.user_agent, msg->user_agent, msg->ua_len + 1);
	memcpy(p->req.traceparent, msg->traceparent, msg->traceparent_len + 1);
	if (c->pend_tail)
		c->pend_tail->next = p;
	else
		c->pend_head = p;
	c->pend_tail = p;
	c->npending++;
	return false;
}

static struct pending *pop_pending(struct conn *c)
{
	struct pending *p = c->pend_head;

	if (!p)
		return NULL;
	c->pend_head = p->next;
	if (!c->pend_head)
		c->pend_tail = NULL;
	c->npending--;
	return p;
}

static void stop_parsing(struct conn *c)
{
	c->http[0].state = HTTP1_STOPPED;
	c->http[1].state = HTTP1_STOPPED;
}

static void complete_request(struct conn *c, const struct http1_msg *msg)
{
	struct pending *p = c->pend_tail;

	if (!p || p->complete || p->req.start_ts != msg->start_ts)
		return;
	p->complete = true;
	p->req.body_size = msg->body_size;
	p->req.flags |= msg->flags;
}

static void on_complete(void *owner, int dir, const struct http1_msg *msg)
{
	struct conn *c = owner;
	struct tracker *t = c->tracker;
	struct pending *p;
	bool switched;

	if (msg->is_request != (dir == request_dir(c)))
		return;
	if (msg->is_request) {
		complete_request(c, msg);
		return;
	}
	if (msg->status >= 100 && msg->status < 200 && msg->status != 101)
		return; /* interim response: the final one follows */
	/* A response cannot answer a request that started after it: it answers
	 * one sonde never saw (lost bytes), and pairing it would shift every
	 * later exchange on this connection. */
	if (!c->pend_head || c->pend_head->req.start_ts > msg->start_ts) {
		t->stats.orphan_responses++;
		return;
	}
	p = pop_pending(c);
	t->stats.exchanges++;
	switched = msg->status == 101 ||
		   (p->req.method == HTTP1_CONNECT && msg->status >= 200 && msg->status < 300);
	emit_span(c, p, msg,
		  (msg->flags & HTTP1_CUT_OFF) ? "connection ended before the response was complete"
					      : NULL,
		  msg->end_ts);
	pending_release(t, p);
	if (switched)
		stop_parsing(c);
}

/* The response stream lost sync before a response head: how many responses
 * the lost bytes held is unknown, so every waiting request becomes a span
 * without a response rather than being paired with a later one. */
static void responses_lost(struct conn *c, uint64_t ts)
{
	struct pending *p;

	while ((p = pop_pending(c))) {
		c->tracker->stats.responses_lost++;
		emit_span(c, p, NULL, NULL, ts);
		pending_release(c->tracker, p);
	}
}

static void on_drop(void *owner, int dir, enum http1_drop why, bool had_head)
{
	struct conn *c = owner;
	struct tracker_stats *stats = &c->tracker->stats;

	if (dir != request_dir(c) && !had_head && why != HTTP1_DROP_EOF &&
	    why != HTTP1_DROP_RESET)
		responses_lost(c, c->http[dir].cur ? c->http[dir].cur->ts : 0);
	if (!had_head && why != HTTP1_DROP_PARSE_ERROR)
		stats->partial_heads++;
	if (why == HTTP1_DROP_PARSE_ERROR)
		stats->parse_errors++;
	else if (why == HTTP1_DROP_GAP)
		stats->gap_resyncs++;
}

/* ---- data path -------------------------------------------------------- */

static void on_piece(void *owner, int dir, const struct reorder_piece *piece)
{
	struct conn *c = owner;
	struct http1_chunk chunk = {
		.data = piece->data,
		.captured = piece->captured,
		.hole = piece->len - piece->captured - piece->tail,
		.tail = piece->tail,
		.ts = piece->ts,
		.task = piece->task,
		.tid = piece->tid,
	};

	http1_stream_feed(&c->http[dir], &chunk);
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

/* Every request still waiting for its response becomes an error span. */
static void cut_off_pending(struct conn *c, const char *why, uint64_t ts)
{
	struct pending *p;

	while ((p = pop_pending(c))) {
		c->tracker->stats.exchanges_cut_off++;
		emit_span(c, p, NULL, why, ts);
		pending_release(c->tracker, p);
	}
}

/* Ends a connection at once: what is left of its streams is flushed, and
 * requests without a response become error spans. The memory stays valid
 * (on the lists of this tick) until tracker_tick frees it. */
static void conn_end(struct tracker *t, struct conn *c, const char *why, uint64_t ts)
{
	struct conn **link = find_link(t, c->tgid, c->fd);

	if (c->dead)
		return;
	flush_held(c);
	for (int dir = 0; dir < 2; dir++)
		http1_stream_eof(&c->http[dir], ts);
	cut_off_pending(c, why, ts);
	if (*link == c)
		*link = c->hash_next;
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
		for (int dir = 0; dir < 2; dir++)
			http1_stream_abort(&c->http[dir], ts);
		cut_off_pending(c, "connection reset before the response", ts);
	}
	if (ending & END_PEER)
		http1_stream_eof(&c->http[SONDE_DIR_INGRESS], ts);
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

/* The connection an event belongs to, creating it when asked (*created
 * says so). An event of an older generation than the tracked one is
 * late: NULL. */
static struct conn *conn_for(struct tracker *t, const struct sonde_event_header *hdr, bool create,
			     bool *created)
{
	struct conn *c = *find_link(t, hdr->tgid, hdr->fd);

	if (c && c->gen == hdr->conn_gen)
		return c;
	if (c && c->gen > hdr->conn_gen)
		return NULL;
	if (c) {
		apply_ending(t, c);
		conn_end(t, c, "connection replaced before the response", hdr->ts);
	}
	if (!create)
		return NULL;
	c = conn_create(t, hdr);
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

static void handle_conn(struct tracker *t, const struct sonde_conn_event *ev)
{
	bool created;
	struct conn *c = conn_for(t, &ev->hdr, true, &created);

	if (!c)
		return;
	c->have_addr = ev->family == AF_INET || ev->family == AF_INET6;
	format_addr(ev->family, ev->laddr, c->laddr, sizeof(c->laddr));
	format_addr(ev->family, ev->raddr, c->raddr, sizeof(c->raddr));
	link_end_of(ev->family, ev->laddr, ev->lport, &c->local);
	link_end_of(ev->family, ev->raddr, ev->rport, &c->remote);
	memcpy(c->comm, ev->comm, sizeof(c->comm));
	if (ev->role != SONDE_ROLE_UNKNOWN && !c->order[0].next_pos && !c->order[1].next_pos) {
		set_role(c, ev->role);
		http1_stream_start(&c->http[0]);
		http1_stream_start(&c->http[1]);
	}
	proc_table_get(t->procs, c->tgid, c->comm);
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
	    ev->tail > SONDE_TAIL_MAX || (uint64_t)ev->captured + ev->tail > ev->len || ev->dir > 1) {
		t->stats.bad_records++;
		return;
	}
	c = conn_for(t, &ev->hdr, true, &created);
	if (!c)
		return;
	if (created)
		t->stats.conns_no_open++;
	ctx = reorder_ctx_of(c, !ev->dir);
	reorder_flush_before(&c->order[!ev->dir], &ctx, ev->hdr.ts);
	ctx = reorder_ctx_of(c, ev->dir);
	reorder_push(&c->order[ev->dir], &ctx, &piece);
	note_held(t, c);
}

static void handle_close(struct tracker *t, const struct sonde_close_event *ev)
{
	struct conn *c = conn_for(t, &ev->hdr, false, NULL);
	uint8_t ending = ev->reason == SONDE_CLOSE_PEER    ? END_PEER
			 : ev->reason == SONDE_CLOSE_RESET ? END_RESET
							   : END_LOCAL;

	if (c)
		mark_ending(t, c, ending, ev->hdr.ts);
}

static void apply_endings(struct tracker *t);

static void handle_proc_exit(struct tracker *t, const struct sonde_event_header *hdr)
{
	t->stats.proc_exits++;
	if (t->nexited < EXITED_MAX)
		t->exited[t->nexited++] = hdr->tgid;
	if (!proc_table_has(t->procs, hdr->tgid))
		return;
	for (size_t i = 0; i < (1u << t->nbuckets_log2); i++)
		for (struct conn *c = t->buckets[i]; c; c = c->hash_next)
			if (c->tgid == hdr->tgid)
				mark_ending(t, c, END_EXIT, hdr->ts);
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
		c->hash_next = t->free_conns;
		t->free_conns = c;
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
		t->opts.max_pending = 64;
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

void tracker_free(struct tracker *t)
{
	if (!t)
		return;
	while (t->dead_list) {
		struct conn *c = t->dead_list;

		t->dead_list = c->hash_next;
		free(c);
	}
	for (size_t i = 0; i < (1u << t->nbuckets_log2); i++) {
		while (t->buckets[i]) {
			struct conn *c = t->buckets[i];

			t->buckets[i] = c->hash_next;
			drop_unfinished(t, c);
			reorder_discard(&c->order[0], &t->pool);
			reorder_discard(&c->order[1], &t->pool);
			free(c);
		}
	}
	while (t->free_conns) {
		struct conn *c = t->free_conns;

		t->free_conns = c->hash_next;
		free(c);
	}
	while (t->free_pending) {
		struct pending *p = t->free_pending;

		t->free_pending = p->next;
		free(p);
	}
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
