#include "tree.h"

#include "semconv.h"

#include <inttypes.h>
#include <string.h>

void tree_init(struct tree_view *tv, FILE *out, uint32_t quiet_ms)
{
	pthread_mutex_init(&tv->lock, NULL);
	tv->out = out;
	tv->quiet_ns = (uint64_t)quiet_ms * 1000000ull;
	tv->nspans = 0;
	tv->nlines = 0;
}

void tree_destroy(struct tree_view *tv)
{
	pthread_mutex_destroy(&tv->lock);
}

static bool same_trace(const struct tree_span *a, const struct tree_span *b)
{
	return memcmp(a->trace_id, b->trace_id, TRACE_ID_SIZE) == 0;
}

static double ms_between(uint64_t start, uint64_t end)
{
	return end > start ? (double)(end - start) / 1e6 : 0.0;
}

static void print_span(struct tree_view *tv, const struct tree_span *s, const char *prefix,
		       bool last)
{
	fprintf(tv->out, "%s%s %s: %s (%s) %.1f ms", prefix, last ? "└─" : "├─", s->service,
		s->name, span_kind_name(s->kind),
		ms_between(s->start_unix_ns, s->end_unix_ns));
	if (!s->answered)
		fprintf(tv->out, " no response");
	else if (s->response_code[0])
		fprintf(tv->out, " %s", s->response_code);
	fprintf(tv->out, "%s\n", s->status == SPAN_STATUS_ERROR ? " ERROR" : "");
}

/* The lines written for s, in time order, under it. */
static void print_lines(struct tree_view *tv, const struct tree_span *s, const char *prefix,
			bool last)
{
	for (;;) {
		struct tree_line *next = NULL;

		for (size_t i = 0; i < tv->nlines; i++) {
			struct tree_line *l = &tv->lines[i];

			if (l->done || memcmp(l->span_id, s->span_id, SPAN_ID_SIZE) != 0 ||
			    memcmp(l->trace_id, s->trace_id, TRACE_ID_SIZE) != 0)
				continue;
			if (!next || l->time_unix_ns < next->time_unix_ns)
				next = l;
		}
		if (!next)
			return;
		next->done = true;
		fprintf(tv->out, "%s%s  » %s\n", prefix, last ? "  " : "│ ", next->text);
	}
}

/* Whether s is child's parent. */
static bool is_child(const struct tree_span *child, const struct tree_span *s)
{
	return child->has_parent && memcmp(child->parent_span_id, s->span_id, SPAN_ID_SIZE) == 0;
}

/* A root is a span whose parent is not in the trace (or has none). */
static bool is_root(const struct tree_view *tv, size_t n, const struct tree_span *s)
{
	for (size_t j = 0; s->has_parent && j < n; j++)
		if (is_child(s, &tv->spans[tv->members[j]]))
			return false;
	return true;
}

/* The earliest member not printed yet that is a child of parent (a root
 * when parent is NULL), or NULL. */
static struct tree_span *next_by_start(struct tree_view *tv, size_t n, const struct tree_span *parent)
{
	struct tree_span *best = NULL;

	for (size_t j = 0; j < n; j++) {
		struct tree_span *s = &tv->spans[tv->members[j]];

		if (s->done)
			continue;
		if (parent ? !is_child(s, parent) : !is_root(tv, n, s))
			continue;
		if (!best || s->start_unix_ns < best->start_unix_ns)
			best = s;
	}
	return best;
}

static void print_children(struct tree_view *tv, size_t n, const struct tree_span *parent,
			   char *prefix, size_t depth)
{
	struct tree_span *s = next_by_start(tv, n, parent);

	while (s) {
		struct tree_span *next;
		size_t len = strlen(prefix);

		s->done = true;
		next = next_by_start(tv, n, parent);
		print_span(tv, s, prefix, next == NULL);
		print_lines(tv, s, prefix, next == NULL);
		if (depth < 32 && len + 8 < 256) {
			strcpy(prefix + len, next ? "│  " : "   ");
			print_children(tv, n, s, prefix, depth + 1);
			prefix[len] = '\0';
		}
		s = next;
	}
}

static void print_trace(struct tree_view *tv, size_t first)
{
	const struct tree_span *head = &tv->spans[first];
	uint64_t start = UINT64_MAX, end = 0;
	char trace_hex[TRACE_ID_SIZE * 2 + 1], prefix[256] = "";
	size_t n = 0;

	for (size_t i = first; i < tv->nspans; i++) {
		struct tree_span *s = &tv->spans[i];

		if (s->done || !same_trace(s, head))
			continue;
		tv->members[n++] = (uint32_t)i;
		if (s->start_unix_ns < start)
			start = s->start_unix_ns;
		if (s->end_unix_ns > end)
			end = s->end_unix_ns;
	}
	hex_encode(head->trace_id, TRACE_ID_SIZE, trace_hex);
	fprintf(tv->out, "trace %s (%zu span%s, %.1f ms)\n", trace_hex, n, n == 1 ? "" : "s",
		ms_between(start, end));
	print_children(tv, n, NULL, prefix, 0);
	fprintf(tv->out, "\n");
}

static uint64_t last_arrival(const struct tree_view *tv, size_t first)
{
	uint64_t last = 0;

	for (size_t i = first; i < tv->nspans; i++)
		if (!tv->spans[i].done && same_trace(&tv->spans[i], &tv->spans[first]) &&
		    tv->spans[i].arrived_ns > last)
			last = tv->spans[i].arrived_ns;
	for (size_t i = 0; i < tv->nlines; i++)
		if (!tv->lines[i].done &&
		    memcmp(tv->lines[i].trace_id, tv->spans[first].trace_id, TRACE_ID_SIZE) == 0 &&
		    tv->lines[i].arrived_ns > last)
			last = tv->lines[i].arrived_ns;
	return last;
}

/* After printing: out with the output, and with the printed spans and
 * lines; lines of traces printed before they came (or of spans never
 * exported) leave after a while. */
static void printed(struct tree_view *tv, uint64_t now_ns)
{
	size_t kept = 0;

	fflush(tv->out);
	for (size_t i = 0; i < tv->nspans; i++)
		if (!tv->spans[i].done)
			tv->spans[kept++] = tv->spans[i];
	tv->nspans = kept;
	kept = 0;
	for (size_t i = 0; i < tv->nlines; i++)
		if (!tv->lines[i].done && tv->lines[i].arrived_ns + 4 * tv->quiet_ns > now_ns)
			tv->lines[kept++] = tv->lines[i];
	tv->nlines = kept;
}

void tree_add_line(struct tree_view *tv, const uint8_t *trace_id, const uint8_t *span_id,
		   uint64_t time_unix_ns, const char *text, size_t len, uint64_t now_ns)
{
	struct tree_line *l;
	size_t first_line = strcspn(text, "\n");

	pthread_mutex_lock(&tv->lock);
	if (tv->nlines < TREE_LINES_MAX) {
		l = &tv->lines[tv->nlines++];
		memcpy(l->trace_id, trace_id, TRACE_ID_SIZE);
		memcpy(l->span_id, span_id, SPAN_ID_SIZE);
		l->time_unix_ns = time_unix_ns;
		l->arrived_ns = now_ns;
		l->done = false;
		if (first_line > len)
			first_line = len;
		snprintf(l->text, sizeof(l->text), "%.*s%s", (int)first_line, text,
			 first_line < len ? " …" : "");
	}
	pthread_mutex_unlock(&tv->lock);
}

void tree_flush(struct tree_view *tv, uint64_t now_ns, bool all)
{
	bool any = false;

	pthread_mutex_lock(&tv->lock);
	for (size_t i = 0; i < tv->nspans; i++) {
		if (tv->spans[i].done)
			continue;
		if (!all && last_arrival(tv, i) + tv->quiet_ns > now_ns)
			continue;
		print_trace(tv, i);
		any = true;
	}
	if (any || all)
		printed(tv, all ? UINT64_MAX / 2 : now_ns);
	pthread_mutex_unlock(&tv->lock);
}

void tree_add(struct tree_view *tv, const struct span *span, uint64_t now_ns)
{
	struct tree_span *s;

	pthread_mutex_lock(&tv->lock);
	if (tv->nspans == TREE_SPANS_MAX) {
		print_trace(tv, 0); /* the oldest trace, early */
		printed(tv, now_ns);
	}
	s = &tv->spans[tv->nspans++];
	memcpy(s->trace_id, span->trace_id, TRACE_ID_SIZE);
	memcpy(s->span_id, span->span_id, SPAN_ID_SIZE);
	memcpy(s->parent_span_id, span->parent_span_id, SPAN_ID_SIZE);
	s->has_parent = span->has_parent;
	s->done = false;
	s->kind = span->kind;
	s->status = span->status;
	s->answered = span->answered;
	memcpy(s->response_code, span->response_code, sizeof(s->response_code));
	s->start_unix_ns = span->start_unix_ns;
	s->end_unix_ns = span->end_unix_ns;
	s->arrived_ns = now_ns;
	span_format_name(span, s->name, sizeof(s->name));
	snprintf(s->service, sizeof(s->service), "%s", span->proc ? span->proc->service_name : "unknown");
	pthread_mutex_unlock(&tv->lock);
}
