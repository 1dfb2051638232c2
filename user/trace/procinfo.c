#include "procinfo.h"

#include "argv.h"
#include "ids.h"
#include "kvlist.h"
#include "log.h"
#include "procfs.h"
#include "sonde_events.h"
#include "text.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROC_BUCKETS 1024
#define ENVIRON_MAX (128 * 1024)
#define ARGV_MAX 64
/* Forks followed up to the program a process runs. */
#define ENV_ANCESTORS_MAX 4

/* The variables a program was given, as its exec event carried them. */
struct exec_env {
	struct exec_env *next;
	uint32_t pid;
	bool whole; /* every variable was looked at: one absent here is absent */
	uint64_t cgroup_id;
	char filename[SONDE_EXEC_PATH_MAX];
	size_t len, args_len;
	char vars[]; /* "NAME=value" and NUL each; then args_len bytes of argv */
};

struct proc_table {
	char proc_root[128];
	char host_name[64];
	struct idgen ids;
	struct proc_info *buckets[PROC_BUCKETS];
	struct exec_env *envs[PROC_BUCKETS];
	char *scratch; /* ENVIRON_MAX bytes for reading /proc files */
	struct scope *scope;
};

static struct proc_info **bucket_of(struct proc_table *t, uint32_t pid)
{
	return &t->buckets[pid % PROC_BUCKETS];
}

struct proc_table *proc_table_new(const char *proc_root, const char *host_name)
{
	struct proc_table *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->scratch = malloc(ENVIRON_MAX);
	if (!t->scratch || idgen_init(&t->ids)) {
		proc_table_free(t);
		return NULL;
	}
	snprintf(t->proc_root, sizeof(t->proc_root), "%s", proc_root);
	snprintf(t->host_name, sizeof(t->host_name), "%s", host_name);
	return t;
}

void proc_table_set_scope(struct proc_table *t, struct scope *scope)
{
	t->scope = scope;
}

void proc_table_free(struct proc_table *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < PROC_BUCKETS; i++) {
		while (t->buckets[i]) {
			struct proc_info *info = t->buckets[i];

			t->buckets[i] = info->next;
			proc_info_unref(info);
		}
		while (t->envs[i]) {
			struct exec_env *e = t->envs[i];

			t->envs[i] = e->next;
			free(e);
		}
	}
	free(t->scratch);
	free(t);
}

void proc_info_ref(struct proc_info *info)
{
	__atomic_add_fetch(&info->refs, 1, __ATOMIC_RELAXED);
}

void proc_info_unref(struct proc_info *info)
{
	if (__atomic_sub_fetch(&info->refs, 1, __ATOMIC_ACQ_REL) == 0)
		free(info);
}

/* Reads a NUL-separated /proc file; returns its length, 0 if unreadable. */
static size_t read_proc_file(struct proc_table *t, uint32_t pid, const char *name)
{
	return procfs_read(t->proc_root, pid, name, t->scratch, ENVIRON_MAX);
}

static bool has_prefix(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool is_interpreter(const char *exe)
{
	static const char *const names[] = { "python", "node", "nodejs", "ruby", "perl",
					     "php", "java", "bun", "deno" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (has_prefix(exe, names[i]))
			return true;
	return false;
}

static bool is_launcher(const char *name)
{
	static const char *const names[] = { "uvicorn", "gunicorn", "hypercorn", "daphne",
					     "flask", "celery", "waitress-serve" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(name, names[i]) == 0)
			return true;
	return false;
}

/* Interpreter options that consume the next argument. */
static bool option_takes_value(const char *opt)
{
	static const char *const opts[] = { "-W", "-X", "-r", "--require", "-cp", "-classpath",
					    "--class-path", "-e", "--eval" };

	for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
		if (strcmp(opt, opts[i]) == 0)
			return true;
	return false;
}

static void strip_extension(char *name)
{
	static const char *const exts[] = { ".py", ".js", ".mjs", ".cjs", ".ts", ".rb", ".pl",
					    ".php", ".jar" };
	size_t len = strlen(name);

	for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
		size_t elen = strlen(exts[i]);

		if (len > elen && strcmp(name + len - elen, exts[i]) == 0) {
			name[len - elen] = '\0';
			return;
		}
	}
}

/* Index of the first argument after argv[from] that is not an option. */
static int first_positional(char *const *argv, int argc, int from)
{
	for (int i = from; i < argc; i++) {
		if (argv[i][0] != '-')
			return i;
		if (option_takes_value(argv[i]))
			i++;
	}
	return -1;
}

int argv_program_index(char *const *argv, int argc)
{
	if (argc == 0)
		return -1;
	if (!is_interpreter(procfs_basename(argv[0])))
		return 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "-e") == 0)
			return 0; /* inline code: the interpreter is the best name */
		if ((strcmp(argv[i], "-m") == 0 || strcmp(argv[i], "-jar") == 0) && i + 1 < argc)
			return i + 1;
		if (argv[i][0] != '-')
			return i;
		if (option_takes_value(argv[i]))
			i++;
	}
	return 0;
}

void service_name_from_argv(char *const *argv, int argc, char *out, size_t size)
{
	int at = argv_program_index(argv, argc);
	char name[128] = "";
	int app;

	if (at > 0) {
		/* A module (-m) is named as given; a script or jar by its file. */
		bool module = strcmp(argv[at - 1], "-m") == 0;

		snprintf(name, sizeof(name), "%s", module ? argv[at] : procfs_basename(argv[at]));
		strip_extension(name);
	} else if (at == 0) {
		/* "nginx: worker process": a process title rewritten over argv. */
		const char *program = procfs_basename(argv[0]);

		snprintf(name, sizeof(name), "%.*s", (int)strcspn(program, ":"), program);
	}
	app = is_launcher(name) ? first_positional(argv, argc, at + 1) : -1;
	if (app >= 0)
		snprintf(out, size, "%s %s", name, argv[app]);
	else
		snprintf(out, size, "%s", name[0] ? name : "unknown");
}

bool service_name_from_resource_attrs(const char *attrs, char *out, size_t size)
{
	struct kv_cursor cur = { .next = attrs };
	char key[64];
	enum kv_result r;

	while ((r = kv_next(&cur, key, sizeof(key), out, size)) != KV_END)
		if (r == KV_PAIR && strcmp(key, "service.name") == 0 && out[0])
			return true;
	out[0] = '\0';
	return false;
}

static struct exec_env **env_link(struct proc_table *t, uint32_t pid)
{
	struct exec_env **link = &t->envs[pid % PROC_BUCKETS];

	while (*link && (*link)->pid != pid)
		link = &(*link)->next;
	return link;
}

static void forget_env(struct proc_table *t, uint32_t pid)
{
	struct exec_env **link = env_link(t, pid);
	struct exec_env *e = *link;

	if (e) {
		*link = e->next;
		free(e);
	}
}

/* The variables of the program a process runs, as its exec gave them: its
 * own exec's, or, for a process forked and not exec'd since (nginx's
 * workers), the nearest ancestor's that sonde saw exec. Every exec sonde
 * sees leaves an entry, so a walk up stops at the program that was run.
 * parent (0: none) stands for the parent /proc no longer names. */
static const struct exec_env *exec_env_of(struct proc_table *t, uint32_t pid, uint32_t parent)
{
	for (int depth = 0; pid > 1 && depth < ENV_ANCESTORS_MAX; depth++) {
		const struct exec_env *e = *env_link(t, pid);
		uint32_t up;

		if (e)
			return e;
		up = procfs_ppid(t->proc_root, pid);
		pid = up ? up : parent;
		parent = 0;
	}
	return NULL;
}

/* A variable as the exec variables e (exec_env_of's, may be NULL) give it,
 * or else as /proc does: the process's, or its stand-in parent's. */
static const char *getenv_of(struct proc_table *t, const struct exec_env *e, uint32_t pid,
			     uint32_t parent, const char *name)
{
	const char *value = e ? procfs_env(e->vars, e->len, name) : NULL;
	size_t len;

	if (value || (e && e->whole))
		return value;
	len = read_proc_file(t, pid, "environ");
	if (!len && parent)
		len = read_proc_file(t, parent, "environ");
	return procfs_env(t->scratch, len, name);
}

const char *proc_table_getenv(struct proc_table *t, uint32_t pid, const char *name)
{
	return getenv_of(t, exec_env_of(t, pid, 0), pid, 0, name);
}

static void read_environment(struct proc_table *t, struct proc_info *info,
			     const struct exec_env *e, uint32_t parent)
{
	const char *service = getenv_of(t, e, info->pid, parent, "OTEL_SERVICE_NAME");
	const char *attrs;

	if (service)
		snprintf(info->service_name, sizeof(info->service_name), "%s", service);
	attrs = getenv_of(t, e, info->pid, parent, "OTEL_RESOURCE_ATTRIBUTES");
	if (attrs)
		snprintf(info->resource_attrs, sizeof(info->resource_attrs), "%s", attrs);
	if (!info->service_name[0] && attrs)
		service_name_from_resource_attrs(attrs, info->service_name,
						 sizeof(info->service_name));
}

/* Its command line from /proc, or else (a process gone, or a zombie) as
 * its exec gave it, or as its stand-in parent's is: into scratch, its
 * length. */
static size_t command_line_of(struct proc_table *t, uint32_t pid, uint32_t parent)
{
	size_t len = read_proc_file(t, pid, "cmdline");
	const struct exec_env *e = len ? NULL : *env_link(t, pid);

	if (e && e->args_len && e->args_len < ENVIRON_MAX) {
		memcpy(t->scratch, e->vars + e->len, e->args_len);
		t->scratch[e->args_len] = '\0'; /* the kernel cut it, maybe mid-argument */
		len = e->args_len;
	}
	if (!len && parent)
		return command_line_of(t, parent, 0);
	return len;
}

/* Splits the scratch cmdline in place; command_line is it joined by
 * spaces, secret option values redacted. */
static void read_command_line(struct proc_table *t, struct proc_info *info, uint32_t parent)
{
	size_t len = command_line_of(t, info->pid, parent);
	char *argv[ARGV_MAX] = { 0 };
	int argc = procfs_split(t->scratch, len, argv, ARGV_MAX);

	argv_join_redacted(argv, argc, info->command_line, sizeof(info->command_line));
	if (argc > 0)
		snprintf(info->executable_name, sizeof(info->executable_name), "%s",
			 procfs_basename(argv[0]));
	if (!info->service_name[0] && argc > 0)
		service_name_from_argv(argv, argc, info->service_name, sizeof(info->service_name));
}

static void make_instance_id(struct proc_table *t, char out[40])
{
	uint8_t raw[16];
	char hex[33];

	idgen_trace_id(&t->ids, raw);
	raw[6] = (raw[6] & 0x0f) | 0x40;
	raw[8] = (raw[8] & 0x3f) | 0x80;
	hex_encode(raw, sizeof(raw), hex);
	snprintf(out, 40, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
}

/* A name its environment gives wins over a rule's; either over the one
 * its command line gives. The cgroup an event saw the process in is
 * later than its exec's. */
static void decide_scope(struct proc_table *t, struct proc_info *info,
			 const struct proc_seen *seen, const struct exec_env *e, uint32_t parent)
{
	struct scope_hint hint;
	char name[sizeof(info->service_name)];

	info->name_given = info->service_name[0] != '\0';
	info->scope = SCOPE_TRACED;
	if (!t->scope)
		return;
	hint = (struct scope_hint){
		.exe = e ? e->filename : NULL,
		.cgroup_id = seen && seen->cgroup_id ? seen->cgroup_id : e ? e->cgroup_id : 0,
		.parent = parent,
	};
	info->scope = scope_decide(t->scope, info->pid, seen ? seen->comm : NULL, &hint, name,
				   sizeof(name));
	if (!info->name_given && name[0]) {
		memcpy(info->service_name, name, sizeof(name));
		info->name_given = true;
	}
}

static struct proc_info *load_proc(struct proc_table *t, uint32_t pid,
				   const struct proc_seen *seen)
{
	struct proc_info *info = calloc(1, sizeof(*info));
	/* Stands in where the process's own /proc entry is gone. */
	uint32_t parent = seen ? seen->parent_tgid : 0;
	const char *comm = seen ? seen->comm : NULL;
	/* Walked once: each step up reads /proc/<pid>/stat. */
	const struct exec_env *e = exec_env_of(t, pid, parent);

	if (!info)
		return NULL;
	info->refs = 1;
	info->pid = pid;
	snprintf(info->host_name, sizeof(info->host_name), "%s", t->host_name);
	make_instance_id(t, info->instance_id);
	read_environment(t, info, e, parent);
	decide_scope(t, info, seen, e, parent);
	read_command_line(t, info, parent);
	if (!info->service_name[0] && comm && comm[0])
		snprintf(info->service_name, sizeof(info->service_name), "%.16s", comm);
	if (!info->executable_name[0] && comm && comm[0])
		snprintf(info->executable_name, sizeof(info->executable_name), "%.16s", comm);
	if (!info->service_name[0])
		snprintf(info->service_name, sizeof(info->service_name), "pid-%u", pid);
	log_debug("tracing pid %u as service \"%s\"", pid, info->service_name);
	return info;
}

static struct proc_info *find(const struct proc_table *t, uint32_t pid)
{
	struct proc_info *info = t->buckets[pid % PROC_BUCKETS];

	while (info && info->pid != pid)
		info = info->next;
	return info;
}

struct proc_info *proc_table_see(struct proc_table *t, uint32_t pid, const struct proc_seen *seen)
{
	struct proc_info *info = find(t, pid);

	if (info)
		return info;
	info = load_proc(t, pid, seen);
	if (!info)
		return NULL;
	info->next = *bucket_of(t, pid);
	*bucket_of(t, pid) = info;
	return info;
}

struct proc_info *proc_table_get(struct proc_table *t, uint32_t pid, const char *comm)
{
	return proc_table_see(t, pid, &(struct proc_seen){ .comm = comm });
}

/* The process's proc_info replaced by a copy of another name. */
static struct proc_info *rename_proc(struct proc_table *t, struct proc_info *old, const char *name)
{
	struct proc_info **link = bucket_of(t, old->pid);
	struct proc_info *info = malloc(sizeof(*info));

	if (!info)
		return old;
	*info = *old;
	info->refs = 1;
	snprintf(info->service_name, sizeof(info->service_name), "%s", name);
	info->name_given = true;
	while (*link != old)
		link = &(*link)->next;
	*link = info;
	proc_info_unref(old);
	log_debug("pid %u serves a named port: service \"%s\"", info->pid, name);
	return info;
}

struct proc_info *proc_table_serve(struct proc_table *t, struct proc_info *info, uint16_t port)
{
	char name[sizeof(info->service_name)];

	info->scope = scope_on_serve(t->scope, info->scope, port, name, sizeof(name));
	if (name[0] && !info->name_given)
		info = rename_proc(t, info, name);
	return info;
}

void proc_table_each(const struct proc_table *t, void (*fn)(void *ctx, uint32_t pid), void *ctx)
{
	for (size_t b = 0; b < PROC_BUCKETS; b++)
		for (const struct proc_info *p = t->buckets[b]; p; p = p->next)
			fn(ctx, p->pid);
}

bool proc_table_has(const struct proc_table *t, uint32_t pid)
{
	return find(t, pid) != NULL;
}

int proc_table_exec(struct proc_table *t, uint32_t pid, const struct exec_record *exec)
{
	const char *path = exec->filename ? exec->filename : "";
	struct exec_env *e;

	proc_table_forget(t, pid);
	e = malloc(sizeof(*e) + exec->len + exec->args_len);
	if (!e)
		return -ENOMEM;
	e->pid = pid;
	e->whole = exec->whole;
	e->cgroup_id = exec->cgroup_id;
	text_copy_len(e->filename, sizeof(e->filename), path, strnlen(path, sizeof(e->filename)));
	e->len = exec->len;
	memcpy(e->vars, exec->vars, exec->len);
	e->args_len = exec->args_len;
	if (exec->args_len)
		memcpy(e->vars + exec->len, exec->args, exec->args_len);
	e->next = t->envs[pid % PROC_BUCKETS];
	t->envs[pid % PROC_BUCKETS] = e;
	return 0;
}

void proc_table_forget(struct proc_table *t, uint32_t pid)
{
	struct proc_info **link = bucket_of(t, pid);

	while (*link && (*link)->pid != pid)
		link = &(*link)->next;
	if (*link) {
		struct proc_info *info = *link;

		*link = info->next;
		proc_info_unref(info);
	}
	forget_env(t, pid);
}
