/* What the database protocols write into a span, and how it reads by the
 * stable OpenTelemetry database conventions: CLIENT spans named
 * "{db.operation.name} {db.collection.name}", "{db.operation.name}" or
 * "{db.system.name}", with the query text stripped of every value. */
#ifndef SONDE_DB_H
#define SONDE_DB_H

#include "proto.h"
#include "span.h"

#include <stddef.h>
#include <stdint.h>

struct attr_sink;

#define DB_QUERY_MAX 1024
#define DB_OPERATION_MAX 32
#define DB_COLLECTION_MAX 128
#define DB_NAMESPACE_MAX 64

enum db_span_flags {
	DB_SPAN_QUERY_CUT = 1 << 0,  /* the query text was not captured whole */
	DB_SPAN_ANSWER_CUT = 1 << 1, /* bytes of the answer were not captured:
					rows and late errors may be missing */
};

/* The span's database fields (span.proto_data of a database span). */
struct db_span {
	const char *system;     /* db.system.name: a constant string */
	int64_t returned_rows;  /* db.response.returned_rows; -1: unknown */
	uint32_t batch_size;    /* db.operation.batch.size, when over 1 */
	uint8_t flags;          /* enum db_span_flags */
	char operation[DB_OPERATION_MAX];   /* db.operation.name */
	char collection[DB_COLLECTION_MAX]; /* db.collection.name */
	char namespace_[DB_NAMESPACE_MAX];  /* db.namespace */
	char query[DB_QUERY_MAX];           /* db.query.text, values replaced by "?" */
};

_Static_assert(sizeof(struct db_span) <= SPAN_PROTO_DATA_MAX, "db_span fits a span");

static inline struct db_span *db_span_of(struct span *span)
{
	return (struct db_span *)span->proto_data;
}

static inline const struct db_span *db_span_in(const struct span *span)
{
	return (const struct db_span *)span->proto_data;
}

/* Clears every field of a span's database part. */
void db_span_init(struct db_span *d, const char *system);
/* An error answer: status ERROR, db.response.status_code and error.type
 * both `code` (a SQLSTATE, a Redis error prefix). */
void db_span_error(struct span *span, const char *code, size_t len);
/* proto_ops.span_name and span_attributes of every database protocol. */
void db_span_name(const struct span *span, char *out, size_t size);
void db_span_attributes(const struct span *span, const struct attr_sink *sink, char *scratch);
/* proto_ops.metric and metric_attributes of every database protocol. */
enum duration_metric db_metric(const struct span *span);
void db_metric_attributes(const struct span *span, struct metric_attrs *out);

#endif
