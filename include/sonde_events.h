/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The contract between sonde's eBPF programs and the agent.
 *
 * Every struct here is fixed-size, has no pointers and explicit padding, so
 * that clang -target bpf and gcc lay it out identically. Each ring-buffer
 * record starts with struct sonde_event_header; `type` says which struct
 * follows. Data events are variable-length on the wire: only the first
 * `captured` bytes of data[] are sent (SONDE_DATA_EVENT_SIZE(captured)).
 * Timestamps are CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns).
 */
#ifndef SONDE_EVENTS_H
#define SONDE_EVENTS_H

#ifndef __bpf__
#include <linux/types.h>
#include <stddef.h>
#endif

/* Upper bound of the configurable per-syscall payload capture. */
#define SONDE_CAPTURE_MAX 4096
/* Database connections capture at least this many bytes per call (or the
 * configured capture, if larger). */
#define SONDE_DB_CAPTURE_MIN 2048
/* An HTTP call longer than the capture whose captured bytes show another
 * message start (pipelined requests, several responses in one read) is
 * sent in up to this many events of SONDE_CAPTURE_MAX bytes: 64 KiB whole. */
#define SONDE_PIPELINE_CHUNKS 16
/* When a call moves more than is captured, its last bytes (up to this
 * many) are sent too: they hold the end of a chunked message. */
#define SONDE_TAIL_MAX 16
/* readv/writev/sendmsg/recvmsg: iovecs walked per call for capture. */
#define SONDE_IOV_MAX 8
/* A connection sonde did not see open tries this many data calls for a
 * message start of a known protocol before it is written off. */
#define SONDE_PREEXISTING_PROBES 32
/* Processes excluded by name (their comm, 15 characters at most). */
#define SONDE_EXCLUDE_MAX 8
#define SONDE_COMM_LEN 16

enum sonde_event_type {
	SONDE_EV_DATA = 1,      /* struct sonde_data_event */
	SONDE_EV_CONN = 2,      /* struct sonde_conn_event */
	SONDE_EV_CLOSE = 3,     /* struct sonde_close_event */
	SONDE_EV_PROC_EXIT = 4, /* struct sonde_exit_event */
	SONDE_EV_PROC_EXEC = 5, /* struct sonde_exec_event: tgid ran execve, so
	                           its program may now be Python */
	SONDE_EV_LOG = 6,       /* struct sonde_data_event: a write to the
	                           process's stdout or stderr (hdr.fd 1 or 2),
	                           or to a configured log file it has open;
	                           conn_gen, pos and proto 0 */
	SONDE_EV_JOB_START = 7, /* struct sonde_job_event */
	SONDE_EV_JOB_END = 8,   /* struct sonde_exit_event: the thread of a
	                           thread job (hdr.tid) exited, or the native
	                           entry point it called last returned;
	                           exit_status: which (enum sonde_job_kind) */
	SONDE_EV_CONN_MOVED = 9, /* struct sonde_moved_event */
};

/* sonde_data_event.task when the running task could not be read. */
#define SONDE_TASK_UNKNOWN (~0ULL)
/* Set in a CPython task (an aligned address) that runs a job. */
#define SONDE_TASK_JOB 1ULL
/* Bounds of the walks that find the running task of a CPython thread. */
#define SONDE_PY_THREADS_MAX 32
#define SONDE_PY_FRAMES_MAX 48
/* Tasks awaiting tasks followed up from the running one. */
#define SONDE_PY_AWAIT_DEPTH 4
/* Items of a done callback's closure (or partial's arguments) looked at
 * for the future a task awaits. */
#define SONDE_PY_ITEMS_MAX 8
/* Local variables of a worker thread's run looked at for the one that
 * holds the future its caller awaits. */
#define SONDE_PY_LOCALS_MAX 16
/* sonde_py_layout.worker_future when that local is not among them. */
#define SONDE_PY_LOCAL_NONE 0xff
/* Entries of sonde_py_layout.seen: see bpf/pytask.bpf.h. */
#define SONDE_PY_SEEN 12
/* Bytes of a job's function name (its __qualname__), NUL included. */
#define SONDE_JOB_NAME_MAX 64
/* Arguments of a native entry point's call sent with it (the x86-64
 * integer argument registers). */
#define SONDE_JOB_ARGS_MAX 6
/* The walk reads this many bytes at the start of each frame: frame_code
 * and frame_previous must be 8-byte aligned offsets below it, and
 * frame_owner below it. */
#define SONDE_PY_FRAME_HEAD 72
/* _PyInterpreterFrame.owner of a generator's or coroutine's frame (the
 * frame lives in the generator object). */
#define SONDE_PY_OWNED_BY_GENERATOR 1
/* Events of one epoll_wait of a libuv loop whose callbacks the kernel
 * follows (struct sonde_loop); callbacks past them get no task. */
#define SONDE_LOOP_BATCH_MAX 64
/* sonde_loop.ring_fd not known yet; libuv 1.49 on says the same (-2)
 * until it makes its io_uring, at the first file operation. */
#define SONDE_LOOP_RING_UNREAD (-2)

/* Direction as seen by the traced process. */
enum sonde_dir {
	SONDE_DIR_INGRESS = 0, /* bytes the process received */
	SONDE_DIR_EGRESS = 1,  /* bytes the process sent */
};

/* The protocol a connection speaks, decided once by the kernel from its
 * first bytes (bpf/infer.bpf.h) and carried by every event after. */
enum sonde_proto {
	SONDE_PROTO_UNKNOWN = 0,  /* not decided yet (kernel only) */
	SONDE_PROTO_HTTP1 = 1,    /* HTTP/1.x */
	SONDE_PROTO_POSTGRES = 2, /* PostgreSQL frontend/backend protocol 3.0 */
	SONDE_PROTO_REDIS = 3,    /* RESP2 and RESP3 */
	SONDE_PROTO_COUNT,
	SONDE_PROTO_NONE = 0xff,  /* written off: none of the above, or not
				     traced (kernel only) */
};

enum sonde_role {
	SONDE_ROLE_UNKNOWN = 0, /* open before sonde started */
	SONDE_ROLE_SERVER = 1,  /* returned by accept/accept4 */
	SONDE_ROLE_CLIENT = 2,  /* passed to connect */
};

enum sonde_close_reason {
	SONDE_CLOSE_LOCAL = 1, /* the process called close() */
	SONDE_CLOSE_PEER = 2,  /* a receive returned 0: the peer shut down */
	SONDE_CLOSE_RESET = 3, /* a call failed with ECONNRESET or EPIPE */
};

/* Syscall that produced a data event (diagnostics and tests). */
enum sonde_syscall {
	SONDE_SYS_READ = 1,
	SONDE_SYS_WRITE,
	SONDE_SYS_READV,
	SONDE_SYS_WRITEV,
	SONDE_SYS_RECVFROM,
	SONDE_SYS_SENDTO,
	SONDE_SYS_RECVMSG,
	SONDE_SYS_SENDMSG,
	SONDE_SYS_SENDFILE,
};

/* Kernel counters, one per-CPU array slot each; the agent sums CPUs. */
enum sonde_counter {
	SONDE_CNT_LOST_RINGBUF = 0, /* records dropped: ring (or perf) buffer full */
	SONDE_CNT_LOST_CONN_MAP,   /* TCP sockets not tracked: the conns map
				    * refused the entry (no memory; a full map
				    * evicts its least recently used) */
	SONDE_CNT_CAPTURE_FAULT,   /* payload reads that faulted (sent as a gap) */
	SONDE_CNT_HTTP_CONNS,      /* connections inferred as HTTP/1.x */
	SONDE_CNT_OTHER_CONNS,     /* TCP connections of no known protocol */
	SONDE_CNT_TRUNCATED,       /* data events with captured < len */
	SONDE_CNT_EXCLUDED_CONNS,  /* TCP connections of processes excluded by
				    * name or left out by the scope rules, or
				    * accepted from sonde's own exporter */
	SONDE_CNT_POSTGRES_CONNS,  /* client connections inferred as PostgreSQL */
	SONDE_CNT_REDIS_CONNS,     /* client connections inferred as Redis */
	SONDE_CNT_DB_SERVER_CONNS, /* server ends of database connections: the
				    * client's span is the operation's only one */
	SONDE_CNT_PIPELINES,       /* HTTP calls longer than the capture that held
				    * several messages: sent whole, in up to
				    * SONDE_PIPELINE_CHUNKS events */
	SONDE_CNT_LOG_WRITES,      /* writes to stdout/stderr of traced processes sent */
	SONDE_CNT_LOG_DROPPED,     /* such writes not sent: the process's rate limit */
	SONDE_CNT_LOG_TRUNCATED,   /* such writes longer than the log capture */
	SONDE_CNT_NGINX_UNREAD,    /* HTTP message starts an nginx worker wrote
				    * whose request could not be read from its
				    * connection (task 0): no epoll registration,
				    * or objects unlike nginx's */
	SONDE_CNT_MAX,
};

/* Key of the kernel's per-connection maps. */
struct sonde_conn_key {
	__u32 tgid;
	__s32 fd;
};

/* Starts every record. (tgid, fd, conn_gen) names one connection for
 * its lifetime, or until a SONDE_EV_CONN_MOVED gives it another fd: fds
 * are reused, generations are not. */
struct sonde_event_header {
	__u8 type;      /* enum sonde_event_type */
	__u8 pad[3];
	__u32 tgid;     /* process (thread group) id */
	__u32 tid;      /* thread that made the call */
	__s32 fd;       /* socket fd in tgid; -1 for SONDE_EV_PROC_EXIT. Of
	                   several fds naming one socket, the first sonde saw
	                   used: the calls on the others carry its number */
	__u64 conn_gen; /* ktime when sonde first saw this fd as a TCP socket */
	__u64 ts;       /* ktime at syscall exit (at entry for close); data is
	                   timed at exit, when the bytes have moved */
};

struct sonde_data_event {
	struct sonde_event_header hdr;
	__u64 pos;      /* stream offset, in this direction, of the first byte */
	__u32 len;      /* bytes the call moved (its return value) */
	__u16 captured; /* first bytes moved, at data[0]: min(len, capture
	                   limit), less if the memory could not be read */
	__u16 tail;     /* last bytes moved, at data[captured]; 0 unless
	                   len > captured + tail */
	__u8 dir;       /* enum sonde_dir */
	__u8 syscall;   /* enum sonde_syscall */
	__u8 proto;     /* enum sonde_proto, never UNKNOWN or NONE */
	__u8 pad[5];
	__u64 task;     /* egress of a CPython process (struct sonde_py_layout),
	                   and every SONDE_EV_LOG write of one:
	                   address of the outermost coroutine frame the thread is
	                   running, which names the asyncio task for its life,
	                   | SONDE_TASK_JOB when that task runs a job
	                   (struct sonde_job_event);
	                   0 when no coroutine runs (or not CPython);
	                   of an nginx worker: its request's downstream
	                   connection (bpf/nginx.bpf.h); of a libuv process's
	                   main thread (struct sonde_loop): the request whose
	                   callback it runs (bpf/evloop.bpf.h);
	                   SONDE_TASK_UNKNOWN when the walk failed, or was
	                   not made because the data does not start an HTTP
	                   request or status line (only a message start's
	                   task is used), or starts a response of a process
	                   no task has been asked of yet (see tasks_used in
	                   struct sonde_py_layout; an nginx worker that has
	                   written no request upstream) */
	__u8 data[SONDE_CAPTURE_MAX + SONDE_TAIL_MAX] __attribute__((aligned(8)));
};

#define SONDE_DATA_EVENT_SIZE(bytes) \
	(offsetof(struct sonde_data_event, data) + (bytes))

/* Sent once, before a connection's first data event; and at connect for
 * a client end written off (proto NONE: an excluded process's), so that
 * its server end on this host need not wait for it. */
struct sonde_conn_event {
	struct sonde_event_header hdr;
	__u8 role;      /* enum sonde_role */
	__u8 proto;     /* enum sonde_proto, never UNKNOWN; NONE only at connect */
	__u16 family;   /* AF_INET or AF_INET6 */
	__u16 lport;    /* local port, host byte order */
	__u16 rport;    /* remote port, host byte order */
	__u8 laddr[16]; /* local address: 4 bytes for AF_INET, else 16 */
	__u8 raddr[16]; /* remote address, same layout */
	char comm[16];  /* thread name, for a process gone before the agent
	                   reads /proc */
	__u32 parent_tgid; /* its parent's tgid when the process runs its
	                      parent's program (forked, no exec since, the same
	                      executable file): what the parent's /proc says
	                      of it says of this one; 0 otherwise */
	__u32 pad;
	__u64 cgroup_id;   /* the cgroup v2 it runs in, as it made the call */
};

/* Bytes of a new program's argv sent with its exec event. */
#define SONDE_EXEC_ARGS_MAX 512
/* Bytes of the environment variables sent with it (see env_len). */
#define SONDE_EXEC_ENV_MAX 1024
/* Bytes of the path execve was given (NUL included). */
#define SONDE_EXEC_PATH_MAX 256
/* The longest such variable, "NAME=value", that is sent whole. */
#define SONDE_EXEC_VAR_MAX 512
/* Reads of the environment at most: one per variable, one per
 * SONDE_EXEC_VAR_MAX - 1 bytes of a longer one. */
#define SONDE_EXEC_ENV_READS 128

/* A process ran execve; variable-length on the wire:
 * SONDE_EXEC_EVENT_SIZE(args_len + env_len). What the program was given is
 * read now: a short command may be gone before the agent could read
 * /proc, and a program may overwrite its environment block (nginx writes
 * its process title over it). */
struct sonde_exec_event {
	struct sonde_event_header hdr;
	__u16 args_len; /* bytes of argv at strings[0]: each argument and NUL,
	                   cut at SONDE_EXEC_ARGS_MAX; 0 when unreadable */
	__u16 env_len;  /* bytes at strings[args_len]: the variables whose name
	                   starts with OTEL_ or is TRACEPARENT or TRACESTATE,
	                   each "NAME=value" and NUL, in environment order */
	__u8 env_whole; /* 1: every variable of the environment was looked at
	                   and every one sent was sent whole; 0: the agent
	                   reads /proc/PID/environ for what is missing */
	__u8 pad[3];
	__u64 cgroup_id; /* the process's cgroup v2 id (its directory's inode
	                    number); what the agent's scope rules match when
	                    /proc/PID is already gone */
	char filename[SONDE_EXEC_PATH_MAX]; /* the path execve was given (the
	                    tracepoint's filename), NUL-terminated, cut;
	                    likewise */
	/* The last SONDE_EXEC_VAR_MAX bytes are never sent: the room a
	 * variable is read into before it is known to be wanted. */
	char strings[SONDE_EXEC_ARGS_MAX + SONDE_EXEC_ENV_MAX + SONDE_EXEC_VAR_MAX];
};

#define SONDE_EXEC_EVENT_SIZE(bytes) (offsetof(struct sonde_exec_event, strings) + (bytes))

/* What a job runs in (struct sonde_job_event). */
enum sonde_job_kind {
	SONDE_JOB_TASK = 1,   /* an asyncio task */
	SONDE_JOB_THREAD = 2, /* a thread of its own (threading.Thread) */
	SONDE_JOB_NATIVE = 3, /* a call of a native function, on the thread
	                         that makes it, until it returns */
};

/* Key of the job_names map: a function named as an entry point, its
 * __qualname__ NUL-padded. */
struct sonde_job_name {
	char name[SONDE_JOB_NAME_MAX];
};

/* A CPython process started an asyncio task or a thread whose function
 * is named in job_names, or a thread called a native entry point
 * (bpf/jobs.bpf.h); hdr.tid is the thread that started it, hdr.ts when. */
struct sonde_job_event {
	struct sonde_event_header hdr;
	__u64 creator_task; /* the task that thread ran, as in
	                       sonde_data_event.task: with hdr.tid, the
	                       request (or job) that started this one */
	__u64 job;          /* TASK: what names the task in events (its
	                       coroutine's frame | SONDE_TASK_JOB, as
	                       sonde_data_event.task); THREAD: 0 */
	__u64 task_object;  /* TASK: the _asyncio.Task, whose state tells
	                       when it is done; THREAD: 0 */
	__u64 code;         /* TASK: its coroutine's code object, which the
	                       task keeps for its life; THREAD: 0 */
	__u32 thread;       /* THREAD: the new thread's id; TASK, NATIVE: 0
	                       (a native call's thread is hdr.tid's) */
	__u8 kind;          /* enum sonde_job_kind */
	__u8 pad[3];
	char name[SONDE_JOB_NAME_MAX]; /* TASK, THREAD: the function's
	                       __qualname__; NATIVE: empty */
	__u32 entry_point;  /* NATIVE: the entry point's index among the
	                       native ones, in the configuration's order */
	__u32 pad2;
	__u64 args[SONDE_JOB_ARGS_MAX]; /* NATIVE: the call's integer
	                       argument registers, first to sixth */
};

/* The last thread of a process exited (tid: that thread). */
struct sonde_exit_event {
	struct sonde_event_header hdr;
	__s32 exit_status; /* as wait(2) reports it: code << 8, or the signal */
	__u8 pad[4];
};

struct sonde_close_event {
	struct sonde_event_header hdr;
	__u8 reason; /* enum sonde_close_reason */
	__u8 pad[7];
};

/* A connection's fd (hdr.fd) was closed while another fd of the process
 * still names its socket (a dup of it, or one of the stdin and stdout an
 * inetd-style server was given): the connection goes on under that fd,
 * which its later events carry, with the same conn_gen and positions.
 * Until then the other fd's calls were reported under hdr.fd. */
struct sonde_moved_event {
	struct sonde_event_header hdr;
	__s32 new_fd; /* the fd the connection goes on under */
	__u8 pad[4];
};

/* Value of the py_procs map (key: tgid), written by the agent for each
 * CPython process it recognises: where _PyRuntime is, and the offsets of
 * the fields the kernel follows from it to the running frame. Offsets are
 * bytes into the struct named; they differ between CPython versions. */
struct sonde_py_layout {
	__u64 runtime;          /* address of _PyRuntime in the process */
	__u16 interp_main;      /* _PyRuntimeState.interpreters.main */
	__u16 threads_head;     /* PyInterpreterState.threads.head */
	__u16 tstate_next;      /* PyThreadState.next */
	__u16 tstate_native_id; /* PyThreadState.native_thread_id (the tid) */
	__u16 tstate_cframe;    /* PyThreadState.cframe */
	__u16 cframe_frame;     /* _PyCFrame.current_frame */
	__u16 frame_previous;   /* _PyInterpreterFrame.previous (< SONDE_PY_FRAME_HEAD) */
	__u16 frame_code;       /* _PyInterpreterFrame.f_code (< SONDE_PY_FRAME_HEAD) */
	__u16 frame_owner;      /* _PyInterpreterFrame.owner, a byte
	                           (< SONDE_PY_FRAME_HEAD) */
	__u16 code_flags;       /* PyCodeObject.co_flags */
	/* The tasks awaiting the running one, followed up to the outermost
	 * (a gather's or an awaited child's task names its awaiting
	 * parent's); all 0 when the version's are not known. */
	__u16 frame_locals;     /* _PyInterpreterFrame.localsplus: `self` of
	                           the event loop's Handle._run below a task */
	__u16 handle_callback;  /* asyncio.events.Handle's _callback slot */
	__u16 step_task;        /* _asyncio TaskStepMethWrapper.sw_task */
	__u16 future_callback0; /* _asyncio FutureObj.fut_callback0 (a Task's
	                           first done callback: its awaiter's wakeup) */
	__u16 task_coro;        /* _asyncio TaskObj.task_coro */
	__u16 coro_iframe;      /* PyCoroObject.cr_iframe: a task's outermost
	                           frame, embedded in its coroutine */
	__u16 func_closure;     /* PyFunctionObject.func_closure */
	__u16 values_before;    /* how far before an object with a managed
	                           dict its attribute values' pointer is */
	__u16 taskgroup_parent; /* asyncio.TaskGroup's _parent_task in those
	                           values (bytes) */
	/* The functions jobs run (bpf/jobs.bpf.h). */
	__u16 code_qualname;    /* PyCodeObject.co_qualname */
	__u16 func_qualname;    /* PyFunctionObject.func_qualname */
	__u16 coro_qualname;    /* PyCoroObject.cr_qualname */
	__u16 coro_code;        /* PyCoroObject.cr_code */
	__u16 thread_target;    /* threading.Thread's _target in its values
	                           (bytes) */
	/* The task a worker thread's call is made for (anyio's WorkerThread:
	 * FastAPI's `def` handlers); 0 when the version's is not known. */
	__u16 code_localsplusnames; /* PyCodeObject.co_localsplusnames */
	__u8 tasks_used;        /* Written by the kernel, 0 from the agent: 1
	                           once it has read a task of the process (for
	                           a request or command it sent, a log line, a
	                           job), which a response head never makes it
	                           do first. A response's task is matched only
	                           to what its request did before it, whose
	                           walks come first: until then, and so in a
	                           service that neither calls out nor logs,
	                           response heads skip the walk (unless entry
	                           points are configured). */
	__u8 worker_future;     /* Written by the kernel, 0 from the agent:
	                           1 + the index of `future` among the locals
	                           of the worker's run (seen[]) once looked
	                           for, SONDE_PY_LOCAL_NONE if not there */
	__u8 pad[4];
	/* Written by the kernel, 0 from the agent: the type objects (and
	 * task_wakeup's method definition) it has recognised by name in
	 * this process, so that it reads each name once. */
	__u64 seen[SONDE_PY_SEEN];
	/* Written by the kernel, 0 from the agent: the code of the last
	 * thread's run method met that is not the worker's of seen[], so
	 * that a thread-per-request server's threads read no name. */
	__u64 other_run;
};

/* struct epoll_event as x86-64 lays it out: packed, 12 bytes. */
struct sonde_epoll_event {
	__u32 events;
	__u64 data; /* libuv puts the fd in the low 32 bits */
} __attribute__((packed));

/* Value of the loops map (key: tgid), written by the agent for each
 * process whose program holds libuv's default loop (Node.js), which its
 * main thread runs: where the loop is, and where the field is that libuv
 * sets while it runs the callbacks of one epoll_wait. The agent writes
 * the layout and zeroes the rest; the kernel keeps the rest as the main
 * thread runs (bpf/evloop.bpf.h). */
struct sonde_loop {
	/* From the agent. */
	__u64 internal_fields;  /* address of the loop's internal_fields
	                           pointer (uv_loop_t.internal_fields) */
	__u32 inv_offset;       /* uv__loop_internal_fields_t.inv: not NULL
	                           while callbacks of a poll run (libuv 1.45 on) */
	__u32 ring_fd_offset;   /* uv__loop_internal_fields_t.iou.ringfd: the
	                           io_uring whose completions run callbacks
	                           with no call of their own (-1: none) */
	/* The kernel's. */
	__s32 cursor;           /* batch index of the callback running; -1:
	                           none started since the poll */
	__u64 lfields;          /* *internal_fields, read once */
	__s32 ring_fd;          /* the io_uring's fd; -1: none;
	                           SONDE_LOOP_RING_UNREAD until libuv has
	                           decided and the kernel has read it */
	__s16 ring_at;          /* its event's batch index; -1: not polled */
	__u16 pad;
	__u64 task;             /* task of the callback running (as in
	                           sonde_data_event.task); SONDE_TASK_UNKNOWN
	                           when it cannot be told */
	__s32 opener_fd;        /* fd of the call that started that callback */
	__u8 opener_read;       /* ... a read of data: on a client connection,
	                           its response; a request written on that
	                           connection in this callback may be another
	                           caller's, queued for it */
	__u8 overflow;          /* the poll returned more events than kept */
	__u16 nbatch;           /* events kept in batch */
	struct sonde_epoll_event batch[SONDE_LOOP_BATCH_MAX]; /* the poll's events, in
	                           the order libuv runs their callbacks */
};

#endif
