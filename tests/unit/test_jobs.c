/* Job spans (jobs.c, linker_job): a job is the child of the request whose
 * thread and task started it, and the parent of what its own thread or
 * task makes, for as long as it is known to run; entry point settings. A
 * task job's _asyncio.Task is read from this process's own memory, laid
 * out as CPython 3.11 lays it out. */
#include "harness.h"
#include "jobs.h"
#include "progfile.h"
#include "pytask.h"

#include <criterion/criterion.h>
#include <dlfcn.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#define IN SONDE_DIR_INGRESS
#define OUT SONDE_DIR_EGRESS
#define SEC 1000000000ull

static struct harness h;
static struct jobs *js;
static struct entry_points eps;

static void setup(void)
{
	char err[256];

	h_init(&h, false);
	cr_assert_eq(jobs_parse_entry_points("python:_training_job,native:/usr/lib/libml.so:fit:3=rows",
					     &eps, err, sizeof(err)), 0, "%s", err);
	js = jobs_new(tracker_linker(h.tracker), h.procs, &h.clock, &eps);
}

static void teardown(void)
{
	jobs_free(js);
	h_free(&h);
}

TestSuite(jobs, .init = setup, .fini = teardown);

static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

static const char *request(const char *path)
{
	static char buf[128];

	snprintf(buf, sizeof(buf), "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
		 path);
	return buf;
}

static const char *id_of(const cJSON *span, const char *which)
{
	return cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(span, "context"),
						which)->valuestring;
}

/* An attribute, "" when absent. */
static const char *attr(const cJSON *span, const char *name)
{
	const char *value = span_str(span, name);

	return value ? value : "";
}

static const cJSON *named(const char *name)
{
	for (int i = 0; i < h.nspans; i++)
		if (strcmp(span_field(h.spans[i], "name"), name) == 0)
			return h.spans[i];
	cr_assert_fail("no span named %s", name);
	return NULL;
}

static void expect_child(const cJSON *child, const cJSON *parent)
{
	cr_expect_str_eq(span_field(child, "parent_id"), id_of(parent, "span_id"));
	cr_expect_str_eq(id_of(child, "trace_id"), id_of(parent, "trace_id"));
}

static struct sonde_job_event job_event(uint32_t tgid, uint32_t creator, uint64_t creator_task,
					const char *name)
{
	struct sonde_job_event ev = { .hdr = { .type = SONDE_EV_JOB_START, .tgid = tgid,
					       .tid = creator, .fd = -1 } };

	h.now += 1000;
	ev.hdr.ts = h.now;
	ev.creator_task = creator_task;
	snprintf(ev.name, sizeof(ev.name), "%s", name);
	return ev;
}

/* Process 20's thread 21 serves /start and starts thread 30 running a
 * job, then answers; out is the connection the job's thread calls on. */
static struct tconn start_thread_job(void)
{
	struct tconn in = h_open_ports(&h, 20, 7, SONDE_ROLE_SERVER, 8080, 40001);
	struct tconn out = h_open_ports(&h, 20, 9, SONDE_ROLE_CLIENT, 40003, 9090);
	struct sonde_job_event ev;

	in.tid = 21;
	h_send(&h, &in, IN, request("/start"));
	ev = job_event(20, 21, 0, "_backtest_job");
	ev.kind = SONDE_JOB_THREAD;
	ev.thread = 30;
	jobs_start(js, &ev);
	h_send(&h, &in, OUT, ok);
	out.tid = 30;
	return out;
}

/* A thread started while /start is served: its call is its child. */
Test(jobs, a_thread_job_is_its_requests_child_and_its_calls_parent)
{
	struct tconn out = start_thread_job();

	h_send(&h, &out, OUT, request("/status"));
	h_send(&h, &out, IN, ok);
	h.now += 1000;
	jobs_thread_end(js, 20, 30, SONDE_JOB_THREAD, h.now);
	h_finish(&h);
	cr_assert_eq(h.nspans, 3);
	expect_child(named("_backtest_job"), named("POST /start"));
	expect_child(named("POST"), named("_backtest_job"));
	cr_expect_str_eq(span_field(named("_backtest_job"), "kind"), "SpanKind.INTERNAL");
	cr_expect_eq(span_int(named("_backtest_job"), "thread.id"), 30);
	cr_expect_eq(h.stats.link.parent_job, 1);
}

/* A CPython 3.11 Task, its coroutine and an exception, as the agent reads
 * them (offsets from pytask_versions). */
struct fake_task {
	_Alignas(8) unsigned char task[256];
	_Alignas(8) unsigned char coro[128];
	_Alignas(8) unsigned char exception[16];
	_Alignas(8) unsigned char type[32];
	char type_name[16];
	unsigned char code[8];
};

static const struct pytask_version *v311(void)
{
	return &pytask_versions[0];
}

static void put_word(unsigned char *at, uint64_t value)
{
	memcpy(at, &value, sizeof(value));
}

static void fake_task_init(struct fake_task *t)
{
	memset(t, 0, sizeof(*t));
	put_word(t->task + v311()->layout.task_coro, (uint64_t)(uintptr_t)t->coro);
	put_word(t->coro + v311()->layout.coro_code, (uint64_t)(uintptr_t)t->code);
	put_word(t->exception + 8, (uint64_t)(uintptr_t)t->type);
	put_word(t->type + 24, (uint64_t)(uintptr_t)t->type_name);
	strcpy(t->type_name, "ValueError");
}

static void fake_task_done(struct fake_task *t, bool raised)
{
	int32_t finished = 2;

	memcpy(t->task + v311()->future_state, &finished, sizeof(finished));
	if (raised)
		put_word(t->task + v311()->future_exception, (uint64_t)(uintptr_t)t->exception);
}

/* The job's name in events: its coroutine's frame, marked. */
static uint64_t task_id(struct fake_task *t)
{
	return ((uint64_t)(uintptr_t)t->coro + v311()->layout.coro_iframe) | SONDE_TASK_JOB;
}

static struct sonde_job_event task_job(struct fake_task *t, uint32_t tgid, uint32_t creator,
				       uint64_t creator_task)
{
	struct sonde_job_event ev = job_event(tgid, creator, creator_task, "_training_job");

	ev.kind = SONDE_JOB_TASK;
	ev.job = task_id(t);
	ev.task_object = (uint64_t)(uintptr_t)t->task;
	ev.code = (uint64_t)(uintptr_t)t->code;
	return ev;
}

/* The next look at the tasks (every 50 ms). */
static void tick(void)
{
	h.now += 50 * 1000000ull;
	jobs_poll(js, h.now);
	tracker_tick(h.tracker, h.now);
}

/* On an event loop, the task tells the job's call from the request's; the
 * job ends at the look that finds its task done, ERROR with what it
 * raised. */
Test(jobs, a_task_job_ends_when_its_task_is_found_done_with_its_exception)
{
	uint32_t self = (uint32_t)getpid();
	struct tconn in = h_open_ports(&h, self, 7, SONDE_ROLE_SERVER, 8080, 40001);
	struct tconn out = h_open_ports(&h, self, 9, SONDE_ROLE_CLIENT, 40003, 9090);
	struct sonde_job_event ev;
	struct fake_task t;

	fake_task_init(&t);
	cr_assert_eq(jobs_watch(js, self, v311()), 0);
	in.tid = out.tid = self;
	in.task = 0x7000a0;
	h_send(&h, &in, IN, request("/start"));
	ev = task_job(&t, self, self, 0x7000a0);
	jobs_start(js, &ev);
	h_send(&h, &in, OUT, ok);
	tick();
	out.task = task_id(&t);
	h_send(&h, &out, OUT, request("/status"));
	h_send(&h, &out, IN, ok);
	tick();
	fake_task_done(&t, true);
	tick();
	h_finish(&h);
	cr_assert_eq(h.nspans, 3);
	expect_child(named("_training_job"), named("POST /start"));
	expect_child(named("POST"), named("_training_job"));
	cr_expect_str_eq(attr(named("_training_job"), "error.type"), "ValueError");
	cr_expect_str_eq(attr(named("_training_job"), "code.function.name"), "_training_job");
}

/* Only what the kernel marked as run by the job's task is the job's: the
 * same address unmarked is another coroutine's; marked after the job was
 * found done, it is a newer job's, started at the same address. */
Test(jobs, only_what_the_kernel_marked_is_the_jobs)
{
	uint32_t self = (uint32_t)getpid();
	struct tconn out = h_open_ports(&h, self, 9, SONDE_ROLE_CLIENT, 40003, 9090);
	struct sonde_job_event first, second;
	struct fake_task t;

	fake_task_init(&t);
	cr_assert_eq(jobs_watch(js, self, v311()), 0);
	out.tid = self;
	first = task_job(&t, self, self, 0);
	jobs_start(js, &first);
	out.task = task_id(&t);
	h_send(&h, &out, OUT, request("/first"));
	h_send(&h, &out, IN, ok);
	out.task = task_id(&t) & ~SONDE_TASK_JOB;
	h_send(&h, &out, OUT, request("/other"));
	h_send(&h, &out, IN, ok);
	fake_task_done(&t, false);
	tick();
	fake_task_init(&t);
	second = task_job(&t, self, self, 0);
	snprintf(second.name, sizeof(second.name), "_second_job");
	jobs_start(js, &second);
	out.task = task_id(&t);
	h_send(&h, &out, OUT, request("/second"));
	h_send(&h, &out, IN, ok);
	fake_task_done(&t, false);
	tick();
	h_finish(&h);
	cr_assert_eq(h.nspans, 5);
	for (int i = 0; i < h.nspans; i++) {
		const char *path = attr(h.spans[i], "url.path");

		if (strcmp(path, "/first") == 0)
			expect_child(h.spans[i], named("_training_job"));
		else if (strcmp(path, "/second") == 0)
			expect_child(h.spans[i], named("_second_job"));
		else if (strcmp(path, "/other") == 0)
			cr_expect_str_eq(span_field(h.spans[i], "parent_id"), "null");
	}
	cr_expect_str_eq(span_status(named("_training_job")), "UNSET");
}

/* A job outlives every hold: its calls leave as they are decided, under
 * the job's ids, long before the job ends. */
Test(jobs, a_job_longer_than_the_hold_limits_keeps_its_calls)
{
	struct tconn out = start_thread_job();
	char path[16];

	for (int i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "/report%d", i);
		h.now += 40 * SEC; /* past wait_ms each time */
		h_send(&h, &out, OUT, request(path));
		h_send(&h, &out, IN, ok);
		tracker_tick(h.tracker, h.now);
	}
	h.now += 40 * SEC;
	jobs_thread_end(js, 20, 30, SONDE_JOB_THREAD, h.now);
	h_finish(&h);
	cr_assert_eq(h.nspans, 5);
	for (int i = 0; i < h.nspans; i++)
		if (strncmp(attr(h.spans[i], "url.path"), "/report", 7) == 0)
			expect_child(h.spans[i], named("_backtest_job"));
	expect_child(named("_backtest_job"), named("POST /start"));
	cr_expect_eq(h.stats.link.parent_job, 3);
	cr_expect_eq(h.stats.link.root_wait_expired, 0);
}

/* A native call on a thread serving a request: the request's child, the
 * parent of the calls the thread makes until it returns, its chosen
 * argument an attribute; after it returns, the thread's calls are the
 * request's again. */
Test(jobs, a_native_call_holds_its_threads_calls_until_it_returns)
{
	struct tconn in = h_open_ports(&h, 20, 7, SONDE_ROLE_SERVER, 8080, 40001);
	struct tconn out = h_open_ports(&h, 20, 9, SONDE_ROLE_CLIENT, 40003, 9090);
	struct sonde_job_event ev;

	in.tid = out.tid = 21;
	h_send(&h, &in, IN, request("/predict"));
	ev = job_event(20, 21, 0, "");
	ev.kind = SONDE_JOB_NATIVE;
	ev.args[2] = 1200;
	jobs_start(js, &ev);
	h_send(&h, &out, OUT, request("/inside"));
	h_send(&h, &out, IN, ok);
	h.now += 1000;
	jobs_thread_end(js, 20, 21, SONDE_JOB_NATIVE, h.now);
	h_send(&h, &out, OUT, request("/after"));
	h_send(&h, &out, IN, ok);
	h_send(&h, &in, OUT, ok);
	h_finish(&h);
	cr_assert_eq(h.nspans, 4);
	expect_child(named("fit"), named("POST /predict"));
	cr_expect_eq(span_int(named("fit"), "rows"), 1200);
	cr_expect_eq(span_int(named("fit"), "thread.id"), 21);
	for (int i = 0; i < h.nspans; i++) {
		const char *path = attr(h.spans[i], "url.path");

		if (strcmp(path, "/inside") == 0)
			expect_child(h.spans[i], named("fit"));
		else if (strcmp(path, "/after") == 0)
			expect_child(h.spans[i], named("POST /predict"));
	}
}

Test(jobs, entry_points_are_python_names_or_native_functions)
{
	struct entry_points e;
	char err[256];

	cr_assert_eq(jobs_parse_entry_points("python:_training_job,python:Worker.run,"
					     "native:/lib/libz.so.1:crc32:3=payload.size", &e, err,
					     sizeof(err)), 0, "%s", err);
	cr_expect_eq(e.npython, 2);
	cr_expect_str_eq(e.python[1].name, "Worker.run");
	cr_expect_eq(e.python[1].name[sizeof(e.python[1].name) - 1], '\0');
	cr_expect_eq(e.nnative, 1);
	cr_expect_str_eq(e.native[0].path, "/lib/libz.so.1");
	cr_expect_str_eq(e.native[0].symbol, "crc32");
	cr_expect_eq(e.native[0].nargs, 1);
	cr_expect_eq(e.native[0].arg[0], 2);
	cr_expect_str_eq(e.native[0].attr[0], "payload.size");
	cr_expect_eq(jobs_parse_entry_points("train", &e, err, sizeof(err)), -1);
	cr_expect(strstr(err, "\"train\" is not python:QUALNAME or native:/PATH:SYMBOL"), "%s", err);
	cr_expect_eq(jobs_parse_entry_points("python:a b", &e, err, sizeof(err)), -1);
	cr_expect_eq(jobs_parse_entry_points("native:lib.so:f", &e, err, sizeof(err)), -1,
		     "a relative path");
	cr_expect_eq(jobs_parse_entry_points("native:/lib.so", &e, err, sizeof(err)), -1);
	cr_expect_eq(jobs_parse_entry_points("native:/lib.so:f:7=x", &e, err, sizeof(err)), -1);
	cr_expect(strstr(err, "N from 1 to 6"), "%s", err);
	cr_expect_eq(jobs_parse_entry_points("native:/lib.so:f:1=", &e, err, sizeof(err)), -1);
}

/* Where this process runs libc's getpid, from its own maps, against what
 * sonde finds in the file. */
Test(jobs, a_native_functions_offset_is_where_it_runs)
{
	uint64_t code = (uint64_t)(uintptr_t)dlsym(RTLD_DEFAULT, "getpid"), offset = 0;
	char line[512], path[256] = "";
	unsigned long long lo, hi, at, want = 0;
	FILE *maps = fopen("/proc/self/maps", "r");

	cr_assert_not_null(maps);
	while (fgets(line, sizeof(line), maps))
		if (sscanf(line, "%llx-%llx %*s %llx %*s %*s %255s", &lo, &hi, &at, path) == 4 &&
		    lo <= code && code < hi) {
			want = code - lo + at;
			break;
		}
	fclose(maps);
	cr_assert(want, "getpid is in no mapping");
	cr_assert_eq(prog_symbol_offset(path, "getpid", &offset), 0);
	cr_expect_eq(offset, want);
	cr_expect_eq(prog_symbol_offset(path, "no_such_function_here", &offset), -ENOENT);
}
