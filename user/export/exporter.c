#include "exporter.h"

#include "clock.h"
#include "console.h"
#include "log.h"
#include "otlp_export.h"
#include "pacer.h"
#include "tree.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define EXPORTER_DESC(...) COUNTER_DESC(struct exporter_stats, __VA_ARGS__)
const struct counter_desc exporter_counters[] = { EXPORTER_COUNTERS(EXPORTER_DESC) };
const size_t exporter_counter_count = sizeof(exporter_counters) / sizeof(exporter_counters[0]);

#define CONSOLE_LINE_MAX (64 * 1024)
/* A trace is printed as a tree once no span has joined it for this long. */
#define TREE_QUIET_MS 1000

/* What the tracker's thread alone writes (exporter_reserve, _commit) and
 * what the export thread alone writes, each on cache lines of its own:
 * sharing one, every span would take the line from the other's core. */
struct producer_side {
	uint64_t tail; /* next slot to fill */
	uint64_t spans_built;
	uint64_t spans_dropped;
} __attribute__((aligned(64)));

struct consumer_side {
	uint64_t head; /* next slot to export */
	uint64_t spans_exported;
	uint64_t spans_refused;
	uint64_t spans_failed;
} __attribute__((aligned(64)));

struct exporter {
	struct exporter_opts opts;
	struct span *ring;      /* max_queue_size slots */
	struct producer_side producer;
	struct consumer_side consumer;
	struct span scratch;    /* the slot EXPORTER_NONE hands out */
	struct pacer pace;
	char *line;             /* console formatting buffer */
	struct tree_view *tree;
	const struct span **batch;
	struct otlp_encoder *encoder;
	struct otlp_export *otlp;
	struct log_limit drop_log;
	struct log_limit export_log;
};

static uint64_t load(const uint64_t *v)
{
	return __atomic_load_n(v, __ATOMIC_ACQUIRE);
}

static void store(uint64_t *v, uint64_t value)
{
	__atomic_store_n(v, value, __ATOMIC_RELEASE);
}

/* Every counter has one writer (its side's thread), so it needs no
 * locked add, only a store that a reader on another thread never sees
 * torn. */
static void count(uint64_t *counter, uint64_t n)
{
	__atomic_store_n(counter, *counter + n, __ATOMIC_RELAXED);
}

static void write_console(struct exporter *exp, const struct span *span)
{
	size_t len = console_format_span(span, exp->line, CONSOLE_LINE_MAX);

	if (len)
		fwrite(exp->line, 1, len, exp->opts.console);
}

static void account_batch(struct exporter *exp, size_t n, const struct otlp_batch_result *r)
{
	count(&exp->consumer.spans_exported, r->exported);
	count(&exp->consumer.spans_refused, r->refused);
	count(&exp->consumer.spans_failed, r->failed);
	if (r->refused && r->refused == n)
		log_limited(&exp->export_log, LOG_WARN, "OTLP: the collector refused %zu spans: %s",
			    n, r->reason);
	else if (r->failed)
		log_limited(&exp->export_log, LOG_WARN, "OTLP: dropped %" PRIu64 " spans: %s",
			    r->failed, r->reason);
}

static void export_otlp(struct exporter *exp, size_t n)
{
	struct otlp_pacer pacer = pacer_for_export(&exp->pace);
	struct otlp_batch_result result = { .failed = n };
	uint8_t *encoded;
	size_t len;
	int err = otlp_encode(exp->encoder, exp->batch, n, &encoded, &len);

	if (err)
		snprintf(result.reason, sizeof(result.reason), "encoding %zu spans: %s", n,
			 strerror(-err));
	else
		otlp_export_send(exp->otlp, encoded, len, n, &pacer, &result);
	account_batch(exp, n, &result);
}

static void export_range(struct exporter *exp, uint64_t from, uint64_t to)
{
	size_t n = (size_t)(to - from);

	for (size_t i = 0; i < n; i++)
		exp->batch[i] = &exp->ring[(from + i) % exp->opts.max_queue_size];
	if (exp->opts.sinks & EXPORTER_CONSOLE) {
		for (size_t i = 0; i < n; i++)
			write_console(exp, exp->batch[i]);
		fflush(exp->opts.console);
	}
	if (exp->tree) {
		uint64_t now = monotonic_now_ns();

		for (size_t i = 0; i < n; i++)
			tree_add(exp->tree, exp->batch[i], now);
	}
	if (exp->opts.sinks & EXPORTER_OTLP)
		export_otlp(exp, n);
	else
		count(&exp->consumer.spans_exported, n);
	for (size_t i = 0; i < n; i++)
		proc_info_unref(exp->batch[i]->proc);
}

static void wait_for_batch(struct exporter *exp)
{
	uint64_t deadline_ns = monotonic_now_ns() + exp->opts.schedule_delay_ms * 1000000ull;

	pthread_mutex_lock(&exp->pace.lock);
	while (!exp->pace.stopping &&
	       load(&exp->producer.tail) - load(&exp->consumer.head) < exp->opts.max_export_batch)
		if (pacer_wait_until(&exp->pace, deadline_ns))
			break;
	pthread_mutex_unlock(&exp->pace.lock);
}

static void *export_thread(void *arg)
{
	struct exporter *exp = arg;

	for (;;) {
		uint64_t head, tail;
		bool stop;

		wait_for_batch(exp);
		stop = pacer_stopping(&exp->pace);
		head = load(&exp->consumer.head);
		tail = load(&exp->producer.tail);
		while (head < tail) {
			uint64_t end = tail - head > exp->opts.max_export_batch
					       ? head + exp->opts.max_export_batch
					       : tail;

			export_range(exp, head, end);
			head = end;
			store(&exp->consumer.head, head);
		}
		if (exp->tree)
			tree_flush(exp->tree, monotonic_now_ns(), stop);
		if (stop)
			return NULL;
	}
}

/* Encoding a batch is a burst of CPU (~2 ms for 512 spans); on a busy CPU
 * an ordinary thread makes the traced program's requests wait behind it,
 * which shows in their tail latency. At SCHED_IDLE any runnable program
 * preempts it at once; on a saturated host it gets almost nothing, so the
 * queue fills and spans are dropped and counted rather than the
 * program slowed down. */
static int set_sched(struct exporter *exp, char *err, size_t err_size)
{
	struct sched_param param = { 0 };
	int ret;

	if (exp->opts.sched == EXPORTER_SCHED_NORMAL)
		return 0;
	ret = -pthread_setschedparam(exp->pace.thread, SCHED_IDLE, &param);
	if (ret)
		snprintf(err, err_size, "exporter: run the export thread at SCHED_IDLE: %s",
			 strerror(-ret));
	return ret;
}

static int start_sinks(struct exporter *exp, char *err, size_t err_size)
{
	const struct exporter_opts *opts = &exp->opts;
	int ret;

	exp->ring = calloc(opts->max_queue_size, sizeof(*exp->ring));
	exp->batch = calloc(opts->max_export_batch, sizeof(*exp->batch));
	if (opts->sinks & EXPORTER_CONSOLE)
		exp->line = malloc(CONSOLE_LINE_MAX);
	if (opts->sinks & EXPORTER_TREE) {
		exp->tree = malloc(sizeof(*exp->tree));
		if (exp->tree)
			tree_init(exp->tree, opts->console, TREE_QUIET_MS);
	}
	if (!exp->ring || !exp->batch || ((opts->sinks & EXPORTER_CONSOLE) && !exp->line) ||
	    ((opts->sinks & EXPORTER_TREE) && !exp->tree)) {
		snprintf(err, err_size, "exporter: out of memory for %u queued spans",
			 opts->max_queue_size);
		return -ENOMEM;
	}
	if (opts->sinks & EXPORTER_OTLP) {
		exp->encoder = otlp_encoder_new(opts->max_export_batch);
		if (!exp->encoder) {
			snprintf(err, err_size, "OTLP exporter: out of memory");
			return -ENOMEM;
		}
		ret = otlp_export_new(&exp->otlp, &opts->otlp, opts->export_timeout_ms, "spans",
				      err, err_size);
		if (ret)
			return ret;
	}
	ret = pacer_start(&exp->pace, export_thread, exp);
	if (ret) {
		snprintf(err, err_size, "exporter: start thread: %s", strerror(-ret));
		return ret;
	}
	return set_sched(exp, err, err_size);
}

int exporter_new(struct exporter **out, const struct exporter_opts *opts, char *err,
		 size_t err_size)
{
	/* sizeof is a multiple of the struct's cache-line alignment. */
	struct exporter *exp = aligned_alloc(_Alignof(struct exporter), sizeof(*exp));
	int ret;

	if (!exp) {
		snprintf(err, err_size, "exporter: out of memory");
		return -ENOMEM;
	}
	memset(exp, 0, sizeof(*exp));
	exp->opts = *opts;
	exp->drop_log = (struct log_limit)LOG_LIMIT_INIT(10, 1);
	exp->export_log = (struct log_limit)LOG_LIMIT_INIT(10, 2);
	pacer_init(&exp->pace);
	if (opts->sinks != EXPORTER_NONE) {
		ret = start_sinks(exp, err, err_size);
		if (ret) {
			exporter_free(exp);
			return ret;
		}
	}
	*out = exp;
	return 0;
}

void exporter_request_stop(struct exporter *exp)
{
	pacer_stop(&exp->pace, exp->opts.export_timeout_ms);
}

void exporter_stop(struct exporter *exp)
{
	pacer_join(&exp->pace, exp->opts.export_timeout_ms);
}

void exporter_free(struct exporter *exp)
{
	if (!exp)
		return;
	exporter_stop(exp);
	pacer_destroy(&exp->pace);
	otlp_export_free(exp->otlp);
	otlp_encoder_free(exp->encoder);
	free(exp->ring);
	free(exp->batch);
	free(exp->line);
	if (exp->tree)
		tree_destroy(exp->tree);
	free(exp->tree);
	free(exp);
}

struct span *exporter_reserve(struct exporter *exp)
{
	struct span *slot;

	if (exp->opts.sinks == EXPORTER_NONE) {
		slot = &exp->scratch;
	} else {
		if (exp->producer.tail - load(&exp->consumer.head) >= exp->opts.max_queue_size) {
			count(&exp->producer.spans_dropped, 1);
			log_limited(&exp->drop_log, LOG_WARN,
				    "export queue full (%u spans): dropping spans; see spans_dropped",
				    exp->opts.max_queue_size);
			return NULL;
		}
		slot = &exp->ring[exp->producer.tail % exp->opts.max_queue_size];
	}
	span_clear(slot);
	return slot;
}

void exporter_commit(struct exporter *exp)
{
	count(&exp->producer.spans_built, 1);
	if (exp->opts.sinks == EXPORTER_NONE) {
		proc_info_unref(exp->scratch.proc);
		return;
	}
	store(&exp->producer.tail, exp->producer.tail + 1);
	if (exp->producer.tail - load(&exp->consumer.head) == exp->opts.max_export_batch) {
		pacer_wake(&exp->pace);
	}
}

/* With no sink a span is exported as it is committed. */
void exporter_get_stats(struct exporter *exp, struct exporter_stats *out)
{
	out->spans_built = __atomic_load_n(&exp->producer.spans_built, __ATOMIC_RELAXED);
	out->spans_exported = exp->opts.sinks == EXPORTER_NONE
				      ? out->spans_built
				      : __atomic_load_n(&exp->consumer.spans_exported, __ATOMIC_RELAXED);
	out->spans_dropped = __atomic_load_n(&exp->producer.spans_dropped, __ATOMIC_RELAXED);
	out->spans_refused = __atomic_load_n(&exp->consumer.spans_refused, __ATOMIC_RELAXED);
	out->spans_failed = __atomic_load_n(&exp->consumer.spans_failed, __ATOMIC_RELAXED);
	out->spans_retried = out->export_requests = 0;
	if (exp->otlp) {
		struct otlp_export_stats os;

		otlp_export_get_stats(exp->otlp, &os);
		out->spans_retried = os.retried;
		out->export_requests = os.requests;
	}
}

struct tree_view *exporter_tree(struct exporter *exp)
{
	return exp->tree;
}
