/* SPDX-License-Identifier: GPL-2.0 */
/* The request an nginx worker writes for, read from nginx's own objects.
 * One worker serves many requests at once on one thread, so the thread
 * cannot tell which downstream request an upstream call is made for; the
 * worker's connection objects can. nginx registers every connection it
 * watches with epoll, the event's data being its ngx_connection_t (the
 * low bit is nginx's stale-event flag). That struct begins, as it has
 * since nginx 0.x, with { void *data; ngx_event_t *read, *write;
 * ngx_socket_t fd; }, and while a request is handled, on the downstream
 * connection as on the upstream one, data is that request: an
 * ngx_http_request_t, which begins { uint32_t signature ("HTTP");
 * ngx_connection_t *connection; }, its downstream connection. The address
 * of that connection is the task of the call: the same for the response
 * nginx writes downstream and for the requests it writes upstream for it,
 * and different for every other request in progress, which is what the
 * linker compares. The fd and the signature are checked on every read, so
 * a stale registration or another program called nginx gives no task (0),
 * counted, never a wrong one. */
/* Included by sonde.bpf.c, after the maps, connections (current_is_nginx)
 * and inference it uses. */
#ifndef SONDE_NGINX_BPF_H
#define SONDE_NGINX_BPF_H

#define EPOLL_CTL_ADD 1
#define EPOLL_CTL_MOD 3
/* "HTTP" read as a little-endian word: NGX_HTTP_MODULE. */
#define NGX_HTTP_SIGNATURE 0x50545448

/* The user's struct epoll_event: packed on x86-64 only. */
struct user_epoll_event {
	__u32 events;
	__u64 data;
}
#ifdef __TARGET_ARCH_x86
__attribute__((packed))
#endif
;

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

/* The ngx_connection_t each fd of an nginx worker was last registered
 * with; LRU, since nginx closes without deregistering. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sonde_conn_key);
	__type(value, __u64);
} nginx_conns SEC(".maps");

static __always_inline void note_nginx_registration(__u32 tgid, __s32 fd, __u64 event_at)
{
	struct sonde_conn_key key = { .tgid = tgid, .fd = fd };
	struct user_epoll_event ev;
	__u64 conn;

	if (bpf_probe_read_user(&ev, sizeof(ev), (const void *)event_at))
		return;
	conn = ev.data & ~1ULL;
	bpf_map_update_elem(&nginx_conns, &key, &conn, BPF_ANY);
}

/* The task of an nginx worker's write: its request's downstream
 * connection. Only HTTP message starts need one (see current_task). */
static __always_inline __u64 nginx_task(struct sonde_conn_key *key, struct sonde_data_event *ev)
{
	struct ngx_connection_head c;
	struct ngx_request_head r;
	__u64 *conn;

	if (ev->dir != SONDE_DIR_EGRESS || ev->proto != SONDE_PROTO_HTTP1)
		return 0;
	if (!is_http1_start(ev->data, ev->captured))
		return SONDE_TASK_UNKNOWN;
	conn = bpf_map_lookup_elem(&nginx_conns, key);
	if (!conn || bpf_probe_read_user(&c, sizeof(c), (const void *)*conn) || c.fd != key->fd ||
	    bpf_probe_read_user(&r, sizeof(r), (const void *)c.data) ||
	    r.signature != NGX_HTTP_SIGNATURE || !r.connection) {
		count(SONDE_CNT_NGINX_UNREAD);
		return 0;
	}
	return r.connection;
}

#endif
