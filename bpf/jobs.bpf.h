/* SPDX-License-Identifier: GPL-2.0 */
/* Jobs: the asyncio tasks and threads a CPython process starts to run a
 * function named as an entry point (job_names), told to the agent as they
 * start, with the thread and task that started them, and for a thread as
 * it exits (struct sonde_job_event); and the calls of native functions
 * named as entry points, as they are made and as they return. An asyncio
 * task is made with no syscall, so its start is seen by a uprobe on
 * _asyncio.Task's __init__, which the agent attaches only to the processes
 * it is configured for (0.9 us a task on this project's VM, 2.2 us a task
 * that is a job); a thread's start is the clone that makes it, seen for
 * nothing. */
/* Included by sonde.bpf.c, after pytask.bpf.h: the kernel side is one
 * compilation unit, split by concern. */
#ifndef SONDE_JOBS_BPF_H
#define SONDE_JOBS_BPF_H

/* The entry points' function names: the agent's, set at start. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct sonde_job_name);
	__type(value, __u8);
} job_names SEC(".maps");

/* Threads running a job (tid -> tgid), until they exit. LRU because a
 * thread whose exit was missed must not hold an entry for ever. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u32);
} job_threads SEC(".maps");

/* The event being built: too large for the stack beside the task walks. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sonde_job_event);
} job_scratch SEC(".maps");

/* PyUnicode: length, and the state bits of a compact ASCII string (the
 * same in every CPython 3; its text is at PY_ASCII_DATA). */
#define PY_STR_LENGTH 16
#define PY_STR_STATE 32
#define PY_STR_COMPACT_ASCII 0x60

/* A str's text into out (SONDE_JOB_NAME_MAX bytes, zeroed): false when it
 * is not a compact ASCII string that fits. */
static __always_inline bool py_str_read(__u64 str, char *out)
{
	__s64 len = 0;
	__u32 state = 0;

	if (!str || bpf_probe_read_user(&len, sizeof(len), (const void *)(str + PY_STR_LENGTH)) ||
	    bpf_probe_read_user(&state, sizeof(state), (const void *)(str + PY_STR_STATE)))
		return false;
	if ((state & PY_STR_COMPACT_ASCII) != PY_STR_COMPACT_ASCII || len <= 0 ||
	    len >= SONDE_JOB_NAME_MAX)
		return false;
	return bpf_probe_read_user_str(out, SONDE_JOB_NAME_MAX,
				       (const void *)(str + PY_ASCII_DATA)) == len + 1;
}

static __always_inline struct sonde_job_event *job_event(enum sonde_job_kind kind)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 zero = 0;
	struct sonde_job_event *ev = bpf_map_lookup_elem(&job_scratch, &zero);

	if (!ev)
		return NULL;
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->hdr.type = SONDE_EV_JOB_START;
	ev->hdr.tgid = id >> 32;
	ev->hdr.tid = (__u32)id;
	ev->hdr.fd = -1;
	ev->hdr.ts = bpf_ktime_get_ns();
	ev->kind = kind;
	return ev;
}

/* Sent with the task the starting thread runs (of a CPython process):
 * read now, from the frames that start the job. */
static __always_inline void job_send(void *ctx, struct sonde_py_layout *py,
				     struct sonde_job_event *ev)
{
	if (py)
		ev->creator_task = python_event_task(py);
	submit(ctx, ev, sizeof(*ev));
}

/* Sent when ev->name is an entry point's. */
static __always_inline bool job_start(void *ctx, struct sonde_py_layout *py,
				      struct sonde_job_event *ev)
{
	if (!bpf_map_lookup_elem(&job_names, ev->name))
		return false;
	job_send(ctx, py, ev);
	return true;
}

/* Task.__init__(self, coro, ...): tp_init's arguments are the object, the
 * positional arguments' tuple and the keywords. */
SEC("uprobe")
int job_task_init(struct pt_regs *ctx)
{
	__u64 task = ctx->di, args = ctx->si;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct sonde_py_layout *py = bpf_map_lookup_elem(&py_procs, &tgid);
	struct job_task_key key = { .tgid = tgid };
	struct sonde_job_event *ev;
	__u64 coro;

	if (!py || !args || read_user_ptr(args + PY_TUPLE_SIZE) < 1)
		return 0;
	coro = read_user_ptr(args + PY_TUPLE_ITEMS);
	ev = coro ? job_event(SONDE_JOB_TASK) : NULL;
	if (!ev || !py_str_read(read_user_ptr(coro + py->coro_qualname), ev->name))
		return 0;
	key.task = coro + py->coro_iframe;
	ev->job = key.task | SONDE_TASK_JOB;
	ev->task_object = task;
	ev->code = read_user_ptr(coro + py->coro_code);
	if (job_start(ctx, py, ev))
		bpf_map_update_elem(&job_tasks, &key, &ev->code, BPF_ANY);
	return 0;
}

/* The function a thread being started will run: the frame making the
 * clone is Thread.start's (the C start_new_thread it calls has no frame),
 * whose self's _target it is. 0 when that is not what runs. */
static __always_inline __u64 thread_target(struct sonde_py_layout *py, __u32 tid)
{
	__u64 frame = py_thread_frame(py, tid);
	__u64 code, previous, self, values, target;
	__u8 owner;

	if (!frame || read_frame(py, frame, &code, &previous, &owner) ||
	    !py_seen_is(py, code, PY_SEEN_THREAD_START))
		return 0;
	self = read_user_ptr(frame + py->frame_locals);
	values = self ? read_user_ptr(self - py->values_before) : 0;
	target = values ? read_user_ptr(values + py->thread_target) : 0;
	return py_seen_is(py, py_type(target), PY_SEEN_FUNCTION) ? target : 0;
}

/* A new thread of a CPython process, before it first runs. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(job_thread_fork, struct task_struct *parent, struct task_struct *child)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, thread = child->pid;
	struct sonde_py_layout *py;
	struct sonde_job_event *ev;
	__u64 target;

	if (child->tgid != tgid)
		return 0; /* a process, not a thread */
	py = bpf_map_lookup_elem(&py_procs, &tgid);
	target = py ? thread_target(py, (__u32)id) : 0;
	ev = target ? job_event(SONDE_JOB_THREAD) : NULL;
	if (!ev || !py_str_read(read_user_ptr(target + py->func_qualname), ev->name))
		return 0;
	ev->thread = thread;
	if (job_start(ctx, py, ev))
		bpf_map_update_elem(&job_threads, &thread, &tgid, BPF_ANY);
	return 0;
}

/* A call of a native entry point (a uprobe_multi link on every process,
 * the entry point's index as its cookie): a job on the calling thread
 * until the call returns. */
SEC("uprobe")
int job_native_entry(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct sonde_job_event *ev;

	if (tgid == self_tgid)
		return 0;
	ev = job_event(SONDE_JOB_NATIVE);
	if (!ev)
		return 0;
	ev->entry_point = (__u32)bpf_get_attach_cookie(ctx);
	ev->args[0] = ctx->di;
	ev->args[1] = ctx->si;
	ev->args[2] = ctx->dx;
	ev->args[3] = ctx->cx;
	ev->args[4] = ctx->r8;
	ev->args[5] = ctx->r9;
	job_send(ctx, bpf_map_lookup_elem(&py_procs, &tgid), ev);
	return 0;
}

static __always_inline void job_end(void *ctx, __u32 tgid, __u32 tid, enum sonde_job_kind kind)
{
	struct sonde_exit_event ev = {};

	ev.hdr.type = SONDE_EV_JOB_END;
	ev.exit_status = kind;
	ev.hdr.tgid = tgid;
	ev.hdr.tid = tid;
	ev.hdr.fd = -1;
	ev.hdr.ts = bpf_ktime_get_ns();
	submit(ctx, &ev, sizeof(ev));
}

/* Its return (the same link, BPF_F_UPROBE_MULTI_RETURN). */
SEC("uprobe")
int job_native_return(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();

	if (id >> 32 != self_tgid)
		job_end(ctx, id >> 32, (__u32)id, SONDE_JOB_NATIVE);
	return 0;
}

/* A job's thread exits: its job ends. */
static __always_inline void job_thread_exit(void *ctx, __u32 tid)
{
	__u32 *tgid = bpf_map_lookup_elem(&job_threads, &tid);
	__u32 owner;

	if (!tgid)
		return;
	owner = *tgid;
	bpf_map_delete_elem(&job_threads, &tid);
	job_end(ctx, owner, tid, SONDE_JOB_THREAD);
}

#endif
