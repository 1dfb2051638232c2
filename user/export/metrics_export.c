#include "metrics_export.h"

#include "clock.h"
#include "console.h"
#include "log.h"
#include "metrics_view.h"
#include "otlp_export.h"
#include "otlp_metrics.h"
#include "pacer.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONSOLE_LINE_MAX (16 * 1024)

/* A histogram series' counts as last exported, for deltas. */
struct last_counts {
	uint64_t buckets[METRICS_BUCKETS + 1];
	double sum;
	uint64_t count;
};

struct metrics_export {
	struct metrics_export_opts opts;
	struct metrics *metrics;
	struct otlp_export *otlp;
	struct bytes request;
	char *line;
	char host_name[256];
	struct metrics_view view;
	/* Per histogram, by series number: what the last delta counted. */
	struct last_counts *last[METRICS_INSTRUMENTS];
	size_t nlast[METRICS_INSTRUMENTS];
	uint64_t last_self[METRICS_SELF_MAX];
	struct pacer pace;
	struct log_limit log;
};

/* ---- deltas ------------------------------------------------------------------ */

static bool wants_delta(const struct metrics_export *e, unsigned which)
{
	return e->opts.temporality != TEMPORALITY_CUMULATIVE &&
	       metric_descs[which].kind == METRIC_KIND_HISTOGRAM;
}

static int grow_last(struct metrics_export *e, unsigned which, size_t n)
{
	struct last_counts *grown;

	if (n <= e->nlast[which])
		return 0;
	grown = realloc(e->last[which], n * sizeof(*grown));
	if (!grown)
		return -ENOMEM;
	memset(grown + e->nlast[which], 0, (n - e->nlast[which]) * sizeof(*grown));
	e->last[which] = grown;
	e->nlast[which] = n;
	return 0;
}

/* Turns cumulative points into what was counted since the last export,
 * keeping only the series that counted something. */
static int to_delta(struct metrics_export *e, unsigned which)
{
	struct metric_points *pts = &e->view.inst[which].points;
	size_t kept = 0;

	for (size_t i = 0; i < pts->n; i++) {
		struct metric_point p = pts->point[i];
		struct last_counts *last;

		if (grow_last(e, which, (size_t)p.index + 1))
			return -ENOMEM;
		last = &e->last[which][p.index];
		if (p.count == last->count)
			continue;
		for (unsigned b = 0; b <= METRICS_BUCKETS; b++) {
			uint64_t now = p.buckets[b];

			p.buckets[b] -= last->buckets[b];
			last->buckets[b] = now;
		}
		p.sum -= last->sum;
		last->sum = pts->point[i].sum;
		p.count -= last->count;
		last->count = pts->point[i].count;
		pts->point[kept++] = p;
	}
	pts->n = kept;
	return 0;
}

static void self_to_delta(struct metrics_export *e)
{
	for (size_t i = 0; i < e->view.nself; i++) {
		uint64_t now = e->view.self[i].value;

		if (e->view.self[i].desc->kind != COUNTER_TOTAL)
			continue;
		e->view.self[i].value = now - e->last_self[i];
		e->last_self[i] = now;
	}
}

/* ---- one collection ------------------------------------------------------------ */

static int collect(struct metrics_export *e)
{
	struct metrics_view *v = &e->view;
	int err = 0;

	v->previous_ns = v->time_ns ? v->time_ns : v->start_ns;
	v->time_ns = realtime_now_ns();
	for (unsigned i = 0; i < METRICS_INSTRUMENTS && !err; i++) {
		err = metrics_collect(e->metrics, i, &v->inst[i].points);
		if (!err && v->inst[i].delta)
			err = to_delta(e, i);
	}
	v->nself = metrics_collect_self(e->metrics, v->self);
	if (v->self_delta)
		self_to_delta(e);
	process_usage_read(&v->usage);
	return err;
}

static void write_line(struct metrics_export *e, size_t len)
{
	if (len)
		fwrite(e->line, 1, len, e->opts.console);
	else
		log_limited(&e->log, LOG_WARN, "console metrics: a data point longer than %d bytes",
			    CONSOLE_LINE_MAX);
}

static void write_console(struct metrics_export *e)
{
	const struct metrics_view *v = &e->view;

	for (unsigned i = 0; i < METRICS_INSTRUMENTS; i++)
		for (size_t p = 0; p < v->inst[i].points.n; p++)
			write_line(e, console_format_point(v, &v->inst[i], &v->inst[i].points.point[p],
							   e->line, CONSOLE_LINE_MAX));
	for (size_t i = 0; i < v->nself; i++)
		write_line(e, console_format_self(v, &v->self[i], e->line, CONSOLE_LINE_MAX));
	fflush(e->opts.console);
}

static void export_otlp(struct metrics_export *e)
{
	struct otlp_pacer pacer = pacer_for_export(&e->pace);
	struct otlp_batch_result result = { 0 };
	size_t npoints;
	int err = otlp_metrics_encode(&e->view, &e->request, &npoints);

	if (err) {
		log_limited(&e->log, LOG_WARN, "OTLP metrics: encoding %zu data points: %s", npoints,
			    strerror(-err));
		metrics_count_export(e->metrics, false);
		return;
	}
	otlp_export_send(e->otlp, e->request.data + OTLP_ENCODE_HEADROOM,
			 e->request.used - OTLP_ENCODE_HEADROOM, npoints, &pacer, &result);
	metrics_count_export(e->metrics, result.exported == npoints);
	if (result.exported != npoints)
		log_limited(&e->log, LOG_WARN, "OTLP metrics: %" PRIu64 " of %zu data points not "
			    "delivered: %s", result.refused + result.failed, npoints, result.reason);
}

static void export_once(struct metrics_export *e)
{
	if (collect(e)) {
		log_limited(&e->log, LOG_WARN, "metrics: out of memory collecting the counts");
		metrics_count_export(e->metrics, false);
		return;
	}
	if (e->opts.sinks & METRICS_CONSOLE)
		write_console(e);
	if (e->opts.sinks & METRICS_OTLP)
		export_otlp(e);
	else
		metrics_count_export(e->metrics, true);
}

/* Exports every interval, measured from the start of the previous export,
 * and once more when stopped. */
static void *export_thread(void *arg)
{
	struct metrics_export *e = arg;
	uint64_t next = monotonic_now_ns();

	for (;;) {
		bool stop;

		next += (uint64_t)e->opts.interval_ms * 1000000ull;
		pthread_mutex_lock(&e->pace.lock);
		while (!e->pace.stopping && monotonic_now_ns() < next)
			pacer_wait_until(&e->pace, next);
		stop = e->pace.stopping;
		pthread_mutex_unlock(&e->pace.lock);
		if (monotonic_now_ns() > next)
			next = monotonic_now_ns();
		export_once(e);
		if (stop)
			return NULL;
	}
}

/* ---- lifetime --------------------------------------------------------------------- */

static void init_view(struct metrics_export *e)
{
	struct metrics_view *v = &e->view;

	v->start_ns = metrics_start_unix_ns(e->metrics);
	for (unsigned i = 0; i < METRICS_INSTRUMENTS; i++) {
		v->inst[i].desc = &metric_descs[i];
		v->inst[i].delta = wants_delta(e, i);
	}
	v->self_delta = e->opts.temporality == TEMPORALITY_DELTA;
	if (gethostname(e->host_name, sizeof(e->host_name)) != 0)
		e->host_name[0] = '\0';
	e->host_name[sizeof(e->host_name) - 1] = '\0';
	v->host_name = e->host_name;
}

static int start(struct metrics_export *e, char *err, size_t err_size)
{
	int ret;

	if (e->opts.sinks & METRICS_CONSOLE && !(e->line = malloc(CONSOLE_LINE_MAX))) {
		snprintf(err, err_size, "metrics exporter: out of memory");
		return -ENOMEM;
	}
	if (e->opts.sinks & METRICS_OTLP) {
		ret = otlp_export_new(&e->otlp, &e->opts.otlp, e->opts.timeout_ms, "data points",
				      err, err_size);
		if (ret)
			return ret;
	}
	ret = pacer_start(&e->pace, export_thread, e);
	if (ret) {
		snprintf(err, err_size, "metrics exporter: start thread: %s", strerror(-ret));
		return ret;
	}
	return 0;
}

int metrics_export_new(struct metrics_export **out, struct metrics *metrics,
		       const struct metrics_export_opts *opts, char *err, size_t err_size)
{
	struct metrics_export *e = calloc(1, sizeof(*e));
	int ret;

	if (!e) {
		snprintf(err, err_size, "metrics exporter: out of memory");
		return -ENOMEM;
	}
	e->opts = *opts;
	e->metrics = metrics;
	e->log = (struct log_limit)LOG_LIMIT_INIT(10, 2);
	pacer_init(&e->pace);
	init_view(e);
	ret = start(e, err, err_size);
	if (ret) {
		metrics_export_free(e);
		return ret;
	}
	*out = e;
	return 0;
}

void metrics_export_request_stop(struct metrics_export *e)
{
	pacer_stop(&e->pace, e->opts.timeout_ms);
}

void metrics_export_stop(struct metrics_export *e)
{
	pacer_join(&e->pace, e->opts.timeout_ms);
}

void metrics_export_free(struct metrics_export *e)
{
	if (!e)
		return;
	metrics_export_stop(e);
	for (unsigned i = 0; i < METRICS_INSTRUMENTS; i++) {
		metric_points_free(&e->view.inst[i].points);
		free(e->last[i]);
	}
	otlp_export_free(e->otlp);
	bytes_free(&e->request);
	free(e->line);
	pacer_destroy(&e->pace);
	free(e);
}
