/* One registry of counters. Each module lists its counters once, next to
 * its stats struct, as an X-macro of (field, exported name, kind, help):
 * the struct's fields and the table the stats output reads both come from
 * that list, so a counter is written where it is declared and where it
 * counts, nowhere else. */
#ifndef SONDE_COUNTERS_H
#define SONDE_COUNTERS_H

#include <stddef.h>
#include <stdint.h>

enum counter_kind {
	COUNTER_TOTAL, /* only grows */
	COUNTER_GAUGE, /* a level now */
};

struct counter_desc {
	const char *name; /* in the stats file and log: a_snake_case_name */
	const char *help;
	enum counter_kind kind;
	size_t offset;    /* of its uint64_t in the module's stats struct */
};

/* A stats struct's field, from a list entry. */
#define COUNTER_FIELD(field, name, kind, help) uint64_t field;
/* A counter_desc for `type`, from a list entry. */
#define COUNTER_DESC(type, field, name, kind, help) \
	{ name, help, COUNTER_##kind, offsetof(type, field) },

/* One module's counters and the stats they are read from. */
struct counter_group {
	const struct counter_desc *descs;
	size_t n;
	const void *stats;
};

static inline uint64_t counter_value(const struct counter_group *g, size_t i)
{
	return *(const uint64_t *)((const char *)g->stats + g->descs[i].offset);
}

#endif
