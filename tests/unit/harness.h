/* Drives the real tracker, parser and console exporter with synthetic
 * kernel records, and decodes the console output with cJSON. */
#ifndef SONDE_TEST_HARNESS_H
#define SONDE_TEST_HARNESS_H

#include "exporter.h"
#include "procinfo.h"
#include "progfile.h"
#include "sonde_events.h"
#include "tracker.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

#define HARNESS_SPANS_MAX 1024

/* An exchange summary as the tracker reported it. */
struct h_summary {
	uint8_t proto, kind;
	bool error;
	uint64_t start_ns, end_ns;
	char name[128];
};

struct harness {
	char *out_buf;
	size_t out_len;
	FILE *out;
	char proc_root[64];
	struct wallclock clock;
	struct exporter *exporter;
	struct proc_table *procs;
	struct tracker *tracker;
	struct tracker_stats stats;
	uint64_t now;
	cJSON *spans[HARNESS_SPANS_MAX];
	int nspans;
	struct h_summary summaries[HARNESS_SPANS_MAX];
	int nsummaries;
	int active; /* server requests in progress, as the tracker announced them */
	int began;
};

/* tid and task are those of the next calls made on the connection. */
struct tconn {
	uint32_t tgid;
	int32_t fd;
	uint64_t gen;
	uint64_t pos[2];
	uint32_t tid;
	uint64_t task;
	uint8_t proto; /* enum sonde_proto */
};

void h_init(struct harness *h, bool keep_query);
/* With at most max_pending requests waiting per connection (0: default). */
void h_init_pending(struct harness *h, bool keep_query, uint32_t max_pending);
/* A fake /proc/<pid> with the given NUL-separated cmdline and environ. */
void h_proc(struct harness *h, uint32_t pid, const char *cmdline, size_t cmdline_len,
	    const char *environ, size_t environ_len);
/* An HTTP/1.x connection with a peer at 127.0.0.2. */
struct tconn h_open(struct harness *h, uint32_t tgid, int32_t fd, uint8_t role);
/* A connection of the given protocol whose server listens on server_port. */
struct tconn h_open_proto(struct harness *h, uint32_t tgid, int32_t fd, uint8_t role,
			  uint8_t proto, uint16_t server_port);
/* A loopback connection with both ends on 127.0.0.1: a client's end and
 * a server's with swapped ports are the two ends of one connection. */
struct tconn h_open_ports(struct harness *h, uint32_t tgid, int32_t fd, uint8_t role,
			  uint16_t lport, uint16_t rport);
/* An IPv4 connection of the given protocol (SONDE_PROTO_NONE: a client
 * end written off) between the given ends (4 bytes each). */
struct tconn h_open_ends(struct harness *h, uint32_t tgid, int32_t fd, uint8_t role, uint8_t proto,
			 const char *laddr, uint16_t lport, const char *raddr, uint16_t rport);
/* Sends len bytes of which the first `captured` are present. */
void h_io(struct harness *h, struct tconn *c, int dir, const char *data, size_t len,
	  size_t captured);
void h_send(struct harness *h, struct tconn *c, int dir, const char *text);
/* Like h_io, plus the last `tail` bytes of data, as the kernel sends them. */
void h_io_tail(struct harness *h, struct tconn *c, int dir, const char *data, size_t len,
	       size_t captured, size_t tail);
/* An event the kernel emitted but the agent never got: advances pos only. */
void h_lose(struct harness *h, struct tconn *c, int dir, size_t len);
void h_close(struct harness *h, struct tconn *c, uint8_t reason);
/* The connection's fd closed; it goes on under new_fd, as c does. */
void h_move(struct harness *h, struct tconn *c, int32_t new_fd);
void h_exit(struct harness *h, uint32_t tgid);
/* Stops the tracker and exporter and decodes the spans. */
void h_finish(struct harness *h);
void h_free(struct harness *h);

const char *span_str(const cJSON *span, const char *attr);
long span_int(const cJSON *span, const char *attr);
bool span_has(const cJSON *span, const char *attr);
const char *span_field(const cJSON *span, const char *field);
const char *span_status(const cJSON *span);
const char *span_resource(const cJSON *span, const char *attr);

/* Runs argv[0] with argv in a child and returns its pid once the child
 * runs a program whose path holds exe_part (the test fails otherwise). */
pid_t harness_run(const char *exe_part, char *const argv[]);
/* pid's program file, as the agent reads it (the test fails otherwise). */
struct prog_file harness_exe(struct prog_files *files, pid_t pid);

#endif
