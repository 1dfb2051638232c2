#include "logs.h"

#include "log.h"

#include <stdlib.h>
#include <string.h>

#define LOGS_DESC(...) COUNTER_DESC(struct logs_stats, __VA_ARGS__)
const struct counter_desc logs_counters[] = { LOGS_COUNTERS(LOGS_DESC) };
const size_t logs_counter_count = sizeof(logs_counters) / sizeof(logs_counters[0]);

#define MS 1000000ull
#define STREAM_BUCKETS 1024
/* An ended record waits this long for lines that continue it (the next
 * line of a traceback printed line by line); a line not ended yet waits
 * longer for its end. */
#define JOIN_NS (20 * MS)
#define PARTIAL_NS (1000 * MS)

static const char traceback_start[] = "Traceback (most recent call last):";

/* A record being written, or waiting for its request to be decided. */
struct record {
	struct record *next;    /* pending FIFO, or the free list */
	struct link_node *node; /* the write that began it; NULL: no memory */
	struct proc_info *proc; /* a reference */
	uint64_t ts;            /* its first write, CLOCK_MONOTONIC */
	uint32_t tid;           /* the thread that last wrote to it */
	uint8_t iostream;
	bool truncated;
	char file_path[LOG_FILE_PATH_MAX]; /* for a log file */
	uint32_t len;
	char body[LOG_RECORD_MAX];
};

/* One process's stdout or stderr. */
struct stream {
	struct stream *hash_next;
	uint32_t tgid;
	int32_t fd;
	struct record *open;  /* the record lines go to */
	bool line_ended;      /* its last line has its newline */
	bool in_traceback;    /* its lines are a Python traceback's */
	uint64_t last_ts;     /* its last write */
	char file_path[LOG_FILE_PATH_MAX]; /* a configured log file's; empty: fd 1 or 2 */
};

struct logs {
	struct logs_opts opts;
	struct linker *linker;
	struct log_export *out;
	struct proc_table *procs;
	const struct wallclock *clock;
	struct stream *buckets[STREAM_BUCKETS];
	struct record *free_records;
	uint32_t records;     /* open and pending */
	struct record *pending_head, *pending_tail;
	struct logs_stats stats;
};

/* ---- streams and records --------------------------------------------------------- */

static struct stream **bucket_of(struct logs *lg, uint32_t tgid, int32_t fd)
{
	return &lg->buckets[(tgid * 2654435761u + (uint32_t)fd) % STREAM_BUCKETS];
}

static struct stream *stream_get(struct logs *lg, uint32_t tgid, int32_t fd)
{
	struct stream **bucket = bucket_of(lg, tgid, fd);
	struct stream *s;

	for (s = *bucket; s; s = s->hash_next)
		if (s->tgid == tgid && s->fd == fd)
			return s;
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->tgid = tgid;
	s->fd = fd;
	s->hash_next = *bucket;
	*bucket = s;
	return s;
}

static struct record *record_new(struct logs *lg, const struct stream *s,
				 const struct sonde_data_event *ev, struct proc_info *proc)
{
	struct record *r = lg->free_records;

	if (lg->records >= lg->opts.max_pending) {
		lg->stats.pending_full++;
		return NULL;
	}
	if (r)
		lg->free_records = r->next;
	else if (!(r = malloc(sizeof(*r))))
		return NULL;
	lg->records++;
	r->next = NULL;
	r->node = linker_log(lg->linker, ev->hdr.tgid, ev->hdr.tid, ev->task, ev->hdr.ts);
	r->proc = proc;
	if (r->proc)
		proc_info_ref(r->proc);
	r->ts = ev->hdr.ts;
	r->tid = ev->hdr.tid;
	r->iostream = s->file_path[0] ? LOG_FILE : ev->hdr.fd == 2 ? LOG_STDERR : LOG_STDOUT;
	memcpy(r->file_path, s->file_path, sizeof(r->file_path));
	r->truncated = false;
	r->len = 0;
	lg->stats.records++;
	return r;
}

static void record_release(struct logs *lg, struct record *r)
{
	if (r->node)
		linker_log_release(lg->linker, r->node);
	if (r->proc)
		proc_info_unref(r->proc);
	r->next = lg->free_records;
	lg->free_records = r;
	lg->records--;
}

static void append(struct record *r, const char *text, size_t len)
{
	size_t room = LOG_RECORD_MAX - r->len;

	if (len > room) {
		len = room;
		r->truncated = true;
	}
	memcpy(r->body + r->len, text, len);
	r->len += (uint32_t)len;
}

/* The stream's record is complete: it waits for its request. */
static void close_record(struct logs *lg, struct stream *s)
{
	struct record *r = s->open;

	s->open = NULL;
	s->in_traceback = false;
	if (!r)
		return;
	if (lg->pending_tail)
		lg->pending_tail->next = r;
	else
		lg->pending_head = r;
	lg->pending_tail = r;
}

/* ---- lines ------------------------------------------------------------------------ */

static bool starts_with(const char *line, size_t len, const char *prefix)
{
	size_t n = strlen(prefix);

	return len >= n && memcmp(line, prefix, n) == 0;
}

/* Whether a line belongs to the record open on the stream: the rest of a
 * line not ended, a traceback's lines, or an indented line, from the
 * thread that wrote the record. */
static bool continues(const struct stream *s, const char *line, size_t len, uint32_t tid)
{
	if (!s->open)
		return false;
	if (!s->line_ended)
		return true;
	if (s->open->tid != tid)
		return false;
	return s->in_traceback || starts_with(line, len, traceback_start) ||
	       (len && (line[0] == ' ' || line[0] == '\t'));
}

/* A traceback runs from its first line to the exception's, the first
 * line at the margin that does not chain to another traceback. */
static void follow_traceback(struct stream *s, const char *line, size_t len)
{
	if (starts_with(line, len, traceback_start)) {
		s->in_traceback = true;
		return;
	}
	if (!s->in_traceback || !len || line[0] == ' ' || line[0] == '\t' ||
	    starts_with(line, len, "During handling of the above exception") ||
	    starts_with(line, len, "The above exception was the direct cause"))
		return;
	s->in_traceback = false;
}

static void add_line(struct logs *lg, struct stream *s, const struct sonde_data_event *ev,
		     struct proc_info *proc, const char *line, size_t len, bool ended)
{
	bool blank = len == 0;

	if (continues(s, line, len, ev->hdr.tid)) {
		if (s->line_ended)
			append(s->open, "\n", 1);
		append(s->open, line, len);
		s->open->tid = ev->hdr.tid;
	} else if (blank && ended) {
		return; /* an empty line is no record */
	} else {
		close_record(lg, s);
		s->open = record_new(lg, s, ev, proc);
		if (!s->open)
			return;
		append(s->open, line, len);
	}
	s->line_ended = ended;
	follow_traceback(s, line, len);
}

void logs_write(struct logs *lg, const struct sonde_data_event *ev)
{
	const char *data = (const char *)ev->data;
	size_t n = ev->captured, i = 0;
	struct proc_info *proc = proc_table_get(lg->procs, ev->hdr.tgid, NULL);
	struct stream *s;

	lg->stats.writes++;
	/* A process the scope rules leave out writes no records; one sonde
	 * cannot read is not left out. */
	if (proc && proc->scope != SCOPE_TRACED) {
		lg->stats.scoped_out++;
		return;
	}
	s = stream_get(lg, ev->hdr.tgid, ev->hdr.fd);
	if (!s)
		return;
	s->last_ts = ev->hdr.ts;
	while (i < n) {
		const char *nl = memchr(data + i, '\n', n - i);
		size_t end = nl ? (size_t)(nl - data) : n;

		add_line(lg, s, ev, proc, data + i, end - i, nl != NULL);
		i = end + 1;
	}
	/* The rest of the write was not captured: where its lines end is not
	 * known, so the record ends here, marked. */
	if (n < ev->len && s->open) {
		s->open->truncated = true;
		lg->stats.cut++;
		close_record(lg, s);
	}
}

/* ---- leaving ------------------------------------------------------------------------- */

/* Into the export queue, with the ids of the request it was written for. */
static void emit(struct logs *lg, struct record *r, enum link_log_state state,
		 const uint8_t *trace_id, const uint8_t *span_id)
{
	struct log_record *out = log_export_reserve(lg->out);

	if (state == LINK_LOG_SPAN)
		lg->stats.with_span++;
	else if (state == LINK_LOG_AMBIGUOUS)
		lg->stats.ambiguous++;
	else
		lg->stats.without_span++;
	if (r->truncated)
		lg->stats.cut++;
	if (!out)
		return;
	out->time_unix_ns = wallclock_from_mono(lg->clock, r->ts);
	out->observed_unix_ns = realtime_now_ns();
	out->proc = r->proc;
	if (r->proc)
		proc_info_ref(r->proc);
	out->has_ids = state == LINK_LOG_SPAN;
	if (out->has_ids) {
		memcpy(out->trace_id, trace_id, TRACE_ID_SIZE);
		memcpy(out->span_id, span_id, SPAN_ID_SIZE);
	}
	out->truncated = r->truncated;
	out->iostream = r->iostream;
	snprintf(out->file_path, sizeof(out->file_path), "%s", r->iostream == LOG_FILE ? r->file_path : "");
	out->len = r->len;
	memcpy(out->body, r->body, r->len);
	log_export_commit(lg->out);
	if (lg->opts.tree && state == LINK_LOG_SPAN)
		tree_add_line(lg->opts.tree, trace_id, span_id, out->time_unix_ns, r->body, r->len,
			      monotonic_now_ns());
}

/* Decided records leave, in the order they were written per stream;
 * undecided ones wait (at exit: none does). */
static void emit_decided(struct logs *lg, bool all)
{
	struct record **link = &lg->pending_head;
	uint8_t trace_id[TRACE_ID_SIZE] = { 0 }, span_id[SPAN_ID_SIZE] = { 0 };

	lg->pending_tail = NULL;
	while (*link) {
		struct record *r = *link;
		enum link_log_state state = r->node ? linker_log_ids(r->node, trace_id, span_id)
						    : LINK_LOG_NONE;

		if (state == LINK_LOG_PENDING && !all) {
			lg->pending_tail = r;
			link = &r->next;
			continue;
		}
		*link = r->next;
		emit(lg, r, state == LINK_LOG_PENDING ? LINK_LOG_NONE : state, trace_id, span_id);
		record_release(lg, r);
	}
}

/* Records no line can continue any more end. */
static void end_quiet_records(struct logs *lg, uint64_t now_ns)
{
	for (size_t b = 0; b < STREAM_BUCKETS; b++)
		for (struct stream *s = lg->buckets[b]; s; s = s->hash_next) {
			uint64_t wait = s->line_ended ? JOIN_NS : PARTIAL_NS;

			if (s->open && (now_ns == UINT64_MAX || s->last_ts + wait <= now_ns))
				close_record(lg, s);
		}
}

void logs_tick(struct logs *lg, uint64_t now_ns)
{
	end_quiet_records(lg, now_ns);
	emit_decided(lg, now_ns == UINT64_MAX);
}

static void stream_end(struct logs *lg, struct stream **link)
{
	struct stream *s = *link;

	close_record(lg, s);
	*link = s->hash_next;
	free(s);
}

void logs_proc_exit(struct logs *lg, uint32_t tgid)
{
	for (size_t b = 0; b < STREAM_BUCKETS; b++) {
		struct stream **link = &lg->buckets[b];

		while (*link) {
			if ((*link)->tgid == tgid)
				stream_end(lg, link);
			else
				link = &(*link)->hash_next;
		}
	}
}

void logs_set_file(struct logs *lg, uint32_t tgid, int32_t fd, const char *path)
{
	struct stream **link = bucket_of(lg, tgid, fd);
	struct stream *s;

	while (*link && ((*link)->tgid != tgid || (*link)->fd != fd))
		link = &(*link)->hash_next;
	if (*link)
		stream_end(lg, link);
	if (!path || !(s = stream_get(lg, tgid, fd)))
		return;
	snprintf(s->file_path, sizeof(s->file_path), "%s", path);
}

void logs_get_stats(const struct logs *lg, struct logs_stats *out)
{
	*out = lg->stats;
}

struct logs *logs_new(const struct logs_opts *opts, struct linker *linker,
		      struct log_export *out, struct proc_table *procs,
		      const struct wallclock *clock)
{
	struct logs *lg = calloc(1, sizeof(*lg));

	if (!lg)
		return NULL;
	lg->opts = *opts;
	if (!lg->opts.max_pending)
		lg->opts.max_pending = 4096;
	lg->linker = linker;
	lg->out = out;
	lg->procs = procs;
	lg->clock = clock;
	return lg;
}

void logs_free(struct logs *lg)
{
	if (!lg)
		return;
	logs_tick(lg, UINT64_MAX);
	for (size_t b = 0; b < STREAM_BUCKETS; b++)
		while (lg->buckets[b]) {
			struct stream *s = lg->buckets[b];

			lg->buckets[b] = s->hash_next;
			free(s);
		}
	while (lg->free_records) {
		struct record *r = lg->free_records;

		lg->free_records = r->next;
		free(r);
	}
	free(lg);
}
