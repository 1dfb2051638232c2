#include "scope.h"

#include "number.h"
#include "procfs.h"

#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RULES_MAX 64
#define PATTERN_MAX 256
#define NAME_MAX_LEN 128
#define CGROUP_FILE_MAX 4096
/* cgroup ids resolved to paths, kept. */
#define CGROUP_NAMES 64
#define CGROUP_DEPTH_MAX 16

enum selector_kind { SEL_EXE, SEL_CGROUP, SEL_PID, SEL_PORT, SEL_COMM };

static const char *const kind_names[] = {
	[SEL_EXE] = "exe", [SEL_CGROUP] = "cgroup", [SEL_PID] = "pid", [SEL_PORT] = "port",
	[SEL_COMM] = "comm",
};

#define NKINDS (sizeof(kind_names) / sizeof(kind_names[0]))

struct selector {
	enum selector_kind kind;
	uint32_t lo, hi;           /* SEL_PID, SEL_PORT: an inclusive range */
	char pattern[PATTERN_MAX]; /* SEL_EXE, SEL_CGROUP, SEL_COMM: a glob */
	char name[NAME_MAX_LEN];   /* naming rules: the service's name */
};

struct rules {
	size_t n;
	struct selector sel[RULES_MAX];
};

struct cgroup_name {
	uint64_t id;
	char path[512]; /* under the hierarchy's root, "/" for the root */
};

struct scope {
	char proc_root[128];
	struct rules include, exclude, names;
	bool wants_exe, wants_cgroup, wants_comm; /* some rule reads it */
	char cgroup_root[PATH_MAX]; /* where cgroup v2 is mounted; "": nowhere */
	struct cgroup_name cgroups[CGROUP_NAMES];
	unsigned next_cgroup; /* the entry the next resolved id replaces */
};

/* What the selectors of a process first seen are matched against. */
struct subject {
	uint32_t pid;
	const char *comm; /* NULL: unknown */
	char comm_read[32];
	bool have_exe, have_cgroup;
	char exe[PATH_MAX];
	char cgroup[PATH_MAX];
};

static int rule_error(char *err, size_t size, const char *setting, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(err, size, "%s: ", setting);

	if (n >= 0 && (size_t)n < size) {
		va_start(ap, fmt);
		vsnprintf(err + n, size - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return -1;
}

/* ---- parsing ------------------------------------------------------------- */

/* "N" or "N-M". */
static int parse_range(const char *text, size_t len, uint32_t max, struct selector *sel)
{
	const char *dash = memchr(text, '-', len);

	if (!dash) {
		if (parse_u32_len(text, len, 1, max, &sel->lo))
			return -1;
		sel->hi = sel->lo;
		return 0;
	}
	if (parse_u32_len(text, (size_t)(dash - text), 1, max, &sel->lo) ||
	    parse_u32_len(dash + 1, len - (size_t)(dash - text) - 1, 1, max, &sel->hi))
		return -1;
	return sel->lo <= sel->hi ? 0 : -1;
}

static int kind_of(const char *text, size_t len, enum selector_kind *out)
{
	for (size_t k = 0; k < NKINDS; k++) {
		if (strlen(kind_names[k]) == len && strncmp(text, kind_names[k], len) == 0) {
			*out = (enum selector_kind)k;
			return 0;
		}
	}
	return -1;
}

/* text[0..len): "kind:value". */
static int parse_selector(const char *text, size_t len, const char *setting,
			  struct selector *sel, char *err, size_t size)
{
	const char *colon = memchr(text, ':', len);
	const char *value;
	size_t value_len;

	memset(sel, 0, sizeof(*sel));
	if (!colon || kind_of(text, (size_t)(colon - text), &sel->kind))
		return rule_error(err, size, setting,
				  "\"%.*s\" is not KIND:VALUE with KIND one of exe, cgroup, pid, "
				  "port, comm", (int)len, text);
	value = colon + 1;
	value_len = len - (size_t)(value - text);
	if (sel->kind == SEL_PID || sel->kind == SEL_PORT) {
		if (parse_range(value, value_len, sel->kind == SEL_PORT ? 65535 : UINT32_MAX, sel))
			return rule_error(err, size, setting,
					  "\"%.*s\": %s wants a number or a range N-M from 1 to %u",
					  (int)len, text, kind_names[sel->kind],
					  sel->kind == SEL_PORT ? 65535u : UINT32_MAX);
		return 0;
	}
	if (value_len == 0 || value_len >= PATTERN_MAX)
		return rule_error(err, size, setting, "\"%.*s\": the pattern is empty or longer than %d bytes",
				  (int)len, text, PATTERN_MAX - 1);
	memcpy(sel->pattern, value, value_len);
	return 0;
}

/* text[0..len): "kind:value=name". */
static int parse_naming(const char *text, size_t len, const char *setting, struct selector *sel,
			char *err, size_t size)
{
	const char *equals = text + len;
	size_t name_len;

	while (equals > text && equals[-1] != '=')
		equals--;
	if (equals == text)
		return rule_error(err, size, setting, "\"%.*s\" is not KIND:VALUE=NAME", (int)len,
				  text);
	name_len = len - (size_t)(equals - text);
	if (name_len == 0 || name_len >= NAME_MAX_LEN)
		return rule_error(err, size, setting, "\"%.*s\": the name is empty or longer than %d bytes",
				  (int)len, text, NAME_MAX_LEN - 1);
	if (parse_selector(text, (size_t)(equals - text) - 1, setting, sel, err, size))
		return -1;
	memcpy(sel->name, equals, name_len);
	return 0;
}

static int parse_rules(const char *text, const char *setting, bool naming, struct rules *out,
		       char *err, size_t size)
{
	out->n = 0;
	while (text && *text) {
		size_t len = strcspn(text, ",");
		struct selector *sel = &out->sel[out->n];

		if (len == 0)
			return rule_error(err, size, setting, "an empty selector");
		if (out->n == RULES_MAX)
			return rule_error(err, size, setting, "more than %d rules", RULES_MAX);
		if (naming ? parse_naming(text, len, setting, sel, err, size)
			   : parse_selector(text, len, setting, sel, err, size))
			return -1;
		out->n++;
		text += len + (text[len] == ',');
	}
	return 0;
}

static bool rules_want(const struct rules *r, enum selector_kind kind)
{
	for (size_t i = 0; i < r->n; i++)
		if (r->sel[i].kind == kind)
			return true;
	return false;
}

static bool scope_wants(const struct scope *s, enum selector_kind kind)
{
	return rules_want(&s->include, kind) || rules_want(&s->exclude, kind) ||
	       rules_want(&s->names, kind);
}

static int parse_texts(struct scope *s, const struct scope_texts *texts, char *err, size_t size)
{
	if (parse_rules(texts->include, "--include (SONDE_INCLUDE)", false, &s->include, err, size) ||
	    parse_rules(texts->exclude, "--exclude (SONDE_EXCLUDE)", false, &s->exclude, err, size) ||
	    parse_rules(texts->names, "--service-names (SONDE_SERVICE_NAMES)", true, &s->names, err,
			size))
		return -1;
	s->wants_exe = scope_wants(s, SEL_EXE);
	s->wants_cgroup = scope_wants(s, SEL_CGROUP);
	s->wants_comm = scope_wants(s, SEL_COMM);
	return 0;
}

/* ---- cgroups of processes gone ------------------------------------------ */

static void find_cgroup_root(struct scope *s)
{
	char path[192], line[1024], mount[PATH_MAX], type[64];
	FILE *mounts;

	snprintf(path, sizeof(path), "%s/mounts", s->proc_root);
	mounts = fopen(path, "r");
	if (!mounts)
		return;
	while (fgets(line, sizeof(line), mounts)) {
		if (sscanf(line, "%*s %4095s %63s", mount, type) == 2 && strcmp(type, "cgroup2") == 0) {
			snprintf(s->cgroup_root, sizeof(s->cgroup_root), "%s", mount);
			break;
		}
	}
	fclose(mounts);
}

/* Looks under path (len bytes, room for size) for the directory whose
 * inode is id, leaving its path there. */
static bool find_cgroup_dir(char *path, size_t len, size_t size, uint64_t id, int depth)
{
	DIR *dir = opendir(path);
	struct dirent *entry;
	bool found = false;

	if (!dir)
		return false;
	while (!found && (entry = readdir(dir))) {
		size_t n = strlen(entry->d_name);

		if (entry->d_type != DT_DIR || entry->d_name[0] == '.' || len + 1 + n >= size)
			continue;
		path[len] = '/';
		memcpy(path + len + 1, entry->d_name, n + 1);
		found = entry->d_ino == id ||
			(depth < CGROUP_DEPTH_MAX &&
			 find_cgroup_dir(path, len + 1 + n, size, id, depth + 1));
	}
	closedir(dir);
	if (!found)
		path[len] = '\0';
	return found;
}

/* The path of the cgroup of this id, found once and kept. */
static bool cgroup_of_id(struct scope *s, uint64_t id, char *out, size_t size)
{
	size_t root_len = strlen(s->cgroup_root);
	char path[PATH_MAX];
	struct cgroup_name *slot;
	struct stat root;

	if (!id || !root_len)
		return false;
	for (size_t i = 0; i < CGROUP_NAMES; i++) {
		if (s->cgroups[i].id == id) {
			snprintf(out, size, "%s", s->cgroups[i].path);
			return true;
		}
	}
	memcpy(path, s->cgroup_root, root_len + 1);
	if (stat(s->cgroup_root, &root) == 0 && root.st_ino == id)
		path[root_len] = '\0';
	else if (!find_cgroup_dir(path, root_len, sizeof(path), id, 0))
		return false;
	slot = &s->cgroups[s->next_cgroup++ % CGROUP_NAMES];
	slot->id = id;
	snprintf(slot->path, sizeof(slot->path), "%s", path[root_len] ? path + root_len : "/");
	snprintf(out, size, "%s", slot->path);
	return true;
}

struct scope *scope_new(const struct scope_texts *texts, const char *proc_root, char *err,
			size_t size)
{
	struct scope *s = calloc(1, sizeof(*s));

	if (!s) {
		snprintf(err, size, "scope rules: %s", strerror(ENOMEM));
		return NULL;
	}
	snprintf(s->proc_root, sizeof(s->proc_root), "%s", proc_root);
	if (parse_texts(s, texts, err, size)) {
		free(s);
		return NULL;
	}
	if (s->wants_cgroup)
		find_cgroup_root(s);
	return s;
}

void scope_free(struct scope *s)
{
	free(s);
}

int scope_check(const struct scope_texts *texts, char *err, size_t size)
{
	struct scope *s = scope_new(texts, "/proc", err, size);

	if (!s)
		return -1;
	scope_free(s);
	return 0;
}

/* ---- matching ------------------------------------------------------------ */

static bool read_exe(const struct scope *s, uint32_t pid, char *out, size_t size)
{
	char link[192];
	ssize_t n;

	snprintf(link, sizeof(link), "%s/%u/exe", s->proc_root, pid);
	n = readlink(link, out, size - 1);
	if (n <= 0)
		return false;
	out[n] = '\0';
	return true;
}

/* The cgroup v2 path ("0::/system.slice/nginx.service"), else the first
 * hierarchy's. */
static bool read_cgroup(const struct scope *s, uint32_t pid, char *out, size_t size)
{
	char text[CGROUP_FILE_MAX];
	const char *chosen = NULL;
	char *line, *save;

	if (procfs_read(s->proc_root, pid, "cgroup", text, sizeof(text)) == 0)
		return false;
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		const char *path = strchr(line, ':');

		path = path ? strchr(path + 1, ':') : NULL;
		if (!path)
			continue;
		if (strncmp(line, "0::", 3) == 0) {
			chosen = path + 1;
			break;
		}
		if (!chosen)
			chosen = path + 1;
	}
	if (!chosen)
		return false;
	snprintf(out, size, "%s", chosen);
	return true;
}

static const char *read_comm(const struct scope *s, uint32_t pid, char *out, size_t size)
{
	size_t len = procfs_read(s->proc_root, pid, "comm", out, size);

	if (len == 0)
		return NULL;
	out[strcspn(out, "\n")] = '\0';
	return out;
}

static bool selects(const struct selector *sel, const struct subject *who)
{
	switch (sel->kind) {
	case SEL_EXE:
		return who->have_exe && fnmatch(sel->pattern, who->exe, 0) == 0;
	case SEL_CGROUP:
		return who->have_cgroup && fnmatch(sel->pattern, who->cgroup, 0) == 0;
	case SEL_PID:
		return who->pid >= sel->lo && who->pid <= sel->hi;
	case SEL_COMM:
		return who->comm && fnmatch(sel->pattern, who->comm, 0) == 0;
	case SEL_PORT:
		return false; /* known when the process serves: scope_on_serve */
	}
	return false;
}

static const struct selector *first_selecting(const struct rules *r, const struct subject *who)
{
	for (size_t i = 0; i < r->n; i++)
		if (selects(&r->sel[i], who))
			return &r->sel[i];
	return NULL;
}

static const struct selector *first_of_port(const struct rules *r, uint16_t port)
{
	for (size_t i = 0; i < r->n; i++)
		if (r->sel[i].kind == SEL_PORT && port >= r->sel[i].lo && port <= r->sel[i].hi)
			return &r->sel[i];
	return NULL;
}

static void give_name(const struct selector *rule, char *name, size_t size)
{
	if (rule && size)
		snprintf(name, size, "%s", rule->name);
}

/* /proc first: the exec's path may be relative or a link, and a process
 * may have moved since; what the exec said for a process already gone. */
static void read_subject(struct scope *s, const struct scope_hint *hint, struct subject *who)
{
	if (s->wants_exe) {
		who->have_exe = read_exe(s, who->pid, who->exe, sizeof(who->exe));
		if (!who->have_exe && hint && hint->parent)
			who->have_exe = read_exe(s, hint->parent, who->exe, sizeof(who->exe));
		if (!who->have_exe && hint && hint->exe && hint->exe[0]) {
			snprintf(who->exe, sizeof(who->exe), "%s", hint->exe);
			who->have_exe = true;
		}
	}
	if (s->wants_cgroup) {
		who->have_cgroup = read_cgroup(s, who->pid, who->cgroup, sizeof(who->cgroup));
		if (!who->have_cgroup && hint)
			who->have_cgroup = cgroup_of_id(s, hint->cgroup_id, who->cgroup,
							sizeof(who->cgroup));
	}
}

enum scope_verdict scope_decide(struct scope *s, uint32_t pid, const char *comm,
				const struct scope_hint *hint, char *name, size_t size)
{
	struct subject who = { .pid = pid, .comm = comm };

	if (size)
		name[0] = '\0';
	if (!s)
		return SCOPE_TRACED;
	read_subject(s, hint, &who);
	if (s->wants_comm && !comm)
		who.comm = read_comm(s, pid, who.comm_read, sizeof(who.comm_read));
	give_name(first_selecting(&s->names, &who), name, size);
	if (first_selecting(&s->exclude, &who))
		return SCOPE_NOT_TRACED;
	if (s->include.n == 0 || first_selecting(&s->include, &who))
		return SCOPE_TRACED;
	return rules_want(&s->include, SEL_PORT) ? SCOPE_WAITING : SCOPE_NOT_TRACED;
}

enum scope_verdict scope_on_serve(const struct scope *s, enum scope_verdict v, uint16_t port,
				  char *name, size_t size)
{
	if (size)
		name[0] = '\0';
	if (!s || v == SCOPE_NOT_TRACED)
		return v;
	give_name(first_of_port(&s->names, port), name, size);
	if (first_of_port(&s->exclude, port))
		return SCOPE_NOT_TRACED;
	if (v == SCOPE_WAITING && first_of_port(&s->include, port))
		return SCOPE_TRACED;
	return v;
}
