#include "log_export.h"

#include "clock.h"
#include "console.h"
#include "log.h"
#include "otlp_export.h"
#include "otlp_logs.h"
#include "pacer.h"
#include "semconv.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define LOG_EXPORT_DESC(...) COUNTER_DESC(struct log_export_stats, __VA_ARGS__)
const struct counter_desc log_export_counters[] = { LOG_EXPORT_COUNTERS(LOG_EXPORT_DESC) };
const size_t log_export_counter_count =
	sizeof(log_export_counters) / sizeof(log_export_counters[0]);

#define CONSOLE_LINE_MAX (4 * LOGLINE_TEXT_MAX)

struct log_export {
	struct log_export_opts opts;
	struct log_record *ring; /* max_queue_size slots */
	uint64_t head;           /* next slot to export; written by the thread */
	uint64_t tail;           /* next slot to fill; written by the capture thread */
	const struct log_record **batch;
	struct otlp_export *otlp;
	struct bytes request;
	char *line;                /* a console line */
	struct logline *parsed;    /* the record being formatted or encoded */
	char *scratch;             /* LOGLINE_TEXT_MAX bytes, for redaction */
	struct pacer pace;
	struct log_export_stats stats;
	struct log_limit log;
};

static uint64_t load(const uint64_t *v)
{
	return __atomic_load_n(v, __ATOMIC_ACQUIRE);
}

static void count(uint64_t *counter, uint64_t n)
{
	__atomic_add_fetch(counter, n, __ATOMIC_RELAXED);
}

void log_record_attributes(const struct log_record *rec, const struct attr_sink *sink)
{
	const char *name;

	if (rec->iostream == LOG_FILE) {
		name = strrchr(rec->file_path, '/');
		sink->str(sink->ctx, "log.file.path", rec->file_path);
		sink->str(sink->ctx, "log.file.name", name ? name + 1 : rec->file_path);
	} else {
		sink->str(sink->ctx, "log.iostream", rec->iostream == LOG_STDERR ? "stderr" : "stdout");
	}
	if (rec->truncated)
		sink->boolean(sink->ctx, "sonde.log.truncated", true);
}

struct log_record *log_export_reserve(struct log_export *e)
{
	if (e->tail - load(&e->head) >= e->opts.max_queue_size) {
		count(&e->stats.dropped, 1);
		log_limited(&e->log, LOG_WARN,
			    "log export queue full (%u records): dropping records; see "
			    "log_records_dropped", e->opts.max_queue_size);
		return NULL;
	}
	return &e->ring[e->tail % e->opts.max_queue_size];
}

void log_export_commit(struct log_export *e)
{
	count(&e->stats.queued, 1);
	__atomic_store_n(&e->tail, e->tail + 1, __ATOMIC_RELEASE);
	if (e->tail - load(&e->head) == e->opts.max_export_batch)
		pacer_wake(&e->pace);
}

/* ---- the export thread ------------------------------------------------------ */

static void write_console(struct log_export *e, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		size_t len = console_format_log(e->batch[i], e->opts.redaction, e->parsed,
						e->scratch, e->line, CONSOLE_LINE_MAX);

		if (len)
			fwrite(e->line, 1, len, e->opts.console);
	}
	fflush(e->opts.console);
}

static void export_otlp(struct log_export *e, size_t n)
{
	struct otlp_pacer pacer = pacer_for_export(&e->pace);
	struct otlp_batch_result r = { .failed = n };
	int err = otlp_logs_encode(e->batch, n, e->opts.redaction, e->parsed, &e->request);

	if (err)
		snprintf(r.reason, sizeof(r.reason), "encoding %zu log records: %s", n,
			 strerror(-err));
	else
		otlp_export_send(e->otlp, e->request.data + OTLP_ENCODE_HEADROOM,
				 e->request.used - OTLP_ENCODE_HEADROOM, n, &pacer, &r);
	count(&e->stats.exported, r.exported);
	count(&e->stats.refused, r.refused);
	count(&e->stats.failed, r.failed);
	if (r.refused || r.failed)
		log_limited(&e->log, LOG_WARN, "OTLP logs: %" PRIu64 " of %zu records not delivered: %s",
			    r.refused + r.failed, n, r.reason);
}

static void export_range(struct log_export *e, uint64_t from, uint64_t to)
{
	size_t n = (size_t)(to - from);

	for (size_t i = 0; i < n; i++)
		e->batch[i] = &e->ring[(from + i) % e->opts.max_queue_size];
	if (e->opts.sinks & LOG_SINK_CONSOLE)
		write_console(e, n);
	if (e->opts.sinks & LOG_SINK_OTLP)
		export_otlp(e, n);
	else
		count(&e->stats.exported, n);
	for (size_t i = 0; i < n; i++)
		if (e->batch[i]->proc)
			proc_info_unref(e->batch[i]->proc);
}

static void wait_for_batch(struct log_export *e)
{
	uint64_t deadline_ns = monotonic_now_ns() + e->opts.schedule_delay_ms * 1000000ull;

	pthread_mutex_lock(&e->pace.lock);
	while (!e->pace.stopping && load(&e->tail) - load(&e->head) < e->opts.max_export_batch)
		if (pacer_wait_until(&e->pace, deadline_ns))
			break;
	pthread_mutex_unlock(&e->pace.lock);
}

static void *export_thread(void *arg)
{
	struct log_export *e = arg;

	for (;;) {
		uint64_t head, tail;
		bool stop;

		wait_for_batch(e);
		stop = pacer_stopping(&e->pace);
		head = load(&e->head);
		tail = load(&e->tail);
		while (head < tail) {
			uint64_t end = tail - head > e->opts.max_export_batch
					       ? head + e->opts.max_export_batch
					       : tail;

			export_range(e, head, end);
			head = end;
			__atomic_store_n(&e->head, head, __ATOMIC_RELEASE);
		}
		if (stop)
			return NULL;
	}
}

/* ---- lifetime ------------------------------------------------------------------- */

static int start(struct log_export *e, char *err, size_t err_size)
{
	int ret;

	e->ring = calloc(e->opts.max_queue_size, sizeof(*e->ring));
	e->batch = calloc(e->opts.max_export_batch, sizeof(*e->batch));
	e->line = malloc(CONSOLE_LINE_MAX);
	e->parsed = malloc(sizeof(*e->parsed));
	e->scratch = malloc(LOGLINE_TEXT_MAX);
	if (!e->ring || !e->batch || !e->line || !e->parsed || !e->scratch) {
		snprintf(err, err_size, "log exporter: out of memory for %u records",
			 e->opts.max_queue_size);
		return -ENOMEM;
	}
	if (e->opts.sinks & LOG_SINK_OTLP) {
		ret = otlp_export_new(&e->otlp, &e->opts.otlp, e->opts.export_timeout_ms,
				      "log records", err, err_size);
		if (ret)
			return ret;
	}
	ret = pacer_start(&e->pace, export_thread, e);
	if (ret) {
		snprintf(err, err_size, "log exporter: start thread: %s", strerror(-ret));
		return ret;
	}
	return 0;
}

int log_export_new(struct log_export **out, const struct log_export_opts *opts, char *err,
		   size_t err_size)
{
	struct log_export *e = calloc(1, sizeof(*e));
	int ret;

	if (!e) {
		snprintf(err, err_size, "log exporter: out of memory");
		return -ENOMEM;
	}
	e->opts = *opts;
	e->log = (struct log_limit)LOG_LIMIT_INIT(10, 1);
	pacer_init(&e->pace);
	ret = start(e, err, err_size);
	if (ret) {
		log_export_free(e);
		return ret;
	}
	*out = e;
	return 0;
}

void log_export_request_stop(struct log_export *e)
{
	pacer_stop(&e->pace, e->opts.export_timeout_ms);
}

void log_export_stop(struct log_export *e)
{
	pacer_join(&e->pace, e->opts.export_timeout_ms);
}

void log_export_free(struct log_export *e)
{
	if (!e)
		return;
	log_export_stop(e);
	pacer_destroy(&e->pace);
	otlp_export_free(e->otlp);
	bytes_free(&e->request);
	free(e->ring);
	free(e->batch);
	free(e->line);
	free(e->parsed);
	free(e->scratch);
	free(e);
}

void log_export_get_stats(struct log_export *e, struct log_export_stats *out)
{
	out->queued = __atomic_load_n(&e->stats.queued, __ATOMIC_RELAXED);
	out->exported = __atomic_load_n(&e->stats.exported, __ATOMIC_RELAXED);
	out->dropped = __atomic_load_n(&e->stats.dropped, __ATOMIC_RELAXED);
	out->refused = __atomic_load_n(&e->stats.refused, __ATOMIC_RELAXED);
	out->failed = __atomic_load_n(&e->stats.failed, __ATOMIC_RELAXED);
}
