#include "pytask.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define PYTASK_DESC(...) COUNTER_DESC(struct pytask_stats, __VA_ARGS__)
const struct counter_desc pytask_counters[] = { PYTASK_COUNTERS(PYTASK_DESC) };
const size_t pytask_counter_count = sizeof(pytask_counters) / sizeof(pytask_counters[0]);

/* Checked against the CPython headers by tests/unit/test_pytask.c. */
const struct pytask_version pytask_versions[] = {
	{
		.hex_major_minor = 0x030b,
		.soabi = "cpython-311-x86_64-linux-gnu",
		.tp_init = 296,
		.future_state = 88,
		.future_exception = 48,
		.layout = {
			.interp_main = 48,
			.threads_head = 16,
			.tstate_next = 8,
			.tstate_native_id = 160,
			.tstate_cframe = 56,
			.cframe_frame = 8,
			.frame_previous = 48,
			.frame_code = 32,
			.frame_owner = 69,
			.code_flags = 48,
			.frame_locals = 72,
			.handle_callback = 24,
			.step_task = 16,
			.future_callback0 = 24,
			.task_coro = 136,
			.coro_iframe = 80,
			.func_closure = 72,
			.values_before = 32,
			.taskgroup_parent = 32,
			.code_qualname = 128,
			.func_qualname = 40,
			.coro_qualname = 40,
			.coro_code = 16,
			.thread_target = 0,
			.code_localsplusnames = 96,
		},
	},
};
const unsigned pytask_nversions = sizeof(pytask_versions) / sizeof(pytask_versions[0]);

void pytask_init(struct pytask *pt, struct prog_files *files)
{
	memset(pt, 0, sizeof(*pt));
	pt->files = files;
}

static int version_index(uint64_t py_version)
{
	for (unsigned i = 0; i < pytask_nversions; i++)
		if (pytask_versions[i].hex_major_minor == (py_version >> 16 & 0xffff))
			return (int)i;
	return -1;
}

/* A file that is a CPython 3.11+ interpreter (supported or not). */
static bool is_interpreter(const struct prog_file *file)
{
	return file && file->py_runtime && file->py_version_known;
}

/* A mapping that may hold the interpreter: the program itself (exe_inode,
 * when it is one), else a shared libpython. */
static bool may_hold_interpreter(const struct prog_mapping *m, uint64_t exe_inode)
{
	const char *base = strrchr(m->path, '/');

	if (!base)
		return false;
	if (exe_inode)
		return m->inode == exe_inode;
	return strncmp(base + 1, "libpython3", 10) == 0;
}

struct interpreter_search {
	struct pytask *pt;
	uint32_t pid;
	uint64_t exe_inode;
	struct sonde_py_layout *out;
	const struct pytask_version **version;
};

/* FOUND, or UNSUPPORTED: an interpreter of a version sonde has no
 * layout for. */
enum { FOUND = 1, UNSUPPORTED = 2 };

static int look_at_mapping(void *ctx, const struct prog_mapping *m)
{
	struct interpreter_search *s = ctx;
	const struct prog_file *file;
	int version;

	if (!may_hold_interpreter(m, s->exe_inode))
		return 0;
	file = prog_file_of_mapping(s->pt->files, s->pid, m);
	if (!is_interpreter(file))
		return 0;
	version = version_index(file->py_version);
	if (version < 0) {
		s->pt->stats.unsupported++;
		return UNSUPPORTED;
	}
	*s->out = pytask_versions[version].layout;
	*s->version = &pytask_versions[version];
	s->out->runtime = m->start + file->py_runtime - file->load_vaddr;
	return FOUND;
}

int pytask_layout(struct pytask *pt, uint32_t pid, const struct prog_file *exe, bool at_exec,
		  struct sonde_py_layout *out, const struct pytask_version **version)
{
	struct interpreter_search search = { pt, pid, 0, out, version };
	int ret;

	if (!is_interpreter(exe) && at_exec)
		return 0;
	if (is_interpreter(exe))
		search.exe_inode = exe->ino;
	ret = prog_mappings(pt->files, pid, look_at_mapping, &search);
	if (ret == FOUND)
		pt->stats.processes++;
	else if (ret < 0)
		pt->stats.failures++;
	return ret < 0 ? ret : ret == FOUND;
}

/* <prefix>/lib/pythonX.Y/lib-dynload/_asyncio.<soabi>.so, the interpreter
 * being <prefix>/bin/<name>: where CPython installs look for it. */
static int asyncio_module_path(const char *root, const char *interpreter,
			       const struct pytask_version *v, char *out, size_t size)
{
	const char *bin = strstr(interpreter, "/bin/");
	int n;

	if (!bin)
		return -ENOENT;
	n = snprintf(out, size, "%s%.*s/lib/python%u.%u/lib-dynload/_asyncio.%s.so", root,
		     (int)(bin - interpreter), interpreter, v->hex_major_minor >> 8,
		     v->hex_major_minor & 0xff, v->soabi);
	return n > 0 && (size_t)n < size ? 0 : -ENAMETOOLONG;
}

/* A file's _asyncio.Task.__init__, read once per file. */
static int task_init_in(struct pytask *pt, const char *path, const struct pytask_version *v,
			uint64_t *offset)
{
	const struct prog_file *file = prog_py_task_init(pt->files, path, v->tp_init);

	if (!file)
		return -errno;
	*offset = file->py_task_init;
	return *offset ? 0 : -ENOENT;
}

int pytask_task_init(struct pytask *pt, uint32_t pid, const struct pytask_version *version,
		     char *path, size_t path_size, uint64_t *offset)
{
	char link[128], root[128], interpreter[PATH_MAX];
	ssize_t len;
	int err;

	snprintf(link, sizeof(link), "%s/%u/exe", pt->files->proc_root, pid);
	snprintf(root, sizeof(root), "%s/%u/root", pt->files->proc_root, pid);
	len = readlink(link, interpreter, sizeof(interpreter) - 1);
	if (len < 0)
		return -errno;
	interpreter[len] = '\0';
	err = asyncio_module_path(root, interpreter, version, path, path_size);
	if (!err)
		err = task_init_in(pt, path, version, offset);
	if (err) { /* built in */
		snprintf(path, path_size, "%s", link);
		err = task_init_in(pt, path, version, offset);
	}
	if (err)
		pt->stats.no_task_init++;
	return err;
}
