// SPDX-License-Identifier: GPL-2.0
/*
 * sonde kernel side: syscall tracepoints that follow TCP connections and
 * send the first bytes of every HTTP/1.x read and write to the agent.
 *
 * Shape of one call: only the syscall's exit is traced. A failed call
 * (EAGAIN and the like) returns before touching any map. Otherwise the
 * arguments come from the user registers the kernel saved at entry (still
 * intact at exit), one hash lookup says whether the fd is a TCP connection
 * worth tracing, and one data event carries the real return value and the
 * first bytes moved. Tracing entries too would mean stashing arguments per
 * thread: a map update, lookup and delete per call, measured at more than
 * half of the per-call cost. Protocol inference runs once per connection,
 * on its first data, and is sticky: a connection that does not start like
 * HTTP/1.x never produces another event.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "sonde_events.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define EPIPE 32
#define ECONNRESET 104
#define EINPROGRESS 115

char LICENSE[] SEC("license") = "GPL";

/* Set by the agent before load. */
const volatile __u32 self_tgid = 0;
const volatile __u32 capture_bytes = 512;
const volatile __u64 wakeup_bytes = 256 * 1024;
/* Per-CPU perf buffers instead of the ring buffer: for kernels before 5.8,
 * or by choice. */
const volatile bool use_perf_buffer = false;
/* Processes whose connections are never traced, by comm. */
const volatile __u32 excluded_count = 0;
const volatile char excluded_comms[SONDE_EXCLUDE_MAX][SONDE_COMM_LEN] = {};

enum conn_proto {
	PROTO_UNKNOWN = 0,
	PROTO_HTTP1 = 1,
	PROTO_OTHER = 2,
};

struct conn_state {
	__u64 gen;
	__u64 pos[2]; /* bytes moved so far, per enum sonde_dir */
	__u8 role;    /* enum sonde_role */
	__u8 proto;   /* enum conn_proto */
	__u8 probes_left;
	__u8 pad[5];
};

/* Arguments of a data call, read from the saved user registers. */
struct call_args {
	__u64 buf;    /* user buffer, or an iovec array when iovcnt > 0 */
	__s32 fd;
	__u32 iovcnt;
	__u8 syscall; /* enum sonde_syscall */
	__u8 dir;     /* enum sonde_dir */
};

/* User-space struct iovec. */
struct user_iovec {
	__u64 base;
	__u64 len;
};

/* A data event plus room for the last iovec copy to overrun the capture
 * limit by up to SONDE_CAPTURE_MAX bytes, which the verifier demands. */
struct scratch {
	struct sonde_data_event ev;
	__u8 spill[SONDE_CAPTURE_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sonde_conn_key);
	__type(value, struct conn_state);
} conns SEC(".maps");

/* fds found not to be TCP sockets; close() forgets them. LRU because
 * processes that exit never close. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sonde_conn_key);
	__type(value, __u8);
} not_tcp SEC(".maps");

/* The local ends of sonde's own connections (its exporter's), v4 as
 * v4-mapped v6. A server on this host that accepts one of them, a local
 * collector, is not traced: each export would make a span to export. */
struct self_end {
	__u8 addr[16];
	__u16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct self_end);
	__type(value, __u8);
} self_ends SEC(".maps");

/* CPython processes, filled by the agent: see struct sonde_py_layout. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct sonde_py_layout);
} py_procs SEC(".maps");

/* One ring buffer per CPU, made by the agent: a call writes to its own
 * CPU's ring, so the CPUs do not contend for one ring's lock and
 * positions. The template's size is replaced by the agent's. */
struct cpu_ring {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct cpu_ring);
} cpu_rings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} perf_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch_buf SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SONDE_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(enum sonde_counter which)
{
	__u32 key = which;
	__u64 *value = bpf_map_lookup_elem(&counters, &key);

	if (value)
		(*value)++;
}

/* Ring buffer: wake the agent only when the unread data crosses
 * wakeup_bytes; below that it finds the records on its next poll tick.
 * Perf buffers batch wakeups by their own watermark (set by the agent). */
static __always_inline void submit(void *ctx, void *record, __u64 size)
{
	__u64 unread, flags = BPF_RB_NO_WAKEUP;
	__u32 cpu = bpf_get_smp_processor_id();
	void *ring;

	if (use_perf_buffer) {
		if (bpf_perf_event_output(ctx, &perf_events, BPF_F_CURRENT_CPU, record, size))
			count(SONDE_CNT_LOST_RINGBUF);
		return;
	}
	ring = bpf_map_lookup_elem(&cpu_rings, &cpu);
	if (!ring) {
		count(SONDE_CNT_LOST_RINGBUF);
		return;
	}
	unread = bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA);
	if (unread < wakeup_bytes && unread + size >= wakeup_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	if (bpf_ringbuf_output(ring, record, size, flags))
		count(SONDE_CNT_LOST_RINGBUF);
}

/* current->files->fdt->fd[fd] as a TCP (v4 or v6) sock, or NULL. */
static __always_inline struct sock *tcp_sock_of_fd(__s32 fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = NULL;
	struct socket *sock;
	struct sock *sk;
	__u16 family;

	if (fd < 0 || (__u32)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return NULL;
	if ((BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	sock = BPF_CORE_READ(file, private_data);
	sk = BPF_CORE_READ(sock, sk);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return NULL;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return NULL;
	return sk;
}

static __always_inline bool comm_equal(const char *comm, __u32 which)
{
	for (__u32 i = 0; i < SONDE_COMM_LEN; i++) {
		if (comm[i] != excluded_comms[which][i])
			return false;
		if (comm[i] == '\0')
			return true;
	}
	return true;
}

/* Checked once per connection, when it is first tracked: excluded
 * connections are stored as not HTTP, so their calls cost one lookup. */
static __always_inline bool current_excluded(void)
{
	char comm[SONDE_COMM_LEN];

	if (excluded_count == 0)
		return false;
	bpf_get_current_comm(comm, sizeof(comm));
	for (__u32 i = 0; i < SONDE_EXCLUDE_MAX && i < excluded_count; i++) {
		if (comm_equal(comm, i)) {
			count(SONDE_CNT_EXCLUDED_CONNS);
			return true;
		}
	}
	return false;
}

static __always_inline struct conn_state *
track_conn(struct sonde_conn_key *key, __u8 role, __u8 probes)
{
	struct conn_state fresh = {
		.gen = bpf_ktime_get_ns(),
		.role = role,
		.probes_left = probes,
		.proto = current_excluded() ? PROTO_OTHER : PROTO_UNKNOWN,
	};

	bpf_map_delete_elem(&not_tcp, key);
	if (bpf_map_update_elem(&conns, key, &fresh, BPF_ANY)) {
		count(SONDE_CNT_LOST_CONN_MAP);
		return NULL;
	}
	return bpf_map_lookup_elem(&conns, key);
}

/* State of a connection still worth tracing, or NULL. An fd seen for the
 * first time (opened before sonde started, or not a socket at all) is
 * classified once and remembered either way. */
static __always_inline struct conn_state *traced_conn(struct sonde_conn_key *key)
{
	struct conn_state *state = bpf_map_lookup_elem(&conns, key);
	__u8 one = 1;

	if (state)
		return state->proto == PROTO_OTHER ? NULL : state;
	if (bpf_map_lookup_elem(&not_tcp, key))
		return NULL;
	if (!tcp_sock_of_fd(key->fd)) {
		bpf_map_update_elem(&not_tcp, key, &one, BPF_ANY);
		return NULL;
	}
	return track_conn(key, SONDE_ROLE_UNKNOWN, SONDE_PREEXISTING_PROBES);
}

static __always_inline void fill_header(struct sonde_event_header *hdr, __u8 type,
					struct sonde_conn_key *key, __u64 gen)
{
	hdr->type = type;
	hdr->tgid = key->tgid;
	hdr->tid = (__u32)bpf_get_current_pid_tgid();
	hdr->fd = key->fd;
	hdr->conn_gen = gen;
	hdr->ts = bpf_ktime_get_ns();
}

/* Typed reads: BPF_CORE_READ_INTO copies sizeof(*dst), so a byte array
 * destination would get one byte. */
static __always_inline void read_addrs(struct sock *sk, __u16 family, __u8 *laddr, __u8 *raddr)
{
	if (family == AF_INET) {
		__be32 local = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__be32 remote = BPF_CORE_READ(sk, __sk_common.skc_daddr);

		__builtin_memcpy(laddr, &local, sizeof(local));
		__builtin_memcpy(raddr, &remote, sizeof(remote));
	} else {
		struct in6_addr local = BPF_CORE_READ(sk, __sk_common.skc_v6_rcv_saddr);
		struct in6_addr remote = BPF_CORE_READ(sk, __sk_common.skc_v6_daddr);

		__builtin_memcpy(laddr, &local, sizeof(local));
		__builtin_memcpy(raddr, &remote, sizeof(remote));
	}
}

static __always_inline void emit_conn(void *ctx, struct sonde_conn_key *key, struct conn_state *state)
{
	struct sonde_conn_event ev = {};
	struct sock *sk = tcp_sock_of_fd(key->fd);

	fill_header(&ev.hdr, SONDE_EV_CONN, key, state->gen);
	ev.role = state->role;
	bpf_get_current_comm(ev.comm, sizeof(ev.comm));
	if (sk) {
		ev.family = BPF_CORE_READ(sk, __sk_common.skc_family);
		ev.lport = BPF_CORE_READ(sk, __sk_common.skc_num);
		ev.rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
		read_addrs(sk, ev.family, ev.laddr, ev.raddr);
	}
	submit(ctx, &ev, sizeof(ev));
}

static __always_inline void emit_close(void *ctx, struct sonde_conn_key *key,
				       struct conn_state *state, __u8 reason)
{
	struct sonde_close_event ev = {};

	fill_header(&ev.hdr, SONDE_EV_CLOSE, key, state->gen);
	ev.reason = reason;
	submit(ctx, &ev, sizeof(ev));
}

/* Also true for data shorter than the prefix that agrees with it: a first
 * call may return just "GE". */
static __always_inline bool starts_with(const __u8 *data, __u32 len, const char *prefix,
					__u32 prefix_len)
{
	if (len == 0)
		return false;
	if (len < prefix_len)
		prefix_len = len;
	for (__u32 i = 0; i < prefix_len; i++)
		if (data[i] != prefix[i])
			return false;
	return true;
}

/* A request line or a status line at the start of the data. */
static __always_inline bool is_http1_start(const __u8 *data, __u32 len)
{
	return starts_with(data, len, "GET ", 4) || starts_with(data, len, "POST ", 5) ||
	       starts_with(data, len, "PUT ", 4) || starts_with(data, len, "HEAD ", 5) ||
	       starts_with(data, len, "DELETE ", 7) || starts_with(data, len, "PATCH ", 6) ||
	       starts_with(data, len, "OPTIONS ", 8) || starts_with(data, len, "CONNECT ", 8) ||
	       starts_with(data, len, "TRACE ", 6) || starts_with(data, len, "HTTP/1.", 7);
}

/* One end of a socket as a self_ends key: local, or else remote. */
static __always_inline void end_of(struct sock *sk, bool local, struct self_end *end)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	__u8 laddr[16] = {}, raddr[16] = {};

	read_addrs(sk, family, laddr, raddr);
	if (family == AF_INET) {
		end->addr[10] = end->addr[11] = 0xff;
		__builtin_memcpy(&end->addr[12], local ? laddr : raddr, 4);
	} else {
		__builtin_memcpy(end->addr, local ? laddr : raddr, 16);
	}
	end->port = local ? BPF_CORE_READ(sk, __sk_common.skc_num)
			  : bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
}

/* Checked at the first request rather than at accept: on loopback the
 * accept can run before sonde's own connect has returned and been noted. */
static __always_inline bool accepted_from_self(struct sonde_conn_key *key)
{
	struct sock *sk = tcp_sock_of_fd(key->fd);
	struct self_end end = {};

	if (!sk)
		return false;
	end_of(sk, false, &end);
	return bpf_map_lookup_elem(&self_ends, &end) != NULL;
}

/* Decide, once, whether a connection speaks HTTP/1.x. True when the data in
 * hand should be sent. A connection sonde watched open is judged on its
 * first data; one already open when sonde started gets a few calls to show
 * a message start, so that it is picked up at a request boundary. */
static __always_inline bool infer_protocol(void *ctx, struct sonde_conn_key *key,
					   struct conn_state *state, const __u8 *data, __u32 len)
{
	if (is_http1_start(data, len)) {
		if (state->role != SONDE_ROLE_CLIENT && accepted_from_self(key)) {
			state->proto = PROTO_OTHER;
			count(SONDE_CNT_EXCLUDED_CONNS);
			return false;
		}
		state->proto = PROTO_HTTP1;
		count(SONDE_CNT_HTTP_CONNS);
		emit_conn(ctx, key, state);
		return true;
	}
	if (state->role == SONDE_ROLE_UNKNOWN && state->probes_left > 1) {
		state->probes_left--;
		return false;
	}
	state->proto = PROTO_OTHER;
	count(SONDE_CNT_OTHER_CONNS);
	return false;
}

static __always_inline __u32 copy_buf(__u8 *dst, __u64 src, __u32 want)
{
	if (want > SONDE_CAPTURE_MAX)
		want = SONDE_CAPTURE_MAX;
	if (bpf_probe_read_user(dst, want, (const void *)src)) {
		count(SONDE_CNT_CAPTURE_FAULT);
		return 0;
	}
	return want;
}

/* The call's iovecs (at most SONDE_IOV_MAX), in one read: a user memory
 * read costs about as much for 128 bytes as for 16. Returns how many. */
static __always_inline __u32 read_iovs(struct call_args *args, struct user_iovec *vecs)
{
	__u32 nvecs = args->iovcnt < SONDE_IOV_MAX ? args->iovcnt : SONDE_IOV_MAX;

	if (nvecs == 0 ||
	    bpf_probe_read_user(vecs, nvecs * sizeof(*vecs), (const void *)args->buf))
		return 0;
	return nvecs;
}

static __always_inline __u32 copy_iov(__u8 *dst, const struct user_iovec *vecs, __u32 nvecs,
				      __u32 want)
{
	__u32 copied = 0;

	for (__u32 i = 0; i < SONDE_IOV_MAX; i++) {
		__u32 chunk;

		if (i >= nvecs || copied >= want)
			break;
		chunk = vecs[i].len < want - copied ? vecs[i].len : want - copied;
		if (chunk > SONDE_CAPTURE_MAX)
			chunk = SONDE_CAPTURE_MAX;
		copied &= SONDE_CAPTURE_MAX - 1;
		if (bpf_probe_read_user(dst + copied, chunk, (const void *)vecs[i].base)) {
			count(SONDE_CNT_CAPTURE_FAULT);
			break;
		}
		copied += chunk;
	}
	return copied;
}

static __always_inline __u32 capture(struct sonde_data_event *ev, struct call_args *args,
				     const struct user_iovec *vecs, __u32 nvecs, __u32 len)
{
	__u32 want = len < capture_bytes ? len : capture_bytes;

	if (args->syscall == SONDE_SYS_SENDFILE || want == 0)
		return 0;
	if (args->iovcnt)
		return copy_iov(ev->data, vecs, nvecs, want);
	return copy_buf(ev->data, args->buf, want);
}

/* Where the call's last byte sits: in the buffer, or in the iovec the
 * call's `len` bytes end in. *avail is how many bytes before that end
 * belong to the same buffer. */
static __always_inline __u64 end_of_call(struct call_args *args, const struct user_iovec *vecs,
					 __u32 nvecs, __u32 len, __u32 *avail)
{
	__u64 moved = 0;

	*avail = len;
	if (!args->iovcnt)
		return args->buf + len;
	for (__u32 i = 0; i < SONDE_IOV_MAX; i++) {
		if (i >= nvecs)
			break;
		if (moved + vecs[i].len >= len) {
			*avail = (__u32)(len - moved);
			return vecs[i].base + (len - moved);
		}
		moved += vecs[i].len;
	}
	*avail = 0;
	return 0;
}

/* The last bytes of a call that moved more than was captured, after the
 * captured ones: a chunked message's terminator is usually there. */
static __always_inline __u32 capture_tail(struct sonde_data_event *ev, struct call_args *args,
					  const struct user_iovec *vecs, __u32 nvecs, __u32 len,
					  __u32 captured)
{
	__u32 avail, tail = SONDE_TAIL_MAX;
	__u64 end;

	if (args->syscall == SONDE_SYS_SENDFILE || len <= captured + SONDE_TAIL_MAX)
		return 0;
	end = end_of_call(args, vecs, nvecs, len, &avail);
	if (avail < tail)
		tail = avail;
	if (!end || tail == 0 || captured > SONDE_CAPTURE_MAX)
		return 0;
	if (bpf_probe_read_user(ev->data + captured, tail & (SONDE_TAIL_MAX * 2 - 1),
				(const void *)(end - tail)))
		return 0;
	return tail;
}

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
 * costs microseconds, so body writes skip it. */
static __always_inline __u64 current_task(__u32 tgid, struct sonde_data_event *ev)
{
	const struct sonde_py_layout *py;

	if (ev->dir != SONDE_DIR_EGRESS)
		return 0;
	py = bpf_map_lookup_elem(&py_procs, &tgid);
	if (!py)
		return 0;
	if (!is_http1_start(ev->data, ev->captured))
		return SONDE_TASK_UNKNOWN;
	return python_task(py);
}

static __always_inline void emit_data(void *ctx, struct sonde_conn_key *key,
				      struct conn_state *state, struct call_args *args, __u32 len)
{
	__u32 zero = 0;
	struct scratch *scratch = bpf_map_lookup_elem(&scratch_buf, &zero);
	struct user_iovec vecs[SONDE_IOV_MAX];
	struct sonde_data_event *ev;
	__u32 captured, tail, nvecs;

	if (!scratch)
		return;
	ev = &scratch->ev;
	nvecs = read_iovs(args, vecs);
	captured = capture(ev, args, vecs, nvecs, len);
	if (state->proto == PROTO_UNKNOWN && !infer_protocol(ctx, key, state, ev->data, captured))
		return;
	tail = capture_tail(ev, args, vecs, nvecs, len, captured);
	fill_header(&ev->hdr, SONDE_EV_DATA, key, state->gen);
	ev->pos = __sync_fetch_and_add(&state->pos[args->dir & 1], len);
	ev->len = len;
	ev->captured = captured;
	ev->tail = tail;
	ev->dir = args->dir;
	ev->syscall = args->syscall;
	ev->task = current_task(key->tgid, ev);
	if (captured < len)
		count(SONDE_CNT_TRUNCATED);
	if (captured > SONDE_CAPTURE_MAX || tail > SONDE_TAIL_MAX)
		return;
	submit(ctx, ev, SONDE_DATA_EVENT_SIZE(captured + tail));
}

/* A failed or empty call ends an HTTP exchange only when it says the
 * connection is gone. */
static __always_inline void note_failure(void *ctx, struct sonde_conn_key *key,
					 struct conn_state *state, struct call_args *args, long ret)
{
	if (state->proto != PROTO_HTTP1)
		return;
	if (ret == 0 && args->dir == SONDE_DIR_INGRESS)
		emit_close(ctx, key, state, SONDE_CLOSE_PEER);
	else if (ret == -ECONNRESET || ret == -EPIPE)
		emit_close(ctx, key, state, SONDE_CLOSE_RESET);
}

/* Only results that carry data or end a connection are worth a lookup:
 * EAGAIN from a non-blocking socket costs nothing more than this test. */
static __always_inline bool worth_tracing(long ret)
{
	return ret >= 0 || ret == -ECONNRESET || ret == -EPIPE;
}

static __always_inline struct pt_regs *user_regs(void)
{
	return (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
}

static __always_inline int trace_call(void *ctx, long ret, struct call_args *args)
{
	struct sonde_conn_key key = { .tgid = bpf_get_current_pid_tgid() >> 32, .fd = args->fd };
	struct conn_state *state;

	if (key.tgid == self_tgid)
		return 0;
	state = traced_conn(&key);
	if (!state)
		return 0;
	if (ret <= 0)
		note_failure(ctx, &key, state, args, ret);
	else
		emit_data(ctx, &key, state, args, (__u32)ret);
	return 0;
}

/* read/write/recvfrom/sendto(fd, buf, len, ...), and with `vectored`
 * readv/writev(fd, iov, iovcnt). */
static __always_inline int exit_buf(void *ctx, long ret, __u8 syscall, __u8 dir, bool vectored)
{
	struct call_args args = { .syscall = syscall, .dir = dir };
	struct pt_regs *regs;

	if (!worth_tracing(ret))
		return 0;
	regs = user_regs();
	args.fd = (__s32)regs->di;
	args.buf = regs->si;
	if (vectored)
		args.iovcnt = (__u32)regs->dx;
	return trace_call(ctx, ret, &args);
}

static __always_inline int exit_iov(void *ctx, long ret, __u8 syscall, __u8 dir)
{
	return exit_buf(ctx, ret, syscall, dir, true);
}

static __always_inline int exit_plain(void *ctx, long ret, __u8 syscall, __u8 dir)
{
	return exit_buf(ctx, ret, syscall, dir, false);
}

/* recvmsg/sendmsg(fd, msghdr, flags): struct user_msghdr has msg_iov at
 * offset 16 and msg_iovlen at 24 on 64-bit. */
static __always_inline int exit_msg(void *ctx, long ret, __u8 syscall, __u8 dir)
{
	struct call_args args = { .syscall = syscall, .dir = dir };
	__u64 msghdr, iovlen = 0;
	struct pt_regs *regs;

	if (!worth_tracing(ret))
		return 0;
	regs = user_regs();
	args.fd = (__s32)regs->di;
	msghdr = regs->si;
	bpf_probe_read_user(&args.buf, sizeof(args.buf), (const void *)(msghdr + 16));
	bpf_probe_read_user(&iovlen, sizeof(iovlen), (const void *)(msghdr + 24));
	args.iovcnt = iovlen > SONDE_IOV_MAX ? SONDE_IOV_MAX : (__u32)iovlen;
	return trace_call(ctx, ret, &args);
}

#define EXIT_PROG(name, kind, sys, dir)                                               \
	SEC("tracepoint/syscalls/sys_exit_" #name)                                    \
	int exit_##name(struct trace_event_raw_sys_exit *ctx)                         \
	{                                                                             \
		return exit_##kind(ctx, ctx->ret, sys, dir);                          \
	}

EXIT_PROG(read, plain, SONDE_SYS_READ, SONDE_DIR_INGRESS)
EXIT_PROG(write, plain, SONDE_SYS_WRITE, SONDE_DIR_EGRESS)
EXIT_PROG(recvfrom, plain, SONDE_SYS_RECVFROM, SONDE_DIR_INGRESS)
EXIT_PROG(sendto, plain, SONDE_SYS_SENDTO, SONDE_DIR_EGRESS)
EXIT_PROG(readv, iov, SONDE_SYS_READV, SONDE_DIR_INGRESS)
EXIT_PROG(writev, iov, SONDE_SYS_WRITEV, SONDE_DIR_EGRESS)
EXIT_PROG(recvmsg, msg, SONDE_SYS_RECVMSG, SONDE_DIR_INGRESS)
EXIT_PROG(sendmsg, msg, SONDE_SYS_SENDMSG, SONDE_DIR_EGRESS)

/* sendfile(out_fd, in_fd, offset, count): only the byte count is known. */
SEC("tracepoint/syscalls/sys_exit_sendfile64")
int exit_sendfile64(struct trace_event_raw_sys_exit *ctx)
{
	struct call_args args = { .syscall = SONDE_SYS_SENDFILE, .dir = SONDE_DIR_EGRESS };

	if (!worth_tracing(ctx->ret))
		return 0;
	args.fd = (__s32)user_regs()->di;
	return trace_call(ctx, ctx->ret, &args);
}

static __always_inline int exit_accept(long ret)
{
	struct sonde_conn_key key = { .tgid = bpf_get_current_pid_tgid() >> 32, .fd = (__s32)ret };
	__u8 one = 1;

	if (ret < 0 || key.tgid == self_tgid)
		return 0;
	if (tcp_sock_of_fd(key.fd))
		track_conn(&key, SONDE_ROLE_SERVER, 0);
	else
		bpf_map_update_elem(&not_tcp, &key, &one, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int exit_accept_(struct trace_event_raw_sys_exit *ctx)
{
	return exit_accept(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int exit_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return exit_accept(ctx->ret);
}

/* Track the socket once the kernel has bound it: on success, or on
 * EINPROGRESS for a non-blocking connect. */
SEC("tracepoint/syscalls/sys_exit_connect")
int exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	struct sonde_conn_key key = { .tgid = bpf_get_current_pid_tgid() >> 32 };
	struct self_end end = {};
	struct sock *sk;
	__u8 one = 1;

	if (ctx->ret != 0 && ctx->ret != -EINPROGRESS)
		return 0;
	key.fd = (__s32)user_regs()->di;
	sk = tcp_sock_of_fd(key.fd);
	if (!sk)
		return 0;
	if (key.tgid != self_tgid) {
		track_conn(&key, SONDE_ROLE_CLIENT, 0);
		return 0;
	}
	end_of(sk, true, &end);
	bpf_map_update_elem(&self_ends, &end, &one, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_close")
int enter_close(struct trace_event_raw_sys_enter *ctx)
{
	struct sonde_conn_key key = {
		.tgid = bpf_get_current_pid_tgid() >> 32,
		.fd = (__s32)ctx->args[0],
	};
	struct conn_state *state = bpf_map_lookup_elem(&conns, &key);

	if (state) {
		if (state->proto == PROTO_HTTP1)
			emit_close(ctx, &key, state, SONDE_CLOSE_LOCAL);
		bpf_map_delete_elem(&conns, &key);
		return 0;
	}
	bpf_map_delete_elem(&not_tcp, &key);
	return 0;
}

/* The agent looks at a program once it has been exec'd: a CPython
 * interpreter gets its sonde_py_layout before it serves anything. */
SEC("tracepoint/sched/sched_process_exec")
int process_exec(void *ctx)
{
	struct sonde_event_header ev = {};
	__u64 id = bpf_get_current_pid_tgid();

	ev.type = SONDE_EV_PROC_EXEC;
	ev.tgid = id >> 32;
	ev.tid = (__u32)id;
	ev.fd = -1;
	ev.ts = bpf_ktime_get_ns();
	submit(ctx, &ev, sizeof(ev));
	return 0;
}

/* Fires per thread; only the last thread of a process reports, so that the
 * agent can end that process's connections and forget its map entries. */
SEC("tracepoint/sched/sched_process_exit")
int process_exit(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct sonde_event_header ev = {};

	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	ev.type = SONDE_EV_PROC_EXIT;
	ev.tgid = BPF_CORE_READ(task, tgid);
	ev.tid = BPF_CORE_READ(task, pid);
	ev.fd = -1;
	ev.ts = bpf_ktime_get_ns();
	submit(ctx, &ev, sizeof(ev));
	return 0;
}
