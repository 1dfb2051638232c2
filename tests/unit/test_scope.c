/* Which processes are traced and what they are named: selectors against a
 * /proc made for the test (exe is a symbolic link, cgroup a file), rule
 * errors naming the setting and the selector, and the process table
 * applying the verdict and the names. */
#include "procinfo.h"
#include "scope.h"
#include "tmpdir.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[64];

static void put(uint32_t pid, const char *name, const char *data)
{
	char path[160];
	FILE *file;

	snprintf(path, sizeof(path), "%s/%u", root, pid);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/%u/%s", root, pid, name);
	file = fopen(path, "w");
	cr_assert_not_null(file);
	fputs(data, file);
	fclose(file);
}

/* A process whose executable is exe, in cgroup, named comm. */
static void process(uint32_t pid, const char *exe, const char *cgroup, const char *comm)
{
	char path[160], text[300];

	put(pid, "comm", comm);
	snprintf(text, sizeof(text), "0::%s\n", cgroup);
	put(pid, "cgroup", text);
	put(pid, "cmdline", comm);
	snprintf(path, sizeof(path), "%s/%u/exe", root, pid);
	cr_assert_eq(symlink(exe, path), 0);
}

/* A cgroup v2 hierarchy of the test's own, and the mount that says where. */
static uint64_t make_cgroup(const char *path)
{
	char dir[300], copy[200];
	struct stat st;
	size_t len = (size_t)snprintf(dir, sizeof(dir), "%s/cgroup", root);

	mkdir(dir, 0755);
	snprintf(copy, sizeof(copy), "%s", path);
	for (char *part = strtok(copy, "/"); part; part = strtok(NULL, "/")) {
		len += (size_t)snprintf(dir + len, sizeof(dir) - len, "/%s", part);
		mkdir(dir, 0755);
	}
	cr_assert_eq(stat(dir, &st), 0);
	return st.st_ino;
}

static void setup(void)
{
	char mounts[200];
	FILE *file;

	strcpy(root, "/tmp/sonde-scope-XXXXXX");
	cr_assert_not_null(mkdtemp(root));
	snprintf(mounts, sizeof(mounts), "%s/mounts", root);
	file = fopen(mounts, "w");
	cr_assert_not_null(file);
	fprintf(file, "proc /proc proc rw 0 0\ncgroup2 %s/cgroup cgroup2 rw 0 0\n", root);
	fclose(file);
	make_cgroup("/");
	process(100, "/usr/sbin/nginx", "/system.slice/nginx.service", "nginx");
	process(200, "/usr/bin/python3.11", "/system.slice/api.service", "python3");
	process(300, "/usr/bin/wrk", "/user.slice/user-1000.slice/session-2.scope", "wrk");
}

static struct scope *rules(const char *include, const char *exclude, const char *names)
{
	struct scope_texts texts = { include, exclude, names };
	char err[256] = "";
	struct scope *s = scope_new(&texts, root, err, sizeof(err));

	cr_assert_not_null(s, "%s", err);
	return s;
}

static enum scope_verdict verdict(struct scope *s, uint32_t pid)
{
	char name[128];

	return scope_decide(s, pid, NULL, NULL, name, sizeof(name));
}

static void teardown(void)
{
	tmpdir_remove(root);
}

TestSuite(scope, .init = setup, .fini = teardown);

Test(scope, without_rules_everything_is_traced)
{
	char name[16] = "x";

	cr_expect_eq(scope_decide(NULL, 100, "nginx", NULL, name, sizeof(name)), SCOPE_TRACED);
	cr_expect_str_empty(name);
}

Test(scope, include_picks_by_exe_cgroup_pid_and_comm)
{
	struct scope *s = rules("exe:/usr/sbin/*,cgroup:/system.slice/api.*", NULL, NULL);

	cr_expect_eq(verdict(s, 100), SCOPE_TRACED, "by its executable");
	cr_expect_eq(verdict(s, 200), SCOPE_TRACED, "by its cgroup");
	cr_expect_eq(verdict(s, 300), SCOPE_NOT_TRACED, "picked by nothing");
	scope_free(s);
	s = rules("pid:150-250,comm:wr?", NULL, NULL);
	cr_expect_eq(verdict(s, 100), SCOPE_NOT_TRACED);
	cr_expect_eq(verdict(s, 200), SCOPE_TRACED, "by its pid");
	cr_expect_eq(verdict(s, 300), SCOPE_TRACED, "by its name, read from /proc");
	scope_free(s);
}

Test(scope, exclude_wins_over_include)
{
	struct scope *s = rules("cgroup:/system.slice/*", "exe:*nginx", NULL);

	cr_expect_eq(verdict(s, 100), SCOPE_NOT_TRACED);
	cr_expect_eq(verdict(s, 200), SCOPE_TRACED);
	scope_free(s);
	s = rules(NULL, "cgroup:/user.slice/*", NULL);
	cr_expect_eq(verdict(s, 300), SCOPE_NOT_TRACED, "a neighbour's session");
	cr_expect_eq(verdict(s, 100), SCOPE_TRACED, "no include: everything else");
	scope_free(s);
}

Test(scope, a_gone_process_matches_no_path_selector)
{
	struct scope *s = rules("exe:*", NULL, NULL);

	cr_expect_eq(verdict(s, 999), SCOPE_NOT_TRACED);
	scope_free(s);
	s = rules(NULL, "cgroup:*", NULL);
	cr_expect_eq(verdict(s, 999), SCOPE_TRACED);
	scope_free(s);
}

/* A short command is often gone before sonde decides: what its exec
 * event said stands in for /proc. */
Test(scope, a_gone_process_is_decided_by_what_its_exec_said)
{
	struct scope *s = rules("exe:/usr/bin/curl,cgroup:/system.slice/api.service", NULL, NULL);
	uint64_t api = make_cgroup("/system.slice/api.service");
	uint64_t other = make_cgroup("/user.slice/user-0.slice");
	struct scope_hint by_exe = { "/usr/bin/curl", other, 0 }, by_cgroup = { "/bin/true", api, 0 },
			  by_nothing = { "/bin/true", other, 0 };
	char name[16];

	cr_expect_eq(scope_decide(s, 998, NULL, &by_exe, name, sizeof(name)), SCOPE_TRACED);
	cr_expect_eq(scope_decide(s, 998, NULL, &by_cgroup, name, sizeof(name)), SCOPE_TRACED);
	cr_expect_eq(scope_decide(s, 998, NULL, &by_cgroup, name, sizeof(name)), SCOPE_TRACED,
		     "from what was found before");
	cr_expect_eq(scope_decide(s, 998, NULL, &by_nothing, name, sizeof(name)), SCOPE_NOT_TRACED);
	scope_free(s);
}

/* A forking server's child, gone before sonde decides, and with no exec
 * of its own: its parent's /proc says which program it ran, its event
 * which cgroup it ran in. */
Test(scope, a_gone_child_is_decided_by_its_parents_program_and_its_own_cgroup)
{
	struct scope *by_exe = rules("exe:/usr/sbin/nginx", NULL, NULL);
	struct scope *by_cgroup = rules("cgroup:/system.slice/nginx.service", NULL, NULL);
	uint64_t nginx = make_cgroup("/system.slice/nginx.service");
	uint64_t other = make_cgroup("/user.slice/user-0.slice");
	struct scope_hint child = { NULL, nginx, 100 }, moved = { NULL, other, 100 };
	char name[16];

	cr_expect_eq(scope_decide(by_exe, 998, NULL, &child, name, sizeof(name)), SCOPE_TRACED);
	cr_expect_eq(scope_decide(by_exe, 998, NULL, &(struct scope_hint){ NULL, nginx, 200 }, name,
				  sizeof(name)), SCOPE_NOT_TRACED, "a parent running python");
	cr_expect_eq(scope_decide(by_cgroup, 998, NULL, &child, name, sizeof(name)), SCOPE_TRACED);
	cr_expect_eq(scope_decide(by_cgroup, 998, NULL, &moved, name, sizeof(name)),
		     SCOPE_NOT_TRACED, "its own cgroup, not its parent's");
	scope_free(by_exe);
	scope_free(by_cgroup);
}

Test(scope, an_included_port_waits_for_the_process_to_serve_it)
{
	struct scope *s = rules("port:8000-8099", "port:9000", NULL);
	char name[16];
	enum scope_verdict v = verdict(s, 200);

	cr_expect_eq(v, SCOPE_WAITING);
	cr_expect_eq(scope_on_serve(s, v, 7999, name, sizeof(name)), SCOPE_WAITING);
	v = scope_on_serve(s, v, 8080, name, sizeof(name));
	cr_expect_eq(v, SCOPE_TRACED);
	cr_expect_eq(scope_on_serve(s, v, 9000, name, sizeof(name)), SCOPE_NOT_TRACED,
		     "serving an excluded port ends it");
	scope_free(s);
}

Test(scope, names_come_from_the_first_rule_that_picks)
{
	struct scope *s = rules(NULL, NULL, "exe:*python*=api,cgroup:/system.slice/*=system,"
					    "port:8080=edge");
	char name[128];

	cr_expect_eq(scope_decide(s, 200, NULL, NULL, name, sizeof(name)), SCOPE_TRACED);
	cr_expect_str_eq(name, "api");
	scope_decide(s, 100, NULL, NULL, name, sizeof(name));
	cr_expect_str_eq(name, "system");
	scope_decide(s, 300, NULL, NULL, name, sizeof(name));
	cr_expect_str_empty(name);
	scope_on_serve(s, SCOPE_TRACED, 8080, name, sizeof(name));
	cr_expect_str_eq(name, "edge");
	scope_free(s);
}

static void expect_error(const char *include, const char *names, const char *message)
{
	struct scope_texts texts = { include, NULL, names };
	char err[256] = "";

	cr_expect_eq(scope_check(&texts, err, sizeof(err)), -1, "%s", include ? include : names);
	cr_expect(strstr(err, message) != NULL, "\"%s\" lacks \"%s\"", err, message);
}

Test(scope, malformed_rules_say_which_setting_and_selector)
{
	expect_error("nginx", NULL, "--include (SONDE_INCLUDE): \"nginx\" is not KIND:VALUE");
	expect_error("path:/usr/bin/x", NULL, "\"path:/usr/bin/x\" is not KIND:VALUE");
	expect_error("port:70000", NULL, "\"port:70000\": port wants a number or a range");
	expect_error("port:90-80", NULL, "port wants a number or a range");
	expect_error("pid:abc", NULL, "pid wants a number");
	expect_error("exe:", NULL, "the pattern is empty");
	expect_error("exe:a,,exe:b", NULL, "an empty selector");
	expect_error(NULL, "exe:/bin/x", "--service-names (SONDE_SERVICE_NAMES): \"exe:/bin/x\" is "
					  "not KIND:VALUE=NAME");
	expect_error(NULL, "exe:/bin/x=", "the name is empty");
}

/* The table applies the rules: a process's own OTEL_SERVICE_NAME wins
 * over a naming rule, a rule over its command line; a port rule gives a
 * new proc_info, the old one staying with what holds it. */
Test(scope, the_process_table_decides_and_names)
{
	struct scope *s = rules("exe:/usr/sbin/*,port:8080", NULL, "comm:nginx=edge,port:8080=api");
	struct proc_table *t = proc_table_new(root, "host");
	struct proc_info *nginx, *api, *renamed, *wrk;

	put(300, "environ", "OTEL_SERVICE_NAME=load");
	proc_table_set_scope(t, s);
	nginx = proc_table_get(t, 100, "nginx");
	cr_expect_eq(nginx->scope, SCOPE_TRACED);
	cr_expect_str_eq(nginx->service_name, "edge");
	api = proc_table_get(t, 200, NULL);
	cr_expect_eq(api->scope, SCOPE_WAITING);
	cr_expect_str_eq(api->service_name, "python3");
	proc_info_ref(api);
	renamed = proc_table_serve(t, api, 8080);
	cr_expect_neq(renamed, api);
	cr_expect_eq(renamed->scope, SCOPE_TRACED);
	cr_expect_str_eq(renamed->service_name, "api");
	cr_expect_str_eq(api->service_name, "python3", "a span's resource stays");
	cr_expect_eq(proc_table_get(t, 200, NULL), renamed);
	proc_info_unref(api);
	wrk = proc_table_get(t, 300, "wrk");
	cr_expect_eq(wrk->scope, SCOPE_WAITING);
	cr_expect_eq(proc_table_serve(t, wrk, 8080), wrk, "its own name is kept");
	cr_expect_str_eq(wrk->service_name, "load");
	cr_expect_eq(wrk->scope, SCOPE_TRACED);
	proc_table_free(t);
	scope_free(s);
}
