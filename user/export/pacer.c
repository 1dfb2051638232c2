#include "pacer.h"

#include "clock.h"

#include <errno.h>
#include <time.h>

void pacer_init(struct pacer *p)
{
	pthread_condattr_t attr;

	pthread_mutex_init(&p->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&p->wake, &attr);
	pthread_condattr_destroy(&attr);
	p->stopping = false;
	p->shutdown_deadline_ns = UINT64_MAX;
	p->running = false;
}

void pacer_destroy(struct pacer *p)
{
	pthread_cond_destroy(&p->wake);
	pthread_mutex_destroy(&p->lock);
}

bool pacer_wait_until(struct pacer *p, uint64_t deadline_ns)
{
	struct timespec until = {
		.tv_sec = (time_t)(deadline_ns / 1000000000ull),
		.tv_nsec = (long)(deadline_ns % 1000000000ull),
	};

	return pthread_cond_timedwait(&p->wake, &p->lock, &until) == ETIMEDOUT;
}

void pacer_wake(struct pacer *p)
{
	pthread_mutex_lock(&p->lock);
	pthread_cond_signal(&p->wake);
	pthread_mutex_unlock(&p->lock);
}

bool pacer_stopping(struct pacer *p)
{
	bool stop;

	pthread_mutex_lock(&p->lock);
	stop = p->stopping;
	pthread_mutex_unlock(&p->lock);
	return stop;
}

void pacer_stop(struct pacer *p, uint32_t timeout_ms)
{
	pthread_mutex_lock(&p->lock);
	if (!p->stopping)
		p->shutdown_deadline_ns = monotonic_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	p->stopping = true;
	pthread_cond_signal(&p->wake);
	pthread_mutex_unlock(&p->lock);
}

int pacer_start(struct pacer *p, void *(*fn)(void *), void *arg)
{
	int ret = -pthread_create(&p->thread, NULL, fn, arg);

	p->running = ret == 0;
	return ret;
}

void pacer_join(struct pacer *p, uint32_t timeout_ms)
{
	if (!p->running)
		return;
	pacer_stop(p, timeout_ms);
	pthread_join(p->thread, NULL);
	p->running = false;
}

/* Sleeps on; a wake-up from shutdown only brings the end forward. */
static void sleep_ms(void *ctx, uint64_t ms)
{
	struct pacer *p = ctx;
	uint64_t until_ns = monotonic_now_ns() + ms * 1000000ull;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		uint64_t end = until_ns;

		if (p->stopping && p->shutdown_deadline_ns < end)
			end = p->shutdown_deadline_ns;
		if (monotonic_now_ns() >= end || pacer_wait_until(p, end))
			break;
	}
	pthread_mutex_unlock(&p->lock);
}

static uint64_t limit(void *ctx)
{
	struct pacer *p = ctx;
	uint64_t ns;

	pthread_mutex_lock(&p->lock);
	ns = p->stopping ? p->shutdown_deadline_ns : UINT64_MAX;
	pthread_mutex_unlock(&p->lock);
	return ns;
}

struct otlp_pacer pacer_for_export(struct pacer *p)
{
	return (struct otlp_pacer){ sleep_ms, limit, p };
}
