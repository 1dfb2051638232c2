#include "prometheus.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct prom_server {
	struct MHD_Daemon *daemon;
	struct metrics *metrics;
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type,
			     void *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, mode);
	enum MHD_Result ret;

	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static enum MHD_Result serve_metrics(struct prom_server *p, struct MHD_Connection *conn)
{
	struct bytes out = { 0 };

	if (metrics_write_prometheus(p->metrics, &out)) {
		bytes_free(&out);
		return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain",
			     "out of memory\n", 14, MHD_RESPMEM_PERSISTENT);
	}
	/* libmicrohttpd frees the body with free() once it is sent. */
	return reply(conn, MHD_HTTP_OK, CONTENT_TYPE, out.data, out.used, MHD_RESPMEM_MUST_FREE);
}

static enum MHD_Result on_request(void *ctx, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload,
				  size_t *upload_size, void **state)
{
	static char not_found[] = "sonde serves /metrics\n";

	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", not_found,
			     sizeof(not_found) - 1, MHD_RESPMEM_PERSISTENT);
	if (strcmp(url, "/metrics") != 0)
		return reply(conn, MHD_HTTP_NOT_FOUND, "text/plain", not_found,
			     sizeof(not_found) - 1, MHD_RESPMEM_PERSISTENT);
	return serve_metrics(ctx, conn);
}

static int resolve(const char *host, uint16_t port, struct sockaddr_storage *addr, char *err,
		   size_t err_size)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res;
	char service[8];
	int rc;

	snprintf(service, sizeof(service), "%u", port);
	rc = getaddrinfo(host, service, &hints, &res);
	if (rc) {
		snprintf(err, err_size, "prometheus endpoint %s:%u: %s", host, port,
			 gai_strerror(rc));
		return -1;
	}
	memcpy(addr, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	return 0;
}

struct prom_server *prom_start(const char *host, uint16_t port, struct metrics *metrics, char *err,
			       size_t err_size)
{
	struct prom_server *p = calloc(1, sizeof(*p));
	struct sockaddr_storage addr;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD;

	if (!p) {
		snprintf(err, err_size, "prometheus endpoint: out of memory");
		return NULL;
	}
	if (resolve(host, port, &addr, err, err_size))
		goto fail;
	if (addr.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	p->metrics = metrics;
	p->daemon = MHD_start_daemon(flags, port, NULL, NULL, on_request, p, MHD_OPTION_SOCK_ADDR,
				     (struct sockaddr *)&addr, MHD_OPTION_END);
	if (!p->daemon) {
		snprintf(err, err_size, "prometheus endpoint %s:%u: cannot listen (%s)", host, port,
			 strerror(errno ? errno : EADDRINUSE));
		goto fail;
	}
	return p;
fail:
	free(p);
	return NULL;
}

void prom_stop(struct prom_server *p)
{
	if (!p)
		return;
	MHD_stop_daemon(p->daemon);
	free(p);
}
