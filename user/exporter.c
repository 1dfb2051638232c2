#include "exporter.h"

#include "console.h"
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CONSOLE_LINE_MAX (64 * 1024)

struct exporter {
	struct exporter_opts opts;
	struct span *ring;      /* max_queue_size slots */
	uint64_t head;          /* next slot to export; written by the thread */
	uint64_t tail;          /* next slot to fill; written by the tracker */
	struct span scratch;    /* the slot EXPORTER_NONE hands out */
	pthread_t thread;
	bool thread_started;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool stopping;
	char *line;             /* console formatting buffer */
	struct exporter_stats stats;
	struct log_limit drop_log;
};

static uint64_t load(const uint64_t *v)
{
	return __atomic_load_n(v, __ATOMIC_ACQUIRE);
}

static void store(uint64_t *v, uint64_t value)
{
	__atomic_store_n(v, value, __ATOMIC_RELEASE);
}

static void count(uint64_t *counter, uint64_t n)
{
	__atomic_add_fetch(counter, n, __ATOMIC_RELAXED);
}

static void write_console(struct exporter *exp, const struct span *span)
{
	size_t len = console_format_span(span, exp->line, CONSOLE_LINE_MAX);

	if (len)
		fwrite(exp->line, 1, len, exp->opts.console);
}

static void export_range(struct exporter *exp, uint64_t from, uint64_t to)
{
	for (uint64_t i = from; i < to; i++) {
		struct span *span = &exp->ring[i % exp->opts.max_queue_size];

		write_console(exp, span);
		proc_info_unref(span->proc);
	}
	fflush(exp->opts.console);
	count(&exp->stats.spans_exported, to - from);
}

static void wait_for_batch(struct exporter *exp)
{
	struct timespec deadline;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_nsec += (long)(exp->opts.schedule_delay_ms % 1000) * 1000000l;
	deadline.tv_sec += exp->opts.schedule_delay_ms / 1000 + deadline.tv_nsec / 1000000000l;
	deadline.tv_nsec %= 1000000000l;
	pthread_mutex_lock(&exp->lock);
	while (!exp->stopping && load(&exp->tail) - load(&exp->head) < exp->opts.max_export_batch)
		if (pthread_cond_timedwait(&exp->wake, &exp->lock, &deadline) == ETIMEDOUT)
			break;
	pthread_mutex_unlock(&exp->lock);
}

static void *export_thread(void *arg)
{
	struct exporter *exp = arg;

	for (;;) {
		uint64_t head, tail;
		bool stopping;

		wait_for_batch(exp);
		pthread_mutex_lock(&exp->lock);
		stopping = exp->stopping;
		pthread_mutex_unlock(&exp->lock);
		head = load(&exp->head);
		tail = load(&exp->tail);
		while (head < tail) {
			uint64_t end = tail - head > exp->opts.max_export_batch
					       ? head + exp->opts.max_export_batch
					       : tail;

			export_range(exp, head, end);
			head = end;
			store(&exp->head, head);
		}
		if (stopping)
			return NULL;
	}
}

int exporter_new(struct exporter **out, const struct exporter_opts *opts)
{
	struct exporter *exp = calloc(1, sizeof(*exp));
	int err = -ENOMEM;

	if (!exp)
		return -ENOMEM;
	exp->opts = *opts;
	exp->drop_log = (struct log_limit)LOG_LIMIT_INIT(10, 1);
	pthread_mutex_init(&exp->lock, NULL);
	pthread_cond_init(&exp->wake, NULL);
	if (opts->kind != EXPORTER_NONE) {
		exp->ring = calloc(opts->max_queue_size, sizeof(*exp->ring));
		exp->line = malloc(CONSOLE_LINE_MAX);
		if (!exp->ring || !exp->line)
			goto fail;
		err = -pthread_create(&exp->thread, NULL, export_thread, exp);
		if (err)
			goto fail;
		exp->thread_started = true;
	}
	*out = exp;
	return 0;
fail:
	exporter_free(exp);
	return err;
}

void exporter_free(struct exporter *exp)
{
	if (!exp)
		return;
	if (exp->thread_started) {
		pthread_mutex_lock(&exp->lock);
		exp->stopping = true;
		pthread_cond_signal(&exp->wake);
		pthread_mutex_unlock(&exp->lock);
		pthread_join(exp->thread, NULL);
	}
	pthread_cond_destroy(&exp->wake);
	pthread_mutex_destroy(&exp->lock);
	free(exp->ring);
	free(exp->line);
	free(exp);
}

struct span *exporter_reserve(struct exporter *exp)
{
	struct span *slot;

	if (exp->opts.kind == EXPORTER_NONE) {
		slot = &exp->scratch;
	} else {
		if (exp->tail - load(&exp->head) >= exp->opts.max_queue_size) {
			count(&exp->stats.spans_dropped, 1);
			log_limited(&exp->drop_log, LOG_WARN,
				    "export queue full (%u spans): dropping spans; see spans_dropped",
				    exp->opts.max_queue_size);
			return NULL;
		}
		slot = &exp->ring[exp->tail % exp->opts.max_queue_size];
	}
	memset(slot, 0, offsetof(struct span, method));
	slot->method[0] = slot->protocol_version[0] = slot->route[0] = slot->path[0] = '\0';
	slot->query[0] = slot->server_address[0] = slot->client_address[0] = '\0';
	slot->user_agent[0] = slot->status_message[0] = slot->error_type[0] = '\0';
	return slot;
}

void exporter_commit(struct exporter *exp)
{
	count(&exp->stats.spans_built, 1);
	if (exp->opts.kind == EXPORTER_NONE) {
		proc_info_unref(exp->scratch.proc);
		count(&exp->stats.spans_exported, 1);
		return;
	}
	store(&exp->tail, exp->tail + 1);
	if (exp->tail - load(&exp->head) == exp->opts.max_export_batch) {
		pthread_mutex_lock(&exp->lock);
		pthread_cond_signal(&exp->wake);
		pthread_mutex_unlock(&exp->lock);
	}
}

void exporter_get_stats(struct exporter *exp, struct exporter_stats *out)
{
	out->spans_built = __atomic_load_n(&exp->stats.spans_built, __ATOMIC_RELAXED);
	out->spans_exported = __atomic_load_n(&exp->stats.spans_exported, __ATOMIC_RELAXED);
	out->spans_dropped = __atomic_load_n(&exp->stats.spans_dropped, __ATOMIC_RELAXED);
}
