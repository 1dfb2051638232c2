#include "otlp_metrics.h"

#include "arena.h"
#include "otlp_kv.h"
#include "otlp.pb-c.h"
#include "otlp_encode.h"
#include "semconv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SCOPE_NAME "sonde"
#define RESOURCE_ATTRS 4
/* sonde's own metrics besides its counters: CPU time and memory. */
#define PROCESS_METRICS 2

/* ---- attributes ------------------------------------------------------------ */

static void count_str(void *ctx, const char *key, const char *text)
{
	(*(size_t *)ctx)++;
}

static void count_i64(void *ctx, const char *key, int64_t number)
{
	(*(size_t *)ctx)++;
}

static void count_bool(void *ctx, const char *key, bool flag)
{
	(*(size_t *)ctx)++;
}

/* A series' attributes as KeyValues; false when memory ran out. */
static bool series_kv(struct arena *a, const struct metric_series *s, Otlp__KeyValue ***out,
		      size_t *n)
{
	size_t count = 0;
	struct attr_sink counter = { count_str, count_i64, count_bool, &count };
	struct otlp_kv_list l = { .skip_key = "service.name" };
	struct attr_sink sink = otlp_kv_sink(&l);

	metric_series_attributes(s, &counter);
	if (!otlp_kv_init(&l, a, count))
		return false;
	metric_series_attributes(s, &sink);
	*out = l.kv;
	*n = l.n;
	return !l.failed;
}

/* ---- resources ----------------------------------------------------------------- */

/* One ResourceMetrics being filled: its metrics, counted first. */
struct resource {
	const char *service;
	size_t nmetrics, cap;
	Otlp__Metric **metrics;
};

struct request {
	struct arena arena;
	const struct metrics_view *view;
	struct resource *res; /* sorted by service; the last is sonde's own */
	size_t nres;
	uint32_t *res_of[METRICS_INSTRUMENTS]; /* per point */
	uint32_t *order[METRICS_INSTRUMENTS];  /* the points, in resource order */
	size_t npoints;
};

static int by_name(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The resources: every service with points, sorted, then sonde's own. */
static int make_resources(struct request *r)
{
	const struct metrics_view *v = r->view;
	size_t total = 1, n = 0;
	const char **names;

	for (unsigned i = 0; i < METRICS_INSTRUMENTS; i++)
		total += v->inst[i].points.n;
	names = arena_alloc(&r->arena, total * sizeof(*names));
	r->res = arena_alloc(&r->arena, total * sizeof(*r->res));
	if (!names || !r->res)
		return -ENOMEM;
	for (unsigned i = 0; i < METRICS_INSTRUMENTS; i++)
		for (size_t p = 0; p < v->inst[i].points.n; p++) {
			const char *service = metric_series_service(v->inst[i].points.point[p].series);

			if (service)
				names[n++] = service;
		}
	qsort(names, n, sizeof(*names), by_name);
	for (size_t i = 0; i < n; i++)
		if (!r->nres || strcmp(names[i], r->res[r->nres - 1].service) != 0)
			r->res[r->nres++].service = names[i];
	r->res[r->nres++].service = METRICS_SELF_SERVICE;
	return 0;
}

static uint32_t resource_of(const struct request *r, const struct metric_series *s)
{
	const char *service = metric_series_service(s);
	size_t lo = 0, hi = r->nres - 1; /* the last, sonde's, is not sorted in */

	while (service && lo < hi) {
		size_t mid = (lo + hi) / 2;
		int cmp = strcmp(service, r->res[mid].service);

		if (cmp == 0)
			return (uint32_t)mid;
		if (cmp < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return (uint32_t)(r->nres - 1);
}

/* Puts one instrument's points in resource order (a counting sort: the
 * series are in the order they were made, services interleaved), so that
 * each resource's points are one run: one Metric. */
static int order_points(struct request *r, unsigned which)
{
	const struct metric_points *pts = &r->view->inst[which].points;
	size_t *start = arena_alloc(&r->arena, (r->nres + 1) * sizeof(*start));

	r->res_of[which] = arena_alloc(&r->arena, (pts->n + 1) * sizeof(uint32_t));
	r->order[which] = arena_alloc(&r->arena, (pts->n + 1) * sizeof(uint32_t));
	if (!start || !r->res_of[which] || !r->order[which])
		return -ENOMEM;
	for (size_t p = 0; p < pts->n; p++) {
		r->res_of[which][p] = resource_of(r, pts->point[p].series);
		start[r->res_of[which][p] + 1]++;
	}
	for (size_t i = 0; i < r->nres; i++) {
		if (start[i + 1])
			r->res[i].cap++;
		start[i + 1] += start[i];
	}
	for (size_t p = 0; p < pts->n; p++)
		r->order[which][start[r->res_of[which][p]]++] = (uint32_t)p;
	return 0;
}

/* Every point's place, and room for each resource's metrics. */
static int assign_points(struct request *r)
{
	int err = 0;

	for (unsigned i = 0; i < METRICS_INSTRUMENTS && !err; i++)
		err = order_points(r, i);
	if (err)
		return err;
	r->res[r->nres - 1].cap += r->view->nself + PROCESS_METRICS;
	for (size_t i = 0; i < r->nres; i++) {
		r->res[i].metrics = arena_alloc(&r->arena, (r->res[i].cap + 1) * sizeof(Otlp__Metric *));
		if (!r->res[i].metrics)
			return -ENOMEM;
	}
	return 0;
}

/* ---- metrics ---------------------------------------------------------------- */

static uint64_t start_of(const struct metrics_view *v, bool delta)
{
	return delta ? v->previous_ns : v->start_ns;
}

static Otlp__AggregationTemporality temporality(bool delta)
{
	return delta ? OTLP__AGGREGATION_TEMPORALITY__AGGREGATION_TEMPORALITY_DELTA
		     : OTLP__AGGREGATION_TEMPORALITY__AGGREGATION_TEMPORALITY_CUMULATIVE;
}

static Otlp__Metric *new_metric(struct request *r, struct resource *res, const char *name,
				const char *description, const char *unit)
{
	Otlp__Metric *m = arena_alloc(&r->arena, sizeof(*m));

	if (!m)
		return NULL;
	otlp__metric__init(m);
	m->name = (char *)name;
	m->description = (char *)description;
	m->unit = (char *)unit;
	res->metrics[res->nmetrics++] = m;
	return m;
}

static Otlp__HistogramDataPoint *histogram_point(struct request *r,
						  const struct metrics_view_instrument *in,
						  const struct metric_point *p)
{
	Otlp__HistogramDataPoint *dp = arena_alloc(&r->arena, sizeof(*dp));

	if (!dp)
		return NULL;
	otlp__histogram_data_point__init(dp);
	if (!series_kv(&r->arena, p->series, &dp->attributes, &dp->n_attributes))
		return NULL;
	dp->start_time_unix_nano = start_of(r->view, in->delta);
	dp->time_unix_nano = r->view->time_ns;
	dp->count = p->count;
	dp->sum_present_case = OTLP__HISTOGRAM_DATA_POINT__SUM_PRESENT_SUM;
	dp->sum = p->sum;
	dp->n_bucket_counts = METRICS_BUCKETS + 1;
	dp->bucket_counts = (uint64_t *)p->buckets;
	dp->n_explicit_bounds = METRICS_BUCKETS;
	dp->explicit_bounds = (double *)metrics_bounds;
	return dp;
}

static Otlp__NumberDataPoint *number_point(struct request *r, uint64_t start_ns, int64_t value)
{
	Otlp__NumberDataPoint *dp = arena_alloc(&r->arena, sizeof(*dp));

	if (!dp)
		return NULL;
	otlp__number_data_point__init(dp);
	dp->start_time_unix_nano = start_ns;
	dp->time_unix_nano = r->view->time_ns;
	dp->value_case = OTLP__NUMBER_DATA_POINT__VALUE_AS_INT;
	dp->as_int = value;
	return dp;
}

/* A histogram's points of one resource: `n` points, their numbers in
 * `which`. */
static int histogram_metric(struct request *r, Otlp__Metric *m,
			    const struct metrics_view_instrument *in, const uint32_t *which,
			    size_t n)
{
	Otlp__Histogram *h = arena_alloc(&r->arena, sizeof(*h));
	Otlp__HistogramDataPoint **dps = arena_alloc(&r->arena, n * sizeof(*dps));

	if (!h || !dps)
		return -ENOMEM;
	otlp__histogram__init(h);
	for (size_t i = 0; i < n; i++)
		if (!(dps[i] = histogram_point(r, in, &in->points.point[which[i]])))
			return -ENOMEM;
	h->data_points = dps;
	h->n_data_points = n;
	h->aggregation_temporality = temporality(in->delta);
	m->data_case = OTLP__METRIC__DATA_HISTOGRAM;
	m->histogram = h;
	return 0;
}

/* Up-down counters: a non-monotonic sum, always cumulative. */
static int updown_metric(struct request *r, Otlp__Metric *m,
			 const struct metrics_view_instrument *in, const uint32_t *which, size_t n)
{
	Otlp__Sum *sum = arena_alloc(&r->arena, sizeof(*sum));
	Otlp__NumberDataPoint **dps = arena_alloc(&r->arena, n * sizeof(*dps));

	if (!sum || !dps)
		return -ENOMEM;
	otlp__sum__init(sum);
	for (size_t i = 0; i < n; i++) {
		const struct metric_point *pt = &in->points.point[which[i]];

		dps[i] = number_point(r, start_of(r->view, false), pt->value);
		if (!dps[i] || !series_kv(&r->arena, pt->series, &dps[i]->attributes,
					  &dps[i]->n_attributes))
			return -ENOMEM;
	}
	sum->data_points = dps;
	sum->n_data_points = n;
	sum->aggregation_temporality = temporality(false);
	m->data_case = OTLP__METRIC__DATA_SUM;
	m->sum = sum;
	return 0;
}

/* One Metric per resource with points of this instrument. */
static int instrument_metrics(struct request *r, unsigned which)
{
	const struct metrics_view_instrument *in = &r->view->inst[which];
	const uint32_t *order = r->order[which];
	size_t from = 0;

	while (from < in->points.n) {
		uint32_t res = r->res_of[which][order[from]];
		size_t to = from + 1;
		Otlp__Metric *m;
		int err;

		while (to < in->points.n && r->res_of[which][order[to]] == res)
			to++;
		m = new_metric(r, &r->res[res], in->desc->name, in->desc->help, in->desc->unit);
		if (!m)
			return -ENOMEM;
		err = in->desc->kind == METRIC_KIND_HISTOGRAM
			      ? histogram_metric(r, m, in, order + from, to - from)
			      : updown_metric(r, m, in, order + from, to - from);
		if (err)
			return err;
		r->npoints += to - from;
		from = to;
	}
	return 0;
}

/* One of sonde's own metrics: a single point. */
struct self_point {
	const char *name, *help, *unit;
	enum { SELF_COUNTER, SELF_UPDOWN, SELF_GAUGE } kind;
	bool delta;     /* counters */
	bool is_double;
	int64_t as_int;
	double as_double;
};

static int self_metric(struct request *r, const struct self_point *sp)
{
	Otlp__Metric *m = new_metric(r, &r->res[r->nres - 1], sp->name, sp->help, sp->unit);
	Otlp__NumberDataPoint **dp = arena_alloc(&r->arena, sizeof(*dp));
	Otlp__Sum *sum = arena_alloc(&r->arena, sizeof(*sum));
	Otlp__Gauge *gauge = arena_alloc(&r->arena, sizeof(*gauge));

	if (!m || !dp || !sum || !gauge ||
	    !(*dp = number_point(r, start_of(r->view, sp->delta), sp->as_int)))
		return -ENOMEM;
	if (sp->is_double) {
		(*dp)->value_case = OTLP__NUMBER_DATA_POINT__VALUE_AS_DOUBLE;
		(*dp)->as_double = sp->as_double;
	}
	r->npoints++;
	if (sp->kind == SELF_GAUGE) {
		otlp__gauge__init(gauge);
		gauge->data_points = dp;
		gauge->n_data_points = 1;
		m->data_case = OTLP__METRIC__DATA_GAUGE;
		m->gauge = gauge;
		return 0;
	}
	otlp__sum__init(sum);
	sum->data_points = dp;
	sum->n_data_points = 1;
	sum->is_monotonic = sp->kind == SELF_COUNTER;
	sum->aggregation_temporality = temporality(sp->delta);
	m->data_case = OTLP__METRIC__DATA_SUM;
	m->sum = sum;
	return 0;
}

static int self_metrics(struct request *r)
{
	const struct metrics_view *v = r->view;
	struct self_point cpu = { "process.cpu.time", "CPU time sonde used, user and system.", "s",
				  SELF_COUNTER, false, true, 0, v->usage.cpu_seconds };
	struct self_point rss = { "process.memory.usage", "sonde's resident memory.", "By",
				  SELF_UPDOWN, false, false, (int64_t)v->usage.rss_bytes, 0 };
	int err = 0;

	for (size_t i = 0; i < v->nself && !err; i++) {
		const struct counter_desc *d = v->self[i].desc;
		bool total = d->kind == COUNTER_TOTAL;
		struct self_point sp = { .help = d->help, .unit = "1",
					 .kind = total ? SELF_COUNTER : SELF_GAUGE,
					 .delta = total && v->self_delta,
					 .as_int = (int64_t)v->self[i].value };
		char *name = arena_alloc(&r->arena, strlen(d->name) + sizeof("sonde."));

		if (!name)
			return -ENOMEM;
		strcpy(name, "sonde.");
		strcat(name, d->name);
		sp.name = name;
		err = self_metric(r, &sp);
	}
	if (!err)
		err = self_metric(r, &cpu);
	if (!err)
		err = self_metric(r, &rss);
	return err;
}

/* ---- the request ------------------------------------------------------------------ */

static Otlp__ResourceMetrics *resource_message(struct request *r, const struct resource *res,
					       Otlp__InstrumentationScope *scope)
{
	Otlp__ResourceMetrics *rm = arena_alloc(&r->arena, sizeof(*rm));
	Otlp__Resource *resource = arena_alloc(&r->arena, sizeof(*resource));
	Otlp__ScopeMetrics *sm = arena_alloc(&r->arena, sizeof(*sm));
	Otlp__ScopeMetrics **sm_ptr = arena_alloc(&r->arena, sizeof(*sm_ptr));
	struct otlp_kv_list attrs = { 0 };
	struct attr_sink sink = otlp_kv_sink(&attrs);

	if (!rm || !resource || !sm || !sm_ptr || !otlp_kv_init(&attrs, &r->arena, RESOURCE_ATTRS))
		return NULL;
	sink.str(sink.ctx, "service.name", res->service);
	attr_put_str(&sink, "host.name", r->view->host_name);
	sink.str(sink.ctx, "telemetry.sdk.name", "sonde");
	sink.str(sink.ctx, "telemetry.sdk.version", SONDE_VERSION);
	if (attrs.failed)
		return NULL;
	otlp__resource__init(resource);
	resource->attributes = attrs.kv;
	resource->n_attributes = attrs.n;
	otlp__scope_metrics__init(sm);
	sm->scope = scope;
	sm->metrics = res->metrics;
	sm->n_metrics = res->nmetrics;
	*sm_ptr = sm;
	otlp__resource_metrics__init(rm);
	rm->resource = resource;
	rm->scope_metrics = sm_ptr;
	rm->n_scope_metrics = 1;
	return rm;
}

static int pack(struct request *r, struct bytes *out)
{
	Otlp__ExportMetricsServiceRequest req = OTLP__EXPORT_METRICS_SERVICE_REQUEST__INIT;
	Otlp__InstrumentationScope scope = OTLP__INSTRUMENTATION_SCOPE__INIT;
	Otlp__ResourceMetrics **rms = arena_alloc(&r->arena, r->nres * sizeof(*rms));
	size_t len;

	if (!rms)
		return -ENOMEM;
	scope.name = SCOPE_NAME;
	scope.version = SONDE_VERSION;
	for (size_t i = 0; i < r->nres; i++) {
		if (!r->res[i].nmetrics)
			continue;
		rms[req.n_resource_metrics] = resource_message(r, &r->res[i], &scope);
		if (!rms[req.n_resource_metrics++])
			return -ENOMEM;
	}
	req.resource_metrics = rms;
	len = otlp__export_metrics_service_request__get_packed_size(&req);
	out->used = 0;
	if (bytes_reserve(out, OTLP_ENCODE_HEADROOM + len))
		return -ENOMEM;
	out->used = OTLP_ENCODE_HEADROOM +
		    otlp__export_metrics_service_request__pack(&req, out->data + OTLP_ENCODE_HEADROOM);
	return 0;
}

int otlp_metrics_encode(const struct metrics_view *v, struct bytes *out, size_t *npoints)
{
	struct request r = { .view = v };
	int err = make_resources(&r);

	if (!err)
		err = assign_points(&r);
	for (unsigned i = 0; i < METRICS_INSTRUMENTS && !err; i++)
		err = instrument_metrics(&r, i);
	if (!err)
		err = self_metrics(&r);
	if (!err)
		err = pack(&r, out);
	*npoints = r.npoints;
	arena_free(&r.arena);
	return err;
}
