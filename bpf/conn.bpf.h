/* SPDX-License-Identifier: GPL-2.0 */
/* Connections: {tgid, fd} to a TCP socket's state, sockets not worth
 * tracing, excluded processes, and sonde's own ends. */
/* Included by sonde.bpf.c, after the configuration it reads: the kernel
 * side is one compilation unit, split by concern. */
#ifndef SONDE_CONN_BPF_H
#define SONDE_CONN_BPF_H

/* current->files->fdt->fd[fd], or NULL. */
static __always_inline struct file *file_of_fd(__s32 fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = NULL;

	if (fd < 0 || (__u32)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]))
		return NULL;
	return file;
}

/* The file as a TCP (v4 or v6) sock, or NULL. */
static __always_inline struct sock *tcp_sock_of_file(struct file *file)
{
	struct socket *sock;
	struct sock *sk;
	__u16 family;

	if (!file)
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

static __always_inline struct sock *tcp_sock_of_fd(__s32 fd)
{
	return tcp_sock_of_file(file_of_fd(fd));
}

/* References to the file: one from each fd naming it, in any process. */
static __always_inline long file_refs(struct file *file)
{
	if (bpf_core_field_exists(file->f_count))
		return BPF_CORE_READ(file, f_count.counter);
	return BPF_CORE_READ((struct file___ref *)file, f_ref.refcnt.counter) + 1;
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

static __always_inline bool comm_excluded(const char *comm)
{
	for (__u32 i = 0; i < SONDE_EXCLUDE_MAX && i < excluded_count; i++) {
		if (comm_equal(comm, i)) {
			count(SONDE_CNT_EXCLUDED_CONNS);
			return true;
		}
	}
	return false;
}

static __always_inline bool scope_excluded(__u32 tgid)
{
	if (!bpf_map_lookup_elem(&scoped_out, &tgid))
		return false;
	count(SONDE_CNT_EXCLUDED_CONNS);
	return true;
}

/* nginx's master and workers keep this name when they retitle
 * themselves: the title is argv, not comm. */
static __always_inline bool comm_is_nginx(const char *comm)
{
	return comm[0] == 'n' && comm[1] == 'g' && comm[2] == 'i' && comm[3] == 'n' &&
	       comm[4] == 'x' && comm[5] == '\0';
}

/* Raises the process's highest fd tracked (conn_procs) to this one.
 * Threads may race: the compare-and-swap keeps the highest. */
static __always_inline void note_conn_fd(struct sonde_conn_key *key)
{
	__u64 *below = bpf_map_lookup_elem(&conn_procs, &key->tgid);
	__u64 want = (__u32)key->fd + 1;

	if (!below) {
		bpf_map_update_elem(&conn_procs, &key->tgid, &want, BPF_NOEXIST);
		below = bpf_map_lookup_elem(&conn_procs, &key->tgid);
	}
	for (int i = 0; below && i < 4; i++) {
		__u64 seen = *below;

		if (seen >= want || __sync_val_compare_and_swap(below, seen, want) == seen)
			return;
	}
}

/* The process's name is read once, for both: connections of processes
 * excluded by name or by the agent's scope rules are written off, so
 * their calls cost one lookup; an nginx worker's have
 * their requests read (nginx.bpf.h). A libuv process's are followed
 * through its loop's callbacks (evloop.bpf.h), from the first. */
static __always_inline struct conn_state *
track_conn(struct sonde_conn_key *key, __u8 role, __u8 probes)
{
	char comm[SONDE_COMM_LEN];
	struct conn_state fresh = {
		.gen = bpf_ktime_get_ns(),
		.role = role,
		.probes_left = probes,
	};

	bpf_get_current_comm(comm, sizeof(comm));
	fresh.proto = comm_excluded(comm) || scope_excluded(key->tgid) ? SONDE_PROTO_NONE
								       : SONDE_PROTO_UNKNOWN;
	fresh.nginx = comm_is_nginx(comm);
	fresh.loop = bpf_map_lookup_elem(&loops, &key->tgid) != NULL;
	if (fresh.loop && role == SONDE_ROLE_SERVER)
		fresh.loop_task = fresh.gen;

	bpf_map_delete_elem(&not_tcp, key);
	if (bpf_map_update_elem(&conns, key, &fresh, BPF_ANY)) {
		count(SONDE_CNT_LOST_CONN_MAP);
		return NULL;
	}
	note_conn_fd(key);
	return bpf_map_lookup_elem(&conns, key);
}

/* The most slots of a process's fd table looked through at once. */
#define FDS_SWEPT_MAX 1024

/* The slots of the current process's fd table that may hold an fd sonde
 * tracks: those below its highest fd tracked (conn_procs), or none. */
static __always_inline __u32 tracked_fd_slots(__u32 tgid, struct file ***fds)
{
	__u64 *tracked_below = bpf_map_lookup_elem(&conn_procs, &tgid);
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt;
	__u32 slots;

	if (!tracked_below)
		return 0;
	fdt = BPF_CORE_READ(task, files, fdt);
	*fds = BPF_CORE_READ(fdt, fd);
	slots = BPF_CORE_READ(fdt, max_fds);
	return *tracked_below < slots ? (__u32)*tracked_below : slots;
}

/* The connection key->fd is an alias of (conn_aliases), with key->fd
 * made that connection's fd; NULL when it is none, or no longer one. */
static __always_inline struct conn_state *aliased_conn(struct sonde_conn_key *key)
{
	struct conn_alias *alias = bpf_map_lookup_elem(&conn_aliases, key);
	struct sonde_conn_key owner = { .tgid = key->tgid };
	struct conn_state *state;

	if (!alias)
		return NULL;
	owner.fd = alias->fd;
	state = bpf_map_lookup_elem(&conns, &owner);
	if (state && state->gen == alias->gen && (__u64)file_of_fd(key->fd) == alias->file) {
		key->fd = owner.fd;
		return state;
	}
	bpf_map_delete_elem(&conn_aliases, key);
	return NULL;
}

struct twin_search {
	struct file **fds;
	__u64 file;   /* the socket's */
	__u32 tgid;
	__s32 fd;     /* the fd being classified */
	__u32 slots;
	__s32 found;  /* another fd of the file with a conns entry, or -1 */
};

/* A bpf_loop callback, verified once for every slot. */
static long find_tracked_twin(__u32 fd, void *arg)
{
	struct twin_search *search = arg;
	struct sonde_conn_key key = { .tgid = search->tgid, .fd = (__s32)fd };
	__u64 file = 0;

	if (fd >= search->slots)
		return 1;
	if (key.fd == search->fd || bpf_probe_read_kernel(&file, sizeof(file), &search->fds[fd]) ||
	    file != search->file || !bpf_map_lookup_elem(&conns, &key))
		return 0;
	search->found = key.fd;
	return 1;
}

/* The connection tracked under another fd of the process that names the
 * same socket, which key->fd becomes an alias of, and key->fd that fd.
 * Only a file with more references than this fd's is looked for. */
static __always_inline struct conn_state *alias_to_twin(struct sonde_conn_key *key,
							 struct file *file)
{
	struct twin_search search = {
		.file = (__u64)file, .tgid = key->tgid, .fd = key->fd, .found = -1
	};
	struct sonde_conn_key twin = { .tgid = key->tgid };
	struct conn_alias alias = { .file = (__u64)file };
	struct conn_state *state;

	if (file_refs(file) < 2)
		return NULL;
	search.slots = tracked_fd_slots(key->tgid, &search.fds);
	if (!search.slots)
		return NULL;
	bpf_loop(FDS_SWEPT_MAX, find_tracked_twin, &search, 0);
	if (search.found < 0)
		return NULL;
	twin.fd = search.found;
	state = bpf_map_lookup_elem(&conns, &twin);
	if (!state)
		return NULL;
	alias.fd = twin.fd;
	alias.gen = state->gen;
	if (bpf_map_update_elem(&conn_aliases, key, &alias, BPF_ANY))
		return NULL;
	state->shared = 1;
	note_conn_fd(key);
	key->fd = twin.fd;
	return state;
}

/* Whether the fd is a TCP connection's, at its first call or as an
 * alias: see conn_of_unknown_fd. */
static __always_inline bool classify_fd(struct sonde_conn_key *key)
{
	struct file *file;
	__u8 one = 1;

	if (aliased_conn(key))
		return true;
	file = file_of_fd(key->fd);
	if (!tcp_sock_of_file(file)) {
		bpf_map_update_elem(&not_tcp, key, &one, BPF_ANY);
		return false;
	}
	return alias_to_twin(key, file) ||
	       track_conn(key, SONDE_ROLE_UNKNOWN, SONDE_PREEXISTING_PROBES) != NULL;
}

/* Whether an fd with neither a conns nor a not_tcp entry is a TCP
 * connection's, with key->fd made the connection's own fd when it is an
 * alias. An fd seen for the first time (opened before sonde started, a
 * dup, or not a socket at all) is classified once and remembered either
 * way. A global function, verified once, and kept out of the data
 * programs' hot path; it must allow for a NULL key, and works on a copy
 * on its stack: Linux 6.1 takes no other memory for a map key. */
__noinline int conn_of_unknown_fd(struct sonde_conn_key *key)
{
	struct sonde_conn_key own;

	if (!key)
		return 0;
	own = *key;
	if (!classify_fd(&own))
		return 0;
	key->fd = own.fd;
	return 1;
}

/* State of a TCP connection, traced or written off (SONDE_PROTO_NONE),
 * or NULL for any other fd; key->fd becomes the connection's own when
 * it is an alias. */
static __always_inline struct conn_state *tcp_conn(struct sonde_conn_key *key)
{
	struct conn_state *state = bpf_map_lookup_elem(&conns, key);

	if (state)
		return state;
	if (bpf_map_lookup_elem(&not_tcp, key) || !conn_of_unknown_fd(key))
		return NULL;
	return bpf_map_lookup_elem(&conns, key);
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

/* The process is traced from now on: its stdout and stderr too, when logs
 * are on. A full budget to start with. */
static __always_inline void note_traced_proc(__u32 tgid)
{
	struct log_budget fresh = { .last_ns = bpf_ktime_get_ns(), .credit_ns = 1000000000ULL };

	if (capture_logs)
		bpf_map_update_elem(&log_procs, &tgid, &fresh, BPF_NOEXIST);
}

/* The parent's tgid when the current process runs its parent's program:
 * it has not exec'd since the fork and runs the same executable file (a
 * process reparented to a reaper running another program does not), or
 * 0. */
static __always_inline __u32 parent_running_same_program(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct task_struct *parent = BPF_CORE_READ(task, real_parent);
	struct file *exe = BPF_CORE_READ(task, mm, exe_file);

	if (BPF_CORE_READ(task, self_exec_id) != BPF_CORE_READ(task, parent_exec_id) || !exe ||
	    BPF_CORE_READ(parent, mm, exe_file) != exe)
		return 0;
	return BPF_CORE_READ(parent, tgid);
}

/* sk: the fd's TCP sock, which callers have at hand; NULL leaves the ends empty. */
static __always_inline void send_conn_event(void *ctx, struct sonde_conn_key *key,
					    struct conn_state *state, struct sock *sk)
{
	struct sonde_conn_event ev = {};

	fill_header(&ev.hdr, SONDE_EV_CONN, key, state->gen);
	ev.role = state->role;
	ev.proto = state->proto;
	bpf_get_current_comm(ev.comm, sizeof(ev.comm));
	ev.parent_tgid = parent_running_same_program();
	ev.cgroup_id = bpf_get_current_cgroup_id();
	if (sk) {
		ev.family = BPF_CORE_READ(sk, __sk_common.skc_family);
		ev.lport = BPF_CORE_READ(sk, __sk_common.skc_num);
		ev.rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
		read_addrs(sk, ev.family, ev.laddr, ev.raddr);
	}
	submit(ctx, &ev, sizeof(ev));
}

static __always_inline void emit_conn(void *ctx, struct sonde_conn_key *key, struct conn_state *state)
{
	note_traced_proc(key->tgid);
	send_conn_event(ctx, key, state, tcp_sock_of_fd(key->fd));
}

static __always_inline void emit_close(void *ctx, struct sonde_conn_key *key,
				       struct conn_state *state, __u8 reason)
{
	struct sonde_close_event ev = {};

	fill_header(&ev.hdr, SONDE_EV_CLOSE, key, state->gen);
	ev.reason = reason;
	submit(ctx, &ev, sizeof(ev));
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
	struct self_conn conn = {};

	if (!sk)
		return false;
	end_of(sk, false, &conn.own);
	end_of(sk, true, &conn.peer);
	return bpf_map_lookup_elem(&self_ends, &conn) != NULL;
}

#endif
