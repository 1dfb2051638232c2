/* SPDX-License-Identifier: GPL-2.0 */
/* The request a libuv loop's main thread (Node.js) calls for. One thread
 * serves many requests at once, so the thread cannot tell which request
 * an outgoing call belongs to; the order of its callbacks can.
 *
 * libuv runs, after each epoll_wait, one callback per returned event, in
 * the order returned. A callback begins with a call on its own fd: a read
 * (data, an accept, libuv's own wakeup), getsockopt (a connect finished),
 * or a write continuing a queued one (an event polled for writing). Node
 * then runs the JavaScript that event causes, with the process.nextTick
 * and promise jobs it queues, before the callback returns. So every call
 * from the start of an event's callback to the start of the next belongs
 * to what that event's fd was doing: a server connection's request, or a
 * client connection's call, whose task is the request that wrote it.
 *
 * The task of a callback is its fd's conn_state.loop_task: a server
 * connection's own gen; for a client connection (HTTP, PostgreSQL,
 * Redis), the task of the callback that wrote its request (or, for a
 * connection still opening, that made it); nothing for any other fd.
 * Server responses carry their own connection's task, so the linker's
 * task rule pairs a client request with the request whose callbacks
 * wrote it, through any number of awaits on other calls.
 *
 * What is not a poll's callback gets no task: timers, setImmediate and
 * deferred callbacks run while libuv's loop->internal_fields->inv is
 * NULL, which is read at each message start. A request written on a
 * client connection in the callback of that connection's own response
 * may be another caller's (Node's agent hands a freed socket to a queued
 * request there, a database client its next queued query), so it gets
 * none either; nor does anything after a connection was found ended in a
 * callback (a pool then makes a new connection for its oldest waiter;
 * Node's own socket 'close' handlers run outside poll callbacks). Two
 * callbacks start with no call to see: the io_uring's (UV_USE_IO_URING=1:
 * its completions are read from memory), so until a callback after its
 * event has started nothing gets a task; and the signal watchers', which
 * libuv runs after all others, so a read on an event already passed
 * starts a callback with none. Tasks are thus exact or absent.
 *
 * Only the main thread's loop is followed (uv_default_loop(); worker
 * threads run loops of their own), and only libuv versions whose field
 * offsets the agent carries. */
/* Included by sonde.bpf.c, after the maps and the inference
 * (is_http1_start) it uses. */
#ifndef SONDE_EVLOOP_BPF_H
#define SONDE_EVLOOP_BPF_H

#define EPOLLOUT 0x004

_Static_assert((SONDE_LOOP_BATCH_MAX & (SONDE_LOOP_BATCH_MAX - 1)) == 0,
	       "batch indexes are masked into range");

/* How a call may start a callback. */
enum loop_call_kind {
	LOOP_CALL_READ,         /* data read */
	LOOP_CALL_WRITE,        /* data written */
	LOOP_CALL_OTHER,        /* accept, getsockopt: only ever a callback's own */
	LOOP_CALL_READ_END,     /* a read that found the connection ended */
	LOOP_CALL_WRITE_FAILED, /* a write that found it ended */
};

/* A callback in which a connection was found ended gets no task from
 * then on: a pool hands what the connection held (a place for a queued
 * caller, a new connection for one) to another caller there. */
static __always_inline bool loop_call_ends(int kind)
{
	return kind == LOOP_CALL_READ_END || kind == LOOP_CALL_WRITE_FAILED;
}

/* The loop of the calling thread if it is a libuv process's main thread. */
static __always_inline struct sonde_loop *main_thread_loop(void)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;

	if ((__u32)id != tgid)
		return NULL;
	return bpf_map_lookup_elem(&loops, &tgid);
}

/* The loop's internal fields, read once; 0 when they cannot be read. */
static __always_inline __u64 loop_fields(struct sonde_loop *loop)
{
	if (!loop->lfields &&
	    bpf_probe_read_user(&loop->lfields, sizeof(loop->lfields),
				(const void *)loop->internal_fields))
		return 0;
	return loop->lfields;
}

/* Index of fd's event in batch[from, to), or -1. */
static __always_inline int loop_find(const struct sonde_loop *loop, __s32 fd, __u32 from,
				     __u32 to)
{
	for (__u32 i = 0; i < SONDE_LOOP_BATCH_MAX; i++) {
		__u32 at = from + i;

		if (at >= to || at >= loop->nbatch)
			return -1;
		at &= SONDE_LOOP_BATCH_MAX - 1; /* for the verifier: nbatch is at most that */
		if ((__s32)loop->batch[at].data == fd)
			return (int)at;
	}
	return -1;
}

/* The io_uring libuv reads completions from with no call of its own
 * (UV_USE_IO_URING=1): its fd (-1: none), read until libuv has decided. */
static __always_inline __s32 loop_ring_fd(struct sonde_loop *loop)
{
	__u64 lfields;

	if (loop->ring_fd == SONDE_LOOP_RING_UNREAD && (lfields = loop_fields(loop)) &&
	    bpf_probe_read_user(&loop->ring_fd, sizeof(loop->ring_fd),
				(const void *)(lfields + loop->ring_fd_offset)))
		loop->ring_fd = SONDE_LOOP_RING_UNREAD;
	return loop->ring_fd == SONDE_LOOP_RING_UNREAD ? -1 : loop->ring_fd;
}

/* Where in the batch the io_uring's event is; -1 when it is not there. */
static __always_inline __s16 loop_ring_event(struct sonde_loop *loop)
{
	__s32 ring_fd = loop_ring_fd(loop);

	return ring_fd < 0 ? -1 : (__s16)loop_find(loop, ring_fd, 0, loop->nbatch);
}

/* The loop's epoll_wait returned nfds events at `events`: the callbacks
 * to come. */
static __always_inline void loop_polled(struct sonde_loop *loop, long nfds, __u64 events)
{
	__u32 n;

	loop->nbatch = 0;
	loop->cursor = -1;
	loop->ring_at = -1;
	loop->task = SONDE_TASK_UNKNOWN;
	loop->opener_fd = -1;
	if (nfds <= 0)
		return;
	n = nfds > SONDE_LOOP_BATCH_MAX ? SONDE_LOOP_BATCH_MAX : (__u32)nfds;
	loop->overflow = nfds > SONDE_LOOP_BATCH_MAX;
	if (bpf_probe_read_user(loop->batch, n * sizeof(loop->batch[0]), (const void *)events))
		return;
	loop->nbatch = (__u16)n;
	loop->ring_at = loop_ring_event(loop);
}

/* Index of the event not reached yet whose callback a call on fd starts,
 * or -1. A write starts one only for an event polled for writing: a write
 * to an fd polled for reading alone is a callback writing elsewhere. */
static __always_inline int loop_event_of(const struct sonde_loop *loop, __s32 fd, int kind)
{
	int at = loop_find(loop, fd, (__u32)(loop->cursor + 1), loop->nbatch);

	if (at >= 0 && (kind == LOOP_CALL_WRITE || kind == LOOP_CALL_WRITE_FAILED) &&
	    !(loop->batch[at & (SONDE_LOOP_BATCH_MAX - 1)].events & EPOLLOUT))
		return -1;
	return at;
}

/* Whether fd's event is one whose callback has been passed: a read on
 * it now is a callback libuv runs out of order (signal watchers run after
 * all others) or a read outside any callback. */
static __always_inline bool loop_event_passed(const struct sonde_loop *loop, __s32 fd)
{
	return fd != loop->opener_fd && loop_find(loop, fd, 0, (__u32)(loop->cursor + 1)) >= 0;
}

/* A call on fd, whose connection's loop_task is fd_task (0: none or not
 * a connection), by the main thread: when it starts a callback, that
 * callback's task is the fd's. The last event kept of a batch that
 * overflowed gets none: the callbacks after it start unseen. A global
 * function, verified once rather than in every program that reaches it. */
__noinline int loop_call(struct sonde_loop *loop, __s32 fd, __u64 fd_task, int kind)
{
	int at;

	if (!loop)
		return 0;
	at = loop_event_of(loop, fd, kind);
	if (at < 0) {
		if (loop_call_ends(kind) || (kind != LOOP_CALL_WRITE && loop_event_passed(loop, fd)))
			loop->task = SONDE_TASK_UNKNOWN;
		return 0;
	}
	loop->cursor = at;
	loop->opener_fd = fd;
	loop->opener_read = kind == LOOP_CALL_READ;
	loop->task = fd_task && !loop_call_ends(kind) ? fd_task : SONDE_TASK_UNKNOWN;
	if (loop->overflow && at == loop->nbatch - 1)
		loop->task = SONDE_TASK_UNKNOWN;
	return 0;
}

/* The same for a call whose fd may or may not be a connection. */
static __always_inline void loop_call_fd(struct sonde_conn_key *key, enum loop_call_kind kind)
{
	struct sonde_loop *loop = main_thread_loop();
	struct conn_state *state;

	if (!loop)
		return;
	state = bpf_map_lookup_elem(&conns, key);
	loop_call(loop, key->fd, state ? state->loop_task : 0, kind);
}

/* An fd closed by a callback: libuv skips its event if it comes later
 * in the batch, and the number may be a new socket's before then. */
static __always_inline void loop_closed(struct sonde_loop *loop, __s32 fd)
{
	int at = loop_event_of(loop, fd, LOOP_CALL_OTHER);

	if (at >= 0 && at < SONDE_LOOP_BATCH_MAX)
		loop->batch[at].data = (__u64)-1;
}

/* Whether libuv is running the callbacks of a poll: not a timer's,
 * setImmediate's or a deferred one. */
static __always_inline bool loop_in_poll_callbacks(struct sonde_loop *loop)
{
	__u64 lfields = loop_fields(loop), inv = 0;

	if (!lfields ||
	    bpf_probe_read_user(&inv, sizeof(inv), (const void *)(lfields + loop->inv_offset)))
		return false;
	return inv != 0;
}

/* The task of what the main thread runs now, for a call on fd (-1: not
 * a connection). Until a callback after the io_uring's has started, the
 * io_uring's may be the one running. */
static __always_inline __u64 loop_running_task(struct sonde_loop *loop, __s32 fd)
{
	if (loop->cursor < 0 || loop->ring_at > loop->cursor || !loop_in_poll_callbacks(loop))
		return SONDE_TASK_UNKNOWN;
	if (loop->opener_read && loop->opener_fd == fd)
		return SONDE_TASK_UNKNOWN;
	return loop->task;
}

/* The task of what a libuv process writes: an HTTP response is its
 * connection's own request's; an HTTP request, or a database client's
 * write (every one is requests), is the running callback's, and becomes
 * its connection's, for the callbacks its response will start. Only HTTP
 * message starts need one (see current_task). */
static __always_inline __u64 loop_task(__s32 fd, struct conn_state *state,
				       struct sonde_data_event *ev)
{
	struct sonde_loop *loop;

	if (ev->dir != SONDE_DIR_EGRESS)
		return 0;
	if (ev->proto == SONDE_PROTO_HTTP1) {
		if (!is_http1_start(ev->data, ev->captured))
			return SONDE_TASK_UNKNOWN;
		if (is_http1_status_line(ev->data, ev->captured)) {
			state->loop_task = state->gen;
			return state->gen;
		}
	}
	loop = main_thread_loop();
	state->loop_task = loop ? loop_running_task(loop, fd) : SONDE_TASK_UNKNOWN;
	return state->loop_task;
}

/* A connection first seen reading a request is a server's (one a
 * cluster's primary accepted and handed over, or one open before sonde):
 * its task is its own, from the callback this read started on. */
static __always_inline void loop_request_read(__s32 fd, struct conn_state *state,
					      const struct sonde_data_event *ev)
{
	struct sonde_loop *loop;

	if (state->loop_task || ev->dir != SONDE_DIR_INGRESS || ev->proto != SONDE_PROTO_HTTP1 ||
	    !is_http1_start(ev->data, ev->captured) || is_http1_status_line(ev->data, ev->captured))
		return;
	state->loop_task = state->gen;
	loop = main_thread_loop();
	if (loop && loop->cursor >= 0 && loop->opener_fd == fd && loop->opener_read &&
	    !(loop->overflow && loop->cursor == loop->nbatch - 1))
		loop->task = state->gen;
}

/* The task of a libuv process's data event (see loop_task), after a
 * request read has made its connection a server's (loop_request_read).
 * A global function, verified once rather than on every path of the data
 * programs; it must allow for NULL pointers. */
__noinline __u64 loop_event_task(__s32 fd, struct conn_state *state, struct sonde_data_event *ev)
{
	if (!state || !ev)
		return 0;
	loop_request_read(fd, state, ev);
	return loop_task(fd, state, ev);
}

/* A connection the main thread opens belongs to the running callback's
 * task until it carries a request of its own: the callback its connect
 * finishes in writes the request it was opened for. */
static __always_inline void loop_connect(struct conn_state *state)
{
	struct sonde_loop *loop = main_thread_loop();

	if (loop)
		state->loop_task = loop_running_task(loop, -1);
}

/* A task for a log write: the running callback's on the main thread. */
static __always_inline __u64 loop_log_task(struct sonde_loop *loop)
{
	return loop ? loop_running_task(loop, -1) : 0;
}

#endif
