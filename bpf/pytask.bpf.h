/* SPDX-License-Identifier: GPL-2.0 */
/* The asyncio task a CPython thread runs, read from its interpreter's
 * frames at a syscall: see struct sonde_py_layout. */
/* Included by sonde.bpf.c, after the configuration it reads: the kernel
 * side is one compilation unit, split by concern. */
#ifndef SONDE_PYTASK_BPF_H
#define SONDE_PYTASK_BPF_H

/* CO_COROUTINE | CO_ITERABLE_COROUTINE | CO_ASYNC_GENERATOR */
#define PY_CO_ASYNC_FLAGS 0x380

static __always_inline __u64 read_user_ptr(__u64 addr)
{
	__u64 value = 0;

	if (bpf_probe_read_user(&value, sizeof(value), (const void *)addr))
		return 0;
	return value;
}

struct py_thread_search {
	const struct sonde_py_layout *py;
	__u64 tstate;
	__u64 frame; /* found */
	__u32 tid;
};

/* One thread state of the interpreter's list: a bpf_loop callback,
 * verified once rather than once per state. */
static long py_thread_state_frame(__u32 i, void *arg)
{
	struct py_thread_search *search = arg;
	const struct sonde_py_layout *py = search->py;
	__u64 tstate = search->tstate;

	if (!tstate)
		return 1;
	if (read_user_ptr(tstate + py->tstate_native_id) == search->tid) {
		__u64 cframe = read_user_ptr(tstate + py->tstate_cframe);

		search->frame = cframe ? read_user_ptr(cframe + py->cframe_frame) : 0;
		if (search->frame)
			return 1;
	}
	search->tstate = read_user_ptr(tstate + py->tstate_next);
	return 0;
}

/* The frame thread tid runs, found through its PyThreadState; 0 when it
 * has none, or runs no Python code. While a thread starts another, the
 * new thread's state is listed already, bearing its creator's id and no
 * frame: the state with a frame is the creator's. A global function; it
 * must allow for a NULL py. */
__noinline __u64 py_thread_frame(const struct sonde_py_layout *py, __u32 tid)
{
	struct py_thread_search search = { .py = py, .tid = tid };
	__u64 interp;

	if (!py)
		return 0;
	interp = read_user_ptr(py->runtime + py->interp_main);
	search.tstate = interp ? read_user_ptr(interp + py->threads_head) : 0;
	bpf_loop(SONDE_PY_THREADS_MAX, py_thread_state_frame, &search, 0);
	return search.frame;
}

/* A frame's code object, the frame below it and its owner, in one read:
 * all three sit in the first SONDE_PY_FRAME_HEAD bytes of
 * _PyInterpreterFrame, and a user memory read costs about as much for 72
 * bytes as for 8. */
static __always_inline int read_frame(const struct sonde_py_layout *py, __u64 frame, __u64 *code,
				      __u64 *previous, __u8 *owner)
{
	__u64 head[SONDE_PY_FRAME_HEAD / 8];
	__u32 at_code = py->frame_code / 8, at_previous = py->frame_previous / 8;
	__u32 at_owner = py->frame_owner;

	if (at_code >= SONDE_PY_FRAME_HEAD / 8 || at_previous >= SONDE_PY_FRAME_HEAD / 8 ||
	    at_owner >= SONDE_PY_FRAME_HEAD ||
	    bpf_probe_read_user(head, sizeof(head), (const void *)frame))
		return -1;
	*code = head[at_code];
	*previous = head[at_previous];
	*owner = ((const __u8 *)head)[at_owner];
	return 0;
}

/* A frame and its code object. */
struct py_frame_code {
	__u64 frame;
	__u64 code;
};

/* Whether a code object is a coroutine's (or an async generator's). */
static __always_inline bool py_code_is_async(const struct sonde_py_layout *py, __u64 code)
{
	__u32 flags = 0;

	if (bpf_probe_read_user(&flags, sizeof(flags), (const void *)(code + py->code_flags)))
		return false;
	return flags & PY_CO_ASYNC_FLAGS;
}

/* The task a CPython thread runs, read from the frames of the call in
 * progress: the GIL is released during the syscall, but the thread's
 * frame chain stays as it was. A task's coroutine frames, each owned by
 * its coroutine object, sit on top of the event loop's own frames, so
 * the outermost of the first run of generator-owned frames is the task's
 * root coroutine, embedded in the coroutine object: its address names
 * the task for as long as the task lives. Only that frame's code is read,
 * to pass over a run rooted in a plain generator. frame: the thread's
 * (py_thread_frame); *below: the loop's frame under the root. When no
 * task runs, run holds the third frame from the bottom and its code: a
 * threading.Thread's run method, under its _bootstrap_inner and
 * _bootstrap. */
static __always_inline __u64 py_task(const struct sonde_py_layout *py, __u64 frame, __u64 *below,
				     struct py_frame_code *run)
{
	struct py_frame_code last = {}, second = {}, third = {};
	__u64 root = 0, root_code = 0;

	*below = 0;
	run->frame = run->code = 0;
	if (!frame)
		return SONDE_TASK_UNKNOWN;
	for (__u32 i = 0; i < SONDE_PY_FRAMES_MAX; i++) {
		__u64 code = 0, previous = 0;
		__u8 owner = 0;

		if (frame && read_frame(py, frame, &code, &previous, &owner))
			return SONDE_TASK_UNKNOWN;
		if (frame && owner == SONDE_PY_OWNED_BY_GENERATOR) {
			root = frame;
			root_code = code;
			frame = previous;
			continue;
		}
		/* The run of generator frames (if any) ended here. */
		if (root && py_code_is_async(py, root_code)) {
			*below = frame;
			return root;
		}
		if (!frame) {
			*run = third;
			return 0;
		}
		root = 0;
		third = second;
		second = last;
		last.frame = frame;
		last.code = code;
		frame = previous;
	}
	return SONDE_TASK_UNKNOWN;
}

/* ---- the tasks awaiting a task --------------------------------------------
 * A task that another awaits (directly, or as one of a gather's) works
 * for it, and so for whatever request that one serves: the task named in
 * events is the outermost of that chain. Each step is recognised by the
 * names of the types met, and a task found from the event loop's handle
 * must own the running frame, so memory that is not what it is taken for
 * stops the chain (the running task names itself) rather than naming
 * another task. Layout-independent offsets (the same in every CPython 3):
 * PyObject.ob_type, PyTypeObject.tp_name, PyCFunctionObject.m_ml and
 * m_self, PyMethodDef.ml_name, PyTupleObject's size and items,
 * PyCellObject.ob_ref, PyMethodObject.im_self, functools.partial's args. */
#define PY_OB_TYPE 8
#define PY_TP_NAME 24
#define PY_CFUNC_ML 16
#define PY_CFUNC_SELF 24
#define PY_TUPLE_SIZE 16
#define PY_TUPLE_ITEMS 24
#define PY_CELL_REF 16
#define PY_METHOD_SELF 24
#define PY_PARTIAL_ARGS 24
#define PY_NAME_MAX 32
/* A compact ASCII str's text follows its 48-byte header. */
#define PY_ASCII_DATA 48

/* sonde_py_layout.seen: what each entry holds once recognised. */
enum py_seen {
	PY_SEEN_STEP_WRAPPER, /* type TaskStepMethWrapper: a task's first step */
	PY_SEEN_BUILTIN,      /* type builtin_function_or_method */
	PY_SEEN_FUNCTION,     /* type function: a gather's or asyncio.wait's done callback */
	PY_SEEN_GATHERING,    /* type _GatheringFuture */
	PY_SEEN_FUTURE,       /* type _asyncio.Future: asyncio.wait's waiter */
	PY_SEEN_PARTIAL,      /* type functools.partial: wait_for's callback */
	PY_SEEN_WAKEUP,       /* the PyMethodDef of Task's task_wakeup */
	PY_SEEN_METHOD,       /* type method: a TaskGroup's done callback */
	PY_SEEN_TASKGROUP,    /* type TaskGroup */
	PY_SEEN_TASK,         /* type _asyncio.Task */
	PY_SEEN_THREAD_START, /* the code object of threading's Thread.start */
	PY_SEEN_WORKER_RUN,   /* the code object of anyio's WorkerThread.run */
};

/* A name that is read, not seen: the local of WorkerThread.run that
 * holds the future its caller awaits. */
#define PY_NAME_FUTURE SONDE_PY_SEEN
#define PY_NAMES (SONDE_PY_SEEN + 1)

static const char py_names[PY_NAMES][PY_NAME_MAX] = {
	[PY_SEEN_STEP_WRAPPER] = "TaskStepMethWrapper",
	[PY_SEEN_BUILTIN] = "builtin_function_or_method",
	[PY_SEEN_FUNCTION] = "function",
	[PY_SEEN_GATHERING] = "_GatheringFuture",
	[PY_SEEN_FUTURE] = "_asyncio.Future",
	[PY_SEEN_PARTIAL] = "functools.partial",
	[PY_SEEN_WAKEUP] = "task_wakeup",
	[PY_SEEN_METHOD] = "method",
	[PY_SEEN_TASKGROUP] = "TaskGroup",
	[PY_SEEN_TASK] = "_asyncio.Task",
	[PY_SEEN_THREAD_START] = "Thread.start",
	[PY_SEEN_WORKER_RUN] = "WorkerThread.run",
	[PY_NAME_FUTURE] = "future",
};

/* Whether the NUL-terminated string at addr is py_names[which]: read 8
 * bytes at a time, so that the walk's stack stays small. A global
 * function, verified once. */
__noinline int py_name_is(__u64 addr, __u32 which)
{
	const char *want;
	char got[8];

	if (!addr || which >= PY_NAMES)
		return 0;
	want = py_names[which];
	for (int i = 0; i < PY_NAME_MAX; i += 8) {
		if (bpf_probe_read_user(got, sizeof(got), (const void *)(addr + i)))
			return 0;
		for (int j = 0; j < 8; j++) {
			if (got[j] != want[i + j])
				return 0;
			if (!got[j])
				return 1;
		}
	}
	return 0;
}

/* Where the name of addr (a type object; a method definition for
 * PY_SEEN_WAKEUP; a code object, whose __qualname__ is a str, for
 * PY_SEEN_THREAD_START and PY_SEEN_WORKER_RUN) is. */
static __always_inline __u64 py_name_of(const struct sonde_py_layout *py, __u64 addr,
					enum py_seen which)
{
	__u64 str;

	if (which == PY_SEEN_WAKEUP)
		return read_user_ptr(addr);
	if (which != PY_SEEN_THREAD_START && which != PY_SEEN_WORKER_RUN)
		return read_user_ptr(addr + PY_TP_NAME);
	str = read_user_ptr(addr + py->code_qualname);
	return str ? str + PY_ASCII_DATA : 0;
}

/* Whether addr is the object named: by address once it has been seen. */
static __always_inline bool py_seen_is(struct sonde_py_layout *py, __u64 addr,
				       enum py_seen which)
{
	__u64 name_at;

	if (!addr)
		return false;
	if (py->seen[which])
		return py->seen[which] == addr;
	name_at = py_name_of(py, addr, which);
	if (!py_name_is(name_at, which))
		return false;
	py->seen[which] = addr;
	return true;
}

static __always_inline __u64 py_type(__u64 obj)
{
	return obj ? read_user_ptr(obj + PY_OB_TYPE) : 0;
}

/* The task a Task.task_wakeup bound to it wakes; 0 if cb is not one. */
static __always_inline __u64 py_wakeup_task(struct sonde_py_layout *py, __u64 cb)
{
	if (!py_seen_is(py, py_type(cb), PY_SEEN_BUILTIN) ||
	    !py_seen_is(py, read_user_ptr(cb + PY_CFUNC_ML), PY_SEEN_WAKEUP))
		return 0;
	return read_user_ptr(cb + PY_CFUNC_SELF);
}

/* The task a future wakes when it is done: a task that awaits a future
 * has its wakeup as the future's first done callback. */
static __always_inline __u64 py_future_awaiter(struct sonde_py_layout *py, __u64 obj)
{
	__u64 type = py_type(obj);

	if (!py_seen_is(py, type, PY_SEEN_FUTURE) && !py_seen_is(py, type, PY_SEEN_GATHERING))
		return 0;
	return py_wakeup_task(py, read_user_ptr(obj + py->future_callback0));
}

/* The task awaiting a future among a tuple's first items (the values of
 * its cells when it is a closure). */
static __always_inline __u64 py_items_awaiter(struct sonde_py_layout *py, __u64 tuple,
					      bool cells)
{
	__u64 size = tuple ? read_user_ptr(tuple + PY_TUPLE_SIZE) : 0;

	for (__u32 i = 0; i < SONDE_PY_ITEMS_MAX && i < size; i++) {
		__u64 item = read_user_ptr(tuple + PY_TUPLE_ITEMS + i * 8);
		__u64 parent;

		if (cells)
			item = item ? read_user_ptr(item + PY_CELL_REF) : 0;
		parent = py_future_awaiter(py, item);
		if (parent)
			return parent;
	}
	return 0;
}

/* A TaskGroup's task has its done callback first: the group's bound
 * _on_task_done; the group's _parent_task, set on entering it, awaits
 * the group's tasks on leaving it. */
static __always_inline __u64 py_group_task(struct sonde_py_layout *py, __u64 cb)
{
	__u64 group = read_user_ptr(cb + PY_METHOD_SELF);
	__u64 values, parent;

	if (!py->values_before || !py_seen_is(py, py_type(group), PY_SEEN_TASKGROUP))
		return 0;
	values = read_user_ptr(group - py->values_before);
	parent = values ? read_user_ptr(values + py->taskgroup_parent) : 0;
	/* Another class of that name holds something else there. */
	return py_seen_is(py, py_type(parent), PY_SEEN_TASK) ? parent : 0;
}

/* The task awaiting this one, or 0: a task's first done callback is the
 * wakeup of a task awaiting it, or a closure over a future that a task
 * awaits (gather's, asyncio.wait's), or a partial with that future
 * (wait_for's), or its TaskGroup's. */
static __always_inline __u64 py_awaiting_task(struct sonde_py_layout *py, __u64 task)
{
	__u64 cb = read_user_ptr(task + py->future_callback0);
	__u64 type = py_type(cb);
	__u64 parent = py_wakeup_task(py, cb);

	if (parent || !type)
		return parent;
	if (py_seen_is(py, type, PY_SEEN_FUNCTION))
		return py_items_awaiter(py, read_user_ptr(cb + py->func_closure), true);
	if (py_seen_is(py, type, PY_SEEN_PARTIAL))
		return py_items_awaiter(py, read_user_ptr(cb + PY_PARTIAL_ARGS), false);
	if (py_seen_is(py, type, PY_SEEN_METHOD))
		return py_group_task(py, cb);
	return 0;
}

/* The root frame that names a task: the frame embedded in its coroutine;
 * 0 when it has none. */
static __always_inline __u64 py_task_root(const struct sonde_py_layout *py, __u64 task)
{
	__u64 coro = read_user_ptr(task + py->task_coro);

	return coro ? coro + py->coro_iframe : 0;
}

/* The Task object that runs the root frame: the event loop's handle under
 * it calls either the task's first step or its wakeup. */
static __always_inline __u64 py_running_task(struct sonde_py_layout *py, __u64 root, __u64 below)
{
	__u64 handle = read_user_ptr(below + py->frame_locals);
	__u64 cb = handle ? read_user_ptr(handle + py->handle_callback) : 0;
	__u64 task = py_wakeup_task(py, cb);

	if (!task && py_seen_is(py, py_type(cb), PY_SEEN_STEP_WRAPPER))
		task = read_user_ptr(cb + py->step_task);
	if (!task || py_task_root(py, task) != root)
		return 0;
	return task;
}

struct py_await_chain {
	struct sonde_py_layout *py;
	__u64 task, root;
};

/* One step up the chain: a bpf_loop callback, verified once rather than
 * once per step. */
static long py_await_step(__u32 i, void *arg)
{
	struct py_await_chain *chain = arg;
	__u64 parent = py_awaiting_task(chain->py, chain->task);
	__u64 parent_root = parent ? py_task_root(chain->py, parent) : 0;

	if (!parent_root)
		return 1;
	chain->root = parent_root;
	chain->task = parent;
	return 0;
}

/* The outermost task of the chain awaiting task (or, when task is 0, the
 * one running root above the loop's frame below), named by its root frame
 * as the running one is. A global function. */
__noinline __u64 py_outermost_task(struct sonde_py_layout *py, __u64 root, __u64 below,
				   __u64 task)
{
	struct py_await_chain chain = { .py = py, .task = task, .root = root };

	if (!py || !root)
		return root;
	if (!task)
		chain.task = below && py->task_coro ? py_running_task(py, root, below) : 0;
	if (chain.task)
		bpf_loop(SONDE_PY_AWAIT_DEPTH, py_await_step, &chain, 0);
	return chain.root;
}

/* The root frame of the task running `frame`, and the event loop's frame
 * under it in *below; when none runs, the thread's run method in *run. A
 * global function, so that the verifier checks the walks once rather
 * than on every path of every program that reaches them. It is verified
 * on its own, so it must allow for NULL pointers. */
__noinline __u64 python_task(const struct sonde_py_layout *py, __u64 frame, __u64 *below,
			     struct py_frame_code *run)
{
	if (!py || !below || !run)
		return SONDE_TASK_UNKNOWN;
	return py_task(py, frame, below, run);
}

/* 1 + the index of the local named `future` among a code object's, or 0.
 * A global function: what it returns is then one unknown value to its
 * caller, not one path of the caller's per index found. It must allow
 * for a NULL py. */
__noinline int py_future_local(const struct sonde_py_layout *py, __u64 code)
{
	__u64 names, count;

	if (!py)
		return 0;
	names = read_user_ptr(code + py->code_localsplusnames);
	count = names ? read_user_ptr(names + PY_TUPLE_SIZE) : 0;

	for (__u32 i = 0; i < SONDE_PY_LOCALS_MAX && i < count; i++) {
		__u64 name = read_user_ptr(names + PY_TUPLE_ITEMS + i * 8);

		if (name && py_name_is(name + PY_ASCII_DATA, PY_NAME_FUTURE))
			return i + 1;
	}
	return 0;
}

/* The Task a worker thread runs a call for: anyio's WorkerThread.run
 * (FastAPI's `def` handlers and dependencies, Starlette's
 * run_in_threadpool) calls each function it is handed with the asyncio
 * future its caller awaits in its local `future`, whose first done
 * callback is that caller's wakeup. 0 when run is not that method or
 * nothing awaits the future. A global function, verified once; it must
 * allow for a NULL py. */
__noinline __u64 py_worker_caller(struct sonde_py_layout *py, const struct py_frame_code *run)
{
	__u64 future;
	__u8 local;

	if (!py || !run || !run->frame || !py->task_coro || !py->code_localsplusnames ||
	    run->code == py->other_run)
		return 0;
	if (!py_seen_is(py, run->code, PY_SEEN_WORKER_RUN)) {
		py->other_run = run->code;
		return 0;
	}
	if (!py->worker_future)
		py->worker_future = py_future_local(py, run->code) ?: SONDE_PY_LOCAL_NONE;
	local = py->worker_future;
	if (local > SONDE_PY_LOCALS_MAX)
		return 0;
	future = read_user_ptr(run->frame + py->frame_locals + (local - 1) * 8);
	return py_future_awaiter(py, future);
}

/* The tasks running a job (bpf/jobs.bpf.h), by what names them in
 * events: the code of their coroutine. A task's outermost frame sits in
 * its coroutine, so a later coroutine may have the same address: it is
 * the job's only while it runs the same code (and a new coroutine of the
 * same code is a new job, told again). LRU, as an ended job's entry is
 * never deleted. */
struct job_task_key {
	__u32 tgid;
	__u32 pad;
	__u64 task;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct job_task_key);
	__type(value, __u64);
} job_tasks SEC(".maps");

/* The task of the current process, marked (its lowest bit set: frames
 * are aligned) when it runs a job: its outermost frame is a job's, and
 * runs the job's code. A global function, verified once; it must allow
 * for a NULL py. */
__noinline __u64 job_task_mark(const struct sonde_py_layout *py, __u64 task)
{
	struct job_task_key key = { .tgid = bpf_get_current_pid_tgid() >> 32, .task = task };
	__u64 *code;

	if (!py || !task || task == SONDE_TASK_UNKNOWN)
		return task;
	code = bpf_map_lookup_elem(&job_tasks, &key);
	if (!code || read_user_ptr(task + py->frame_code) != *code)
		return task;
	return task | SONDE_TASK_JOB;
}

/* The task an event names: the outermost of those awaiting the running
 * one, marked when it runs a job. The process has needed a task from
 * then on (tasks_used: written once, so that the entry's cache line stays
 * clean). The walks (the thread's frame among them) are called one after
 * the other, not one from the other, so that the programs' stack and
 * theirs stay within bounds. */
static __always_inline __u64 python_event_task(struct sonde_py_layout *py)
{
	struct py_frame_code run = {};
	__u64 frame, task, below = 0, caller;

	if (!py->tasks_used)
		py->tasks_used = 1;
	frame = py_thread_frame(py, (__u32)bpf_get_current_pid_tgid());
	task = python_task(py, frame, &below, &run);
	if (task == SONDE_TASK_UNKNOWN)
		return task;
	if (!task && run.frame) {
		caller = py_worker_caller(py, &run);
		if (caller)
			task = py_outermost_task(py, py_task_root(py, caller), 0, caller);
	} else if (below) {
		task = py_outermost_task(py, task, below, 0);
	}
	return entry_points ? job_task_mark(py, task) : task;
}

/* Only the start of what a process sends needs its task: the request
 * head a client writes and the response head a server writes. The walk
 * costs microseconds, so HTTP body writes skip it; every write of a
 * database client is a command or part of one. A response head skips it
 * too until the process has asked for a task elsewhere (tasks_used): a
 * job's creator is matched to its request whenever the job starts, so
 * entry points keep every walk. A global function, verified once rather
 * than on every path of the data programs; it must allow for a NULL
 * ev. */
__noinline __u64 current_task(__u32 tgid, const struct sonde_data_event *ev)
{
	struct sonde_py_layout *py;

	if (!ev || ev->dir != SONDE_DIR_EGRESS)
		return 0;
	py = bpf_map_lookup_elem(&py_procs, &tgid);
	if (!py)
		return 0;
	if (ev->proto == SONDE_PROTO_HTTP1 &&
	    (!is_http1_start(ev->data, ev->captured) ||
	     (is_http1_status_line(ev->data, ev->captured) && !py->tasks_used && !entry_points)))
		return SONDE_TASK_UNKNOWN;
	return python_event_task(py);
}

#endif
