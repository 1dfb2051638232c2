#include "harness.h"
#include "uvloop.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* uv_loop_t.backend_fd, the loop's epoll fd, in every libuv 1.x. */
#define UV_LOOP_BACKEND_FD 64

Test(uvloop, versions_are_ordered_and_disjoint)
{
	for (unsigned i = 0; i < uvloop_nversions; i++) {
		cr_expect_leq(uvloop_versions[i].from, uvloop_versions[i].to);
		if (i > 0)
			cr_expect_gt(uvloop_versions[i].from, uvloop_versions[i - 1].to);
	}
	cr_assert_not_null(uvloop_version_of(0x012e00)); /* 1.46.0, Node.js 20 */
	cr_expect_eq(uvloop_version_of(0x012e00)->inv_offset, 472);
	cr_expect_eq(uvloop_version_of(0x012e00)->ring_fd_offset, 456);
	cr_expect_null(uvloop_version_of(0x012c02)); /* 1.44.2: not followed */
}

static void read_mem(pid_t pid, uint64_t at, void *out, size_t n)
{
	char path[64];
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/mem", pid);
	fd = open(path, O_RDONLY);
	cr_assert(fd >= 0);
	cr_assert_eq(pread(fd, out, n, (off_t)at), (ssize_t)n);
	close(fd);
}

/* The layout points at the loop Node runs: its internal fields are set
 * and its backend fd is the process's epoll instance, idle in
 * epoll_wait with no callback running. */
Test(uvloop, finds_the_loop_a_running_node_polls_and_nothing_else)
{
	struct prog_files files;
	struct prog_file child_exe, own_exe;
	struct uvloop u;
	struct sonde_loop loop;
	uint64_t lfields = 0, inv = 1;
	int32_t backend_fd = -1, ring_fd = 0;
	char path[64], target[64] = "";
	pid_t child = harness_run("node", (char *const[]){ "/usr/bin/node", "-e",
							  "setTimeout(() => {}, 30000)", NULL });

	prog_files_init(&files, "/proc");
	uvloop_init(&u, &files);
	usleep(300 * 1000);
	child_exe = harness_exe(&files, child);
	own_exe = harness_exe(&files, getpid());
	cr_assert_eq(uvloop_layout(&u, (uint32_t)child, &child_exe, &loop), 1);
	read_mem(child, loop.internal_fields, &lfields, sizeof(lfields));
	cr_expect_neq(lfields, 0);
	read_mem(child, loop.internal_fields - UVLOOP_INTERNAL_FIELDS + UV_LOOP_BACKEND_FD,
		 &backend_fd, sizeof(backend_fd));
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", child, backend_fd);
	cr_expect_gt(readlink(path, target, sizeof(target) - 1), 0);
	cr_expect_str_eq(target, "anon_inode:[eventpoll]");
	read_mem(child, lfields + loop.inv_offset, &inv, sizeof(inv));
	cr_expect_eq(inv, 0);
	/* io_uring is off unless UV_USE_IO_URING=1 asks for it. */
	read_mem(child, lfields + loop.ring_fd_offset, &ring_fd, sizeof(ring_fd));
	cr_expect_eq(ring_fd, -1);
	cr_expect_eq(uvloop_layout(&u, (uint32_t)getpid(), &own_exe, &loop), 0);
	cr_expect_eq(u.stats.processes, 1);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
}

static long peak_rss_kib(void)
{
	char line[128];
	long kib = -1;
	FILE *status = fopen("/proc/self/status", "r");

	while (status && fgets(line, sizeof(line), status))
		if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
			break;
	if (status)
		fclose(status);
	return kib;
}

/* node's symbol tables (~14 MB with their strings) are read a chunk at a
 * time, not mapped: mapped, they counted in the agent's peak memory. The
 * loop is still found. */
Test(uvloop, reading_node_leaves_its_symbol_tables_unmapped)
{
	struct prog_files files;
	const struct prog_file *node;
	long before;

	prog_files_init(&files, "/proc");
	before = peak_rss_kib();
	node = prog_file_at(&files, "/usr/bin/node");
	cr_assert_not_null(node);
	cr_expect_neq(node->uv_loop, 0);
	cr_expect_neq(node->uv_version, 0);
	cr_expect_lt(peak_rss_kib() - before, 2048, "peak grew by %ld KiB",
		     peak_rss_kib() - before);
}
