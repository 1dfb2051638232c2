/* A process's resource from the variables its exec gave it: they win over
 * /proc/PID/environ (which a program may overwrite), a forked child that
 * did not exec has its parent's, and /proc is read only for what the exec
 * event could not say. */
#include "procfs.h"
#include "procinfo.h"
#include "tmpdir.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct fake_proc {
	char root[64];
	struct proc_table *table;
};

static void put(const struct fake_proc *f, uint32_t pid, const char *name, const char *data,
		size_t len)
{
	char path[160];
	FILE *file;

	snprintf(path, sizeof(path), "%s/%u", f->root, pid);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/%u/%s", f->root, pid, name);
	file = fopen(path, "w");
	cr_assert_not_null(file);
	fwrite(data, 1, len, file);
	fclose(file);
}

/* A process as /proc shows it: its parent and an environment block that
 * says nothing of OpenTelemetry (nginx's process title is written over). */
static void process(const struct fake_proc *f, uint32_t pid, uint32_t ppid)
{
	char stat[64];
	static const char title[] = "nginx: worker process";

	snprintf(stat, sizeof(stat), "%u (nginx) S %u 1 1", pid, ppid);
	put(f, pid, "stat", stat, strlen(stat));
	put(f, pid, "cmdline", title, sizeof(title));
	put(f, pid, "environ", title, sizeof(title));
}

static void setup(struct fake_proc *f)
{
	strcpy(f->root, "/tmp/sonde-procinfo-XXXXXX");
	cr_assert_not_null(mkdtemp(f->root));
	f->table = proc_table_new(f->root, "testhost");
	cr_assert_not_null(f->table);
}

static void teardown(struct fake_proc *f)
{
	proc_table_free(f->table);
	tmpdir_remove(f->root);
}

static const char edge_env[] = "OTEL_SERVICE_NAME=edge\0TRACEPARENT=00-abc\0";
static const struct exec_record edge_exec = { edge_env, sizeof(edge_env) - 1, true, NULL, 0,
						 NULL, 0 };

Test(procinfo, the_exec_environment_wins_and_forked_children_inherit_it)
{
	struct fake_proc f;

	setup(&f);
	process(&f, 100, 1);
	process(&f, 101, 100);
	cr_assert_eq(proc_table_exec(f.table, 100, &edge_exec), 0);
	cr_expect_str_eq(proc_table_get(f.table, 100, NULL)->service_name, "edge");
	cr_expect_str_eq(proc_table_get(f.table, 101, NULL)->service_name, "edge",
			 "a worker forked by the master, with no exec of its own");
	cr_expect_str_eq(proc_table_getenv(f.table, 101, "TRACEPARENT"), "00-abc");
	teardown(&f);
}

Test(procinfo, a_child_that_ran_its_own_program_has_its_own_environment)
{
	struct fake_proc f;

	setup(&f);
	process(&f, 100, 1);
	process(&f, 102, 100);
	cr_assert_eq(proc_table_exec(f.table, 100, &edge_exec), 0);
	cr_assert_eq(proc_table_exec(f.table, 102, &(struct exec_record){ .whole = true }), 0);
	cr_expect_null(proc_table_getenv(f.table, 102, "OTEL_SERVICE_NAME"));
	cr_expect_str_neq(proc_table_get(f.table, 102, NULL)->service_name, "edge");
	teardown(&f);
}

/* A short command already a zombie (its command line gone from /proc) is
 * named from the argv its exec event carried. */
Test(procinfo, a_process_with_no_command_line_left_is_named_by_its_exec)
{
	static const char args[] = "/usr/bin/python3\0/opt/ktrdr/ktrdr\0--request-id\0x1\0data\0show";
	struct exec_record exec = { .whole = true, .args = args, .args_len = sizeof(args) - 1 };
	struct fake_proc f;
	struct proc_info *info;

	setup(&f);
	cr_assert_eq(proc_table_exec(f.table, 104, &exec), 0);
	info = proc_table_get(f.table, 104, NULL);
	cr_expect_str_eq(info->service_name, "ktrdr");
	cr_expect_str_eq(info->command_line, "/usr/bin/python3 /opt/ktrdr/ktrdr --request-id x1 data show");
	teardown(&f);
}

/* A forking server's child reaped before sonde reads its /proc entry,
 * with no exec of its own: its parent runs the same program (the kernel
 * says so), so the parent's entry says what the child's would have. */
Test(procinfo, a_child_gone_before_it_is_read_is_what_its_parent_runs)
{
	static const char cmdline[] = "/usr/bin/socat\0TCP-LISTEN:80,fork\0TCP:10.0.0.2:80";
	static const char environ[] = "OTEL_RESOURCE_ATTRIBUTES=deployment.environment=prod";
	struct proc_seen child = { .comm = "socat", .parent_tgid = 200 };
	struct fake_proc f;
	struct proc_info *info;

	setup(&f);
	put(&f, 200, "cmdline", cmdline, sizeof(cmdline));
	put(&f, 200, "environ", environ, sizeof(environ));
	info = proc_table_see(f.table, 201, &child);
	cr_expect_str_eq(info->executable_name, "socat");
	cr_expect_str_eq(info->command_line, "/usr/bin/socat TCP-LISTEN:80,fork TCP:10.0.0.2:80");
	cr_expect_str_eq(info->resource_attrs, "deployment.environment=prod");
	info = proc_table_see(f.table, 202, &(struct proc_seen){ .comm = "socat" });
	cr_expect_str_eq(info->command_line, "", "no parent named: nothing to stand in");
	cr_expect_str_eq(info->resource_attrs, "");
	teardown(&f);
}

Test(procinfo, a_gone_child_that_ran_its_own_program_is_not_its_parents)
{
	static const char cmdline[] = "/usr/bin/socat\0TCP-LISTEN:80,fork";
	static const char args[] = "/usr/local/bin/handler\0--once";
	struct exec_record exec = { .whole = true, .args = args, .args_len = sizeof(args) - 1 };
	struct fake_proc f;

	setup(&f);
	put(&f, 200, "cmdline", cmdline, sizeof(cmdline));
	cr_assert_eq(proc_table_exec(f.table, 203, &exec), 0);
	cr_expect_str_eq(proc_table_see(f.table, 203, &(struct proc_seen){ .parent_tgid = 200 })
				 ->command_line, "/usr/local/bin/handler --once");
	teardown(&f);
}

Test(procinfo, proc_is_read_for_what_the_exec_event_could_not_say)
{
	static const char environ[] = "HOME=/\0OTEL_SERVICE_NAME=from-proc\0";
	struct fake_proc f;

	setup(&f);
	process(&f, 103, 1);
	put(&f, 103, "environ", environ, sizeof(environ));
	cr_assert_eq(proc_table_exec(f.table, 103, &(struct exec_record){ .whole = false }), 0);
	cr_expect_str_eq(proc_table_getenv(f.table, 103, "OTEL_SERVICE_NAME"), "from-proc",
			 "the environment was too long to look through at exec");
	cr_assert_eq(proc_table_exec(f.table, 103, &(struct exec_record){ .whole = true }), 0);
	cr_expect_null(proc_table_getenv(f.table, 103, "OTEL_SERVICE_NAME"),
		       "whole at exec: what it lacks, the program was not given");
	proc_table_forget(f.table, 103);
	cr_expect_str_eq(proc_table_getenv(f.table, 103, "OTEL_SERVICE_NAME"), "from-proc",
			 "gone with the process");
	teardown(&f);
}

/* A process named `comm`, in state `state`. */
static void named(const struct fake_proc *f, uint32_t pid, const char *comm, char state)
{
	char stat[64];

	snprintf(stat, sizeof(stat), "%u (%s) %c 1 1 1", pid, comm, state);
	put(f, pid, "stat", stat, strlen(stat));
}

static bool is_pid(const char *root, uint32_t pid, void *arg)
{
	return pid == *(uint32_t *)arg;
}

Test(procfs, other_agents_are_found_by_name_living_ones_only)
{
	struct fake_proc f;
	uint32_t wanted = 300;

	setup(&f);
	named(&f, 100, "sonde", 'S');
	named(&f, 200, "sonde", 'Z');
	named(&f, 300, "sonde", 'R');
	named(&f, 400, "sonde-helper", 'S');
	named(&f, 500, "nginx", 'S');
	cr_expect_eq(procfs_find_named(f.root, "nginx", 0, NULL, NULL), 500);
	cr_expect_eq(procfs_find_named(f.root, "sonde", 100, NULL, NULL), 300,
		     "itself skipped, the zombie passed over");
	cr_expect_eq(procfs_find_named(f.root, "sonde", 0, is_pid, &wanted), 300,
		     "accept picks among them");
	wanted = 200;
	cr_expect_eq(procfs_find_named(f.root, "sonde", 0, is_pid, &wanted), 0,
		     "a zombie holds nothing");
	cr_expect_eq(procfs_find_named(f.root, "memcached", 0, NULL, NULL), 0);
	teardown(&f);
}
