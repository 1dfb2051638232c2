/* Log records from the writes traced processes make to stdout and stderr
 * (SONDE_EV_LOG), on the capture thread: each stream's bytes are cut into
 * records, one per line; a line written over several writes is joined,
 * and lines that continue a record (indented lines, a Python traceback up
 * to its exception line) stay in it. A record is attributed, by the
 * linker, to the request its first write was made for (exact, or none),
 * and leaves for the log export queue once that is decided. */
#ifndef SONDE_LOGS_H
#define SONDE_LOGS_H

#include "clock.h"
#include "counters.h"
#include "linker.h"
#include "log_export.h"
#include "procinfo.h"
#include "sonde_events.h"
#include "tree.h"

#include <stddef.h>
#include <stdint.h>

struct logs_opts {
	uint32_t max_pending; /* records waiting for their request; 0: 4096 */
	struct tree_view *tree; /* prints records with ids under their spans; NULL: none */
};

#define LOGS_COUNTERS(X) \
	X(writes, "log_writes_read", TOTAL, "writes to stdout or stderr read from the kernel") \
	X(records, "log_records_made", TOTAL, "log records made from them") \
	X(scoped_out, "log_writes_scoped_out", TOTAL, \
	  "writes of processes the --include/--exclude rules leave out, dropped") \
	X(with_span, "log_records_in_span", TOTAL, \
	  "log records written for a request: they carry its trace and span") \
	X(without_span, "log_records_outside_spans", TOTAL, "log records written outside any request") \
	X(ambiguous, "log_records_ambiguous", TOTAL, \
	  "log records that several requests could have written: no ids") \
	X(pending_full, "log_records_pending_full", TOTAL, \
	  "log records dropped: too many waiting for their request") \
	X(cut, "log_records_cut", TOTAL, "log records longer than a record holds, or past the capture")

struct logs_stats {
	LOGS_COUNTERS(COUNTER_FIELD)
};

extern const struct counter_desc logs_counters[];
extern const size_t logs_counter_count;

struct logs;

struct logs *logs_new(const struct logs_opts *opts, struct linker *linker,
		      struct log_export *out, struct proc_table *procs,
		      const struct wallclock *clock);
/* Ends every record and frees; records still undecided leave without ids. */
void logs_free(struct logs *lg);
/* One SONDE_EV_LOG record. */
void logs_write(struct logs *lg, const struct sonde_data_event *ev);
/* After each drain: records no line can continue any more are ended, and
 * decided ones leave. now_ns: CLOCK_MONOTONIC; UINT64_MAX ends them all. */
void logs_tick(struct logs *lg, uint64_t now_ns);
/* The process exited: its records end. */
void logs_proc_exit(struct logs *lg, uint32_t tgid);
/* tgid's fd is a configured log file at path (NULL: it no longer is): its
 * records say so (log.file.path). */
void logs_set_file(struct logs *lg, uint32_t tgid, int32_t fd, const char *path);
void logs_get_stats(const struct logs *lg, struct logs_stats *out);

#endif
