#include "command.h"

#include "argv.h"
#include "procfs.h"
#include "semconv.h"
#include "text.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COMMAND_DESC(...) COUNTER_DESC(struct command_stats, __VA_ARGS__)
const struct counter_desc command_counters[] = { COMMAND_COUNTERS(COMMAND_DESC) };
const size_t command_counter_count = sizeof(command_counters) / sizeof(command_counters[0]);

#define NAMES_MAX 16
#define ARGV_MAX 64
#define PROC_FILE_MAX 16384
#define SUBCOMMANDS_MAX 2
#define SUBCOMMAND_SCAN 6

/* A command running. */
struct command {
	struct command *next;
	uint32_t tgid;
	uint64_t start_ns;
	struct trace_parent parent;
	bool has_parent;
	uint8_t trace_id[TRACE_ID_SIZE];
	uint8_t span_id[SPAN_ID_SIZE];
	struct proc_info *proc; /* a reference */
	struct command_span fields;
};

struct commands {
	char proc_root[128];
	char names[NAMES_MAX][64];
	size_t nnames;
	struct linker *linker;
	struct exporter *exporter;
	struct proc_table *procs;
	const struct wallclock *clock;
	struct idgen ids;
	struct command *running;
	char scratch[PROC_FILE_MAX];
	struct command_stats stats;
};

/* ---- the span ------------------------------------------------------------------ */

static const struct command_span *fields_of(const struct span *span)
{
	return (const struct command_span *)span->proto_data;
}

static void command_name(const struct span *span, char *out, size_t size)
{
	text_copy(out, size, fields_of(span)->name);
}

static void command_attributes(const struct span *span, const struct attr_sink *sink,
			       char *scratch)
{
	const struct command_span *f = fields_of(span);

	sink->i64(sink->ctx, "process.pid", f->pid);
	attr_put_str(sink, "process.executable.name", f->executable);
	attr_put_str(sink, "process.command_args", f->args);
	if (f->exited && !f->signal)
		sink->i64(sink->ctx, "process.exit.code", f->exit_code);
}

const struct proto_ops command_proto = {
	.name = "command",
	.id = PROTO_COMMAND,
	.span_name = command_name,
	.span_attributes = command_attributes,
};

_Static_assert(sizeof(struct command_span) <= SPAN_PROTO_DATA_MAX, "command_span fits a span");

/* ---- describing a command line ----------------------------------------------------- */

static bool is_word(const char *arg)
{
	if (arg[0] < 'a' || arg[0] > 'z')
		return false;
	for (const char *c = arg; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || *c == '-' || *c == '_'))
			return false;
	return true;
}

void command_describe(char *const *argv, int argc, struct command_span *out)
{
	int at = argv_program_index(argv, argc);
	size_t words = 0;
	char *dot;

	memset(out, 0, sizeof(*out));
	if (at < 0)
		return;
	text_copy(out->executable, sizeof(out->executable), procfs_basename(argv[at]));
	dot = strrchr(out->executable, '.');
	if (at > 0 && strcmp(argv[at - 1], "-m") != 0 && dot && dot != out->executable)
		*dot = '\0'; /* a script: "ktrdr.py" runs as "ktrdr"; a module keeps its dots */
	text_copy(out->name, sizeof(out->name), out->executable);
	for (int i = at + 1; i < argc && i <= at + SUBCOMMAND_SCAN && words < SUBCOMMANDS_MAX; i++) {
		size_t len = strlen(out->name);

		/* A word right after an option may be its value: never a name. */
		if (!is_word(argv[i]) || (argv[i - 1][0] == '-' && !strchr(argv[i - 1], '=')))
			continue;
		snprintf(out->name + len, sizeof(out->name) - len, " %s", argv[i]);
		words++;
	}
	argv_join_redacted(argv + at + 1, argc - at - 1, out->args, sizeof(out->args));
}

/* ---- processes ----------------------------------------------------------------------- */

/* A /proc/<tgid>/ file into scratch; its length, 0 when unreadable. */
static size_t read_proc(struct commands *c, uint32_t tgid, const char *file)
{
	return procfs_read(c->proc_root, tgid, file, c->scratch, sizeof(c->scratch));
}

static bool named(const struct commands *c, const char *executable)
{
	for (size_t i = 0; i < c->nnames; i++)
		if (strcmp(c->names[i], executable) == 0)
			return true;
	return false;
}

static void read_traceparent(struct commands *c, struct command *cmd)
{
	const char *value = proc_table_getenv(c->procs, cmd->tgid, "TRACEPARENT");

	cmd->has_parent = value && traceparent_parse(value, strlen(value), &cmd->parent);
}

static struct command *find(struct commands *c, uint32_t tgid)
{
	for (struct command *cmd = c->running; cmd; cmd = cmd->next)
		if (cmd->tgid == tgid)
			return cmd;
	return NULL;
}

/* argv as the kernel read it at exec, or else from /proc. */
static int read_argv(struct commands *c, uint32_t tgid, const char *args, size_t len,
		     char **argv)
{
	if (len) {
		memcpy(c->scratch, args, len);
		c->scratch[len] = '\0';
		return procfs_split(c->scratch, len, argv, ARGV_MAX);
	}
	return procfs_split(c->scratch, read_proc(c, tgid, "cmdline"), argv, ARGV_MAX);
}

void commands_exec(struct commands *c, uint32_t tgid, uint64_t ts, const char *args, size_t len)
{
	struct command_span fields;
	char *argv[ARGV_MAX] = { 0 };
	struct proc_info *proc;
	struct command *cmd;
	int argc;

	if (find(c, tgid))
		return; /* a command that execs on is still the same command */
	argc = read_argv(c, tgid, args, len, argv);
	if (argc == 0) {
		c->stats.unread++;
		return;
	}
	command_describe(argv, argc, &fields);
	if (!named(c, fields.executable))
		return;
	proc = proc_table_get(c->procs, tgid, NULL);
	if (proc && proc->scope != SCOPE_TRACED) {
		c->stats.scoped_out++;
		return;
	}
	cmd = calloc(1, sizeof(*cmd));
	if (!cmd)
		return;
	cmd->tgid = tgid;
	cmd->start_ns = ts;
	cmd->fields = fields;
	cmd->fields.pid = tgid;
	read_traceparent(c, cmd);
	if (cmd->has_parent)
		memcpy(cmd->trace_id, cmd->parent.trace_id, TRACE_ID_SIZE);
	else
		idgen_trace_id(&c->ids, cmd->trace_id);
	idgen_span_id(&c->ids, cmd->span_id);
	cmd->proc = proc;
	if (cmd->proc)
		proc_info_ref(cmd->proc);
	if (linker_set_root(c->linker, tgid, cmd->trace_id, cmd->span_id,
			    cmd->has_parent ? cmd->parent.flags : 1)) {
		if (cmd->proc)
			proc_info_unref(cmd->proc);
		free(cmd);
		return;
	}
	cmd->next = c->running;
	c->running = cmd;
	c->stats.started++;
}

/* The exit status, as the CLI conventions put it: a non-zero code or a
 * signal is an error. */
static void set_outcome(struct span *span, struct command_span *f, bool exited, int32_t status)
{
	f->exited = exited;
	if (!exited)
		return;
	if ((status & 0x7f) == 0) {
		f->exit_code = (status >> 8) & 0xff;
		if (f->exit_code)
			snprintf(span->error_type, sizeof(span->error_type), "%d", f->exit_code);
	} else {
		f->signal = status & 0x7f;
		snprintf(span->error_type, sizeof(span->error_type), "SIG%s",
			 sigabbrev_np(f->signal) ? sigabbrev_np(f->signal) : "UNKNOWN");
	}
	if (span->error_type[0])
		span->status = SPAN_STATUS_ERROR;
}

static void end_command(struct commands *c, struct command *cmd, uint64_t ts, bool exited,
			int32_t status)
{
	struct span *span = exporter_reserve(c->exporter);

	linker_clear_root(c->linker, cmd->tgid);
	if (span) {
		memcpy(span->trace_id, cmd->trace_id, TRACE_ID_SIZE);
		memcpy(span->span_id, cmd->span_id, SPAN_ID_SIZE);
		span->has_parent = cmd->has_parent;
		if (cmd->has_parent)
			memcpy(span->parent_span_id, cmd->parent.span_id, SPAN_ID_SIZE);
		span->trace_flags = cmd->has_parent ? cmd->parent.flags : 1;
		span->kind = SPAN_KIND_INTERNAL;
		span->proto = PROTO_COMMAND;
		span->answered = true;
		span->start_unix_ns = wallclock_from_mono(c->clock, cmd->start_ns);
		span->end_unix_ns = wallclock_from_mono(c->clock, ts);
		set_outcome(span, &cmd->fields, exited, status);
		memcpy(span->proto_data, &cmd->fields, sizeof(cmd->fields));
		span->proc = cmd->proc; /* the reference goes with the span */
		cmd->proc = NULL;
		exporter_commit(c->exporter);
	}
	if (cmd->proc)
		proc_info_unref(cmd->proc);
	if (exited)
		c->stats.ended++;
	else
		c->stats.unfinished++;
}

void commands_exit(struct commands *c, uint32_t tgid, uint64_t ts, int32_t wait_status)
{
	struct command **link = &c->running;

	while (*link && (*link)->tgid != tgid)
		link = &(*link)->next;
	if (*link) {
		struct command *cmd = *link;

		*link = cmd->next;
		end_command(c, cmd, ts, true, wait_status);
		free(cmd);
	}
}

struct commands *commands_new(const char *names, const char *proc_root, struct linker *linker,
			      struct exporter *exporter, struct proc_table *procs,
			      const struct wallclock *clock, char *err, size_t err_size)
{
	struct commands *c = calloc(1, sizeof(*c));
	const char *at = names;

	if (!c || idgen_init(&c->ids)) {
		snprintf(err, err_size, "command spans: out of memory");
		free(c);
		return NULL;
	}
	while (*at) {
		size_t len = strcspn(at, ",");

		if (c->nnames == NAMES_MAX || len >= sizeof(c->names[0])) {
			snprintf(err, err_size, "SONDE_COMMAND_SPANS: more than %d programs, or a name "
				 "longer than %zu", NAMES_MAX, sizeof(c->names[0]) - 1);
			free(c);
			return NULL;
		}
		if (len)
			snprintf(c->names[c->nnames++], sizeof(c->names[0]), "%.*s", (int)len, at);
		at += len + (at[len] == ',');
	}
	snprintf(c->proc_root, sizeof(c->proc_root), "%s", proc_root);
	c->linker = linker;
	c->exporter = exporter;
	c->procs = procs;
	c->clock = clock;
	return c;
}

void commands_end_all(struct commands *c, uint64_t now_ns)
{
	while (c->running) {
		struct command *cmd = c->running;

		c->running = cmd->next;
		end_command(c, cmd, now_ns, false, 0);
		free(cmd);
	}
}

void commands_free(struct commands *c)
{
	if (!c)
		return;
	commands_end_all(c, monotonic_now_ns());
	free(c);
}

void commands_get_stats(const struct commands *c, struct command_stats *out)
{
	*out = c->stats;
}
