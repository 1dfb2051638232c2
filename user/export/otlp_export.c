#include "otlp_export.h"

#include "clock.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct otlp_export {
	struct otlp_transport *transport;
	const char *items; /* what a request carries, for the log */
	uint64_t batch_timeout_ns;
	uint64_t random_state;
	struct log_limit partial_log;
	struct log_limit retry_log;
	struct otlp_export_stats stats;
};

int otlp_export_new(struct otlp_export **out, const struct otlp_opts *opts,
		    uint32_t batch_timeout_ms, const char *items, char *err, size_t err_size)
{
	struct otlp_export *exp = calloc(1, sizeof(*exp));
	int ret;

	if (!exp) {
		snprintf(err, err_size, "OTLP exporter: out of memory");
		return -ENOMEM;
	}
	exp->items = items;
	ret = otlp_transport_new(&exp->transport, opts, err, err_size);
	if (ret) {
		otlp_export_free(exp);
		return ret;
	}
	exp->batch_timeout_ns = (uint64_t)batch_timeout_ms * 1000000ull;
	exp->random_state = monotonic_now_ns() | 1;
	exp->partial_log = (struct log_limit)LOG_LIMIT_INIT(10, 1);
	exp->retry_log = (struct log_limit)LOG_LIMIT_INIT(10, 1);
	*out = exp;
	return 0;
}

void otlp_export_free(struct otlp_export *exp)
{
	if (!exp)
		return;
	otlp_transport_free(exp->transport);
	free(exp);
}

uint64_t otlp_backoff_ms(uint32_t retry, uint64_t random, int64_t retry_after_ms)
{
	uint64_t ceiling = OTLP_BACKOFF_INITIAL_MS, wait;

	for (uint32_t i = 1; i < retry && ceiling < OTLP_BACKOFF_MAX_MS; i++)
		ceiling *= 2;
	if (ceiling > OTLP_BACKOFF_MAX_MS)
		ceiling = OTLP_BACKOFF_MAX_MS;
	wait = ceiling / 2 + random % (ceiling / 2 + 1);
	if (retry_after_ms > 0 && (uint64_t)retry_after_ms > wait)
		wait = (uint64_t)retry_after_ms;
	return wait;
}

static uint64_t next_random(struct otlp_export *exp)
{
	uint64_t x = exp->random_state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	exp->random_state = x;
	return x;
}

static void account_success(struct otlp_export *exp, size_t n, const struct otlp_reply *reply,
			    struct otlp_batch_result *result)
{
	uint64_t refused = reply->partial.rejected;

	if (refused > n)
		refused = n;
	result->refused = refused;
	result->exported = n - refused;
	if (refused || reply->partial.error_message[0])
		log_limited(&exp->partial_log, LOG_WARN,
			    "OTLP: the collector accepted %zu of %zu %s: %s", n - (size_t)refused, n,
			    exp->items,
			    reply->partial.error_message[0] ? reply->partial.error_message
							    : "(no message)");
	if (reply->reason[0])
		snprintf(result->reason, sizeof(result->reason), "%s", reply->reason);
}

/* Sends until delivered, refused, or out of time: the batch's own time,
 * or the shutdown deadline once shutdown has begun. The body was prepared
 * (encoded, compressed) once for all attempts. */
static void send_with_retries(struct otlp_export *exp, size_t n, const struct otlp_pacer *pacer,
			      struct otlp_batch_result *result)
{
	uint64_t batch_end = monotonic_now_ns() + exp->batch_timeout_ns;
	struct otlp_reply reply = {
		.reason = "not sent before the shutdown deadline (OTEL_BSP_EXPORT_TIMEOUT)",
	};

	for (;;) {
		uint64_t limit = pacer->limit(pacer->ctx), wait_ms;

		if (monotonic_now_ns() >= (limit < batch_end ? limit : batch_end))
			break;
		if (result->attempts)
			__atomic_add_fetch(&exp->stats.retried, n, __ATOMIC_RELAXED);
		otlp_transport_send(exp->transport, &reply);
		result->attempts++;
		__atomic_add_fetch(&exp->stats.requests, 1, __ATOMIC_RELAXED);
		if (reply.outcome == OTLP_OK) {
			account_success(exp, n, &reply, result);
			return;
		}
		if (reply.outcome == OTLP_REFUSED) {
			snprintf(result->reason, sizeof(result->reason), "%s", reply.reason);
			result->refused = n;
			return;
		}
		if (reply.outcome == OTLP_UNDELIVERABLE)
			break;
		/* Said at the first failure, not when the request gives up. */
		if (result->attempts == 1)
			log_limited(&exp->retry_log, LOG_WARN, "OTLP: %s; retrying %zu %s for up to "
				    "%llu s", reply.reason, n, exp->items,
				    (unsigned long long)(exp->batch_timeout_ns / 1000000000ull));
		wait_ms = otlp_backoff_ms(result->attempts, next_random(exp), reply.retry_after_ms);
		if (monotonic_now_ns() + wait_ms * 1000000ull >= batch_end)
			break;
		pacer->sleep(pacer->ctx, wait_ms);
	}
	result->failed = n;
	if (result->attempts > 1)
		snprintf(result->reason, sizeof(result->reason), "gave up after %u attempts: %s",
			 result->attempts, reply.reason);
	else
		snprintf(result->reason, sizeof(result->reason), "%s", reply.reason);
}

void otlp_export_send(struct otlp_export *exp, uint8_t *message, size_t len, size_t n,
		      const struct otlp_pacer *pacer, struct otlp_batch_result *result)
{
	int err;

	memset(result, 0, sizeof(*result));
	err = otlp_transport_prepare(exp->transport, message, len);
	if (err) {
		snprintf(result->reason, sizeof(result->reason), "compressing %zu %s: %s", n,
			 exp->items, strerror(-err));
		result->failed = n;
		return;
	}
	send_with_retries(exp, n, pacer, result);
}

void otlp_export_get_stats(struct otlp_export *exp, struct otlp_export_stats *out)
{
	out->requests = __atomic_load_n(&exp->stats.requests, __ATOMIC_RELAXED);
	out->retried = __atomic_load_n(&exp->stats.retried, __ATOMIC_RELAXED);
}
