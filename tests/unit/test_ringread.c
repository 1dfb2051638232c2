/* Ring buffer records read in place, over a ring laid out as the kernel
 * lays one out (linux/bpf.h's record header, the data mapped twice). */
#include "ringread.h"

#include <criterion/criterion.h>
#include <linux/bpf.h>
#include <string.h>

#define RING_BYTES 64

struct fake_ring {
	unsigned long consumer, producer;
	uint8_t data[2 * RING_BYTES] __attribute__((aligned(8)));
	struct ring_view view;
};

static void fake_init(struct fake_ring *f, unsigned long start)
{
	memset(f, 0, sizeof(*f));
	f->consumer = f->producer = start;
	f->view.consumer = &f->consumer;
	f->view.producer = &f->producer;
	f->view.data = f->data;
	f->view.mask = RING_BYTES - 1;
	f->view.read = start;
}

/* The kernel's second mapping of the same pages. */
static void mirror(struct fake_ring *f)
{
	memcpy(f->data + RING_BYTES, f->data, RING_BYTES);
}

static void put_byte(struct fake_ring *f, unsigned long pos, uint8_t byte)
{
	f->data[pos & (RING_BYTES - 1)] = byte;
}

/* A record of len bytes filled with `fill`, with the header's flag bits. */
static void produce(struct fake_ring *f, uint32_t len, uint8_t fill, uint32_t flags)
{
	unsigned long pos = f->producer;
	uint32_t hdr[2] = { len | flags, 0 };

	for (size_t i = 0; i < sizeof(hdr); i++)
		put_byte(f, pos + i, ((uint8_t *)hdr)[i]);
	for (uint32_t i = 0; i < len; i++)
		put_byte(f, pos + BPF_RINGBUF_HDR_SZ + i, fill);
	mirror(f);
	f->producer += (len + BPF_RINGBUF_HDR_SZ + 7) & ~7u;
}

/* The next record, which must be there and of `size` bytes. */
static const uint8_t *expect_record(struct fake_ring *f, uint32_t size)
{
	uint32_t got = 0;
	const uint8_t *rec = ring_view_peek(&f->view, &got);

	cr_assert_not_null(rec);
	cr_expect_eq(got, size);
	return rec;
}

static bool ring_is_empty(struct fake_ring *f)
{
	uint32_t size = 0;

	return ring_view_peek(&f->view, &size) == NULL;
}

Test(ringread, reads_committed_records_in_order_and_in_place)
{
	struct fake_ring f;
	const uint8_t *rec;

	fake_init(&f, 0);
	produce(&f, 5, 0xaa, 0);
	produce(&f, 16, 0xbb, 0);
	rec = expect_record(&f, 5);
	cr_expect_eq(rec, f.data + BPF_RINGBUF_HDR_SZ, "the record is read where it lies");
	cr_expect_eq(rec[4], 0xaa);
	ring_view_next(&f.view);
	rec = expect_record(&f, 16);
	cr_expect_eq((uintptr_t)rec % 8, 0, "records are 8-byte aligned");
	ring_view_next(&f.view);
	cr_expect(ring_is_empty(&f));
	cr_expect_eq(f.consumer, 0, "nothing is given back before the release");
}

Test(ringread, stops_at_a_record_still_being_written)
{
	struct fake_ring f;

	fake_init(&f, 0);
	produce(&f, 8, 1, BPF_RINGBUF_BUSY_BIT);
	produce(&f, 8, 2, 0);
	cr_expect(ring_is_empty(&f));
	cr_expect_eq(f.view.read, 0);
}

Test(ringread, skips_discarded_records)
{
	struct fake_ring f;

	fake_init(&f, 0);
	produce(&f, 8, 1, BPF_RINGBUF_DISCARD_BIT);
	produce(&f, 3, 2, 0);
	cr_expect_eq(expect_record(&f, 3)[0], 2);
}

Test(ringread, a_record_across_the_end_is_whole)
{
	struct fake_ring f;
	const uint8_t *rec;

	/* 48 bytes in: the record's 24 bytes of data run past byte 64. */
	fake_init(&f, 48);
	produce(&f, 24, 0xcc, 0);
	rec = expect_record(&f, 24);
	for (uint32_t i = 0; i < 24; i++)
		cr_expect_eq(rec[i], 0xcc, "byte %u", i);
}

Test(ringread, release_gives_back_what_was_read_and_no_more)
{
	struct fake_ring f;
	struct ring_reader r = { .views = &f.view, .count = 1 };

	fake_init(&f, 0);
	produce(&f, 8, 1, 0);
	produce(&f, 8, 2, 0);
	expect_record(&f, 8);
	ring_view_next(&f.view);
	/* Peeked, not read: the second stays the kernel's to keep. */
	expect_record(&f, 8);
	ring_reader_release(&r);
	cr_expect_eq(f.consumer, 16);
	ring_view_next(&f.view);
	ring_reader_release(&r);
	cr_expect_eq(f.consumer, 32);
}

Test(ringread, records_made_after_the_reader_caught_up_are_read)
{
	struct fake_ring f;

	fake_init(&f, 0);
	cr_expect(ring_is_empty(&f));
	produce(&f, 8, 1, BPF_RINGBUF_BUSY_BIT);
	cr_expect(ring_is_empty(&f));
	/* The kernel commits it and makes another. */
	f.data[3] &= 0x7f;
	mirror(&f);
	produce(&f, 4, 2, 0);
	expect_record(&f, 8);
	ring_view_next(&f.view);
	expect_record(&f, 4);
	ring_view_next(&f.view);
	cr_expect(ring_is_empty(&f));
}
