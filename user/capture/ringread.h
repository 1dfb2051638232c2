/* Reads BPF ring buffers in place.
 *
 * libbpf hands each ring record to a callback and gives its space back to
 * the kernel when the callback returns, so a record kept longer had to be
 * copied out; the merge stage keeps every record of a drain until the drain
 * is sorted. Here a record stays in its ring, readable where the kernel
 * wrote it, until the reader releases what it has read. A ring's records
 * are 8-byte aligned and never wrap: the kernel maps its data twice in a
 * row.
 */
#ifndef SONDE_RINGREAD_H
#define SONDE_RINGREAD_H

#include <stddef.h>
#include <stdint.h>

struct ring_view {
	/* Positions are byte counts since the ring was made, unsigned long
	 * as the kernel keeps them. */
	unsigned long *consumer;       /* the kernel's consumer position (ours to write) */
	const unsigned long *producer; /* reserved up to here, by the kernel */
	const uint8_t *data;           /* the ring, twice in a row */
	unsigned long mask;            /* ring bytes - 1 */
	unsigned long read;            /* end of what was read: consumer <= read */
	unsigned long produced;        /* the producer's position when last read */
	unsigned long peeked;          /* the bytes of the record last peeked */
	void *consumer_map, *data_map;
	size_t data_map_bytes;
	int fd; /* the ring map's, the reader's to close */
};

struct ring_reader {
	int epoll_fd;
	struct ring_view *views;
	int count, max;
};

int ring_reader_init(struct ring_reader *r, int max_rings);
void ring_reader_free(struct ring_reader *r);
/* Maps the BPF_MAP_TYPE_RINGBUF map fd (ring_bytes of data) and waits on
 * it. The reader owns fd from then on, and closes it even on failure. */
int ring_reader_add(struct ring_reader *r, int fd, uint32_t ring_bytes);
/* Waits up to timeout_ms for a ring's wakeup. 0, or -errno (-EINTR too). */
int ring_reader_wait(struct ring_reader *r, int timeout_ms);
/* The next committed record after what was read, in place; NULL when the
 * ring holds no more, or the next is still being written. */
const void *ring_view_peek(struct ring_view *v, uint32_t *size);
/* Counts the record ring_view_peek returned as read. */
void ring_view_next(struct ring_view *v);
/* Gives what was read of every ring back to the kernel: the records
 * ring_view_peek returned are no longer readable. */
void ring_reader_release(struct ring_reader *r);

#endif
