/* h2c: the endpoints it accepts, and how a request fails against real
 * sockets that refuse, hang up or never answer. Answers from a real gRPC
 * server are tested end to end (tests/e2e/test_otlp.py). */
#include "clock.h"
#include "h2c.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const uint8_t body[] = "not a real message";

/* A listening loopback socket; its port in *port. */
static int listener(int *port)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(addr);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	cr_assert(fd >= 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	cr_assert_eq(listen(fd, 4), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
	*port = ntohs(addr.sin_port);
	return fd;
}

static struct h2c *client_for(int port)
{
	char url[64];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/svc/Method", port);
	return h2c_new(url);
}

static int post(struct h2c *c, int timeout_ms, char *err, size_t size)
{
	return h2c_post(c, NULL, 0, body, sizeof(body), monotonic_now_ns() + timeout_ms * 1000000ull,
			NULL, err, size);
}

Test(h2c, takes_http_urls_with_a_host_and_refuses_others)
{
	const char *good[] = { "http://127.0.0.1:4317", "http://collector/v1", "http://[::1]:4317/p",
			       "HTTP://host:1" };
	const char *bad[] = { "https://host:4317", "http://", "http://:4317", "http://host:/x",
			      "http://[::1:4317", "host:4317", "http://host:123456789/" };

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct h2c *c = h2c_new(good[i]);

		cr_expect_not_null(c, "%s", good[i]);
		h2c_free(c);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_expect_null(h2c_new(bad[i]), "%s", bad[i]);
}

Test(h2c, a_closed_port_is_refused_with_its_address)
{
	int port, fd = listener(&port);
	struct h2c *c;
	char err[256] = "";

	close(fd);
	c = client_for(port);
	cr_expect_eq(post(c, 2000, err, sizeof(err)), -ECONNREFUSED);
	cr_expect(strstr(err, "127.0.0.1") && strstr(err, "refused"), "%s", err);
	h2c_free(c);
}

static void *accept_and_hang_up(void *arg)
{
	int conn = accept(*(int *)arg, NULL, NULL);

	if (conn >= 0)
		close(conn);
	return NULL;
}

Test(h2c, a_peer_that_hangs_up_ends_the_request_at_once)
{
	int port, fd = listener(&port), rc;
	struct h2c *c = client_for(port);
	char err[256] = "";
	pthread_t peer;

	cr_assert_eq(pthread_create(&peer, NULL, accept_and_hang_up, &fd), 0);
	rc = post(c, 5000, err, sizeof(err));
	pthread_join(peer, NULL);
	cr_expect(rc == -ECONNRESET || rc == -EPIPE, "%d: %s", rc, err);
	cr_expect(strstr(err, "127.0.0.1"), "%s", err);
	h2c_free(c);
	close(fd);
}

Test(h2c, a_peer_that_never_answers_times_out_by_the_deadline)
{
	int port, fd = listener(&port);
	struct h2c *c = client_for(port);
	char err[256] = "";
	uint64_t start = monotonic_now_ns(), took_ms;

	cr_expect_eq(post(c, 200, err, sizeof(err)), -ETIMEDOUT);
	took_ms = (monotonic_now_ns() - start) / 1000000;
	cr_expect(took_ms >= 190 && took_ms < 2000, "took %lu ms", (unsigned long)took_ms);
	cr_expect(strstr(err, "no answer"), "%s", err);
	h2c_free(c);
	close(fd);
}
