#include "metrics.h"

#include "clock.h"
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

/* Attribute types in a series' packed attributes. */
enum { PACK_STR = 's', PACK_I64 = 'i', PACK_BOOL = 'b' };

/* A series is found by its key (each attribute's key pointer, a constant
 * of its protocol's, and its raw value: cheap to build for every
 * measurement) and exported with its attributes, packed once when it is
 * made: per attribute its type, its key and NUL, its value (a string and
 * NUL, 8 bytes of int64, or 1 byte of bool). */
struct metric_series {
	uint32_t seq; /* odd while the counting thread updates the counts */
	uint32_t index;
	uint64_t hash;
	uint32_t key_len;
	uint32_t attrs_len;
	const char *service; /* in attrs; NULL for the overflow series */
	char *attrs;
	uint64_t buckets[METRICS_BUCKETS + 1]; /* per bucket, not cumulative */
	double sum;
	uint64_t count;
	int64_t value; /* up-down counters */
	char key[];
};

/* One instrument: its series (published up to nseries, read by
 * collectors with acquire) and their index (the counting thread's only). */
struct instrument {
	struct metric_series **series; /* limit + 1: the overflow series is the last */
	uint32_t nseries;
	uint32_t *index;       /* open addressing: series number + 1; 0 free */
	uint32_t index_mask;
	/* The series last counted in: consecutive measurements often share
	 * one (a route called again and again), and comparing its key costs
	 * less than hashing it and probing. */
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

/* ---- keys ------------------------------------------------------------------ */

/* A series' key, or its packed attributes, being built. Built for every
 * measurement: start one with key_start, not an initializer, which would
 * clear the whole buffer each time. */
struct key_buf {
	size_t len;
	bool cut;
	char out[METRICS_ATTRS_MAX];
};

static void key_start(struct key_buf *k)
{
	k->len = 0;
	k->cut = false;
}

static void key_put(struct key_buf *k, const void *data, size_t n)
{
	if (k->len + n > sizeof(k->out)) {
		k->cut = true;
		return;
	}
	memcpy(k->out + k->len, data, n);
	k->len += n;
}

static void key_str(void *ctx, const char *key, const char *value)
{
	size_t len = strlen(value);
	uint16_t len16 = (uint16_t)len;

	key_put(ctx, &key, sizeof(key));
	key_put(ctx, &len16, sizeof(len16));
	key_put(ctx, value, len);
}

static void key_i64(void *ctx, const char *key, int64_t value)
{
	key_put(ctx, &key, sizeof(key));
	key_put(ctx, &value, sizeof(value));
}

static void key_bool(void *ctx, const char *key, bool value)
{
	key_put(ctx, &key, sizeof(key));
	key_put(ctx, &value, sizeof(value));
}

/* A key compared, as it is written, against the key of the series last
 * counted in: the common case, and cheaper than writing the key out and
 * comparing it after. */
struct key_match {
	const char *at, *end;
	bool same;
};

static void match_put(struct key_match *m, const void *data, size_t n)
{
	if (!m->same)
		return;
	if ((size_t)(m->end - m->at) < n || memcmp(m->at, data, n) != 0) {
		m->same = false;
		return;
	}
	m->at += n;
}

/* The stored length first, so that the value is read once: it matches
 * when its first len bytes do and it ends there. */
static void match_str(void *ctx, const char *key, const char *value)
{
	struct key_match *m = ctx;
	uint16_t len;

	match_put(m, &key, sizeof(key));
	if (!m->same || (size_t)(m->end - m->at) < sizeof(len)) {
		m->same = false;
		return;
	}
	memcpy(&len, m->at, sizeof(len));
	m->at += sizeof(len);
	if ((size_t)(m->end - m->at) < len || strncmp(value, m->at, len) != 0 || value[len]) {
		m->same = false;
		return;
	}
	m->at += len;
}

static void match_i64(void *ctx, const char *key, int64_t value)
{
	match_put(ctx, &key, sizeof(key));
	match_put(ctx, &value, sizeof(value));
}

static void match_bool(void *ctx, const char *key, bool value)
{
	match_put(ctx, &key, sizeof(key));
	match_put(ctx, &value, sizeof(value));
}

static void pack_head(struct key_buf *k, char type, const char *key)
{
	key_put(k, &type, 1);
	key_put(k, key, strlen(key) + 1);
}

static void pack_str(void *ctx, const char *key, const char *value)
{
	pack_head(ctx, PACK_STR, key);
	key_put(ctx, value, strlen(value) + 1);
}

static void pack_i64(void *ctx, const char *key, int64_t value)
{
	pack_head(ctx, PACK_I64, key);
	key_put(ctx, &value, sizeof(value));
}

static void pack_bool(void *ctx, const char *key, bool value)
{
	pack_head(ctx, PACK_BOOL, key);
	key_put(ctx, &value, 1);
}

void metric_series_attributes(const struct metric_series *s, const struct attr_sink *sink)
{
	const char *p = s->attrs, *end = s->attrs + s->attrs_len;

	while (p < end) {
		char type = *p++;
		const char *key = p;
		int64_t number;

		p += strlen(key) + 1;
		if (type == PACK_STR) {
			sink->str(sink->ctx, key, p);
			p += strlen(p) + 1;
		} else if (type == PACK_I64) {
			memcpy(&number, p, sizeof(number));
			sink->i64(sink->ctx, key, number);
			p += sizeof(number);
		} else {
			sink->boolean(sink->ctx, key, *p != 0);
			p++;
		}
	}
}

const char *metric_series_service(const struct metric_series *s)
{
	return s->service;
}

static void hash_step(uint64_t *a, uint64_t *b, const char *block)
{
	uint64_t w[2];

	memcpy(w, block, 16);
	*a = (*a ^ w[0]) * 0xff51afd7ed558ccdull;
	*b = (*b ^ w[1]) * 0xc4ceb9fe1a85ec53ull;
	*a ^= *a >> 32;
	*b ^= *b >> 29;
}

/* Sixteen bytes at a time in two independent lanes, so that the
 * multiplies of one lane overlap the other's; the last block is the
 * key's last sixteen bytes, overlapping the one before (the length is
 * hashed in). A key is hashed for every measurement. */
static uint64_t hash_of(const char *s, size_t n)
{
	uint64_t a = 0x9e3779b97f4a7c15ull ^ n, b = 0xc2b2ae3d27d4eb4full;
	char tail[16] = { 0 };
	size_t i = 0;

	if (n < 16) {
		memcpy(tail, s, n);
		hash_step(&a, &b, tail);
	} else {
		for (; i + 16 < n; i += 16)
			hash_step(&a, &b, s + i);
		hash_step(&a, &b, s + n - 16);
	}
	a ^= (b << 31 | b >> 33) * 0x9e3779b97f4a7c15ull;
	return a ^ (a >> 29);
}

/* ---- series ---------------------------------------------------------------- */

static const char *service_of(const struct proc_info *proc)
{
	return proc && proc->service_name[0] ? proc->service_name : "unknown_service";
}

/* What a measurement is counted under: its service and the attributes its
 * protocol gives, written to a sink. */
struct measurement {
	const char *service;
	void (*attributes)(const void *subject, const struct attr_sink *sink);
	const void *subject;
};

static void measurement_attributes(const struct measurement *w, const struct attr_sink *sink)
{
	sink->str(sink->ctx, "service.name", w->service);
	w->attributes(w->subject, sink);
}

static struct metric_series *new_series(const struct key_buf *k, uint64_t hash,
					const struct key_buf *attrs)
{
	struct metric_series *s = calloc(1, sizeof(*s) + k->len);

	if (!s)
		return NULL;
	s->attrs = malloc(attrs->len);
	if (!s->attrs) {
		free(s);
		return NULL;
	}
	memcpy(s->attrs, attrs->out, attrs->len);
	s->attrs_len = (uint32_t)attrs->len;
	s->hash = hash;
	s->key_len = (uint32_t)k->len;
	memcpy(s->key, k->out, k->len);
	return s;
}

/* The series of this key, made if there is room; NULL otherwise. */
static struct metric_series *find_series(struct metrics *m, struct instrument *in,
					 const struct key_buf *k, const struct measurement *w)
{
	uint64_t hash = hash_of(k->out, k->len);
	uint32_t slot = (uint32_t)hash & in->index_mask;
	struct key_buf attrs;
	struct attr_sink sink = { pack_str, pack_i64, pack_bool, &attrs };
	struct metric_series *s;

	for (; in->index[slot]; slot = (slot + 1) & in->index_mask) {
		s = in->series[in->index[slot] - 1];
		if (s->hash == hash && s->key_len == k->len && memcmp(s->key, k->out, k->len) == 0)
			return s;
	}
	if (in->nseries == m->limit)
		return NULL;
	key_start(&attrs);
	measurement_attributes(w, &sink);
	if (attrs.cut) {
		m->stats.attrs_cut++;
		return NULL;
	}
	s = new_series(k, hash, &attrs);
	if (!s)
		return NULL;
	/* service.name is the first attribute: its value follows its type
	 * and key. */
	s->service = s->attrs + 1 + sizeof("service.name");
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
	struct key_buf none, attrs;
	struct metric_series *made;

	if (*s)
		return *s;
	key_start(&none);
	key_start(&attrs);
	pack_bool(&attrs, "otel.metric.overflow", true);
	made = new_series(&none, 0, &attrs);
	if (made) {
		made->index = m->limit;
		__atomic_store_n(s, made, __ATOMIC_RELEASE);
		m->stats.series++;
	}
	return made;
}

static bool is_last_series(const struct instrument *in, const struct measurement *w)
{
	struct key_match match;
	struct attr_sink sink = { match_str, match_i64, match_bool, &match };

	if (!in->last)
		return false;
	match.at = in->last->key;
	match.end = in->last->key + in->last->key_len;
	match.same = true;
	measurement_attributes(w, &sink);
	return match.same && match.at == match.end;
}

/* The series a measurement is counted in; NULL only when memory ran out. */
static struct metric_series *series_for(struct metrics *m, unsigned which,
					const struct measurement *w)
{
	struct instrument *in = &m->inst[which];
	struct key_buf k;
	struct attr_sink sink = { key_str, key_i64, key_bool, &k };
	struct metric_series *s = NULL;

	if (is_last_series(in, w))
		return in->last;
	key_start(&k);
	measurement_attributes(w, &sink);
	if (k.cut) {
		m->stats.attrs_cut++;
	} else {
		s = find_series(m, in, &k, w);
		in->last = s;
	}
	if (!s) {
		m->stats.overflow++;
		s = overflow_series(m, in);
	}
	return s;
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

static void span_metric_attributes(const void *span, const struct attr_sink *sink)
{
	const struct span *s = span;

	proto_find(s->proto)->metric_attributes(s, sink);
}

void metrics_record(void *ctx, const struct exchange_summary *x)
{
	struct metrics *m = ctx;
	const struct proto_ops *ops = proto_find(x->span->proto);
	double seconds = x->end_ns > x->start_ns ? (double)(x->end_ns - x->start_ns) / 1e9 : 0;
	struct measurement w = { service_of(x->span->proc), span_metric_attributes, x->span };
	struct metric_series *s;

	if (!ops)
		return;
	s = series_for(m, ops->metric(x->span), &w);
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
	struct measurement w = { service_of(r->proc), r->ops->active_attributes, r->exchange };
	struct metric_series *s;

	s = series_for(m, METRIC_HTTP_SERVER_ACTIVE, &w);
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

		for (uint32_t j = 0; in->series && j <= m->limit; j++) {
			if (in->series[j])
				free(in->series[j]->attrs);
			free(in->series[j]);
		}
		free(in->series);
		free(in->index);
	}
	pthread_mutex_destroy(&m->self_lock);
	free(m);
}
