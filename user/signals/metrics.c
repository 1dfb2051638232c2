#include "metrics.h"

#include "procinfo.h"
#include "proto.h"
#include "semconv.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define METRICS_DESC(...) COUNTER_DESC(struct metrics_stats, __VA_ARGS__)
const struct counter_desc metrics_counters[] = { METRICS_COUNTERS(METRICS_DESC) };
const size_t metrics_counter_count = sizeof(metrics_counters) / sizeof(metrics_counters[0]);

/* The buckets the semantic conventions advise for request durations. */
static const double bounds[METRICS_BUCKETS] = {
	0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10,
};
static const char *const bound_labels[METRICS_BUCKETS] = {
	"0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25",
	"0.5",   "0.75", "1",     "2.5",  "5",     "7.5", "10",
};

static const char overflow_labels[] = "otel_metric_overflow=\"true\"";

/* A series is found by its key (each attribute's key pointer, a constant
 * of its protocol's, and its raw value: cheap to build for every exchange)
 * and written with its labels (translated and escaped once, when it is
 * made). */
struct series {
	uint64_t hash;
	uint32_t key_len;
	uint32_t labels_len;
	char *labels; /* name="value",... in exposition form */
	uint64_t buckets[METRICS_BUCKETS + 1]; /* per bucket, not cumulative */
	double sum;
	uint64_t count;
	char key[];
};

/* One histogram: its series (published up to nseries) and their index. */
struct histogram {
	const char *prom_name; /* as Prometheus names it, unit suffixed */
	const char *help;
	struct series **series; /* limit + 1: the overflow series is the last */
	uint32_t nseries;
	uint32_t *index;       /* open addressing: series number + 1; 0 free */
	uint32_t index_mask;
};

/* The Prometheus names of the conventions' metrics. */
static const struct {
	const char *prom_name, *help;
} histograms[METRIC_DURATIONS] = {
	[METRIC_HTTP_SERVER_DURATION] = { "http_server_request_duration_seconds",
					  "Duration of HTTP server requests." },
	[METRIC_HTTP_CLIENT_DURATION] = { "http_client_request_duration_seconds",
					  "Duration of HTTP client requests." },
	[METRIC_DB_CLIENT_DURATION] = { "db_client_operation_duration_seconds",
					"Duration of database client operations." },
};

#define NHISTOGRAMS METRIC_DURATIONS

struct self_counter {
	const struct counter_desc *desc;
	uint64_t value;
};

struct metrics {
	pthread_mutex_t lock;
	uint32_t limit;
	struct histogram hist[NHISTOGRAMS];
	struct metrics_stats stats;
	struct self_counter self[METRICS_SELF_MAX];
	size_t nself;
};

/* ---- labels --------------------------------------------------------------- */

/* Labels being built for one exchange. */
struct label_buf {
	char *out;
	size_t len;
	bool cut; /* did not fit */
};

static void put(struct label_buf *b, const char *s, size_t n)
{
	if (b->len + n >= METRICS_LABELS_MAX) {
		b->cut = true;
		return;
	}
	memcpy(b->out + b->len, s, n);
	b->len += n;
}

/* A label name from an attribute key: what Prometheus does not allow in a
 * name becomes '_'. */
static void put_name(struct label_buf *b, const char *key)
{
	if (b->len)
		put(b, ",", 1);
	for (; *key; key++) {
		char c = *key;
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '_';

		put(b, ok ? &c : "_", 1);
	}
}

/* A label value, quoted, with backslash, quote and newline escaped. */
static void put_value(struct label_buf *b, const char *value)
{
	put(b, "=\"", 2);
	for (; *value; value++) {
		if (*value == '\\' || *value == '"')
			put(b, "\\", 1);
		if (*value == '\n')
			put(b, "\\n", 2);
		else
			put(b, value, 1);
	}
	put(b, "\"", 1);
}

static void label_str(void *ctx, const char *key, const char *value)
{
	put_name(ctx, key);
	put_value(ctx, value);
}

static void label_i64(void *ctx, const char *key, int64_t value)
{
	char text[24];

	snprintf(text, sizeof(text), "%" PRId64, value);
	label_str(ctx, key, text);
}

static void label_bool(void *ctx, const char *key, bool value)
{
	label_str(ctx, key, value ? "true" : "false");
}

/* ---- keys ------------------------------------------------------------------ */

struct key_buf {
	char out[METRICS_LABELS_MAX];
	size_t len;
	bool cut;
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

/* A word at a time: keys are a few hundred bytes at most. */
static uint64_t hash_of(const char *s, size_t n)
{
	uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		uint64_t word;

		memcpy(&word, s + i, 8);
		h = (h ^ word) * 0xff51afd7ed558ccdull;
		h ^= h >> 32;
	}
	for (; i < n; i++)
		h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
	return h ^ (h >> 29);
}

/* ---- series ---------------------------------------------------------------- */

static const char *service_of(const struct exchange_summary *x)
{
	const struct proc_info *proc = x->span->proc;

	return proc && proc->service_name[0] ? proc->service_name : "unknown_service";
}

/* The labels of a new series, in exposition form; NULL when they do not
 * fit or memory ran out. */
static char *labels_of(const struct exchange_summary *x, const struct proto_ops *ops,
		       uint32_t *len)
{
	char buf[METRICS_LABELS_MAX];
	struct label_buf b = { .out = buf };
	struct attr_sink sink = { label_str, label_i64, label_bool, &b };
	char *labels;

	label_str(&b, "service.name", service_of(x));
	ops->metric_attributes(x->span, &sink);
	if (b.cut || !(labels = malloc(b.len + 1)))
		return NULL;
	memcpy(labels, buf, b.len);
	labels[b.len] = '\0';
	*len = (uint32_t)b.len;
	return labels;
}

static struct series *new_series(const struct key_buf *k, uint64_t hash, char *labels,
				 uint32_t labels_len)
{
	struct series *s = calloc(1, sizeof(*s) + k->len);

	if (!s)
		return NULL;
	s->hash = hash;
	s->key_len = (uint32_t)k->len;
	memcpy(s->key, k->out, k->len);
	s->labels = labels;
	s->labels_len = labels_len;
	return s;
}

/* The series of this key, made if there is room; NULL otherwise. */
static struct series *find_series(struct metrics *m, struct histogram *h, const struct key_buf *k,
				  const struct exchange_summary *x, const struct proto_ops *ops)
{
	uint64_t hash = hash_of(k->out, k->len);
	uint32_t slot = (uint32_t)hash & h->index_mask;
	struct series *s;
	uint32_t labels_len;
	char *labels;

	for (; h->index[slot]; slot = (slot + 1) & h->index_mask) {
		s = h->series[h->index[slot] - 1];
		if (s->hash == hash && s->key_len == k->len && memcmp(s->key, k->out, k->len) == 0)
			return s;
	}
	if (h->nseries == m->limit)
		return NULL;
	labels = labels_of(x, ops, &labels_len);
	if (!labels) {
		m->stats.labels_cut++;
		return NULL;
	}
	s = new_series(k, hash, labels, labels_len);
	if (!s) {
		free(labels);
		return NULL;
	}
	h->series[h->nseries++] = s;
	h->index[slot] = h->nseries;
	m->stats.series++;
	return s;
}

static struct series *overflow_series(struct metrics *m, struct histogram *h)
{
	struct series **s = &h->series[m->limit];
	struct key_buf none = { .len = 0 };
	char *labels;

	if (*s)
		return *s;
	labels = strdup(overflow_labels);
	*s = labels ? new_series(&none, 0, labels, sizeof(overflow_labels) - 1) : NULL;
	if (*s)
		m->stats.series++;
	else
		free(labels);
	return *s;
}

unsigned metrics_bucket_of(double seconds)
{
	unsigned i = 0;

	while (i < METRICS_BUCKETS && seconds > bounds[i])
		i++;
	return i;
}

void metrics_record(void *ctx, const struct exchange_summary *x)
{
	struct metrics *m = ctx;
	const struct proto_ops *ops = proto_find(x->span->proto);
	struct key_buf k;
	struct attr_sink sink = { key_str, key_i64, key_bool, &k };
	double seconds = x->end_ns > x->start_ns ? (double)(x->end_ns - x->start_ns) / 1e9 : 0;
	struct histogram *h;
	struct series *s = NULL;

	if (!ops)
		return;
	h = &m->hist[ops->metric(x->span)];
	k.len = 0;
	k.cut = false;
	key_str(&k, "service.name", service_of(x));
	ops->metric_attributes(x->span, &sink);
	pthread_mutex_lock(&m->lock);
	if (k.cut)
		m->stats.labels_cut++;
	else
		s = find_series(m, h, &k, x, ops);
	if (!s) {
		m->stats.overflow++;
		s = overflow_series(m, h);
	}
	if (s) {
		s->buckets[metrics_bucket_of(seconds)]++;
		s->sum += seconds;
		s->count++;
	}
	pthread_mutex_unlock(&m->lock);
}

/* ---- sonde's own counters ---------------------------------------------------- */

void metrics_set_self(struct metrics *m, const struct counter_group *groups, size_t ngroups)
{
	size_t n = 0;

	pthread_mutex_lock(&m->lock);
	for (size_t g = 0; g < ngroups; g++)
		for (size_t i = 0; i < groups[g].n && n < METRICS_SELF_MAX; i++, n++) {
			m->self[n].desc = &groups[g].descs[i];
			m->self[n].value = counter_value(&groups[g], i);
		}
	m->nself = n;
	pthread_mutex_unlock(&m->lock);
}

/* ---- exposition --------------------------------------------------------------- */

static int append(struct bytes *out, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!out->data && bytes_reserve(out, 4096))
		return -ENOMEM;
	for (;;) {
		size_t room = out->size - out->used;

		va_start(ap, fmt);
		n = vsnprintf((char *)out->data + out->used, room, fmt, ap);
		va_end(ap);
		if (n < 0)
			return -EINVAL;
		if ((size_t)n < room) {
			out->used += (size_t)n;
			return 0;
		}
		if (bytes_reserve(out, (size_t)n + 1))
			return -ENOMEM;
	}
}

/* A series' counts as of a scrape; its labels do not change once it is
 * published, so they are read in place. */
struct counts {
	const struct series *series;
	uint64_t buckets[METRICS_BUCKETS + 1];
	double sum;
	uint64_t count;
};

static int write_series(struct bytes *out, const char *name, const struct counts *c)
{
	const struct series *s = c->series;
	const char *sep = s->labels_len ? "," : "";
	uint64_t cumulative = 0;
	int err = 0;

	for (unsigned i = 0; i < METRICS_BUCKETS && !err; i++) {
		cumulative += c->buckets[i];
		err = append(out, "%s_bucket{%.*s%sle=\"%s\"} %" PRIu64 "\n", name,
			     (int)s->labels_len, s->labels, sep, bound_labels[i], cumulative);
	}
	if (!err)
		err = append(out, "%s_bucket{%.*s%sle=\"+Inf\"} %" PRIu64 "\n", name,
			     (int)s->labels_len, s->labels, sep, c->count);
	if (!err)
		err = append(out, "%s_sum{%.*s} %.9g\n%s_count{%.*s} %" PRIu64 "\n", name,
			     (int)s->labels_len, s->labels, c->sum, name, (int)s->labels_len,
			     s->labels, c->count);
	return err;
}

static void take_counts(struct counts *c, const struct series *s)
{
	c->series = s;
	memcpy(c->buckets, s->buckets, sizeof(c->buckets));
	c->sum = s->sum;
	c->count = s->count;
}

/* One histogram's counts, copied under the lock: the capture thread waits
 * for the copy only, never for the formatting. */
static struct counts *snapshot(struct metrics *m, struct histogram *h, uint32_t *n)
{
	struct series *overflow;
	struct counts *copy;

	pthread_mutex_lock(&m->lock);
	overflow = h->series[m->limit];
	*n = h->nseries + (overflow != NULL);
	copy = malloc((size_t)*n * sizeof(*copy) + 1);
	for (uint32_t i = 0; copy && i < h->nseries; i++)
		take_counts(&copy[i], h->series[i]);
	if (copy && overflow)
		take_counts(&copy[*n - 1], overflow);
	pthread_mutex_unlock(&m->lock);
	return copy;
}

static int write_histogram(struct metrics *m, struct histogram *h, struct bytes *out)
{
	uint32_t n;
	struct counts *copy = snapshot(m, h, &n);
	int err;

	if (!copy)
		return -ENOMEM;
	err = append(out, "# HELP %s %s\n# TYPE %s histogram\n", h->prom_name, h->help,
		     h->prom_name);
	for (uint32_t i = 0; i < n && !err; i++)
		err = write_series(out, h->prom_name, &copy[i]);
	free(copy);
	return err;
}

static int write_self(struct metrics *m, struct bytes *out)
{
	struct self_counter self[METRICS_SELF_MAX];
	size_t n;
	int err = 0;

	pthread_mutex_lock(&m->lock);
	n = m->nself;
	memcpy(self, m->self, n * sizeof(self[0]));
	m->stats.scrapes++;
	pthread_mutex_unlock(&m->lock);
	for (size_t i = 0; i < n && !err; i++) {
		const struct counter_desc *d = self[i].desc;
		bool total = d->kind == COUNTER_TOTAL;

		err = append(out, "# HELP sonde_%s%s %s\n# TYPE sonde_%s%s %s\nsonde_%s%s %" PRIu64 "\n",
			     d->name, total ? "_total" : "", d->help, d->name, total ? "_total" : "",
			     total ? "counter" : "gauge", d->name, total ? "_total" : "",
			     self[i].value);
	}
	return err;
}

/* sonde's own CPU time and resident memory, under the names Prometheus
 * exporters use for their process. */
static int write_process(struct bytes *out)
{
	unsigned long utime = 0, stime = 0, pages = 0;
	FILE *f = fopen("/proc/self/stat", "r");
	long ticks = sysconf(_SC_CLK_TCK);

	if (f) {
		if (fscanf(f, "%*d (%*[^)]) %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
			   &utime, &stime) != 2)
			utime = stime = 0;
		fclose(f);
	}
	f = fopen("/proc/self/statm", "r");
	if (f) {
		if (fscanf(f, "%*u %lu", &pages) != 1)
			pages = 0;
		fclose(f);
	}
	return append(out,
		      "# HELP process_cpu_seconds_total CPU time sonde used, user and system.\n"
		      "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.2f\n"
		      "# HELP process_resident_memory_bytes sonde's resident memory.\n"
		      "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %lu\n",
		      (double)(utime + stime) / (double)(ticks > 0 ? ticks : 100),
		      pages * (unsigned long)sysconf(_SC_PAGESIZE));
}

int metrics_write_prometheus(struct metrics *m, struct bytes *out)
{
	int err = 0;

	for (size_t i = 0; i < NHISTOGRAMS && !err; i++)
		err = write_histogram(m, &m->hist[i], out);
	if (!err)
		err = write_self(m, out);
	if (!err)
		err = write_process(out);
	return err;
}

void metrics_get_stats(struct metrics *m, struct metrics_stats *out)
{
	pthread_mutex_lock(&m->lock);
	*out = m->stats;
	pthread_mutex_unlock(&m->lock);
}

/* ---- lifetime -------------------------------------------------------------------- */

static int histogram_init(struct histogram *h, size_t which, uint32_t limit)
{
	uint32_t slots = 1;

	while (slots < 2 * limit)
		slots <<= 1;
	h->prom_name = histograms[which].prom_name;
	h->help = histograms[which].help;
	h->series = calloc((size_t)limit + 1, sizeof(*h->series));
	h->index = calloc(slots, sizeof(*h->index));
	h->index_mask = slots - 1;
	return h->series && h->index ? 0 : -ENOMEM;
}

struct metrics *metrics_new(const struct metrics_opts *opts)
{
	struct metrics *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->limit = opts->cardinality_limit ? opts->cardinality_limit : 2000;
	pthread_mutex_init(&m->lock, NULL);
	for (size_t i = 0; i < NHISTOGRAMS; i++) {
		if (histogram_init(&m->hist[i], i, m->limit)) {
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
	for (size_t i = 0; i < NHISTOGRAMS; i++) {
		struct histogram *h = &m->hist[i];

		for (uint32_t j = 0; h->series && j <= m->limit; j++) {
			if (h->series[j])
				free(h->series[j]->labels);
			free(h->series[j]);
		}
		free(h->series);
		free(h->index);
	}
	pthread_mutex_destroy(&m->lock);
	free(m);
}
