/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Trimmed vmlinux.h: only the kernel types sonde's probes read.
 *
 * Why trimmed rather than a full `bpftool btf dump` (2.8 MB here): every
 * struct below carries preserve_access_index, so clang records CO-RE
 * relocations by field *name* and libbpf resolves the real offsets against
 * the running kernel's BTF at load time. Field order and padding here do
 * not matter; names and types do. Keeping the list short documents exactly
 * which kernel internals sonde depends on, and a field that vanishes from a
 * future kernel fails loudly at load instead of hiding in 100k lines.
 * Nested anonymous unions in the kernel (sock_common) are flattened: libbpf
 * matches members through anonymous structs and unions.
 */
#ifndef SONDE_VMLINUX_H
#define SONDE_VMLINUX_H

#include <linux/types.h>
#include <linux/bpf.h>

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s32 s32;
typedef __s64 s64;
typedef int pid_t;
typedef _Bool bool;
enum { false = 0, true = 1 };

/* Tracepoint contexts: fixed ABI from tracefs `format` files, not CO-RE. */
struct trace_entry {
	unsigned short type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
};

struct trace_event_raw_sys_enter {
	struct trace_entry ent;
	long id;
	unsigned long args[6];
};

struct trace_event_raw_sys_exit {
	struct trace_entry ent;
	long id;
	long ret;
};

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

typedef struct {
	int counter;
} atomic_t;

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be32 u6_addr32[4];
	} in6_u;
};

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
};

struct sock {
	struct sock_common __sk_common;
	u16 sk_protocol;
	u16 sk_type;
};

struct socket {
	short type;
	struct sock *sk;
};

struct inode {
	unsigned short i_mode;
};

struct hlist_node {
	struct hlist_node *next;
	struct hlist_node **pprev;
};
struct hlist_head {
	struct hlist_node *first;
};
typedef struct {
	s64 counter;
} atomic_long_t;
struct file {
	struct inode *f_inode;
	void *private_data;
	struct hlist_head *f_ep; /* the epoll items watching the file (5.11+) */
	atomic_long_t f_count;   /* references: each fd naming it holds one */
};
/* The count as Linux 6.13 keeps it: refcnt is one less than the
 * references. Read only where f_count is missing (bpf_core_field_exists). */
typedef struct {
	atomic_long_t refcnt;
} file_ref_t;
struct file___ref {
	file_ref_t f_ref;
};
/* The kernel's struct epoll_event, packed on x86-64: read by name. */
struct epoll_event {
	__u32 events;
	__u64 data;
};
struct epitem {
	struct hlist_node fllink; /* in its file's f_ep */
	struct epoll_event event; /* as the process registered it */
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

struct signal_struct {
	atomic_t live;
};

/* User registers saved at syscall entry; at syscall exit di, si, dx, r10,
 * r8, r9 still hold the call's arguments (x86-64 syscall ABI). */
struct pt_regs {
	unsigned long r10;
	unsigned long r9;
	unsigned long r8;
	unsigned long cx;
	unsigned long dx;
	unsigned long si;
	unsigned long di;
};

struct mm_struct {
	struct file *exe_file;
	unsigned long arg_start;
	unsigned long arg_end;
	unsigned long env_start;
	unsigned long env_end;
};

struct task_struct {
	int exit_code;
	struct mm_struct *mm;
	pid_t pid;
	pid_t tgid;
	struct task_struct *real_parent;
	__u64 parent_exec_id; /* the parent's self_exec_id at the fork */
	__u64 self_exec_id;   /* one more at each exec */
	struct files_struct *files;
	struct signal_struct *signal;
};

#pragma clang attribute pop

#endif
