/* HTTP/1.x behind the protocol interface: the two stream parsers of a
 * connection (http1.c), their heads turned into exchanges, and the span
 * fields and attributes of the HTTP semantic conventions. */
#include "http1_proto.h"

#include "hash.h"
#include "http1.h"
#include "route.h"
#include "semconv.h"
#include "sonde_events.h"
#include "text.h"

#include <stdio.h>
#include <string.h>

struct http1_conn {
	struct proto_conn *pc;
	const struct proto_opts *opts;
	struct http1_stream http[2]; /* per enum sonde_dir */
};

/* What an exchange keeps of its request until the answer. */
struct http1_exchange {
	bool complete; /* the whole request (body too) was seen */
	struct http1_msg req;
};

static struct http1_span *fields_of(struct span *span)
{
	return (struct http1_span *)span->proto_data;
}

/* ---- parser callbacks -------------------------------------------------- */

static enum http1_type stream_type(uint8_t role, int dir)
{
	if (role == SONDE_ROLE_UNKNOWN)
		return HTTP1_BOTH;
	if ((role == SONDE_ROLE_SERVER) == (dir == SONDE_DIR_INGRESS))
		return HTTP1_REQUEST;
	return HTTP1_RESPONSE;
}

static void set_stream_types(struct http1_conn *hc, uint8_t role)
{
	for (int dir = 0; dir < 2; dir++)
		if (hc->http[dir].type == HTTP1_BOTH)
			hc->http[dir].type = stream_type(role, dir);
}

static int request_dir(const struct http1_conn *hc)
{
	return conn_role(hc->pc) == SONDE_ROLE_SERVER ? SONDE_DIR_INGRESS : SONDE_DIR_EGRESS;
}

/* A connection sonde did not see open learns its role from the first
 * message: a request received means the process is the server. */
static void infer_role(struct http1_conn *hc, int dir, bool is_request)
{
	uint8_t role;

	if (conn_role(hc->pc) != SONDE_ROLE_UNKNOWN)
		return;
	role = is_request == (dir == SONDE_DIR_INGRESS) ? SONDE_ROLE_SERVER : SONDE_ROLE_CLIENT;
	conn_set_role(hc->pc, role);
	set_stream_types(hc, role);
}

/* A server's final response head says which thread and task served the
 * request. Returns whether the response has no body (it answers HEAD). */
static bool on_response_head(struct http1_conn *hc, const struct http1_msg *msg)
{
	const struct http1_exchange *x = conn_oldest(hc->pc);

	if (!x)
		return false;
	if (msg->status >= 200 || msg->status == 101)
		conn_answer_began(hc->pc, msg->start_tid, msg->start_task, msg->start_ts);
	return x->req.method == HTTP1_HEAD;
}

/* Only the used part of the request's strings is copied. */
static void keep_request(struct http1_exchange *x, const struct http1_msg *msg)
{
	x->complete = false;
	memcpy(&x->req, msg, offsetof(struct http1_msg, target) + msg->target_len + 1);
	memcpy(x->req.host, msg->host, msg->host_len + 1);
	memcpy(x->req.user_agent, msg->user_agent, msg->ua_len + 1);
	memcpy(x->req.traceparent, msg->traceparent, msg->traceparent_len + 1);
}

/* What a proxy passes on unchanged: the method, the target and Host
 * (nginx rewrites Host by default; it has its own way, bpf/nginx.bpf.h).
 * Two fields keep it cheap on every request; the lengths are hashed in,
 * so that the boundary counts. */
static uint64_t request_fingerprint(const struct http1_msg *msg)
{
	uint64_t h = hash_bytes(msg->method, msg->target, msg->target_len);

	return hash_bytes(h, msg->host, msg->host_len) | 1;
}

static bool on_head(void *owner, int dir, const struct http1_msg *msg)
{
	struct http1_conn *hc = owner;
	struct request_start rs = {
		.ts = msg->start_ts,
		.tid = msg->start_tid,
		.task = msg->start_task,
		.traceparent = msg->traceparent,
		.traceparent_len = msg->traceparent_len,
		.pos = msg->start_pos,
		.pos_known = true,
	};
	struct http1_exchange *x;

	infer_role(hc, dir, msg->is_request);
	if (msg->is_request != (dir == request_dir(hc)))
		return false;
	if (!msg->is_request)
		return on_response_head(hc, msg);
	rs.fingerprint = request_fingerprint(msg);
	x = conn_request(hc->pc, &rs);
	if (x)
		keep_request(x, msg);
	return false;
}

static void complete_request(struct http1_conn *hc, const struct http1_msg *msg)
{
	struct http1_exchange *x = conn_newest(hc->pc);

	if (!x || x->complete || x->req.start_ts != msg->start_ts)
		return;
	x->complete = true;
	x->req.body_size = msg->body_size;
	x->req.flags |= msg->flags;
}

static void stop_parsing(struct http1_conn *hc)
{
	hc->http[0].state = HTTP1_STOPPED;
	hc->http[1].state = HTTP1_STOPPED;
	conn_stop(hc->pc);
}

static void on_complete(void *owner, int dir, const struct http1_msg *msg)
{
	struct http1_conn *hc = owner;
	const struct http1_exchange *x;
	struct answer a = {
		.start_ts = msg->start_ts,
		.end_ts = msg->end_ts,
		.detail = msg,
	};
	bool switched;

	if (msg->is_request != (dir == request_dir(hc)))
		return;
	if (msg->is_request) {
		complete_request(hc, msg);
		return;
	}
	if (msg->status >= 100 && msg->status < 200 && msg->status != 101)
		return; /* interim response: the final one follows */
	x = conn_oldest(hc->pc);
	switched = msg->status == 101 ||
		   (x && x->req.method == HTTP1_CONNECT && msg->status >= 200 && msg->status < 300);
	if (msg->flags & HTTP1_CUT_OFF)
		a.cut_off = "connection ended before the response was complete";
	if (conn_answer(hc->pc, &a) && switched)
		stop_parsing(hc);
}

static void on_drop(void *owner, int dir, enum http1_drop why, bool had_head)
{
	struct http1_conn *hc = owner;

	/* Responses after the lost bytes cannot be told from those in them:
	 * whatever still waits ends without one rather than pair with a later
	 * response (a response cut off in its head or body was answered
	 * first). */
	if (dir != request_dir(hc) && why != HTTP1_DROP_EOF && why != HTTP1_DROP_RESET)
		conn_answers_lost(hc->pc, hc->http[dir].cur ? hc->http[dir].cur->ts : 0);
	if (!had_head && why != HTTP1_DROP_PARSE_ERROR && why != HTTP1_DROP_NO_MEMORY)
		conn_note(hc->pc, NOTE_PARTIAL_HEAD);
	if (why == HTTP1_DROP_PARSE_ERROR)
		conn_note(hc->pc, NOTE_PARSE_ERROR);
	else if (why == HTTP1_DROP_GAP)
		conn_note(hc->pc, NOTE_GAP);
}

static struct http1_work *take_work(void *owner, int dir)
{
	struct http1_conn *hc = owner;

	return conn_work_take(hc->pc);
}

static void give_work(void *owner, int dir, struct http1_work *work)
{
	struct http1_conn *hc = owner;

	conn_work_give(hc->pc, work);
}

static const struct http1_callbacks callbacks = {
	.take_work = take_work,
	.give_work = give_work,
	.on_head = on_head,
	.on_complete = on_complete,
	.on_drop = on_drop,
};

/* ---- connection events -------------------------------------------------- */

static void http1_open(void *st, struct proto_conn *pc, const struct proto_opts *opts)
{
	struct http1_conn *hc = st;

	hc->pc = pc;
	hc->opts = opts;
	for (int dir = 0; dir < 2; dir++)
		http1_stream_init(&hc->http[dir], HTTP1_BOTH, &callbacks, hc, dir);
}

static void http1_close(void *st)
{
	struct http1_conn *hc = st;

	for (int dir = 0; dir < 2; dir++)
		http1_stream_release(&hc->http[dir]);
}

static void http1_start(void *st, uint8_t role)
{
	struct http1_conn *hc = st;

	set_stream_types(hc, role);
	http1_stream_start(&hc->http[0]);
	http1_stream_start(&hc->http[1]);
}

static void http1_data(void *st, int dir, const struct piece *p)
{
	struct http1_conn *hc = st;

	http1_stream_feed(&hc->http[dir], p);
}

static void http1_eof(void *st, int dir, uint64_t ts)
{
	struct http1_conn *hc = st;

	http1_stream_eof(&hc->http[dir], ts);
}

static void http1_reset(void *st, uint64_t ts)
{
	struct http1_conn *hc = st;

	for (int dir = 0; dir < 2; dir++)
		http1_stream_abort(&hc->http[dir], ts);
}

/* ---- the span ------------------------------------------------------------ */

static uint16_t parse_port(const char *text)
{
	uint32_t port = 0;

	for (; *text >= '0' && *text <= '9' && port <= 65535; text++)
		port = port * 10 + (uint32_t)(*text - '0');
	return port <= 65535 ? (uint16_t)port : 0;
}

/* Host header "name", "name:port" or "[v6]:port": server.address, and
 * server.port when it names one. */
static void split_host(const char *host, struct span *span)
{
	const char *colon;

	if (host[0] == '[') {
		const char *end = strchr(host, ']');

		if (!end)
			return;
		text_copy_len(span->server_address, sizeof(span->server_address), host + 1,
			 (size_t)(end - host - 1));
		colon = end[1] == ':' ? end + 1 : NULL;
	} else {
		colon = strrchr(host, ':');
		text_copy_len(span->server_address, sizeof(span->server_address), host,
			 colon ? (size_t)(colon - host) : strlen(host));
	}
	if (colon && colon[1])
		span->server_port = parse_port(colon + 1);
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

static void fill_target(struct http1_span *f, bool server, const struct http1_msg *req,
			const struct proto_opts *opts)
{
	size_t len = req->target_len, path_len;
	const char *path = target_path(req->target, &len);

	path_len = route_path_len(path, len);
	text_copy_len(f->path, sizeof(f->path), path, path_len);
	f->query[0] = '\0';
	if (opts->keep_query && path_len < len && path[path_len] == '?')
		text_copy_len(f->query, sizeof(f->query), path + path_len + 1, len - path_len - 1);
	f->route[0] = '\0';
	if (server)
		route_template(f->path, path_len, f->route, sizeof(f->route));
}

static void fill_status(struct span *span, struct http1_span *f, const struct http1_msg *resp)
{
	uint16_t error_from = span->kind == SPAN_KIND_SERVER ? 500 : 400;
	uint16_t code = resp ? resp->status : 0;

	f->status_code = code;
	if (!resp)
		return;
	span->response_code[0] = (char)('0' + code / 100 % 10);
	span->response_code[1] = (char)('0' + code / 10 % 10);
	span->response_code[2] = (char)('0' + code % 10);
	span->response_code[3] = '\0';
	if (code >= error_from) {
		span->status = SPAN_STATUS_ERROR;
		memcpy(span->error_type, span->response_code, 4);
	}
}

static void http1_fill_span(struct span *span, const void *exchange, const void *detail,
			    const struct proto_opts *opts)
{
	const struct http1_exchange *x = exchange;
	const struct http1_msg *req = &x->req, *resp = detail;
	struct http1_span *f = fields_of(span);

	f->method = http1_method_name(req->method);
	f->protocol_version = http1_version_name(req->version_major, req->version_minor);
	fill_target(f, span->kind == SPAN_KIND_SERVER, req, opts);
	if (req->host_len)
		split_host(req->host, span);
	text_copy_len(f->user_agent, sizeof(f->user_agent), req->user_agent, req->ua_len);
	f->request_body_size = x->complete && !(req->flags & HTTP1_BODY_LOST)
				       ? (int64_t)req->body_size : -1;
	f->response_body_size = resp && !(resp->flags & HTTP1_BODY_LOST)
					? (int64_t)resp->body_size : -1;
	f->flags = (req->flags & HTTP1_HEAD_CUT) || (resp && (resp->flags & HTTP1_HEAD_CUT))
			   ? HTTP1_SPAN_HEAD_CUT : 0;
	fill_status(span, f, resp);
}

/* "{method} {route}", or "{method}" alone. */
static void http1_name(const struct span *span, char *out, size_t size)
{
	const struct http1_span *f = http1_span_of(span);

	if (span->kind == SPAN_KIND_SERVER && f->route[0])
		snprintf(out, size, "%s %s", f->method, f->route);
	else
		snprintf(out, size, "%s", f->method);
}

static void format_url_full(const struct span *span, const struct http1_span *f, char *out)
{
	const char *qmark = f->query[0] ? "?" : "";

	if (span->server_port && span->server_port != 80)
		snprintf(out, SPAN_SCRATCH_MAX, "http://%s:%u%s%s%s", span->server_address,
			 span->server_port, f->path, qmark, f->query);
	else
		snprintf(out, SPAN_SCRATCH_MAX, "http://%s%s%s%s", span->server_address, f->path,
			 qmark, f->query);
}

static void http1_attributes(const struct span *span, const struct attr_sink *sink,
			     char *scratch)
{
	const struct http1_span *f = http1_span_of(span);

	attr_put_str(sink, "http.request.method", f->method);
	attr_put_str(sink, "url.path", f->path);
	attr_put_str(sink, "url.query", f->query);
	attr_put_str(sink, "url.scheme", "http");
	if (span->kind == SPAN_KIND_SERVER)
		attr_put_str(sink, "http.route", f->route);
	if (f->status_code)
		sink->i64(sink->ctx, "http.response.status_code", f->status_code);
	attr_put_str(sink, "network.protocol.version", f->protocol_version);
	if (span->kind == SPAN_KIND_CLIENT) {
		format_url_full(span, f, scratch);
		attr_put_str(sink, "url.full", scratch);
	}
	attr_put_str(sink, "user_agent.original", f->user_agent);
	if (f->request_body_size >= 0)
		sink->i64(sink->ctx, "http.request.body.size", f->request_body_size);
	if (f->response_body_size >= 0)
		sink->i64(sink->ctx, "http.response.body.size", f->response_body_size);
	if (f->flags & HTTP1_SPAN_HEAD_CUT)
		sink->boolean(sink->ctx, "sonde.http.headers_captured", false);
}

static enum duration_metric http1_metric(const struct span *span)
{
	return span->kind == SPAN_KIND_SERVER ? METRIC_HTTP_SERVER_DURATION
					      : METRIC_HTTP_CLIENT_DURATION;
}

/* The conventions' attributes of the HTTP duration metrics: no path or
 * address of a server span, whose values are unbounded. */
static void http1_metric_attributes(const struct span *span, struct metric_attrs *out)
{
	const struct http1_span *f = http1_span_of(span);

	metric_attr_const(out, "http.request.method", f->method);
	metric_attr_const(out, "url.scheme", "http");
	metric_attr_const(out, "network.protocol.version", f->protocol_version);
	if (f->status_code)
		metric_attr_i64(out, "http.response.status_code", f->status_code);
	if (span->kind == SPAN_KIND_SERVER) {
		metric_attr_str(out, "http.route", f->route);
	} else {
		metric_attr_str(out, "server.address", span->server_address);
		if (span->server_port)
			metric_attr_i64(out, "server.port", span->server_port);
	}
	metric_attr_str(out, "error.type", span->error_type);
}

/* The conventions' required attributes of http.server.active_requests:
 * what is known before the answer. */
static void http1_active_attributes(const void *exchange, struct metric_attrs *out)
{
	const struct http1_exchange *x = exchange;

	metric_attr_const(out, "http.request.method", http1_method_name(x->req.method));
	metric_attr_const(out, "url.scheme", "http");
}

const struct proto_ops http1_proto = {
	.name = "http1",
	.id = SONDE_PROTO_HTTP1,
	.conn_size = sizeof(struct http1_conn),
	.exchange_size = sizeof(struct http1_exchange),
	.work_size = sizeof(struct http1_work),
	.open = http1_open,
	.close = http1_close,
	.start = http1_start,
	.data = http1_data,
	.eof = http1_eof,
	.reset = http1_reset,
	.fill_span = http1_fill_span,
	.span_name = http1_name,
	.span_attributes = http1_attributes,
	.metric = http1_metric,
	.metric_attributes = http1_metric_attributes,
	.active_attributes = http1_active_attributes,
};
