/* Recognises CPython processes and gives the kernel what it needs to name
 * the asyncio task a thread runs (struct sonde_py_layout): the address of
 * _PyRuntime in the process and the field offsets of its version.
 *
 * Only versions whose layout sonde carries are recognised (CPython 3.11,
 * Debian 12's); any other process gets no layout, and its spans are linked
 * by thread alone. Program files are read through progfile.h. */
#ifndef SONDE_PYTASK_H
#define SONDE_PYTASK_H

#include "counters.h"
#include "progfile.h"
#include "sonde_events.h"

#include <stdbool.h>
#include <stdint.h>

/* Offsets of one CPython version (runtime left 0). */
struct pytask_version {
	uint32_t hex_major_minor; /* PY_VERSION_HEX >> 16, e.g. 0x030b */
	const char *soabi;        /* its extension modules' tag */
	uint16_t tp_init;         /* PyTypeObject.tp_init */
	/* What the agent reads of a job's asyncio task (jobs.h). */
	uint16_t future_state;     /* _asyncio FutureObj.fut_state (an int) */
	uint16_t future_exception; /* FutureObj.fut_exception */
	struct sonde_py_layout layout;
};

extern const struct pytask_version pytask_versions[];
extern const unsigned pytask_nversions;

#define PYTASK_COUNTERS(X) \
	X(processes, "python_processes", TOTAL, "CPython processes given a layout") \
	X(unsupported, "python_unsupported", TOTAL, "CPython of a version sonde has no layout for") \
	X(failures, "python_read_failures", TOTAL, "programs or maps that could not be read") \
	X(no_task_init, "python_task_init_unfound", TOTAL, \
	  "CPython processes to watch for jobs whose _asyncio.Task.__init__ was not found")

struct pytask_stats {
	PYTASK_COUNTERS(COUNTER_FIELD)
};

extern const struct counter_desc pytask_counters[];
extern const size_t pytask_counter_count;

struct pytask {
	struct prog_files *files; /* not owned */
	struct pytask_stats stats;
};

void pytask_init(struct pytask *pt, struct prog_files *files);
/* 1 and *out filled when pid, whose program file is exe (prog_exe), runs
 * a known CPython, 0 when it does not, -errno when its maps could not be
 * read. /proc/<pid>/maps is read only for an interpreter (for its load
 * address) or, when not at_exec, to look for a shared libpython: right
 * after an exec no library is mapped yet. */
int pytask_layout(struct pytask *pt, uint32_t pid, const struct prog_file *exe, bool at_exec,
		  struct sonde_py_layout *out, const struct pytask_version **version);
/* Where pid's interpreter has _asyncio.Task's __init__: the file (its
 * _asyncio extension module beside the interpreter, else the interpreter
 * itself), as a path under /proc/<pid>/root, and the code's offset in it.
 * -errno when neither has it. */
int pytask_task_init(struct pytask *pt, uint32_t pid, const struct pytask_version *version,
		     char *path, size_t path_size, uint64_t *offset);

#endif
