/* SPDX-License-Identifier: GPL-2.0 */
/* The request an nginx worker writes for, read from nginx's own objects.
 * One worker serves many requests at once on one thread, so the thread
 * cannot tell which downstream request an upstream call is made for; the
 * worker's connection objects can. nginx registers every connection it
 * watches with epoll, the event's data being its ngx_connection_t (the
 * low bit is nginx's stale-event flag), and the kernel keeps that
 * registration with the socket's file (file->f_ep), for connections made
 * before sonde started too. ngx_connection_t begins, as it has since nginx
 * 0.x, with { void *data; ngx_event_t *read, *write; ngx_socket_t fd; },
 * and while a request is handled, on the downstream connection as on the
 * upstream one, data is that request: an ngx_http_request_t, which begins
 * { uint32_t signature ("HTTP"); ngx_connection_t *connection; }, its
 * downstream connection. The address of that connection is the task of
 * the call: the same for the response nginx writes downstream and for the
 * requests it writes upstream for it, and different for every other
 * request in progress, which is what the linker compares. The fd and the
 * signature are checked on every read, so an object unlike nginx's gives
 * no task (0), counted, never a wrong one. */
/* Included by sonde.bpf.c, after the connections (file_of_fd) and the
 * inference (is_http1_start) it uses. */
#ifndef SONDE_NGINX_BPF_H
#define SONDE_NGINX_BPF_H

/* "HTTP" read as a little-endian word: NGX_HTTP_MODULE. */
#define NGX_HTTP_SIGNATURE 0x50545448

struct ngx_connection_head {
	__u64 data;
	__u64 read;
	__u64 write;
	__s32 fd;
};

struct ngx_request_head {
	__u32 signature;
	__u64 connection;
};

/* The data the fd's socket was registered with epoll with; 0 if none. */
static __always_inline __u64 epoll_data_of_fd(__s32 fd)
{
	struct file *file = file_of_fd(fd);
	struct hlist_node *first;
	struct epitem *epi;

	/* Before Linux 5.11 a file lists its epoll items elsewhere: no task
	 * there (counted), rather than programs that do not load. */
	if (!file || !bpf_core_field_exists(file->f_ep))
		return 0;
	first = BPF_CORE_READ(file, f_ep, first);
	if (!first)
		return 0;
	epi = (struct epitem *)((char *)first - bpf_core_field_offset(struct epitem, fllink));
	return BPF_CORE_READ(epi, event.data);
}

/* A response head's task is compared only with those of the requests
 * its worker wrote upstream before it, on the same thread: until the
 * worker has written one, its response heads skip the reads (a plain
 * server's every response). */
static __always_inline bool nginx_needs_task(__u32 tgid, const struct sonde_data_event *ev)
{
	__u8 one = 1;

	if (is_http1_status_line(ev->data, ev->captured))
		return bpf_map_lookup_elem(&nginx_callers, &tgid) != NULL;
	if (!bpf_map_lookup_elem(&nginx_callers, &tgid))
		bpf_map_update_elem(&nginx_callers, &tgid, &one, BPF_ANY);
	return true;
}

/* The task of an nginx worker's write: its request's downstream
 * connection. Only HTTP message starts need one (see current_task). A
 * global function, verified once rather than on every path of the data
 * programs; it must allow for a NULL ev. */
__noinline __u64 nginx_task(__u32 tgid, __s32 fd, const struct sonde_data_event *ev)
{
	struct ngx_connection_head c;
	struct ngx_request_head r;
	__u64 conn;

	if (!ev || ev->dir != SONDE_DIR_EGRESS || ev->proto != SONDE_PROTO_HTTP1)
		return 0;
	if (!is_http1_start(ev->data, ev->captured) || !nginx_needs_task(tgid, ev))
		return SONDE_TASK_UNKNOWN;
	conn = epoll_data_of_fd(fd) & ~1ULL;
	if (!conn || bpf_probe_read_user(&c, sizeof(c), (const void *)conn) || c.fd != fd ||
	    bpf_probe_read_user(&r, sizeof(r), (const void *)c.data) ||
	    r.signature != NGX_HTTP_SIGNATURE || !r.connection) {
		count(SONDE_CNT_NGINX_UNREAD);
		return 0;
	}
	return r.connection;
}

#endif
