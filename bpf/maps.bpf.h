/* SPDX-License-Identifier: GPL-2.0 */
/* The kernel side's maps and per-connection state, and its counters. */
/* Included by sonde.bpf.c, after the configuration it reads: the kernel
 * side is one compilation unit, split by concern. */
#ifndef SONDE_MAPS_BPF_H
#define SONDE_MAPS_BPF_H

struct conn_state {
	__u64 gen;
	__u64 pos[2]; /* bytes moved so far, per enum sonde_dir */
	__u8 role;    /* enum sonde_role */
	__u8 proto;   /* enum sonde_proto: UNKNOWN until the first data */
	__u8 probes_left;
	__u8 nginx;   /* the process is nginx: see nginx.bpf.h */
	__u8 loop;    /* the process runs a libuv loop: see evloop.bpf.h */
	__u8 shared;  /* another fd of the process names its socket too:
	                 see conn_aliases */
	__u8 pad[2];
	__u64 loop_task; /* the task its main thread's callbacks started by
	                    this connection run: a server connection's own
	                    (gen), a client connection's request's; 0 unknown */
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
 * limit by up to SONDE_CAPTURE_MAX bytes, which the verifier demands, and
 * the call's iovecs: on the stack they take a vectored data program and
 * the CPython walk it calls past 512 bytes, which Linux 6.1's verifier
 * refuses for a chain of calls. */
struct scratch {
	struct sonde_data_event ev;
	__u8 spill[SONDE_CAPTURE_MAX];
	struct user_iovec vecs[SONDE_IOV_MAX];
};

/* Every TCP socket end of the host sonde has seen, traced or written off.
 * LRU: the table is one per host, so when it is full the socket ends used
 * least recently (idle connections, however many a neighbour holds) give
 * way to new ones rather than new connections going untraced; an evicted
 * end that moves data again is tracked anew, as one open before sonde
 * started. The agent sizes it (--max-connections). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sonde_conn_key);
	__type(value, struct conn_state);
} conns SEC(".maps");

/* Processes the agent's scope rules leave out (tgid -> 1): their new
 * connections are written off as they are made. Set by the agent when it
 * decides, forgotten when the process runs another program or exits; LRU
 * because an entry lost only costs the agent dropping what the kernel
 * sends. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u8);
} scoped_out SEC(".maps");

/* nginx workers that have written a request upstream (tgid -> 1): only
 * their response heads need a task (nginx.bpf.h). Forgotten when the
 * process runs another program or exits; LRU because an entry lost only
 * leaves a response head unread, whose upstream calls then find no parent
 * by task, never a wrong one. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} nginx_callers SEC(".maps");

/* Processes that have had a TCP socket tracked (tgid -> one past the
 * highest fd tracked): at an exec, only their fd tables are looked
 * through for the sockets it closed, and only below that fd
 * (sonde.bpf.c). Forgotten when the process exits; LRU because an entry
 * lost only leaves such sockets to end at the process's exit. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} conn_procs SEC(".maps");

/* An fd naming a socket that another fd of its process, with an entry
 * in conns, names too: a dup of it, or the stdin and stdout an
 * inetd-style server is given. Its calls are that connection's, reported
 * under that fd. The entry holds while the fd still names the file and
 * the connection has the same generation; LRU because a stale entry is
 * only found stale and dropped. */
struct conn_alias {
	__s32 fd;     /* the fd the connection is tracked under */
	__u32 pad;
	__u64 gen;    /* its conn_state.gen */
	__u64 file;   /* the struct file both fds name */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct sonde_conn_key);
	__type(value, struct conn_alias);
} conn_aliases SEC(".maps");

/* fds found not to be TCP sockets; close() forgets them. LRU because
 * processes that exit never close. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sonde_conn_key);
	__type(value, __u8);
} not_tcp SEC(".maps");

/* One end of a connection, v4 as v4-mapped v6. */
struct self_end {
	__u8 addr[16];
	__u16 port;
	__u16 pad;
};

/* sonde's own connections (its exporter's), by both ends: a server on
 * this host that accepts one of them, a local collector, is not traced:
 * each export would make a span to export. Both ends, since another
 * process's later connection may have the same local port (an exporter
 * retrying a dead collector leaves hundreds). */
struct self_conn {
	struct self_end own;  /* sonde's end */
	struct self_end peer; /* the collector's */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct self_conn);
	__type(value, __u8);
} self_ends SEC(".maps");

/* Processes whose stdout and stderr are captured (when logs are on): any
 * process once one of its connections speaks a protocol sonde parses.
 * The value is the process's write budget for its rate limit. */
struct log_budget {
	__u64 last_ns; /* when the budget was last looked at */
	__u64 credit_ns; /* earned time, at most a second; a write costs log_write_cost_ns */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct log_budget);
} log_procs SEC(".maps");

/* Files named in the agent's configuration, as a traced process has them
 * open (filled by the agent): writes to them are log writes too. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct sonde_conn_key);
	__type(value, __u8);
} log_fds SEC(".maps");

/* CPython processes, filled by the agent: see struct sonde_py_layout. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct sonde_py_layout);
} py_procs SEC(".maps");

/* libuv processes, filled by the agent: see struct sonde_loop. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct sonde_loop);
} loops SEC(".maps");

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

/* The connection speaks a protocol sonde parses: its events are sent. */
static __always_inline bool proto_decided(const struct conn_state *state)
{
	return state->proto != SONDE_PROTO_UNKNOWN && state->proto != SONDE_PROTO_NONE;
}

#endif
