/* Command spans: a process whose program (or the script an interpreter
 * runs) is named in SONDE_COMMAND_SPANS gets one INTERNAL span from its
 * exec to its exit, as the OpenTelemetry CLI conventions describe it, and
 * every span of it that would start a trace is that span's child (its
 * lines outside requests, that span's lines). A TRACEPARENT variable in
 * its environment makes the command span that parent's child.
 *
 * The name is the program's followed by its leading subcommand words: up
 * to two arguments of lower-case letters, '-' and '_', among the first six
 * after the program, options, a word right after an option (its value,
 * maybe) and arguments of other shapes skipped (`ktrdr --request-id x1
 * models train AAPL` is "ktrdr models train").
 * process.command_args is the arguments after the program, the values of
 * options whose name says pass, secret, token, key, auth or credential
 * replaced by "REDACTED". */
#ifndef SONDE_COMMAND_H
#define SONDE_COMMAND_H

#include "clock.h"
#include "counters.h"
#include "exporter.h"
#include "linker.h"
#include "procinfo.h"
#include "proto.h"

#include <stddef.h>
#include <stdint.h>

/* The span fields of a command span (span.proto_data, proto PROTO_COMMAND). */
struct command_span {
	char name[160];
	char executable[64];
	char args[1024];
	uint32_t pid;
	bool exited;       /* false: sonde stopped before the command did */
	int32_t exit_code; /* when exited and not killed */
	int32_t signal;    /* the signal that killed it, or 0 */
};

extern const struct proto_ops command_proto;

#define COMMAND_COUNTERS(X) \
	X(started, "command_spans_started", TOTAL, "commands named in SONDE_COMMAND_SPANS seen start") \
	X(ended, "command_spans", TOTAL, "command spans made at the command's exit") \
	X(unfinished, "command_spans_unfinished", TOTAL, "command spans made when sonde stopped") \
	X(unread, "commands_unread", TOTAL, "processes gone before their command line could be read") \
	X(scoped_out, "commands_scoped_out", TOTAL, \
	  "commands of processes the --include/--exclude rules leave out")

struct command_stats {
	COMMAND_COUNTERS(COUNTER_FIELD)
};

extern const struct counter_desc command_counters[];
extern const size_t command_counter_count;

struct commands;

/* names: programs, ',' between. NULL with the reason in err. */
struct commands *commands_new(const char *names, const char *proc_root, struct linker *linker,
			      struct exporter *exporter, struct proc_table *procs,
			      const struct wallclock *clock, char *err, size_t err_size);
/* Ends every command still running: its span ends at now_ns, with no exit
 * code (sonde stops first). */
void commands_end_all(struct commands *c, uint64_t now_ns);
/* Ends what runs, and frees. */
void commands_free(struct commands *c);
/* tgid ran execve at ts (CLOCK_MONOTONIC); args: its argv as the exec
 * event carries it (NUL-separated; len 0: read /proc). */
void commands_exec(struct commands *c, uint32_t tgid, uint64_t ts, const char *args, size_t len);
/* tgid exited at ts; wait_status as wait(2) reports it. */
void commands_exit(struct commands *c, uint32_t tgid, uint64_t ts, int32_t wait_status);
void commands_get_stats(const struct commands *c, struct command_stats *out);

/* The span name and args of a command line (exposed for tests). */
void command_describe(char *const *argv, int argc, struct command_span *out);

#endif
