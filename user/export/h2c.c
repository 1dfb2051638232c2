#include "h2c.h"

#include "clock.h"
#include "log.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

struct h2c {
	char host[256];
	char port[8];
	char authority[300];
	char path[600];
	int fd; /* -1: no connection */
	nghttp2_session *session;
	bool write_blocked; /* the socket refused bytes: wait for POLLOUT */
	int send_errno;     /* why the last send failed */
	/* The request in flight. */
	const uint8_t *body;
	size_t body_len, body_sent;
	int32_t stream_id;
	bool stream_done;
	uint32_t stream_error; /* RST_STREAM code, 0 if it ended cleanly */
	int status;
	const struct h2c_answer_sink *sink;
};

/* "http://" host [":" port] path, host possibly "[v6]". */
static bool parse_url(struct h2c *c, const char *url)
{
	const char *host = url + 7, *host_end, *path;
	const char *port = NULL;

	if (strncasecmp(url, "http://", 7) != 0)
		return false;
	if (*host == '[') {
		host_end = strchr(host, ']');
		if (!host_end)
			return false;
		path = host_end + 1;
		host++;
	} else {
		host_end = host + strcspn(host, ":/");
		path = host_end;
	}
	if (*path == ':') {
		port = path + 1;
		path = port + strcspn(port, "/");
	}
	if (host_end == host || (size_t)(host_end - host) >= sizeof(c->host))
		return false;
	snprintf(c->host, sizeof(c->host), "%.*s", (int)(host_end - host), host);
	if (port && (path == port || (size_t)(path - port) >= sizeof(c->port)))
		return false;
	snprintf(c->port, sizeof(c->port), "%.*s", port ? (int)(path - port) : 2,
		 port ? port : "80");
	snprintf(c->authority, sizeof(c->authority), "%.*s", (int)(path - (url + 7)), url + 7);
	snprintf(c->path, sizeof(c->path), "%s", *path ? path : "/");
	return true;
}

struct h2c *h2c_new(const char *url)
{
	struct h2c *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->fd = -1;
	if (!parse_url(c, url)) {
		free(c);
		return NULL;
	}
	return c;
}

static void drop_connection(struct h2c *c)
{
	if (c->session)
		nghttp2_session_del(c->session);
	c->session = NULL;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->write_blocked = false;
}

void h2c_free(struct h2c *c)
{
	if (!c)
		return;
	drop_connection(c);
	free(c);
}

static int remaining_ms(uint64_t deadline_ns)
{
	uint64_t now = monotonic_now_ns();

	if (now >= deadline_ns)
		return 0;
	return (int)((deadline_ns - now + 999999) / 1000000);
}

/* A non-blocking connect to one address, finished within the deadline. */
static int connect_one(const struct addrinfo *ai, uint64_t deadline_ns)
{
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			ai->ai_protocol);
	struct pollfd pfd = { .fd = fd, .events = POLLOUT };
	int one = 1, soerr = 0, ready;
	socklen_t len = sizeof(soerr);

	if (fd < 0)
		return -errno;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
		goto connected;
	if (errno != EINPROGRESS) {
		soerr = errno;
		goto fail;
	}
	ready = poll(&pfd, 1, remaining_ms(deadline_ns));
	if (ready <= 0) {
		soerr = ready == 0 ? ETIMEDOUT : errno;
		goto fail;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) || soerr)
		goto fail;
connected:
	/* The request's frames go out as soon as they are written. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
fail:
	close(fd);
	return -(soerr ? soerr : EIO);
}

static int open_socket(struct h2c *c, uint64_t deadline_ns, char *err, size_t err_size)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ais, *ai;
	int fd = -EHOSTUNREACH, rc = getaddrinfo(c->host, c->port, &hints, &ais);

	if (rc) {
		snprintf(err, err_size, "resolve %s: %s", c->host, gai_strerror(rc));
		return -EHOSTUNREACH;
	}
	for (ai = ais; ai; ai = ai->ai_next) {
		fd = connect_one(ai, deadline_ns);
		if (fd >= 0)
			break;
	}
	freeaddrinfo(ais);
	if (fd < 0)
		snprintf(err, err_size, "connect to %s: %s", c->authority, strerror(-fd));
	return fd;
}

static ssize_t on_send(nghttp2_session *session, const uint8_t *data, size_t len, int flags,
		       void *arg)
{
	struct h2c *c = arg;
	ssize_t sent = send(c->fd, data, len, MSG_NOSIGNAL);

	if (sent >= 0)
		return sent;
	if (errno == EAGAIN || errno == EWOULDBLOCK) {
		c->write_blocked = true;
		return NGHTTP2_ERR_WOULDBLOCK;
	}
	c->send_errno = errno;
	return NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
		     size_t name_len, const uint8_t *value, size_t value_len, uint8_t flags,
		     void *arg)
{
	struct h2c *c = arg;

	if (frame->hd.stream_id != c->stream_id || !c->sink)
		return 0;
	if (name_len == 7 && memcmp(name, ":status", 7) == 0)
		c->status = atoi((const char *)value);
	else if (name_len && name[0] != ':')
		c->sink->field(c->sink->arg, (const char *)name, name_len, (const char *)value,
			       value_len);
	return 0;
}

static int on_data(nghttp2_session *session, uint8_t flags, int32_t stream_id,
		   const uint8_t *data, size_t len, void *arg)
{
	struct h2c *c = arg;

	if (stream_id == c->stream_id && c->sink)
		c->sink->data(c->sink->arg, data, len);
	return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
			   void *arg)
{
	struct h2c *c = arg;

	if (stream_id == c->stream_id) {
		c->stream_done = true;
		c->stream_error = error_code;
	}
	return 0;
}

static ssize_t read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t len,
			 uint32_t *data_flags, nghttp2_data_source *source, void *arg)
{
	struct h2c *c = arg;
	size_t left = c->body_len - c->body_sent, take = len < left ? len : left;

	memcpy(buf, c->body + c->body_sent, take);
	c->body_sent += take;
	if (c->body_sent == c->body_len)
		*data_flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)take;
}

static int open_session(struct h2c *c)
{
	nghttp2_session_callbacks *cbs;
	nghttp2_settings_entry no_push = { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 };
	int rc;

	if (nghttp2_session_callbacks_new(&cbs))
		return -ENOMEM;
	nghttp2_session_callbacks_set_send_callback(cbs, on_send);
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
	rc = nghttp2_session_client_new(&c->session, cbs, c);
	nghttp2_session_callbacks_del(cbs);
	if (rc)
		return -ENOMEM;
	return nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, &no_push, 1) ? -ENOMEM : 0;
}

/* Reads what the socket holds into the session. */
static int take_input(struct h2c *c, char *err, size_t err_size)
{
	uint8_t buf[16384];

	for (;;) {
		ssize_t got = recv(c->fd, buf, sizeof(buf), 0);

		if (got == 0) {
			snprintf(err, err_size, "%s closed the connection", c->authority);
			return -ECONNRESET;
		}
		if (got < 0) {
			int why = errno;

			if (why == EAGAIN || why == EWOULDBLOCK)
				return 0;
			snprintf(err, err_size, "read from %s: %s", c->authority, strerror(why));
			return -why;
		}
		if (nghttp2_session_mem_recv(c->session, buf, (size_t)got) < 0) {
			snprintf(err, err_size, "%s broke the HTTP/2 protocol", c->authority);
			return -EPROTO;
		}
	}
}

/* Whether the kept connection can carry another request: what arrived
 * since the last one is read first, so that a collector that closed an
 * idle connection (or sent GOAWAY) costs a reconnect, not a failed
 * attempt. */
static bool connection_usable(struct h2c *c)
{
	char ignored[128];

	if (!c->session || take_input(c, ignored, sizeof(ignored)))
		return false;
	return nghttp2_session_want_read(c->session) || nghttp2_session_want_write(c->session);
}

static int ensure_connection(struct h2c *c, uint64_t deadline_ns, char *err, size_t err_size)
{
	int rc;

	if (connection_usable(c))
		return 0;
	drop_connection(c);
	c->fd = open_socket(c, deadline_ns, err, err_size);
	if (c->fd < 0)
		return c->fd;
	rc = open_session(c);
	if (rc) {
		snprintf(err, err_size, "HTTP/2 session: %s", strerror(-rc));
		drop_connection(c);
		return rc;
	}
	log_debug("h2c: connected to %s", c->authority);
	return 0;
}

static int submit(struct h2c *c, const struct h2c_field *fields, size_t nfields)
{
	nghttp2_nv nv[H2C_FIELDS_MAX + 4] = {
		{ (uint8_t *)":method", (uint8_t *)"POST", 7, 4, NGHTTP2_NV_FLAG_NONE },
		{ (uint8_t *)":scheme", (uint8_t *)"http", 7, 4, NGHTTP2_NV_FLAG_NONE },
		{ (uint8_t *)":authority", (uint8_t *)c->authority, 10, strlen(c->authority),
		  NGHTTP2_NV_FLAG_NONE },
		{ (uint8_t *)":path", (uint8_t *)c->path, 5, strlen(c->path), NGHTTP2_NV_FLAG_NONE },
	};
	nghttp2_data_provider provider = { .read_callback = read_body };
	size_t n = 4;

	if (nfields > H2C_FIELDS_MAX)
		return -E2BIG;
	for (size_t i = 0; i < nfields; i++)
		nv[n++] = (nghttp2_nv){ (uint8_t *)fields[i].name, (uint8_t *)fields[i].value,
					fields[i].name_len, fields[i].value_len,
					NGHTTP2_NV_FLAG_NONE };
	c->stream_id = nghttp2_submit_request(c->session, NULL, nv, n, &provider, c);
	return c->stream_id < 0 ? -EPROTO : 0;
}

/* Sends what the session has, then waits for the socket; until the
 * stream ends. */
static int run_stream(struct h2c *c, uint64_t deadline_ns, char *err, size_t err_size)
{
	while (!c->stream_done) {
		struct pollfd pfd = { .fd = c->fd };
		int ready, rc;

		c->write_blocked = false;
		c->send_errno = EIO;
		if (nghttp2_session_send(c->session)) {
			snprintf(err, err_size, "write to %s: %s", c->authority,
				 strerror(c->send_errno));
			return -c->send_errno;
		}
		if (c->stream_done)
			break;
		if (!nghttp2_session_want_read(c->session) && !nghttp2_session_want_write(c->session)) {
			snprintf(err, err_size, "%s ended the HTTP/2 connection", c->authority);
			return -ECONNRESET;
		}
		pfd.events = POLLIN | (c->write_blocked ? POLLOUT : 0);
		ready = poll(&pfd, 1, remaining_ms(deadline_ns));
		if (ready == 0) {
			snprintf(err, err_size, "no answer from %s in time", c->authority);
			return -ETIMEDOUT;
		}
		if (ready < 0 && errno != EINTR) {
			int why = errno;

			snprintf(err, err_size, "poll: %s", strerror(why));
			return -why;
		}
		if (ready > 0 && (pfd.revents & (POLLIN | POLLHUP | POLLERR))) {
			rc = take_input(c, err, err_size);
			if (rc)
				return rc;
		}
	}
	if (c->stream_error) {
		snprintf(err, err_size, "%s reset the stream: %s", c->authority,
			 nghttp2_http2_strerror(c->stream_error));
		return -ECONNRESET;
	}
	if (c->status <= 0) {
		snprintf(err, err_size, "%s answered without a :status", c->authority);
		return -EPROTO;
	}
	return c->status;
}

int h2c_post(struct h2c *c, const struct h2c_field *fields, size_t nfields, const uint8_t *body,
	     size_t body_len, uint64_t deadline_ns, const struct h2c_answer_sink *sink, char *err,
	     size_t err_size)
{
	int rc = ensure_connection(c, deadline_ns, err, err_size);

	if (rc)
		return rc;
	c->body = body;
	c->body_len = body_len;
	c->body_sent = 0;
	c->stream_done = false;
	c->stream_error = 0;
	c->status = 0;
	c->sink = sink;
	rc = submit(c, fields, nfields);
	if (rc)
		snprintf(err, err_size, "HTTP/2 request: %s", strerror(-rc));
	else
		rc = run_stream(c, deadline_ns, err, err_size);
	c->sink = NULL;
	/* A stream left behind (a timeout) would answer into the next one. */
	if (rc < 0)
		drop_connection(c);
	return rc;
}
