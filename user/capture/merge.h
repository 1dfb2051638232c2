/* Puts the records of per-CPU buffers back in time order.
 *
 * Each CPU's buffer holds its records in the order they were made, but the
 * agent drains the buffers one after another, so a response written on one
 * CPU can be read before the request another CPU received. Records of a
 * drain are staged, then delivered sorted by their header's timestamp. A
 * record made after the drain began may have a predecessor that was still
 * being written to a buffer already read, so it waits for the next drain,
 * copied. Records are staged in place where their buffer keeps them until
 * the drain is delivered (ring buffers read with ringread.h), copied where
 * it does not (perf buffers).
 */
#ifndef SONDE_MERGE_H
#define SONDE_MERGE_H

#include "counters.h"

#include <stddef.h>
#include <stdint.h>

typedef void (*merge_deliver_fn)(void *ctx, const void *record, size_t size);

struct merge_entry {
	uint64_t ts;
	uint32_t seq; /* staging order: breaks ties, keeps a CPU's order */
	uint32_t size;
	const uint8_t *record; /* in the arena, or in place */
};

/* Copies are staged 8-byte aligned, so that the fields of a record taken
 * from a perf buffer (4-byte aligned there) can be read in place. */
struct merge_arena {
	uint8_t *bytes;
	size_t used;
	struct merge_entry *entries;
	size_t count;
};

#define MERGE_COUNTERS(X) \
	X(forced, "merge_forced", TOTAL, \
	  "drains larger than the arena, delivered in parts: order may suffer") \
	X(waited, "merge_waited", TOTAL, "records kept for the next drain")

struct merge_stats {
	MERGE_COUNTERS(COUNTER_FIELD)
};

extern const struct counter_desc merge_counters[];
extern const size_t merge_counter_count;

struct merge {
	struct merge_arena staged, spare;
	size_t arena_bytes, max_entries;
	uint32_t seq;
	merge_deliver_fn fn;
	void *ctx;
	struct merge_stats stats;
};

int merge_init(struct merge *m, size_t arena_bytes, merge_deliver_fn fn, void *ctx);
void merge_free(struct merge *m);
/* Stages a copy of one record; when the arena is full, first delivers all
 * it holds. */
void merge_add(struct merge *m, const void *record, size_t size);
/* Stages one record in place: it must stay where it is, 8-byte aligned,
 * until merge_release has delivered or copied it. */
void merge_add_in_place(struct merge *m, const void *record, size_t size);
/* Delivers, in time order, the staged records made before `before_ts`
 * (UINT64_MAX: all of them) and keeps the others. */
void merge_release(struct merge *m, uint64_t before_ts);

#endif
