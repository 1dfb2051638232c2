#include "db.h"

#include "semconv.h"
#include "text.h"

#include <stdio.h>
#include <string.h>

void db_span_init(struct db_span *d, const char *system)
{
	d->system = system;
	d->returned_rows = -1;
	d->batch_size = 0;
	d->flags = 0;
	d->operation[0] = d->collection[0] = d->namespace_[0] = d->query[0] = '\0';
}

void db_span_error(struct span *span, const char *code, size_t len)
{
	text_copy_len(span->response_code, sizeof(span->response_code), code, len);
	text_copy(span->error_type, sizeof(span->error_type), span->response_code);
	span->status = SPAN_STATUS_ERROR;
}

void db_span_name(const struct span *span, char *out, size_t size)
{
	const struct db_span *d = db_span_in(span);

	if (d->operation[0] && d->collection[0])
		snprintf(out, size, "%s %s", d->operation, d->collection);
	else if (d->operation[0])
		snprintf(out, size, "%s", d->operation);
	else
		snprintf(out, size, "%s", d->system);
}

void db_span_attributes(const struct span *span, const struct attr_sink *sink, char *scratch)
{
	const struct db_span *d = db_span_in(span);

	attr_put_str(sink, "db.system.name", d->system);
	attr_put_str(sink, "db.namespace", d->namespace_);
	attr_put_str(sink, "db.operation.name", d->operation);
	attr_put_str(sink, "db.collection.name", d->collection);
	attr_put_str(sink, "db.query.text", d->query);
	attr_put_str(sink, "db.response.status_code", span->response_code);
	if (d->returned_rows >= 0)
		sink->i64(sink->ctx, "db.response.returned_rows", d->returned_rows);
	if (d->batch_size > 1)
		sink->i64(sink->ctx, "db.operation.batch.size", d->batch_size);
	if (d->flags & DB_SPAN_QUERY_CUT)
		sink->boolean(sink->ctx, "sonde.db.query.captured", false);
	if (d->flags & DB_SPAN_ANSWER_CUT)
		sink->boolean(sink->ctx, "sonde.db.response.captured", false);
}

enum duration_metric db_metric(const struct span *span)
{
	return METRIC_DB_CLIENT_DURATION;
}

/* The conventions' attributes of db.client.operation.duration: no query
 * text, whose values are unbounded. */
void db_metric_attributes(const struct span *span, struct metric_attrs *out)
{
	const struct db_span *d = db_span_in(span);

	metric_attr_str(out, "db.system.name", d->system);
	metric_attr_str(out, "db.namespace", d->namespace_);
	metric_attr_str(out, "db.operation.name", d->operation);
	metric_attr_str(out, "db.collection.name", d->collection);
	metric_attr_str(out, "db.response.status_code", span->response_code);
	metric_attr_str(out, "server.address", span->server_address);
	if (span->server_port)
		metric_attr_i64(out, "server.port", span->server_port);
	metric_attr_str(out, "error.type", span->error_type);
}
