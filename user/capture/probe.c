#include "probe.h"

#include "clock.h"
#include "log.h"
#include "merge.h"
#include "procfs.h"
#include "ringread.h"
#include "sonde.skel.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#define TRACEFS "/sys/kernel/tracing"
#define BPFFS "/sys/fs/bpf"

#ifndef CAP_PERFMON
#define CAP_PERFMON 38
#endif
#ifndef CAP_BPF
#define CAP_BPF 39
#endif

#define PROBE_LINKS_MAX 64
/* Records of one drain are staged to be put in time order. The buffers
 * are drained one after another, so a drain is sorted right only if it is
 * staged whole: after the agent was starved of CPU a drain is as large as
 * the buffers (a quarter more for what arrives meanwhile); delivered in
 * parts, a response on one CPU's buffer may precede its request on
 * another's (merge_forced). */
static size_t merge_arena_bytes(uint32_t ringbuf_bytes)
{
	size_t bytes = (size_t)ringbuf_bytes + ringbuf_bytes / 4;

	return bytes > (1u << 20) ? bytes : (1u << 20);
}

/* A uprobe watching one process's asyncio tasks (probe_watch_tasks): a
 * uprobe_multi link (Linux 6.6), which needs no capability once its
 * program is loaded, so the agent makes them after dropping its own,
 * where a perf event uprobe needs CAP_SYS_ADMIN. libbpf 1.1 predates it,
 * hence the raw bpf(2) call. */
struct task_watch {
	struct task_watch *next;
	uint32_t tgid;
	int link_fd;
};

#define BPF_TRACE_UPROBE_MULTI_ 48
#define BPF_F_UPROBE_MULTI_RETURN_ 1

/* bpf_attr's link_create as Linux 6.6 has it for uprobe_multi. */
struct uprobe_multi_attr {
	uint32_t prog_fd, target_fd, attach_type, flags;
	uint64_t path, offsets, ref_ctr_offsets, cookies;
	uint32_t cnt, multi_flags, pid;
	uint8_t pad[120 - 60];
};

/* A native entry point's two links: at its calls and at their returns. */
#define NATIVE_LINKS_MAX (2 * 16)

struct probe {
	struct sonde_bpf *skel;
	struct task_watch *task_watches;
	int native_links[NATIVE_LINKS_MAX];
	size_t nnative_links;
	bool pinned; /* the maps are under PROBE_PIN_DIR */
	struct bpf_link *links[PROBE_LINKS_MAX];
	size_t nlinks;
	struct ring_reader rings; /* one ring per possible CPU */
	struct perf_buffer *perf;
	uint64_t perf_lost; /* samples the kernel dropped: perf buffer full */
	struct merge merge;
};

/* Checked as the kernel checks sonde's own opens: with its effective
 * ids and capabilities (CAP_DAC_READ_SEARCH on tracefs, root's alone),
 * which access(2) leaves out for a user other than root. */
static bool can_reach(const char *path)
{
	return faccessat(AT_FDCWD, path, F_OK, AT_EACCESS) == 0;
}

static int ensure_tracefs(char *why, size_t size)
{
	if (can_reach(TRACEFS "/events"))
		return 0;
	if (mount("nodev", TRACEFS, "tracefs", 0, NULL)) {
		snprintf(why, size,
			 "tracefs is not mounted on %s and mounting it failed: %s (syscall "
			 "tracepoints need it; without CAP_SYS_ADMIN mount it first: mount -t "
			 "tracefs nodev %s, as the systemd unit's ExecStartPre does)",
			 TRACEFS, strerror(errno), TRACEFS);
		return -1;
	}
	log_info("mounted tracefs on %s", TRACEFS);
	return 0;
}

/* The newest helpers the programs call, checked before they load: the
 * verifier would only say "unknown func" deep in its log. A kernel that
 * has them (5.17) has the BPF ring buffer (5.8) too. */
static const struct {
	enum bpf_func_id id;
	const char *name, *since, *what_for;
} newest_helpers[] = {
	{ BPF_FUNC_task_pt_regs, "bpf_task_pt_regs", "5.15",
	  "sonde reads each call's arguments from the registers saved at its entry" },
	{ BPF_FUNC_loop, "bpf_loop", "5.17",
	  "sonde looks through a process's fd table for the sockets an exec or "
	  "close_range closed" },
};

static int check_helpers(char *why, size_t size)
{
	for (size_t i = 0; i < sizeof(newest_helpers) / sizeof(newest_helpers[0]); i++) {
		int has = libbpf_probe_bpf_helper(BPF_PROG_TYPE_TRACEPOINT, newest_helpers[i].id,
						  NULL);

		if (has < 0) {
			snprintf(why, size, "probe the kernel for %s: %s", newest_helpers[i].name,
				 strerror(-has));
			return -1;
		}
		if (has == 0) {
			snprintf(why, size, "kernel has no %s helper (needs Linux %s or later): %s",
				 newest_helpers[i].name, newest_helpers[i].since,
				 newest_helpers[i].what_for);
			return -1;
		}
	}
	return 0;
}

int probe_check_platform(char *why, size_t size)
{
	if (access("/sys/kernel/btf/vmlinux", R_OK)) {
		snprintf(why, size,
			 "no kernel BTF at /sys/kernel/btf/vmlinux (kernel built without "
			 "CONFIG_DEBUG_INFO_BTF): sonde's CO-RE programs cannot be relocated");
		return -1;
	}
	if (ensure_tracefs(why, size))
		return -1;
	if (!can_reach(TRACEFS "/events/syscalls/sys_enter_read")) {
		snprintf(why, size,
			 "no syscall tracepoints under %s/events/syscalls (kernel built without "
			 "CONFIG_FTRACE_SYSCALLS)", TRACEFS);
		return -1;
	}
	return check_helpers(why, size);
}

static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	static const enum log_level ours[] = {
		[LIBBPF_WARN] = LOG_WARN, [LIBBPF_INFO] = LOG_INFO, [LIBBPF_DEBUG] = LOG_DEBUG,
	};

	return log_library(ours[level], fmt, ap);
}

static int attach_all(struct probe *p)
{
	struct bpf_program *prog;

	bpf_object__for_each_program(prog, p->skel->obj) {
		const char *section = bpf_program__section_name(prog);
		struct bpf_link *link;

		/* A uprobe has no target of its own: linked per process
		 * (probe_watch_tasks) or per entry point (attach_natives). */
		if (!bpf_program__autoload(prog) || strcmp(section, "uprobe") == 0)
			continue;
		if (p->nlinks >= PROBE_LINKS_MAX) {
			log_error("attach %s: more programs than PROBE_LINKS_MAX", section);
			return -E2BIG;
		}
		link = bpf_program__attach(prog);
		if (!link) {
			int err = -errno;

			log_error("attach %s: %s", section, strerror(-err));
			return err;
		}
		p->links[p->nlinks++] = link;
		log_debug("attached %s", section);
	}
	log_info("attached %zu tracepoint programs", p->nlinks);
	return 0;
}

/* A CPU's ring wakes the agent when this share of it is unread; below
 * that the agent finds the records at its poll tick. A wakeup is work in
 * the traced process's time, on its CPU (an irq_work that wakes the
 * agent), so wakeups are kept rare; but the more records a wakeup
 * leaves, the longer the agent's burst of work, and a request waits
 * behind it. Measured on nginx under wrk, 2 MiB a CPU: waking at 1/128
 * cost nginx 0.43 us more CPU a request than at 1/4 and kept 0.68 of its
 * untraced rate against 0.74; 1/16 kept 0.735 with a p99 of 0.5-0.8 ms,
 * against 2.1 ms at 1/4 and 0.5-1.3 ms at 1/128. */
#define RING_WAKEUP_DIVISOR 16

static void configure(struct sonde_bpf *skel, const struct probe_opts *opts, bool perf, int ncpus,
		      uint32_t share)
{
	bpf_map__set_max_entries(skel->maps.cpu_rings, (uint32_t)ncpus);
	bpf_map__set_max_entries(skel->maps.conns, opts->max_connections);
	skel->rodata->wakeup_bytes = share / RING_WAKEUP_DIVISOR;
	skel->rodata->self_tgid = (__u32)getpid();
	skel->rodata->capture_bytes = opts->capture_bytes;
	skel->rodata->db_capture_bytes = opts->capture_bytes > SONDE_DB_CAPTURE_MIN
						 ? opts->capture_bytes : SONDE_DB_CAPTURE_MIN;
	skel->rodata->use_perf_buffer = perf;
	skel->rodata->capture_logs = opts->log_rate_limit > 0;
	skel->rodata->capture_log_files = opts->log_rate_limit > 0 && opts->log_files;
	skel->rodata->log_capture_bytes = opts->log_capture_bytes;
	skel->rodata->log_write_cost_ns = opts->log_rate_limit ? 1000000000ull / opts->log_rate_limit : 0;
	skel->rodata->excluded_count = opts->excluded_count;
	memcpy((void *)skel->rodata->excluded_comms, opts->excluded_comms,
	       sizeof(opts->excluded_comms));
	skel->rodata->entry_points = opts->njob_names > 0 || opts->nnatives > 0;
	bpf_program__set_autoload(skel->progs.job_task_init, opts->njob_names > 0);
	bpf_program__set_autoload(skel->progs.job_thread_fork, opts->njob_names > 0);
	bpf_program__set_autoload(skel->progs.job_native_entry, opts->nnatives > 0);
	bpf_program__set_autoload(skel->progs.job_native_return, opts->nnatives > 0);
	bpf_program__set_expected_attach_type(skel->progs.job_task_init,
					      (enum bpf_attach_type)BPF_TRACE_UPROBE_MULTI_);
	bpf_program__set_expected_attach_type(skel->progs.job_native_entry,
					      (enum bpf_attach_type)BPF_TRACE_UPROBE_MULTI_);
	bpf_program__set_expected_attach_type(skel->progs.job_native_return,
					      (enum bpf_attach_type)BPF_TRACE_UPROBE_MULTI_);
}

/* A uprobe_multi link of prog at one offset of the file at path: in
 * process pid (0: every process), at calls or (ret) their returns, with
 * cookie. The fd, or -errno. */
static int uprobe_link(struct bpf_program *prog, const char *path, uint64_t offset,
		       uint32_t pid, bool ret, uint64_t cookie)
{
	struct uprobe_multi_attr attr = {
		.prog_fd = (uint32_t)bpf_program__fd(prog),
		.attach_type = BPF_TRACE_UPROBE_MULTI_,
		.path = (uint64_t)(uintptr_t)path,
		.offsets = (uint64_t)(uintptr_t)&offset,
		.cookies = (uint64_t)(uintptr_t)&cookie,
		.cnt = 1,
		.multi_flags = ret ? BPF_F_UPROBE_MULTI_RETURN_ : 0,
		.pid = pid,
	};
	int fd = (int)syscall(SYS_bpf, BPF_LINK_CREATE, &attr, sizeof(attr));

	return fd < 0 ? -errno : fd;
}

/* Entry points need uprobe_multi links (Linux 6.6). One made on sonde's
 * own ELF header, which never runs, and closed at once tells whether the
 * kernel has them before anything depends on them: an older kernel takes
 * the link's attach type for an invalid argument. Native entry points
 * are nothing without them; Python ones still see jobs run in threads
 * (a thread's start is a tracepoint), not asyncio tasks. */
static int check_uprobe_multi(struct probe *p, const struct probe_opts *opts)
{
	struct bpf_program *prog = opts->njob_names > 0 ? p->skel->progs.job_task_init
							 : p->skel->progs.job_native_entry;
	int fd;

	if (opts->njob_names == 0 && opts->nnatives == 0)
		return 0;
	fd = uprobe_link(prog, "/proc/self/exe", 0, (uint32_t)getpid(), false, 0);
	if (fd >= 0) {
		close(fd);
		return 0;
	}
	if (fd != -EINVAL) {
		log_error("entry points: a uprobe_multi link on sonde itself: %s", strerror(-fd));
		return fd;
	}
	if (opts->nnatives > 0) {
		log_error("native entry points need uprobe_multi links (Linux 6.6 or later), "
			  "which this kernel does not have");
		return fd;
	}
	log_warn("entry points: this kernel has no uprobe_multi links (Linux 6.6 or later): "
		 "jobs run in threads are seen, asyncio tasks are not (python_tasks_unwatched "
		 "counts each process)");
	return 0;
}

static int attach_natives(struct probe *p, const struct probe_opts *opts)
{
	for (size_t i = 0; i < opts->nnatives; i++) {
		const struct probe_native *n = &opts->natives[i];

		for (int ret = 0; ret < 2; ret++) {
			struct bpf_program *prog = ret ? p->skel->progs.job_native_return
						       : p->skel->progs.job_native_entry;
			int fd = p->nnative_links < NATIVE_LINKS_MAX
					 ? uprobe_link(prog, n->path, n->offset, 0, ret, i) : -E2BIG;

			if (fd < 0) {
				log_error("attach entry point %s+%#llx: %s", n->path,
					  (unsigned long long)n->offset, strerror(-fd));
				return fd;
			}
			p->native_links[p->nnative_links++] = fd;
		}
	}
	return 0;
}

static int set_job_names(struct probe *p, const struct probe_opts *opts)
{
	int fd = bpf_map__fd(p->skel->maps.job_names);
	uint8_t one = 1;

	for (size_t i = 0; i < opts->njob_names; i++)
		if (bpf_map_update_elem(fd, &opts->job_names[i], &one, BPF_ANY)) {
			int err = -errno;

			log_error("entry point %s into job_names: %s", opts->job_names[i].name,
				  strerror(-err));
			return err;
		}
	return 0;
}

static void unwatch_tasks(struct probe *p, uint32_t tgid)
{
	struct task_watch **link = &p->task_watches;

	while (*link) {
		struct task_watch *w = *link;

		if (w->tgid != tgid) {
			link = &w->next;
			continue;
		}
		*link = w->next;
		close(w->link_fd);
		free(w);
	}
}

int probe_watch_tasks(struct probe *p, uint32_t tgid, const char *path, uint64_t offset)
{
	struct task_watch *w = calloc(1, sizeof(*w));

	if (!w)
		return -ENOMEM;
	unwatch_tasks(p, tgid);
	w->tgid = tgid;
	w->link_fd = uprobe_link(p->skel->progs.job_task_init, path, offset, tgid, false, 0);
	if (w->link_fd < 0) {
		int err = w->link_fd;

		free(w);
		return err;
	}
	w->next = p->task_watches;
	p->task_watches = w;
	return 0;
}

static enum bpf_perf_event_ret on_perf_event(void *ctx, int cpu, struct perf_event_header *hdr)
{
	struct probe *p = ctx;
	struct {
		struct perf_event_header hdr;
		uint32_t size;
		uint8_t data[];
	} *sample = (void *)hdr;
	struct {
		struct perf_event_header hdr;
		uint64_t id, lost;
	} *lost = (void *)hdr;

	(void)cpu;
	if (hdr->type == PERF_RECORD_LOST) {
		p->perf_lost += lost->lost;
	} else if (hdr->type == PERF_RECORD_SAMPLE) {
		merge_add(&p->merge, sample->data, sample->size);
	}
	return LIBBPF_PERF_EVENT_CONT;
}

/* One buffer per CPU, ringbuf_bytes in all; the agent is woken at the
 * rings' share of a CPU's buffer, else finds the records at its poll tick. */
static int open_perf_buffer(struct probe *p, const struct probe_opts *opts)
{
	long page = sysconf(_SC_PAGESIZE);
	int ncpus = libbpf_num_possible_cpus();
	size_t pages = 8;
	struct perf_event_attr attr = {
		.type = PERF_TYPE_SOFTWARE,
		.config = PERF_COUNT_SW_BPF_OUTPUT,
		.sample_type = PERF_SAMPLE_RAW,
		.sample_period = 1,
		.watermark = 1,
	};

	if (ncpus <= 0)
		return ncpus;
	while ((pages * 2) * (size_t)page * (size_t)ncpus <= opts->ringbuf_bytes)
		pages *= 2;
	attr.wakeup_watermark = (uint32_t)(pages * (size_t)page / RING_WAKEUP_DIVISOR);
	p->perf = perf_buffer__new_raw(bpf_map__fd(p->skel->maps.perf_events), pages, &attr,
				       on_perf_event, p, NULL);
	if (!p->perf)
		return -errno;
	log_info("perf buffers: %d CPUs x %zu KiB", ncpus, pages * (size_t)page / 1024);
	return 0;
}

/* Each CPU's equal share of the total, rounded down to a power of two
 * (the kernel's rule for a ring's size). */
#define RING_MIN_BYTES (16u * 1024)

static uint32_t ring_share(uint32_t total, int ncpus)
{
	uint32_t share = RING_MIN_BYTES;

	while (share * 2 <= total / (uint32_t)ncpus)
		share *= 2;
	return share;
}

static int add_cpu_ring(struct probe *p, int cpu, uint32_t bytes)
{
	int fd = bpf_map_create(BPF_MAP_TYPE_RINGBUF, "sonde_ring", 0, 0, bytes, NULL);
	int err;

	if (fd < 0)
		return -errno;
	err = ring_reader_add(&p->rings, fd, bytes);
	if (!err && bpf_map_update_elem(bpf_map__fd(p->skel->maps.cpu_rings), &cpu, &fd, BPF_ANY))
		err = -errno;
	return err;
}

static int open_ring_buffer(struct probe *p, int ncpus, uint32_t share)
{
	int err = ring_reader_init(&p->rings, ncpus);

	for (int cpu = 0; cpu < ncpus && !err; cpu++)
		err = add_cpu_ring(p, cpu, share);
	if (!err)
		log_info("ring buffers: %d CPUs x %u KiB", ncpus, share / 1024);
	return err;
}

#define PINNED_MAPS 4

/* The maps an operator reads with bpftool, by the names they get. */
static void pinned_maps(struct probe *p, struct bpf_map *maps[PINNED_MAPS])
{
	maps[0] = p->skel->maps.counters;
	maps[1] = p->skel->maps.conns;
	maps[2] = p->skel->maps.py_procs;
	maps[3] = p->skel->maps.log_procs;
}

static int ensure_bpffs(void)
{
	struct statfs fs;

	if (statfs(BPFFS, &fs) == 0 && fs.f_type == BPF_FS_MAGIC)
		return 0;
	if (mount("bpf", BPFFS, "bpf", 0, NULL)) {
		log_error("pin maps: %s is not a BPF filesystem and mounting one failed: %s "
			  "(without CAP_SYS_ADMIN mount it first: mount -t bpf bpf %s, as the "
			  "systemd unit's ExecStartPre does)", BPFFS, strerror(errno), BPFFS);
		return -EPERM;
	}
	log_info("mounted the BPF filesystem on %s", BPFFS);
	return 0;
}

/* The maps pinned under PROBE_PIN_DIR now (id 0: no such pin), and which
 * of them a process holds. */
struct pins_found {
	uint32_t id[PINNED_MAPS];
	unsigned held; /* bit i: id[i] is open in the process */
};

static void mark_held(struct pins_found *pins, const char *fdinfo)
{
	const char *at = strstr(fdinfo, "\nmap_id:\t");
	unsigned id;

	if (!at || sscanf(at + strlen("\nmap_id:\t"), "%u", &id) != 1)
		return;
	for (int i = 0; i < PINNED_MAPS; i++)
		if (pins->id[i] && pins->id[i] == id)
			pins->held |= 1u << i;
}

/* Whether process pid holds one of the pinned maps open: its fdinfo
 * lists each open map's id. */
static bool holds_pins(const char *root, uint32_t pid, void *arg)
{
	struct pins_found *pins = arg;
	char dir_path[64], name[300], info[1024];
	struct dirent *entry;
	DIR *dir;

	snprintf(dir_path, sizeof(dir_path), "%s/%u/fdinfo", root, pid);
	dir = opendir(dir_path);
	if (!dir)
		return false;
	while ((entry = readdir(dir))) {
		snprintf(name, sizeof(name), "fdinfo/%s", entry->d_name);
		if (entry->d_name[0] != '.' && procfs_read(root, pid, name, info, sizeof(info)))
			mark_held(pins, info);
	}
	closedir(dir);
	return pins->held != 0;
}

static uint32_t pinned_id(const char *path)
{
	struct bpf_map_info info = {};
	__u32 info_len = sizeof(info);
	int fd = bpf_obj_get(path);

	if (fd < 0)
		return 0;
	if (bpf_obj_get_info_by_fd(fd, &info, &info_len))
		info.id = 0;
	close(fd);
	return info.id;
}

/* Another running agent's pins are its own: taking them would leave it
 * unseen by bpftool, and its clean exit would remove this one's. One look
 * through /proc for an agent holding any of them. */
static int check_pins_free(struct bpf_map *maps[PINNED_MAPS])
{
	struct pins_found pins = { .held = 0 };
	char path[PINNED_MAPS][128];
	uint32_t holder = 0;
	bool any = false;

	for (int i = 0; i < PINNED_MAPS; i++) {
		snprintf(path[i], sizeof(path[i]), "%s/%s", PROBE_PIN_DIR, bpf_map__name(maps[i]));
		pins.id[i] = pinned_id(path[i]);
		any |= pins.id[i] != 0;
	}
	if (any)
		holder = procfs_find_named("/proc", "sonde", (uint32_t)getpid(), holds_pins, &pins);
	for (int i = 0; holder && i < PINNED_MAPS; i++) {
		if (pins.held & (1u << i)) {
			log_error("pin maps: %s is pinned by sonde pid %u, which is running: one agent "
				  "per host pins its maps; stop that one, or start this one without "
				  "--pin", path[i], holder);
			return -EBUSY;
		}
	}
	return 0;
}

/* Pins left by an agent that died are replaced: their maps are gone with
 * it, and a pin keeps a dead map alive. */
static int pin_maps(struct probe *p)
{
	struct bpf_map *maps[PINNED_MAPS];
	char path[128];
	int err = ensure_bpffs();

	if (err)
		return err;
	if (mkdir(PROBE_PIN_DIR, 0750) && errno != EEXIST) {
		err = -errno;
		log_error("pin maps: create %s: %s", PROBE_PIN_DIR, strerror(-err));
		return err;
	}
	pinned_maps(p, maps);
	err = check_pins_free(maps);
	if (err)
		return err;
	p->pinned = true;
	for (int i = 0; i < PINNED_MAPS; i++) {
		snprintf(path, sizeof(path), "%s/%s", PROBE_PIN_DIR, bpf_map__name(maps[i]));
		if (unlink(path) == 0)
			log_info("pin maps: replaced %s, left by an agent that stopped uncleanly", path);
		err = bpf_map__pin(maps[i], path);
		if (err) {
			log_error("pin map %s at %s: %s", bpf_map__name(maps[i]), path, strerror(-err));
			return err;
		}
	}
	log_info("pinned counters, conns, py_procs and log_procs under %s", PROBE_PIN_DIR);
	return 0;
}

static void unpin_maps(struct probe *p)
{
	struct bpf_map *maps[PINNED_MAPS];

	if (!p->pinned)
		return;
	pinned_maps(p, maps);
	for (int i = 0; i < PINNED_MAPS; i++)
		bpf_map__unpin(maps[i], NULL);
	rmdir(PROBE_PIN_DIR);
	p->pinned = false;
}

int probe_start(struct probe **out, const struct probe_opts *opts, probe_record_fn fn, void *ctx)
{
	struct probe *p = calloc(1, sizeof(*p));
	int ncpus = libbpf_num_possible_cpus();
	uint32_t share;
	bool perf;
	int err;

	if (!p)
		return -ENOMEM;
	if (ncpus <= 0) {
		free(p);
		return ncpus < 0 ? ncpus : -EINVAL;
	}
	share = ring_share(opts->ringbuf_bytes, ncpus);
	err = merge_init(&p->merge, merge_arena_bytes(opts->ringbuf_bytes), fn, ctx);
	if (err)
		goto fail;
	libbpf_set_print(libbpf_log);
	p->skel = sonde_bpf__open();
	if (!p->skel) {
		err = -errno;
		log_error("open BPF object: %s", strerror(-err));
		goto fail;
	}
	perf = opts->buffer == PROBE_BUFFER_PERF;
	configure(p->skel, opts, perf, ncpus, share);
	err = sonde_bpf__load(p->skel);
	if (err) {
		log_error("load BPF programs: %s", strerror(-err));
		goto fail;
	}
	err = perf ? open_perf_buffer(p, opts) : open_ring_buffer(p, ncpus, share);
	if (err) {
		log_error("open %s buffer: %s", perf ? "perf" : "ring", strerror(-err));
		goto fail;
	}
	err = attach_all(p);
	if (err || (err = check_uprobe_multi(p, opts)) || (err = set_job_names(p, opts)) ||
	    (err = attach_natives(p, opts)))
		goto fail;
	if (opts->pin && (err = pin_maps(p)))
		goto fail;
	*out = p;
	return 0;
fail:
	probe_free(p);
	return err;
}

/* Every record the rings hold, staged in place; the rings keep them
 * until ring_reader_release. */
static void stage_rings(struct probe *p)
{
	const void *record;
	uint32_t size;

	for (int i = 0; i < p->rings.count; i++) {
		struct ring_view *v = &p->rings.views[i];

		while ((record = ring_view_peek(v, &size))) {
			merge_add_in_place(&p->merge, record, size);
			ring_view_next(v);
		}
	}
}

/* Delivers the staged records made before before_ts, then gives the
 * rings' space back: a record made later was copied by the merge. */
static int drain(struct probe *p, uint64_t before_ts)
{
	int err = 0;

	if (p->perf) {
		err = perf_buffer__consume(p->perf);
		merge_release(&p->merge, before_ts);
		return err;
	}
	stage_rings(p);
	merge_release(&p->merge, before_ts);
	ring_reader_release(&p->rings);
	return 0;
}

/* Wakeups are batched, so after a wakeup or a timeout every buffer is
 * drained, not only the ones that crossed their watermark. */
int probe_poll(struct probe *p, int timeout_ms)
{
	int err = p->perf ? perf_buffer__poll(p->perf, timeout_ms)
			  : ring_reader_wait(&p->rings, timeout_ms);

	if (err < 0 && err != -EINTR)
		return err;
	err = drain(p, monotonic_now_ns());
	return err < 0 && err != -EINTR ? err : 0;
}

void probe_detach(struct probe *p)
{
	while (p->task_watches)
		unwatch_tasks(p, p->task_watches->tgid);
	while (p->nnative_links)
		close(p->native_links[--p->nnative_links]);
	for (size_t i = 0; i < p->nlinks; i++)
		bpf_link__destroy(p->links[i]);
	p->nlinks = 0;
	drain(p, UINT64_MAX);
}

void probe_free(struct probe *p)
{
	if (!p)
		return;
	probe_detach(p);
	unpin_maps(p);
	ring_reader_free(&p->rings);
	perf_buffer__free(p->perf);
	merge_free(&p->merge);
	sonde_bpf__destroy(p->skel);
	free(p);
}

#define KERNEL_COUNTER(id, name, help) \
	[id] = { name, help, COUNTER_TOTAL, (id) * sizeof(uint64_t) }

const struct counter_desc kernel_counters[SONDE_CNT_MAX] = {
	KERNEL_COUNTER(SONDE_CNT_LOST_RINGBUF, "lost_ringbuf_full",
		       "records dropped in the kernel: ring or perf buffer full"),
	KERNEL_COUNTER(SONDE_CNT_LOST_CONN_MAP, "lost_conn_map_full",
		       "TCP sockets not tracked: the connection table refused the entry"),
	KERNEL_COUNTER(SONDE_CNT_CAPTURE_FAULT, "capture_faults",
		       "payload reads that faulted (sent as a gap)"),
	KERNEL_COUNTER(SONDE_CNT_HTTP_CONNS, "http_conns", "connections inferred as HTTP/1.x"),
	KERNEL_COUNTER(SONDE_CNT_OTHER_CONNS, "other_conns", "TCP connections of no known protocol"),
	KERNEL_COUNTER(SONDE_CNT_TRUNCATED, "truncated_captures",
		       "data events that moved more than was captured"),
	KERNEL_COUNTER(SONDE_CNT_EXCLUDED_CONNS, "excluded_conns",
		       "connections of excluded or scoped-out processes, or accepted from "
		       "sonde's exporter"),
	KERNEL_COUNTER(SONDE_CNT_POSTGRES_CONNS, "postgres_conns",
		       "client connections inferred as PostgreSQL"),
	KERNEL_COUNTER(SONDE_CNT_REDIS_CONNS, "redis_conns", "client connections inferred as Redis"),
	KERNEL_COUNTER(SONDE_CNT_DB_SERVER_CONNS, "db_server_conns",
		       "server ends of database connections, not traced"),
	KERNEL_COUNTER(SONDE_CNT_PIPELINES, "pipelined_calls",
		       "HTTP calls past the capture holding several messages, sent whole"),
	KERNEL_COUNTER(SONDE_CNT_LOG_WRITES, "log_writes",
		       "writes to stdout or stderr of traced processes, sent"),
	KERNEL_COUNTER(SONDE_CNT_LOG_DROPPED, "log_writes_dropped",
		       "writes to stdout or stderr not sent: the process's log rate limit"),
	KERNEL_COUNTER(SONDE_CNT_LOG_TRUNCATED, "log_writes_truncated",
		       "writes to stdout or stderr longer than the log capture"),
	KERNEL_COUNTER(SONDE_CNT_NGINX_UNREAD, "nginx_requests_unread",
		       "HTTP messages an nginx worker wrote whose request could not be read"),
};

int probe_counters(struct probe *p, uint64_t out[SONDE_CNT_MAX])
{
	int ncpus = libbpf_num_possible_cpus();
	int fd = bpf_map__fd(p->skel->maps.counters);
	uint64_t *percpu;

	if (ncpus <= 0)
		return ncpus;
	percpu = calloc((size_t)ncpus, sizeof(*percpu));
	if (!percpu)
		return -ENOMEM;
	for (uint32_t key = 0; key < SONDE_CNT_MAX; key++) {
		out[key] = 0;
		if (bpf_map_lookup_elem(fd, &key, percpu))
			continue;
		for (int cpu = 0; cpu < ncpus; cpu++)
			out[key] += percpu[cpu];
	}
	out[SONDE_CNT_LOST_RINGBUF] += p->perf_lost;
	free(percpu);
	return 0;
}

struct merge_stats probe_merge_stats(const struct probe *p)
{
	return p->merge.stats;
}

static bool contains(const uint32_t *tgids, size_t n, uint32_t tgid)
{
	for (size_t i = 0; i < n; i++)
		if (tgids[i] == tgid)
			return true;
	return false;
}

/* Deleting while walking can restart the walk; re-reading the next key
 * from the deleted one is what the map API allows. */
static size_t sweep_map(int fd, const uint32_t *tgids, size_t n)
{
	struct sonde_conn_key key, next;
	bool have_key = false;
	size_t removed = 0;

	while (bpf_map_get_next_key(fd, have_key ? &key : NULL, &next) == 0) {
		if (contains(tgids, n, next.tgid) && bpf_map_delete_elem(fd, &next) == 0) {
			removed++;
			continue;
		}
		key = next;
		have_key = true;
	}
	return removed;
}

size_t probe_forget_processes(struct probe *p, const uint32_t *tgids, size_t n)
{
	int py_fd = bpf_map__fd(p->skel->maps.py_procs);
	int log_fd = bpf_map__fd(p->skel->maps.log_procs);
	int loop_fd = bpf_map__fd(p->skel->maps.loops);
	size_t removed = 0;

	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		removed += bpf_map_delete_elem(py_fd, &tgids[i]) == 0;
		removed += bpf_map_delete_elem(log_fd, &tgids[i]) == 0;
		removed += bpf_map_delete_elem(loop_fd, &tgids[i]) == 0;
		unwatch_tasks(p, tgids[i]);
	}
	return removed + sweep_map(bpf_map__fd(p->skel->maps.conns), tgids, n) +
	       sweep_map(bpf_map__fd(p->skel->maps.log_fds), tgids, n) +
	       sweep_map(bpf_map__fd(p->skel->maps.not_tcp), tgids, n);
}

int probe_watch_log_file(struct probe *p, uint32_t tgid, int32_t fd, bool watch)
{
	struct sonde_conn_key key = { .tgid = tgid, .fd = fd };
	int map = bpf_map__fd(p->skel->maps.log_fds);
	__u8 one = 1;

	if (watch ? bpf_map_update_elem(map, &key, &one, BPF_ANY)
		  : bpf_map_delete_elem(map, &key))
		return -errno;
	return 0;
}

int probe_scope_out(struct probe *p, uint32_t tgid, int32_t fd)
{
	struct sonde_conn_key key = { .tgid = tgid, .fd = fd };
	__u8 one = 1;

	if (bpf_map_update_elem(bpf_map__fd(p->skel->maps.scoped_out), &tgid, &one, BPF_ANY))
		return -errno;
	bpf_map_delete_elem(bpf_map__fd(p->skel->maps.log_procs), &tgid);
	/* Its next call finds no entry and makes one, written off. */
	bpf_map_delete_elem(bpf_map__fd(p->skel->maps.conns), &key);
	return 0;
}

int probe_set_python(struct probe *p, uint32_t tgid, const struct sonde_py_layout *layout)
{
	int fd = bpf_map__fd(p->skel->maps.py_procs);

	if (bpf_map_update_elem(fd, &tgid, layout, BPF_ANY))
		return -errno;
	return 0;
}

int probe_set_loop(struct probe *p, uint32_t tgid, const struct sonde_loop *loop)
{
	if (bpf_map_update_elem(bpf_map__fd(p->skel->maps.loops), &tgid, loop, BPF_ANY))
		return -errno;
	return 0;
}

void probe_track_anew(struct probe *p, const uint32_t *tgids, size_t n)
{
	if (n > 0)
		sweep_map(bpf_map__fd(p->skel->maps.conns), tgids, n);
}
