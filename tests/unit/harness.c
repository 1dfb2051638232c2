#include "harness.h"

#include "semconv.h"
#include "tmpdir.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void record_summary(void *ctx, const struct exchange_summary *x)
{
	struct harness *h = ctx;
	struct h_summary *out;

	cr_assert_lt(h->nsummaries, HARNESS_SPANS_MAX);
	out = &h->summaries[h->nsummaries++];
	out->proto = x->span->proto;
	out->kind = x->span->kind;
	out->error = x->span->status == SPAN_STATUS_ERROR;
	out->start_ns = x->start_ns;
	out->end_ns = x->end_ns;
	span_format_name(x->span, out->name, sizeof(out->name));
}

/* Requests in progress, as the metrics would count them: the handle is
 * the method's counter. */
static void *request_began(void *ctx, const struct request_began *r)
{
	struct harness *h = ctx;

	cr_assert(r->ops->active_attributes && r->exchange);
	h->active++;
	h->began++;
	return &h->active;
}

static void request_ended(void *ctx, void *handle)
{
	struct harness *h = ctx;

	cr_assert_eq(handle, &h->active);
	h->active--;
}

void h_init(struct harness *h, bool keep_query)
{
	h_init_pending(h, keep_query, 0);
}

void h_init_pending(struct harness *h, bool keep_query, uint32_t max_pending)
{
	struct exporter_opts eopts = {
		.sinks = EXPORTER_CONSOLE,
		.max_queue_size = 1024,
		.max_export_batch = 64,
		.schedule_delay_ms = 10,
	};
	struct tracker_opts topts = {
		.proto.keep_query = keep_query,
		.max_pending = max_pending,
		.on_exchange = record_summary,
		.on_request_began = request_began,
		.on_request_ended = request_ended,
		.observer_ctx = h,
	};

	memset(h, 0, sizeof(*h));
	h->out = open_memstream(&h->out_buf, &h->out_len);
	cr_assert(h->out);
	eopts.console = h->out;
	strcpy(h->proc_root, "/tmp/sonde-proc-XXXXXX");
	cr_assert(mkdtemp(h->proc_root));
	wallclock_sync(&h->clock);
	cr_assert_eq(exporter_new(&h->exporter, &eopts, NULL, 0), 0);
	h->procs = proc_table_new(h->proc_root, "testhost");
	cr_assert(h->procs);
	h->tracker = tracker_new(&topts, h->exporter, h->procs, &h->clock);
	cr_assert(h->tracker);
	h->now = 1000000000ull;
}

static void write_file(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "w");

	cr_assert(f);
	fwrite(data, 1, len, f);
	fclose(f);
}

void h_proc(struct harness *h, uint32_t pid, const char *cmdline, size_t cmdline_len,
	    const char *environ, size_t environ_len)
{
	char path[160];

	snprintf(path, sizeof(path), "%s/%u", h->proc_root, pid);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/%u/cmdline", h->proc_root, pid);
	write_file(path, cmdline, cmdline_len);
	snprintf(path, sizeof(path), "%s/%u/environ", h->proc_root, pid);
	write_file(path, environ, environ_len);
}

static void fill_hdr(struct harness *h, struct sonde_event_header *hdr, uint8_t type,
		     const struct tconn *c)
{
	hdr->type = type;
	hdr->tgid = c->tgid;
	hdr->tid = c->tid ? c->tid : c->tgid;
	hdr->fd = c->fd;
	hdr->conn_gen = c->gen;
	h->now += 1000;
	hdr->ts = h->now;
}

static struct tconn open_conn_ends(struct harness *h, uint32_t tgid, int32_t fd, uint8_t role,
				   uint8_t proto, const char *laddr, uint16_t lport,
				   const char *raddr, uint16_t rport)
{
	struct tconn c = { .tgid = tgid, .fd = fd, .gen = h->now, .proto = proto };
	struct sonde_conn_event ev = { 0 };

	fill_hdr(h, &ev.hdr, SONDE_EV_CONN, &c);
	ev.role = role;
	ev.proto = proto;
	ev.family = 2;
	ev.lport = lport;
	ev.rport = rport;
	memcpy(ev.laddr, laddr, 4);
	memcpy(ev.raddr, raddr, 4);
	strcpy(ev.comm, "testproc");
	tracker_handle(h->tracker, &ev, sizeof(ev));
	return c;
}

static struct tconn open_conn(struct harness *h, uint32_t tgid, int32_t fd, uint8_t role,
			      uint8_t proto, uint16_t lport, uint16_t rport, const char *raddr)
{
	return open_conn_ends(h, tgid, fd, role, proto, "\x7f\x00\x00\x01", lport, raddr, rport);
}

struct tconn h_open_ends(struct harness *h, uint32_t tgid, int32_t fd, uint8_t role, uint8_t proto,
			 const char *laddr, uint16_t lport, const char *raddr, uint16_t rport)
{
	return open_conn_ends(h, tgid, fd, role, proto, laddr, lport, raddr, rport);
}

struct tconn h_open(struct harness *h, uint32_t tgid, int32_t fd, uint8_t role)
{
	bool client = role == SONDE_ROLE_CLIENT;

	return open_conn(h, tgid, fd, role, SONDE_PROTO_HTTP1, client ? 40000 : 8080,
			 client ? 8080 : 40000, "\x7f\x00\x00\x02");
}

struct tconn h_open_proto(struct harness *h, uint32_t tgid, int32_t fd, uint8_t role,
			  uint8_t proto, uint16_t server_port)
{
	bool client = role == SONDE_ROLE_CLIENT;

	return open_conn(h, tgid, fd, role, proto, client ? 40000 : server_port,
			 client ? server_port : 40000, "\x7f\x00\x00\x02");
}

struct tconn h_open_ports(struct harness *h, uint32_t tgid, int32_t fd, uint8_t role,
			  uint16_t lport, uint16_t rport)
{
	return open_conn(h, tgid, fd, role, SONDE_PROTO_HTTP1, lport, rport, "\x7f\x00\x00\x01");
}

void h_io(struct harness *h, struct tconn *c, int dir, const char *data, size_t len,
	  size_t captured)
{
	h_io_tail(h, c, dir, data, len, captured, 0);
}

void h_io_tail(struct harness *h, struct tconn *c, int dir, const char *data, size_t len,
	       size_t captured, size_t tail)
{
	struct sonde_data_event *ev = calloc(1, sizeof(*ev));

	cr_assert(captured <= SONDE_CAPTURE_MAX && tail <= SONDE_TAIL_MAX && captured + tail <= len);
	fill_hdr(h, &ev->hdr, SONDE_EV_DATA, c);
	ev->pos = c->pos[dir];
	ev->len = (uint32_t)len;
	ev->captured = (uint16_t)captured;
	ev->tail = (uint16_t)tail;
	ev->dir = (uint8_t)dir;
	ev->proto = c->proto;
	ev->task = c->task;
	memcpy(ev->data, data, captured);
	memcpy(ev->data + captured, data + len - tail, tail);
	c->pos[dir] += len;
	tracker_handle(h->tracker, ev, SONDE_DATA_EVENT_SIZE(captured + tail));
	free(ev);
}

void h_send(struct harness *h, struct tconn *c, int dir, const char *text)
{
	size_t len = strlen(text);

	while (len > 0) {
		size_t n = len > SONDE_CAPTURE_MAX ? SONDE_CAPTURE_MAX : len;

		h_io(h, c, dir, text, n, n);
		text += n;
		len -= n;
	}
}

void h_lose(struct harness *h, struct tconn *c, int dir, size_t len)
{
	(void)h;
	c->pos[dir] += len;
}

void h_close(struct harness *h, struct tconn *c, uint8_t reason)
{
	struct sonde_close_event ev = { 0 };

	fill_hdr(h, &ev.hdr, SONDE_EV_CLOSE, c);
	ev.reason = reason;
	tracker_handle(h->tracker, &ev, sizeof(ev));
}

void h_move(struct harness *h, struct tconn *c, int32_t new_fd)
{
	struct sonde_moved_event ev = { 0 };

	fill_hdr(h, &ev.hdr, SONDE_EV_CONN_MOVED, c);
	ev.new_fd = new_fd;
	tracker_handle(h->tracker, &ev, sizeof(ev));
	c->fd = new_fd;
}

void h_exit(struct harness *h, uint32_t tgid)
{
	struct sonde_event_header hdr = { .type = SONDE_EV_PROC_EXIT, .tgid = tgid, .fd = -1 };

	h->now += 1000;
	hdr.ts = h->now;
	tracker_handle(h->tracker, &hdr, sizeof(hdr));
}

void h_finish(struct harness *h)
{
	char *line, *save = NULL;

	tracker_tick(h->tracker, h->now);
	tracker_tick(h->tracker, UINT64_MAX);
	tracker_get_stats(h->tracker, &h->stats);
	exporter_free(h->exporter);
	h->exporter = NULL;
	fflush(h->out);
	for (line = strtok_r(h->out_buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		cJSON *span = cJSON_Parse(line);

		cr_assert(span, "console line is not JSON: %s", line);
		cr_assert_lt(h->nspans, HARNESS_SPANS_MAX);
		h->spans[h->nspans++] = span;
	}
}

void h_free(struct harness *h)
{
	for (int i = 0; i < h->nspans; i++)
		cJSON_Delete(h->spans[i]);
	tracker_free(h->tracker);
	exporter_free(h->exporter);
	proc_table_free(h->procs);
	fclose(h->out);
	free(h->out_buf);
	tmpdir_remove(h->proc_root);
}

static const cJSON *attrs(const cJSON *span)
{
	return cJSON_GetObjectItemCaseSensitive(span, "attributes");
}

const char *span_str(const cJSON *span, const char *attr)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(attrs(span), attr);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

long span_int(const cJSON *span, const char *attr)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(attrs(span), attr);

	cr_assert(cJSON_IsNumber(v), "attribute %s is not a number", attr);
	return (long)v->valuedouble;
}

bool span_has(const cJSON *span, const char *attr)
{
	return cJSON_GetObjectItemCaseSensitive(attrs(span), attr) != NULL;
}

const char *span_field(const cJSON *span, const char *field)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(span, field);

	if (cJSON_IsString(v))
		return v->valuestring;
	return cJSON_IsNull(v) ? "null" : NULL;
}

const char *span_status(const cJSON *span)
{
	const cJSON *status = cJSON_GetObjectItemCaseSensitive(span, "status");

	return cJSON_GetObjectItemCaseSensitive(status, "status_code")->valuestring;
}

const char *span_resource(const cJSON *span, const char *attr)
{
	const cJSON *res = cJSON_GetObjectItemCaseSensitive(span, "resource");
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(
		cJSON_GetObjectItemCaseSensitive(res, "attributes"), attr);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

pid_t harness_run(const char *exe_part, char *const argv[])
{
	pid_t child = fork();
	char path[64], exe[256];

	if (child == 0) {
		execv(argv[0], argv);
		_exit(127);
	}
	cr_assert(child > 0);
	snprintf(path, sizeof(path), "/proc/%d/exe", child);
	for (int i = 0; i < 500; i++) {
		ssize_t len = readlink(path, exe, sizeof(exe) - 1);

		if (len > 0) {
			exe[len] = '\0';
			if (strstr(exe, exe_part))
				return child;
		}
		usleep(10 * 1000);
	}
	cr_assert_fail("pid %d never ran %s", child, exe_part);
	return -1;
}

struct prog_file harness_exe(struct prog_files *files, pid_t pid)
{
	struct prog_file exe;

	cr_assert_eq(prog_exe(files, (uint32_t)pid, &exe), 0);
	return exe;
}
