// SPDX-License-Identifier: GPL-2.0
/*
 * The floor under sonde's kernel cost: every tracepoint sonde attaches by
 * default, each with a program that returns at once. The overhead suite
 * runs it as a variant, so that a sitting shows what attaching alone costs
 * the traced programs (the kernel's syscall trace path), apart from what
 * sonde's programs do. The tracepoints are read from sonde's own object,
 * so the two sets never differ.
 *
 * Usage: probe_floor SONDE_BPF_OBJECT. Says "sonde: ready" on stderr once
 * attached, as the agent does, and holds the programs until SIGTERM.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <linux/perf_event.h>
#include <sys/syscall.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#define TRACEFS_EVENTS "/sys/kernel/tracing/events"
#define TRACEPOINT_PREFIX "tracepoint/"

/* The tracepoint's id in tracefs ("syscalls/sys_exit_read"). */
static int tracepoint_id(const char *name)
{
	char path[512];
	FILE *file;
	int id;

	snprintf(path, sizeof(path), TRACEFS_EVENTS "/%s/id", name);
	file = fopen(path, "r");
	if (!file)
		return -errno;
	if (fscanf(file, "%d", &id) != 1)
		id = -EINVAL;
	fclose(file);
	return id;
}

/* r0 = 0; exit. */
static int load_empty_program(void)
{
	const struct bpf_insn insns[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0 },
		{ .code = BPF_JMP | BPF_EXIT },
	};

	return bpf_prog_load(BPF_PROG_TYPE_TRACEPOINT, "floor", "GPL", insns, 2, NULL);
}

/* As libbpf attaches a tracepoint program: through a perf event on one
 * CPU, which runs the program on every CPU. The fds stay open until
 * exit, and the attachment with them. */
static int attach_empty(int prog_fd, const char *name)
{
	struct perf_event_attr attr = {
		.type = PERF_TYPE_TRACEPOINT,
		.size = sizeof(attr),
		.sample_period = 1,
		.wakeup_events = 1,
	};
	int id = tracepoint_id(name);
	int event_fd;

	if (id < 0) {
		fprintf(stderr, "probe_floor: tracepoint %s: %s\n", name, strerror(-id));
		return id;
	}
	attr.config = (__u64)id;
	event_fd = (int)syscall(__NR_perf_event_open, &attr, -1, 0, -1, PERF_FLAG_FD_CLOEXEC);
	if (event_fd < 0 || bpf_link_create(prog_fd, event_fd, BPF_PERF_EVENT, NULL) < 0) {
		int err = -errno;

		fprintf(stderr, "probe_floor: attach %s: %s\n", name, strerror(errno));
		return err;
	}
	return 0;
}

/* Every tracepoint program of sonde's object, attached empty. */
static int attach_floor(const char *object_path)
{
	struct bpf_object *obj = bpf_object__open_file(object_path, NULL);
	struct bpf_program *prog;
	int prog_fd, err = 0, attached = 0;

	if (!obj) {
		fprintf(stderr, "probe_floor: open %s: %s\n", object_path, strerror(errno));
		return -errno;
	}
	prog_fd = load_empty_program();
	if (prog_fd < 0) {
		err = prog_fd;
		fprintf(stderr, "probe_floor: load the empty program: %s\n", strerror(-err));
		goto out;
	}
	bpf_object__for_each_program(prog, obj) {
		const char *section = bpf_program__section_name(prog);

		if (strncmp(section, TRACEPOINT_PREFIX, strlen(TRACEPOINT_PREFIX)) != 0)
			continue;
		err = attach_empty(prog_fd, section + strlen(TRACEPOINT_PREFIX));
		if (err)
			goto out;
		attached++;
	}
	fprintf(stderr, "probe_floor: %d tracepoints of %s, each with an empty program\n",
		attached, object_path);
out:
	bpf_object__close(obj);
	return err;
}

int main(int argc, char **argv)
{
	sigset_t stop;
	int sig;

	if (argc != 2) {
		fprintf(stderr, "usage: probe_floor SONDE_BPF_OBJECT\n");
		return 2;
	}
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	sigprocmask(SIG_BLOCK, &stop, NULL);
	if (attach_floor(argv[1]))
		return 1;
	fprintf(stderr, "sonde: ready\n");
	sigwait(&stop, &sig);
	return 0;
}
