/* Recognises processes whose program holds libuv's default loop (Node.js
 * links libuv in) and gives the kernel where that loop is and where its
 * "running a poll's callbacks" field is (struct sonde_loop), so that the
 * main thread's calls are told apart by the callback they run in
 * (bpf/evloop.bpf.h).
 *
 * Only programs with a symbol table (default_loop_struct is static) and
 * libuv versions whose offset sonde carries are recognised; any other
 * process gets no layout, counted, and its calls are linked by thread
 * alone. Program files are read through progfile.h. */
#ifndef SONDE_UVLOOP_H
#define SONDE_UVLOOP_H

#include "counters.h"
#include "progfile.h"
#include "sonde_events.h"

#include <stdint.h>

/* Versions [from, to] (as uv_version() gives them) and where their
 * uv__loop_internal_fields_t has inv and iou.ringfd. */
struct uvloop_version {
	uint32_t from, to;
	uint32_t inv_offset;
	uint32_t ring_fd_offset;
};

extern const struct uvloop_version uvloop_versions[];
extern const unsigned uvloop_nversions;

/* Where uv_loop_t.internal_fields is, in every libuv 1.x. */
#define UVLOOP_INTERNAL_FIELDS 40

#define UVLOOP_COUNTERS(X) \
	X(processes, "libuv_processes", TOTAL, "processes whose libuv loop is followed") \
	X(unsupported, "libuv_unsupported", TOTAL, \
	  "libuv programs of a version sonde has no layout for, or without a symbol table") \
	X(failures, "libuv_read_failures", TOTAL, "libuv processes whose maps could not be read")

struct uvloop_stats {
	UVLOOP_COUNTERS(COUNTER_FIELD)
};

extern const struct counter_desc uvloop_counters[];
extern const size_t uvloop_counter_count;

struct uvloop {
	struct prog_files *files; /* not owned */
	struct uvloop_stats stats;
};

void uvloop_init(struct uvloop *u, struct prog_files *files);
/* 1 and *out filled (the layout, the rest zero) when pid's program file,
 * exe (prog_exe), holds a libuv loop sonde can follow, 0 when it does
 * not, -errno when its maps could not be read. */
int uvloop_layout(struct uvloop *u, uint32_t pid, const struct prog_file *exe,
		  struct sonde_loop *out);
/* The offsets of a version; NULL when sonde has none. */
const struct uvloop_version *uvloop_version_of(uint32_t version);

#endif
