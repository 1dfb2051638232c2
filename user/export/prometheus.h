/* The Prometheus endpoint: GET /metrics in the text exposition format, on
 * libmicrohttpd's own thread, so a scrape never waits on capture and
 * capture waits on a scrape only while it copies the counts. */
#ifndef SONDE_PROMETHEUS_H
#define SONDE_PROMETHEUS_H

#include "bytes.h"
#include "metrics.h"

#include <stddef.h>
#include <stdint.h>

struct prom_server;

/* A server that does not listen: for prom_write alone (tests). */
struct prom_server *prom_new(struct metrics *metrics);
/* Appends the exposition text of every metric to out: the instruments,
 * target_info per service, sonde's own counters as sonde_*, its CPU and
 * memory; -ENOMEM when it could not grow. */
int prom_write(struct prom_server *p, struct bytes *out);

/* Listens on host:port (a name or an address; "localhost" by default in
 * config). NULL with the reason in err. */
struct prom_server *prom_start(const char *host, uint16_t port, struct metrics *metrics, char *err,
			       size_t err_size);
void prom_stop(struct prom_server *p);

#endif
