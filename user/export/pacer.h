/* An export thread and how it waits: for its next batch or interval,
 * between retries, and how its shutdown is asked for with a deadline that
 * cuts every wait and attempt short. Waits are measured on CLOCK_MONOTONIC, like
 * every deadline here, so a wall-clock step neither stretches nor cuts
 * them. */
#ifndef SONDE_PACER_H
#define SONDE_PACER_H

#include "otlp_export.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct pacer {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool stopping;
	uint64_t shutdown_deadline_ns; /* set with stopping */
	pthread_t thread;
	bool running; /* started, not yet joined */
};

void pacer_init(struct pacer *p);
void pacer_destroy(struct pacer *p);
/* Waits on `wake` until CLOCK_MONOTONIC reaches deadline_ns, or a signal;
 * the caller holds the lock. True when the deadline has passed. */
bool pacer_wait_until(struct pacer *p, uint64_t deadline_ns);
/* Wakes the thread waiting, if any. */
void pacer_wake(struct pacer *p);
bool pacer_stopping(struct pacer *p);
/* Starts the paced thread, fn(arg); 0 or a negative errno. */
int pacer_start(struct pacer *p, void *(*fn)(void *), void *arg);
/* Asks the thread to stop, without waiting: its waits and attempts end
 * within timeout_ms of the first call (a later one keeps that deadline),
 * so that several threads asked at once stop side by side. */
void pacer_stop(struct pacer *p, uint32_t timeout_ms);
/* Asks (as pacer_stop) and waits for the thread to end. */
void pacer_join(struct pacer *p, uint32_t timeout_ms);
/* The pacing an OTLP export runs under (otlp_export.h). */
struct otlp_pacer pacer_for_export(struct pacer *p);

#endif
