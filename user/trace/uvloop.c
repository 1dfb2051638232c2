#include "uvloop.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define UVLOOP_DESC(...) COUNTER_DESC(struct uvloop_stats, __VA_ARGS__)
const struct counter_desc uvloop_counters[] = { UVLOOP_COUNTERS(UVLOOP_DESC) };
const size_t uvloop_counter_count = sizeof(uvloop_counters) / sizeof(uvloop_counters[0]);

/* offsetof(uv__loop_internal_fields_t, inv) and of iou.ringfd, compiled
 * against each release's src/uv-common.h; Node.js 20's own debug info
 * agrees for 1.46.0. Before 1.45 libuv marked its callbacks elsewhere. */
const struct uvloop_version uvloop_versions[] = {
	{ 0x012d00, 0x012dff, 456, 448 }, /* 1.45 */
	{ 0x012e00, 0x013100, 472, 456 }, /* 1.46.0 - 1.49.0 */
	{ 0x013101, 0x0134ff, 440, 432 }, /* 1.49.1 - 1.52 */
};
const unsigned uvloop_nversions = sizeof(uvloop_versions) / sizeof(uvloop_versions[0]);

void uvloop_init(struct uvloop *u, struct prog_files *files)
{
	memset(u, 0, sizeof(*u));
	u->files = files;
}

const struct uvloop_version *uvloop_version_of(uint32_t version)
{
	for (unsigned i = 0; i < uvloop_nversions; i++)
		if (version >= uvloop_versions[i].from && version <= uvloop_versions[i].to)
			return &uvloop_versions[i];
	return NULL;
}

struct exe_base {
	uint64_t inode;
	uint64_t start;
};

static int find_exe_mapping(void *ctx, const struct prog_mapping *m)
{
	struct exe_base *b = ctx;

	if (m->inode != b->inode)
		return 0;
	b->start = m->start;
	return 1;
}

int uvloop_layout(struct uvloop *u, uint32_t pid, const struct prog_file *exe,
		  struct sonde_loop *out)
{
	const struct uvloop_version *v;
	struct exe_base base;
	int ret;

	if (!exe->uv_version)
		return 0;
	v = uvloop_version_of(exe->uv_version);
	if (!exe->uv_loop || !v) {
		u->stats.unsupported++;
		return 0;
	}
	base = (struct exe_base){ exe->ino, 0 };
	ret = prog_mappings(u->files, pid, find_exe_mapping, &base);
	if (ret <= 0) {
		u->stats.failures++;
		return ret < 0 ? ret : -ENOENT;
	}
	memset(out, 0, sizeof(*out));
	out->internal_fields = base.start + exe->uv_loop - exe->load_vaddr + UVLOOP_INTERNAL_FIELDS;
	out->inv_offset = v->inv_offset;
	out->ring_fd_offset = v->ring_fd_offset;
	out->cursor = -1;
	out->opener_fd = -1;
	out->ring_fd = SONDE_LOOP_RING_UNREAD;
	out->ring_at = -1;
	u->stats.processes++;
	return 1;
}
