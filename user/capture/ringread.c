#include "ringread.h"

#include <errno.h>
#include <linux/bpf.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <unistd.h>

int ring_reader_init(struct ring_reader *r, int max_rings)
{
	memset(r, 0, sizeof(*r));
	r->views = calloc((size_t)max_rings, sizeof(*r->views));
	if (!r->views)
		return -ENOMEM;
	r->max = max_rings;
	r->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (r->epoll_fd < 0) {
		int err = -errno;

		free(r->views);
		r->views = NULL;
		return err;
	}
	return 0;
}

static void close_view(struct ring_view *v)
{
	if (v->consumer_map)
		munmap(v->consumer_map, (size_t)sysconf(_SC_PAGESIZE));
	if (v->data_map)
		munmap(v->data_map, v->data_map_bytes);
	close(v->fd);
}

void ring_reader_free(struct ring_reader *r)
{
	if (!r->views)
		return;
	for (int i = 0; i < r->count; i++)
		close_view(&r->views[i]);
	free(r->views);
	close(r->epoll_fd);
	memset(r, 0, sizeof(*r));
}

/* The kernel's layout of a ring map: the consumer position's page (which
 * the reader writes), then the producer position's page, then the data,
 * mapped twice in a row so that a record is contiguous across the end. */
static int map_view(struct ring_view *v, int fd, uint32_t ring_bytes)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	void *p;

	p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return -errno;
	v->consumer_map = p;
	v->data_map_bytes = page + 2 * (size_t)ring_bytes;
	p = mmap(NULL, v->data_map_bytes, PROT_READ, MAP_SHARED, fd, (off_t)page);
	if (p == MAP_FAILED)
		return -errno;
	v->data_map = p;
	v->consumer = v->consumer_map;
	v->producer = v->data_map;
	v->data = (const uint8_t *)v->data_map + page;
	v->mask = ring_bytes - 1;
	v->read = v->produced = __atomic_load_n(v->consumer, __ATOMIC_ACQUIRE);
	return 0;
}

int ring_reader_add(struct ring_reader *r, int fd, uint32_t ring_bytes)
{
	struct ring_view *v;
	struct epoll_event ev = { .events = EPOLLIN };
	int err;

	if (r->count == r->max) {
		close(fd);
		return -ENOSPC;
	}
	v = &r->views[r->count];
	memset(v, 0, sizeof(*v));
	v->fd = fd;
	err = map_view(v, fd, ring_bytes);
	if (!err && epoll_ctl(r->epoll_fd, EPOLL_CTL_ADD, fd, &ev))
		err = -errno;
	if (err) {
		close_view(v);
		return err;
	}
	r->count++;
	return 0;
}

int ring_reader_wait(struct ring_reader *r, int timeout_ms)
{
	struct epoll_event events[8];

	return epoll_wait(r->epoll_fd, events, 8, timeout_ms) < 0 ? -errno : 0;
}

/* A record's header: its length with the kernel's two flag bits, then
 * where its page is (which the reader does not need). */
static unsigned long record_bytes(uint32_t len)
{
	uint32_t data = len & ~(uint32_t)(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT);

	return (data + BPF_RINGBUF_HDR_SZ + 7) & ~7ul;
}

/* The producer's position is read again only once the reader has caught
 * up with it: the kernel writes its cache line at every record. */
const void *ring_view_peek(struct ring_view *v, uint32_t *size)
{
	for (;;) {
		const uint8_t *hdr;
		uint32_t len;

		if (v->read >= v->produced) {
			v->produced = __atomic_load_n(v->producer, __ATOMIC_ACQUIRE);
			if (v->read >= v->produced)
				return NULL;
		}
		hdr = v->data + (v->read & v->mask);
		len = __atomic_load_n((const uint32_t *)hdr, __ATOMIC_ACQUIRE);
		if (len & BPF_RINGBUF_BUSY_BIT)
			return NULL;
		if (len & BPF_RINGBUF_DISCARD_BIT) {
			v->read += record_bytes(len);
			continue;
		}
		v->peeked = record_bytes(len);
		*size = len;
		return hdr + BPF_RINGBUF_HDR_SZ;
	}
}

void ring_view_next(struct ring_view *v)
{
	v->read += v->peeked;
	v->peeked = 0;
}

void ring_reader_release(struct ring_reader *r)
{
	for (int i = 0; i < r->count; i++)
		__atomic_store_n(r->views[i].consumer, r->views[i].read, __ATOMIC_RELEASE);
}
