#include "prometheus.h"

#include "semconv.h"
#include "usage.h"

#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
/* Room for one series' labels in exposition form. */
#define LABELS_MAX (2 * METRICS_ATTRS_MAX)

struct prom_server {
	struct MHD_Daemon *daemon;
	struct metrics *metrics;
	/* Scrapes are served one at a time (libmicrohttpd's one thread), so
	 * one copy of the counts, and one list of the services seen in them
	 * (for target_info), are reused. */
	struct metric_points points;
	const char **services;
	size_t nservices, services_cap;
	char host_name[256];
};

static const char *const bound_labels[METRICS_BUCKETS] = {
	"0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25",
	"0.5",   "0.75", "1",     "2.5",  "5",     "7.5", "10",
};

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

/* ---- labels --------------------------------------------------------------- */

/* Labels being written for one series; what does not fit is cut (series'
 * attributes are bounded, and escaping at most doubles them). */
struct label_buf {
	char out[LABELS_MAX];
	size_t len;
};

static void put(struct label_buf *b, const char *s, size_t n)
{
	if (b->len + n >= sizeof(b->out))
		return;
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

static void labels_of(const struct metric_series *s, struct label_buf *b)
{
	struct attr_sink sink = { label_str, label_i64, label_bool, b };

	b->len = 0;
	metric_series_attributes(s, &sink);
}

/* ---- exposition --------------------------------------------------------------- */

static int write_histogram_point(struct bytes *out, const char *name, const struct metric_point *p)
{
	struct label_buf b;
	const char *sep;
	uint64_t cumulative = 0;
	int err = 0;

	labels_of(p->series, &b);
	sep = b.len ? "," : "";
	for (unsigned i = 0; i < METRICS_BUCKETS && !err; i++) {
		cumulative += p->buckets[i];
		err = append(out, "%s_bucket{%.*s%sle=\"%s\"} %" PRIu64 "\n", name, (int)b.len,
			     b.out, sep, bound_labels[i], cumulative);
	}
	if (!err)
		err = append(out, "%s_bucket{%.*s%sle=\"+Inf\"} %" PRIu64 "\n", name, (int)b.len,
			     b.out, sep, p->count);
	if (!err)
		err = append(out, "%s_sum{%.*s} %.9g\n%s_count{%.*s} %" PRIu64 "\n", name,
			     (int)b.len, b.out, p->sum, name, (int)b.len, b.out, p->count);
	return err;
}

static int write_gauge_point(struct bytes *out, const char *name, const struct metric_point *p)
{
	struct label_buf b;

	labels_of(p->series, &b);
	return append(out, "%s{%.*s} %" PRId64 "\n", name, (int)b.len, b.out, p->value);
}

/* The services of the points just collected, for target_info: service
 * strings live as long as their series, that is as long as the metrics. */
static int note_services(struct prom_server *p)
{
	size_t need = p->nservices + p->points.n;

	if (need > p->services_cap) {
		const char **grown = realloc(p->services, need * sizeof(*grown));

		if (!grown)
			return -ENOMEM;
		p->services = grown;
		p->services_cap = need;
	}
	for (size_t i = 0; i < p->points.n; i++) {
		const char *service = metric_series_service(p->points.point[i].series);

		if (service)
			p->services[p->nservices++] = service;
	}
	return 0;
}

static int write_instrument(struct prom_server *p, unsigned which, struct bytes *out)
{
	const struct metric_desc *d = &metric_descs[which];
	bool histogram = d->kind == METRIC_KIND_HISTOGRAM;
	int err = metrics_collect(p->metrics, which, &p->points);

	if (!err)
		err = note_services(p);
	if (!err)
		err = append(out, "# HELP %s %s\n# TYPE %s %s\n", d->prom_name, d->help,
			     d->prom_name, histogram ? "histogram" : "gauge");
	for (size_t i = 0; i < p->points.n && !err; i++)
		err = histogram ? write_histogram_point(out, d->prom_name, &p->points.point[i])
				: write_gauge_point(out, d->prom_name, &p->points.point[i]);
	return err;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* target_info: the resource of each service counted, as the OpenTelemetry
 * Prometheus exporter specification writes it; sonde serves many, so each
 * is told apart by its service_name. */
static int write_target_info(struct prom_server *p, struct bytes *out)
{
	const char **names = p->services;
	size_t n = p->nservices;
	struct label_buf b;
	int err = append(out, "# HELP target_info Target metadata\n# TYPE target_info gauge\n");

	if (n)
		qsort(names, n, sizeof(*names), by_name);
	for (size_t i = 0; i < n && !err; i++) {
		if (i && strcmp(names[i], names[i - 1]) == 0)
			continue;
		b.len = 0;
		label_str(&b, "service.name", names[i]);
		label_str(&b, "host.name", p->host_name);
		label_str(&b, "telemetry.sdk.name", "sonde");
		label_str(&b, "telemetry.sdk.version", SONDE_VERSION);
		err = append(out, "target_info{%.*s} 1\n", (int)b.len, b.out);
	}
	return err;
}

static int write_self(struct prom_server *p, struct bytes *out)
{
	struct self_value self[METRICS_SELF_MAX];
	size_t n = metrics_collect_self(p->metrics, self);
	int err = 0;

	for (size_t i = 0; i < n && !err; i++) {
		const struct counter_desc *d = self[i].desc;
		bool total = d->kind == COUNTER_TOTAL;
		const char *suffix = total ? "_total" : "";

		err = append(out, "# HELP sonde_%s%s %s\n# TYPE sonde_%s%s %s\nsonde_%s%s %" PRIu64 "\n",
			     d->name, suffix, d->help, d->name, suffix, total ? "counter" : "gauge",
			     d->name, suffix, self[i].value);
	}
	return err;
}

/* sonde's own CPU time and resident memory, under the names Prometheus
 * exporters use for their process. */
static int write_process(struct bytes *out)
{
	struct process_usage u;

	process_usage_read(&u);
	return append(out,
		      "# HELP process_cpu_seconds_total CPU time sonde used, user and system.\n"
		      "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.2f\n"
		      "# HELP process_resident_memory_bytes sonde's resident memory.\n"
		      "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %"
		      PRIu64 "\n",
		      u.cpu_seconds, u.rss_bytes);
}

int prom_write(struct prom_server *p, struct bytes *out)
{
	int err = 0;

	p->nservices = 0;
	for (unsigned i = 0; i < METRICS_INSTRUMENTS && !err; i++)
		err = write_instrument(p, i, out);
	if (!err)
		err = write_target_info(p, out);
	if (!err)
		err = write_self(p, out);
	if (!err)
		err = write_process(out);
	metrics_count_scrape(p->metrics);
	return err;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type,
			     void *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, mode);
	enum MHD_Result ret;

	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result serve_metrics(struct prom_server *p, struct MHD_Connection *conn)
{
	struct bytes out = { 0 };

	if (prom_write(p, &out)) {
		bytes_free(&out);
		return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain",
			     "out of memory\n", 14, MHD_RESPMEM_PERSISTENT);
	}
	/* libmicrohttpd frees the body with free() once it is sent. */
	return reply(conn, MHD_HTTP_OK, CONTENT_TYPE, out.data, out.used, MHD_RESPMEM_MUST_FREE);
}
static enum MHD_Result on_request(void *ctx, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_size, void **state)
{
	static char not_found[] = "sonde serves /metrics\n";

	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", not_found,
			     sizeof(not_found) - 1, MHD_RESPMEM_PERSISTENT);
	if (strcmp(url, "/metrics") != 0)
		return reply(conn, MHD_HTTP_NOT_FOUND, "text/plain", not_found,
			     sizeof(not_found) - 1, MHD_RESPMEM_PERSISTENT);
	return serve_metrics(ctx, conn);
}

static int resolve(const char *host, uint16_t port, struct sockaddr_storage *addr, char *err,
		   size_t err_size)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res;
	char service[8];
	int rc;

	snprintf(service, sizeof(service), "%u", port);
	rc = getaddrinfo(host, service, &hints, &res);
	if (rc) {
		snprintf(err, err_size, "prometheus endpoint %s:%u: %s", host, port,
			 gai_strerror(rc));
		return -1;
	}
	memcpy(addr, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	return 0;
}

struct prom_server *prom_new(struct metrics *metrics)
{
	struct prom_server *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->metrics = metrics;
	if (gethostname(p->host_name, sizeof(p->host_name)) != 0)
		p->host_name[0] = '\0';
	p->host_name[sizeof(p->host_name) - 1] = '\0';
	return p;
}

struct prom_server *prom_start(const char *host, uint16_t port, struct metrics *metrics, char *err,
			       size_t err_size)
{
	struct prom_server *p = prom_new(metrics);
	struct sockaddr_storage addr;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD;

	if (!p) {
		snprintf(err, err_size, "prometheus endpoint: out of memory");
		return NULL;
	}
	if (resolve(host, port, &addr, err, err_size))
		goto fail;
	if (addr.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	p->daemon = MHD_start_daemon(flags, port, NULL, NULL, on_request, p, MHD_OPTION_SOCK_ADDR,
				     (struct sockaddr *)&addr, MHD_OPTION_END);
	if (!p->daemon) {
		snprintf(err, err_size, "prometheus endpoint %s:%u: cannot listen (%s)", host, port,
			 strerror(errno ? errno : EADDRINUSE));
		goto fail;
	}
	return p;
fail:
	prom_stop(p);
	return NULL;
}

void prom_stop(struct prom_server *p)
{
	if (!p)
		return;
	if (p->daemon)
		MHD_stop_daemon(p->daemon);
	metric_points_free(&p->points);
	free(p->services);
	free(p);
}
