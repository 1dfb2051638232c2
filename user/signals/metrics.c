#include "metrics.h"

#include "clock.h"
#include "hash.h"
#include "semconv.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#define METRICS_DESC(...) COUNTER_DESC(struct metrics_stats, __VA_ARGS__)
const struct counter_desc metrics_counters[] = { METRICS_COUNTERS(METRICS_DESC) };
const size_t metrics_counter_count = sizeof(metrics_counters) / sizeof(metrics_counters[0]);

/* The buckets the semantic conventions advise for request durations. */
const double metrics_bounds[METRICS_BUCKETS] = {
	0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10,
};

const struct metric_desc metric_descs[METRICS_INSTRUMENTS] = {
	[METRIC_HTTP_SERVER_DURATION] = { "http.server.request.duration",
					  "http_server_request_duration_seconds", "s",
					  "Duration of HTTP server requests.",
					  METRIC_KIND_HISTOGRAM },
	[METRIC_HTTP_CLIENT_DURATION] = { "http.client.request.duration",
					  "http_client_request_duration_seconds", "s",
					  "Duration of HTTP client requests.",
					  METRIC_KIND_HISTOGRAM },
	[METRIC_DB_CLIENT_DURATION] = { "db.client.operation.duration",
					"db_client_operation_duration_seconds", "s",
					"Duration of database client operations.",
					METRIC_KIND_HISTOGRAM },
	[METRIC_HTTP_SERVER_ACTIVE] = { "http.server.active_requests",
					"http_server_active_requests", "{request}",
					"Number of active HTTP server requests.",
					METRIC_KIND_UPDOWN },
};

/* A series: its counts first (the counting thread's writes), then what
 * tells it from the others: its attributes, whose strings are copied into
 * text, after them. */
struct metric_series {
	uint32_t seq; /* odd while the counting thread updates the counts */
	uint32_t index;
	uint64_t buckets[METRICS_BUCKETS + 1]; /* per bucket, not cumulative */
	double sum;
	uint64_t count;
	int64_t value; /* up-down counters */
	uint64_t hash;
	const char *service; /* attr[0]'s value; NULL for the overflow series */
	unsigned nattrs;
	struct metric_attr attr[];
};

/* One instrument: its series (published up to nseries, read by
 * collectors with acquire) and their index (the counting thread's only). */
struct instrument {
	struct metric_series **series; /* limit + 1: the overflow series is the last */
	uint32_t nseries;
	uint32_t *index;       /* open addressing: series number + 1; 0 free */
	uint32_t index_mask;
	/* The series last counted in: consecutive measurements often share
	 * one (a route called again and again), and comparing its attributes
	 * costs less than hashing them and probing. */
	struct metric_series *last;
};

/* One thread counts (the agent's main loop: exchanges, requests, sonde's
 * own counters); exporters collect from their own threads. Counting takes
 * no lock: each series' counts are guarded by a sequence number (a
 * seqlock with one writer), new series are published by a release store
 * of the series count, and sonde's own counters, set once a second, under
 * `self_lock`. */
struct metrics {
	pthread_mutex_t self_lock;
	uint32_t limit;
	uint64_t start_unix_ns;
	struct instrument inst[METRICS_INSTRUMENTS];
	struct metrics_stats stats;
	struct self_value self[METRICS_SELF_MAX];
	size_t nself;
};

/* ---- attributes -------------------------------------------------------------- */

static bool is_text(const struct metric_attr *a)
{
	return a->type == METRIC_ATTR_STR || a->type == METRIC_ATTR_CONST;
}

/* The same bits are the same value, a number's or a constant's; texts
 * that are not at one address are compared as strings: a copy and a
 * constant of the same text are equal. */
static bool attr_equal(const struct metric_attr *a, const struct metric_attr *b)
{
	if (a->key != b->key)
		return false;
	if (a->num == b->num && a->type == b->type)
		return true;
	return is_text(a) && is_text(b) && strcmp(a->str, b->str) == 0;
}

static bool is_series_of(const struct metric_series *s, const struct metric_attrs *l)
{
	if (s->nattrs != l->n)
		return false;
	for (unsigned i = 0; i < l->n; i++)
		if (!attr_equal(&l->attr[i], &s->attr[i]))
			return false;
	return true;
}

void metric_series_attributes(const struct metric_series *s, const struct attr_sink *sink)
{
	for (unsigned i = 0; i < s->nattrs; i++) {
		const struct metric_attr *a = &s->attr[i];

		if (is_text(a))
			sink->str(sink->ctx, a->key, a->str);
		else if (a->type == METRIC_ATTR_I64)
			sink->i64(sink->ctx, a->key, a->num);
		else
			sink->boolean(sink->ctx, a->key, a->num != 0);
	}
}

const char *metric_series_service(const struct metric_series *s)
{
	return s->service;
}

/* ---- keys -------------------------------------------------------------------- */

/* An attribute list laid out in bytes (per attribute its key's address
 * and its value: a string and NUL, or 8 bytes), to be hashed: only when a
 * measurement is not in the series last counted in. */
struct key_buf {
	size_t len;
	bool cut;
	char out[METRICS_ATTRS_MAX];
};

static void key_put(struct key_buf *k, const void *data, size_t n)
{
	if (k->len + n > sizeof(k->out)) {
		k->cut = true;
		return;
	}
	memcpy(k->out + k->len, data, n);
	k->len += n;
}

static void key_of(const struct metric_attrs *l, struct key_buf *k)
{
	k->len = 0;
	k->cut = false;
	for (unsigned i = 0; i < l->n; i++) {
		const struct metric_attr *a = &l->attr[i];

		key_put(k, &a->key, sizeof(a->key));
		if (is_text(a))
			key_put(k, a->str, strlen(a->str) + 1);
		else
			key_put(k, &a->num, sizeof(a->num));
	}
}

/* ---- series ---------------------------------------------------------------- */

static const char *service_of(const struct proc_info *proc)
{
	return proc && proc->service_name[0] ? proc->service_name : "unknown_service";
}

/* A series of these attributes, its strings copied (constants are kept by
 * address): the key's length (every string and its NUL, and more) is room
 * enough for them. */
static struct metric_series *new_series(const struct metric_attrs *l, const struct key_buf *k,
					uint64_t hash)
{
	size_t attrs_size = l->n * sizeof(struct metric_attr);
	struct metric_series *s = calloc(1, sizeof(*s) + attrs_size + k->len);
	char *text;

	if (!s)
		return NULL;
	text = (char *)s->attr + attrs_size;
	memcpy(s->attr, l->attr, attrs_size);
	for (unsigned i = 0; i < l->n; i++) {
		struct metric_attr *a = &s->attr[i];
		size_t len;

		if (a->type != METRIC_ATTR_STR)
			continue;
		len = strlen(a->str) + 1;
		memcpy(text, a->str, len);
		a->str = text;
		text += len;
	}
	s->nattrs = l->n;
	s->hash = hash;
	return s;
}

/* The series of these attributes, made if there is room; NULL otherwise. */
static struct metric_series *find_series(struct metrics *m, struct instrument *in,
					 const struct metric_attrs *l, const struct key_buf *k)
{
	uint64_t hash = hash_bytes(0, k->out, k->len);
	uint32_t slot = (uint32_t)hash & in->index_mask;
	struct metric_series *s;

	for (; in->index[slot]; slot = (slot + 1) & in->index_mask) {
		s = in->series[in->index[slot] - 1];
		if (s->hash == hash && is_series_of(s, l))
			return s;
	}
	if (in->nseries == m->limit)
		return NULL;
	s = new_series(l, k, hash);
	if (!s)
		return NULL;
	s->service = s->attr[0].str; /* service.name is the first attribute */
	s->index = in->nseries;
	in->series[in->nseries] = s;
	__atomic_store_n(&in->nseries, in->nseries + 1, __ATOMIC_RELEASE);
	in->index[slot] = in->nseries;
	m->stats.series++;
	return s;
}

static struct metric_series *overflow_series(struct metrics *m, struct instrument *in)
{
	struct metric_series **s = &in->series[m->limit];
	struct metric_attrs l = { 0 };
	struct key_buf k;
	struct metric_series *made;

	if (*s)
		return *s;
	metric_attr_put(&l, (struct metric_attr){ .key = "otel.metric.overflow", .num = 1,
						  .type = METRIC_ATTR_BOOL });
	key_of(&l, &k);
	made = new_series(&l, &k, 0);
	if (made) {
		made->index = m->limit;
		__atomic_store_n(s, made, __ATOMIC_RELEASE);
		m->stats.series++;
	}
	return made;
}

/* The series a measurement is counted in; NULL only when memory ran out. */
static struct metric_series *series_for(struct metrics *m, unsigned which,
					const struct metric_attrs *l)
{
	struct instrument *in = &m->inst[which];
	struct metric_series *s = NULL;
	struct key_buf k;

	if (in->last && is_series_of(in->last, l))
		return in->last;
	key_of(l, &k);
	if (l->cut || k.cut) {
		m->stats.attrs_cut++;
	} else {
		s = find_series(m, in, l, &k);
		in->last = s;
	}
	if (!s) {
		m->stats.overflow++;
		s = overflow_series(m, in);
	}
	return s;
}

/* A measurement's attributes begin with its service's name. */
static void attrs_start(struct metric_attrs *l, const struct proc_info *proc)
{
	l->n = 0;
	l->cut = false;
	metric_attr_str(l, "service.name", service_of(proc));
}

/* The counting side of a series' seqlock: the counts may be read while
 * they change, and a collector that saw the number change (or odd) reads
 * them again. */
static void write_begin(struct metric_series *s)
{
	__atomic_store_n(&s->seq, s->seq + 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
}

static void write_end(struct metric_series *s)
{
	__atomic_store_n(&s->seq, s->seq + 1, __ATOMIC_RELEASE);
}

unsigned metrics_bucket_of(double seconds)
{
	unsigned i = 0;

	while (i < METRICS_BUCKETS && seconds > metrics_bounds[i])
		i++;
	return i;
}

void metrics_record(void *ctx, const struct exchange_summary *x)
{
	struct metrics *m = ctx;
	const struct proto_ops *ops = proto_find(x->span->proto);
	double seconds = x->end_ns > x->start_ns ? (double)(x->end_ns - x->start_ns) / 1e9 : 0;
	struct metric_attrs attrs;
	struct metric_series *s;

	if (!ops)
		return;
	attrs_start(&attrs, x->span->proc);
	ops->metric_attributes(x->span, &attrs);
	s = series_for(m, ops->metric(x->span), &attrs);
	if (!s)
		return;
	write_begin(s);
	s->buckets[metrics_bucket_of(seconds)]++;
	s->sum += seconds;
	s->count++;
	write_end(s);
}

void *metrics_request_began(void *ctx, const struct request_began *r)
{
	struct metrics *m = ctx;
	struct metric_attrs attrs;
	struct metric_series *s;

	attrs_start(&attrs, r->proc);
	r->ops->active_attributes(r->exchange, &attrs);
	s = series_for(m, METRIC_HTTP_SERVER_ACTIVE, &attrs);
	if (s) {
		write_begin(s);
		s->value++;
		write_end(s);
	}
	return s;
}

void metrics_request_ended(void *ctx, void *handle)
{
	struct metric_series *s = handle;

	write_begin(s);
	s->value--;
	write_end(s);
}

/* ---- collection ---------------------------------------------------------------- */

void metrics_set_self(struct metrics *m, const struct counter_group *groups, size_t ngroups)
{
	size_t n = 0;

	pthread_mutex_lock(&m->self_lock);
	for (size_t g = 0; g < ngroups; g++)
		for (size_t i = 0; i < groups[g].n && n < METRICS_SELF_MAX; i++, n++) {
			m->self[n].desc = &groups[g].descs[i];
			m->self[n].value = counter_value(&groups[g], i);
		}
	m->nself = n;
	pthread_mutex_unlock(&m->self_lock);
}

size_t metrics_collect_self(struct metrics *m, struct self_value *out)
{
	size_t n;

	pthread_mutex_lock(&m->self_lock);
	n = m->nself;
	memcpy(out, m->self, n * sizeof(out[0]));
	pthread_mutex_unlock(&m->self_lock);
	return n;
}

/* The collecting side of the seqlock: the copy counts only if no update
 * began or ended while it was taken. */
static void take_point(struct metric_point *p, const struct metric_series *s)
{
	uint32_t before, after;

	p->series = s;
	p->index = s->index;
	for (;;) {
		before = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
		if (before & 1) {
			sched_yield(); /* the counting thread may have been preempted mid-update */
			continue;
		}
		memcpy(p->buckets, s->buckets, sizeof(p->buckets));
		p->sum = s->sum;
		p->count = s->count;
		p->value = s->value;
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		after = __atomic_load_n(&s->seq, __ATOMIC_RELAXED);
		if (before == after)
			return;
	}
}

static int points_reserve(struct metric_points *out, size_t n)
{
	struct metric_point *grown;

	if (n <= out->cap)
		return 0;
	grown = realloc(out->point, n * sizeof(*grown));
	if (!grown)
		return -ENOMEM;
	out->point = grown;
	out->cap = n;
	return 0;
}

int metrics_collect(struct metrics *m, unsigned instrument, struct metric_points *out)
{
	struct instrument *in = &m->inst[instrument];
	struct metric_series *overflow = __atomic_load_n(&in->series[m->limit], __ATOMIC_ACQUIRE);
	uint32_t n = __atomic_load_n(&in->nseries, __ATOMIC_ACQUIRE);

	out->n = 0;
	if (points_reserve(out, n + 1))
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++)
		take_point(&out->point[i], in->series[i]);
	if (overflow)
		take_point(&out->point[n], overflow);
	out->n = n + (overflow != NULL);
	return 0;
}

void metric_points_free(struct metric_points *p)
{
	free(p->point);
	*p = (struct metric_points){ 0 };
}

uint64_t metrics_start_unix_ns(const struct metrics *m)
{
	return m->start_unix_ns;
}

void metrics_count_scrape(struct metrics *m)
{
	__atomic_add_fetch(&m->stats.scrapes, 1, __ATOMIC_RELAXED);
}

void metrics_count_export(struct metrics *m, bool delivered)
{
	__atomic_add_fetch(delivered ? &m->stats.otlp_exports : &m->stats.otlp_failed, 1,
			   __ATOMIC_RELAXED);
}

/* Called by the counting thread: its own counters need no ordering. */
void metrics_get_stats(struct metrics *m, struct metrics_stats *out)
{
	*out = m->stats;
	out->scrapes = __atomic_load_n(&m->stats.scrapes, __ATOMIC_RELAXED);
	out->otlp_exports = __atomic_load_n(&m->stats.otlp_exports, __ATOMIC_RELAXED);
	out->otlp_failed = __atomic_load_n(&m->stats.otlp_failed, __ATOMIC_RELAXED);
}

/* ---- lifetime -------------------------------------------------------------------- */

static int instrument_init(struct instrument *in, uint32_t limit)
{
	uint32_t slots = 1;

	while (slots < 2 * limit)
		slots <<= 1;
	in->series = calloc((size_t)limit + 1, sizeof(*in->series));
	in->index = calloc(slots, sizeof(*in->index));
	in->index_mask = slots - 1;
	return in->series && in->index ? 0 : -ENOMEM;
}

struct metrics *metrics_new(const struct metrics_opts *opts)
{
	struct metrics *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->limit = opts->cardinality_limit ? opts->cardinality_limit : 2000;
	m->start_unix_ns = realtime_now_ns();
	pthread_mutex_init(&m->self_lock, NULL);
	for (size_t i = 0; i < METRICS_INSTRUMENTS; i++) {
		if (instrument_init(&m->inst[i], m->limit)) {
			metrics_free(m);
			return NULL;
		}
	}
	return m;
}

void metrics_free(struct metrics *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < METRICS_INSTRUMENTS; i++) {
		struct instrument *in = &m->inst[i];

		for (uint32_t j = 0; in->series && j <= m->limit; j++)
			free(in->series[j]);
		free(in->series);
		free(in->index);
	}
	pthread_mutex_destroy(&m->self_lock);
	free(m);
}
