// SPDX-License-Identifier: GPL-2.0
/*
 * sonde kernel side: syscall tracepoints that follow TCP connections and
 * send the first bytes of every read and write of a connection that speaks
 * a protocol sonde parses (HTTP/1.x, PostgreSQL, Redis) to the agent.
 * This file holds the programs; the headers hold the maps, the capture
 * and submit path, connection lookup, protocol inference, the request an
 * nginx worker writes for, the CPython task walk and the jobs it starts.
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
 * a known protocol never produces another event.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
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
/* Database connections capture more: a pipeline's or a statement's bytes
 * past the capture cannot be paired or shown, and their calls are fewer. */
const volatile __u32 db_capture_bytes = SONDE_DB_CAPTURE_MIN;
const volatile __u64 wakeup_bytes = 256 * 1024;
/* Per-CPU perf buffers instead of the ring buffer, by choice (--buffer
 * perf). */
const volatile bool use_perf_buffer = false;
/* Writes to stdout and stderr of traced processes, as logs: off unless
 * the agent turns them on, and then at most log_capture_bytes of each,
 * and a write costs log_write_cost_ns (1 s / the per-process rate limit)
 * of the process's budget. */
const volatile bool capture_logs = false;
/* Log files are configured: writes to fds in log_fds are log writes. */
const volatile bool capture_log_files = false;
const volatile __u32 log_capture_bytes = 1024;
const volatile __u64 log_write_cost_ns = 1000000000ULL / 10000;
/* Processes whose connections are never traced, by comm. */
const volatile __u32 excluded_count = 0;
const volatile char excluded_comms[SONDE_EXCLUDE_MAX][SONDE_COMM_LEN] = {};
/* Entry points are configured (bpf/jobs.bpf.h): jobs are told, and the
 * tasks that run them marked. */
const volatile bool entry_points = false;

#include "maps.bpf.h"
#include "capture.bpf.h"
#include "conn.bpf.h"
#include "infer.bpf.h"
#include "nginx.bpf.h"
#include "evloop.bpf.h"
#include "pytask.bpf.h"
#include "jobs.bpf.h"

static __always_inline __u32 capture_limit(const struct conn_state *state)
{
	if (state->proto == SONDE_PROTO_POSTGRES || state->proto == SONDE_PROTO_REDIS)
		return db_capture_bytes;
	return capture_bytes;
}

static __always_inline void emit_data(void *ctx, struct sonde_conn_key *key,
				      struct conn_state *state, struct call_args *args, __u32 len)
{
	__u32 zero = 0;
	struct scratch *scratch = bpf_map_lookup_elem(&scratch_buf, &zero);
	struct sonde_data_event *ev;
	struct user_iovec *vecs;
	__u32 captured, tail, nvecs;
	bool pipeline;
	__u64 base;

	if (!scratch)
		return;
	ev = &scratch->ev;
	vecs = scratch->vecs;
	nvecs = read_iovs(args, vecs);
	captured = capture(ev, args, vecs, nvecs, len, capture_limit(state));
	ev->captured = captured;
	ev->dir = args->dir;
	if (state->proto == SONDE_PROTO_UNKNOWN && !infer_protocol(ctx, key, state, ev))
		return;
	tail = capture_tail(ev, args, vecs, nvecs, len, captured);
	fill_header(&ev->hdr, SONDE_EV_DATA, key, state->gen);
	ev->pos = __sync_fetch_and_add(&state->pos[args->dir & 1], len);
	ev->len = len;
	ev->tail = tail;
	ev->syscall = args->syscall;
	ev->proto = state->proto;
	if (state->nginx)
		ev->task = nginx_task(key->tgid, key->fd, ev);
	else if (state->loop)
		ev->task = loop_event_task(key->fd, state, ev);
	else
		ev->task = current_task(key->tgid, ev);
	if (captured < len)
		count(SONDE_CNT_TRUNCATED);
	if (captured > SONDE_CAPTURE_MAX || tail > SONDE_TAIL_MAX)
		return;
	/* Messages past the capture of a pipelined call cannot be skipped by
	 * length as a body can: the rest of the call is sent too, when its
	 * bytes are in one place (a call over several iovecs is not looked
	 * at: a server's head and body, most often). */
	base = captured < len && state->proto == SONDE_PROTO_HTTP1 ? call_base(args, vecs, nvecs) : 0;
	pipeline = base && holds_pipeline(ev);
	if (pipeline) {
		ev->len = captured;
		ev->tail = 0;
		tail = 0;
		count(SONDE_CNT_PIPELINES);
	}
	submit(ctx, ev, SONDE_DATA_EVENT_SIZE(captured + tail));
	if (pipeline)
		emit_rest(ctx, ev, base, len, captured);
}

/* Whether the process may send one more log write now: the budget earns
 * elapsed time, up to a second's worth, and each write spends its cost.
 * Threads of one process race on the budget: the limit is approximate,
 * the count of writes dropped exact. */
static __always_inline bool log_budget_allows(struct log_budget *b)
{
	__u64 now = bpf_ktime_get_ns();
	__u64 credit = b->credit_ns + (now - b->last_ns);

	b->last_ns = now;
	if (credit > 1000000000ULL)
		credit = 1000000000ULL;
	if (credit < log_write_cost_ns) {
		b->credit_ns = credit;
		return false;
	}
	b->credit_ns = credit - log_write_cost_ns;
	return true;
}

/* A write to stdout or stderr of a traced process: its first bytes, as a
 * SONDE_EV_LOG record, with the CPython task or libuv callback that
 * wrote it. */
static __always_inline void emit_log(void *ctx, struct sonde_conn_key *key,
				     struct call_args *args, __u32 len)
{
	struct log_budget *budget = bpf_map_lookup_elem(&log_procs, &key->tgid);
	__u32 zero = 0;
	struct scratch *scratch;
	struct sonde_data_event *ev;
	struct sonde_py_layout *py;
	__u32 nvecs, captured;

	if (!budget)
		return;
	if (!log_budget_allows(budget)) {
		count(SONDE_CNT_LOG_DROPPED);
		return;
	}
	scratch = bpf_map_lookup_elem(&scratch_buf, &zero);
	if (!scratch)
		return;
	ev = &scratch->ev;
	nvecs = read_iovs(args, scratch->vecs);
	captured = capture(ev, args, scratch->vecs, nvecs, len, log_capture_bytes);
	fill_header(&ev->hdr, SONDE_EV_LOG, key, 0);
	ev->pos = 0;
	ev->len = len;
	ev->captured = captured;
	ev->tail = 0;
	ev->dir = SONDE_DIR_EGRESS;
	ev->syscall = args->syscall;
	ev->proto = 0;
	py = bpf_map_lookup_elem(&py_procs, &key->tgid);
	ev->task = py ? python_event_task(py) : loop_log_task(main_thread_loop());
	if (captured < len)
		count(SONDE_CNT_LOG_TRUNCATED);
	count(SONDE_CNT_LOG_WRITES);
	if (captured > SONDE_CAPTURE_MAX)
		return;
	submit(ctx, ev, SONDE_DATA_EVENT_SIZE(captured));
}

/* stdout, stderr, or a configured log file the process has open. */
static __always_inline bool is_log_write(struct sonde_conn_key *key, const struct call_args *args)
{
	if (args->syscall != SONDE_SYS_WRITE && args->syscall != SONDE_SYS_WRITEV)
		return false;
	if (args->fd == 1 || args->fd == 2)
		return true;
	return capture_log_files && bpf_map_lookup_elem(&log_fds, key);
}

/* A failed or empty call ends an exchange only when it says the
 * connection is gone. A global function, verified once, and kept out of
 * the data programs' hot path; it must allow for NULL pointers. */
__noinline int note_failure(struct __u64 *ctx, struct sonde_conn_key *key,
			    struct conn_state *state, long ret, __u8 dir)
{
	if (!ctx || !key || !state || !proto_decided(state))
		return 0;
	if (ret == 0 && dir == SONDE_DIR_INGRESS)
		emit_close(ctx, key, state, SONDE_CLOSE_PEER);
	else if (ret == -ECONNRESET || ret == -EPIPE)
		emit_close(ctx, key, state, SONDE_CLOSE_RESET);
	return 0;
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

static __always_inline enum loop_call_kind call_kind(const struct call_args *args, long ret)
{
	if (args->dir == SONDE_DIR_INGRESS)
		return ret > 0 ? LOOP_CALL_READ : LOOP_CALL_READ_END;
	return ret >= 0 ? LOOP_CALL_WRITE : LOOP_CALL_WRITE_FAILED;
}

static __always_inline int trace_call(void *ctx, long ret, struct call_args *args)
{
	struct sonde_conn_key key = { .tgid = bpf_get_current_pid_tgid() >> 32, .fd = args->fd };
	struct conn_state *state;

	if (key.tgid == self_tgid)
		return 0;
	state = tcp_conn(&key);
	if (!state) {
		loop_call(main_thread_loop(), key.fd, 0, call_kind(args, ret));
		if (capture_logs && ret > 0 && is_log_write(&key, args))
			emit_log(ctx, &key, args, (__u32)ret);
		return 0;
	}
	/* A written-off connection costs one lookup; its process's loop, if
	 * any, still sees the call start a callback. */
	if (state->loop)
		loop_call(main_thread_loop(), key.fd, state->loop_task, call_kind(args, ret));
	if (state->proto == SONDE_PROTO_NONE)
		return 0;
	if (ret <= 0)
		note_failure(ctx, &key, state, ret, args->dir);
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
	/* read_iovs takes at most SONDE_IOV_MAX: a bound here too would
	 * make the verifier follow each count apart. */
	args.iovcnt = iovlen > 0xffffffffu ? 0xffffffffu : (__u32)iovlen;
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
	loop_call_fd(&(struct sonde_conn_key){ key.tgid, (__s32)user_regs()->di }, LOOP_CALL_OTHER);
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

/* Whether the socket's peer is on this host for certain: at a loopback
 * address, or at the socket's own. */
static __always_inline bool peer_on_this_host(struct sock *sk)
{
	/* As end_of gives them, IPv4 v4-mapped: loopback is ::1, or
	 * ::ffff:127.x.y.z, whose low word (little-endian) holds 0xffff0000
	 * below the 127. */
	struct self_end own = {}, peer = {};
	__u64 own_high, own_low, high, low;

	end_of(sk, true, &own);
	end_of(sk, false, &peer);
	__builtin_memcpy(&own_high, own.addr, 8);
	__builtin_memcpy(&own_low, own.addr + 8, 8);
	__builtin_memcpy(&high, peer.addr, 8);
	__builtin_memcpy(&low, peer.addr + 8, 8);
	if (high == 0 && (low == bpf_cpu_to_be64(1) ||
			  ((low >> 32 & 0xff) == 127 && (__u32)low == 0xffff0000)))
		return true;
	return high == own_high && low == own_low;
}

/* Track the socket once the kernel has bound it: on success, or on
 * EINPROGRESS for a non-blocking connect. A client end written off is
 * announced, so that its server on this host does not wait for it to show
 * with its first request: always for a process excluded by name, and for
 * one the agent's scope rules leave out (every other process of the
 * host, whose connects otherwise cost one lookup) when its peer is surely
 * on this host. */
SEC("tracepoint/syscalls/sys_exit_connect")
int exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	struct sonde_conn_key key = { .tgid = bpf_get_current_pid_tgid() >> 32 };
	struct self_conn conn = {};
	struct conn_state *state;
	struct sock *sk;
	__u8 one = 1;

	if (ctx->ret != 0 && ctx->ret != -EINPROGRESS)
		return 0;
	key.fd = (__s32)user_regs()->di;
	sk = tcp_sock_of_fd(key.fd);
	if (!sk)
		return 0;
	if (key.tgid != self_tgid) {
		state = track_conn(&key, SONDE_ROLE_CLIENT, 0);
		if (state && state->loop)
			loop_connect(state);
		if (state && state->proto == SONDE_PROTO_NONE &&
		    (!bpf_map_lookup_elem(&scoped_out, &key.tgid) || peer_on_this_host(sk)))
			send_conn_event(ctx, &key, state, sk);
		return 0;
	}
	end_of(sk, true, &conn.own);
	end_of(sk, false, &conn.peer);
	bpf_map_update_elem(&self_ends, &conn, &one, BPF_ANY);
	return 0;
}

/* A connect finishing: libuv asks for its result first thing in the
 * callback. */
SEC("tracepoint/syscalls/sys_exit_getsockopt")
int exit_getsockopt(struct trace_event_raw_sys_exit *ctx)
{
	struct sonde_conn_key key = { .tgid = bpf_get_current_pid_tgid() >> 32 };

	if (ctx->ret != 0)
		return 0;
	key.fd = (__s32)user_regs()->di;
	loop_call_fd(&key, LOOP_CALL_OTHER);
	return 0;
}

/* epoll_wait, epoll_pwait, epoll_pwait2 (epfd, events, maxevents, ...).
 * Most processes polling are not libuv loops: the loop is looked up
 * before the user registers are. */
#define POLL_EXIT_PROG(name)                                                          \
	SEC("tracepoint/syscalls/sys_exit_" #name)                                    \
	int exit_##name(struct trace_event_raw_sys_exit *ctx)                         \
	{                                                                             \
		struct sonde_loop *loop = main_thread_loop();                         \
                                                                                      \
		if (loop)                                                             \
			loop_polled(loop, ctx->ret, user_regs()->si);                 \
		return 0;                                                             \
	}

POLL_EXIT_PROG(epoll_wait)
POLL_EXIT_PROG(epoll_pwait)
POLL_EXIT_PROG(epoll_pwait2)

struct alias_search {
	struct file **fds;
	__u64 gen;    /* the connection's */
	__u32 tgid;
	__s32 fd;     /* the fd it is tracked under, being closed */
	__u32 slots;
	__s32 found;  /* an alias of it that still names its socket, or -1 */
};

/* A bpf_loop callback, verified once for every slot. */
static long find_alias(__u32 fd, void *arg)
{
	struct alias_search *search = arg;
	struct sonde_conn_key key = { .tgid = search->tgid, .fd = (__s32)fd };
	struct conn_alias *alias;
	__u64 file = 0;

	if (fd >= search->slots)
		return 1;
	alias = bpf_map_lookup_elem(&conn_aliases, &key);
	if (!alias || alias->fd != search->fd || alias->gen != search->gen ||
	    bpf_probe_read_kernel(&file, sizeof(file), &search->fds[fd]) || file != alias->file)
		return 0;
	search->found = key.fd;
	return 1;
}

/* The connection goes on under an alias that still names its socket, if
 * there is one: the alias takes its entry, and the agent is told. */
static __always_inline bool move_to_alias(void *ctx, struct sonde_conn_key *key,
					  struct conn_state *state)
{
	struct alias_search search = {
		.gen = state->gen, .tgid = key->tgid, .fd = key->fd, .found = -1
	};
	struct sonde_conn_key heir = { .tgid = key->tgid };
	struct sonde_moved_event ev = {};
	struct conn_state moved = *state;

	search.slots = tracked_fd_slots(key->tgid, &search.fds);
	bpf_loop(FDS_SWEPT_MAX, find_alias, &search, 0);
	if (search.found < 0)
		return false;
	heir.fd = search.found;
	if (bpf_map_update_elem(&conns, &heir, &moved, BPF_ANY)) {
		count(SONDE_CNT_LOST_CONN_MAP);
		return false;
	}
	bpf_map_delete_elem(&conn_aliases, &heir);
	if (proto_decided(&moved)) {
		fill_header(&ev.hdr, SONDE_EV_CONN_MOVED, key, moved.gen);
		ev.new_fd = heir.fd;
		submit(ctx, &ev, sizeof(ev));
	}
	bpf_map_delete_elem(&conns, key);
	return true;
}

/* The fd no longer names what it named: its connection ends here, unless
 * another fd of the process names its socket too (and `may_move`), and
 * whatever the fd names next is classified anew. Entries are looked up
 * before they are deleted: a delete takes the map's bucket lock, and most
 * fds closed have no entry. */
static __always_inline void conn_fd_closed(void *ctx, struct sonde_conn_key *key, bool may_move)
{
	struct conn_state *state = bpf_map_lookup_elem(&conns, key);

	if (state) {
		if (may_move && state->shared && move_to_alias(ctx, key, state))
			return;
		if (proto_decided(state))
			emit_close(ctx, key, state, SONDE_CLOSE_LOCAL);
		bpf_map_delete_elem(&conns, key);
		return;
	}
	if (bpf_map_lookup_elem(&not_tcp, key))
		bpf_map_delete_elem(&not_tcp, key);
}

static __always_inline void fd_closed(void *ctx, __s32 fd)
{
	struct sonde_conn_key key = { .tgid = bpf_get_current_pid_tgid() >> 32, .fd = fd };
	struct sonde_loop *loop = main_thread_loop();

	if (loop)
		loop_closed(loop, key.fd);
	conn_fd_closed(ctx, &key, true);
}

SEC("tracepoint/syscalls/sys_enter_close")
int enter_close(struct trace_event_raw_sys_enter *ctx)
{
	fd_closed(ctx, (__s32)ctx->args[0]);
	return 0;
}

/* dup2/dup3(oldfd, newfd) close what newfd named without a close(): a
 * socket's connection ends, and newfd, a socket now or no longer one, is
 * not taken for what it was (a server handing a connection to a child's
 * stdin and stdout, a client reconnecting onto the same fd). dup2 of an
 * fd onto itself closes nothing. */
static __always_inline int exit_dup(void *ctx, long ret)
{
	if (ret >= 0 && ret != (__s32)user_regs()->di)
		fd_closed(ctx, (__s32)ret);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_dup2")
int exit_dup2(struct trace_event_raw_sys_exit *ctx)
{
	return exit_dup(ctx, ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_dup3")
int exit_dup3(struct trace_event_raw_sys_exit *ctx)
{
	return exit_dup(ctx, ctx->ret);
}

/* Whether a variable, read at var, is one the agent reads from the exec
 * event: OTEL_*, TRACEPARENT, TRACESTATE. */
static __always_inline bool env_wanted(const char *var)
{
	if (var[0] == 'O')
		return var[1] == 'T' && var[2] == 'E' && var[3] == 'L' && var[4] == '_';
	if (var[0] != 'T' || var[1] != 'R' || var[2] != 'A' || var[3] != 'C' || var[4] != 'E')
		return false;
	if (var[5] == 'S')
		return var[6] == 'T' && var[7] == 'A' && var[8] == 'T' && var[9] == 'E' &&
		       var[10] == '=';
	return var[5] == 'P' && var[6] == 'A' && var[7] == 'R' && var[8] == 'E' && var[9] == 'N' &&
	       var[10] == 'T' && var[11] == '=';
}

/* Appends the wanted variables of the environment [at, end) after the
 * argv. Each is read where it would go and kept by moving on past it;
 * a variable longer than one read is skipped over read by read. Returns
 * whether every variable was looked at and every wanted one kept whole. */
static __always_inline bool copy_env(struct sonde_exec_event *ev, __u64 at, __u64 end)
{
	__u32 used = ev->args_len;
	bool var_start = true, whole = true;

	for (int i = 0; i < SONDE_EXEC_ENV_READS; i++) {
		char *to;
		long n;

		if (at >= end)
			return whole;
		if (used > SONDE_EXEC_ARGS_MAX + SONDE_EXEC_ENV_MAX)
			return false;
		to = ev->strings + used;
		n = bpf_probe_read_user_str(to, SONDE_EXEC_VAR_MAX, (const void *)at);
		if (n <= 0)
			return false;
		if (n < SONDE_EXEC_VAR_MAX) {
			if (var_start && env_wanted(to)) {
				if (used + n <= SONDE_EXEC_ARGS_MAX + SONDE_EXEC_ENV_MAX)
					used += n;
				else
					whole = false;
				ev->env_len = (__u16)(used - ev->args_len);
			}
			at += n;
			var_start = true;
		} else {
			if (var_start && env_wanted(to))
				whole = false;
			at += n - 1;
			var_start = false;
		}
	}
	return at >= end;
}

_Static_assert(sizeof(struct sonde_exec_event) <= sizeof(struct scratch),
	       "an exec event is built in the per-CPU scratch");

/* The sched_process_exec tracepoint's record, as its format file says. */
struct exec_tp_record {
	__u64 common;
	__u32 filename_loc; /* __data_loc: the string's offset in the low 16 bits */
	__s32 pid;
	__s32 old_pid;
};

struct fd_sweep {
	void *ctx;
	struct file **fds;
	__u32 tgid;
	__u32 first;
	__u32 end; /* one past the last fd looked at */
};

/* One slot of the fd table: an empty one is an fd just closed, or one
 * never open. A bpf_loop callback, verified once for every slot. */
static long sweep_fd(__u32 i, void *arg)
{
	struct fd_sweep *sweep = arg;
	__u32 fd = sweep->first + i;
	struct sonde_conn_key key = { .tgid = sweep->tgid, .fd = (__s32)fd };
	struct file *file = NULL;

	if (fd >= sweep->end)
		return 1;
	if (!bpf_probe_read_kernel(&file, sizeof(file), &sweep->fds[fd]) && !file)
		conn_fd_closed(sweep->ctx, &key, false);
	return 0;
}

/* An exec closes the fds marked close-on-exec, and close_range a range,
 * without a close() each. Their connections end (even one whose socket
 * another fd still names: the search for it would be a bpf_loop in a
 * bpf_loop's callback), and their numbers are
 * classified anew, so that a file the process opens there next is not
 * taken for an old connection's bytes. Only a process that has had a TCP
 * socket tracked is looked through, from `first` up to `last` and the
 * highest fd tracked: a few slots, most often, at ~70 ns each. */
static __always_inline void closed_fds(void *ctx, __u32 first, __u32 last)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct fd_sweep sweep = { .ctx = ctx, .tgid = tgid, .first = first };

	sweep.end = tracked_fd_slots(tgid, &sweep.fds);
	if (first >= sweep.end)
		return;
	if (last < sweep.end - 1)
		sweep.end = last + 1;
	bpf_loop(FDS_SWEPT_MAX, sweep_fd, &sweep, 0);
}

#define CLOSE_RANGE_CLOEXEC (1U << 2)

/* close_range(first, last, flags); with CLOSE_RANGE_CLOEXEC it only marks
 * the fds. */
SEC("tracepoint/syscalls/sys_exit_close_range")
int exit_close_range(struct trace_event_raw_sys_exit *ctx)
{
	struct pt_regs *regs = user_regs();

	if (ctx->ret == 0 && !(regs->dx & CLOSE_RANGE_CLOEXEC))
		closed_fds(ctx, (__u32)regs->di, (__u32)regs->si);
	return 0;
}

/* The agent looks at a program once it has been exec'd: a CPython
 * interpreter gets its sonde_py_layout before it serves anything. The
 * event carries what the program was given, read now (see struct
 * sonde_exec_event). */
SEC("tracepoint/sched/sched_process_exec")
int process_exec(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 id = bpf_get_current_pid_tgid();
	__u32 zero = 0;
	struct scratch *scratch = bpf_map_lookup_elem(&scratch_buf, &zero);
	struct sonde_exec_event *ev;
	__u64 start, len, env_len;
	const char *filename;

	/* Another program: the agent decides it anew. */
	bpf_map_delete_elem(&scoped_out, &(__u32){ id >> 32 });
	bpf_map_delete_elem(&loops, &(__u32){ id >> 32 });
	bpf_map_delete_elem(&nginx_callers, &(__u32){ id >> 32 });
	closed_fds(ctx, 0, ~0U);
	if (!scratch)
		return 0;
	ev = (struct sonde_exec_event *)&scratch->ev;
	ev->hdr.type = SONDE_EV_PROC_EXEC;
	ev->hdr.tgid = id >> 32;
	ev->hdr.tid = (__u32)id;
	ev->hdr.fd = -1;
	ev->hdr.conn_gen = 0;
	ev->hdr.ts = bpf_ktime_get_ns();
	ev->cgroup_id = bpf_get_current_cgroup_id();
	filename = (char *)ctx + (((struct exec_tp_record *)ctx)->filename_loc & 0xffff);
	if (bpf_probe_read_kernel_str(ev->filename, sizeof(ev->filename), filename) < 0)
		ev->filename[0] = '\0';
	start = BPF_CORE_READ(task, mm, arg_start);
	len = BPF_CORE_READ(task, mm, arg_end) - start;
	if (len > SONDE_EXEC_ARGS_MAX)
		len = SONDE_EXEC_ARGS_MAX;
	if (len == 0 || bpf_probe_read_user(ev->strings, (__u32)len, (const void *)start))
		len = 0;
	ev->args_len = (__u16)len;
	ev->env_len = 0;
	ev->env_whole = copy_env(ev, BPF_CORE_READ(task, mm, env_start),
				 BPF_CORE_READ(task, mm, env_end));
	env_len = ev->env_len;
	if (env_len > SONDE_EXEC_ENV_MAX)
		env_len = 0;
	submit(ctx, ev, SONDE_EXEC_EVENT_SIZE(len + env_len));
	return 0;
}

/* Fires per thread; only the last thread of a process reports, so that the
 * agent can end that process's connections and forget its map entries,
 * and a job's thread, whose job ends. */
SEC("tracepoint/sched/sched_process_exit")
int process_exit(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct sonde_exit_event ev = {};

	if (entry_points)
		job_thread_exit(ctx, (__u32)bpf_get_current_pid_tgid());
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	ev.hdr.type = SONDE_EV_PROC_EXIT;
	ev.hdr.tgid = BPF_CORE_READ(task, tgid);
	/* Its pid may be another process's next. */
	bpf_map_delete_elem(&scoped_out, &ev.hdr.tgid);
	bpf_map_delete_elem(&loops, &ev.hdr.tgid);
	bpf_map_delete_elem(&nginx_callers, &ev.hdr.tgid);
	bpf_map_delete_elem(&conn_procs, &ev.hdr.tgid);
	ev.hdr.tid = BPF_CORE_READ(task, pid);
	ev.hdr.fd = -1;
	ev.hdr.ts = bpf_ktime_get_ns();
	/* do_exit sets it before this tracepoint: the group's code for exit_group. */
	ev.exit_status = BPF_CORE_READ(task, exit_code);
	submit(ctx, &ev, sizeof(ev));
	return 0;
}

