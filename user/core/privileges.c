#include "privileges.h"

#include "log.h"

#include <errno.h>
#include <linux/capability.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

struct capability {
	int cap;
	const char *name;
	bool kept; /* still needed once the programs are attached */
	const char *why;
};

/* What each capability is for; the README's "Privileges" section says the
 * same. */
static const struct capability needed[] = {
	{ CAP_BPF, "CAP_BPF", false, "load the BPF programs and create their maps" },
	{ CAP_PERFMON, "CAP_PERFMON", false, "attach to tracepoints, read kernel memory in them" },
	{ CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH", true,
	  "read tracepoint ids under tracefs, and other users' programs (CPython's "
	  "layout) through their /proc/PID/map_files, which only they may search" },
	{ CAP_SYS_PTRACE, "CAP_SYS_PTRACE", true,
	  "read other users' /proc/PID/environ, maps, exe and fd" },
	{ CAP_CHECKPOINT_RESTORE, "CAP_CHECKPOINT_RESTORE", true,
	  "open /proc/PID/map_files to find a CPython interpreter's layout" }, /* see cap_of */
};

/* Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK, which libbpf
 * raises: that takes CAP_SYS_RESOURCE unless the limit is already gone. */
static bool memlock_needs_raising(void)
{
	struct utsname u;
	struct rlimit limit;
	int major = 0, minor = 0;

	if (getrlimit(RLIMIT_MEMLOCK, &limit) == 0 && limit.rlim_cur == RLIM_INFINITY)
		return false;
	if (uname(&u) || sscanf(u.release, "%d.%d", &major, &minor) != 2)
		return true;
	return major < 5 || (major == 5 && minor < 11);
}

static int read_capabilities(struct __user_cap_data_struct data[2], char *why, size_t size)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };

	if (syscall(SYS_capget, &hdr, data)) {
		snprintf(why, size, "read capabilities: %s", strerror(errno));
		return -1;
	}
	return 0;
}

static bool has(const struct __user_cap_data_struct data[2], int cap)
{
	return data[cap / 32].effective & (1u << (cap % 32));
}

/* A kernel setting under /proc/sys/kernel; unknown when it cannot be read. */
static int kernel_setting(const char *name, int unknown)
{
	char path[64];
	FILE *file;
	int value = unknown;

	snprintf(path, sizeof(path), "/proc/sys/kernel/%s", name);
	file = fopen(path, "r");
	if (!file)
		return unknown;
	if (fscanf(file, "%d", &value) != 1)
		value = unknown;
	fclose(file);
	return value;
}

/* Kernels before 5.9 have no CAP_CHECKPOINT_RESTORE: map_files takes
 * CAP_SYS_ADMIN there. */
static int map_files_cap(void)
{
	int last = kernel_setting("cap_last_cap", CAP_CHECKPOINT_RESTORE);

	return last >= CAP_CHECKPOINT_RESTORE ? CAP_CHECKPOINT_RESTORE : CAP_SYS_ADMIN;
}

/* Debian's and Ubuntu's kernels add a kernel.perf_event_paranoid level
 * above 2, their default: opening a perf event, which is how a tracepoint
 * program is attached, then takes CAP_SYS_ADMIN, whatever CAP_PERFMON
 * allows elsewhere. -1 when the setting cannot be read. */
static int perf_paranoid_level(void)
{
	return kernel_setting("perf_event_paranoid", -1);
}

/* The capability that grants a need on this kernel. */
static int cap_of(const struct capability *c)
{
	if (c->cap == CAP_CHECKPOINT_RESTORE)
		return map_files_cap();
	if (c->cap == CAP_PERFMON && perf_paranoid_level() > 2)
		return CAP_SYS_ADMIN;
	return c->cap;
}

static void say_missing(const struct capability *c, int cap, char *why, size_t size)
{
	if (c->cap == CAP_PERFMON && cap == CAP_SYS_ADMIN)
		snprintf(why, size, "missing CAP_SYS_ADMIN, needed on this kernel to attach to "
			 "tracepoints: its kernel.perf_event_paranoid is %d (Debian's and Ubuntu's "
			 "default), at which only CAP_SYS_ADMIN opens perf events; or set it to 2 "
			 "(see the README's Privileges)", perf_paranoid_level());
	else
		snprintf(why, size, "missing %s, needed to %s (see the README's Privileges)",
			 cap == CAP_SYS_ADMIN ? "CAP_SYS_ADMIN" : c->name, c->why);
}

int privileges_check(char *why, size_t size)
{
	struct __user_cap_data_struct data[2] = { 0 };

	if (read_capabilities(data, why, size))
		return -1;
	for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
		int cap = cap_of(&needed[i]);

		if (!has(data, cap)) {
			say_missing(&needed[i], cap, why, size);
			return -1;
		}
	}
	if (memlock_needs_raising() && !has(data, CAP_SYS_RESOURCE)) {
		snprintf(why, size, "missing CAP_SYS_RESOURCE, needed on this kernel (before 5.11) to "
			 "raise RLIMIT_MEMLOCK for BPF maps; or set that limit to unlimited");
		return -1;
	}
	return 0;
}

int privileges_drop(char *why, size_t size)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[2] = { 0 };

	for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
		int cap;

		if (!needed[i].kept)
			continue;
		cap = cap_of(&needed[i]);
		data[cap / 32].effective |= 1u << (cap % 32);
		data[cap / 32].permitted |= 1u << (cap % 32);
	}
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)) {
		snprintf(why, size, "clear ambient capabilities: %s", strerror(errno));
		return -1;
	}
	if (syscall(SYS_capset, &hdr, data)) {
		snprintf(why, size, "drop capabilities: %s", strerror(errno));
		return -1;
	}
	log_info("capabilities after start-up: CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, %s",
		 map_files_cap() == CAP_SYS_ADMIN ? "CAP_SYS_ADMIN" : "CAP_CHECKPOINT_RESTORE");
	return 0;
}
