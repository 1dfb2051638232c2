#include "jobs.h"

#include "progfile.h"
#include "semconv.h"
#include "text.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define JOBS_DESC(...) COUNTER_DESC(struct jobs_stats, __VA_ARGS__)
const struct counter_desc jobs_counters[] = { JOBS_COUNTERS(JOBS_DESC) };
const size_t jobs_counter_count = sizeof(jobs_counters) / sizeof(jobs_counters[0]);

#define PYTHON_PREFIX "python:"
#define NATIVE_PREFIX "native:"
/* _asyncio's fut_state values. */
enum { FUTURE_PENDING, FUTURE_CANCELLED, FUTURE_FINISHED };
#define OB_TYPE_AT 8    /* PyObject.ob_type */
#define TYPE_NAME_AT 24 /* PyTypeObject.tp_name */
/* The fields of a Task the agent reads lie in its first this many bytes. */
#define TASK_READ_MAX 256
/* How often the tasks are read: two reads a task each time (the chain
 * bench's workers, ~24 jobs at once, cost the agent 77 us a request at a
 * look every 20 ms). */
#define POLL_EVERY_NS (50 * 1000000ull)

/* A CPython process whose task jobs can be read. */
struct job_proc {
	struct job_proc *next;
	uint32_t tgid;
	const struct pytask_version *version;
};

struct job {
	struct job *next;
	uint32_t tgid;
	uint8_t kind; /* enum sonde_job_kind */
	uint64_t start_ns;
	uint64_t task_object, coro, code; /* a task job's */
	struct link_node *node;
	struct proc_info *proc; /* a reference */
	const struct pytask_version *version; /* a task job's */
	struct job_span fields;
};

struct jobs {
	const struct entry_points *eps;
	struct linker *linker;
	struct proc_table *procs;
	const struct wallclock *clock;
	struct job_proc *watched;
	struct job *running;
	uint64_t last_poll_ns;
	struct jobs_stats stats;
};

/* ---- the span ------------------------------------------------------------------ */

static const struct job_span *fields_of(const struct span *span)
{
	return (const struct job_span *)span->proto_data;
}

static void job_name(const struct span *span, char *out, size_t size)
{
	text_copy(out, size, fields_of(span)->function);
}

static void job_attributes(const struct span *span, const struct attr_sink *sink, char *scratch)
{
	const struct job_span *f = fields_of(span);

	attr_put_str(sink, "code.function.name", f->function);
	if (f->thread)
		sink->i64(sink->ctx, "thread.id", f->thread);
	for (unsigned i = 0; i < f->nargs && i < SONDE_JOB_ARGS_MAX; i++)
		sink->i64(sink->ctx, f->attr[i], f->value[i]);
}

const struct proto_ops job_proto = {
	.name = "job",
	.id = PROTO_JOB,
	.span_name = job_name,
	.span_attributes = job_attributes,
};

_Static_assert(sizeof(struct job_span) <= SPAN_PROTO_DATA_MAX, "job_span fits a span");

/* ---- configuration ------------------------------------------------------------- */

static bool name_char(char c, const char *extra)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       strchr(extra, c);
}

/* Whether text[0..len) is non-empty and made of name_char's. */
static bool is_name(const char *text, size_t len, const char *extra)
{
	for (size_t i = 0; i < len; i++)
		if (!text[i] || !name_char(text[i], extra))
			return false;
	return len > 0;
}

static int entry_error(const char *at, size_t len, const char *why, char *err, size_t err_size)
{
	snprintf(err, err_size, "SONDE_ENTRY_POINTS: \"%.*s\" %s", (int)len, at, why);
	return -1;
}

static int parse_python(const char *at, size_t len, struct entry_points *out, char *err,
			size_t err_size)
{
	size_t prefix = strlen(PYTHON_PREFIX);
	struct sonde_job_name *name = &out->python[out->npython];

	if (out->npython == JOBS_ENTRY_POINTS_MAX)
		return entry_error(at, len, "is one Python entry point too many", err, err_size);
	if (len - prefix >= sizeof(name->name))
		return entry_error(at, len, "has a name longer than 63 characters", err, err_size);
	if (!is_name(at + prefix, len - prefix, "_."))
		return entry_error(at, len, "is not python:QUALNAME (ASCII letters, digits, '_', '.')",
				   err, err_size);
	memset(name, 0, sizeof(*name));
	memcpy(name->name, at + prefix, len - prefix);
	out->npython++;
	return 0;
}

/* ":N=KEY", N from 1 to SONDE_JOB_ARGS_MAX. */
static int parse_native_arg(const char *arg, size_t len, struct native_entry *e)
{
	const char *key = arg + 2;
	size_t key_len = len - 2;

	if (len < 3 || arg[0] < '1' || arg[0] > '0' + SONDE_JOB_ARGS_MAX || arg[1] != '=' ||
	    key_len >= JOBS_ATTR_MAX || !is_name(key, key_len, "_.") ||
	    e->nargs == SONDE_JOB_ARGS_MAX)
		return -1;
	e->arg[e->nargs] = (uint8_t)(arg[0] - '1');
	memcpy(e->attr[e->nargs], key, key_len);
	e->attr[e->nargs][key_len] = '\0';
	e->nargs++;
	return 0;
}

static int parse_native(const char *at, size_t len, struct entry_points *out, char *err,
			size_t err_size)
{
	struct native_entry *e = &out->native[out->nnative];
	const char *path = at + strlen(NATIVE_PREFIX), *end = at + len;
	const char *symbol = memchr(path, ':', (size_t)(end - path));
	const char *args = symbol ? memchr(symbol + 1, ':', (size_t)(end - symbol - 1)) : NULL;

	if (out->nnative == JOBS_NATIVE_MAX)
		return entry_error(at, len, "is one native entry point too many", err, err_size);
	memset(e, 0, sizeof(*e));
	if (!args)
		args = end;
	if (!symbol || path[0] != '/' || (size_t)(symbol - path) >= sizeof(e->path) ||
	    (size_t)(args - symbol - 1) >= sizeof(e->symbol) ||
	    !is_name(symbol + 1, (size_t)(args - symbol - 1), "_.@"))
		return entry_error(at, len, "is not native:/PATH:SYMBOL[:N=KEY...]", err, err_size);
	memcpy(e->path, path, (size_t)(symbol - path));
	memcpy(e->symbol, symbol + 1, (size_t)(args - symbol - 1));
	while (args < end) {
		const char *next = memchr(args + 1, ':', (size_t)(end - args - 1));

		if (!next)
			next = end;
		if (parse_native_arg(args + 1, (size_t)(next - args - 1), e))
			return entry_error(at, len, "has an argument that is not N=KEY (N from 1 to 6, "
					   "at most 6)", err, err_size);
		args = next;
	}
	out->nnative++;
	return 0;
}

int jobs_parse_entry_points(const char *text, struct entry_points *out, char *err,
			    size_t err_size)
{
	const char *at = text;

	memset(out, 0, sizeof(*out));
	while (*at) {
		size_t len = strcspn(at, ",");
		int ret = 0;

		if (len > strlen(PYTHON_PREFIX) && strncmp(at, PYTHON_PREFIX, strlen(PYTHON_PREFIX)) == 0)
			ret = parse_python(at, len, out, err, err_size);
		else if (len > strlen(NATIVE_PREFIX) &&
			 strncmp(at, NATIVE_PREFIX, strlen(NATIVE_PREFIX)) == 0)
			ret = parse_native(at, len, out, err, err_size);
		else if (len)
			ret = entry_error(at, len, "is not python:QUALNAME or native:/PATH:SYMBOL", err,
					  err_size);
		if (ret)
			return ret;
		at += len + (at[len] == ',');
	}
	return 0;
}

int jobs_find_natives(const struct entry_points *eps, uint64_t *offsets, char *err,
		      size_t err_size)
{
	for (size_t i = 0; i < eps->nnative; i++) {
		const struct native_entry *e = &eps->native[i];
		int ret = prog_symbol_offset(e->path, e->symbol, &offsets[i]);

		if (ret && access(e->path, R_OK))
			snprintf(err, err_size, "SONDE_ENTRY_POINTS: native:%s:%s: cannot read %s: %s",
				 e->path, e->symbol, e->path, strerror(errno));
		else if (ret)
			snprintf(err, err_size, "SONDE_ENTRY_POINTS: native:%s:%s: %s has no function %s%s",
				 e->path, e->symbol, e->path, e->symbol,
				 ret == -EINVAL ? " (not an ELF file)" : "");
		if (ret)
			return -1;
	}
	return 0;
}

/* ---- processes ----------------------------------------------------------------------- */

static struct job_proc *watched(struct jobs *js, uint32_t tgid)
{
	struct job_proc *p = js->watched;

	while (p && p->tgid != tgid)
		p = p->next;
	return p;
}

int jobs_watch(struct jobs *js, uint32_t tgid, const struct pytask_version *v)
{
	struct job_proc *p = watched(js, tgid);

	if (!p) {
		p = calloc(1, sizeof(*p));
		if (!p)
			return -ENOMEM;
		p->tgid = tgid;
		p->next = js->watched;
		js->watched = p;
	}
	p->version = v;
	return 0;
}

static void unwatch(struct jobs *js, uint32_t tgid)
{
	struct job_proc **link = &js->watched;

	while (*link && (*link)->tgid != tgid)
		link = &(*link)->next;
	if (*link) {
		struct job_proc *p = *link;

		*link = p->next;
		free(p);
	}
}

/* ---- jobs --------------------------------------------------------------------------- */

static void describe_native(const struct native_entry *e, const struct sonde_job_event *ev,
			    struct job_span *out)
{
	text_copy(out->function, sizeof(out->function), e->symbol);
	out->thread = ev->hdr.tid;
	out->nargs = e->nargs;
	for (unsigned i = 0; i < e->nargs; i++) {
		memcpy(out->attr[i], e->attr[i], sizeof(out->attr[i]));
		out->value[i] = (int64_t)ev->args[e->arg[i] % SONDE_JOB_ARGS_MAX];
	}
}

void jobs_start(struct jobs *js, const struct sonde_job_event *ev)
{
	struct link_request creator = { .tgid = ev->hdr.tgid, .tid = ev->hdr.tid,
					.task = ev->creator_task, .start_ts = ev->hdr.ts };
	struct job_proc *wp = watched(js, ev->hdr.tgid);
	struct proc_info *proc = proc_table_get(js->procs, ev->hdr.tgid, NULL);
	struct job *job;

	if (proc && proc->scope != SCOPE_TRACED) {
		js->stats.scoped_out++;
		return;
	}
	if ((ev->kind == SONDE_JOB_TASK && !wp) ||
	    (ev->kind == SONDE_JOB_NATIVE && ev->entry_point >= js->eps->nnative)) {
		js->stats.unwatched++;
		return;
	}
	job = calloc(1, sizeof(*job));
	if (!job) {
		js->stats.lost++;
		return;
	}
	job->tgid = ev->hdr.tgid;
	job->kind = ev->kind;
	job->start_ns = ev->hdr.ts;
	memcpy(job->fields.function, ev->name, sizeof(job->fields.function));
	job->fields.function[sizeof(job->fields.function) - 1] = '\0';
	if (ev->kind == SONDE_JOB_NATIVE) {
		describe_native(&js->eps->native[ev->entry_point], ev, &job->fields);
	} else if (ev->kind == SONDE_JOB_THREAD) {
		job->fields.thread = ev->thread;
	} else {
		job->version = wp->version;
		job->task_object = ev->task_object;
		job->coro = (ev->job & ~SONDE_TASK_JOB) - wp->version->layout.coro_iframe;
		job->code = ev->code;
	}
	job->node = linker_job(js->linker, &creator, job->fields.thread,
			       ev->kind == SONDE_JOB_TASK ? ev->job : 0);
	if (!job->node) {
		js->stats.lost++;
		free(job);
		return;
	}
	job->proc = proc;
	if (proc)
		proc_info_ref(proc);
	job->next = js->running;
	js->running = job;
	js->stats.started++;
}

static void end_job(struct jobs *js, struct job *job, uint64_t end_ns, const char *error_type)
{
	struct span *span = linker_span_begin(js->linker, job->node);

	if (span) {
		span->kind = SPAN_KIND_INTERNAL;
		span->proto = PROTO_JOB;
		span->answered = true;
		span->start_unix_ns = wallclock_from_mono(js->clock, job->start_ns);
		span->end_unix_ns = wallclock_from_mono(js->clock, end_ns);
		if (error_type) {
			span->status = SPAN_STATUS_ERROR;
			text_copy(span->error_type, sizeof(span->error_type), error_type);
		}
		memcpy(span->proto_data, &job->fields, sizeof(job->fields));
		span->proc = job->proc; /* the reference goes with the span */
		job->proc = NULL;
	}
	linker_span_end(js->linker, job->node, span, end_ns);
	if (job->proc)
		proc_info_unref(job->proc);
}

/* Takes the job off the running list and ends it. */
static void finish(struct jobs *js, struct job **link, uint64_t end_ns, bool finished,
		   const char *error_type)
{
	struct job *job = *link;

	*link = job->next;
	linker_job_end(js->linker, job->node, end_ns);
	end_job(js, job, end_ns, error_type);
	if (!finished)
		js->stats.unfinished++;
	else
		js->stats.ended++;
	if (error_type)
		js->stats.failed++;
	free(job);
}

void jobs_thread_end(struct jobs *js, uint32_t tgid, uint32_t tid, enum sonde_job_kind kind,
		     uint64_t ts)
{
	for (struct job **link = &js->running; *link; link = &(*link)->next)
		if ((*link)->tgid == tgid && (*link)->fields.thread == tid && (*link)->kind == kind) {
			finish(js, link, ts, true, NULL);
			return;
		}
}

void jobs_proc_exit(struct jobs *js, uint32_t tgid, uint64_t ts)
{
	struct job **link = &js->running;

	while (*link) {
		if ((*link)->tgid == tgid)
			finish(js, link, ts, false, NULL);
		else
			link = &(*link)->next;
	}
	unwatch(js, tgid);
}

/* ---- reading a task's state ---------------------------------------------------------- */

static int read_memory(uint32_t pid, uint64_t addr, void *out, size_t len)
{
	struct iovec local = { out, len };
	struct iovec remote = { (void *)(uintptr_t)addr, len };

	return process_vm_readv((pid_t)pid, &local, 1, &remote, 1, 0) == (ssize_t)len ? 0 : -1;
}

static uint64_t word_at(const unsigned char *buf, uint16_t offset)
{
	uint64_t word;

	memcpy(&word, buf + offset, sizeof(word));
	return word;
}

/* The name of the exception's type into out. */
static void exception_type(uint32_t pid, uint64_t exception, char *out, size_t size)
{
	uint64_t type = 0, name = 0;
	char text[48] = "";

	if (read_memory(pid, exception + OB_TYPE_AT, &type, sizeof(type)) ||
	    read_memory(pid, type + TYPE_NAME_AT, &name, sizeof(name)) ||
	    read_memory(pid, name, text, sizeof(text) - 1))
		text_copy(text, sizeof(text), "_OTHER");
	text_copy(out, size, text);
}

enum task_state { TASK_RUNNING, TASK_DONE, TASK_GONE };

/* Whether the job's task still runs: it is the same Task while it holds
 * the same coroutine of the same code (a freed Task's memory may hold
 * another). error: the type of what a done task raised, "" when none. */
static enum task_state task_state(const struct job *job, char *error, size_t size)
{
	const struct pytask_version *v = job->version;
	unsigned char task[TASK_READ_MAX];
	uint16_t end = v->layout.task_coro;
	uint64_t code = 0;
	int32_t state;

	/* No more than the fields: a Task may end its memory's mapping. */
	if (v->future_state > end)
		end = v->future_state;
	if (v->future_exception > end)
		end = v->future_exception;
	error[0] = '\0';
	if (end + 8u > sizeof(task) || read_memory(job->tgid, job->task_object, task, end + 8u) ||
	    word_at(task, v->layout.task_coro) != job->coro ||
	    read_memory(job->tgid, job->coro + v->layout.coro_code, &code, sizeof(code)) ||
	    code != job->code)
		return TASK_GONE;
	memcpy(&state, task + v->future_state, sizeof(state));
	if (state == FUTURE_PENDING)
		return TASK_RUNNING;
	if (state == FUTURE_CANCELLED)
		text_copy(error, size, "CancelledError");
	else if (word_at(task, v->future_exception))
		exception_type(job->tgid, word_at(task, v->future_exception), error, size);
	return TASK_DONE;
}

void jobs_poll(struct jobs *js, uint64_t now_ns)
{
	struct job **link = &js->running;

	if (now_ns - js->last_poll_ns < POLL_EVERY_NS)
		return;
	js->last_poll_ns = now_ns;
	while (*link) {
		struct job *job = *link;
		char error[48] = "";
		enum task_state state = job->fields.thread ? TASK_RUNNING
							   : task_state(job, error, sizeof(error));

		if (state == TASK_RUNNING) {
			link = &job->next;
			continue;
		}
		if (state == TASK_GONE)
			js->stats.vanished++;
		finish(js, link, now_ns, true, error[0] ? error : NULL);
	}
}

/* ---- life ------------------------------------------------------------------------------ */

struct jobs *jobs_new(struct linker *linker, struct proc_table *procs,
		      const struct wallclock *clock, const struct entry_points *eps)
{
	struct jobs *js = calloc(1, sizeof(*js));

	if (!js)
		return NULL;
	js->eps = eps;
	js->linker = linker;
	js->procs = procs;
	js->clock = clock;
	return js;
}

void jobs_end_all(struct jobs *js, uint64_t now_ns)
{
	while (js->running)
		finish(js, &js->running, now_ns, false, NULL);
}

void jobs_free(struct jobs *js)
{
	if (!js)
		return;
	jobs_end_all(js, monotonic_now_ns());
	while (js->watched)
		unwatch(js, js->watched->tgid);
	free(js);
}

void jobs_get_stats(const struct jobs *js, struct jobs_stats *out)
{
	*out = js->stats;
}
