/* The CPython layouts sonde carries, checked against the headers of the
 * installed interpreter, and recognition of a real interpreter process. */
#define Py_BUILD_CORE 1
#include <Python.h>
#include <internal/pycore_frame.h>
#include <internal/pycore_interp.h>
#include <internal/pycore_runtime.h>

#include "harness.h"
#include "pytask.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static const struct pytask_version *installed_version(void)
{
	for (unsigned i = 0; i < pytask_nversions; i++)
		if (pytask_versions[i].hex_major_minor == (PY_VERSION_HEX >> 16))
			return &pytask_versions[i];
	return NULL;
}

Test(pytask, layout_matches_the_installed_cpython_headers)
{
	const struct pytask_version *v = installed_version();
	const struct sonde_py_layout *l;

	cr_assert(v, "no layout for CPython %s", PY_VERSION);
	l = &v->layout;
	cr_expect_eq(l->interp_main, offsetof(_PyRuntimeState, interpreters.main));
	cr_expect_eq(l->threads_head, offsetof(PyInterpreterState, threads.head));
	cr_expect_eq(l->tstate_next, offsetof(PyThreadState, next));
	cr_expect_eq(l->tstate_native_id, offsetof(PyThreadState, native_thread_id));
	cr_expect_eq(l->tstate_cframe, offsetof(PyThreadState, cframe));
	cr_expect_eq(l->cframe_frame, offsetof(_PyCFrame, current_frame));
	cr_expect_eq(l->frame_previous, offsetof(_PyInterpreterFrame, previous));
	cr_expect_eq(l->frame_code, offsetof(_PyInterpreterFrame, f_code));
	cr_expect_eq(l->frame_owner, offsetof(_PyInterpreterFrame, owner));
	cr_expect_eq(SONDE_PY_OWNED_BY_GENERATOR, FRAME_OWNED_BY_GENERATOR);
	cr_expect_eq(l->code_flags, offsetof(PyCodeObject, co_flags));
	cr_expect_eq(l->frame_locals, offsetof(_PyInterpreterFrame, localsplus));
	cr_expect_eq(l->coro_iframe, offsetof(PyCoroObject, cr_iframe));
	cr_expect_eq(l->func_closure, offsetof(PyFunctionObject, func_closure));
	cr_expect_eq(l->code_qualname, offsetof(PyCodeObject, co_qualname));
	cr_expect_eq(l->code_localsplusnames, offsetof(PyCodeObject, co_localsplusnames));
	cr_expect_eq(l->func_qualname, offsetof(PyFunctionObject, func_qualname));
	cr_expect_eq(l->coro_qualname, offsetof(PyCoroObject, cr_qualname));
	cr_expect_eq(l->coro_code, offsetof(PyCoroObject, cr_code));
	cr_expect_eq(v->tp_init, offsetof(PyTypeObject, tp_init));
	/* The kernel reads all three in the frame's first SONDE_PY_FRAME_HEAD bytes. */
	for (unsigned i = 0; i < pytask_nversions; i++) {
		l = &pytask_versions[i].layout;
		cr_expect(l->frame_code % 8 == 0 && l->frame_code < SONDE_PY_FRAME_HEAD);
		cr_expect(l->frame_previous % 8 == 0 && l->frame_previous < SONDE_PY_FRAME_HEAD);
		cr_expect(l->frame_owner < SONDE_PY_FRAME_HEAD);
		cr_expect(sizeof(_PyInterpreterFrame) >= SONDE_PY_FRAME_HEAD);
	}
}

Test(pytask, recognises_a_running_interpreter_and_nothing_else)
{
	struct prog_files files;
	struct prog_file child_exe, own_exe;
	struct pytask pt;
	struct sonde_py_layout layout;
	const struct pytask_version *version;
	pid_t child = harness_run("python3", (char *const[]){ "/usr/bin/python3", "-c",
							     "import time; time.sleep(30)", NULL });

	prog_files_init(&files, "/proc");
	pytask_init(&pt, &files);
	child_exe = harness_exe(&files, child);
	own_exe = harness_exe(&files, getpid());
	cr_expect_eq(pytask_layout(&pt, (uint32_t)child, &child_exe, false, &layout, &version), 1);
	cr_expect_neq(layout.runtime, 0);
	cr_expect_eq(layout.frame_code, installed_version()->layout.frame_code);
	cr_expect_eq(pytask_layout(&pt, (uint32_t)getpid(), &own_exe, false, &layout, &version), 0);
	cr_expect_eq(pt.stats.processes, 1);
	/* At exec only the program file is looked at: it is the interpreter. */
	cr_expect_eq(pytask_layout(&pt, (uint32_t)child, &child_exe, true, &layout, &version), 1);
	cr_expect_eq(pytask_layout(&pt, (uint32_t)getpid(), &own_exe, true, &layout, &version), 0);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
}

/* The offsets of objects no header describes (asyncio's Handle slots,
 * _asyncio's Task and step wrapper, a TaskGroup's attribute values),
 * found by the running interpreter itself: where, in each object, the
 * object the field names sits. */
static const char asyncio_offsets_script[] =
	"import asyncio, ctypes, sys\n"
	"def at(a): return ctypes.c_void_p.from_address(a).value or 0\n"
	"def where(obj, target, size):\n"
	"    return next((o for o in range(8, size, 8) if at(id(obj) + o) == id(target)), -1)\n"
	"async def work(): pass\n"
	"async def main():\n"
	"    loop = asyncio.get_running_loop()\n"
	"    handle = loop.call_soon(int)\n"
	"    async with asyncio.TaskGroup() as group:\n"
	"        task = group.create_task(work())\n"
	"        step = loop._ready[-1]._callback\n"
	"        values = at(id(group) - int(sys.argv[1]))\n"
	"        parent = values and at(values + int(sys.argv[2])) == id(asyncio.current_task())\n"
	"        print(where(handle, int, 64), where(step, task, 32),\n"
	"              where(task, task._callbacks[0][0], 160), where(task, task.get_coro(), 160),\n"
	"              int(parent))\n"
	"asyncio.run(main())\n";

Test(pytask, asyncio_offsets_match_the_installed_interpreter)
{
	const struct sonde_py_layout *l = &installed_version()->layout;
	char command[2048];
	int callback, step_task, callback0, coro, parent;
	FILE *py;

	snprintf(command, sizeof(command), "/usr/bin/python3 -c '%s' %u %u", asyncio_offsets_script,
		 l->values_before, l->taskgroup_parent);
	py = popen(command, "r");
	cr_assert_not_null(py);
	cr_assert_eq(fscanf(py, "%d %d %d %d %d", &callback, &step_task, &callback0, &coro, &parent),
		     5);
	pclose(py);
	cr_expect_eq(callback, l->handle_callback);
	cr_expect_eq(step_task, l->step_task);
	cr_expect_eq(callback0, l->future_callback0);
	cr_expect_eq(coro, l->task_coro);
	cr_expect_eq(parent, 1, "a TaskGroup's _parent_task is not where the layout says");
}

/* What the agent reads of a job's task and a thread's target, found by the
 * running interpreter itself: a Task's state and exception (a task done
 * with an error), and a Thread's _target among its attribute values. */
static const char job_offsets_script[] =
	"import asyncio, ctypes, sys, threading\n"
	"def at(a): return ctypes.c_void_p.from_address(a).value or 0\n"
	"async def boom(): raise ValueError\n"
	"async def main():\n"
	"    task = asyncio.get_running_loop().create_task(boom())\n"
	"    await asyncio.sleep(0)\n"
	"    state = ctypes.c_int.from_address(id(task) + int(sys.argv[1])).value\n"
	"    raised = at(id(task) + int(sys.argv[2])) == id(task.exception())\n"
	"    thread = threading.Thread(target=boom)\n"
	"    values = at(id(thread) - int(sys.argv[3]))\n"
	"    print(state, int(raised), int(at(values + int(sys.argv[4])) == id(boom)))\n"
	"asyncio.run(main())\n";

Test(pytask, job_offsets_match_the_installed_interpreter)
{
	const struct pytask_version *v = installed_version();
	char command[2048];
	int state, raised, target;
	FILE *py;

	snprintf(command, sizeof(command), "/usr/bin/python3 -c '%s' %u %u %u %u",
		 job_offsets_script, v->future_state, v->future_exception,
		 v->layout.values_before, v->layout.thread_target);
	py = popen(command, "r");
	cr_assert_not_null(py);
	cr_assert_eq(fscanf(py, "%d %d %d", &state, &raised, &target), 3);
	pclose(py);
	cr_expect_eq(state, 2, "a done task's fut_state is not where the layout says");
	cr_expect_eq(raised, 1, "a task's exception is not where the layout says");
	cr_expect_eq(target, 1, "a Thread's _target is not where the layout says");
}

/* Where the running interpreter's _asyncio.Task.__init__ is, as the
 * interpreter's own type object says, against what sonde finds in the
 * files without symbols. */
static const char task_init_script[] =
	"import ctypes, _asyncio\n"
	"code = ctypes.c_void_p.from_address(id(_asyncio.Task) + 296).value\n"
	"for line in open(\"/proc/self/maps\"):\n"
	"    f = line.split()\n"
	"    lo, hi = (int(x, 16) for x in f[0].split(\"-\"))\n"
	"    if lo <= code < hi: print(f[5], code - lo + int(f[2], 16))\n";

Test(pytask, finds_the_task_init_of_a_running_interpreter)
{
	struct prog_files files;
	struct pytask pt;
	char path[512], want_path[512], command[1024];
	uint64_t offset = 0;
	unsigned long long want_offset;
	pid_t child = harness_run("python3", (char *const[]){ "/usr/bin/python3", "-c",
							     "import time; time.sleep(30)", NULL });
	FILE *py;

	prog_files_init(&files, "/proc");
	pytask_init(&pt, &files);
	cr_assert_eq(pytask_task_init(&pt, (uint32_t)child, installed_version(), path, sizeof(path),
				      &offset), 0);
	snprintf(command, sizeof(command), "/usr/bin/python3 -c '%s'", task_init_script);
	py = popen(command, "r");
	cr_assert_not_null(py);
	cr_assert_eq(fscanf(py, "%511s %llu", want_path, &want_offset), 2);
	pclose(py);
	cr_expect_eq(offset, want_offset);
	cr_expect(strstr(path, want_path), "%s is not %s", path, want_path);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
}
