#include "merge.h"

#include "sonde_events.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define MERGE_DESC(...) COUNTER_DESC(struct merge_stats, __VA_ARGS__)
const struct counter_desc merge_counters[] = { MERGE_COUNTERS(MERGE_DESC) };
const size_t merge_counter_count = sizeof(merge_counters) / sizeof(merge_counters[0]);

#define RECORD_ALIGN 8

static size_t aligned(size_t size)
{
	return (size + RECORD_ALIGN - 1) & ~(size_t)(RECORD_ALIGN - 1);
}

/* What an arena keeps of the pages a drain touched; the rest goes back
 * to the kernel after a drain that used more (the agent was starved). */
#define ARENA_KEEP_BYTES (1u << 20)

/* Mapped, not allocated: an arena sized for the whole of the buffers
 * costs memory only where a drain wrote, and gives it back. */
static void *map_bytes(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

static void unmap_bytes(void *p, size_t bytes)
{
	if (p)
		munmap(p, bytes);
}

static int arena_init(struct merge_arena *a, size_t bytes, size_t max_entries)
{
	a->bytes = map_bytes(bytes);
	a->entries = map_bytes(max_entries * sizeof(*a->entries));
	a->used = a->count = 0;
	return a->bytes && a->entries ? 0 : -ENOMEM;
}

static void arena_free(struct merge_arena *a, size_t bytes, size_t max_entries)
{
	unmap_bytes(a->bytes, bytes);
	unmap_bytes(a->entries, max_entries * sizeof(*a->entries));
}

/* The pages past the first ARENA_KEEP_BYTES that a drain wrote, once it is
 * delivered. */
static void give_back(void *p, size_t used)
{
	if (used > ARENA_KEEP_BYTES)
		madvise((char *)p + ARENA_KEEP_BYTES, used - ARENA_KEEP_BYTES, MADV_DONTNEED);
}

static void arena_trim(const struct merge_arena *a)
{
	give_back(a->bytes, a->used);
	give_back(a->entries, a->count * sizeof(*a->entries));
}

/* The smallest record is a bare header, so the arena never holds more
 * records than this. */
int merge_init(struct merge *m, size_t arena_bytes, merge_deliver_fn fn, void *ctx)
{
	memset(m, 0, sizeof(*m));
	m->arena_bytes = arena_bytes;
	m->max_entries = arena_bytes / aligned(sizeof(struct sonde_event_header));
	m->fn = fn;
	m->ctx = ctx;
	if (arena_init(&m->staged, arena_bytes, m->max_entries) ||
	    arena_init(&m->spare, arena_bytes, m->max_entries)) {
		merge_free(m);
		return -ENOMEM;
	}
	return 0;
}

void merge_free(struct merge *m)
{
	arena_free(&m->staged, m->arena_bytes, m->max_entries);
	arena_free(&m->spare, m->arena_bytes, m->max_entries);
	memset(m, 0, sizeof(*m));
}

/* A perf buffer's records are only 4-byte aligned: the header is copied
 * out rather than read in place. */
static uint64_t record_ts(const void *record, size_t size)
{
	struct sonde_event_header hdr;

	if (size < sizeof(hdr))
		return 0;
	memcpy(&hdr, record, sizeof(hdr));
	return hdr.ts;
}

static void stage_entry(struct merge_arena *a, const uint8_t *record, size_t size, uint64_t ts,
			uint32_t seq)
{
	struct merge_entry *e = &a->entries[a->count++];

	e->ts = ts;
	e->seq = seq;
	e->size = (uint32_t)size;
	e->record = record;
}

static void stage_copy(struct merge_arena *a, const void *record, size_t size, uint64_t ts,
		       uint32_t seq)
{
	uint8_t *copy = a->bytes + a->used;

	memcpy(copy, record, size);
	a->used += aligned(size);
	stage_entry(a, copy, size, ts, seq);
}

/* A drain too large for the arena is delivered in parts. */
static void make_room(struct merge *m, size_t copy_bytes)
{
	if (m->staged.used + copy_bytes > m->arena_bytes || m->staged.count == m->max_entries) {
		m->stats.forced++;
		merge_release(m, UINT64_MAX);
	}
}

void merge_add(struct merge *m, const void *record, size_t size)
{
	if (aligned(size) > m->arena_bytes) {
		m->fn(m->ctx, record, size);
		return;
	}
	make_room(m, aligned(size));
	stage_copy(&m->staged, record, size, record_ts(record, size), m->seq++);
}

void merge_add_in_place(struct merge *m, const void *record, size_t size)
{
	make_room(m, 0);
	stage_entry(&m->staged, record, size, record_ts(record, size), m->seq++);
}

static bool before(const struct merge_entry *x, const struct merge_entry *y)
{
	return x->ts != y->ts ? x->ts < y->ts : x->seq < y->seq;
}

/* End of the run of records in time order that starts at `from`. */
static size_t run_end(const struct merge_entry *e, size_t from, size_t n)
{
	size_t i = from + 1;

	while (i < n && !before(&e[i], &e[i - 1]))
		i++;
	return i;
}

static void merge_runs(const struct merge_entry *a, size_t na, const struct merge_entry *b,
		       size_t nb, struct merge_entry *out)
{
	size_t i = 0, j = 0;

	while (i < na && j < nb)
		*out++ = before(&b[j], &a[i]) ? b[j++] : a[i++];
	memcpy(out, a + i, (na - i) * sizeof(*a));
	memcpy(out + (na - i), b + j, (nb - j) * sizeof(*b));
}

/* A natural merge sort: each CPU's buffer gives one run already in time
 * order, so a drain sorts in n * log(CPUs) steps, and with no allocation:
 * the spare arena's entries are the scratch space. */
static void sort_entries(struct merge *m)
{
	struct merge_entry *tmp;
	size_t n = m->staged.count, runs;

	do {
		runs = 0;
		for (size_t i = 0; i < n; runs++) {
			size_t mid = run_end(m->staged.entries, i, n);
			size_t end = mid < n ? run_end(m->staged.entries, mid, n) : n;

			merge_runs(m->staged.entries + i, mid - i, m->staged.entries + mid, end - mid,
				   m->spare.entries + i);
			i = end;
		}
		tmp = m->staged.entries;
		m->staged.entries = m->spare.entries;
		m->spare.entries = tmp;
	} while (runs > 1);
}

void merge_release(struct merge *m, uint64_t before_ts)
{
	struct merge_arena *a = &m->staged, *keep = &m->spare, drained;
	size_t i = 0;

	sort_entries(m);
	for (; i < a->count && a->entries[i].ts < before_ts; i++)
		m->fn(m->ctx, a->entries[i].record, a->entries[i].size);
	keep->used = keep->count = 0;
	for (; i < a->count; i++) {
		stage_copy(keep, a->entries[i].record, a->entries[i].size, a->entries[i].ts,
			   a->entries[i].seq);
		m->stats.waited++;
	}
	drained = *a;
	*a = *keep;
	*keep = drained;
	arena_trim(keep);
	if (m->staged.count == 0)
		m->seq = 0;
}
