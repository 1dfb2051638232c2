/* sonde: the agent. Wires the probe (kernel side), the tracker (events to
 * spans) and the exporter (spans out), and runs the poll loop. */
#include "clock.h"
#include "command.h"
#include "config.h"
#include "exporter.h"
#include "jobs.h"
#include "log.h"
#include "log_export.h"
#include "logfiles.h"
#include "logs.h"
#include "metrics.h"
#include "metrics_export.h"
#include "privileges.h"
#include "probe.h"
#include "procfs.h"
#include "procinfo.h"
#include "prometheus.h"
#include "pytask.h"
#include "uvloop.h"
#include "tracker.h"

#include <dirent.h>
#include <limits.h>
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HOUSEKEEPING_NS 1000000000ull
#define STATS_GROUPS 13
/* Processes with a libuv loop found running at start-up whose
 * connections are tracked anew: the kernel's loops map holds 1024. */
#define RUNNING_LOOPS_MAX 1024
#define EXIT_FORCED 3

#define AGENT_COUNTERS(X) \
	X(kernel_entries_swept, "kernel_entries_swept", TOTAL, \
	  "kernel map entries of exited processes deleted") \
	X(bad_log_records, "bad_log_records", TOTAL, "log records too short, or with logs off") \
	X(bad_exec_records, "bad_exec_records", TOTAL, \
	  "exec records shorter than the argv and environment they announce") \
	X(tasks_unwatched, "python_tasks_unwatched", TOTAL, \
	  "CPython processes whose asyncio tasks could not be watched for entry points")

struct agent_stats {
	AGENT_COUNTERS(COUNTER_FIELD)
};

#define AGENT_DESC(...) COUNTER_DESC(struct agent_stats, __VA_ARGS__)
static const struct counter_desc agent_counters[] = { AGENT_COUNTERS(AGENT_DESC) };

struct agent {
	struct sonde_config cfg;
	struct wallclock clock;
	struct exporter *exporter;
	struct proc_table *procs;
	struct tracker *tracker;
	struct probe *probe;
	struct prog_files prog_files;
	struct pytask pytask;
	struct uvloop uvloop;
	struct metrics *metrics;     /* NULL: metrics off */
	struct prom_server *prometheus;
	struct metrics_export *metrics_export;
	struct log_redaction *redaction; /* NULL: none configured */
	struct log_export *log_export;   /* NULL: logs off */
	struct logs *logs;
	struct logfiles *logfiles;       /* NULL: no log files configured */
	struct commands *commands;       /* NULL: no command spans configured */
	struct jobs *jobs;               /* NULL: no entry points configured */
	struct entry_points entry_points;
	struct probe_native natives[JOBS_NATIVE_MAX];
	struct scope *scope;             /* NULL: no include, exclude or naming rules */
	struct agent_stats stats;
	uint64_t started_ns;             /* CLOCK_MONOTONIC */
	uint64_t lost_ringbuf_reported;
	uint64_t lost_conn_map_reported;
	uint64_t log_drops_reported;
	struct log_limit watch_log; /* a failure per process, on a busy host */
};

/* The signal that asked for the stop; 0 until one has. */
static volatile sig_atomic_t stop_signal;

/* The first signal starts an orderly stop, which can wait up to the export
 * timeout for a slow collector; a second one means the operator will not
 * wait: leave at once, saying that queued spans are lost (the kernel
 * detaches the programs when the process ends). */
static void on_signal(int sig)
{
	static const char leaving[] =
		"sonde: second signal: exiting now; spans not yet exported are lost\n";

	if (stop_signal) {
		(void)!write(STDERR_FILENO, leaving, sizeof(leaving) - 1);
		_exit(EXIT_FORCED);
	}
	stop_signal = sig;
}

/* SIGHUP's default would end the agent with its queues unsent, its pins
 * left behind: a closed terminal, or an operator expecting a reload,
 * stops it in order instead, and is told there is no reload. */
static void say_why_stopping(int sig)
{
	if (sig == SIGHUP)
		log_notice("SIGHUP: stopping; sonde has no configuration reload: start it again "
			   "to apply a new configuration");
	else
		log_info("SIG%s: stopping", sigabbrev_np(sig));
}

/* With entry points configured, a CPython process's asyncio tasks are
 * watched as they are made (the uprobe costs each task): its threads
 * are watched by the kernel already. */
static void watch_tasks(struct agent *a, uint32_t pid, const struct pytask_version *v)
{
	char path[PATH_MAX] = "";
	uint64_t offset = 0;
	int err = pytask_task_init(&a->pytask, pid, v, path, sizeof(path), &offset);

	if (!err)
		err = probe_watch_tasks(a->probe, pid, path, offset);
	if (!err)
		err = jobs_watch(a->jobs, pid, v);
	if (err) {
		a->stats.tasks_unwatched++;
		log_limited(&a->watch_log, LOG_WARN,
			    "entry points: the asyncio tasks of pid %u are not watched: "
			    "_asyncio.Task.__init__ at %s+%#llx: %s", pid, path[0] ? path : "(none)",
			    (unsigned long long)offset, strerror(-err));
	}
}

/* A CPython process gets its layout before it serves anything, so that
 * its first requests already carry their asyncio task; a libuv process
 * its loop's. */
static void look_at_python(struct agent *a, uint32_t pid, const struct prog_file *exe,
			   bool at_exec)
{
	const struct pytask_version *version;
	struct sonde_py_layout layout;
	int err = pytask_layout(&a->pytask, pid, exe, at_exec, &layout, &version);

	if (err < 0)
		log_debug("read maps of pid %u: %s", pid, strerror(-err));
	if (err <= 0)
		return;
	err = probe_set_python(a->probe, pid, &layout);
	if (err) {
		log_error("python layout of pid %u into py_procs: %s", pid, strerror(-err));
		return;
	}
	log_debug("pid %u runs CPython: asyncio tasks named", pid);
	if (a->jobs && a->entry_points.npython)
		watch_tasks(a, pid, version);
}

/* Whether the kernel now follows pid's loop. */
static bool look_at_loop(struct agent *a, uint32_t pid, const struct prog_file *exe)
{
	struct sonde_loop loop;
	int err = uvloop_layout(&a->uvloop, pid, exe, &loop);

	if (err < 0)
		log_debug("read libuv loop of pid %u: %s", pid, strerror(-err));
	if (err <= 0)
		return false;
	err = probe_set_loop(a->probe, pid, &loop);
	if (err) {
		log_error("libuv layout of pid %u into loops: %s", pid, strerror(-err));
		return false;
	}
	log_debug("pid %u runs a libuv loop: its callbacks followed", pid);
	return true;
}

/* Whether pid's loop is followed from now on. Its program file is read
 * once for both runtimes; a process gone or not ours to read is no
 * news. */
static bool look_at_program(struct agent *a, uint32_t pid, bool at_exec)
{
	struct prog_file exe = { 0 };
	int err = prog_exe(&a->prog_files, pid, &exe);

	if (err) {
		if (err != -ENOENT && err != -EACCES)
			log_debug("read program of pid %u: %s", pid, strerror(-err));
		return false;
	}
	look_at_python(a, pid, &exe, at_exec);
	return look_at_loop(a, pid, &exe);
}

/* What the new program was given is kept before anything reads it: its
 * environment (resource, TRACEPARENT), argv, path and cgroup. A record too
 * short for what it says it holds counts as bad, and the process is read
 * from /proc. */
static void on_exec(struct agent *a, const struct sonde_exec_event *ex, size_t size)
{
	bool sound = size >= offsetof(struct sonde_exec_event, strings) &&
		     ex->args_len <= SONDE_EXEC_ARGS_MAX && ex->env_len <= SONDE_EXEC_ENV_MAX &&
		     size >= SONDE_EXEC_EVENT_SIZE(ex->args_len + ex->env_len);
	uint32_t tgid = ex->hdr.tgid;
	struct exec_record exec = { 0 };

	if (!sound)
		a->stats.bad_exec_records++;
	else
		exec = (struct exec_record){ ex->strings + ex->args_len, ex->env_len,
					     ex->env_whole, ex->filename, ex->cgroup_id,
					     ex->strings, ex->args_len };
	if (proc_table_exec(a->procs, tgid, &exec))
		log_error("keep the environment of pid %u: %s", tgid, strerror(ENOMEM));
	look_at_program(a, tgid, true);
	if (a->commands)
		commands_exec(a->commands, tgid, ex->hdr.ts, ex->strings, sound ? ex->args_len : 0);
}

/* Whether the record was a job's own. */
static bool on_job_record(struct agent *a, const void *record, size_t size)
{
	const struct sonde_event_header *hdr = record;

	if (size < sizeof(*hdr))
		return false;
	if (hdr->type == SONDE_EV_JOB_START && size >= sizeof(struct sonde_job_event)) {
		jobs_start(a->jobs, record);
		return true;
	}
	if (hdr->type == SONDE_EV_JOB_END && size >= sizeof(struct sonde_exit_event)) {
		jobs_thread_end(a->jobs, hdr->tgid, hdr->tid,
				((const struct sonde_exit_event *)record)->exit_status, hdr->ts);
		return true;
	}
	if (hdr->type == SONDE_EV_PROC_EXIT)
		jobs_proc_exit(a->jobs, hdr->tgid, hdr->ts);
	return false;
}

static void on_record(void *ctx, const void *record, size_t size)
{
	struct agent *a = ctx;
	const struct sonde_event_header *hdr = record;

	if (size >= sizeof(*hdr) && hdr->type == SONDE_EV_PROC_EXEC)
		on_exec(a, record, size);
	if (a->commands && size >= sizeof(struct sonde_exit_event) &&
	    hdr->type == SONDE_EV_PROC_EXIT)
		commands_exit(a->commands, hdr->tgid, hdr->ts,
			      ((const struct sonde_exit_event *)record)->exit_status);
	if (a->jobs && on_job_record(a, record, size))
		return;
	if (size >= sizeof(*hdr) && hdr->type == SONDE_EV_LOG) {
		if (a->logs && size >= offsetof(struct sonde_data_event, data) &&
		    size >= SONDE_DATA_EVENT_SIZE(((const struct sonde_data_event *)record)->captured))
			logs_write(a->logs, record);
		else
			a->stats.bad_log_records++;
		return;
	}
	if (a->logs && size >= sizeof(*hdr) && hdr->type == SONDE_EV_PROC_EXIT) {
		logs_proc_exit(a->logs, hdr->tgid);
		if (a->logfiles)
			logfiles_forget(a->logfiles, hdr->tgid);
	}
	tracker_handle(a->tracker, record, size);
}

/* Processes that were running before sonde started. */
static void look_at_running_programs(struct agent *a)
{
	DIR *dir = opendir("/proc");
	struct dirent *entry;
	uint32_t loops[RUNNING_LOOPS_MAX];
	size_t nloops = 0;

	if (!dir) {
		log_error("list /proc: %s", strerror(errno));
		return;
	}
	while ((entry = readdir(dir))) {
		char *end;
		unsigned long pid = strtoul(entry->d_name, &end, 10);

		if (*end == '\0' && pid > 0 && pid != (unsigned long)getpid() &&
		    look_at_program(a, (uint32_t)pid, false) && nloops < RUNNING_LOOPS_MAX)
			loops[nloops++] = (uint32_t)pid;
	}
	closedir(dir);
	/* Connections they made before their loop was followed are tracked
	 * anew, so that they are followed too. */
	probe_track_anew(a->probe, loops, nloops);
}

/* Every module's counters, read now: kernel first. */
struct stats_snapshot {
	uint64_t kernel[SONDE_CNT_MAX];
	struct merge_stats merge;
	struct tracker_stats tracker;
	struct exporter_stats exporter;
	struct metrics_stats metrics;
	struct logs_stats logs;
	struct log_export_stats log_export;
	struct command_stats commands;
	struct jobs_stats jobs;
};

static size_t collect_stats(struct agent *a, struct stats_snapshot *snap,
			    struct counter_group groups[STATS_GROUPS])
{
	size_t n = 0;

	probe_counters(a->probe, snap->kernel);
	snap->merge = probe_merge_stats(a->probe);
	tracker_get_stats(a->tracker, &snap->tracker);
	exporter_get_stats(a->exporter, &snap->exporter);
	groups[n++] = (struct counter_group){ kernel_counters, SONDE_CNT_MAX, snap->kernel };
	groups[n++] = (struct counter_group){ merge_counters, merge_counter_count, &snap->merge };
	groups[n++] = (struct counter_group){ tracker_counters, tracker_counter_count,
					      &snap->tracker };
	groups[n++] = (struct counter_group){ agent_counters,
					      sizeof(agent_counters) / sizeof(agent_counters[0]), &a->stats };
	groups[n++] = (struct counter_group){ linker_counters, linker_counter_count,
					      &snap->tracker.link };
	groups[n++] = (struct counter_group){ pytask_counters, pytask_counter_count,
					      &a->pytask.stats };
	groups[n++] = (struct counter_group){ uvloop_counters, uvloop_counter_count,
					      &a->uvloop.stats };
	groups[n++] = (struct counter_group){ exporter_counters, exporter_counter_count,
					      &snap->exporter };
	if (a->commands) {
		commands_get_stats(a->commands, &snap->commands);
		groups[n++] = (struct counter_group){ command_counters, command_counter_count,
						      &snap->commands };
	}
	if (a->jobs) {
		jobs_get_stats(a->jobs, &snap->jobs);
		groups[n++] = (struct counter_group){ jobs_counters, jobs_counter_count,
						      &snap->jobs };
	}
	if (a->logs) {
		logs_get_stats(a->logs, &snap->logs);
		log_export_get_stats(a->log_export, &snap->log_export);
		groups[n++] = (struct counter_group){ logs_counters, logs_counter_count, &snap->logs };
		groups[n++] = (struct counter_group){ log_export_counters, log_export_counter_count,
						      &snap->log_export };
	}
	if (a->metrics) {
		metrics_get_stats(a->metrics, &snap->metrics);
		groups[n++] = (struct counter_group){ metrics_counters, metrics_counter_count,
						      &snap->metrics };
	}
	return n;
}

static void log_stats(const struct counter_group *groups, size_t n)
{
	char line[4096];
	size_t used = 0;

	for (size_t g = 0; g < n; g++)
		for (size_t i = 0; i < groups[g].n && used < sizeof(line); i++)
			used += (size_t)snprintf(line + used, sizeof(line) - used, "%s%s=%llu",
						 used ? " " : "", groups[g].descs[i].name,
						 (unsigned long long)counter_value(&groups[g], i));
	log_info("stats: %s", line);
}

/* Which sonde wrote the counters, and when: version, time (UTC), uptime. */
static void write_stats_header(const struct agent *a, FILE *f)
{
	time_t now = time(NULL);
	struct tm tm;
	char when[32];

	gmtime_r(&now, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	fprintf(f, "{\"version\": \"%s\", \"time\": \"%s\", \"uptime_s\": %llu", SONDE_VERSION,
		when, (unsigned long long)((monotonic_now_ns() - a->started_ns) / 1000000000ull));
}

static void write_stats_file(struct agent *a, const struct counter_group *groups, size_t n)
{
	const char *sep = "";
	char tmp[300];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp", a->cfg.stats_file);
	f = fopen(tmp, "w");
	if (!f) {
		log_error("write stats file %s: %s", tmp, strerror(errno));
		return;
	}
	write_stats_header(a, f);
	sep = ", ";
	for (size_t g = 0; g < n; g++) {
		for (size_t i = 0; i < groups[g].n; i++) {
			fprintf(f, "%s\"%s\": %llu", sep, groups[g].descs[i].name,
				(unsigned long long)counter_value(&groups[g], i));
			sep = ", ";
		}
	}
	fprintf(f, "}\n");
	if (fclose(f) || rename(tmp, a->cfg.stats_file))
		log_error("write stats file %s: %s", a->cfg.stats_file, strerror(errno));
}

/* Kernel counters of what was lost are said each second they grew, not
 * only at exit: lost records leave spans incomplete or missing, a
 * connection the table could not take goes unfollowed (the table gives way
 * to new connections, so that is rare), and dropped log writes are lines
 * missing. Each message takes how many (%llu) and the setting that bounds
 * it (%u). */
static const char ring_loss[] =
	"%llu records lost in the last second: a CPU's share of the event buffers (%u bytes "
	"for all CPUs) was full; spans of those exchanges are missing or incomplete (raise "
	"--ringbuf-bytes)";
static const char conn_map_loss[] =
	"%llu connections not followed in the last second: the kernel's connection table "
	"(%u socket ends) could not take them (raise --max-connections)";
static const char log_drops[] =
	"%llu writes to stdout or stderr dropped in the last second: a process wrote more than "
	"%u a second (raise --logs-rate-limit); see log_writes_dropped";

static void report_growth(uint64_t now, uint64_t *reported, const char *message, uint32_t bound)
{
	uint64_t grown = now - *reported;

	if (grown == 0)
		return;
	*reported = now;
	log_warn(message, (unsigned long long)grown, bound);
}

static void report_losses(struct agent *a, const uint64_t kernel[SONDE_CNT_MAX])
{
	report_growth(kernel[SONDE_CNT_LOST_RINGBUF], &a->lost_ringbuf_reported, ring_loss,
		      a->cfg.ringbuf_bytes);
	report_growth(kernel[SONDE_CNT_LOST_CONN_MAP], &a->lost_conn_map_reported, conn_map_loss,
		      a->cfg.max_connections);
	report_growth(kernel[SONDE_CNT_LOG_DROPPED], &a->log_drops_reported, log_drops,
		      a->cfg.log_rate_limit);
}

/* The counters, read once, to whatever reports them: the log (when
 * `to_log`), the stats file and the metrics endpoint. */
static void report_stats(struct agent *a, bool to_log)
{
	struct stats_snapshot snap;
	struct counter_group groups[STATS_GROUPS];
	size_t n = collect_stats(a, &snap, groups);

	report_losses(a, snap.kernel);
	if (to_log)
		log_stats(groups, n);
	if (a->cfg.stats_file[0])
		write_stats_file(a, groups, n);
	if (a->metrics)
		metrics_set_self(a->metrics, groups, n);
}

static void on_logfile(void *ctx, uint32_t tgid, int32_t fd, const char *path, bool watch)
{
	struct agent *a = ctx;
	int err = probe_watch_log_file(a->probe, tgid, fd, watch);

	if (err && watch)
		log_warn("watch log file %s of process %u: %s", path, tgid, strerror(-err));
	logs_set_file(a->logs, tgid, fd, watch ? path : NULL);
}

static void on_scoped_out(void *ctx, uint32_t tgid, int32_t fd)
{
	struct agent *a = ctx;
	int err = probe_scope_out(a->probe, tgid, fd);

	if (err)
		log_warn("leave process %u out in the kernel: %s (the agent drops its records)",
			 tgid, strerror(-err));
}

/* The include, exclude and naming rules, when there are any. */
static int start_scope(struct agent *a, struct tracker_opts *topts)
{
	struct scope_texts texts = { a->cfg.scope_include, a->cfg.scope_exclude,
				     a->cfg.service_names };
	char why[256];

	if (!texts.include[0] && !texts.exclude[0] && !texts.names[0])
		return 0;
	a->scope = scope_new(&texts, "/proc", why, sizeof(why));
	if (!a->scope) {
		log_error("%s", why);
		return -EINVAL;
	}
	proc_table_set_scope(a->procs, a->scope);
	topts->on_scoped_out = on_scoped_out;
	topts->scoped_out_ctx = a;
	return 0;
}

static void scan_logfiles_of(void *ctx, uint32_t pid)
{
	struct agent *a = ctx;

	logfiles_scan(a->logfiles, pid, on_logfile, a);
}

/* Which configured log files each traced process has open. */
static void scan_logfiles(struct agent *a)
{
	proc_table_each(a->procs, scan_logfiles_of, a);
	logfiles_sweep(a->logfiles, on_logfile, a);
}

static int start_logs(struct agent *a)
{
	struct log_export_opts opts = {
		.sinks = a->cfg.log_sinks,
		.max_queue_size = a->cfg.blrp_max_queue,
		.max_export_batch = a->cfg.blrp_max_batch,
		.schedule_delay_ms = a->cfg.blrp_delay_ms,
		.export_timeout_ms = a->cfg.blrp_timeout_ms,
		.otlp = a->cfg.logs_otlp,
		.console = stdout,
	};
	struct logs_opts lopts = { .tree = exporter_tree(a->exporter) };
	char why[256];
	int err;

	if (a->cfg.log_files[0]) {
		a->logfiles = logfiles_new(a->cfg.log_files, "/proc", why, sizeof(why));
		if (!a->logfiles) {
			log_error("%s", why);
			return -EINVAL;
		}
	}
	if (a->cfg.log_redact[0]) {
		a->redaction = log_redaction_new(a->cfg.log_redact, why, sizeof(why));
		if (!a->redaction) {
			log_error("%s", why);
			return -EINVAL;
		}
	}
	opts.redaction = a->redaction;
	err = log_export_new(&a->log_export, &opts, why, sizeof(why));
	if (err) {
		log_error("start log exporter: %s", why);
		return err;
	}
	a->logs = logs_new(&lopts, tracker_linker(a->tracker), a->log_export, a->procs, &a->clock);
	return a->logs ? 0 : -ENOMEM;
}

static int start_metrics(struct agent *a, struct tracker_opts *topts)
{
	struct metrics_opts mopts = { .cardinality_limit = a->cfg.cardinality_limit };
	char why[256];

	struct metrics_export_opts xopts = {
		.sinks = a->cfg.metrics_exporters & (METRICS_OTLP | METRICS_CONSOLE),
		.interval_ms = a->cfg.metric_interval_ms,
		.timeout_ms = a->cfg.metric_timeout_ms,
		.temporality = a->cfg.temporality,
		.otlp = a->cfg.metrics_otlp,
		.console = stdout,
	};
	int err;

	a->metrics = metrics_new(&mopts);
	if (!a->metrics)
		return -ENOMEM;
	if (a->cfg.metrics_exporters & METRICS_PROMETHEUS) {
		a->prometheus = prom_start(a->cfg.prometheus_host,
					   (uint16_t)a->cfg.prometheus_port, a->metrics, why,
					   sizeof(why));
		if (!a->prometheus) {
			log_error("%s", why);
			return -EADDRINUSE;
		}
	}
	if (xopts.sinks) {
		err = metrics_export_new(&a->metrics_export, a->metrics, &xopts, why, sizeof(why));
		if (err) {
			log_error("start metrics exporter: %s", why);
			return err;
		}
	}
	topts->on_exchange = metrics_record;
	topts->on_request_began = metrics_request_began;
	topts->on_request_ended = metrics_request_ended;
	topts->observer_ctx = a->metrics;
	return 0;
}

/* Freed blocks stay in the allocator's arenas until it is told to return
 * them: after a burst of connections, the agent's memory goes back near
 * its idle size. */
#define TRIM_MIN_BYTES (1u << 20)

static void give_back_memory(struct agent *a)
{
	if (tracker_trim(a->tracker) >= TRIM_MIN_BYTES)
		malloc_trim(0);
}

static void housekeeping(struct agent *a, uint64_t *last_stats_ns)
{
	uint32_t exited[1024];
	size_t n;
	uint64_t now = monotonic_now_ns();
	bool to_log = a->cfg.stats_interval_s &&
		      now - *last_stats_ns >= a->cfg.stats_interval_s * 1000000000ull;

	wallclock_sync(&a->clock);
	while ((n = tracker_take_exited(a->tracker, exited, 1024)) > 0)
		a->stats.kernel_entries_swept += probe_forget_processes(a->probe, exited, n);
	if (a->logfiles)
		scan_logfiles(a);
	give_back_memory(a);
	if (to_log)
		*last_stats_ns = now;
	report_stats(a, to_log);
}

/* Appends an item to the comma-separated list in out, *n bytes long. */
static void __attribute__((format(printf, 4, 5)))
list_add(char *out, size_t size, int *n, const char *fmt, ...)
{
	va_list ap;

	if ((size_t)*n + 2 >= size)
		return;
	if (*n)
		*n += snprintf(out + *n, size - (size_t)*n, ", ");
	va_start(ap, fmt);
	*n += vsnprintf(out + *n, size - (size_t)*n, fmt, ap);
	va_end(ap);
	if ((size_t)*n >= size)
		*n = (int)size - 1;
}

static void describe_sinks(const struct sonde_config *cfg, char *out, size_t size)
{
	const struct otlp_opts *o = &cfg->otlp;
	int n = 0;

	snprintf(out, size, "none");
	if (cfg->exporters & EXPORTER_OTLP)
		list_add(out, size, &n, "otlp %s %s%s",
			 o->protocol == OTLP_GRPC ? "grpc" : "http/protobuf", o->url,
			 o->gzip ? " gzip" : "");
	if (cfg->exporters & EXPORTER_CONSOLE)
		list_add(out, size, &n, "console");
	if (cfg->exporters & EXPORTER_TREE)
		list_add(out, size, &n, "tree");
}

static void describe_metrics(const struct sonde_config *cfg, char *out, size_t size)
{
	unsigned sinks = cfg->metrics_exporters;
	int n = 0;

	snprintf(out, size, "none");
	if (sinks & METRICS_PROMETHEUS)
		list_add(out, size, &n, "prometheus %s:%u", cfg->prometheus_host,
			 cfg->prometheus_port);
	if (sinks & METRICS_OTLP)
		list_add(out, size, &n, "otlp %s", cfg->metrics_otlp.url);
	if (sinks & METRICS_CONSOLE)
		list_add(out, size, &n, "console");
	if (sinks & (METRICS_OTLP | METRICS_CONSOLE))
		snprintf(out + n, size - (size_t)n, " every %u ms", cfg->metric_interval_ms);
}

static int run(struct agent *a)
{
	uint64_t last_housekeeping = monotonic_now_ns(), last_stats = last_housekeeping, now;
	char sinks[640], metrics[1200];

	describe_sinks(&a->cfg, sinks, sizeof(sinks));
	describe_metrics(&a->cfg, metrics, sizeof(metrics));
	log_notice("ready: tracing HTTP/1.x, PostgreSQL and Redis on this host (exporter: %s; "
		   "metrics: %s)", sinks, metrics);
	while (!stop_signal) {
		int err = probe_poll(a->probe, (int)a->cfg.poll_ms);

		if (err) {
			log_error("poll ring buffer: %s", strerror(-err));
			return err;
		}
		now = monotonic_now_ns();
		if (a->jobs)
			jobs_poll(a->jobs, now);
		tracker_tick(a->tracker, now);
		if (a->logs)
			logs_tick(a->logs, now);
		if (now - last_housekeeping >= HOUSEKEEPING_NS) {
			last_housekeeping = now;
			housekeeping(a, &last_stats);
		}
	}
	say_why_stopping(stop_signal);
	return 0;
}

static int start_jobs(struct agent *a, struct probe_opts *popts)
{
	uint64_t offsets[JOBS_NATIVE_MAX];
	char why[512];

	if (jobs_parse_entry_points(a->cfg.entry_points, &a->entry_points, why, sizeof(why))) {
		log_error("%s", why);
		return -EINVAL;
	}
	if (jobs_find_natives(&a->entry_points, offsets, why, sizeof(why))) {
		log_error("%s", why);
		return -ENOENT;
	}
	for (size_t i = 0; i < a->entry_points.nnative; i++)
		a->natives[i] = (struct probe_native){ a->entry_points.native[i].path, offsets[i] };
	a->jobs = jobs_new(tracker_linker(a->tracker), a->procs, &a->clock, &a->entry_points);
	a->watch_log = (struct log_limit)LOG_LIMIT_INIT(60, 5);
	if (!a->jobs)
		return -ENOMEM;
	popts->job_names = a->entry_points.python;
	popts->njob_names = a->entry_points.npython;
	popts->natives = a->natives;
	popts->nnatives = a->entry_points.nnative;
	return 0;
}

static void host_name(char *out, size_t size)
{
	if (gethostname(out, size))
		snprintf(out, size, "unknown");
	out[size - 1] = '\0';
}

static int start(struct agent *a)
{
	struct exporter_opts eopts = {
		.sinks = a->cfg.exporters,
		.sched = a->cfg.export_sched,
		.max_queue_size = a->cfg.max_queue_size,
		.max_export_batch = a->cfg.max_export_batch,
		.schedule_delay_ms = a->cfg.schedule_delay_ms,
		.export_timeout_ms = a->cfg.export_timeout_ms,
		.console = stdout,
		.otlp = a->cfg.otlp,
	};
	char why[256];
	struct tracker_opts topts = { .proto.keep_query = a->cfg.keep_query };
	struct probe_opts popts = {
		.excluded_count = a->cfg.excluded_count,
		.buffer = a->cfg.buffer,
		.capture_bytes = a->cfg.capture_bytes,
		.ringbuf_bytes = a->cfg.ringbuf_bytes,
		.max_connections = a->cfg.max_connections,
		.log_rate_limit = a->cfg.log_sinks ? a->cfg.log_rate_limit : 0,
		.log_capture_bytes = a->cfg.log_capture_bytes,
		.log_files = a->cfg.log_files[0] != '\0',
		.pin = a->cfg.pin,
	};
	char host[64];
	int err;

	memcpy(popts.excluded_comms, a->cfg.excluded_comms, sizeof(popts.excluded_comms));
	a->started_ns = monotonic_now_ns();
	host_name(host, sizeof(host));
	wallclock_sync(&a->clock);
	err = exporter_new(&a->exporter, &eopts, why, sizeof(why));
	if (err) {
		log_error("start exporter: %s", why);
		return err;
	}
	a->procs = proc_table_new("/proc", host);
	if (!a->procs)
		return -ENOMEM;
	if ((err = start_scope(a, &topts)))
		return err;
	if (a->cfg.metrics_exporters && (err = start_metrics(a, &topts)))
		return err;
	a->tracker = tracker_new(&topts, a->exporter, a->procs, &a->clock);
	if (!a->tracker)
		return -ENOMEM;
	if (a->cfg.log_sinks && (err = start_logs(a)))
		return err;
	if (a->cfg.command_spans[0]) {
		a->commands = commands_new(a->cfg.command_spans, "/proc", tracker_linker(a->tracker),
					   a->exporter, a->procs, &a->clock, why, sizeof(why));
		if (!a->commands) {
			log_error("%s", why);
			return -EINVAL;
		}
	}
	if (a->cfg.entry_points[0] && (err = start_jobs(a, &popts)))
		return err;
	prog_files_init(&a->prog_files, "/proc");
	pytask_init(&a->pytask, &a->prog_files);
	uvloop_init(&a->uvloop, &a->prog_files);
	err = probe_start(&a->probe, &popts, on_record, a);
	if (err)
		return err;
	if (privileges_drop(why, sizeof(why))) {
		log_error("%s", why);
		return -EPERM;
	}
	look_at_running_programs(a);
	report_stats(a, false);
	return 0;
}

/* Spans, log records and metrics flush side by side, each within its own
 * export timeout: one after the other, a dead collector's three timeouts
 * would add up (90 s by default) past the unit's TimeoutStopSec. */
static void stop_exporters(struct agent *a)
{
	if (a->log_export)
		log_export_request_stop(a->log_export);
	if (a->metrics_export)
		metrics_export_request_stop(a->metrics_export);
	exporter_request_stop(a->exporter);
	if (a->log_export)
		log_export_stop(a->log_export);
	if (a->metrics_export)
		metrics_export_stop(a->metrics_export);
	exporter_stop(a->exporter);
}

/* Detach first so no new event arrives, drain the ring, give up on
 * reordering holds, then let the exporters flush what was completed. */
static void stop(struct agent *a)
{
	if (a->probe) {
		probe_detach(a->probe);
		tracker_tick(a->tracker, monotonic_now_ns());
		if (a->jobs)
			jobs_end_all(a->jobs, monotonic_now_ns());
		tracker_tick(a->tracker, UINT64_MAX);
		if (a->commands)
			commands_end_all(a->commands, monotonic_now_ns());
		if (a->logs)
			logs_tick(a->logs, UINT64_MAX);
		stop_exporters(a);
		report_stats(a, true);
	}
	metrics_export_free(a->metrics_export);
	prom_stop(a->prometheus);
	logs_free(a->logs);
	log_export_free(a->log_export);
	log_redaction_free(a->redaction);
	logfiles_free(a->logfiles);
	commands_free(a->commands);
	jobs_free(a->jobs);
	probe_free(a->probe);
	tracker_free(a->tracker);
	metrics_free(a->metrics);
	exporter_free(a->exporter);
	proc_table_free(a->procs);
	scope_free(a->scope);
	log_info("stopped");
}

/* One agent per host: a second traces again what both trace, and exports
 * its own copy of those spans, with ids of its own. */
static void warn_other_agents(void)
{
	uint32_t other = procfs_find_named("/proc", "sonde", (uint32_t)getpid(), NULL, NULL);

	if (other)
		log_warn("another sonde is running (pid %u): what both trace is traced, and "
			 "exported, twice", other);
}

static void install_signals(void)
{
	struct sigaction sa = { .sa_handler = on_signal };

	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

int main(int argc, char **argv)
{
	struct agent agent = { 0 };
	char why[512];
	int err;

	if (config_parse(&agent.cfg, argc, argv, getenv, CONFIG_FILE_DEFAULT, why, sizeof(why))) {
		fprintf(stderr, "sonde: %s\n", why);
		return 2;
	}
	if (agent.cfg.help) {
		config_usage(stdout);
		return 0;
	}
	if (agent.cfg.version) {
		printf("sonde %s\n", SONDE_VERSION);
		return 0;
	}
	if (agent.cfg.check_config) {
		printf("sonde: configuration valid (flags, environment%s%s)\n",
		       agent.cfg.config_file[0] ? ", " : "", agent.cfg.config_file);
		return 0;
	}
	log_set_level(agent.cfg.verbose ? LOG_DEBUG : LOG_INFO);
	log_stamp_unless_journal();
	if (privileges_check(why, sizeof(why)) ||
	    probe_check_platform(why, sizeof(why))) {
		log_notice("cannot start: %s", why);
		return 1;
	}
	warn_other_agents();
	install_signals();
	err = start(&agent);
	if (!err)
		err = run(&agent);
	stop(&agent);
	return err ? 1 : 0;
}
