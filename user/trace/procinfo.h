/* What sonde knows of a traced process: its OpenTelemetry resource.
 * Read once, when the process first shows traffic, from what its exec
 * event carried and from /proc. */
#ifndef SONDE_PROCINFO_H
#define SONDE_PROCINFO_H

#include "scope.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct proc_info {
	int refs; /* the table's reference plus one per queued span */
	uint32_t pid;
	enum scope_verdict scope; /* whether its connections and lines are traced */
	bool name_given;          /* by its environment or a naming rule: kept */
	char service_name[128];
	char executable_name[64];
	char command_line[1024];
	char instance_id[40];     /* random UUID per process instance */
	char resource_attrs[512]; /* the process's OTEL_RESOURCE_ATTRIBUTES */
	char host_name[64];
	struct proc_info *next;
};

struct proc_table;

/* proc_root is "/proc" except in tests. */
struct proc_table *proc_table_new(const char *proc_root, const char *host_name);
void proc_table_free(struct proc_table *table);
/* The rules each process is decided and named by when first seen (not
 * owned; NULL: every process traced, named by itself). */
void proc_table_set_scope(struct proc_table *table, struct scope *scope);
/* What an event says of the process that made it, for a process whose
 * /proc entry is gone before sonde reads it (a forking server's child that
 * served one connection and was reaped). Each field may be unknown. */
struct proc_seen {
	const char *comm;     /* the kernel's thread name; NULL: unknown */
	uint32_t parent_tgid; /* a parent running the same program, which
	                         says what this one runs; 0: none */
	uint64_t cgroup_id;   /* the cgroup v2 it ran in; 0: unknown */
};

/* Borrowed pointer, valid until proc_table_forget(pid); NULL only when
 * out of memory. A process first seen is read from /proc, and from what
 * seen says (may be NULL) where /proc no longer says. */
struct proc_info *proc_table_see(struct proc_table *table, uint32_t pid,
				 const struct proc_seen *seen);
/* proc_table_see knowing only the thread's name (may be NULL). */
struct proc_info *proc_table_get(struct proc_table *table, uint32_t pid, const char *comm);
bool proc_table_has(const struct proc_table *table, uint32_t pid);
/* The process of info (the table's, from proc_table_get) accepted a
 * connection on local `port`: its verdict and name as the port's rules say
 * (scope_on_serve). A new name makes a new proc_info, so that spans
 * already made keep the one they were made with; the process's current
 * one is returned. */
struct proc_info *proc_table_serve(struct proc_table *table, struct proc_info *info,
				   uint16_t port);
/* What a process's exec event said of its new program (struct
 * sonde_exec_event): the variables it was given ("NAME=value" and NUL
 * each; whole: every variable was looked at), the path execve was given
 * (SONDE_EXEC_PATH_MAX bytes at most, a NUL among them or not; NULL: none)
 * and its cgroup v2 id. */
struct exec_record {
	const char *vars;
	size_t len;
	bool whole;
	const char *filename;
	uint64_t cgroup_id;
	const char *args; /* argv, each argument and NUL; args_len 0: none */
	size_t args_len;
};

/* A process ran execve: what the table knew of its old program is
 * forgotten, and what its exec event said is kept until it exits, since a
 * program may overwrite its environment block before sonde reads it, and
 * a short one may be gone (or a zombie, with no command line left) before
 * sonde reads /proc. */
int proc_table_exec(struct proc_table *table, uint32_t pid, const struct exec_record *exec);
/* The value of a variable the process was given: from its exec event
 * (a process forked and not exec'd since: its nearest exec'd ancestor's)
 * when that says, else from /proc/PID/environ; NULL when absent. Valid
 * until the next call. */
const char *proc_table_getenv(struct proc_table *table, uint32_t pid, const char *name);
/* Calls fn for every process in the table. */
void proc_table_each(const struct proc_table *table, void (*fn)(void *ctx, uint32_t pid),
		     void *ctx);
/* The process exited, or ran another program: its resource and the
 * variables kept from its exec go. */
void proc_table_forget(struct proc_table *table, uint32_t pid);

/* Spans hold a reference across threads. */
void proc_info_ref(struct proc_info *info);
void proc_info_unref(struct proc_info *info);

/* service.name when the environment names none: the program's own name,
 * or for an interpreter the script or module it runs, and for a server
 * launcher (uvicorn, gunicorn...) also the application it serves:
 * `python3 -m uvicorn api:app` gives "uvicorn api:app". */
void service_name_from_argv(char *const *argv, int argc, char *out, size_t size);
/* The argument that names the program: 0, or for an interpreter the
 * script, module or jar it runs (0 for inline code); -1 for no argv. */
int argv_program_index(char *const *argv, int argc);
/* service.name from an OTEL_RESOURCE_ATTRIBUTES value; false if absent. */
bool service_name_from_resource_attrs(const char *attrs, char *out, size_t size);

#endif
