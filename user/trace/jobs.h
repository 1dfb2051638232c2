/* Job spans: an asyncio task or a thread a CPython process starts to run
 * a function named as an entry point (SONDE_ENTRY_POINTS,
 * "python:QUALNAME"), and a call of a native function named as one
 * ("native:PATH:SYMBOL", with chosen arguments as attributes), get one
 * INTERNAL span, named after the function, from its start to its end: the
 * child of the request (or job) whose thread and task started it, and the
 * parent of the spans and lines its own task or thread makes (linker_job;
 * a native call's, on its thread until it returns).
 *
 * The kernel tells a job's start (bpf/jobs.bpf.h) and a thread job's end,
 * and marks what a job's task makes. A task's end makes no call: its
 * _asyncio.Task is read from the process every 50 ms, and the job ends at
 * the look that finds it done (within 50 ms and a poll tick of its real
 * end), ERROR when it ended with an exception or was cancelled. Of a task
 * freed in between, the outcome is not known. */
#ifndef SONDE_JOBS_H
#define SONDE_JOBS_H

#include "clock.h"
#include "counters.h"
#include "linker.h"
#include "procinfo.h"
#include "proto.h"
#include "pytask.h"
#include "sonde_events.h"

#include <stddef.h>
#include <stdint.h>

/* As many as the kernel's job_names map holds. */
#define JOBS_ENTRY_POINTS_MAX 64
#define JOBS_NATIVE_MAX 16
#define JOBS_ATTR_MAX 48

/* A native entry point: a function of a program or library file, and the
 * arguments its span shows. */
struct native_entry {
	char path[256];
	char symbol[SONDE_JOB_NAME_MAX];
	unsigned nargs;
	uint8_t arg[SONDE_JOB_ARGS_MAX]; /* which argument (0: the first) */
	char attr[SONDE_JOB_ARGS_MAX][JOBS_ATTR_MAX]; /* its attribute's key */
};

struct entry_points {
	struct sonde_job_name python[JOBS_ENTRY_POINTS_MAX];
	size_t npython;
	struct native_entry native[JOBS_NATIVE_MAX];
	size_t nnative;
};

/* The span fields of a job span (span.proto_data, proto PROTO_JOB). */
struct job_span {
	char function[SONDE_JOB_NAME_MAX];
	uint32_t thread; /* a thread's or a native call's thread; 0: an asyncio task */
	unsigned nargs;
	char attr[SONDE_JOB_ARGS_MAX][JOBS_ATTR_MAX];
	int64_t value[SONDE_JOB_ARGS_MAX];
};

extern const struct proto_ops job_proto;

#define JOBS_COUNTERS(X) \
	X(started, "job_spans_started", TOTAL, "jobs (entry points) seen start") \
	X(ended, "job_spans", TOTAL, "job spans made as their job ended") \
	X(unfinished, "job_spans_unfinished", TOTAL, \
	  "job spans made when their process exited, or sonde stopped, first") \
	X(failed, "job_spans_failed", TOTAL, "jobs that ended with an exception or were cancelled") \
	X(vanished, "job_tasks_vanished", TOTAL, \
	  "job tasks freed between two looks: their outcome unknown") \
	X(lost, "jobs_lost", TOTAL, "jobs seen start with no memory to follow them") \
	X(unwatched, "jobs_unwatched", TOTAL, \
	  "job starts of processes whose tasks cannot be read (no layout)") \
	X(scoped_out, "jobs_scoped_out", TOTAL, \
	  "jobs of processes the --include/--exclude rules leave out")

struct jobs_stats {
	JOBS_COUNTERS(COUNTER_FIELD)
};

extern const struct counter_desc jobs_counters[];
extern const size_t jobs_counter_count;

struct jobs;

/* Parses SONDE_ENTRY_POINTS, ',' between: "python:QUALNAME" (a Python
 * function's __qualname__), "native:PATH:SYMBOL" followed by up to six
 * ":N=KEY" (the Nth argument, from 1, as an integer attribute KEY);
 * 0, or -1 with the reason naming the entry. */
int jobs_parse_entry_points(const char *text, struct entry_points *out, char *err,
			    size_t err_size);

/* Where each native entry point's function is in its file, into
 * offsets[eps->nnative]; 0, or -1 with the reason naming the entry. */
int jobs_find_natives(const struct entry_points *eps, uint64_t *offsets, char *err,
		      size_t err_size);

/* eps: the configuration's, which outlives the jobs. */
struct jobs *jobs_new(struct linker *linker, struct proc_table *procs,
		      const struct wallclock *clock, const struct entry_points *eps);
/* tgid runs CPython version v: its task jobs are read with v's offsets. */
int jobs_watch(struct jobs *js, uint32_t tgid, const struct pytask_version *v);
void jobs_start(struct jobs *js, const struct sonde_job_event *ev);
/* A job of thread tid ended at ts: a thread job's thread exited
 * (SONDE_JOB_THREAD), or the native entry point it called last returned
 * (SONDE_JOB_NATIVE). */
void jobs_thread_end(struct jobs *js, uint32_t tgid, uint32_t tid, enum sonde_job_kind kind,
		     uint64_t ts);
/* tgid exited at ts: what it ran ends there, and it is forgotten. */
void jobs_proc_exit(struct jobs *js, uint32_t tgid, uint64_t ts);
/* Reads the state of every task job, if the last look is 50 ms old;
 * now_ns is CLOCK_MONOTONIC. */
void jobs_poll(struct jobs *js, uint64_t now_ns);
/* Ends every job still running at now_ns (sonde stops first). */
void jobs_end_all(struct jobs *js, uint64_t now_ns);
void jobs_free(struct jobs *js);
void jobs_get_stats(const struct jobs *js, struct jobs_stats *out);

#endif
