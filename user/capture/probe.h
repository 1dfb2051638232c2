/* The kernel side as the agent sees it: platform checks, loading and
 * attaching the eBPF programs, the ring buffer, counters, map upkeep. */
#ifndef SONDE_PROBE_H
#define SONDE_PROBE_H

#include "counters.h"
#include "merge.h"
#include "sonde_events.h"

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

enum probe_buffer {
	PROBE_BUFFER_RING, /* the default */
	PROBE_BUFFER_PERF, /* per-CPU perf buffers (BPF_MAP_TYPE_PERF_EVENT_ARRAY) */
};

struct probe_opts {
	enum probe_buffer buffer;
	uint32_t capture_bytes;
	uint32_t ringbuf_bytes; /* total buffer size, split per CPU */
	uint32_t max_connections; /* entries of the conns map */
	uint32_t excluded_count;
	char excluded_comms[SONDE_EXCLUDE_MAX][SONDE_COMM_LEN];
	uint32_t log_rate_limit;    /* writes per second per process; 0: logs off */
	uint32_t log_capture_bytes; /* bytes captured per write */
	bool log_files;             /* log files are configured (probe_watch_log_file) */
	bool pin;                   /* pin the maps operators read under PROBE_PIN_DIR */
	/* Entry points (bpf/jobs.bpf.h): Python functions' names, and native
	 * functions by file and offset, each probed in every process. */
	const struct sonde_job_name *job_names;
	size_t njob_names;
	const struct probe_native *natives;
	size_t nnatives;
};

/* A native entry point: the file, and the function's offset in it. */
struct probe_native {
	const char *path;
	uint64_t offset;
};

/* Where --pin puts the maps an operator reads with bpftool (counters,
 * conns, py_procs, log_procs): one agent per host. */
#define PROBE_PIN_DIR "/sys/fs/bpf/sonde"

/* Called for every record, in time order (see merge.h). */
typedef void (*probe_record_fn)(void *ctx, const void *record, size_t size);

struct probe;

/* BTF, tracefs (mounted when missing), syscall tracepoints and the
 * helpers of Linux 5.15. Returns 0, or -1 with the reason. */
int probe_check_platform(char *why, size_t why_size);
/* Loads and attaches everything; logs each attachment. */
int probe_start(struct probe **out, const struct probe_opts *opts, probe_record_fn fn, void *ctx);
/* Waits up to timeout_ms for a wakeup, then drains the ring buffer. */
int probe_poll(struct probe *p, int timeout_ms);
/* Detaches every program, then drains what is left in the ring buffer. */
void probe_detach(struct probe *p);
void probe_free(struct probe *p);
/* Sums the per-CPU kernel counters (enum sonde_counter). */
int probe_counters(struct probe *p, uint64_t out[SONDE_CNT_MAX]);
/* The kernel's counters (enum sonde_counter), read from probe_counters'
 * array. */
extern const struct counter_desc kernel_counters[SONDE_CNT_MAX];
/* How putting the CPUs' records back in order went. */
struct merge_stats probe_merge_stats(const struct probe *p);
/* Forgets kernel map entries of processes that exited (pid reuse would
 * otherwise inherit them). Returns the number of entries removed. */
size_t probe_forget_processes(struct probe *p, const uint32_t *tgids, size_t n);
/* Makes writes to tgid's fd log writes (a configured log file it has open),
 * or no longer. */
int probe_watch_log_file(struct probe *p, uint32_t tgid, int32_t fd, bool watch);
/* tgid is left out by the scope rules: its new connections are written
 * off in the kernel, its connection on fd too, and its output is not
 * read. */
int probe_scope_out(struct probe *p, uint32_t tgid, int32_t fd);
/* Lets the kernel name the asyncio task of tgid's threads. */
int probe_set_python(struct probe *p, uint32_t tgid, const struct sonde_py_layout *layout);
/* Lets the kernel follow the callbacks of tgid's libuv loop. */
int probe_set_loop(struct probe *p, uint32_t tgid, const struct sonde_loop *loop);
/* Tells the kernel when tgid makes an asyncio task of an entry point's:
 * a uprobe on the file at path (as tgid sees it, under /proc/<tgid>/root),
 * at file offset, where _asyncio.Task's __init__ is. Detached when tgid
 * exits (probe_forget_processes) or runs another program (again). */
int probe_watch_tasks(struct probe *p, uint32_t tgid, const char *path, uint64_t offset);
/* The kernel forgets the connections of these processes, and tracks them
 * anew at their next call (as connections open before sonde started). */
void probe_track_anew(struct probe *p, const uint32_t *tgids, size_t n);

#endif
