/* Which processes are traced, and the service name of those that give
 * none: rules an operator writes as selectors ("exe:/usr/sbin/nginx",
 * "cgroup:/system.slice/nginx.service", "pid:812", "port:8000-8099", "comm:wrk"),
 * decided once per process from what /proc says of it. */
#ifndef SONDE_SCOPE_H
#define SONDE_SCOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* TRACED and NOT_TRACED are final for the process's program; WAITING is
 * "not traced until it accepts a connection on an included port". */
enum scope_verdict { SCOPE_TRACED, SCOPE_WAITING, SCOPE_NOT_TRACED };

/* The rules' text, as the configuration gives them (NULL or "": none):
 * include and exclude are comma-separated selectors; names are
 * comma-separated SELECTOR=NAME, the first that matches naming. */
struct scope_texts {
	const char *include;
	const char *exclude;
	const char *names;
};

struct scope;

/* What sonde saw of a process, for one /proc no longer shows when it is
 * decided: the path execve was given, its cgroup v2 id, and a parent
 * running the same program, whose /proc entry says which (NULL, 0, 0: not
 * known). */
struct scope_hint {
	const char *exe;
	uint64_t cgroup_id;
	uint32_t parent;
};

/* NULL with err set (naming the setting and the selector) when a rule is
 * malformed. proc_root is "/proc" except in tests; <proc_root>/mounts says
 * where cgroup v2 is mounted. */
struct scope *scope_new(const struct scope_texts *texts, const char *proc_root, char *err,
			size_t size);
void scope_free(struct scope *s);
/* Whether the rules are well formed, for start-up and --check-config. */
int scope_check(const struct scope_texts *texts, char *err, size_t size);

/* A process first seen: its verdict, and in name (size bytes) the service
 * name a naming rule gives it, "" when none does. comm and hint may be
 * NULL. */
enum scope_verdict scope_decide(struct scope *s, uint32_t pid, const char *comm,
				const struct scope_hint *hint, char *name, size_t size);
/* The verdict once the process accepted a connection on local `port`:
 * an included port traces a WAITING process, an excluded one ends a
 * TRACED process's tracing; in name, the service name a port's naming
 * rule gives, "" when none does. */
enum scope_verdict scope_on_serve(const struct scope *s, enum scope_verdict v, uint16_t port,
				  char *name, size_t size);

#endif
