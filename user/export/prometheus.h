/* The Prometheus endpoint: GET /metrics in the text exposition format, on
 * libmicrohttpd's own thread, so a scrape never waits on capture and
 * capture waits on a scrape only while it copies the counts. */
#ifndef SONDE_PROMETHEUS_H
#define SONDE_PROMETHEUS_H

#include "metrics.h"

#include <stddef.h>
#include <stdint.h>

struct prom_server;

/* Listens on host:port (a name or an address; "localhost" by default in
 * config). NULL with the reason in err. */
struct prom_server *prom_start(const char *host, uint16_t port, struct metrics *metrics, char *err,
			       size_t err_size);
void prom_stop(struct prom_server *p);

#endif
