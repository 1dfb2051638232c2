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

/* The PyThreadState of thread tid, or 0. */
static __always_inline __u64 py_thread_state(const struct sonde_py_layout *py, __u32 tid)
{
	__u64 interp = read_user_ptr(py->runtime + py->interp_main);
	__u64 tstate = interp ? read_user_ptr(interp + py->threads_head) : 0;

	for (__u32 i = 0; i < SONDE_PY_THREADS_MAX && tstate; i++) {
		if (read_user_ptr(tstate + py->tstate_native_id) == tid)
			return tstate;
		tstate = read_user_ptr(tstate + py->tstate_next);
	}
	return 0;
}

/* A frame's code object and the frame below it, in one read: both sit in
 * the first SONDE_PY_FRAME_HEAD bytes of _PyInterpreterFrame, and a user
 * memory read costs about as much for 64 bytes as for 8. */
static __always_inline int read_frame(const struct sonde_py_layout *py, __u64 frame, __u64 *code,
				      __u64 *previous)
{
	__u64 head[SONDE_PY_FRAME_HEAD / 8];

	if (bpf_probe_read_user(head, sizeof(head), (const void *)frame))
		return -1;
	*code = head[(py->frame_code / 8) & (SONDE_PY_FRAME_HEAD / 8 - 1)];
	*previous = head[(py->frame_previous / 8) & (SONDE_PY_FRAME_HEAD / 8 - 1)];
	return 0;
}

/* The task a CPython thread runs, read from the frames of the call in
 * progress: the GIL is released during the syscall, but the thread's
 * frame chain stays as it was. A task's coroutine frames sit on top of
 * the event loop's own (plain) frames, so the outermost coroutine frame
 * before them is the task's root coroutine, embedded in the coroutine
 * object: its address names the task for as long as the task lives. */
static __always_inline __u64 py_task(const struct sonde_py_layout *py, __u32 tid)
{
	__u64 tstate = py_thread_state(py, tid);
	__u64 cframe, frame, task = 0;

	if (!tstate)
		return SONDE_TASK_UNKNOWN;
	cframe = read_user_ptr(tstate + py->tstate_cframe);
	frame = cframe ? read_user_ptr(cframe + py->cframe_frame) : 0;
	for (__u32 i = 0; i < SONDE_PY_FRAMES_MAX; i++) {
		__u64 code, previous;
		__u32 flags = 0;

		if (!frame)
			return task;
		if (read_frame(py, frame, &code, &previous) || !code ||
		    bpf_probe_read_user(&flags, sizeof(flags), (const void *)(code + py->code_flags)))
			return SONDE_TASK_UNKNOWN;
		if (flags & PY_CO_ASYNC_FLAGS)
			task = frame;
		else if (task)
			return task;
		frame = previous;
	}
	return SONDE_TASK_UNKNOWN;
}

/* A global function, so that the verifier checks the walks once rather
 * than on every path of every program that reaches them. It is verified
 * on its own, so it must allow for a NULL layout. */
__noinline __u64 python_task(const struct sonde_py_layout *py)
{
	if (!py)
		return SONDE_TASK_UNKNOWN;
	return py_task(py, (__u32)bpf_get_current_pid_tgid());
}

/* Only the start of what a process sends needs its task: the request
 * head a client writes and the response head a server writes. The walk
 * costs microseconds, so HTTP body writes skip it; every write of a
 * database client is a command or part of one. */
static __always_inline __u64 current_task(__u32 tgid, struct sonde_data_event *ev)
{
	const struct sonde_py_layout *py;

	if (ev->dir != SONDE_DIR_EGRESS)
		return 0;
	py = bpf_map_lookup_elem(&py_procs, &tgid);
	if (!py)
		return 0;
	if (ev->proto == SONDE_PROTO_HTTP1 && !is_http1_start(ev->data, ev->captured))
		return SONDE_TASK_UNKNOWN;
	return python_task(py);
}

#endif
