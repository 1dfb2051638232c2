/* Records of per-CPU buffers put back in time order. */
#include "merge.h"
#include "sonde_events.h"

#include <criterion/criterion.h>
#include <string.h>

#define SEEN_MAX 64

struct seen {
	uint64_t ts[SEEN_MAX];
	uint32_t tid[SEEN_MAX];
	size_t size[SEEN_MAX];
	int n;
};

static void collect(void *ctx, const void *record, size_t size)
{
	struct seen *s = ctx;
	struct sonde_event_header hdr = { 0 };

	cr_assert_lt(s->n, SEEN_MAX);
	cr_assert_eq((uintptr_t)record % 8, 0, "records are delivered 8-byte aligned");
	if (size >= sizeof(hdr))
		memcpy(&hdr, record, sizeof(hdr));
	s->ts[s->n] = hdr.ts;
	s->tid[s->n] = hdr.tid;
	s->size[s->n++] = size;
}

/* A close event (a header plus a little) made at ts by thread tid. */
static void add(struct merge *m, uint64_t ts, uint32_t tid)
{
	struct sonde_close_event ev = { .hdr = { .type = SONDE_EV_CLOSE, .tid = tid, .ts = ts } };

	merge_add(m, &ev, sizeof(ev));
}

Test(merge, delivers_two_cpus_records_in_time_order)
{
	struct merge m;
	struct seen s = { 0 };
	/* CPU 0's buffer is drained first, then CPU 1's. */
	const uint64_t cpu0[] = { 20, 40, 50 }, cpu1[] = { 10, 30, 60 };

	cr_assert_eq(merge_init(&m, 4096, collect, &s), 0);
	for (int i = 0; i < 3; i++)
		add(&m, cpu0[i], 0);
	for (int i = 0; i < 3; i++)
		add(&m, cpu1[i], 1);
	merge_release(&m, UINT64_MAX);
	cr_assert_eq(s.n, 6);
	for (int i = 0; i < 6; i++)
		cr_expect_eq(s.ts[i], 10u * (uint64_t)(i + 1), "record %d at %llu", i,
			     (unsigned long long)s.ts[i]);
	merge_free(&m);
}

Test(merge, a_record_made_after_the_drain_began_waits_for_the_next)
{
	struct merge m;
	struct seen s = { 0 };

	cr_assert_eq(merge_init(&m, 4096, collect, &s), 0);
	add(&m, 300, 0);
	add(&m, 100, 1);
	merge_release(&m, 200);
	cr_assert_eq(s.n, 1);
	cr_expect_eq(s.ts[0], 100);
	cr_expect_eq(m.stats.waited, 1);
	/* Its predecessor, still being written during the first drain. */
	add(&m, 250, 1);
	merge_release(&m, 1000);
	cr_assert_eq(s.n, 3);
	cr_expect_eq(s.ts[1], 250);
	cr_expect_eq(s.ts[2], 300);
	merge_free(&m);
}

Test(merge, equal_times_keep_the_order_they_were_staged_in)
{
	struct merge m;
	struct seen s = { 0 };

	cr_assert_eq(merge_init(&m, 4096, collect, &s), 0);
	for (uint32_t tid = 1; tid <= 5; tid++)
		add(&m, 77, tid);
	merge_release(&m, UINT64_MAX);
	cr_assert_eq(s.n, 5);
	for (int i = 0; i < 5; i++)
		cr_expect_eq(s.tid[i], (uint32_t)i + 1);
	merge_free(&m);
}

Test(merge, a_full_arena_delivers_what_it_holds_and_counts_it)
{
	struct merge m;
	struct seen s = { 0 };
	const size_t per_record = sizeof(struct sonde_close_event);

	cr_assert_eq(merge_init(&m, 4 * per_record, collect, &s), 0);
	add(&m, 40, 0);
	add(&m, 30, 0);
	add(&m, 20, 0);
	add(&m, 10, 0);
	cr_expect_eq(s.n, 0);
	add(&m, 5, 1);
	cr_assert_eq(s.n, 4, "the four staged records went first");
	cr_expect_eq(s.ts[0], 10);
	cr_expect_eq(s.ts[3], 40);
	cr_expect_eq(m.stats.forced, 1);
	merge_release(&m, UINT64_MAX);
	cr_assert_eq(s.n, 5);
	cr_expect_eq(s.ts[4], 5);
	merge_free(&m);
}

Test(merge, unaligned_and_short_records_are_staged_whole)
{
	struct merge m;
	struct seen s = { 0 };
	struct sonde_close_event ev = { .hdr = { .type = SONDE_EV_CLOSE, .ts = 9 } };
	uint8_t perf_like[sizeof(ev) + 4];
	const uint8_t junk[3] = { 1, 2, 3 };

	memcpy(perf_like + 4, &ev, sizeof(ev));
	cr_assert_eq(merge_init(&m, 4096, collect, &s), 0);
	merge_add(&m, perf_like + 4, sizeof(ev));
	merge_add(&m, junk, sizeof(junk));
	merge_release(&m, UINT64_MAX);
	cr_assert_eq(s.n, 2);
	cr_expect_eq(s.size[0], sizeof(junk), "a record too short for a time sorts first");
	cr_expect_eq(s.ts[1], 9);
	cr_expect_eq(s.size[1], sizeof(ev));
	merge_free(&m);
}

Test(merge, many_runs_merge_into_one_order)
{
	struct merge m;
	struct seen s = { 0 };
	uint64_t ts = 0;

	cr_assert_eq(merge_init(&m, 8192, collect, &s), 0);
	/* Five CPUs' buffers of up to nine records, drained one after
	 * another; times spread so that every run interleaves with the rest. */
	for (uint32_t cpu = 0; cpu < 5; cpu++)
		for (uint64_t i = 0; i < 5 + cpu; i++)
			add(&m, 1000 + i * 50 + ((cpu * 37 + i * 11) % 40), cpu);
	merge_release(&m, UINT64_MAX);
	cr_assert_eq(s.n, 35);
	for (int i = 0; i < s.n; i++) {
		cr_expect_geq(s.ts[i], ts, "record %d out of order", i);
		ts = s.ts[i];
	}
	merge_free(&m);
}

static void count_in_order(void *ctx, const void *record, size_t size)
{
	uint64_t *last = ctx;
	struct sonde_event_header hdr;

	memcpy(&hdr, record, sizeof(hdr));
	cr_assert_geq(hdr.ts, last[0], "record %llu after %llu", (unsigned long long)hdr.ts,
		      (unsigned long long)last[0]);
	last[0] = hdr.ts;
	last[1]++;
}

/* A drain larger than the pages an arena keeps (the agent was starved):
 * sorted whole, and the arena, its pages given back, serves the next. */
Test(merge, a_large_drain_is_sorted_whole_and_the_next_too)
{
	const size_t per_cpu = 100000; /* ~4 MB of close events a CPU */
	uint64_t seen[2];
	struct merge m;

	cr_assert_eq(merge_init(&m, 16u << 20, count_in_order, seen), 0);
	for (int drain = 0; drain < 2; drain++) {
		seen[0] = seen[1] = 0;
		for (int cpu = 0; cpu < 2; cpu++)
			for (size_t i = 0; i < per_cpu; i++)
				add(&m, 2 * i + (uint64_t)cpu + 1, (uint32_t)cpu);
		merge_release(&m, UINT64_MAX);
		cr_expect_eq(seen[1], 2 * per_cpu, "drain %d", drain);
		cr_expect_eq(m.stats.forced, 0);
	}
	merge_free(&m);
}

static void collect_where(void *ctx, const void *record, size_t size)
{
	const void **where = ctx;

	(void)size;
	*where = record;
}

Test(merge, a_record_staged_in_place_is_delivered_where_it_lies)
{
	struct merge m;
	const void *where = NULL;
	struct sonde_close_event ev = { .hdr = { .type = SONDE_EV_CLOSE, .ts = 7 } };

	cr_assert_eq(merge_init(&m, 4096, collect_where, &where), 0);
	merge_add_in_place(&m, &ev, sizeof(ev));
	merge_release(&m, UINT64_MAX);
	cr_expect_eq(where, &ev);
	merge_free(&m);
}

/* The buffer reuses a record's space once the drain is delivered, so one
 * that waits for the next drain must be a copy. */
Test(merge, a_record_in_place_that_waits_is_copied)
{
	struct merge m;
	struct seen s = { 0 };
	struct sonde_close_event ring[2] = {
		{ .hdr = { .type = SONDE_EV_CLOSE, .tid = 1, .ts = 100 } },
		{ .hdr = { .type = SONDE_EV_CLOSE, .tid = 2, .ts = 300 } },
	};

	cr_assert_eq(merge_init(&m, 4096, collect, &s), 0);
	merge_add_in_place(&m, &ring[0], sizeof(ring[0]));
	merge_add_in_place(&m, &ring[1], sizeof(ring[1]));
	merge_release(&m, 200);
	cr_assert_eq(s.n, 1);
	cr_expect_eq(m.stats.waited, 1);
	memset(ring, 0xff, sizeof(ring));
	merge_release(&m, UINT64_MAX);
	cr_assert_eq(s.n, 2);
	cr_expect_eq(s.ts[1], 300);
	cr_expect_eq(s.tid[1], 2);
	merge_free(&m);
}

Test(merge, in_place_records_take_entries_not_arena_bytes)
{
	struct merge m;
	struct seen s = { 0 };
	struct sonde_close_event ring[6];

	/* 160 bytes: four copies of a 40-byte record, five entries (one per
	 * bare header's bytes). */
	cr_assert_eq(merge_init(&m, 4 * sizeof(ring[0]), collect, &s), 0);
	cr_assert_eq(m.max_entries, 5);
	for (int i = 0; i < 6; i++) {
		ring[i] = (struct sonde_close_event){ .hdr = { .ts = 60 - 10 * (uint64_t)i } };
		merge_add_in_place(&m, &ring[i], sizeof(ring[i]));
		cr_expect_eq(m.stats.forced, i < 5 ? 0 : 1, "after record %d", i);
	}
	cr_expect_eq(s.n, 5);
	merge_release(&m, UINT64_MAX);
	cr_assert_eq(s.n, 6);
	merge_free(&m);
}
