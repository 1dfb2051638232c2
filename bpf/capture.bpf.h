/* SPDX-License-Identifier: GPL-2.0 */
/* Records to the agent (a ring buffer per CPU, or perf buffers), and the
 * copies of a call's payload from user memory. */
/* Included by sonde.bpf.c, after the configuration it reads: the kernel
 * side is one compilation unit, split by concern. */
#ifndef SONDE_CAPTURE_BPF_H
#define SONDE_CAPTURE_BPF_H

/* Ring buffer: wake the agent only when the unread data crosses
 * wakeup_bytes; below that it finds the records on its next poll tick.
 * Perf buffers batch wakeups by their own watermark (set by the agent). */
static __always_inline void submit(void *ctx, void *record, __u64 size)
{
	__u64 unread, flags = BPF_RB_NO_WAKEUP;
	__u32 cpu = bpf_get_smp_processor_id();
	void *ring;

	if (use_perf_buffer) {
		if (bpf_perf_event_output(ctx, &perf_events, BPF_F_CURRENT_CPU, record, size))
			count(SONDE_CNT_LOST_RINGBUF);
		return;
	}
	ring = bpf_map_lookup_elem(&cpu_rings, &cpu);
	if (!ring) {
		count(SONDE_CNT_LOST_RINGBUF);
		return;
	}
	unread = bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA);
	if (unread < wakeup_bytes && unread + size >= wakeup_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	if (bpf_ringbuf_output(ring, record, size, flags))
		count(SONDE_CNT_LOST_RINGBUF);
}


static __always_inline void fill_header(struct sonde_event_header *hdr, __u8 type,
					struct sonde_conn_key *key, __u64 gen)
{
	hdr->type = type;
	hdr->tgid = key->tgid;
	hdr->tid = (__u32)bpf_get_current_pid_tgid();
	hdr->fd = key->fd;
	hdr->conn_gen = gen;
	hdr->ts = bpf_ktime_get_ns();
}

static __always_inline __u32 copy_buf(__u8 *dst, __u64 src, __u32 want)
{
	if (want > SONDE_CAPTURE_MAX)
		want = SONDE_CAPTURE_MAX;
	if (bpf_probe_read_user(dst, want, (const void *)src)) {
		count(SONDE_CNT_CAPTURE_FAULT);
		return 0;
	}
	return want;
}

/* The call's iovecs (at most SONDE_IOV_MAX), in one read: a user memory
 * read costs about as much for 128 bytes as for 16. Returns how many. */
static __always_inline __u32 read_iovs(struct call_args *args, struct user_iovec *vecs)
{
	__u32 nvecs = args->iovcnt < SONDE_IOV_MAX ? args->iovcnt : SONDE_IOV_MAX;

	if (nvecs == 0 ||
	    bpf_probe_read_user(vecs, nvecs * sizeof(*vecs), (const void *)args->buf))
		return 0;
	return nvecs;
}

static __always_inline __u32 copy_iov(__u8 *dst, const struct user_iovec *vecs, __u32 nvecs,
				      __u32 want)
{
	__u32 copied = 0;

	for (__u32 i = 0; i < SONDE_IOV_MAX; i++) {
		__u32 chunk;

		if (i >= nvecs || copied >= want)
			break;
		chunk = vecs[i].len < want - copied ? vecs[i].len : want - copied;
		if (chunk > SONDE_CAPTURE_MAX)
			chunk = SONDE_CAPTURE_MAX;
		copied &= SONDE_CAPTURE_MAX - 1;
		if (bpf_probe_read_user(dst + copied, chunk, (const void *)vecs[i].base)) {
			count(SONDE_CNT_CAPTURE_FAULT);
			break;
		}
		copied += chunk;
	}
	return copied;
}

/* The first bytes of the call, up to `limit`. */
static __always_inline __u32 capture(struct sonde_data_event *ev, struct call_args *args,
				     const struct user_iovec *vecs, __u32 nvecs, __u32 len,
				     __u32 limit)
{
	__u32 want = len < limit ? len : limit;

	if (args->syscall == SONDE_SYS_SENDFILE || want == 0)
		return 0;
	if (args->iovcnt)
		return copy_iov(ev->data, vecs, nvecs, want);
	return copy_buf(ev->data, args->buf, want);
}

/* Where the call's last byte sits: in the buffer, or in the iovec the
 * call's `len` bytes end in. *avail is how many bytes before that end
 * belong to the same buffer. */
static __always_inline __u64 end_of_call(struct call_args *args, const struct user_iovec *vecs,
					 __u32 nvecs, __u32 len, __u32 *avail)
{
	__u64 moved = 0;

	*avail = len;
	if (!args->iovcnt)
		return args->buf + len;
	for (__u32 i = 0; i < SONDE_IOV_MAX; i++) {
		if (i >= nvecs)
			break;
		if (moved + vecs[i].len >= len) {
			*avail = (__u32)(len - moved);
			return vecs[i].base + (len - moved);
		}
		moved += vecs[i].len;
	}
	*avail = 0;
	return 0;
}

/* The last bytes of a call that moved more than was captured, after the
 * captured ones: a chunked message's terminator is usually there. */
static __always_inline __u32 capture_tail(struct sonde_data_event *ev, struct call_args *args,
					  const struct user_iovec *vecs, __u32 nvecs, __u32 len,
					  __u32 captured)
{
	__u32 avail, tail = SONDE_TAIL_MAX;
	__u64 end;

	if (args->syscall == SONDE_SYS_SENDFILE || len <= captured + SONDE_TAIL_MAX)
		return 0;
	end = end_of_call(args, vecs, nvecs, len, &avail);
	if (avail < tail)
		tail = avail;
	if (!end || tail == 0 || captured > SONDE_CAPTURE_MAX)
		return 0;
	if (bpf_probe_read_user(ev->data + captured, tail & (SONDE_TAIL_MAX * 2 - 1),
				(const void *)(end - tail)))
		return 0;
	return tail;
}


/* Where the call's bytes are in user memory when they are in one place:
 * its buffer, or its only iovec; 0 for a call over several iovecs. */
static __always_inline __u64 call_base(struct call_args *args, const struct user_iovec *vecs,
				       __u32 nvecs)
{
	if (!args->iovcnt)
		return args->buf;
	return nvecs == 1 ? vecs[0].base : 0;
}

/* A tracepoint program's context, as a global function's argument: kernels
 * before 6.8 ignore the arg:ctx tag and know a context argument by its
 * type's name, which for a tracepoint is that of its context type, __u64
 * (a struct tag, apart from the typedef). */
struct __u64 {
	__u64 first;
};

/* The rest of a call whose first event holds a pipeline (it carried the
 * first `off` bytes): contiguous events of up to SONDE_CAPTURE_MAX bytes,
 * at most SONDE_PIPELINE_CHUNKS of them, the last one covering what
 * remains with the call's last bytes as its tail. ev holds the first
 * event's header, position and task. */
struct rest_of_call {
	void *ctx;
	struct sonde_data_event *ev;
	__u64 base, pos;
	__u32 len, off;
};

/* One event of the rest: a bpf_loop callback, verified once rather than
 * once per event. */
static long emit_next_chunk(__u32 i, void *arg)
{
	struct rest_of_call *rest = arg;
	struct sonde_data_event *ev = rest->ev;
	__u32 chunk, captured, tail = 0;

	if (rest->off >= rest->len)
		return 1;
	chunk = rest->len - rest->off;
	if (i < SONDE_PIPELINE_CHUNKS - 1 && chunk > SONDE_CAPTURE_MAX)
		chunk = SONDE_CAPTURE_MAX;
	captured = copy_buf(ev->data, rest->base + rest->off, chunk);
	if (chunk > captured + SONDE_TAIL_MAX && captured <= SONDE_CAPTURE_MAX &&
	    !bpf_probe_read_user(ev->data + captured, SONDE_TAIL_MAX,
				 (const void *)(rest->base + rest->len - SONDE_TAIL_MAX)))
		tail = SONDE_TAIL_MAX;
	ev->pos = rest->pos + rest->off;
	ev->len = chunk;
	ev->captured = captured;
	ev->tail = tail;
	if (captured > SONDE_CAPTURE_MAX)
		return 1;
	submit(rest->ctx, ev, SONDE_DATA_EVENT_SIZE(captured + tail));
	rest->off += chunk;
	return 0;
}

__noinline int emit_rest(struct __u64 *ctx, struct sonde_data_event *ev, __u64 base, __u32 len,
			 __u32 off)
{
	struct rest_of_call rest = { .ctx = ctx, .ev = ev, .base = base, .len = len, .off = off };

	if (!ev || !base)
		return 0;
	rest.pos = ev->pos;
	bpf_loop(SONDE_PIPELINE_CHUNKS, emit_next_chunk, &rest, 0);
	return 0;
}

#endif
